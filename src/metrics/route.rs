//! Per-route request metrics: `kawal_requests_total{direction,upstream,code}`,
//! `kawal_request_duration_seconds{direction,upstream,status_class}` and the
//! route's [`Recent`] ring for the admin page.
//!
//! Handles are made once per route at startup; a status code's counter is
//! created in the family the first time that code is seen (so no series for
//! codes never answered) and then kept in the route's own small table (16
//! codes, ~400 bytes), so the request path after the first of each code is a
//! short scan and atomic adds. A route answering more distinct codes than
//! that looks the rest up in the family each time (correct, slower).

use std::sync::atomic::{AtomicU16, Ordering};
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
/// Distinct status codes a route keeps handles for.
const CODE_SLOTS: usize = 16;

/// A code (0: free) and its counter.
#[derive(Default)]
struct CodeSlot {
    code: AtomicU16,
    counter: OnceLock<Counter>,
}

/// Handles for one (direction, upstream), cheap to clone.
#[derive(Clone)]
pub struct RouteMetrics(Arc<Route>);

struct Route {
    direction: &'static str,
    upstream: Arc<str>,
    requests: Family<CodeLabels, Counter>,
    latency: Histograms,
    by_code: [CodeSlot; CODE_SLOTS],
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
            by_code: Default::default(),
            by_class: Default::default(),
            recent: Recent::default(),
            inbound,
        }))
    }

    /// Counts one finished request, which took `elapsed` and ended `now`.
    pub fn record(&self, status: u16, elapsed: Duration, now: std::time::Instant) {
        let r = &*self.0;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let labels = || CodeLabels {
            direction: r.direction,
            upstream: r.upstream.clone(),
            code: status,
        };
        match r.slot(status) {
            Some(slot) => slot
                .counter
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
        r.recent.record(class, elapsed, now);
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
    /// (of the first 16 distinct codes seen).
    pub fn totals(&self) -> RouteTotals {
        let by_code: std::collections::BTreeMap<u16, u64> = self
            .0
            .by_code
            .iter()
            .filter_map(|s| Some((s.code.load(Ordering::Acquire), s.counter.get()?.get())))
            .collect();
        RouteTotals {
            total: by_code.values().sum(),
            by_code,
        }
    }
}

impl Route {
    /// The table slot of `status`, claiming a free one for a new code. Every
    /// thread scans in the same order and claims with a CAS, so a code never
    /// gets two slots.
    fn slot(&self, status: u16) -> Option<&CodeSlot> {
        self.by_code.iter().find(|slot| {
            let seen = match slot.code.load(Ordering::Acquire) {
                0 => match slot
                    .code
                    .compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => status,
                    Err(taken) => taken,
                },
                seen => seen,
            };
            seen == status
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_code_gets_one_slot_and_overflow_still_counts() {
        let m = super::super::Metrics::default();
        let r = m.route("outbound", "svc");
        for code in (200..220).chain(200..220) {
            r.record(code, Duration::from_millis(1), Instant::now());
        }
        let totals = r.totals();
        assert_eq!(totals.by_code.len(), CODE_SLOTS);
        assert!(totals.by_code.values().all(|&n| n == 2), "{totals:?}");
        let text = m.render(0);
        // The codes past the table are counted in the family all the same.
        assert!(text.contains(r#"code="219"} 2"#), "{text}");
    }

    #[test]
    fn racing_threads_share_one_slot_per_code() {
        let m = super::super::Metrics::default();
        let r = m.route("outbound", "svc");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..2_000u16 {
                        r.record(200 + i % 8, Duration::ZERO, Instant::now());
                    }
                });
            }
        });
        let totals = r.totals();
        assert_eq!(totals.by_code.len(), 8, "{totals:?}");
        assert!(totals.by_code.values().all(|&n| n == 1_000), "{totals:?}");
    }
}
