//! kawal: a sidecar reverse proxy.
//!
//! [`start`] binds the configured listeners (inbound, outbound, admin) and
//! serves them until [`Kawal::shutdown`]; `main.rs` adds only argument
//! parsing, logging setup and signal handling. Tests call [`start`] with
//! `127.0.0.1:0` listeners and an in-memory log sink.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod guard;
pub mod headers;
pub mod host;
pub mod log;
pub mod matcher;
pub mod metrics;
pub mod phase;
pub mod proxy;
pub mod ratelimit;
pub mod resilience;
pub mod server;
pub mod timer;
pub mod tls;
pub mod trace;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, LogLevel};
use crate::log::Sink;
use crate::metrics::Metrics;
use crate::proxy::inbound::Inbound;
use crate::proxy::outbound::{Destination, Outbound};
use crate::proxy::retry::Resilience;
use crate::proxy::upstream::{Upstream, UpstreamSettings};
use crate::proxy::Shared;

/// A running kawal: its bound addresses and the handle to stop it.
pub struct Kawal {
    /// Bound inbound address, if inbound is configured.
    pub inbound: Option<SocketAddr>,
    /// Bound outbound address, if outbound is configured.
    pub outbound: Option<SocketAddr>,
    /// Bound admin address.
    pub admin: SocketAddr,
    admin_state: Arc<admin::Admin>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    exporter: Option<(tokio::task::JoinHandle<()>, std::time::Duration)>,
}

/// Why kawal could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address is taken or not ours.
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// Its configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The JWKS or secret file is missing or unusable, or a policy rule is bad.
    #[error("{0}")]
    Auth(String),
    /// The guard's store cannot be set up (a bad Redis URL).
    #[error("inbound.guard: {0}")]
    Guard(String),
    /// A certificate, key or CA file is missing or broken.
    #[error("{what}: {source}")]
    Tls {
        /// Which config table.
        what: String,
        /// What is wrong with which file.
        source: tls::TlsError,
    },
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
        listener,
        addr,
        source,
    })
}

