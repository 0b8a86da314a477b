//! The pure core of the response cache: RFC 9111 for a shared cache, with
//! RFC 5861's stale-while-revalidate / stale-if-error and XFetch early
//! refresh. No I/O, no clocks: callers pass the times in.
//!
//! - [`Directives`]: `Cache-Control` of a request or a response.
//! - [`storable`]: may this response be stored (§3, §3.5)?
//! - [`Freshness`]: lifetime (§4.2.1/§4.2.2), initial age (§4.2.3), and the
//!   stale windows, decided once at store time.
//! - [`Freshness::decide`]: serve fresh, serve stale, or validate (§4.2,
//!   §5.2.1 request directives, §4.2.4 must-revalidate).
//! - [`xfetch`]: refresh early with probability rising toward expiry.
//! - [`not_modified`]: a client's conditional against a stored entry (§4.3.2).
//! - [`merge_304`]: the stored headers updated by a 304 (§3.2, §4.3.4).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// The directives kawal acts on, from every `Cache-Control` line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`
    pub no_store: bool,
    /// `no-cache` (qualified or not: a shared cache treats both alike)
    pub no_cache: bool,
    /// `private` (qualified or not)
    pub private: bool,
    /// `public`
    pub public: bool,
    /// `must-revalidate`
    pub must_revalidate: bool,
    /// `proxy-revalidate`
    pub proxy_revalidate: bool,
    /// `only-if-cached` (request)
    pub only_if_cached: bool,
    /// `max-age`; an unreadable value counts as 0 (stale, §4.2.1).
    pub max_age: Option<Duration>,
    /// `s-maxage`
    pub s_maxage: Option<Duration>,
    /// `max-stale` (request); bare = any staleness.
    pub max_stale: Option<Duration>,
    /// `min-fresh` (request)
    pub min_fresh: Option<Duration>,
    /// `stale-while-revalidate` (RFC 5861)
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861)
    pub stale_if_error: Option<Duration>,
}

impl Directives {
    /// Reads every `Cache-Control` line of `headers`. A directive given twice
    /// keeps its first value (RFC 9111 §4.2.1).
    pub fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for item in line.split(',') {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let secs = || {
                    // Too large a number is a long time (§1.2.2), not an error.
                    let v = value?;
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Some(Duration::ZERO);
                    }
                    Some(Duration::from_secs(
                        v.parse::<u64>().unwrap_or(1 << 31).min(1 << 31),
                    ))
                };
                let set = |slot: &mut Option<Duration>, v: Option<Duration>| {
                    if slot.is_none() {
                        *slot = Some(v.unwrap_or(Duration::ZERO));
                    }
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "max-age" => set(&mut d.max_age, secs()),
                    "s-maxage" => set(&mut d.s_maxage, secs()),
                    "min-fresh" => set(&mut d.min_fresh, secs()),
                    "stale-while-revalidate" => set(&mut d.stale_while_revalidate, secs()),
                    "stale-if-error" => set(&mut d.stale_if_error, secs()),
                    "max-stale" if d.max_stale.is_none() => {
                        d.max_stale = Some(if value.is_some() {
                            secs().unwrap_or_default()
                        } else {
                            Duration::MAX
                        });
                    }
                    _ => {}
                }
            }
        }
        // HTTP/1.0 `Pragma: no-cache` when the request has no Cache-Control (§5.4).
        if !headers.contains_key(header::CACHE_CONTROL)
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            d.no_cache = true;
        }
        d
    }
}

