//! The request head timeout of a connection, kept by kawal instead of hyper.
//!
//! hyper's own (`header_read_timeout`) boxes a new timer for every request,
//! registers it in tokio's wheel and removes it after the head, a cost paid
//! on every request of a proxy hop. Here each connection has
//! one timer, moved only when it fires: a connection that is busy or got new
//! requests in the meantime pushes it back then, so a connection serving
//! requests touches tokio's timer about once per timeout, not per request.
//!
//! The rule: from the moment a connection is accepted, the client has
//! `limit` to deliver a complete request head; after each response, between
//! one and two `limit`s (the timer notices the end of a response late, not
//! early); a connection that does not is closed. That is the idle keep-alive
//! timeout too. While a request is in flight (its handler running, its
//! response streaming, or its connection switched to a WebSocket tunnel)
//! there is no deadline.
//!
//! HTTP/2 (its preface seen) is held to the same rule with streams for
//! requests: a connection with no open stream for `limit` is idle, and is
//! asked to close gracefully (a GOAWAY, through [`ConnInfo::close_requested`]);
//! one that is still open `limit` later is cut off. Otherwise a few clients
//! holding silent connections could take every `max_connections` slot.
//!
//! Writes: a write to the client that makes no progress for `send_limit`
//! (a client that does not read its response) fails the connection, so a
//! slow reader cannot pin it, and the app connections behind it, for ever
//! (nginx's `send_timeout`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::inflight::StallWatch;
use super::{ConnInfo, ConnMetrics};

/// The h2 connection preface: a connection that starts with it is HTTP/2.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's IO with its head deadline; see the module docs.
pub(super) struct HeadTimer<I> {
    io: I,
    conn: Arc<ConnInfo>,
    limit: Duration,
    /// Fires at or before the current wait's deadline, never after it.
    timer: Pin<Box<Sleep>>,
    /// Whether the timer has this task's waker since it last moved.
    registered: bool,
    /// The wait for a head in progress: the `ended` count it follows and
    /// when it began. `None` while a request is in flight.
    wait: Option<(u32, Instant)>,
    /// How much of the h2 preface the first bytes matched.
    preface: Preface,
    /// Longest a write may stay pending.
    send_limit: Duration,
    /// Made the first time a write is pending (most connections never see
    /// one), with whether it runs for the current pending write.
    send_timer: Option<Pin<Box<Sleep>>>,
    send_armed: bool,
    /// Responses waiting for a client that takes nothing (HTTP/2 without
    /// flow-control window): see `inflight`.
    stall: StallWatch,
    /// Where a cut for `send_limit` is counted (once per connection).
    metrics: Option<Arc<ConnMetrics>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Preface {
    Matched(usize),
    Http1,
    Http2,
}

impl<I> HeadTimer<I> {
    pub(super) fn new(
        io: I,
        conn: Arc<ConnInfo>,
        limit: Duration,
        send_limit: Duration,
        metrics: Arc<ConnMetrics>,
    ) -> Self {
        let now = Instant::now();
        HeadTimer {
            io,
            conn,
            limit,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
            registered: false,
            wait: Some((0, now)),
            preface: Preface::Matched(0),
            send_limit,
            send_timer: None,
            send_armed: false,
            stall: StallWatch::default(),
            metrics: Some(metrics),
        }
    }

    /// The connection is cut for `send_limit`: counted and logged once.
    fn cut(&mut self, reason: &'static str, detail: &'static str) -> io::Error {
        if let Some(m) = self.metrics.take() {
            m.send_timeouts.inc(reason);
            tracing::warn!(
                event = "send_timeout",
                listener = m.listener,
                peer = %self.conn.peer,
                reason,
                "client connection cut off: {detail}"
            );
        }
        io::Error::new(io::ErrorKind::TimedOut, detail)
    }

