//! The response cache, end to end: a real upstream that counts its requests,
//! kawal in process, real HTTP clients. Short TTLs, generous bounds: the
//! assertions are on counts and bodies, never on how fast.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming};
use support::{full, inbound_config, outbound_config, status, BoxBody, Proxy, Upstream};

/// kawal with `[upstreams.svc.cache]` set to `cache` (and no retries, so
/// upstream counts are exact).
async fn kawal(upstream: &Upstream, cache: &str) -> Proxy {
    let extra = format!("[upstreams.svc.retry]\nattempts = 1\n[upstreams.svc.cache]\n{cache}");
    Proxy::start(&outbound_config(&[upstream.addr], &extra, "")).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn send(c: &reqwest::Client, p: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = c
        .request(method.parse().unwrap(), format!("http://{}{path}", p.outbound()))
        .header("host", "svc");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let res = req.send().await.unwrap();
    Got {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.bytes().await.unwrap(),
    }
}

async fn get(c: &reqwest::Client, p: &Proxy, path: &str) -> Got {
    send(c, p, "GET", path, &[]).await
}

fn with(mut res: Response<BoxBody>, headers: &[(&str, &str)]) -> Response<BoxBody> {
    for (n, v) in headers {
        res.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    res
}

/// Polls (bounded) until the upstream has served `n` requests.
async fn until_hits(upstream: &Upstream, n: usize) {
    for _ in 0..500 {
        if upstream.hits() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("upstream saw {} requests, expected {n}", upstream.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_cold_gets_make_one_upstream_request() {
    let upstream = Upstream::start(|_req| async {
        // Slow enough that the others arrive while the first is in flight.
        tokio::time::sleep(Duration::from_millis(300)).await;
        with(
            Response::new(full(support::pattern(20_000))),
            &[("cache-control", "max-age=60")],
        )
    })
    .await;
    let p = kawal(&upstream, "lock_timeout = \"20s\"").await;
    let c = client();
    let all = futures_util::future::join_all((0..500).map(|_| get(&c, &p, "/cold"))).await;
    assert_eq!(upstream.hits(), 1, "exactly one upstream request");
    for got in &all {
        assert_eq!(got.status, 200);
        assert_eq!(got.body, support::pattern(20_000));
    }
    let coalesced = all
        .iter()
        .filter(|g| g.header("cache-status").contains("collapsed"))
        .count();
    let hits = all
        .iter()
        .filter(|g| g.header("cache-status").contains("hit"))
        .count();
    assert_eq!(
        coalesced + hits,
        499,
        "all but the leader answered from the cache"
    );
    // A later request is a plain hit with Age and Cache-Status, logged as such.
    let got = get(&c, &p, "/cold").await;
    assert!(
        got.header("cache-status").starts_with("kawal; hit; ttl="),
        "{}",
        got.header("cache-status")
    );
    assert!(got.header("age").parse::<u64>().is_ok());
    let lines = p.wait_log_lines(501).await;
    assert_eq!(lines.last().unwrap()["cache"], "hit");
    assert!(lines.iter().any(|l| l["cache"] == "miss"));
    assert_eq!(
        p.metric("kawal_cache_events_total{cache=\"upstream:svc\",event=\"miss\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn no_store_and_private_are_never_stored() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let cc = if req.uri().path() == "/ns" {
            "no-store, max-age=60"
        } else {
            "private, max-age=60"
        };
        with(status(200, "x"), &[("cache-control", cc)])
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    for path in ["/ns", "/ns", "/pv", "/pv"] {
        let got = get(&c, &p, path).await;
        assert!(
            got.header("cache-status").contains("fwd=uri-miss"),
            "{}",
            got.header("cache-status")
        );
    }
    assert_eq!(upstream.hits(), 4);
}

#[tokio::test]
async fn vary_keeps_variants_apart_and_vary_star_is_never_served() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let ae = req
            .headers()
            .get("accept-encoding")
            .map_or("none", |v| v.to_str().unwrap())
            .to_string();
        let vary = if req.uri().path() == "/star" {
            "*"
        } else {
            "accept-encoding"
        };
        with(
            Response::new(full(ae)),
            &[("cache-control", "max-age=60"), ("vary", vary)],
        )
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    for ae in ["gzip", "br", "gzip", "br", "gzip"] {
        let got = send(&c, &p, "GET", "/v", &[("accept-encoding", ae)]).await;
        assert_eq!(got.body, ae.as_bytes());
    }
    assert_eq!(upstream.hits(), 2, "one fetch per variant");
    for _ in 0..2 {
        send(&c, &p, "GET", "/star", &[("accept-encoding", "gzip")]).await;
    }
    assert_eq!(upstream.hits(), 4, "Vary: * is never served from the cache");
}

#[tokio::test]
async fn a_write_invalidates_its_target_and_the_location_it_returns() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        if req.method() == http::Method::POST {
            return with(status(201, "made"), &[("location", "/y")]);
        }
        with(status(200, "page"), &[("cache-control", "max-age=60")])
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    get(&c, &p, "/x").await;
    get(&c, &p, "/y").await;
    get(&c, &p, "/x").await;
    get(&c, &p, "/y").await;
    assert_eq!(upstream.hits(), 2, "both stored");
    let made = send(&c, &p, "POST", "/x", &[("content-type", "text/plain")]).await;
    assert_eq!(made.status, 201);
    assert_eq!(upstream.hits(), 3);
    get(&c, &p, "/x").await;
    get(&c, &p, "/y").await;
    assert_eq!(upstream.hits(), 5, "/x and its Location /y went upstream again");
}

/// An upstream answering `v1`, `v2`, ... (the nth request gets `vN`) with
/// `cc`; requests after the first take `delay`.
async fn versions(cc: &'static str, delay: Duration) -> Upstream {
    let n = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |_req| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if i > 1 {
                tokio::time::sleep(delay).await;
            }
            with(Response::new(full(format!("v{i}"))), &[("cache-control", cc)])
        }
    })
    .await
}

#[tokio::test]
async fn stale_while_revalidate_answers_stale_at_once_and_refreshes_once() {
    let upstream = versions("max-age=1, stale-while-revalidate=60", Duration::from_millis(300)).await;
    let p = kawal(&upstream, "xfetch_beta = 0").await;
    let c = client();
    assert_eq!(get(&c, &p, "/s").await.body, "v1");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let all = futures_util::future::join_all((0..20).map(|_| get(&c, &p, "/s"))).await;
    for got in &all {
        assert_eq!(got.body, "v1", "the stale copy, without waiting for the refresh");
        assert!(got.header("cache-status").contains("stale-while-revalidate"));
    }
    until_hits(&upstream, 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(upstream.hits(), 2, "one background refresh for twenty stale hits");
    assert_eq!(get(&c, &p, "/s").await.body, "v2", "the refreshed copy");
}

/// An upstream that closes every connection after answering, so that once
/// it is gone nothing of it is reused: `fail` makes it answer 503.
async fn failing(cc: &'static str, fail: Arc<AtomicBool>) -> Upstream {
    Upstream::start(move |_req| {
        let fail = fail.load(Ordering::SeqCst);
        async move {
            let res = if fail {
                status(503, "down")
            } else {
                with(status(200, "good"), &[("cache-control", cc)])
            };
            with(res, &[("connection", "close")])
        }
    })
    .await
}

#[tokio::test]
async fn stale_if_error_answers_stale_while_the_upstream_fails_and_while_it_is_down() {
    let fail = Arc::new(AtomicBool::new(false));
    let upstream = failing("max-age=1, stale-if-error=60", fail.clone()).await;
    let p = kawal(&upstream, "").await;
    let c = client();
    assert_eq!(get(&c, &p, "/e").await.body, "good");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    fail.store(true, Ordering::SeqCst);
    let got = get(&c, &p, "/e").await;
    assert_eq!((got.status, &got.body[..]), (200, &b"good"[..]), "stale on 503");
    assert!(got.header("cache-status").contains("stale-if-error"));
    assert_eq!(upstream.hits(), 2);
    drop(upstream);
    let got = get(&c, &p, "/e").await;
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &b"good"[..]),
        "stale while down"
    );
    assert_eq!(p.wait_log_lines(3).await[2]["cache"], "stale");
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale() {
    let fail = Arc::new(AtomicBool::new(false));
    let upstream = failing("max-age=1, must-revalidate, stale-if-error=60", fail.clone()).await;
    let p = kawal(
        &upstream,
        "stale_if_error = \"60s\"\nstale_while_revalidate = \"60s\"",
    )
    .await;
    let c = client();
    assert_eq!(get(&c, &p, "/m").await.body, "good");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    fail.store(true, Ordering::SeqCst);
    assert_eq!(get(&c, &p, "/m").await.status, 503);
    let got = send(&c, &p, "GET", "/m", &[("cache-control", "max-stale")]).await;
    assert_eq!(got.status, 503, "not even when the client accepts stale");
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn a_304_revalidation_updates_the_stored_headers() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        if req.headers().get("if-none-match").is_some_and(|v| v == "\"e1\"") {
            return with(
                status(304, ""),
                &[("x-version", "2"), ("cache-control", "max-age=60")],
            );
        }
        with(
            status(200, "body"),
            &[
                ("etag", "\"e1\""),
                ("x-version", "1"),
                ("cache-control", "max-age=1"),
            ],
        )
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    assert_eq!(get(&c, &p, "/r").await.header("x-version"), "1");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let got = get(&c, &p, "/r").await;
    assert_eq!(
        (got.status, &got.body[..], got.header("x-version")),
        (200, &b"body"[..], "2")
    );
    assert!(got.header("cache-status").contains("fwd-status=304"));
    let got = get(&c, &p, "/r").await;
    assert_eq!(
        (got.header("x-version"), got.header("cache-control")),
        ("2", "max-age=60")
    );
    assert_eq!(upstream.hits(), 2, "the freshened entry answers");
    // A client's own conditional is answered from the fresh entry.
    let got = send(&c, &p, "GET", "/r", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(got.status, 304);
    assert_eq!(upstream.hits(), 2);
    assert_eq!(p.wait_log_lines(4).await[1]["cache"], "revalidated");
}

#[tokio::test]
async fn the_memory_bound_holds_after_far_more_than_the_budget() {
    let upstream = Upstream::start(|_req| async {
        with(
            Response::new(full(support::pattern(10_000))),
            &[("cache-control", "max-age=60")],
        )
    })
    .await;
    let p = kawal(&upstream, "max_bytes = \"256KiB\"\nmax_object_size = \"16KiB\"").await;
    let c = client();
    for i in 0..300 {
        assert_eq!(get(&c, &p, &format!("/b/{i}")).await.body.len(), 10_000);
    }
    let bytes = p.metric("kawal_cache_bytes{cache=\"upstream:svc\"}").await;
    let entries = p.metric("kawal_cache_entries{cache=\"upstream:svc\"}").await;
    assert!(bytes <= 256.0 * 1024.0, "{bytes} bytes held");
    assert!((1.0..=26.0).contains(&entries), "{entries} entries");
}

#[tokio::test]
async fn purge_forgets_a_key_and_a_prefix() {
    let upstream =
        Upstream::start(|_req| async { with(status(200, "x"), &[("cache-control", "max-age=60")]) }).await;
    let p = kawal(&upstream, "").await;
    let c = client();
    for path in ["/p/1", "/p/2", "/q"] {
        get(&c, &p, path).await;
    }
    let purge = |query: &str| c.post(format!("http://{}/cache/purge?{query}", p.admin())).send();
    let res = purge("cache=upstream:svc&key=svc/p/1").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), r#"{"purged":1}"#);
    get(&c, &p, "/p/1").await;
    get(&c, &p, "/p/2").await;
    assert_eq!(upstream.hits(), 4, "only /p/1 went again");
    let res = purge("prefix=svc/p/").await.unwrap();
    assert_eq!(res.text().await.unwrap(), r#"{"purged":2}"#);
    get(&c, &p, "/p/2").await;
    get(&c, &p, "/q").await;
    assert_eq!(upstream.hits(), 5, "/p/2 went again, /q did not");
    assert_eq!(purge("cache=nope&key=x").await.unwrap().status(), 404);
    assert_eq!(purge("").await.unwrap().status(), 400);
}

#[tokio::test]
async fn xfetch_refreshes_before_expiry_once_per_key() {
    let upstream = versions("max-age=60", Duration::from_millis(300)).await;
    // beta so high that any hit is "near expiry": the refresh is certain.
    let p = kawal(&upstream, "xfetch_beta = 1e9").await;
    let c = client();
    assert_eq!(get(&c, &p, "/x").await.body, "v1");
    let all = futures_util::future::join_all((0..20).map(|_| get(&c, &p, "/x"))).await;
    for got in &all {
        assert_eq!(got.body, "v1");
        assert!(got.header("cache-status").starts_with("kawal; hit"), "fresh hits");
    }
    until_hits(&upstream, 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        upstream.hits(),
        2,
        "one refresh for twenty hits, 60 s before expiry"
    );
    assert_eq!(
        p.metric("kawal_cache_events_total{cache=\"upstream:svc\",event=\"refresh\"}")
            .await,
        1.0
    );
    let got = get(&c, &p, "/x").await;
    assert_eq!(got.body, "v2", "the early refresh replaced the entry");
}

#[tokio::test]
async fn a_truncated_upstream_body_is_not_stored() {
    let upstream = Upstream::start(|_req| async {
        use futures_util::StreamExt;
        let first = Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"half of it")));
        // The head and the first chunk go out; then the body breaks.
        let broken = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::other("upstream broke"))
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter([first]).chain(broken));
        use http_body_util::BodyExt;
        let body: BoxBody = body.map_err(Into::into).boxed_unsync();
        with(Response::new(body), &[("cache-control", "max-age=60")])
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    for _ in 0..2 {
        let res = c
            .get(format!("http://{}/t", p.outbound()))
            .header("host", "svc")
            .send()
            .await
            .unwrap();
        assert!(res.bytes().await.is_err(), "the client sees the break");
    }
    assert_eq!(upstream.hits(), 2, "nothing was stored");
}

