//! The idempotency and ordering guard against a real app that records what
//! it receives: Idempotency-Key replay, CloudEvents dedup (both modes),
//! per-key ordering with a bounded queue, stale versions; and the Redis
//! store shared by two kawals, surviving a restart, failing closed.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::redis::RedisServer;
use support::*;
use tokio::sync::watch;

/// What the app received, in order.
#[derive(Default)]
struct Seen {
    /// (path, ordering key, x-seq, ce-id)
    deliveries: Mutex<Vec<(String, String, String, String)>>,
    in_flight: Mutex<HashMap<String, usize>>,
    overlaps: AtomicUsize,
    orders: AtomicUsize,
}

struct App {
    up: Upstream,
    seen: Arc<Seen>,
    gate: watch::Sender<bool>,
}

impl App {
    /// `/orders/*` answers 201 `order:N` after 150 ms, `/fail` 500; other
    /// paths record the delivery, hold it while the gate is shut, and
    /// count two deliveries of one key at once as an overlap.
    async fn start() -> App {
        App::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn serve(listener: tokio::net::TcpListener) -> App {
        let seen = Arc::new(Seen::default());
        let (gate, rx) = watch::channel(true);
        let s = seen.clone();
        let up = Upstream::serve(listener, move |req: Request<Incoming>| {
            let (s, mut rx) = (s.clone(), rx.clone());
            async move {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
                };
                let (key, seq, id) = (h("ce-partitionkey"), h("x-seq"), h("ce-id"));
                let path = req.uri().path().to_owned();
                let _ = req.into_body().collect().await;
                if path == "/fail" {
                    return status(500, "boom");
                }
                if path.starts_with("/orders/") {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let n = s.orders.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut res = Response::new(full(format!("order:{n}")));
                    *res.status_mut() = http::StatusCode::CREATED;
                    res.headers_mut().insert("x-app", "yes".parse().unwrap());
                    return res;
                }
                if !key.is_empty() && {
                    let mut f = s.in_flight.lock().unwrap();
                    let n = f.entry(key.clone()).or_default();
                    *n += 1;
                    *n > 1
                } {
                    s.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                s.deliveries.lock().unwrap().push((path, key.clone(), seq, id));
                let _ = rx.wait_for(|open| *open).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                if !key.is_empty() {
                    *s.in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
                }
                status(200, "ok")
            }
        });
        App { up, seen, gate }
    }
}

const ROUTES: &str = r#"
[[inbound.guard.routes]]
methods = ["POST"]
paths = ["/orders/*", "/fail"]
idempotency = true
[[inbound.guard.routes]]
paths = ["/strict"]
idempotency = true
require_key = true
[[inbound.guard.routes]]
paths = ["/events"]
cloudevents = true
[[inbound.guard.routes]]
paths = ["/ordered"]
order_by = "ce-partitionkey"
version_from = "ce-sequence"
[[inbound.guard.routes]]
paths = ["/tight"]
order_by = "ce-partitionkey"
max_queue = 1
"#;

fn memory_config(app: SocketAddr) -> String {
    inbound_config(app, &format!("[inbound.guard]\n{ROUTES}"))
}

fn redis_config(app: SocketAddr, redis: &RedisServer, extra: &str) -> String {
    let guard = format!(
        "[inbound.guard]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"300ms\"\nlease = \"2s\"\n{extra}\n{ROUTES}",
        redis.url()
    );
    inbound_config(app, &guard)
}

/// (status, x-kawal-error, idempotent-replayed, body, retry-after)
async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, bool, String, String) {
    let mut req = client()
        .post(format!("http://{addr}{path}"))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let h = |n: &str| {
        res.headers()
            .get(n)
            .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
    };
    let (status, kind, replayed) = (
        res.status().as_u16(),
        h("x-kawal-error"),
        h("idempotent-replayed") == "true",
    );
    let retry_after = h("retry-after");
    (status, kind, replayed, res.text().await.unwrap(), retry_after)
}

