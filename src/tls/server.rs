//! Inbound TLS termination: certificate, key, optional client CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::error::TlsError;
use super::identity;
use super::pem::{self, Snapshot};
use super::reload::{self, Current, Reload};
use super::verify::ClientCertCheck;

/// Where the inbound listener's TLS material lives.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle for client certificates. When set, every client must
    /// present a certificate from it (mTLS); when unset, no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

struct Built {
    config: Arc<ServerConfig>,
    not_after: SystemTime,
}

/// Inbound TLS: the current `ServerConfig`, replaceable at run time.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: Current<Built>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files and builds the config; an error here should stop kawal
    /// from starting (its message names the file and the problem).
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let snap = Snapshot::read(paths(&files))?;
        let built = build(&files, &snap)?;
        reload::log_loaded("server", &files.cert, built.not_after, false);
        Ok(Self {
            current: Current::new(built, snap.digest()),
            files,
        })
    }

    /// An acceptor using the config in force now. Take one per accepted
    /// connection: a rotation then applies to the next handshake, while
    /// connections already established keep the config they started with.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.get().value.config.clone())
    }

    /// notAfter of the leaf certificate in force (for the expiry metric).
    pub fn not_after(&self) -> SystemTime {
        self.current.get().value.not_after
    }

    /// Re-reads the files now; when they changed and are valid the new config
    /// is swapped in. On error the old config stays in force.
    pub fn reload_now(&self) -> Result<(), TlsError> {
        self.refresh().map(|_| ())
    }

    /// Re-reads the files every `every` (content compared, so any kind of
    /// replacement is seen), swapping in valid new material and warning about
    /// invalid material while keeping the old. Stops when `self` is dropped;
    /// abort the handle to stop it earlier.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        reload::spawn(self, every)
    }
}

impl Reload for ServerTls {
    fn refresh(&self) -> Result<bool, TlsError> {
        let snap = Snapshot::read(paths(&self.files))?;
        let swapped = self.current.refresh(&snap, |s| build(&self.files, s))?;
        if swapped {
            reload::log_loaded("server", &self.files.cert, self.not_after(), true);
        }
        Ok(swapped)
    }

    fn kind(&self) -> &'static str {
        "server"
    }

    fn expiry(&self) -> Option<(&Path, SystemTime)> {
        Some((&self.files.cert, self.not_after()))
    }
}

fn paths(files: &ServerTlsFiles) -> impl Iterator<Item = &PathBuf> {
    [&files.cert, &files.key]
        .into_iter()
        .chain(files.client_ca.as_ref())
}

fn build(files: &ServerTlsFiles, snap: &Snapshot) -> Result<Built, TlsError> {
    let provider = super::provider();
    let (chain, key) = pem::certified_key(&files.cert, &files.key, snap, &provider)?;
    let not_after = chain
        .first()
        .map(identity::not_after)
        .transpose()
        .map_err(|reason| TlsError::BadCertificate {
            path: files.cert.clone(),
            reason,
        })?
        .ok_or_else(|| TlsError::NoCertificate {
            path: files.cert.clone(),
        })?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = pem::roots(ca, snap.get(ca))?;
            // Default policy of the builder: a client certificate is mandatory.
            let inner = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(Arc::new(ClientCertCheck { inner }))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // h2 first: the server's order decides, and h2 multiplexes.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Built {
        config: Arc::new(config),
        not_after,
    })
}
