//! The access line: one per request, written at the end of its response
//! body (the last step of each direction).
//!
//! The JSON is written by hand into a reused per-thread buffer: ids go in as
//! hex, numbers through `itoa`, the timestamp from a per-thread cache of the
//! current second, and strings are copied whole unless they hold a byte
//! that JSON escapes. It is on every request's path, where a serializer's
//! generic passes and intermediate strings cost more than the rest of the
//! line.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;
use crate::trace::{SpanId, TraceId};

use super::Sink;

/// `,"key":`, the start of a member after the object's first, made at
/// compile time (keys are kawal's own and need no escaping).
macro_rules! member {
    ($key:literal) => {
        concat!(",\"", $key, "\":")
    };
}

/// One access log line (ARCHITECTURE.md, "Access log"; docs/logging.md).
/// Only the path is logged, never the query string, headers or bodies: they
/// may carry secrets.
pub struct AccessLine<'a> {
    /// When the line is written (RFC 3339 UTC, milliseconds).
    pub timestamp: SystemTime,
    /// `[service] name`.
    pub service_name: &'a str,
    /// W3C trace id.
    pub trace_id: TraceId,
    /// kawal's own span id for this request.
    pub span_id: SpanId,
    /// The caller's span id, when the trace was continued.
    pub parent_span_id: Option<SpanId>,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Request method.
    pub method: &'a str,
    /// Normalized path, without query.
    pub path: &'a str,
    /// The authority the request named (Host, `:authority` or the
    /// absolute-form URI's), as routed.
    pub authority: Option<&'a str>,
    /// The client connection's protocol: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// The client's address.
    pub client_address: SocketAddr,
    /// The client's User-Agent, cut to 256 bytes.
    pub user_agent: Option<&'a str>,
    /// Status sent to the client.
    pub status_code: u16,
    /// From request head to the end of the response body.
    pub duration: Duration,
    /// Upstream name, when routed.
    pub upstream: Option<&'a str>,
    /// Upstream attempts made (0: answered by kawal itself).
    pub attempts: u32,
    /// The endpoint of the last attempt: which replica answered.
    pub endpoint: Option<SocketAddr>,
    /// From request head to the upstream's response head (retries and
    /// backoff included); `None` when no upstream answered.
    pub upstream_head_duration: Option<Duration>,
    /// The attempts that failed and were retried, in order.
    pub retried: &'a [RetriedAttempt],
    /// Verified user (JWT `sub`) or peer identity.
    pub user_id: Option<&'a str>,
    /// Verified peer identity (mTLS).
    pub peer_identity: Option<&'a str>,
    /// Index of the `[[inbound.allow]]` rule that allowed the request, so that
    /// every authorization decision is on record (a denial is a 403 line).
    pub authz_rule: Option<usize>,
    /// What the response cache did: hit, miss, stale, revalidated, coalesced, bypass.
    pub cache: Option<&'a str>,
    /// What the idempotency/ordering guard did: new, replayed, duplicate,
    /// conflict, mismatch, stale, queued.
    pub guard: Option<&'a str>,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Error kind, when kawal answered for the upstream or the exchange broke.
    pub error: Option<&'a str>,
    /// Human-readable cause of `error`.
    pub error_detail: Option<&'a str>,
}

/// One attempt that failed and was retried, on its request's access line.
#[derive(Debug, Clone)]
pub struct RetriedAttempt {
    /// The endpoint it went to.
    pub endpoint: Option<SocketAddr>,
    /// The status it got, when it got a response.
    pub status: Option<u16>,
    /// Why it failed, when it got none (an error kind, e.g. `upstream_connect`).
    pub error: Option<&'static str>,
}

/// Where access lines go, and in which format.
#[derive(Clone)]
pub struct AccessLog {
    /// The line sink.
    pub sink: Sink,
    /// `json` or `text`.
    pub format: LogFormat,
}

