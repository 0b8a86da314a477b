//! The response cache: a shared HTTP cache (RFC 9111) that cannot
//! stampede, per upstream (`[upstreams.NAME.cache]`) and in front of the
//! local app (`[inbound.cache]`). Docs: `docs/cache.md`.
//!
//! Step and phases: one step in each direction's handler, right before the
//! forward step (so a fresh hit costs no retry, breaker or connection, and
//! stale-if-error can answer when the breaker is open):
//! - **on request** ([`Cache::on_request`]): a fresh hit, an allowed stale
//!   hit, a coalesced wait's result, or `only-if-cached`'s 504 answers now;
//!   otherwise the request goes upstream (conditionally when a stale entry
//!   has validators), as the leader of its key or on its own.
//! - **after forward** ([`Cache::after_forward`]): a 304 freshens the entry
//!   and answers it; an error or 5xx may be answered stale (stale-if-error);
//!   a storable response registers a [`fill::Collector`] whose **body end**
//!   phase stores it only when the body ended complete; an unsafe method's
//!   success invalidates its target and same-origin `Location`s.
//!
//! The pure rules are in [`policy`], the keys in [`key`], the bounded store
//! in [`store`], the one-fetch-per-key table in [`coalesce`].

pub mod answer;
pub mod coalesce;
pub mod fill;
pub mod key;
pub mod metrics;
pub mod policy;
pub mod purge;
pub mod store;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use tokio::time::Instant;

use self::coalesce::{Flights, Join, Leader};
use self::metrics::CacheMetrics;
use self::policy::{Directives, Freshness, Settings, Use};
use self::store::{Entry, Store};
use crate::config::CacheConfig;
use crate::error::ProxyError;
use crate::matcher::RouteMatch;
use crate::phase::ResponsePhases;

/// One cache: its settings, store, in-flight fetches and metrics.
pub struct Cache {
    name: String,
    settings: Settings,
    default_ttl: Option<Duration>,
    max_object: u64,
    beta: f64,
    lock_timeout: Duration,
    rules: Vec<(RouteMatch, bool, Option<Duration>)>,
    store: Store,
    flights: Arc<Flights>,
    metrics: CacheMetrics,
    max_bytes: u64,
}

/// What the on-request step decided.
pub enum Step {
    /// Answer with this now.
    Answer(Response<Bytes>),
    /// Go upstream; hand this to [`Cache::after_forward`].
    Forward(Pending),
}

/// What the after-forward step answers with.
pub enum Answer<B> {
    /// The upstream's response (its `Cache-Status` set), with the phases
    /// that store it as it streams when it is storable.
    Upstream(Response<B>, Option<Box<dyn ResponsePhases>>),
    /// A stored response.
    Stored(Response<Bytes>),
}

/// What the after-forward step needs to know about the request.
pub struct Pending(Kind);

enum Kind {
    /// Not for the cache (method, rule, upgrade, request body).
    Bypass,
    /// An unsafe method: its success invalidates.
    Unsafe { primary: String, authority: String },
    /// A GET/HEAD the cache may answer or fill.
    Fetch(Box<Fetch>),
}

struct Fetch {
    primary: String,
    default_ttl: Option<Duration>,
    method: Method,
    /// The client's headers as it sent them (Vary, conditionals, directives).
    req_headers: HeaderMap,
    stale: Option<Arc<Entry>>,
    /// Our validators went upstream instead of the client's conditionals.
    conditional: bool,
    leader: Option<Leader>,
    fwd: &'static str,
    request_time: SystemTime,
    started: Instant,
}

