//! Path normalization: never panics, its output is a fixed point, never
//! climbs above the root, and holds no escaped unreserved character; and
//! the route matcher's pattern parser on the same bytes.
#![no_main]

use std::borrow::Cow;

use kawal::proxy::path::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(once) = normalize(text) {
        assert!(once.starts_with('/'));
        assert!(!once.contains("//"), "{once:?}");
        assert!(!once.split('/').any(|s| s == ".." || s == "."), "{once:?}");
        match normalize(&once) {
            Ok(Cow::Borrowed(twice)) => assert_eq!(twice, once),
            other => panic!("{text:?} -> {once:?} -> {other:?}"),
        }
    }
    if let Ok(paths) = kawal::matcher::Paths::try_from(vec![text.to_string()]) {
        let scope = kawal::matcher::RouteMatch::new(None, Some(&paths));
        let _ = scope.matches(&http::Method::GET, text);
    }
});
