//! JSON logs on stdout: process events (through `tracing`) and one access
//! log line per request (written directly, it is on the hot path).
//!
//! Both go through one non-blocking writer ([`lines`]): a background thread
//! owns stdout, so a slow terminal or pipe never stalls a request (lines are
//! dropped and counted instead, see `kawal_log_lines_dropped_total`).

mod access;
mod lines;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::{format::Writer, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogLevel};

pub use access::{AccessLine, AccessLog, RetriedAttempt};
pub use lines::{FlushOnDrop, LineWriter};

/// Where log lines go.
#[derive(Clone)]
pub enum Sink {
    /// The non-blocking stdout writer.
    Stdout(LineWriter),
    /// An in-memory buffer, for tests.
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Sink {
    /// Creates the stdout sink; keep the guard alive until exit (it flushes).
    pub fn stdout() -> (Sink, FlushOnDrop) {
        let (writer, guard) = LineWriter::spawn(std::io::stdout());
        (Sink::Stdout(writer), guard)
    }

    /// Writes one complete line.
    pub fn write_line(&self, line: &[u8]) {
        match self {
            Sink::Stdout(w) => w.write_line(line),
            Sink::Memory(buf) => buf
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(line),
        }
    }

    /// Lines dropped because the writer thread fell behind.
    pub fn dropped(&self) -> u64 {
        match self {
            Sink::Stdout(w) => w.dropped(),
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
    let mut out = Vec::with_capacity(24);
    access::write_timestamp(&mut out, SystemTime::now());
    String::from_utf8(out).unwrap_or_default()
}

/// The target access lines are filtered by (`RUST_LOG=kawal::access=off`
/// silences them; `RUST_LOG=warn` too).
pub const ACCESS_TARGET: &str = "kawal::access";
