//! The errors kawal itself answers with, and their one mapping to HTTP.
//!
//! Every synthesized response goes through [`ProxyError::to_response`]: an
//! `x-kawal-error: KIND` header, a small JSON body
//! `{"error": KIND, "message": ..., "traceId": ...}` and the status that says
//! what happened (ARCHITECTURE.md, "Contracts").

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::BodyError;
use crate::headers::X_KAWAL_ERROR;

/// A failure kawal reports to its client instead of an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Malformed or ambiguous request (smuggling attempts, bad path, no Host).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No valid credentials (JWT): 401 with `WWW-Authenticate`.
    #[error("authentication failed: {reason}")]
    Unauthenticated {
        /// Why, for the log (never the token).
        reason: &'static str,
        /// The challenge to send.
        challenge: HeaderValue,
    },
    /// The verified caller may not do this.
    #[error("not allowed")]
    Forbidden,
    /// A method kawal refuses to proxy (CONNECT: kawal opens no tunnels).
    #[error("method {0} is not supported by this proxy")]
    MethodNotAllowed(http::Method),
    /// Request target longer than the configured limit.
    #[error("request URI exceeds {0} bytes")]
    UriTooLong(usize),
    /// A header (or all of them) larger than the configured limit.
    #[error("request header fields exceed the limit ({0})")]
    HeadersTooLarge(&'static str),
    /// Request body larger than the configured limit.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(u64),
    /// The client stopped sending its body, or was still sending it when
    /// the upstream's deadline passed.
    #[error("client did not send its request body in time ({0:?})")]
    ClientTimeout(Duration),
    /// The client's request body broke off (a malformed chunk, a reset
    /// stream, a closed connection): its fault, never the upstream's.
    #[error("the client's request body broke off: {0}")]
    ClientBody(String),
    /// No upstream serves this authority.
    #[error("no upstream for host {0:?}")]
    RouteNotFound(String),
    /// The upstream has no endpoint to send to (none resolved yet).
    #[error("upstream {0} has no endpoint available")]
    NoEndpoint(String),
    /// Could not connect to the upstream (refused, unreachable).
    #[error("could not connect to upstream {upstream}: {cause}")]
    UpstreamConnect {
        /// The upstream's name.
        upstream: String,
        /// The transport error, for the log.
        cause: String,
    },
    /// The TLS handshake with the upstream failed (untrusted or wrong
    /// identity, no common protocol).
    #[error("TLS with upstream {upstream} failed: {cause}")]
    UpstreamTls {
        /// The upstream's name.
        upstream: String,
        /// The handshake error, for the log.
        cause: String,
    },
    /// The connection broke before a complete response head arrived.
    #[error("upstream {upstream} reset the connection: {cause}")]
    UpstreamReset {
        /// The upstream's name.
        upstream: String,
        /// The transport error, for the log.
        cause: String,
    },
    /// Connect or response deadline passed.
    #[error("upstream {upstream} did not {} within {after:?}", if *.connect { "accept a connection" } else { "answer" })]
    UpstreamTimeout {
        /// The upstream's name.
        upstream: String,
        /// The deadline that passed.
        after: Duration,
        /// Whether it was the TCP connect (nothing was sent) that timed out.
        connect: bool,
    },
    /// The upstream's circuit breaker is open.
    #[error("circuit breaker for upstream {upstream} is open")]
    CircuitOpen {
        /// The upstream's name.
        upstream: String,
        /// When the breaker lets a probe through again.
        retry_after: Duration,
    },
    /// The caller is over a local rate limit (`[[inbound.rate_limits]]`).
    #[error("rate limit {rule} exceeded")]
    RateLimited {
        /// Index of the rule, in config order.
        rule: usize,
        /// When the bucket has a token again.
        retry_after: Duration,
    },
    /// `Cache-Control: only-if-cached` and nothing usable is stored.
    #[error("only-if-cached: no stored response fits the request")]
    NotCached,
    /// A delivery the guard cannot take as it is: a bad or missing
    /// Idempotency-Key (`bad_idempotency_key`), a broken CloudEvent (`bad_event`).
    #[error("{1}")]
    BadDelivery(&'static str, String),
    /// The same key or event is at the app right now.
    #[error("a request with this key or event id is in flight")]
    DuplicateInFlight,
    /// The Idempotency-Key was used with another request (method, target, body).
    #[error("the Idempotency-Key was used for a different request")]
    KeyMismatch,
    /// The delivery's version is not newer than the last one accepted for its key.
    #[error("version {version} is not newer than the last accepted one for its key")]
    OutOfOrder {
        /// The delivery's version, as sent.
        version: String,
        /// The configured status (409 by default).
        status: StatusCode,
    },
    /// Too many deliveries wait for one ordering key.
    #[error("too many deliveries waiting for this ordering key")]
    Overloaded {
        /// When to try again.
        retry_after: Duration,
    },
    /// The guard's store (Redis) cannot be reached and the guard fails closed.
    #[error("the idempotency store is unavailable")]
    GuardUnavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// A bug or an unexpected state: never the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The stable name sent in `x-kawal-error` and logged as the cause.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::UriTooLong(_) => "uri_too_long",
            Self::HeadersTooLarge(_) => "headers_too_large",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::ClientTimeout(_) => "client_timeout",
            Self::ClientBody(_) => "client_body",
            Self::RouteNotFound(_) => "route_not_found",
            Self::NoEndpoint(_) => "no_endpoint",
            Self::UpstreamConnect { .. } => "upstream_connect",
            Self::UpstreamTls { .. } => "upstream_tls",
            Self::UpstreamReset { .. } => "upstream_reset",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::RateLimited { .. } => "rate_limited",
            Self::NotCached => "not_cached",
            Self::BadDelivery(kind, _) => kind,
            Self::DuplicateInFlight => "duplicate_event",
            Self::KeyMismatch => "idempotency_key_mismatch",
            Self::OutOfOrder { .. } => "out_of_order",
            Self::Overloaded { .. } => "overloaded",
            Self::GuardUnavailable { .. } => "guard_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The status that says what happened.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::NoEndpoint(_) | Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamConnect { .. } | Self::UpstreamTls { .. } | Self::UpstreamReset { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } | Self::NotCached => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadDelivery(..) => StatusCode::BAD_REQUEST,
            Self::DuplicateInFlight => StatusCode::CONFLICT,
            Self::KeyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::OutOfOrder { status, .. } => *status,
            Self::Overloaded { .. } | Self::GuardUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client connection should be closed after this answer:
    /// after a framing or size error (or a CONNECT, whose tunnel bytes may
    /// follow) the rest of the connection cannot be trusted to start a new
    /// request.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_)
                | Self::MethodNotAllowed(_)
                | Self::UriTooLong(_)
                | Self::HeadersTooLarge(_)
                | Self::PayloadTooLarge(_)
                | Self::ClientTimeout(_)
                | Self::ClientBody(_)
        )
    }

    /// The response kawal sends for this error.
    pub fn to_response(&self, trace_id: &str) -> Response<Bytes> {
        let mut body = serde_json::json!({
            "error": self.kind(),
            "message": self.to_string(),
            "traceId": trace_id,
        });
        let mut retry_after = None;
        match self {
            Self::UpstreamConnect { upstream, .. }
            | Self::UpstreamTls { upstream, .. }
            | Self::UpstreamReset { upstream, .. }
            | Self::UpstreamTimeout { upstream, .. } => body["upstream"] = upstream.as_str().into(),
            Self::CircuitOpen {
                upstream,
                retry_after: after,
            } => {
                body["upstream"] = upstream.as_str().into();
                retry_after = Some(after.as_secs_f64().ceil().max(1.0) as u64);
            }
            Self::NoEndpoint(upstream) => {
                body["upstream"] = upstream.as_str().into();
                retry_after = Some(1);
            }
            Self::RateLimited {
                retry_after: after, ..
            }
            | Self::Overloaded { retry_after: after }
            | Self::GuardUnavailable { retry_after: after } => {
                retry_after = Some(after.as_secs_f64().ceil().max(1.0) as u64);
            }
            _ => {}
        }
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(X_KAWAL_ERROR, HeaderValue::from_static(self.kind()));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::Unauthenticated { challenge, .. } = self {
            h.insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        if self.closes_connection() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

impl From<BodyError> for ProxyError {
    /// The client's own body failed the exchange: its fault, not the upstream's.
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(n) => ProxyError::PayloadTooLarge(n),
            BodyError::Idle(d) => ProxyError::ClientTimeout(d),
        }
    }
}

