//! Both directions on real sockets: bytes intact, header hygiene, trace
//! context, access log, routing, upstream failures.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;

/// An upstream that streams the request body straight back.
async fn mirror() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        Response::new(req.into_body().map_err(Into::into).boxed_unsync())
    })
    .await
}

#[tokio::test]
async fn multi_megabyte_bodies_cross_intact_both_ways_through_inbound_and_outbound() {
    let app = mirror().await;
    let inbound = Proxy::start(&inbound_config(app.addr, "")).await;
    let outbound = Proxy::start(&outbound_config(&[app.addr], "", "")).await;
    let payload = pattern(3 * 1024 * 1024 + 17);
    for (proxy, addr) in [(&inbound, inbound.inbound()), (&outbound, outbound.outbound())] {
        let post = |body: reqwest::Body| {
            client()
                .post(format!("http://{addr}/upload"))
                .header("host", "svc")
                .body(body)
                .send()
        };
        // Content-Length framing.
        let res = post(payload.clone().into()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), payload);

        // Chunked framing (a stream of unknown length).
        let chunks: Vec<Result<Bytes, std::io::Error>> = payload
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let res = post(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), payload);

        let lines = proxy.wait_log_lines(2).await;
        assert_eq!(lines[0]["bytesIn"], payload.len() as u64);
        assert_eq!(lines[0]["bytesOut"], payload.len() as u64);
    }
    assert_eq!(app.hits(), 4);
}

#[tokio::test]
async fn inbound_speaks_h2c_to_clients() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let res = h2
        .get(format!("http://{}/h2", proxy.inbound()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echo["uri"], "/h2");
    assert_eq!(echo["version"], "HTTP/1.1");
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross_in_either_direction() {
    let app = Upstream::start(|req: Request<Incoming>| async move {
        let seen: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
        let mut res = Response::new(full(seen.join(",")));
        let h = res.headers_mut();
        h.insert("connection", "x-upstream-secret".parse().unwrap());
        h.insert("x-upstream-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-end-to-end", "yes".parse().unwrap());
        res
    })
    .await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let req = "GET /h HTTP/1.1\r\nHost: svc\r\nConnection: close, x-client-secret\r\nx-client-secret: 1\r\n\
               Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\
               x-kawal-peer-identity: spiffe://evil/sa/admin\r\nx-keep: yes\r\n\r\n";
    let raw = raw_exchange(proxy.inbound(), req.as_bytes()).await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let seen: Vec<&str> = body.split(',').collect();
    for gone in [
        "x-client-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "http2-settings",
        "x-kawal-peer-identity",
    ] {
        assert!(!seen.contains(&gone), "{gone} reached the app: {seen:?}");
    }
    assert!(seen.contains(&"x-keep"), "{seen:?}");
    assert!(seen.contains(&"x-forwarded-for"), "{seen:?}");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("x-upstream-secret"), "{head}");
    assert!(!head.contains("keep-alive: timeout"), "{head}");
    assert!(head.contains("x-end-to-end: yes"), "{head}");
}

