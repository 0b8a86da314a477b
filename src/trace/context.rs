//! W3C Trace Context Level 1: the `traceparent` header.
//!
//! `traceparent` is `{version}-{trace-id}-{parent-id}-{flags}`, all lowercase
//! hex: `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
//! [`TraceContext::parse`] follows the spec's parsing rules exactly (a value
//! it rejects must be replaced, never forwarded) and
//! [`TraceContext::to_header_value`] writes version `00` from a stack buffer
//! without `format!`. `tracestate` is bounded and cleaned by [`super::state`],
//! otherwise passed on as the caller sent it.

use std::fmt;

use http::HeaderValue;

/// Length of a version `00` traceparent: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
pub const TRACEPARENT_LEN: usize = 55;

/// Bit 0 of the trace flags: the caller recorded (sampled) this trace.
pub const FLAG_SAMPLED: u8 = 0x01;

/// A 16-byte trace id, never all zeros when it comes from [`TraceId::random`]
/// or [`TraceContext::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zeros when it comes from [`SpanId::random`]
/// or [`TraceContext::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new random trace id from the thread-local RNG (never all zeros,
    /// which the spec reserves as invalid).
    pub fn random() -> TraceId {
        loop {
            let id: u128 = rand::random();
            if id != 0 {
                return TraceId(id.to_be_bytes());
            }
        }
    }

    /// The id as 32 lowercase hex bytes, for writing without allocating.
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        encode_hex(&self.0, &mut out);
        out
    }

    /// The id as a header value (e.g. for `x-trace-id` on a response).
    pub fn to_header_value(&self) -> HeaderValue {
        hex_header_value(&self.to_hex())
    }
}

impl SpanId {
    /// A new random span id from the thread-local RNG (never all zeros).
    pub fn random() -> SpanId {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return SpanId(id.to_be_bytes());
            }
        }
    }

    /// The id as 16 lowercase hex bytes, for writing without allocating.
    pub fn to_hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        encode_hex(&self.0, &mut out);
        out
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii_str(&self.to_hex()))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii_str(&self.to_hex()))
    }
}

