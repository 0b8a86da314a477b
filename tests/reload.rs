//! Hot config reload: in process (the reloader is what SIGHUP calls) and on
//! the real binary (SIGHUP, logged events).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use support::*;
use tokio::sync::Semaphore;

fn config_file(name: &str, body: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kawal.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// Starts kawal in process from the file at `path`.
async fn start(path: &Path) -> Proxy {
    let cfg = kawal::config::Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let kawal = kawal::start(cfg, kawal::log::Sink::Memory(log.clone()))
        .await
        .unwrap();
    Proxy {
        kawal: Some(kawal),
        log,
    }
}

/// Reloads and waits (bounded) until the reload counter of `result` reaches `n`.
async fn reload(proxy: &Proxy, result: &str, n: f64) {
    proxy.kawal.as_ref().unwrap().reloader().reload();
    wait_reloads(proxy, result, n).await;
}

async fn wait_reloads(proxy: &Proxy, result: &str, n: f64) {
    let series = format!("kawal_config_reloads_total{{result=\"{result}\"}}");
    for _ in 0..500 {
        // The series appears at the first reload of its result.
        if proxy.metric_opt(&series).await.0.is_some_and(|v| v >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} never reached {n}");
}

/// An upstream answering its name; `/flaky` answers 503 and 200 in turn.
async fn named(name: &'static str) -> Upstream {
    let flaky = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |req: Request<Incoming>| {
        let flaky = flaky.clone();
        async move {
            if req.uri().path() == "/flaky" && flaky.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                return status(503, "flaky");
            }
            Response::new(full(name))
        }
    })
    .await
}

fn outbound(svc: SocketAddr, attempts: u32, extra: &str) -> String {
    format!(
        r#"
[service]
name = "reload-test"
config_check_interval = "0s"
[admin]
listen = "127.0.0.1:0"
[outbound]
listen = "127.0.0.1:0"
[upstreams.svc]
endpoints = ["{svc}"]
timeout = "5s"
[upstreams.svc.retry]
attempts = {attempts}
backoff = {{ base = "1ms", max = "2ms" }}
[upstreams.down]
endpoints = ["127.0.0.1:1"]
[upstreams.down.retry]
attempts = 1
[upstreams.down.breaker]
consecutive_failures = 1
open_for = "600s"
{extra}
"#
    )
}

async fn call(proxy: &Proxy, host: &str, path: &str) -> (u16, String) {
    call_with(&client(), proxy, host, path).await
}

