//! Turns a validated [`Config`] into each direction's handler state: at
//! start, and again on every config reload ([`crate::reload`]).
//!
//! On a reload the previous state is passed in, and what a table's settings
//! did not change is reused as it is: an upstream whose `[upstreams.NAME]`
//! table is unchanged keeps its `Destination` (pooled connections, breaker
//! state, retry budget), an unchanged app address keeps its pool, an
//! unchanged `[inbound.jwt]` keeps its verifier and keys.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::cache::{self, Cache};
use crate::config::{self, Config};
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::proxy::inbound::Inbound;
use crate::proxy::outbound::{Destination, Outbound};
use crate::proxy::retry::Resilience;
use crate::proxy::upstream::{Upstream, UpstreamSettings};
use crate::proxy::Shared;
use crate::ratelimit::RateLimits;
use crate::{auth, tls, StartError};

/// What one build made.
#[derive(Default)]
pub(crate) struct Built {
    /// The inbound handler state, when `[inbound]` is configured.
    pub inbound: Option<Arc<Inbound>>,
    /// The outbound handler state, when `[outbound]` is configured.
    pub outbound: Option<Arc<Outbound>>,
    /// Every upstream, for `/upstreams`.
    pub upstreams: Vec<Arc<Destination>>,
    /// Every response cache, for `POST /cache/purge`.
    pub caches: Vec<Arc<Cache>>,
    /// Upstream client certificates by upstream name, for the expiry gauge.
    pub clients: Vec<(String, Arc<tls::ClientTls>)>,
    /// Tasks started for new parts (DNS refresh, TLS and JWKS reloads); each
    /// ends by itself once what it serves is dropped.
    pub background: Vec<JoinHandle<()>>,
}

/// The state in force, when rebuilding.
pub(crate) struct Previous<'a> {
    /// The config it was built from.
    pub cfg: &'a Config,
    /// Its inbound handler state.
    pub inbound: Option<&'a Inbound>,
    /// Its outbound handler state.
    pub outbound: Option<&'a Outbound>,
    /// Its upstream client certificates.
    pub clients: &'a [(String, Arc<tls::ClientTls>)],
}

/// Same settings: every config type derives `Debug` (not `PartialEq`), and
/// its text shows every field.
pub(crate) fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Builds the handler state of both directions from `cfg`.
pub(crate) async fn build(
    cfg: &Config,
    shared: &Arc<Shared>,
    metrics: &Metrics,
    cache_metrics: &cache::metrics::Families,
    rate_limits: Option<Arc<RateLimits>>,
    guard: Option<Arc<Guard>>,
    prev: Option<Previous<'_>>,
) -> Result<Built, StartError> {
    let mut built = Built::default();
    if let Some(icfg) = &cfg.inbound {
        let rate_limits = match rate_limits {
            Some(r) => r,
            None => Arc::new(RateLimits::new(&[], &mut Default::default()).map_err(StartError::Auth)?),
        };
        let prev = prev
            .as_ref()
            .and_then(|p| Some((p.cfg.inbound.as_ref()?, p.inbound?)));
        let mut inbound =
            build_inbound(icfg, shared, metrics, rate_limits, prev, &mut built.background).await?;
        // An unchanged [inbound.cache] keeps what it stored.
        inbound.cache = match prev {
            Some((old, old_inbound)) if same(&old.cache, &icfg.cache) => old_inbound.cache.clone(),
            _ => icfg
                .cache
                .as_ref()
                .map(|c| Cache::new("inbound", c, cache_metrics)),
        };
        built.caches.extend(inbound.cache.clone());
        inbound.guard = guard;
        built.inbound = Some(Arc::new(inbound));
    }
    if let Some(ocfg) = &cfg.outbound {
        build_outbound(
            cfg,
            ocfg,
            shared,
            metrics,
            cache_metrics,
            prev.as_ref(),
            &mut built,
        )
        .await?;
    }
    Ok(built)
}

