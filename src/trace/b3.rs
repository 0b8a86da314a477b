//! B3 (Zipkin) propagation: the single `b3` header and the multi `X-B3-*`
//! headers (<https://github.com/openzipkin/b3-propagation>).
//!
//! Single: `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]` or
//! `{SamplingState}` alone, e.g.
//! `b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90`.
//! [`extract`] is lenient about hex case (callers disagree on it) but strict
//! about everything else: a value it rejects is ignored, never forwarded, so
//! the caller should [`strip`] before injecting. Injection writes lowercase
//! from stack buffers without `format!`.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::{decode_hex, hex_header_value, SpanId, TraceId};

/// The single-header form: `b3`.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// Multi-header form: the trace id (16 or 32 hex).
pub const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// Multi-header form: the caller's span id (16 hex).
pub const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// Multi-header form: the caller's parent span id (16 hex), absent on a root span.
pub const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// Multi-header form: the sampling decision (`1`/`0`, legacy `true`/`false`).
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// Multi-header form: `1` means debug, which implies sampled.
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Length of what [`inject_single`] writes: `32 + 1 + 16 + 1 + 1`.
const SINGLE_LEN: usize = 51;

/// What a caller's B3 headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3Context {
    /// Trace id and the caller's span id; `None` for a sampling-only header (`b3: 0`).
    pub ids: Option<(TraceId, SpanId)>,
    /// The caller's sampling decision, `None` = deferred to us. Debug (`d`, `X-B3-Flags: 1`) counts as sampled.
    pub sampled: Option<bool>,
}

/// Reads B3 from the headers: a valid single `b3` header wins, else the multi headers; `None` when there is no usable B3 at all.
///
/// The single header wins even when it carries only a sampling decision,
/// as the spec gives it precedence. A header sent more than once is treated
/// as absent, since there is no way to tell which copy is right.
pub fn extract(headers: &HeaderMap) -> Option<B3Context> {
    only_value(headers, &B3)
        .and_then(parse_single)
        .or_else(|| extract_multi(headers))
}

/// Writes `b3: {32 hex trace}-{16 hex span}-{1|0}` (no parent field), replacing any `b3`.
pub fn inject_single(headers: &mut HeaderMap, trace_id: &TraceId, span_id: &SpanId, sampled: bool) {
    let mut out = [b'-'; SINGLE_LEN];
    out[..32].copy_from_slice(&trace_id.to_hex());
    out[33..49].copy_from_slice(&span_id.to_hex());
    out[50] = if sampled { b'1' } else { b'0' };
    headers.insert(B3, hex_header_value(&out));
}

/// Writes X-B3-TraceId (32 hex), X-B3-SpanId, X-B3-Sampled (1|0); removes X-B3-ParentSpanId and X-B3-Flags (they described the caller's position).
pub fn inject_multi(headers: &mut HeaderMap, trace_id: &TraceId, span_id: &SpanId, sampled: bool) {
    headers.insert(X_B3_TRACE_ID, trace_id.to_header_value());
    headers.insert(X_B3_SPAN_ID, hex_header_value(&span_id.to_hex()));
    headers.insert(
        X_B3_SAMPLED,
        HeaderValue::from_static(if sampled { "1" } else { "0" }),
    );
    headers.remove(X_B3_PARENT_SPAN_ID);
    headers.remove(X_B3_FLAGS);
}

/// Removes every B3 header (single and multi), so a stale or malformed one is never forwarded.
pub fn strip(headers: &mut HeaderMap) {
    for name in [
        B3,
        X_B3_TRACE_ID,
        X_B3_SPAN_ID,
        X_B3_PARENT_SPAN_ID,
        X_B3_SAMPLED,
        X_B3_FLAGS,
    ] {
        headers.remove(name);
    }
}

/// The value of `name` if it occurs exactly once.
fn only_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(first.as_bytes())
}

