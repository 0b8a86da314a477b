//! Rotation without restart: a config behind an `ArcSwap`, replaced only by a
//! successful rebuild, and the periodic task that re-reads the files.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use super::error::TlsError;
use super::pem::Snapshot;

/// A certificate expiring sooner than this is warned about at every load,
/// and again every [`EXPIRY_REMINDER`] while it stays in force.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
const EXPIRY_REMINDER: Duration = Duration::from_secs(24 * 3600);
/// `tokio::time::interval` panics on a zero period; a misconfigured interval
/// is raised to this instead.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// What is in force: the built value and the digest of the files it came from.
pub(crate) struct Loaded<T> {
    pub(crate) value: T,
    pub(crate) digest: u64,
}

/// The current material. Readers take an `Arc` of it per handshake, so a swap
/// never touches a connection that already has its config.
pub(crate) struct Current<T> {
    inner: ArcSwap<Loaded<T>>,
}

impl<T> Current<T> {
    pub(crate) fn new(value: T, digest: u64) -> Self {
        Self {
            inner: ArcSwap::from_pointee(Loaded { value, digest }),
        }
    }

    pub(crate) fn get(&self) -> Arc<Loaded<T>> {
        self.inner.load_full()
    }

    /// Rebuilds from `snap` when its content differs from what is loaded.
    /// `Ok(true)` when new material was swapped in; on error nothing changes.
    pub(crate) fn refresh(
        &self,
        snap: &Snapshot,
        build: impl FnOnce(&Snapshot) -> Result<T, TlsError>,
    ) -> Result<bool, TlsError> {
        let digest = snap.digest();
        if digest == self.inner.load().digest {
            return Ok(false);
        }
        let value = build(snap)?;
        self.inner.store(Arc::new(Loaded { value, digest }));
        Ok(true)
    }
}

/// Something whose files can be re-read.
pub(crate) trait Reload: Send + Sync + 'static {
    /// Re-reads the files and swaps in new material if they changed (logging
    /// `tls_reloaded`). `Ok(false)` when unchanged.
    fn refresh(&self) -> Result<bool, TlsError>;
    /// For log events: "server" or "client".
    fn kind(&self) -> &'static str;
    /// The certificate file in force and its notAfter, if there is one.
    fn expiry(&self) -> Option<(&Path, SystemTime)>;
}

/// Re-reads `this`'s files every `every` until `this` is dropped (the task
/// holds only a weak reference) or the handle is aborted. A failed reload is
/// warned about once per distinct reason, not on every tick, and leaves the
/// old material in use.
pub(crate) fn spawn<T: Reload>(this: &Arc<T>, every: Duration) -> JoinHandle<()> {
    let weak: Weak<T> = Arc::downgrade(this);
    // A load warns by itself when the certificate is already close to expiry.
    let mut expiry_warned = expiring(&**this).map(|_| Instant::now());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(MIN_PERIOD));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the material was just loaded.
        tick.tick().await;
        let mut last_warned: Option<String> = None;
        loop {
            tick.tick().await;
            let Some(this) = weak.upgrade() else { break };
            let kind = this.kind();
            // File reads and certificate parsing are blocking work.
            let refreshing = this.clone();
            let outcome = match tokio::task::spawn_blocking(move || refreshing.refresh()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("reload task failed: {e}")),
            };
            match outcome {
                Ok(reloaded) => {
                    last_warned = None;
                    if let Some((cert, expires_in_s)) = expiring(&*this) {
                        if reloaded {
                            expiry_warned = Some(Instant::now());
                        } else if expiry_reminder_due(expiry_warned.map(|t| t.elapsed())) {
                            warn_expiring(kind, cert, expires_in_s);
                            expiry_warned = Some(Instant::now());
                        }
                    }
                }
                Err(reason) => {
                    if last_warned.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(
                            event = "tls_reload_failed",
                            tls = kind,
                            reason = %reason,
                            "new TLS material rejected; keeping the previous one"
                        );
                        last_warned = Some(reason);
                    }
                }
            }
        }
    })
}

/// The certificate in force and its seconds to expiry, when within the warning window.
fn expiring<T: Reload>(this: &T) -> Option<(&Path, i64)> {
    let (cert, not_after) = this.expiry()?;
    let expires_in_s = secs_until(not_after);
    (expires_in_s < EXPIRY_WARNING.as_secs() as i64).then_some((cert, expires_in_s))
}

/// Seconds from now until `t`; negative once it has passed.
pub fn secs_until(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Logs a loaded certificate, warning when it expires within a week.
pub(crate) fn log_loaded(kind: &'static str, cert: &Path, not_after: SystemTime, reloaded: bool) {
    let expires_in_s = secs_until(not_after);
    if reloaded {
        tracing::info!(
            event = "tls_reloaded",
            tls = kind,
            cert = %cert.display(),
            expires_in_s,
            "TLS material reloaded; new handshakes use it"
        );
    }
    if expires_in_s < EXPIRY_WARNING.as_secs() as i64 {
        warn_expiring(kind, cert, expires_in_s);
    }
}

fn warn_expiring(kind: &'static str, cert: &Path, expires_in_s: i64) {
    tracing::warn!(
        event = "tls_cert_expiring",
        tls = kind,
        cert = %cert.display(),
        expires_in_s,
        "certificate expires within 7 days (or has expired)"
    );
}

/// Whether a certificate within the warning window and left in force is
/// warned about again: a day after the last warning (a start or a reload
/// warns on its own), or at once if it entered the window unwarned.
fn expiry_reminder_due(since_warned: Option<Duration>) -> bool {
    since_warned.is_none_or(|d| d >= EXPIRY_REMINDER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiring_certificate_is_warned_about_once_a_day() {
        let hour = Duration::from_secs(3600);
        assert!(expiry_reminder_due(None), "entered the window unwarned");
        assert!(!expiry_reminder_due(Some(23 * hour)));
        assert!(expiry_reminder_due(Some(24 * hour)));
    }
}
