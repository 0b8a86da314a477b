//! Not kawal: the floor of an HTTP/1.1 proxy on tokio and httparse, for
//! `FLOOR=1 bench/peers/instructions.sh`. One upstream connection per client
//! connection, Content-Length bodies only, hop-by-hop headers dropped, no
//! limits, timeouts or error answers. What it measures: how many instructions
//! per request the runtime and the parsing need before any of hyper's or
//! kawal's own work.
//!
//!     floor LISTEN_ADDR UPSTREAM_ADDR
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listener = TcpListener::bind(&args[1]).await.unwrap();
    let up: &'static str = Box::leak(args[2].clone().into_boxed_str());
    loop {
        let (c, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = serve(c, up).await;
        });
    }
}

fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Appends the headers but hop-by-hop ones and the blank line; the Content-Length.
fn copy_headers(headers: &[httparse::Header], out: &mut Vec<u8>) -> usize {
    let mut len = 0;
    for h in headers {
        if hop_by_hop(h.name) {
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    len
}

async fn serve(mut c: TcpStream, up: &str) -> std::io::Result<()> {
    c.set_nodelay(true)?;
    let mut u = TcpStream::connect(up).await?;
    u.set_nodelay(true)?;
    let mut cbuf = BytesMut::with_capacity(8192);
    let mut ubuf = BytesMut::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    loop {
        // 1. the request head
        let body_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&cbuf) {
                Ok(httparse::Status::Complete(n)) => {
                    out.clear();
                    out.extend_from_slice(req.method.unwrap().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(req.path.unwrap().as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    let len = copy_headers(req.headers, &mut out);
                    cbuf.advance(n);
                    break len;
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Ok(()),
            }
            if c.read_buf(&mut cbuf).await? == 0 {
                return Ok(());
            }
        };
        while cbuf.len() < body_len {
            if c.read_buf(&mut cbuf).await? == 0 {
                return Ok(());
            }
        }
        out.extend_from_slice(&cbuf[..body_len]);
        cbuf.advance(body_len);
        // 2. forward
        u.write_all(&out).await?;
        // 3. the response head
        let body_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&ubuf) {
                Ok(httparse::Status::Complete(n)) => {
                    out.clear();
                    out.extend_from_slice(b"HTTP/1.1 ");
                    out.extend_from_slice(res.code.unwrap().to_string().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
                    out.extend_from_slice(b"\r\n");
                    let len = copy_headers(res.headers, &mut out);
                    ubuf.advance(n);
                    break len;
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Ok(()),
            }
            if u.read_buf(&mut ubuf).await? == 0 {
                return Ok(());
            }
        };
        while ubuf.len() < body_len {
            if u.read_buf(&mut ubuf).await? == 0 {
                return Ok(());
            }
        }
        out.extend_from_slice(&ubuf[..body_len]);
        ubuf.advance(body_len);
        // 4. respond
        c.write_all(&out).await?;
    }
}