    /// A write (or flush) that returned `polled`: fails it once it has been
    /// pending for `send_limit`.
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.send_armed = false;
            return polled;
        }
        if !self.send_armed {
            self.send_armed = true;
            let deadline = Instant::now() + self.send_limit;
            match self.send_timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.send_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.send_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(self.cut(
                "write_stalled",
                "the client read nothing of the response within the send timeout",
            ))),
            _ => Poll::Pending,
        }
    }

    /// Follows the first bytes until they tell HTTP/1 from HTTP/2.
    fn see(&mut self, bytes: &[u8]) {
        let Preface::Matched(n) = self.preface else {
            return;
        };
        let take = bytes.len().min(H2_PREFACE.len() - n);
        self.preface = if bytes[..take] != H2_PREFACE[n..n + take] {
            Preface::Http1
        } else if n + take == H2_PREFACE.len() {
            Preface::Http2
        } else {
            Preface::Matched(n + take)
        };
    }

    /// With the read pending: is the head overdue, or are the responses
    /// stalled? When the timer has fired, moves it to the wait's deadline,
    /// or (with a request in flight) one tick on, to look again then: a
    /// response that ends does not wake this task, so the timer is what
    /// notices the connection went idle, and a stall.
    fn overdue(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let since = match (self.conn.requests.idle(), self.wait) {
            (None, _) => {
                self.wait = None;
                None
            }
            (Some(ended), Some((seen, since))) if seen == ended => Some(since),
            // Idle since the last look: a new wait, timed from now.
            (Some(ended), _) => {
                let now = Instant::now();
                self.wait = Some((ended, now));
                Some(now)
            }
        };
        if self.timer.is_elapsed() {
            let now = Instant::now();
            let deadline = match since {
                // In flight: a tick every `limit` or `send_limit`, whichever
                // is shorter; a stall is cut at the first look `send_limit`
                // after the look that saw it start.
                None if self.stall.stalled(&self.conn, now, self.send_limit) => {
                    return Some(self.cut(
                        "window_stalled",
                        "its responses waited for it and it took nothing within the send timeout",
                    ));
                }
                None => now + self.limit.min(self.send_limit),
                Some(since) if now >= since + self.limit => {
                    // HTTP/2 first gets a graceful close (GOAWAY) and `limit`
                    // to finish it; HTTP/1 is simply closed, between requests.
                    if self.preface != Preface::Http2 || self.conn.close_requested() {
                        return Some(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request head within the head timeout",
                        ));
                    }
                    self.conn.request_close();
                    cx.waker().wake_by_ref();
                    now + self.limit
                }
                Some(since) => since + self.limit,
            };
            self.timer.as_mut().reset(deadline);
            self.registered = false;
        }
        if !self.registered {
            // Once per move: a tokio task's waker stays the same, so the
            // timer keeps the one it got. Unconstrained, since a poll refused
            // for coop budget would register nothing.
            self.registered = true;
            if Pin::new(&mut tokio::task::unconstrained(&mut self.timer))
                .poll(cx)
                .is_ready()
            {
                cx.waker().wake_by_ref();
            }
        }
        None
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadTimer<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(read) => {
                this.see(&buf.filled()[before..]);
                Poll::Ready(read)
            }
            Poll::Pending => match this.overdue(cx) {
                Some(err) => Poll::Ready(Err(err)),
                None => Poll::Pending,
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadTimer<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.write_progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::OpenRequest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const LIMIT: Duration = Duration::from_secs(10);

    fn conn() -> Arc<ConnInfo> {
        ConnInfo::new("127.0.0.1:1".parse().unwrap(), false, None)
    }

    fn metrics() -> Arc<ConnMetrics> {
        Arc::new(crate::metrics::Metrics::default().connections("test"))
    }

    fn timed(conn: &Arc<ConnInfo>) -> (HeadTimer<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        (
            HeadTimer::new(server, conn.clone(), LIMIT, LIMIT, metrics()),
            client,
        )
    }

    /// `start` was `LIMIT` ago, to tokio's 1 ms timer resolution.
    fn assert_limit_since(start: Instant) {
        let elapsed = start.elapsed();
        assert!(
            elapsed >= LIMIT && elapsed <= LIMIT + Duration::from_millis(2),
            "closed after {elapsed:?}"
        );
    }

    /// Reads until the timer closes the connection; returns the bytes read.
    async fn read_until_closed(io: &mut HeadTimer<DuplexStream>) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let mut buf = [0u8; 64];
            match io.read(&mut buf).await {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                    return got;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_come_within_the_limit_of_the_accept_even_byte_by_byte() {
        let conn = conn();
        let (mut io, mut client) = timed(&conn);
        let start = Instant::now();
        let trickle = tokio::spawn(async move {
            for b in b"GET / HTTP/1.1\r\nHost: a\r\n" {
                client.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(LIMIT * 3 / 10).await;
            }
            client
        });
        // Bytes at 0, 0.3, 0.6 and 0.9 × LIMIT, then the close: bytes
        // arriving do not extend the deadline, only a whole head would.
        assert_eq!(read_until_closed(&mut io).await, b"GET ");
        assert_limit_since(start);
        drop(trickle);
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_while_a_request_is_in_flight_and_a_new_one_after_it_ends() {
        let conn = conn();
        let (mut io, _client) = timed(&conn);
        let request = OpenRequest::begin(&conn);
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(10 * LIMIT, io.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "the connection was closed with a request in flight"
        );
        // The response ends now: the next head has `LIMIT` from here.
        drop(request);
        let ended = Instant::now();
        read_until_closed(&mut io).await;
        assert_limit_since(ended);
    }

    /// As under hyper: the reading task is polled only when woken, and a
    /// response that ends wakes nothing; the timer notices, within a timeout.
    #[tokio::test(start_paused = true)]
    async fn a_response_ending_unseen_is_noticed_by_the_timer() {
        let conn = conn();
        let (mut io, _client) = timed(&conn);
        let request = OpenRequest::begin(&conn);
        let reader = tokio::spawn(async move {
            read_until_closed(&mut io).await;
            Instant::now()
        });
        tokio::time::sleep(LIMIT / 2).await;
        let ended = Instant::now();
        drop(request);
        let closed = tokio::time::timeout(20 * LIMIT, reader)
            .await
            .expect("the idle connection was never closed")
            .unwrap();
        let idle = closed - ended;
        assert!(
            idle >= LIMIT && idle <= 2 * LIMIT + Duration::from_millis(2),
            "closed {idle:?} after the response"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_response_end_restarts_the_wait() {
        let conn = conn();
        let (mut io, _client) = timed(&conn);
        let mut buf = [0u8; 8];
        // Requests every 0.6 × LIMIT for 5 × LIMIT: never overdue.
        for _ in 0..8 {
            let idle = tokio::time::timeout(LIMIT * 6 / 10, io.read(&mut buf)).await;
            assert!(idle.is_err(), "closed while requests kept coming");
            drop(OpenRequest::begin(&conn));
        }
        let last = Instant::now();
        read_until_closed(&mut io).await;
        assert_limit_since(last);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_http2_is_asked_to_close_then_cut_off() {
        let conn = conn();
        let (mut io, mut client) = timed(&conn);
        client.write_all(H2_PREFACE).await.unwrap();
        let mut buf = [0u8; 24];
        io.read_exact(&mut buf).await.unwrap();
        let start = Instant::now();
        // No stream for LIMIT: a graceful close is asked for, the reads go on.
        let read = tokio::time::timeout(LIMIT * 3 / 2, io.read(&mut buf)).await;
        assert!(read.is_err(), "cut off without a graceful close first");
        assert!(conn.close_requested());
        // Still open LIMIT after that: cut off.
        read_until_closed(&mut io).await;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= 2 * LIMIT && elapsed <= 2 * LIMIT + Duration::from_millis(2),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_with_a_stream_open_is_not_idle() {
        let conn = conn();
        let (mut io, mut client) = timed(&conn);
        client.write_all(H2_PREFACE).await.unwrap();
        let mut buf = [0u8; 24];
        io.read_exact(&mut buf).await.unwrap();
        let stream = OpenRequest::begin(&conn);
        let read = tokio::time::timeout(10 * LIMIT, io.read(&mut buf)).await;
        assert!(
            read.is_err() && !conn.close_requested(),
            "closed with a stream open"
        );
        drop(stream);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_reads_fails_after_the_send_limit() {
        let conn = conn();
        let (server, _client) = tokio::io::duplex(64);
        let mut io = HeadTimer::new(server, conn.clone(), LIMIT, LIMIT / 2, metrics());
        let _request = OpenRequest::begin(&conn);
        let start = Instant::now();
        let big = vec![b'x'; 1024];
        let err = io.write_all(&big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= LIMIT / 2 && start.elapsed() <= LIMIT / 2 + Duration::from_millis(2));
    }

    #[tokio::test(start_paused = true)]
    async fn responses_the_client_takes_nothing_of_are_cut_after_the_send_limit() {
        let conn = conn();
        let (server, _client) = tokio::io::duplex(64);
        let mut io = HeadTimer::new(server, conn.clone(), LIMIT, LIMIT / 2, metrics());
        let mut request = OpenRequest::begin(&conn);
        request.responding();
        let start = Instant::now();
        read_until_closed(&mut io).await;
        // The first look comes at the head deadline (`LIMIT` from the
        // accept), then one tick per send limit: cut at the second look.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= LIMIT / 2 && elapsed <= LIMIT * 3 / 2 + Duration::from_millis(2),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn responses_waiting_for_the_upstream_or_taken_slowly_are_not_cut() {
        let conn = conn();
        let (server, _client) = tokio::io::duplex(64);
        let mut io = HeadTimer::new(server, conn.clone(), LIMIT, LIMIT / 2, metrics());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let _ = io.read(&mut buf).await;
        });
        // A body whose last poll was Pending waits for the app: no deadline.
        let mut slow_app = OpenRequest::begin(&conn);
        slow_app.responding();
        slow_app.body_polled(false);
        tokio::time::sleep(5 * LIMIT).await;
        assert!(!reader.is_finished(), "cut while the app was slow");
        // A client taking a frame every 0.4 send limits keeps its connection.
        let mut slow_client = OpenRequest::begin(&conn);
        slow_client.responding();
        for _ in 0..25 {
            tokio::time::sleep(LIMIT / 5).await;
            slow_client.body_polled(true);
        }
        assert!(!reader.is_finished(), "cut while the client took its responses");
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_preface_is_held_to_the_deadline() {
        let conn = conn();
        let (mut io, mut client) = timed(&conn);
        client.write_all(&H2_PREFACE[..16]).await.unwrap();
        let start = Instant::now();
        assert_eq!(read_until_closed(&mut io).await, H2_PREFACE[..16].to_vec());
        assert_limit_since(start);
    }
}
