//! Exponential backoff with full jitter.
//!
//! The delay before retry `n` is drawn uniformly from `[0, min(max, base * 2^n)]`
//! ("full jitter", AWS Architecture Blog, 2015). Drawing from the whole range,
//! rather than adding a little noise to a fixed delay, is what spreads the
//! retries of many clients that failed at the same moment, so they do not hit a
//! recovering upstream in synchronized waves.

use std::fmt;
use std::time::Duration;

use rand::Rng;

/// Backoff schedule of one upstream: exponential growth from `base`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

/// Why a backoff configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidBackoff {
    /// `base` was zero: every delay would be zero, which is no backoff at all.
    ZeroBase,
    /// `max` was below `base`: the cap would undercut the first delay.
    MaxBelowBase,
}

impl fmt::Display for InvalidBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidBackoff::ZeroBase => "backoff base must be greater than zero",
            InvalidBackoff::MaxBelowBase => "backoff max must be at least base",
        })
    }
}

impl std::error::Error for InvalidBackoff {}

impl Default for Backoff {
    /// 25 ms doubling up to 1 s, the defaults of `config/kawal.toml`.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// A schedule from `base` doubling up to `max`.
    ///
    /// # Errors
    ///
    /// [`InvalidBackoff`] unless `base > 0` and `max >= base`.
    pub fn try_new(base: Duration, max: Duration) -> Result<Backoff, InvalidBackoff> {
        if base.is_zero() {
            Err(InvalidBackoff::ZeroBase)
        } else if max < base {
            Err(InvalidBackoff::MaxBelowBase)
        } else {
            Ok(Backoff { base, max })
        }
    }

    /// The delay of the first retry's range.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay ever returned.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The upper bound of the range for retry number `retry` (0 for the first retry):
    /// `min(max, base * 2^retry)`, saturating instead of overflowing.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // 2^retry does not fit a u32 multiplier past 31, and past that point any
        // realistic base has long passed any realistic max, so the cap applies.
        1u32.checked_shl(retry)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |delay| delay.min(self.max))
    }

    /// A delay drawn uniformly from `[0, ceiling(retry)]`; allocation-free.
    pub fn delay<R: Rng>(&self, retry: u32, rng: &mut R) -> Duration {
        // Nanosecond resolution keeps many retries at the same step distinct; a
        // ceiling beyond u64 nanoseconds (585 years) is clamped, never a panic.
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn backoff() -> Backoff {
        Backoff::try_new(Duration::from_millis(25), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn rejects_zero_base_and_max_below_base() {
        let ms = Duration::from_millis;
        assert_eq!(Backoff::try_new(ms(0), ms(10)), Err(InvalidBackoff::ZeroBase));
        assert_eq!(
            Backoff::try_new(ms(20), ms(10)),
            Err(InvalidBackoff::MaxBelowBase)
        );
        assert!(Backoff::try_new(ms(10), ms(10)).is_ok());
    }

    #[test]
    fn ceiling_doubles_then_caps_without_overflow() {
        let b = backoff();
        assert_eq!(b.ceiling(0), Duration::from_millis(25));
        assert_eq!(b.ceiling(1), Duration::from_millis(50));
        assert_eq!(b.ceiling(5), Duration::from_millis(800));
        assert_eq!(b.ceiling(6), Duration::from_secs(1));
        assert_eq!(b.ceiling(40), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        let huge = Backoff::try_new(Duration::MAX, Duration::MAX).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(huge.delay(u32::MAX, &mut rng) <= Duration::MAX);
    }

    #[test]
    fn concurrent_retries_are_spread_within_bounds() {
        let b = backoff();
        let mut rng = StdRng::seed_from_u64(42);
        let retry = 3;
        let cap = b.ceiling(retry);
        let delays: Vec<Duration> = (0..50).map(|_| b.delay(retry, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= cap));
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() >= 40, "only {} distinct delays", distinct.len());
        let spread = distinct[distinct.len() - 1] - distinct[0];
        assert!(spread > cap / 2, "spread {spread:?} of cap {cap:?}");
    }

    #[test]
    fn cap_respected_at_retry_40() {
        let b = backoff();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            assert!(b.delay(40, &mut rng) <= Duration::from_secs(1));
        }
    }
}