#[tokio::test]
async fn one_key_reaches_the_app_once_and_every_repeat_gets_its_response() {
    let app = App::start().await;
    let proxy = Proxy::start(&memory_config(app.up.addr)).await;
    let addr = proxy.inbound();
    let key = [("idempotency-key", "\"order-42\"")];
    let concurrent: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { post(addr, "/orders/1", &key, "{\"qty\":1}").await }))
        .collect();
    let mut originals = 0;
    for r in concurrent {
        let (status, kind, replayed, body, _) = r.await.unwrap();
        match status {
            409 => assert_eq!(kind, "duplicate_event"),
            201 => {
                assert_eq!(body, "order:1");
                originals += usize::from(!replayed);
            }
            other => panic!("unexpected {other} {kind} {body}"),
        }
    }
    assert_eq!(originals, 1, "one response came from the app");
    for _ in 0..50 {
        let (status, _, replayed, body, _) = post(addr, "/orders/1", &key, "{\"qty\":1}").await;
        assert_eq!((status, replayed, body.as_str()), (201, true, "order:1"));
    }
    assert_eq!(app.up.hits(), 1);
    let lines = proxy.wait_log_lines(100).await;
    let count = |g: &str| lines.iter().filter(|l| l["guard"] == g).count();
    assert_eq!(count("new"), 1);
    assert!(count("replayed") >= 50);
    assert_eq!(count("new") + count("replayed") + count("conflict"), 100);
    assert_eq!(proxy.metric("kawal_guard_total{outcome=\"new\"}").await, 1.0);
    // The admin page's guard panel counts the same.
    let status: serde_json::Value = reqwest::get(format!("http://{}/status.json", proxy.admin()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["guard"]["replays"], count("replayed"), "{status}");
    assert_eq!(status["guard"]["conflicts"], count("conflict"), "{status}");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_bad_keys_are_400() {
    let app = App::start().await;
    let proxy = Proxy::start(&memory_config(app.up.addr)).await;
    let addr = proxy.inbound();
    let key = [("idempotency-key", "k-1")];
    assert_eq!(post(addr, "/orders/1", &key, "a").await.0, 201);
    let (status, kind, ..) = post(addr, "/orders/1", &key, "b").await;
    assert_eq!((status, kind.as_str()), (422, "idempotency_key_mismatch"));
    let (status, kind, ..) = post(addr, "/orders/2", &key, "a").await;
    assert_eq!(
        (status, kind.as_str()),
        (422, "idempotency_key_mismatch"),
        "another target"
    );
    let long = "k".repeat(300);
    for headers in [
        vec![("idempotency-key", "")],
        vec![("idempotency-key", long.as_str())],
        vec![("idempotency-key", "a"), ("idempotency-key", "b")],
    ] {
        let (status, kind, ..) = post(addr, "/orders/3", &headers, "a").await;
        assert_eq!(
            (status, kind.as_str()),
            (400, "bad_idempotency_key"),
            "{headers:?}"
        );
    }
    let (status, kind, ..) = post(addr, "/strict", &[], "a").await;
    assert_eq!((status, kind.as_str()), (400, "bad_idempotency_key"));
    // Without a key a guarded route is not guarded: each request reaches the app.
    assert_eq!(post(addr, "/orders/4", &[], "a").await.0, 201);
    assert_eq!(post(addr, "/orders/4", &[], "a").await.0, 201);
    assert_eq!(app.up.hits(), 3);
}

#[tokio::test]
async fn an_app_500_and_an_unreachable_app_are_not_stored() {
    let app = App::start().await;
    let proxy = Proxy::start(&memory_config(app.up.addr)).await;
    let key = [("idempotency-key", "f-1")];
    assert_eq!(post(proxy.inbound(), "/fail", &key, "x").await.0, 500);
    assert_eq!(post(proxy.inbound(), "/fail", &key, "x").await.0, 500);
    assert_eq!(
        app.up.hits(),
        2,
        "a 5xx is not replayed: the retry reaches the app"
    );

    // The app is down, then comes up on the same port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap();
    drop(listener);
    let proxy = Proxy::start(&memory_config(port)).await;
    let key = [("idempotency-key", "u-1")];
    let (status, kind, ..) = post(proxy.inbound(), "/orders/9", &key, "x").await;
    assert_eq!((status, kind.as_str()), (502, "upstream_connect"));
    let up = App::serve(tokio::net::TcpListener::bind(port).await.unwrap());
    let (status, _, replayed, body, _) = post(proxy.inbound(), "/orders/9", &key, "x").await;
    assert_eq!((status, replayed, body.as_str()), (201, false, "order:1"));
    assert_eq!(up.up.hits(), 1);
}

#[tokio::test]
async fn a_processed_cloudevent_is_acknowledged_without_reaching_the_app_in_both_modes() {
    let app = App::start().await;
    let proxy = Proxy::start(&memory_config(app.up.addr)).await;
    let addr = proxy.inbound();
    let binary = [
        ("ce-id", "e-1"),
        ("ce-source", "/orders"),
        ("ce-type", "t"),
        ("ce-specversion", "1.0"),
    ];
    assert_eq!(post(addr, "/events", &binary, "{}").await.0, 200);
    let (status, kind, _, body, _) = post(addr, "/events", &binary, "{}").await;
    assert_eq!((status, kind.as_str(), body.as_str()), (200, "", ""));
    let other_source = [("ce-id", "e-1"), ("ce-source", "/payments")];
    assert_eq!(post(addr, "/events", &other_source, "{}").await.0, 200);
    assert_eq!(
        app.up.hits(),
        2,
        "the same id from another source is another event"
    );

    let ct = [("content-type", "application/cloudevents+json")];
    let event = r#"{"specversion":"1.0","id":"s-1","source":"/orders","type":"t","data":{}}"#;
    assert_eq!(post(addr, "/events", &ct, event).await.0, 200);
    assert_eq!(post(addr, "/events", &ct, event).await.0, 200);
    assert_eq!(app.up.hits(), 3);
    let (status, kind, ..) = post(addr, "/events", &ct, "{\"id\":\"x\"}").await;
    assert_eq!((status, kind.as_str()), (400, "bad_event"));
    let lines = proxy.wait_log_lines(6).await;
    assert_eq!(lines.iter().filter(|l| l["guard"] == "duplicate").count(), 2);
}

#[tokio::test]
async fn versions_1_3_2_reject_2_as_stale() {
    let app = App::start().await;
    let proxy = Proxy::start(&memory_config(app.up.addr)).await;
    let mut statuses = Vec::new();
    for v in ["1", "3", "2", "3", "10"] {
        let h = [("ce-partitionkey", "acct-1"), ("ce-sequence", v), ("x-seq", v)];
        let (status, kind, ..) = post(proxy.inbound(), "/ordered", &h, "").await;
        statuses.push((status, kind));
    }
    let s: Vec<(u16, &str)> = statuses.iter().map(|(s, k)| (*s, k.as_str())).collect();
    assert_eq!(
        s,
        [
            (200, ""),
            (200, ""),
            (409, "out_of_order"),
            (409, "out_of_order"),
            (200, "")
        ]
    );
    let seqs: Vec<String> = app
        .seen
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.2.clone())
        .collect();
    assert_eq!(seqs, ["1", "3", "10"], "10 > 3: integers compare as numbers");
    let lines = proxy.wait_log_lines(5).await;
    assert_eq!(lines.iter().filter(|l| l["guard"] == "stale").count(), 2);
}

