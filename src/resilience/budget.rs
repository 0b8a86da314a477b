//! Retry budget per upstream, after Finagle's and tower's `TpsBudget`.
//!
//! Every original request deposits `ratio` of a retry; every retry withdraws one
//! whole retry. On top of the deposits sits a fixed reserve of
//! `min_per_second * window` retries, so a service with little traffic can still
//! retry. Deposits and withdrawals expire as a sliding window moves on, so during
//! an outage retries add at most `ratio` to the load plus the floor: they cannot
//! multiply it.
//!
//! Locking: a `std::sync::Mutex` around a ring of ten integers. The critical
//! section is a handful of integer operations with no allocation, I/O or
//! `.await`, so the uncontended cost is one atomic swap each way (a futex on
//! Linux) and contention is short. It makes check-and-debit one step, so the
//! budget is never overdrawn by racing retries, which a lock-free ring of
//! atomics (read the sum, then subtract) would allow.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::window::Window;

/// Fixed-point scale: one retry costs this many units, so a ratio such as 0.2
/// deposits exactly 200 units and accounting stays in integers.
const UNIT: i64 = 1000;

/// Largest ratio honoured: 1000 retries per request is already no limit, and the
/// cap keeps the fixed-point arithmetic far from overflow.
const MAX_RATIO: f32 = 1000.0;

/// A shared retry budget: `Send + Sync`, used through `&self` from every task.
#[derive(Debug)]
pub struct RetryBudget {
    /// Units one original request deposits: `ratio * UNIT`.
    deposit: i64,
    /// Units always available on top of the window's balance: the floor.
    reserve: i64,
    /// Net units (deposits minus withdrawals) per bucket of the window.
    window: Mutex<Window<i64>>,
}

impl Default for RetryBudget {
    /// 20% of recent requests plus 10 retries/s over 10 s, the defaults of `config/kawal.toml`.
    fn default() -> Self {
        RetryBudget::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// Retries may add `ratio` (0.2 = 20%) of the requests seen in the last
    /// `window`, plus `min_per_second` retries per second of `window`.
    /// A negative or NaN ratio counts as 0; a ratio above 1000 as 1000.
    pub fn new(ratio: f32, min_per_second: u32, window: Duration) -> Self {
        // A NaN ratio stays NaN here and the saturating `as` below turns it into 0.
        let ratio = ratio.clamp(0.0, MAX_RATIO);
        // Float-to-int `as` saturates, so a huge window cannot wrap the reserve.
        let reserve = (f64::from(min_per_second) * window.as_secs_f64() * UNIT as f64) as i64;
        RetryBudget {
            deposit: (f64::from(ratio) * UNIT as f64).round() as i64,
            reserve,
            window: Mutex::new(Window::new(window)),
        }
    }

    /// Records one original (non-retry) request; it earns `ratio` of a retry.
    pub fn record_request(&self, now: Instant) {
        let mut window = self.lock();
        let bucket = window.current(now);
        *bucket = bucket.saturating_add(self.deposit);
    }

    /// Asks for one retry: `true` takes it from the budget, `false` means the
    /// budget is exhausted and the failure should be returned as it is.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut window = self.lock();
        if self.balance(&mut window, now) < UNIT {
            return false;
        }
        let bucket = window.current(now);
        *bucket = bucket.saturating_sub(UNIT);
        true
    }

    /// Whole retries available now, for metrics and the admin endpoint.
    pub fn remaining(&self, now: Instant) -> u64 {
        let balance = self.balance(&mut self.lock(), now);
        u64::try_from(balance / UNIT).unwrap_or(0)
    }

    fn balance(&self, window: &mut Window<i64>, now: Instant) -> i64 {
        window
            .buckets(now)
            .iter()
            .fold(self.reserve, |sum, units| sum.saturating_add(*units))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window<i64>> {
        // Nothing inside the critical section can panic, but if a poisoned lock ever
        // appeared the counters would still be valid integers: keep serving.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn withdraw_all(budget: &RetryBudget, now: Instant) -> u32 {
        let mut granted = 0;
        while budget.try_withdraw(now) {
            granted += 1;
            assert!(granted <= 10_000, "budget never ran out");
        }
        granted
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RetryBudget>();
    }

    #[test]
    fn ratio_limits_retries_to_a_share_of_requests() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(0.2, 0, 10 * SECOND);
        for _ in 0..100 {
            budget.record_request(t0);
        }
        assert_eq!(budget.remaining(t0), 20);
        assert_eq!(withdraw_all(&budget, t0), 20);
        assert!(!budget.try_withdraw(t0));
        // New requests earn new retries: five requests at 20% buy exactly one.
        for _ in 0..5 {
            budget.record_request(t0 + SECOND);
        }
        assert_eq!(withdraw_all(&budget, t0 + SECOND), 1);
    }

    #[test]
    fn floor_allows_retries_without_requests() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(0.2, 10, 10 * SECOND);
        assert_eq!(withdraw_all(&budget, t0), 100);
        // The withdrawals themselves expire, so the floor comes back.
        assert_eq!(withdraw_all(&budget, t0 + 10 * SECOND), 100);
    }

    #[test]
    fn old_deposits_expire() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(0.5, 0, 10 * SECOND);
        for _ in 0..20 {
            budget.record_request(t0);
        }
        assert_eq!(budget.remaining(t0 + 9 * SECOND), 10);
        assert_eq!(budget.remaining(t0 + 10 * SECOND), 0);
        assert!(!budget.try_withdraw(t0 + 10 * SECOND));
    }

    #[test]
    fn odd_configs_do_not_panic() {
        let t0 = Instant::now();
        for ratio in [f32::NAN, -1.0, f32::INFINITY] {
            let budget = RetryBudget::new(ratio, u32::MAX, Duration::MAX);
            budget.record_request(t0);
            assert!(budget.try_withdraw(t0 + Duration::from_secs(400 * 86_400)));
        }
        let none = RetryBudget::new(0.0, 0, Duration::ZERO);
        none.record_request(t0);
        assert!(!none.try_withdraw(t0));
    }
}
