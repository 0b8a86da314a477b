//! Findings of the adversarial trial (issue 19), one test each, on real
//! sockets: every variant here differs from the example in the report.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::json;
use support::pki::Pki;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"))
}

/// The JSON body of a raw HTTP/1.1 response.
fn body_of(raw: &str) -> serde_json::Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

/// An inbound kawal with optional JWTs and one claim route on
/// `GET /orders/reports/*`, and a key to sign tokens with.
async fn claim_route_setup(tag: &str) -> (Pki, KeyPair, Upstream, Proxy) {
    let pki = Pki::new(tag);
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}]});
    std::fs::write(pki.path("jwks.json"), jwks.to_string()).unwrap();
    let app = Upstream::echo().await;
    let extra = format!(
        r#"
[inbound.jwt]
issuer = "auth-service"
audiences = ["order-service"]
jwks_file = "{}"
algorithms = ["ES256"]
required = false

[[inbound.jwt.routes]]
methods = ["GET"]
paths = ["/orders/reports/*"]
require_claims = {{ role = "auditor" }}
"#,
        pki.path("jwks.json")
    );
    let proxy = Proxy::start(&inbound_config(app.addr, &extra)).await;
    (pki, key, app, proxy)
}

fn auditor_token(key: &KeyPair) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = json!({"sub": "u1", "iss": "auth-service", "aud": "order-service",
        "iat": now - 10, "exp": now + 300, "role": "auditor"});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&key.serialize_der())).unwrap()
}

#[tokio::test]
async fn claim_routes_hold_for_every_spelling_of_their_path_and_method() {
    let (_pki, key, app, proxy) = claim_route_setup("claims").await;
    let addr = proxy.inbound();
    // Without a token: another escaped letter, an escaped dash-free mix,
    // HEAD, and mixed-case methods never reach the app.
    let refused = [
        ("GET /orders/rep%6Frts/q2 HTTP/1.1", 401),
        ("GET /orders/%72%65%70%6f%72%74%73/ HTTP/1.1", 401),
        ("GET /orders/./x/../reports/q3 HTTP/1.1", 401),
        ("HEAD /orders/reports/q4 HTTP/1.1", 401),
        ("HEAD /orders/r%65ports/q4 HTTP/1.1", 401),
        ("Get /orders/reports/q5 HTTP/1.1", 400),
        ("gEt /orders/other HTTP/1.1", 400),
        ("head /orders/reports/q6 HTTP/1.1", 400),
    ];
    for (line, want) in refused {
        let raw = raw_exchange(
            addr,
            format!("{line}\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&raw), want, "{line} → {raw}");
    }
    assert_eq!(app.hits(), 0, "a request slipped past the claim route");

    // Outside the route no token is needed; inside it, a good token passes
    // and the app sees the one canonical path.
    let raw = raw_exchange(
        addr,
        b"GET /orders/other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    let token = auditor_token(&key);
    let req = format!(
        "GET /orders/rep%6Frts/caf%c3%a9?x=%6F HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(addr, req.as_bytes()).await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    // The query is not the path's business: left as sent.
    assert_eq!(body_of(&raw)["uri"], "/orders/reports/caf%C3%A9?x=%6F");
    assert_eq!(app.hits(), 2);
    let lines = proxy.wait_log_lines(10).await;
    assert_eq!(lines[9]["path"], "/orders/reports/caf%C3%A9");
}

#[tokio::test]
async fn identity_headers_in_underscore_spelling_never_reach_the_app() {
    let forged = "GET /a HTTP/1.1\r\nHost: a\r\nx_kawal_peer_identity: spiffe://evil/sa/ops\r\n\
                  X-Kawal_User: root\r\nx_tenant: acme\r\nx-plain: kept\r\nConnection: close\r\n\r\n";
    // Default (drop): every underscore header goes.
    let (app, proxy) = {
        let app = Upstream::echo().await;
        let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
        (app, proxy)
    };
    let raw = raw_exchange(proxy.inbound(), forged.as_bytes()).await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    let headers = &body_of(&raw)["headers"];
    for gone in [
        "x_kawal_peer_identity",
        "x-kawal_user",
        "x_tenant",
        "x-kawal-user",
        "x-kawal-peer-identity",
    ] {
        assert!(headers.get(gone).is_none(), "{gone} reached the app: {headers}");
    }
    assert_eq!(headers["x-plain"], "kept");
    drop((app, proxy));

    // allow: other underscore headers pass, kawal's own names never.
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "headers_with_underscores = \"allow\"")).await;
    let raw = raw_exchange(proxy.inbound(), forged.as_bytes()).await;
    let headers = &body_of(&raw)["headers"];
    assert_eq!(headers["x_tenant"], "acme");
    assert!(headers.get("x_kawal_peer_identity").is_none(), "{headers}");
    assert!(headers.get("x-kawal_user").is_none(), "{headers}");

    // reject: 400, and nothing reaches the app.
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "headers_with_underscores = \"reject\"")).await;
    let raw = raw_exchange(proxy.inbound(), forged.as_bytes()).await;
    assert_eq!(status_of(&raw), 400, "{raw}");
    assert_eq!(app.hits(), 0);
}

