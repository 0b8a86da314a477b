//! Filling the store: the body collector a miss registers on its exchange
//! (its end phase stores the response only when the body ended complete),
//! the background refresh (stale-while-revalidate, XFetch) and the 304
//! update of a stored entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header;
use http::request::Parts;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::coalesce::{Leader, Outcome};
use super::policy::{self, Directives, Freshness};
use super::store::Entry;
use super::Cache;
use crate::phase::{BodyEnd, ResponsePhases};

/// What an entry is made of, less its body.
pub struct Head {
    /// Status.
    pub status: StatusCode,
    /// Headers, cleaned for storing.
    pub headers: HeaderMap,
    /// Freshness decided from them.
    pub freshness: Freshness,
    /// The variant key, with `Vary`.
    pub variant: Option<Box<str>>,
    /// How long the fetch took.
    pub fetch_time: Duration,
}

impl Head {
    /// The entry with `body`.
    pub fn entry(self, body: Bytes) -> Arc<Entry> {
        Arc::new(Entry {
            status: self.status,
            headers: self.headers,
            body,
            freshness: self.freshness,
            stored_at: Instant::now(),
            fetch_time: self.fetch_time,
            variant: self.variant,
            refreshing: AtomicBool::new(false),
        })
    }
}

/// Headers as stored: no hop-by-hop or `Connection`-named fields, no `Age`
/// (recomputed on every answer), no `Cache-Status` of ours.
pub fn clean(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    crate::headers::strip_hop_by_hop(&mut h);
    h.remove(header::AGE);
    h.remove(super::answer::CACHE_STATUS);
    h
}

/// Collects a miss's body as it goes to the client; stores it at a complete
/// end, and tells the coalesced waiters.
pub struct Collector {
    /// The cache to fill.
    pub cache: Arc<Cache>,
    /// Primary key.
    pub primary: String,
    /// The entry's head.
    pub head: Option<Head>,
    /// Chunks so far (reference counts, not copies).
    pub chunks: Vec<Bytes>,
    /// Their length.
    pub size: u64,
    /// The waiters' leader, if this request leads.
    pub leader: Option<Leader>,
}

impl ResponsePhases for Collector {
    fn data(&mut self, chunk: &Bytes) {
        if self.head.is_none() {
            return;
        }
        self.size += chunk.len() as u64;
        if self.size > self.cache.max_object {
            // Too large after all (no Content-Length said so): let it stream,
            // store nothing, and let the waiters go.
            self.head = None;
            self.chunks = Vec::new();
            self.leader = None;
            return;
        }
        self.chunks.push(chunk.clone());
    }

    fn end(self: Box<Self>, how: BodyEnd) {
        let Collector {
            cache,
            primary,
            head,
            chunks,
            leader,
            ..
        } = *self;
        // A truncated body (client gone, upstream broke) is never stored.
        let (Some(head), BodyEnd::Complete) = (head, how) else {
            return;
        };
        let entry = head.entry(concat(chunks));
        cache.store.insert(&primary, entry.clone());
        if let Some(leader) = leader {
            leader.finish(Outcome::Stored(entry));
        }
    }
}

/// One `Bytes` of all chunks: the one copy a stored body costs, at store time.
fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                buf.extend_from_slice(&c);
            }
            buf.freeze()
        }
    }
}

/// A whole response body, at most `max` bytes; `None` when larger or broken.
pub async fn collect<B>(res: http::Response<B>, max: u64) -> Option<(http::response::Parts, Bytes)>
where
    B: Body<Data = Bytes> + Unpin,
{
    let (parts, mut body) = res.into_parts();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            size += data.len() as u64;
            if size > max {
                return None;
            }
            chunks.push(data);
        }
    }
    Some((parts, concat(chunks)))
}