/// Parses a single `b3` value; `None` if it is not exactly one of the four
/// forms the spec defines.
fn parse_single(value: &[u8]) -> Option<B3Context> {
    // A one-character value can only be the sampling-only form.
    if value.len() == 1 {
        return Some(B3Context {
            ids: None,
            sampled: Some(sampling_state(value)?),
        });
    }
    let mut fields = value.split(|&b| b == b'-');
    let trace_id = parse_trace_id(fields.next()?)?;
    let span_id = parse_span_id(fields.next()?)?;
    let sampled = match fields.next() {
        Some(state) => Some(sampling_state(state)?),
        None => None,
    };
    // We don't use the caller's parent, but a malformed one makes the whole
    // value malformed.
    if let Some(parent) = fields.next() {
        parse_span_id(parent)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(B3Context {
        ids: Some((trace_id, span_id)),
        sampled,
    })
}

/// The single form's sampling state: `1`, `0`, or `d` (debug, so sampled).
fn sampling_state(field: &[u8]) -> Option<bool> {
    match field {
        b"1" | b"d" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// Reads the multi headers. Ids and sampling are judged separately, so a
/// valid decision survives broken ids. X-B3-ParentSpanId is not read: we
/// never forward it, and the spec doesn't make the ids depend on it.
fn extract_multi(headers: &HeaderMap) -> Option<B3Context> {
    let trace_id = only_value(headers, &X_B3_TRACE_ID).and_then(parse_trace_id);
    let span_id = only_value(headers, &X_B3_SPAN_ID).and_then(parse_span_id);
    let ids = trace_id.zip(span_id);
    // Debug implies sampled and overrides whatever X-B3-Sampled says.
    let sampled = if only_value(headers, &X_B3_FLAGS) == Some(b"1") {
        Some(true)
    } else {
        only_value(headers, &X_B3_SAMPLED).and_then(multi_sampled)
    };
    if ids.is_none() && sampled.is_none() {
        return None;
    }
    Some(B3Context { ids, sampled })
}

/// X-B3-Sampled: `1`/`0`, or `true`/`false` from older tracers.
fn multi_sampled(value: &[u8]) -> Option<bool> {
    if value == b"1" || value.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else if value == b"0" || value.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else {
        None
    }
}

/// A 16- or 32-hex trace id; a 64-bit id fills the low half, as the spec
/// says to left-pad it. All zeros is invalid.
fn parse_trace_id(hex: &[u8]) -> Option<TraceId> {
    let mut id = [0u8; 16];
    match hex.len() {
        16 => id[8..].copy_from_slice(&decode_hex_any_case::<8>(hex)?),
        32 => id = decode_hex_any_case::<16>(hex)?,
        _ => return None,
    }
    (id != [0; 16]).then_some(TraceId(id))
}

/// A 16-hex span id; all zeros is invalid.
fn parse_span_id(hex: &[u8]) -> Option<SpanId> {
    let id = decode_hex_any_case::<8>(hex)?;
    (id != [0; 8]).then_some(SpanId(id))
}

/// Decodes exactly `2 * N` hex digits of either case. `decode_hex` takes
/// only lowercase (as W3C requires), so lowercase a stack copy first;
/// non-hex bytes stay non-hex and are still rejected.
fn decode_hex_any_case<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..hex.len())?;
    lower.copy_from_slice(hex);
    lower.make_ascii_lowercase();
    decode_hex::<N>(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const TRACE64: &str = "64fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";
    const PARENT: &str = "05e3ac9a4f6e3b90";
    // A different valid trace for the multi headers, to see which form won.
    const MULTI_TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
    const MULTI_SPAN: &str = "a2fb4a1d1a96d312";

    fn trace(hex: &str) -> TraceId {
        // Left-pads a 64-bit id, as the spec does.
        TraceId(decode_hex::<16>(format!("{hex:0>32}").as_bytes()).unwrap())
    }

    fn span(hex: &str) -> SpanId {
        SpanId(decode_hex::<8>(hex.as_bytes()).unwrap())
    }

    fn headers(pairs: &[(HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn single(value: &str) -> Option<B3Context> {
        extract(&headers(&[(B3, value.as_bytes())]))
    }

    fn ids(t: &str, s: &str, sampled: Option<bool>) -> Option<B3Context> {
        Some(B3Context {
            ids: Some((trace(t), span(s))),
            sampled,
        })
    }

    fn sampling_only(sampled: bool) -> Option<B3Context> {
        Some(B3Context {
            ids: None,
            sampled: Some(sampled),
        })
    }

    #[test]
    fn single_all_four_forms() {
        assert_eq!(single(&format!("{TRACE}-{SPAN}")), ids(TRACE, SPAN, None));
        assert_eq!(single(&format!("{TRACE}-{SPAN}-1")), ids(TRACE, SPAN, Some(true)));
        assert_eq!(
            single(&format!("{TRACE}-{SPAN}-0")),
            ids(TRACE, SPAN, Some(false))
        );
        assert_eq!(single(&format!("{TRACE}-{SPAN}-d")), ids(TRACE, SPAN, Some(true)));
        assert_eq!(
            single(&format!("{TRACE}-{SPAN}-1-{PARENT}")),
            ids(TRACE, SPAN, Some(true))
        );
        assert_eq!(
            single(&format!("{TRACE}-{SPAN}-0-{PARENT}")),
            ids(TRACE, SPAN, Some(false))
        );
        assert_eq!(
            single(&format!("{TRACE}-{SPAN}-d-{PARENT}")),
            ids(TRACE, SPAN, Some(true))
        );
        assert_eq!(single("1"), sampling_only(true));
        assert_eq!(single("0"), sampling_only(false));
        assert_eq!(single("d"), sampling_only(true));
    }

    #[test]
    fn single_64_bit_trace_id_is_left_padded() {
        let ctx = single(&format!("{TRACE64}-{SPAN}-1")).unwrap();
        let (trace_id, span_id) = ctx.ids.unwrap();
        assert_eq!(trace_id.to_string(), format!("0000000000000000{TRACE64}"));
        assert_eq!(span_id.to_string(), SPAN);
        assert_eq!(single(&format!("{TRACE64}-{SPAN}")), ids(TRACE64, SPAN, None));
        assert_eq!(
            single(&format!("{TRACE64}-{SPAN}-0-{PARENT}")),
            ids(TRACE64, SPAN, Some(false))
        );
        // Only the high half zero is fine; the 128-bit id as a whole is not zero.
        let high_zero = format!("0000000000000000{TRACE64}");
        assert_eq!(single(&format!("{high_zero}-{SPAN}")), ids(TRACE64, SPAN, None));
    }

    #[test]
    fn single_accepts_uppercase_hex() {
        let upper = format!(
            "{}-{}-1-{}",
            TRACE.to_uppercase(),
            SPAN.to_uppercase(),
            PARENT.to_uppercase()
        );
        assert_eq!(single(&upper), ids(TRACE, SPAN, Some(true)));
        let mixed = format!("80F198ee56343BA864fe8b2a57d3eff7-E457b5a2e4d86bd1-{}", "d");
        assert_eq!(single(&mixed), ids(TRACE, SPAN, Some(true)));
        assert_eq!(
            single(&format!("{}-{SPAN}", TRACE64.to_uppercase())),
            ids(TRACE64, SPAN, None)
        );
    }

    #[test]
    fn invalid_single_falls_back_to_multi() {
        let zero16 = "0".repeat(16);
        let zero32 = "0".repeat(32);
        let bad: Vec<String> = vec![
            String::new(),
            "-".into(),
            "--".into(),
            "2".into(),
            "D".into(),
            "true".into(),
            "01".into(),
            "1-1".into(),
            "0-".into(),
            // Wrong lengths.
            format!("{}-{SPAN}", &TRACE[..31]),
            format!("{TRACE}0-{SPAN}"),
            format!("{}-{SPAN}", &TRACE64[..15]),
            format!("{TRACE64}0-{SPAN}"),
            format!("{TRACE}-{}", &SPAN[..15]),
            format!("{TRACE}-{SPAN}0"),
            format!("{TRACE}-{SPAN}-1-{}", &PARENT[..15]),
            format!("{TRACE}-{SPAN}-1-{PARENT}0"),
            TRACE.into(),
            format!("{TRACE}-"),
            format!("{TRACE}-{SPAN}-"),
            format!("{TRACE}-{SPAN}-1-"),
            // All-zero ids.
            format!("{zero32}-{SPAN}-1"),
            format!("{zero16}-{SPAN}-1"),
            format!("{TRACE}-{zero16}-1"),
            format!("{TRACE}-{SPAN}-1-{zero16}"),
            // Five fields, or a parent where the sampling state belongs.
            format!("{TRACE}-{SPAN}-1-{PARENT}-1"),
            format!("{TRACE}-{SPAN}-1-{PARENT}-"),
            format!("{TRACE}-{SPAN}-{PARENT}"),
            // Bad sampling state.
            format!("{TRACE}-{SPAN}-2"),
            format!("{TRACE}-{SPAN}-D"),
            format!("{TRACE}-{SPAN}-true"),
            format!("{TRACE}-{SPAN}-01"),
            format!("{TRACE}-{SPAN}--{PARENT}"),
            // Non-hex, signs and whitespace.
            format!("{}g-{SPAN}", &TRACE[..31]),
            format!("{TRACE}-{}x", &SPAN[..15]),
            format!("{TRACE}-{SPAN}-1-{}z", &PARENT[..15]),
            format!("+{}-{SPAN}", &TRACE[..31]),
            format!("{TRACE} -{SPAN}"),
            format!("{TRACE}-{SPAN} 1"),
            format!("{TRACE}_{SPAN}"),
            format!("{TRACE},{SPAN}"),
        ];
        let multi = [
            (X_B3_TRACE_ID, MULTI_TRACE.as_bytes()),
            (X_B3_SPAN_ID, MULTI_SPAN.as_bytes()),
            (X_B3_SAMPLED, b"0".as_slice()),
        ];
        for value in &bad {
            assert_eq!(single(value), None, "{value:?}");
            let mut map = headers(&multi);
            map.insert(B3, HeaderValue::from_str(value).unwrap());
            assert_eq!(
                extract(&map),
                ids(MULTI_TRACE, MULTI_SPAN, Some(false)),
                "{value:?}"
            );
        }

        // Non-UTF-8 bytes (obs-text is a legal header byte).
        let mut non_utf8 = format!("{TRACE}-{SPAN}-1").into_bytes();
        non_utf8[0] = 0xff;
        for value in [non_utf8.as_slice(), b"\xff", b"\xc3\xa9", b"\x80-\x80"] {
            assert_eq!(extract(&headers(&[(B3, value)])), None, "{value:?}");
            let mut map = headers(&multi);
            map.insert(B3, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(
                extract(&map),
                ids(MULTI_TRACE, MULTI_SPAN, Some(false)),
                "{value:?}"
            );
        }
    }

    #[test]
    fn valid_single_wins_over_multi() {
        let mut map = headers(&[
            (X_B3_TRACE_ID, MULTI_TRACE.as_bytes()),
            (X_B3_SPAN_ID, MULTI_SPAN.as_bytes()),
            (X_B3_SAMPLED, b"1"),
        ]);
        map.insert(B3, HeaderValue::from_str(&format!("{TRACE}-{SPAN}-0")).unwrap());
        assert_eq!(extract(&map), ids(TRACE, SPAN, Some(false)));
        // Even a sampling-only single header wins: the spec gives it precedence.
        map.insert(B3, HeaderValue::from_static("0"));
        assert_eq!(extract(&map), sampling_only(false));
    }

    #[test]
    fn multi_with_and_without_sampled() {
        let base = [(X_B3_TRACE_ID, TRACE.as_bytes()), (X_B3_SPAN_ID, SPAN.as_bytes())];
        assert_eq!(extract(&headers(&base)), ids(TRACE, SPAN, None));
        for (value, sampled) in [(b"1".as_slice(), true), (b"0", false)] {
            let mut map = headers(&base);
            map.insert(X_B3_SAMPLED, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(extract(&map), ids(TRACE, SPAN, Some(sampled)));
        }
        // The parent is not read, even when malformed.
        let mut map = headers(&base);
        map.insert(X_B3_PARENT_SPAN_ID, HeaderValue::from_static("nonsense"));
        assert_eq!(extract(&map), ids(TRACE, SPAN, None));
        // An unknown sampled value defers the decision.
        map.insert(X_B3_SAMPLED, HeaderValue::from_static("yes"));
        assert_eq!(extract(&map), ids(TRACE, SPAN, None));
    }

    #[test]
    fn multi_64_bit_and_uppercase_ids() {
        let map = headers(&[
            (X_B3_TRACE_ID, TRACE64.as_bytes()),
            (X_B3_SPAN_ID, SPAN.as_bytes()),
        ]);
        assert_eq!(extract(&map), ids(TRACE64, SPAN, None));
        let (t, s) = (TRACE.to_uppercase(), SPAN.to_uppercase());
        let map = headers(&[(X_B3_TRACE_ID, t.as_bytes()), (X_B3_SPAN_ID, s.as_bytes())]);
        assert_eq!(extract(&map), ids(TRACE, SPAN, None));
    }

    #[test]
    fn multi_flags_debug_means_sampled() {
        let map = headers(&[
            (X_B3_TRACE_ID, TRACE.as_bytes()),
            (X_B3_SPAN_ID, SPAN.as_bytes()),
            (X_B3_FLAGS, b"1"),
        ]);
        assert_eq!(extract(&map), ids(TRACE, SPAN, Some(true)));
        // Debug wins over a contradicting X-B3-Sampled.
        let mut contradicting = map.clone();
        contradicting.insert(X_B3_SAMPLED, HeaderValue::from_static("0"));
        assert_eq!(extract(&contradicting), ids(TRACE, SPAN, Some(true)));
        // Flags other than `1` are not debug.
        let mut not_debug = contradicting.clone();
        not_debug.insert(X_B3_FLAGS, HeaderValue::from_static("0"));
        assert_eq!(extract(&not_debug), ids(TRACE, SPAN, Some(false)));
        not_debug.insert(X_B3_FLAGS, HeaderValue::from_static("true"));
        assert_eq!(extract(&not_debug), ids(TRACE, SPAN, Some(false)));
        // Flags alone is a sampling-only decision.
        assert_eq!(extract(&headers(&[(X_B3_FLAGS, b"1")])), sampling_only(true));
    }

    #[test]
    fn multi_legacy_true_false() {
        for (value, sampled) in [
            (b"true".as_slice(), true),
            (b"TRUE", true),
            (b"True", true),
            (b"false", false),
            (b"FALSE", false),
        ] {
            let map = headers(&[
                (X_B3_TRACE_ID, TRACE.as_bytes()),
                (X_B3_SPAN_ID, SPAN.as_bytes()),
                (X_B3_SAMPLED, value),
            ]);
            assert_eq!(extract(&map), ids(TRACE, SPAN, Some(sampled)), "{value:?}");
        }
    }

    #[test]
    fn multi_sampled_only() {
        assert_eq!(extract(&headers(&[(X_B3_SAMPLED, b"1")])), sampling_only(true));
        assert_eq!(extract(&headers(&[(X_B3_SAMPLED, b"0")])), sampling_only(false));
        assert_eq!(
            extract(&headers(&[(X_B3_SAMPLED, b"false")])),
            sampling_only(false)
        );
        // Half the ids is no ids.
        let map = headers(&[(X_B3_TRACE_ID, TRACE.as_bytes()), (X_B3_SAMPLED, b"1")]);
        assert_eq!(extract(&map), sampling_only(true));
        let map = headers(&[(X_B3_SPAN_ID, SPAN.as_bytes()), (X_B3_SAMPLED, b"0")]);
        assert_eq!(extract(&map), sampling_only(false));
    }

    #[test]
    fn multi_invalid_ids_keep_sampled() {
        let zero16 = "0".repeat(16);
        let zero32 = "0".repeat(32);
        let short = &TRACE[..31];
        let bad_ids: [(&str, &str); 6] = [
            (&zero32, SPAN),
            (&zero16, SPAN),
            (TRACE, &zero16),
            (short, SPAN),
            (TRACE, "e457b5a2e4d86bdg"),
            (TRACE, "-457b5a2e4d86bd1"),
        ];
        for (t, s) in bad_ids {
            let map = headers(&[
                (X_B3_TRACE_ID, t.as_bytes()),
                (X_B3_SPAN_ID, s.as_bytes()),
                (X_B3_SAMPLED, b"1"),
            ]);
            assert_eq!(extract(&map), sampling_only(true), "{t} {s}");
            let map = headers(&[(X_B3_TRACE_ID, t.as_bytes()), (X_B3_SPAN_ID, s.as_bytes())]);
            assert_eq!(extract(&map), None, "{t} {s}");
        }
        let non_utf8 = headers(&[
            (X_B3_TRACE_ID, b"\xff\xfe"),
            (X_B3_SPAN_ID, b"\x80"),
            (X_B3_SAMPLED, b"0"),
        ]);
        assert_eq!(extract(&non_utf8), sampling_only(false));
    }

    #[test]
    fn nothing_usable_is_none() {
        assert_eq!(extract(&HeaderMap::new()), None);
        let map = headers(&[
            (B3, b"garbage"),
            (X_B3_TRACE_ID, b"nope"),
            (X_B3_SPAN_ID, b""),
            (X_B3_SAMPLED, b"maybe"),
            (X_B3_FLAGS, b"2"),
            (X_B3_PARENT_SPAN_ID, PARENT.as_bytes()),
        ]);
        assert_eq!(extract(&map), None);
    }

    #[test]
    fn repeated_headers_are_ignored() {
        let one = format!("{TRACE}-{SPAN}-1");
        let map = headers(&[(B3, one.as_bytes()), (B3, one.as_bytes())]);
        assert_eq!(extract(&map), None);
        let map = headers(&[
            (X_B3_TRACE_ID, TRACE.as_bytes()),
            (X_B3_TRACE_ID, MULTI_TRACE.as_bytes()),
            (X_B3_SPAN_ID, SPAN.as_bytes()),
            (X_B3_SAMPLED, b"1"),
            (X_B3_SAMPLED, b"1"),
        ]);
        assert_eq!(extract(&map), None);
    }

    #[test]
    fn inject_single_format_and_round_trip() {
        let (t, s) = (trace(TRACE), span(SPAN));
        let mut map = headers(&[(B3, b"stale"), (B3, b"stale too")]);
        inject_single(&mut map, &t, &s, true);
        assert_eq!(map.get_all(B3).iter().count(), 1);
        assert_eq!(map[B3], format!("{TRACE}-{SPAN}-1").as_str());
        assert_eq!(extract(&map), ids(TRACE, SPAN, Some(true)));
        inject_single(&mut map, &t, &s, false);
        assert_eq!(map[B3], format!("{TRACE}-{SPAN}-0").as_str());
        assert_eq!(extract(&map), ids(TRACE, SPAN, Some(false)));

        // A 64-bit id comes back out as 32 hex; uppercase comes out lowercase.
        let upper = format!("{}-{}", TRACE64.to_uppercase(), SPAN.to_uppercase());
        let (t64, s64) = single(&upper).unwrap().ids.unwrap();
        inject_single(&mut map, &t64, &s64, true);
        assert_eq!(map[B3], format!("0000000000000000{TRACE64}-{SPAN}-1").as_str());

        round_trips(inject_single, false);
    }

    /// Random ids written by `inject` read back the same.
    fn round_trips(inject: fn(&mut HeaderMap, &TraceId, &SpanId, bool), sampled: bool) {
        for _ in 0..32 {
            let (t, s) = (TraceId::random(), SpanId::random());
            let mut map = HeaderMap::new();
            inject(&mut map, &t, &s, sampled);
            let want = B3Context {
                ids: Some((t, s)),
                sampled: Some(sampled),
            };
            assert_eq!(extract(&map), Some(want));
        }
    }

    #[test]
    fn inject_multi_format_and_round_trip() {
        let (t, s) = (trace(TRACE), span(SPAN));
        let mut map = headers(&[
            (X_B3_TRACE_ID, MULTI_TRACE.as_bytes()),
            (X_B3_TRACE_ID, TRACE64.as_bytes()),
            (X_B3_SPAN_ID, MULTI_SPAN.as_bytes()),
            (X_B3_PARENT_SPAN_ID, PARENT.as_bytes()),
            (X_B3_SAMPLED, b"0"),
            (X_B3_FLAGS, b"1"),
            (X_B3_FLAGS, b"1"),
        ]);
        inject_multi(&mut map, &t, &s, true);
        assert_eq!(map[X_B3_TRACE_ID], TRACE);
        assert_eq!(map[X_B3_SPAN_ID], SPAN);
        assert_eq!(map[X_B3_SAMPLED], "1");
        assert!(!map.contains_key(X_B3_PARENT_SPAN_ID));
        assert!(!map.contains_key(X_B3_FLAGS));
        assert_eq!(map.len(), 3);
        assert_eq!(extract(&map), ids(TRACE, SPAN, Some(true)));
        inject_multi(&mut map, &t, &s, false);
        assert_eq!(map[X_B3_SAMPLED], "0");
        assert_eq!(extract(&map), ids(TRACE, SPAN, Some(false)));

        // 64-bit ids are written as 32 hex.
        let mut map = HeaderMap::new();
        inject_multi(&mut map, &trace(TRACE64), &s, true);
        assert_eq!(map[X_B3_TRACE_ID], format!("0000000000000000{TRACE64}").as_str());
        assert_eq!(extract(&map), ids(TRACE64, SPAN, Some(true)));

        round_trips(inject_multi, true);
    }

    #[test]
    fn strip_removes_all_six() {
        let mut map = headers(&[
            (B3, b"1"),
            (B3, b"\xff"),
            (X_B3_TRACE_ID, TRACE.as_bytes()),
            (X_B3_SPAN_ID, SPAN.as_bytes()),
            (X_B3_PARENT_SPAN_ID, PARENT.as_bytes()),
            (X_B3_SAMPLED, b"1"),
            (X_B3_SAMPLED, b"0"),
            (X_B3_FLAGS, b"1"),
            (HeaderName::from_static("traceparent"), b"keep"),
        ]);
        strip(&mut map);
        assert_eq!(map.len(), 1);
        assert_eq!(map["traceparent"], "keep");
        assert_eq!(extract(&map), None);
        // The names themselves, as the spec spells them (header names are case-insensitive).
        let names = [
            "b3",
            "X-B3-TraceId",
            "X-B3-SpanId",
            "X-B3-ParentSpanId",
            "X-B3-Sampled",
            "X-B3-Flags",
        ];
        for (constant, spelled) in [
            B3,
            X_B3_TRACE_ID,
            X_B3_SPAN_ID,
            X_B3_PARENT_SPAN_ID,
            X_B3_SAMPLED,
            X_B3_FLAGS,
        ]
        .iter()
        .zip(names)
        {
            assert_eq!(constant, &HeaderName::from_bytes(spelled.as_bytes()).unwrap());
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let names = [
            B3,
            X_B3_TRACE_ID,
            X_B3_SPAN_ID,
            X_B3_PARENT_SPAN_ID,
            X_B3_SAMPLED,
            X_B3_FLAGS,
        ];
        for len in 0..80 {
            for fill in [b'-', b'0', b'1', b'd', b'f', b'F', b' ', 0x80, 0xff] {
                let value = HeaderValue::from_bytes(&vec![fill; len]).unwrap_or(HeaderValue::from_static(""));
                for name in &names {
                    let mut map = HeaderMap::new();
                    map.insert(name.clone(), value.clone());
                    let _ = extract(&map);
                }
                let mut map = HeaderMap::new();
                for name in &names {
                    map.insert(name.clone(), value.clone());
                }
                let _ = extract(&map);
            }
        }
        // Multi-byte UTF-8 that lowercasing must not touch.
        let _ = single(&"é".repeat(16));
        let _ = single(&format!("{}-{}", "é".repeat(16), "é".repeat(8)));
    }
}
