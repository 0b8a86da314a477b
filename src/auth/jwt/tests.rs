//! Unit tests for the JWT verifier, with keys generated at test time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::{json, Value};

use super::*;
use crate::matcher::{Methods, Paths};

const NOW_SECS: u64 = 1_750_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kawal-jwt-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ec_jwk(key: &KeyPair, kid: &str) -> Value {
    // Uncompressed SEC1 point: 0x04 || x || y.
    let raw = key.public_key_raw();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
           "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
}

fn ed_jwk(key: &KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(key.public_key_raw())})
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

struct Fixture {
    dir: TempDir,
    ec: KeyPair,
    ed: KeyPair,
    jwks: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new();
        let ec = KeyPair::generate().expect("ec key");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed key");
        let jwks = dir.write("jwks.json", jwks(&[ec_jwk(&ec, "ec-1"), ed_jwk(&ed, "ed-1")]));
        Fixture { dir, ec, ed, jwks }
    }

    fn settings(&self) -> JwtSettings {
        JwtSettings::new("auth-service", vec!["order-service".into()], &self.jwks)
    }

    fn verifier(&self) -> JwtVerifier {
        JwtVerifier::load(self.settings()).expect("load")
    }

    fn with(&self, edit: impl FnOnce(&mut JwtSettings)) -> JwtVerifier {
        let mut s = self.settings();
        edit(&mut s);
        JwtVerifier::load(s).expect("load")
    }

    fn es256(&self, kid: Option<&str>, claims: &Value) -> String {
        sign(
            Algorithm::ES256,
            kid,
            claims,
            &EncodingKey::from_ec_der(&self.ec.serialize_der()),
        )
    }

    fn eddsa(&self, kid: Option<&str>, claims: &Value) -> String {
        sign(
            Algorithm::EdDSA,
            kid,
            claims,
            &EncodingKey::from_ed_der(&self.ed.serialize_der()),
        )
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

/// Valid claims at `NOW_SECS`: issued a minute ago, 10 minutes of life.
fn claims() -> Value {
    json!({"sub": "user-42", "iss": "auth-service", "aud": "order-service",
           "iat": NOW_SECS - 60, "exp": NOW_SECS + 540})
}

fn with_claims(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    if let Some(map) = c.as_object_mut() {
        edit(map);
    }
    c
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

fn check(v: &JwtVerifier, token: &str) -> Result<Option<Claims>, JwtError> {
    v.verify(Some(&bearer(token)), now())
}

fn reason(v: &JwtVerifier, token: &str) -> &'static str {
    match check(v, token) {
        Ok(c) => panic!("token accepted: {c:?}"),
        Err(e) => {
            // Errors carry nothing from the token.
            assert!(!e.to_string().contains(token));
            e.reason()
        }
    }
}

fn sub(v: &JwtVerifier, token: &str) -> String {
    check(v, token).expect("valid").expect("claims").sub
}

#[test]
fn valid_tokens_give_sub() {
    let f = Fixture::new();
    let v = f.verifier();
    assert_eq!(v.key_count(), 2);
    assert_eq!(sub(&v, &f.es256(Some("ec-1"), &claims())), "user-42");
    assert_eq!(sub(&v, &f.eddsa(Some("ed-1"), &claims())), "user-42");
    let claims = check(&v, &f.es256(Some("ec-1"), &claims()))
        .expect("ok")
        .expect("some");
    assert_eq!(claims.raw["aud"], "order-service");
}

#[test]
fn scheme_is_case_insensitive_and_aud_may_be_an_array() {
    let f = Fixture::new();
    let v = f.verifier();
    let token = f.es256(
        Some("ec-1"),
        &with_claims(|c| {
            c.insert("aud".into(), json!(["other", "order-service"]));
        }),
    );
    let header = HeaderValue::from_str(&format!("bearer {token}")).expect("header");
    assert!(v.verify(Some(&header), now()).is_ok());
}

#[test]
fn time_claims() {
    let f = Fixture::new();
    let v = f.verifier();
    let tok = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| f.es256(Some("ec-1"), &with_claims(edit));
    let expired = tok(&|c| {
        c.insert("exp".into(), json!(NOW_SECS - 60));
        c.insert("iat".into(), json!(NOW_SECS - 600));
    });
    assert_eq!(reason(&v, &expired), "expired");
    // Within the 30 s leeway.
    let just_expired = tok(&|c| {
        c.insert("exp".into(), json!(NOW_SECS - 10));
    });
    assert!(check(&v, &just_expired).is_ok());
    let nbf = tok(&|c| {
        c.insert("nbf".into(), json!(NOW_SECS + 300));
    });
    assert_eq!(reason(&v, &nbf), "not_yet_valid");
    let iat_future = tok(&|c| {
        c.insert("iat".into(), json!(NOW_SECS + 300));
    });
    assert_eq!(reason(&v, &iat_future), "iat_in_future");
    let no_exp = tok(&|c| {
        c.remove("exp");
    });
    assert_eq!(reason(&v, &no_exp), "no_exp");
    let no_iat = tok(&|c| {
        c.remove("iat");
    });
    assert_eq!(reason(&v, &no_iat), "no_iat");
    let string_exp = tok(&|c| {
        c.insert("exp".into(), json!((NOW_SECS + 100).to_string()));
    });
    assert_eq!(reason(&v, &string_exp), "malformed");
    let float_exp = tok(&|c| {
        c.insert("exp".into(), json!(NOW_SECS as f64 + 100.5));
    });
    assert!(check(&v, &float_exp).is_ok());
}

#[test]
fn lifetime_over_the_maximum_is_rejected() {
    let f = Fixture::new();
    let v = f.verifier();
    let hour = f.es256(
        Some("ec-1"),
        &with_claims(|c| {
            c.insert("iat".into(), json!(NOW_SECS - 1800));
            c.insert("exp".into(), json!(NOW_SECS + 1800));
        }),
    );
    assert_eq!(reason(&v, &hour), "lifetime_too_long");
    let relaxed = f.with(|s| s.max_lifetime = Duration::from_secs(3600));
    assert!(check(&relaxed, &hour).is_ok());
}

#[test]
fn issuer_and_audience() {
    let f = Fixture::new();
    let v = f.verifier();
    let tok = |k: &str, val: Value| {
        f.es256(
            Some("ec-1"),
            &with_claims(|c| {
                if val.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.into(), val);
                }
            }),
        )
    };
    assert_eq!(reason(&v, &tok("iss", json!("evil"))), "wrong_issuer");
    assert_eq!(reason(&v, &tok("iss", Value::Null)), "wrong_issuer");
    assert_eq!(
        reason(&v, &tok("aud", json!("payment-service"))),
        "wrong_audience"
    );
    assert_eq!(reason(&v, &tok("aud", json!(["a", "b"]))), "wrong_audience");
    assert_eq!(reason(&v, &tok("aud", Value::Null)), "wrong_audience");
    assert_eq!(reason(&v, &tok("sub", Value::Null)), "no_sub");
    assert_eq!(reason(&v, &tok("sub", json!(""))), "no_sub");
}

