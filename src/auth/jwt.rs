//! JWT bearer-token validation against a JWKS (a local file, or fetched from a URL).
//!
//! [`JwtVerifier::verify`] takes the `Authorization` header and the current
//! time and returns the verified [`Claims`] or a [`JwtError`] whose
//! [`reason`](JwtError::reason) goes to the log. The rules, in order:
//!
//! 1. `Authorization: Bearer <token>` (scheme case-insensitive); anything
//!    else is `malformed`; no header is `missing_token` unless not required.
//! 2. Compact JWS only, at most [`MAX_TOKEN_BYTES`]. The header's `alg` must be
//!    in the pinned list (`none` never is); a `crit` header is rejected since
//!    kawal understands no extensions; `jku`/`x5u`/`jwk` are ignored.
//! 3. The key is found by `kid` among keys bound to that algorithm (see
//!    `keys`); a token without `kid` may use the only key of a one-key set.
//!    HS256 tokens are checked only with the configured secret.
//! 4. Signature, `iss` (equal) and `aud` (a string or an array naming one of
//!    the audiences) through `jsonwebtoken`'s `decode` and `Validation`.
//! 5. kawal's own claim checks, for what `Validation` does not cover or
//!    cannot be given a clock for: `exp` and `iat` required numbers, `nbf`
//!    optional; expiry and not-before with the leeway; `iat` not in the
//!    future; `exp - iat` at most `max_lifetime`; a non-empty string `sub`;
//!    each required claim equal to, or (for an array) containing, its value.
//!
//! The time is a parameter so tests need no clock (`Validation` reads the
//! system clock, so its time checks stay off). The token itself never
//! appears in an error.

mod keys;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderValue, Method};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Notify;

use self::keys::KeySet;
pub(crate) use self::keys::MAX_JWKS_BYTES;
use super::policy::{ClaimRoute, ClaimRoutes};

/// Longest token accepted; real tokens are well under 2 KiB, and this bounds the work
/// an unauthenticated caller can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Algorithms used when the config names none.
pub const DEFAULT_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];
/// Default longest accepted `exp - iat` (design notes: internal tokens are short-lived).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const REALM: &str = "kawal";

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A local file, read by [`JwtVerifier::load`] and [`JwtVerifier::reload`].
    File(PathBuf),
    /// An http(s) URL. The verifier never touches the network: the caller fetches
    /// (see [`super::jwks_url`]) and hands the bytes to [`JwtVerifier::load_fetched`]
    /// and [`JwtVerifier::reload_fetched`].
    Url(String),
}

impl JwksSource {
    /// How errors name the source: `JWKS file x.json` or `JWKS https://...`.
    fn describe(&self) -> String {
        match self {
            JwksSource::File(path) => format!("JWKS file {}", path.display()),
            JwksSource::Url(url) => format!("JWKS {url}"),
        }
    }
}

/// What the verifier needs from the config, in plain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values; the token must name at least one.
    pub audiences: Vec<String>,
    /// Where the public keys come from.
    pub jwks: JwksSource,
    /// Pinned algorithm names (RFC 7518 spelling, e.g. "RS256", "EdDSA").
    pub algorithms: Vec<String>,
    /// Secret for HS256; required if and only if "HS256" is pinned.
    pub hs256_secret_file: Option<PathBuf>,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: Duration,
    /// Clock-skew allowance.
    pub leeway: Duration,
    /// Whether a request without a token is rejected.
    pub required: bool,
    /// Claims that must equal (or, for arrays, contain) the given value.
    pub require_claims: BTreeMap<String, String>,
    /// Claims required on some methods × paths only.
    pub routes: Vec<ClaimRoute>,
}