impl Cache {
    /// The admin page's cache panel, summed over `caches`.
    pub fn panel(caches: &[Arc<Cache>]) -> serde_json::Value {
        let sum = |f: &dyn Fn(&Cache) -> u64| caches.iter().map(|c| f(c)).sum::<u64>();
        serde_json::json!({
            "hits": sum(&|c| c.metrics.hits.get()),
            "misses": sum(&|c| c.metrics.misses.get()),
            "staleServed": sum(&|c| c.metrics.stale.get()),
            "bytesUsed": sum(&|c| c.metrics.bytes.get().max(0) as u64),
            "entries": sum(&|c| c.metrics.entries.get().max(0) as u64),
            "maxBytes": sum(&|c| c.max_bytes),
        })
    }

    /// A cache named `name` (`upstream:NAME`, `inbound`) with checked settings.
    pub fn new(name: &str, cfg: &CacheConfig, families: &metrics::Families) -> Arc<Cache> {
        let metrics = families.handles(name);
        let rules = cfg
            .rules
            .iter()
            .map(|r| {
                (
                    RouteMatch::new(None, Some(&r.paths)),
                    r.cache,
                    r.default_ttl.map(|d| d.0),
                )
            })
            .collect();
        Arc::new(Cache {
            name: name.to_string(),
            settings: Settings {
                default_ttl: cfg.default_ttl.map(|d| d.0),
                heuristic_fraction: cfg.heuristic_fraction,
                heuristic_max: cfg.heuristic_max.0,
                stale_while_revalidate: cfg.stale_while_revalidate.0,
                stale_if_error: cfg.stale_if_error.0,
                store_set_cookie: cfg.store_set_cookie,
            },
            default_ttl: cfg.default_ttl.map(|d| d.0),
            max_object: cfg.max_object_size.0,
            beta: cfg.xfetch_beta,
            lock_timeout: cfg.lock_timeout.0,
            rules,
            store: Store::new(cfg.max_bytes.0, metrics.clone()),
            max_bytes: cfg.max_bytes.0,
            flights: Arc::new(Flights::default()),
            metrics,
        })
    }

    /// Its name, as in metrics and the purge endpoint.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Largest body stored.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Its store (for purges).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Step "cache", on request. `parts` is the request as it will be
    /// forwarded (its `uri` the normalized target); `authority` its host.
    /// `refresh` sends a background refresh request and collects the answer
    /// (called only when one is due). `noted` is the access line's `cache`.
    pub async fn on_request<F, Fut>(
        self: &Arc<Self>,
        parts: &mut Parts,
        authority: &str,
        noted: &mut Option<&'static str>,
        refresh: F,
    ) -> Result<Step, ProxyError>
    where
        F: FnOnce(Parts) -> Fut,
        Fut: Future<Output = Option<(http::response::Parts, Bytes)>> + Send + 'static,
    {
        let method = &parts.method;
        if *method != Method::GET && *method != Method::HEAD {
            *noted = Some("bypass");
            let kind = match method.is_safe() {
                true => Kind::Bypass,
                false => Kind::Unsafe {
                    primary: key::primary(authority, &parts.uri),
                    authority: authority.to_string(),
                },
            };
            return Ok(Step::Forward(Pending(kind)));
        }
        let rule = self
            .rules
            .iter()
            .find(|(m, ..)| m.matches(method, parts.uri.path()));
        let body = parts.headers.contains_key(header::TRANSFER_ENCODING)
            || parts
                .headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v != "0");
        if rule.is_some_and(|r| !r.1) || body || parts.headers.contains_key(header::UPGRADE) {
            *noted = Some("bypass");
            return Ok(Step::Forward(Pending(Kind::Bypass)));
        }
        let default_ttl = rule.and_then(|r| r.2).or(self.default_ttl);
        let primary = key::primary(authority, &parts.uri);
        let req_cc = Directives::parse(&parts.headers);
        let entry = self.store.get(&primary, &parts.headers);
        let mut stale = None;
        let mut fwd = "uri-miss";
        if let Some(entry) = entry {
            let age = entry.age();
            let decided = entry.freshness.decide(age, &req_cc);
            let (field, status, refresh_now) = match decided {
                Use::Fresh => {
                    let left = entry.freshness.remaining(age);
                    let early = policy::xfetch(entry.fetch_time, self.beta, left, rand::random());
                    self.metrics.hits.inc();
                    ("hit", "hit", early)
                }
                Use::StaleWhileRevalidate => ("stale", "hit; detail=stale-while-revalidate", true),
                Use::StaleAllowed => ("stale", "hit; detail=max-stale", false),
                Use::Validate if req_cc.only_if_cached => return Err(ProxyError::NotCached),
                Use::Validate => ("", "", false),
            };
            if decided != Use::Validate {
                if field == "stale" {
                    self.metrics.stale.inc();
                }
                if refresh_now && !entry.refreshing.swap(true, Ordering::AcqRel) {
                    let req = fill::refresh_request(parts, &entry);
                    let headers = parts.headers.clone();
                    self.spawn_refresh(&entry, primary, default_ttl, headers, refresh(req));
                }
                *noted = Some(field);
                let res = answer::from_entry(&entry, method, &parts.headers, status);
                return Ok(Step::Answer(res));
            }
            fwd = if req_cc.no_cache { "request" } else { "stale" };
            stale = Some(entry);
        } else if req_cc.only_if_cached {
            return Err(ProxyError::NotCached);
        }
        // Not answered from the store: what the after-forward step needs.
        let mut fetch = Fetch {
            default_ttl,
            method: method.clone(),
            req_headers: parts.headers.clone(),
            conditional: *method == Method::GET && stale.as_ref().is_some_and(|e| e.has_validator()),
            stale,
            leader: None,
            fwd,
            request_time: SystemTime::now(),
            started: Instant::now(),
            primary,
        };

