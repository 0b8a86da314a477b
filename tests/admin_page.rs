//! The admin page in a real browser (Debian's `chromium`, headless; `.ci/run`
//! installs it): kawal with one healthy upstream and one whose breaker real
//! connection failures opened (and a third, unused, whose client certificate
//! expires in 5 days); the rendered DOM names both and shows the open and the
//! closed breaker and the certificate in its warning colour, nothing is
//! loaded from outside kawal, and `/status.json` agrees with `/metrics`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::openmetrics;
use support::pki::Pki;
use support::*;

const CHROMIUM: &str = "chromium";

/// Runs headless chromium on `url` with `extra` flags; its stdout.
async fn chromium(url: &str, profile: &Path, extra: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(120), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{CHROMIUM}` is not installed: this test renders the admin page in a real browser. \
             Install it with `apt-get install -y chromium` (.ci/run does)"
        ),
        Ok(Err(e)) => panic!("cannot run {CHROMIUM}: {e}"),
        Err(_) => panic!("{CHROMIUM} did not finish within 120 s"),
    };
    assert!(
        out.status.success(),
        "{CHROMIUM} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The opening tag of the element carrying `attr` (e.g. `data-upstream="broken"`).
fn tag_with<'a>(dom: &'a str, attr: &str) -> &'a str {
    let at = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no {attr} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// Absolute URLs in a served asset; the SVG namespace name is not fetched.
fn outside_urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://", "\"//", "'//", "url("] {
        for (i, _) in text.match_indices(scheme) {
            let url: String = text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ';')
                .collect();
            if !url.starts_with("http://www.w3.org/2000/svg") {
                found.push(url);
            }
        }
    }
    found
}

#[tokio::test]
async fn page_shows_both_upstreams_and_breakers_from_kawal_alone() {
    let healthy = Upstream::start(|_req| async { status(200, "ok") }).await;
    // A port nobody listens on: connections are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let pki = Pki::new("admin-page");
    pki.leaf_valid(
        "spare",
        "spiffe://test/spare",
        &[],
        Duration::from_secs(5 * 86_400),
    );
    let cfg = format!(
        r#"
[service]
name = "page-test"
[admin]
listen = "127.0.0.1:0"
[inbound]
listen = "127.0.0.1:0"
app = "{app}"
[outbound]
listen = "127.0.0.1:0"
[upstreams.healthy]
endpoints = ["{app}"]
[upstreams.broken]
endpoints = ["{dead}"]
[upstreams.broken.retry]
attempts = 1
[upstreams.broken.breaker]
consecutive_failures = 3
open_for = "10m"
[upstreams.spare]
endpoints = ["{dead}"]
[upstreams.spare.tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
"#,
        app = healthy.addr,
        ca = pki.path("ca.pem"),
        cert = pki.path("spare.crt"),
        key = pki.path("spare.key"),
    );
    let proxy = Proxy::start(&cfg).await;
    let send = |host: &'static str| {
        client()
            .get(format!("http://{}/x", proxy.outbound()))
            .header("host", host)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(send("healthy").await.unwrap().status(), 200);
        assert_eq!(send("broken").await.unwrap().status(), 502);
    }
    for _ in 0..2 {
        assert_eq!(send("broken").await.unwrap().status(), 503, "the breaker is open");
    }
    let inbound = client()
        .get(format!("http://{}/in", proxy.inbound()))
        .send()
        .await
        .unwrap();
    assert_eq!(inbound.status(), 200);
    proxy.wait_log_lines(9).await;

    let admin = format!("http://{}", proxy.admin());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("admin-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The DOM after the page's script fetched status.json and drew it.
    let dom = chromium(&format!("{admin}/"), &dir.join("profile"), &["--dump-dom"]).await;
    let broken = tag_with(&dom, r#"data-upstream="broken""#);
    assert!(broken.contains(r#"data-breaker="open""#), "{broken}");
    assert!(
        broken.contains("breaker-open"),
        "an open breaker stands out: {broken}"
    );
    let healthy_card = tag_with(&dom, r#"data-upstream="healthy""#);
    assert!(
        healthy_card.contains(r#"data-breaker="closed""#),
        "{healthy_card}"
    );
    assert!(
        dom.contains("OPEN · "),
        "the open breaker shows its time left:\n{dom}"
    );
    assert!(dom.contains("data-inbound"), "the inbound panel is drawn:\n{dom}");
    assert!(dom.contains("<svg"), "the plots are drawn:\n{dom}");
    assert!(!dom.contains("cannot reach kawal"), "{dom}");
    let row = &dom[..dom.find("upstream:spare").expect("the certificate is listed")];
    let row = &row[row.rfind("<tr").unwrap()..];
    assert!(
        row.contains("cert-warn"),
        "a certificate expiring in 5 days is in the warning colour: {row}"
    );
    // No cache or guard in this config: their panels stay hidden.
    assert!(
        tag_with(&dom, r#"id="cache-section""#).contains("hidden"),
        "{dom}"
    );

    let shot = dir.join("admin-page.png");
    chromium(
        &format!("{admin}/"),
        &dir.join("profile"),
        &[
            "--window-size=1280,1400",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Nothing comes from outside kawal: the assets name no outside URL, the
    // rendered DOM refers only to relative paths, and the browser is told
    // to refuse anything else.
    for asset in ["/", "/admin.js", "/admin.css"] {
        let res = client().get(format!("{admin}{asset}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.starts_with("default-src 'self'"), "{asset}: {csp}");
        let text = res.text().await.unwrap();
        assert_eq!(outside_urls(&text), Vec::<String>::new(), "{asset}");
    }
    for attr in [" src=\"", " href=\""] {
        for (i, _) in dom.match_indices(attr) {
            let value: String = dom[i + attr.len()..].chars().take_while(|c| *c != '"').collect();
            assert!(
                !value.contains(':') && !value.starts_with("//"),
                "outside reference {value:?}"
            );
        }
    }

    // The JSON agrees with /metrics (parsed by a real OpenMetrics parser).
    let status: serde_json::Value = client()
        .get(format!("{admin}/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fams = openmetrics::parse(&text);
    let requests = |direction, upstream, code: &str| {
        let labels = [("direction", direction), ("upstream", upstream), ("code", code)];
        openmetrics::value(&fams, "kawal_requests_total", &labels)
    };
    let ups = status["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 3);
    for u in ups {
        let name = u["name"].as_str().unwrap();
        let by_code = u["requests"]["totals"]["byCode"].as_object().unwrap();
        assert_eq!(by_code.is_empty(), name == "spare", "{name}");
        for (code, n) in by_code {
            assert_eq!(requests("outbound", name, code), n.as_f64(), "{name} {code}");
        }
        let state = u["breaker"]["state"].as_str().unwrap();
        let labels = [("upstream", name), ("state", state)];
        assert_eq!(
            openmetrics::value(&fams, "kawal_breaker_state", &labels),
            Some(1.0),
            "{name}"
        );
        let recent: u64 = u["requests"]["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(
            recent,
            u["requests"]["totals"]["total"].as_u64().unwrap(),
            "{name}"
        );
    }
    let broken = ups.iter().find(|u| u["name"] == "broken").unwrap();
    assert_eq!(broken["breaker"]["state"], "open");
    assert_eq!(broken["requests"]["totals"]["byCode"]["502"], 3);
    assert_eq!(broken["requests"]["totals"]["byCode"]["503"], 2);
    assert_eq!(requests("inbound", "app", "200"), Some(1.0));
    assert_eq!(status["inbound"]["requests"]["totals"]["byCode"]["200"], 1);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status.get("cache").is_none() && status.get("guard").is_none());
    let certs = status["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0]["name"], "upstream:spare");
    let expiry = [("cert", "upstream:spare")];
    let days = openmetrics::value(&fams, "kawal_tls_cert_expiry_seconds", &expiry).unwrap() / 86_400.0;
    assert!((4.9..=5.0).contains(&days), "{days}");
    assert!(certs[0]["expiresInSeconds"].as_f64().unwrap() / 86_400.0 > 4.9);
    let _ = std::fs::remove_dir_all(dir.join("profile"));
}
