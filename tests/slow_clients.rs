//! Clients that stall or leave (issue 19): an HTTP/2 client that grants no
//! flow-control window is cut off with the app connections its streams
//! held, a slow app is not mistaken for one, and a client that leaves before
//! the response head still gets its access line.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Waits (bounded by `within`) until `done()`; whether it happened.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// An h2c connection to kawal; its connection task is spawned.
async fn h2_client(
    addr: std::net::SocketAddr,
    window: Option<u32>,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut builder = h2::client::Builder::new();
    if let Some(window) = window {
        builder.initial_window_size(window);
    }
    let (send, conn) = builder.handshake::<_, Bytes>(tcp).await.unwrap();
    (send, tokio::spawn(async move { drop(conn.await) }))
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://a{path}")).body(()).unwrap()
}

#[tokio::test]
async fn an_h2_client_granting_no_window_is_cut_off_with_the_app_connections_it_held() {
    // 512 KiB per response: far more than the socket buffers between the
    // app and kawal, so each app connection stays busy until kawal lets go.
    let app =
        Upstream::start(|_req: Request<Incoming>| async move { Response::new(full(pattern(512 * 1024))) })
            .await;
    let limits = "[limits]\nsend_timeout = \"1s\"";
    let proxy = Proxy::start(&inbound_config(app.addr, limits)).await;

    let (mut send, conn) = h2_client(proxy.inbound(), Some(0)).await;
    let mut pending = Vec::new();
    for i in 0..20 {
        send = send.ready().await.unwrap();
        let (res, _) = send.send_request(get(&format!("/big/{i}")), true).unwrap();
        pending.push(res);
    }
    // Every head arrives (headers need no window); the bodies are never read.
    let mut bodies = Vec::new();
    for res in pending {
        let res = res.await.unwrap();
        assert_eq!(res.status(), 200);
        bodies.push(res.into_body());
    }
    assert_eq!(app.connections(), 20, "one app connection per stream");

    assert!(
        eventually(Duration::from_secs(20), || app.open_connections() == 0).await,
        "{} app connections still pinned by a client that grants no window",
        app.open_connections()
    );
    // The client's connection was closed by kawal, not by the client.
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the stalled client connection is still open")
        .unwrap();
    let cut = r#"kawal_send_timeouts_total{listener="inbound",reason="window_stalled"}"#;
    assert_eq!(proxy.metric(cut).await, 1.0);
    let lines = proxy.wait_log_lines(20).await;
    assert!(lines
        .iter()
        .all(|l| l["statusCode"] == 200 && l["error"] == "response_aborted"));
    drop(bodies);
}

#[tokio::test]
async fn a_slow_app_to_a_reading_h2_client_is_not_cut_off() {
    // Pauses of twice the send timeout between chunks: the response waits
    // for the app, not for the client.
    let app = Upstream::start(|_req: Request<Incoming>| async move {
        let chunks = futures_util::stream::unfold(0u8, |n| async move {
            if n == 3 {
                return None;
            }
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Some((
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(pattern(100_000))),
                n + 1,
            ))
        });
        Response::new(
            http_body_util::StreamBody::new(chunks)
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    })
    .await;
    let limits = "[limits]\nsend_timeout = \"1s\"";
    let proxy = Proxy::start(&inbound_config(app.addr, limits)).await;

    let (send, conn) = h2_client(proxy.inbound(), None).await;
    let mut send = send.ready().await.unwrap();
    let (res, _) = send.send_request(get("/slow"), true).unwrap();
    let res = res.await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut got = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the response was cut off");
        got += chunk.len();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    assert_eq!(got, 300_000);
    let lines = proxy.wait_log_lines(1).await;
    assert!(lines[0]["error"].is_null(), "{}", lines[0]);
    let (cut, _) = proxy
        .metric_opt(r#"kawal_send_timeouts_total{listener="inbound",reason="window_stalled"}"#)
        .await;
    assert_eq!(cut, None);
    assert!(!conn.is_finished(), "the client connection was closed");
}

/// An app that answers `/slow` after 1.5 s, and tells when a request came.
async fn slow_app() -> (Upstream, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let app = Upstream::start(move |_req: Request<Incoming>| {
        let _ = arrived_tx.send(());
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Response::new(full("late"))
        }
    })
    .await;
    (app, arrived)
}

#[tokio::test]
async fn a_client_gone_before_the_response_head_gets_a_499_access_line() {
    let (app, mut arrived) = slow_app().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let mut s = TcpStream::connect(proxy.inbound()).await.unwrap();
    s.write_all(
        b"POST /orders/7?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nUser-Agent: leaver\r\n\r\nhello",
    )
    .await
    .unwrap();
    // The request reached the app: the client leaves before its answer.
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request never reached the app");
    drop(s);
    let lines = proxy.wait_log_lines(1).await;
    let line = &lines[0];
    assert_eq!(line["statusCode"], 499, "{line}");
    assert_eq!(line["error"], "client_gone", "{line}");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/orders/7");
    assert_eq!(line["userAgent"], "leaver");
    assert_eq!(line["upstream"], "app");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["bytesIn"], 5);
    assert_eq!(line["bytesOut"], 0);
    // Once: nothing more when the app's late answer would have come.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(proxy.log_lines().len(), 1, "{:?}", proxy.log_lines());
    let (count, text) = proxy
        .metric_opt(r#"kawal_requests_total{direction="inbound",upstream="app",code="499"}"#)
        .await;
    assert_eq!(count, Some(1.0), "{text}");
}

#[tokio::test]
async fn an_h2_stream_reset_before_the_response_head_gets_a_499_access_line() {
    let (app, mut arrived) = slow_app().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let (send, _conn) = h2_client(proxy.inbound(), None).await;
    let mut send = send.ready().await.unwrap();
    let (res, _) = send.send_request(get("/reports/q3"), true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request never reached the app");
    // Dropping the response future resets the stream (RST_STREAM CANCEL);
    // the connection stays open.
    drop(res);
    let lines = proxy.wait_log_lines(1).await;
    assert_eq!(lines[0]["statusCode"], 499, "{}", lines[0]);
    assert_eq!(lines[0]["error"], "client_gone");
    assert_eq!(lines[0]["path"], "/reports/q3");
    assert_eq!(lines[0]["protocol"], "HTTP/2");
}
