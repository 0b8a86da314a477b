//! Untrusted bytes on a listener: smuggling, size caps, slow clients, paths.
//! Each case gets the right status and a closed connection, and nothing
//! reaches the app.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(extra: &str) -> (Upstream, Proxy) {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, extra)).await;
    (app, proxy)
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"))
}

#[tokio::test]
async fn smuggling_attempts_are_rejected_with_400_and_never_reach_the_app() {
    let (app, proxy) = setup("").await;
    let cases: &[&str] = &[
        // Two different Content-Lengths.
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        // Obfuscated Transfer-Encoding.
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        // No Host, two Hosts.
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        // Paths that try to escape or hide a separator.
        "GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for case in cases {
        let raw = raw_exchange(proxy.inbound(), case.as_bytes()).await;
        assert_eq!(status_of(&raw), 400, "{case:?} → {raw}");
        assert_eq!(
            raw.matches("HTTP/1.1 ").count(),
            1,
            "a second response was parsed from leftovers: {raw}"
        );
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_the_connection_closed() {
    // hyper drops the Content-Length (RFC 9112 §6.3: TE overrides it), so the
    // hidden second request is never parsed: the connection closes after one
    // response, and the app sees only the outer request.
    let (app, proxy) = setup("").await;
    let raw = raw_exchange(
        proxy.inbound(),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{raw}");
    assert!(raw.contains(r#""uri":"/""#), "{raw}");
    assert!(!raw.contains("content-length\":\"4"), "{raw}");
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn connect_is_refused() {
    let (app, proxy) = setup("").await;
    let raw = raw_exchange(
        proxy.inbound(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 405, "{raw}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn dot_segments_are_resolved_to_one_path_before_forwarding() {
    let (_app, proxy) = setup("").await;
    let raw = raw_exchange(
        proxy.inbound(),
        b"GET //orders/./x/../%2e%2e/orders//42?a=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert!(raw.contains(r#""uri":"/orders/42?a=1""#), "{raw}");
    assert_eq!(proxy.wait_log_lines(1).await[0]["path"], "/orders/42");
}

#[tokio::test]
async fn oversized_heads_uris_and_bodies_get_431_414_413() {
    // An app that counts only requests whose body arrived whole.
    let complete = Arc::new(AtomicUsize::new(0));
    let counter = complete.clone();
    let app = Upstream::start(move |req: http::Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            if req.into_body().collect().await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            status(200, "ok")
        }
    })
    .await;
    let limits = "[limits]\nmax_request_head = \"16KiB\"\nmax_header = \"1KiB\"\nmax_uri = \"256B\"\nmax_request_body = \"1KiB\"";
    let proxy = Proxy::start(&inbound_config(app.addr, limits)).await;
    let big_header = format!("GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n", "a".repeat(2000));
    assert_eq!(
        status_of(&raw_exchange(proxy.inbound(), big_header.as_bytes()).await),
        431
    );

    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    assert_eq!(
        status_of(&raw_exchange(proxy.inbound(), huge_head.as_bytes()).await),
        431
    );

    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(300));
    assert_eq!(
        status_of(&raw_exchange(proxy.inbound(), long_uri.as_bytes()).await),
        414
    );

    // Declared too large: refused before any byte is forwarded.
    let declared = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(
        status_of(&raw_exchange(proxy.inbound(), declared.as_bytes()).await),
        413
    );

    // Chunked, found too large while streaming: 413, and the app never sees a complete request.
    let chunk = "a".repeat(800);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let raw = raw_exchange(proxy.inbound(), chunked.as_bytes()).await;
    assert_eq!(status_of(&raw), 413, "{raw}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        complete.load(Ordering::SeqCst),
        0,
        "the app completed a request it should never have seen whole"
    );
}

#[tokio::test]
async fn a_client_that_stalls_its_head_is_disconnected() {
    let (app, proxy) = setup("[limits]\nrequest_head_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "connection was not closed");
    assert_eq!(app.hits(), 0);
}

/// The head timeout runs only while the connection waits for a head: not
/// while the app takes longer than it to answer, and again after the
/// response, where it is the idle keep-alive timeout.
#[tokio::test]
async fn the_head_timeout_spares_a_slow_response_and_closes_the_idle_connection_after_it() {
    let app = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        status(200, "slow")
    })
    .await;
    let proxy = Proxy::start(&inbound_config(
        app.addr,
        "[limits]\nrequest_head_timeout = \"300ms\"",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    // The response, then the close once the connection idled past 300 ms.
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the idle keep-alive connection was not closed");
    let raw = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert!(raw.ends_with("slow"), "{raw}");
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_half_an_h2_preface_is_disconnected() {
    let (app, proxy) = setup("[limits]\nrequest_head_timeout = \"300ms\"").await;
    // Before the first bytes the protocol is not known yet (HTTP/1 or h2c):
    // the head timeout must hold from the moment the connection is accepted.
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
        s.write_all(first).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "connection sending {first:?} was not closed");
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn past_max_connections_new_clients_wait_until_one_leaves() {
    let (app, proxy) = setup("[limits]\nmax_connections = 1").await;
    // The one connection allowed, kept open by keep-alive.
    let mut first = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
    first
        .write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");

    // A second client connects (the kernel's backlog) but is not served...
    let second = tokio::spawn(raw_exchange(
        proxy.inbound(),
        b"GET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.hits(), 1, "served past max_connections");
    // ...until the first one leaves.
    drop(first);
    let raw = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_408_and_the_app_no_complete_request() {
    let (_app, proxy) = setup("[limits]\nbody_idle_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&raw), 408, "{raw}");
}

#[tokio::test]
async fn h2_authority_and_host_must_agree() {
    let (app, proxy) = setup("").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let res = h2
        .get(format!("http://{}/", proxy.inbound()))
        .header("host", "other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn h2_requests_meet_the_same_size_limits() {
    let limits = "[limits]\nmax_header = \"1KiB\"\nmax_uri = \"256B\"\nmax_request_body = \"1KiB\"";
    let (app, proxy) = setup(limits).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let base = format!("http://{}", proxy.inbound());
    let cases = [
        (h2.get(format!("{base}/")).header("x-big", "a".repeat(2000)), 431),
        (h2.get(format!("{base}/{}", "u".repeat(300))), 414),
        (h2.post(format!("{base}/")).body(vec![b'a'; 5000]), 413),
        (
            h2.get(format!("{base}/fits")).header("x-ok", "a".repeat(500)),
            200,
        ),
    ];
    for (req, want) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), want);
    }
    assert_eq!(app.hits(), 1);
}
