//! Idle HTTP/1.1 connections to one endpoint, kept for reuse.
//!
//! Why not hyper-util's pooled client for HTTP/1.1: per request it boxes a
//! 3 KiB future, inserts connection info into the response's extensions,
//! rebuilds an absolute URI to key one pool shared by every endpoint, and
//! locks that pool. Here each endpoint keeps its own short idle list; a
//! connection goes back to it when its response body has been read to the
//! end (`upstream::UpstreamBody`), and is dropped (closed) otherwise.
//!
//! Each connection carries its own timer for the attempts sent on it
//! ([`crate::timer::within`]).

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::{Instant, Sleep};

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
/// under ([`crate::timer::within`]).
pub struct PooledConn {
    /// Where requests go.
    pub sender: SendRequest<BoxBody>,
    /// Made with the connection, for every attempt on it.
    pub timer: Pin<Box<Sleep>>,
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
