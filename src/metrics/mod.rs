//! Prometheus / OpenMetrics metrics, served as text on the admin port
//! (every metric is described in `docs/metrics.md`).
//!
//! Conventions: counters end in `_total`; label values are spelled as in the
//! config; a series exists once its label combination has been used (no
//! zero series for reasons, codes or classes never seen). The request path
//! never looks a metric up by label after the first use: each route gets its
//! handles once, at startup ([`Metrics::route`]), and keeps the series it has
//! made, so recording a request is a few atomic adds.

mod lazy;
mod process;
pub mod recent;
mod route;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use lazy::{LazyCounter, Reasons};
pub use route::{RouteMetrics, RouteTotals};

type Reason = Cow<'static, str>;

/// The `upstream` label of outbound requests that matched no route.
pub const UNROUTED: &str = "(unrouted)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    upstream: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    upstream: String,
    reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReasonLabels {
    listener: &'static str,
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The breaker states, as the `state` label spells them.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// Counters of the inbound side's refusals, shared by its route handles.
pub struct Refusals {
    authz_denied: LazyCounter,
    jwt_failures: Reasons,
}

impl Refusals {
    /// Requests refused by the allow rules.
    pub fn authz_denied(&self) -> u64 {
        self.authz_denied.get()
    }

    /// Requests refused for their bearer token, by reason.
    pub fn jwt_failures(&self) -> BTreeMap<String, u64> {
        self.jwt_failures.counts()
    }
}

/// The connection metrics of one listener.
pub struct ConnMetrics {
    /// The listener's name (`inbound`, `outbound`, `admin`).
    pub listener: &'static str,
    /// Client connections open now.
    pub open: Gauge,
    /// Client connections cut off by `send_timeout`, by reason.
    pub send_timeouts: Reasons,
}

/// Span export counters.
#[derive(Clone)]
pub struct SpanMetrics {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the export queue was full (collector slow or down).
    pub queue_full: LazyCounter,
    /// Spans dropped because their batch failed or timed out.
    pub export_failed: LazyCounter,
}

/// Retry and breaker metric handles of one upstream.
#[derive(Clone)]
pub struct ResilienceMetrics {
    upstream: String,
    retries: Reasons,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: LazyCounter,
    breaker: Family<BreakerLabels, Gauge>,
}

impl ResilienceMetrics {
    /// Counts one retry; `reason` is the failure that caused it, spelled as
    /// in the config's `retry.on` ("503", "connect-failure", ...). A retry
    /// is already the slow path, so the label lookup here costs nothing that matters.
    pub fn retry(&self, reason: Cow<'static, str>) {
        self.retries.inc(reason);
    }

    /// Retries so far, by reason.
    pub fn retry_counts(&self) -> BTreeMap<String, u64> {
        self.retries.counts()
    }

    /// Sets the breaker's state set: 1 for `state`, 0 for the others.
    pub fn set_breaker(&self, state: &str) {
        for s in BREAKER_STATES {
            let labels = BreakerLabels {
                upstream: self.upstream.clone(),
                state: s,
            };
            self.breaker.get_or_create(&labels).set(i64::from(s == state));
        }
    }
}

/// All of kawal's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<route::CodeLabels, Counter>,
    latency: route::Histograms,
    connections: Family<ListenerLabels, Gauge>,
    log_dropped: Counter,
    retries: Family<RetryLabels, Counter>,
    budget_exhausted: Family<UpstreamLabels, Counter>,
    breaker_state: Family<BreakerLabels, Gauge>,
    cert_expiry: Family<CertLabels, Gauge>,
    spans_exported: Counter,
    spans_dropped: Family<ReasonLabels, Counter>,
    tls_failures: Family<ListenerReasonLabels, Counter>,
    send_timeouts: Family<ListenerReasonLabels, Counter>,
    inbound: Arc<Refusals>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s: a sidecar hop is sub-millisecond, upstreams are not.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("kawal");
        let requests = Family::<route::CodeLabels, Counter>::default();
        let latency = route::Histograms::new_with_constructor(latency_histogram);
        let connections = Family::<ListenerLabels, Gauge>::default();
        let log_dropped = Counter::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let budget_exhausted = Family::<UpstreamLabels, Counter>::default();
        let breaker_state = Family::<BreakerLabels, Gauge>::default();
        let cert_expiry = Family::<CertLabels, Gauge>::default();
        let spans_exported = Counter::default();
        let spans_dropped = Family::<ReasonLabels, Counter>::default();
        let tls_failures = Family::<ListenerReasonLabels, Counter>::default();
        let send_timeouts = Family::<ListenerReasonLabels, Counter>::default();
        let authz = Family::<ListenerLabels, Counter>::default();
        let jwt = Family::<ReasonLabels, Counter>::default();
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let r = registry;
        r.register(
            "requests",
            "Responses by direction, upstream and status code",
            requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request duration, head to end of response body, by status class",
            latency.clone(),
        );
        r.register(
            "open_connections",
            "Open client connections per listener",
            connections.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines dropped because stdout fell behind",
            log_dropped.clone(),
        );
        r.register(
            "retries",
            "Retries by upstream and the failure that caused them",
            retries.clone(),
        );
        r.register(
            "retry_budget_exhausted",
            "Failures returned without retry because the retry budget was spent",
            budget_exhausted.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state per upstream: 1 for the current state, 0 for the others",
            breaker_state.clone(),
        );
        r.register(
            "tls_cert_expiry_seconds",
            "Seconds until the loaded certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        r.register(
            "trace_spans_exported",
            "Spans accepted by the OTLP collector",
            spans_exported.clone(),
        );
        r.register(
            "trace_spans_dropped",
            "Spans dropped: queue_full (collector slow or down) or export_failed",
            spans_dropped.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes refused or broken off, by listener and reason",
            tls_failures.clone(),
        );
        r.register(
            "send_timeouts",
            "Client connections cut off for taking nothing of their responses within send_timeout, by listener and reason",
            send_timeouts.clone(),
        );
        r.register(
            "authz_denied",
            "Inbound requests refused by the allow rules (403)",
            authz.clone(),
        );
        r.register(
            "jwt_failures",
            "Inbound requests refused for their bearer token (401), by reason",
            jwt.clone(),
        );
        r.register("build_info", "The running kawal's version (always 1)", build);
        let inbound = Arc::new(Refusals {
            authz_denied: LazyCounter::new(move || {
                authz.get_or_create_owned(&ListenerLabels { listener: "inbound" })
            }),
            jwt_failures: Reasons::new(move |reason| jwt.get_or_create_owned(&ReasonLabels { reason })),
        });
        Self {
            registry: root,
            requests,
            latency,
            connections,
            log_dropped,
            retries,
            budget_exhausted,
            breaker_state,
            cert_expiry,
            spans_exported,
            spans_dropped,
            tls_failures,
            send_timeouts,
            inbound,
        }
    }
}

