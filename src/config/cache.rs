//! `[upstreams.NAME.cache]` and `[inbound.cache]`: the response cache's
//! options, the same in both places, checked in one place ([`check`]).

use std::time::Duration;

use serde::Deserialize;

use super::{Dur, Size};
use crate::matcher::Paths;

/// One response cache (per upstream, or in front of the local app).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory budget: stored bodies, headers and keys, measured.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: Size,
    /// Larger responses stream through as usual and are not stored.
    #[serde(default = "d_max_object")]
    pub max_object_size: Size,
    /// Freshness for responses that state none (no max-age, s-maxage or
    /// Expires) and have a status cacheable by default; absent = none.
    #[serde(default)]
    pub default_ttl: Option<Dur>,
    /// Heuristic freshness (RFC 9111 §4.2.2): this fraction of the time since
    /// `Last-Modified`; 0 = no heuristic.
    #[serde(default = "d_fraction")]
    pub heuristic_fraction: f64,
    /// Upper bound on a heuristic freshness lifetime.
    #[serde(default = "d_heuristic_max")]
    pub heuristic_max: Dur,
    /// Stale-while-revalidate window when the response names none.
    #[serde(default)]
    pub stale_while_revalidate: Dur,
    /// Stale-if-error window when the response names none.
    #[serde(default)]
    pub stale_if_error: Dur,
    /// XFetch probabilistic early refresh; 0 = off.
    #[serde(default = "d_beta")]
    pub xfetch_beta: f64,
    /// How long a request waits for another one's fetch of the same key
    /// before going upstream itself.
    #[serde(default = "d_lock_timeout")]
    pub lock_timeout: Dur,
    /// Store responses that carry `Set-Cookie` (the cookie is then handed to
    /// every client): off by default.
    #[serde(default)]
    pub store_set_cookie: bool,
    /// `[[...cache.rules]]`: per-path exceptions; the first match wins.
    #[serde(default)]
    pub rules: Vec<CacheRule>,
}

/// A per-path exception: bypass the cache, or another default TTL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// Path patterns (`/exact`, `/prefix/*`, `*`), as in the allow rules.
    pub paths: Paths,
    /// false: requests on these paths neither read nor fill the cache.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Overrides `default_ttl` on these paths.
    #[serde(default)]
    pub default_ttl: Option<Dur>,
}

fn d_max_bytes() -> Size {
    Size(64 << 20)
}
fn d_max_object() -> Size {
    Size(1 << 20)
}
fn d_fraction() -> f64 {
    0.1
}
fn d_heuristic_max() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn d_beta() -> f64 {
    1.0
}
fn d_lock_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn yes() -> bool {
    true
}

/// Largest object: moka weighs an entry in a `u32`.
const MAX_OBJECT: u64 = 1 << 30;

/// Every problem in one cache table, as (key under the table, message).
pub fn check(c: &CacheConfig) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut bad = |key: &[&str], msg: String| out.push((key.iter().map(|s| s.to_string()).collect(), msg));
    if c.max_bytes.0 == 0 {
        bad(&["max_bytes"], "must be more than 0B".into());
    }
    if c.max_object_size.0 == 0 || c.max_object_size.0 > MAX_OBJECT {
        bad(&["max_object_size"], "must be between 1B and 1GiB".into());
    } else if c.max_object_size.0 > c.max_bytes.0 {
        bad(&["max_object_size"], "must not exceed max_bytes".into());
    }
    if c.default_ttl.is_some_and(|d| d.0.is_zero()) {
        bad(
            &["default_ttl"],
            "must be more than 0s (omit it for no default)".into(),
        );
    }
    if !(0.0..=1.0).contains(&c.heuristic_fraction) {
        bad(&["heuristic_fraction"], "must be between 0.0 and 1.0".into());
    }
    if !c.xfetch_beta.is_finite() || c.xfetch_beta < 0.0 {
        bad(&["xfetch_beta"], "must be 0 (off) or a positive number".into());
    }
    if c.lock_timeout.0.is_zero() {
        bad(&["lock_timeout"], "must be more than 0s".into());
    }
    for (i, rule) in c.rules.iter().enumerate() {
        let i = i.to_string();
        if rule.default_ttl.is_some_and(|d| d.0.is_zero()) {
            bad(&["rules", &i, "default_ttl"], "must be more than 0s".into());
        }
    }
    out
}
