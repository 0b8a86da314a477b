//! What the process does on signals: SIGTERM or SIGINT drains
//! ([`Kawal::drain`]), a second one ends kawal at once, SIGHUP asks for a
//! config reload (and never ends the process).
//!
//! The handlers are installed before kawal starts, so a signal arriving
//! right after the start line is already kawal's, not the default action.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::Kawal;

/// The installed handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Drained: every in-flight request finished or the grace period passed.
    Drained,
    /// A second SIGTERM/SIGINT cut the drain short.
    Cut,
}

impl Signals {
    /// Takes over SIGTERM, SIGINT and SIGHUP.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next SIGTERM or SIGINT; SIGHUPs before it call `on_hup`.
    async fn stop(&mut self, on_hup: &mut impl FnMut()) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => on_hup(),
            }
        }
    }

    /// Serves until SIGTERM/SIGINT, then drains; a second one ends at once.
    /// `on_hup` runs on every SIGHUP before the first (a reload).
    pub async fn serve(mut self, kawal: Kawal, mut on_hup: impl FnMut()) -> Ended {
        let first = self.stop(&mut on_hup).await;
        tracing::info!(
            event = "shutdown",
            signal = first,
            "shutdown signal received, draining"
        );
        let drain = kawal.drain();
        tokio::pin!(drain);
        // SIGHUP while draining: nothing to reload into.
        let mut ignore = || {};
        let second = self.stop(&mut ignore);
        tokio::select! {
            _ = &mut drain => Ended::Drained,
            second = second => {
                tracing::warn!(event = "shutdown", signal = second, "second signal: stopping without waiting for in-flight requests");
                Ended::Cut
            }
        }
    }
}
