//! The checks serde cannot make: ranges (attempts ≥ 1, rates in (0, 1],
//! durations above zero) and rules across values (routes to defined
//! upstreams, two listeners on one port). Each problem names its key path and
//! what is allowed; `report::render` adds `FILE:LINE:COL`.
//!
//! One `fn` per section, called from [`validate`]; a new section adds its own
//! and uses the [`Checks`] helpers so every message has the same shape.

use std::fmt::Display;
use std::time::Duration;

use super::{
    BreakerConfig, Config, Inbound, InboundJwt, Limits, Outbound, RateLimitRule, RetryConfig, Tracing,
    UpstreamConfig,
};

/// Shortest period for a file reload or DNS re-resolution: below it the
/// background task would spin (and TLS reload rounds up to it anyway).
const MIN_RELOAD: Duration = Duration::from_millis(100);

/// The problems found, as (key path, message) pairs.
#[derive(Default)]
pub(super) struct Checks {
    problems: Vec<(Vec<String>, String)>,
}

impl Checks {
    /// Records a problem at `table` + `key`.
    pub(super) fn bad(&mut self, table: &[&str], key: &str, msg: impl Into<String>) {
        let mut path: Vec<String> = table.iter().map(|s| s.to_string()).collect();
        if !key.is_empty() {
            path.push(key.to_owned());
        }
        self.problems.push((path, msg.into()));
    }

    /// `value >= min`, else "must be at least MIN (why), got VALUE".
    pub(super) fn at_least<T: PartialOrd + Display>(
        &mut self,
        table: &[&str],
        key: &str,
        value: T,
        min: T,
        why: &str,
    ) {
        if value < min {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            self.bad(table, key, format!("must be at least {min}{why}, got {value}"));
        }
    }

    /// A duration above zero (or at least `min`).
    pub(super) fn positive(&mut self, table: &[&str], key: &str, value: super::Dur, min: Duration) {
        if value.0.is_zero() || value.0 < min {
            let least = if min.is_zero() {
                "longer than 0s".to_owned()
            } else {
                format!("at least {}", super::Dur(min))
            };
            self.bad(table, key, format!("must be {least}, got \"{value}\""));
        }
    }

    /// A share in `(0, 1]` (or `[0, 1]` with `zero_ok`); NaN is refused too.
    pub(super) fn fraction(&mut self, table: &[&str], key: &str, value: f64, zero_ok: bool, why: &str) {
        let ok = if zero_ok {
            (0.0..=1.0).contains(&value)
        } else {
            value > 0.0 && value <= 1.0
        };
        if !ok {
            let range = if zero_ok {
                "from 0.0 to 1.0"
            } else {
                "above 0.0 and at most 1.0"
            };
            self.bad(table, key, format!("must be {range} ({why}), got {value}"));
        }
    }
}

/// Every range and cross-value problem of `cfg`.
pub(super) fn validate(cfg: &Config) -> Vec<(Vec<String>, String)> {
    let mut c = Checks::default();
    service(cfg, &mut c);
    listeners(cfg, &mut c);
    if let Some(inbound) = &cfg.inbound {
        self::inbound(inbound, &mut c);
    }
    match &cfg.outbound {
        Some(out) => outbound(cfg, out, &mut c),
        None if !cfg.upstreams.is_empty() => c.bad(
            &["upstreams"],
            "",
            "upstreams are defined but [outbound] is not: they would never be used",
        ),
        None => {}
    }
    for (name, up) in &cfg.upstreams {
        upstream(name, up, &mut c);
    }
    caches(cfg, &mut c);
    tracing(&cfg.tracing, &mut c);
    limits(&cfg.limits, &mut c);
    c.problems
}

/// Every cache table, upstreams' and inbound's, by the same rules (`cache.rs`).
fn caches(cfg: &Config, c: &mut Checks) {
    let upstreams = cfg
        .upstreams
        .iter()
        .filter_map(|(name, u)| Some((vec!["upstreams", name.as_str(), "cache"], u.cache.as_ref()?)));
    let inbound = cfg
        .inbound
        .iter()
        .filter_map(|i| Some((vec!["inbound", "cache"], i.cache.as_ref()?)));
    for (table, cache) in upstreams.chain(inbound) {
        for (key, msg) in super::cache::check(cache) {
            let mut path: Vec<&str> = table.clone();
            path.extend(key.iter().map(String::as_str));
            let last = path.pop().unwrap_or_default();
            c.bad(&path, last, msg);
        }
    }
}

fn service(cfg: &Config, c: &mut Checks) {
    let s = &["service"];
    if cfg.service.name.trim().is_empty() {
        c.bad(s, "name", "must not be empty: it is every log line's serviceName");
    }
    if let Some(n) = cfg.service.worker_threads {
        c.at_least(s, "worker_threads", n, 1, "leave it out to use every CPU");
    }
    if cfg.inbound.is_none() && cfg.outbound.is_none() {
        c.bad(
            s,
            "",
            "neither [inbound] nor [outbound] is configured: nothing to do",
        );
    }
}

