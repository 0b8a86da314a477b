//! The accept loop shared by every listener, with graceful shutdown.
//!
//! Each connection is served by hyper-util's auto builder (HTTP/1.1, or
//! HTTP/2 with prior knowledge), configured with the listener limits: the
//! request head size and header count, the head read timeout (which is also
//! the idle keep-alive timeout, since hyper starts it when it waits for the
//! next head), HTTP/2 stream and header-list caps.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::BoxBody;
use crate::config::Limits;

/// An HTTP/1.1 + h2c connection builder enforcing `limits`.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout.0)
        .max_buf_size(limits.max_request_head.0.max(8192) as usize)
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_request_head.0.min(u32::MAX as u64) as u32)
        // A peer that resets streams as fast as it opens them is cut off.
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.request_head_timeout.0);
    b
}

/// Serves connections from `listener` until `shutdown` fires, then lets the
/// in-flight ones finish for up to `grace`.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    open: Gauge,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        let svc = service_fn(move |req| {
            let fut = h(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            open.dec();
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(listener = name, grace = ?grace, "grace period over, closing remaining connections");
        }
    }
}