impl JwtSettings {
    /// Settings with the defaults for everything but issuer, audiences and JWKS file
    /// (set `jwks` to [`JwksSource::Url`] afterwards for a URL).
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>, jwks_file: impl Into<PathBuf>) -> Self {
        JwtSettings {
            issuer: issuer.into(),
            audiences,
            jwks: JwksSource::File(jwks_file.into()),
            algorithms: DEFAULT_ALGORITHMS.iter().map(|a| a.to_string()).collect(),
            hs256_secret_file: None,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            leeway: DEFAULT_LEEWAY,
            required: true,
            require_claims: BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The subject (`sub`), for the access log's `userId` and the app header.
    /// Not checked for header safety: build the header with `HeaderValue::from_str`.
    pub sub: String,
    /// Every claim as sent, already verified.
    pub raw: Value,
}

/// Why a token was rejected. Carries nothing from the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No `Authorization` header while a token is required.
    #[error("no bearer token")]
    MissingToken,
    /// Not `Bearer <compact JWS>`, bad base64 or JSON, or a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// `alg` is `none` or not in the pinned list, or no key accepts it.
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    /// The header has a `crit` member.
    #[error("unsupported critical header parameter")]
    UnsupportedCrit,
    /// No configured key matches the token's `kid`.
    #[error("no key matches the token's kid")]
    UnknownKid,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// No `exp` claim.
    #[error("token has no exp")]
    NoExp,
    /// No `iat` claim (needed for the lifetime check).
    #[error("token has no iat")]
    NoIat,
    /// `exp` is past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token issued in the future")]
    IatInFuture,
    /// `exp - iat` exceeds the configured maximum.
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// `iss` missing or not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` missing or naming none of the configured audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// No non-empty string `sub`.
    #[error("token has no subject")]
    NoSub,
    /// A required claim (named; the name comes from the config) is absent or differs.
    #[error("required claim {0:?} missing or not matching")]
    MissingClaim(String),
}

impl JwtError {
    /// Stable snake_case reason for the log and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::MissingToken => "missing_token",
            JwtError::Malformed => "malformed",
            JwtError::TooLarge => "too_large",
            JwtError::AlgNotAllowed => "alg_not_allowed",
            JwtError::UnsupportedCrit => "unsupported_crit",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::BadSignature => "bad_signature",
            JwtError::NoExp => "no_exp",
            JwtError::NoIat => "no_iat",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IatInFuture => "iat_in_future",
            JwtError::LifetimeTooLong => "lifetime_too_long",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::NoSub => "no_sub",
            JwtError::MissingClaim(_) => "missing_claim",
        }
    }

    // Deliberately vaguer than `reason`: the caller learns the class of problem,
    // not which key, claim or setting kawal expected.
    fn description(&self) -> &'static str {
        match self {
            JwtError::MissingToken => "",
            JwtError::Malformed | JwtError::TooLarge | JwtError::UnsupportedCrit => "malformed token",
            JwtError::AlgNotAllowed | JwtError::UnknownKid | JwtError::BadSignature => {
                "signature not accepted"
            }
            JwtError::Expired => "token expired",
            JwtError::NotYetValid | JwtError::IatInFuture => "token not yet valid",
            JwtError::NoExp | JwtError::NoIat | JwtError::LifetimeTooLong => "token lifetime not accepted",
            JwtError::WrongIssuer | JwtError::WrongAudience => "token not issued for this service",
            JwtError::NoSub | JwtError::MissingClaim(_) => "required claim missing",
        }
    }
}

/// Verifies bearer tokens; cheap to share behind an `Arc`, keys swap on [`reload`](Self::reload).
pub struct JwtVerifier {
    settings: JwtSettings,
    algorithms: Vec<Algorithm>,
    /// One `jsonwebtoken` validation per pinned algorithm (it wants every
    /// algorithm of a validation in the key's family), built once.
    validations: Vec<(Algorithm, Validation)>,
    keys: ArcSwap<KeySet>,
    routes: ClaimRoutes,
    /// Signalled (for a URL source) when a token names an unknown `kid`; the
    /// refresh task waits on it and rate-limits what it does about it.
    refresh_wanted: Arc<Notify>,
}

