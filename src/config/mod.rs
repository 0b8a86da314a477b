//! kawal's configuration: one TOML file, parsed into typed values once.
//!
//! Serde does the per-value work (types, units, unknown keys: every struct
//! denies unknown fields); [`validate`] then checks what spans several values
//! (routes to undefined upstreams, two listeners on one port). Every problem is
//! reported as `FILE:LINE:COL: key.path: what is wrong`, all of them at once,
//! and kawal refuses to start. Every option and its default is documented in
//! `config/kawal.toml`.

mod locate;
mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use units::{Addr, Dur, HostPort, Size};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this sidecar speaks for.
    pub service: Service,
    /// The admin listener.
    #[serde(default)]
    pub admin: Admin,
    /// Traffic from other services to the local app; absent = disabled.
    pub inbound: Option<Inbound>,
    /// The local app's calls to other services; absent = disabled.
    pub outbound: Option<Outbound>,
    /// Named upstreams the outbound side routes to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Limits every listener enforces on untrusted peers.
    #[serde(default)]
    pub limits: Limits,
    /// Trace propagation, sampling and span export.
    #[serde(default)]
    pub tracing: Tracing,
    /// Log output.
    #[serde(default)]
    pub log: Log,
}

/// `[service]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The service name, on every log line as `serviceName`.
    pub name: String,
    /// Runtime worker threads; default: the CPUs available.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "d_30s")]
    pub shutdown_grace: Dur,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where `/live`, `/ready` and `/metrics` are served.
    #[serde(default = "default_admin_listen")]
    pub listen: Addr,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

/// `[inbound]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Where other services connect.
    pub listen: Addr,
    /// The local app, `host:port`.
    pub app: HostPort,
    /// HTTP version spoken to the app.
    #[serde(default)]
    pub app_protocol: Protocol,
    /// Connect timeout to the app.
    #[serde(default = "d_1s")]
    pub connect_timeout: Dur,
    /// Deadline for the app's response head.
    #[serde(default = "d_30s")]
    pub timeout: Dur,
    /// TLS termination; absent = plaintext (logged as a warning).
    #[serde(default)]
    pub tls: Option<InboundTls>,
    /// Authorization by verified identity × method × path; no rules = allow
    /// all, any rule = default deny.
    #[serde(default)]
    pub allow: Vec<crate::auth::AllowRule>,
    /// JWT validation of `Authorization: Bearer` tokens.
    #[serde(default)]
    pub jwt: Option<InboundJwt>,
    /// Local rate limits, each on a methods × paths scope.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitRule>,
}

/// `[[inbound.rate_limits]]`: a token bucket on a route, one per caller
/// when `key` says so.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// HTTP methods; absent or `["*"]` means any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Path patterns (exact, prefix ending in `/*`, or `*`); absent means any.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Requests allowed per `period`, sustained.
    pub requests: u32,
    /// The period `requests` refers to.
    #[serde(default = "d_1s")]
    pub period: Dur,
    /// Requests allowed at once after a quiet spell; default `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Whose bucket a request takes from.
    #[serde(default)]
    pub key: RateKey,
}

/// `key` of a rate limit: whose bucket a request takes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RateKey {
    /// `"route"`: one bucket for every caller.
    #[default]
    Route,
    /// `"identity"`: one per verified peer identity (mTLS).
    Identity,
    /// `"user"`: one per verified JWT `sub` (else per peer identity).
    User,
    /// `"header:NAME"`: one per value of this request header.
    Header(http::HeaderName),
}

impl TryFrom<String> for RateKey {
    type Error = String;

    fn try_from(s: String) -> Result<RateKey, String> {
        match s.as_str() {
            "route" => Ok(RateKey::Route),
            "identity" => Ok(RateKey::Identity),
            "user" => Ok(RateKey::User),
            _ => match s.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(RateKey::Header)
                    .map_err(|_| format!("{name:?} is not a valid header name")),
                None => Err(format!(
                    "{s:?} is not a rate limit key: use \"route\", \"identity\", \"user\" or \"header:NAME\""
                )),
            },
        }
    }
}

