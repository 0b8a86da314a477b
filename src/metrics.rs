//! Prometheus metrics, served as text on the admin port.
//!
//! The request path never looks a metric up by label: each route gets its
//! handles once, at startup ([`Metrics::route`]), so recording a request is a
//! few atomic adds.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    upstream: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    upstream: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// All of kawal's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    connections: Family<ListenerLabels, Gauge>,
    log_dropped: Gauge<u64, AtomicU64>,
    retries: Family<RetryLabels, Counter>,
    budget_exhausted: Family<UpstreamLabels, Counter>,
    breaker_state: Family<UpstreamLabels, Gauge>,
    cert_expiry: Family<CertLabels, Gauge>,
    spans_exported: Counter,
    spans_dropped: Family<DropLabels, Counter>,
}

/// Span export counters.
#[derive(Clone, Default)]
pub struct SpanMetrics {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the export queue was full (collector slow or down).
    pub queue_full: Counter,
    /// Spans dropped because their batch failed or timed out.
    pub export_failed: Counter,
}

/// Retry and breaker metric handles of one upstream.
#[derive(Clone)]
pub struct ResilienceMetrics {
    upstream: String,
    retries: Family<RetryLabels, Counter>,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: Counter,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Gauge,
}

impl ResilienceMetrics {
    /// Counts one retry; `reason` is the failure that caused it. A retry is
    /// already the slow path, so the label lookup here costs nothing that matters.
    pub fn retry(&self, reason: &'static str) {
        self.retries
            .get_or_create(&RetryLabels {
                upstream: self.upstream.clone(),
                reason,
            })
            .inc();
    }
}

/// Pre-made handles for one (direction, upstream): index by status class.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: Arc<[(Counter, Histogram); 5]>,
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let (count, latency) = &self.by_class[class];
        count.inc();
        latency.observe(elapsed.as_secs_f64());
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s: a sidecar hop is sub-millisecond, upstreams are not.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kawal");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let connections = Family::<ListenerLabels, Gauge>::default();
        let log_dropped = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "requests",
            "Requests by direction, upstream and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request duration, head to end of response body",
            latency.clone(),
        );
        registry.register(
            "open_connections",
            "Open client connections per listener",
            connections.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stdout fell behind",
            log_dropped.clone(),
        );
        let retries = Family::<RetryLabels, Counter>::default();
        let budget_exhausted = Family::<UpstreamLabels, Counter>::default();
        let breaker_state = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "retries",
            "Retries by upstream and the failure that caused them",
            retries.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Failures returned without retry because the retry budget was spent",
            budget_exhausted.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let cert_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "tls_cert_expiry_seconds",
            "Seconds until the loaded certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        let spans_exported = Counter::default();
        let spans_dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "trace_spans_exported",
            "Spans accepted by the OTLP collector",
            spans_exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans dropped: queue_full (collector slow or down) or export_failed",
            spans_dropped.clone(),
        );
        Self {
            spans_exported,
            spans_dropped,
            cert_expiry,
            retries,
            budget_exhausted,
            breaker_state,
            registry,
            requests,
            latency,
            connections,
            log_dropped,
        }
    }
}

impl Metrics {
    /// The handles for requests of `direction` to `upstream`.
    pub fn route(&self, direction: &'static str, upstream: &str) -> RouteMetrics {
        let by_class = CLASSES.map(|status_class| {
            let labels = RequestLabels {
                direction,
                upstream: upstream.to_string(),
                status_class,
            };
            (
                self.requests.get_or_create_owned(&labels),
                self.latency.get_or_create_owned(&labels),
            )
        });
        RouteMetrics {
            by_class: Arc::new(by_class),
        }
    }

    /// Retry and breaker handles of one upstream.
    pub fn resilience(&self, upstream: &str) -> ResilienceMetrics {
        let labels = UpstreamLabels {
            upstream: upstream.to_string(),
        };
        ResilienceMetrics {
            upstream: upstream.to_string(),
            retries: self.retries.clone(),
            budget_exhausted: self.budget_exhausted.get_or_create_owned(&labels),
            breaker_state: self.breaker_state.get_or_create_owned(&labels),
        }
    }

    /// The expiry gauge of one certificate (`inbound`, `upstream:NAME`),
    /// set when `/metrics` is read.
    pub fn cert_expiry(&self, cert: &str) -> Gauge {
        self.cert_expiry.get_or_create_owned(&CertLabels {
            cert: cert.to_string(),
        })
    }

    /// The span export counters.
    pub fn spans(&self) -> SpanMetrics {
        let dropped = |reason| self.spans_dropped.get_or_create_owned(&DropLabels { reason });
        SpanMetrics {
            exported: self.spans_exported.clone(),
            queue_full: dropped("queue_full"),
            export_failed: dropped("export_failed"),
        }
    }

    /// The open-connections gauge of a listener.
    pub fn connections(&self, listener: &'static str) -> Gauge {
        self.connections.get_or_create_owned(&ListenerLabels { listener })
    }

    /// The registry, for metrics other modules register.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Prometheus text exposition.
    pub fn render(&self, log_dropped: u64) -> String {
        self.log_dropped.set(log_dropped);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_status_class() {
        let m = Metrics::default();
        let r = m.route("outbound", "payment");
        r.record(200, Duration::from_millis(3));
        r.record(503, Duration::from_millis(3));
        r.record(503, Duration::from_millis(3));
        let text = m.render(0);
        assert!(
            text.contains(
                r#"kawal_requests_total{direction="outbound",upstream="payment",status_class="5xx"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"status_class="2xx"} 1"#), "{text}");
    }
}