impl std::fmt::Debug for JwtVerifier {
    // Hand-written so a debug print can never show the HS256 secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("settings", &self.settings)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

/// The pinned algorithms named in `[inbound.jwt] algorithms`, checked at
/// config load and again when a verifier is built from [`JwtSettings`].
pub fn parse_algorithms(names: &[String], hs256_secret: bool) -> Result<Vec<Algorithm>, String> {
    const ACCEPTED: &str =
        "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, or HS256 with hs256_secret_file";
    if names.is_empty() {
        return Err(format!("is empty: pin at least one of {ACCEPTED}"));
    }
    let mut out = Vec::new();
    for name in names {
        let alg = Algorithm::from_str(name)
            .map_err(|_| format!("unsupported algorithm {name:?}; accepted: {ACCEPTED}"))?;
        if alg.family() == AlgorithmFamily::Hmac && alg != Algorithm::HS256 {
            return Err(format!("{name:?} is not supported; only HS256 among HMAC"));
        }
        out.push(alg);
    }
    let hs = out.contains(&Algorithm::HS256);
    match (hs, hs256_secret) {
        (true, false) => Err("algorithms has HS256 but hs256_secret_file is not set".into()),
        (false, true) => Err("hs256_secret_file is set but HS256 is not in algorithms".into()),
        _ => Ok(out),
    }
}

impl JwtVerifier {
    /// Validates the settings and reads the key files; errors name the file.
    /// A [`JwksSource::Url`] must go through [`load_fetched`](Self::load_fetched).
    pub fn load(settings: JwtSettings) -> Result<Self, String> {
        let jwks = match &settings.jwks {
            JwksSource::File(path) => keys::read_jwks(path)?,
            JwksSource::Url(url) => return Err(format!("JWKS {url}: not fetched")),
        };
        Self::load_fetched(settings, &jwks)
    }

    /// As [`load`](Self::load), with the JWKS bytes already read or fetched.
    pub fn load_fetched(settings: JwtSettings, jwks: &[u8]) -> Result<Self, String> {
        if settings.issuer.is_empty() {
            return Err("jwt.issuer is empty".into());
        }
        if settings.audiences.is_empty() || settings.audiences.iter().any(String::is_empty) {
            return Err("jwt.audiences must list at least one non-empty audience".into());
        }
        let algorithms = parse_algorithms(&settings.algorithms, settings.hs256_secret_file.is_some())
            .map_err(|e| format!("jwt.algorithms: {e}"))?;
        let keys = keys::parse(
            jwks,
            &settings.jwks.describe(),
            settings.hs256_secret_file.as_deref(),
            &algorithms,
        )?;
        let routes = ClaimRoutes::new(&settings.routes);
        let validations = algorithms
            .iter()
            .map(|&alg| (alg, validation(&settings, alg)))
            .collect();
        Ok(JwtVerifier {
            settings,
            algorithms,
            validations,
            keys: ArcSwap::from_pointee(keys),
            routes,
            refresh_wanted: Arc::new(Notify::new()),
        })
    }

    /// Re-reads the key files; on error the keys in use stay unchanged.
    /// A [`JwksSource::Url`] must go through [`reload_fetched`](Self::reload_fetched).
    pub fn reload(&self) -> Result<(), String> {
        let jwks = match &self.settings.jwks {
            JwksSource::File(path) => keys::read_jwks(path)?,
            JwksSource::Url(url) => return Err(format!("JWKS {url}: not fetched")),
        };
        self.reload_fetched(&jwks)
    }

    /// Replaces the keys with those in `jwks` (and re-reads the HS256 secret);
    /// on error the keys in use stay unchanged.
    pub fn reload_fetched(&self, jwks: &[u8]) -> Result<(), String> {
        let s = &self.settings;
        let keys = keys::parse(
            jwks,
            &s.jwks.describe(),
            s.hs256_secret_file.as_deref(),
            &self.algorithms,
        )?;
        self.keys.store(keys.into());
        Ok(())
    }