/// Waits (bounded) until `series` on /metrics equals `want`.
async fn wait_metric(proxy: &Proxy, series: &str, want: f64) {
    for _ in 0..2000 {
        if proxy.metric(series).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} never reached {want}");
}

#[tokio::test]
async fn deliveries_of_one_key_reach_the_app_one_at_a_time_in_arrival_order() {
    let app = App::start().await;
    // The first five wait at the app for the whole setup: a long deadline.
    let cfg = memory_config(app.up.addr).replace("timeout = \"2s\"", "timeout = \"60s\"");
    let proxy = Proxy::start(&cfg).await;
    let addr = proxy.inbound();
    app.gate.send_replace(false);
    let mut sent = Vec::new();
    // Round by round, each delivery known to be queued before the next is
    // sent: that is the arrival order. All 100 are in flight at once.
    for round in 0..20 {
        for key in 0..5 {
            let seq = (round + 1).to_string();
            let pk = format!("p{key}");
            sent.push(tokio::spawn(async move {
                let h = [
                    ("ce-partitionkey", pk.as_str()),
                    ("ce-sequence", seq.as_str()),
                    ("x-seq", seq.as_str()),
                ];
                post(addr, "/ordered", &h, "").await.0
            }));
            if round == 0 {
                while app.up.hits() < key + 1 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            } else {
                wait_metric(&proxy, "kawal_guard_waiting", (sent.len() - 5) as f64).await;
            }
        }
    }
    app.gate.send_replace(true);
    for s in sent {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(
        app.seen.overlaps.load(Ordering::SeqCst),
        0,
        "two of one key were at the app at once"
    );
    let deliveries = app.seen.deliveries.lock().unwrap();
    assert_eq!(deliveries.len(), 100);
    for key in 0..5 {
        let order: Vec<u32> = deliveries
            .iter()
            .filter(|d| d.1 == format!("p{key}"))
            .map(|d| d.2.parse().unwrap())
            .collect();
        assert_eq!(order, (1..=20).collect::<Vec<u32>>(), "key p{key}");
    }
}

#[tokio::test]
async fn a_full_key_queue_answers_503_with_retry_after() {
    let app = App::start().await;
    let proxy = Proxy::start(&memory_config(app.up.addr)).await;
    let addr = proxy.inbound();
    app.gate.send_replace(false);
    let h = [("ce-partitionkey", "hot")];
    let first = tokio::spawn(async move { post(addr, "/tight", &h, "").await });
    while app.up.hits() < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // One may wait (max_queue = 1): of these two, the later one is refused.
    let mut a = tokio::spawn(async move { post(addr, "/tight", &h, "").await });
    let mut b = tokio::spawn(async move { post(addr, "/tight", &h, "").await });
    // Only the refused one can finish while the gate is shut.
    let (refused, waiting) = tokio::select! {
        r = &mut a => (r.unwrap(), b),
        r = &mut b => (r.unwrap(), a),
    };
    assert_eq!(
        (refused.0, refused.1.as_str(), refused.4.as_str()),
        (503, "overloaded", "1")
    );
    app.gate.send_replace(true);
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(waiting.await.unwrap().0, 200);
    assert_eq!(app.up.hits(), 2);
    let res = client()
        .get(format!("http://{}/metrics", proxy.admin()))
        .send()
        .await
        .unwrap();
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("kawal_guard_total{outcome=\"rejected\"} 1"));
}