        // One fetch per key: the others wait for it (bounded), then use it.
        if *method == Method::GET && !req_cc.no_cache {
            match self.flights.join(&fetch.primary) {
                Join::Leader(leader) => fetch.leader = Some(leader),
                Join::Waiter(rx) => {
                    if let Some(e) = coalesce::wait(rx, self.lock_timeout).await {
                        if self.fits(&e, &fetch.primary, &parts.headers) {
                            self.metrics.coalesced.inc();
                            *noted = Some("coalesced");
                            let status = "fwd=uri-miss; collapsed";
                            return Ok(Step::Answer(answer::from_entry(
                                &e,
                                method,
                                &parts.headers,
                                status,
                            )));
                        }
                    }
                }
            }
        }
        if let Some(stale) = fetch.stale.as_ref().filter(|_| fetch.conditional) {
            fill::set_validators(&mut parts.headers, stale);
            self.metrics.revalidations.inc();
        } else {
            self.metrics.misses.inc();
        }
        *noted = Some("miss");
        Ok(Step::Forward(Pending(Kind::Fetch(Box::new(fetch)))))
    }

    /// Whether a coalesced result is the variant this request selects.
    fn fits(&self, entry: &Arc<Entry>, primary: &str, req: &HeaderMap) -> bool {
        entry.variant.is_none()
            || self
                .store
                .get(primary, req)
                .is_some_and(|e| Arc::ptr_eq(&e, entry))
    }

    /// Step "cache", after forward: see the module doc.
    pub fn after_forward<B>(
        self: &Arc<Self>,
        pending: Pending,
        result: Result<Response<B>, ProxyError>,
        noted: &mut Option<&'static str>,
    ) -> Result<Answer<B>, ProxyError> {
        let f = match pending.0 {
            Kind::Bypass => {
                return result.map(|mut res| {
                    answer::set_status(res.headers_mut(), "fwd=bypass");
                    Answer::Upstream(res, None)
                })
            }
            Kind::Unsafe { primary, authority } => {
                if let Ok(res) = &result {
                    if res.status().is_success() || res.status().is_redirection() {
                        self.store
                            .invalidate_after_write(&primary, &authority, res.headers());
                    }
                }
                return result.map(|res| Answer::Upstream(res, None));
            }
            Kind::Fetch(f) => f,
        };
        let mut res = match result {
            Ok(res) if !is_error(res.status()) => res,
            Ok(res) => {
                return Ok(self
                    .stale_on_error(&f, noted)
                    .unwrap_or(Answer::Upstream(res, None)))
            }
            Err(e) => return self.stale_on_error(&f, noted).ok_or(e),
        };
        let took = f.started.elapsed();
        if let (StatusCode::NOT_MODIFIED, Some(stale), true) = (res.status(), &f.stale, f.conditional) {
            let entry = self.freshen(
                &f.primary,
                f.default_ttl,
                stale,
                res.headers(),
                f.request_time,
                took,
            );
            if let Some(leader) = f.leader {
                leader.finish(coalesce::Outcome::Stored(entry.clone()));
            }
            *noted = Some("revalidated");
            let status = "fwd=stale; fwd-status=304; stored";
            return Ok(Answer::Stored(answer::from_entry(
                &entry,
                &f.method,
                &f.req_headers,
                status,
            )));
        }
        if f.method == Method::HEAD {
            // §4.3.5: a HEAD answer with other validators outdates the entry.
            let differs = |e: &Entry| {
                [header::ETAG, header::LAST_MODIFIED]
                    .iter()
                    .any(|n| res.headers().get(n).is_some_and(|v| e.headers.get(n) != Some(v)))
            };
            if self
                .store
                .get(&f.primary, &f.req_headers)
                .is_some_and(|e| differs(&e))
            {
                self.store.invalidate(&f.primary);
            }
            answer::set_status(res.headers_mut(), &format!("fwd={}; detail=head", f.fwd));
            return Ok(Answer::Upstream(res, None));
        }
        let (mut head, body) = res.into_parts();
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let storable = match declared {
            Some(n) if n > self.max_object => Err("too-large"),
            _ => self.storable_head(
                &f.primary,
                f.default_ttl,
                &f.req_headers,
                &head,
                f.request_time,
                took,
            ),
        };
        let fill: Option<Box<dyn ResponsePhases>> = match storable {
            Ok(entry_head) => {
                answer::set_status(&mut head.headers, &format!("fwd={}; stored", f.fwd));
                Some(Box::new(fill::Collector {
                    cache: self.clone(),
                    primary: f.primary,
                    head: Some(entry_head),
                    chunks: Vec::new(),
                    size: 0,
                    leader: f.leader,
                }))
            }
            Err(why) => {
                if f.stale.is_some() && head.status.is_success() {
                    self.store.invalidate(&f.primary);
                }
                answer::set_status(&mut head.headers, &format!("fwd={}; detail={why}", f.fwd));
                // The leader goes with `f`: its waiters go upstream themselves.
                None
            }
        };
        Ok(Answer::Upstream(Response::from_parts(head, body), fill))
    }

    /// The stale entry for a failed fetch, where stale-if-error allows it.
    fn stale_on_error<B>(&self, f: &Fetch, noted: &mut Option<&'static str>) -> Option<Answer<B>> {
        let stale = f.stale.as_ref()?;
        if !stale
            .freshness
            .stale_if_error(stale.age(), &Directives::parse(&f.req_headers))
        {
            return None;
        }
        self.metrics.stale.inc();
        *noted = Some("stale");
        let status = "fwd=stale; detail=stale-if-error";
        Some(Answer::Stored(answer::from_entry(
            stale,
            &f.method,
            &f.req_headers,
            status,
        )))
    }

    /// Freshness of a response with raw `headers` received now.
    fn freshness(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        default_ttl: Option<Duration>,
        request_time: SystemTime,
    ) -> Freshness {
        let cc = Directives::parse(headers);
        Freshness::of(
            status,
            &cc,
            headers,
            &self.settings,
            default_ttl,
            request_time,
            SystemTime::now(),
        )
    }
}

/// Statuses stale-if-error may hide (RFC 5861 §4).
fn is_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}
