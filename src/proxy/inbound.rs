//! Inbound: requests from other services to the local app.
//!
//! One request, top to bottom:
//! 1. trace: continue the caller's trace context (W3C or B3) or start one
//! 2. check: framing (smuggling), size limits, one normalized path
//! 3. authorize: allow rules on the verified peer identity × method × path
//!    (403), then the bearer JWT (401 with WWW-Authenticate)
//! 4. limit: local rate limits per route (429 with Retry-After): `ratelimit`
//! 5. guard: Idempotency-Key replay, CloudEvents dedup, per-key ordering,
//!    stale versions (409/422/503, or a replay): `guard`
//! 6. rewrite: strip hop-by-hop and spoofed identity headers, hand the app
//!    the verified peer identity (mTLS) and user (JWT `sub`), set
//!    X-Forwarded-*, inject kawal's traceparent
//! 7. cache (`[inbound.cache]`): a fresh hit answers here; see `cache`
//! 8. forward to the app (pooled connection, deadline)
//! 9. respond: the app's response streamed back, or kawal's own answer; the
//!    features' end phase and the access line run when the body ends

use std::convert::Infallible;
use std::sync::Arc;

use std::time::SystemTime;

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::exchange::ClientBody;
use super::upstream::Upstream;
use super::{check_head, guard_request_body, prepare_forward, Direction, Exchange, Reply, Shared};
use crate::auth::{Decision, JwtError, JwtVerifier, Policy};
use crate::cache::{self, Cache};
use crate::error::ProxyError;
use crate::guard::{self, Guard};
use crate::headers::{self, X_FORWARDED_PROTO, X_KAWAL_PEER_IDENTITY, X_KAWAL_USER};
use crate::metrics::RouteMetrics;
use crate::ratelimit::{Caller, RateLimits};
use crate::server::{ConnInfo, OpenRequest};
use crate::trace::RequestTrace;

/// The inbound direction: everything one inbound request needs.
pub struct Inbound {
    /// Process-wide settings.
    pub shared: Arc<Shared>,
    /// The local app.
    pub app: Arc<Upstream>,
    /// Deadline for the app's response head.
    pub timeout: std::time::Duration,
    /// Who may call what.
    pub policy: Policy,
    /// Bearer token validation, when configured.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Local rate limits per route.
    pub rate_limits: Arc<RateLimits>,
    /// Idempotency and ordering guard, when configured.
    pub guard: Option<Arc<Guard>>,
    /// Metrics handles for requests to the app.
    pub metrics: RouteMetrics,
    /// The response cache in front of the app, when configured.
    pub cache: Option<Arc<Cache>>,
    /// `[inbound] headers_with_underscores`.
    pub underscores: headers::UnderscoreAction,
}

