//! Idempotency and ordering guard for inbound deliveries: inbound step 5,
//! after authorization and the rate limit (a caller who may not call never
//! touches stored state), before anything reaches the app.
//!
//! On request ([`Guard::on_request`]), for the first `[[inbound.guard.routes]]`
//! that matches: (1) the ordering key's turn, one delivery per key at the
//! app, in arrival order, held across replicas by a store lease; (2) the
//! claim on the Idempotency-Key or CloudEvent: a repeat is replayed
//! (`replayed`) or acknowledged (`duplicate`), one in flight is a 409
//! (`conflict`), a key reused for another request a 422 (`mismatch`);
//! (3) the version against the key's last accepted one (409 `stale`).
//! What was taken is a [`hold::Hold`], registered as the request's
//! response phases: it stores the response, marks the event processed and
//! records the version when the app answered so, and releases the claim,
//! the lease and the turn when the body ends, exactly once. Only guarded
//! routes read their request body (up to `max_body`, for the fingerprint
//! and structured CloudEvents); other routes stream as before.

pub mod dedup;
mod hold;
pub mod idempotency;
pub mod order;
pub mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use self::hold::Hold;
use self::store::{AnyStore, MemoryStore, RedisStore, Store, StoreError};
use crate::body::{self, BodyError, BoxBody};
use crate::config::guard::{GuardConfig, GuardRoute, StoreKind};
use crate::error::ProxyError;
use crate::matcher::RouteMatch;
use crate::phase::ResponsePhases;

/// What the handler does after the guard step.
pub enum Step {
    /// Go on to the app, watching the response with these phases.
    Forward(Option<Box<dyn ResponsePhases>>),
    /// Answer now: a replay or an acknowledged duplicate.
    Answer(Response<Bytes>),
}

/// Outcomes, as on the access line (`guard`) and in `kawal_guard_total`.
const OUTCOMES: [&str; 10] = [
    "new",
    "queued",
    "replayed",
    "duplicate",
    "conflict",
    "mismatch",
    "stale",
    "rejected",
    "unavailable",
    "unguarded",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

struct Route {
    matcher: RouteMatch,
    cfg: GuardRoute,
}

/// State shared by the guard and every hold.
pub(crate) struct Shared {
    pub(crate) store: AnyStore,
    pub(crate) redis: bool,
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) max_response: u64,
    pub(crate) queues: Arc<order::Queues>,
    fail_open: bool,
    down: AtomicBool,
    tokens: AtomicU64,
}

impl Shared {
    /// Notes that the store answered; logs the end of an outage once.
    pub(crate) fn up(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(event = "guard_store_up", "guard store reachable again");
        }
    }

    /// Notes a store failure; logs the start of an outage once.
    pub(crate) fn failed(&self, e: &StoreError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            let mode = if self.fail_open {
                "open: requests pass unguarded"
            } else {
                "closed: 503 until it is back"
            };
            tracing::warn!(event = "guard_store_down", error = %e, "guard store unreachable; failing {mode}");
        }
    }
}

/// The guard of the inbound routes that have one.
pub struct Guard {
    routes: Vec<Route>,
    shared: Arc<Shared>,
    max_body: usize,
    retry_after: Duration,
    counters: [Counter; OUTCOMES.len()],
}

