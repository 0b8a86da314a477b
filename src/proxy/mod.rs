//! The two request paths and the steps they share.
//!
//! `inbound::handle` and `outbound::handle` each read top to bottom as the
//! list of steps one request goes through. The steps themselves (checking
//! the request head, rewriting it for the next hop, answering and logging)
//! live here because both directions take them the same way.

pub mod connect;
pub mod inbound;
pub mod outbound;
pub mod path;
pub mod pool;
pub mod retry;
pub mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use self::upstream::UpstreamBody;
use crate::body::{BoxBody, BoxError, ByteCount, GuardedBody};
use crate::config::Limits;
use crate::error::ProxyError;
use crate::headers;
use crate::log::{AccessLine, AccessLog};
use crate::metrics::RouteMetrics;
use crate::server::OpenRequest;
use crate::trace::export::{SpanRecord, Spans};
use crate::trace::{Propagator, RequestTrace};

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

/// Which way a request flows; used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From another service to the local app.
    Inbound,
    /// From the local app to another service.
    Outbound,
}

impl Direction {
    /// `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Step: check a request head against the limits and the smuggling rules.
/// Returns the request target with its path normalized, the one spelling used
/// for routing, policy, logs and forwarding alike.
pub fn check_head(parts: &Parts, limits: &Limits) -> Result<Uri, ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
    }
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
        // Already canonical: keep only path and query, no allocation. (An
        // absolute-form target with no path, `http://a`, asks for `/`.)
        return Ok(parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from));
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

/// Everything the access log line and the metrics need, carried with the
/// response body until it ends, so duration and bytes out are the real ones.
pub struct Exchange {
    /// Request direction.
    pub direction: Direction,
    /// When the request head arrived.
    pub started: Instant,
    /// Trace position.
    pub trace: RequestTrace,
    /// Request method.
    pub method: Method,
    /// Request target (normalized once checked).
    pub uri: Uri,
    /// Upstream name, once routed.
    pub upstream: Option<Arc<str>>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Request body bytes received.
    pub bytes_in: ByteCount,
    /// Error kind and detail, if kawal answered itself or the stream broke.
    pub error: Option<(&'static str, String)>,
    /// The verified peer identity, inbound over mTLS.
    pub peer_identity: Option<Arc<str>>,
    /// The verified user: JWT `sub`, else the peer identity.
    pub user_id: Option<Arc<str>>,
    /// The allow rule that let the request through, when a policy is set.
    pub authz_rule: Option<usize>,
    /// The client connection's pending switch, for a WebSocket handshake.
    pub upgrade: Option<OnUpgrade>,
}

impl Exchange {
    /// The SERVER span of this request: the same ids as its access line.
    fn server_span<'a>(&'a self, status: u16, error: Option<&'a str>, elapsed: Duration) -> SpanRecord<'a> {
        use opentelemetry::KeyValue;
        let mut attributes = Vec::with_capacity(10);
        attributes.push(KeyValue::new("url.path", self.uri.path().to_string()));
        attributes.push(KeyValue::new("kawal.direction", self.direction.as_str()));
        attributes.push(KeyValue::new("kawal.attempts", i64::from(self.attempts)));
        let optional = [
            ("kawal.upstream", &self.upstream),
            ("user.id", &self.user_id),
            ("kawal.peer_identity", &self.peer_identity),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                attributes.push(KeyValue::new(key, v.to_string()));
            }
        }
        // The wall-clock start is derived here, so requests pay no clock read
        // for it when nothing is exported.
        let end = SystemTime::now();
        SpanRecord {
            kind: opentelemetry::trace::SpanKind::Server,
            span_id: self.trace.span_id,
            parent_id: self.trace.parent_id,
            parent_is_remote: true,
            method: &self.method,
            start: end - elapsed,
            end,
            status: Some(status),
            error,
            attributes,
        }
    }

    /// Starts the record of one request.
    pub fn new(direction: Direction, parts: &Parts, trace: RequestTrace) -> Exchange {
        Exchange {
            direction,
            started: Instant::now(),
            trace,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            upstream: None,
            attempts: 0,
            bytes_in: ByteCount::default(),
            error: None,
            peer_identity: None,
            user_id: None,
            authz_rule: None,
            upgrade: None,
        }
    }

