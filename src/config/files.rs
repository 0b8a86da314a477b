//! The files a config names, as start loads them: the settings each loader
//! takes ([`InboundTls::files`], [`UpstreamTls::files`],
//! [`InboundJwt::settings`]), built in one place for start and for
//! `kawal check`, and [`check`], which runs those loaders so a missing
//! certificate, a key that does not match it, a bad CA bundle or JWKS file is
//! refused by `kawal check` rather than at start.

use std::path::Path;

use super::{Config, InboundJwt, InboundTls, Protocol, UpstreamTls};
use crate::auth::{JwksSource, JwtSettings, JwtVerifier};
use crate::tls::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, TlsError, ALPN_H2, ALPN_HTTP1};

impl InboundTls {
    /// What [`ServerTls::load`] reads.
    pub fn files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

impl UpstreamTls {
    /// What [`ClientTls::load`] reads, offering the ALPN of `protocol`.
    pub fn files(&self, protocol: Protocol) -> ClientTlsFiles {
        let alpn = match protocol {
            Protocol::Http1 => ALPN_HTTP1,
            Protocol::Http2 => ALPN_H2,
        };
        ClientTlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_identity: self.server_identity.clone(),
            alpn: vec![alpn.to_vec()],
        }
    }
}

impl InboundJwt {
    /// What [`JwtVerifier`] is built from. `jwks_url` wins when (against
    /// the checks) both sources are set.
    pub fn settings(&self) -> JwtSettings {
        let jwks = match (&self.jwks_url, &self.jwks_file) {
            (Some(url), _) => JwksSource::Url(url.to_string()),
            (None, Some(file)) => JwksSource::File(file.clone()),
            (None, None) => JwksSource::File(Default::default()),
        };
        JwtSettings {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            jwks,
            algorithms: self.algorithms.clone(),
            hs256_secret_file: self.hs256_secret_file.clone(),
            max_lifetime: self.max_lifetime.0,
            leeway: self.leeway.0,
            required: self.required,
            require_claims: self.require_claims.clone(),
            routes: self.routes.clone(),
        }
    }
}

/// Loads every certificate, key, CA bundle and JWKS file of `cfg` with
/// start's loaders; a remote JWKS is not fetched (its CA bundle is loaded).
pub(super) fn check(cfg: &Config) -> Vec<(Vec<String>, String)> {
    let mut problems = Vec::new();
    let mut bad = |path: &[&str], msg: String| {
        let path = path.iter().filter(|s| !s.is_empty()).map(|s| s.to_string());
        problems.push((path.collect(), msg));
    };
    if let Some(inbound) = &cfg.inbound {
        if let Some(tls) = &inbound.tls {
            if let Err(e) = ServerTls::load(tls.files()) {
                let keys = [
                    ("cert", Some(&tls.cert)),
                    ("key", Some(&tls.key)),
                    ("client_ca", tls.client_ca.as_ref()),
                ];
                bad(&["inbound", "tls", tls_key(&e, &keys)], e.to_string());
            }
        }
        if let Some(jwt) = &inbound.jwt {
            let loaded = match &jwt.jwks_url {
                None => JwtVerifier::load(jwt.settings()).map(drop),
                Some(url) => crate::auth::JwksFetcher::new(url, jwt.jwks_ca.clone()).map(drop),
            };
            if let Err(msg) = loaded {
                let secret = jwt.hs256_secret_file.as_deref().map(Path::display);
                let key = match (&jwt.jwks_url, secret) {
                    (Some(_), _) => "jwks_ca",
                    (None, Some(secret)) if msg.contains(&secret.to_string()) => "hs256_secret_file",
                    (None, _) => "jwks_file",
                };
                bad(&["inbound", "jwt", key], msg);
            }
        }
    }
    for (name, up) in &cfg.upstreams {
        if let Some(tls) = &up.tls {
            if let Err(e) = ClientTls::load(tls.files(up.protocol)) {
                let keys = [
                    ("ca", tls.ca.as_ref()),
                    ("cert", tls.cert.as_ref()),
                    ("key", tls.key.as_ref()),
                ];
                let key = match e {
                    TlsError::BadIdentity(_) => "server_identity",
                    _ => tls_key(&e, &keys),
                };
                bad(&["upstreams", name, "tls", key], e.to_string());
            }
        }
    }
    problems
}

/// The key of the file a TLS error is about (the key file for a mismatch).
fn tls_key(err: &TlsError, keys: &[(&'static str, Option<&std::path::PathBuf>)]) -> &'static str {
    let path = match err {
        TlsError::Read { path, .. }
        | TlsError::Pem { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::BadCertificate { path, .. }
        | TlsError::NoKey { path }
        | TlsError::BadKey { path, .. }
        | TlsError::BadCa { path, .. } => Some(path),
        TlsError::KeyMismatch { key, .. } => Some(key),
        _ => None,
    };
    // One file may serve twice (a CA bundle also given as a key): a CA
    // error is about a CA key.
    let ca = matches!(err, TlsError::BadCa { .. });
    path.and_then(|p| {
        keys.iter()
            .find(|(name, k)| *k == Some(p) && name.ends_with("ca") == ca)
            .or_else(|| keys.iter().find(|(_, k)| *k == Some(p)))
    })
    .map_or("", |(name, _)| name)
}
