//! An upstream: a named set of endpoints with one pooled client.
//!
//! Endpoints given as `name:port` are resolved again every
//! `resolve_interval`, so a compose service or a headless Kubernetes service
//! is followed as its instances come and go. The endpoint for each request is
//! chosen by power of two choices on least outstanding requests: two random
//! endpoints, the less busy one wins (cheap, and it steers away from a slow
//! instance without global state).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;

use crate::body::{body_error_in, BoxBody};
use crate::config::{HostPort, Protocol};
use crate::error::{error_chain, find, ProxyError};
use crate::proxy::connect::{Connector, TlsConnectError};
use crate::tls::ClientTls;

/// How to reach one upstream.
pub struct UpstreamSettings {
    /// Name used in logs, metrics and errors.
    pub name: Arc<str>,
    /// Configured endpoints (IPs or DNS names).
    pub endpoints: Vec<HostPort>,
    /// HTTP version to speak.
    pub protocol: Protocol,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// DNS refresh period.
    pub resolve_interval: Duration,
    /// TLS toward the endpoints, if any.
    pub tls: Option<Arc<ClientTls>>,
}

/// One address of an upstream, with its load.
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    authority: Authority,
    in_flight: AtomicUsize,
}

/// A live upstream.
pub struct Upstream {
    /// Name used in logs, metrics and errors.
    pub name: Arc<str>,
    settings: UpstreamSettings,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    client: Client<Connector, BoxBody>,
}

/// Decrements an endpoint's outstanding count when the attempt ends.
struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Upstream ===

impl Upstream {
    /// Builds the upstream and resolves its endpoints once.
    pub async fn new(settings: UpstreamSettings) -> Arc<Upstream> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(settings.protocol == Protocol::Http2)
            .build(Connector::new(
                connector,
                settings.tls.clone(),
                dns_name(&settings.endpoints),
            ));
        let up = Arc::new(Upstream {
            name: settings.name.clone(),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            settings,
            client,
        });
        up.resolve().await;
        up
    }

    /// Whether some endpoint is a DNS name that needs re-resolving.
    pub fn needs_resolving(&self) -> bool {
        self.settings.endpoints.iter().any(is_dns_name)
    }

    /// Re-resolves every `resolve_interval` until the returned task is aborted.
    pub fn spawn_resolver(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let up = Arc::downgrade(self);
        let every = self.settings.resolve_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match up.upgrade() {
                    Some(up) => up.resolve().await,
                    None => return,
                }
            }
        })
    }

    /// Resolves all endpoints; keeps the old set for a name that fails to
    /// resolve (a DNS hiccup must not empty a healthy upstream).
    async fn resolve(&self) {
        let current = self.endpoints.load_full();
        let mut addrs = Vec::new();
        for ep in &self.settings.endpoints {
            match tokio::net::lookup_host((ep.host.as_str(), ep.port)).await {
                Ok(found) => addrs.extend(found),
                Err(e) => {
                    tracing::warn!(upstream = %self.name, endpoint = %ep.host, error = %e, "endpoint did not resolve");
                    addrs.extend(
                        current
                            .iter()
                            .filter(|c| c.addr.port() == ep.port && is_dns_name(ep))
                            .map(|c| c.addr),
                    );
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        if addrs.len() == current.len() && addrs.iter().zip(current.iter()).all(|(a, c)| *a == c.addr) {
            return;
        }
        // Keep existing endpoints (and their load counters) that are still there.
        let next: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|c| c.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint {
                            addr,
                            authority: addr
                                .to_string()
                                .parse()
                                .expect("a socket address is an authority"),
                            in_flight: AtomicUsize::new(0),
                        })
                    })
            })
            .collect();
        tracing::info!(upstream = %self.name, endpoints = ?next.iter().map(|e| e.addr).collect::<Vec<_>>(), "endpoints updated");
        self.endpoints.store(Arc::new(next));
    }

    /// The current endpoint addresses, for the admin port.
    pub fn endpoint_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.load().iter().map(|e| e.addr).collect()
    }

    /// Power of two choices on least outstanding requests.
    fn pick(&self) -> Option<Arc<Endpoint>> {
        let eps = self.endpoints.load();
        let n = eps.len();
        let chosen = match n {
            0 => return None,
            1 => &eps[0],
            _ => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (ea, eb) = (&eps[a], &eps[b]);
                if eb.in_flight.load(Ordering::Relaxed) < ea.in_flight.load(Ordering::Relaxed) {
                    eb
                } else {
                    ea
                }
            }
        };
        Some(chosen.clone())
    }

    /// Sends one attempt to one endpoint and waits up to `timeout` for the
    /// response head. The request's URI carries only path and query; the
    /// endpoint is chosen here.
    pub async fn send(
        &self,
        mut req: Request<BoxBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let ep = self
            .pick()
            .ok_or_else(|| ProxyError::NoEndpoint(self.name.to_string()))?;
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(ep.clone());

        let mut uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(ep.authority.clone());
        if let Some(pq) = req.uri().path_and_query() {
            uri = uri.path_and_query(pq.clone());
        }
        *req.uri_mut() = uri.build().map_err(|e| ProxyError::Internal(e.to_string()))?;
        *req.version_mut() = match self.settings.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::Http2 => Version::HTTP_2,
        };

        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: self.name.to_string(),
                after: timeout,
                connect: false,
            }),
        }
    }

    /// Maps a client error to what happened, for the status and the log.
    fn classify(&self, err: hyper_util::client::legacy::Error) -> ProxyError {
        let upstream = self.name.to_string();
        // The client's own request body may be why the exchange failed.
        if let Some(e) = body_error_in(&err) {
            return e.into();
        }
        let cause = error_chain(&err);
        if let Some(tls) = find::<TlsConnectError>(&err) {
            return ProxyError::UpstreamTls {
                upstream,
                cause: tls.0.clone(),
            };
        }
        if err.is_connect() {
            if is_timeout(&err) {
                return ProxyError::UpstreamTimeout {
                    upstream,
                    after: self.settings.connect_timeout,
                    connect: true,
                };
            }
            return ProxyError::UpstreamConnect { upstream, cause };
        }
        ProxyError::UpstreamReset { upstream, cause }
    }
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    find::<std::io::Error>(err).is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

/// Whether an endpoint is given by name (resolved, re-resolved) rather than IP.
fn is_dns_name(endpoint: &HostPort) -> bool {
    endpoint.host.parse::<std::net::IpAddr>().is_err()
}

/// The first endpoint given by DNS name: the name TLS expects the server to
/// have, when no `server_identity` says otherwise.
fn dns_name(endpoints: &[HostPort]) -> Option<Arc<str>> {
    endpoints
        .iter()
        .find(|e| is_dns_name(e))
        .map(|e| Arc::from(e.host.as_str()))
}
