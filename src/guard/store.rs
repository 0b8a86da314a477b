//! Where the guard keeps what must outlive one request: claims, stored
//! responses, processed event ids, per-key leases and last versions.
//!
//! [`Store`] is six atomic operations on byte values, small enough that the
//! in-memory store ([`MemoryStore`], one process) and Redis ([`RedisStore`],
//! every replica of a service) implement them exactly alike; the meaning of
//! the bytes (a pending claim, a stored response) belongs to the guard's
//! pure core (`guard::record`). Both run under one test suite ([`suite`]).
//! Values compared by [`Store::advance`] are compared byte by byte, so the
//! caller encodes versions in an order-preserving way.

mod memory;
mod redis;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// The store could not answer (Redis unreachable, timed out).
#[derive(Debug, thiserror::Error)]
#[error("guard store unavailable: {0}")]
pub struct StoreError(pub String);

/// What every store does, each call atomic on its key.
pub trait Store: Send + Sync + 'static {
    /// Sets `key` to `value` for `ttl` if it is absent (`None`); otherwise
    /// leaves it and returns what it holds.
    fn claim(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;
    /// Replaces the value if it starts with `owner` (the claim is still
    /// ours), for `ttl`; whether it did.
    fn replace(
        &self,
        key: &str,
        owner: &[u8],
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Extends the life of the value to `ttl` if it starts with `owner`.
    fn renew(
        &self,
        key: &str,
        owner: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Deletes the value if it starts with `owner`; whether it did.
    fn release(&self, key: &str, owner: &[u8]) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The value, if any.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;
    /// Sets `key` to `value` for `ttl` if it is absent or holds a value that
    /// sorts before `value` byte by byte; whether it did (compare-and-set).
    fn advance(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The configured store: one of the two, dispatched without boxing.
pub enum AnyStore {
    /// This process only.
    Memory(MemoryStore),
    /// Shared by every replica.
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($s) => $call.await,
            AnyStore::Redis($s) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn claim(&self, key: &str, value: Bytes, ttl: Duration) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, s => s.claim(key, value, ttl))
    }
    async fn replace(
        &self,
        key: &str,
        owner: &[u8],
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.replace(key, owner, value, ttl))
    }
    async fn renew(&self, key: &str, owner: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew(key, owner, ttl))
    }
    async fn release(&self, key: &str, owner: &[u8]) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release(key, owner))
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, s => s.get(key))
    }
    async fn advance(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.advance(key, value, ttl))
    }
}

/// The one test suite both stores pass; `prefix` keeps runs apart.
#[cfg(test)]
pub(crate) async fn suite<S: Store>(s: &S, prefix: &str) {
    let k = |name: &str| format!("{prefix}{name}");
    let long = Duration::from_secs(60);
    let b = |v: &'static [u8]| Bytes::from_static(v);

    // claim: first wins, the second sees the first's value
    assert_eq!(s.claim(&k("a"), b(b"P1fp"), long).await.unwrap(), None);
    assert_eq!(
        s.claim(&k("a"), b(b"P2fp"), long).await.unwrap(),
        Some(b(b"P1fp"))
    );
    assert_eq!(s.get(&k("a")).await.unwrap(), Some(b(b"P1fp")));
    // replace / renew / release only for the owner
    assert!(!s.replace(&k("a"), b"P2", b(b"Dx"), long).await.unwrap());
    assert!(!s.renew(&k("a"), b"P2", long).await.unwrap());
    assert!(s.renew(&k("a"), b"P1", long).await.unwrap());
    assert!(s.replace(&k("a"), b"P1", b(b"Ddone"), long).await.unwrap());
    assert_eq!(s.get(&k("a")).await.unwrap(), Some(b(b"Ddone")));
    assert!(
        !s.release(&k("a"), b"P1").await.unwrap(),
        "a completed claim is no longer pending"
    );
    assert_eq!(s.claim(&k("a"), b(b"P3"), long).await.unwrap(), Some(b(b"Ddone")));
    assert!(s.claim(&k("b"), b(b"P1"), long).await.unwrap().is_none());
    assert!(!s.release(&k("b"), b"P2").await.unwrap());
    assert!(s.release(&k("b"), b"P1").await.unwrap());
    assert!(!s.release(&k("b"), b"P1").await.unwrap(), "released once only");
    assert_eq!(s.get(&k("b")).await.unwrap(), None);
    assert!(
        s.claim(&k("b"), b(b"P2"), long).await.unwrap().is_none(),
        "free again"
    );
    assert!(!s.replace(&k("missing"), b"P1", b(b"D"), long).await.unwrap());

    // advance: compare-and-set on byte order
    let table: [(&'static [u8], bool); 6] = [
        (b"\x00\x05", true),
        (b"\x00\x07", true),
        (b"\x00\x06", false),
        (b"\x00\x07", false),
        (b"\x01a", true),
        (b"\x01", false),
    ];
    for (v, moved) in table {
        assert_eq!(s.advance(&k("v"), b(v), long).await.unwrap(), moved, "{v:?}");
    }
    assert_eq!(s.get(&k("v")).await.unwrap(), Some(b(b"\x01a")));

    // ttl: a claim left behind expires (a replica died)
    let short = Duration::from_millis(50);
    assert!(s.claim(&k("t"), b(b"P1"), short).await.unwrap().is_none());
    assert!(s.advance(&k("tv"), b(b"\x05"), short).await.unwrap());
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if s.get(&k("t")).await.unwrap().is_none() && s.get(&k("tv")).await.unwrap().is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "entries outlived their ttl");
    assert!(s.claim(&k("t"), b(b"P2"), long).await.unwrap().is_none());
    // renewing keeps a claim alive past its first ttl
    assert!(s
        .claim(&k("r"), b(b"P1"), Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
    assert!(s.renew(&k("r"), b"P1", long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.get(&k("r")).await.unwrap(), Some(b(b"P1")));
}
