//! A WebSocket-speaking app and a raw client for it: the handshake, echoes
//! over the switched connection, and a clean close.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{full, Upstream};

/// An app that accepts WebSocket handshakes and then echoes every chunk back
/// prefixed with "echo:"; any other request is answered 200 "plain". A
/// request to /rogue gets a 101 although it asked for no upgrade.
pub async fn app() -> Upstream {
    Upstream::start(|mut req: Request<Incoming>| async move {
        let asked = req.headers().get(header::UPGRADE).is_some();
        if !asked && req.uri().path() != "/rogue" {
            return Response::new(full("plain"));
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                let reply = [b"echo:", &buf[..n]].concat();
                if io.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
        let mut res = Response::new(full(""));
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::CONNECTION, "upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(
            "sec-websocket-accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
        );
        res
    })
    .await
}

/// Sends a WebSocket handshake for `host` and reads the response head.
pub async fn handshake(addr: SocketAddr, host: &str, path: &str) -> (BufReader<TcpStream>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .expect("response head in time")
            .unwrap();
        head.push_str(&line.to_ascii_lowercase());
        if n == 0 || line == "\r\n" {
            return (r, head);
        }
    }
}

/// Writes `msg` on the switched connection and reads the echo.
pub async fn round_trip(r: &mut BufReader<TcpStream>, msg: &str) -> String {
    r.get_mut().write_all(msg.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 5 + msg.len()];
    tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    String::from_utf8(buf).unwrap()
}

/// Handshake through `addr`, two messages each way, then a clean close.
pub async fn assert_tunnel(addr: SocketAddr, host: &str) {
    let (mut r, head) = handshake(addr, host, "/chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(head.contains("sec-websocket-accept: "), "{head}");
    assert_eq!(round_trip(&mut r, "hello").await, "echo:hello");
    assert_eq!(round_trip(&mut r, "world").await, "echo:world");
    // Our close reaches the app, whose close comes back.
    r.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut rest))
        .await
        .expect("close in time")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