/// An app speaking raw HTTP/1.1: answers each request head it reads with
/// `response`, on a connection it keeps open.
async fn raw_app(response: &'static [u8]) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_response_with_length_and_chunked_reaches_the_client_whole() {
    // The stale length (3) is shorter than the chunked body (17 bytes).
    let (app, _task) = raw_app(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          8\r\nabcdefgh\r\n9\r\nijklmnopq\r\n0\r\n\r\n",
    )
    .await;
    let proxy = Proxy::start(&inbound_config(app, "")).await;
    let res = client()
        .get(format!("http://{}/x", proxy.inbound()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("content-length").is_none_or(|v| v == "17"),
        "{res:?}"
    );
    assert_eq!(res.text().await.unwrap(), "abcdefghijklmnopq");
}

#[tokio::test]
async fn the_app_sees_the_canonical_content_length() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let raw = raw_exchange(
        proxy.inbound(),
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0007\r\nConnection: close\r\n\r\n1234567",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    let echo = body_of(&raw);
    assert_eq!(echo["headers"]["content-length"], "7");
    assert_eq!(echo["bodyLen"], 7);
}

#[tokio::test]
async fn tracestate_is_bounded_and_cleaned_before_the_app() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    // 35 members, the third one invalid (upper-case key), one repeated key.
    let mut members: Vec<String> = (0..34).map(|i| format!("v{i}=s{i}")).collect();
    members.insert(2, "Bad=1".into());
    members.insert(5, "v0=again".into());
    let res = client()
        .get(format!("http://{}/t", proxy.inbound()))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("tracestate", members.join(","))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = res.json().await.unwrap();
    let got = echo["headers"]["tracestate"].as_str().unwrap();
    let want: Vec<String> = (0..32).map(|i| format!("v{i}=s{i}")).collect();
    assert_eq!(got, want.join(","));
}

/// An outbound kawal whose breaker would open after 2 failures, in front of
/// an upstream that reads the whole body before it answers.
async fn breaker_setup(upstream_timeout: &str) -> (Upstream, Proxy) {
    let app = Upstream::echo().await;
    let extra = "[upstreams.svc.retry]\nattempts = 1\n[upstreams.svc.breaker]\nconsecutive_failures = 2\nopen_for = \"60s\"";
    let toml = outbound_config(&[app.addr], extra, "").replace(
        "timeout = \"2s\"",
        &format!("timeout = \"{upstream_timeout}\"\nconnect_timeout = \"100ms\""),
    );
    (app, Proxy::start(&toml).await)
}

