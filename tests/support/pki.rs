//! Test certificates: a CA and sidecar leaves with SPIFFE URI SANs, made
//! with rcgen and written to a fresh directory (removed on drop).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA and the files of two sidecars it signed, in a fresh directory.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kawal-mtls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("kawal test CA {tag}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes NAME.crt / NAME.key for a sidecar with SPIFFE id `id`.
    pub fn leaf(&self, name: &str, id: &str) {
        self.leaf_with_dns(name, id, &[]);
    }

    /// Like `leaf`, with DNS SANs too.
    pub fn leaf_with_dns(&self, name: &str, id: &str, dns: &[&str]) {
        self.leaf_valid(name, id, dns, Duration::from_secs(86_400));
    }

    /// A leaf valid from an hour ago for `valid_for` from now.
    pub fn leaf_valid(&self, name: &str, id: &str, dns: &[&str], valid_for: Duration) {
        let now = SystemTime::now();
        self.leaf_between(name, id, dns, now - Duration::from_secs(3600), now + valid_for);
    }

    /// A leaf valid between two instants (either may be past or future).
    pub fn leaf_between(
        &self,
        name: &str,
        id: &str,
        dns: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// Writes NAME.crt / NAME.key for a leaf that looks like a sidecar's
    /// (SPIFFE id `id`, client and server auth, valid now) but is its own
    /// issuer: not signed by this CA.
    pub fn self_signed_leaf(&self, name: &str, id: &str) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(86_400)).into();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