    /// A 101 accepts the WebSocket handshake: once both connections have
    /// switched, a task copies bytes between them until either side closes.
    /// A 101 to a request that asked for no upgrade is the upstream's fault.
    /// The tunnel holds the open request: its connection waits for no
    /// head until it closes.
    fn switch_protocols(
        &mut self,
        mut res: Response<UpstreamBody>,
        open_request: &mut Option<OpenRequest>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(res);
        }
        let Some(client) = self.upgrade.take() else {
            return Err(ProxyError::UpstreamReset {
                upstream: self.upstream.as_deref().unwrap_or("-").to_string(),
                cause: "101 Switching Protocols to a request that asked for no upgrade".into(),
            });
        };
        let upstream = hyper::upgrade::on(&mut res);
        let trace_id = self.trace.trace_id;
        let open_request = open_request.take();
        tokio::spawn(async move {
            let _open_request = open_request;
            let joined = async {
                let (client, upstream) = tokio::try_join!(client, upstream)?;
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                Ok::<_, BoxError>(tokio::io::copy_bidirectional(&mut client, &mut upstream).await?)
            };
            match joined.await {
                Ok((sent, received)) => {
                    tracing::debug!(event = "websocket_closed", traceId = %trace_id, sent, received)
                }
                Err(e) => tracing::debug!(event = "websocket_closed", traceId = %trace_id, error = %e),
            }
        });
        Ok(res)
    }

    /// Step: answer the client with the upstream response or the rescued error;
    /// the access line and metrics are written when the body ends.
    /// The request stays open until the response body ends.
    pub fn respond(
        mut self,
        result: Result<Response<UpstreamBody>, ProxyError>,
        open_request: OpenRequest,
        shared: &Arc<Shared>,
        metrics: RouteMetrics,
    ) -> Response<BoxBody> {
        let mut open_request = Some(open_request);
        match result.and_then(|res| self.switch_protocols(res, &mut open_request)) {
            Ok(res) => {
                let switched = res.status() == StatusCode::SWITCHING_PROTOCOLS;
                let (mut parts, body) = res.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                if switched {
                    headers::set_websocket_upgrade(&mut parts.headers);
                }
                // The upstream's HTTP version is its own business: the client
                // gets what its connection speaks (hyper adapts from 1.1).
                parts.version = http::Version::HTTP_11;
                let body = GuardedBody::new(body, u64::MAX, shared.limits.body_idle_timeout.0, None);
                self.logged(Response::from_parts(parts, body), open_request, shared, metrics)
            }
            Err(err) => {
                let trace_id = self.trace.trace_id.to_string();
                self.error = Some((err.kind(), err.to_string()));
                self.logged(err.to_response(&trace_id), open_request, shared, metrics)
            }
        }
    }

    /// Stamps the trace id on the response and wraps its body so the access
    /// line is written when it ends. Generic over the body, so that it is
    /// boxed once, as a whole.
    fn logged<B>(
        self,
        mut res: Response<B>,
        open_request: Option<OpenRequest>,
        shared: &Arc<Shared>,
        metrics: RouteMetrics,
    ) -> Response<BoxBody>
    where
        B: Body<Data = Bytes, Error = BoxError> + Unpin + Send + 'static,
    {
        self.trace.stamp_response(res.headers_mut());
        let status = res.status().as_u16();
        res.map(|inner| {
            LoggedBody {
                inner,
                bytes_out: 0,
                done: None,
                exchange: Some(Finish {
                    exchange: self,
                    status,
                    shared: shared.clone(),
                    metrics,
                    _open_request: open_request,
                }),
            }
            .boxed_unsync()
        })
    }
}

struct Finish {
    exchange: Exchange,
    status: u16,
    shared: Arc<Shared>,
    metrics: RouteMetrics,
    /// Ends with the response (none after a switch to a tunnel).
    _open_request: Option<OpenRequest>,
}

impl Finish {
    fn write(&self, bytes_out: u64, broken: Option<String>) {
        let e = &self.exchange;
        let elapsed = e.started.elapsed();
        self.metrics.record(self.status, elapsed);
        let (error, detail) = match (&e.error, &broken) {
            (Some((kind, detail)), _) => (Some(*kind), Some(detail.as_str())),
            (None, Some(detail)) => (Some("response_aborted"), Some(detail.as_str())),
            (None, None) => (None, None),
        };
        if let Some(spans) = self.shared.spans.as_ref().filter(|_| e.trace.sampled) {
            spans.record(&e.trace, e.server_span(self.status, error, elapsed));
        }
        let Some(access_log) = &self.shared.access_log else {
            return;
        };
        access_log.write(&AccessLine {
            timestamp: crate::log::now_rfc3339(),
            level: "info",
            service_name: &self.shared.service,
            trace_id: e.trace.trace_id.to_string(),
            span_id: e.trace.span_id.to_string(),
            parent_span_id: e.trace.parent_id.map(|p| p.to_string()),
            direction: e.direction.as_str(),
            method: e.method.as_str(),
            path: e.uri.path(),
            status_code: self.status,
            duration: crate::log::millis(elapsed),
            upstream: e.upstream.as_deref(),
            attempts: e.attempts,
            user_id: e.user_id.as_deref(),
            peer_identity: e.peer_identity.as_deref(),
            authz_rule: e.authz_rule,
            bytes_in: e.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            bytes_out,
            error,
            error_detail: detail,
        });
    }
}

/// A response body that writes the access line when it ends or is dropped.
struct LoggedBody<B: Body> {
    inner: B,
    bytes_out: u64,
    /// `Some(None)`: ended cleanly; `Some(Some(why))`: broke off.
    done: Option<Option<String>>,
    exchange: Option<Finish>,
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for LoggedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => self.done = Some(Some(crate::error::error_chain(&**e))),
            Poll::Ready(None) => self.done = Some(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // By reference: moving the finished exchange out would copy it.
        if let Some(finish) = &self.exchange {
            let broken = match self.done.take() {
                Some(why) => why,
                None if self.inner.is_end_stream() => None,
                None => Some("client went away before the response ended".to_string()),
            };
            finish.write(self.bytes_out, broken);
        }
    }
}
