//! JSON logs on stdout: process events (through `tracing`) and one access
//! log line per request (written directly, it is on the hot path).
//!
//! Both go through one non-blocking writer: a background thread owns stdout,
//! so a slow terminal or pipe never stalls a request (lines are dropped and
//! counted instead, see `kawal_log_lines_dropped_total`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::fmt::{format::Writer, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogLevel};

/// Where log lines go.
#[derive(Clone)]
pub enum Sink {
    /// The non-blocking stdout writer.
    Stdout(NonBlocking),
    /// An in-memory buffer, for tests.
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Sink {
    /// Creates the stdout sink; keep the guard alive until exit (it flushes).
    pub fn stdout() -> (Sink, WorkerGuard) {
        let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
        (Sink::Stdout(writer), guard)
    }

    /// Writes one complete line.
    pub fn write_line(&self, line: &[u8]) {
        match self {
            Sink::Stdout(w) => {
                let _ = w.clone().write_all(line);
            }
            Sink::Memory(buf) => buf
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(line),
        }
    }

    /// Lines dropped because the writer thread fell behind.
    pub fn dropped(&self) -> u64 {
        match self {
            Sink::Stdout(w) => w.error_counter().dropped_lines() as u64,
            Sink::Memory(_) => 0,
        }
    }
}

/// Installs the process-event subscriber (once, in `main`). Returns whether
/// access lines pass the filter (`[log] level`, or `RUST_LOG` when set).
pub fn init(sink: &Sink, level: LogLevel, format: LogFormat, service: &str) -> bool {
    let mut invalid_rust_log = None;
    let mut env_set = false;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) => match v.parse::<tracing_subscriber::EnvFilter>() {
            Ok(filter) => {
                env_set = true;
                filter
            }
            Err(e) => {
                invalid_rust_log = Some((v, e.to_string()));
                tracing_subscriber::EnvFilter::new(level_str(level))
            }
        },
        Err(_) => tracing_subscriber::EnvFilter::new(level_str(level)),
    };
    let Sink::Stdout(writer) = sink.clone() else {
        return level >= LogLevel::Info;
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => {
            let builder = builder
                .event_format(JsonEvent {
                    service: service.to_string(),
                })
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() && !env_set {
                keep_level_setter(move |f| handle.reload(f).is_ok());
            }
        }
        LogFormat::Text => {
            let builder = builder
                .with_target(false)
                .with_ansi(colours())
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() && !env_set {
                keep_level_setter(move |f| handle.reload(f).is_ok());
            }
        }
    }
    if let Some((value, error)) = invalid_rust_log {
        tracing::warn!(
            event = "invalid_rust_log",
            value,
            error,
            level = level_str(level),
            "RUST_LOG is not a valid filter; using [log] level"
        );
    }
    tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
}

/// Colours in text mode only for a terminal, and never with `NO_COLOR`
/// (no-color.org): a file or pipe gets no escape sequences.
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

type LevelSetter = Box<dyn Fn(tracing_subscriber::EnvFilter) -> bool + Send + Sync>;

/// Changes the process-event level after [`init`] (a config reload) and
/// returns whether access lines pass; `None` when there is nothing to change:
/// no stdout subscriber, or `RUST_LOG` set the filter (it wins).
pub fn set_level(level: LogLevel) -> Option<bool> {
    let set = LEVEL.get()?;
    set(tracing_subscriber::EnvFilter::new(level_str(level)));
    Some(tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO))
}

static LEVEL: std::sync::OnceLock<LevelSetter> = std::sync::OnceLock::new();

fn keep_level_setter(set: impl Fn(tracing_subscriber::EnvFilter) -> bool + Send + Sync + 'static) {
    let _ = LEVEL.set(Box::new(set));
}

