//! Per-route request metrics: `kawal_requests_total{direction,upstream,code}`,
//! `kawal_request_duration_seconds{direction,upstream,status_class}` and the
//! route's [`Recent`] ring for the admin page.
//!
//! Handles are made once per route at startup; a status code's counter is
//! created in the family the first time that code is seen (so no series for
//! codes never answered) and then kept in the route's own table, so the
//! request path after the first of each code is atomic adds only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::recent::{Point, Recent};
use super::Refusals;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabels {
    pub(super) direction: &'static str,
    pub(super) upstream: Arc<str>,
    pub(super) code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClassLabels {
    pub(super) direction: &'static str,
    pub(super) upstream: Arc<str>,
    pub(super) status_class: &'static str,
}

pub(super) type Histograms = Family<ClassLabels, Histogram, fn() -> Histogram>;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Codes 100..=599 get a slot in the route's table; others (600-999, rare)
/// are looked up in the family each time.
const TABLE: std::ops::RangeInclusive<u16> = 100..=599;

/// Handles for one (direction, upstream), cheap to clone.
#[derive(Clone)]
pub struct RouteMetrics(Arc<Route>);

struct Route {
    direction: &'static str,
    upstream: Arc<str>,
    requests: Family<CodeLabels, Counter>,
    latency: Histograms,
    by_code: Box<[OnceLock<Counter>]>,
    by_class: [OnceLock<Histogram>; 5],
    recent: Recent,
    inbound: Arc<Refusals>,
}

/// A route's totals since start, as the JSON endpoint shows them.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTotals {
    /// All responses.
    pub total: u64,
    /// Responses by status code (codes seen at least once).
    pub by_code: std::collections::BTreeMap<u16, u64>,
}

impl RouteMetrics {
    pub(super) fn new(
        direction: &'static str,
        upstream: &str,
        requests: Family<CodeLabels, Counter>,
        latency: Histograms,
        inbound: Arc<Refusals>,
    ) -> RouteMetrics {
        RouteMetrics(Arc::new(Route {
            direction,
            upstream: upstream.into(),
            requests,
            latency,
            by_code: TABLE.map(|_| OnceLock::new()).collect(),
            by_class: Default::default(),
            recent: Recent::default(),
            inbound,
        }))
    }

    /// Counts one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let r = &*self.0;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let labels = || CodeLabels {
            direction: r.direction,
            upstream: r.upstream.clone(),
            code: status,
        };
        match r.by_code.get(usize::from(status.wrapping_sub(*TABLE.start()))) {
            Some(slot) => slot
                .get_or_init(|| r.requests.get_or_create_owned(&labels()))
                .inc(),
            None => r.requests.get_or_create(&labels()).inc(),
        };
        r.by_class[class]
            .get_or_init(|| {
                r.latency.get_or_create_owned(&ClassLabels {
                    direction: r.direction,
                    upstream: r.upstream.clone(),
                    status_class: CLASSES[class],
                })
            })
            .observe(elapsed.as_secs_f64());
        r.recent.record(class, elapsed);
    }

    /// Counts a request refused by the allow rules (inbound).
    pub fn authz_denied(&self) {
        self.0.inbound.authz_denied.inc();
    }

    /// Counts a request refused for its bearer token (inbound); `reason` as
    /// in the access log.
    pub fn jwt_failed(&self, reason: &'static str) {
        self.0.inbound.jwt_failures.inc(reason);
    }

    /// The last minutes, oldest first.
    pub fn recent(&self) -> Vec<Point> {
        self.0.recent.points()
    }

    /// Totals since start, read from the same counters `/metrics` shows
    /// (codes outside 100..=599 are left out here).
    pub fn totals(&self) -> RouteTotals {
        let by_code: std::collections::BTreeMap<u16, u64> = TABLE
            .zip(self.0.by_code.iter())
            .filter_map(|(code, c)| c.get().map(|c| (code, c.get())))
            .collect();
        RouteTotals {
            total: by_code.values().sum(),
            by_code,
        }
    }
}
