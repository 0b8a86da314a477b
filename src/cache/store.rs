//! The store: a moka cache bounded by bytes (a weigher counting each entry's
//! body, headers, key and fixed size), TinyLFU admission and eviction, and
//! per-entry expiry when an entry is no longer worth keeping (its fresh life
//! plus its stale windows). Bytes are `Bytes`: a hit shares them, never
//! copies.
//!
//! A response with `Vary` is stored in two slots: a marker under the primary
//! key naming the `Vary` fields (with a generation), and the response under
//! the variant key (`key::variant`). Invalidating the primary key removes
//! the marker; a new marker has a new generation, so the old variants can
//! never be found again and age out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, StatusCode};
use moka::notification::RemovalCause;
use moka::sync::Cache;
use tokio::time::Instant;

use super::key;
use super::metrics::CacheMetrics;
use super::policy::Freshness;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Status code.
    pub status: StatusCode,
    /// Headers, hop-by-hop and `Age` removed.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Lifetime, initial age, stale windows.
    pub freshness: Freshness,
    /// When it was stored (age = initial age + time since).
    pub stored_at: Instant,
    /// How long its fetch took: XFetch's delta.
    pub fetch_time: Duration,
    /// Its variant key when the response had `Vary`.
    pub variant: Option<Box<str>>,
    /// Set while a background refresh of it runs: one at a time.
    pub refreshing: AtomicBool,
}

impl Entry {
    /// Current age (§4.2.3).
    pub fn age(&self) -> Duration {
        self.freshness.initial_age + self.stored_at.elapsed()
    }

    /// Whether it has a validator to revalidate with.
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED)
    }

    /// Bytes it holds, measured: body, header names and values, and the
    /// struct itself.
    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        std::mem::size_of::<Entry>()
            + self.body.len()
            + headers
            + self.variant.as_ref().map_or(0, |v| v.len())
    }
}

/// The `Vary` marker under a primary key.
#[derive(Debug)]
pub struct Marker {
    names: Box<[HeaderName]>,
    generation: u64,
}

/// A slot of the map.
#[derive(Debug, Clone)]
enum Slot {
    Entry(Arc<Entry>),
    Vary(Arc<Marker>),
}

struct Expire;

impl moka::Expiry<String, Slot> for Expire {
    fn expire_after_create(&self, _: &String, slot: &Slot, _: std::time::Instant) -> Option<Duration> {
        match slot {
            Slot::Entry(e) => Some(e.freshness.keep_for(e.has_validator())),
            Slot::Vary(_) => None,
        }
    }

    fn expire_after_update(
        &self,
        key: &String,
        slot: &Slot,
        now: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, slot, now)
    }
}

/// The bounded store of one cache.
pub struct Store {
    // foldhash, not SipHash: keys are hashed on every hit.
    map: Cache<String, Slot, foldhash::fast::RandomState>,
    generation: AtomicU64,
    metrics: CacheMetrics,
}

