//! `[inbound.guard]` and `[[inbound.guard.routes]]`: the idempotency and
//! ordering guard's settings (see `guard`), read by serde and checked in
//! [`validate`]; every option and default is in `config/kawal.toml`.

use std::time::Duration;

use serde::Deserialize;

use super::{Dur, Size};
use crate::matcher::{Methods, Paths, RouteMatch};

/// `[inbound.guard]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Where claims, responses and versions live.
    #[serde(default)]
    pub store: StoreKind,
    /// `redis://[:password@]host:port[/db]`, `rediss://` for TLS; needed
    /// with `store = "redis"`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// TCP (and TLS) connect timeout to Redis.
    #[serde(default = "d_1s")]
    pub redis_connect_timeout: Dur,
    /// Deadline of one Redis command; past it the store counts as down.
    #[serde(default = "d_500ms")]
    pub redis_timeout: Dur,
    /// How long a stored response, a processed event id and a key's last
    /// version are kept.
    #[serde(default = "d_24h")]
    pub ttl: Dur,
    /// A claim or per-key lease not renewed for this long expires (a replica
    /// died with it); renewed every third of it while the app works.
    #[serde(default = "d_30s")]
    pub lease: Dur,
    /// Store unreachable: false = 503 + Retry-After, nothing reaches the app;
    /// true = requests pass unguarded.
    #[serde(default)]
    pub fail_open: bool,
    /// Memory store: most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Memory store: most bytes kept (keys, responses, records).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: Size,
    /// Request bodies on guarded routes are read up to this (fingerprint,
    /// structured CloudEvents); larger → 413.
    #[serde(default = "default_max_body")]
    pub max_body: Size,
    /// Largest response stored for replay; a larger one is not stored and
    /// its key is released.
    #[serde(default = "default_max_body")]
    pub max_response: Size,
    /// `Retry-After` on the guard's 503s (queue full, store down).
    #[serde(default = "d_1s")]
    pub retry_after: Dur,
    /// The guarded routes; the first that matches a request applies.
    #[serde(default)]
    pub routes: Vec<GuardRoute>,
}

/// `store = "memory" | "redis"`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process: bounded, lost on restart.
    #[default]
    Memory,
    /// Shared by every replica, survives restarts.
    Redis,
}

/// `[[inbound.guard.routes]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardRoute {
    /// HTTP methods; absent or `["*"]` = any.
    #[serde(default)]
    pub methods: Option<Methods>,
    /// Path patterns (exact, `/prefix/*`, `*`); absent = any.
    #[serde(default)]
    pub paths: Option<Paths>,
    /// Replay by `Idempotency-Key`.
    #[serde(default)]
    pub idempotency: bool,
    /// Without an `Idempotency-Key`: 400.
    #[serde(default)]
    pub require_key: bool,
    /// Deduplicate CloudEvents by `ce-source` + `ce-id`.
    #[serde(default)]
    pub cloudevents: bool,
    /// Status acknowledging an already processed event (2xx).
    #[serde(default = "default_duplicate_status")]
    pub duplicate_status: u16,
    /// Header naming the ordering key (`ce-partitionkey`, or any header);
    /// same key: one at a time, in arrival order.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Deliveries that may wait per key; beyond: 503 + Retry-After.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Header carrying the version (`ce-sequence`, `x-event-version`); one
    /// not newer than the key's last accepted one is rejected.
    #[serde(default)]
    pub version_from: Option<String>,
    /// Status rejecting a stale version (4xx).
    #[serde(default = "default_stale_status")]
    pub stale_status: u16,
}

impl GuardRoute {
    /// The route's methods × paths.
    pub fn matcher(&self) -> RouteMatch {
        RouteMatch::new(self.methods.as_ref(), self.paths.as_ref())
    }
}

