//! `kawal check FILE`, run as the built binary: every bad value is refused
//! with exit 2 and `FILE:LINE:COL: key.path: ...` in TOML's words, and the
//! files start would load (certificates, keys, JWKS) are loaded too.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::pki::Pki;

const BASE: &str = r#"[service]
name = "orders"

[outbound]
listen = "127.0.0.1:0"

[upstreams.payment]
endpoints = ["127.0.0.1:9000"]
"#;

const INBOUND: &str = r#"
[inbound]
listen = "127.0.0.1:0"
app = "127.0.0.1:8080"
"#;

/// Words that would show Rust rather than TOML.
const RUST_WORDS: [&str; 12] = [
    "u8", "u16", "u32", "u64", "usize", "i64", "f32", "f64", "borrowed", "struct ", "variant", "field",
];

/// A scratch directory for config files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kawal-config-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `kawal check FILE`: (exit code, stdout, stderr).
fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kawal"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run kawal");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// The 1-based line of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"))
        + 1
}

/// Asserts that `text` is refused naming `key` at the line holding
/// `needle`, with `hint` in the message and no Rust words.
fn refused(dir: &Dir, case: &str, text: &str, needle: &str, key: &str, hint: &str) {
    let path = dir.write(&format!("{case}.toml"), text);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(2), "{case}: {stdout}{stderr}");
    let line = line_of(text, needle);
    let want = format!("{}:{line}:", path.display());
    let hit = stderr
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("{case}: no problem at {want}\n{stderr}"));
    let rest = &hit[want.len()..];
    let (col, rest) = rest.split_once(": ").unwrap_or_else(|| panic!("{case}: {hit}"));
    assert!(
        col.parse::<usize>().is_ok_and(|c| c >= 1),
        "{case}: column in {hit}"
    );
    assert!(
        rest.starts_with(&format!("{key}: ")),
        "{case}: key {key} in {hit}"
    );
    assert!(rest.contains(hint), "{case}: {hint:?} in {hit}");
    for word in RUST_WORDS {
        assert!(!stderr.contains(word), "{case}: Rust word {word:?} in {stderr}");
    }
}

