//! The two sides of `bench/soak.sh` around a running kawal:
//!
//! - `soak upstream ADDR`: an app that injects faults by path: `/small`,
//!   `/large` (1 MiB), `/cache/*` (cacheable), `/echo` (reads the body),
//!   `/fault/503`, `/fault/slow` (2 s), `/fault/reset` (closes the
//!   connection without answering). Idle connections close after 5 s.
//! - `soak load INBOUND OUTBOUND SECONDS WORKERS`: a mixed load for SECONDS:
//!   HTTP/1.1 keep-alive and fresh connections, h2c, small and large bodies,
//!   cacheable GETs and keyed POSTs, faults, and client aborts (a 200 ms
//!   timeout on slow responses). Prints a running count every 10 s and, at
//!   the end, `sent answered errors aborted lost` as one JSON line: every
//!   request sent is answered, failed on its connection, or aborted by the
//!   client; none may be left hanging (`lost`).
//! - `soak train INBOUND OUTBOUND SECONDS CONNS`: the training load of
//!   `docker/pgo-build.sh`, closed loop for SECONDS on CONNS keep-alive
//!   connections per kind: HTTP/1.1 GETs and small POSTs to INBOUND, HTTP/1.1
//!   GETs to OUTBOUND (Host `b`), h2c GETs to INBOUND. Prints the answers per
//!   kind as one JSON line; exits non-zero when any request failed or any
//!   kind got no answer, so a broken training stops the build.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("upstream") => upstream(&args[2]).await,
        Some("load") => {
            let secs: u64 = args[4].parse().expect("SECONDS");
            let workers: usize = args[5].parse().expect("WORKERS");
            load(&args[2], &args[3], Duration::from_secs(secs), workers).await
        }
        Some("train") => {
            let secs: u64 = args[4].parse().expect("SECONDS");
            let conns: usize = args[5].parse().expect("CONNS");
            let ok = train(&args[2], &args[3], Duration::from_secs(secs), conns).await;
            std::process::exit(if ok { 0 } else { 1 });
        }
        _ => eprintln!(
            "usage: soak upstream ADDR | soak load INBOUND OUTBOUND SECONDS WORKERS \
             | soak train INBOUND OUTBOUND SECONDS CONNS"
        ),
    }
}

async fn upstream(addr: &str) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let large = Bytes::from(vec![b'L'; 1 << 20]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let large = large.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let large = large.clone();
                async move { answer(req, large).await }
            });
            // Idle keep-alive connections are closed after 5 s, as Node's
            // default does, so kawal's pooled ones end too.
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

type Res = Response<Full<Bytes>>;

async fn answer(req: Request<Incoming>, large: Bytes) -> Result<Res, std::io::Error> {
    let path = req.uri().path().to_string();
    let status = |code: u16, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        r
    };
    Ok(match path.as_str() {
        "/large" => status(200, large),
        "/echo" => {
            let n = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            status(200, Bytes::from(n.to_string()))
        }
        "/fault/503" => status(503, Bytes::from_static(b"unavailable")),
        "/fault/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            status(200, Bytes::from_static(b"slow"))
        }
        // An error from the service makes hyper close the connection unanswered.
        "/fault/reset" => return Err(std::io::Error::other("reset")),
        p if p.starts_with("/cache/") => {
            let mut r = status(200, Bytes::from_static(b"cacheable"));
            r.headers_mut()
                .insert("cache-control", http::HeaderValue::from_static("max-age=5"));
            r
        }
        _ => status(200, Bytes::from_static(b"ok")),
    })
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    aborted: AtomicU64,
}

