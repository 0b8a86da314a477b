//! What one guarded request holds (its turn, its lease, its claim, its
//! version) and the response phases that settle it: the stored response
//! for a replay, the processed mark of an event, the accepted version; and
//! the release of everything else, exactly once — at the end of the body,
//! or when the request is dropped before it had one.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::sync::oneshot;

use super::idempotency::{self, Seen};
use super::order::Turn;
use super::store::{Store, StoreError};
use super::Shared;
use crate::headers::X_KAWAL_ERROR;
use crate::phase::{BodyEnd, ResponsePhases};

/// How often a lease holder looks again for a key another replica holds.
const LEASE_POLL: Duration = Duration::from_millis(10);

struct Claim {
    key: String,
    owner: [u8; 9],
    fp: Vec<u8>,
    /// An Idempotency-Key (stores the response), else an event (a mark).
    replay: bool,
    /// Completed already: nothing left to release.
    settled: bool,
}

struct Capture {
    buf: BytesMut,
    head_len: usize,
    expect: Option<usize>,
}

/// One guarded request's holdings; its response phases settle them.
pub(crate) struct Hold {
    shared: Arc<Shared>,
    token: u64,
    /// The ordering key's turn in this process.
    pub(crate) turn: Option<Turn>,
    lease: Option<(String, [u8; 9])>,
    claim: Option<Claim>,
    /// The version to record if the app accepts the delivery.
    pub(crate) version: Option<(String, Bytes)>,
    accepted: bool,
    capture: Option<Capture>,
    renewal: Option<oneshot::Sender<()>>,
    done: bool,
}

impl Hold {
    pub(crate) fn new(shared: Arc<Shared>, token: u64) -> Hold {
        Hold {
            shared,
            token,
            turn: None,
            lease: None,
            claim: None,
            version: None,
            accepted: false,
            capture: None,
            renewal: None,
            done: false,
        }
    }

    /// Holds nothing: the request is not guarded after all (no key, no event).
    pub(crate) fn is_empty(&self) -> bool {
        self.turn.is_none() && self.lease.is_none() && self.claim.is_none() && self.version.is_none()
    }

    fn owner(&self, tag: u8) -> [u8; 9] {
        let mut owner = [tag; 9];
        owner[1..].copy_from_slice(&self.token.to_be_bytes());
        owner
    }

    /// Takes the key's store lease (another replica may hold it), waiting
    /// at most one lease time; `false` if it never came free.
    pub(crate) async fn lease(&mut self, key: &str) -> Result<bool, StoreError> {
        let owner = self.owner(b'L');
        let s = &self.shared;
        let deadline = tokio::time::Instant::now() + s.lease;
        loop {
            let taken = s
                .store
                .claim(key, Bytes::copy_from_slice(&owner), s.lease)
                .await?;
            s.up();
            if taken.is_none() {
                self.lease = Some((key.to_owned(), owner));
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// Claims a key (`None`), or says what an earlier request left there.
    pub(crate) async fn claim(
        &mut self,
        key: String,
        fp: Vec<u8>,
        replay: bool,
    ) -> Result<Option<Seen>, StoreError> {
        let (pending, owner) = idempotency::pending(self.token, &fp);
        let s = &self.shared;
        // In memory the end phase always runs; in Redis a dead replica's
        // claim must expire, so it lives one lease, renewed while in flight.
        let ttl = if s.redis { s.lease } else { s.ttl };
        let found = s.store.claim(&key, pending, ttl).await?;
        s.up();
        let Some(record) = found else {
            self.claim = Some(Claim {
                key,
                owner,
                fp,
                replay,
                settled: false,
            });
            return Ok(None);
        };
        Ok(Some(idempotency::seen(&record, &fp).unwrap_or(Seen::Mismatch)))
    }

    /// Renews the claim and the lease while the app works (Redis only).
    pub(crate) fn start_renewal(&mut self) {
        if !self.shared.redis || (self.claim.is_none() && self.lease.is_none()) {
            return;
        }
        let (stop, mut stopped) = oneshot::channel();
        self.renewal = Some(stop);
        let shared = self.shared.clone();
        let keys: Vec<(String, [u8; 9])> = self
            .claim
            .iter()
            .map(|c| (c.key.clone(), c.owner))
            .chain(self.lease.clone())
            .collect();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(shared.lease / 3);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = every.tick() => {}
                }
                for (key, owner) in &keys {
                    if let Err(e) = shared.store.renew(key, owner, shared.lease).await {
                        shared.failed(&e);
                    }
                }
            }
        });
    }

    /// Stores the captured response under the claim, now.
    fn store_response(&mut self) {
        let (Some(capture), Some(claim)) = (self.capture.take(), self.claim.as_mut()) else {
            return;
        };
        claim.settled = true;
        let record = idempotency::done(&claim.fp, &capture.buf);
        let (shared, key, owner) = (self.shared.clone(), claim.key.clone(), claim.owner);
        run(async move {
            report(
                &shared,
                shared.store.replace(&key, &owner, record, shared.ttl).await,
            );
        });
    }

    /// Settles everything still held; runs once.
    fn finish(&mut self, how: BodyEnd) {
        if std::mem::replace(&mut self.done, true) || self.is_empty() {
            return;
        }
        self.renewal = None;
        if how == BodyEnd::Complete && self.capture.is_some() {
            self.store_response();
        }
        let shared = self.shared.clone();
        let claim = self.claim.take().filter(|c| !c.settled);
        let version = self.version.take().filter(|_| self.accepted);
        let lease = self.lease.take();
        let turn = self.turn.take();
        run(async move {
            if let Some(c) = claim {
                report(&shared, shared.store.release(&c.key, &c.owner).await);
            }
            // Before the turn passes: the next delivery of the key compares
            // against this version.
            if let Some((key, v)) = version {
                report(&shared, shared.store.advance(&key, v, shared.ttl).await);
            }
            if let Some((key, owner)) = lease {
                report(&shared, shared.store.release(&key, &owner).await);
            }
            drop(turn);
        });
    }
}