/// Binds every configured listener and starts serving.
pub async fn start(cfg: Config, sink: Sink) -> Result<Kawal, StartError> {
    let mut metrics = Metrics::default();
    let (spans, exporter) =
        trace::export::Spans::start(&cfg.tracing, &cfg.service.name, metrics.spans()).unzip();
    // At shutdown the last spans get one flush interval and one export to go out.
    let exporter = exporter.map(|task| (task, cfg.tracing.flush_interval.0 + cfg.tracing.export_timeout.0));
    let shared = Arc::new(Shared {
        service: cfg.service.name.as_str().into(),
        limits: cfg.limits.clone(),
        access_log: (cfg.log.level >= LogLevel::Info).then(|| log::AccessLog {
            sink: sink.clone(),
            format: cfg.log.format,
        }),
        propagator: trace::Propagator::new(&cfg.tracing),
        spans,
    });
    let grace = cfg.service.shutdown_grace.0;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut upstreams = Vec::new();
    let mut certs: Vec<admin::LoadedCert> = Vec::new();
    let (mut inbound_metrics, mut unrouted, mut tls_failures) = (None, None, None);
    let info = admin::Info {
        service: cfg.service.name.clone(),
        config: admin::redact(&format!("{cfg:#?}")),
        started: std::time::SystemTime::now(),
        started_instant: std::time::Instant::now(),
    };

    // Bind everything first, so a port clash fails before anything is served.
    let inbound_listener = match &cfg.inbound {
        Some(i) => Some(bind("inbound", i.listen.0).await?),
        None => None,
    };
    let outbound_listener = match &cfg.outbound {
        Some(o) => Some(bind("outbound", o.listen.0).await?),
        None => None,
    };
    let admin_listener = bind("admin", cfg.admin.listen.0).await?;
    let local = |l: &TcpListener| l.local_addr().ok();
    let inbound_addr = inbound_listener.as_ref().and_then(local);
    let outbound_addr = outbound_listener.as_ref().and_then(local);
    let admin_addr = local(&admin_listener).unwrap_or(cfg.admin.listen.0);

    if let (Some(listener), Some(icfg)) = (inbound_listener, &cfg.inbound) {
        let tls = match &icfg.tls {
            Some(t) => {
                let server = Arc::new(tls::ServerTls::load(t.files()).map_err(|source| StartError::Tls {
                    what: "inbound.tls".into(),
                    source,
                })?);
                abort_on_shutdown(
                    &mut tasks,
                    &shutdown_rx,
                    server.spawn_reloader(t.reload_interval.0),
                );
                if t.client_ca.is_none() {
                    tracing::warn!("inbound TLS without client_ca: clients are not authenticated (no mTLS)");
                }
                let cert = server.clone();
                certs.push(admin::LoadedCert {
                    name: "inbound".into(),
                    gauge: metrics.cert_expiry("inbound"),
                    not_after: Box::new(move || Some(cert.not_after())),
                });
                let failures = metrics.tls_failures("inbound");
                tls_failures = Some(failures.clone());
                Some(server::TlsListener {
                    tls: server,
                    handshake_timeout: t.handshake_timeout.0,
                    failures,
                })
            }
            None => {
                tracing::warn!(listen = %icfg.listen.0, "inbound listener is plaintext: no [inbound.tls] configured");
                None
            }
        };
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
            abort_on_shutdown(&mut tasks, &shutdown_rx, app.spawn_resolver());
        }
        let jwt = match &icfg.jwt {
            Some(j) => {
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
                abort_on_shutdown(
                    &mut tasks,
                    &shutdown_rx,
                    spawn_jwks_reloader(&verifier, fetcher, j.reload_interval.0),
                );
                Some(verifier)
            }
            None => None,
        };
        let rate_limits = Arc::new(
            ratelimit::RateLimits::new(&icfg.rate_limits, metrics.registry_mut())
                .map_err(StartError::Auth)?,
        );
        if !rate_limits.is_empty() {
            abort_on_shutdown(&mut tasks, &shutdown_rx, rate_limits.spawn_forget_idle());
        }
        let guard = icfg
            .guard
            .as_ref()
            .map(|g| guard::Guard::new(g, &cfg.service.name, metrics.registry_mut()))
            .transpose()
            .map_err(StartError::Guard)?;
        let inbound = Arc::new(Inbound {
            shared: shared.clone(),
            guard,
            timeout: icfg.timeout.0,
            policy: auth::Policy::new(icfg.allow.clone()).map_err(StartError::Auth)?,
            jwt,
            rate_limits,
            metrics: inbound_metrics.insert(metrics.route("inbound", "app")).clone(),
            app,
        });
        let open = metrics.connections("inbound");
        let builder = server::http_builder(&cfg.limits);
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let handler = move |req, peer| inbound.clone().handle(req, peer);
            server::serve("inbound", listener, tls, builder, handler, rx, grace, open).await;
        });
    }

    if let (Some(listener), Some(ocfg)) = (outbound_listener, &cfg.outbound) {
        let mut routes = foldhash::HashMap::default();
        let mut by_name = HashMap::new();
        for (name, u) in &cfg.upstreams {
            let tls = match &u.tls {
                Some(t) => {
                    let client = Arc::new(tls::ClientTls::load(t.files(u.protocol)).map_err(|source| {
                        StartError::Tls {
                            what: format!("upstreams.{name}.tls"),
                            source,
                        }
                    })?);
                    abort_on_shutdown(
                        &mut tasks,
                        &shutdown_rx,
                        client.spawn_reloader(t.reload_interval.0),
                    );
                    if client.not_after().is_some() {
                        let cert = client.clone();
                        let label = format!("upstream:{name}");
                        certs.push(admin::LoadedCert {
                            gauge: metrics.cert_expiry(&label),
                            name: label,
                            not_after: Box::new(move || cert.not_after()),
                        });
                    }
                    Some(client)
                }
                None => None,
            };
            let upstream = Upstream::new(UpstreamSettings {
                name: name.as_str().into(),
                endpoints: u.endpoints.clone(),
                protocol: u.protocol,
                connect_timeout: u.connect_timeout.0,
                resolve_interval: u.resolve_interval.0,
                tls,
            })
            .await;
            if upstream.needs_resolving() {
                abort_on_shutdown(&mut tasks, &shutdown_rx, upstream.spawn_resolver());
            }
            let destination = Arc::new(Destination {
                metrics: metrics.route("outbound", name),
                resilience: Resilience::new(u, metrics.resilience(name, u.breaker.enabled)),
                upstream,
            });
            for host in std::iter::once(name).chain(&u.hosts) {
                routes.insert(host.to_ascii_lowercase(), destination.clone());
            }
            by_name.insert(name.clone(), destination.clone());
            upstreams.push(destination);
        }
        let outbound = Arc::new(Outbound {
            shared: shared.clone(),
            default_route: ocfg
                .default_upstream
                .as_ref()
                .and_then(|n| by_name.get(n).cloned()),
            routes,
            unrouted: unrouted
                .insert(metrics.route("outbound", metrics::UNROUTED))
                .clone(),
            user_header: ocfg.user_header.clone(),
        });
        let open = metrics.connections("outbound");
        let builder = server::http_builder(&cfg.limits);
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let handler = move |req, peer| outbound.clone().handle(req, peer);
            server::serve("outbound", listener, None, builder, handler, rx, grace, open).await;
        });
    }

    let open = metrics.connections("admin");
    let admin_state = Arc::new(admin::Admin {
        metrics: Arc::new(metrics),
        ready: AtomicBool::new(true),
        upstreams,
        inbound: inbound_metrics,
        unrouted,
        tls_failures,
        sink,
        certs,
        info,
        panels: admin::Panels::default(),
    });
    {
        let state = admin_state.clone();
        let builder = server::http_builder(&cfg.limits);
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let handler = move |req, peer| state.clone().handle(req, peer);
            server::serve("admin", admin_listener, None, builder, handler, rx, grace, open).await;
        });
    }

    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        inbound = %show(inbound_addr),
        outbound = %show(outbound_addr),
        admin = %admin_addr,
        "kawal started"
    );
    Ok(Kawal {
        inbound: inbound_addr,
        outbound: outbound_addr,
        admin: admin_addr,
        admin_state,
        shutdown,
        tasks,
        exporter,
    })
}