/// Two listeners on one port (port 0 = "any free port", as tests use).
fn listeners(cfg: &Config, c: &mut Checks) {
    let mut listeners = vec![(["admin", "listen"], cfg.admin.listen.0)];
    if let Some(i) = &cfg.inbound {
        listeners.push((["inbound", "listen"], i.listen.0));
    }
    if let Some(o) = &cfg.outbound {
        listeners.push((["outbound", "listen"], o.listen.0));
    }
    for (i, (path, addr)) in listeners.iter().enumerate() {
        if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| {
            a.port() != 0
                && a.port() == addr.port()
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
        }) {
            let msg = format!("port {} is already used by {}", addr.port(), other.join("."));
            c.bad(path, "", msg);
        }
    }
}

fn inbound(inbound: &Inbound, c: &mut Checks) {
    let t = &["inbound"];
    c.positive(t, "connect_timeout", inbound.connect_timeout, Duration::ZERO);
    c.positive(t, "timeout", inbound.timeout, Duration::ZERO);
    let mtls = inbound.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if !inbound.allow.is_empty() && !mtls {
        c.bad(
            t,
            "allow",
            "allow rules match verified peer identities, which need [inbound.tls] client_ca (mTLS)",
        );
    }
    for (i, rule) in inbound.rate_limits.iter().enumerate() {
        rate_limit(i, rule, c);
    }
    if let Some(tls) = &inbound.tls {
        let t = &["inbound", "tls"];
        c.positive(t, "handshake_timeout", tls.handshake_timeout, Duration::ZERO);
        c.positive(t, "reload_interval", tls.reload_interval, MIN_RELOAD);
    }
    if let Some(jwt) = &inbound.jwt {
        self::jwt(jwt, c);
    }
    if let Some(guard) = &inbound.guard {
        c.problems.extend(super::guard::validate(guard));
    }
}

/// `[[inbound.rate_limits]]` number `i`.
fn rate_limit(i: usize, rule: &RateLimitRule, c: &mut Checks) {
    let at = i.to_string();
    let t = &["inbound", "rate_limits", at.as_str()];
    c.at_least(t, "requests", rule.requests, 1, "requests per period");
    if let Some(burst) = rule.burst {
        c.at_least(t, "burst", burst, 1, "leave it out to use `requests`");
    }
    c.positive(t, "period", rule.period, Duration::ZERO);
}

fn jwt(jwt: &InboundJwt, c: &mut Checks) {
    let t = &["inbound", "jwt"];
    match (&jwt.jwks_file, &jwt.jwks_url) {
        (Some(_), Some(_)) => c.bad(t, "jwks_url", "set either jwks_url or jwks_file, not both"),
        (None, None) => c.bad(t, "", "needs the JWKS: set jwks_file or jwks_url"),
        _ => {}
    }
    for (i, route) in jwt.routes.iter().enumerate() {
        if route.require_claims.is_empty() {
            let i = i.to_string();
            let msg = "must name at least one claim (a route with none adds nothing)";
            c.bad(&["inbound", "jwt", "routes", &i], "require_claims", msg);
        }
    }
    let https = jwt
        .jwks_url
        .as_ref()
        .is_some_and(|u| u.scheme_str() == Some("https"));
    if jwt.jwks_ca.is_some() && !https {
        c.bad(t, "jwks_ca", "only applies to an https:// jwks_url");
    }
    if jwt.issuer.is_empty() {
        c.bad(
            t,
            "issuer",
            "must not be empty: it is the `iss` every token must carry",
        );
    }
    if jwt.audiences.is_empty() || jwt.audiences.iter().any(String::is_empty) {
        c.bad(
            t,
            "audiences",
            "must list at least one audience, none of them empty",
        );
    }
    if let Err(msg) = crate::auth::jwt::parse_algorithms(&jwt.algorithms, jwt.hs256_secret_file.is_some()) {
        let key = if msg.contains("hs256_secret_file is set") {
            "hs256_secret_file"
        } else {
            "algorithms"
        };
        c.bad(t, key, msg);
    }
    c.positive(t, "max_lifetime", jwt.max_lifetime, Duration::ZERO);
    c.positive(t, "reload_interval", jwt.reload_interval, MIN_RELOAD);
}

fn outbound(cfg: &Config, out: &Outbound, c: &mut Checks) {
    if let Some(name) = &out.default_upstream {
        if !cfg.upstreams.contains_key(name) {
            c.bad(
                &["outbound"],
                "default_upstream",
                format!("no upstream named {name:?} is defined"),
            );
        }
    }
}

