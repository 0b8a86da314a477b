//! A real OTLP/HTTP (protobuf) trace receiver on 127.0.0.1:0: decodes each
//! `POST /v1/traces` body as an `ExportTraceServiceRequest` and keeps the
//! spans, flattened, for assertions. It can also hang or fail on demand.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatusCode;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 with an empty `ExportTraceServiceResponse`; the spans are stored.
    Accept,
    /// Reads the request, then never answers: the request stays open until
    /// the receiver is stopped or dropped, which closes the connection with
    /// no response.
    Hang,
    /// 503, nothing stored.
    Fail,
}

/// One received span, flattened for assertions.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// Resource attribute `service.name` ("" if absent).
    pub service: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or "" for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// Every attribute rendered as a string: int as decimal, bool as
    /// true/false, string as is, double with `{}`, bytes as hex, arrays as
    /// `[a,b]`, key-value lists as `{k=v,...}`.
    pub attributes: HashMap<String, String>,
    /// Status code is `STATUS_CODE_ERROR`.
    pub status_error: bool,
}

struct State {
    mode: Mutex<Mode>,
    requests: AtomicUsize,
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Flipped to true by `stop`/drop: ends every open connection, hung requests included.
    stopped: watch::Sender<bool>,
}

/// A real OTLP/HTTP receiver (HTTP/1.1 and h2c) on loopback.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Binds 127.0.0.1:0 and serves in `Mode::Accept`.
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// Serves on an already bound listener (to come back on a known port).
    pub fn serve(listener: TcpListener) -> OtlpReceiver {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Accept),
            requests: AtomicUsize::new(0),
            spans: Mutex::new(Vec::new()),
            stopped: watch::Sender::new(false),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let mut stopped = st.stopped.subscribe();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        OtlpReceiver { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`: the `otlp_endpoint` to configure (kawal POSTs to
    /// `/v1/traces` under it; opentelemetry-otlp's `with_endpoint` does not append it).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how later requests are answered (a request takes the mode in
    /// force when its head arrives).
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// HTTP requests received so far, in any mode, bad ones included; counted
    /// when the request head arrives, so a hung request counts.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// All spans stored so far (only `Mode::Accept` stores), in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Polls (every 20 ms) until at least `n` spans are stored, or panics with
    /// the spans seen so far after `timeout` (wall clock, so a paused tokio
    /// clock does not cut it short).
    pub async fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected at least {n} spans within {timeout:?}, got {} ({} requests): {spans:#?}",
                    spans.len(),
                    self.requests()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The spans of one trace (32 hex), in arrival order.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        let spans = self.state.spans.lock().unwrap();
        spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    /// The span with this id (16 hex), if stored.
    pub fn span(&self, span_id: &str) -> Option<ReceivedSpan> {
        let spans = self.state.spans.lock().unwrap();
        spans.iter().find(|s| s.span_id == span_id).cloned()
    }

    /// Stops the receiver: the listener closes (new connections are refused)
    /// and every open connection, hung requests included, is dropped. Takes
    /// effect at the runtime's next turn, i.e. once the caller awaits anything.
    /// Stored spans stay readable.
    pub fn stop(&mut self) {
        self.task.abort();
        self.state.stopped.send_replace(true);
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let mode = *st.mode.lock().unwrap();
    if req.method() != Method::POST || req.uri().path() != "/v1/traces" {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("expected POST /v1/traces, got {} {}", req.method(), req.uri()),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("body: {e}")),
    };
    let export = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("not an OTLP trace export: {e}"),
            )
        }
    };
    match mode {
        Mode::Accept => {
            let spans = flatten(export);
            st.spans.lock().unwrap().extend(spans);
            let ok = ExportTraceServiceResponse::default().encode_to_vec();
            reply(StatusCode::OK, "application/x-protobuf", ok)
        }
        Mode::Fail => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "unavailable"),
        // Never answers: stop/drop closes the connection under it (HTTP/1.1),
        // or the dropped connection resets the stream (h2).
        Mode::Hang => std::future::pending().await,
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| render_opt(&kv.value))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            out.push(ReceivedSpan {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                attributes: attributes(&span.attributes),
                status_error: span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == OtlpStatusCode::Error as i32),
                name: span.name,
            });
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), render_opt(&kv.value)))
        .collect()
}

fn render_opt(v: &Option<AnyValue>) -> String {
    v.as_ref().map(render).unwrap_or_default()
}

fn render(v: &AnyValue) -> String {
    use any_value::Value;
    match &v.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(render).collect();
            format!("[{}]", items.join(","))
        }
        Some(Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, render_opt(&kv.value)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

/// Lowercase hex; "" for no bytes.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