async fn assert_upstream_unblamed(proxy: &Proxy, app: &Upstream) {
    let open = r#"kawal_breaker_state{upstream="svc",state="open"}"#;
    assert_eq!(proxy.metric(open).await, 0.0, "breaker opened");
    // No 5xx counted against the upstream, whatever the code.
    let (_, text) = proxy.metric_opt(open).await;
    let five = r#"kawal_requests_total{direction="outbound",upstream="svc",code="5"#;
    let blamed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(five) && !l.ends_with(" 0"))
        .collect();
    assert!(blamed.is_empty(), "{blamed:?}");
    let before = app.hits();
    let res = client()
        .get(format!("http://{}/ok", proxy.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the upstream still gets traffic");
    assert_eq!(app.hits(), before + 1);
}

#[tokio::test]
async fn a_malformed_request_body_is_the_clients_fault_not_the_upstreams() {
    let (app, proxy) = breaker_setup("2s").await;
    let cases: [&[u8]; 3] = [
        // A signed chunk size.
        b"POST /u HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n-5\r\nhello\r\n0\r\n\r\n",
        // A chunk not followed by CRLF.
        b"POST /u HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\nwxyzQQ\r\n0\r\n\r\n",
        // A chunk size line ended by a stray CR.
        b"POST /u HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\r\nwxyz\r\n0\r\n\r\n",
    ];
    for case in cases {
        let raw = raw_exchange(proxy.outbound(), case).await;
        // The client may see its 400, or nothing if hyper closed first; never a 5xx.
        if !raw.is_empty() {
            assert_eq!(status_of(&raw), 400, "{}: {raw}", String::from_utf8_lossy(case));
            assert!(raw.contains("x-kawal-error: client_body"), "{raw}");
        }
    }
    let lines = proxy.wait_log_lines(3).await;
    for line in &lines[..3] {
        assert_eq!(line["error"], "client_body", "{line}");
        assert_eq!(line["statusCode"], 400, "{line}");
    }
    assert_upstream_unblamed(&proxy, &app).await;
}

#[tokio::test]
async fn a_slow_upload_past_the_upstream_deadline_is_408_and_no_upstream_failure() {
    let (app, proxy) = breaker_setup("300ms").await;
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(proxy.outbound()).await.unwrap();
        s.write_all(b"PUT /slow HTTP/1.1\r\nHost: svc\r\nContent-Length: 40\r\n\r\n")
            .await
            .unwrap();
        // A byte every 100ms: never idle for long, never done in 300ms.
        let mut out = Vec::new();
        for _ in 0..40 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let raw = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&raw), 408, "{raw}");
    }
    assert_upstream_unblamed(&proxy, &app).await;
}

/// Reads until the peer closes (bounded by `within`); `None` if it did not.
async fn read_until_eof(s: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_is_closed_within_the_idle_timeout() {
    let app = Upstream::echo().await;
    let limits = "[limits]\nrequest_head_timeout = \"300ms\"\nmax_connections = 2";
    let proxy = Proxy::start(&inbound_config(app.addr, limits)).await;
    // Both slots taken by h2c connections that open no stream (one sends a
    // PING now and then, which is no request).
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        idle.push(s);
    }
    idle[1]
        .write_all(b"\0\0\x08\x06\0\0\0\0\0pingpong")
        .await
        .unwrap();
    for s in &mut idle {
        let got = read_until_eof(s, Duration::from_secs(10))
            .await
            .expect("the idle connection was never closed");
        // Frames: type byte at offset 3 of each 9-byte header; look for GOAWAY (7).
        let mut at = 0;
        let mut goaway = false;
        while at + 9 <= got.len() {
            let len = usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
            goaway |= got[at + 3] == 7;
            at += 9 + len;
        }
        assert!(goaway, "closed without a GOAWAY: {got:?}");
    }
    // The slots are free again.
    let res = client()
        .get(format!("http://{}/after", proxy.inbound()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn connections_older_than_max_connection_age_are_closed_between_requests() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(
        app.addr,
        "[limits]\nmax_connection_age = \"300ms\"",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.inbound()).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then closed once it is older than 300ms.
    let rest = read_until_eof(&mut s, Duration::from_secs(10))
        .await
        .expect("never closed");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_with_its_app_connection() {
    // The app streams a large response until its write fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = s.read(&mut head).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'z'; 64 * 1024];
        while s.write_all(&chunk).await.is_ok() {}
        let _ = closed_tx.send(());
    });
    let limits = "[limits]\nsend_timeout = \"300ms\"\nbody_idle_timeout = \"60s\"";
    let proxy = Proxy::start(&inbound_config(app, limits)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(proxy.inbound()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Never read: the app's connection must be closed all the same.
    tokio::time::timeout(Duration::from_secs(20), closed_rx)
        .await
        .expect("the app connection stayed pinned by a client that reads nothing")
        .unwrap();
    let lines = proxy.wait_log_lines(1).await;
    assert!(lines[0]["error"].is_string(), "{}", lines[0]);
}

/// Found by the `head` fuzz target: an absolute-form target with no path
/// but a fragment reached routing, rules and the log with an empty path.
#[tokio::test]
async fn an_absolute_form_target_without_a_path_is_the_root_everywhere() {
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(app.addr, "")).await;
    let raw = raw_exchange(
        proxy.inbound(),
        b"GET http://a#top HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert_eq!(body_of(&raw)["uri"], "/");
    let lines = proxy.wait_log_lines(1).await;
    assert_eq!(lines[0]["path"], "/", "{}", lines[0]);
}