#[test]
fn check_refuses_every_bad_value_naming_file_line_and_key() {
    let dir = Dir::new("values");
    let up = "upstreams.payment";
    let retry = "[upstreams.payment.retry]\n";
    let breaker = "[upstreams.payment.breaker]\n";
    // (case, text added to BASE, the line at fault, key, part of the message)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "retry_on_typo",
            r#"on = ["connect_failure"]"#,
            "on =",
            "retry.on",
            r#"did you mean "connect-failure""#,
        ),
        (
            "retry_on_class",
            r#"on = ["502", "5xx"]"#,
            "on =",
            "retry.on",
            r#"accepted: "connect-failure", "reset", "timeout""#,
        ),
        (
            "retry_on_404",
            r#"on = ["404"]"#,
            "on =",
            "retry.on",
            "never retried",
        ),
        (
            "retry_on_empty",
            "attempts = 3\non = []",
            "on =",
            "retry.on",
            "nothing would be retried",
        ),
        (
            "attempts_0",
            "attempts = 0",
            "attempts",
            "retry.attempts",
            "at least 1",
        ),
        (
            "attempts_negative",
            "attempts = -1",
            "attempts",
            "retry.attempts",
            "whole number",
        ),
        (
            "backoff_base_above_max",
            r#"backoff = { base = "2s", max = "1s" }"#,
            "backoff",
            "retry.backoff",
            "must not be longer than max",
        ),
        (
            "backoff_zero",
            r#"backoff = { base = "0s" }"#,
            "backoff",
            "retry.backoff",
            "longer than 0s",
        ),
        (
            "budget_ratio",
            "budget = { ratio = 7.0 }",
            "budget",
            "retry.budget.ratio",
            "from 0.0 to 1.0",
        ),
        (
            "budget_ratio_nan",
            "budget = { ratio = nan }",
            "budget",
            "retry.budget.ratio",
            "from 0.0 to 1.0",
        ),
        (
            "per_try_timeout",
            r#"per_try_timeout = "1m""#,
            "per_try_timeout",
            "retry.per_try_timeout",
            "longer than the upstream's timeout",
        ),
        (
            "retry_typo_key",
            "atempts = 2",
            "atempts",
            "retry.atempts",
            r#"unknown key "atempts""#,
        ),
    ];
    for (case, body, needle, key, hint) in cases {
        let text = format!("{BASE}{retry}{body}\n");
        refused(&dir, case, &text, needle, &format!("{up}.{key}"), hint);
    }
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "failure_rate_high",
            "failure_rate = 1.5",
            "failure_rate",
            "breaker.failure_rate",
            "above 0.0 and at most 1.0",
        ),
        (
            "failure_rate_negative",
            "failure_rate = -3.0",
            "failure_rate",
            "breaker.failure_rate",
            "above 0.0",
        ),
        (
            "failure_rate_zero",
            "failure_rate = 0.0",
            "failure_rate",
            "breaker.failure_rate",
            "above 0.0",
        ),
        (
            "consecutive_0",
            "consecutive_failures = 0",
            "consecutive",
            "breaker.consecutive_failures",
            "at least 1",
        ),
        (
            "min_requests_0",
            "min_requests = 0",
            "min_requests",
            "breaker.min_requests",
            "at least 1",
        ),
        (
            "window_0",
            r#"window = "0s""#,
            "window",
            "breaker.window",
            "longer than 0s",
        ),
        (
            "open_for_0",
            r#"open_for = "0ms""#,
            "open_for",
            "breaker.open_for",
            "longer than 0s",
        ),
        (
            "probes_0",
            "half_open_probes = 0",
            "half_open",
            "breaker.half_open_probes",
            "at least 1",
        ),
    ];
    for (case, body, needle, key, hint) in cases {
        let text = format!("{BASE}{breaker}{body}\n");
        refused(&dir, case, &text, needle, &format!("{up}.{key}"), hint);
    }
    // Keys of the upstream table itself: appended right after `endpoints`.
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "host_url",
            r#"hosts = ["http://payment"]"#,
            "hosts",
            "hosts",
            "host name",
        ),
        (
            "connect_timeout_0",
            r#"connect_timeout = "0s""#,
            "connect_timeout",
            "connect_timeout",
            "longer than 0s",
        ),
        (
            "resolve_interval_0",
            r#"resolve_interval = "0s""#,
            "resolve_interval",
            "resolve_interval",
            "at least 100ms",
        ),
        (
            "timeout_bare",
            "timeout = 30",
            "timeout",
            "timeout",
            r#"write "30s" or "30ms""#,
        ),
        (
            "protocol",
            r#"protocol = "http3""#,
            "protocol",
            "protocol",
            r#"unknown value "http3""#,
        ),
    ];
    for (case, body, needle, key, hint) in cases {
        let text = format!("{BASE}{body}\n");
        refused(&dir, case, &text, needle, &format!("{up}.{key}"), hint);
    }
    // Everything else.
    let cases: &[(&str, String, &str, &str, &str)] = &[
        ("workers_negative", BASE.replace("name = \"orders\"", "name = \"orders\"\nworker_threads = -1"), "worker_threads", "service.worker_threads", "whole number"),
        ("workers_0", BASE.replace("name = \"orders\"", "name = \"orders\"\nworker_threads = 0"), "worker_threads", "service.worker_threads", "at least 1"),
        ("user_header", BASE.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nuser_header = \"x user\""), "user_header", "outbound.user_header", "not a header name"),
        ("otlp_https", format!("{BASE}[tracing]\notlp_endpoint = \"https://collector:4318\"\n"), "otlp", "tracing.otlp_endpoint", "https is not supported"),
        ("otlp_not_url", format!("{BASE}[tracing]\notlp_endpoint = \"collector\"\n"), "otlp", "tracing.otlp_endpoint", "http://host:port"),
        ("sample_ratio", format!("{BASE}[tracing]\nsample_ratio = 2.0\n"), "sample_ratio", "tracing.sample_ratio", "from 0.0 to 1.0"),
        ("flush_interval_0", format!("{BASE}[tracing]\nflush_interval = \"0s\"\n"), "flush_interval", "tracing.flush_interval", "longer than 0s"),
        ("max_connections_0", format!("{BASE}[limits]\nmax_connections = 0\n"), "max_connections", "limits.max_connections", "at least 1"),
        ("max_headers_string", format!("{BASE}[limits]\nmax_headers = \"many\"\n"), "max_headers", "limits.max_headers", "expected a whole number"),
        ("max_header_above_head", format!("{BASE}[limits]\nmax_header = \"1MiB\"\n"), "max_header", "limits.max_header", "max_request_head"),
        ("body_idle_0", format!("{BASE}[limits]\nbody_idle_timeout = \"0s\"\n"), "body_idle", "limits.body_idle_timeout", "longer than 0s"),
        ("log_level", format!("{BASE}[log]\nlevel = \"loud\"\n"), "level", "log.level", r#"unknown value "loud""#),
        ("inbound_timeout_0", format!("{BASE}{INBOUND}timeout = \"0s\"\n"), "timeout", "inbound.timeout", "longer than 0s"),
        ("jwt_algorithm", format!("{BASE}{INBOUND}[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_file = \"j.json\"\nalgorithms = [\"RS265\"]\n"), "algorithms", "inbound.jwt.algorithms", "unsupported algorithm \"RS265\""),
        ("jwt_audiences", format!("{BASE}{INBOUND}[inbound.jwt]\nissuer = \"i\"\naudiences = []\njwks_file = \"j.json\"\n"), "audiences", "inbound.jwt.audiences", "at least one"),
    ];
    for (case, text, needle, key, hint) in cases {
        refused(&dir, case, text, needle, key, hint);
    }
    let rate = |body: &str| format!("{BASE}{INBOUND}[[inbound.rate_limits]]\n{body}\n");
    let cases: &[(&str, String, &str, &str, &str)] = &[
        (
            "rate_requests_0",
            rate("requests = 0"),
            "requests",
            "inbound.rate_limits.0.requests",
            "at least 1",
        ),
        (
            "rate_period_0",
            rate("requests = 5\nperiod = \"0s\""),
            "period",
            "inbound.rate_limits.0.period",
            "longer than 0s",
        ),
        (
            "rate_burst_0",
            rate("requests = 5\nburst = 0"),
            "burst",
            "inbound.rate_limits.0.burst",
            "at least 1",
        ),
        (
            "rate_key",
            rate("requests = 5\nkey = \"ip\""),
            "key",
            "inbound.rate_limits.0.key",
            "\"route\", \"identity\"",
        ),
        (
            "rate_path",
            rate("requests = 5\npaths = [\"orders\"]"),
            "paths =",
            "inbound.rate_limits.0.paths",
            "path",
        ),
        (
            "cache_size",
            format!("{BASE}[upstreams.payment.cache]\nmax_bytes = \"64\"\n"),
            "max_bytes",
            "upstreams.payment.cache.max_bytes",
            "KiB",
        ),
        (
            "cache_object",
            format!("{BASE}[upstreams.payment.cache]\nmax_bytes = \"1MiB\"\nmax_object_size = \"2MiB\"\n"),
            "max_object_size",
            "upstreams.payment.cache.max_object_size",
            "must not exceed max_bytes",
        ),
        (
            "cache_ttl",
            format!("{BASE}[upstreams.payment.cache]\ndefault_ttl = \"0s\"\n"),
            "default_ttl",
            "upstreams.payment.cache.default_ttl",
            "more than 0s",
        ),
    ];
    for (case, text, needle, key, hint) in cases {
        refused(&dir, case, text, needle, key, hint);
    }
    // Scopes (methods, paths, identities) are read into patterns by serde:
    // a bad one is named at its own key, in every kind of rule.
    let allow = |body: &str| format!("{BASE}{INBOUND}[[inbound.allow]]\n{body}\n");
    let jwt = |body: &str| {
        format!(
            "{BASE}{INBOUND}[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_file = \"j.json\"\n\
             [[inbound.jwt.routes]]\n{body}\n"
        )
    };
    let cache =
        |body: &str| format!("{BASE}[upstreams.payment.cache]\n[[upstreams.payment.cache.rules]]\n{body}\n");
    let guarded = |body: &str| {
        format!("{BASE}{INBOUND}[inbound.guard]\n[[inbound.guard.routes]]\nidempotency = true\n{body}\n")
    };
    let cases: &[(&str, String, &str, &str, &str)] = &[
        (
            "allow_identities_empty",
            allow("identities = []"),
            "identities",
            "inbound.allow.0.identities",
            "use [\"*\"] for any authenticated peer",
        ),
        (
            "allow_identity_star",
            allow("identities = [\"spiffe://a*\"]"),
            "identities",
            "inbound.allow.0.identities",
            "`*` is allowed only alone or as a final `/*` segment",
        ),
        (
            "allow_method_case",
            allow("identities = [\"*\"]\nmethods = [\"get\"]"),
            "methods",
            "inbound.allow.0.methods",
            "must be an uppercase token such as GET",
        ),
        (
            "allow_path_query",
            allow("identities = [\"*\"]\npaths = [\"/a?b=1\"]"),
            "paths",
            "inbound.allow.0.paths",
            "must not contain `?` or `#`",
        ),
        (
            "jwt_route_path",
            jwt("paths = [\"orders\"]\nrequire_claims = { scope = \"w\" }"),
            "paths",
            "inbound.jwt.routes.0.paths",
            "must start with `/`",
        ),
        (
            "jwt_route_methods_star",
            jwt("methods = [\"GET\", \"*\"]\nrequire_claims = { scope = \"w\" }"),
            "methods",
            "inbound.jwt.routes.0.methods",
            "`*` in methods must be the only entry",
        ),
        (
            "jwt_route_no_claims",
            jwt("paths = [\"/a\"]\nrequire_claims = {}"),
            "require_claims",
            "inbound.jwt.routes.0.require_claims",
            "at least one claim",
        ),
        (
            "cache_rule_paths_empty",
            cache("paths = []"),
            "paths",
            "upstreams.payment.cache.rules.0.paths",
            "empty paths list (write [\"*\"] for any path)",
        ),
        (
            "cache_rule_escape",
            cache("paths = [\"/caf%c3%a9\"]"),
            "paths",
            "upstreams.payment.cache.rules.0.paths",
            "write %C3 in upper case",
        ),
        (
            "guard_methods_empty",
            guarded("methods = []"),
            "methods",
            "inbound.guard.routes.0.methods",
            "empty methods list (omit it to allow any method)",
        ),
        (
            "rate_methods_case",
            rate("requests = 5\nmethods = [\"Post\"]"),
            "methods",
            "inbound.rate_limits.0.methods",
            "uppercase token",
        ),
        (
            "rate_paths_multiline",
            rate("requests = 5\npaths = [\n  \"/a\",\n  \"/b%7e\",\n]"),
            "paths",
            "inbound.rate_limits.0.paths",
            "write '~' instead of %7e",
        ),
    ];
    for (case, text, needle, key, hint) in cases {
        refused(&dir, case, text, needle, key, hint);
    }
    let guard = |body: &str| format!("{BASE}{INBOUND}[inbound.guard]\n[[inbound.guard.routes]]\n{body}\n");
    let cases: &[(&str, String, &str, &str, &str)] = &[
        (
            "guard_version_without_order",
            guard("version_from = \"ce-sequence\""),
            "version_from",
            "inbound.guard.routes.0.version_from",
            "needs order_by",
        ),
        (
            "guard_duplicate_status",
            guard("cloudevents = true\nduplicate_status = 409"),
            "duplicate_status",
            "inbound.guard.routes.0.duplicate_status",
            "2xx",
        ),
        (
            "guard_store",
            format!("{BASE}{INBOUND}[inbound.guard]\nstore = \"disk\"\n"),
            "store",
            "inbound.guard.store",
            "memory",
        ),
    ];
    for (case, text, needle, key, hint) in cases {
        refused(&dir, case, text, needle, key, hint);
    }
}