impl ResponsePhases for Hold {
    fn head(&mut self, head: &mut http::response::Parts) {
        // kawal's own answers (502, 504, 413...) are not the app's.
        let from_app = !head.headers.contains_key(X_KAWAL_ERROR);
        let status = head.status;
        self.accepted = from_app && status.is_success();
        let Some(claim) = self.claim.as_mut() else { return };
        if !claim.replay {
            // An event the app accepted is processed: marked now, before the
            // acknowledgement reaches the sender (who may redeliver at once).
            if self.accepted {
                claim.settled = true;
                let record = idempotency::done(&[], &[]);
                let (shared, key, owner) = (self.shared.clone(), claim.key.clone(), claim.owner);
                run(async move {
                    report(
                        &shared,
                        shared.store.replace(&key, &owner, record, shared.ttl).await,
                    );
                });
            }
            return;
        }
        if !from_app || status.is_server_error() || status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let expect = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if expect.is_some_and(|n| n as u64 > self.shared.max_response) {
            tracing::debug!(
                event = "guard_not_stored",
                "response larger than max_response: not stored"
            );
            return;
        }
        let buf = idempotency::encode_head(status, &head.headers, expect.unwrap_or(0));
        self.capture = Some(Capture {
            head_len: buf.len(),
            buf,
            expect,
        });
        if expect == Some(0) {
            self.store_response();
        }
    }

    fn data(&mut self, chunk: &Bytes) {
        let Some(c) = self.capture.as_mut() else { return };
        let body_len = c.buf.len() - c.head_len + chunk.len();
        if body_len as u64 > self.shared.max_response {
            tracing::debug!(
                event = "guard_not_stored",
                "response larger than max_response: not stored"
            );
            self.capture = None;
            return;
        }
        c.buf.extend_from_slice(chunk);
        // The whole body is here: stored before its last bytes go out, so a
        // repeat sent the moment this response arrives finds it.
        if c.expect == Some(body_len) {
            self.store_response();
        }
    }

    fn end(mut self: Box<Self>, how: BodyEnd) {
        self.finish(how);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Dropped before the response phases ran (the client left while the
        // app worked, or a later step failed): release everything.
        self.finish(BodyEnd::ClientGone);
    }
}

fn report<T>(shared: &Shared, r: Result<T, StoreError>) {
    match r {
        Ok(_) => shared.up(),
        Err(e) => shared.failed(&e),
    }
}

/// Runs a settling job: to completion at once when it needs no I/O (the
/// memory store), else as a task (Redis).
fn run(job: impl Future<Output = ()> + Send + 'static) {
    let mut job = Box::pin(job);
    if job.as_mut().poll(&mut Context::from_waker(Waker::noop())) == Poll::Pending {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(job);
        }
    }
}