/// `outer: inner: innermost`, for the log's error detail.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    for e in std::iter::successors(err.source(), |e| e.source()) {
        out.push_str(": ");
        out.push_str(&e.to_string());
    }
    out
}

/// The first error of type `E` in a source chain. An `io::Error` wrapping
/// another error (as tokio-rustls wraps rustls's) is looked into too: its
/// `source()` skips the wrapped error itself.
pub fn find<'a, E: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        let wrapped = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if let Some(found) = wrapped.and_then(|inner| find::<E>(inner)) {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_looks_inside_a_wrapping_io_error() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        assert!(matches!(
            find::<rustls::Error>(&io),
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA))
        ));
        assert!(find::<std::fmt::Error>(&io).is_none());
    }

    #[tokio::test]
    async fn circuit_open_is_503_with_retry_after_and_json_naming_the_upstream() {
        let err = ProxyError::CircuitOpen {
            upstream: "payment".into(),
            retry_after: Duration::from_millis(1500),
        };
        let res = err.to_response("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["x-kawal-error"], "circuit_open");
        assert_eq!(res.headers()["retry-after"], "2");
        let body = res.into_body();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "circuit_open");
        assert_eq!(json["upstream"], "payment");
        assert_eq!(json["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn framing_errors_close_the_connection() {
        let res = ProxyError::BadRequest("x".into()).to_response("t");
        assert_eq!(res.headers()["connection"], "close");
        let res = ProxyError::RouteNotFound("x".into()).to_response("t");
        assert!(res.headers().get("connection").is_none());
    }
}
