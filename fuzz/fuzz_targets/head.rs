//! The request-head checks on arbitrary heads: `check_head` (limits,
//! framing, method, path), the authority check, and the header rewrites
//! every forwarded head goes through. Input: an HTTP/1-like head,
//! `METHOD TARGET\nname: value\n...`; a head `http` refuses is skipped, as
//! hyper would have refused it before kawal.
#![no_main]

use http::{HeaderName, HeaderValue, Request, Version};
use kawal::config::Limits;
use kawal::headers::{self, UnderscoreAction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(first) = lines.next() else { return };
    let mut parts = first.splitn(2, |b| *b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return };
    let version = match first.len() % 3 {
        0 => Version::HTTP_11,
        1 => Version::HTTP_2,
        _ => Version::HTTP_10,
    };
    let mut builder = Request::builder().method(method).uri(target).version(version);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let Ok(req) = builder.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    let limits = Limits::default();
    if let Ok(target) = kawal::proxy::check_head(&parts, &limits) {
        // The normalized target is a fixed point of normalization.
        let again = kawal::proxy::path::normalize(target.path()).expect("a normalized path stays valid");
        assert_eq!(again, target.path());
    }
    let _ = headers::check_authority(parts.version, &parts.uri, &parts.headers);
    let _ = headers::check_request_framing(parts.version, &parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers);
    // After the rewrite, the framing is unambiguous for the next hop.
    let lengths = parts.headers.get_all(http::header::CONTENT_LENGTH).iter().count();
    assert!(lengths <= 1);
    for action in [UnderscoreAction::Allow, UnderscoreAction::Drop, UnderscoreAction::Reject] {
        let mut h = parts.headers.clone();
        if headers::strip_kawal_identity(&mut h, action).is_ok() {
            assert!(!h.keys().any(|k| k.as_str().replace('_', "-") == "x-kawal-user"));
        }
    }
});