#[test]
fn alg_none_is_always_rejected() {
    let f = Fixture::new();
    let v = f.verifier();
    let payload = b64(claims().to_string().as_bytes());
    assert_eq!(
        reason(&v, &format!("eyJhbGciOiJub25lIn0.{payload}.")),
        "alg_not_allowed"
    );
    let none_upper = b64(br#"{"alg":"NONE","kid":"ec-1"}"#);
    assert_eq!(reason(&v, &format!("{none_upper}.{payload}.")), "alg_not_allowed");
}

#[test]
fn unpinned_algorithm_is_rejected() {
    let f = Fixture::new();
    let v = f.with(|s| s.algorithms = vec!["ES256".into()]);
    assert_eq!(v.key_count(), 1);
    assert_eq!(reason(&v, &f.eddsa(Some("ed-1"), &claims())), "alg_not_allowed");
}

#[test]
fn hs256_key_confusion_is_rejected() {
    let f = Fixture::new();
    let v = f.verifier();
    // The attacker signs with what they can see: the public key and the JWKS text.
    let jwks_text = std::fs::read(&f.jwks).expect("jwks");
    for secret in [f.ec.public_key_raw(), &jwks_text[..]] {
        let token = sign(
            Algorithm::HS256,
            Some("ec-1"),
            &claims(),
            &EncodingKey::from_secret(secret),
        );
        assert_eq!(reason(&v, &token), "alg_not_allowed");
    }
    // Even with HS256 enabled, only the configured secret verifies HS256.
    let secret_file = f.dir.write("secret", [SECRET, b"\n"].concat());
    let hs = f.with(|s| {
        s.algorithms.push("HS256".into());
        s.hs256_secret_file = Some(secret_file.clone());
    });
    let forged = sign(
        Algorithm::HS256,
        Some("ec-1"),
        &claims(),
        &EncodingKey::from_secret(f.ec.public_key_raw()),
    );
    assert_eq!(reason(&hs, &forged), "bad_signature");
    let good = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(SECRET),
    );
    assert_eq!(sub(&hs, &good), "user-42");
}