impl Guard {
    /// Builds the guard and its store (Redis is connected lazily: kawal
    /// starts while it is down) and registers `kawal_guard_total`.
    pub fn new(cfg: &GuardConfig, service: &str, registry: &mut Registry) -> Result<Guard, String> {
        let routes = cfg
            .routes
            .iter()
            .map(|r| Route {
                matcher: r.matcher(),
                cfg: r.clone(),
            })
            .collect();
        let store = match cfg.store {
            StoreKind::Memory => AnyStore::Memory(MemoryStore::new(cfg.max_entries, cfg.max_bytes.0)),
            StoreKind::Redis => {
                let url = cfg
                    .redis_url
                    .as_deref()
                    .ok_or("inbound.guard.redis_url is not set")?;
                AnyStore::Redis(RedisStore::new(
                    url,
                    cfg.redis_connect_timeout.0,
                    cfg.redis_timeout.0,
                )?)
            }
        };
        let family = Family::<OutcomeLabel, Counter>::default();
        registry.register("guard", "Guarded inbound deliveries by outcome", family.clone());
        let counters = OUTCOMES.map(|outcome| family.get_or_create(&OutcomeLabel { outcome }).clone());
        let queues = Arc::new(order::Queues::default());
        registry.register(
            "guard_waiting",
            "Deliveries waiting for their ordering key's turn",
            queues.waiting.clone(),
        );
        Ok(Guard {
            routes,
            shared: Arc::new(Shared {
                redis: matches!(store, AnyStore::Redis(_)),
                store,
                prefix: format!("kawal:{service}:"),
                ttl: cfg.ttl.0,
                lease: cfg.lease.0,
                max_response: cfg.max_response.0,
                queues,
                fail_open: cfg.fail_open,
                down: AtomicBool::new(false),
                tokens: AtomicU64::new(rand::random()),
            }),
            max_body: usize::try_from(cfg.max_body.0).unwrap_or(usize::MAX),
            retry_after: cfg.retry_after.0,
            counters,
        })
    }

    /// The admin page's guard panel.
    pub fn panel(&self) -> serde_json::Value {
        let get = |outcome: &str| {
            OUTCOMES
                .iter()
                .position(|o| *o == outcome)
                .map_or(0, |i| self.counters[i].get())
        };
        serde_json::json!({
            "replays": get("replayed"),
            "duplicates": get("duplicate"),
            "conflicts": get("conflict") + get("mismatch"),
            "outOfOrder": get("stale"),
        })
    }

