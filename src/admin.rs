//! The admin listener (127.0.0.1 by default): `/live`, `/ready`,
//! `/metrics` (Prometheus text) and `/upstreams` (JSON).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;

use crate::body::{self, BoxBody};
use crate::log::Sink;
use crate::metrics::Metrics;
use crate::proxy::outbound::Destination;
use crate::server::OpenRequest;

/// What the admin endpoints report on.
pub struct Admin {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// True once every listener is bound; false again when draining.
    pub ready: AtomicBool,
    /// Outbound routes, for `/upstreams` (swapped by a config reload).
    pub upstreams: ArcSwap<Vec<Arc<Destination>>>,
    /// For the dropped-lines count.
    pub sink: Sink,
    /// Loaded certificates: their expiry gauge and where to read `not_after`
    /// (swapped by a config reload).
    pub certs: ArcSwap<Vec<(Gauge, CertExpiry)>>,
}

/// Reads the `not_after` of the certificate currently in force.
pub type CertExpiry = Box<dyn Fn() -> Option<SystemTime> + Send + Sync>;

impl Admin {
    /// Serves one admin request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _open_request: OpenRequest,
    ) -> Result<Response<BoxBody>, Infallible> {
        Ok(match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => {
                for (gauge, not_after) in self.certs.load().iter() {
                    if let Some(t) = not_after() {
                        gauge.set(crate::tls::secs_until(t));
                    }
                }
                let mut res = text(StatusCode::OK, self.metrics.render(self.sink.dropped()));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                res
            }
            "/upstreams" => {
                let list: Vec<_> = self
                    .upstreams
                    .load()
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "name": &*r.upstream.name,
                            "endpoints": r.upstream.endpoint_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                            "breaker": r.resilience.breaker_json(),
                        })
                    })
                    .collect();
                let mut res = text(
                    StatusCode::OK,
                    serde_json::json!({ "upstreams": list }).to_string(),
                );
                res.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                res
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        })
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<BoxBody> {
    let mut res = Response::new(body::full(body));
    *res.status_mut() = status;
    res
}
