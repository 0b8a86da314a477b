//! The process around the proxy: `kawal check`, the admin port, graceful
//! shutdown (in process and on SIGTERM to the real binary).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use support::*;

fn kawal_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kawal"))
}

fn write_config(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kawal-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kawal.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn check_accepts_the_reference_and_demo_configs() {
    let out = kawal_bin().args(["check", "config/demo.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The reference names example certificate and JWKS files that do not
    // exist here: `check` loads them as start would, so only they are refused.
    let out = kawal_bin().args(["check", "config/kawal.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let keys: Vec<&str> = stderr.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(
        keys,
        [
            "inbound.tls.cert",
            "inbound.jwt.jwks_file",
            "upstreams.payment.tls.ca"
        ],
        "{stderr}"
    );
    assert!(stderr.lines().all(|l| l.contains("No such file")), "{stderr}");
}

#[test]
fn check_reports_every_problem_with_file_line_and_key_and_exits_2() {
    let path = write_config(
        "bad",
        r#"[service]
name = "x"

[outbound]
listen = "127.0.0.1:15001"
default_upstream = "missing"

[admin]
listen = "127.0.0.1:15001"
"#,
    );
    let out = kawal_bin().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:6:1: outbound.default_upstream: no upstream named \"missing\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:5:1: outbound.listen: port 15001")),
        "{stderr}"
    );

    for (bad, key) in [
        ("[service]\nname = \"x\"\n[inbound]\nlisten = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\ntimeout = \"ten seconds\"\n", "timeout"),
        ("[service]\nname = \"x\"\n[inbound]\nlisten = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\nretries = 3\n", "retries"),
        ("[service]\nname = \"x\"\n[inbound]\nlisten = \"not-an-address\"\napp = \"127.0.0.1:2\"\n", "listen"),
        ("[service]\nname = 5\n[inbound]\nlisten = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\n", "name"),
    ] {
        let path = write_config(key, bad);
        let out = kawal_bin().arg("check").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("{}:", path.display())), "{first}");
        assert!(first.contains(key), "{key} not named in {first}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // Running with a bad config refuses to start, the same way.
    let out = kawal_bin().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn admin_port_serves_live_ready_and_metrics() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    client()
        .get(format!("http://{}/x", proxy.inbound()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    proxy.wait_log_lines(1).await;
    let admin = proxy.admin();
    assert_eq!(
        client()
            .get(format!("http://{admin}/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(format!("http://{admin}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"kawal_requests_total{direction="inbound",upstream="app",code="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kawal_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kawal_open_connections{listener="inbound"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_stops_accepting() {
    let app = Upstream::start(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Response::new(full("slow but complete"))
    })
    .await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let addr = proxy.inbound();
    let in_flight = tokio::spawn(async move {
        client()
            .get(format!("http://{addr}/slow"))
            .send()
            .await?
            .text()
            .await
    });
    // Wait until the request is at the app, then shut down.
    for _ in 0..500 {
        if app.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.hits(), 1);
    proxy.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), "slow but complete");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Upstream::start(|_req: Request<Incoming>| async move { Response::new(full("ok")) }).await;
    // A grace and an idle timeout far longer than the wait below: only
    // closing the idle connections lets the shutdown finish in time.
    let config = inbound_config(app.addr, "[limits]\nrequest_head_timeout = \"90s\"")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"120s\"");
    let proxy = Proxy::start(&config).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut conn = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"ok") {
            let mut byte = [0u8; 1];
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "response cut short");
            head.push(byte[0]);
        }
        idle.push(conn);
    }
    tokio::time::timeout(Duration::from_secs(30), proxy.shutdown())
        .await
        .expect("shutdown waited on idle keep-alive connections");
    for mut conn in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the idle connection is closed: {read:?}"
        );
    }
}

