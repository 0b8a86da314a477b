//! The trace-context parsers: W3C `traceparent`, B3 (single and multi
//! header) and the `tracestate` bound, on arbitrary header values. A
//! parsed traceparent written back parses to the same context.
#![no_main]

use http::{HeaderMap, HeaderValue};
use kawal::trace::{b3, state, TraceContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ctx) = TraceContext::parse(data) {
        let back = TraceContext::parse(ctx.to_header_value().as_bytes()).expect("own output parses");
        assert_eq!(back.trace_id, ctx.trace_id);
        assert_eq!(back.parent_id, ctx.parent_id);
    }
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert("b3", value.clone());
    let _ = b3::extract(&headers);
    // Multi-header B3 from pieces of the input.
    let mut multi = HeaderMap::new();
    let names = ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "x-b3-parentspanid"];
    for (name, piece) in names.iter().zip(data.split(|b| *b == b'|')) {
        if let Ok(v) = HeaderValue::from_bytes(piece) {
            multi.insert(*name, v);
        }
    }
    let _ = b3::extract(&multi);
    if let Some(Some(bounded)) = state::bound([&value].into_iter()) {
        assert!(bounded.len() <= state::MAX_LEN);
        assert!(bounded.as_bytes().split(|b| *b == b',').count() <= state::MAX_MEMBERS);
        // Bounding is idempotent.
        assert!(state::bound([&bounded].into_iter()).is_none());
    }
});