impl Cache {
    /// The entry `stale` updated by a 304's headers (§4.3.4): same body,
    /// new headers and freshness; stored.
    pub(super) fn freshen(
        &self,
        primary: &str,
        default_ttl: Option<Duration>,
        stale: &Entry,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        fetch_time: Duration,
    ) -> Arc<Entry> {
        let merged = policy::merge_304(&stale.headers, not_modified);
        let freshness = self.freshness(stale.status, &merged, default_ttl, request_time);
        let headers = clean(&merged);
        let entry = Head {
            status: stale.status,
            headers,
            freshness,
            variant: stale.variant.clone(),
            fetch_time,
        }
        .entry(stale.body.clone());
        self.store.insert(primary, entry.clone());
        entry
    }

    /// Runs one background refresh of `entry` (unless one runs already):
    /// `fetch` sends the conditional request and collects the answer.
    pub(super) fn spawn_refresh<Fut>(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        primary: String,
        default_ttl: Option<Duration>,
        req_headers: HeaderMap,
        fetch: Fut,
    ) where
        Fut: std::future::Future<Output = Option<(http::response::Parts, Bytes)>> + Send + 'static,
    {
        let cache = self.clone();
        let entry = entry.clone();
        cache.metrics.refreshes.inc();
        tokio::spawn(async move {
            let (request_time, started) = (SystemTime::now(), Instant::now());
            if let Some((head, body)) = fetch.await {
                let took = started.elapsed();
                if head.status == StatusCode::NOT_MODIFIED {
                    cache.freshen(&primary, default_ttl, &entry, &head.headers, request_time, took);
                } else if let Ok(h) =
                    cache.storable_head(&primary, default_ttl, &req_headers, &head, request_time, took)
                {
                    cache.store.insert(&primary, h.entry(body));
                } else if head.status.is_success() {
                    // Replaced by something we may not keep: the old one is wrong now.
                    cache.store.invalidate(&primary);
                }
            }
            entry.refreshing.store(false, Ordering::Release);
        });
    }

    /// The head to store for a GET response, or why it may not be stored.
    pub(super) fn storable_head(
        &self,
        primary: &str,
        default_ttl: Option<Duration>,
        req: &HeaderMap,
        res: &http::response::Parts,
        request_time: SystemTime,
        fetch_time: Duration,
    ) -> Result<Head, &'static str> {
        let res_cc = Directives::parse(&res.headers);
        let req_cc = Directives::parse(req);
        let auth = req.contains_key(header::AUTHORIZATION);
        policy::storable(
            &http::Method::GET,
            &req_cc,
            auth,
            res.status,
            &res_cc,
            &res.headers,
            &self.settings,
        )?;
        let freshness = self.freshness(res.status, &res.headers, default_ttl, request_time);
        if freshness.lifetime.is_zero() && freshness.swr.is_zero() && freshness.sie.is_zero() {
            let h = &res.headers;
            if !h.contains_key(header::ETAG) && !h.contains_key(header::LAST_MODIFIED) {
                // Never fresh and nothing to revalidate with: no use keeping it.
                return Err("no-freshness");
            }
        }
        let headers = clean(&res.headers);
        let vary = super::key::vary_names(&headers);
        Ok(Head {
            status: res.status,
            variant: self.store.variant_for(primary, &vary, req).map(Into::into),
            headers,
            freshness,
            fetch_time,
        })
    }
}

/// Conditionals from the entry's validators, replacing the client's.
pub fn set_validators(headers: &mut HeaderMap, entry: &Entry) {
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        headers.remove(name);
    }
    if let Some(etag) = entry.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = entry.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

/// A background refresh: this request's GET, conditional on the entry.
pub fn refresh_request(parts: &Parts, entry: &Entry) -> Parts {
    let (mut req, ()) = Request::new(()).into_parts();
    req.method = Method::GET;
    req.uri = parts.uri.clone();
    req.version = parts.version;
    req.headers = parts.headers.clone();
    set_validators(&mut req.headers, entry);
    req
}