/// The operator's settings the policy needs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Freshness for responses that state none; `None` = none.
    pub default_ttl: Option<Duration>,
    /// Fraction of `Date - Last-Modified` used as heuristic freshness.
    pub heuristic_fraction: f64,
    /// Cap on the heuristic.
    pub heuristic_max: Duration,
    /// Stale-while-revalidate when the response names none.
    pub stale_while_revalidate: Duration,
    /// Stale-if-error when the response names none.
    pub stale_if_error: Duration,
    /// Store responses with `Set-Cookie`.
    pub store_set_cookie: bool,
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1),
/// less 206 (kawal stores no partial content).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a GET/HEAD's response may be stored; `Err` says why not (the
/// `Cache-Status` detail).
pub fn storable(
    method: &Method,
    req: &Directives,
    req_has_authorization: bool,
    status: StatusCode,
    res: &Directives,
    headers: &HeaderMap,
    settings: &Settings,
) -> Result<(), &'static str> {
    if method != Method::GET {
        return Err("method");
    }
    if req.no_store || res.no_store {
        return Err("no-store");
    }
    if res.private {
        return Err("private");
    }
    if req_has_authorization && !(res.public || res.s_maxage.is_some() || res.must_revalidate) {
        return Err("authorization");
    }
    if !settings.store_set_cookie && headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii() == b"*"))
    {
        return Err("vary-star");
    }
    let explicit = res.public
        || res.max_age.is_some()
        || res.s_maxage.is_some()
        || headers.contains_key(header::EXPIRES);
    if status == StatusCode::PARTIAL_CONTENT
        || status.is_informational()
        || status == StatusCode::NOT_MODIFIED
    {
        return Err("status");
    }
    if !explicit && !heuristically_cacheable(status) {
        return Err("status");
    }
    Ok(())
}

/// When a stored response stays usable, decided once at store time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime (§4.2.1).
    pub lifetime: Duration,
    /// Age when received (§4.2.3 corrected_initial_age).
    pub initial_age: Duration,
    /// Stale-while-revalidate window past the lifetime.
    pub swr: Duration,
    /// Stale-if-error window past the lifetime.
    pub sie: Duration,
    /// Never served stale (must-revalidate, proxy-revalidate, s-maxage).
    pub must_revalidate: bool,
    /// Every use is validated first (response `no-cache`).
    pub no_cache: bool,
}

/// What a stored response can do for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Fresh for this request: answer it.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it.
    StaleAllowed,
    /// Stale within stale-while-revalidate: answer, refresh in the background.
    StaleWhileRevalidate,
    /// Ask the upstream (conditionally, when the entry has validators).
    Validate,
}

