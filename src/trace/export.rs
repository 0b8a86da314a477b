//! Span export over OTLP/HTTP (protobuf), off the request path.
//!
//! A finished request hands its spans to [`Spans::record`], which only
//! `try_send`s them into a bounded queue: when the collector is slow or down
//! the queue fills and further spans are dropped and counted, so a request
//! never waits for tracing. One background task batches the queue and sends
//! each batch with the opentelemetry-otlp exporter (a hyper client on
//! kawal's runtime), one export at a time, each under a deadline.
//!
//! Span ids are kawal's own (the ones in the access log and the propagated
//! headers), so the spans are built as [`SpanData`] directly rather than
//! through an SDK tracer that would pick its own.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, SpanKind, Status, TraceFlags, TraceId as OtelTraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{RequestTrace, SpanId};
use crate::config::Tracing;
use crate::metrics::SpanMetrics;

/// The sending side of the export queue; cheap to share.
#[derive(Clone)]
pub struct Spans {
    queue: mpsc::Sender<SpanData>,
    scope: InstrumentationScope,
    metrics: SpanMetrics,
}

/// What one span says about the exchange it covers.
pub struct SpanRecord<'a> {
    /// `SERVER` for a request kawal received, `CLIENT` for an attempt it made.
    pub kind: SpanKind,
    /// The span's own id.
    pub span_id: SpanId,
    /// Its parent: the caller's span (remote) or kawal's request span.
    pub parent_id: Option<SpanId>,
    /// Whether the parent lives in another process.
    pub parent_is_remote: bool,
    /// Request method.
    pub method: &'a http::Method,
    /// When the span began and ended.
    pub start: SystemTime,
    /// End time.
    pub end: SystemTime,
    /// The status answered, if any.
    pub status: Option<u16>,
    /// Error kind (`error.type`), when the exchange failed.
    pub error: Option<&'a str>,
    /// Further attributes (path, addresses, attempt number, ...).
    pub attributes: Vec<KeyValue>,
}

impl Spans {
    /// Starts the export task; `None` when no collector is configured.
    /// The task ends, after a last flush, when every `Spans` is dropped.
    /// Must be called inside the runtime.
    pub fn start(cfg: &Tracing, service: &str, metrics: SpanMetrics) -> Option<(Spans, JoinHandle<()>)> {
        let url = cfg.traces_url()?;
        let client =
            opentelemetry_http::hyper::HyperClient::with_default_connector(cfg.export_timeout.0, None);
        let built = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(url.as_str())
            .with_timeout(cfg.export_timeout.0)
            .build();
        let mut exporter = match built {
            Ok(exporter) => exporter,
            Err(e) => {
                tracing::error!(event = "trace_export_disabled", endpoint = %url, error = %e, "cannot build the OTLP exporter: spans are not exported");
                return None;
            }
        };
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.to_string())
                .build(),
        );
        let (queue, rx) = mpsc::channel(cfg.queue_size);
        let batch = Batching {
            size: cfg.batch_size,
            linger: cfg.flush_interval.0,
            deadline: cfg.export_timeout.0,
        };
        let task = tokio::spawn(run(exporter, rx, batch, metrics.clone()));
        tracing::info!(event = "trace_export", endpoint = %url, "exporting spans over OTLP/HTTP");
        let spans = Spans {
            queue,
            scope: InstrumentationScope::builder("kawal")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            metrics,
        };
        Some((spans, task))
    }

    /// Queues one span of a sampled trace; never waits.
    pub fn record(&self, trace: &RequestTrace, span: SpanRecord<'_>) {
        let mut attributes = span.attributes;
        attributes.push(KeyValue::new("http.request.method", method_str(span.method)));
        if let Some(status) = span.status {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
        }
        // Semantic conventions: a SERVER span fails on 5xx, a CLIENT span on 4xx too.
        let failed_status = span.status.filter(|s| match span.kind {
            SpanKind::Client => *s >= 400,
            _ => *s >= 500,
        });
        let error_type = match (span.error, failed_status) {
            (Some(kind), _) => Some(kind.to_string()),
            (None, Some(status)) => Some(status.to_string()),
            (None, None) => None,
        };
        let status = match error_type {
            Some(kind) => {
                attributes.push(KeyValue::new("error.type", kind.clone()));
                Status::Error {
                    description: kind.into(),
                }
            }
            None => Status::Unset,
        };
        let flags = TraceFlags::new(trace.flags());
        let data = SpanData {
            span_context: SpanContext::new(
                OtelTraceId::from_bytes(trace.trace_id.0),
                OtelSpanId::from_bytes(span.span_id.0),
                flags,
                false,
                TraceState::NONE,
            ),
            parent_span_id: span
                .parent_id
                .map_or(OtelSpanId::INVALID, |p| OtelSpanId::from_bytes(p.0)),
            parent_span_is_remote: span.parent_is_remote,
            span_kind: span.kind,
            name: Cow::Borrowed(method_str(span.method)),
            start_time: span.start,
            end_time: span.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        };
        if self.queue.try_send(data).is_err() {
            self.metrics.queue_full.inc();
        }
    }
}

/// Span names and `http.request.method` are the method; unknown methods are
/// `_OTHER`, as the semantic conventions say (and it keeps names `'static`).
fn method_str(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

struct Batching {
    size: usize,
    linger: Duration,
    deadline: Duration,
}

/// Sends batches until every sender is gone, then flushes what is left.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    batching: Batching,
    metrics: SpanMetrics,
) {
    let mut batch = Vec::with_capacity(batching.size);
    let mut warned = false;
    loop {
        if rx.recv_many(&mut batch, batching.size).await == 0 {
            return; // closed and empty
        }
        // Wait a little for a fuller batch, but never longer than `linger`.
        let linger = tokio::time::sleep(batching.linger);
        tokio::pin!(linger);
        while batch.len() < batching.size {
            let room = batching.size - batch.len();
            tokio::select! {
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                _ = &mut linger => break,
            }
        }
        let count = batch.len() as u64;
        let sent = std::mem::replace(&mut batch, Vec::with_capacity(batching.size));
        let error = match tokio::time::timeout(batching.deadline, exporter.export(sent)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {:?}", batching.deadline)),
        };
        match error {
            None => {
                metrics.exported.inc_by(count);
                warned = false;
            }
            Some(e) => {
                metrics.export_failed.inc_by(count);
                // One warning per outage, not one per batch.
                if !warned {
                    tracing::warn!(event = "trace_export_failed", error = %e, spans = count, "span export failed; dropping spans until the collector answers");
                    warned = true;
                }
            }
        }
    }
}
