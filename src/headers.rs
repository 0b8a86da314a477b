//! Proxy header hygiene and request-smuggling checks.
//!
//! - [`check_request_framing`] refuses any request whose body length two
//!   parsers could read differently (RFC 9112 §6.1, §6.3): that disagreement
//!   between kawal and the next hop is what request smuggling exploits.
//! - [`check_authority`] picks the one authority used for routing and for the
//!   Host the next hop sees.
//! - [`strip_hop_by_hop`] removes the headers that describe one connection and
//!   must not be forwarded (RFC 9110 §7.6.1).
//! - [`strip_kawal_identity`] and [`append_forwarded_for`] keep the headers
//!   kawal hands to the app trustworthy.
//!
//! The names kawal itself reads or writes are constants here, so that a typo
//! cannot make two modules disagree.

use std::fmt;
use std::net::IpAddr;

use http::header::{
    CONNECTION, CONTENT_LENGTH, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

/// `x-kawal-error`: the kind of an error kawal itself produced.
pub const X_KAWAL_ERROR: HeaderName = HeaderName::from_static("x-kawal-error");
/// `x-trace-id`: the trace id, on responses, so a caller can quote it.
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context), passed on bounded (`trace::state`).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `x-forwarded-for`: the chain of client addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`: the scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`: the Host the client used.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `idempotency-key`: marks a request as safe to deduplicate or retry.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `x-kawal-peer-identity`: the verified mTLS peer, set by kawal only.
pub const X_KAWAL_PEER_IDENTITY: HeaderName = HeaderName::from_static("x-kawal-peer-identity");
/// `x-kawal-user`: the verified user, set by kawal only.
pub const X_KAWAL_USER: HeaderName = HeaderName::from_static("x-kawal-user");

/// `keep-alive`, `proxy-connection` and `http2-settings` have no constant in
/// `http`; they are hop-by-hop all the same.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Why a request head was refused; the `Display` text goes into the 400 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Both Content-Length and Transfer-Encoding are present.
    ContentLengthWithTransferEncoding,
    /// More than one Content-Length header.
    DuplicateContentLength,
    /// A Content-Length that is not a plain decimal number.
    InvalidContentLength,
    /// More than one Transfer-Encoding header.
    DuplicateTransferEncoding,
    /// A Transfer-Encoding other than exactly `chunked`.
    UnsupportedTransferEncoding,
    /// Transfer-Encoding in an HTTP/1.0 request, whose framing is then faulty
    /// (RFC 9112 §6.1).
    TransferEncodingInHttp10,
    /// An HTTP/1.1 request without Host.
    MissingHost,
    /// More than one Host header.
    DuplicateHost,
    /// An empty Host header.
    EmptyHost,
    /// A Host or authority that does not parse as `host[:port]`.
    InvalidHost,
    /// An authority with `user@` in it.
    UserinfoInAuthority,
    /// The request target's authority and the Host header disagree.
    AuthorityMismatch,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding are present"
            }
            FramingError::DuplicateContentLength => "more than one Content-Length header",
            FramingError::InvalidContentLength => "Content-Length is not a decimal number",
            FramingError::DuplicateTransferEncoding => "more than one Transfer-Encoding header",
            FramingError::UnsupportedTransferEncoding => "Transfer-Encoding must be exactly chunked",
            FramingError::TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
            FramingError::MissingHost => "Host header is missing",
            FramingError::DuplicateHost => "more than one Host header",
            FramingError::EmptyHost => "Host header is empty",
            FramingError::InvalidHost => "Host is not a valid host[:port]",
            FramingError::UserinfoInAuthority => "authority must not contain user information",
            FramingError::AuthorityMismatch => "request target authority and Host header disagree",
        })
    }
}

impl std::error::Error for FramingError {}

/// Whether `name` is present. A scan of the names, not a hashed lookup: a
/// request carries a handful of headers, and comparing those costs less than
/// hashing the name, above all for names kawal looks for and seldom finds
/// (`tracestate`, `idempotency-key`, its own identity headers). The header
/// count is capped by the limits.
pub fn has(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|k| k == name)
}

