//! kawal's configuration: one TOML file, parsed into typed values once.
//!
//! Loading has three stages, and every problem of a stage is reported, each
//! as `FILE:LINE:COL: key.path: what is wrong and what is allowed`:
//! 1. serde reads each value into the type the code uses (durations, sizes,
//!    addresses, header names, URLs, route scopes, enums such as
//!    [`RetryOn`]; every struct denies unknown keys). `report.rs` turns
//!    serde's messages into TOML words (no Rust type names) and collects one
//!    per bad line.
//! 2. `check.rs` checks ranges and what spans several values (attempts ≥ 1,
//!    rates in (0, 1], routes to defined upstreams, two listeners on one port).
//! 3. `kawal check` only: [`Config::check_files`] loads every file start
//!    loads (certificates, keys, CA bundles, the JWKS file) with the same
//!    loaders, so `ok` means kawal will start.
//!
//! Start then uses the values as they are: nothing is parsed twice, and no
//! value is dropped or replaced by a default on the way.
//!
//! Adding a section: (1) a struct here with `#[serde(deny_unknown_fields)]`,
//! each field of the type its user needs (a `Deserialize` impl that refuses
//! bad input with a message saying what is allowed, as in `units.rs`);
//! (2) its ranges and cross-field rules in `check.rs`, one `fn` per section
//! called from `check::validate`, with the helpers of `check::Checks`
//! (`at_least`, `positive`, `fraction`...), which name the key;
//! (3) any file it names loaded in `files.rs`, and its relative paths resolved
//! in [`Config::load`]; (4) every option documented with its default in
//! `config/kawal.toml`, and a bad value added to the table in `tests/config.rs`.

mod cache;
mod check;
mod files;
pub mod guard;
mod locate;
mod report;
mod units;
mod words;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::resilience::backoff::Backoff;

pub use cache::{CacheConfig, CacheRule};
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
    /// The file this was read from ([`Config::load`]); none for a string.
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
    /// After SIGTERM, how long `/ready` answers 503 while every listener
    /// still serves, so orchestrators take the endpoint out before
    /// connections are refused.
    #[serde(default = "d_5s")]
    pub drain_delay: Dur,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "d_30s")]
    pub shutdown_grace: Dur,
    /// How often the config file is checked for changes (hot reload);
    /// zero: only on SIGHUP.
    #[serde(default = "d_2s")]
    pub config_check_interval: Dur,
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
    /// `[inbound.cache]`: a response cache in front of the app.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Idempotency, event dedup and per-key ordering on some routes.
    #[serde(default)]
    pub guard: Option<guard::GuardConfig>,
    /// Request headers with `_` in their name: `allow`, `drop` (default) or
    /// `reject` (400). kawal's own identity headers in that spelling are
    /// always removed.
    #[serde(default)]
    pub headers_with_underscores: crate::headers::UnderscoreAction,
}

/// `[[inbound.rate_limits]]`: a token bucket on a route, one per caller
/// when `key` says so.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// HTTP methods; absent or `["*"]` means any method.
    #[serde(default)]
    pub methods: Option<crate::matcher::Methods>,
    /// Path patterns (exact, prefix ending in `/*`, or `*`); absent means any.
    #[serde(default)]
    pub paths: Option<crate::matcher::Paths>,
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
    #[serde(default, deserialize_with = "jwks_url")]
    pub jwks_url: Option<http::Uri>,
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
    #[serde(default, deserialize_with = "header_name")]
    pub user_header: Option<http::HeaderName>,
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
    /// `[upstreams.NAME.cache]`: a response cache for this upstream.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
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
    /// Exponential backoff with full jitter between `base` and `max`
    /// (written as [`BackoffConfig`], checked into a schedule at load).
    #[serde(default)]
    pub backoff: Backoff,
    /// Retries may add at most `ratio` of recent requests, plus
    /// `min_per_second`, so retries cannot multiply load in an outage.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// What is retried: statuses ("502", "429", ...; 4xx other than 429 are
    /// never retried), "connect-failure", "reset", "timeout".
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
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

