//! Load errors (why kawal refuses to start, or a reload is rejected) and the
//! short handshake-failure reasons that go into the JSON log.

use std::io;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};

use super::identity::IdentityRejected;

/// Why TLS material could not be loaded. Every message names the file and
/// what is wrong with it, so an operator can fix it without reading code.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not valid PEM (bad base64, unterminated section, ...).
    #[error("{}: invalid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// No `CERTIFICATE` section in a file that should hold a certificate chain.
    #[error("{}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate that X.509 parsing rejects.
    #[error("{}: certificate cannot be parsed: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No private key section (PKCS#8, PKCS#1 or SEC1) in the key file.
    #[error("{}: no private key found", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A private key the crypto provider cannot use.
    #[error("{}: private key is not usable: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("{}: certificate and key do not match (key: {})", cert.display(), key.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA bundle without a usable trust anchor.
    #[error("{}: CA bundle is not usable: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A client certificate without its key, or the reverse.
    #[error("client certificate and key must be configured together")]
    CertWithoutKey,
    /// The configured server identity is neither a SPIFFE ID nor a DNS name.
    #[error("server identity {0:?} is neither a valid spiffe:// ID nor a DNS name")]
    BadIdentity(String),
    /// The host to use as SNI is not a DNS name or an IP address.
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
    /// rustls refused the assembled configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

/// Turns a failed handshake's error into a short reason for the log, such as
/// `client certificate required`, `unknown issuer` or
/// `server identity mismatch (...)`. Works on the `io::Error` that
/// `TlsAcceptor::accept` and `TlsConnector::connect` return (rustls errors
/// travel inside it), on either side of the connection.
pub fn describe_handshake_error(err: &io::Error) -> String {
    if let Some(e) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return describe_rustls(e);
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => "connection closed during handshake".into(),
        io::ErrorKind::TimedOut => "handshake timed out".into(),
        io::ErrorKind::ConnectionReset => "connection reset during handshake".into(),
        _ => err.to_string(),
    }
}

/// A failed handshake's reason as a metric label: a small fixed set
/// (`no_client_cert`, `unknown_issuer`, `cert_expired`, `bad_cert`,
/// `identity_rejected`, `not_tls`, `alert`, `incompatible`, `closed`,
/// `reset`, `timeout`, `other`), unlike the log's free text.
pub fn handshake_failure_label(err: &io::Error) -> &'static str {
    use rustls::Error as E;
    use CertificateError as C;
    if let Some(e) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return match e {
            E::NoCertificatesPresented => "no_client_cert",
            E::InvalidCertificate(C::UnknownIssuer) => "unknown_issuer",
            E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "cert_expired",
            E::InvalidCertificate(C::Other(o)) if o.0.downcast_ref::<IdentityRejected>().is_some() => {
                "identity_rejected"
            }
            E::InvalidCertificate(_) => "bad_cert",
            E::InvalidMessage(_) => "not_tls",
            E::AlertReceived(_) => "alert",
            E::PeerIncompatible(_) | E::NoApplicationProtocol => "incompatible",
            _ => "other",
        };
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => "closed",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::ConnectionReset => "reset",
        _ => "other",
    }
}

fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => "client certificate required".into(),
        E::InvalidCertificate(c) => describe_cert(c),
        E::AlertReceived(a) => describe_alert(*a),
        // Plaintext HTTP (or anything else that is not TLS) on the TLS port
        // fails record parsing before any handshake message is seen.
        E::InvalidMessage(_) => "not a TLS handshake (malformed record)".into(),
        E::PeerIncompatible(p) => format!("incompatible peer: {p:?}"),
        E::PeerMisbehaved(p) => format!("peer misbehaved: {p:?}"),
        E::NoApplicationProtocol => "no common ALPN protocol".into(),
        E::PeerSentOversizedRecord => "peer sent an oversized record".into(),
        E::DecryptError => "decryption failed".into(),
        other => other.to_string(),
    }
}

fn describe_cert(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => "unknown issuer".into(),
        C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not yet valid".into(),
        C::BadSignature => "bad certificate signature".into(),
        C::BadEncoding => "malformed certificate".into(),
        C::Revoked => "certificate revoked".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "server name mismatch".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate not valid for this purpose (extended key usage)".into()
        }
        C::Other(o) => match o.0.downcast_ref::<IdentityRejected>() {
            Some(r) => r.to_string(),
            None => format!("invalid certificate: {o}"),
        },
        other => format!("invalid certificate: {other:?}"),
    }
}

fn describe_alert(a: AlertDescription) -> String {
    use AlertDescription as A;
    let what = match a {
        A::CertificateRequired => "peer requires a client certificate",
        A::UnknownCA => "peer rejected our certificate: unknown issuer",
        A::BadCertificate | A::UnsupportedCertificate => "peer rejected our certificate",
        A::CertificateExpired => "peer rejected our certificate: expired",
        A::AccessDenied => "peer denied access",
        A::ProtocolVersion => "no common TLS version",
        A::HandshakeFailure | A::InsufficientSecurity => "no common cipher suite or parameters",
        A::NoApplicationProtocol => "no common ALPN protocol",
        other => return format!("peer sent alert {other:?}"),
    };
    what.into()
}
