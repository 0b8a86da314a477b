//! Retry, budget and circuit breaker against real fault-injecting upstreams.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use support::*;

/// An upstream answering with `statuses[i]` for the i-th request, then 200.
async fn scripted(statuses: &'static [u16]) -> Upstream {
    let n = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |_req: Request<Incoming>| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        async move { status(statuses.get(i).copied().unwrap_or(200), "scripted") }
    })
    .await
}

fn retry_config(upstream: std::net::SocketAddr, retry: &str) -> String {
    outbound_config(
        &[upstream],
        &format!("[upstreams.svc.retry]\nbackoff = {{ base = \"1ms\", max = \"5ms\" }}\n{retry}"),
        "",
    )
}

async fn get(proxy: &Proxy) -> reqwest::Response {
    client()
        .get(format!("http://{}/r", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn get_succeeds_after_two_503s_in_three_attempts() {
    let upstream = scripted(&[503, 503]).await;
    let proxy = Proxy::start(&retry_config(upstream.addr, "")).await;
    let res = get(&proxy).await;
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.hits(), 3);
    res.bytes().await.unwrap();
    assert_eq!(proxy.wait_log_lines(1).await[0]["attempts"], 3);
    assert_eq!(
        proxy
            .metric(r#"kawal_retries_total{upstream="svc",reason="503"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_404_is_tried_exactly_once() {
    let upstream = scripted(&[404, 404, 404]).await;
    let proxy = Proxy::start(&retry_config(upstream.addr, "")).await;
    assert_eq!(get(&proxy).await.status(), 404);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn post_is_not_retried_unless_it_carries_an_idempotency_key() {
    let upstream = scripted(&[503, 503, 503, 503]).await;
    let proxy = Proxy::start(&retry_config(upstream.addr, "")).await;
    let url = format!("http://{}/pay", proxy.outbound());
    let res = client()
        .post(&url)
        .header("host", "svc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(upstream.hits(), 1);

    let res = client()
        .post(&url)
        .header("host", "svc")
        .header("idempotency-key", "k-1")
        .body("{\"amount\": 5}")
        .send()
        .await
        .unwrap();
    // Attempts 2..4 of the script: 503, 503, 503 → the third attempt still fails.
    assert_eq!(res.status(), 503);
    assert_eq!(upstream.hits(), 4);
}

#[tokio::test]
async fn a_retried_post_sends_the_same_body_every_time() {
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut seen = seen.lock().unwrap();
            seen.push(body);
            status(if seen.len() < 3 { 502 } else { 200 }, "ok")
        }
    })
    .await;
    let proxy = Proxy::start(&retry_config(upstream.addr, "")).await;
    let res = client()
        .put(format!("http://{}/doc", proxy.outbound()))
        .header("host", "svc")
        .body("same bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| &b[..] == b"same bytes"), "{bodies:?}");
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_retried() {
    let n = Arc::new(AtomicUsize::new(0));
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                let mut res = status(429, "slow down");
                res.headers_mut().insert("retry-after", "1".parse().unwrap());
                res
            } else {
                status(200, "ok")
            }
        }
    })
    .await;
    let proxy = Proxy::start(&retry_config(upstream.addr, "")).await;
    let started = Instant::now();
    assert_eq!(get(&proxy).await.status(), 200);
    assert_eq!(upstream.hits(), 2);
    // The backoff is at most 5 ms: only Retry-After explains a wait of ~1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_the_deadline_returns_the_429() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        let mut res = status(429, "slow down");
        res.headers_mut().insert("retry-after", "5".parse().unwrap());
        res
    })
    .await;
    let proxy = Proxy::start(&retry_config(upstream.addr, "")).await; // timeout = 2s
    assert_eq!(get(&proxy).await.status(), 429);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_response_reset_mid_body_is_not_retried_and_reaches_the_client_aborted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .await;
            drop(s); // close with no terminating chunk
        }
    });
    let proxy = Proxy::start(&retry_config(addr, "")).await;
    let res = get(&proxy).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err(), "the client must see the body aborted");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "no retry once the response started"
    );
}

#[tokio::test]
async fn a_hung_upstream_hits_the_per_try_timeout_then_the_deadline() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        status(200, "too late")
    })
    .await;
    let cfg = retry_config(upstream.addr, "per_try_timeout = \"200ms\"\nattempts = 10").replace(
        "timeout = \"2s\"",
        "timeout = \"700ms\"\nconnect_timeout = \"100ms\"",
    );
    let proxy = Proxy::start(&cfg).await;
    let res = get(&proxy).await;
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_timeout");
    // 700 ms of deadline holds 3 tries of 200 ms and a shortened 4th at most.
    let hits = upstream.hits();
    assert!((2..=4).contains(&hits), "{hits} attempts");
}

/// The per-try timer lives with the pooled connection (not one per attempt):
/// it must still fire for a request on a reused connection, and that
/// connection must not be used again.
#[tokio::test]
async fn the_per_try_timeout_holds_on_a_reused_connection() {
    let n = Arc::new(AtomicUsize::new(0));
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let hang = n.fetch_add(1, Ordering::SeqCst) == 2;
        async move {
            if hang {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            status(200, "ok")
        }
    })
    .await;
    let proxy = Proxy::start(&retry_config(
        upstream.addr,
        "per_try_timeout = \"300ms\"\nattempts = 1",
    ))
    .await;
    // Two requests further apart than the timeout: the second attempt's
    // deadline is its own, not the first one's.
    for _ in 0..2 {
        let res = get(&proxy).await;
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    let hung = get(&proxy).await;
    assert_eq!(hung.status(), 504);
    assert_eq!(hung.headers()["x-kawal-error"], "upstream_timeout");
    assert_eq!(
        upstream.connections(),
        1,
        "all three went out on the pooled connection"
    );

    assert_eq!(get(&proxy).await.status(), 200);
    assert_eq!(upstream.hits(), 4);
    assert_eq!(
        upstream.connections(),
        2,
        "the timed-out connection was not reused"
    );
}

