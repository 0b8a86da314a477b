//! What a connection's timer knows of the requests in flight on it: whether
//! any is open, and whether their responses are moving toward the client.
//!
//! Kept in atomics on the connection's [`ConnInfo`], updated by each request
//! ([`OpenRequest`]) and each poll of its response body, read by the timer in
//! `head` on its ticks: no clock read and no lock per request or per poll.
//!
//! A response body whose last poll returned `Pending` waits for the
//! upstream (a slow app, a stream of events): that is legitimate for as long
//! as `body_idle_timeout` allows. A body handed to hyper and not polled yet,
//! or whose last poll produced a frame and that has not been polled since,
//! waits for the client: hyper polls the body again only once the previous
//! frame is on its way. Over HTTP/2 a client that grants no flow-control
//! window (`SETTINGS_INITIAL_WINDOW_SIZE = 0`) keeps every body in that
//! state without a single write pending at the socket. So: bodies waiting
//! for the client and no poll of any body for `send_timeout` → the
//! connection is stalled ([`StallWatch`]), and is cut off with the app
//! connections its responses hold.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ConnInfo;

/// Requests begun and ended on one connection, and where their responses
/// stand: a request is in flight while the counts differ.
#[derive(Debug, Default)]
pub(super) struct RequestCounts {
    begun: AtomicU32,
    ended: AtomicU32,
    /// Response bodies waiting for the client (see the module docs).
    waiting: AtomicU32,
    /// Polls of any response body; wraps.
    polls: AtomicU32,
}

impl RequestCounts {
    /// `Some(ended)` when no request is in flight; the count tells one wait
    /// for a head from the next.
    pub(super) fn idle(&self) -> Option<u32> {
        let ended = self.ended.load(Ordering::Relaxed);
        (self.begun.load(Ordering::Relaxed) == ended).then_some(ended)
    }

    /// Response bodies waiting for the client, and the poll count.
    fn sending(&self) -> (u32, u32) {
        (
            self.waiting.load(Ordering::Relaxed),
            self.polls.load(Ordering::Relaxed),
        )
    }
}

/// One request on a connection, from its head to the end of its response:
/// while it is held, the connection waits for no head. Derefs to the
/// connection's [`ConnInfo`].
#[derive(Debug)]
pub struct OpenRequest {
    conn: Arc<ConnInfo>,
    /// Whether its response body counts as waiting for the client.
    waiting: bool,
}

impl OpenRequest {
    /// Counts a request as begun on `conn`.
    pub(super) fn begin(conn: &Arc<ConnInfo>) -> OpenRequest {
        conn.requests.begun.fetch_add(1, Ordering::Relaxed);
        OpenRequest {
            conn: conn.clone(),
            waiting: false,
        }
    }

    /// The response is handed to the connection: its body waits for the
    /// client until hyper first polls it.
    pub fn responding(&mut self) {
        self.wait(true);
    }

    /// After each poll of the response body; `frame`: the poll produced a
    /// frame, which now waits for the client to take it (`Pending` waits for
    /// the upstream; an end waits for nothing).
    pub fn body_polled(&mut self, frame: bool) {
        self.conn.requests.polls.fetch_add(1, Ordering::Relaxed);
        self.wait(frame);
    }

    fn wait(&mut self, waiting: bool) {
        if self.waiting != waiting {
            self.waiting = waiting;
            let counter = &self.conn.requests.waiting;
            if waiting {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl std::ops::Deref for OpenRequest {
    type Target = ConnInfo;

    fn deref(&self) -> &ConnInfo {
        &self.conn
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.wait(false);
        self.conn.requests.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// The timer's memory between its looks at a connection with requests in
/// flight: the poll count it saw while bodies waited for the client, and
/// since when.
#[derive(Debug, Default)]
pub(super) struct StallWatch {
    seen: Option<(u32, Instant)>,
}

impl StallWatch {
    /// One look at `conn`; true when bodies have waited for the client with
    /// no poll of any body for `limit` (the connection is stalled).
    pub(super) fn stalled(&mut self, conn: &ConnInfo, now: Instant, limit: Duration) -> bool {
        let (waiting, polls) = conn.requests.sending();
        self.look(waiting, polls, now, limit)
    }

    /// The pure rule behind [`StallWatch::stalled`].
    fn look(&mut self, waiting: u32, polls: u32, now: Instant, limit: Duration) -> bool {
        self.seen = match self.seen {
            _ if waiting == 0 => None,
            Some((seen, since)) if seen == polls => {
                if now.duration_since(since) >= limit {
                    return true;
                }
                Some((seen, since))
            }
            _ => Some((polls, now)),
        };
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    fn conn() -> Arc<ConnInfo> {
        ConnInfo::new("127.0.0.1:1".parse().unwrap(), false, None)
    }

    /// A look: (seconds from the start, bodies waiting, polls so far, stalled?).
    type Look = (u64, u32, u32, bool);

    #[test]
    fn stalled_only_after_bodies_waited_a_whole_limit_with_no_poll() {
        let cases: &[(&str, &[Look])] = &[
            (
                "no body waits",
                &[(0, 0, 5, false), (10, 0, 5, false), (30, 0, 5, false)],
            ),
            (
                "stuck from the first look",
                &[(0, 3, 7, false), (5, 3, 7, false), (10, 3, 7, true)],
            ),
            (
                "polls keep coming",
                &[
                    (0, 2, 1, false),
                    (10, 2, 2, false),
                    (20, 2, 3, false),
                    (30, 2, 4, false),
                ],
            ),
            (
                "a poll restarts the wait",
                &[
                    (0, 1, 1, false),
                    (9, 1, 2, false),
                    (18, 1, 2, false),
                    (19, 1, 2, true),
                ],
            ),
            (
                "waiting stops in between",
                &[
                    (0, 1, 1, false),
                    (6, 0, 1, false),
                    (12, 1, 1, false),
                    (21, 1, 1, false),
                    (22, 1, 1, true),
                ],
            ),
            (
                "the count wraps",
                &[(0, 1, u32::MAX, false), (10, 1, 0, false), (20, 1, 0, true)],
            ),
        ];
        let start = Instant::now();
        for (name, looks) in cases {
            let mut watch = StallWatch::default();
            for &(at, waiting, polls, stalled) in *looks {
                let now = start + Duration::from_secs(at);
                assert_eq!(watch.look(waiting, polls, now, LIMIT), stalled, "{name} at {at}s");
            }
        }
    }

    #[test]
    fn a_body_waits_for_the_client_after_a_frame_and_before_its_first_poll() {
        let conn = conn();
        let waiting = || conn.requests.sending().0;
        let mut a = OpenRequest::begin(&conn);
        let mut b = OpenRequest::begin(&conn);
        a.responding();
        b.responding();
        assert_eq!(waiting(), 2);
        a.body_polled(false); // Pending: waits for the upstream
        assert_eq!(waiting(), 1);
        a.body_polled(true); // a frame: waits for the client
        a.body_polled(true);
        assert_eq!(waiting(), 2);
        assert_eq!(conn.requests.sending().1, 3);
        drop(b); // dropped unpolled (the client reset the stream)
        assert_eq!(waiting(), 1);
        a.body_polled(false);
        drop(a);
        assert_eq!(waiting(), 0);
        assert_eq!(conn.requests.idle(), Some(2));
    }
}