#[test]
fn a_config_without_service_says_so() {
    let dir = Dir::new("service");
    let path = dir.write("no-service.toml", INBOUND);
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr.trim(),
        format!("{}:1:1: the [service] table is required", path.display())
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = Dir::new("many");
    let text = format!(
        "{BASE}[upstreams.payment.retry]\nattempts = 0\non = [\"5xx\"]\nbudget = {{ ratio = 7.0 }}\n[upstreams.payment.breaker]\nconsecutive_failures = 0\nwindow = \"0s\"\n"
    );
    let path = dir.write("many.toml", &text);
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2));
    // A value that cannot be read and values out of range, in one run.
    for key in [
        "retry.on",
        "retry.attempts",
        "retry.budget.ratio",
        "breaker.consecutive_failures",
        "breaker.window",
    ] {
        assert!(
            stderr.contains(&format!(": upstreams.payment.{key}: ")),
            "{key}: {stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 5, "{stderr}");
}

fn tls_config(cert: &str, key: &str, ca: &str) -> String {
    format!("{BASE}{INBOUND}[inbound.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n")
}

#[test]
fn check_loads_certificates_keys_and_jwks_as_start_does() {
    let pki = Pki::new("check");
    pki.leaf("a", "spiffe://shop.test/ns/default/sa/a");
    pki.leaf("b", "spiffe://shop.test/ns/default/sa/b");
    let dir = Dir::new("files");
    let (cert, key, other_key, ca) = (
        pki.path("a.crt"),
        pki.path("a.key"),
        pki.path("b.key"),
        pki.path("ca.pem"),
    );

    let good = dir.write("good.toml", &tls_config(&cert, &key, &ca));
    let (code, stdout, stderr) = check(&good);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), format!("{}: ok", good.display()));
    // A remote JWKS is not fetched by `check` (only its CA bundle is loaded).
    let remote = format!(
        "{BASE}{INBOUND}[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_url = \"https://idp.invalid/jwks\"\njwks_ca = \"{ca}\"\n"
    );
    let (code, _, stderr) = check(&dir.write("remote.toml", &remote));
    assert_eq!(code, Some(0), "{stderr}");

    for (case, text, needle, key_path, hint) in [
        ("missing_cert", tls_config(&pki.path("nope.crt"), &key, &ca), "cert =", "inbound.tls.cert", "cannot read"),
        ("mismatched_key", tls_config(&cert, &other_key, &ca), "key =", "inbound.tls.key", "do not match"),
        ("ca_not_a_ca", tls_config(&cert, &key, &key), "client_ca =", "inbound.tls.client_ca", ""),
        (
            "upstream_mismatch",
            format!("{BASE}[upstreams.payment.tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{other_key}\"\n"),
            "key =",
            "upstreams.payment.tls.key",
            "do not match",
        ),
        (
            "upstream_identity",
            format!("{BASE}[upstreams.payment.tls]\nca = \"{ca}\"\nserver_identity = \"spiffe://Bad Id\"\n"),
            "server_identity",
            "upstreams.payment.tls.server_identity",
            "server identity",
        ),
        (
            "jwks_ca_missing",
            format!("{BASE}{INBOUND}[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_url = \"https://idp.test/jwks\"\njwks_ca = \"missing-ca.pem\"\n"),
            "jwks_ca",
            "inbound.jwt.jwks_ca",
            "missing-ca.pem",
        ),
        (
            "jwks_missing",
            format!("{BASE}{INBOUND}[inbound.jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_file = \"missing-jwks.json\"\n"),
            "jwks_file",
            "inbound.jwt.jwks_file",
            "missing-jwks.json",
        ),
    ] {
        let path = dir.write(&format!("{case}.toml"), &text);
        let (code, stdout, stderr) = check(&path);
        assert_eq!(code, Some(2), "{case}: {stdout}{stderr}");
        let line = line_of(&text, needle);
        let want = format!("{}:{line}:", path.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&want) && l.contains(&format!(": {key_path}: ")) && l.contains(hint)),
            "{case}: want {want} {key_path} {hint:?}\n{stderr}"
        );
    }
}
