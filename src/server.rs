//! The accept loop shared by every listener, with graceful shutdown.
//!
//! Each connection is served by hyper-util's auto builder (HTTP/1.1, or
//! HTTP/2 with prior knowledge), configured with the listener limits: the
//! request head size and header count, HTTP/2 stream and header-list caps.
//! The request head timeout (also the idle keep-alive timeout) is kawal's
//! own, in [`head`]: one timer per connection rather than hyper's one per
//! request; it also cuts off clients that take nothing of their responses
//! (`send_timeout`), with what it knows of the requests in [`inflight`].

mod head;
mod inflight;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify, Semaphore};

use crate::body::BoxError;
use crate::config::Limits;
use crate::metrics::ConnMetrics;
use crate::tls::{ServerTls, TlsConn};
use head::HeadTimer;
pub use inflight::OpenRequest;
use inflight::RequestCounts;

/// How a listener speaks HTTP: hyper-util's builder and the head timeout.
#[derive(Clone)]
pub struct Http {
    builder: auto::Builder<TokioExecutor>,
    head_timeout: Duration,
    send_timeout: Duration,
    max_age: Option<Duration>,
    max_connections: usize,
}

/// An HTTP/1.1 + h2c connection builder enforcing `limits`.
pub fn http_builder(limits: &Limits) -> Http {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Ours instead, see `head`.
        .header_read_timeout(None)
        // Headroom over the configured limits: hyper's own refusal is a bare
        // 431 with no log line, so kawal's checks (JSON error, access line)
        // answer first and hyper only backstops.
        .max_buf_size((2 * limits.max_request_head.0).max(8192) as usize)
        .max_headers(parser_max_headers(limits.max_headers));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_request_head.0.min(u32::MAX as u64) as u32)
        // A peer that resets streams as fast as it opens them is cut off.
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.request_head_timeout.0);
    Http {
        builder: b,
        head_timeout: limits.request_head_timeout.0,
        send_timeout: limits.send_timeout.0,
        max_age: limits.max_connection_age.map(|d| d.0),
        max_connections: limits.max_connections,
    }
}

/// What a request knows about the connection it came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate's identity (SPIFFE ID, else DNS SAN).
    pub identity: Option<Arc<str>>,
    /// The client's IP, ready for X-Forwarded-For.
    pub peer_ip: http::HeaderValue,
    /// The identity, ready for the app's identity header (made once per
    /// connection, like `peer_ip`); `None` also when it is no valid value.
    pub identity_header: Option<http::HeaderValue>,
    /// For the head timer: is a request in flight?
    requests: RequestCounts,
    /// Set when the connection should close gracefully (idle HTTP/2).
    close: AtomicBool,
}

impl ConnInfo {
    fn new(peer: SocketAddr, tls: bool, identity: Option<Arc<str>>) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            peer,
            tls,
            identity_header: identity
                .as_deref()
                .and_then(|id| http::HeaderValue::from_str(id).ok()),
            identity,
            peer_ip: crate::headers::ip_header_value(peer.ip()),
            requests: RequestCounts::default(),
            close: AtomicBool::new(false),
        })
    }

    /// Whether the connection was asked to close gracefully.
    pub fn close_requested(&self) -> bool {
        self.close.load(Ordering::Relaxed)
    }

    /// Asks the connection to close gracefully; its task must be woken.
    fn request_close(&self) {
        self.close.store(true, Ordering::Relaxed);
    }
}

/// TLS termination for a listener.
pub struct TlsListener {
    /// The certificates in force.
    pub tls: Arc<ServerTls>,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Failed handshakes by reason.
    pub failures: crate::metrics::Reasons,
}

/// Serves connections from `listener` until `shutdown` fires, then lets the
/// in-flight ones finish for up to `grace`.
#[allow(clippy::too_many_arguments)]
pub async fn serve<H, F, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsListener>,
    builder: Http,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    metrics: ConnMetrics,
) where
    H: Fn(Request<Incoming>, OpenRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static,
{
    let drain = Drain::default();
    let metrics = Arc::new(metrics);
    // A slot per open connection: when all are taken, accepting waits and
    // new clients queue in the kernel's backlog. Draining waits for them all.
    let capacity = builder.max_connections.min(u32::MAX as usize) as u32;
    let slots = Arc::new(Semaphore::new(capacity as usize));
    loop {
        let slot = tokio::select! {
            _ = shutdown.changed() => break,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
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
        let metrics = metrics.clone();
        metrics.open.inc();
        let Some(tls) = &tls else {
            let info = ConnInfo::new(peer, false, None);
            let conn = serve_connection(&builder, drain.clone(), stream, info, handler.clone(), &metrics);
            tokio::spawn(async move {
                conn.await;
                metrics.open.dec();
                drop(slot);
            });
            continue;
        };
        // The handshake runs in the connection's task, so a slow client
        // cannot hold up the accept loop; it has `handshake_timeout` at most.
        let (acceptor, limit, failures) = (tls.tls.acceptor(), tls.handshake_timeout, tls.failures.clone());
        let (builder, drain, handler) = (builder.clone(), drain.clone(), handler.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let info = ConnInfo::new(peer, true, crate::tls::peer_identity(stream.get_ref().1));
                    serve_connection(&builder, drain, TlsConn::from(stream), info, handler, &metrics).await;
                }
                Ok(Err(e)) => {
                    failures.inc(crate::tls::handshake_failure_label(&e));
                    tracing::warn!(
                    event = "tls_handshake_failed",
                    listener = name,
                    peer = %peer,
                    reason = %crate::tls::describe_handshake_error(&e),
                    "TLS handshake refused"
                    )
                }
                Err(_) => {
                    failures.inc("timeout");
                    tracing::warn!(
                    event = "tls_handshake_failed",
                    listener = name,
                    peer = %peer,
                    reason = "handshake timeout",
                    "TLS handshake refused"
                    )
                }
            }
            metrics.open.dec();
            drop(slot);
        });
    }
    drop(listener);
    drain.start();
    tokio::select! {
        _ = slots.acquire_many(capacity) => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(listener = name, grace = ?grace, "grace period over, closing remaining connections");
        }
    }
}

