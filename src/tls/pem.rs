//! Reading PEM files into rustls types, with errors that name the file.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::RootCertStore;

use super::error::TlsError;
use super::identity;

/// Larger than any sane certificate, key or CA bundle (Mozilla's whole root
/// store is ~200 KB); stops a wrong path (a log file, /dev/zero) from being
/// read into memory.
const MAX_FILE: u64 = 4 << 20;

/// The raw bytes of a set of files, read together so a reload sees one
/// consistent snapshot and can tell whether anything changed.
pub(crate) struct Snapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Snapshot {
    /// Reads every path (in the given order).
    pub(crate) fn read<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<Self, TlsError> {
        let files = paths
            .into_iter()
            .map(|p| read_file(p).map(|bytes| (p.clone(), bytes)))
            .collect::<Result<_, _>>()?;
        Ok(Self { files })
    }

    /// Content digest, to skip rebuilding when nothing changed. Not a security
    /// check (the files are ours), so SipHash is enough. Content rather than
    /// mtime: a Kubernetes secret swap or a copy with preserved mtime still shows.
    pub(crate) fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.files.hash(&mut h);
        h.finish()
    }

    /// The bytes read for `path`. Always present for a path passed to `read`;
    /// an absent one reads as empty, which then fails as "no certificate".
    pub(crate) fn get(&self, path: &Path) -> &[u8] {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map_or(&[][..], |(_, b)| b.as_slice())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: format!("file is larger than {MAX_FILE} bytes"),
        });
    }
    Ok(bytes)
}

fn pem_err(path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Every `CERTIFICATE` in the file, in order (leaf first for a chain). Each one
/// must parse as X.509, so a truncated or corrupted chain fails here with the
/// file's name rather than later as an anonymous handshake error.
pub(crate) fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for c in &certs {
        identity::not_after(c).map_err(|reason| TlsError::BadCertificate {
            path: path.to_owned(),
            reason,
        })?;
    }
    Ok(certs)
}

/// A CA bundle as trust anchors. Strict: one unusable certificate fails the
/// whole bundle, so a half-broken rotated bundle is rejected (and the old one
/// kept) rather than silently trusting fewer CAs.
pub(crate) fn roots(path: &Path, bytes: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let certs = certs(path, bytes).map_err(|e| match e {
        TlsError::NoCertificate { path } => TlsError::BadCa {
            path,
            reason: "no certificate found".into(),
        },
        other => other,
    })?;
    let mut store = RootCertStore::empty();
    for c in certs {
        store.add(c).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// The certificate chain and its key, checked to belong together; the check
/// is done here (not left to rustls' builder) to report the two files apart:
/// an unusable key versus a key for another certificate.
pub(crate) fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    snap: &Snapshot,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs(cert_path, snap.get(cert_path))?;
    let key = match PrivateKeyDer::from_pem_slice(snap.get(key_path)) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key_path.to_owned(),
            })
        }
        Err(e) => return Err(pem_err(key_path, e)),
    };
    let signing: Arc<dyn SigningKey> =
        provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?;
    match CertifiedKey::new(chain.clone(), signing).keys_match() {
        // Unknown: the provider cannot tell (it exposes no public key); rustls'
        // own builder accepts that too, and the handshake would fail visibly.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(other) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_owned(),
                reason: other.to_string(),
            })
        }
    }
    Ok((chain, key))
}
