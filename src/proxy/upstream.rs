//! An upstream: a named set of endpoints with pooled connections.
//!
//! Endpoints given as `name:port` are resolved again every
//! `resolve_interval`, so a compose service or a headless Kubernetes service
//! is followed as its instances come and go. The endpoint for each request is
//! chosen by power of two choices on least outstanding requests: two random
//! endpoints, the less busy one wins (cheap, and it steers away from a slow
//! instance without global state). HTTP/1.1 connections are pooled per
//! endpoint (`pool`); HTTP/2 multiplexes every request to an endpoint over
//! one connection of its own.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use tokio::time::Instant;

use crate::body::BoxBody;
use crate::config::{HostPort, Protocol};
use crate::connect::{Conn, Connector, TlsConnectError};
use crate::error::{error_chain, find, ProxyError};
use crate::headers;
use crate::proxy::pool::{IdlePool, PooledConn};
use crate::timer::within;
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

/// One address of an upstream, with its load and idle connections.
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    authority: Authority,
    /// `Host` for a request that arrived without one (HTTP/2 from the client).
    host: HeaderValue,
    in_flight: AtomicUsize,
    idle: Arc<IdlePool>,
    /// The HTTP/2 connection, once made. Locked while connecting, so
    /// requests arriving meanwhile wait for that one instead of each dialing.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<BoxBody>>>,
}

/// A live upstream.
pub struct Upstream {
    /// Name used in logs, metrics and errors.
    pub name: Arc<str>,
    settings: UpstreamSettings,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    connector: Connector,
    /// Per configured endpoint: its name failed to resolve last time (so a
    /// DNS outage is logged once when it starts and once when it ends).
    unresolved: Vec<std::sync::atomic::AtomicBool>,
}

/// Decrements an endpoint's outstanding count when the exchange ends: at a
/// failure, or when the response body has been read or dropped.
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream response body; an HTTP/1.1 connection rides along and goes
/// back to its pool once the body has ended cleanly, and the endpoint counts
/// the exchange as outstanding (for load balancing) until then.
pub struct UpstreamBody {
    inner: Incoming,
    reuse: Option<(PooledConn, Arc<IdlePool>)>,
    in_flight: Option<InFlight>,
}