impl Freshness {
    /// Reads lifetime, age and stale windows from a response head.
    /// `request_time`/`response_time`: when the request went and the response came.
    pub fn of(
        status: StatusCode,
        res: &Directives,
        headers: &HeaderMap,
        settings: &Settings,
        default_ttl: Option<Duration>,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Freshness {
        let date = http_date(headers, header::DATE);
        let lifetime = if let Some(s) = res.s_maxage {
            s
        } else if let Some(m) = res.max_age {
            m
        } else if headers.contains_key(header::EXPIRES) {
            // An invalid Expires means already expired (§5.3).
            match (http_date(headers, header::EXPIRES), date.or(Some(response_time))) {
                (Some(exp), Some(d)) => exp.duration_since(d).unwrap_or_default(),
                _ => Duration::ZERO,
            }
        } else if !heuristically_cacheable(status) {
            Duration::ZERO
        } else if let Some(ttl) = default_ttl {
            ttl
        } else {
            match (
                http_date(headers, header::LAST_MODIFIED),
                date.unwrap_or(response_time),
            ) {
                (Some(lm), d) => d
                    .duration_since(lm)
                    .unwrap_or_default()
                    .mul_f64(settings.heuristic_fraction)
                    .min(settings.heuristic_max),
                _ => Duration::ZERO,
            }
        };
        let age_value = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let apparent = date.map_or(Duration::ZERO, |d| {
            response_time.duration_since(d).unwrap_or_default()
        });
        let delay = response_time.duration_since(request_time).unwrap_or_default();
        Freshness {
            lifetime,
            initial_age: apparent.max(age_value + delay),
            swr: res
                .stale_while_revalidate
                .unwrap_or(settings.stale_while_revalidate),
            sie: res.stale_if_error.unwrap_or(settings.stale_if_error),
            must_revalidate: res.must_revalidate || res.proxy_revalidate || res.s_maxage.is_some(),
            no_cache: res.no_cache,
        }
    }

    /// How long past storing the entry is worth keeping: fresh life plus the
    /// longest stale window (and a while more when it can be revalidated).
    pub fn keep_for(&self, has_validator: bool) -> Duration {
        let fresh = self.lifetime.saturating_sub(self.initial_age);
        let revalidate = if has_validator {
            self.lifetime.max(Duration::from_secs(60))
        } else {
            Duration::ZERO
        };
        let stale = if self.must_revalidate {
            Duration::ZERO
        } else {
            self.swr.max(self.sie)
        };
        fresh.saturating_add(stale.max(revalidate))
    }

    /// Freshness left at `age` (zero once stale).
    pub fn remaining(&self, age: Duration) -> Duration {
        self.lifetime.saturating_sub(age)
    }

    /// What the entry, at `age`, can do for a request with directives `req`.
    pub fn decide(&self, age: Duration, req: &Directives) -> Use {
        if self.no_cache || req.no_cache {
            return Use::Validate;
        }
        let fresh = age < self.lifetime
            && req.max_age.is_none_or(|m| age <= m)
            && req.min_fresh.is_none_or(|m| self.lifetime - age >= m);
        if fresh {
            return Use::Fresh;
        }
        if self.must_revalidate || age < self.lifetime {
            // Fresh, but not enough for this request: ask upstream.
            return Use::Validate;
        }
        let staleness = age - self.lifetime;
        if req.max_stale.is_some_and(|m| staleness <= m) && req.max_age.is_none_or(|m| age <= m) {
            return Use::StaleAllowed;
        }
        if staleness < self.swr && req.max_age.is_none() && req.min_fresh.is_none() {
            return Use::StaleWhileRevalidate;
        }
        Use::Validate
    }

    /// Whether the entry, at `age`, may answer for a failed upstream (RFC 5861 §4).
    pub fn stale_if_error(&self, age: Duration, req: &Directives) -> bool {
        if self.must_revalidate {
            return false;
        }
        let window = req.stale_if_error.unwrap_or(self.sie);
        age.saturating_sub(self.lifetime) <= window && !window.is_zero()
    }
}

/// XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh now when
/// `delta * beta * -ln(r) >= remaining`, with `r` uniform in (0, 1] and
/// `delta` the time the last fetch took. The chance is tiny far from expiry
/// and rises toward it; beta > 1 refreshes earlier, 0 never.
pub fn xfetch(delta: Duration, beta: f64, remaining: Duration, r: f64) -> bool {
    if beta <= 0.0 || remaining.is_zero() {
        return false;
    }
    let r = r.clamp(f64::MIN_POSITIVE, 1.0);
    delta.as_secs_f64() * beta * -r.ln() >= remaining.as_secs_f64()
}

/// Whether a client's conditional request is satisfied by a stored response
/// with `stored` headers: `If-None-Match` (weak comparison) wins over
/// `If-Modified-Since` (§4.3.2).
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let inm: Vec<&[u8]> = req
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .collect();
    if !inm.is_empty() {
        let Some(etag) = stored.get(header::ETAG) else {
            return false;
        };
        let weak = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
        let etag = weak(etag.as_bytes());
        return inm.iter().any(|t| *t == b"*" || weak(t) == etag);
    }
    match (
        http_date(req, header::IF_MODIFIED_SINCE),
        http_date(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(lm)) => lm <= since,
        _ => false,
    }
}

/// Headers that a 304 must not change in the stored response.
const KEEP_ON_304: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
];

/// The stored headers updated by a 304's (§3.2): each field the 304 carries
/// replaces the stored one, except the framing ones.
pub fn merge_304(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    for name in fresh.keys() {
        if KEEP_ON_304.contains(name) {
            continue;
        }
        out.remove(name);
        for v in fresh.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// A header holding an HTTP date, if readable.
pub fn http_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// `Age` in whole seconds.
pub fn age_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs())
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
