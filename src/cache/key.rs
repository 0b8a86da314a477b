//! Cache keys: what a stored response is found by.
//!
//! The primary key is the lower-cased authority and the normalized target
//! (path and query, as `proxy::check_head` made it: one spelling). A response
//! with `Vary` is stored under a variant key: the primary key, the marker's
//! generation (so an invalidated primary orphans its old variants) and the
//! request's values of the named headers. Nothing else of the request is in
//! the key, and nothing of it is trusted beyond that: a client can only ever
//! fill the slot its own request names.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// `authority` + path and query.
pub fn primary(authority: &str, target: &Uri) -> String {
    let pq = target.path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(authority.len() + pq.len());
    key.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
    key.push_str(pq);
    key
}

/// The key of one variant: `names` are the stored response's `Vary` fields.
pub fn variant(primary: &str, generation: u64, names: &[HeaderName], req: &HeaderMap) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    let _ = write!(key, "\n{generation}");
    for name in names {
        key.push('\n');
        for (i, v) in req.get_all(name).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            // Bytes that are not text are kept apart from every text value.
            key.push_str(v.to_str().map(str::trim).unwrap_or("\u{fffd}"));
        }
    }
    key
}

/// The `Vary` field names of a response, lower-cased and sorted (so
/// `Vary: a, b` and `Vary: b, a` select alike).
pub fn vary_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// The primary key a `Location` / `Content-Location` value names, when it
/// is of the same origin (§4.4): a path, or an absolute URI whose authority
/// is `authority`.
pub fn same_origin(authority: &str, value: &HeaderValue) -> Option<String> {
    let uri: Uri = value.to_str().ok()?.parse().ok()?;
    match uri.authority() {
        None if uri.path().starts_with('/') => Some(primary(authority, &uri)),
        Some(a) if a.as_str().eq_ignore_ascii_case(authority) => Some(primary(authority, &uri)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let t: Uri = "/a/b?x=1".parse().unwrap();
        assert_eq!(primary("Api.Local:80", &t), "api.local:80/a/b?x=1");
        let mut h = HeaderMap::new();
        h.insert("accept-encoding", HeaderValue::from_static(" gzip "));
        let names = vary_names(&{
            let mut r = HeaderMap::new();
            r.insert("vary", HeaderValue::from_static("Accept-Encoding, Accept"));
            r
        });
        assert_eq!(names, ["accept", "accept-encoding"]);
        assert_eq!(variant("k", 7, &names, &h), "k\n7\n\ngzip");
        let br = {
            let mut h = HeaderMap::new();
            h.insert("accept-encoding", HeaderValue::from_static("br"));
            h
        };
        assert_ne!(variant("k", 7, &names, &h), variant("k", 7, &names, &br));
    }

    #[test]
    fn same_origin_locations() {
        #[rustfmt::skip]
        let cases = [
            ("/x/1", Some("h:1/x/1")),
            ("http://h:1/y", Some("h:1/y")),
            ("http://H:1/y?q", Some("h:1/y?q")),
            ("http://other/y", None),
            ("relative", None),
        ];
        for (v, want) in cases {
            assert_eq!(
                same_origin("h:1", &HeaderValue::from_static(v)).as_deref(),
                want,
                "{v}"
            );
        }
    }
}
