//! The admin endpoint that purges stored responses:
//! `POST /cache/purge?key=KEY` forgets one key (and its `Vary` variants),
//! `POST /cache/purge?prefix=PREFIX` every key starting with PREFIX; add
//! `&cache=NAME` (`upstream:NAME` or `inbound`) for one cache, else all.
//! A key is the request's host (as sent, lower-cased) and its normalized
//! path and query: `catalog:8080/items/7?full=1`.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::Cache;

/// Answers one purge request: status and JSON body.
pub fn handle(caches: &[Arc<Cache>], method: &Method, query: Option<&str>) -> (StatusCode, String) {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"use POST"}"#.into());
    }
    let (mut name, mut key, mut prefix) = (None, None, None);
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "cache" => name = Some(v),
            "key" => key = Some(v),
            "prefix" => prefix = Some(v),
            _ => {}
        }
    }
    let selected: Vec<&Arc<Cache>> = caches
        .iter()
        .filter(|c| name.as_deref().is_none_or(|n| c.name() == n))
        .collect();
    if selected.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such cache", "cache": name}).to_string(),
        );
    }
    let purged: usize = match (key, prefix) {
        (Some(k), None) => selected
            .iter()
            .map(|c| usize::from(c.store().purge_key(&k)))
            .sum(),
        (None, Some(p)) if !p.is_empty() => selected.iter().map(|c| c.store().purge_prefix(&p)).sum(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"error":"give exactly one of key= or prefix= (not empty)"}"#.into(),
            )
        }
    };
    (StatusCode::OK, serde_json::json!({"purged": purged}).to_string())
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| v.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, b[i]) {
            (Some(x), _) => {
                out.push(x);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_query_values() {
        assert_eq!(super::decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }
}