thread_local! {
    /// The line being written, reused from one request to the next.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl AccessLog {
    /// Writes the line and hands it to the sink.
    pub fn write(&self, line: &AccessLine<'_>) {
        LINE.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else {
                return;
            };
            buf.clear();
            match self.format {
                LogFormat::Json => line.write_json(&mut buf),
                LogFormat::Text => line.write_text(&mut buf),
            }
            buf.push(b'\n');
            self.sink.write_line(&buf);
        })
    }
}

impl AccessLine<'_> {
    /// The JSON object, keys in the documented order, absent values omitted.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out, self.timestamp);
        out.extend_from_slice(b"\",\"level\":\"info\"");
        let mut o = Object(out);
        o.str(member!("serviceName"), self.service_name);
        o.raw_str(member!("traceId"), &self.trace_id.to_hex());
        o.raw_str(member!("spanId"), &self.span_id.to_hex());
        if let Some(parent) = self.parent_span_id {
            o.raw_str(member!("parentSpanId"), &parent.to_hex());
        }
        o.raw_str(member!("direction"), self.direction.as_bytes());
        o.str(member!("method"), self.method);
        o.str(member!("path"), self.path);
        o.opt_str(member!("authority"), self.authority);
        o.raw_str(member!("protocol"), self.protocol.as_bytes());
        o.addr(member!("clientAddress"), self.client_address);
        o.opt_str(member!("userAgent"), self.user_agent);
        o.uint(member!("statusCode"), self.status_code);
        o.millis(member!("duration"), self.duration);
        o.opt_str(member!("upstream"), self.upstream);
        o.uint(member!("attempts"), self.attempts);
        if let Some(endpoint) = self.endpoint {
            o.addr(member!("endpoint"), endpoint);
        }
        if let Some(head) = self.upstream_head_duration {
            o.millis(member!("upstreamHeadDuration"), head);
        }
        if !self.retried.is_empty() {
            o.key(member!("retried"));
            o.0.push(b'[');
            for (i, attempt) in self.retried.iter().enumerate() {
                if i > 0 {
                    o.0.push(b',');
                }
                attempt.write_json(o.0);
            }
            o.0.push(b']');
        }
        o.opt_str(member!("userId"), self.user_id);
        o.opt_str(member!("peerIdentity"), self.peer_identity);
        if let Some(rule) = self.authz_rule {
            o.uint(member!("authzRule"), rule);
        }
        o.opt_str(member!("cache"), self.cache);
        o.opt_str(member!("guard"), self.guard);
        o.uint(member!("bytesIn"), self.bytes_in);
        o.uint(member!("bytesOut"), self.bytes_out);
        o.opt_str(member!("error"), self.error);
        o.opt_str(member!("errorDetail"), self.error_detail);
        o.0.push(b'}');
    }

    /// One human-readable line for local development, e.g.
    /// `… INFO kawal::access: inbound GET /x 200 1.234ms trace=… span=…`.
    fn write_text(&self, out: &mut Vec<u8>) {
        write_timestamp(out, self.timestamp);
        let _ = write!(
            out,
            "  INFO {}: {} {} {} {} {:.3}ms trace={} span={} client={} {}",
            super::ACCESS_TARGET,
            self.direction,
            self.method,
            self.path,
            self.status_code,
            self.duration.as_secs_f64() * 1000.0,
            self.trace_id,
            self.span_id,
            self.client_address,
            self.protocol
        );
        let parent = self.parent_span_id.map(|p| p.to_string());
        let endpoint = self.endpoint.map(|e| e.to_string());
        let optional = [
            ("parent", parent.as_deref()),
            ("authority", self.authority),
            ("upstream", self.upstream),
            ("endpoint", endpoint.as_deref()),
            ("cache", self.cache),
            ("guard", self.guard),
            ("user", self.user_id),
            ("peer", self.peer_identity),
            ("error", self.error),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                let _ = write!(out, " {key}={value}");
            }
        }
        let _ = write!(
            out,
            " attempts={} in={}B out={}B",
            self.attempts, self.bytes_in, self.bytes_out
        );
        if let Some(detail) = self.error_detail {
            let _ = write!(out, " detail={detail:?}");
        }
    }
}

