//! A minimal OTLP/HTTP receiver for benchmarks and local trials: accepts
//! `POST /v1/traces` (protobuf), counts the spans, answers 200; `GET /count`
//! returns the spans received so far.
//!
//!     cargo run --release --example otlp_sink -- 127.0.0.1:4318

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4318".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("otlp_sink listening on {}", listener.local_addr()?);
    let spans = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let spans = spans.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, spans.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, spans: Arc<AtomicU64>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        Ok(res)
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/count") => reply(
            StatusCode::OK,
            spans.load(Ordering::Relaxed).to_string().into_bytes(),
        ),
        (&Method::POST, "/v1/traces") => {
            let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                return reply(StatusCode::BAD_REQUEST, Vec::new());
            };
            let Ok(export) = ExportTraceServiceRequest::decode(body) else {
                return reply(StatusCode::BAD_REQUEST, Vec::new());
            };
            let n: usize = export
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            spans.fetch_add(n as u64, Ordering::Relaxed);
            reply(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, Vec::new()),
    }
}
