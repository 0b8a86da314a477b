//! Circuit breaker per upstream: Closed → Open → HalfOpen → Closed.
//!
//! - Closed: everything passes. It opens when `consecutive_failures` failures
//!   arrive in a row, or when failures make up at least `failure_rate` of the
//!   requests in the sliding `window` and there were at least `min_requests`.
//! - Open: everything is rejected with the time left of `open_for`, so the proxy
//!   fails fast (503 + Retry-After) instead of piling onto a sick upstream.
//! - HalfOpen: once `open_for` has passed, up to `half_open_probes` requests at a
//!   time go through as probes. `half_open_probes` successes close the breaker;
//!   any probe failure re-opens it with a fresh cool-down.
//!
//! Time is passed in, so the whole machine is tested with a fake clock. Each
//! state period has a generation number carried by its permits: an outcome that
//! arrives after the state moved on belongs to the old period and is ignored,
//! so a slow request from before an outage cannot close or re-open anything.
//!
//! Locking: one `std::sync::Mutex` around a small state struct. Every request
//! takes it twice (acquire, record) for a few integer operations on a ten-bucket
//! ring, with no allocation, I/O or `.await` inside; a lock-free design would
//! need several atomics updated together (phase, generation, probe count,
//! window), which a lock gives for one uncontended atomic swap each way.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::window::Window;

/// Retry-After suggested when the breaker is half-open and all probe slots are
/// taken: probes finish within a request's time, far sooner than a cool-down.
const PROBES_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Thresholds and timings of one upstream's breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker; 0 disables this trigger.
    pub consecutive_failures: u32,
    /// Share of failures in `window` that opens the breaker; above 1.0 disables it.
    pub failure_rate: f64,
    /// Requests `window` must hold before `failure_rate` is judged, so two
    /// failures out of three requests at night do not open it.
    pub min_requests: u32,
    /// Span of the sliding window for `failure_rate`.
    pub window: Duration,
    /// Cool-down: how long the breaker stays open before probing.
    pub open_for: Duration,
    /// Probes allowed at once in half-open, and successes needed to close;
    /// 0 is taken as 1, as a breaker that never probes would never close.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    /// The defaults of the design notes: 5 in a row or 50% of at least 20 in 10 s,
    /// open for 30 s, 3 probes.
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

/// The state of a breaker as the outside sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Requests pass.
    Closed,
    /// Requests are rejected until the cool-down ends.
    Open,
    /// A few probe requests pass to test the upstream.
    HalfOpen,
}

impl State {
    /// Name for logs, metrics labels and the admin endpoint.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// How a request that held a [`Permit`] ended, from the breaker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered well (including 4xx: the caller's fault, not its).
    Success,
    /// The upstream failed (see `RetryPolicy::is_failure_for_breaker`).
    Failure,
}

/// A change of state, returned so the adapter can log it and update a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before the change.
    pub from: State,
    /// State after the change.
    pub to: State,
}

/// Leave to send one request; hand it back through [`Breaker::record`] or
/// [`Breaker::release`].
#[derive(Debug)]
#[must_use = "give the permit back with Breaker::record or Breaker::release"]
pub struct Permit {
    /// The state period the permit was issued in.
    generation: u64,
    /// Whether it holds one of the half-open probe slots.
    probe: bool,
    /// The Open → HalfOpen move that issuing this permit made, if any.
    transition: Option<Transition>,
}

impl Permit {
    /// The transition that acquiring this permit caused (Open → HalfOpen when the
    /// cool-down had passed), for the adapter to log like any other.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }
}

/// A request refused by the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Open (cooling down) or HalfOpen (all probe slots busy).
    pub state: State,
    /// Suggested wait before trying again, for the `Retry-After` header.
    pub retry_after: Duration,
}