impl RetriedAttempt {
    fn write_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut o = Object(out);
        if let Some(endpoint) = self.endpoint {
            o.addr(member!("endpoint"), endpoint);
        }
        if let Some(status) = self.status {
            o.uint(member!("status"), status);
        }
        if let Some(error) = self.error {
            o.str(member!("error"), error);
        }
        // Each member began with a comma: the first one's becomes the brace.
        match out.get_mut(start) {
            Some(comma) => *comma = b'{',
            None => out.push(b'{'),
        }
        out.push(b'}');
    }
}

/// Members of a JSON object after its first: each call writes a
/// [`member!`] and its value.
struct Object<'a>(&'a mut Vec<u8>);

impl Object<'_> {
    fn key(&mut self, member: &'static str) {
        self.0.extend_from_slice(member.as_bytes());
    }

    fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.string(value);
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// A string kawal made that needs no escaping (hex ids, fixed words).
    fn raw_str(&mut self, key: &'static str, value: &[u8]) {
        self.key(key);
        self.0.push(b'"');
        self.0.extend_from_slice(value);
        self.0.push(b'"');
    }

    fn uint(&mut self, key: &'static str, value: impl itoa::Integer) {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// Milliseconds with microsecond precision (`12.034`).
    fn millis(&mut self, key: &'static str, d: Duration) {
        self.key(key);
        let micros = d.as_micros().min(u64::MAX as u128) as u64;
        self.0
            .extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
        let frac = (micros % 1000) as u16;
        self.0.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }

    /// `"ip:port"` (`"[v6]:port"`); an IPv4 one is put together on the
    /// stack byte by byte (no copy call per piece) and appended once.
    fn addr(&mut self, key: &'static str, addr: SocketAddr) {
        self.key(key);
        match addr {
            SocketAddr::V4(v4) => {
                let mut text = [0u8; 23]; // "255.255.255.255:65535"
                text[0] = b'"';
                let mut n = 1;
                let [a, b, c, d] = v4.ip().octets();
                for (octet, after) in [(a, b'.'), (b, b'.'), (c, b'.'), (d, b':')] {
                    if octet >= 100 {
                        text[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        text[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    text[n] = b'0' + octet % 10;
                    text[n + 1] = after;
                    n += 2;
                }
                let port = v4.port();
                let digits = match port {
                    0..=9 => 1,
                    10..=99 => 2,
                    100..=999 => 3,
                    1000..=9999 => 4,
                    _ => 5,
                };
                let mut rest = port;
                for i in (0..digits).rev() {
                    text[n + i] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                }
                text[n + digits] = b'"';
                self.0.extend_from_slice(&text[..n + digits + 1]);
            }
            SocketAddr::V6(v6) => {
                let _ = write!(self.0, "\"{v6}\"");
            }
        }
    }

    /// A JSON string: copied whole when nothing in it needs escaping (the
    /// usual case), else in runs, escaping only `"`, `\\` and control
    /// characters (what JSON requires).
    fn string(&mut self, value: &str) {
        let out = &mut *self.0;
        out.push(b'"');
        let bytes = value.as_bytes();
        if !needs_escape(bytes) {
            out.extend_from_slice(bytes);
            out.push(b'"');
            return;
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if !escaped(b) {
                continue;
            }
            out.extend_from_slice(&bytes[start..i]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 0xf) as usize]);
                }
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }
}

/// Whether JSON needs `b` escaped inside a string.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `bytes` needs escaping, eight bytes at a time: a
/// word has a byte below 0x20, or equal to `"` or `\`, exactly when the
/// classic "has less" / "has zero" bit tricks say so.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_ne_bytes(word.try_into().unwrap_or_default());
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
        if below_space || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\'))) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| escaped(b))
}

