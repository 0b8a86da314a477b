//! Who broke the exchange: the request body on its way to the upstream
//! (step forward, around each attempt).
//!
//! A request body comes from the client. When it fails while kawal sends it
//! (a malformed chunk, a reset h2 stream, a cap or idle timeout of
//! `GuardedBody`), or is still coming in from a slow client when the
//! upstream's deadline passes, the failure is the client's: 400 or 408, and
//! no verdict on the upstream (breaker, retries, 5xx metrics). Without this,
//! any caller could fake an outage of an upstream and open its breaker.
//!
//! [`track`] wraps the body of one attempt so that its progress is known
//! afterwards; [`Upload::blame`] turns the attempt's error into the client's
//! when the body says so.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BodyError, BoxBody, BoxError};
use crate::error::{error_chain, find, ProxyError};

/// Where the body stands; one byte, written by the body, read after the attempt.
const SENDING: u8 = 0;
/// The last poll found no data: kawal waits for the client.
const WAITING_ON_CLIENT: u8 = 1;
const ENDED: u8 = 2;

/// How the client's body failed.
#[derive(Debug)]
enum Fault {
    Limit(BodyError),
    Broken(String),
}

#[derive(Debug, Default)]
struct Progress {
    state: AtomicU8,
    fault: OnceLock<Fault>,
}

/// The progress of one attempt's request body.
#[derive(Debug)]
pub struct Upload(Arc<Progress>);

/// Wraps the request's body to follow it; `None` for a request without a
/// body (nothing to blame, nothing to allocate).
pub fn track(req: Request<BoxBody>) -> (Request<BoxBody>, Option<Upload>) {
    if req.body().is_end_stream() || req.body().size_hint().exact() == Some(0) {
        return (req, None);
    }
    let progress = Arc::new(Progress::default());
    let upload = Upload(progress.clone());
    let req = req.map(|inner| Tracked { inner, progress }.boxed_unsync());
    (req, Some(upload))
}

impl Upload {
    /// `err` as the failure it really was: the client's when its body broke
    /// or was still on its way from the client when the deadline passed.
    pub fn blame(&self, err: ProxyError) -> ProxyError {
        match self.0.fault.get() {
            Some(Fault::Limit(e)) => return (*e).into(),
            Some(Fault::Broken(detail)) => return ProxyError::ClientBody(detail.clone()),
            None => {}
        }
        match err {
            ProxyError::UpstreamTimeout {
                after,
                connect: false,
                ..
            } if self.0.state.load(Ordering::Acquire) == WAITING_ON_CLIENT => {
                ProxyError::ClientTimeout(after)
            }
            err => err,
        }
    }
}

/// The body as sent, noting its progress.
struct Tracked {
    inner: BoxBody,
    progress: Arc<Progress>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Pending => WAITING_ON_CLIENT,
            Poll::Ready(Some(Ok(_))) => SENDING,
            Poll::Ready(None) => ENDED,
            Poll::Ready(Some(Err(e))) => {
                let fault = match find::<BodyError>(&**e) {
                    Some(limit) => Fault::Limit(*limit),
                    None => Fault::Broken(error_chain(&**e)),
                };
                let _ = self.progress.fault.set(fault);
                ENDED
            }
        };
        self.progress.state.store(state, Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use http_body_util::StreamBody;

    fn upstream_timeout() -> ProxyError {
        ProxyError::UpstreamTimeout {
            upstream: "app".into(),
            after: Duration::from_secs(1),
            connect: false,
        }
    }

    fn reset() -> ProxyError {
        ProxyError::UpstreamReset {
            upstream: "app".into(),
            cause: "closed".into(),
        }
    }

    fn body(frames: Vec<Result<Frame<Bytes>, BoxError>>, then_pending: bool) -> BoxBody {
        let head = futures_util::stream::iter(frames);
        if then_pending {
            use futures_util::StreamExt;
            StreamBody::new(head.chain(futures_util::stream::pending())).boxed_unsync()
        } else {
            StreamBody::new(head).boxed_unsync()
        }
    }

    /// Drives the tracked body as far as it goes now; the attempt's error
    /// is then blamed.
    async fn blamed(b: BoxBody, err: ProxyError) -> (String, &'static str) {
        let (req, upload) = track(Request::new(b));
        let mut b = req.into_body();
        while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(b.frame()) {}
        let e = upload.expect("a body is tracked").blame(err);
        (e.to_string(), e.kind())
    }

    #[tokio::test]
    async fn table_of_blame() {
        let data = || Ok(Frame::data(Bytes::from_static(b"abc")));
        let broken: BoxError = "invalid chunk size".into();
        let cases = [
            // The body broke: the client's, whatever the attempt saw.
            (body(vec![data(), Err(broken)], false), reset(), "client_body"),
            (
                body(vec![Err(BodyError::TooLarge(3).into())], false),
                reset(),
                "payload_too_large",
            ),
            (
                body(vec![Err(BodyError::Idle(Duration::from_secs(1)).into())], false),
                upstream_timeout(),
                "client_timeout",
            ),
            // Still waiting on the client at the deadline: the client's.
            (body(vec![data()], true), upstream_timeout(), "client_timeout"),
            // The body was complete: the upstream's.
            (body(vec![data()], false), upstream_timeout(), "upstream_timeout"),
            (body(vec![data()], false), reset(), "upstream_reset"),
            // Waiting on the client but the upstream reset: the upstream's.
            (body(vec![data()], true), reset(), "upstream_reset"),
        ];
        for (i, (b, err, want)) in cases.into_iter().enumerate() {
            assert_eq!(blamed(b, err).await.1, want, "case {i}");
        }
    }

    #[test]
    fn requests_without_a_body_are_not_tracked() {
        assert!(track(Request::new(crate::body::empty())).1.is_none());
        assert!(track(Request::new(crate::body::full(""))).1.is_none());
    }
}
