//! The two request paths and the steps they share.
//!
//! `inbound::handle` and `outbound::handle` each read top to bottom as the
//! list of steps one request goes through. The steps themselves (checking
//! the request head, rewriting it for the next hop, answering and logging)
//! live here because both directions take them the same way.

pub mod exchange;
pub mod inbound;
pub mod outbound;
pub mod path;
pub mod pool;
pub mod retry;
pub mod upload;
pub mod upstream;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

pub use self::exchange::{Direction, Exchange, Reply};
use crate::body::{BoxBody, ByteCount, GuardedBody};
use crate::config::Limits;
use crate::error::ProxyError;
use crate::headers;
use crate::log::AccessLog;
use crate::trace::export::Spans;
use crate::trace::Propagator;

/// What both directions need from the process: limits, log, service name.
pub struct Shared {
    /// `[service] name`.
    pub service: Arc<str>,
    /// Listener limits.
    pub limits: Limits,
    /// Access log sink; `None` when the level is above `info`.
    pub access_log: Option<AccessLog>,
    /// Trace formats and sampling.
    pub propagator: Propagator,
    /// Span export; `None` when no collector is configured.
    pub spans: Option<Spans>,
}

/// Step: check a request head against the limits and the smuggling rules.
/// Returns the request target with its path normalized, the one spelling used
/// for routing, policy, logs and forwarding alike.
pub fn check_head(parts: &Parts, limits: &Limits) -> Result<Uri, ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
    }
    crate::matcher::check_method(&parts.method).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len as u64 > limits.max_uri.0 {
        return Err(ProxyError::UriTooLong(limits.max_uri.0 as usize));
    }
    // HTTP/1.1 heads are capped by hyper (max_request_head, max_headers); the
    // same caps hold for HTTP/2, and one header's size for both.
    if parts.headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge("too many header fields"));
    }
    let mut head = 0u64;
    for (name, value) in &parts.headers {
        let size = (name.as_str().len() + value.len()) as u64;
        if size > limits.max_header.0 {
            return Err(ProxyError::HeadersTooLarge("one header field is too large"));
        }
        head += size;
    }
    if head > limits.max_request_head.0 {
        return Err(ProxyError::HeadersTooLarge("request head is too large"));
    }
    let content_length = headers::check_request_framing(parts.version, &parts.headers)
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    if content_length.is_some_and(|len| len > limits.max_request_body.0) {
        return Err(ProxyError::PayloadTooLarge(limits.max_request_body.0));
    }

    let normalized = path::normalize(parts.uri.path()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    if matches!(normalized, std::borrow::Cow::Borrowed(_)) {
        // Already canonical: keep only path and query, no allocation.
        let target = parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        // An absolute-form target with no path (`http://a`, `http://a#f`)
        // asks for `/`, which its empty path-and-query does not say once the
        // scheme is gone: it is rebuilt below, or rules for `/` would not
        // match it.
        if !target.path().is_empty() {
            return Ok(target);
        }
    }
    let mut pq = normalized.into_owned();
    if let Some(q) = parts.uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::try_from(pq).map_err(|e| ProxyError::BadRequest(e.to_string()))
}

/// Step: rewrite the head for the next hop. Hop-by-hop headers go, and the
/// one authority chosen for routing becomes the Host the next hop sees.
/// (The trace context is injected by the caller: inbound once, outbound
/// per attempt.) A WebSocket handshake keeps its upgrade headers, and the
/// client connection's pending switch is returned for [`Exchange::upgrade`].
pub fn prepare_forward(parts: &mut Parts, target: Uri, authority: Option<&HeaderValue>) -> Option<OnUpgrade> {
    let websocket = headers::is_websocket_upgrade(parts.version, &parts.headers);
    parts.uri = target;
    headers::strip_hop_by_hop(&mut parts.headers);
    // Usually Host already says it: rewrite only when it does not.
    let host = headers::first(&parts.headers, &header::HOST);
    if let Some(authority) = authority.filter(|a| host != Some(*a)) {
        parts.headers.insert(header::HOST, authority.clone());
    }
    if !websocket {
        return None;
    }
    headers::set_websocket_upgrade(&mut parts.headers);
    parts.extensions.remove::<OnUpgrade>()
}

/// Wraps a client's request body with the size cap and the idle timeout.
pub fn guard_request_body(body: Incoming, limits: &Limits, count: ByteCount) -> BoxBody {
    GuardedBody::new(
        body,
        limits.max_request_body.0,
        limits.body_idle_timeout.0,
        Some(count),
    )
    .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(version: http::Version, uri: &str) -> Result<Uri, ProxyError> {
        let req = http::Request::get(uri).version(version).header(header::HOST, "a");
        let (parts, ()) = req.body(()).unwrap().into_parts();
        check_head(&parts, &Limits::default())
    }

    /// Found by the `head` fuzz target: `http://la#x` left an empty path
    /// for routing, policy and logs (while the next hop was sent `/`).
    #[test]
    fn an_absolute_form_target_without_a_path_asks_for_the_root() {
        let cases = [
            ("http://a", "/"),
            ("http://a#frag", "/"),
            ("ttp://la#x", "/"),
            ("http://a?q=1", "/?q=1"),
            ("http://a/b#f", "/b"),
            ("http://a/%7euser/./x", "/~user/x"),
            ("/plain?x", "/plain?x"),
        ];
        for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
            for (uri, want) in cases {
                let got = target(version, uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
                assert_eq!(got, want, "{uri} over {version:?}");
                assert!(got.path().starts_with('/'), "{uri}: {got:?}");
            }
        }
    }
}