#[test]
fn keys_named_in_the_token_are_never_used() {
    let f = Fixture::new();
    let v = f.verifier();
    // The attacker's own key, offered in every way a JWS header can offer one.
    let attacker = KeyPair::generate().expect("key");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(ec_jwk(&attacker, "evil")).expect("jwk");
    let signed_with = |header: Header| {
        jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_ec_der(&attacker.serialize_der()),
        )
        .expect("encode")
    };
    let base = || Header {
        kid: Some("ec-1".into()),
        ..Header::new(Algorithm::ES256)
    };
    let offers = [
        Header {
            jwk: Some(jwk.clone()),
            ..base()
        },
        Header {
            jku: Some("https://evil.example/jwks.json".into()),
            ..base()
        },
        Header {
            x5u: Some("https://evil.example/cert.pem".into()),
            ..base()
        },
        Header {
            jwk: Some(jwk),
            kid: Some("evil".into()),
            ..base()
        },
    ];
    for (i, header) in offers.into_iter().enumerate() {
        let r = reason(&v, &signed_with(header));
        assert!(matches!(r, "bad_signature" | "unknown_kid"), "offer {i}: {r}");
    }
}

#[test]
fn key_lookup_by_kid() {
    let f = Fixture::new();
    let v = f.verifier();
    assert_eq!(reason(&v, &f.es256(Some("nope"), &claims())), "unknown_kid");
    // Two keys: a token without kid cannot pick one.
    assert_eq!(reason(&v, &f.es256(None, &claims())), "unknown_kid");
    // A kid naming a key of another family.
    assert_eq!(reason(&v, &f.es256(Some("ed-1"), &claims())), "alg_not_allowed");
    // Same kid, signed by a different key.
    let other = KeyPair::generate().expect("key");
    let forged = sign(
        Algorithm::ES256,
        Some("ec-1"),
        &claims(),
        &EncodingKey::from_ec_der(&other.serialize_der()),
    );
    assert_eq!(reason(&v, &forged), "bad_signature");

    let single = f.dir.write("single.json", jwks(&[ec_jwk(&f.ec, "ec-1")]));
    let v = f.with(|s| s.jwks = JwksSource::File(single.clone()));
    assert_eq!(sub(&v, &f.es256(None, &claims())), "user-42");
}