impl Metrics {
    /// The handles for requests of `direction` to `upstream` (for requests
    /// that matched no route, [`UNROUTED`]).
    pub fn route(&self, direction: &'static str, upstream: &str) -> RouteMetrics {
        RouteMetrics::new(
            direction,
            upstream,
            self.requests.clone(),
            self.latency.clone(),
            self.inbound.clone(),
        )
    }

    /// Retry and breaker handles of one upstream; `breaker`: whether it has
    /// a breaker (its state set starts at closed).
    pub fn resilience(&self, upstream: &str, breaker: bool) -> ResilienceMetrics {
        let family = self.budget_exhausted.clone();
        let labels = UpstreamLabels {
            upstream: upstream.to_string(),
        };
        let (retries, name) = (self.retries.clone(), upstream.to_string());
        let m = ResilienceMetrics {
            upstream: upstream.to_string(),
            retries: Reasons::new(move |reason| {
                retries.get_or_create_owned(&RetryLabels {
                    upstream: name.clone(),
                    reason,
                })
            }),
            budget_exhausted: LazyCounter::new(move || family.get_or_create_owned(&labels)),
            breaker: self.breaker_state.clone(),
        };
        if breaker {
            m.set_breaker("closed");
        }
        m
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
        let dropped = |reason| {
            let family = self.spans_dropped.clone();
            LazyCounter::new(move || {
                family.get_or_create_owned(&ReasonLabels {
                    reason: Cow::Borrowed(reason),
                })
            })
        };
        SpanMetrics {
            exported: self.spans_exported.clone(),
            queue_full: dropped("queue_full"),
            export_failed: dropped("export_failed"),
        }
    }

