//! One request's record, and the response that carries it to its end.
//!
//! [`Exchange`] collects what the access line, the span and the metrics
//! need while the handler's steps run, and the [`ResponsePhases`] features
//! registered. [`Exchange::respond`] is the last step of both directions: it
//! turns the handler's [`Reply`] (the upstream's response, or one of kawal's
//! own) or its error into the response sent, runs the features' head phase,
//! and hands the body and itself to a [`ClientBody`]. When that body ends or
//! is dropped, or when a request is dropped unanswered, the exchange's `Drop`
//! runs the features' end phase and writes the access line, exactly once.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::upstream::UpstreamBody;
use super::Shared;
use crate::body::{BoxError, ByteCount, GuardedBody};
use crate::cache::{self, Cache};
use crate::error::ProxyError;
use crate::headers;
use crate::log::{AccessLine, RetriedAttempt};
use crate::metrics::RouteMetrics;
use crate::phase::{BodyEnd, ResponsePhases};
use crate::server::OpenRequest;
use crate::trace::export::SpanRecord;
use crate::trace::RequestTrace;

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

/// What the handler's steps produced: the upstream's response, or one kawal
/// answers with itself (a stored response, a replay).
pub enum Reply {
    /// Streamed from the upstream (or the app).
    Upstream(Response<UpstreamBody>),
    /// kawal's own, whole.
    Own(Response<Bytes>),
}

impl From<Response<UpstreamBody>> for Reply {
    fn from(res: Response<UpstreamBody>) -> Reply {
        Reply::Upstream(res)
    }
}

impl From<Response<Bytes>> for Reply {
    fn from(res: Response<Bytes>) -> Reply {
        Reply::Own(res)
    }
}

/// The attempts sent upstream for one request.
#[derive(Debug, Default)]
pub struct Attempts {
    /// How many were sent (0: kawal answered itself).
    pub count: u32,
    /// The endpoint of the last one.
    pub endpoint: Option<SocketAddr>,
    /// Those that failed and were retried, in order.
    pub retried: Vec<RetriedAttempt>,
}

/// User agents are logged up to this many bytes.
const MAX_USER_AGENT: usize = 256;

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
    /// The client connection's HTTP version.
    pub version: Version,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's User-Agent.
    pub user_agent: Option<HeaderValue>,
    /// The authority the request is routed by, once checked.
    pub authority: Option<HeaderValue>,
    /// Upstream name, once routed.
    pub upstream: Option<Arc<str>>,
    /// Upstream attempts made.
    pub attempts: Attempts,
    /// When the upstream's response head arrived, from `started` (read
    /// only for the access line).
    pub upstream_head: Option<Duration>,
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
    /// What the response cache did (`hit`, `miss`, ...), when one is on.
    pub cache: Option<&'static str>,
    /// What the idempotency/ordering guard did (`new`, `replayed`, ...).
    pub guard: Option<&'static str>,
    /// The client connection's pending switch, for a WebSocket handshake.
    pub upgrade: Option<OnUpgrade>,
    /// Features' response phases, in registration order.
    phases: Vec<Box<dyn ResponsePhases>>,
    /// The access log, span export and limits its end is written to.
    shared: Arc<Shared>,
    /// The route's counters and latency histogram.
    metrics: RouteMetrics,
    /// The status sent, once answered. Dropped unanswered, the exchange
    /// is a request whose client went away (hyper dropped the handler).
    status: Option<u16>,
    /// Ends with the response (none after a switch to a tunnel).
    open_request: Option<OpenRequest>,
    /// Response body bytes sent.
    bytes_out: u64,
    /// Set when the response body ended: cleanly, or broken with this cause.
    ended: Option<Result<(), String>>,
}

impl Exchange {
    /// Starts the record of one request from `client`, counted in
    /// `metrics`. What only the access line needs is kept only when one will
    /// be written. Boxed: it rides in the handler's future and then in the
    /// response body, which hyper moves several times per request, and it
    /// records itself when dropped (see its `Drop`).
    pub fn new(
        direction: Direction,
        parts: &Parts,
        client: SocketAddr,
        trace: RequestTrace,
        shared: &Arc<Shared>,
        metrics: RouteMetrics,
    ) -> Box<Exchange> {
        let logged = shared.access_log.is_some();
        Box::new(Exchange {
            direction,
            started: Instant::now(),
            trace,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            client,
            user_agent: logged
                .then(|| headers::first(&parts.headers, &http::header::USER_AGENT).cloned())
                .flatten(),
            authority: None,
            upstream: None,
            attempts: Attempts::default(),
            upstream_head: None,
            bytes_in: ByteCount::default(),
            error: None,
            peer_identity: None,
            user_id: None,
            authz_rule: None,
            cache: None,
            guard: None,
            upgrade: None,
            phases: Vec::new(),
            shared: shared.clone(),
            metrics,
            status: None,
            open_request: None,
            bytes_out: 0,
            ended: None,
        })
    }

