//! The last few minutes of one route, for the admin page: a ring of
//! one-minute slots, each with its requests by status class and a small
//! latency histogram, from which the page draws request rate, error rate and
//! p50/p99 over time.
//!
//! Recording is a handful of relaxed atomic adds on the route's own slots
//! (no lock, nothing shared between routes); reading walks the ring only
//! when someone asks. A slot is reset by the first request of a new minute,
//! so a request racing that reset may be lost: a dashboard figure, not an
//! account (the Prometheus counters are exact).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Slots kept: the page shows this many minutes.
pub const SLOTS: usize = 12;
/// Seconds per slot.
pub const SLOT_SECS: u64 = 60;
/// Latency buckets: upper bounds 100 µs × 2^i, the last one open.
const BUCKETS: usize = 16;
const BASE_MICROS: f64 = 100.0;

/// One minute of one route: 88 bytes (5 classes + 16 buckets + epoch, u32 each).
#[derive(Default)]
struct Slot {
    /// Minute number + 1 of the counts held; 0: never used.
    epoch: AtomicU32,
    classes: [AtomicU32; 5],
    latency: [AtomicU32; BUCKETS],
}

/// The ring of one route.
pub struct Recent {
    start: Instant,
    slots: [Slot; SLOTS],
}

/// One slot as read: oldest first in [`Recent::points`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// How long ago the slot began, in seconds.
    pub ago_seconds: u64,
    /// Seconds the slot covers so far (the current one is partial).
    pub seconds: u64,
    /// Responses in the slot.
    pub requests: u32,
    /// Of which 5xx.
    pub errors: u32,
    /// Responses by status class, 1xx..5xx.
    pub by_class: [u32; 5],
    /// Median latency (ms), when there were requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms), when there were requests.
    pub p99_ms: Option<f64>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            start: Instant::now(),
            slots: Default::default(),
        }
    }
}

impl Recent {
    /// Counts one response of status class `class` (0 = 1xx .. 4 = 5xx)
    /// that ended at `now` (the caller's clock reading, not another one).
    pub fn record(&self, class: usize, elapsed: Duration, now: Instant) {
        self.record_at(
            now.saturating_duration_since(self.start).as_secs(),
            class,
            elapsed,
        );
    }

    fn record_at(&self, now_secs: u64, class: usize, elapsed: Duration) {
        let epoch = epoch(now_secs);
        let slot = &self.slots[epoch as usize % SLOTS];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch {
            if seen > epoch {
                return; // a late writer from an older minute
            }
            if slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.classes
                    .iter()
                    .chain(&slot.latency)
                    .for_each(|c| c.store(0, Ordering::Relaxed));
            }
        }
        slot.classes[class.min(4)].fetch_add(1, Ordering::Relaxed);
        slot.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last [`SLOTS`] minutes, oldest first; minutes without requests
    /// are present with zero counts.
    pub fn points(&self) -> Vec<Point> {
        self.points_at(self.start.elapsed().as_secs())
    }

    fn points_at(&self, now_secs: u64) -> Vec<Point> {
        let now_epoch = epoch(now_secs);
        // Minutes before the process started are not shown.
        let first = now_epoch.saturating_sub(SLOTS as u32 - 1).max(1);
        (first..=now_epoch)
            .map(|e| {
                let slot = &self.slots[e as usize % SLOTS];
                let begin = u64::from(e - 1) * SLOT_SECS;
                let mut point = Point {
                    ago_seconds: now_secs - begin,
                    seconds: (now_secs - begin).clamp(1, SLOT_SECS),
                    requests: 0,
                    errors: 0,
                    by_class: [0; 5],
                    p50_ms: None,
                    p99_ms: None,
                };
                if slot.epoch.load(Ordering::Acquire) != e {
                    return point;
                }
                point.by_class = slot.classes.each_ref().map(|c| c.load(Ordering::Relaxed));
                point.requests = point.by_class.iter().sum();
                point.errors = point.by_class[4];
                let latency = slot.latency.each_ref().map(|c| c.load(Ordering::Relaxed));
                point.p50_ms = quantile(&latency, 0.5);
                point.p99_ms = quantile(&latency, 0.99);
                point
            })
            .collect()
    }
}

