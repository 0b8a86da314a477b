//! JWT parsing: an arbitrary `Authorization` value against a verifier with
//! one EC key. Never panics; nothing but a validly signed token passes.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use http::HeaderValue;
use kawal::auth::{JwtSettings, JwtVerifier};
use libfuzzer_sys::fuzz_target;

// RFC 7517 appendix A.1's public EC key: no signature by it can be forged.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"1",
  "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let mut s = JwtSettings::new("auth-service", vec!["order-service".into()], "jwks.json");
        s.algorithms = vec!["ES256".into()];
        JwtVerifier::load_fetched(s, JWKS.as_bytes()).expect("the fuzz JWKS loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let verified = verifier().verify(Some(&value), SystemTime::now());
    assert!(verified.is_err(), "a token passed without a key's signature: {value:?}");
    let _ = verifier().www_authenticate(&verified.unwrap_err());
});
