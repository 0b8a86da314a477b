//! Idle HTTP/1.1 connections to one endpoint, kept for reuse.
//!
//! Why not hyper-util's pooled client for HTTP/1.1: per request it boxes a
//! 3 KiB future, inserts connection info into the response's extensions,
//! rebuilds an absolute URI to key one pool shared by every endpoint, and
//! locks that pool. Here each endpoint keeps its own short idle list; a
//! connection goes back to it when its response body has been read to the
//! end ([`UpstreamBody`]), and is dropped (closed) otherwise.
//!
//! Each connection carries its own timer for the attempts sent on it
//! ([`within`]). A `tokio::time::timeout` per attempt would be inserted into
//! the timer wheel and removed again, under the driver's lock, on every
//! request; the connection's timer is moved only when it fires early, or
//! when an attempt's deadline is sooner than the one it is set to.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::time::{Instant, Sleep};

use super::upstream::InFlight;
use crate::body::BoxBody;

/// A connection idle longer than this is closed rather than reused (servers
/// commonly close theirs after 60 s or more, so reusing older ones only
/// invites a reset).
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 256;

/// The idle connections of one endpoint.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: PooledConn,
    since: Instant,
}

/// An HTTP/1.1 connection to an endpoint, with the timer its attempts run
/// under ([`within`]).
pub struct PooledConn {
    /// Where requests go.
    pub sender: SendRequest<BoxBody>,
    /// Made with the connection, for every attempt on it.
    pub timer: Pin<Box<Sleep>>,
}

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

impl IdlePool {
    /// The most recently used open connection, if any. Last in, first out:
    /// the warmest connection is the least likely to have been closed.
    pub fn take(&self) -> Option<PooledConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.conn.sender.is_closed() {
                continue;
            }
            if entry.since.elapsed() > IDLE_TIMEOUT {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            return Some(entry.conn);
        }
        None
    }

    /// Keeps a connection whose last exchange ended cleanly.
    pub fn put(&self, conn: PooledConn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// An upstream response body; an HTTP/1.1 connection rides along and goes
/// back to its pool once the body has ended cleanly, and the endpoint counts
/// the exchange as outstanding (for load balancing) until then.
pub struct UpstreamBody {
    inner: Incoming,
    reuse: Option<(PooledConn, Arc<IdlePool>)>,
    in_flight: Option<InFlight>,
}

impl UpstreamBody {
    /// A body whose connection is not pooled here (HTTP/2).
    pub fn plain(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner,
            reuse: None,
            in_flight: None,
        }
    }

    /// A body that hands `conn` back to `pool` when it ends; a response
    /// without a body hands it back at once.
    pub fn pooled(inner: Incoming, conn: PooledConn, pool: Arc<IdlePool>) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner,
            reuse: Some((conn, pool)),
            in_flight: None,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Keeps the endpoint's outstanding count up until the body ends.
    pub fn holding(mut self, in_flight: InFlight) -> UpstreamBody {
        if !self.inner.is_end_stream() {
            self.in_flight = Some(in_flight);
        }
        self
    }

    fn release(&mut self) {
        self.in_flight = None;
        if let Some((conn, pool)) = self.reuse.take() {
            pool.put(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // A broken exchange leaves the connection in no state to reuse.
            Poll::Ready(Some(Err(_))) => {
                self.reuse = None;
                self.in_flight = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end without the final poll (a length-delimited body
        // whose last frame was taken): still reusable. Dropped midway: the
        // sender goes with it and hyper closes the connection.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

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