async fn load(inbound: &str, outbound: &str, duration: Duration, workers: usize) {
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + duration;
    let keep_alive = reqwest::Client::builder().no_proxy().build().unwrap();
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let clients = [keep_alive, fresh, h2];
    let mut tasks = Vec::new();
    for w in 0..workers {
        let counts = counts.clone();
        let client = clients[w % clients.len()].clone();
        let (inbound, outbound) = (inbound.to_string(), outbound.to_string());
        tasks.push(tokio::spawn(async move {
            let mut i: u64 = 0;
            while Instant::now() < deadline {
                i += 1;
                one(&client, &inbound, &outbound, w, i, &counts).await;
                // A steady, modest rate: this runs on a shared machine.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let reporter = {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "sent {} answered {}",
                    counts.sent.load(Ordering::Relaxed),
                    counts.answered.load(Ordering::Relaxed)
                );
            }
        })
    };
    // Every request has its own timeout, so the workers end soon after the
    // deadline; a bound all the same (from the deadline, not from now).
    for t in tasks {
        let _ = tokio::time::timeout_at((deadline + Duration::from_secs(60)).into(), t).await;
    }
    reporter.abort();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (sent, answered, errors, aborted) = (
        c(&counts.sent),
        c(&counts.answered),
        c(&counts.errors),
        c(&counts.aborted),
    );
    let lost = sent.saturating_sub(answered + errors + aborted);
    println!(
        r#"{{"sent":{sent},"answered":{answered},"errors":{errors},"aborted":{aborted},"lost":{lost}}}"#
    );
}

async fn one(client: &reqwest::Client, inbound: &str, outbound: &str, w: usize, i: u64, counts: &Counts) {
    // Alternate directions: inbound straight to the app, outbound by Host.
    let (base, host) = if i.is_multiple_of(2) {
        (format!("http://{inbound}"), None)
    } else {
        (format!("http://{outbound}"), Some("app"))
    };
    let mut timeout = Duration::from_secs(10);
    let req = match (w as u64 + i) % 10 {
        0 => client.get(format!("{base}/large")),
        1 => client.post(format!("{base}/echo")).body(vec![b'u'; 256 * 1024]),
        2 => client
            .post(format!("{base}/keyed"))
            .header("idempotency-key", format!("k-{w}-{i}"))
            .body("{}"),
        3 => client.get(format!("{base}/cache/{}", i % 50)),
        4 => client.get(format!("{base}/fault/503")),
        5 => client.get(format!("{base}/fault/reset")),
        6 => {
            // The client gives up before the slow app answers.
            timeout = Duration::from_millis(200);
            client.get(format!("{base}/fault/slow"))
        }
        7 => client.get(format!("{base}/fault/slow")),
        _ => client.get(format!("{base}/small")),
    };
    let req = match host {
        Some(h) => req.header("host", h),
        None => req,
    };
    counts.sent.fetch_add(1, Ordering::Relaxed);
    match req.timeout(timeout).send().await {
        Ok(res) => {
            // Read the body through (or fail doing so): answered either way.
            let _ = res.bytes().await;
            counts.answered.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if e.is_timeout() => {
            counts.aborted.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The kinds of request of `soak train`: (name, h2c, outbound, POST).
const TRAIN_KINDS: [(&str, bool, bool, bool); 4] = [
    ("inbound_h1", false, false, false),
    ("inbound_h1_post", false, false, true),
    ("outbound_mtls", false, true, false),
    ("inbound_h2c", true, false, false),
];

async fn train(inbound: &str, outbound: &str, duration: Duration, conns: usize) -> bool {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for (kind, &(_, h2c, out, post)) in TRAIN_KINDS.iter().enumerate() {
        for _ in 0..conns {
            // One client per task: one keep-alive connection each.
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5));
            if h2c {
                builder = builder.http2_prior_knowledge();
            }
            let client = builder.build().unwrap();
            let url = match (out, post) {
                (true, _) => format!("http://{outbound}/small"),
                (false, true) => format!("http://{inbound}/echo"),
                (false, false) => format!("http://{inbound}/small"),
            };
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let req = if post {
                        client.post(&url).body(&b"{\"training\":true}"[..])
                    } else {
                        client.get(&url)
                    };
                    let req = if out { req.header("host", "b") } else { req };
                    let answered = match req.send().await {
                        Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if answered {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (kind, ok, failed)
            }));
        }
    }
    let (mut ok, mut failed) = ([0u64; TRAIN_KINDS.len()], 0u64);
    for t in tasks {
        let (kind, o, f) = t.await.expect("training task");
        ok[kind] += o;
        failed += f;
    }
    let per_kind: Vec<String> = TRAIN_KINDS
        .iter()
        .zip(ok)
        .map(|((name, ..), n)| format!(r#""{name}":{n}"#))
        .collect();
    println!(r#"{{{},"failed":{failed}}}"#, per_kind.join(","));
    failed == 0 && ok.iter().all(|&n| n > 0)
}