thread_local! {
    /// The last second written, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `2026-12-03T07:24:17.737Z`: the date and time are formatted once per
/// second per thread, the milliseconds each time.
pub(super) fn write_timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let formatted = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        text.copy_from_slice(&formatted.as_bytes()[..19]);
        SECOND.set((secs, text));
    }
    out.extend_from_slice(&text);
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u64 = 1_764_746_657_007;

    fn line<'a>(retried: &'a [RetriedAttempt]) -> AccessLine<'a> {
        AccessLine {
            timestamp: UNIX_EPOCH + Duration::from_millis(AT),
            service_name: "orders",
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([1; 8]),
            parent_span_id: None,
            direction: "inbound",
            method: "GET",
            path: "/a\"b\\c\u{1}\n/ü",
            authority: Some("orders.internal:8080"),
            protocol: "HTTP/2",
            client_address: "[::1]:40000".parse().unwrap(),
            user_agent: None,
            status_code: 503,
            duration: Duration::from_micros(12_034),
            upstream: Some("app"),
            attempts: 2,
            endpoint: Some("10.0.0.7:8080".parse().unwrap()),
            upstream_head_duration: Some(Duration::from_micros(999)),
            retried,
            user_id: None,
            peer_identity: Some("spiffe://t/ns/x/sa/y"),
            authz_rule: Some(0),
            cache: None,
            guard: Some("new"),
            bytes_in: 0,
            bytes_out: u64::MAX,
            error: Some("upstream_status"),
            error_detail: Some("tab\there"),
        }
    }

    #[test]
    fn the_json_line_parses_with_every_value_as_given_and_keys_in_order() {
        let retried = [
            RetriedAttempt {
                endpoint: Some("10.0.0.6:8080".parse().unwrap()),
                status: Some(503),
                error: None,
            },
            RetriedAttempt {
                endpoint: None,
                status: None,
                error: Some("upstream_connect"),
            },
        ];
        let mut out = Vec::new();
        line(&retried).write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        let expected = serde_json::json!({
            "timestamp": humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(AT)).to_string(),
            "level": "info",
            "serviceName": "orders",
            "traceId": "abababababababababababababababab",
            "spanId": "0101010101010101",
            "direction": "inbound",
            "method": "GET",
            "path": "/a\"b\\c\u{1}\n/ü",
            "authority": "orders.internal:8080",
            "protocol": "HTTP/2",
            "clientAddress": "[::1]:40000",
            "statusCode": 503,
            "duration": 12.034,
            "upstream": "app",
            "attempts": 2,
            "endpoint": "10.0.0.7:8080",
            "upstreamHeadDuration": 0.999,
            "retried": [{"endpoint": "10.0.0.6:8080", "status": 503}, {"error": "upstream_connect"}],
            "peerIdentity": "spiffe://t/ns/x/sa/y",
            "authzRule": 0,
            "guard": "new",
            "bytesIn": 0,
            "bytesOut": u64::MAX,
            "error": "upstream_status",
            "errorDetail": "tab\there",
        });
        assert_eq!(v, expected);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let want: Vec<&String> = expected.as_object().unwrap().keys().collect();
        assert_eq!(keys, want, "keys in the documented order");
    }

    #[test]
    fn addresses_are_written_as_their_display() {
        for text in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "1.22.103.9:80",
            "10.0.100.99:8080",
            "1.2.3.4:9",
            "9.9.9.9:10",
            "100.0.0.1:999",
            "1.1.1.1:1000",
            "[fd00::1]:443",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut out = Vec::new();
            Object(&mut out).addr(member!("a"), addr);
            assert_eq!(String::from_utf8(out).unwrap(), format!(",\"a\":\"{addr}\""));
        }
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_rule_at_every_position() {
        for len in [1usize, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(needs_escape(&bytes), escaped(b), "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    #[test]
    fn the_timestamp_cache_follows_the_clock_across_seconds() {
        for ms in [
            0u64,
            999,
            1000,
            1_764_746_657_999,
            1_764_746_658_000,
            1_764_746_657_500,
        ] {
            let at = UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            write_timestamp(&mut out, at);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_millis(at).to_string()
            );
        }
    }
}