/// Re-reads the JWKS file, or fetches the URL, every `every`, so rotated keys
/// are picked up; a failure is logged and the old keys stay. With a URL, a
/// token naming an unknown `kid` also asks for an early fetch, honoured at
/// most once per [`auth::jwks_url::EARLY_REFRESH_MIN_GAP`] (that request
/// itself has already been rejected; nothing on the request path waits).
fn spawn_jwks_reloader(
    verifier: &Arc<auth::JwtVerifier>,
    fetcher: Option<auth::JwksFetcher>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    use tokio::time::Instant;
    let wanted = verifier.refresh_wanted();
    let verifier = Arc::downgrade(verifier);
    tokio::spawn(async move {
        let mut next = Instant::now() + every;
        let mut last_early: Option<Instant> = None;
        let mut failing = false;
        loop {
            let early = tokio::select! {
                _ = tokio::time::sleep_until(next) => false,
                _ = wanted.notified() => true,
            };
            if early {
                if last_early.is_some_and(|t| t.elapsed() < auth::jwks_url::EARLY_REFRESH_MIN_GAP) {
                    continue;
                }
                last_early = Some(Instant::now());
            } else {
                next = Instant::now() + every;
            }
            let Some(v) = verifier.upgrade() else { return };
            let result = match &fetcher {
                Some(f) => match f.fetch().await {
                    Ok(bytes) => tokio::task::spawn_blocking(move || v.reload_fetched(&bytes)).await,
                    Err(e) => Ok(Err(e)),
                },
                None => tokio::task::spawn_blocking(move || v.reload()).await,
            };
            let failed = matches!(result, Ok(Err(_)));
            match result {
                // Once per outage, not every interval while it lasts.
                Ok(Err(e)) if !failing => {
                    tracing::warn!(event = "jwks_reload_failed", early, error = %e, "JWKS reload failed, keeping the old keys");
                }
                Ok(Ok(())) if failing => {
                    tracing::info!(
                        event = "jwks_reloaded",
                        early,
                        "JWKS reloaded again after failures"
                    );
                }
                Ok(Ok(())) if early => {
                    tracing::info!(
                        event = "jwks_reloaded",
                        early,
                        "JWKS fetched early after an unknown kid"
                    );
                }
                _ => {}
            }
            failing = failed;
        }
    })
}

/// Background work (DNS refresh, certificate reload) ends with the listeners.
fn abort_on_shutdown(
    tasks: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
) {
    let mut rx = shutdown.clone();
    tasks.spawn(async move {
        let _ = rx.changed().await;
        task.abort();
    });
}

impl Kawal {
    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period), and returns when every listener is closed.
    pub async fn shutdown(mut self) {
        self.admin_state.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some((exporter, bound)) = self.exporter {
            let _ = tokio::time::timeout(bound, exporter).await;
        }
        tracing::info!("kawal stopped");
    }
}