/// Counters of one breaker for the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Current state.
    pub state: State,
    /// Failures in a row (kept while open, to show what tripped it).
    pub consecutive_failures: u32,
    /// Requests recorded in the sliding window.
    pub window_requests: u32,
    /// Failures recorded in the sliding window.
    pub window_failures: u32,
    /// Times the breaker has opened since it was created.
    pub opened_count: u64,
    /// Probes in flight while half-open.
    pub probes_in_flight: u32,
    /// Cool-down left while open.
    pub retry_after: Option<Duration>,
}

/// The breaker of one upstream: `Send + Sync`, used through `&self` from every task.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every phase change; permits of older generations are ignored.
    generation: u64,
    consecutive: u32,
    window: Window<Counts>,
    opened_count: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    HalfOpen {
        since: Instant,
        in_flight: u32,
        successes: u32,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u32,
    failures: u32,
}

impl Breaker {
    /// A closed breaker with `policy`.
    pub fn new(mut policy: BreakerPolicy) -> Self {
        policy.half_open_probes = policy.half_open_probes.max(1);
        let window = Window::new(policy.window);
        Breaker {
            policy,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                generation: 0,
                consecutive: 0,
                window,
                opened_count: 0,
            }),
        }
    }

    /// The policy in force (with `half_open_probes` at least 1).
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Asks to send one request: always granted when closed, refused while open,
    /// granted to at most `half_open_probes` requests at once when half-open.
    ///
    /// # Errors
    ///
    /// [`Rejected`] while open (with the cool-down left) or while all half-open
    /// probe slots are taken.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Rejected> {
        let mut inner = self.lock();
        let open_for = self.policy.open_for;
        let mut transition = None;
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { since } => {
                let elapsed = now.saturating_duration_since(since);
                if elapsed < open_for {
                    return Err(Rejected {
                        state: State::Open,
                        retry_after: open_for.saturating_sub(elapsed),
                    });
                }
                inner.enter(Phase::probing(now));
                transition = Some(Transition {
                    from: State::Open,
                    to: State::HalfOpen,
                });
                true
            }
            Phase::HalfOpen {
                since,
                in_flight,
                successes,
            } if in_flight < self.policy.half_open_probes => {
                inner.phase = Phase::HalfOpen {
                    since,
                    in_flight: in_flight + 1,
                    successes,
                };
                true
            }
            Phase::HalfOpen { since, .. } => {
                // Probe slots only come back through record/release. If no answer came
                // for a whole cool-down, the permits were lost (a dropped future): start
                // a fresh probe period rather than stay wedged half-open forever.
                if now.saturating_duration_since(since) < open_for {
                    return Err(Rejected {
                        state: State::HalfOpen,
                        retry_after: PROBES_BUSY_RETRY_AFTER,
                    });
                }
                inner.enter(Phase::probing(now));
                true
            }
        };
        Ok(Permit {
            generation: inner.generation,
            probe,
            transition,
        })
    }

    /// Records how the request behind `permit` ended; returns the transition it
    /// caused, if any. Permits from an earlier state period change nothing.
    pub fn record(&self, permit: Permit, outcome: Outcome, now: Instant) -> Option<Transition> {
        let mut guard = self.lock();
        // Reborrow once so the fields below can be borrowed separately.
        let inner = &mut *guard;
        if permit.generation != inner.generation {
            return None;
        }
        match (inner.phase, outcome) {
            (Phase::Closed, Outcome::Success) => {
                let counts = inner.window.current(now);
                counts.requests = counts.requests.saturating_add(1);
                inner.consecutive = 0;
                None
            }
            (Phase::Closed, Outcome::Failure) => {
                let counts = inner.window.current(now);
                counts.requests = counts.requests.saturating_add(1);
                counts.failures = counts.failures.saturating_add(1);
                inner.consecutive = inner.consecutive.saturating_add(1);
                self.trips(inner, now).then(|| inner.open(now, State::Closed))
            }
            (Phase::HalfOpen { .. }, Outcome::Failure) => Some(inner.open(now, State::HalfOpen)),
            (
                Phase::HalfOpen {
                    since,
                    in_flight,
                    successes,
                },
                Outcome::Success,
            ) => {
                if successes + 1 < self.policy.half_open_probes {
                    inner.phase = Phase::HalfOpen {
                        since,
                        in_flight: in_flight.saturating_sub(1),
                        successes: successes + 1,
                    };
                    return None;
                }
                inner.enter(Phase::Closed);
                inner.consecutive = 0;
                inner.window.clear();
                Some(Transition {
                    from: State::HalfOpen,
                    to: State::Closed,
                })
            }
            // Permits are never issued while open, so a current one cannot land here.
            (Phase::Open { .. }, _) => None,
        }
    }

    /// Gives a permit back without an outcome (request cancelled, or ended for a
    /// reason that says nothing about the upstream), freeing its probe slot.
    pub fn release(&self, permit: Permit) {
        let mut inner = self.lock();
        if permit.generation != inner.generation || !permit.probe {
            return;
        }
        if let Phase::HalfOpen { in_flight, .. } = &mut inner.phase {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// The state as of `now`; an open breaker whose cool-down has passed reads
    /// as half-open (the move itself happens, and is reported, on the next acquire).
    pub fn state(&self, now: Instant) -> State {
        self.lock().state(now, self.policy.open_for)
    }

    /// Counters for the admin endpoint, as of `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut inner = self.lock();
        let (window_requests, window_failures) = inner.window_totals(now);
        let (probes_in_flight, retry_after) = match inner.phase {
            Phase::HalfOpen { in_flight, .. } => (in_flight, None),
            Phase::Open { since } => (
                0,
                Some(
                    self.policy
                        .open_for
                        .saturating_sub(now.saturating_duration_since(since)),
                ),
            ),
            Phase::Closed => (0, None),
        };
        Snapshot {
            state: inner.state(now, self.policy.open_for),
            consecutive_failures: inner.consecutive,
            window_requests,
            window_failures,
            opened_count: inner.opened_count,
            probes_in_flight,
            retry_after,
        }
    }

    /// Whether the counts just recorded in `inner` (closed) call for opening.
    fn trips(&self, inner: &mut Inner, now: Instant) -> bool {
        let policy = &self.policy;
        if policy.consecutive_failures > 0 && inner.consecutive >= policy.consecutive_failures {
            return true;
        }
        let (requests, failures) = inner.window_totals(now);
        // A NaN rate compares false, so a broken config disables the trigger, never panics.
        requests > 0
            && requests >= policy.min_requests
            && f64::from(failures) / f64::from(requests) >= policy.failure_rate
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in a critical section can panic; if poison ever appeared, the
        // state is still a valid value, and a proxy must keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Phase {
    /// A fresh half-open period whose first probe is the permit being issued.
    fn probing(now: Instant) -> Phase {
        Phase::HalfOpen {
            since: now,
            in_flight: 1,
            successes: 0,
        }
    }
}

impl Inner {
    /// Moves to `phase`, starting a new generation so older permits go stale.
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
    }

    fn open(&mut self, now: Instant, from: State) -> Transition {
        self.enter(Phase::Open { since: now });
        self.opened_count = self.opened_count.saturating_add(1);
        Transition {
            from,
            to: State::Open,
        }
    }

    fn state(&self, now: Instant, open_for: Duration) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::Open { since } if now.saturating_duration_since(since) >= open_for => State::HalfOpen,
            Phase::Open { .. } => State::Open,
        }
    }

    fn window_totals(&mut self, now: Instant) -> (u32, u32) {
        self.window.buckets(now).iter().fold((0, 0), |(r, f), c| {
            (r.saturating_add(c.requests), f.saturating_add(c.failures))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy::default())
    }

    /// Acquires and records one request, returning the transition it caused.
    fn call(b: &Breaker, outcome: Outcome, now: Instant) -> Option<Transition> {
        let permit = b.try_acquire(now).expect("breaker should admit");
        b.record(permit, outcome, now)
    }

    fn trip(b: &Breaker, now: Instant) {
        for _ in 0..b.policy().consecutive_failures {
            let _ = call(b, Outcome::Failure, now);
        }
        assert_eq!(b.state(now), State::Open);
    }

    const CLOSED_TO_OPEN: Transition = Transition {
        from: State::Closed,
        to: State::Open,
    };

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Breaker>();
    }

    #[test]
    fn state_names_match_the_metric_labels() {
        let names = [State::Closed, State::Open, State::HalfOpen].map(State::as_str);
        assert_eq!(names, crate::metrics::BREAKER_STATES);
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let t0 = Instant::now();
        let b = breaker();
        for _ in 0..4 {
            assert_eq!(call(&b, Outcome::Failure, t0), None);
        }
        assert_eq!(b.state(t0), State::Closed);
        assert_eq!(call(&b, Outcome::Failure, t0), Some(CLOSED_TO_OPEN));
        assert_eq!(b.state(t0), State::Open);
        assert_eq!(b.snapshot(t0).opened_count, 1);
    }

    #[test]
    fn success_resets_consecutive_count() {
        let t0 = Instant::now();
        let b = breaker();
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure, t0);
        }
        let _ = call(&b, Outcome::Success, t0);
        assert_eq!(b.snapshot(t0).consecutive_failures, 0);
        for _ in 0..4 {
            assert_eq!(call(&b, Outcome::Failure, t0), None);
        }
        assert_eq!(b.state(t0), State::Closed);
    }

    #[test]
    fn failure_rate_needs_minimum_volume() {
        let t0 = Instant::now();
        let b = breaker();
        // Alternating outcomes never make 5 in a row, but 10 of 19 is above 50%.
        for i in 0..19 {
            let outcome = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(call(&b, outcome, t0), None, "opened at request {i}");
        }
        let snap = b.snapshot(t0);
        assert_eq!((snap.window_requests, snap.window_failures), (19, 10));
        assert_eq!(call(&b, Outcome::Failure, t0), Some(CLOSED_TO_OPEN));
    }

    #[test]
    fn window_sliding_drops_old_failures() {
        let t0 = Instant::now();
        let b = Breaker::new(BreakerPolicy {
            consecutive_failures: 0,
            ..BreakerPolicy::default()
        });
        for _ in 0..10 {
            let _ = call(&b, Outcome::Failure, t0);
        }
        // Counting the old failures would make 15 of 30; without them 5 of 20.
        let later = t0 + 11 * SECOND;
        for _ in 0..15 {
            let _ = call(&b, Outcome::Success, later);
        }
        for _ in 0..5 {
            assert_eq!(call(&b, Outcome::Failure, later), None);
        }
        let snap = b.snapshot(later);
        assert_eq!(
            (snap.state, snap.window_requests, snap.window_failures),
            (State::Closed, 20, 5)
        );
    }

    #[test]
    fn open_rejects_with_time_left() {
        let t0 = Instant::now();
        let b = breaker();
        trip(&b, t0);
        let rejected = b.try_acquire(t0 + 10 * SECOND).unwrap_err();
        assert_eq!(
            rejected,
            Rejected {
                state: State::Open,
                retry_after: 20 * SECOND
            }
        );
        assert_eq!(b.snapshot(t0 + 29 * SECOND).retry_after, Some(SECOND));
        assert_eq!(b.state(t0 + 30 * SECOND), State::HalfOpen);
    }

    #[test]
    fn half_open_admits_exactly_the_probes() {
        let t0 = Instant::now();
        let b = breaker();
        trip(&b, t0);
        let t1 = t0 + 31 * SECOND;
        let first = b.try_acquire(t1).unwrap();
        assert_eq!(
            first.transition(),
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen
            })
        );
        let second = b.try_acquire(t1).unwrap();
        let third = b.try_acquire(t1).unwrap();
        assert_eq!(second.transition(), None);
        let busy = b.try_acquire(t1).unwrap_err();
        assert_eq!(busy.state, State::HalfOpen);
        assert_eq!(b.snapshot(t1).probes_in_flight, 3);
        // A released probe frees its slot.
        b.release(third);
        let fourth = b.try_acquire(t1).unwrap();
        for permit in [first, second, fourth] {
            b.release(permit);
        }
    }

    #[test]
    fn probe_failure_reopens_with_fresh_cool_down() {
        let t0 = Instant::now();
        let b = breaker();
        trip(&b, t0);
        let t1 = t0 + 31 * SECOND;
        let probe = b.try_acquire(t1).unwrap();
        let other = b.try_acquire(t1).unwrap();
        let reopened = b.record(probe, Outcome::Failure, t1);
        assert_eq!(
            reopened,
            Some(Transition {
                from: State::HalfOpen,
                to: State::Open
            })
        );
        assert_eq!(b.try_acquire(t1 + SECOND).unwrap_err().retry_after, 29 * SECOND);
        // The other probe's late success belongs to the old period.
        assert_eq!(b.record(other, Outcome::Success, t1 + SECOND), None);
        assert_eq!(b.snapshot(t1).opened_count, 2);
    }

    #[test]
    fn probe_successes_close() {
        let t0 = Instant::now();
        let b = breaker();
        trip(&b, t0);
        let t1 = t0 + 31 * SECOND;
        let probes = [(); 3].map(|_| b.try_acquire(t1).unwrap());
        let transitions = probes.map(|p| b.record(p, Outcome::Success, t1));
        let closed = Transition {
            from: State::HalfOpen,
            to: State::Closed,
        };
        assert_eq!(transitions, [None, None, Some(closed)]);
        let snap = b.snapshot(t1);
        assert_eq!(
            (snap.state, snap.window_failures, snap.consecutive_failures),
            (State::Closed, 0, 0)
        );
    }

    #[test]
    fn stale_generation_permit_is_ignored() {
        let t0 = Instant::now();
        let b = breaker();
        let slow = b.try_acquire(t0).unwrap();
        trip(&b, t0);
        let t1 = t0 + 31 * SECOND;
        let probe = b.try_acquire(t1).unwrap();
        // A success from before the outage must not count as a probe success.
        assert_eq!(b.record(slow, Outcome::Success, t1), None);
        let snap = b.snapshot(t1);
        assert_eq!((snap.state, snap.probes_in_flight), (State::HalfOpen, 1));
        b.release(probe);
    }

    #[test]
    fn lost_probes_do_not_wedge_half_open() {
        let t0 = Instant::now();
        let b = breaker();
        trip(&b, t0);
        let t1 = t0 + 31 * SECOND;
        let lost: Vec<Permit> = (0..3).map(|_| b.try_acquire(t1).unwrap()).collect();
        assert!(b.try_acquire(t1 + SECOND).is_err());
        // After a whole cool-down without answers a fresh probe period starts.
        let fresh = b.try_acquire(t1 + 30 * SECOND).unwrap();
        for permit in lost {
            assert_eq!(b.record(permit, Outcome::Failure, t1 + 30 * SECOND), None);
        }
        assert_eq!(b.snapshot(t1 + 30 * SECOND).probes_in_flight, 1);
        b.release(fresh);
    }

    #[test]
    fn odd_policies_do_not_panic() {
        let t0 = Instant::now();
        let b = Breaker::new(BreakerPolicy {
            consecutive_failures: 0,
            failure_rate: f64::NAN,
            min_requests: 0,
            window: Duration::ZERO,
            open_for: Duration::ZERO,
            half_open_probes: 0,
        });
        for _ in 0..100 {
            assert_eq!(call(&b, Outcome::Failure, t0), None);
        }
        let b = Breaker::new(BreakerPolicy {
            failure_rate: 0.0,
            min_requests: 0,
            open_for: Duration::ZERO,
            half_open_probes: 0,
            ..BreakerPolicy::default()
        });
        assert_eq!(call(&b, Outcome::Failure, t0), Some(CLOSED_TO_OPEN));
        // Zero cool-down: the next acquire probes at once; one success closes.
        let probe = b.try_acquire(t0).unwrap();
        assert!(b.record(probe, Outcome::Success, t0).is_some());
        assert_eq!(b.state(t0), State::Closed);
    }
}