    /// Notified when a token with an unknown `kid` arrived and the JWKS comes
    /// from a URL: the keys may have rotated. Only a signal; the request is
    /// still rejected, and the listener decides whether and when to refetch.
    pub fn refresh_wanted(&self) -> Arc<Notify> {
        self.refresh_wanted.clone()
    }

    /// Number of usable JWKS keys currently loaded (for a log line after reload).
    pub fn key_count(&self) -> usize {
        self.keys.load().keys.len()
    }

    /// Whether requests without a token are rejected.
    pub fn required(&self) -> bool {
        self.settings.required
    }

    /// [`verify`](Self::verify), plus the claims that `[[inbound.jwt.routes]]`
    /// require of this method and (normalized) path; such a route needs a
    /// token even where tokens are otherwise optional.
    pub fn verify_for(
        &self,
        authorization: Option<&HeaderValue>,
        method: &Method,
        path: &str,
        now: SystemTime,
    ) -> Result<Option<Claims>, JwtError> {
        let claims = self.verify(authorization, now)?;
        let mut required = self.routes.required(method, path).peekable();
        if required.peek().is_none() {
            return Ok(claims);
        }
        let claims = claims.ok_or(JwtError::MissingToken)?;
        let Value::Object(map) = &claims.raw else {
            return Err(JwtError::Malformed);
        };
        require(map, required)?;
        Ok(Some(claims))
    }

    /// Verifies the request's `Authorization` header at time `now`.
    /// `Ok(None)`: no header and a token is not required.
    pub fn verify(
        &self,
        authorization: Option<&HeaderValue>,
        now: SystemTime,
    ) -> Result<Option<Claims>, JwtError> {
        let Some(header) = authorization else {
            return if self.settings.required {
                Err(JwtError::MissingToken)
            } else {
                Ok(None)
            };
        };
        let token = bearer_token(header)?;
        let payload = self.check_signature(token).inspect_err(|e| {
            if *e == JwtError::UnknownKid && matches!(self.settings.jwks, JwksSource::Url(_)) {
                // One stored permit at most, however many requests: never a fetch per request.
                self.refresh_wanted.notify_one();
            }
        })?;
        self.check_claims(payload, now).map(Some)
    }

    /// The `WWW-Authenticate` value for a 401 caused by `err` (RFC 6750 §3).
    pub fn www_authenticate(&self, err: &JwtError) -> HeaderValue {
        let bare = HeaderValue::from_static("Bearer realm=\"kawal\"");
        if *err == JwtError::MissingToken {
            return bare;
        }
        let value = format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            err.description()
        );
        HeaderValue::from_str(&value).unwrap_or(bare)
    }

