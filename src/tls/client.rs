//! Outbound TLS origination toward an upstream: CA (or the webpki roots),
//! optional client certificate, expected server identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use super::error::TlsError;
use super::identity;
use super::pem::{self, Snapshot};
use super::reload::{self, Current, Reload};
use super::verify::ServerCertCheck;

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How to originate TLS toward one upstream.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// PEM CA bundle that must have issued the server's certificate; `None`
    /// trusts the Mozilla roots (webpki-roots), for external APIs.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for mTLS (together with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Who the server must be: `spiffe://...` (checked against the URI SAN,
    /// whatever host is dialled) or a DNS name (sent as SNI and checked
    /// against the DNS SANs). `None`: the dialled host, checked as DNS name.
    pub server_identity: Option<String>,
    /// ALPN protocols to offer, most preferred first (e.g. [`ALPN_H2`]);
    /// empty offers none. After the handshake, `get_ref().1.alpn_protocol()`
    /// says which one the server picked.
    pub alpn: Vec<Vec<u8>>,
}

/// What the server is checked against.
enum Expected {
    Host,
    Spiffe(Arc<str>),
    Dns(ServerName<'static>),
}

struct Built {
    config: Arc<ClientConfig>,
    not_after: Option<SystemTime>,
}

/// Outbound TLS: the current `ClientConfig`, replaceable at run time.
pub struct ClientTls {
    files: ClientTlsFiles,
    expected: Expected,
    current: Current<Built>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Validates the settings, loads the files and builds the config; an
    /// error here should stop kawal from starting.
    pub fn load(files: ClientTlsFiles) -> Result<Self, TlsError> {
        if files.cert.is_some() != files.key.is_some() {
            return Err(TlsError::CertWithoutKey);
        }
        let expected = match files.server_identity.as_deref() {
            None => Expected::Host,
            Some(id) if id.starts_with("spiffe://") => {
                if !identity::is_spiffe_id(id) {
                    return Err(TlsError::BadIdentity(id.to_owned()));
                }
                Expected::Spiffe(Arc::from(id))
            }
            Some(name) => match ServerName::try_from(name.to_owned()) {
                Ok(sn @ ServerName::DnsName(_)) => Expected::Dns(sn),
                _ => return Err(TlsError::BadIdentity(name.to_owned())),
            },
        };
        let snap = Snapshot::read(paths(&files))?;
        let built = build(&files, &expected, &snap)?;
        if let (Some(cert), Some(t)) = (&files.cert, built.not_after) {
            reload::log_loaded("client", cert, t, false);
        }
        Ok(Self {
            current: Current::new(built, snap.digest()),
            files,
            expected,
        })
    }

    /// A connector using the config in force now; take one per new
    /// connection so a rotation applies to the next handshake.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.current.get().value.config.clone())
    }

    /// The name to pass to [`TlsConnector::connect`] (its SNI): the configured
    /// DNS identity, else `fallback_host` (the host being dialled; for a SPIFFE
    /// identity it is only SNI, the check is on the URI SAN). An IP address is
    /// accepted (rustls then sends no SNI); anything else is an error.
    pub fn server_name(&self, fallback_host: &str) -> Result<ServerName<'static>, TlsError> {
        match &self.expected {
            Expected::Dns(name) => Ok(name.clone()),
            Expected::Host | Expected::Spiffe(_) => {
                // `[::1]` as written in a URL authority.
                let host = fallback_host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned())
                    .map_err(|_| TlsError::BadServerName(identity::echo(fallback_host)))
            }
        }
    }

    /// notAfter of the client certificate in force, when one is configured.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.current.get().value.not_after
    }

    /// Re-reads the files now; when they changed and are valid the new config
    /// is swapped in. On error the old config stays in force.
    pub fn reload_now(&self) -> Result<(), TlsError> {
        self.refresh().map(|_| ())
    }

    /// Re-reads the files every `every`, as [`super::ServerTls::spawn_reloader`].
    /// Nothing to watch (no CA, no client certificate) makes it a cheap no-op.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        reload::spawn(self, every)
    }
}

impl Reload for ClientTls {
    fn refresh(&self) -> Result<bool, TlsError> {
        let snap = Snapshot::read(paths(&self.files))?;
        let swapped = self
            .current
            .refresh(&snap, |s| build(&self.files, &self.expected, s))?;
        if let (true, Some(cert), Some(t)) = (swapped, &self.files.cert, self.not_after()) {
            reload::log_loaded("client", cert, t, true);
        } else if swapped {
            tracing::info!(event = "tls_reloaded", tls = "client", "CA bundle reloaded");
        }
        Ok(swapped)
    }

    fn kind(&self) -> &'static str {
        "client"
    }

    fn expiry(&self) -> Option<(&Path, SystemTime)> {
        Some((self.files.cert.as_deref()?, self.not_after()?))
    }
}

fn paths(files: &ClientTlsFiles) -> impl Iterator<Item = &PathBuf> {
    files.ca.iter().chain(&files.cert).chain(&files.key)
}

fn build(files: &ClientTlsFiles, expected: &Expected, snap: &Snapshot) -> Result<Built, TlsError> {
    let provider = super::provider();
    let roots = match &files.ca {
        Some(ca) => pem::roots(ca, snap.get(ca))?,
        None => Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
    };
    let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(ServerCertCheck {
        inner,
        roots,
        algs: provider.signature_verification_algorithms,
        spiffe_id: match expected {
            Expected::Spiffe(id) => Some(id.clone()),
            Expected::Host | Expected::Dns(_) => None,
        },
    });
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let (mut config, not_after) = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let (chain, key_der) = pem::certified_key(cert, key, snap, &provider)?;
            let not_after = chain
                .first()
                .map(identity::not_after)
                .transpose()
                .map_err(|reason| TlsError::BadCertificate {
                    path: cert.clone(),
                    reason,
                })?;
            let config = builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::Config(e.to_string()))?;
            (config, not_after)
        }
        _ => (builder.with_no_client_auth(), None),
    };
    config.alpn_protocols = files.alpn.clone();
    Ok(Built {
        config: Arc::new(config),
        not_after,
    })
}