/// `[inbound.jwt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundJwt {
    /// Required `iss`.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Local JWKS file with the verification keys (this or `jwks_url`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// http(s) URL to fetch the JWKS from (this or `jwks_file`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM CA bundle for an https `jwks_url` under a private CA; default: the
    /// webpki (Mozilla) roots.
    #[serde(default)]
    pub jwks_ca: Option<PathBuf>,
    /// Pinned algorithms (RS256, ES256, EdDSA; HS256 only with a secret).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Shared secret file; enables HS256 only if also listed in `algorithms`.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Longest accepted token lifetime (`exp - iat`).
    #[serde(default = "d_15m")]
    pub max_lifetime: Dur,
    /// Clock skew allowed on `exp`/`nbf`.
    #[serde(default = "d_30s")]
    pub leeway: Dur,
    /// false: requests without a token pass (with no user).
    #[serde(default = "yes")]
    pub required: bool,
    /// Claims that must equal (or, for arrays, contain) a value.
    #[serde(default)]
    pub require_claims: BTreeMap<String, String>,
    /// `[[inbound.jwt.routes]]`: more claims on some methods × paths.
    #[serde(default)]
    pub routes: Vec<crate::auth::ClaimRoute>,
    /// How often the JWKS file is read again, or the URL fetched (key rotation).
    #[serde(default = "d_60s")]
    pub reload_interval: Dur,
}

/// `[inbound.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundTls {
    /// PEM certificate chain of this service.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA bundle: when set, every client must present a certificate it
    /// issued (mTLS), or gets no connection.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Time a client has to complete the TLS handshake.
    #[serde(default = "d_10s")]
    pub handshake_timeout: Dur,
    /// How often the files are checked for rotation.
    #[serde(default = "d_5s")]
    pub reload_interval: Dur,
}

/// `[upstreams.NAME.tls]`: TLS (or mTLS) toward the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA bundle the server's certificate must chain to; absent = the
    /// Mozilla roots (external APIs).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mTLS), with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Who the server must be: `spiffe://...` (URI SAN) or a DNS name;
    /// absent = the endpoint's host name.
    #[serde(default)]
    pub server_identity: Option<String>,
    /// How often the files are checked for rotation.
    #[serde(default = "d_5s")]
    pub reload_interval: Dur,
}

/// `[outbound]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Where the local app sends its calls (use as HTTP_PROXY).
    #[serde(default = "default_outbound_listen")]
    pub listen: Addr,
    /// Upstream for hosts that no upstream lists; absent = 404.
    #[serde(default)]
    pub default_upstream: Option<String>,
    /// A header the local app sets to name its end user; its value becomes
    /// `userId` in the outbound access log and span. Trusted because only the
    /// local app reaches this listener.
    #[serde(default)]
    pub user_header: Option<String>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host names (Host header or absolute-URI authority, with or without
    /// port) routed to this upstream. The upstream's own name always routes.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `ip:port` or `name:port`; names are re-resolved periodically.
    pub endpoints: Vec<HostPort>,
    /// HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: Protocol,
    /// TCP connect timeout.
    #[serde(default = "d_1s")]
    pub connect_timeout: Dur,
    /// Overall deadline for a response head, retries included.
    #[serde(default = "d_30s")]
    pub timeout: Dur,
    /// How often DNS names in `endpoints` are resolved again.
    #[serde(default = "d_5s")]
    pub resolve_interval: Dur,
    /// TLS toward the endpoints; absent = plain HTTP.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// `[upstreams.NAME.retry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 = no retries.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Deadline of one attempt; absent = what is left of `timeout`.
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    /// Exponential backoff with full jitter between `base` and `max`.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Retries may add at most `ratio` of recent requests, plus
    /// `min_per_second`, so retries cannot multiply load in an outage.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// What is retried: statuses ("502", "429", ...; 4xx other than 429 are
    /// never retried), "connect-failure", "reset", "timeout".
    #[serde(default = "default_retry_on")]
    pub on: Vec<String>,
    /// Longest `Retry-After` honoured (longer is cut to this).
    #[serde(default = "d_10s")]
    pub max_retry_after: Dur,
    /// Request bodies up to this size are kept for a retry; larger or
    /// chunked bodies are streamed and not retried.
    #[serde(default = "default_replay")]
    pub max_replay_body: Size,
}