#[tokio::test]
async fn trace_context_is_started_continued_or_replaced() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let url = format!("http://{}/t", proxy.inbound());

    // Absent: a new trace, returned to the caller.
    let res = client().get(&url).send().await.unwrap();
    let trace_header = res.headers()["x-trace-id"].to_str().unwrap().to_string();
    let echo: serde_json::Value = res.json().await.unwrap();
    let (trace, parent) = traceparent_of(&echo);
    assert_eq!(trace, trace_header);
    assert_eq!(trace.len(), 32);

    // Valid: same trace id, kawal's own span as the parent.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = client()
        .get(&url)
        .header("traceparent", incoming)
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let echo: serde_json::Value = res.json().await.unwrap();
    let (trace2, parent2) = traceparent_of(&echo);
    assert_eq!(trace2, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parent2, "00f067aa0ba902b7");
    assert_eq!(echo["headers"]["tracestate"], "vendor=1");

    // Malformed: replaced, never forwarded; its tracestate goes with it.
    let res = client()
        .get(&url)
        .header(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = res.json().await.unwrap();
    let (trace3, _) = traceparent_of(&echo);
    assert_ne!(trace3.to_ascii_lowercase(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(echo["headers"].get("tracestate").is_none());

    // The log line carries kawal's span: the one the app saw as parent.
    let lines = proxy.wait_log_lines(3).await;
    assert_eq!(lines[0]["traceId"], trace.as_str());
    assert_eq!(lines[0]["spanId"], parent.as_str());
    assert_eq!(lines[1]["parentSpanId"], "00f067aa0ba902b7");
}

#[tokio::test]
async fn one_trace_id_from_inbound_through_the_app_to_the_outbound_upstream() {
    let upstream = Upstream::echo().await;
    let outbound = Proxy::start(&outbound_config(&[upstream.addr], "", "")).await;
    let out_addr = outbound.outbound();
    // The app copies the traceparent it received onto its own call, as the README asks.
    let app = Upstream::start(move |req: Request<Incoming>| async move {
        let tp = req.headers()["traceparent"].clone();
        let res = client()
            .get(format!("http://{out_addr}/downstream"))
            .header("host", "svc")
            .header("traceparent", tp)
            .send()
            .await
            .unwrap();
        Response::new(full(res.bytes().await.unwrap()))
    })
    .await;
    let inbound = Proxy::start(&inbound_config(app.addr, "")).await;
    let res = client()
        .get(format!("http://{}/start", inbound.inbound()))
        .send()
        .await
        .unwrap();
    let trace = res.headers()["x-trace-id"].to_str().unwrap().to_string();
    let echo: serde_json::Value = res.json().await.unwrap();
    let (upstream_trace, upstream_parent) = traceparent_of(&echo);
    assert_eq!(upstream_trace, trace);

    let inbound_line = &inbound.wait_log_lines(1).await[0];
    let outbound_line = &outbound.wait_log_lines(1).await[0];
    assert_eq!(inbound_line["traceId"], trace.as_str());
    assert_eq!(outbound_line["traceId"], trace.as_str());
    // The outbound hop is a child of the inbound hop's span. The upstream's
    // parent is the outbound attempt's own span, a child of the outbound
    // hop's span (tests/tracing.rs follows it through exported spans).
    assert_eq!(outbound_line["parentSpanId"], inbound_line["spanId"]);
    assert_ne!(outbound_line["spanId"], upstream_parent.as_str());
    assert_ne!(inbound_line["spanId"], upstream_parent.as_str());
}

#[tokio::test]
async fn access_log_lines_carry_the_contract_fields_and_no_secrets() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    client()
        .post(format!("http://{}/orders/42?token=s3cret", proxy.inbound()))
        .header("authorization", "Bearer s3cret")
        .body("hello")
        .send()
        .await
        .unwrap();
    let line = &proxy.wait_log_lines(1).await[0];
    for field in [
        "timestamp",
        "level",
        "serviceName",
        "traceId",
        "spanId",
        "direction",
        "method",
        "path",
        "statusCode",
        "duration",
        "upstream",
        "attempts",
        "bytesIn",
        "bytesOut",
    ] {
        assert!(line.get(field).is_some(), "missing {field} in {line}");
    }
    assert_eq!(line["serviceName"], "test-svc");
    assert_eq!(line["direction"], "inbound");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/orders/42");
    assert_eq!(line["statusCode"], 200);
    assert_eq!(line["upstream"], "app");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["bytesIn"], 5);
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(!line.to_string().contains("s3cret"), "{line}");
}

