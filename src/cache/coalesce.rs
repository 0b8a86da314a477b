//! Request coalescing: one upstream fetch per key at a time.
//!
//! The first request that misses a key becomes its [`Leader`] and goes
//! upstream; requests for the same key that arrive meanwhile wait (bounded,
//! like nginx's `proxy_cache_lock_timeout`) for the leader's [`Outcome`].
//! A stored response is handed to every waiter (the same `Bytes`); an
//! uncacheable one, a failure or a leader that went away tells the waiters to
//! go upstream themselves: no waiter is ever left waiting on a leader that
//! is gone, because dropping the leader publishes [`Outcome::Pass`].
//!
//! The table is sharded by key hash, each shard a short-held mutex touched
//! only on misses, never on hits.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::store::Entry;

/// How a leader's fetch ended, as waiters see it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Still fetching.
    Pending,
    /// Stored: answer from it (if its variant fits).
    Stored(Arc<Entry>),
    /// Not stored (uncacheable, failed, too large, leader gone): go upstream.
    Pass,
}

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<String, watch::Receiver<Outcome>>>;

/// The in-flight fetches of one cache.
#[derive(Default)]
pub struct Flights {
    shards: [Shard; SHARDS],
    hasher: foldhash::fast::RandomState,
}

/// What joining a key's flight made of this request.
pub enum Join {
    /// No fetch was in flight: this request fetches.
    Leader(Leader),
    /// Another request fetches: wait for it.
    Waiter(watch::Receiver<Outcome>),
}

impl Flights {
    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// Leads the fetch of `key`, or waits for the one in flight.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = shard.get(key) {
            return Join::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        shard.insert(key.to_string(), rx);
        Join::Leader(Leader {
            flights: self.clone(),
            key: key.to_string(),
            tx,
        })
    }

    /// In-flight keys (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.len())).sum()
    }

    /// Whether no fetch is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request that fetches a key for everyone waiting on it.
pub struct Leader {
    flights: Arc<Flights>,
    key: String,
    tx: watch::Sender<Outcome>,
}

impl Leader {
    /// Publishes how the fetch ended and leaves the table.
    pub fn finish(self, outcome: Outcome) {
        self.tx.send_replace(outcome);
        // Drop publishes nothing more: the value is no longer Pending.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut shard = self
            .flights
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.remove(&self.key);
        drop(shard);
        self.tx.send_if_modified(|o| {
            let pending = matches!(o, Outcome::Pending);
            if pending {
                *o = Outcome::Pass;
            }
            pending
        });
    }
}

/// Waits at most `timeout` for the leader; `None`: go upstream yourself.
pub async fn wait(mut rx: watch::Receiver<Outcome>, timeout: Duration) -> Option<Arc<Entry>> {
    let done = tokio::time::timeout(timeout, rx.wait_for(|o| !matches!(o, Outcome::Pending))).await;
    match done {
        Ok(Ok(o)) => match &*o {
            Outcome::Stored(e) => Some(e.clone()),
            _ => None,
        },
        // Timed out, or the sender is gone (it publishes Pass before that).
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_leader_waiters_get_the_outcome_or_pass() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join("k") else {
            panic!("first is the leader")
        };
        let Join::Waiter(w1) = flights.join("k") else {
            panic!("second waits")
        };
        let Join::Waiter(w2) = flights.join("k") else {
            panic!("third waits")
        };
        assert!(matches!(flights.join("other"), Join::Leader(_)));
        // A leader dropped without finishing (client gone): waiters pass.
        drop(leader);
        assert!(wait(w1, Duration::from_secs(1)).await.is_none());
        assert!(flights.is_empty());
        // The next request leads again; a waiter that waits too long passes.
        let Join::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let waiting = tokio::spawn(wait(flights_waiter(&flights), Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(waiting.await.unwrap().is_none());
        leader.finish(Outcome::Pass);
        assert!(wait(w2, Duration::from_secs(1)).await.is_none());
        assert!(flights.is_empty());
    }

    fn flights_waiter(f: &Arc<Flights>) -> watch::Receiver<Outcome> {
        match f.join("k") {
            Join::Waiter(rx) => rx,
            Join::Leader(_) => panic!("a leader is in flight"),
        }
    }
}
