//! An established TLS connection, either side, as the HTTP layer reads it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS stream over TCP whose reads skip rustls when it has nothing to give.
///
/// Why: hyper tries a read every time it polls a connection (for the next
/// head, or to notice a close while idle), several times per request, and
/// most of those find nothing. Through tokio-rustls each such try goes
/// through the record buffer, a socket read attempt and an error value; the
/// check here (no decrypted bytes buffered, socket not readable) costs a
/// fraction of that and registers the same wake-up.
pub struct TlsConn(tokio_rustls::TlsStream<TcpStream>);

impl TlsConn {
    /// The socket and the rustls state (peer certificates, ALPN).
    pub fn get_ref(&self) -> (&TcpStream, &rustls::CommonState) {
        self.0.get_ref()
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for TlsConn {
    fn from(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        TlsConn(stream.into())
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for TlsConn {
    fn from(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        TlsConn(stream.into())
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (tcp, session) = self.0.get_ref();
        // rustls processes every whole record it reads, so with no plaintext
        // buffered only new bytes on the socket can produce any (and tokio
        // keeps the socket readable until a read finds it empty). A close
        // notify, a socket error or EOF all make it readable, so those still
        // reach rustls.
        if session.wants_read() && tcp.poll_read_ready(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
