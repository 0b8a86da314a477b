//! What a certificate says about its holder: the SPIFFE ID or DNS name it
//! identifies, its extended key usages, its expiry. Certificates here come
//! from peers and from files, so every parse is fallible and nothing panics.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// SPIFFE IDs are capped at 2048 bytes by the spec; also bounds what ends up in
/// logs and headers.
const MAX_SPIFFE_ID: usize = 2048;
/// Bound on how much of an untrusted name is echoed into an error message.
const MAX_ECHO: usize = 256;

/// Why a certificate's identity is not acceptable. Travels inside
/// `rustls::CertificateError::Other` so the handshake log can name it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityRejected {
    #[error("server identity mismatch (expected {expected}, presented {presented:?})")]
    Mismatch { expected: Arc<str>, presented: String },
    #[error("certificate carries {0} URI SANs (a SPIFFE ID must be the only one)")]
    SeveralUris(usize),
    #[error("certificate URI SAN {0:?} is not a valid SPIFFE ID")]
    BadSpiffeId(String),
    #[error("certificate carries no SPIFFE ID or DNS name")]
    NoIdentity,
    #[error("certificate cannot be parsed: {0}")]
    Unparsable(String),
}

impl IdentityRejected {
    /// As the rustls error a verifier returns: the peer gets a
    /// `bad_certificate` alert, our log gets the reason.
    pub(crate) fn into_rustls(self) -> rustls::Error {
        let other = rustls::OtherError(Arc::new(self));
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))
    }
}

/// The identity of the verified client on a server-side TLS connection: the
/// SPIFFE ID of its certificate's URI SAN, else its first DNS SAN. `None`
/// when the client sent no certificate (no client CA configured) or the
/// certificate names no acceptable identity. Compute it once per connection
/// (e.g. `peer_identity(tls_stream.get_ref().1)`), not per request.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<Arc<str>> {
    let leaf = conn.peer_certificates()?.first()?;
    identity_of(leaf).ok()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, IdentityRejected> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(IdentityRejected::Unparsable(e.to_string())),
    }
}

/// The certificate's identity, by the SPIFFE X.509-SVID rules: exactly one URI
/// SAN, which must be a well-formed `spiffe://` ID; a certificate without a
/// URI SAN (or with one non-SPIFFE URI) is identified by its first DNS SAN.
pub(crate) fn identity_of(der: &CertificateDer<'_>) -> Result<Arc<str>, IdentityRejected> {
    let cert = parse(der)?;
    let san = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value,
        Ok(None) => return Err(IdentityRejected::NoIdentity),
        Err(e) => return Err(IdentityRejected::Unparsable(e.to_string())),
    };
    let uris: Vec<&str> = san
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    // Two URIs would make "the" identity ambiguous (and the SVID spec forbids
    // it), so such a certificate identifies nobody rather than whichever is first.
    if uris.len() > 1 {
        return Err(IdentityRejected::SeveralUris(uris.len()));
    }
    if let Some(uri) = uris.first() {
        if is_spiffe_id(uri) {
            return Ok(Arc::from(*uri));
        }
        if uri.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("spiffe:")) {
            return Err(IdentityRejected::BadSpiffeId(echo(uri)));
        }
    }
    san.general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::DNSName(d) if is_dns_name(d) => Some(Arc::from(*d)),
            _ => None,
        })
        .ok_or(IdentityRejected::NoIdentity)
}

/// Which extended key usage a certificate must carry for its role.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    ClientAuth,
    ServerAuth,
}

/// Whether the certificate explicitly allows `purpose`. webpki accepts a
/// certificate without any EKU extension for either role; kawal requires the
/// EKU so a server certificate cannot be replayed as a client one or back.
pub(crate) fn has_purpose(der: &CertificateDer<'_>, purpose: Purpose) -> bool {
    let Ok(cert) = parse(der) else { return false };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => match purpose {
            Purpose::ClientAuth => eku.value.client_auth,
            Purpose::ServerAuth => eku.value.server_auth,
        },
        _ => false,
    }
}

/// The certificate's notAfter.
pub(crate) fn not_after(der: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let cert = parse(der).map_err(|e| e.to_string())?;
    let secs = cert.validity().not_after.timestamp();
    let t = match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH.checked_add(Duration::from_secs(s)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
    };
    t.ok_or_else(|| format!("notAfter {secs} is out of range"))
}

/// A SPIFFE ID as the spec defines it: `spiffe://` + a lowercase trust domain
/// + an optional path of non-empty segments (no `.`/`..`, no trailing slash),
///   and nothing else (no port, userinfo, query or fragment).
pub(crate) fn is_spiffe_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return false;
    };
    if s.len() > MAX_SPIFFE_ID {
        return false;
    }
    let (domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    let path_ok = path.is_empty()
        || path.split('/').skip(1).all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
    domain_ok && path_ok
}

/// A plain (non-wildcard) DNS name; what kawal accepts as an identity and
/// therefore puts into headers and logs.
pub(crate) fn is_dns_name(s: &str) -> bool {
    crate::host::check_name(s).is_ok()
}

/// An untrusted string, shortened for an error message (`{:?}` escapes it).
pub(crate) fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}
