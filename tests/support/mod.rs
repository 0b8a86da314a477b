//! Test harness: real upstream servers on 127.0.0.1:0, kawal started in
//! process with an in-memory access log, raw-socket helpers for hostile input.
#![allow(dead_code)]

pub mod openmetrics;
pub mod otlp;
pub mod pki;
pub mod redis;
pub mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use kawal::body::{full, BoxBody};

/// A real HTTP server (HTTP/1.1 and h2c) standing in for an app or upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Serves every request with `f`.
    pub async fn start<F, Fut>(f: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, f)
    }

    /// Serves on an already bound listener (to come back on a known port).
    pub fn serve<F, Fut>(listener: TcpListener, f: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (h, c, o) = (hits.clone(), connections.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let f = f.clone();
                let h = h.clone();
                let o = o.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let fut = f(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            hits,
            connections,
            open,
            task,
        }
    }

    /// An upstream answering 200 with a JSON echo of the request head
    /// (method, uri, headers) and the request body's length.
    pub async fn echo() -> Upstream {
        Self::start(|req: Request<Incoming>| async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let json = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "bodyLen": body.len(),
            });
            Response::new(full(json.to_string()))
        })
        .await
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kawal started in process, with its access log captured.
pub struct Proxy {
    pub kawal: Option<kawal::Kawal>,
    pub log: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    /// Starts kawal from TOML (use 127.0.0.1:0 listeners).
    pub async fn start(toml: &str) -> Proxy {
        let cfg = kawal::config::Config::from_toml_str(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let kawal = kawal::start(cfg, kawal::log::Sink::Memory(log.clone()))
            .await
            .unwrap();
        Proxy {
            kawal: Some(kawal),
            log,
        }
    }

    pub fn inbound(&self) -> SocketAddr {
        self.kawal.as_ref().unwrap().inbound.unwrap()
    }

    pub fn outbound(&self) -> SocketAddr {
        self.kawal.as_ref().unwrap().outbound.unwrap()
    }

    pub fn admin(&self) -> SocketAddr {
        self.kawal.as_ref().unwrap().admin
    }

    /// Access log lines so far, parsed.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let buf = self.log.lock().unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits (bounded) until `n` access lines were written; they are written
    /// when the response body ends, which may be just after the client saw it.
    pub async fn wait_log_lines(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let lines = self.log_lines();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lines = self.log_lines();
        panic!("expected {n} access log lines, got {}: {lines:?}", lines.len());
    }

    /// The value of one series on `/metrics` (e.g. `kawal_breaker_state{upstream="svc",state="open"}`).
    pub async fn metric(&self, series: &str) -> f64 {
        let (value, text) = self.metric_opt(series).await;
        value.unwrap_or_else(|| panic!("no {series} in {text}"))
    }

    /// The value of one series, `None` while it does not exist (a labelled
    /// series appears at its first use); and the whole scrape.
    pub async fn metric_opt(&self, series: &str) -> (Option<f64>, String) {
        let text = client()
            .get(format!("http://{}/metrics", self.admin()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok());
        (value, text)
    }

    pub async fn shutdown(mut self) {
        if let Some(k) = self.kawal.take() {
            k.shutdown().await;
        }
    }
}

/// Config with an inbound listener in front of `app`.
pub fn inbound_config(app: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[service]
name = "test-svc"
shutdown_grace = "5s"
drain_delay = "100ms"
[admin]
listen = "127.0.0.1:0"
[inbound]
listen = "127.0.0.1:0"
app = "{app}"
timeout = "2s"
{extra}
"#
    )
}

/// Config with an outbound listener routing host `svc` to `endpoints`.
pub fn outbound_config(endpoints: &[SocketAddr], upstream_extra: &str, extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[service]
name = "test-svc"
shutdown_grace = "5s"
drain_delay = "100ms"
[admin]
listen = "127.0.0.1:0"
[outbound]
listen = "127.0.0.1:0"
[upstreams.svc]
hosts = ["svc", "svc.test"]
endpoints = [{}]
timeout = "2s"
{upstream_extra}
{extra}
"#,
        eps.join(", ")
    )
}

/// A plain HTTP/1.1 client without connection reuse surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Writes raw bytes, reads until the peer closes (bounded), returns the text.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A body of `n` deterministic bytes.
pub fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

/// A JSON response with status.
pub fn status(code: u16, body: &'static str) -> Response<BoxBody> {
    let mut res = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
    res
}

/// The (trace id, parent id) of the W3C traceparent an echo upstream received.
pub fn traceparent_of(echo: &serde_json::Value) -> (String, String) {
    let tp = echo["headers"]["traceparent"]
        .as_str()
        .expect("traceparent forwarded");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}