    /// Counts the request in `metrics` instead (once routed).
    pub fn set_metrics(&mut self, metrics: RouteMetrics) {
        self.metrics = metrics;
    }

    /// Registers a feature's response phases: its head, data and end
    /// callbacks run on this request's response.
    pub fn watch(&mut self, phases: Box<dyn ResponsePhases>) {
        self.phases.push(phases);
    }

    /// The cache's after-forward step (see [`Cache::after_forward`]) on
    /// the upstream's answer.
    pub fn cached(
        &mut self,
        cache: &Arc<Cache>,
        pending: cache::Pending,
        res: Result<Response<UpstreamBody>, ProxyError>,
    ) -> Result<Reply, ProxyError> {
        Ok(match cache.after_forward(pending, res, &mut self.cache)? {
            cache::Answer::Stored(res) => Reply::Own(res),
            cache::Answer::Upstream(res, fill) => {
                self.phases.extend(fill);
                Reply::Upstream(res)
            }
        })
    }

    /// Step: answer the client with the reply or the rescued error; the
    /// features' head phase runs here, their end phase, the access line and
    /// the metrics when the body ends. The request stays open until then.
    pub fn respond(
        mut self: Box<Self>,
        result: Result<Reply, ProxyError>,
        open_request: OpenRequest,
    ) -> Response<ClientBody> {
        self.open_request = Some(open_request);
        // One split of the response into head and body, whichever it is.
        let reply = result.and_then(|reply| match reply {
            Reply::Upstream(res) => {
                let (parts, body) = self.switch_protocols(res)?.into_parts();
                if self.shared.access_log.is_some() {
                    self.upstream_head = Some(self.started.elapsed());
                }
                let idle = self.shared.limits.body_idle_timeout.0;
                Ok((
                    parts,
                    ResponseBody::Upstream(GuardedBody::new(body, u64::MAX, idle, None)),
                ))
            }
            Reply::Own(res) => {
                let (parts, bytes) = res.into_parts();
                Ok((parts, ResponseBody::Own((!bytes.is_empty()).then_some(bytes))))
            }
        });
        let (mut parts, body) = match reply {
            Ok((mut parts, body)) => {
                headers::strip_hop_by_hop(&mut parts.headers);
                if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                    headers::set_websocket_upgrade(&mut parts.headers);
                }
                // The upstream's HTTP version is its own business: the client
                // gets what its connection speaks (hyper adapts from 1.1).
                parts.version = http::Version::HTTP_11;
                (parts, body)
            }
            Err(err) => {
                let trace_id = self.trace.trace_id.to_string();
                self.error = Some((err.kind(), err.to_string()));
                let (parts, bytes) = err.to_response(&trace_id).into_parts();
                (parts, ResponseBody::Own(Some(bytes)))
            }
        };
        self.trace.stamp_response(&mut parts.headers);
        for phase in &mut self.phases {
            phase.head(&mut parts);
        }
        self.status = Some(parts.status.as_u16());
        if let Some(open) = &mut self.open_request {
            open.responding();
        }
        Response::from_parts(
            parts,
            ClientBody {
                inner: body,
                exchange: self,
            },
        )
    }

    /// A 101 accepts the WebSocket handshake: once both connections have
    /// switched, a task copies bytes between them until either side closes.
    /// A 101 to a request that asked for no upgrade is the upstream's fault.
    /// The tunnel holds the open request: its connection waits for no
    /// head until it closes.
    fn switch_protocols(
        &mut self,
        mut res: Response<UpstreamBody>,
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
        let open_request = self.open_request.take();
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

    /// The SERVER span of this request: the same ids as its access line.
    fn server_span<'a>(&'a self, status: u16, error: Option<&'a str>, elapsed: Duration) -> SpanRecord<'a> {
        use opentelemetry::KeyValue;
        let mut attributes = Vec::with_capacity(10);
        attributes.push(KeyValue::new("url.path", self.uri.path().to_string()));
        attributes.push(KeyValue::new("kawal.direction", self.direction.as_str()));
        attributes.push(KeyValue::new("kawal.attempts", i64::from(self.attempts.count)));
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
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The longest prefix of `bytes` up to `max` that is whole UTF-8 text
/// (a header value is mostly ASCII; anything else is cut before it).
fn truncated(bytes: &[u8], max: usize) -> &str {
    let cut = &bytes[..bytes.len().min(max)];
    match std::str::from_utf8(cut) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&cut[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// The body of a response before it is sent: streamed from the upstream, or
/// bytes kawal holds. An enum, not a box: an answer of kawal's own costs no
/// allocation.
pub enum ResponseBody {
    /// The upstream's body, with the idle timeout.
    Upstream(GuardedBody<UpstreamBody>),
    /// Bytes kawal answers with (taken on the first poll).
    Own(Option<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Own(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.is_end_stream(),
            ResponseBody::Own(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.size_hint(),
            ResponseBody::Own(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Status of the access line of a request whose client went away before
/// its response head (nginx's 499; never sent).
pub const CLIENT_CLOSED: u16 = 499;

/// The end of the exchange, however it came: the features' end phase, the
/// metrics, the span and the access line, exactly once.
impl Drop for Exchange {
    fn drop(&mut self) {
        let (status, how, broken) = match (self.status, self.ended.take()) {
            // The handler was dropped unanswered: its client went away.
            (None, _) => {
                self.error = Some((
                    "client_gone",
                    "the client went away before the response head".to_string(),
                ));
                (CLIENT_CLOSED, BodyEnd::ClientGone, None)
            }
            (Some(status), Some(Ok(()))) => (status, BodyEnd::Complete, None),
            (Some(status), Some(Err(why))) => (status, BodyEnd::UpstreamBroke, Some(why)),
            (Some(status), None) => (
                status,
                BodyEnd::ClientGone,
                Some("client went away before the response ended".to_string()),
            ),
        };
        for phase in self.phases.drain(..) {
            phase.end(how);
        }
        self.record(status, broken.as_deref());
    }
}

impl Exchange {
    /// Records the exchange's end: metrics, span and access line.
    fn record(&self, status: u16, broken: Option<&str>) {
        let shared = &*self.shared;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        self.metrics.record(status, elapsed, now.into_std());
        let (error, detail) = match (&self.error, broken) {
            (Some((kind, detail)), _) => (Some(*kind), Some(detail.as_str())),
            (None, Some(detail)) => (Some("response_aborted"), Some(detail)),
            (None, None) => (None, None),
        };
        if let Some(spans) = shared.spans.as_ref().filter(|_| self.trace.sampled) {
            spans.record(&self.trace, self.server_span(status, error, elapsed));
        }
        let Some(access_log) = &shared.access_log else {
            return;
        };
        access_log.write(&AccessLine {
            timestamp: std::time::SystemTime::now(),
            service_name: &shared.service,
            trace_id: self.trace.trace_id,
            span_id: self.trace.span_id,
            parent_span_id: self.trace.parent_id,
            direction: self.direction.as_str(),
            method: self.method.as_str(),
            path: self.uri.path(),
            authority: self.authority.as_ref().and_then(|a| a.to_str().ok()),
            protocol: protocol(self.version),
            client_address: self.client,
            user_agent: self
                .user_agent
                .as_ref()
                .map(|ua| truncated(ua.as_bytes(), MAX_USER_AGENT)),
            status_code: status,
            duration: elapsed,
            upstream: self.upstream.as_deref(),
            attempts: self.attempts.count,
            endpoint: self.attempts.endpoint,
            upstream_head_duration: self.upstream_head,
            retried: &self.attempts.retried,
            user_id: self.user_id.as_deref(),
            peer_identity: self.peer_identity.as_deref(),
            authz_rule: self.authz_rule,
            cache: self.cache,
            guard: self.guard,
            bytes_in: self.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            bytes_out: self.bytes_out,
            error,
            error_detail: detail,
        });
    }
}

/// The body sent to the client. It passes each chunk to the features'
/// data phase and carries the exchange, which ends when the body is
/// dropped, however it ended. Small on purpose: hyper moves it several
/// times per response.
pub struct ClientBody {
    inner: ResponseBody,
    exchange: Box<Exchange>,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let exchange = &mut *this.exchange;
        // For the connection's stall check (`send_timeout`).
        if let Some(open) = &mut exchange.open_request {
            open.body_polled(matches!(polled, Poll::Ready(Some(Ok(_)))));
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    exchange.bytes_out += data.len() as u64;
                    for phase in &mut exchange.phases {
                        phase.data(data);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => exchange.ended = Some(Err(crate::error::error_chain(&**e))),
            Poll::Ready(None) => exchange.ended = Some(Ok(())),
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

impl Drop for ClientBody {
    fn drop(&mut self) {
        // Read to the end without the final poll (a length-delimited body).
        if self.exchange.ended.is_none() && self.inner.is_end_stream() {
            self.exchange.ended = Some(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Records every phase call.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl ResponsePhases for Recorder {
        fn data(&mut self, chunk: &Bytes) {
            self.0.lock().unwrap().push(format!("data {}", chunk.len()));
        }
        fn end(self: Box<Self>, how: BodyEnd) {
            self.0.lock().unwrap().push(format!("end {}", how.as_str()));
        }
    }

    /// A real HTTP/1.1 response from a peer that writes `raw` and then
    /// closes: its body as kawal receives it.
    async fn upstream_body(raw: &'static [u8]) -> ResponseBody {
        let (client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut server, &mut buf).await;
            server.write_all(raw).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        let res = sender
            .send_request(http::Request::new(Default::default()))
            .await
            .unwrap();
        let body = UpstreamBody::plain(res.into_body());
        ResponseBody::Upstream(GuardedBody::new(body, u64::MAX, Duration::from_secs(5), None))
    }

    type Recorded<T> = (T, Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<u8>>>);

    /// An unanswered exchange whose phases and access lines are recorded.
    fn exchange() -> Recorded<Box<Exchange>> {
        let cfg = crate::config::Config::from_toml_str(
            "[service]\nname = \"s\"\n[inbound]\nlisten = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\n",
            "t.toml",
        )
        .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            service: "s".into(),
            limits: cfg.limits.clone(),
            access_log: Some(crate::log::AccessLog {
                sink: crate::log::Sink::Memory(lines.clone()),
                format: cfg.log.format,
            }),
            propagator: crate::trace::Propagator::new(&cfg.tracing),
            spans: None,
        });
        let metrics = crate::metrics::Metrics::default().route("inbound", "app");
        let (parts, ()) = http::Request::new(()).into_parts();
        let trace = shared.propagator.start(&parts.headers);
        let client = "127.0.0.1:9".parse().unwrap();
        let mut exchange = Exchange::new(Direction::Inbound, &parts, client, trace, &shared, metrics);
        let log = Arc::new(Mutex::new(Vec::new()));
        exchange.watch(Box::new(Recorder(log.clone())));
        (exchange, log, lines)
    }

    /// `inner` as the body of an answered exchange.
    fn recorded(inner: ResponseBody) -> Recorded<ClientBody> {
        let (mut exchange, log, lines) = exchange();
        exchange.status = Some(200);
        (ClientBody { inner, exchange }, log, lines)
    }

    /// The access lines written, one per element.
    fn access_lines(lines: &Mutex<Vec<u8>>) -> Vec<serde_json::Value> {
        let lines = lines.lock().unwrap();
        std::str::from_utf8(&lines)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn ends(log: &Mutex<Vec<String>>) -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("end"))
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn end_runs_once_when_the_body_completes() {
        let (body, log, lines) =
            recorded(upstream_body(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(*log.lock().unwrap(), ["data 5", "end complete"]);
        let lines = access_lines(&lines);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["bytesOut"], 5);
        assert!(lines[0].get("error").is_none(), "{}", lines[0]);
    }

    #[tokio::test]
    async fn end_runs_once_when_the_client_goes_away_midway() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let (mut body, log, lines) = recorded(upstream_body(raw).await);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().map(|d| d.len()), Some(5));
        drop(body);
        assert_eq!(ends(&log), ["end client_gone"]);
        let lines = access_lines(&lines);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["error"], "response_aborted");
    }

    #[tokio::test]
    async fn end_runs_once_when_the_upstream_breaks_midway() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part";
        let (body, log, lines) = recorded(upstream_body(raw).await);
        assert!(body.collect().await.is_err());
        assert_eq!(ends(&log), ["end upstream_broke"]);
        assert_eq!(access_lines(&lines).len(), 1);
    }

    #[tokio::test]
    async fn end_runs_once_for_bytes_of_kawals_own() {
        let (body, log, lines) = recorded(ResponseBody::Own(Some(Bytes::from_static(b"stored"))));
        assert_eq!(body.size_hint().exact(), Some(6));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"stored");
        assert_eq!(*log.lock().unwrap(), ["data 6", "end complete"]);
        assert_eq!(access_lines(&lines).len(), 1);
    }

    #[test]
    fn end_runs_once_when_the_request_is_dropped_unanswered() {
        let (exchange, log, lines) = exchange();
        drop(exchange);
        assert_eq!(ends(&log), ["end client_gone"]);
        let lines = access_lines(&lines);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["statusCode"], 499);
    }
}
