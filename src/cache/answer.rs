//! Responses the cache answers with from a stored entry, and the
//! `Cache-Status` (RFC 9211) and `Age` fields on every response that went
//! through a cache.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::policy;
use super::store::Entry;

/// `cache-status`
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

/// The entry as the answer to a request with `method` and `req` headers:
/// 304 when the client's conditional matches, the stored response otherwise
/// (no body for HEAD). The body is the stored `Bytes`, shared, not copied.
pub fn from_entry(entry: &Entry, method: &Method, req: &HeaderMap, status: &str) -> Response<Bytes> {
    let age = entry.age();
    let conditional = req.contains_key(header::IF_NONE_MATCH) || req.contains_key(header::IF_MODIFIED_SINCE);
    let mut res =
        if conditional && entry.status == StatusCode::OK && policy::not_modified(req, &entry.headers) {
            let mut res = Response::new(Bytes::new());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            for name in NOT_MODIFIED_FIELDS.iter().chain([&header::LAST_MODIFIED]) {
                for v in entry.headers.get_all(name) {
                    res.headers_mut().append(name.clone(), v.clone());
                }
            }
            res
        } else {
            let body = if method == Method::HEAD {
                Bytes::new()
            } else {
                entry.body.clone()
            };
            let mut res = Response::new(body);
            *res.status_mut() = entry.status;
            *res.headers_mut() = entry.headers.clone();
            res
        };
    res.headers_mut().insert(header::AGE, policy::age_value(age));
    let ttl = entry.freshness.lifetime.as_secs() as i64 - age.as_secs() as i64;
    set_status(res.headers_mut(), &format!("{status}; ttl={ttl}"));
    res
}

/// Adds `Cache-Status: kawal; ...`, after any from caches nearer the
/// origin (RFC 9211 §2: the last entry is the cache nearest the client).
pub fn set_status(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("kawal; {value}")) {
        headers.append(CACHE_STATUS, v);
    }
}
