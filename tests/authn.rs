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
    Proxy::start(&outbound_config(&[b], &tls, ROOMY_LIMITS)).await
}

/// Room for a 100 KB bearer token, so that it reaches B's JWT check (with the
/// default limits it is refused earlier, with 431, as any oversized header).
const ROOMY_LIMITS: &str = "[limits]\nmax_request_head = \"256KiB\"\nmax_header = \"128KiB\"";

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

[[inbound.jwt.routes]]
paths = ["/orders/vip/*"]
require_claims = {{ tier = "gold" }}

{ROOMY_LIMITS}
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
        self.signed(claims, "k1")
    }

    /// A valid token, naming key `kid` (the JWKS has only "k1").
    fn token_with_kid(&self, kid: &str) -> String {
        self.signed(
            json!({"sub": "user-42", "iss": "auth-service", "aud": "order-service",
                   "iat": now() - 10, "exp": now() + 300}),
            kid,
        )
    }

    fn signed(&self, claims: serde_json::Value, kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&self.key.serialize_der()),
        )
        .unwrap()
    }

    fn valid_token(&self) -> String {
        self.token_with_kid("k1")
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
    assert_eq!(lines[0]["authzRule"], 0, "the allowing rule is on record");
    assert!(lines[1].get("authzRule").is_none(), "{}", lines[1]);
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
    // HS256 "signed" with what an attacker can read: B's public JWKS key.
    let key_confusion = jsonwebtoken::encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &json!({"sub": "admin", "iss": "auth-service", "aud": "order-service", "iat": now(), "exp": now() + 60}),
        &EncodingKey::from_secret(m.key.public_key_raw()),
    )
    .unwrap();
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
        (Some(m.token_with_kid("k9")), "unknown_kid"),
        (Some(key_confusion), "alg_not_allowed"),
        (
            Some(format!(
                "{}.{}.sig",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1"}"#),
                "A".repeat(100 * 1024)
            )),
            "too_large",
        ),
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

#[tokio::test]
async fn a_route_can_require_a_claim() {
    let m = mesh("jwt-route").await;
    let gold = m.token(
        json!({"sub": "user-42", "iss": "auth-service", "aud": "order-service",
                              "iat": now() - 10, "exp": now() + 300, "tier": "gold"}),
    );
    let plain = m.valid_token();
    let status = |path: &'static str, token: &str| {
        let token = token.to_string();
        let m = &m;
        async move { m.call(&m.a, "GET", path, Some(&token)).await.status() }
    };
    assert_eq!(status("/orders/vip/1", &gold).await, 200);
    assert_eq!(status("/orders/1", &plain).await, 200);
    assert_eq!(status("/orders/vip/1", &plain).await, 401);
    assert_eq!(m.app.hits(), 2);
    let lines = m.b.wait_log_lines(3).await;
    let refused = lines.iter().find(|l| l["statusCode"] == 401).expect("a 401 line");
    assert!(
        refused["errorDetail"].as_str().unwrap().contains("missing_claim"),
        "{refused}"
    );
}

// ---- JWKS from a URL ------------------------------------------------------

/// The public half of `key` as an ES256 JWK named `kid`.
fn ec_jwk(key: &KeyPair, kid: &str) -> serde_json::Value {
    let raw = key.public_key_raw();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
           "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])})
}

/// A valid token for the JWKS tests, signed by `key` and naming `kid`.
fn signed(key: &KeyPair, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let claims = json!({"sub": "user-7", "iss": "auth-service", "aud": "order-service",
                        "iat": now() - 10, "exp": now() + 300});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&key.serialize_der())).unwrap()
}

/// An identity provider's JWKS endpoint: answers every request with the
/// current (status, body), which a test can swap; `hits()` counts fetches.
struct JwksServer {
    server: Upstream,
    answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
}

impl JwksServer {
    async fn start(keys: &[serde_json::Value]) -> JwksServer {
        let answer = std::sync::Arc::new(std::sync::Mutex::new((200, json!({"keys": keys}).to_string())));
        let state = answer.clone();
        let server = Upstream::start(move |_req| {
            let (code, body) = state.lock().unwrap().clone();
            async move {
                let mut res = http::Response::new(full(body));
                *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
                res
            }
        })
        .await;
        JwksServer { server, answer }
    }

    fn serve(&self, code: u16, keys: &[serde_json::Value]) {
        *self.answer.lock().unwrap() = (code, json!({"keys": keys}).to_string());
    }

    fn hits(&self) -> usize {
        self.server.hits()
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.server.addr)
    }
}

/// An inbound kawal (plaintext, no policy) verifying tokens against `jwks`.
fn url_config(app: &Upstream, jwks: &JwksServer, reload_interval: &str) -> String {
    jwks_url_config(
        app,
        &jwks.url(),
        &format!("reload_interval = \"{reload_interval}\""),
    )
}

/// An inbound kawal verifying tokens against the JWKS at `url`; `extra`: more `[inbound.jwt]` keys.
fn jwks_url_config(app: &Upstream, url: &str, extra: &str) -> String {
    let jwt = format!(
        "[inbound.jwt]\nissuer = \"auth-service\"\naudiences = [\"order-service\"]\n\
         jwks_url = \"{url}\"\nalgorithms = [\"ES256\"]\n{extra}\n"
    );
    inbound_config(app.addr, &jwt)
}

/// Starts kawal with `toml`, which must fail; the error's text.
async fn start_error(toml: &str) -> String {
    let cfg = kawal::config::Config::from_toml_str(toml, "test.toml").unwrap();
    let sink = kawal::log::Sink::Memory(Default::default());
    match kawal::start(cfg, sink).await {
        Ok(_) => panic!("started without a JWKS"),
        Err(e) => {
            assert!(matches!(e, kawal::StartError::Auth(_)), "{e:?}");
            e.to_string()
        }
    }
}