/// hyper parses up to 100 header fields in arrays on the stack; any larger
/// cap makes it heap-allocate two 6 KiB arrays for every request. So the
/// parser's backstop stays at 100 unless more were configured (then it is
/// twice the limit, as for the head size).
fn parser_max_headers(limit: usize) -> usize {
    const HYPER_INLINE: usize = 100;
    if limit <= HYPER_INLINE {
        HYPER_INLINE
    } else {
        2 * limit
    }
}

/// Serves HTTP on one accepted connection, watched for graceful shutdown.
fn serve_connection<I, H, F, B>(
    http: &Http,
    drain: Drain,
    io: I,
    info: Arc<ConnInfo>,
    handler: H,
    metrics: &Arc<ConnMetrics>,
) -> impl Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, OpenRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static,
{
    let peer = info.peer;
    // The handler's future is hyper's service future as it is: not boxed
    // (HTTP/1 keeps it in the connection's task, HTTP/2 spawns it) and not
    // wrapped, since each wrapping copies its kilobytes once more.
    let io = TokioIo::new(HeadTimer::new(
        io,
        info.clone(),
        http.head_timeout,
        http.send_timeout,
        metrics.clone(),
    ));
    let close = info.clone();
    let svc = service_fn(move |req| handler(req, OpenRequest::begin(&info)));
    let conn = drain.watch(
        http.builder.serve_connection_with_upgrades(io, svc).into_owned(),
        |conn| conn.graceful_shutdown(),
        close,
        http.max_age,
    );
    async move {
        if let Err(e) = conn.await {
            match e.downcast_ref::<hyper::Error>() {
                // hyper answered a head it could not accept (bare 400/431) itself.
                Some(h) if h.is_parse() || h.is_parse_too_large() => {
                    tracing::warn!(event = "request_refused", peer = %peer, error = %e, "request refused by the HTTP parser");
                }
                _ => tracing::debug!(error = %e, "connection ended with an error"),
            }
        }
    }
}

/// Graceful shutdown: once started, each open connection finishes the
/// request in hand and closes (HTTP/1 after the response, HTTP/2 with a
/// GOAWAY); an idle one closes now.
///
/// Why not hyper-util's `GracefulShutdown`: its watcher polls a watch channel
/// (a lock) on every wake of every connection. Here a connection registers
/// with the `Notify` once and then only reads the flag.
#[derive(Clone, Default)]
struct Drain {
    started: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Drain {
    /// Sets the flag, then wakes every connection (each was registered on
    /// its first poll, or sees the flag then).
    fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// `conn`, told to finish by `shutdown` once the drain starts, when
    /// `info` asks for it (idle), or at `max_age`.
    fn watch<C, S: FnOnce(Pin<&mut C>)>(
        self,
        conn: C,
        shutdown: S,
        info: Arc<ConnInfo>,
        max_age: Option<Duration>,
    ) -> Watched<C, S> {
        let wake = Box::pin(self.notify.clone().notified_owned());
        Watched {
            conn,
            drain: self,
            wake,
            registered: false,
            shutdown: Some(shutdown),
            info,
            age: max_age.map(|age| Box::pin(tokio::time::sleep(age))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`].
    struct Watched<C, S> {
        #[pin]
        conn: C,
        drain: Drain,
        // Polled once, so that `Drain::start` wakes this connection's task;
        // kept (unpolled) after that, to stay registered.
        wake: Pin<Box<OwnedNotified>>,
        registered: bool,
        // Taken when called.
        shutdown: Option<S>,
        info: Arc<ConnInfo>,
        // Fires at the connection's maximum age, when one is set.
        age: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<C: Future, S: FnOnce(Pin<&mut C>)> Future for Watched<C, S> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.registered {
            // Registers this task's waker (a tokio task keeps one waker).
            *this.registered = true;
            let _ = this.wake.as_mut().poll(cx);
        }
        if this.shutdown.is_some() {
            let aged = this
                .age
                .as_mut()
                .is_some_and(|age| age.as_mut().poll(cx).is_ready());
            if aged || this.info.close_requested() || this.drain.started.load(Ordering::Acquire) {
                if let Some(shutdown) = this.shutdown.take() {
                    shutdown(this.conn.as_mut());
                }
            }
        }
        this.conn.poll(cx)
    }
}
