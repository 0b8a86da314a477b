//! The in-memory store: one process, bounded by entries and bytes, every
//! value with its own TTL (moka, per-key atomic compute).

use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{Store, StoreError};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, v: &Entry, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Claims, responses and versions of this process.
pub struct MemoryStore {
    cache: Cache<String, Entry>,
}

impl MemoryStore {
    /// At most `max_entries` entries and about `max_bytes` bytes: each entry
    /// weighs its size, and at least `max_bytes / max_entries`, so one moka
    /// capacity enforces both bounds. Least useful entries go first (TinyLFU).
    pub fn new(max_entries: u64, max_bytes: u64) -> MemoryStore {
        let floor = (max_bytes / max_entries.max(1)).max(1);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |k: &String, v: &Entry| {
                let size = (k.len() + v.value.len() + 64) as u64;
                size.max(floor).min(u64::from(u32::MAX)) as u32
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryStore { cache }
    }

    /// Applies `f` to the live value of `key` atomically; `f` returns the
    /// new value (or `None` to keep or to delete, per `delete`) and a result.
    fn compute<T>(&self, key: &str, f: impl FnOnce(Option<&Bytes>) -> (Op<Entry>, T)) -> T {
        let mut out = None;
        self.cache.entry_by_ref(key).and_compute_with(|e| {
            let (op, t) = f(e.as_ref().map(|e| &e.value().value));
            out = Some(t);
            op
        });
        out.expect("compute ran")
    }
}

fn put(value: Bytes, ttl: Duration) -> Op<Entry> {
    Op::Put(Entry { value, ttl })
}

impl Store for MemoryStore {
    async fn claim(&self, key: &str, value: Bytes, ttl: Duration) -> Result<Option<Bytes>, StoreError> {
        Ok(self.compute(key, |cur| match cur {
            Some(v) => (Op::Nop, Some(v.clone())),
            None => (put(value, ttl), None),
        }))
    }

    async fn replace(
        &self,
        key: &str,
        owner: &[u8],
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.compute(key, |cur| match cur {
            Some(v) if v.starts_with(owner) => (put(value, ttl), true),
            _ => (Op::Nop, false),
        }))
    }

    async fn renew(&self, key: &str, owner: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.compute(key, |cur| match cur {
            Some(v) if v.starts_with(owner) => (put(v.clone(), ttl), true),
            _ => (Op::Nop, false),
        }))
    }

    async fn release(&self, key: &str, owner: &[u8]) -> Result<bool, StoreError> {
        Ok(self.compute(key, |cur| match cur {
            Some(v) if v.starts_with(owner) => (Op::Remove, true),
            _ => (Op::Nop, false),
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.cache.get(key).map(|e| e.value))
    }

    async fn advance(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.compute(key, |cur| match cur {
            Some(v) if v.as_ref() >= value.as_ref() => (Op::Nop, false),
            _ => (put(value, ttl), true),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_suite() {
        super::super::suite(&MemoryStore::new(1000, 1 << 20), "").await;
    }

    #[tokio::test]
    async fn stays_within_its_entry_bound() {
        let s = MemoryStore::new(100, 1 << 20);
        for i in 0..1000 {
            s.claim(
                &format!("k{i}"),
                Bytes::from_static(b"P"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        }
        s.cache.run_pending_tasks();
        assert!(s.cache.entry_count() <= 100, "{}", s.cache.entry_count());
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound() {
        let s = MemoryStore::new(1000, 64 * 1024);
        let big = Bytes::from(vec![7u8; 4096]);
        for i in 0..100 {
            s.claim(&format!("k{i}"), big.clone(), Duration::from_secs(60))
                .await
                .unwrap();
        }
        s.cache.run_pending_tasks();
        assert!(
            s.cache.weighted_size() <= 64 * 1024,
            "{}",
            s.cache.weighted_size()
        );
    }
}