/// A repeat sent right after its original finished may find its claim
/// still settling in Redis (409, "try later" per the draft): retried, bounded.
async fn post_settled(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, bool, String, String) {
    for _ in 0..50 {
        let r = post(addr, path, headers, body).await;
        if r.0 != 409 || r.1 != "duplicate_event" {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still in flight after 1s");
}

#[tokio::test]
async fn two_kawals_sharing_redis_dedup_across_each_other() {
    let redis = RedisServer::start().await;
    let app = App::start().await;
    let a = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let b = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let key = [("idempotency-key", "shared-1")];
    let (status, _, replayed, body, _) = post(a.inbound(), "/orders/1", &key, "x").await;
    assert_eq!((status, replayed, body.as_str()), (201, false, "order:1"));
    let (status, _, replayed, body, _) = post_settled(b.inbound(), "/orders/1", &key, "x").await;
    assert_eq!((status, replayed, body.as_str()), (201, true, "order:1"));
    let (status, kind, ..) = post(b.inbound(), "/orders/1", &key, "y").await;
    assert_eq!((status, kind.as_str()), (422, "idempotency_key_mismatch"));

    let event = [("ce-id", "r-1"), ("ce-source", "/s")];
    assert_eq!(post(b.inbound(), "/events", &event, "").await.0, 200);
    assert_eq!(post_settled(a.inbound(), "/events", &event, "").await.0, 200);
    assert_eq!(app.up.hits(), 2);
    let lines = a.wait_log_lines(2).await;
    assert_eq!(lines[1]["guard"], "duplicate");
}

#[tokio::test]
async fn concurrent_claims_across_two_kawals_reach_the_app_once() {
    let redis = RedisServer::start().await;
    let app = App::start().await;
    let a = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let b = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let key = [("idempotency-key", "race-1")];
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let addr = if i % 2 == 0 { a.inbound() } else { b.inbound() };
            tokio::spawn(async move { post(addr, "/orders/7", &key, "x").await })
        })
        .collect();
    for s in sends {
        let (status, kind, _, body, _) = s.await.unwrap();
        assert!(
            (status, body.as_str()) == (201, "order:1")
                || (status, kind.as_str()) == (409, "duplicate_event"),
            "{status} {kind} {body}"
        );
    }
    assert_eq!(app.up.hits(), 1);

    // One at a time per key across both replicas (a Redis lease per key).
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { a.inbound() } else { b.inbound() };
            tokio::spawn(async move { post(addr, "/tight", &[("ce-partitionkey", "k")], "").await.0 })
        })
        .collect();
    let mut ok = 0;
    for s in sends {
        // max_queue = 1 per replica: some are refused, none overlap.
        let status = s.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
        ok += usize::from(status == 200);
    }
    assert!(ok >= 2);
    assert_eq!(
        app.seen.overlaps.load(Ordering::SeqCst),
        0,
        "two replicas ran one key at once"
    );
}

