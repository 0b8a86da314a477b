//! A sliding time window of counters kept in a fixed ring of buckets.
//!
//! Shared by the retry budget and the circuit breaker. It is a plain value with
//! no locking of its own: the owner holds it inside its own short critical
//! section. Rotation costs at most [`BUCKETS`] writes and never allocates.

use std::time::{Duration, Instant};

/// Number of buckets in a window: the window slides in steps of 1/10 of its span,
/// so an event is forgotten between 90% and 100% of the span after it happened.
pub(crate) const BUCKETS: usize = 10;

/// A ring of [`BUCKETS`] counters, each covering `span / BUCKETS` of time.
#[derive(Debug)]
pub(crate) struct Window<T> {
    /// Time of the first event seen; bucket numbers count from it, because an
    /// `Instant` has no absolute value to divide.
    origin: Option<Instant>,
    /// Width of one bucket in nanoseconds, at least 1 so division is always defined.
    width_nanos: u128,
    /// Absolute number of the bucket being written to now.
    head: u64,
    slots: [T; BUCKETS],
}

impl<T: Copy + Default> Window<T> {
    /// An empty window covering `span` (a zero span still gets 1 ns buckets).
    pub(crate) fn new(span: Duration) -> Self {
        Window {
            origin: None,
            width_nanos: (span.as_nanos() / BUCKETS as u128).max(1),
            head: 0,
            slots: [T::default(); BUCKETS],
        }
    }

    /// The bucket for `now`, after expiring every bucket that slid out.
    pub(crate) fn current(&mut self, now: Instant) -> &mut T {
        self.rotate(now);
        // The modulo keeps the index below BUCKETS, so the conversion and the index hold.
        let index = (self.head % BUCKETS as u64) as usize;
        &mut self.slots[index]
    }

    /// All live buckets, oldest and newest alike, as of `now`.
    pub(crate) fn buckets(&mut self, now: Instant) -> &[T] {
        self.rotate(now);
        &self.slots
    }

    /// Forgets everything, e.g. when a breaker starts a fresh period.
    pub(crate) fn clear(&mut self) {
        self.slots = [T::default(); BUCKETS];
    }

    fn rotate(&mut self, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos() / self.width_nanos;
        let bucket = u64::try_from(elapsed).unwrap_or(u64::MAX);
        // Callers race to the lock, so a `now` read slightly earlier may arrive after a
        // later one: it is counted in the current bucket rather than moving time back.
        if bucket <= self.head {
            return;
        }
        let steps = bucket - self.head;
        if steps >= BUCKETS as u64 {
            self.clear();
        } else {
            for step in 1..=steps {
                self.slots[((self.head + step) % BUCKETS as u64) as usize] = T::default();
            }
        }
        self.head = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_expire_as_time_moves() {
        let t0 = Instant::now();
        let mut w: Window<u32> = Window::new(Duration::from_secs(10));
        *w.current(t0) += 1;
        *w.current(t0 + Duration::from_secs(5)) += 1;
        assert_eq!(w.buckets(t0 + Duration::from_secs(9)).iter().sum::<u32>(), 2);
        assert_eq!(w.buckets(t0 + Duration::from_secs(10)).iter().sum::<u32>(), 1);
        assert_eq!(w.buckets(t0 + Duration::from_secs(60)).iter().sum::<u32>(), 0);
    }

    #[test]
    fn late_timestamps_count_now_and_zero_span_is_safe() {
        let t0 = Instant::now();
        let mut w: Window<u32> = Window::new(Duration::ZERO);
        *w.current(t0 + Duration::from_secs(1)) += 1;
        *w.current(t0) += 1;
        assert_eq!(w.buckets(t0).iter().sum::<u32>(), 2);
    }
}