/// One request through the outbound listener, routed by `host`.
async fn call_with(client: &reqwest::Client, proxy: &Proxy, host: &str, path: &str) -> (u16, String) {
    let res = client
        .get(format!("http://{}{path}", proxy.outbound()))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_reload_under_load_fails_no_request_and_new_requests_use_the_new_config() {
    let (a, b) = (named("a").await, named("b").await);
    let path = config_file("load", &outbound(a.addr, 1, ""));
    let proxy = Arc::new(start(&path).await);

    // The breaker of `down` opens (it survives reloads that leave `down` alone).
    assert_eq!(call(&proxy, "down", "/").await.0, 502);
    assert_eq!(call(&proxy, "down", "/").await.0, 503);
    // attempts = 1: a 503 goes through.
    assert_eq!(call(&proxy, "svc", "/flaky").await.0, 503);

    // A steady stream of requests (two at a time, bounded) through the reloads.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut stream = Vec::new();
    for _ in 0..2 {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        stream.push(tokio::spawn(async move {
            // One keep-alive client: its connections stay open across the reloads.
            let client = client();
            let mut seen = Vec::new();
            for _ in 0..5000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                seen.push(call_with(&client, &proxy, "svc", "/").await);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // New endpoint, retries on, a new route.
    let extra = format!(
        "[upstreams.extra]\nhosts = [\"extra.test\"]\nendpoints = [\"{}\"]",
        a.addr
    );
    std::fs::write(&path, outbound(b.addr, 2, &extra)).unwrap();
    reload(&proxy, "success", 1.0).await;
    assert_eq!(call(&proxy, "svc", "/").await, (200, "b".into()));
    assert_eq!(call(&proxy, "extra.test", "/").await, (200, "a".into()));
    // attempts = 2: the 503 is retried, the client sees 200.
    for _ in 0..4 {
        assert_eq!(call(&proxy, "svc", "/flaky").await, (200, "b".into()));
    }
    // `down`'s table did not change: its breaker is still open.
    assert_eq!(call(&proxy, "down", "/").await.0, 503);
    tokio::time::sleep(Duration::from_millis(100)).await;

    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for task in stream {
        answers.extend(task.await.unwrap());
    }
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "a request failed: {:?}",
        answers.iter().find(|(s, _)| *s != 200)
    );
    assert!(answers.iter().any(|(_, body)| body == "a") && answers.iter().any(|(_, body)| body == "b"));
    let metrics = client()
        .get(format!("http://{}/metrics", proxy.admin()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("kawal_config_info{"))
            .count(),
        1,
        "{metrics}"
    );
    assert!(
        metrics.contains("kawal_config_loaded_timestamp_seconds "),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_file_change_is_picked_up_without_a_signal_and_an_invalid_one_is_refused() {
    let (a, b) = (named("a").await, named("b").await);
    let path = config_file(
        "watch",
        &outbound(a.addr, 1, "").replace(
            "config_check_interval = \"0s\"",
            "config_check_interval = \"50ms\"",
        ),
    );
    let proxy = start(&path).await;
    assert_eq!(call(&proxy, "svc", "/").await, (200, "a".into()));

    std::fs::write(
        &path,
        outbound(b.addr, 1, "").replace(
            "config_check_interval = \"0s\"",
            "config_check_interval = \"50ms\"",
        ),
    )
    .unwrap();
    wait_reloads(&proxy, "success", 1.0).await;
    assert_eq!(call(&proxy, "svc", "/").await, (200, "b".into()));

    // An invalid file: refused, counted, and the running config keeps serving.
    std::fs::write(&path, "[service]\nname = \"x\"\nbogus = 1\n").unwrap();
    wait_reloads(&proxy, "failure", 1.0).await;
    assert_eq!(call(&proxy, "svc", "/").await, (200, "b".into()));
    // The same bad contents are not tried again and again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        proxy
            .metric("kawal_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_in_flight_slow_request_survives_a_reload() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let slow = Upstream::start(move |_req: Request<Incoming>| {
        let gate = g.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            Response::new(full("slow"))
        }
    })
    .await;
    let other = named("other").await;
    let path = config_file("inflight", &outbound(slow.addr, 1, ""));
    let proxy = Arc::new(start(&path).await);
    let p = proxy.clone();
    let held = tokio::spawn(async move { call(&p, "svc", "/").await });
    for _ in 0..400 {
        if slow.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(slow.hits(), 1);
    std::fs::write(&path, outbound(other.addr, 1, "")).unwrap();
    reload(&proxy, "success", 1.0).await;
    assert_eq!(call(&proxy, "svc", "/").await, (200, "other".into()));
    gate.add_permits(1);
    assert_eq!(held.await.unwrap(), (200, "slow".into()));
}

#[tokio::test]
async fn request_limits_change_on_reload() {
    let app = named("app").await;
    let path = config_file("limits", &inbound_config(app.addr, ""));
    let proxy = start(&path).await;
    let long = format!("http://{}/{}", proxy.inbound(), "x".repeat(2000));
    assert_eq!(client().get(&long).send().await.unwrap().status(), 200);
    std::fs::write(&path, inbound_config(app.addr, "[limits]\nmax_uri = \"1KiB\"")).unwrap();
    reload(&proxy, "success", 1.0).await;
    assert_eq!(client().get(&long).send().await.unwrap().status(), 414);
    let short = format!("http://{}/short", proxy.inbound());
    assert_eq!(client().get(&short).send().await.unwrap().status(), 200);
}

/// The real binary: starts on `path`, returns it with its stdout after the start line.
fn spawn(
    path: &Path,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    serde_json::Value,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kawal"))
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if event["message"] == "kawal started" {
            return (child, stdout, event);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no start event");
}

fn kill(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Reads JSON lines until one has `event` = `name`.
fn next_event(stdout: &mut BufReader<std::process::ChildStdout>, name: &str) -> serde_json::Value {
    let mut line = String::new();
    for _ in 0..200 {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == name {
            return event;
        }
    }
    panic!("no {name} event");
}

#[test]
fn sighup_refuses_an_invalid_file_with_check_s_errors_and_logs_what_needs_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async { (named("a").await, named("b").await) });
    let path = config_file("sighup", &inbound_config(a.addr, ""));
    let (mut child, mut stdout, started) = spawn(&path);
    let inbound: SocketAddr = started["inbound"].as_str().unwrap().parse().unwrap();
    let get = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let res = client().get(format!("http://{inbound}/")).send().await.unwrap();
            res.text().await.unwrap()
        })
    };
    assert_eq!(get(&rt), "a");

    // Invalid: the same errors as `kawal check`, and still serving.
    std::fs::write(&path, "[service]\nname = \"x\"\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"nowhere\"\ntimeout = \"soon\"\n").unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_kawal"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    kill(&child, "HUP");
    let refused = next_event(&mut stdout, "config_reload_failed");
    assert_eq!(
        refused["error"].as_str().unwrap(),
        String::from_utf8_lossy(&check.stderr).trim_end()
    );
    assert_eq!(get(&rt), "a");

    // A new listener address needs a restart; the new app is applied.
    let moved =
        inbound_config(b.addr, "").replace("listen = \"127.0.0.1:0\"\napp", "listen = \"127.0.0.1:1\"\napp");
    std::fs::write(&path, moved).unwrap();
    kill(&child, "HUP");
    let restart = next_event(&mut stdout, "config_needs_restart");
    assert!(
        restart["keys"].as_str().unwrap().contains("inbound.listen"),
        "{restart}"
    );
    next_event(&mut stdout, "config_reloaded");
    assert_eq!(get(&rt), "b");

    kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
