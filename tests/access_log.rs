//! The access line answers "which endpoint, how long upstream, which
//! client": authority, protocol, client address, user agent, the endpoint
//! that served the request, the time to the upstream's response head, and
//! each retried attempt; secrets from the request never appear. Process
//! events and text mode are checked on the real binary's stdout.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::*;

const SECRETS: [&str; 4] = ["s3cr3t-token", "s3cr3t-cookie", "s3cr3t-query", "s3cr3t-body"];

fn assert_common_fields(line: &serde_json::Value) {
    for key in [
        "timestamp",
        "level",
        "serviceName",
        "traceId",
        "spanId",
        "direction",
        "method",
        "path",
        "authority",
        "protocol",
        "clientAddress",
        "userAgent",
        "statusCode",
        "duration",
        "attempts",
        "bytesIn",
        "bytesOut",
    ] {
        assert!(!line[key].is_null(), "{key} missing in {line}");
    }
    let client: std::net::SocketAddr = line["clientAddress"].as_str().unwrap().parse().unwrap();
    assert!(client.ip().is_loopback() && client.port() != 0, "{client}");
}

#[tokio::test]
async fn a_retried_outbound_request_names_each_attempt_and_the_endpoint_that_answered() {
    // The first attempt gets a 503, the second a 200, from the one endpoint.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let upstream = Upstream::start(move |_req| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                status(503, "busy")
            } else {
                status(200, "ok")
            }
        }
    })
    .await;
    let retry = "[upstreams.svc.retry]\nattempts = 3\nbackoff = { base = \"1ms\", max = \"5ms\" }\n";
    let proxy = Proxy::start(&outbound_config(&[upstream.addr], retry, "")).await;
    let res = client()
        .get(format!("http://{}/items/7?token=s3cr3t-query", proxy.outbound()))
        .header("host", "svc")
        .header("user-agent", "app/1.0")
        .header("authorization", "Bearer s3cr3t-token")
        .header("cookie", "session=s3cr3t-cookie")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let line = &proxy.wait_log_lines(1).await[0];
    assert_common_fields(line);
    assert_eq!(line["authority"], "svc");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["userAgent"], "app/1.0");
    assert_eq!(line["attempts"], 2);
    assert_eq!(line["endpoint"], upstream.addr.to_string());
    assert_eq!(
        line["retried"],
        serde_json::json!([{ "endpoint": upstream.addr.to_string(), "status": 503 }])
    );
    let head = line["upstreamHeadDuration"].as_f64().unwrap();
    assert!(head > 0.0 && head <= line["duration"].as_f64().unwrap(), "{line}");
    let all = String::from_utf8_lossy(&proxy.log.lock().unwrap()).into_owned();
    for secret in SECRETS {
        assert!(!all.contains(secret), "{secret} in the log: {all}");
    }
}

#[tokio::test]
async fn an_inbound_http2_request_is_logged_with_its_protocol_and_a_bounded_user_agent() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let long_agent = "x".repeat(1000);
    let res = h2
        .post(format!("http://{}/orders?token=s3cr3t-query", proxy.inbound()))
        .header("user-agent", &long_agent)
        .header("authorization", "Bearer s3cr3t-token")
        .body("s3cr3t-body")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let line = &proxy.wait_log_lines(1).await[0];
    assert_common_fields(line);
    assert_eq!(line["protocol"], "HTTP/2");
    assert_eq!(line["authority"], proxy.inbound().to_string());
    assert_eq!(line["endpoint"], app.addr.to_string());
    assert_eq!(line["userAgent"].as_str().unwrap().len(), 256);
    assert!(line["retried"].is_null(), "no retry, no list: {line}");
    assert_eq!(line["bytesIn"], 11);
    let all = String::from_utf8_lossy(&proxy.log.lock().unwrap()).into_owned();
    for secret in SECRETS {
        assert!(!all.contains(secret), "{secret} in the log: {all}");
    }
}

#[tokio::test]
async fn a_request_kawal_refuses_still_names_its_client_and_no_endpoint() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&outbound_config(&[app.addr], "", "")).await;
    let res = client()
        .get(format!("http://{}/x", proxy.outbound()))
        .header("host", "unknown.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let line = &proxy.wait_log_lines(1).await[0];
    assert_eq!(line["error"], "route_not_found");
    assert_eq!(line["authority"], "unknown.example");
    assert_eq!(line["attempts"], 0);
    assert!(
        line["endpoint"].is_null() && line["upstreamHeadDuration"].is_null(),
        "{line}"
    );
    assert_eq!(app.hits(), 0);
}

/// Runs the real binary with `config` for long enough to start and serve
/// one request, then stops it; returns what it wrote to stdout (a file, not
/// a terminal).
async fn run_binary(name: &str, config: &str, env: &[(&str, &str)]) -> String {
    let app = Upstream::echo().await;
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("log-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let (inbound, admin) = (
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
    );
    let toml = format!(
        "[service]\nname = \"logged\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [inbound]\nlisten = \"127.0.0.1:{inbound}\"\napp = \"{}\"\n{config}",
        app.addr
    );
    let cfg = dir.join("kawal.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = dir.join("stdout");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kawal"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut served = false;
    for _ in 0..1200 {
        if let Ok(res) = client().get(format!("http://127.0.0.1:{inbound}/x")).send().await {
            served = res.status() == 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // SIGTERM: kawal drains and flushes its log before it exits.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        panic!("kawal did not stop within 20 s of SIGTERM");
    }
    assert!(served, "kawal did not serve a request");
    std::fs::read_to_string(&out).unwrap()
}

#[tokio::test]
async fn process_events_are_json_with_the_access_lines_key_order() {
    let stdout = run_binary("json", "", &[("RUST_LOG", "kawal=loud")]).await;
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{stdout}");
    for line in &lines {
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys[..3], ["timestamp", "level", "serviceName"], "{line}");
    }
    let events: Vec<_> = lines.iter().filter(|l| l["direction"].is_null()).collect();
    // The start line names the version, the config file and the listeners
    // there are (no outbound here: omitted, not ""); the stop line says how.
    let started = events
        .iter()
        .find(|e| e["event"] == "started")
        .expect("a start line");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"), "{started}");
    assert!(
        started["config"].as_str().unwrap().ends_with("kawal.toml"),
        "{started}"
    );
    assert!(
        started["inbound"].is_string() && started["admin"].is_string(),
        "{started}"
    );
    assert!(started.get("outbound").is_none(), "{started}");
    let stopped = events
        .iter()
        .find(|e| e["event"] == "stopped")
        .expect("a stop line");
    assert_eq!(stopped["ended"], "drained", "{stopped}");
    assert!(
        events.iter().any(|e| e["event"] == "invalid_rust_log"),
        "{stdout}"
    );
    let access: Vec<_> = lines.iter().filter(|l| l["direction"] == "inbound").collect();
    assert_eq!(access.len(), 1, "{stdout}");
    // The same timestamp precision: milliseconds, UTC.
    for line in [events[0], access[0]] {
        let ts = line["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-12-03T07:00:00.000Z".len(),
            "{ts}"
        );
    }
}

#[tokio::test]
async fn text_mode_writes_no_escape_sequences_to_a_file() {
    let stdout = run_binary("text", "[log]\nformat = \"text\"\n", &[]).await;
    assert!(stdout.contains("kawal::access"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "escape sequences in {stdout:?}");
}
