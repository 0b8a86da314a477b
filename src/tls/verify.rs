//! Certificate verifiers: rustls' WebPKI verifiers for the chain and the
//! handshake signatures, plus kawal's rules on top (EKU present, identity
//! well-formed, server identity as configured).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::identity::{self, IdentityRejected, Purpose};

fn require_purpose(der: &CertificateDer<'_>, purpose: Purpose) -> Result<(), rustls::Error> {
    if identity::has_purpose(der, purpose) {
        Ok(())
    } else {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose,
        ))
    }
}

/// Client certificates: the CA's chain (WebPKI, mandatory), then the clientAuth
/// EKU and a usable identity, so a client the policy could never name does
/// not get a connection at all.
#[derive(Debug)]
pub(crate) struct ClientCertCheck {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ClientCertCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        require_purpose(end_entity, Purpose::ClientAuth)?;
        identity::identity_of(end_entity).map_err(IdentityRejected::into_rustls)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server certificates. Without a SPIFFE ID to expect, this is WebPKI with the
/// usual name check against the SNI. With one, the chain is checked the same
/// way but the name check is replaced: SPIFFE server certificates usually have
/// no DNS SAN matching the host dialled, and what matters is that the URI SAN
/// is exactly the expected ID (and the only URI SAN).
#[derive(Debug)]
pub(crate) struct ServerCertCheck {
    pub(crate) inner: Arc<WebPkiServerVerifier>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) algs: rustls::crypto::WebPkiSupportedAlgorithms,
    pub(crate) spiffe_id: Option<Arc<str>>,
}

impl ServerCertVerifier for ServerCertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = &self.spiffe_id else {
            let verified =
                self.inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
            require_purpose(end_entity, Purpose::ServerAuth)?;
            return Ok(verified);
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        require_purpose(end_entity, Purpose::ServerAuth)?;
        let presented = identity::identity_of(end_entity).map_err(IdentityRejected::into_rustls)?;
        if presented != *expected {
            return Err(IdentityRejected::Mismatch {
                expected: expected.clone(),
                presented: identity::echo(&presented),
            }
            .into_rustls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