impl Default for RetryConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `backoff = { base = "25ms", max = "1s" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First retry waits up to this.
    #[serde(default = "d_25ms")]
    pub base: Dur,
    /// No retry waits longer than this.
    #[serde(default = "d_1s")]
    pub max: Dur,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `budget = { ratio = 0.2, min_per_second = 10 }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries per request, over a 10 s window.
    #[serde(default = "default_ratio")]
    pub ratio: f32,
    /// Retries always allowed per second.
    #[serde(default = "default_min_per_second")]
    pub min_per_second: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `[upstreams.NAME.breaker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// false = never fail fast.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Open after this many failures in a row.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// Or when failures / requests over `window` reach this...
    #[serde(default = "default_rate")]
    pub failure_rate: f64,
    /// ...with at least this many requests in the window.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// The sliding window for the rate.
    #[serde(default = "d_10s")]
    pub window: Dur,
    /// How long it stays open (fails fast with 503) before probing.
    #[serde(default = "d_30s")]
    pub open_for: Dur,
    /// Probes let through half-open; all must succeed to close.
    #[serde(default = "default_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// HTTP version toward an upstream or the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// `[limits]`: what a listener accepts from an untrusted peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request line plus all headers (HTTP/1.1) → 431.
    #[serde(default = "default_max_head")]
    pub max_request_head: Size,
    /// One header's name plus value → 431.
    #[serde(default = "default_max_header")]
    pub max_header: Size,
    /// Number of request headers → 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Request target length → 414.
    #[serde(default = "default_max_uri")]
    pub max_uri: Size,
    /// Request body → 413.
    #[serde(default = "default_max_body")]
    pub max_request_body: Size,
    /// Time to receive a request head; also the idle keep-alive timeout
    /// (see `server::head`).
    #[serde(default = "d_10s")]
    pub request_head_timeout: Dur,
    /// Longest pause inside a request or response body.
    #[serde(default = "d_30s")]
    pub body_idle_timeout: Dur,
    /// HTTP/2 concurrent streams per connection.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Open connections per listener; past it, new ones wait in the kernel's
    /// backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // An empty table gives the serde defaults; one source of truth.
        toml::from_str("").expect("defaults parse")
    }
}

/// `[tracing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; spans are POSTed
    /// to `/v1/traces` under it (a URL with its own path is used as is).
    /// Absent = no export (trace context is still propagated and logged).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces (no sampling decision from the caller) that are
    /// recorded; a caller's decision is always followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Formats read from incoming requests, first valid one wins: `w3c`,
    /// `b3` (single header), `b3multi` (`X-B3-*`); either B3 form reads both.
    #[serde(default = "default_propagation")]
    pub propagation: Vec<Propagation>,
    /// Formats written to forwarded requests; default: `propagation`.
    #[serde(default)]
    pub inject: Option<Vec<Propagation>>,
    /// Spans held for export; when full (collector slow or down) new spans
    /// are dropped and counted, requests never wait.
    #[serde(default = "default_span_queue")]
    pub queue_size: usize,
    /// Spans per export request.
    #[serde(default = "default_span_batch")]
    pub batch_size: usize,
    /// How long a partial batch waits before it is sent.
    #[serde(default = "d_1s")]
    pub flush_interval: Dur,
    /// Deadline of one export request.
    #[serde(default = "d_5s")]
    pub export_timeout: Dur,
}

impl Default for Tracing {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Tracing {
    /// The formats written to forwarded requests.
    pub fn inject_formats(&self) -> &[Propagation] {
        self.inject.as_deref().unwrap_or(&self.propagation)
    }

    /// The URL spans are POSTed to: `/v1/traces` under a bare endpoint.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.otlp_endpoint.as_deref()?;
        let uri: http::Uri = endpoint.parse().ok()?;
        Some(match uri.path() {
            "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            _ => endpoint.to_string(),
        })
    }
}

/// A trace context header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// W3C `traceparent` / `tracestate`.
    W3c,
    /// Zipkin B3, single `b3` header.
    B3,
    /// Zipkin B3, multiple `X-B3-*` headers.
    B3multi,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `error`, `warn`, `info` (access log lines are `info`), `debug`, `trace`.
    /// `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: LogLevel,
    /// `json` (default) or `text` for local development.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::Json,
        }
    }
}

/// A log level filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// And warnings.
    Warn,
    /// And access log lines and process events.
    Info,
    /// And debugging detail.
    Debug,
    /// Everything.
    Trace,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// One entry of `retry.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// A response status (429 or 5xx).
    Status(u16),
    /// Connection refused or connect timeout (nothing was sent).
    ConnectFailure,
    /// Connection reset before a response head.
    Reset,
    /// Per-try timeout.
    Timeout,
}

