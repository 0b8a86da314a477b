//! The Redis store: shared by every replica of a service, surviving kawal
//! restarts. Each operation is one Lua script (atomic on the server), sent
//! through redis-rs's tokio `ConnectionManager`, which reconnects by itself;
//! every call is bounded by the command timeout, so an unreachable Redis is
//! an error after at most that long, never a hung request.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use super::{Store, StoreError};

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
         if v then return v end
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
         return false",
    )
});

static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
         if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
           redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1
         end
         return 0",
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
         if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
           return redis.call('PEXPIRE', KEYS[1], ARGV[2])
         end
         return 0",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
         if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
           return redis.call('DEL', KEYS[1])
         end
         return 0",
    )
});

// Byte-wise, not Lua's `<` on strings (strcoll: locale-dependent).
static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
         if v then
           local newer = #ARGV[1] > #v
           for i = 1, math.min(#v, #ARGV[1]) do
             local x, y = string.byte(v, i), string.byte(ARGV[1], i)
             if x ~= y then newer = y > x break end
           end
           if not newer then return 0 end
         end
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
         return 1",
    )
});

/// A Redis (or Valkey) reached by URL: `redis://[:password@]host:port[/db]`,
/// `rediss://` for TLS (server verified against the system's roots).
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
}

impl RedisStore {
    /// Prepares the connection without making it: kawal starts while Redis
    /// is down, and the guard fails closed (or open) until it is up.
    pub fn new(url: &str, connect_timeout: Duration, timeout: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(RedisStore { conn, timeout })
    }

    async fn run<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => Err(StoreError(format!("no answer within {:?}", self.timeout))),
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl Store for RedisStore {
    async fn claim(&self, key: &str, value: Bytes, ttl: Duration) -> Result<Option<Bytes>, StoreError> {
        let mut call = CLAIM.prepare_invoke();
        call.key(key).arg(&value[..]).arg(millis(ttl));
        let found: Option<Vec<u8>> = self.run(&call).await?;
        Ok(found.map(Bytes::from))
    }

    async fn replace(
        &self,
        key: &str,
        owner: &[u8],
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut call = REPLACE.prepare_invoke();
        call.key(key).arg(owner).arg(&value[..]).arg(millis(ttl));
        Ok(self.run::<i64>(&call).await? == 1)
    }

    async fn renew(&self, key: &str, owner: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let mut call = RENEW.prepare_invoke();
        call.key(key).arg(owner).arg(millis(ttl));
        Ok(self.run::<i64>(&call).await? == 1)
    }

    async fn release(&self, key: &str, owner: &[u8]) -> Result<bool, StoreError> {
        let mut call = RELEASE.prepare_invoke();
        call.key(key).arg(owner);
        Ok(self.run::<i64>(&call).await? == 1)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        match tokio::time::timeout(self.timeout, cmd.query_async::<Option<Vec<u8>>>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v.map(Bytes::from)),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => Err(StoreError(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn advance(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        let mut call = ADVANCE.prepare_invoke();
        call.key(key).arg(&value[..]).arg(millis(ttl));
        Ok(self.run::<i64>(&call).await? == 1)
    }
}

/// A real `redis-server` on a free port, for tests; stopped on drop.
#[cfg(test)]
pub(crate) mod testing {
    /// The running server.
    pub struct RedisServer {
        /// `redis://127.0.0.1:PORT`
        pub url: String,
        child: std::process::Child,
    }

    impl RedisServer {
        /// Starts one; panics with a clear message when redis-server is missing.
        pub async fn start() -> RedisServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}): install it (apt-get install -y redis-server; .ci/run does)")
                });
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            RedisServer {
                url: format!("redis://127.0.0.1:{port}"),
                child,
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_suite() {
        let server = testing::RedisServer::start().await;
        let store = RedisStore::new(&server.url, Duration::from_secs(1), Duration::from_secs(2)).unwrap();
        super::super::suite(&store, "suite:").await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_within_the_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let store = RedisStore::new(&url, Duration::from_millis(200), Duration::from_millis(500)).unwrap();
        assert!(store
            .claim("k", Bytes::from_static(b"P"), Duration::from_secs(1))
            .await
            .is_err());
        assert!(store.get("k").await.is_err());
    }
}