impl Store {
    /// A store holding at most `max_bytes` (entries and keys).
    pub fn new(max_bytes: u64, metrics: CacheMetrics) -> Store {
        let evictions = metrics.evictions.clone();
        let map = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, slot: &Slot| {
                let v = match slot {
                    Slot::Entry(e) => e.weight(),
                    Slot::Vary(m) => {
                        std::mem::size_of::<Marker>()
                            + m.names.iter().map(|n| n.as_str().len() + 24).sum::<usize>()
                    }
                };
                u32::try_from(k.len() + v + std::mem::size_of::<String>()).unwrap_or(u32::MAX)
            })
            .expire_after(Expire)
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Store {
            map,
            generation: AtomicU64::new(1),
            metrics,
        }
    }

    /// The entry stored for this request, if any (following a `Vary` marker
    /// to the request's variant).
    pub fn get(&self, primary: &str, req: &HeaderMap) -> Option<Arc<Entry>> {
        match self.map.get(primary)? {
            Slot::Entry(e) => Some(e),
            Slot::Vary(m) => match self
                .map
                .get(&key::variant(primary, m.generation, &m.names, req))?
            {
                Slot::Entry(e) => Some(e),
                Slot::Vary(_) => None,
            },
        }
    }

    /// The variant key `req` selects under `primary` for `vary` names,
    /// placing (or reusing) the marker; `None` without `Vary`.
    pub fn variant_for(&self, primary: &str, vary: &[HeaderName], req: &HeaderMap) -> Option<String> {
        if vary.is_empty() {
            return None;
        }
        let marker = match self.map.get(primary) {
            Some(Slot::Vary(m)) if *m.names == *vary => m,
            _ => {
                let m = Arc::new(Marker {
                    names: vary.into(),
                    generation: self.generation.fetch_add(1, Ordering::Relaxed),
                });
                self.map.insert(primary.to_string(), Slot::Vary(m.clone()));
                m
            }
        };
        Some(key::variant(primary, marker.generation, &marker.names, req))
    }

    /// Stores `entry` under its variant key, or `primary` without one.
    /// Returns when the memory bound holds again.
    pub fn insert(&self, primary: &str, entry: Arc<Entry>) {
        let key = entry.variant.as_deref().unwrap_or(primary).to_string();
        self.map.insert(key, Slot::Entry(entry));
        // moka evicts in its housekeeping; run it now, so the bound holds
        // when this returns (a store happens once per upstream fetch).
        self.map.run_pending_tasks();
        self.update_gauges();
    }

    /// Forgets whatever `primary` names (its variants become unreachable).
    pub fn invalidate(&self, primary: &str) {
        self.map.invalidate(primary);
        self.update_gauges();
    }

    /// RFC 9111 §4.4: the target and the same-origin `Location` and
    /// `Content-Location` of a write's successful answer.
    pub fn invalidate_after_write(&self, primary: &str, authority: &str, res: &HeaderMap) {
        self.invalidate(primary);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(k) = res.get(name).and_then(|v| key::same_origin(authority, v)) {
                self.invalidate(&k);
            }
        }
    }

    /// Forgets one key; whether it was there.
    pub fn purge_key(&self, key: &str) -> bool {
        let had = self.map.contains_key(key);
        self.map.invalidate(key);
        self.map.run_pending_tasks();
        self.update_gauges();
        had
    }

    /// Forgets every key starting with `prefix`; how many there were.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let keys: Vec<Arc<String>> = self
            .map
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(prefix))
            .collect();
        for k in &keys {
            self.map.invalidate(k.as_str());
        }
        self.map.run_pending_tasks();
        self.update_gauges();
        keys.len()
    }

    /// Bytes held (entries and keys, as weighed).
    pub fn bytes(&self) -> u64 {
        self.map.weighted_size()
    }

    fn update_gauges(&self) {
        self.metrics.bytes.set(self.map.weighted_size() as i64);
        self.metrics.entries.set(self.map.entry_count() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize, variant: Option<&str>) -> Arc<Entry> {
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            freshness: Freshness {
                lifetime: Duration::from_secs(60),
                initial_age: Duration::ZERO,
                swr: Duration::ZERO,
                sie: Duration::ZERO,
                must_revalidate: false,
                no_cache: false,
            },
            stored_at: Instant::now(),
            fetch_time: Duration::ZERO,
            variant: variant.map(Into::into),
            refreshing: AtomicBool::new(false),
        })
    }

    #[test]
    fn bound_holds() {
        let metrics = CacheMetrics::default();
        let store = Store::new(64 * 1024, metrics.clone());
        for i in 0..500 {
            store.insert(&format!("k{i}"), entry(1000, None));
            assert!(store.bytes() <= 64 * 1024, "{} after {i}", store.bytes());
        }
        assert!(metrics.evictions.get() > 0);
    }

    #[test]
    fn variants_orphan_and_purge() {
        // A fresh store: TinyLFU may turn new keys away from a full one.
        let store = Store::new(1 << 20, CacheMetrics::default());

        let vary = [http::header::ACCEPT_ENCODING];
        let mut gzip = HeaderMap::new();
        gzip.insert(http::header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        let key = store.variant_for("v", &vary, &gzip).unwrap();
        store.insert("v", entry(10, Some(&key)));
        assert!(store.get("v", &gzip).is_some());
        assert!(store.get("v", &HeaderMap::new()).is_none());
        store.invalidate("v");
        assert!(store.get("v", &gzip).is_none());
        store.variant_for("v", &vary, &gzip).unwrap();
        assert!(store.get("v", &gzip).is_none(), "old variant orphaned");
        store.insert("k-a", entry(10, None));
        store.insert("k-b", entry(10, None));
        assert!(store.purge_prefix("k-") >= 2);
        assert!(store.get("k-a", &HeaderMap::new()).is_none());
        assert_eq!(store.purge_prefix("k-"), 0);
    }
}
