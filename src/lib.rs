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
mod build;
pub mod cache;
pub mod config;
pub mod connect;
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
pub mod reload;
pub mod resilience;
pub mod server;
pub mod signals;
pub mod timer;
pub mod tls;
pub mod trace;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, LogLevel};
use crate::log::Sink;
use crate::metrics::Metrics;

/// A running kawal: its bound addresses and the handle to stop it.
pub struct Kawal {
    /// Bound inbound address, if inbound is configured.
    pub inbound: Option<SocketAddr>,
    /// Bound outbound address, if outbound is configured.
    pub outbound: Option<SocketAddr>,
    /// Bound admin address.
    pub admin: SocketAddr,
    admin_state: Arc<admin::Admin>,
    /// Stops the inbound and outbound listeners.
    stop_proxy: watch::Sender<bool>,
    /// Their accept loops (each returns when its connections are drained).
    proxy_tasks: JoinSet<()>,
    /// Stops the admin listener and background work, after the proxy listeners.
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    drain_delay: std::time::Duration,
    reloader: reload::Reloader,
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
    let shared = Arc::new(reload::shared(
        &cfg,
        &sink,
        spans,
        cfg.log.level >= LogLevel::Info,
    ));
    let grace = cfg.service.shutdown_grace.0;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (stop_proxy, stop_proxy_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut proxy_tasks = JoinSet::new();
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

    let inbound_tls = match &cfg.inbound {
        Some(icfg) => inbound_tls(icfg, &metrics, &mut tasks, &shutdown_rx)?,
        None => None,
    };
    let inbound_cert = inbound_tls.as_ref().map(|t| t.tls.clone());
    let tls_failures = inbound_tls.as_ref().map(|t| t.failures.clone());
    let rate_limits = match &cfg.inbound {
        Some(icfg) => {
            let limits = ratelimit::RateLimits::new(&icfg.rate_limits, metrics.registry_mut())
                .map_err(StartError::Auth)?;
            let limits = Arc::new(limits);
            if !limits.is_empty() {
                abort_on_shutdown(&mut tasks, &shutdown_rx, limits.spawn_forget_idle());
            }
            Some(limits)
        }
        None => None,
    };
    // The guard keeps its store (and its Redis connection) for the process:
    // built once, as it registers metrics; a change needs a restart.
    let guard = match cfg.inbound.as_ref().and_then(|i| i.guard.as_ref()) {
        Some(g) => Some(Arc::new(
            guard::Guard::new(g, &cfg.service.name, metrics.registry_mut()).map_err(StartError::Guard)?,
        )),
        None => None,
    };
    let reload_metrics = reload::ReloadMetrics::register(metrics.registry_mut());
    let cache_metrics = cache::metrics::Families::register(metrics.registry_mut());
    let built = build::build(
        &cfg,
        &shared,
        &metrics,
        &cache_metrics,
        rate_limits.clone(),
        guard.clone(),
        None,
    )
    .await?;
    for task in built.background {
        abort_on_shutdown(&mut tasks, &shutdown_rx, task);
    }
    // Reloads keep these handles (build::build reuses them), so the page's
    // figures run on across a reload.
    let inbound_metrics = built.inbound.as_ref().map(|i| i.metrics.clone());
    let unrouted = built.outbound.as_ref().map(|o| o.unrouted.clone());
    // Each direction's state is loaded per request, so a reload swaps it
    // under open connections.
    let inbound = built.inbound.map(|i| Arc::new(ArcSwap::new(i)));
    let outbound = built.outbound.map(|o| Arc::new(ArcSwap::new(o)));
    if let (Some(listener), Some(current)) = (inbound_listener, inbound.clone()) {
        let open = metrics.connections("inbound");
        let builder = server::http_builder(&cfg.limits);
        let rx = stop_proxy_rx.clone();
        proxy_tasks.spawn(async move {
            let handler = move |req, peer| current.load_full().handle(req, peer);
            server::serve(
                "inbound",
                listener,
                inbound_tls,
                builder,
                handler,
                rx,
                grace,
                open,
            )
            .await;
        });
    }
    if let (Some(listener), Some(current)) = (outbound_listener, outbound.clone()) {
        let open = metrics.connections("outbound");
        let builder = server::http_builder(&cfg.limits);
        let rx = stop_proxy_rx.clone();
        proxy_tasks.spawn(async move {
            let handler = move |req, peer| current.load_full().handle(req, peer);
            server::serve("outbound", listener, None, builder, handler, rx, grace, open).await;
        });
    }

    let open = metrics.connections("admin");
    let mut certs: Vec<_> = inbound_cert
        .iter()
        .map(|c| reload::inbound_cert(c, &metrics))
        .collect();
    certs.extend(reload::client_certs(&built.clients, &metrics));
    let admin_state = Arc::new(admin::Admin {
        metrics: Arc::new(metrics),
        ready: AtomicBool::new(true),
        upstreams: ArcSwap::from_pointee(built.upstreams),
        inbound: inbound_metrics,
        unrouted,
        tls_failures,
        sink: sink.clone(),
        certs: ArcSwap::from_pointee(certs),
        info,
        panels: admin::Panels {
            guard: guard
                .clone()
                .map(|g| -> admin::Panel { Box::new(move || g.panel()) }),
        },
        caches: ArcSwap::from_pointee(built.caches),
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

    let (reloader, watcher) = reload::spawn(reload::Live {
        start_cfg: cfg.clone(),
        cfg: cfg.clone(),
        shared,
        sink,
        admin: admin_state.clone(),
        inbound,
        outbound,
        rate_limits,
        guard,
        cache_metrics,
        clients: built.clients,
        inbound_cert,
        background: Vec::new(),
        metrics: reload_metrics,
    });
    abort_on_shutdown(&mut tasks, &shutdown_rx, watcher);
    // An absent listener (or a config given as text) is omitted, not "".
    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    tracing::info!(
        event = "started",
        version = env!("CARGO_PKG_VERSION"),
        config = cfg.source.as_deref().map(|p| p.display().to_string()).as_deref(),
        inbound = show(inbound_addr).as_deref(),
        outbound = show(outbound_addr).as_deref(),
        admin = %admin_addr,
        "kawal started"
    );
    Ok(Kawal {
        inbound: inbound_addr,
        outbound: outbound_addr,
        admin: admin_addr,
        admin_state,
        stop_proxy,
        proxy_tasks,
        shutdown,
        tasks,
        drain_delay: cfg.service.drain_delay.0,
        exporter,
        reloader,
    })
}

/// TLS termination for the inbound listener (start only: a listener's TLS
/// mode needs a restart; its files rotate without one).
fn inbound_tls(
    icfg: &config::Inbound,
    metrics: &Metrics,
    tasks: &mut JoinSet<()>,
    shutdown_rx: &watch::Receiver<bool>,
) -> Result<Option<server::TlsListener>, StartError> {
    let Some(t) = &icfg.tls else {
        tracing::warn!(listen = %icfg.listen.0, "inbound listener is plaintext: no [inbound.tls] configured");
        return Ok(None);
    };
    let server = Arc::new(tls::ServerTls::load(t.files()).map_err(|source| StartError::Tls {
        what: "inbound.tls".into(),
        source,
    })?);
    abort_on_shutdown(tasks, shutdown_rx, server.spawn_reloader(t.reload_interval.0));
    if t.client_ca.is_none() {
        tracing::warn!("inbound TLS without client_ca: clients are not authenticated (no mTLS)");
    }
    Ok(Some(server::TlsListener {
        tls: server,
        handshake_timeout: t.handshake_timeout.0,
        failures: metrics.tls_failures("inbound"),
    }))
}

/// Re-reads the JWKS file, or fetches the URL, every `every`, so rotated keys
/// are picked up; a failure is logged and the old keys stay. With a URL, a
/// token naming an unknown `kid` also asks for an early fetch, honoured at
/// most once per [`auth::jwks_url::EARLY_REFRESH_MIN_GAP`] (that request
/// itself has already been rejected; nothing on the request path waits).
pub(crate) fn spawn_jwks_reloader(
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
    /// Reloads the config file now (what SIGHUP does).
    pub fn reloader(&self) -> reload::Reloader {
        self.reloader.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period), and returns when every listener is closed: [`Kawal::drain`]
    /// without the drain delay.
    pub async fn shutdown(self) {
        self.drain_after(std::time::Duration::ZERO).await
    }

    /// What SIGTERM does: `/ready` answers 503 at once while every listener
    /// keeps serving for `[service] drain_delay` (the orchestrator removes
    /// the endpoint meanwhile), then the inbound and outbound listeners stop
    /// accepting, idle connections close, busy ones close after their
    /// request (`Connection: close`, HTTP/2 GOAWAY), up to `shutdown_grace`.
    /// The admin port serves until the end.
    pub async fn drain(self) {
        let delay = self.drain_delay;
        self.drain_after(delay).await
    }

    async fn drain_after(mut self, delay: std::time::Duration) {
        self.admin_state.ready.store(false, Ordering::Release);
        if !delay.is_zero() {
            tracing::info!(event = "draining", drain_delay = ?delay, "not ready: still serving for the drain delay");
            tokio::time::sleep(delay).await;
        }
        let _ = self.stop_proxy.send(true);
        while self.proxy_tasks.join_next().await.is_some() {}
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some((exporter, bound)) = self.exporter {
            let _ = tokio::time::timeout(bound, exporter).await;
        }
        tracing::info!(event = "stopped", ended = "drained", "kawal stopped");
    }
}