async fn inbound_status(p: &Proxy, token: &str) -> u16 {
    client()
        .get(format!("http://{}/orders/1", p.inbound()))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn jwks_url_keys_verify_tokens() {
    let key = KeyPair::generate().unwrap();
    let jwks = JwksServer::start(&[ec_jwk(&key, "k1")]).await;
    let app = Upstream::echo().await;
    let p = Proxy::start(&url_config(&app, &jwks, "1h")).await;
    assert_eq!(jwks.hits(), 1, "fetched once at start");

    let res = client()
        .get(format!("http://{}/orders/1", p.inbound()))
        .header("authorization", format!("Bearer {}", signed(&key, "k1")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echo["headers"]["x-kawal-user"], "user-7");
    let other = KeyPair::generate().unwrap();
    assert_eq!(
        inbound_status(&p, &signed(&other, "k1")).await,
        401,
        "wrong key, same kid"
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(jwks.hits(), 1, "a known kid never causes a fetch");
    p.shutdown().await;
}

#[tokio::test]
async fn unknown_kid_triggers_one_rate_limited_early_refresh() {
    let old = KeyPair::generate().unwrap();
    let new = KeyPair::generate().unwrap();
    let jwks = JwksServer::start(&[ec_jwk(&old, "k1")]).await;
    let app = Upstream::echo().await;
    // An hour between regular refreshes: only the unknown-kid refresh can explain a fetch.
    let p = Proxy::start(&url_config(&app, &jwks, "1h")).await;
    assert_eq!(jwks.hits(), 1);

    // The identity provider rotates: a new key and kid next to the old one.
    jwks.serve(200, &[ec_jwk(&old, "k1"), ec_jwk(&new, "k2")]);
    let rotated = signed(&new, "k2");
    assert_eq!(
        inbound_status(&p, &rotated).await,
        401,
        "the request naming the unknown kid is answered at once"
    );
    // Four more unknown-kid requests in quick succession (a kid that never exists).
    let ghost = signed(&new, "never-published");
    for _ in 0..4 {
        assert_eq!(inbound_status(&p, &ghost).await, 401);
    }
    assert!(jwks.hits() <= 2, "fetches: {}", jwks.hits());

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if inbound_status(&p, &rotated).await == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(inbound_status(&p, &signed(&old, "k1")).await, 200);
    // More unknown kids inside the 30 s window fetch nothing.
    for _ in 0..3 {
        assert_eq!(inbound_status(&p, &ghost).await, 401);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(jwks.hits(), 2, "startup + one early refresh");
    p.shutdown().await;
}

#[tokio::test]
async fn failing_jwks_server_keeps_the_cached_keys() {
    let key = KeyPair::generate().unwrap();
    let jwks = JwksServer::start(&[ec_jwk(&key, "k1")]).await;
    let app = Upstream::echo().await;
    let p = Proxy::start(&url_config(&app, &jwks, "100ms")).await;
    jwks.serve(500, &[]);
    // Regular refreshes fail (and one early one, for good measure).
    assert_eq!(inbound_status(&p, &signed(&key, "k9")).await, 401);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while jwks.hits() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "hits: {}", jwks.hits());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(inbound_status(&p, &signed(&key, "k1")).await, 200);
    }
    // A body that is not a JWK set is no better than a 500.
    *jwks.answer.lock().unwrap() = (200, "<html>oops</html>".into());
    let seen = jwks.hits();
    while jwks.hits() < seen + 2 {
        assert!(tokio::time::Instant::now() < deadline, "hits: {}", jwks.hits());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(inbound_status(&p, &signed(&key, "k1")).await, 200);
    p.shutdown().await;
}

#[tokio::test]
async fn unreachable_jwks_url_fails_start_naming_url_and_cause() {
    let key = KeyPair::generate().unwrap();
    let jwks = JwksServer::start(&[ec_jwk(&key, "k1")]).await;
    jwks.serve(503, &[]);
    let app = Upstream::echo().await;
    let msg = start_error(&url_config(&app, &jwks, "1h")).await;
    assert!(msg.contains(&jwks.url()) && msg.contains("503"), "{msg}");
}

#[tokio::test]
async fn https_jwks_url_is_verified_against_jwks_ca() {
    let pki = Pki::new("jwks-https");
    pki.leaf_with_dns("idp", "spiffe://shop.test/ns/auth/sa/idp", &["localhost"]);
    let key = KeyPair::generate().unwrap();
    let jwks = JwksServer::start(&[ec_jwk(&key, "k1")]).await;
    // The identity provider's HTTPS front: a kawal terminating TLS for it.
    let idp_tls = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"",
        pki.path("idp.crt"),
        pki.path("idp.key")
    );
    let idp = Proxy::start(&inbound_config(jwks.server.addr, &idp_tls)).await;
    let url = format!("https://localhost:{}/.well-known/jwks.json", idp.inbound().port());
    let app = Upstream::echo().await;

    let ca = format!("jwks_ca = \"{}\"", pki.path("ca.pem"));
    let p = Proxy::start(&jwks_url_config(&app, &url, &ca)).await;
    assert_eq!(inbound_status(&p, &signed(&key, "k1")).await, 200);
    assert_eq!(jwks.hits(), 1);

    // The Mozilla roots do not know the private CA: no keys, no start.
    let msg = start_error(&jwks_url_config(&app, &url, "")).await;
    assert!(msg.contains(&url) && msg.contains("unknown issuer"), "{msg}");
    assert_eq!(jwks.hits(), 1);
    p.shutdown().await;
    idp.shutdown().await;
}