async fn build_inbound(
    icfg: &config::Inbound,
    shared: &Arc<Shared>,
    metrics: &Metrics,
    rate_limits: Arc<RateLimits>,
    prev: Option<(&config::Inbound, &Inbound)>,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Inbound, StartError> {
    let same_app = |(old, _): &(&config::Inbound, &Inbound)| {
        same(&old.app, &icfg.app)
            && same(&old.app_protocol, &icfg.app_protocol)
            && same(&old.connect_timeout, &icfg.connect_timeout)
    };
    let app = match prev.filter(same_app) {
        Some((_, old)) => old.app.clone(),
        None => {
            let app = Upstream::new(UpstreamSettings {
                name: "app".into(),
                endpoints: vec![icfg.app.clone()],
                protocol: icfg.app_protocol,
                connect_timeout: icfg.connect_timeout.0,
                resolve_interval: std::time::Duration::from_secs(5),
                tls: None,
            })
            .await;
            if app.needs_resolving() {
                background.push(app.spawn_resolver());
            }
            app
        }
    };
    let jwt = match (&icfg.jwt, prev) {
        (Some(_), Some((old, old_inbound))) if same(&old.jwt, &icfg.jwt) => old_inbound.jwt.clone(),
        (Some(j), _) => Some(build_jwt(j, background).await?),
        (None, _) => None,
    };
    Ok(Inbound {
        cache: None,
        guard: None,
        shared: shared.clone(),
        timeout: icfg.timeout.0,
        policy: auth::Policy::new(&icfg.allow),
        jwt,
        rate_limits,
        metrics: match prev {
            Some((_, old)) => old.metrics.clone(),
            None => metrics.route("inbound", "app"),
        },
        app,
        underscores: icfg.headers_with_underscores,
    })
}

async fn build_jwt(
    j: &config::InboundJwt,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Arc<auth::JwtVerifier>, StartError> {
    let auth_err = |e: String| StartError::Auth(format!("inbound.jwt: {e}"));
    let settings = j.settings();
    // A URL is fetched once here: no keys, no start (as for an unreadable file).
    let (verifier, fetcher) = match &j.jwks_url {
        Some(url) => {
            let fetcher = auth::JwksFetcher::new(url, j.jwks_ca.clone()).map_err(auth_err)?;
            let bytes = fetcher.fetch().await.map_err(auth_err)?;
            let verifier = auth::JwtVerifier::load_fetched(settings, &bytes).map_err(auth_err)?;
            (verifier, Some(fetcher))
        }
        None => (auth::JwtVerifier::load(settings).map_err(auth_err)?, None),
    };
    let verifier = Arc::new(verifier);
    background.push(crate::spawn_jwks_reloader(
        &verifier,
        fetcher,
        j.reload_interval.0,
    ));
    Ok(verifier)
}

async fn build_outbound(
    cfg: &Config,
    ocfg: &config::Outbound,
    shared: &Arc<Shared>,
    metrics: &Metrics,
    cache_metrics: &cache::metrics::Families,
    prev: Option<&Previous<'_>>,
    built: &mut Built,
) -> Result<(), StartError> {
    let mut routes = foldhash::HashMap::default();
    let mut by_name = HashMap::new();
    for (name, u) in &cfg.upstreams {
        let reuse = prev.and_then(|p| {
            if !p.cfg.upstreams.get(name).is_some_and(|old| same(old, u)) {
                return None;
            }
            let d = p.outbound?.routes.get(&name.to_ascii_lowercase())?;
            (*d.upstream.name == **name).then(|| d.clone())
        });
        let destination = match reuse {
            Some(d) => {
                let client = prev.and_then(|p| p.clients.iter().find(|(n, _)| n == name));
                built.clients.extend(client.cloned());
                d
            }
            None => Arc::new(build_destination(name, u, metrics, cache_metrics, built).await?),
        };
        built.caches.extend(destination.cache.clone());
        for host in std::iter::once(name).chain(&u.hosts) {
            routes.insert(host.to_ascii_lowercase(), destination.clone());
        }
        by_name.insert(name.clone(), destination.clone());
        built.upstreams.push(destination);
    }
    built.outbound = Some(Arc::new(Outbound {
        shared: shared.clone(),
        default_route: ocfg
            .default_upstream
            .as_ref()
            .and_then(|n| by_name.get(n).cloned()),
        routes,
        unrouted: match prev.and_then(|p| p.outbound) {
            Some(old) => old.unrouted.clone(),
            None => metrics.route("outbound", crate::metrics::UNROUTED),
        },
        user_header: ocfg.user_header.clone(),
    }));
    Ok(())
}

async fn build_destination(
    name: &str,
    u: &config::UpstreamConfig,
    metrics: &Metrics,
    cache_metrics: &cache::metrics::Families,
    built: &mut Built,
) -> Result<Destination, StartError> {
    let tls = match &u.tls {
        Some(t) => {
            let client =
                Arc::new(
                    tls::ClientTls::load(t.files(u.protocol)).map_err(|source| StartError::Tls {
                        what: format!("upstreams.{name}.tls"),
                        source,
                    })?,
                );
            built.background.push(client.spawn_reloader(t.reload_interval.0));
            built.clients.push((name.to_string(), client.clone()));
            Some(client)
        }
        None => None,
    };
    let upstream = Upstream::new(UpstreamSettings {
        name: name.into(),
        endpoints: u.endpoints.clone(),
        protocol: u.protocol,
        connect_timeout: u.connect_timeout.0,
        resolve_interval: u.resolve_interval.0,
        tls,
    })
    .await;
    if upstream.needs_resolving() {
        built.background.push(upstream.spawn_resolver());
    }
    Ok(Destination {
        cache: u
            .cache
            .as_ref()
            .map(|c| Cache::new(&format!("upstream:{name}"), c, cache_metrics)),
        metrics: metrics.route("outbound", name),
        resilience: Resilience::new(u, metrics.resilience(name, u.breaker.enabled)),
        upstream,
    })
}
