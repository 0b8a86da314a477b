//! Loading verification keys: the JWKS (a file, or bytes fetched from the
//! configured URL) and the optional HS256 secret.
//!
//! Keys come only from these sources, never from a token (`jku`, `x5u` and an
//! embedded `jwk` are ignored). Each JWKS key is bound at load time to the
//! algorithms it may verify (its family, its curve, its own `alg` if given,
//! and the pinned list), so a token can never pick a key of another family:
//! that is what defeats RS256/HS256 key confusion. The HS256 secret is a
//! separate slot used only for HS256 tokens.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

// Far above any real key set; stops a wrong path (a log file, /dev/zero) from eating memory.
pub(crate) const MAX_JWKS_BYTES: u64 = 1024 * 1024;
const MAX_SECRET_BYTES: u64 = 64 * 1024;
// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
const MIN_SECRET_BYTES: usize = 32;
// The RustCrypto RSA verifier refuses moduli above 4096 bits; below 2048 is breakable.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// One usable JWKS key and the algorithms it may verify.
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) algs: Vec<Algorithm>,
    pub(super) key: DecodingKey,
}

/// Everything a verification needs, swapped as a whole on reload.
pub(super) struct KeySet {
    pub(super) keys: Vec<Key>,
    pub(super) hmac: Option<DecodingKey>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

// Only the members kawal reads; unknown members (x5c, x5t, ...) are allowed by RFC 7517.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<serde_json::Value>,
}

fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if buf.len() as u64 > cap {
        return Err(format!("{what} {}: larger than {cap} bytes", path.display()));
    }
    Ok(buf)
}

/// Reads the JWKS file (capped) without parsing it.
pub(super) fn read_jwks(path: &Path) -> Result<Vec<u8>, String> {
    read_capped(path, MAX_JWKS_BYTES, "JWKS file")
}

/// Parses JWKS bytes and, if configured, reads the HS256 secret file.
/// `source` names where the bytes came from in errors ("JWKS file x.json").
pub(super) fn parse(
    jwks: &[u8],
    source: &str,
    secret: Option<&Path>,
    pinned: &[Algorithm],
) -> Result<KeySet, String> {
    let keys = parse_jwks(jwks, source, pinned)?;
    let needs_jwks = pinned.iter().any(|a| a.family() != AlgorithmFamily::Hmac);
    if needs_jwks && keys.is_empty() {
        return Err(format!("{source}: no usable key for the configured algorithms"));
    }
    let hmac = secret.map(load_secret).transpose()?;
    Ok(KeySet { keys, hmac })
}

fn load_secret(path: &Path) -> Result<DecodingKey, String> {
    let mut bytes = read_capped(path, MAX_SECRET_BYTES, "HS256 secret file")?;
    // Files written by `echo` end in a newline that is not part of the secret.
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "HS256 secret file {}: shorter than {MIN_SECRET_BYTES} bytes",
            path.display()
        ));
    }
    Ok(DecodingKey::from_secret(&bytes))
}

fn parse_jwks(bytes: &[u8], source: &str, pinned: &[Algorithm]) -> Result<Vec<Key>, String> {
    let set: RawSet = serde_json::from_slice(bytes).map_err(|e| format!("{source}: not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        let jwk: RawJwk = serde_json::from_value(value).map_err(|e| format!("{source}: key {i}: {e}"))?;
        let name = match &jwk.kid {
            Some(kid) => format!("key {i} (kid {kid:?})"),
            None => format!("key {i}"),
        };
        if let Some(key) = parse_key(jwk, pinned).map_err(|e| format!("{source}: {name}: {e}"))? {
            keys.push(key);
        }
    }
    Ok(keys)
}

fn b64(field: &str, value: Option<&str>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("`{field}` is not base64url"))
}

fn fixed(field: &str, value: Option<&str>, len: usize) -> Result<String, String> {
    let bytes = b64(field, value)?;
    if bytes.len() != len {
        return Err(format!("`{field}` must be {len} bytes, is {}", bytes.len()));
    }
    Ok(value.unwrap_or_default().to_owned())
}

/// Builds one key; `Ok(None)` for keys that are not for signature
/// verification or not usable with the pinned algorithms (RFC 7517 §5 says
/// to ignore what is not understood, so one exotic key does not break a set).
fn parse_key(jwk: RawJwk, pinned: &[Algorithm]) -> Result<Option<Key>, String> {
    if jwk.d.is_some() {
        return Err("contains private key material (`d`); publish public keys only".into());
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig")
        || jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
    {
        return Ok(None);
    }
    // Decide what the key is for before parsing its material, so a key kawal would
    // ignore anyway (another family, an encryption `alg`) cannot fail the whole set.
    let family_algs: &[Algorithm] = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => AlgorithmFamily::Rsa.algorithms(),
        ("EC", Some("P-256")) => &[Algorithm::ES256],
        ("EC", Some("P-384")) => &[Algorithm::ES384],
        ("OKP", Some("Ed25519")) => &[Algorithm::EdDSA],
        // Symmetric keys never come from a JWKS (HS256 only via its own secret file);
        // other curves and key types are not supported.
        _ => return Ok(None),
    };
    let own_alg = match jwk.alg.as_deref().map(str::parse::<Algorithm>) {
        None => None,
        Some(Ok(alg)) => Some(alg),
        Some(Err(_)) => return Ok(None),
    };
    let algs: Vec<Algorithm> = family_algs
        .iter()
        .copied()
        .filter(|a| pinned.contains(a) && own_alg.is_none_or(|own| own == *a))
        .collect();
    let Some(&first) = algs.first() else {
        return Ok(None);
    };
    let key = match first.family() {
        AlgorithmFamily::Rsa => rsa_key(&jwk)?,
        AlgorithmFamily::Ec if first == Algorithm::ES384 => ec_key(&jwk, 48)?,
        AlgorithmFamily::Ec => ec_key(&jwk, 32)?,
        _ => {
            // The verifier slices the first 32 bytes without checking; check here.
            let x = fixed("x", jwk.x.as_deref(), 32)?;
            DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?
        }
    };
    // Elliptic-curve points are checked only when a verifier is built; build one now
    // so a bad key fails the load instead of every request.
    if first.family() != AlgorithmFamily::Rsa && jsonwebtoken::crypto::verify("", b"", &key, first).is_err() {
        return Err("not a valid public key for its curve".into());
    }
    Ok(Some(Key {
        kid: jwk.kid,
        algs,
        key,
    }))
}

fn ec_key(jwk: &RawJwk, len: usize) -> Result<DecodingKey, String> {
    let x = fixed("x", jwk.x.as_deref(), len)?;
    let y = fixed("y", jwk.y.as_deref(), len)?;
    DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())
}

fn rsa_key(jwk: &RawJwk) -> Result<DecodingKey, String> {
    let n = b64("n", jwk.n.as_deref())?;
    let e = b64("e", jwk.e.as_deref())?;
    let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
    // `n` starts with a non-zero byte here, so this cannot underflow.
    let bits = match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if !RSA_BITS.contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits; {}..={} required",
            RSA_BITS.start(),
            RSA_BITS.end()
        ));
    }
    if e.is_empty() || e.len() > 8 {
        return Err("RSA exponent `e` has an invalid length".into());
    }
    Ok(DecodingKey::from_rsa_raw_components(&n, &e))
}