/// Every problem in the section, as (key path under `inbound.guard`, message).
pub fn validate(g: &GuardConfig) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut bad = |path: &[&str], msg: String| {
        let full = ["inbound", "guard"]
            .iter()
            .chain(path)
            .map(|s| s.to_string())
            .collect();
        out.push((full, msg));
    };
    match (g.store, &g.redis_url) {
        (StoreKind::Redis, None) => bad(&["redis_url"], "needed with store = \"redis\"".into()),
        (StoreKind::Memory, Some(_)) => bad(&["redis_url"], "only used with store = \"redis\"".into()),
        (_, Some(url)) => {
            if let Err(e) = redis::Client::open(url.as_str()) {
                bad(
                    &["redis_url"],
                    format!("{e} (expected redis://[:password@]host:port[/db] or rediss://...)"),
                );
            }
        }
        _ => {}
    }
    for (key, d) in [
        ("ttl", g.ttl),
        ("lease", g.lease),
        ("redis_timeout", g.redis_timeout),
    ] {
        if d.0.is_zero() {
            bad(&[key], "must be more than 0".into());
        }
    }
    if g.lease.0 < Duration::from_millis(30) {
        bad(
            &["lease"],
            "must be at least 30ms (it is renewed every third of it)".into(),
        );
    }
    if g.max_entries == 0 {
        bad(&["max_entries"], "must be at least 1".into());
    }
    if g.routes.is_empty() {
        bad(
            &["routes"],
            "no [[inbound.guard.routes]]: the guard would guard nothing".into(),
        );
    }
    for (i, r) in g.routes.iter().enumerate() {
        let i = i.to_string();
        let at = |key: &'static str| ["routes", i.as_str(), key];
        if !r.idempotency && !r.cloudevents && r.order_by.is_none() && r.version_from.is_none() {
            bad(
                &["routes", &i],
                "guards nothing: set idempotency, cloudevents, order_by or version_from".into(),
            );
        }
        if r.require_key && !r.idempotency {
            bad(&at("require_key"), "needs idempotency = true".into());
        }
        if !(200..=299).contains(&r.duplicate_status) {
            bad(
                &at("duplicate_status"),
                format!("{}: must be a 2xx status", r.duplicate_status),
            );
        }
        if !(400..=499).contains(&r.stale_status) {
            bad(
                &at("stale_status"),
                format!("{}: must be a 4xx status", r.stale_status),
            );
        }
        for (key, header) in [("order_by", &r.order_by), ("version_from", &r.version_from)] {
            if let Some(h) = header {
                if http::HeaderName::from_bytes(h.as_bytes()).map_or(true, |n| n.as_str() != h) {
                    bad(&at(key), format!("{h:?}: must be a lowercase header name"));
                }
            }
        }
        if r.version_from.is_some() && r.order_by.is_none() {
            bad(
                &at("version_from"),
                "needs order_by: versions are compared per ordering key, one delivery at a time".into(),
            );
        }
    }
    out
}

fn d_1s() -> Dur {
    Dur(Duration::from_secs(1))
}
fn d_500ms() -> Dur {
    Dur(Duration::from_millis(500))
}
fn d_30s() -> Dur {
    Dur(Duration::from_secs(30))
}
fn d_24h() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_max_bytes() -> Size {
    Size(64 * 1024 * 1024)
}
fn default_max_body() -> Size {
    Size(1024 * 1024)
}
fn default_duplicate_status() -> u16 {
    200
}
fn default_max_queue() -> usize {
    1000
}
fn default_stale_status() -> u16 {
    409
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn check(guard: &str) -> Result<(), String> {
        let src = format!(
            "[service]\nname = \"s\"\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"127.0.0.1:1\"\n{guard}"
        );
        Config::from_toml_str(&src, "k.toml")
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_a_full_section() {
        let ok = "[inbound.guard]\nstore = \"redis\"\nredis_url = \"redis://:pw@127.0.0.1:6379/2\"\nttl = \"10m\"\n\
                  [[inbound.guard.routes]]\nmethods = [\"POST\"]\npaths = [\"/orders/*\"]\nidempotency = true\n\
                  require_key = true\ncloudevents = true\norder_by = \"ce-partitionkey\"\nversion_from = \"ce-sequence\"\n";
        check(ok).unwrap();
    }

    #[test]
    fn names_the_line_and_key_of_each_problem() {
        let table = [
            (
                "[inbound.guard]\nstore = \"redis\"\n[[inbound.guard.routes]]\nidempotency = true\n",
                "k.toml:6:10: inbound.guard.redis_url: needed",
            ),
            (
                "[inbound.guard]\n[[inbound.guard.routes]]\nversion_from = \"ce-sequence\"\n",
                "k.toml:8:1: inbound.guard.routes.0.version_from: needs order_by",
            ),
            (
                "[inbound.guard]\n[[inbound.guard.routes]]\ncloudevents = true\nduplicate_status = 409\n",
                "k.toml:9:1: inbound.guard.routes.0.duplicate_status: 409",
            ),
            (
                "[inbound.guard]\n[[inbound.guard.routes]]\nidempotency = true\npaths = [\"orders\"]\n",
                "k.toml:9:9: inbound.guard.routes.0.paths: path pattern \"orders\" must start with `/`",
            ),
            (
                "[inbound.guard]\n[[inbound.guard.routes]]\norder_by = \"X-Key\"\n",
                "routes.0.order_by: \"X-Key\": must be a lowercase header name",
            ),
            ("[inbound.guard]\n[[inbound.guard.routes]]\n", "guards nothing"),
            (
                "[inbound.guard]\n",
                "inbound.guard.routes: no [[inbound.guard.routes]]",
            ),
            ("[inbound.guard]\nstore = \"disk\"\n", "k.toml:7:9"),
            ("[inbound.guard]\nttl = \"soon\"\n", "k.toml:7:7"),
            (
                "[inbound.guard]\n[[inbound.guard.routes]]\nidempotency = true\nrequire = true\n",
                "routes.0.require: unknown key \"require\"",
            ),
        ];
        for (src, want) in table {
            let err = check(src).unwrap_err();
            assert!(err.contains(want), "{src}\n=> {err}\nwanted {want}");
        }
    }
}
