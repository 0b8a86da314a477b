//! Hot config reload, on SIGHUP ([`Reloader::reload`]) and when the config
//! file changes (its contents are hashed every `[service]
//! config_check_interval`; a change is applied once two checks in a row see
//! the same new contents, so a file caught mid-write waits).
//!
//! A valid new config is built ([`crate::build`]) next to the running one
//! and swapped in: each listener loads its direction's state per request, so
//! open connections and in-flight requests carry on, and new requests use
//! the new routes, upstreams, endpoints, retry and breaker settings, allow
//! rules, JWT settings, request limits and log level. An upstream whose
//! table did not change keeps its state (connections, breaker, budget).
//! What a running listener cannot change (its address, its TLS mode, its
//! connection-level limits, the span exporter) is logged as needing a
//! restart; the rest is applied. An invalid file is refused with the errors
//! `kawal check` prints, and the running config stays.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::build::{self, same, Previous};
use crate::config::{Config, LogLevel};
use crate::log::Sink;
use crate::metrics::Metrics;
use crate::proxy::inbound::Inbound;
use crate::proxy::outbound::Outbound;
use crate::proxy::Shared;
use crate::ratelimit::RateLimits;
use crate::{admin, log, tls, trace};

/// Asks the running kawal to reload its config file (SIGHUP does this).
#[derive(Clone)]
pub struct Reloader(Arc<Notify>);

impl Reloader {
    /// Reloads now; a no-op for a config that was not read from a file.
    pub fn reload(&self) {
        self.0.notify_one();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    hash: String,
}

/// `kawal_config_reloads_total{result}`, `kawal_config_info{hash}` and
/// `kawal_config_loaded_timestamp_seconds`.
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: Family<ResultLabels, Counter>,
    info: Family<HashLabels, Gauge>,
    loaded_at: Gauge,
}

impl ReloadMetrics {
    /// Registers the reload metrics.
    pub fn register(registry: &mut Registry) -> ReloadMetrics {
        let m = ReloadMetrics {
            reloads: Family::default(),
            info: Family::default(),
            loaded_at: Gauge::default(),
        };
        registry.register(
            "config_reloads",
            "Config reloads by result (success, failure)",
            m.reloads.clone(),
        );
        registry.register(
            "config_info",
            "The config in force: its hash (FNV-1a 64 of the file) as a label, value 1",
            m.info.clone(),
        );
        registry.register(
            "config_loaded_timestamp_seconds",
            "When the config in force was loaded (Unix time)",
            m.loaded_at.clone(),
        );
        m
    }

    fn loaded(&self, old: Option<u64>, new: u64) {
        if let Some(old) = old.filter(|o| *o != new) {
            self.info.remove(&HashLabels { hash: hex(old) });
        }
        self.info.get_or_create(&HashLabels { hash: hex(new) }).set(1);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.loaded_at.set(now.as_secs() as i64);
    }
}

/// The running state a reload replaces.
pub(crate) struct Live {
    /// The config the listeners were bound with.
    pub start_cfg: Config,
    /// The config in force.
    pub cfg: Config,
    pub shared: Arc<Shared>,
    pub sink: Sink,
    pub admin: Arc<admin::Admin>,
    pub inbound: Option<Arc<ArcSwap<Inbound>>>,
    pub outbound: Option<Arc<ArcSwap<Outbound>>>,
    /// Built once (they register metrics); a change needs a restart.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// Built once (its store, metrics and Redis connection); a change needs a restart.
    pub guard: Option<Arc<crate::guard::Guard>>,
    /// The response caches' metric families (registered once).
    pub cache_metrics: crate::cache::metrics::Families,
    pub clients: Vec<(String, Arc<tls::ClientTls>)>,
    /// The inbound listener's certificates (start only; the files rotate).
    pub inbound_cert: Option<Arc<tls::ServerTls>>,
    /// Tasks started by reloads; aborted when the watcher ends.
    pub background: Vec<JoinHandle<()>>,
    pub metrics: ReloadMetrics,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.background.iter().for_each(JoinHandle::abort);
    }
}

/// The expiry gauge of the inbound listener's certificate.
pub(crate) fn inbound_cert(server: &Arc<tls::ServerTls>, metrics: &Metrics) -> admin::LoadedCert {
    let server = server.clone();
    admin::LoadedCert {
        name: "inbound".into(),
        gauge: metrics.cert_expiry("inbound"),
        not_after: Box::new(move || Some(server.not_after())),
    }
}

/// The expiry gauges of upstream client certificates.
pub(crate) fn client_certs(
    clients: &[(String, Arc<tls::ClientTls>)],
    metrics: &Metrics,
) -> Vec<admin::LoadedCert> {
    clients
        .iter()
        .filter(|(_, c)| c.not_after().is_some())
        .map(|(name, c)| {
            let c = c.clone();
            let name = format!("upstream:{name}");
            admin::LoadedCert {
                gauge: metrics.cert_expiry(&name),
                name,
                not_after: Box::new(move || c.not_after()),
            }
        })
        .collect()
}

