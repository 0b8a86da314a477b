//! The real binary as an operator meets it: `--help`, `--version`,
//! `kawal probe`, and the signals: SIGTERM drains the way orchestrators
//! expect, a second signal ends at once, SIGHUP does not end kawal.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use support::*;
use tokio::sync::Semaphore;

fn kawal_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kawal"))
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Writes `body` as a config file and starts the binary on it; returns the
/// child, its stdout after the start event, and that event.
fn spawn(name: &str, body: &str) -> (Child, BufReader<std::process::ChildStdout>, serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kawal-process-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kawal.toml");
    std::fs::write(&path, body).unwrap();
    let mut child = kawal_bin()
        .arg("--config")
        .arg(&path)
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
            assert_eq!(event["config"], path.display().to_string(), "{event}");
            return (child, stdout, event);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no start event");
}

fn addr(event: &serde_json::Value, listener: &str) -> SocketAddr {
    event[listener].as_str().unwrap().parse().unwrap()
}

/// An app whose `/held` requests wait until the test adds a permit.
async fn holding_app() -> (Upstream, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let app = Upstream::start(move |req: Request<Incoming>| {
        let gate = g.clone();
        async move {
            if req.uri().path() == "/held" {
                gate.acquire().await.unwrap().forget();
            }
            Response::new(full("done"))
        }
    })
    .await;
    (app, gate)
}

async fn get(url: String) -> reqwest::Result<(u16, String)> {
    let res = client().get(url).send().await?;
    let status = res.status().as_u16();
    Ok((status, res.text().await?))
}

#[test]
fn help_and_version_go_to_stdout_with_exit_0() {
    for flag in ["--help", "-h"] {
        let out = kawal_bin().arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8(out.stdout).unwrap();
        for needle in ["--config FILE", "check FILE", "probe URL", "--version"] {
            assert!(text.contains(needle), "{flag}: {text}");
        }
    }
    for flag in ["--version", "-V"] {
        let out = kawal_bin().arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            format!("kawal {}", env!("CARGO_PKG_VERSION"))
        );
    }
    // Anything else: the usage on stderr, exit 2.
    let out = kawal_bin().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}

#[tokio::test]
async fn probe_exits_0_on_2xx_only() {
    let app = Upstream::start(|req: Request<Incoming>| async move {
        match req.uri().path() {
            "/ok" => Response::new(full("ok")),
            _ => status(503, "no"),
        }
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (url, ok) in [
        (format!("http://{}/ok", app.addr), true),
        (format!("http://{}/down", app.addr), false),
        (format!("http://{closed}/ok"), false),
        (format!("https://{}/ok", app.addr), false),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kawal"))
            .args(["probe", &url])
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.success(),
            ok,
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sigterm_makes_ready_503_keeps_serving_for_the_delay_then_drains_and_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, gate) = rt.block_on(holding_app());
    // A delay long enough that the requests "during the delay" cannot be
    // late on a loaded machine.
    let config = inbound_config(app.addr, "")
        .replace("drain_delay = \"100ms\"", "drain_delay = \"5s\"")
        .replace("timeout = \"2s\"", "timeout = \"60s\"");
    let (mut child, stdout, started) = spawn("drain", &config);
    let (inbound, admin) = (addr(&started, "inbound"), addr(&started, "admin"));
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(rt.block_on(get(format!("http://{admin}/ready"))).unwrap().0, 200);

    signal(&child, "TERM");
    rt.block_on(async {
        // /ready turns 503 at once (bounded wait for the signal to land).
        let mut ready = 200;
        for _ in 0..200 {
            ready = get(format!("http://{admin}/ready")).await.unwrap().0;
            if ready == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ready, 503);
        // ... while inbound still takes new connections and requests.
        assert_eq!(
            get(format!("http://{inbound}/during")).await.unwrap(),
            (200, "done".into())
        );
    });
    // A request in flight across the end of the delay.
    let held = rt.spawn(get(format!("http://{inbound}/held")));
    rt.block_on(async {
        for _ in 0..400 {
            if app.hits() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(app.hits(), 2, "the held request reached the app");
        // After the delay new connections are refused...
        let mut refused = false;
        for _ in 0..1000 {
            if tokio::net::TcpStream::connect(inbound).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "inbound still accepts after the drain delay");
        // ... the admin port still answers ...
        assert_eq!(get(format!("http://{admin}/ready")).await.unwrap().0, 503);
    });
    // ... and the in-flight request completes, then kawal exits 0.
    gate.add_permits(1);
    assert_eq!(rt.block_on(held).unwrap().unwrap(), (200, "done".into()));
    assert!(child.wait().unwrap().success());
    let rest: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(rest.iter().any(|l| l["event"] == "draining"), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l["path"] == "/held" && l["statusCode"] == 200),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l["message"] == "kawal stopped"), "{rest:?}");
}

#[test]
fn a_second_signal_ends_the_drain_at_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, _gate) = rt.block_on(holding_app());
    let config = inbound_config(app.addr, "")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"600s\"")
        .replace("timeout = \"2s\"", "timeout = \"600s\"");
    let (mut child, _stdout, started) = spawn("second", &config);
    let inbound = addr(&started, "inbound");
    let held = rt.spawn(get(format!("http://{inbound}/held")));
    rt.block_on(async {
        for _ in 0..400 {
            if app.hits() >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(app.hits(), 1);
    signal(&child, "TERM");
    // The held request would keep the drain going for ten minutes.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(rt.block_on(held).unwrap().is_err(), "the held request was cut");
}

#[test]
fn sighup_does_not_end_kawal() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(Upstream::echo());
    let (mut child, _stdout, started) = spawn("hup", &inbound_config(app.addr, ""));
    let inbound = addr(&started, "inbound");
    for _ in 0..3 {
        signal(&child, "HUP");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended kawal");
    assert_eq!(rt.block_on(get(format!("http://{inbound}/x"))).unwrap().0, 200);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