    fn count(&self, outcome: &'static str, to: &mut Option<&'static str>) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counters[i].inc();
        }
        *to = Some(outcome);
    }

    /// The on-request phase (see the module doc). `outcome` is the access
    /// line's `guard` field; `body` is replaced by its bytes on guarded routes.
    pub async fn on_request(
        &self,
        parts: &Parts,
        target: &Uri,
        body: &mut BoxBody,
        outcome: &mut Option<&'static str>,
    ) -> Result<Step, ProxyError> {
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.matcher.matches(&parts.method, target.path()))
        else {
            return Ok(Step::Forward(None));
        };
        let result = self.guard(&route.cfg, parts, target, body, outcome).await;
        if let Err(e) = &result {
            let what = match e {
                ProxyError::DuplicateInFlight => "conflict",
                ProxyError::KeyMismatch => "mismatch",
                ProxyError::OutOfOrder { .. } => "stale",
                ProxyError::Overloaded { .. } => "rejected",
                ProxyError::GuardUnavailable { .. } => "unavailable",
                _ => return result,
            };
            self.count(what, outcome);
        }
        result
    }

    async fn guard(
        &self,
        route: &GuardRoute,
        parts: &Parts,
        target: &Uri,
        body: &mut BoxBody,
        outcome: &mut Option<&'static str>,
    ) -> Result<Step, ProxyError> {
        let bad = |kind, msg: &str| ProxyError::BadDelivery(kind, msg.to_string());
        let idem_key = match route.idempotency {
            true => idempotency::key(&parts.headers).map_err(|m| bad("bad_idempotency_key", m))?,
            false => None,
        };
        if route.require_key && idem_key.is_none() {
            return Err(bad(
                "bad_idempotency_key",
                "this route requires an Idempotency-Key",
            ));
        }
        let bytes = if idem_key.is_some() || dedup::is_structured(&parts.headers) {
            let taken = std::mem::replace(body, body::empty());
            let bytes = read_body(taken, self.max_body).await?;
            *body = body::full(bytes.clone());
            bytes
        } else {
            Bytes::new()
        };
        let event = dedup::event(&parts.headers, &bytes).map_err(|m| bad("bad_event", &m))?;
        let attribute = |name: &str| match parts.headers.get(name) {
            Some(v) => v.to_str().ok().map(str::to_owned),
            None => event.as_ref().and_then(|e| e.attribute(name)),
        };

        let s = &self.shared;
        let mut hold = Hold::new(s.clone(), s.tokens.fetch_add(1, Ordering::Relaxed));
        // (1) the key's turn: a repeat waits behind its original and is then
        // acknowledged, instead of a 409.
        let order_key = route.order_by.as_deref().and_then(attribute);
        let mut queued = false;
        if let Some(key) = &order_key {
            let (turn, waited) =
                s.queues
                    .turn(key, route.max_queue)
                    .await
                    .map_err(|_| ProxyError::Overloaded {
                        retry_after: self.retry_after,
                    })?;
            queued = waited;
            hold.turn = Some(turn);
            if s.redis {
                match hold.lease(&format!("{}order:{key}", s.prefix)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(ProxyError::Overloaded {
                            retry_after: self.retry_after,
                        })
                    }
                    Err(e) => return self.unavailable(e, outcome),
                }
            }
        }
        // (2) the claim
        let claim = match (&idem_key, &event) {
            (Some(key), _) => Some((
                format!("{}idem:{key}", s.prefix),
                idempotency::fingerprint(
                    &parts.method,
                    target.path_and_query().map_or("/", |p| p.as_str()),
                    &bytes,
                )
                .to_vec(),
                true,
            )),
            (None, Some(e)) if route.cloudevents => {
                Some((format!("{}{}", s.prefix, e.key()), Vec::new(), false))
            }
            _ => None,
        };
        if let Some((key, fp, replay)) = claim {
            match hold.claim(key, fp, replay).await {
                Ok(None) => {}
                Ok(Some(idempotency::Seen::InFlight)) => return Err(ProxyError::DuplicateInFlight),
                Ok(Some(idempotency::Seen::Mismatch)) => return Err(ProxyError::KeyMismatch),
                Ok(Some(idempotency::Seen::Done(stored))) if replay => {
                    let mut res = idempotency::decode(&stored)
                        .ok_or_else(|| ProxyError::Internal("a stored response does not decode".into()))?;
                    res.headers_mut()
                        .insert(idempotency::IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                    self.count("replayed", outcome);
                    return Ok(Step::Answer(res));
                }
                Ok(Some(idempotency::Seen::Done(_))) => {
                    let mut res = Response::new(Bytes::new());
                    *res.status_mut() =
                        StatusCode::from_u16(route.duplicate_status).unwrap_or(StatusCode::OK);
                    self.count("duplicate", outcome);
                    return Ok(Step::Answer(res));
                }
                Err(e) => return self.unavailable(e, outcome),
            }
        }
        // (3) the version, after the claim: a duplicate of an accepted
        // delivery is acknowledged above, not called stale.
        if let (Some(key), Some(raw)) = (&order_key, route.version_from.as_deref().and_then(attribute)) {
            let version = order::version(&raw);
            let vkey = format!("{}version:{key}", s.prefix);
            match s.store.get(&vkey).await {
                Ok(Some(last)) if last >= version => {
                    s.up();
                    tracing::warn!(event = "guard_stale", key = %key, version = %raw, "stale delivery rejected");
                    return Err(ProxyError::OutOfOrder {
                        version: raw,
                        status: StatusCode::from_u16(route.stale_status).unwrap_or(StatusCode::CONFLICT),
                    });
                }
                Ok(_) => s.up(),
                Err(e) => return self.unavailable(e, outcome),
            }
            hold.version = Some((vkey, version));
        }
        if hold.is_empty() {
            // Nothing to guard on this request (no key, no event id).
            return Ok(Step::Forward(None));
        }
        self.count(if queued { "queued" } else { "new" }, outcome);
        hold.start_renewal();
        Ok(Step::Forward(Some(Box::new(hold))))
    }

    /// The store failed: closed (503) or open (unguarded), as configured.
    fn unavailable(&self, e: StoreError, outcome: &mut Option<&'static str>) -> Result<Step, ProxyError> {
        self.shared.failed(&e);
        if self.shared.fail_open {
            self.count("unguarded", outcome);
            return Ok(Step::Forward(None));
        }
        Err(ProxyError::GuardUnavailable {
            retry_after: self.retry_after,
        })
    }
}

/// The request body, whole, up to `max` bytes (413 beyond).
async fn read_body(mut body: BoxBody, max: usize) -> Result<Bytes, ProxyError> {
    let mut chunks = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match crate::error::find::<BodyError>(&*e) {
            Some(b) => ProxyError::from(*b),
            None => ProxyError::BadRequest(format!("request body: {e}")),
        })?;
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > max {
                return Err(ProxyError::PayloadTooLarge(max as u64));
            }
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    })
}
