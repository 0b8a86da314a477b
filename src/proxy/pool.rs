//! Idle HTTP/1.1 connections to one endpoint, kept for reuse.
//!
//! Why not hyper-util's pooled client for HTTP/1.1: per request it boxes a
//! 3 KiB future, inserts connection info into the response's extensions,
//! rebuilds an absolute URI to key one pool shared by every endpoint, and
//! locks that pool. Here each endpoint keeps its own short idle list; a
//! connection goes back to it when its response body has been read to the
//! end ([`UpstreamBody`]), and is dropped (closed) otherwise.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

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
    sender: SendRequest<BoxBody>,
    since: Instant,
}

impl IdlePool {
    /// The most recently used open connection, if any. Last in, first out:
    /// the warmest connection is the least likely to have been closed.
    pub fn take(&self) -> Option<SendRequest<BoxBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.sender.is_closed() {
                continue;
            }
            if conn.since.elapsed() > IDLE_TIMEOUT {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            return Some(conn.sender);
        }
        None
    }

    /// Keeps a connection whose last exchange ended cleanly.
    pub fn put(&self, sender: SendRequest<BoxBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
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
    reuse: Option<(SendRequest<BoxBody>, Arc<IdlePool>)>,
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

    /// A body that hands `sender` back to `pool` when it ends; a response
    /// without a body hands it back at once.
    pub fn pooled(inner: Incoming, sender: SendRequest<BoxBody>, pool: Arc<IdlePool>) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner,
            reuse: Some((sender, pool)),
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
        if let Some((sender, pool)) = self.reuse.take() {
            pool.put(sender);
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