/// Runs the real binary with the config at `path` (RUST_LOG unset) and reads
/// its stdout up to the start event, which names the bound addresses.
fn spawn_started(
    path: &std::path::Path,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    serde_json::Value,
) {
    let mut child = kawal_bin()
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let started = (0..20)
        .map(|_| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .find(|event| event["message"] == "kawal started")
        .expect("a start event");
    (child, stdout, started)
}

#[test]
fn sigterm_drains_and_exits_0_with_json_process_events() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(async {
        Upstream::start(|_req: Request<Incoming>| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::new(full("done"))
        })
        .await
    });
    let path = write_config("sigterm", &inbound_config(app.addr, ""));
    let (mut child, stdout, started) = spawn_started(&path);
    assert_eq!(started["serviceName"], "test-svc");
    let inbound = started["inbound"].as_str().unwrap().to_string();

    let in_flight = rt.spawn(async move {
        client()
            .get(format!("http://{inbound}/slow"))
            .send()
            .await?
            .text()
            .await
    });
    for _ in 0..2000 {
        if app.hits() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(rt.block_on(in_flight).unwrap().unwrap(), "done");
    assert!(child.wait().unwrap().success());

    let rest: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(
        rest.iter()
            .any(|l| l["path"] == "/slow" && l["statusCode"] == 200),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l["message"] == "kawal stopped"), "{rest:?}");
}

/// Runs the real binary with `config` and `env`, sends one request to its
/// inbound listener, stops it, and returns everything it wrote on stdout.
fn run_one_request(name: &str, config: &str, env: &[(&str, &str)]) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(Upstream::echo());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let inbound = listener.local_addr().unwrap();
    drop(listener);
    let config = inbound_config(app.addr, config).replace(
        "[inbound]\nlisten = \"127.0.0.1:0\"",
        &format!("[inbound]\nlisten = \"{inbound}\""),
    );
    let path = write_config(name, &config);
    let mut cmd = kawal_bin();
    cmd.arg("--config").arg(&path).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let status = rt.block_on(async {
        for _ in 0..400 {
            if let Ok(res) = client()
                .get(format!("http://{inbound}/hello?secret=1"))
                .send()
                .await
            {
                return res.status();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("kawal never answered on {inbound}");
    });
    // The access line is written when the response body ends, before the
    // connection goes idle, so the graceful stop below waits for it.
    assert_eq!(status, 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn text_format_and_rust_log_override_shape_the_output() {
    // Text: human-readable process events and access lines, no JSON.
    let text = run_one_request("text", "[log]\nformat = \"text\"", &[]);
    let access = text
        .lines()
        .find(|l| l.contains("kawal::access:"))
        .unwrap_or_else(|| panic!("no access line in {text}"));
    assert!(access.contains("inbound GET /hello 200"), "{access}");
    assert!(
        access.contains(" trace=") && access.contains(" span="),
        "{access}"
    );
    assert!(!access.contains("secret"), "{access}");
    assert!(text.lines().any(|l| l.contains("kawal started")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with('{')), "{text}");

    // RUST_LOG overrides [log] level: warn silences access lines and info events.
    let quiet = run_one_request("quiet", "", &[("RUST_LOG", "warn")]);
    assert!(!quiet.contains("\"path\""), "{quiet}");
    assert!(!quiet.contains("kawal started"), "{quiet}");
    // ... and can turn them back on over a quiet config.
    let loud = run_one_request("loud", "[log]\nlevel = \"error\"", &[("RUST_LOG", "info")]);
    assert!(loud.lines().any(|l| l.contains("\"path\":\"/hello\"")), "{loud}");
}

#[test]
fn a_refused_tls_handshake_is_a_json_event_with_its_reason() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(Upstream::echo());
    let pki = support::pki::Pki::new("lifecycle-tls");
    pki.leaf("b", "spiffe://shop.test/ns/default/sa/b");
    let tls = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
        pki.path("b.crt"),
        pki.path("b.key"),
        pki.path("ca.pem")
    );
    let path = write_config("tls-refused", &inbound_config(app.addr, &tls));
    let (mut child, stdout, started) = spawn_started(&path);
    let inbound = started["inbound"].as_str().unwrap().to_string();

    // Plaintext HTTP on the TLS port: no HTTP answer, a logged refusal.
    let answer = rt.block_on(raw_exchange(
        inbound.parse().unwrap(),
        b"GET / HTTP/1.1\r\nHost: b\r\n\r\n",
    ));
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let refused = events
        .iter()
        .find(|e| e["event"] == "tls_handshake_failed")
        .unwrap_or_else(|| panic!("no tls_handshake_failed event in {events:?}"));
    assert_eq!(refused["level"], "warn", "{refused}");
    assert!(
        refused["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{refused}"
    );
    assert!(!refused["reason"].as_str().unwrap_or("").is_empty(), "{refused}");
    assert_eq!(app.hits(), 0);
}