#[tokio::test]
async fn dedup_survives_restarting_a_kawal() {
    let redis = RedisServer::start().await;
    let app = App::start().await;
    let first = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let key = [("idempotency-key", "restart-1")];
    let event = [("content-type", "application/cloudevents+json")];
    let ce = r#"{"specversion":"1.0","id":"x-1","source":"/s","type":"t"}"#;
    assert_eq!(post(first.inbound(), "/orders/1", &key, "x").await.0, 201);
    assert_eq!(post(first.inbound(), "/events", &event, ce).await.0, 200);
    first.wait_log_lines(2).await;
    first.shutdown().await;
    let second = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let (status, _, replayed, body, _) = post_settled(second.inbound(), "/orders/1", &key, "x").await;
    assert_eq!((status, replayed, body.as_str()), (201, true, "order:1"));
    assert_eq!(post_settled(second.inbound(), "/events", &event, ce).await.0, 200);
    assert_eq!(app.up.hits(), 2);
}

#[tokio::test]
async fn with_redis_stopped_the_guard_fails_closed_or_open_as_configured() {
    let mut redis = RedisServer::start().await;
    let app = App::start().await;
    let closed = Proxy::start(&redis_config(app.up.addr, &redis, "")).await;
    let open = Proxy::start(&redis_config(app.up.addr, &redis, "fail_open = true")).await;
    assert_eq!(
        post(
            closed.inbound(),
            "/events",
            &[("ce-id", "1"), ("ce-source", "/s")],
            ""
        )
        .await
        .0,
        200
    );
    redis.stop();
    for (i, path) in ["/orders/1", "/events", "/ordered"].iter().enumerate() {
        let id = i.to_string();
        let h = [
            ("idempotency-key", "down-1"),
            ("ce-id", id.as_str()),
            ("ce-source", "/s"),
            ("ce-partitionkey", "k"),
            ("ce-sequence", "5"),
        ];
        let (status, kind, _, _, retry_after) = post(closed.inbound(), path, &h, "").await;
        assert_eq!(
            (status, kind.as_str(), retry_after.as_str()),
            (503, "guard_unavailable", "1"),
            "{path}"
        );
    }
    assert_eq!(app.up.hits(), 1, "nothing reached the app");
    // Unguarded routes do not need the store.
    assert_eq!(post(closed.inbound(), "/other", &[], "").await.0, 200);
    let (status, ..) = post(
        open.inbound(),
        "/events",
        &[("ce-id", "9"), ("ce-source", "/s")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.up.hits(), 3);
    let lines = open.wait_log_lines(1).await;
    assert_eq!(lines[0]["guard"], "unguarded");
}
