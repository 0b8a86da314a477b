//! Not kawal: the floor of an HTTP/1.1 proxy on tokio and httparse, for
//! `FLOOR=1 bench/peers/instructions.sh`. One upstream connection per client
//! connection, Content-Length bodies only, hop-by-hop headers dropped, no
//! limits, timeouts or error answers. What it measures: how many instructions
//! per request the runtime and the parsing need before any of hyper's or
//! kawal's own work.
//!
//!     floor LISTEN_ADDR UPSTREAM_ADDR [hop]
//!
//! `hop`: the upstream connection runs in a task of its own, and each request
//! goes to it over a channel and its response comes back over a oneshot, the
//! way hyper's client connections work; the difference is that hand-off's cost.
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listener = TcpListener::bind(&args[1]).await.unwrap();
    let up: &'static str = Box::leak(args[2].clone().into_boxed_str());
    let hop = args.get(3).is_some_and(|a| a == "hop");
    loop {
        let (c, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = serve(c, up, hop).await;
        });
    }
}

/// Where a request head (and body) in `out` goes; its answer comes back in `out`.
enum Upstream {
    Here(TcpStream, BytesMut),
    Task(mpsc::UnboundedSender<(Vec<u8>, oneshot::Sender<Vec<u8>>)>),
}

impl Upstream {
    async fn connect(addr: &str, hop: bool) -> std::io::Result<Upstream> {
        let mut u = TcpStream::connect(addr).await?;
        u.set_nodelay(true)?;
        let mut buf = BytesMut::with_capacity(8192);
        if !hop {
            return Ok(Upstream::Here(u, buf));
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, oneshot::Sender<Vec<u8>>)>();
        tokio::spawn(async move {
            while let Some((mut out, reply)) = rx.recv().await {
                if !matches!(exchange(&mut u, &mut buf, &mut out).await, Ok(true)) {
                    return;
                }
                let _ = reply.send(out);
            }
        });
        Ok(Upstream::Task(tx))
    }

    async fn send(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        match self {
            Upstream::Here(u, buf) => exchange(u, buf, out).await,
            Upstream::Task(tx) => {
                let (reply, answer) = oneshot::channel();
                if tx.send((std::mem::take(out), reply)).is_err() {
                    return Ok(false);
                }
                match answer.await {
                    Ok(back) => {
                        *out = back;
                        Ok(true)
                    }
                    Err(_) => Ok(false),
                }
            }
        }
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

async fn serve(mut c: TcpStream, up: &str, hop: bool) -> std::io::Result<()> {
    c.set_nodelay(true)?;
    let mut upstream = Upstream::connect(up, hop).await?;
    let mut cbuf = BytesMut::with_capacity(8192);
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
        // 2. forward, 3. the response
        if !upstream.send(&mut out).await? {
            return Ok(());
        }
        // 4. respond
        c.write_all(&out).await?;
    }
}

/// Sends the request in `out` and puts the response there; `false`: the
/// upstream closed or sent what this floor does not read.
async fn exchange(u: &mut TcpStream, ubuf: &mut BytesMut, out: &mut Vec<u8>) -> std::io::Result<bool> {
    u.write_all(out).await?;
    // 3. the response head
    let body_len = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(ubuf) {
            Ok(httparse::Status::Complete(n)) => {
                out.clear();
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(res.code.unwrap().to_string().as_bytes());
                out.push(b' ');
                out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
                out.extend_from_slice(b"\r\n");
                let len = copy_headers(res.headers, out);
                ubuf.advance(n);
                break len;
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Ok(false),
        }
        if u.read_buf(ubuf).await? == 0 {
            return Ok(false);
        }
    };
    while ubuf.len() < body_len {
        if u.read_buf(ubuf).await? == 0 {
            return Ok(false);
        }
    }
    out.extend_from_slice(&ubuf[..body_len]);
    ubuf.advance(body_len);
    Ok(true)
}
