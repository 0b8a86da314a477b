//! `GET /status.json`: what the admin page shows, as one JSON document
//! (described in `docs/admin.md`), read from the same counters and gauges
//! as `/metrics` when someone asks; nothing is kept for it in between.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Admin;
use crate::metrics::recent::{SLOTS, SLOT_SECS};
use crate::metrics::RouteMetrics;

/// The document.
pub fn status(admin: &Admin) -> Value {
    let info = &admin.info;
    let upstreams: Vec<Value> = admin
        .upstreams
        .load()
        .iter()
        .map(|d| {
            let endpoints: Vec<Value> = d
                .upstream
                .endpoint_loads()
                .into_iter()
                .map(|(addr, outstanding)| json!({ "address": addr.to_string(), "outstanding": outstanding }))
                .collect();
            json!({
                "name": &*d.upstream.name,
                "endpoints": endpoints,
                "breaker": d.resilience.breaker_json(),
                "retryBudgetRemaining": d.resilience.budget_remaining(),
                "retries": d.resilience.metrics.retry_counts(),
                "requests": route(&d.metrics),
            })
        })
        .collect();
    let refusals = admin.metrics.refusals();
    let inbound = admin.inbound.as_ref().map(|r| {
        json!({
            "requests": route(r),
            "authzDenied": refusals.authz_denied(),
            "jwtFailures": refusals.jwt_failures(),
            "tlsHandshakeFailures": admin.tls_failures.as_ref().map(|t| t.counts()).unwrap_or_default(),
        })
    });
    let certificates: Vec<Value> = admin
        .certs
        .load()
        .iter()
        .filter_map(|c| {
            let not_after = (c.not_after)()?;
            Some(json!({
                "name": c.name,
                "notAfterUnix": unix(not_after),
                "expiresInSeconds": crate::tls::secs_until(not_after),
            }))
        })
        .collect();
    let mut doc = json!({
        "service": info.service,
        "version": env!("CARGO_PKG_VERSION"),
        "startedAtUnix": unix(info.started),
        "uptimeSeconds": info.started_instant.elapsed().as_secs(),
        "configLoadedAtUnix": unix(info.started),
        "config": info.config,
        "ready": admin.ready.load(std::sync::atomic::Ordering::Acquire),
        "window": { "slotSeconds": SLOT_SECS, "slots": SLOTS },
        "upstreams": upstreams,
        "unrouted": admin.unrouted.as_ref().map(|r| r.totals()),
        "inbound": inbound,
        "certificates": certificates,
        "logLinesDropped": admin.sink.dropped(),
    });
    // The cache and guard panels: present only where those features are on.
    let caches = admin.caches.load();
    if !caches.is_empty() {
        doc["cache"] = crate::cache::Cache::panel(&caches);
    }
    if let Some(panel) = &admin.panels.guard {
        doc["guard"] = panel();
    }
    doc
}

fn route(r: &RouteMetrics) -> Value {
    json!({ "totals": r.totals(), "recent": r.recent() })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The loaded config as text with secrets taken out: the password of any
/// URL (`scheme://user:PASSWORD@`), URL query strings (tokens travel there),
/// and the value of any field named like a secret (`*secret*`, `*password*`,
/// `*token*`) unless it names a file. Paths to key files are shown, never
/// what they hold (the config holds no key material, only paths).
pub fn redact(config: &str) -> String {
    compact(config)
        .iter()
        .map(|l| redact_line(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pretty `Debug` spreads `Dur(30s)` over three lines: joins a one-value
/// tuple (`Name(`, value, `)`) back onto one line.
fn compact(debug: &str) -> Vec<String> {
    let lines: Vec<&str> = debug.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let (true, Some(value), Some(close)) = (line.ends_with('('), lines.get(i + 1), lines.get(i + 2)) {
            let (value, close) = (value.trim(), close.trim_start());
            if !value.ends_with(['(', '{', '[']) && close.starts_with(')') {
                out.push(format!("{line}{}{close}", value.trim_end_matches(',')));
                i += 3;
                continue;
            }
        }
        out.push(line.to_string());
        i += 1;
    }
    out
}

fn redact_line(line: &str) -> String {
    let trimmed = line.trim_start();
    if let Some((name, _)) = trimmed.split_once(": ") {
        let lower = name.to_ascii_lowercase();
        let secret = ["secret", "password", "token", "credential"]
            .iter()
            .any(|s| lower.contains(s));
        if secret && !lower.ends_with("_file") && !lower.ends_with("_path") {
            let indent = &line[..line.len() - trimmed.len()];
            return format!("{indent}{name}: \"<redacted>\",");
        }
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find(['"', ' ', ',', ')']).unwrap_or(rest.len());
        let (url, tail) = rest.split_at(end);
        let (url, query) = match url.split_once('?') {
            Some((u, _)) => (u, "?<redacted>"),
            None => (url, ""),
        };
        match url.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:<redacted>@{host}"));
            }
            None => out.push_str(url),
        }
        out.push_str(query);
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_one_value_tuples() {
        let debug = "a: Dur(\n    30s,\n),\nb: Some(\n    X {\n        y: 1,\n    },\n),";
        assert_eq!(
            compact(debug),
            [
                "a: Dur(30s),",
                "b: Some(",
                "    X {",
                "        y: 1,",
                "    },",
                "),"
            ]
        );
        let secret = "    hs256_secret: Some(\n        \"s3cr3t\",\n    ),";
        assert_eq!(redact(secret), "    hs256_secret: \"<redacted>\",");
    }

    #[test]
    fn redacts_secrets_and_keeps_the_rest() {
        for (line, want) in [
            (
                r#"    redis_url: "redis://app:hunter2@10.0.0.5:6379/0","#,
                r#"    redis_url: "redis://app:<redacted>@10.0.0.5:6379/0","#,
            ),
            (
                r#"    jwks_url: Some("https://auth/keys?token=abc"),"#,
                r#"    jwks_url: Some("https://auth/keys?<redacted>"),"#,
            ),
            (
                r#"    hs256_secret: "s3cr3t","#,
                r#"    hs256_secret: "<redacted>","#,
            ),
            (r#"    api_token: Some("x"),"#, r#"    api_token: "<redacted>","#),
            (
                r#"    hs256_secret_file: Some("/etc/kawal/hs.key"),"#,
                r#"    hs256_secret_file: Some("/etc/kawal/hs.key"),"#,
            ),
            (r#"    key: "tls/key.pem","#, r#"    key: "tls/key.pem","#),
            (
                r#"    otlp_endpoint: Some("http://127.0.0.1:4318"),"#,
                r#"    otlp_endpoint: Some("http://127.0.0.1:4318"),"#,
            ),
        ] {
            assert_eq!(redact_line(line), want);
        }
    }
}