impl RetryOn {
    /// Parses one `retry.on` entry.
    pub fn parse(s: &str) -> Result<RetryOn, String> {
        match s {
            "connect-failure" => Ok(RetryOn::ConnectFailure),
            "reset" => Ok(RetryOn::Reset),
            "timeout" => Ok(RetryOn::Timeout),
            _ => match s.parse::<u16>() {
                Ok(code) if code == 429 || (500..=599).contains(&code) => Ok(RetryOn::Status(code)),
                Ok(code) => Err(format!("{code}: only 429 and 5xx statuses may be retried")),
                Err(_) => Err(format!(
                    "{s:?}: expected a status (\"503\"), \"connect-failure\", \"reset\" or \"timeout\""
                )),
            },
        }
    }
}

/// Every problem found in a config file, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// `FILE:LINE:COL: key: what is wrong`
    pub problems: Vec<String>,
}

impl Config {
    /// Reads and validates the file at `path`. Relative file names in it
    /// (certificates, keys) are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        let mut cfg = Self::from_toml_str(&src, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            cfg.resolve_paths(dir);
        }
        Ok(cfg)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(jwt) = self.inbound.as_mut().and_then(|i| i.jwt.as_mut()) {
            jwt.jwks_file.as_mut().map(fix);
            jwt.jwks_ca.as_mut().map(fix);
            jwt.hs256_secret_file.as_mut().map(fix);
        }
        if let Some(tls) = self.inbound.as_mut().and_then(|i| i.tls.as_mut()) {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            tls.client_ca.as_mut().map(fix);
        }
        for tls in self.upstreams.values_mut().filter_map(|u| u.tls.as_mut()) {
            for p in [&mut tls.ca, &mut tls.cert, &mut tls.key].into_iter().flatten() {
                fix(p);
            }
        }
    }

    /// Parses and validates `src`; `file` names it in error messages.
    pub fn from_toml_str(src: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(src).map_err(|e| ConfigError {
            problems: type_errors(file, src, e),
        })?;
        let problems: Vec<String> = validate(&cfg)
            .into_iter()
            .map(|(path, msg)| {
                let segs: Vec<&str> = path.iter().map(String::as_str).collect();
                let (line, col) = locate::locate(src, &segs)
                    .map(|span| locate::line_col(src, span.start))
                    .unwrap_or((1, 1));
                format!("{file}:{line}:{col}: {}: {msg}", path.join("."))
            })
            .collect();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Every key that cannot be read, not only the first. serde stops at the
/// first, so the line it names is commented out (or, when that line was a
/// required key, its whole table) and the text read again, until it reads
/// or the error is not one a line can be blamed for (it spans lines, or is a
/// syntax error). Lines keep their numbers; problems come in file order.
fn type_errors(file: &str, src: &str, first: toml::de::Error) -> Vec<String> {
    const MAX_PROBLEMS: usize = 50;
    let mut problems = vec![locate::describe_toml_error(file, src, &first)];
    if toml::from_str::<toml::Table>(src).is_err() {
        // A syntax error: what follows it cannot be read.
        return problems;
    }
    let mut text = src.to_string();
    let mut error = first;
    while problems.len() < MAX_PROBLEMS {
        let Some(line) = blamed_line(&text, &error) else {
            break;
        };
        let attempts = [Some(line.clone()), table_around(&text, line.start)];
        let next = attempts.into_iter().flatten().find_map(|lines| {
            let candidate = comment_out(&text, lines);
            match toml::from_str::<Config>(&candidate) {
                // Our own doing: the commented-out key was required.
                Err(e) if e.message().starts_with("missing field") => None,
                read => Some((candidate, read.err())),
            }
        });
        let Some((candidate, Some(next))) = next else {
            break;
        };
        if toml::from_str::<toml::Table>(&candidate).is_err() {
            break;
        }
        problems.push(locate::describe_toml_error(file, &candidate, &next));
        (text, error) = (candidate, next);
    }
    problems.sort_by_key(|p| {
        let mut at = p[file.len()..]
            .split(':')
            .skip(1)
            .map(|n| n.parse::<usize>().unwrap_or(0));
        (at.next(), at.next())
    });
    problems
}

/// The byte range of the one line an error points into, unless the error
/// spans lines or points at a table header.
fn blamed_line(text: &str, error: &toml::de::Error) -> Option<std::ops::Range<usize>> {
    let span = error.span()?;
    let start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let header = text[start..end].trim_start().starts_with('[');
    (span.end <= end && !header).then_some(start..end)
}

/// The table (header line up to the next header) holding byte `at`.
fn table_around(text: &str, at: usize) -> Option<std::ops::Range<usize>> {
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let mut offset = 0;
    let mut table = None;
    for line in text.split_inclusive('\n') {
        if is_header(line) {
            if offset > at {
                return table.map(|start| start..offset);
            }
            table = Some(offset);
        }
        offset += line.len();
    }
    table.map(|start| start..text.len())
}

/// `text` with every line starting in `lines` turned into a comment.
fn comment_out(text: &str, lines: std::ops::Range<usize>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if lines.contains(&offset) {
            out.push('#');
        }
        out.push_str(line);
        offset += line.len();
    }
    out
}

