//! Per-key ordering and stale-version rejection.
//!
//! [`Queues`]: deliveries with the same key reach the app one at a time, in
//! arrival order; different keys run in parallel; each key's queue is
//! bounded (beyond it: 503 + Retry-After). A [`Turn`] is held until the
//! response body ends; dropping it hands the key to the next in line.
//! Across replicas the guard adds a store lease per key on top (`guard`).
//!
//! [`version`]: how versions compare. A value of ASCII digits only (up to 38
//! digits) is an integer and compares numerically (`10` > `9`, `007` = `7`);
//! any other value is a string and compares byte by byte (the CloudEvents
//! `sequence` extension's lexicographic order); integers sort before strings.
//! The encoding keeps that order byte by byte, so the store compares.

use std::collections::hash_map::{Entry, HashMap};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

/// `raw` encoded so that byte order is version order.
pub fn version(raw: &str) -> Bytes {
    let digits = !raw.is_empty() && raw.len() <= 38 && raw.bytes().all(|b| b.is_ascii_digit());
    let mut out = BytesMut::with_capacity(17.max(raw.len() + 1));
    match raw.parse::<u128>() {
        Ok(n) if digits => {
            out.put_u8(0);
            out.put_u128(n);
        }
        _ => {
            out.put_u8(1);
            out.put_slice(raw.as_bytes());
        }
    }
    out.freeze()
}

const SHARDS: usize = 64;

#[derive(Default)]
struct KeyQueue {
    waiting: VecDeque<oneshot::Sender<()>>,
}

/// Per-key FIFO turns, in shards so keys rarely share a lock.
pub struct Queues {
    shards: Box<[Mutex<HashMap<String, KeyQueue>>]>,
    hasher: foldhash::fast::RandomState,
    /// Deliveries waiting for their key's turn (`kawal_guard_waiting`).
    pub waiting: Gauge,
}

/// The queue for the key is full: 503.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl Default for Queues {
    fn default() -> Self {
        Queues {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            waiting: Gauge::default(),
        }
    }
}

impl Queues {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, KeyQueue>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// Waits for the key's turn (`queued` says whether it had to), unless
    /// `max_queue` deliveries already wait for it.
    pub async fn turn(self: &Arc<Self>, key: &str, max_queue: usize) -> Result<(Turn, bool), QueueFull> {
        let rx = {
            let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
            match shard.entry(key.to_owned()) {
                Entry::Vacant(v) => {
                    v.insert(KeyQueue::default());
                    None
                }
                Entry::Occupied(mut o) => {
                    let q = o.get_mut();
                    if q.waiting.len() >= max_queue {
                        return Err(QueueFull);
                    }
                    let (tx, rx) = oneshot::channel();
                    q.waiting.push_back(tx);
                    self.waiting.inc();
                    Some(rx)
                }
            }
        };
        let turn = Turn {
            queues: self.clone(),
            key: key.to_owned(),
        };
        let Some(rx) = rx else { return Ok((turn, false)) };
        // Until it is ours the turn is not held: if this wait is dropped
        // (the client left) after the turn was handed over, pass it on.
        let mut waiting = Waiting { rx, turn: Some(turn) };
        let _ = (&mut waiting.rx).await;
        self.waiting.dec();
        Ok((waiting.turn.take().expect("taken once"), true))
    }

    fn pass(&self, key: &str) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = shard.get_mut(key) else { return };
        // The next one still waiting gets it; one that left is skipped.
        while let Some(next) = q.waiting.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        shard.remove(key);
    }

    /// Keys with a delivery at the app or waiting (for tests and metrics).
    pub fn active(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The key's turn: the holder is the one delivery of its key at the app.
pub struct Turn {
    queues: Arc<Queues>,
    key: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.queues.pass(&self.key);
    }
}

struct Waiting {
    rx: oneshot::Receiver<()>,
    turn: Option<Turn>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else { return };
        turn.queues.waiting.dec();
        self.rx.close();
        if self.rx.try_recv().is_err() {
            // Never handed over: nothing to pass on.
            std::mem::forget(turn);
        }
        // Handed over but never taken: `turn` drops here and passes it on.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn versions_compare_as_documented() {
        let table = [
            ("9", "10", true),
            ("1", "2", true),
            ("2", "2", false),
            ("007", "7", false),
            ("7", "007", false),
            ("340282366920938463463374607431768211455", "1", false),
            ("99", "a", true),
            ("a", "99", false),
            ("2024-01-02", "2024-01-10", true),
            ("b", "a", false),
            ("a", "ab", true),
            ("-1", "-2", true),
        ];
        for (older, newer, is_newer) in table {
            assert_eq!(version(newer) > version(older), is_newer, "{older} -> {newer}");
        }
    }

    #[tokio::test]
    async fn one_at_a_time_per_key_in_arrival_order() {
        let q = Arc::new(Queues::default());
        let (first, queued) = q.turn("k", 10).await.unwrap();
        assert!(!queued);
        let (_other, queued) = q.turn("other", 10).await.unwrap();
        assert!(!queued, "another key runs in parallel");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (q2, order) = (q.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let (_t, queued) = q2.turn("k", 10).await.unwrap();
                assert!(queued);
                order.lock().unwrap().push(i);
            }));
            // Arrival order is the order of enqueueing.
            while q.shard("k").lock().unwrap()["k"].waiting.len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert!(order.lock().unwrap().is_empty());
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_a_leaver_passes_its_turn_on() {
        let q = Arc::new(Queues::default());
        let (first, _) = q.turn("k", 1).await.unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.turn("k", 1).await.map(|_| ()) });
        while q.shard("k").lock().unwrap()["k"].waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.turn("k", 1).await.err(), Some(QueueFull));
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        let (t, _) = tokio::time::timeout(Duration::from_secs(5), q.turn("k", 1))
            .await
            .unwrap()
            .unwrap();
        drop(t);
        assert_eq!(q.active(), 0, "no key left behind");
    }
}
