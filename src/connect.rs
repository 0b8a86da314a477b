//! The connector behind every upstream's pooled client: TCP (hyper-util's
//! `HttpConnector`, with its connect timeout and nodelay), then TLS when the
//! upstream is configured for it. The TLS config is read at each connect, so
//! rotated certificates apply to new connections only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::tls::{describe_handshake_error, ClientTls, TlsConn};

/// TCP, then TLS if configured.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<ClientTls>>,
    /// The configured host name of the endpoints, for SNI and the certificate
    /// check when no `server_identity` is set: the URI only carries the
    /// resolved address.
    tls_host: Option<Arc<str>>,
}

impl Connector {
    /// A connector; `tls` = `None` for plain HTTP.
    pub fn new(http: HttpConnector, tls: Option<Arc<ClientTls>>, tls_host: Option<Arc<str>>) -> Connector {
        Connector { http, tls, tls_host }
    }
}

/// Why a TLS handshake toward an upstream failed (found in the error chain,
/// so the failure maps to 502 `upstream_tls`, never retried as a reset).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with upstream failed: {0}")]
pub struct TlsConnectError(pub String);

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = match &self.tls_host {
            Some(name) => name.to_string(),
            None => uri.host().unwrap_or_default().to_string(),
        };
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            let Some(tls) = tls else {
                return Ok(Conn::Plain(tcp));
            };
            let name = tls
                .server_name(&host)
                .map_err(|e| TlsConnectError(e.to_string()))?;
            let stream = tls
                .connector()
                .connect(name, tcp.into_inner())
                .await
                .map_err(|e| TlsConnectError(describe_handshake_error(&e)))?;
            Ok(Conn::Tls(Box::new(TokioIo::new(stream.into()))))
        })
    }
}

/// A connection to an upstream, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TokioIo<TcpStream>),
    /// TLS over TCP.
    Tls(Box<TokioIo<TlsConn>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(s) => s.connected(),
            Conn::Tls(s) => {
                let (tcp, session) = s.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}
