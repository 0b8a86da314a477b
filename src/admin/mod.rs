//! The admin listener (127.0.0.1 by default): the page at `/` (HTML, CSS and
//! JavaScript embedded in the binary, drawn from `/status.json` every few
//! seconds), `/status.json`, `/live`, `/ready`, `/metrics` (OpenMetrics
//! text) and `/upstreams` (JSON). Described in `docs/admin.md`.
//!
//! Nothing here runs unless asked: the page's figures are read from the
//! request path's own counters when `/status.json` is fetched.

mod status;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;

use crate::body::{self, BoxBody};
use crate::log::Sink;
use crate::metrics::{Metrics, Reasons, RouteMetrics};
use crate::proxy::outbound::Destination;
use crate::server::OpenRequest;

pub use status::redact;

/// What the admin endpoints report on.
pub struct Admin {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// True once every listener is bound; false again when draining.
    pub ready: AtomicBool,
    /// Outbound routes, for `/upstreams` and the page (swapped by a reload).
    pub upstreams: ArcSwap<Vec<Arc<Destination>>>,
    /// The inbound route's handles, when inbound is configured.
    pub inbound: Option<RouteMetrics>,
    /// Outbound requests that matched no route, when outbound is configured.
    pub unrouted: Option<RouteMetrics>,
    /// Failed inbound TLS handshakes, when inbound TLS is configured.
    pub tls_failures: Option<Reasons>,
    /// For the dropped-lines count.
    pub sink: Sink,
    /// Loaded certificates (swapped by a reload).
    pub certs: ArcSwap<Vec<LoadedCert>>,
    /// Version, start time, the loaded config.
    pub info: Info,
    /// Panels of features that report on the page.
    pub panels: Panels,
    /// Response caches, for `POST /cache/purge` (see `cache::purge`).
    pub caches: ArcSwap<Vec<Arc<crate::cache::Cache>>>,
}

/// A loaded certificate: its expiry gauge and where to read `not_after`.
pub struct LoadedCert {
    /// `inbound` or `upstream:NAME`, as the metric's `cert` label.
    pub name: String,
    /// `kawal_tls_cert_expiry_seconds{cert=NAME}`, set when `/metrics` is read.
    pub gauge: Gauge,
    /// The `not_after` of the certificate in force.
    pub not_after: CertExpiry,
}

/// Reads the `not_after` of the certificate currently in force.
pub type CertExpiry = Box<dyn Fn() -> Option<SystemTime> + Send + Sync>;

/// What the page says about the process.
pub struct Info {
    /// `[service] name`.
    pub service: String,
    /// The loaded config as text, secrets redacted ([`redact`]).
    pub config: String,
    /// When kawal started (and loaded its config).
    pub started: SystemTime,
    /// The same moment, for the uptime.
    pub started_instant: Instant,
}

/// A feature's figures for the page, read when `/status.json` is fetched.
pub type Panel = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The panels of features that report on the page: each appears in
/// `/status.json` under its key, and on the page, only when set. (The
/// cache's, `{"hits", "misses", "bytesUsed", "maxBytes", "staleServed",
/// "entries"}`, is read from the caches in force.)
#[derive(Default)]
pub struct Panels {
    /// `guard`: `{"replays", "duplicates", "conflicts", "outOfOrder"}`.
    pub guard: Option<Panel>,
}

const INDEX_HTML: &str = include_str!("page/index.html");
const STYLE_CSS: &str = include_str!("page/style.css");
const APP_JS: &str = include_str!("page/app.js");

impl Admin {
    /// Serves one admin request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _open_request: OpenRequest,
    ) -> Result<Response<BoxBody>, Infallible> {
        if req.uri().path() == "/cache/purge" {
            let (status, body) =
                crate::cache::purge::handle(&self.caches.load(), req.method(), req.uri().query());
            return Ok(reply(status, "application/json", body));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n"));
        }
        Ok(match req.uri().path() {
            "/" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
            "/admin.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS),
            "/admin.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
            "/status.json" => json(status::status(&self)),
            "/live" => reply(StatusCode::OK, "text/plain", "live\n"),
            "/ready" if self.ready.load(Ordering::Acquire) => reply(StatusCode::OK, "text/plain", "ready\n"),
            "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
            "/metrics" => {
                for c in self.certs.load().iter() {
                    if let Some(t) = (c.not_after)() {
                        c.gauge.set(crate::tls::secs_until(t));
                    }
                }
                for d in self.upstreams.load().iter() {
                    d.resilience.refresh_breaker_metric();
                }
                reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.render(self.sink.dropped()),
                )
            }
            "/upstreams" => {
                let list: Vec<_> = self
                    .upstreams
                    .load()
                    .iter()
                    .map(|r| {
                        let loads = r.upstream.endpoint_loads();
                        serde_json::json!({
                            "name": &*r.upstream.name,
                            "endpoints": loads.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
                            "breaker": r.resilience.breaker_json(),
                        })
                    })
                    .collect();
                json(serde_json::json!({ "upstreams": list }))
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        })
    }
}

fn json(value: serde_json::Value) -> Response<BoxBody> {
    reply(StatusCode::OK, "application/json", value.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<bytes::Bytes>) -> Response<BoxBody> {
    let mut res = Response::new(body::full(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page and its figures are live: never cached by a browser or proxy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only kawal's own assets and fetches, no inline script: even a value
    // that slipped through escaping could not run or call elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    res
}