impl UpstreamBody {
    /// A body whose connection is not pooled here (HTTP/2).
    pub fn plain(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner,
            reuse: None,
            in_flight: None,
        }
    }

    /// A body that hands `conn` back to `pool` when it ends; a response
    /// without a body hands it back at once.
    pub fn pooled(inner: Incoming, conn: PooledConn, pool: Arc<IdlePool>) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner,
            reuse: Some((conn, pool)),
            in_flight: None,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Keeps the endpoint's outstanding count up until the body ends.
    pub fn holding(mut self, in_flight: InFlight) -> UpstreamBody {
        if !self.inner.is_end_stream() {
            self.in_flight = Some(in_flight);
        }
        self
    }

    fn release(&mut self) {
        self.in_flight = None;
        if let Some((conn, pool)) = self.reuse.take() {
            pool.put(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // A broken exchange leaves the connection in no state to reuse.
            Poll::Ready(Some(Err(_))) => {
                self.reuse = None;
                self.in_flight = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end without the final poll (a length-delimited body
        // whose last frame was taken): still reusable. Dropped midway: the
        // sender goes with it and hyper closes the connection.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

// === impl Upstream ===

impl Upstream {
    /// Builds the upstream and resolves its endpoints once.
    pub async fn new(settings: UpstreamSettings) -> Arc<Upstream> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let connector = Connector::new(connector, settings.tls.clone(), dns_name(&settings.endpoints));
        let up = Arc::new(Upstream {
            name: settings.name.clone(),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            unresolved: settings.endpoints.iter().map(|_| Default::default()).collect(),
            settings,
            connector,
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
        for (ep, unresolved) in self.settings.endpoints.iter().zip(&self.unresolved) {
            match tokio::net::lookup_host((ep.host.as_str(), ep.port)).await {
                Ok(found) => {
                    if unresolved.swap(false, Ordering::Relaxed) {
                        tracing::info!(event = "endpoint_resolved", upstream = %self.name, endpoint = %ep.host, "endpoint resolves again");
                    }
                    addrs.extend(found)
                }
                Err(e) => {
                    if !unresolved.swap(true, Ordering::Relaxed) {
                        tracing::warn!(event = "endpoint_unresolved", upstream = %self.name, endpoint = %ep.host, error = %e, "endpoint did not resolve; keeping its last addresses");
                    }
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
                        let text = addr.to_string();
                        Arc::new(Endpoint {
                            addr,
                            authority: text.parse().expect("a socket address is an authority"),
                            host: HeaderValue::from_str(&text).expect("a socket address is a header value"),
                            in_flight: AtomicUsize::new(0),
                            idle: Arc::default(),
                            h2: tokio::sync::Mutex::default(),
                        })
                    })
            })
            .collect();
        let listed: Vec<String> = next.iter().map(|e| e.addr.to_string()).collect();
        tracing::info!(event = "endpoints_updated", upstream = %self.name, endpoints = %serde_json::json!(listed), "endpoints updated");
        self.endpoints.store(Arc::new(next));
    }

    /// The current endpoints and their outstanding requests, for the admin port.
    pub fn endpoint_loads(&self) -> Vec<(SocketAddr, usize)> {
        let eps = self.endpoints.load();
        eps.iter()
            .map(|e| (e.addr, e.in_flight.load(Ordering::Relaxed)))
            .collect()
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
    /// endpoint is chosen here and written to `endpoint` (for the log).
    pub async fn send(
        &self,
        req: Request<BoxBody>,
        timeout: Duration,
        endpoint: &mut Option<SocketAddr>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let ep = self
            .pick()
            .ok_or_else(|| ProxyError::NoEndpoint(self.name.to_string()))?;
        *endpoint = Some(ep.addr);
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(ep.clone());
        // A failure the client's body caused is the client's (`upload`).
        let (req, upload) = super::upload::track(req);
        let sent = match self.settings.protocol {
            Protocol::Http1 => self.send_h1(&ep, req, timeout).await,
            // Boxed: the HTTP/2 path's state is twice the HTTP/1 one's,
            // and every request's future would carry (and move) it.
            Protocol::Http2 => Box::pin(tokio::time::timeout(timeout, self.send_h2(&ep, req)))
                .await
                .unwrap_or_else(|_| Err(self.timed_out(timeout))),
        };
        match (sent, upload) {
            (Err(e), Some(upload)) => Err(upload.blame(e)),
            (sent, _) => sent.map(|res| res.map(|body| body.holding(in_flight))),
        }
    }

    /// HTTP/1.1 on an idle connection of the endpoint, else a new one, all
    /// under the connection's own timer (`pool`). A reused connection may
    /// have been closed by the server a moment ago: a request it never sent
    /// goes out again on the next one.
    async fn send_h1(
        &self,
        ep: &Endpoint,
        mut req: Request<BoxBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let deadline = Instant::now() + timeout;
        *req.version_mut() = Version::HTTP_11;
        if !headers::has(req.headers(), &HOST) {
            req.headers_mut().insert(HOST, ep.host.clone());
        }
        while let Some(mut conn) = ep.idle.take() {
            let PooledConn { sender, timer } = &mut conn;
            match within(timer, deadline, sender.ready()).await {
                None => return Err(self.timed_out(timeout)),
                Some(Err(_)) => continue,
                Some(Ok(())) => {}
            }
            match within(timer, deadline, sender.try_send_request(req)).await {
                None => return Err(self.timed_out(timeout)),
                Some(Ok(res)) => return Ok(res.map(|b| UpstreamBody::pooled(b, conn, ep.idle.clone()))),
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(self.classify(&e.into_error(), false)),
                },
            }
        }
        let mut timer = Box::pin(tokio::time::sleep_until(deadline));
        let Some(sender) = within(&mut timer, deadline, self.connect_h1(ep)).await else {
            return Err(self.timed_out(timeout));
        };
        let mut conn = PooledConn {
            sender: sender?,
            timer,
        };
        let PooledConn { sender, timer } = &mut conn;
        match within(timer, deadline, sender.send_request(req)).await {
            None => Err(self.timed_out(timeout)),
            Some(Ok(res)) => Ok(res.map(|b| UpstreamBody::pooled(b, conn, ep.idle.clone()))),
            Some(Err(e)) => Err(self.classify(&e, false)),
        }
    }

    /// An attempt that got no response head within `after`.
    fn timed_out(&self, after: Duration) -> ProxyError {
        ProxyError::UpstreamTimeout {
            upstream: self.name.to_string(),
            after,
            connect: false,
        }
    }

    /// A new connection to the endpoint: TCP, then TLS if configured.
    async fn dial(&self, ep: &Endpoint) -> Result<Conn, ProxyError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(ep.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| ProxyError::Internal(e.to_string()))?;
        tower_service::Service::call(&mut self.connector.clone(), uri)
            .await
            .map_err(|e| self.classify(&*e, true))
    }

    /// A new HTTP/1.1 connection, driven by its own task.
    async fn connect_h1(&self, ep: &Endpoint) -> Result<SendRequest<BoxBody>, ProxyError> {
        let io = self.dial(ep).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| self.classify(&e, true))?;
        tokio::spawn(async move {
            // with_upgrades: a 101 hands the connection over (WebSocket).
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// HTTP/2 on the endpoint's one connection. The request's authority
    /// goes in `:authority`, as HTTP/2 requires (RFC 9113 §8.3.1), not in
    /// a Host header beside it (a peer must refuse the two when they differ,
    /// and the endpoint's address would differ from the routed name).
    async fn send_h2(
        &self,
        ep: &Endpoint,
        mut req: Request<BoxBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let authority = req
            .headers_mut()
            .remove(HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .unwrap_or_else(|| ep.authority.clone());
        let scheme = if self.settings.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let mut uri = Uri::builder().scheme(scheme).authority(authority);
        if let Some(pq) = req.uri().path_and_query() {
            uri = uri.path_and_query(pq.clone());
        }
        *req.uri_mut() = uri.build().map_err(|e| ProxyError::Internal(e.to_string()))?;
        *req.version_mut() = Version::HTTP_2;
        let mut sender = self.h2_connection(ep).await?;
        let sent = match sender.try_send_request(req).await {
            // The connection went away before taking the request (GOAWAY,
            // close): once more on a new one.
            Err(mut e) => match e.take_message() {
                Some(unsent) => self.h2_connection(ep).await?.try_send_request(unsent).await,
                None => Err(e),
            },
            sent => sent,
        };
        match sent {
            Ok(res) => Ok(res.map(UpstreamBody::plain)),
            Err(e) => Err(self.classify(&e.into_error(), false)),
        }
    }

    /// The endpoint's HTTP/2 connection, made first if there is none open.
    async fn h2_connection(&self, ep: &Endpoint) -> Result<http2::SendRequest<BoxBody>, ProxyError> {
        let mut slot = ep.h2.lock().await;
        if let Some(open) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(open.clone());
        }
        // Boxed: dialing and the handshake hold kilobytes of state, which
        // would otherwise sit in (and be moved with) every request's future.
        let sender = Box::pin(self.h2_handshake(ep)).await?;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// A new HTTP/2 connection, driven by its own task.
    async fn h2_handshake(&self, ep: &Endpoint) -> Result<http2::SendRequest<BoxBody>, ProxyError> {
        let io = self.dial(ep).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(io)
            .await
            .map_err(|e| self.classify(&e, true))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Maps a failed exchange to what happened, for the status and the log;
    /// `connect`: the connection was never established.
    fn classify(&self, err: &(dyn std::error::Error + 'static), connect: bool) -> ProxyError {
        // A failure of the client's own request body is re-blamed by
        // `upload`, which saw it happen.
        let upstream = self.name.to_string();
        let cause = error_chain(err);
        if let Some(tls) = find::<TlsConnectError>(err) {
            return ProxyError::UpstreamTls {
                upstream,
                cause: tls.0.clone(),
            };
        }
        if let Some(rustls::Error::AlertReceived(alert)) = find::<rustls::Error>(err) {
            // TLS 1.3: the server judges our client certificate after our side
            // of the handshake is done, so its refusal arrives on first read.
            return ProxyError::UpstreamTls {
                upstream,
                cause: format!("the upstream refused the TLS session: {alert:?}"),
            };
        }
        if connect {
            if is_timeout(err) {
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
