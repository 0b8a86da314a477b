//! The two-service demo without containers (examples/two-services/run.sh):
//! order-app and payment-app (Python) each behind a real kawal binary, mTLS
//! between the sidecars with certificates from docker/certs.sh. One checkout
//! is one trace id in all four logs; with payment stopped, order's breaker
//! opens and checkouts get 503 circuit_open. Needs bash, python3, openssl
//! and curl (as the script does).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Stops the script (and with it the four processes) when the test ends, passed or not.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn one_trace_across_both_services_and_the_breaker_opens_when_payment_stops() {
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("two-services-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let ports: Vec<(&str, u16)> = [
        "ORDER_APP",
        "ORDER_IN",
        "ORDER_OUT",
        "ORDER_ADMIN",
        "PAYMENT_APP",
        "PAYMENT_IN",
        "PAYMENT_ADMIN",
    ]
    .into_iter()
    .map(|name| (name, free_port()))
    .collect();
    let port = |name: &str| ports.iter().find(|(n, _)| *n == name).unwrap().1;
    let mut cmd = Command::new(format!("{ROOT}/examples/two-services/run.sh"));
    cmd.env("KAWAL", env!("CARGO_BIN_EXE_kawal"))
        .env("WORK", &work)
        .env_remove("RUST_LOG")
        .env_remove("OTLP_ENDPOINT")
        .stdout(Stdio::piped());
    for (name, p) in &ports {
        cmd.env(name, p.to_string());
    }
    let mut script = Script(cmd.spawn().unwrap());
    let stdout = BufReader::new(script.0.stdout.take().unwrap());
    let first = stdout.lines().next().expect("a line").unwrap();
    assert!(first.starts_with("ready"), "{first}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = rt.enter();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let checkout = format!("http://127.0.0.1:{}/checkout", port("ORDER_IN"));
    let res = rt.block_on(client.get(&checkout).send()).unwrap();
    assert_eq!(res.status(), 200);
    let trace = res.headers()["x-trace-id"].to_str().unwrap().to_string();
    let body = rt.block_on(res.text()).unwrap();
    assert!(body.contains("\"charged\": true"), "{body}");

    // The same trace id: order's inbound and outbound lines, payment's
    // inbound line (mTLS: order's SPIFFE ID), and both apps' lines.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = ["order-kawal", "payment-kawal", "order-app", "payment-app"]
            .iter()
            .map(|name| read_lines(&work.join(format!("{name}.log"))))
            .collect();
        if seen[1].iter().any(|l| l["traceId"] == trace)
            && seen[0].iter().filter(|l| l["traceId"] == trace).count() >= 2
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let with_trace = |lines: &Vec<serde_json::Value>, direction: &str| {
        lines
            .iter()
            .any(|l| l["traceId"] == trace && (direction.is_empty() || l["direction"] == direction))
    };
    assert!(
        with_trace(&seen[0], "inbound") && with_trace(&seen[0], "outbound"),
        "{:?}",
        seen[0]
    );
    assert!(with_trace(&seen[1], "inbound"), "{:?}", seen[1]);
    assert!(
        seen[1]
            .iter()
            .any(|l| l["traceId"] == trace && l["peerIdentity"] == "spiffe://shop.local/ns/default/sa/order"),
        "{:?}",
        seen[1]
    );
    assert!(with_trace(&seen[2], "") && with_trace(&seen[3], ""), "{seen:?}");

    // Payment stops: after a few failed attempts order's breaker opens.
    let payment = std::fs::read_to_string(work.join("payment-app.pid"))
        .unwrap()
        .trim()
        .to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &payment])
        .status()
        .unwrap()
        .success());
    for _ in 0..200 {
        if !alive(&payment) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let res = rt.block_on(client.get(&checkout).send()).unwrap();
        let error = res
            .headers()
            .get("x-kawal-error")
            .map(|v| v.to_str().unwrap().to_string());
        statuses.push((res.status().as_u16(), error.clone()));
        if error.as_deref() == Some("circuit_open") {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&(503, Some("circuit_open".into()))),
        "{statuses:?}"
    );
    assert!(
        statuses.len() > 1,
        "the breaker opened only after failures: {statuses:?}"
    );
    // Access lines reach the file through kawal's background writer: wait
    // (bounded) for the refused call's line.
    let refused = |l: &serde_json::Value| {
        l["direction"] == "outbound" && l["statusCode"] == 503 && l["error"] == "circuit_open"
    };
    let mut order = read_lines(&work.join("order-kawal.log"));
    for _ in 0..250 {
        if order.iter().any(refused) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        order = read_lines(&work.join("order-kawal.log"));
    }
    assert!(order.iter().any(refused), "{order:?}");

    // Stopping the script stops the rest.
    let pids: Vec<String> = ["order-kawal", "payment-kawal", "order-app"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(work.join(format!("{n}.pid")))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    drop(script);
    assert!(pids.iter().all(|p| !alive(p)), "{pids:?}");
}