fn level_str(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

/// Formats a process event as one flat JSON object with the same top-level
/// fields as the access log (timestamp, level, serviceName, message, ...).
struct JsonEvent {
    service: String,
}

impl<S, N> FormatEvent<S, N> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut obj = serde_json::Map::new();
        obj.insert("timestamp".into(), timestamp().into());
        obj.insert(
            "level".into(),
            event.metadata().level().as_str().to_ascii_lowercase().into(),
        );
        obj.insert("serviceName".into(), self.service.as_str().into());
        obj.insert("target".into(), event.metadata().target().into());
        event.record(&mut JsonFields(&mut obj));
        writeln!(w, "{}", serde_json::Value::Object(obj))
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields<'_> {
    /// A value whose text is a JSON array or object (an event passes
    /// `endpoints = %json`) is kept structured, not quoted as a string.
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let structured = text
            .starts_with(['[', '{'])
            .then(|| serde_json::from_str::<serde_json::Value>(&text).ok())
            .flatten();
        self.0
            .insert(field.name().into(), structured.unwrap_or(text.into()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// One access log line (ARCHITECTURE.md, "Access log"). Only the path is
/// logged, never the query string, headers or bodies: they may carry secrets.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLine<'a> {
    /// RFC 3339 UTC, milliseconds.
    pub timestamp: String,
    /// Always `info`.
    pub level: &'static str,
    /// `[service] name`.
    pub service_name: &'a str,
    /// W3C trace id, 32 hex.
    pub trace_id: String,
    /// kawal's own span id for this request, 16 hex.
    pub span_id: String,
    /// The caller's span id, when the trace was continued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Request method.
    pub method: &'a str,
    /// Normalized path, without query.
    pub path: &'a str,
    /// The authority the request named (Host, `:authority` or the
    /// absolute-form URI's), as routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<&'a str>,
    /// The client connection's protocol: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// The client's address, `ip:port`.
    pub client_address: std::net::SocketAddr,
    /// The client's User-Agent, cut to 256 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
    /// Status sent to the client.
    pub status_code: u16,
    /// From request head to the end of the response body, milliseconds.
    pub duration: f64,
    /// Upstream name, when routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    /// Upstream attempts made (0: answered by kawal itself).
    pub attempts: u32,
    /// The endpoint (`ip:port`) of the last attempt: which replica answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<std::net::SocketAddr>,
    /// From request head to the upstream's response head, milliseconds
    /// (retries and backoff included); absent when no upstream answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_head_duration: Option<f64>,
    /// The attempts that failed and were retried, in order.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub retried: &'a [RetriedAttempt],
    /// Verified user (JWT `sub`) or peer identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
    /// Verified peer identity (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<&'a str>,
    /// Index of the `[[inbound.allow]]` rule that allowed the request, so that
    /// every authorization decision is on record (a denial is a 403 line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_rule: Option<usize>,
    /// What the response cache did: hit, miss, stale, revalidated, coalesced, bypass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'a str>,
    /// What the idempotency/ordering guard did: new, replayed, duplicate,
    /// conflict, mismatch, stale, queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<&'a str>,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Error kind, when kawal answered for the upstream or the exchange broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Human-readable cause of `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<&'a str>,
}

/// One attempt that failed and was retried, on its request's access line.
#[derive(Debug, Clone, Serialize)]
pub struct RetriedAttempt {
    /// The endpoint it went to, `ip:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<std::net::SocketAddr>,
    /// The status it got, when it got a response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, when it got none (an error kind, e.g. `upstream_connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// The target access lines are filtered by (`RUST_LOG=kawal::access=off`
/// silences them; `RUST_LOG=warn` too).
pub const ACCESS_TARGET: &str = "kawal::access";

impl AccessLog {
    /// Serializes the line and hands it to the sink.
    pub fn write(&self, line: &AccessLine<'_>) {
        let mut buf = Vec::with_capacity(512);
        let written = match self.format {
            LogFormat::Json => serde_json::to_writer(&mut buf, line).map_err(std::io::Error::from),
            LogFormat::Text => line.write_text(&mut buf),
        };
        if written.is_ok() {
            buf.push(b'\n');
            self.sink.write_line(&buf);
        }
    }
}

impl AccessLine<'_> {
    /// One human-readable line for local development, e.g.
    /// `… INFO kawal::access: inbound GET /x 200 1.234ms trace=… span=…`.
    fn write_text(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        write!(
            out,
            "{} {:>5} {ACCESS_TARGET}: {} {} {} {} {:.3}ms trace={} span={}",
            self.timestamp,
            "INFO",
            self.direction,
            self.method,
            self.path,
            self.status_code,
            self.duration,
            self.trace_id,
            self.span_id
        )?;
        write!(out, " client={} {}", self.client_address, self.protocol)?;
        let endpoint = self.endpoint.map(|e| e.to_string());
        let optional = [
            ("parent", self.parent_span_id.as_deref()),
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
                write!(out, " {key}={value}")?;
            }
        }
        write!(
            out,
            " attempts={} in={}B out={}B",
            self.attempts, self.bytes_in, self.bytes_out
        )?;
        if let Some(detail) = self.error_detail {
            write!(out, " detail={detail:?}")?;
        }
        Ok(())
    }
}

/// Milliseconds with microsecond precision, as the `duration` field wants.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// RFC 3339 UTC timestamp of now.
pub fn now_rfc3339() -> String {
    timestamp()
}