/// The values of `name` in order, found as by [`has`].
pub fn values(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &HeaderValue> {
    headers.iter().filter_map(move |(k, v)| (*k == name).then_some(v))
}

/// The first value of `name`, found as by [`has`].
pub fn first<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    headers.iter().find_map(|(k, v)| (k == name).then_some(v))
}

/// Removes hop-by-hop headers: the fixed list of RFC 9110 §7.6.1 plus every
/// header named in a `Connection` value. Names in `Connection` that are not
/// valid header names are ignored.
///
/// Every forwarded head passes here, so the body framing is made
/// unambiguous here too: a Content-Length beside a Transfer-Encoding is
/// stale (the body was read as chunked, RFC 9112 §6.3) and is removed, and a
/// Content-Length is forwarded in its canonical decimal form (`010` → `10`,
/// `5, 5` → `5`), the length kawal read the body by.
///
/// The caller must add its own headers (Host, traceparent, identity) after
/// this, since a client may name any header in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass of cheap comparisons first: most messages carry none of these,
    // and each `remove` would hash its name.
    let (mut hop, mut length) = (false, Field::default());
    for (name, value) in headers.iter() {
        if name == CONTENT_LENGTH {
            length.see(value);
        } else if HOP_BY_HOP.contains(name) {
            hop = true;
        }
    }
    let canonical = match length.first {
        Some(first) if length.repeated || !is_canonical_length(first.as_bytes()) => {
            Some(canonical_length(headers))
        }
        _ => None,
    };
    if !hop && canonical.is_none() {
        return;
    }
    if hop && has(headers, &TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    } else if let Some(canonical) = canonical {
        match canonical {
            Some(len) => headers.insert(CONTENT_LENGTH, HeaderValue::from(len)),
            // Lengths that disagree (only a peer's own parser let them
            // through): none is trustworthy, the body is framed anew.
            None => headers.remove(CONTENT_LENGTH),
        };
    }
    if !hop {
        return;
    }
    // Collect first: the map cannot be changed while `Connection` is borrowed.
    let named: Vec<HeaderName> = list_tokens(headers, CONNECTION)
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Plain digits without a leading zero (`0` itself is canonical).
fn is_canonical_length(value: &[u8]) -> bool {
    matches!(value, [b'0'] | [b'1'..=b'9', ..]) && value.iter().all(u8::is_ascii_digit)
}

/// The one length all Content-Length values and list elements state, or
/// `None` when they disagree or one does not parse.
fn canonical_length(headers: &HeaderMap) -> Option<u64> {
    let mut lengths = list_tokens(headers, CONTENT_LENGTH).map(|t| {
        std::str::from_utf8(t)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
    });
    let first = lengths.next()??;
    lengths.all(|l| l == Some(first)).then_some(first)
}

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HTTP2_SETTINGS,
];

/// Whether an HTTP/1.1 request is a WebSocket handshake (RFC 6455 §4.1):
/// `Upgrade: websocket`, with `upgrade` named in `Connection`. It is the one
/// upgrade kawal carries across; `h2c` and any other are stripped.
pub fn is_websocket_upgrade(version: Version, headers: &HeaderMap) -> bool {
    let has_token = |name, token: &[u8]| list_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token));
    // Upgrade first: it is the one a plain request does not carry.
    version == Version::HTTP_11 && has_token(UPGRADE, b"websocket") && has_token(CONNECTION, b"upgrade")
}