/// `backoff = { base = "25ms", max = "1s" }`, as written; read into a
/// [`Backoff`] schedule, which refuses a zero `base` or a `max` below it.
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

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BackoffConfig::deserialize(d)?;
        Backoff::try_new(raw.base.0, raw.max.0).map_err(|_| {
            D::Error::custom(if raw.base.0.is_zero() {
                "base must be longer than 0s (a zero base means no backoff at all)".to_owned()
            } else {
                format!(
                    "base ({}) must not be longer than max ({}): max caps every wait, base is the first",
                    raw.base, raw.max
                )
            })
        })
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
    /// HTTP/2 concurrent streams per connection; each may hold one app
    /// connection, so this caps the app connections one client connection
    /// can hold.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Longest a response may wait on a client that does not read it (a
    /// write to the client making no progress); then the client connection
    /// and its app connections are closed.
    #[serde(default = "d_30s")]
    pub send_timeout: Dur,
    /// Connections older than this are closed gracefully (HTTP/1.1 after the
    /// response in progress, HTTP/2 with a GOAWAY); absent = no limit.
    #[serde(default)]
    pub max_connection_age: Option<Dur>,
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
    #[serde(default, deserialize_with = "otlp_endpoint")]
    pub otlp_endpoint: Option<http::Uri>,
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
        let uri = self.otlp_endpoint.as_ref()?;
        let endpoint = uri.to_string();
        Some(match uri.path() {
            "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            _ => endpoint,
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

/// What `retry.on` accepts, for error messages.
const RETRY_ON_ACCEPTED: &str =
    r#"accepted: "connect-failure", "reset", "timeout", "429", or a status from "500" to "599""#;

impl RetryOn {
    /// Parses one `retry.on` entry; the error says what is accepted.
    pub fn parse(s: &str) -> Result<RetryOn, String> {
        match s {
            "connect-failure" => Ok(RetryOn::ConnectFailure),
            "reset" => Ok(RetryOn::Reset),
            "timeout" => Ok(RetryOn::Timeout),
            _ => match s.parse::<u16>() {
                Ok(code) if code == 429 || (500..=599).contains(&code) => Ok(RetryOn::Status(code)),
                Ok(code) if (400..=499).contains(&code) => Err(format!(
                    "{code} is never retried: a 4xx other than 429 is the caller's fault; {RETRY_ON_ACCEPTED}"
                )),
                Ok(code) => Err(format!(
                    "{code} is not a status that may be retried; {RETRY_ON_ACCEPTED}"
                )),
                Err(_) => {
                    let hint = match s.replace('_', "-").to_ascii_lowercase().as_str() {
                        t @ ("connect-failure" | "reset" | "timeout") => format!(" (did you mean {t:?}?)"),
                        _ if s.len() == 3 && s.ends_with("xx") => {
                            " (list each status, e.g. \"502\", \"503\")".to_owned()
                        }
                        _ => String::new(),
                    };
                    Err(format!(
                        "unknown retry condition {s:?}{hint}; {RETRY_ON_ACCEPTED}"
                    ))
                }
            },
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => RetryOn::parse(&s),
            toml::Value::Integer(n) => RetryOn::parse(&n.to_string()),
            other => Err(format!("expected a string, got {other}; {RETRY_ON_ACCEPTED}")),
        }
        .map_err(D::Error::custom)
    }
}

/// `[outbound] user_header`: a header name, checked at load.
fn header_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<http::HeaderName>, D::Error> {
    let name = String::deserialize(d)?;
    http::HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|_| {
            D::Error::custom(format!(
                "{name:?} is not a header name: letters, digits and !#$%&'*+-.^_`|~ only, no spaces or colons"
            ))
        })
}

/// `[tracing] otlp_endpoint`: an `http://host:port[/path]` URL.
fn otlp_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<http::Uri>, D::Error> {
    let endpoint = String::deserialize(d)?;
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(Some(uri)),
        Ok(uri) if uri.scheme_str() == Some("https") => Err(D::Error::custom(
            "https is not supported: export to a local collector or agent over http",
        )),
        _ => Err(D::Error::custom(format!(
            "{endpoint:?} is not an http://host:port URL"
        ))),
    }
}

