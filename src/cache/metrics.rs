//! The cache's metrics: one counter family by event, two gauges, each
//! labelled with the cache's name (`upstream:NAME` or `inbound`). Handles
//! are made once per cache at startup; counting is an atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    cache: String,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    cache: String,
}

/// The families, registered once.
#[derive(Clone)]
pub struct Families {
    events: Family<EventLabels, Counter>,
    bytes: Family<NameLabels, Gauge>,
    entries: Family<NameLabels, Gauge>,
}

impl Families {
    /// Registers `cache_events`, `cache_bytes` and `cache_entries`.
    pub fn register(registry: &mut Registry) -> Families {
        let f = Families {
            events: Family::default(),
            bytes: Family::default(),
            entries: Family::default(),
        };
        registry.register(
            "cache_events",
            "Response cache events: hit, miss, coalesced, stale, revalidation, refresh, eviction",
            f.events.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes the cache holds (entries and keys)",
            f.bytes.clone(),
        );
        registry.register("cache_entries", "Entries the cache holds", f.entries.clone());
        f
    }

    /// The handles of the cache named `cache`.
    pub fn handles(&self, cache: &str) -> CacheMetrics {
        let event = |event| {
            self.events.get_or_create_owned(&EventLabels {
                cache: cache.to_string(),
                event,
            })
        };
        let name = NameLabels {
            cache: cache.to_string(),
        };
        CacheMetrics {
            hits: event("hit"),
            misses: event("miss"),
            coalesced: event("coalesced"),
            stale: event("stale"),
            revalidations: event("revalidation"),
            refreshes: event("refresh"),
            evictions: event("eviction"),
            bytes: self.bytes.get_or_create_owned(&name),
            entries: self.entries.get_or_create_owned(&name),
        }
    }
}

/// One cache's metric handles.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Answered from a fresh entry.
    pub hits: Counter,
    /// Went upstream without a usable entry.
    pub misses: Counter,
    /// Waited for another request's fetch and got its response.
    pub coalesced: Counter,
    /// Answered from a stale entry (while revalidating, or on error).
    pub stale: Counter,
    /// Conditional requests sent upstream for a stored entry.
    pub revalidations: Counter,
    /// Background refreshes (stale-while-revalidate, XFetch).
    pub refreshes: Counter,
    /// Entries evicted for the memory bound.
    pub evictions: Counter,
    /// Bytes held.
    pub bytes: Gauge,
    /// Entries held.
    pub entries: Gauge,
}