/// The trimmed elements of a comma-separated header, over all its lines
/// (found as by [`has`]).
fn list_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    values(headers, name)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Puts back, after [`strip_hop_by_hop`], the two headers that carry a
/// WebSocket handshake (request) or its acceptance (101) across one hop.
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Refuses request heads whose body framing is ambiguous, and (for HTTP/1.x)
/// a missing, repeated or empty Host. HTTP/2 Host checks are in
/// [`check_authority`]. Returns the Content-Length, if any (`u64::MAX` when
/// its digits overflow).
pub fn check_request_framing(version: Version, headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    // One pass over the head instead of a hashed lookup per name.
    let (mut cl, mut te, mut host) = (Field::default(), Field::default(), Field::default());
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            cl.see(value);
        } else if name == TRANSFER_ENCODING {
            te.see(value);
        } else if name == HOST {
            host.see(value);
        }
    }
    if cl.first.is_some() && te.first.is_some() {
        return Err(FramingError::ContentLengthWithTransferEncoding);
    }
    if let Some(value) = cl.first {
        if cl.repeated {
            return Err(FramingError::DuplicateContentLength);
        }
        // Digits only: no sign, no spaces, no comma list such as "5, 5".
        let digits = value.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::InvalidContentLength);
        }
    }
    let content_length = cl
        .first
        .map(|v| v.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX));
    if let Some(value) = te.first {
        if version == Version::HTTP_10 || version == Version::HTTP_09 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        if te.repeated {
            return Err(FramingError::DuplicateTransferEncoding);
        }
        // Trim only OWS (space, tab), as HTTP parsers do around field values.
        let coding = value.as_bytes().trim_ascii();
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(FramingError::UnsupportedTransferEncoding);
        }
    }
    if version < Version::HTTP_2 {
        match host.first {
            None if version == Version::HTTP_11 => return Err(FramingError::MissingHost),
            Some(_) if host.repeated => return Err(FramingError::DuplicateHost),
            Some(value) if value.as_bytes().trim_ascii().is_empty() => {
                return Err(FramingError::EmptyHost);
            }
            _ => {}
        }
    }
    Ok(content_length)
}

/// The first value of a header field, and whether another followed it.
#[derive(Default)]
struct Field<'a> {
    first: Option<&'a HeaderValue>,
    repeated: bool,
}

impl<'a> Field<'a> {
    fn see(&mut self, value: &'a HeaderValue) {
        self.repeated |= self.first.is_some();
        self.first.get_or_insert(value);
    }
}

/// Returns the one authority to route on and forward, as the Host value the
/// next hop sees: the request target's authority when it has one
/// (absolute-form in HTTP/1.1, or `:authority` in HTTP/2), else the Host
/// header; `None` when neither exists.
///
/// If both exist they must agree (ASCII case-insensitively). RFC 9112 §3.2.2
/// lets HTTP/1.1 absolute-form override Host, but a request whose two names
/// disagree is refused here rather than guessed at, for every version.
pub fn check_authority(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, FramingError> {
    let mut hosts = values(headers, HOST);
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(FramingError::DuplicateHost);
    }
    let authority = match (uri.authority(), host) {
        // HTTP/1.1 absolute-form: the target's authority wins and Host is
        // ignored (RFC 9112 §3.2.2); the caller forwards that one authority.
        // HTTP/2: `:authority` and `host` must agree (RFC 9113 §8.3.1).
        (Some(authority), host) => {
            if version == Version::HTTP_2
                && host.is_some_and(|h| !authority.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()))
            {
                return Err(FramingError::AuthorityMismatch);
            }
            HeaderValue::from_str(authority.as_str()).map_err(|_| FramingError::InvalidHost)?
        }
        (None, Some(host)) => {
            if host.is_empty() {
                return Err(FramingError::EmptyHost);
            }
            host.clone()
        }
        (None, None) => return Ok(None),
    };
    check_host_port(authority.as_bytes())?;
    Ok(Some(authority))
}

/// Checks `host[:port]` with the crate's one host validator
/// ([`crate::host::split_authority`]): a bracketed IPv6 literal, an IPv4
/// address or a DNS name, then a port that fits 16 bits. Userinfo is refused:
/// `user@host` reads as another host to some parsers.
fn check_host_port(text: &[u8]) -> Result<(), FramingError> {
    let text = std::str::from_utf8(text).map_err(|_| FramingError::InvalidHost)?;
    match crate::host::split_authority(text) {
        Ok(_) => Ok(()),
        Err(crate::host::HostError::Userinfo) => Err(FramingError::UserinfoInAuthority),
        Err(_) => Err(FramingError::InvalidHost),
    }
}

