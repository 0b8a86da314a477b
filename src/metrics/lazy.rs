//! Counters whose series appear at their first use: [`LazyCounter`] for one
//! label set, [`Reasons`] for a `reason` label, readable as a map for the
//! admin JSON (a `Family` cannot list its series).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;

use super::Reason;

/// A counter whose series is created at its first increment.
#[derive(Clone)]
pub struct LazyCounter {
    cell: Arc<OnceLock<Counter>>,
    make: Arc<dyn Fn() -> Counter + Send + Sync>,
}

impl LazyCounter {
    pub(super) fn new(make: impl Fn() -> Counter + Send + Sync + 'static) -> LazyCounter {
        LazyCounter {
            cell: Arc::default(),
            make: Arc::new(make),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.cell.get_or_init(|| (self.make)()).inc_by(n);
    }

    /// The count (0 before the first increment).
    pub fn get(&self) -> u64 {
        self.cell.get().map_or(0, Counter::get)
    }
}

/// Counters by a `reason` label, each series made at its first use;
/// readable as a map for the admin JSON. A lookup is a read lock and a
/// short scan: these count refusals and retries, not every request.
#[derive(Clone)]
pub struct Reasons(Arc<ReasonsInner>);

struct ReasonsInner {
    seen: RwLock<Vec<(Reason, Counter)>>,
    make: Box<dyn Fn(Reason) -> Counter + Send + Sync>,
}

impl Reasons {
    pub(super) fn new(make: impl Fn(Reason) -> Counter + Send + Sync + 'static) -> Reasons {
        Reasons(Arc::new(ReasonsInner {
            seen: RwLock::default(),
            make: Box::new(make),
        }))
    }

    /// Counts one `reason`.
    pub fn inc(&self, reason: impl Into<Reason>) {
        let reason = reason.into();
        let find =
            |seen: &[(Reason, Counter)]| seen.iter().find(|(r, _)| *r == reason).map(|(_, c)| c.clone());
        let seen = self.0.seen.read().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = find(&seen) {
            c.inc();
            return;
        }
        drop(seen);
        let mut seen = self.0.seen.write().unwrap_or_else(|e| e.into_inner());
        let counter = match find(&seen) {
            Some(c) => c,
            None => {
                let c = (self.0.make)(reason.clone());
                seen.push((reason, c.clone()));
                c
            }
        };
        counter.inc();
    }

    /// Every reason seen, with its count.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let seen = self.0.seen.read().unwrap_or_else(|e| e.into_inner());
        seen.iter().map(|(r, c)| (r.to_string(), c.get())).collect()
    }
}