/// What the request path shares, from `cfg`.
pub(crate) fn shared(
    cfg: &Config,
    sink: &Sink,
    spans: Option<trace::export::Spans>,
    access_log: bool,
) -> Shared {
    Shared {
        service: cfg.service.name.as_str().into(),
        limits: cfg.limits.clone(),
        access_log: access_log.then(|| log::AccessLog {
            sink: sink.clone(),
            format: cfg.log.format,
        }),
        propagator: trace::Propagator::new(&cfg.tracing),
        spans,
    }
}

/// Starts watching the config file (when the config came from one).
pub(crate) fn spawn(live: Live) -> (Reloader, JoinHandle<()>) {
    let wake = Arc::new(Notify::new());
    let reloader = Reloader(wake.clone());
    let task = tokio::spawn(async move {
        let Some(path) = live.cfg.source.clone() else {
            return;
        };
        let every = live.cfg.service.config_check_interval.0;
        let mut live = live;
        let mut loaded = read_hash(&path);
        if let Some(h) = loaded {
            live.metrics.loaded(None, h);
        }
        // The last contents tried (applied or refused) and a change seen once.
        let mut tried = loaded;
        let mut pending = None;
        loop {
            let forced = tokio::select! {
                _ = wake.notified() => true,
                _ = tokio::time::sleep(every), if !every.is_zero() => false,
            };
            if !forced {
                let now = read_hash(&path);
                if now.is_none() || now == tried {
                    pending = None;
                    continue;
                }
                if pending != now {
                    pending = now;
                    continue;
                }
            }
            pending = None;
            let hash = read_hash(&path);
            tried = hash;
            if live.reload(&path).await {
                if let Some(h) = hash {
                    live.metrics.loaded(loaded, h);
                }
                loaded = hash;
            }
        }
    });
    (reloader, task)
}

impl Live {
    /// Loads, checks and applies the file; false if it was refused.
    async fn reload(&mut self, path: &Path) -> bool {
        // As `kawal check` does: the config, then the files it names.
        let cfg = match Config::check_files(path) {
            Ok(cfg) => cfg,
            Err(e) => return self.refused(&e.to_string()),
        };
        let restart = needs_restart(&self.start_cfg, &cfg);
        if !restart.is_empty() {
            tracing::warn!(
                event = "config_needs_restart",
                keys = %restart.join(", "),
                "these changes need a restart; the rest of the new config is applied"
            );
        }
        let level = cfg.log.level;
        let access_log = match log::set_level(level) {
            Some(on) => on,
            None if std::env::var_os("RUST_LOG").is_some() => self.shared.access_log.is_some(),
            None => level >= LogLevel::Info,
        };
        let shared = Arc::new(shared(&cfg, &self.sink, self.shared.spans.clone(), access_log));
        let inbound = self.inbound.as_ref().map(|i| i.load_full());
        let outbound = self.outbound.as_ref().map(|o| o.load_full());
        let prev = Previous {
            cfg: &self.cfg,
            inbound: inbound.as_deref(),
            outbound: outbound.as_deref(),
            clients: &self.clients,
        };
        // A direction only exists if its listener does (bound at start).
        let mut target = cfg.clone();
        if self.inbound.is_none() {
            target.inbound = None;
        }
        if self.outbound.is_none() {
            target.outbound = None;
        }
        let rate_limits = self.rate_limits.clone();
        let built = match build::build(
            &target,
            &shared,
            &self.admin.metrics,
            &self.cache_metrics,
            rate_limits,
            self.guard.clone(),
            Some(prev),
        )
        .await
        {
            Ok(built) => built,
            Err(e) => return self.refused(&e.to_string()),
        };
        match (&self.inbound, built.inbound) {
            (Some(current), Some(new)) => current.store(new),
            (Some(_), None) => tracing::warn!(
                event = "config_needs_restart",
                keys = "inbound",
                "inbound is kept until a restart"
            ),
            _ => {}
        }
        match (&self.outbound, built.outbound) {
            (Some(current), Some(new)) => current.store(new),
            (Some(_), None) => tracing::warn!(
                event = "config_needs_restart",
                keys = "outbound",
                "outbound is kept until a restart"
            ),
            _ => {}
        }
        self.admin.upstreams.store(Arc::new(built.upstreams));
        self.admin.caches.store(Arc::new(built.caches));
        let mut certs: Vec<admin::LoadedCert> = self
            .inbound_cert
            .iter()
            .map(|c| inbound_cert(c, &self.admin.metrics))
            .collect();
        certs.extend(client_certs(&built.clients, &self.admin.metrics));
        self.admin.certs.store(Arc::new(certs));
        self.clients = built.clients;
        self.background.retain(|t| !t.is_finished());
        self.background.extend(built.background);
        self.shared = shared;
        self.cfg = cfg;
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        tracing::info!(event = "config_reloaded", config = %path.display(), "config reloaded");
        true
    }

