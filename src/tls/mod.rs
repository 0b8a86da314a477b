//! TLS for kawal's listeners and upstream connections: rustls with the `ring`
//! provider, PEM files on disk, certificate rotation without restart.
//!
//! - [`ServerTls`] terminates inbound TLS (1.2 and 1.3 only, ALPN `h2` and
//!   `http/1.1`) and, with a client CA, requires a client certificate from it.
//! - [`ClientTls`] originates TLS toward an upstream, optionally with a client
//!   certificate, and checks the server's identity: a SPIFFE ID in the URI SAN
//!   or a DNS name.
//! - Both keep their rustls config behind an `ArcSwap`: a reload swaps in a new
//!   config for new handshakes; established connections keep the one they were
//!   made with. A reload that fails keeps the old config.
//! - [`peer_identity`] gives the verified client's SPIFFE ID (else DNS SAN).
//!
//! rustls verifies the chain, not who the peer is; the identity rules (exactly
//! one well-formed SPIFFE URI SAN, the clientAuth/serverAuth EKU present) are
//! enforced here, inside the verifiers, so a certificate that breaks them is
//! refused at the handshake rather than later by the policy.

mod client;
mod error;
mod identity;
mod pem;
mod reload;
mod server;
mod stream;
mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use client::{ClientTls, ClientTlsFiles, ALPN_H2, ALPN_HTTP1};
pub use error::{describe_handshake_error, handshake_failure_label, TlsError};
pub use identity::peer_identity;
pub use reload::secs_until;
pub use server::{ServerTls, ServerTlsFiles};
pub use stream::TlsConn;

/// The one crypto provider kawal uses. Passed explicitly to every builder so
/// nothing depends on a process-wide default being installed (or on which
/// provider another dependency happened to enable).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 only. The ring provider's suites are all ECDHE + AEAD, and
/// rustls has no renegotiation, so nothing weaker can be negotiated.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