/// `host[:port]` split at the port's colon; an IPv6 literal's colons are
/// inside its brackets.
pub fn split_port(authority: &[u8]) -> (&[u8], Option<&[u8]>) {
    match authority.iter().rposition(|&b| b == b':') {
        Some(i) if !authority[i..].contains(&b']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    }
}

/// The client's IP as a header value, made once per connection so each
/// request only clones it (a reference count, no allocation).
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    // An IP's text is always a valid header value; the fallback is no panic path.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends the client's IP (see [`ip_header_value`]) to X-Forwarded-For
/// (`existing, ip`), or sets it. Several incoming X-Forwarded-For headers are
/// folded into one, in order.
pub fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    if !has(headers, &X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
        return;
    }
    let mut value = Vec::new();
    for existing in headers.get_all(X_FORWARDED_FOR) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(client_ip.as_bytes());
    // Existing values are valid header bytes and so is the IP text, so the
    // fallback (the IP alone) is only there to avoid a panic path.
    let value = HeaderValue::from_bytes(&value).unwrap_or_else(|_| client_ip.clone());
    headers.insert(X_FORWARDED_FOR, value);
}

/// What to do with a request header whose name has an underscore
/// (`[inbound] headers_with_underscores`, after Envoy's option of that name).
/// CGI, WSGI, Rack and PHP map `_` and `-` to one variable (`HTTP_X_USER`),
/// so `x_user` can pose as `x-user` set by a trusted hop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreAction {
    /// Forward them.
    Allow,
    /// Remove them before forwarding (nginx's default).
    #[default]
    Drop,
    /// Refuse the request with 400.
    Reject,
}

/// A request header had an underscore in its name under
/// [`UnderscoreAction::Reject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderscoreHeader;

impl fmt::Display for UnderscoreHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("header names with underscores are not accepted")
    }
}

impl std::error::Error for UnderscoreHeader {}

