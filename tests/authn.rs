//! Authorization by verified identity × method × path, and JWT validation,
//! on B's inbound, reached through A's outbound over mTLS.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::json;
use support::pki::Pki;
use support::*;

const A_ID: &str = "spiffe://shop.test/ns/default/sa/a";
const B_ID: &str = "spiffe://shop.test/ns/default/sa/b";
const INTRUDER_ID: &str = "spiffe://shop.test/ns/default/sa/intruder";

struct Mesh {
    _pki: Pki,
    key: KeyPair,
    app: Upstream,
    b: Proxy,
    a: Proxy,
    intruder: Proxy,
}

/// A sidecar with `name`'s certificate, calling B over mTLS.
async fn caller(pki: &Pki, name: &str, b: std::net::SocketAddr) -> Proxy {
    let tls = format!(
        "[upstreams.svc.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_identity = \"{B_ID}\"\n\
         [upstreams.svc.retry]\nattempts = 1",
        pki.path("ca.pem"),
        pki.path(&format!("{name}.crt")),
        pki.path(&format!("{name}.key")),
    );
    Proxy::start(&outbound_config(&[b], &tls, "")).await
}

async fn mesh(tag: &str) -> Mesh {
    let pki = Pki::new(tag);
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    pki.leaf("intruder", INTRUDER_ID);
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}]});
    std::fs::write(pki.path("jwks.json"), jwks.to_string()).unwrap();
    let app = Upstream::echo().await;
    let inbound = format!(
        r#"
[inbound.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[[inbound.allow]]
identities = ["{A_ID}"]
methods = ["GET"]
paths = ["/orders/*"]

[inbound.jwt]
issuer = "auth-service"
audiences = ["order-service"]
jwks_file = "{jwks}"
algorithms = ["ES256"]
max_lifetime = "15m"
"#,
        cert = pki.path("b.crt"),
        key = pki.path("b.key"),
        ca = pki.path("ca.pem"),
        jwks = pki.path("jwks.json"),
    );
    let b = Proxy::start(&inbound_config(app.addr, &inbound)).await;
    let a = caller(&pki, "a", b.inbound()).await;
    let intruder = caller(&pki, "intruder", b.inbound()).await;
    Mesh {
        _pki: pki,
        key,
        app,
        b,
        a,
        intruder,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl Mesh {
    fn token(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&self.key.serialize_der()),
        )
        .unwrap()
    }

    fn valid_token(&self) -> String {
        self.token(
            json!({"sub": "user-42", "iss": "auth-service", "aud": "order-service",
                          "iat": now() - 10, "exp": now() + 300}),
        )
    }

    async fn call(&self, via: &Proxy, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = client()
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", via.outbound()),
            )
            .header("host", "svc")
            .header("x-kawal-user", "spoofed-admin");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await.unwrap()
    }
}

#[tokio::test]
async fn policy_allows_by_identity_method_and_path_and_denies_the_rest() {
    let m = mesh("authz").await;
    let token = m.valid_token();

    let res = m.call(&m.a, "GET", "/orders/7", Some(&token)).await;
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-kawal-user"], "user-42",
        "spoofed user header must be replaced"
    );
    assert_eq!(echo["headers"]["x-kawal-peer-identity"], A_ID);
    assert!(
        echo["headers"].get("authorization").is_some(),
        "the token is the app's to see"
    );

    for (via, method, path) in [
        (&m.a, "POST", "/orders/7"),
        (&m.a, "GET", "/admin"),
        (&m.intruder, "GET", "/orders/7"),
    ] {
        let res = m.call(via, method, path, Some(&token)).await;
        assert_eq!(res.status(), 403, "{method} {path}");
        assert_eq!(res.headers()["x-kawal-error"], "forbidden");
        let body = res.text().await.unwrap();
        assert!(!body.contains("spiffe"), "a 403 names no internals: {body}");
    }
    // A path spelled to dodge the rule is normalized before the policy sees it.
    assert_eq!(
        m.call(&m.a, "GET", "/orders/../admin", Some(&token))
            .await
            .status(),
        403
    );
    assert_eq!(m.app.hits(), 1);

    let lines = m.b.wait_log_lines(5).await;
    assert_eq!(lines[0]["userId"], "user-42");
    assert_eq!(lines[0]["peerIdentity"], A_ID);
    assert_eq!(lines[3]["peerIdentity"], INTRUDER_ID);
    assert_eq!(lines[3]["error"], "forbidden");
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_logged_reason_and_never_reach_the_app() {
    let m = mesh("jwt").await;
    let base = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = json!({"sub": "user-42", "iss": "auth-service", "aud": "order-service",
                           "iat": now() - 10, "exp": now() + 300});
        edit(c.as_object_mut().unwrap());
        m.token(c)
    };
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({"sub": "user-42", "iss": "auth-service", "aud": "order-service",
                                      "iat": now(), "exp": now() + 60})
            .to_string()
        )
    );
    let with = |key: &str, value: serde_json::Value| {
        base(&|c| {
            c.insert(key.to_string(), value.clone());
        })
    };
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing_token"),
        (Some(with("exp", json!(now() - 600))), "expired"),
        (Some(with("nbf", json!(now() + 600))), "not_yet_valid"),
        (Some(with("aud", json!("billing-service"))), "wrong_audience"),
        (Some(with("iss", json!("evil"))), "wrong_issuer"),
        (Some(with("exp", json!(now() + 3600))), "lifetime_too_long"),
        (
            Some(base(&|c| {
                c.remove("exp");
            })),
            "no_exp",
        ),
        (Some(alg_none), "alg_not_allowed"),
        (Some("not.a!valid.token".into()), "malformed"),
    ];
    for (token, reason) in &cases {
        let res = m.call(&m.a, "GET", "/orders/1", token.as_deref()).await;
        assert_eq!(res.status(), 401, "{reason}");
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(res.headers()["x-kawal-error"], "unauthenticated");
    }
    assert_eq!(m.app.hits(), 0);
    let lines = m.b.wait_log_lines(cases.len()).await;
    for (line, (token, reason)) in lines.iter().zip(&cases) {
        let detail = line["errorDetail"].as_str().unwrap();
        assert!(detail.contains(reason), "expected {reason} in {line}");
        if let Some(t) = token {
            assert!(!line.to_string().contains(t.as_str()), "token logged: {line}");
        }
    }
}
