//! WebSocket handshakes cross kawal in both directions: the 101 comes back
//! with its upgrade headers and then bytes flow both ways until a side closes.

mod support;

use std::time::Duration;

use support::websocket::{app, assert_tunnel};
use support::*;

#[tokio::test]
async fn websocket_through_inbound() {
    let app = app().await;
    let p = Proxy::start(&inbound_config(app.addr, "")).await;
    assert_tunnel(p.inbound(), "app").await;
    let line = &p.wait_log_lines(1).await[0];
    assert_eq!(line["statusCode"], 101, "{line}");
    // The same listener still serves plain requests.
    assert_eq!(get(&p, "/").await.text().await.unwrap(), "plain");
    p.shutdown().await;
}

#[tokio::test]
async fn websocket_through_outbound() {
    let app = app().await;
    let p = Proxy::start(&outbound_config(&[app.addr], "", "")).await;
    assert_tunnel(p.outbound(), "svc").await;
    p.shutdown().await;
}

/// A switched connection waits for no request head: a tunnel quiet for
/// longer than the head timeout stays open.
#[tokio::test]
async fn a_quiet_tunnel_outlives_the_head_timeout() {
    let app = app().await;
    let p = Proxy::start(&inbound_config(
        app.addr,
        "[limits]\nrequest_head_timeout = \"200ms\"",
    ))
    .await;
    let (mut r, head) = support::websocket::handshake(p.inbound(), "app", "/").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        support::websocket::round_trip(&mut r, "still there").await,
        "echo:still there"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn unasked_switch_is_a_502() {
    let app = app().await;
    let p = Proxy::start(&inbound_config(app.addr, "")).await;
    let res = get(&p, "/rogue").await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_reset");
    // The connection the app switched is not reused for the next request.
    assert_eq!(get(&p, "/").await.text().await.unwrap(), "plain");
    p.shutdown().await;
}

async fn get(p: &Proxy, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://{}{path}", p.inbound()))
        .send()
        .await
        .unwrap()
}