fn upstream(name: &str, up: &UpstreamConfig, c: &mut Checks) {
    let t = &["upstreams", name];
    if up.endpoints.is_empty() {
        c.bad(
            t,
            "endpoints",
            "needs at least one endpoint, e.g. [\"payment:8080\"]",
        );
    }
    for host in &up.hosts {
        let problem = match crate::host::split_authority(host) {
            _ if host.contains("://") => "no URL scheme or path".to_owned(),
            Err(e) => e.to_string(),
            Ok(_) => continue,
        };
        let msg = format!("{host:?}: {problem}; write a host name, optionally with :port");
        c.bad(t, "hosts", msg);
    }
    c.positive(t, "connect_timeout", up.connect_timeout, Duration::ZERO);
    c.positive(t, "timeout", up.timeout, Duration::ZERO);
    c.positive(t, "resolve_interval", up.resolve_interval, MIN_RELOAD);
    if up.timeout.0 < up.connect_timeout.0 {
        c.bad(t, "timeout", "must not be shorter than connect_timeout");
    }
    if let Some(tls) = &up.tls {
        let t = &["upstreams", name, "tls"];
        if tls.cert.is_some() != tls.key.is_some() {
            c.bad(t, "", "cert and key go together");
        }
        c.positive(t, "reload_interval", tls.reload_interval, MIN_RELOAD);
    }
    retry(name, &up.retry, up.timeout, c);
    breaker(name, &up.breaker, c);
}

fn retry(name: &str, r: &RetryConfig, timeout: super::Dur, c: &mut Checks) {
    let t = &["upstreams", name, "retry"];
    c.at_least(
        t,
        "attempts",
        r.attempts,
        1,
        "the first attempt counts; 1 = no retries",
    );
    if r.attempts > 1 && r.on.is_empty() {
        c.bad(
            t,
            "on",
            "is empty, so nothing would be retried: list what to retry, or set attempts = 1",
        );
    }
    if let Some(per_try) = r.per_try_timeout {
        c.positive(t, "per_try_timeout", per_try, Duration::ZERO);
        if per_try.0 > timeout.0 {
            c.bad(
                t,
                "per_try_timeout",
                format!("\"{per_try}\" is longer than the upstream's timeout \"{timeout}\", which would cut it short: leave it out or shorten it"),
            );
        }
    }
    let b = &["upstreams", name, "retry", "budget"];
    let ratio = f64::from(r.budget.ratio);
    c.fraction(
        b,
        "ratio",
        ratio,
        true,
        "retries per request: 0.2 lets retries add 20% to the load",
    );
}

fn breaker(name: &str, b: &BreakerConfig, c: &mut Checks) {
    let t = &["upstreams", name, "breaker"];
    c.at_least(
        t,
        "consecutive_failures",
        b.consecutive_failures,
        1,
        "failures in a row that open it",
    );
    c.fraction(
        t,
        "failure_rate",
        b.failure_rate,
        false,
        "the share of failed requests that opens it",
    );
    c.at_least(
        t,
        "min_requests",
        b.min_requests,
        1,
        "requests in the window before the rate counts",
    );
    c.positive(t, "window", b.window, Duration::ZERO);
    c.positive(t, "open_for", b.open_for, Duration::ZERO);
    c.at_least(
        t,
        "half_open_probes",
        b.half_open_probes,
        1,
        "probes that must succeed to close it",
    );
}

fn tracing(tr: &Tracing, c: &mut Checks) {
    let t = &["tracing"];
    c.fraction(
        t,
        "sample_ratio",
        tr.sample_ratio,
        true,
        "the share of new traces recorded",
    );
    if tr.propagation.is_empty() {
        c.bad(
            t,
            "propagation",
            "needs at least one format: \"w3c\", \"b3\" or \"b3multi\"",
        );
    }
    if tr.batch_size == 0 || tr.batch_size > tr.queue_size {
        c.bad(
            t,
            "batch_size",
            format!("must be at least 1 and at most queue_size ({})", tr.queue_size),
        );
    }
    c.at_least(t, "queue_size", tr.queue_size, 1, "spans held for export");
    c.positive(t, "flush_interval", tr.flush_interval, Duration::ZERO);
    c.positive(t, "export_timeout", tr.export_timeout, Duration::ZERO);
}

fn limits(l: &Limits, c: &mut Checks) {
    let t = &["limits"];
    c.at_least(
        t,
        "max_request_head",
        l.max_request_head,
        super::Size(8 * 1024),
        "the HTTP/1.1 parser needs 8KiB",
    );
    if l.max_request_head.0 > u64::from(u32::MAX) {
        c.bad(
            t,
            "max_request_head",
            "must be at most 4GiB (the HTTP/2 header list limit)",
        );
    }
    c.at_least(t, "max_header", l.max_header, super::Size(1), "");
    if l.max_header > l.max_request_head {
        c.bad(
            t,
            "max_header",
            format!(
                "must not be larger than max_request_head ({})",
                l.max_request_head
            ),
        );
    }
    c.at_least(t, "max_headers", l.max_headers, 1, "");
    c.at_least(t, "max_uri", l.max_uri, super::Size(1), "");
    c.positive(t, "request_head_timeout", l.request_head_timeout, Duration::ZERO);
    c.positive(t, "body_idle_timeout", l.body_idle_timeout, Duration::ZERO);
    c.positive(t, "send_timeout", l.send_timeout, Duration::ZERO);
    if let Some(age) = l.max_connection_age {
        c.positive(t, "max_connection_age", age, Duration::ZERO);
    }
    c.at_least(t, "h2_max_concurrent_streams", l.h2_max_concurrent_streams, 1, "");
    c.at_least(t, "max_connections", l.max_connections, 1, "");
}