fn epoch(now_secs: u64) -> u32 {
    u32::try_from(now_secs / SLOT_SECS + 1).unwrap_or(u32::MAX)
}

fn bucket(elapsed: Duration) -> usize {
    // The smallest i with BASE × 2^i ≥ elapsed, in integers (no float log).
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let ratio = micros.div_ceil(BASE_MICROS as u64).max(1);
    (ratio.next_power_of_two().trailing_zeros() as usize).min(BUCKETS - 1)
}

/// Bucket `i` spans (lower, upper] in ms; the last bucket reports its lower bound.
fn bounds_ms(i: usize) -> (f64, f64) {
    let upper = BASE_MICROS * f64::from(1u32 << i) / 1000.0;
    let lower = if i == 0 { 0.0 } else { upper / 2.0 };
    (lower, upper)
}

/// The `q` quantile by linear interpolation inside its bucket.
fn quantile(counts: &[u32; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        let c = u64::from(c);
        if c > 0 && (below + c) as f64 >= rank {
            let (lower, upper) = bounds_ms(i);
            if i == BUCKETS - 1 {
                return Some(lower);
            }
            let within = (rank - below as f64) / c as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below += c;
    }
    Some(bounds_ms(BUCKETS - 1).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn buckets_double_from_100_micros() {
        for (elapsed, want) in [
            (Duration::ZERO, 0),
            (Duration::from_micros(100), 0),
            (Duration::from_micros(101), 1),
            (Duration::from_micros(200), 1),
            (Duration::from_micros(201), 2),
            (MS(1), 4),
            (MS(100), 10),
            (Duration::from_secs(3600), BUCKETS - 1),
            (Duration::MAX, BUCKETS - 1),
        ] {
            assert_eq!(bucket(elapsed), want, "{elapsed:?}");
        }
    }

    #[test]
    fn counts_by_minute_and_class() {
        let r = Recent::default();
        r.record_at(5, 1, MS(1));
        r.record_at(59, 4, MS(1));
        r.record_at(61, 1, MS(1));
        let points = r.points_at(90);
        assert_eq!(points.len(), 2);
        assert_eq!(
            (points[0].requests, points[0].errors, points[0].seconds),
            (2, 1, 60)
        );
        assert_eq!(
            (points[1].requests, points[1].errors, points[1].seconds),
            (1, 0, 30)
        );
        assert_eq!(points[1].ago_seconds, 30);
    }

    #[test]
    fn an_old_minute_is_forgotten_when_its_slot_comes_round() {
        let r = Recent::default();
        r.record_at(0, 1, MS(1));
        let later = SLOTS as u64 * SLOT_SECS;
        r.record_at(later, 1, MS(1));
        let points = r.points_at(later);
        assert_eq!(points.len(), SLOTS);
        assert_eq!(points.iter().map(|p| p.requests).sum::<u32>(), 1);
        // A writer still in the old minute does not clobber the new one.
        r.record_at(0, 1, MS(1));
        assert_eq!(r.points_at(later).last().map(|p| p.requests), Some(1));
    }

    #[test]
    fn quiet_minutes_are_zero() {
        let r = Recent::default();
        r.record_at(0, 1, MS(1));
        let points = r.points_at(3 * SLOT_SECS);
        assert_eq!(
            points.iter().map(|p| p.requests).collect::<Vec<_>>(),
            [1, 0, 0, 0]
        );
        assert_eq!(points[1].p50_ms, None);
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let r = Recent::default();
        for _ in 0..98 {
            r.record_at(1, 1, MS(1)); // (0.8, 1.6] ms
        }
        for _ in 0..2 {
            r.record_at(1, 1, MS(100)); // (51.2, 102.4] ms
        }
        let p = &r.points_at(1)[0];
        let (p50, p99) = (p.p50_ms.unwrap(), p.p99_ms.unwrap());
        assert!((0.8..=1.6).contains(&p50), "{p50}");
        assert!((51.2..=102.4).contains(&p99), "{p99}");
    }
}