/// A parsed `traceparent`: whose trace this is, the caller's span, and flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceContext {
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The span of the party that sent this header.
    pub parent_id: SpanId,
    /// Trace flags; bit 0 ([`FLAG_SAMPLED`]) is the only one Level 1 defines.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value; `None` means it must be ignored (and a
    /// new trace started).
    ///
    /// Version `00` must be exactly 55 characters. Version `ff` is invalid. A
    /// higher version is read by its first 55 characters, which must be
    /// followed by the end or a `-` (its later fields are unknown to us).
    /// Only lowercase hex is accepted, and all-zero ids are invalid.
    pub fn parse(traceparent: &[u8]) -> Option<TraceContext> {
        let head = traceparent.get(..TRACEPARENT_LEN)?;
        let version = decode_hex::<1>(&head[0..2])?[0];
        match version {
            0xff => return None,
            0x00 if traceparent.len() != TRACEPARENT_LEN => return None,
            _ if traceparent.len() > TRACEPARENT_LEN && traceparent[TRACEPARENT_LEN] != b'-' => {
                return None;
            }
            _ => {}
        }
        if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        let trace_id = decode_hex::<16>(&head[3..35])?;
        let parent_id = decode_hex::<8>(&head[36..52])?;
        let flags = decode_hex::<1>(&head[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }

    /// Whether the caller sampled (recorded) this trace.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Writes the version `00` traceparent into a stack buffer. All flag bits
    /// are written as they are; clearing unknown ones is the caller's choice.
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        encode_hex(&self.trace_id.0, &mut out[3..35]);
        encode_hex(&self.parent_id.0, &mut out[36..52]);
        encode_hex(&[self.flags], &mut out[53..55]);
        out
    }

    /// The version `00` traceparent as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        hex_header_value(&self.to_bytes())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii_str(&self.to_bytes()))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out`, which holds twice as many bytes.
fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// Decodes exactly `2 * N` lowercase hex digits; uppercase is invalid here
/// because the spec says so.
pub(super) fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Views bytes produced by `encode_hex` (always ASCII) as a `str`.
fn ascii_str(bytes: &[u8]) -> &str {
    // The input is hex digits and '-', so this never takes the fallback.
    std::str::from_utf8(bytes).unwrap_or("")
}

/// Builds a header value from hex bytes, which are always valid header bytes.
pub(super) fn hex_header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_valid() {
        let ctx = TraceContext::parse(VALID.as_bytes()).unwrap();
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(ctx.flags, 0x01);
        assert!(ctx.sampled());
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceContext::parse(unsampled.as_bytes()).unwrap().sampled());
    }

    #[test]
    fn round_trips() {
        for s in [VALID, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"] {
            let ctx = TraceContext::parse(s.as_bytes()).unwrap();
            assert_eq!(ctx.to_bytes().as_slice(), s.as_bytes());
            assert_eq!(ctx.to_header_value(), s);
            assert_eq!(ctx.to_string(), s);
        }
    }

    #[test]
    fn rejects_uppercase_and_non_hex() {
        assert!(TraceContext::parse(VALID.to_uppercase().as_bytes()).is_none());
        let mixed = VALID.replace("4bf9", "4BF9");
        assert!(TraceContext::parse(mixed.as_bytes()).is_none());
        let non_hex = VALID.replace("4bf9", "4bg9");
        assert!(TraceContext::parse(non_hex.as_bytes()).is_none());
        assert!(TraceContext::parse(VALID.replace("-01", "-0G").as_bytes()).is_none());
    }

    #[test]
    fn rejects_wrong_lengths_and_separators() {
        for bad in [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}0"),
            &format!("{VALID}-"),
            &format!(" {VALID}"),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-001",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        ] {
            assert!(TraceContext::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_zero_ids() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert!(TraceContext::parse(zero_trace.as_bytes()).is_none());
        assert!(TraceContext::parse(zero_span.as_bytes()).is_none());
    }

    #[test]
    fn version_ff_is_invalid() {
        let ff = VALID.replacen("00", "ff", 1);
        assert!(TraceContext::parse(ff.as_bytes()).is_none());
    }

    #[test]
    fn future_versions() {
        let v = VALID.replacen("00", "cc", 1);
        assert!(TraceContext::parse(v.as_bytes()).is_some());
        let extra = format!("{v}-what-the-future-will-be-like");
        let ctx = TraceContext::parse(extra.as_bytes()).unwrap();
        // Forwarded as version 00 with the same ids.
        assert_eq!(ctx.to_string(), VALID);
        // The 55 characters must end at a field boundary.
        assert!(TraceContext::parse(format!("{v}x").as_bytes()).is_none());
        // A future version still needs valid fields.
        let bad = v.replace("-01", "-0x");
        assert!(TraceContext::parse(bad.as_bytes()).is_none());
    }

    #[test]
    fn random_ids_are_nonzero_and_differ() {
        let (a, b) = (TraceId::random(), TraceId::random());
        assert_ne!(a.0, [0; 16]);
        assert_ne!(a, b);
        let (c, d) = (SpanId::random(), SpanId::random());
        assert_ne!(c.0, [0; 8]);
        assert_ne!(c, d);
    }

    #[test]
    fn hex_display() {
        let id = TraceId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.to_header_value(), "ab".repeat(16).as_str());
        assert_eq!(
            SpanId([0, 1, 2, 3, 4, 5, 6, 0xff]).to_string(),
            "00010203040506ff"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for len in 0..70 {
            for fill in [b'-', b'0', b'f', 0xff] {
                let _ = TraceContext::parse(&vec![fill; len]);
            }
        }
        let _ = TraceContext::parse("00-é".repeat(20).as_bytes());
    }
}