#[tokio::test]
async fn the_budget_caps_retries_against_a_permanently_failing_upstream() {
    let upstream = scripted(&[503; 1000]).await;
    let cfg = retry_config(
        upstream.addr,
        "attempts = 3\nbudget = { ratio = 0.2, min_per_second = 1 }",
    );
    let cfg = cfg.replace(
        "[upstreams.svc.retry]",
        "[upstreams.svc.breaker]\nenabled = false\n[upstreams.svc.retry]",
    );
    let proxy = Proxy::start(&cfg).await;
    let requests = 50;
    for _ in 0..requests {
        assert_eq!(get(&proxy).await.status(), 503);
    }
    // requests × (1 + ratio) + floor (1/s over the 10 s window); without a
    // budget it would be requests × 3 = 150.
    let cap = requests + requests / 5 + 10;
    assert!(
        upstream.hits() <= cap,
        "{} upstream attempts for {requests} requests",
        upstream.hits()
    );
    assert!(upstream.hits() > requests, "some retries were allowed");
    assert!(
        proxy
            .metric(r#"kawal_retry_budget_exhausted_total{upstream="svc"}"#)
            .await
            > 0.0
    );
}

/// An upstream that, while `healthy` is false, accepts and immediately drops
/// connections (counting them); when healthy it serves 200.
async fn flapping() -> (Upstream, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let ok = h.load(Ordering::SeqCst);
        async move {
            if ok {
                status(200, "back")
            } else {
                // Hang up without answering: the proxy sees a reset.
                futures_util::future::pending::<()>().await;
                unreachable!()
            }
        }
    })
    .await;
    (upstream, healthy)
}

#[tokio::test]
async fn breaker_opens_after_consecutive_failures_fails_fast_then_half_open_probe_closes_it() {
    let (upstream, healthy) = flapping().await;
    let cfg = outbound_config(
        &[upstream.addr],
        "[upstreams.svc.retry]\nattempts = 1\nper_try_timeout = \"100ms\"\n\
         [upstreams.svc.breaker]\nconsecutive_failures = 3\nopen_for = \"500ms\"\nhalf_open_probes = 1",
        "",
    );
    let proxy = Proxy::start(&cfg).await;
    for _ in 0..3 {
        assert_eq!(get(&proxy).await.status(), 504);
    }
    let tried = upstream.hits();
    assert_eq!(tried, 3);

    // Open: fail fast, nothing reaches the upstream.
    for _ in 0..5 {
        let res = get(&proxy).await;
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["x-kawal-error"], "circuit_open");
        assert!(res.headers().contains_key("retry-after"));
        let err: serde_json::Value = res.json().await.unwrap();
        assert_eq!(err["upstream"], "svc");
    }
    assert_eq!(
        upstream.hits(),
        tried,
        "an open breaker must not touch the network"
    );
    let admin = format!("http://{}/upstreams", proxy.admin());
    let view: serde_json::Value = client().get(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["upstreams"][0]["breaker"]["state"], "open");
    assert_eq!(
        proxy
            .metric(r#"kawal_breaker_state{upstream="svc",state="open"}"#)
            .await,
        1.0
    );

    // The upstream comes back; after the cool-down one probe closes the breaker.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&proxy).await.status(), 200);
    assert_eq!(get(&proxy).await.status(), 200);
    let view: serde_json::Value = client().get(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["upstreams"][0]["breaker"]["state"], "closed");
}

#[tokio::test]
async fn breaker_on_a_dead_port_fails_fast_without_connecting() {
    // Reserve a port, then close it: connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = outbound_config(
        &[dead],
        "[upstreams.svc.retry]\nattempts = 1\n[upstreams.svc.breaker]\nconsecutive_failures = 2\nopen_for = \"30s\"",
        "",
    );
    let proxy = Proxy::start(&cfg).await;
    assert_eq!(get(&proxy).await.status(), 502);
    assert_eq!(get(&proxy).await.status(), 502);
    let res = get(&proxy).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["x-kawal-error"], "circuit_open");
    let secs: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&secs), "{secs}");
}

#[tokio::test]
async fn the_breaker_counts_5xx_that_are_not_retried() {
    // 500 is not in the default retry list, but it says the upstream is unwell.
    let upstream = scripted(&[500; 100]).await;
    let cfg = outbound_config(
        &[upstream.addr],
        "[upstreams.svc.breaker]\nconsecutive_failures = 3\nopen_for = \"30s\"",
        "",
    );
    let proxy = Proxy::start(&cfg).await;
    for _ in 0..3 {
        assert_eq!(get(&proxy).await.status(), 500);
    }
    assert_eq!(upstream.hits(), 3, "500 is not retried by default");
    assert_eq!(get(&proxy).await.status(), 503);
    assert_eq!(upstream.hits(), 3);
}