    /// Failed TLS handshakes on `listener`, by reason.
    pub fn tls_failures(&self, listener: &'static str) -> Reasons {
        let family = self.tls_failures.clone();
        Reasons::new(move |reason| family.get_or_create_owned(&ListenerReasonLabels { listener, reason }))
    }

    /// The inbound refusal counters.
    pub fn refusals(&self) -> &Refusals {
        &self.inbound
    }

    /// The connection metrics of a listener.
    pub fn connections(&self, listener: &'static str) -> ConnMetrics {
        let family = self.send_timeouts.clone();
        ConnMetrics {
            listener,
            open: self.connections.get_or_create_owned(&ListenerLabels { listener }),
            send_timeouts: Reasons::new(move |reason| {
                family.get_or_create_owned(&ListenerReasonLabels { listener, reason })
            }),
        }
    }

    /// A registry under the `kawal_` prefix, for metrics other modules register.
    pub fn registry_mut(&mut self) -> &mut Registry {
        self.registry.sub_registry_with_prefix("kawal")
    }

    /// OpenMetrics text exposition; `log_dropped` is the log sink's count.
    pub fn render(&self, log_dropped: u64) -> String {
        // A count kept by the sink: the counter follows it (never backwards).
        self.log_dropped.inner().fetch_max(log_dropped, Ordering::Relaxed);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn records_by_code_and_only_codes_seen() {
        let m = Metrics::default();
        let r = m.route("outbound", "payment");
        r.record(200, Duration::from_millis(3), std::time::Instant::now());
        r.record(503, Duration::from_millis(3), std::time::Instant::now());
        r.record(503, Duration::from_millis(3), std::time::Instant::now());
        let text = m.render(0);
        assert!(
            text.contains(r#"kawal_requests_total{direction="outbound",upstream="payment",code="503"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"code="200"} 1"#), "{text}");
        assert!(!text.contains(r#"code="404""#), "{text}");
        assert!(!text.contains(r#"status_class="4xx""#), "{text}");
        assert_eq!(r.totals().total, 3);
        assert_eq!(r.totals().by_code.get(&503), Some(&2));
    }

    #[test]
    fn lazy_series_appear_at_first_use() {
        let m = Metrics::default();
        let spans = m.spans();
        let res = m.resilience("payment", true);
        let tls = m.tls_failures("inbound");
        let text = m.render(0);
        for absent in [
            "trace_spans_dropped_total{",
            "retry_budget_exhausted_total{",
            "tls_handshake_failures_total{",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(
            text.contains(r#"kawal_breaker_state{upstream="payment",state="closed"} 1"#),
            "{text}"
        );
        spans.queue_full.inc();
        res.budget_exhausted.inc();
        tls.inc("unknown_issuer");
        tls.inc("unknown_issuer");
        res.set_breaker("open");
        let text = m.render(7);
        for present in [
            r#"kawal_trace_spans_dropped_total{reason="queue_full"} 1"#,
            r#"kawal_retry_budget_exhausted_total{upstream="payment"} 1"#,
            r#"kawal_tls_handshake_failures_total{listener="inbound",reason="unknown_issuer"} 2"#,
            r#"kawal_breaker_state{upstream="payment",state="open"} 1"#,
            r#"kawal_breaker_state{upstream="payment",state="closed"} 0"#,
            "kawal_log_lines_dropped_total 7",
            "kawal_build_info{version=",
        ] {
            assert!(text.contains(present), "{present} not in {text}");
        }
        assert_eq!(tls.counts().get("unknown_issuer"), Some(&2));
    }
}