#[tokio::test]
async fn only_if_cached_is_504_when_nothing_is_stored() {
    let upstream =
        Upstream::start(|_req| async { with(status(200, "x"), &[("cache-control", "max-age=60")]) }).await;
    let p = kawal(&upstream, "").await;
    let c = client();
    let got = send(&c, &p, "GET", "/o", &[("cache-control", "only-if-cached")]).await;
    assert_eq!((got.status, got.header("x-kawal-error")), (504, "not_cached"));
    get(&c, &p, "/o").await;
    let got = send(&c, &p, "GET", "/o", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn the_inbound_cache_protects_the_app() {
    let app =
        Upstream::start(|_req| async { with(status(200, "app"), &[("cache-control", "max-age=60")]) }).await;
    let p = Proxy::start(&inbound_config(app.addr, "[inbound.cache]\nmax_bytes = \"1MiB\"")).await;
    let c = client();
    for _ in 0..3 {
        let res = c
            .get(format!("http://{}/page", p.inbound()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "app");
    }
    assert_eq!(app.hits(), 1);
    assert_eq!(p.wait_log_lines(3).await[2]["cache"], "hit");
}

#[test]
fn a_bad_cache_table_is_refused_with_its_place() {
    let toml = outbound_config(
        &["127.0.0.1:1".parse().unwrap()],
        "[upstreams.svc.cache]\nmax_bytes = \"1MiB\"\nmax_object_size = \"2MiB\"\nxfetch_beta = -1.0\ndefault_ttl = \"soon\"\nmax_age = 5",
        "",
    );
    let err = kawal::config::Config::from_toml_str(&toml, "k.toml")
        .unwrap_err()
        .to_string();
    for want in [
        "upstreams.svc.cache.default_ttl",
        "upstreams.svc.cache.max_age: unknown key",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    let toml = outbound_config(
        &["127.0.0.1:1".parse().unwrap()],
        "[upstreams.svc.cache]\nmax_bytes = \"1MiB\"\nmax_object_size = \"2MiB\"\nxfetch_beta = -1.0",
        "",
    );
    let err = kawal::config::Config::from_toml_str(&toml, "k.toml")
        .unwrap_err()
        .to_string();
    let line = |key: &str| toml.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    for (key, msg) in [
        ("max_object_size", "must not exceed max_bytes"),
        ("xfetch_beta", "positive number"),
    ] {
        let at = format!("k.toml:{}:1: upstreams.svc.cache.{key}: ", line(key));
        assert!(
            err.lines().any(|l| l.starts_with(&at) && l.contains(msg)),
            "{at}{msg} in {err}"
        );
    }
}

#[tokio::test]
async fn stale_if_error_answers_for_an_open_breaker_without_a_request() {
    let fail = Arc::new(AtomicBool::new(false));
    let upstream = failing("max-age=1, stale-if-error=60", fail.clone()).await;
    let extra = "[upstreams.svc.retry]\nattempts = 1\n[upstreams.svc.breaker]\nconsecutive_failures = 1\nopen_for = \"60s\"\n[upstreams.svc.cache]";
    let p = Proxy::start(&outbound_config(&[upstream.addr], extra, "")).await;
    let c = client();
    assert_eq!(get(&c, &p, "/b").await.body, "good");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    fail.store(true, Ordering::SeqCst);
    assert_eq!(
        get(&c, &p, "/b").await.body,
        "good",
        "stale for the 503 that opens the breaker"
    );
    assert_eq!(upstream.hits(), 2);
    let got = get(&c, &p, "/b").await;
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &b"good"[..]),
        "stale for the open breaker"
    );
    assert_eq!(upstream.hits(), 2, "the open breaker sent nothing");
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let upstream = Upstream::start(|_req| async {
        with(status(200, "twelve bytes"), &[("cache-control", "max-age=60")])
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    get(&c, &p, "/h").await;
    let got = send(&c, &p, "HEAD", "/h", &[]).await;
    assert_eq!(
        (got.status, got.body.len(), got.header("content-length")),
        (200, 0, "12")
    );
    assert!(got.header("cache-status").starts_with("kawal; hit"));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn the_admin_page_reports_the_cache_in_status_json() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        with(status(200, "stored"), &[("cache-control", "max-age=60")])
    })
    .await;
    let p = kawal(&upstream, "").await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(&get(&c, &p, "/panel").await.body[..], b"stored");
    }
    let status: serde_json::Value = c
        .get(format!("http://{}/status.json", p.admin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let panel = &status["cache"];
    assert_eq!(panel["misses"], 1, "{panel}");
    assert_eq!(panel["hits"], 2, "{panel}");
    assert_eq!(panel["entries"], 1, "{panel}");
    assert!(panel["bytesUsed"].as_u64().unwrap() > 0, "{panel}");
    assert!(status["guard"].is_null(), "no guard configured: {status}");
}