/// Checks that span several values; returns (key path, problem) pairs.
fn validate(cfg: &Config) -> Vec<(Vec<String>, String)> {
    let mut problems = Vec::new();
    let mut bad = |path: &[&str], msg: String| {
        problems.push((path.iter().map(|s| s.to_string()).collect(), msg));
    };
    if cfg.service.name.trim().is_empty() {
        bad(&["service", "name"], "must not be empty".into());
    }
    if cfg.service.worker_threads == Some(0) {
        bad(&["service", "worker_threads"], "must be at least 1".into());
    }
    if cfg.inbound.is_none() && cfg.outbound.is_none() {
        bad(
            &["service"],
            "neither [inbound] nor [outbound] is configured: nothing to do".into(),
        );
    }

    // Two listeners on one port (port 0 = "any free port", as tests use).
    let mut listeners = vec![(["admin", "listen"], cfg.admin.listen.0)];
    if let Some(i) = &cfg.inbound {
        listeners.push((["inbound", "listen"], i.listen.0));
    }
    if let Some(o) = &cfg.outbound {
        listeners.push((["outbound", "listen"], o.listen.0));
    }
    for (i, (path, addr)) in listeners.iter().enumerate() {
        if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| {
            a.port() != 0
                && a.port() == addr.port()
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
        }) {
            bad(
                path,
                format!("port {} is already used by {}", addr.port(), other.join(".")),
            );
        }
    }

    if let Some(inbound) = &cfg.inbound {
        if let Err(msg) = crate::auth::Policy::new(inbound.allow.clone()) {
            bad(&["inbound", "allow"], msg);
        }
        for (i, rule) in inbound.rate_limits.iter().enumerate() {
            let at = i.to_string();
            let mut bad_rule = |key: &str, msg: String| bad(&["inbound", "rate_limits", &at, key], msg);
            if let Err(msg) = crate::matcher::RouteMatch::compile(&rule.methods, &rule.paths) {
                bad_rule("paths", msg);
            }
            if rule.requests == 0 {
                bad_rule("requests", "must be at least 1".into());
            }
            if rule.burst == Some(0) {
                bad_rule("burst", "must be at least 1 (omit it to use `requests`)".into());
            }
            if rule.period.0.is_zero() {
                bad_rule("period", "must be longer than 0s".into());
            }
        }
        let mtls = inbound.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !inbound.allow.is_empty() && !mtls {
            bad(
                &["inbound", "allow"],
                "allow rules match verified peer identities, which need [inbound.tls] client_ca (mTLS)"
                    .into(),
            );
        }
        if let Some(jwt) = &inbound.jwt {
            match (&jwt.jwks_file, &jwt.jwks_url) {
                (Some(_), Some(_)) => bad(
                    &["inbound", "jwt", "jwks_url"],
                    "set either jwks_url or jwks_file, not both".into(),
                ),
                (None, None) => bad(
                    &["inbound", "jwt"],
                    "needs the JWKS: set jwks_file or jwks_url".into(),
                ),
                _ => {}
            }
            if let Some(Err(msg)) = jwt.jwks_url.as_deref().map(crate::auth::jwks_url::parse_url) {
                bad(&["inbound", "jwt", "jwks_url"], msg);
            }
            if let Err(msg) = crate::auth::ClaimRoutes::new(&jwt.routes) {
                bad(&["inbound", "jwt", "routes"], msg);
            }
            let https = jwt.jwks_url.as_deref().is_some_and(|u| u.starts_with("https://"));
            if jwt.jwks_ca.is_some() && !https {
                bad(
                    &["inbound", "jwt", "jwks_ca"],
                    "only applies to an https:// jwks_url".into(),
                );
            }
        }
    }
    if let Some(out) = &cfg.outbound {
        if let Some(name) = &out.default_upstream {
            if !cfg.upstreams.contains_key(name) {
                bad(
                    &["outbound", "default_upstream"],
                    format!("no upstream named {name:?} is defined"),
                );
            }
        }
    } else if !cfg.upstreams.is_empty() {
        bad(
            &["upstreams"],
            "upstreams are defined but [outbound] is not: they would never be used".into(),
        );
    }

    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for (name, up) in &cfg.upstreams {
        if up.endpoints.is_empty() {
            bad(
                &["upstreams", name, "endpoints"],
                "needs at least one endpoint".into(),
            );
        }
        for host in std::iter::once(name).chain(&up.hosts) {
            let key = host.to_ascii_lowercase();
            match owner.get(&key) {
                Some(prev) if *prev != name.as_str() => bad(
                    &["upstreams", name, "hosts"],
                    format!("host {host:?} is already routed to upstream {prev:?}"),
                ),
                _ => {
                    owner.insert(key, name);
                }
            }
        }
        if let Some(tls) = &up.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                bad(&["upstreams", name, "tls"], "cert and key go together".into());
            }
        }
        if up.timeout.0 < up.connect_timeout.0 {
            bad(
                &["upstreams", name, "timeout"],
                "must not be shorter than connect_timeout".into(),
            );
        }
    }
    let t = &cfg.tracing;
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        bad(&["tracing", "sample_ratio"], "must be between 0.0 and 1.0".into());
    }
    if t.propagation.is_empty() {
        bad(&["tracing", "propagation"], "needs at least one format".into());
    }
    if let Some(endpoint) = &t.otlp_endpoint {
        match endpoint.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
            Ok(uri) if uri.scheme_str() == Some("https") => bad(
                &["tracing", "otlp_endpoint"],
                "https is not supported: export to a local collector or agent over http".into(),
            ),
            _ => bad(
                &["tracing", "otlp_endpoint"],
                format!("{endpoint:?} is not an http://host:port URL"),
            ),
        }
    }
    if t.batch_size == 0 || t.batch_size > t.queue_size {
        bad(
            &["tracing", "batch_size"],
            "must be at least 1 and at most queue_size".into(),
        );
    }
    if let Some(name) = cfg.outbound.as_ref().and_then(|o| o.user_header.as_ref()) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            bad(
                &["outbound", "user_header"],
                format!("{name:?} is not a header name"),
            );
        }
    }

    let l = &cfg.limits;
    if l.max_request_head.0 < 8 * 1024 {
        bad(&["limits", "max_request_head"], "must be at least 8KiB".into());
    }
    if l.max_connections == 0 {
        bad(&["limits", "max_connections"], "must be at least 1".into());
    }
    if l.max_headers == 0 {
        bad(&["limits", "max_headers"], "must be at least 1".into());
    }
    if l.h2_max_concurrent_streams == 0 {
        bad(
            &["limits", "h2_max_concurrent_streams"],
            "must be at least 1".into(),
        );
    }
    problems
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_propagation() -> Vec<Propagation> {
    vec![Propagation::W3c]
}
fn default_span_queue() -> usize {
    2048
}
fn default_span_batch() -> usize {
    512
}
fn d_25ms() -> Dur {
    Dur(Duration::from_millis(25))
}
fn d_1s() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_5s() -> Dur {
    Dur(Duration::from_secs(5))
}
fn d_10s() -> Dur {
    Dur(Duration::from_secs(10))
}
fn d_15m() -> Dur {
    Dur(Duration::from_secs(15 * 60))
}
fn d_60s() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
fn d_30s() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_admin_listen() -> Addr {
    Addr(([127, 0, 0, 1], 15000).into())
}
fn default_outbound_listen() -> Addr {
    Addr(([127, 0, 0, 1], 15001).into())
}
fn default_max_head() -> Size {
    Size(64 * 1024)
}
fn default_max_header() -> Size {
    Size(16 * 1024)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_headers() -> usize {
    100
}
fn default_max_uri() -> Size {
    Size(8 * 1024)
}
fn default_max_body() -> Size {
    Size(64 * 1024 * 1024)
}
fn default_h2_streams() -> u32 {
    256
}
fn default_attempts() -> u32 {
    3
}
fn default_retry_on() -> Vec<String> {
    ["502", "503", "504", "429", "connect-failure", "reset", "timeout"]
        .map(String::from)
        .to_vec()
}
fn default_replay() -> Size {
    Size(64 * 1024)
}
fn default_ratio() -> f32 {
    0.2
}
fn default_min_per_second() -> u32 {
    10
}
fn yes() -> bool {
    true
}
fn default_consecutive() -> u32 {
    5
}
fn default_rate() -> f64 {
    0.5
}
fn default_min_requests() -> u32 {
    20
}
fn default_probes() -> u32 {
    3
}
fn default_level() -> LogLevel {
    LogLevel::Info
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[service]
name = "orders"

[inbound]
listen = "127.0.0.1:15006"
app = "127.0.0.1:8080"
"#;

    fn problems(src: &str) -> Vec<String> {
        Config::from_toml_str(src, "kawal.toml").unwrap_err().problems
    }

    #[test]
    fn type_errors_in_several_places_are_all_reported() {
        let src = r#"
[service]
name = "orders"
shutdown_grace = "soon"

[inbound]
listen = "127.0.0.1:15006"
app = "127.0.0.1:8080"
retries = 3

[limits]
max_uri = "8 kilobytes"
max_headers = "many"
"#;
        let p = problems(src);
        let starts: Vec<&str> = p
            .iter()
            .map(|l| l.split(": ").take(2).collect::<Vec<_>>())
            .map(|v| v[0])
            .collect();
        assert_eq!(
            starts,
            [
                "kawal.toml:4:18",
                "kawal.toml:9:1",
                "kawal.toml:12:11",
                "kawal.toml:13:15"
            ],
            "{p:#?}"
        );
        assert!(p[0].contains("service.shutdown_grace"), "{p:#?}");
        assert!(p[1].contains("retries"), "{p:#?}");
        assert!(
            p[2].contains("limits.max_uri") && p[3].contains("limits.max_headers"),
            "{p:#?}"
        );
        // Required keys with bad values: reading on needs their table out of the way.
        let p = problems(
            "[service]\nname = 5\nshutdown_grace = \"soon\"\n[inbound]\nlisten = \"x\"\napp = \"127.0.0.1:1\"\nbogus = 1\n",
        );
        let keys: Vec<&str> = p.iter().filter_map(|l| l.split(": ").nth(1)).collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "service.shutdown_grace",
                "inbound.listen",
                "inbound.bogus"
            ],
            "{p:#?}"
        );
        // A syntax error stops at itself: what follows cannot be read.
        assert_eq!(problems("[service]\nname = \n[inbound]\nretries = 3\n").len(), 1);
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let cfg = Config::from_toml_str(MINIMAL, "kawal.toml").unwrap();
        assert_eq!(cfg.admin.listen.0.to_string(), "127.0.0.1:15000");
        assert_eq!(cfg.limits.max_request_head.0, 64 * 1024);
        assert_eq!(cfg.service.shutdown_grace.0, Duration::from_secs(30));
        assert_eq!(cfg.log.level, LogLevel::Info);
    }

    #[test]
    fn tracing_defaults_and_endpoint() {
        let cfg = Config::from_toml_str(MINIMAL, "kawal.toml").unwrap();
        assert_eq!(cfg.tracing.sample_ratio, 1.0);
        assert_eq!(cfg.tracing.inject_formats(), [Propagation::W3c]);
        assert_eq!(cfg.tracing.traces_url(), None);
        let src = format!(
            "{MINIMAL}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/\"\npropagation = [\"b3\", \"w3c\"]\ninject = [\"w3c\"]\n"
        );
        let cfg = Config::from_toml_str(&src, "kawal.toml").unwrap();
        assert_eq!(
            cfg.tracing.traces_url().unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(cfg.tracing.propagation, [Propagation::B3, Propagation::W3c]);
        assert_eq!(cfg.tracing.inject_formats(), [Propagation::W3c]);
        let custom = cfg.tracing.clone();
        let custom = Tracing {
            otlp_endpoint: Some("http://collector:4318/otlp/traces".into()),
            ..custom
        };
        assert_eq!(custom.traces_url().unwrap(), "http://collector:4318/otlp/traces");
    }

    #[test]
    fn bad_tracing_values_are_named() {
        let src = format!(
            "{MINIMAL}\n[tracing]\notlp_endpoint = \"https://x:4318\"\nsample_ratio = 1.5\nbatch_size = 0\n"
        );
        let p = problems(&src);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter()
                .any(|l| l.starts_with("kawal.toml:10:1: tracing.otlp_endpoint: https")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("kawal.toml:11:1: tracing.sample_ratio:")),
            "{p:?}"
        );
        assert!(p.iter().any(|l| l.contains("tracing.batch_size")), "{p:?}");
        let p = problems(&format!("{MINIMAL}\n[tracing]\npropagation = [\"jaeger\"]\n"));
        assert!(
            p[0].contains("tracing.propagation") && p[0].contains("jaeger"),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let p = problems(&format!("{MINIMAL}\n[limits]\nmax_uri_len = \"1KiB\"\n"));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("kawal.toml:10:1: limits.max_uri_len: unknown field"),
            "{}",
            p[0]
        );
        assert!(p[0].contains("max_uri_len"), "{}", p[0]);
    }

    #[test]
    fn bad_duration_names_its_line() {
        let src = MINIMAL.replace(
            "app = \"127.0.0.1:8080\"",
            "app = \"127.0.0.1:8080\"\ntimeout = \"30\"",
        );
        let p = problems(&src);
        assert!(p[0].starts_with("kawal.toml:8:"), "{}", p[0]);
        assert!(p[0].contains("timeout"), "{}", p[0]);
    }

    #[test]
    fn route_to_undefined_upstream_and_port_clash_are_all_reported() {
        let src = r#"
[service]
name = "orders"

[admin]
listen = "127.0.0.1:15001"

[outbound]
listen = "127.0.0.1:15001"
default_upstream = "nowhere"

[upstreams.payment]
endpoints = ["127.0.0.1:9000"]
"#;
        let p = problems(src);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("kawal.toml:9:1: outbound.listen: port 15001"),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("kawal.toml:10:1: outbound.default_upstream: no upstream named \"nowhere\""),
            "{}",
            p[1]
        );
    }

    #[test]
    fn jwt_routes_are_checked() {
        let cfg = |route: &str| {
            format!(
                "{MINIMAL}\n[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_file = \"j.json\"\n\
                 [[inbound.jwt.routes]]\n{route}\n"
            )
        };
        let ok = Config::from_toml_str(
            &cfg("paths = [\"/orders/*\"]\nrequire_claims = { scope = \"w\" }"),
            "kawal.toml",
        );
        assert_eq!(ok.unwrap().inbound.unwrap().jwt.unwrap().routes.len(), 1);
        let p = problems(&cfg("paths = [\"orders\"]\nrequire_claims = { scope = \"w\" }"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("inbound.jwt.routes: inbound.jwt.routes[0]: path pattern"),
            "{p:?}"
        );
    }

    #[test]
    fn jwks_needs_exactly_one_of_file_and_url() {
        let jwt =
            |body: &str| format!("{MINIMAL}\n[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\n{body}\n");
        let cfg = Config::from_toml_str(
            &jwt("jwks_url = \"https://idp.example/.well-known/jwks.json\""),
            "kawal.toml",
        )
        .unwrap();
        let j = cfg.inbound.unwrap().jwt.unwrap();
        assert_eq!(
            j.jwks_url.as_deref(),
            Some("https://idp.example/.well-known/jwks.json")
        );
        assert_eq!(j.jwks_file, None);
        Config::from_toml_str(&jwt("jwks_file = \"jwks.json\""), "kawal.toml").unwrap();

        let p = problems(&jwt(
            "jwks_file = \"jwks.json\"\njwks_url = \"http://idp:8080/jwks\"",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("kawal.toml:13:1: inbound.jwt.jwks_url: set either jwks_url or jwks_file"),
            "{p:?}"
        );
        let p = problems(&jwt(""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("kawal.toml:9:10: inbound.jwt: "), "{p:?}");
        assert!(p[0].contains("jwks_file") && p[0].contains("jwks_url"), "{p:?}");
        for url in ["ftp://idp/jwks", "/jwks.json", "not a url"] {
            let p = problems(&jwt(&format!("jwks_url = \"{url}\"")));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(
                p[0].starts_with("kawal.toml:12:1: inbound.jwt.jwks_url: "),
                "{p:?}"
            );
        }
        // A CA for the JWKS only means something for an https URL.
        let p = problems(&jwt("jwks_file = \"jwks.json\"\njwks_ca = \"ca.pem\""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("kawal.toml:13:1: inbound.jwt.jwks_ca: only applies to an https:// jwks_url"),
            "{p:?}"
        );
        Config::from_toml_str(
            &jwt("jwks_url = \"https://idp.internal/jwks\"\njwks_ca = \"ca.pem\""),
            "kawal.toml",
        )
        .unwrap();
    }

    #[test]
    fn the_reference_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kawal.toml");
        Config::load(&path).unwrap();
    }
}
