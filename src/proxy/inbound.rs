//! Inbound: requests from other services to the local app.
//!
//! One request, top to bottom:
//! 1. trace: continue the caller's traceparent or start a trace
//! 2. check: framing (smuggling), size limits, one normalized path
//! 3. rewrite: strip hop-by-hop and spoofed identity headers, hand the app
//!    the verified peer identity (mTLS), set X-Forwarded-*, inject kawal's
//!    traceparent
//! 4. forward to the app (pooled connection, deadline)
//! 5. respond: the app's response streamed back, or kawal's error; the access
//!    line is written when the response body ends

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::headers::{self, X_FORWARDED_PROTO, X_KAWAL_PEER_IDENTITY};
use super::upstream::Upstream;
use super::{check_head, guard_request_body, prepare_forward, Direction, Exchange, Shared};
use crate::body::BoxBody;
use crate::metrics::RouteMetrics;
use crate::server::ConnInfo;
use crate::trace::RequestTrace;

/// The inbound direction: everything one inbound request needs.
pub struct Inbound {
    /// Process-wide settings.
    pub shared: Arc<Shared>,
    /// The local app.
    pub app: Arc<Upstream>,
    /// Deadline for the app's response head.
    pub timeout: std::time::Duration,
    /// Metrics handles for requests to the app.
    pub metrics: RouteMetrics,
}

impl Inbound {
    /// Handles one inbound request; never fails (errors become responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<BoxBody> {
        let (mut parts, body) = req.into_parts();
        // 1. trace
        let trace = RequestTrace::from_headers(&parts.headers);
        let mut ex = Exchange::new(Direction::Inbound, &parts, trace, conn.peer);
        ex.peer_identity = conn.identity.clone();

        let result = async {
            // 2. check
            let target = check_head(&parts, &self.shared.limits)?;
            ex.uri = target.clone();
            // 3. rewrite
            let authority = headers::check_authority(parts.version, &parts.uri, &parts.headers)
                .map_err(|e| crate::error::ProxyError::BadRequest(e.to_string()))?;
            prepare_forward(&mut parts, target, authority.as_ref(), &trace);
            headers::strip_kawal_identity(&mut parts.headers);
            if let Some(id) = conn
                .identity
                .as_deref()
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                parts.headers.insert(X_KAWAL_PEER_IDENTITY, id);
            }
            headers::append_forwarded_for(&mut parts.headers, conn.peer.ip());
            let proto = if conn.tls { "https" } else { "http" };
            parts
                .headers
                .insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            // 4. forward
            ex.upstream = Some(self.app.name.clone());
            ex.attempts = 1;
            let body = guard_request_body(body, &self.shared.limits, ex.bytes_in.clone());
            self.app
                .send(Request::from_parts(parts, body), self.timeout)
                .await
        }
        .await;

        // 5. respond
        ex.respond(result, &self.shared, self.metrics.clone())
    }
}