#[test]
fn required_claims() {
    let f = Fixture::new();
    let v = f.with(|s| {
        s.require_claims
            .insert("permissions".into(), "orders:write".into());
    });
    let tok = |val: Option<Value>| {
        f.es256(
            Some("ec-1"),
            &with_claims(|c| {
                if let Some(val) = val {
                    c.insert("permissions".into(), val);
                }
            }),
        )
    };
    assert!(check(&v, &tok(Some(json!("orders:write")))).is_ok());
    assert!(check(&v, &tok(Some(json!(["orders:read", "orders:write"])))).is_ok());
    assert_eq!(reason(&v, &tok(Some(json!("orders:read")))), "missing_claim");
    assert_eq!(reason(&v, &tok(Some(json!(["orders:read"])))), "missing_claim");
    assert_eq!(reason(&v, &tok(Some(json!(true)))), "missing_claim");
    let err = check(&v, &tok(None)).expect_err("absent");
    assert_eq!(err, JwtError::MissingClaim("permissions".into()));
}

#[test]
fn route_claims_apply_to_their_methods_and_paths_only() {
    let f = Fixture::new();
    let route = |methods: Option<&[&str]>, paths: &[&str], claim: &str| ClaimRoute {
        methods: methods
            .map(|m| Methods::try_from(m.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()),
        paths: Some(Paths::try_from(paths.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()),
        require_claims: [("permissions".to_string(), claim.to_string())].into(),
    };
    let v = f.with(|s| {
        s.required = false;
        s.routes = vec![
            route(Some(&["POST", "DELETE"]), &["/orders/*"], "orders:write"),
            route(None, &["/orders/admin/*"], "orders:admin"),
        ];
    });
    let token = |perms: Value| {
        f.es256(
            Some("ec-1"),
            &with_claims(|c| drop(c.insert("permissions".into(), perms))),
        )
    };
    let reader = bearer(&token(json!(["orders:read"])));
    let writer = bearer(&token(json!(["orders:read", "orders:write"])));
    let at = |h: Option<&HeaderValue>, method: Method, path: &str| {
        v.verify_for(h, &method, path, now()).map(|c| c.map(|c| c.sub))
    };
    let user = Ok(Some("user-42".to_string()));
    assert_eq!(at(Some(&reader), Method::GET, "/orders/1"), user);
    assert_eq!(at(Some(&writer), Method::POST, "/orders/1"), user);
    assert_eq!(
        at(Some(&reader), Method::POST, "/orders/1"),
        Err(JwtError::MissingClaim("permissions".into()))
    );
    // Every matching route applies: writing is not enough under /orders/admin/.
    assert_eq!(
        at(Some(&writer), Method::POST, "/orders/admin/x"),
        Err(JwtError::MissingClaim("permissions".into()))
    );
    // Tokens are optional here, except where a route asks for claims.
    assert_eq!(at(None, Method::GET, "/orders/1"), Ok(None));
    assert_eq!(at(None, Method::DELETE, "/orders/1"), Err(JwtError::MissingToken));
}

#[test]
fn missing_and_malformed_headers() {
    let f = Fixture::new();
    let v = f.verifier();
    assert_eq!(v.verify(None, now()), Err(JwtError::MissingToken));
    let optional = f.with(|s| s.required = false);
    assert_eq!(optional.verify(None, now()), Ok(None));
    // Present but bad is rejected even when a token is optional.
    for raw in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer !!.??.**",
        "token",
    ] {
        let header = HeaderValue::from_static(raw);
        assert_eq!(
            optional.verify(Some(&header), now()),
            Err(JwtError::Malformed),
            "{raw}"
        );
    }
    let valid = f.es256(Some("ec-1"), &claims());
    let mut parts = valid.split('.');
    let (h, p, s) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    assert_eq!(reason(&v, &format!("{h}x.{p}.{s}")), "malformed");
    assert_eq!(reason(&v, &format!("{h}.{p}.{s}x")), "malformed");
    assert_eq!(
        reason(&v, &format!("{h}.{}.{s}", b64(b"{\"sub\":\"admin\"}"))),
        "bad_signature"
    );
    let non_ascii = HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque header");
    assert_eq!(v.verify(Some(&non_ascii), now()), Err(JwtError::Malformed));
    let huge = format!("{h}.{}.{s}", "A".repeat(100 * 1024));
    assert_eq!(reason(&v, &huge), "too_large");
    let crit = b64(br#"{"alg":"ES256","kid":"ec-1","crit":["exp"]}"#);
    assert_eq!(reason(&v, &format!("{crit}.{p}.{s}")), "unsupported_crit");
}

#[test]
fn reload_picks_up_rotated_keys_and_keeps_old_ones_on_error() {
    let f = Fixture::new();
    let v = f.verifier();
    let next = KeyPair::generate().expect("key");
    let token = sign(
        Algorithm::ES256,
        Some("ec-2"),
        &claims(),
        &EncodingKey::from_ec_der(&next.serialize_der()),
    );
    assert_eq!(reason(&v, &token), "unknown_kid");

    std::fs::write(&f.jwks, jwks(&[ec_jwk(&f.ec, "ec-1"), ec_jwk(&next, "ec-2")])).expect("write");
    v.reload().expect("reload");
    assert_eq!(sub(&v, &token), "user-42");

    std::fs::write(&f.jwks, "{ not json").expect("write");
    let err = v.reload().expect_err("broken file");
    assert!(err.contains("jwks.json"), "{err}");
    assert_eq!(sub(&v, &token), "user-42");
}

#[test]
fn www_authenticate_values() {
    let f = Fixture::new();
    let v = f.verifier();
    assert_eq!(
        v.www_authenticate(&JwtError::MissingToken),
        "Bearer realm=\"kawal\""
    );
    assert_eq!(
        v.www_authenticate(&JwtError::Expired),
        "Bearer realm=\"kawal\", error=\"invalid_token\", error_description=\"token expired\""
    );
    let claim = v.www_authenticate(&JwtError::MissingClaim("permissions".into()));
    assert!(!claim.to_str().unwrap_or("permissions").contains("permissions"));
}

fn load_err(f: &Fixture, edit: impl FnOnce(&mut JwtSettings)) -> String {
    let mut s = f.settings();
    edit(&mut s);
    JwtVerifier::load(s).expect_err("must not load")
}

fn jwks_err(f: &Fixture, key: Value) -> String {
    let path = f.dir.write("bad.json", jwks(&[key]));
    load_err(f, |s| s.jwks = JwksSource::File(path))
}

#[test]
fn bad_settings_are_rejected_at_load() {
    let f = Fixture::new();
    let secret = f.dir.write("secret", SECRET);
    let short = f.dir.write("short", "too-short\n");
    assert!(load_err(&f, |s| s.algorithms = vec!["none".into()]).contains("none"));
    assert!(load_err(&f, |s| s.algorithms = vec![]).contains("empty"));
    assert!(load_err(&f, |s| s.algorithms = vec!["HS512".into()]).contains("HS512"));
    assert!(load_err(&f, |s| s.algorithms.push("HS256".into())).contains("hs256_secret_file"));
    assert!(load_err(&f, |s| s.hs256_secret_file = Some(secret)).contains("HS256"));
    let e = load_err(&f, |s| {
        s.algorithms = vec!["HS256".into()];
        s.hs256_secret_file = Some(short);
    });
    assert!(e.contains("short"), "{e}");
    assert!(load_err(&f, |s| s.audiences.clear()).contains("audiences"));
    assert!(load_err(&f, |s| s.issuer.clear()).contains("issuer"));
    let e = load_err(&f, |s| s.jwks = JwksSource::File("/nonexistent/keys.json".into()));
    assert!(e.contains("/nonexistent/keys.json"), "{e}");
}

#[test]
fn bad_jwks_keys_are_rejected_without_panicking() {
    let f = Fixture::new();
    let mut private = ec_jwk(&f.ec, "p");
    private["d"] = json!("c2VjcmV0");
    assert!(jwks_err(&f, private).contains("private"));
    let mut short_ed = ed_jwk(&f.ed, "e");
    short_ed["x"] = json!(b64(&[1, 2, 3]));
    assert!(jwks_err(&f, short_ed).contains("32 bytes"));
    let mut off_curve = ec_jwk(&f.ec, "c");
    off_curve["y"] = json!(b64(&[7; 32]));
    assert!(jwks_err(&f, off_curve).contains("not a valid"));
    assert!(jwks_err(&f, rsa_tiny()).contains("512 bits"));
    let empty_rsa = json!({"kty": "RSA", "kid": "r", "n": "", "e": "AQAB"});
    assert!(jwks_err(&f, empty_rsa).contains("0 bits"));
    // Only unusable keys (encryption, symmetric, unknown curve): nothing to verify with.
    let enc = json!({"kty": "RSA", "use": "enc", "n": b64(&[0xc3; 256]), "e": "AQAB"});
    let oct = json!({"kty": "oct", "k": b64(SECRET)});
    let x448 = json!({"kty": "OKP", "crv": "X448", "x": "AA"});
    let oaep = json!({"kty": "RSA", "alg": "RSA-OAEP", "n": b64(&[0xc3; 16]), "e": "AQAB"});
    let path = f.dir.write("unusable.json", jwks(&[enc, oct, x448, oaep]));
    assert!(load_err(&f, |s| s.jwks = JwksSource::File(path)).contains("no usable key"));
    let path = f.dir.write("notaset.json", "[]");
    assert!(load_err(&f, |s| s.jwks = JwksSource::File(path)).contains("not a JWK set"));
}

#[test]
fn rsa_jwk_is_accepted() {
    // A 2048-bit modulus shape (not a real key): it loads and bad signatures are just bad.
    let f = Fixture::new();
    let mut n = vec![0xc3; 256];
    n[255] |= 1;
    let rsa = json!({"kty": "RSA", "kid": "r", "alg": "RS256", "n": b64(&n), "e": "AQAB"});
    let path = f.dir.write("rsa.json", jwks(&[rsa]));
    let v = f.with(|s| s.jwks = JwksSource::File(path));
    assert_eq!(v.key_count(), 1);
    let header = b64(br#"{"alg":"RS256","kid":"r"}"#);
    let token = format!(
        "{header}.{}.{}",
        b64(claims().to_string().as_bytes()),
        b64(&[1; 256])
    );
    assert_eq!(reason(&v, &token), "bad_signature");
    // With RSA not pinned, the same key is ignored rather than an error.
    let path = f
        .dir
        .write("mixed.json", jwks(&[rsa_tiny(), ec_jwk(&f.ec, "ec-1")]));
    let v = f.with(|s| {
        s.jwks = JwksSource::File(path);
        s.algorithms = vec!["ES256".into()];
    });
    assert_eq!(v.key_count(), 1);
}

fn rsa_tiny() -> Value {
    json!({"kty": "RSA", "kid": "r", "n": b64(&[0xc3; 64]), "e": "AQAB"})
}

#[test]
fn truncated_or_altered_tokens_never_pass_or_panic() {
    let f = Fixture::new();
    let v = f.verifier();
    let token = f.eddsa(Some("ed-1"), &claims());
    // A sample of positions keeps this fast in debug builds; the last few
    // characters (signature padding bits) are always included.
    let positions = (0..token.len())
        .step_by(9)
        .chain(token.len().saturating_sub(3)..token.len());
    for i in positions {
        assert!(check(&v, &token[..i]).is_err(), "truncated at {i}");
        for c in ["B", "C", "."] {
            let mut altered = token.clone();
            altered.replace_range(i..=i, c);
            if altered != token {
                assert!(check(&v, &altered).is_err(), "position {i} -> {c}");
            }
        }
    }
}