/// `[inbound.jwt] jwks_url`: an absolute http(s) URL with a host.
fn jwks_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<http::Uri>, D::Error> {
    let url = String::deserialize(d)?;
    crate::auth::jwks_url::parse_url(&url)
        .map(Some)
        .map_err(D::Error::custom)
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
        let (cfg, _) = Self::load_with_source(path)?;
        Ok(cfg)
    }

    /// What `kawal check FILE` does: [`load`](Self::load), then load every
    /// certificate, key, CA bundle and JWKS file as start would (a remote
    /// JWKS is not fetched), so `Ok` means kawal will start unless a port is
    /// taken or a remote JWKS is unreachable.
    pub fn check_files(path: &Path) -> Result<Config, ConfigError> {
        let (cfg, src) = Self::load_with_source(path)?;
        let problems = report::render(&path.display().to_string(), &src, files::check(&cfg));
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn load_with_source(path: &Path) -> Result<(Config, String), ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        let mut cfg = Self::from_toml_str(&src, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            cfg.resolve_paths(dir);
        }
        cfg.source = Some(path.to_path_buf());
        Ok((cfg, src))
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
            problems: report::type_errors(file, src, e),
        })?;
        let problems = report::render(file, src, check::validate(&cfg));
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { problems })
        }
    }
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
fn d_2s() -> Dur {
    Dur(Duration::from_secs(2))
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
    100
}
fn default_attempts() -> u32 {
    3
}
fn default_retry_on() -> Vec<RetryOn> {
    use RetryOn::*;
    vec![
        Status(502),
        Status(503),
        Status(504),
        Status(429),
        ConnectFailure,
        Reset,
        Timeout,
    ]
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
            otlp_endpoint: Some(http::Uri::from_static("http://collector:4318/otlp/traces")),
            ..custom
        };
        assert_eq!(custom.traces_url().unwrap(), "http://collector:4318/otlp/traces");
    }

    #[test]
    fn bad_tracing_values_are_named() {
        let src = format!("{MINIMAL}\n[tracing]\notlp_endpoint = \"https://x:4318\"\n");
        let p = problems(&src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("kawal.toml:10:17: tracing.otlp_endpoint: https"),
            "{p:?}"
        );
        let src = format!("{MINIMAL}\n[tracing]\nsample_ratio = 1.5\nbatch_size = 0\n");
        let p = problems(&src);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .any(|l| l.starts_with("kawal.toml:10:1: tracing.sample_ratio:")),
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
            p[0].starts_with("kawal.toml:10:1: limits.max_uri_len: unknown key"),
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
            p[0].contains(
                "kawal.toml:14:9: inbound.jwt.routes.0.paths: path pattern \"orders\" must start with `/`"
            ),
            "{p:?}"
        );
        let p = problems(&cfg("methods = [\"post\"]\nrequire_claims = { scope = \"w\" }"));
        assert!(
            p[0].contains(
                "kawal.toml:14:11: inbound.jwt.routes.0.methods: method \"post\" must be an uppercase"
            ),
            "{p:?}"
        );
        let p = problems(&cfg("paths = [\"/orders/*\"]\nrequire_claims = {}"));
        assert!(
            p[0].contains(
                "kawal.toml:15:1: inbound.jwt.routes.0.require_claims: must name at least one claim"
            ),
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
            j.jwks_url.map(|u| u.to_string()).as_deref(),
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
                p[0].starts_with("kawal.toml:12:12: inbound.jwt.jwks_url: "),
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