#[tokio::test]
async fn outbound_routes_by_host_by_absolute_uri_and_404s_unknown_hosts() {
    let upstream = Upstream::echo().await;
    let proxy = Proxy::start(&outbound_config(&[upstream.addr], "", "")).await;
    let out = proxy.outbound();

    // Host header.
    let res = client()
        .get(format!("http://{out}/by-host"))
        .header("host", "svc.test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echo["headers"]["host"], "svc.test");

    // As HTTP_PROXY: absolute-form URI, whose authority wins over a disagreeing Host.
    let raw = raw_exchange(
        out,
        b"GET http://svc:8080/abs?q=1 HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains(r#""uri":"/abs?q=1""#), "{raw}");
    assert!(raw.contains(r#""host":"svc:8080""#), "{raw}");

    // Through reqwest's proxy support, as an app would.
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{out}")).unwrap())
        .build()
        .unwrap();
    let res = via_proxy.get("http://svc/proxied").send().await.unwrap();
    assert_eq!(res.status(), 200);

    // Unknown host: JSON error naming it.
    let res = client()
        .get(format!("http://{out}/x"))
        .header("host", "nobody.test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-kawal-error"], "route_not_found");
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"], "route_not_found");
    assert!(err["message"].as_str().unwrap().contains("nobody.test"));
    assert_eq!(err["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn default_upstream_takes_unknown_hosts() {
    let upstream = Upstream::echo().await;
    let cfg = outbound_config(&[upstream.addr], "", "").replace(
        "[outbound]\nlisten = \"127.0.0.1:0\"",
        "[outbound]\nlisten = \"127.0.0.1:0\"\ndefault_upstream = \"svc\"",
    );
    let proxy = Proxy::start(&cfg).await;
    let res = client()
        .get(format!("http://{}/x", proxy.outbound()))
        .header("host", "anything.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn requests_spread_over_endpoints_and_names_resolve() {
    let a = Upstream::echo().await;
    let b = Upstream::echo().await;
    // One endpoint by IP, the other by DNS name.
    let cfg = outbound_config(&[a.addr], "", "").replace(
        &format!("\"{}\"]", a.addr),
        &format!("\"{}\", \"localhost:{}\"]", a.addr, b.addr.port()),
    );
    let proxy = Proxy::start(&cfg).await;
    for _ in 0..40 {
        let res = client()
            .get(format!("http://{}/", proxy.outbound()))
            .header("host", "svc")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(a.hits() + b.hits(), 40);
    assert!(a.hits() >= 5 && b.hits() >= 5, "a={} b={}", a.hits(), b.hits());
    let upstreams: serde_json::Value = client()
        .get(format!("http://{}/upstreams", proxy.admin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        upstreams["upstreams"][0]["endpoints"].as_array().unwrap().len() >= 2,
        "{upstreams}"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_hung_upstream_is_504() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(&outbound_config(&[dead], "", "")).await;
    let res = client()
        .get(format!("http://{}/", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_connect");

    let hung = Upstream::start(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        status(200, "late")
    })
    .await;
    let cfg = outbound_config(&[hung.addr], "", "").replace(
        "timeout = \"2s\"",
        "timeout = \"300ms\"\nconnect_timeout = \"200ms\"",
    );
    let proxy = Proxy::start(&cfg).await;
    let res = client()
        .get(format!("http://{}/", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_timeout");
    let line = &proxy.wait_log_lines(1).await[0];
    assert_eq!(line["error"], "upstream_timeout");
    assert_eq!(line["statusCode"], 504);
}

#[tokio::test]
async fn a_response_cut_short_by_the_upstream_is_never_completed_cleanly() {
    // A raw upstream that promises 100 bytes, sends 10 and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
        }
    });
    let proxy = Proxy::start(&outbound_config(&[addr], "", "")).await;
    let res = client()
        .get(format!("http://{}/", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.bytes().await.is_err(),
        "a truncated body must not end cleanly"
    );
    let line = &proxy.wait_log_lines(1).await[0];
    assert_eq!(line["error"], "response_aborted");
}

#[tokio::test]
async fn http2_upstreams_are_supported() {
    let upstream = Upstream::echo().await;
    let proxy = Proxy::start(&outbound_config(&[upstream.addr], "protocol = \"http2\"", "")).await;
    let res = client()
        .get(format!("http://{}/two", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");
}

#[tokio::test]
async fn keep_alive_connections_to_upstreams_are_pooled() {
    let upstream = Upstream::echo().await;
    let proxy = Proxy::start(&outbound_config(&[upstream.addr], "", "")).await;
    let c = client();
    for _ in 0..20 {
        let res = c
            .get(format!("http://{}/", proxy.outbound()))
            .header("host", "svc")
            .send()
            .await
            .unwrap();
        res.bytes().await.unwrap();
    }
    assert_eq!(upstream.hits(), 20);
    // The connection is back in the pool before the client has the last byte.
    assert_eq!(
        upstream.connections(),
        1,
        "connections for 20 sequential requests"
    );
}

#[tokio::test]
async fn bodiless_responses_free_the_connection_and_closing_ones_are_not_reused() {
    // 204: no body to read, the connection is reusable at once.
    let empty = Upstream::start(|_req: Request<Incoming>| async { status(204, "") }).await;
    // `Connection: close`: the upstream ends each connection after answering.
    let closing = Upstream::start(|_req: Request<Incoming>| async {
        let mut res = Response::new(full("bye"));
        res.headers_mut().insert("connection", "close".parse().unwrap());
        res
    })
    .await;
    for (upstream, code, conns) in [(&empty, 204, 1), (&closing, 200, 5)] {
        let proxy = Proxy::start(&inbound_config(upstream.addr, "")).await;
        for _ in 0..5 {
            let res = client()
                .get(format!("http://{}/", proxy.inbound()))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), code);
            res.bytes().await.unwrap();
        }
        assert_eq!(upstream.hits(), 5);
        assert_eq!(upstream.connections(), conns, "upstream answering {code}");
    }
}

#[tokio::test]
async fn streamed_response_reaches_the_client_before_the_upstream_finishes() {
    // The upstream sends one chunk, then waits for a signal that only the
    // client can trigger by having read that chunk: buffering would deadlock.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let mut rx = rx.clone();
        async move {
            let stream = futures_util::stream::once(async {
                Ok::<_, kawal::body::BoxError>(hyper::body::Frame::data(Bytes::from_static(b"first;")))
            })
            .chain(futures_util::stream::once(async move {
                let _ = rx.wait_for(|v| *v).await;
                Ok(hyper::body::Frame::data(Bytes::from_static(b"second")))
            }));
            Response::new(http_body_util::StreamBody::new(stream).boxed_unsync())
        }
    })
    .await;
    let proxy = Proxy::start(&outbound_config(&[upstream.addr], "", "")).await;
    let res = client()
        .get(format!("http://{}/", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first;");
    tx.send(true).unwrap();
    let second = stream.next().await.unwrap().unwrap();
    assert_eq!(&second[..], b"second");
}

#[tokio::test]
async fn a_response_still_streaming_counts_as_load_on_its_endpoint() {
    // `/hold` streams one chunk and then waits; `/quick` answers at once.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handler = move |req: Request<Incoming>| {
        let mut rx = rx.clone();
        async move {
            if req.uri().path() != "/hold" {
                return Response::new(full("quick"));
            }
            let stream = futures_util::stream::once(async {
                Ok::<_, kawal::body::BoxError>(hyper::body::Frame::data(Bytes::from_static(b"first;")))
            })
            .chain(futures_util::stream::once(async move {
                let _ = rx.wait_for(|v| *v).await;
                Ok(hyper::body::Frame::data(Bytes::from_static(b"done")))
            }));
            Response::new(http_body_util::StreamBody::new(stream).boxed_unsync())
        }
    };
    let one = Upstream::start(handler.clone()).await;
    let two = Upstream::start(handler).await;
    let proxy = Proxy::start(&outbound_config(&[one.addr, two.addr], "", "")).await;
    let url = |path: &str| format!("http://{}{path}", proxy.outbound());

    let held = client()
        .get(url("/hold"))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    let mut held = held.bytes_stream();
    assert_eq!(&held.next().await.unwrap().unwrap()[..], b"first;");
    // With two endpoints, power of two choices compares both: every quick
    // request goes to the endpoint that is not busy streaming.
    for _ in 0..10 {
        let res = client()
            .get(url("/quick"))
            .header("host", "svc")
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "quick");
    }
    let mut hits = [one.hits(), two.hits()];
    hits.sort();
    assert_eq!(hits, [1, 10], "the streaming endpoint got quick requests too");
    tx.send(true).unwrap();
    assert_eq!(&held.next().await.unwrap().unwrap()[..], b"done");
}