impl Inbound {
    /// Handles one inbound request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: OpenRequest,
    ) -> Result<Response<ClientBody>, Infallible> {
        let (mut parts, body) = req.into_parts();
        // 1. trace
        let trace = self.shared.propagator.start(&parts.headers);
        let mut ex = Exchange::new(
            Direction::Inbound,
            &parts,
            conn.peer,
            trace,
            &self.shared,
            self.metrics.clone(),
        );
        ex.peer_identity = conn.identity.clone();

        let result = async {
            // 2. check
            let target = check_head(&parts, &self.shared.limits)?;
            ex.uri = target.clone();
            let authority = headers::check_authority(parts.version, &parts.uri, &parts.headers)
                .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            ex.authority = authority.clone();
            // 3. authorize the verified peer, then authenticate the user
            ex.authz_rule = self.authorize(&parts, target.path(), &conn, &trace)?;
            let user = self.authenticate(&parts, target.path())?;
            ex.user_id = user.clone().or_else(|| conn.identity.clone());
            // 4. limit: after authorization, so only allowed callers spend
            //    tokens, and per-user buckets go by the verified user
            let caller = Caller {
                identity: conn.identity.as_ref(),
                user: ex.user_id.as_ref(),
            };
            self.rate_limits.check(&parts, target.path(), caller)?;
            // 5. guard: after authorization, so a caller who may not call
            //    never touches stored state; reads the body on its routes only
            let mut body = guard_request_body(body, &self.shared.limits, ex.bytes_in.clone());
            if let Some(guard) = &self.guard {
                match guard
                    .on_request(&parts, &target, &mut body, &mut ex.guard)
                    .await?
                {
                    guard::Step::Answer(res) => return Ok(Reply::from(res)),
                    guard::Step::Forward(Some(phases)) => ex.watch(phases),
                    guard::Step::Forward(None) => {}
                }
            }
            // 6. rewrite
            ex.upgrade = prepare_forward(&mut parts, target, authority.as_ref());
            self.shared
                .propagator
                .inject(&trace, trace.span_id, &mut parts.headers);
            headers::strip_kawal_identity(&mut parts.headers, self.underscores)
                .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            if let Some(id) = &conn.identity_header {
                parts.headers.insert(X_KAWAL_PEER_IDENTITY, id.clone());
            }
            if let Some(user) = user.as_deref().and_then(|u| HeaderValue::from_str(u).ok()) {
                parts.headers.insert(X_KAWAL_USER, user);
            }
            headers::append_forwarded_for(&mut parts.headers, &conn.peer_ip);
            let proto = if conn.tls { "https" } else { "http" };
            parts
                .headers
                .insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            // 7. cache: after authorization (a caller who may not call never
            //    reads stored answers) and the guard, in front of the app
            let pending = match &self.cache {
                Some(cache) => {
                    let host = authority
                        .as_ref()
                        .and_then(|a| a.to_str().ok())
                        .unwrap_or_default();
                    let refresh = |req| self.refresh(req, cache.max_object());
                    match cache.on_request(&mut parts, host, &mut ex.cache, refresh).await? {
                        cache::Step::Answer(res) => return Ok(Reply::Own(res)),
                        cache::Step::Forward(pending) => Some((cache, pending)),
                    }
                }
                None => None,
            };
            // 8. forward
            ex.upstream = Some(self.app.name.clone());
            ex.attempts.count = 1;
            let req = Request::from_parts(parts, body);
            let res = self.app.send(req, self.timeout, &mut ex.attempts.endpoint).await;
            match pending {
                Some((cache, pending)) => ex.cached(cache, pending, res),
                None => Ok::<_, ProxyError>(Reply::from(res?)),
            }
        }
        .await;

        // 9. respond
        Ok(ex.respond(result, conn))
    }

    /// A cache's background refresh of `parts` (already rewritten), its
    /// answer collected whole.
    fn refresh(
        self: &Arc<Self>,
        parts: Parts,
        max: u64,
    ) -> impl std::future::Future<Output = Option<(http::response::Parts, bytes::Bytes)>> + Send + 'static
    {
        let (app, timeout) = (self.app.clone(), self.timeout);
        async move {
            let req = Request::from_parts(parts, crate::body::empty());
            let res = app.send(req, timeout, &mut None).await.ok()?;
            crate::cache::fill::collect(res, max).await
        }
    }

    /// The allow rules, on the verified identity and the normalized path: the
    /// rule that allowed the request (recorded on its access line), or a 403
    /// logged as an event with the request's trace id.
    fn authorize(
        &self,
        parts: &Parts,
        path: &str,
        conn: &ConnInfo,
        trace: &RequestTrace,
    ) -> Result<Option<usize>, ProxyError> {
        let identity = conn.identity.as_deref();
        match self.policy.decide(identity, &parts.method, path) {
            Decision::Unrestricted => Ok(None),
            Decision::Allow { rule } => Ok(Some(rule)),
            Decision::Deny => {
                self.metrics.authz_denied();
                tracing::warn!(
                    event = "authz",
                    decision = "deny",
                    traceId = %trace.trace_id,
                    peer = identity.unwrap_or("-"),
                    method = %parts.method,
                    path,
                    "request denied by policy"
                );
                Err(ProxyError::Forbidden)
            }
        }
    }

    /// The bearer token, when JWT validation is configured, with the claims
    /// its route requires; its `sub`.
    fn authenticate(&self, parts: &Parts, path: &str) -> Result<Option<Arc<str>>, ProxyError> {
        let Some(jwt) = &self.jwt else { return Ok(None) };
        // Two Authorization headers: the app might read another token than
        // the one verified here.
        let verified = match parts.headers.get_all(AUTHORIZATION).iter().nth(1) {
            Some(_) => Err(JwtError::Malformed),
            None => jwt.verify_for(
                parts.headers.get(AUTHORIZATION),
                &parts.method,
                path,
                SystemTime::now(),
            ),
        };
        if let Err(e) = &verified {
            self.metrics.jwt_failed(e.reason());
        }
        match verified {
            Ok(claims) => Ok(claims.map(|c| Arc::from(c.sub))),
            Err(e) => Err(ProxyError::Unauthenticated {
                reason: e.reason(),
                challenge: jwt.www_authenticate(&e),
            }),
        }
    }
}
