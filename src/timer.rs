//! Timers that are moved rather than made anew.
//!
//! A `tokio::time::timeout` per attempt would be inserted into the timer
//! wheel and removed again, under the driver's lock, on every request. A
//! connection keeps one timer instead ([`within`]): it is moved only when it
//! fires early, or when an attempt's deadline is sooner than the one it is
//! set to. (The server's request-head timer, `server::head`, follows the same
//! rule for the client side of a connection.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// `work`'s output, or `None` if `deadline` passes first.
///
/// `timer` may be set earlier than `deadline` (a previous attempt's): it then
/// fires early and is only then moved on, so an attempt costs no timer call
/// at all unless it outlasts the previous one. Set later, it is moved back
/// at once: it must never fire late.
pub fn within<F: Future>(timer: &mut Pin<Box<Sleep>>, deadline: Instant, work: F) -> Within<'_, F> {
    Within {
        timer,
        deadline,
        work,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]: a named type, so `work` is stored once and
    /// never moved again (an `async fn` would keep it twice).
    pub struct Within<'t, F> {
        timer: &'t mut Pin<Box<Sleep>>,
        deadline: Instant,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let (timer, deadline) = (this.timer, *this.deadline);
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timer_at(deadline: Instant) -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep_until(deadline))
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_first_wins() {
        let start = Instant::now();
        let mut timer = timer_at(start + ms(100));
        assert_eq!(within(&mut timer, start + ms(100), async { 7 }).await, Some(7));
        let slow = tokio::time::sleep(ms(50));
        assert_eq!(within(&mut timer, start + ms(100), slow).await, Some(()));
        assert_eq!(within(&mut timer, start + ms(100), pending::<()>()).await, None);
        assert_eq!(start.elapsed(), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_left_at_an_earlier_deadline_does_not_cut_a_later_attempt_short() {
        let start = Instant::now();
        let mut timer = timer_at(start + ms(100));
        assert_eq!(
            within(&mut timer, start + ms(100), tokio::time::sleep(ms(10))).await,
            Some(())
        );
        // The next attempt's deadline is later; the timer still says 100 ms.
        let work = tokio::time::sleep(ms(250));
        assert_eq!(within(&mut timer, start + ms(300), work).await, Some(()));
        assert_eq!(within(&mut timer, start + ms(300), pending::<()>()).await, None);
        assert_eq!(start.elapsed(), ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_left_at_a_later_deadline_is_moved_back() {
        let start = Instant::now();
        let mut timer = timer_at(start + ms(1_000));
        assert_eq!(within(&mut timer, start + ms(200), pending::<()>()).await, None);
        assert_eq!(start.elapsed(), ms(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fired_while_idle_runs_again() {
        let start = Instant::now();
        let mut timer = timer_at(start + ms(10));
        assert_eq!(within(&mut timer, start + ms(10), pending::<()>()).await, None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let next = Instant::now() + ms(100);
        let work = tokio::time::sleep(ms(50));
        assert_eq!(
            within(&mut timer, next, work).await,
            Some(()),
            "an old expiry must not linger"
        );
        assert_eq!(within(&mut timer, next, pending::<()>()).await, None);
        assert_eq!(Instant::now(), next);
    }
}
