//! `/metrics` as a Prometheus user meets it: parsed by a real OpenMetrics
//! parser, every family named, typed and labelled as `docs/metrics.md`
//! says, no zero series for label values never used, and the refusals
//! (TLS handshake, authorization, JWT) counted by reason.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rcgen::KeyPair;
use serde_json::json;
use support::openmetrics::{self, Family};
use support::pki::Pki;
use support::*;

const A_ID: &str = "spiffe://shop.test/ns/default/sa/a";
const B_ID: &str = "spiffe://shop.test/ns/default/sa/b";
const INTRUDER_ID: &str = "spiffe://shop.test/ns/default/sa/intruder";

/// The documented metrics: name → (type, labels).
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let labels = cells[3]
                .split(',')
                .map(|c| c.trim().trim_matches('`').to_string())
                .filter(|c| !c.is_empty())
                .collect();
            (name, (cells[2].to_string(), labels))
        })
        .collect()
}

async fn scrape(proxy: &Proxy) -> (String, Vec<Family>) {
    let res = client()
        .get(format!("http://{}/metrics", proxy.admin()))
        .send()
        .await
        .unwrap();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let families = openmetrics::parse(&text);
    (text, families)
}

/// Every family is documented with its type and labels; no labelled
/// counter or histogram series is zero (it would exist only if made before use).
fn check_against_doc(text: &str, families: &[Family]) {
    let doc = documented();
    for f in families {
        // OpenMetrics names a counter family without `_total`; the doc names the sample.
        let sample_name = if f.kind == "counter" {
            format!("{}_total", f.name)
        } else {
            f.name.clone()
        };
        let (kind, labels) = doc
            .get(&sample_name)
            .unwrap_or_else(|| panic!("{sample_name} is exported but not in docs/metrics.md"));
        assert_eq!(&f.kind, kind, "type of {sample_name}");
        for s in &f.samples {
            let names: BTreeSet<String> = s.labels.keys().filter(|k| *k != "le").cloned().collect();
            assert_eq!(&names, labels, "labels of {}", s.name);
            let counted = f.kind == "counter" || s.name.ends_with("_count");
            if counted && !labels.is_empty() {
                assert!(s.value > 0.0, "zero series {} {:?} in\n{text}", s.name, s.labels);
            }
        }
    }
}

#[tokio::test]
async fn scrape_parses_and_matches_the_docs_with_refusals_counted_by_reason() {
    let pki = Pki::new("metrics");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    pki.leaf("intruder", INTRUDER_ID);
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}]});
    std::fs::write(pki.path("jwks.json"), jwks.to_string()).unwrap();
    let app = Upstream::echo().await;
    let inbound = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         [[inbound.allow]]\nidentities = [\"{A_ID}\"]\n\
         [inbound.jwt]\nissuer = \"auth\"\naudiences = [\"b\"]\njwks_file = \"{}\"\nalgorithms = [\"ES256\"]\n",
        pki.path("b.crt"),
        pki.path("b.key"),
        pki.path("ca.pem"),
        pki.path("jwks.json"),
    );
    let b = Proxy::start(&inbound_config(app.addr, &inbound)).await;
    let caller = |name: &str| {
        format!(
            "[upstreams.svc.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_identity = \"{B_ID}\"\n\
             [upstreams.svc.retry]\nattempts = 1",
            pki.path("ca.pem"),
            pki.path(&format!("{name}.crt")),
            pki.path(&format!("{name}.key")),
        )
    };
    let a = Proxy::start(&outbound_config(&[b.inbound()], &caller("a"), "")).await;
    let intruder = Proxy::start(&outbound_config(&[b.inbound()], &caller("intruder"), "")).await;

    let get = |p: &Proxy, host: &str| {
        client()
            .get(format!("http://{}/orders/1", p.outbound()))
            .header("host", host)
            .send()
    };
    // A is allowed but sends no token: 401 missing_token. The intruder is not allowed: 403.
    assert_eq!(get(&a, "svc").await.unwrap().status(), 401);
    assert_eq!(get(&intruder, "svc").await.unwrap().status(), 403);
    // No route on A: 404, counted as unrouted.
    assert_eq!(get(&a, "nowhere.test").await.unwrap().status(), 404);
    // Plain HTTP on B's TLS port: a refused handshake.
    raw_exchange(b.inbound(), b"GET / HTTP/1.1\r\nhost: b\r\n\r\n").await;
    b.wait_log_lines(2).await;
    a.wait_log_lines(2).await;

    let (text, fams) = scrape(&b).await;
    check_against_doc(&text, &fams);
    let v = |name, labels: &[(&str, &str)]| openmetrics::value(&fams, name, labels);
    let inbound = |code| [("direction", "inbound"), ("upstream", "app"), ("code", code)];
    assert_eq!(v("kawal_requests_total", &inbound("401")), Some(1.0), "{text}");
    assert_eq!(v("kawal_requests_total", &inbound("403")), Some(1.0), "{text}");
    assert_eq!(
        v("kawal_requests_total", &inbound("200")),
        None,
        "no 200 was sent: {text}"
    );
    assert_eq!(
        v("kawal_authz_denied_total", &[("listener", "inbound")]),
        Some(1.0)
    );
    assert_eq!(
        v("kawal_jwt_failures_total", &[("reason", "missing_token")]),
        Some(1.0)
    );
    let not_tls = [("listener", "inbound"), ("reason", "not_tls")];
    assert_eq!(
        v("kawal_tls_handshake_failures_total", &not_tls),
        Some(1.0),
        "{text}"
    );
    assert!(v("kawal_tls_cert_expiry_seconds", &[("cert", "inbound")]).unwrap() > 0.0);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(v("kawal_build_info", &version), Some(1.0));
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(v(name, &[]).unwrap() > 0.0, "{name}");
    }
    assert!(v("process_cpu_seconds_total", &[]).is_some());
    // Only the classes seen have latency series.
    let classes: BTreeSet<&str> = fams
        .iter()
        .flat_map(|f| &f.samples)
        .filter_map(|s| s.labels.get("status_class").map(String::as_str))
        .collect();
    assert_eq!(classes, BTreeSet::from(["4xx"]));

    let (text, fams) = scrape(&a).await;
    check_against_doc(&text, &fams);
    let v = |name, labels: &[(&str, &str)]| openmetrics::value(&fams, name, labels);
    let unrouted = [
        ("direction", "outbound"),
        ("upstream", "(unrouted)"),
        ("code", "404"),
    ];
    assert_eq!(v("kawal_requests_total", &unrouted), Some(1.0), "{text}");
    let svc = [("direction", "outbound"), ("upstream", "svc"), ("code", "401")];
    assert_eq!(v("kawal_requests_total", &svc), Some(1.0), "{text}");
    for (state, want) in [("closed", 1.0), ("open", 0.0), ("half_open", 0.0)] {
        let labels = [("upstream", "svc"), ("state", state)];
        assert_eq!(v("kawal_breaker_state", &labels), Some(want), "{state}");
    }
    assert!(v("kawal_tls_cert_expiry_seconds", &[("cert", "upstream:svc")]).unwrap() > 0.0);
    assert!(
        !text.contains("kawal_jwt_failures_total"),
        "no inbound, no JWT series: {text}"
    );
    assert!(!text.contains("kawal_retries_total"), "no retry happened: {text}");
}
