//! Outbound: the local app's calls to other services.
//!
//! The app sends plain HTTP to 127.0.0.1 (as to an HTTP proxy, absolute-form
//! URI, or with a Host naming the service). One request, top to bottom:
//! 1. trace: continue the app's trace context (W3C or B3) or start one
//! 2. check: framing (smuggling), size limits, one normalized path
//! 3. route: the one authority (absolute-form URI wins over Host) picks the
//!    upstream; unknown host → 404 naming it, unless a default is configured
//! 4. rewrite: strip hop-by-hop headers, Host = the routed authority
//! 5. cache (`[upstreams.NAME.cache]`): a fresh hit answers here; see `cache`
//! 6. forward to an endpoint of the upstream (pooled), through the circuit
//!    breaker, with per-try deadline and retries (backoff, budget): see
//!    `retry`; each attempt is a CLIENT span and carries its own traceparent
//! 7. respond: the upstream's response streamed back, or kawal's error

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{request, Request, Response};
use hyper::body::Incoming;

use super::exchange::ClientBody;
use super::retry::{Attempt, ReplayBody, Resilience};
use super::upstream::Upstream;
use super::{check_head, guard_request_body, prepare_forward, Direction, Exchange, Reply, Shared};
use crate::cache::{Cache, Step};
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::RouteMetrics;
use crate::server::OpenRequest;

/// Where a routed request goes: an upstream with its retry/breaker state
/// and metric handles.
pub struct Destination {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// Retry policy, budget and circuit breaker.
    pub resilience: Resilience,
    /// Its metrics handles.
    pub metrics: RouteMetrics,
    /// Its response cache, when configured.
    pub cache: Option<Arc<Cache>>,
}

impl Destination {
    /// A cache's background refresh of `parts` (already rewritten): sent
    /// as the app's requests are, its answer collected whole.
    fn refresh(
        self: &Arc<Self>,
        parts: request::Parts,
        shared: &Arc<Shared>,
        max: u64,
    ) -> impl std::future::Future<Output = Option<(http::response::Parts, Bytes)>> + Send + 'static {
        let (dest, shared) = (self.clone(), shared.clone());
        async move {
            let trace = shared.propagator.start(&parts.headers);
            let mut record = Default::default();
            let attempt = Attempt {
                trace: &trace,
                shared: &shared,
                record: &mut record,
            };
            let body = ReplayBody::Kept(Bytes::new());
            let res = dest
                .resilience
                .send(&dest.upstream, parts, body, attempt)
                .await
                .ok()?;
            crate::cache::fill::collect(res, max).await
        }
    }
}

/// The outbound direction: the routing table and what requests need.
pub struct Outbound {
    /// Process-wide settings.
    pub shared: Arc<Shared>,
    /// Lower-cased host (with or without port) → route. foldhash, not
    /// SipHash: the table is fixed at start, so a client's names are only
    /// looked up, never inserted (HashDoS needs inserts), and foldhash
    /// hashes a short host in a fraction of SipHash's work.
    pub routes: foldhash::HashMap<String, Arc<Destination>>,
    /// Where unknown hosts go, when configured.
    pub default_route: Option<Arc<Destination>>,
    /// Metrics for requests that matched no route.
    pub unrouted: RouteMetrics,
    /// `[outbound] user_header`: the app's name for its end user.
    pub user_header: Option<http::HeaderName>,
}

impl Outbound {
    /// Handles one outbound request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        open_request: OpenRequest,
    ) -> Result<Response<ClientBody>, Infallible> {
        let (mut parts, body) = req.into_parts();
        // 1. trace
        let trace = self.shared.propagator.start(&parts.headers);
        let mut ex = Exchange::new(
            Direction::Outbound,
            &parts,
            open_request.peer,
            trace,
            &self.shared,
            self.unrouted.clone(),
        );
        if let Some(name) = &self.user_header {
            ex.user_id = parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(Arc::from);
        }
        let result = async {
            // 2. check
            let target = check_head(&parts, &self.shared.limits)?;
            ex.uri = target.clone();
            // 3. route
            let authority = headers::check_authority(parts.version, &parts.uri, &parts.headers)
                .map_err(|e| ProxyError::BadRequest(e.to_string()))?
                .ok_or_else(|| ProxyError::BadRequest("request names no host".into()))?;
            ex.authority = Some(authority.clone());
            let route = self.route(&authority)?;
            ex.upstream = Some(route.upstream.name.clone());
            ex.set_metrics(route.metrics.clone());
            // 4. rewrite
            ex.upgrade = prepare_forward(&mut parts, target, Some(&authority));
            // 5. cache: above retry and the breaker, so a fresh hit costs no
            //    connection and stale-if-error can answer for an open breaker
            let pending = match &route.cache {
                Some(cache) => {
                    let host = authority.to_str().unwrap_or_default();
                    let refresh = |req| route.refresh(req, &self.shared, cache.max_object());
                    match cache.on_request(&mut parts, host, &mut ex.cache, refresh).await? {
                        Step::Answer(res) => return Ok(Reply::Own(res)),
                        Step::Forward(pending) => Some((cache, pending)),
                    }
                }
                None => None,
            };
            // 6. forward: breaker, per-try deadline, retries with backoff and
            //    budget; each attempt is a child span with its own traceparent
            let body = guard_request_body(body, &self.shared.limits, ex.bytes_in.clone());
            let body = route.resilience.prepare_body(&parts, body).await?;
            let attempt = Attempt {
                trace: &trace,
                shared: &self.shared,
                record: &mut ex.attempts,
            };
            let res = route.resilience.send(&route.upstream, parts, body, attempt).await;
            match pending {
                Some((cache, pending)) => ex.cached(cache, pending, res),
                None => Ok::<_, ProxyError>(Reply::from(res?)),
            }
        }
        .await;

        // 7. respond
        Ok(ex.respond(result, open_request))
    }

    /// Finds the upstream for an authority: exact `host:port`, then `host`.
    fn route(&self, authority: &http::HeaderValue) -> Result<&Arc<Destination>, ProxyError> {
        // `check_authority` let only host[:port] bytes through: ASCII.
        let full = authority.to_str().unwrap_or_default();
        // The host is a prefix ending before an ASCII ':', a char boundary.
        let host = || &full[..headers::split_port(full.as_bytes()).0.len()];
        let lookup = |key: &str| {
            if key.bytes().any(|b| b.is_ascii_uppercase()) {
                self.routes.get(&key.to_ascii_lowercase())
            } else {
                self.routes.get(key)
            }
        };
        lookup(full)
            .or_else(|| lookup(host()))
            .or(self.default_route.as_ref())
            .ok_or_else(|| ProxyError::RouteNotFound(full.to_string()))
    }
}