/// Removes the identity headers only kawal may set, so no caller can forge
/// them: in any spelling that reads as theirs once `_` is read as `-`
/// (`x_kawal_user` is `HTTP_X_KAWAL_USER` to a WSGI app, as `x-kawal-user`
/// is), whatever `underscores` says. Other names with an underscore are
/// kept, dropped or refused as `underscores` says.
pub fn strip_kawal_identity(
    headers: &mut HeaderMap,
    underscores: UnderscoreAction,
) -> Result<(), UnderscoreHeader> {
    const OWN: [HeaderName; 2] = [X_KAWAL_PEER_IDENTITY, X_KAWAL_USER];
    // One pass over the names; a removal (rare) allocates.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let underscore = name.as_str().contains('_');
        if underscore && underscores == UnderscoreAction::Reject {
            return Err(UnderscoreHeader);
        }
        let drop = if underscore {
            underscores == UnderscoreAction::Drop || OWN.iter().any(|own| same_as_dashed(name, own))
        } else {
            OWN.contains(name)
        };
        if drop {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    Ok(())
}

/// Whether `name` equals `own` once every `_` in it is read as `-`.
fn same_as_dashed(name: &HeaderName, own: &HeaderName) -> bool {
    let (a, b) = (name.as_str().as_bytes(), own.as_str().as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn strips_fixed_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("content-type", "text/plain"),
            ("authorization", "Bearer x"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["authorization", "content-type"]);
    }

    #[test]
    fn websocket_handshakes_are_recognized() {
        let ws = |pairs: &[(&str, &str)], version| is_websocket_upgrade(version, &map(pairs));
        let handshake = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];
        assert!(ws(&handshake, Version::HTTP_11));
        assert!(!ws(&handshake, Version::HTTP_10));
        assert!(!ws(&handshake, Version::HTTP_2));
        assert!(
            !ws(&[("upgrade", "websocket")], Version::HTTP_11),
            "not named in Connection"
        );
        assert!(!ws(
            &[("connection", "upgrade"), ("upgrade", "h2c")],
            Version::HTTP_11
        ));

        let mut h = map(&handshake);
        strip_hop_by_hop(&mut h);
        set_websocket_upgrade(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn strips_headers_named_in_connection() {
        let mut h = map(&[("connection", "close, X-Foo"), ("x-foo", "1"), ("x-bar", "2")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-bar"]);

        let mut h = map(&[
            ("connection", " X-A ,,\tx-b"),
            ("connection", "X-C"),
            ("connection", "bad name, (nope)"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-b", "2 again"),
            ("x-c", "3"),
            ("x-d", "4"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-d"]);
    }

    #[test]
    fn strip_leaves_clean_headers_alone() {
        let mut h = map(&[("host", "a"), ("content-length", "3")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-length", "host"]);
        strip_hop_by_hop(&mut HeaderMap::new());
    }

    #[test]
    fn framing_accepts_normal_requests() {
        let v11 = Version::HTTP_11;
        assert_eq!(check_request_framing(v11, &map(&[("host", "a")])), Ok(None));
        let cl = map(&[("host", "a"), ("content-length", "0")]);
        assert_eq!(check_request_framing(v11, &cl), Ok(Some(0)));
        for te in ["chunked", "Chunked", "CHUNKED", " chunked\t"] {
            let h = map(&[("host", "a"), ("transfer-encoding", te)]);
            assert_eq!(check_request_framing(v11, &h), Ok(None), "{te:?}");
        }
        // HTTP/1.0 may omit Host; HTTP/2 Host is checked by check_authority.
        assert_eq!(
            check_request_framing(Version::HTTP_10, &HeaderMap::new()),
            Ok(None)
        );
        assert_eq!(
            check_request_framing(Version::HTTP_2, &HeaderMap::new()),
            Ok(None)
        );
        let two = map(&[("host", "a"), ("host", "b")]);
        assert_eq!(check_request_framing(Version::HTTP_2, &two), Ok(None));
    }

    #[test]
    fn framing_rejects_smuggling() {
        use FramingError::*;
        let cases: &[(&[(&str, &str)], FramingError)] = &[
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                ContentLengthWithTransferEncoding,
            ),
            (
                &[("content-length", "5"), ("content-length", "5")],
                DuplicateContentLength,
            ),
            (&[("content-length", "+5")], InvalidContentLength),
            (&[("content-length", "-1")], InvalidContentLength),
            (&[("content-length", "5, 5")], InvalidContentLength),
            (&[("content-length", "0x5")], InvalidContentLength),
            (&[("content-length", "")], InvalidContentLength),
            (&[("content-length", " 5")], InvalidContentLength),
            (
                &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
                DuplicateTransferEncoding,
            ),
            (
                &[("transfer-encoding", "gzip, chunked")],
                UnsupportedTransferEncoding,
            ),
            (
                &[("transfer-encoding", "chunked, identity")],
                UnsupportedTransferEncoding,
            ),
            (&[("transfer-encoding", "xchunked")], UnsupportedTransferEncoding),
            (
                &[("transfer-encoding", "chunked;x=1")],
                UnsupportedTransferEncoding,
            ),
            (&[("transfer-encoding", "identity")], UnsupportedTransferEncoding),
            (&[("transfer-encoding", "")], UnsupportedTransferEncoding),
        ];
        for (pairs, want) in cases {
            let mut h = map(pairs);
            h.append(HOST, HeaderValue::from_static("a"));
            for v in [Version::HTTP_11, Version::HTTP_2] {
                assert_eq!(check_request_framing(v, &h), Err(*want), "{pairs:?} {v:?}");
            }
        }
        let te10 = map(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            check_request_framing(Version::HTTP_10, &te10),
            Err(TransferEncodingInHttp10)
        );
    }

    #[test]
    fn framing_checks_host_for_http1() {
        use FramingError::*;
        let v11 = Version::HTTP_11;
        assert_eq!(check_request_framing(v11, &HeaderMap::new()), Err(MissingHost));
        assert_eq!(
            check_request_framing(v11, &map(&[("host", "a"), ("host", "a")])),
            Err(DuplicateHost)
        );
        assert_eq!(check_request_framing(v11, &map(&[("host", "")])), Err(EmptyHost));
        assert_eq!(check_request_framing(v11, &map(&[("host", " ")])), Err(EmptyHost));
        let v10 = Version::HTTP_10;
        assert_eq!(
            check_request_framing(v10, &map(&[("host", "a"), ("host", "b")])),
            Err(DuplicateHost)
        );
    }

    #[test]
    fn authority_from_host_or_target() {
        let origin: Uri = "/x".parse().unwrap();
        for good in ["a:65535", "[::1]", "[::1]:8080", "10.0.0.1:1"] {
            let got = check_authority(Version::HTTP_11, &origin, &map(&[("host", good)])).unwrap();
            assert_eq!(got.unwrap(), good);
        }
        let got = check_authority(Version::HTTP_11, &origin, &map(&[("host", "api.local:8080")])).unwrap();
        assert_eq!(got.unwrap(), "api.local:8080");
        assert_eq!(
            check_authority(Version::HTTP_11, &origin, &HeaderMap::new()),
            Ok(None)
        );

        let absolute: Uri = "http://Api.Local/x".parse().unwrap();
        let got = check_authority(Version::HTTP_11, &absolute, &HeaderMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(got, "Api.Local");
        let same = map(&[("host", "api.local")]);
        assert_eq!(
            check_authority(Version::HTTP_11, &absolute, &same)
                .unwrap()
                .unwrap(),
            "Api.Local",
            "the target's authority, as written"
        );
    }

    #[test]
    fn authority_rejects_bad_input() {
        use FramingError::*;
        let origin: Uri = "/x".parse().unwrap();
        let absolute: Uri = "http://a.local/x".parse().unwrap();
        let disagree = map(&[("host", "b.local")]);
        assert_eq!(
            check_authority(Version::HTTP_2, &absolute, &disagree),
            Err(AuthorityMismatch)
        );
        // HTTP/1.1 absolute-form: the target's authority wins over Host.
        assert_eq!(
            check_authority(Version::HTTP_11, &absolute, &disagree)
                .unwrap()
                .unwrap(),
            "a.local"
        );
        let two = map(&[("host", "a.local"), ("host", "a.local")]);
        assert_eq!(
            check_authority(Version::HTTP_11, &origin, &two),
            Err(DuplicateHost)
        );
        assert_eq!(
            check_authority(Version::HTTP_11, &origin, &map(&[("host", "")])),
            Err(EmptyHost)
        );
        for bad in [
            "a b",
            "a/b",
            "a.local:99999x",
            "a:99999",
            "a:65536",
            "a:",
            "a:+80",
            "[::1",
            ":80",
        ] {
            assert_eq!(
                check_authority(Version::HTTP_11, &origin, &map(&[("host", bad)])),
                Err(InvalidHost),
                "{bad}"
            );
        }
        assert_eq!(
            check_authority(Version::HTTP_11, &origin, &map(&[("host", ":80")])),
            Err(InvalidHost)
        );
        let userinfo = map(&[("host", "user@a.local")]);
        assert_eq!(
            check_authority(Version::HTTP_11, &origin, &userinfo),
            Err(UserinfoInAuthority)
        );
        let with_user: Uri = "http://user:pw@a.local/x".parse().unwrap();
        assert_eq!(
            check_authority(Version::HTTP_11, &with_user, &HeaderMap::new()),
            Err(UserinfoInAuthority)
        );
    }

    #[test]
    fn h2_authority_and_host() {
        // hyper turns an HTTP/2 :authority into the URI's authority.
        let uri: Uri = "https://orders.svc:8443/x".parse().unwrap();
        assert_eq!(
            check_authority(Version::HTTP_2, &uri, &HeaderMap::new())
                .unwrap()
                .unwrap(),
            "orders.svc:8443"
        );
        let same = map(&[("host", "ORDERS.svc:8443")]);
        assert!(check_authority(Version::HTTP_2, &uri, &same).is_ok());
        let other = map(&[("host", "evil.svc")]);
        assert_eq!(
            check_authority(Version::HTTP_2, &uri, &other),
            Err(FramingError::AuthorityMismatch)
        );
    }

    #[test]
    fn forwarded_for() {
        let ip = ip_header_value("10.0.0.7".parse().unwrap());
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.7");
        append_forwarded_for(&mut h, &ip_header_value("::1".parse().unwrap()));
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.7, ::1");

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7");
    }

    #[test]
    fn strips_forged_identity() {
        let mut h = map(&[
            ("x-kawal-peer-identity", "spiffe://evil"),
            ("x-kawal-peer-identity", "again"),
            ("X-Kawal-User", "admin"),
            ("x-other", "kept"),
        ]);
        strip_kawal_identity(&mut h, UnderscoreAction::Allow).unwrap();
        assert_eq!(names(&h), ["x-other"]);
    }

    #[test]
    fn framing_is_made_canonical_for_the_next_hop() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: [Case<'_>; 8] = [
            (&[("content-length", "10")], Some("10")),
            (&[("content-length", "010")], Some("10")),
            (&[("content-length", "0")], Some("0")),
            (&[("content-length", "000")], Some("0")),
            (&[("content-length", "7, 7")], Some("7")),
            (&[("content-length", "7"), ("content-length", "07")], Some("7")),
            (&[("content-length", "7, 8")], None),
            // Transfer-Encoding wins; the stale length goes with it.
            (&[("content-length", "2"), ("transfer-encoding", "chunked")], None),
        ];
        for (sent, want) in cases {
            let mut h = map(sent);
            strip_hop_by_hop(&mut h);
            let got: Vec<_> = h.get_all(CONTENT_LENGTH).iter().collect();
            assert_eq!(got.first().map(|v| v.to_str().unwrap()), want, "{sent:?}");
            assert!(got.len() <= 1, "{sent:?}");
            assert!(!h.contains_key(TRANSFER_ENCODING));
        }
    }

    #[test]
    fn identity_in_underscore_spelling_is_always_removed() {
        use UnderscoreAction::*;
        let sent = [
            ("x_kawal_user", "admin"),
            ("x-kawal_peer-identity", "spiffe://evil"),
            ("x_other", "v"),
            ("x-kawal-user-x", "kept"),
            ("x_kawal_userx", "v"),
        ];
        let cases: [(UnderscoreAction, &[&str]); 2] = [
            (Allow, &["x_other", "x-kawal-user-x", "x_kawal_userx"]),
            (Drop, &["x-kawal-user-x"]),
        ];
        for (action, kept) in cases {
            let mut h = map(&sent);
            strip_kawal_identity(&mut h, action).unwrap();
            let mut got = names(&h);
            got.sort_unstable();
            let mut want = kept.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "{action:?}");
        }
        let mut h = map(&sent);
        assert_eq!(strip_kawal_identity(&mut h, Reject), Err(UnderscoreHeader));
        let mut clean = map(&[("x-a", "1")]);
        assert_eq!(strip_kawal_identity(&mut clean, Reject), Ok(()));
    }

    #[test]
    fn constants_are_lowercase_names() {
        for (name, want) in [
            (X_KAWAL_ERROR, "x-kawal-error"),
            (X_TRACE_ID, "x-trace-id"),
            (TRACEPARENT, "traceparent"),
            (TRACESTATE, "tracestate"),
            (X_FORWARDED_FOR, "x-forwarded-for"),
            (X_FORWARDED_PROTO, "x-forwarded-proto"),
            (X_FORWARDED_HOST, "x-forwarded-host"),
            (IDEMPOTENCY_KEY, "idempotency-key"),
            (X_KAWAL_PEER_IDENTITY, "x-kawal-peer-identity"),
            (X_KAWAL_USER, "x-kawal-user"),
        ] {
            assert_eq!(name.as_str(), want);
        }
    }
}
