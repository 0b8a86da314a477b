//! Body types shared by both directions.
//!
//! Bodies are streamed frame by frame, never collected: `GuardedBody` wraps a
//! peer's body with the two limits a proxy owes its neighbours (a size cap and
//! an idle timeout), and counts the bytes that passed for the access log.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use tokio::time::{Instant, Sleep};

/// The error type every body in kawal carries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming body: what kawal sends and forwards.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in one frame.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with nothing in it.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why a guarded body stopped early. Found again in the error chain of a
/// failed upstream call, so the caller can answer 413 or 408 instead of 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More bytes than the configured limit.
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// No bytes for longer than the idle timeout.
    #[error("no body data for {0:?}")]
    Idle(Duration),
}

/// A byte counter shared between a body and whoever logs it.
pub type ByteCount = Arc<AtomicU64>;

pin_project_lite::pin_project! {
    /// A body with a size cap, an idle timeout and a byte counter.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
        idle: Duration,
        // Created only the first time the peer makes us wait, so the common
        // fast body (already buffered) never allocates a timer.
        timer: Option<Pin<Box<Sleep>>>,
        // Whether the timer runs for the current wait. It starts when we
        // begin waiting, not at the last frame: time the other side spent
        // not polling us (backpressure) is not the peer's idleness.
        armed: bool,
        count: Option<ByteCount>,
    }
}

impl<B> GuardedBody<B> {
    /// Wraps `inner`; `limit` bytes at most, `idle` at most between frames;
    /// data bytes are added to `count` when given.
    pub fn new(inner: B, limit: u64, idle: Duration, count: Option<ByteCount>) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            idle,
            timer: None,
            armed: false,
            count,
        }
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !*this.armed {
                    *this.armed = true;
                    let deadline = Instant::now() + *this.idle;
                    match this.timer.as_mut() {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(timer) = this.timer.as_mut() {
                    ready!(timer.as_mut().poll(cx));
                }
                return Poll::Ready(Some(Err(BodyError::Idle(*this.idle).into())));
            }
        };
        *this.armed = false;
        let frame = match frame {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if n > *this.remaining {
                *this.remaining = 0;
                return Poll::Ready(Some(Err(BodyError::TooLarge(*this.limit).into())));
            }
            *this.remaining -= n;
            if let Some(count) = this.count {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
        Poll::Ready(Some(Ok(frame)))
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
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = BoxError> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn passes_bodies_within_the_limit_and_counts_them() {
        let count = ByteCount::default();
        let body = GuardedBody::new(
            chunks(&[b"abc", b"de"]),
            5,
            Duration::from_secs(1),
            Some(count.clone()),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcde");
        assert_eq!(count.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn fails_a_body_over_the_limit() {
        let body = GuardedBody::new(chunks(&[b"abc", b"def"]), 5, Duration::from_secs(1), None);
        let err = body.collect().await.unwrap_err();
        assert_eq!(
            crate::error::find::<BodyError>(&*err).copied(),
            Some(BodyError::TooLarge(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fails_a_body_that_stalls() {
        let stalled = StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let body = GuardedBody::new(stalled, 5, Duration::from_secs(3), None);
        let err = body.collect().await.unwrap_err();
        assert_eq!(
            crate::error::find::<BodyError>(&*err).copied(),
            Some(BodyError::Idle(Duration::from_secs(3)))
        );
    }
}