    fn refused(&self, error: &str) -> bool {
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
        tracing::warn!(
            event = "config_reload_failed",
            error,
            "new config refused; the running config stays"
        );
        false
    }
}

/// Keys whose change a running kawal cannot apply, compared with the config
/// its listeners were bound with.
fn needs_restart(bound: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    let (bi, ni) = (bound.inbound.as_ref(), new.inbound.as_ref());
    let (bo, no) = (bound.outbound.as_ref(), new.outbound.as_ref());
    check("inbound", bi.is_some() != ni.is_some());
    check("outbound", bo.is_some() != no.is_some());
    if let (Some(b), Some(n)) = (bi, ni) {
        check("inbound.listen", b.listen.0 != n.listen.0);
        check("inbound.tls", !same(&b.tls, &n.tls));
        check("inbound.rate_limits", !same(&b.rate_limits, &n.rate_limits));
        check("inbound.guard", !same(&b.guard, &n.guard));
    }
    if let (Some(b), Some(n)) = (bo, no) {
        check("outbound.listen", b.listen.0 != n.listen.0);
    }
    check("admin.listen", bound.admin.listen.0 != new.admin.listen.0);
    let (bs, ns) = (&bound.service, &new.service);
    check("service.worker_threads", bs.worker_threads != ns.worker_threads);
    check("service.drain_delay", bs.drain_delay.0 != ns.drain_delay.0);
    check(
        "service.shutdown_grace",
        bs.shutdown_grace.0 != ns.shutdown_grace.0,
    );
    check(
        "service.config_check_interval",
        bs.config_check_interval.0 != ns.config_check_interval.0,
    );
    let (bl, nl) = (&bound.limits, &new.limits);
    check("limits.max_connections", bl.max_connections != nl.max_connections);
    check(
        "limits.max_request_head",
        bl.max_request_head.0 != nl.max_request_head.0,
    );
    check("limits.max_headers", bl.max_headers != nl.max_headers);
    check(
        "limits.request_head_timeout",
        bl.request_head_timeout.0 != nl.request_head_timeout.0,
    );
    check(
        "limits.h2_max_concurrent_streams",
        bl.h2_max_concurrent_streams != nl.h2_max_concurrent_streams,
    );
    check("log.format", !same(&bound.log.format, &new.log.format));
    let (bt, nt) = (&bound.tracing, &new.tracing);
    check("tracing.otlp_endpoint", bt.otlp_endpoint != nt.otlp_endpoint);
    check(
        "tracing export settings",
        bt.queue_size != nt.queue_size
            || bt.batch_size != nt.batch_size
            || bt.flush_interval.0 != nt.flush_interval.0
            || bt.export_timeout.0 != nt.export_timeout.0,
    );
    keys
}

/// FNV-1a 64 of the file's bytes: which config is loaded, not a secret.
fn read_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    Some(fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let src = format!(
            "[service]\nname = \"s\"\n[inbound]\nlisten = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\n{extra}"
        );
        Config::from_toml_str(&src, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_what_needs_a_restart_and_nothing_else() {
        let base = cfg("");
        for (extra, want) in [
            ("", vec![]),
            ("timeout = \"5s\"", vec![]),
            ("[[inbound.allow]]\nidentities = [\"*\"]\n[inbound.tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"", vec!["inbound.tls"]),
            ("[limits]\nmax_uri = \"1KiB\"", vec![]),
            ("[limits]\nmax_connections = 5", vec!["limits.max_connections"]),
            ("[log]\nlevel = \"warn\"", vec![]),
            ("[log]\nformat = \"text\"", vec!["log.format"]),
            ("[admin]\nlisten = \"127.0.0.1:9\"", vec!["admin.listen"]),
            ("[outbound]\nlisten = \"127.0.0.1:3\"", vec!["outbound"]),
        ] {
            assert_eq!(needs_restart(&base, &cfg(extra)), want, "{extra}");
        }
        let moved = Config::from_toml_str(
            "[service]\nname = \"s\"\n[inbound]\nlisten = \"127.0.0.1:7\"\napp = \"127.0.0.1:2\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(needs_restart(&base, &moved), ["inbound.listen"]);
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        for (input, want) in [
            (&b""[..], 0xcbf2_9ce4_8422_2325),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ] {
            assert_eq!(fnv1a(input), want);
        }
    }
}