    /// Checks header, signature, issuer and audience; returns the now
    /// trusted claims.
    fn check_signature(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        // Exactly three parts, `head.body.signature`.
        let (head, rest) = token.split_once('.').ok_or(JwtError::Malformed)?;
        if rest.bytes().filter(|&b| b == b'.').count() != 1 {
            return Err(JwtError::Malformed);
        }
        let header = decode_object(head)?;
        // Any `crit`, even an invalid one: kawal implements no extension it could name.
        if header.contains_key("crit") {
            return Err(JwtError::UnsupportedCrit);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(JwtError::Malformed),
        };
        // `none` and anything unpinned are the same to us: not allowed.
        let alg = Algorithm::from_str(alg)
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or(JwtError::AlgNotAllowed)?;
        let validation = self
            .validations
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
            .ok_or(JwtError::AlgNotAllowed)?;
        let keys = self.keys.load();
        for key in candidates(&keys, alg, kid)? {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidIssuer => return Err(JwtError::WrongIssuer),
                    ErrorKind::InvalidAudience => return Err(JwtError::WrongAudience),
                    ErrorKind::MissingRequiredClaim(c) if c == "iss" => return Err(JwtError::WrongIssuer),
                    ErrorKind::MissingRequiredClaim(_) => return Err(JwtError::WrongAudience),
                    ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                        return Err(JwtError::Malformed)
                    }
                    // A bad signature, or a key the crypto backend refuses:
                    // it verifies nothing; try the next one.
                    _ => {}
                },
            }
        }
        Err(JwtError::BadSignature)
    }

    /// kawal's own claim checks, on claims whose signature, `iss` and `aud`
    /// `jsonwebtoken` has verified.
    fn check_claims(&self, claims: Map<String, Value>, now: SystemTime) -> Result<Claims, JwtError> {
        let s = &self.settings;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let leeway = s.leeway.as_secs_f64();
        let exp = numeric(&claims, "exp")?.ok_or(JwtError::NoExp)?;
        let iat = numeric(&claims, "iat")?.ok_or(JwtError::NoIat)?;
        if now >= exp + leeway {
            return Err(JwtError::Expired);
        }
        if numeric(&claims, "nbf")?.is_some_and(|nbf| nbf > now + leeway) {
            return Err(JwtError::NotYetValid);
        }
        // Without this, a far-future `iat` would make any lifetime look short.
        if iat > now + leeway {
            return Err(JwtError::IatInFuture);
        }
        if exp < iat {
            return Err(JwtError::Malformed);
        }
        if exp - iat > s.max_lifetime.as_secs_f64() {
            return Err(JwtError::LifetimeTooLong);
        }
        let sub = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(JwtError::NoSub),
        };
        require(&claims, &s.require_claims)?;
        Ok(Claims {
            sub,
            raw: Value::Object(claims),
        })
    }
}

/// `jsonwebtoken`'s checks for `alg`: the issuer and one of the audiences,
/// both required. Its time checks are off: they read the system clock, and
/// kawal's own take `now` and also bound the lifetime.
fn validation(settings: &JwtSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["iss", "aud"]);
    v.set_issuer(&[&settings.issuer]);
    v.set_audience(&settings.audiences);
    v
}

/// Each `(name, value)`: the claim equals the value, or is an array holding it.
fn require<'a>(
    claims: &Map<String, Value>,
    required: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), JwtError> {
    for (name, want) in required {
        let ok = match claims.get(name) {
            Some(Value::String(v)) => v == want,
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err(JwtError::MissingClaim(name.clone()));
        }
    }
    Ok(())
}

/// The keys that may verify a token with this `alg` and `kid`, never empty.
fn candidates<'k>(
    keys: &'k KeySet,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Vec<&'k DecodingKey>, JwtError> {
    let found: Vec<&DecodingKey> = if alg.family() == AlgorithmFamily::Hmac {
        keys.hmac.iter().collect()
    } else {
        let by_kid: Vec<_> = match kid {
            Some(kid) => keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None if keys.keys.len() == 1 => keys.keys.iter().collect(),
            None => Vec::new(),
        };
        if by_kid.is_empty() {
            return Err(JwtError::UnknownKid);
        }
        by_kid
            .into_iter()
            .filter(|k| k.algs.contains(&alg))
            .map(|k| &k.key)
            .collect()
    };
    if found.is_empty() {
        // e.g. a `kid` naming an EC key on an RS256 token.
        return Err(JwtError::AlgNotAllowed);
    }
    Ok(found)
}

fn bearer_token(header: &HeaderValue) -> Result<&str, JwtError> {
    let value = header.to_str().map_err(|_| JwtError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(JwtError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtError::Malformed);
    }
    let token = token.trim_start_matches(' ');
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    // Base64url and dots only: anything else is not a compact JWS.
    let charset_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    if token.is_empty() || !token.bytes().all(charset_ok) {
        return Err(JwtError::Malformed);
    }
    Ok(token)
}

fn decode_object(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// A NumericDate claim: absent is `None`; present but not a finite, non-negative number is malformed.
fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(Some)
            .ok_or(JwtError::Malformed),
    }
}
