//! Local rate limits on the inbound side: a burst beyond the bucket is
//! refused with 429 and never reaches the app; each verified identity has a
//! bucket of its own. Two client sidecars with their own certificates call
//! one inbound sidecar over mTLS.

mod support;

use support::pki::Pki;
use support::*;

const A_ID: &str = "spiffe://shop.test/ns/default/sa/a";
const C_ID: &str = "spiffe://shop.test/ns/default/sa/c";
const B_ID: &str = "spiffe://shop.test/ns/default/sa/b";

const LIMIT: usize = 5;
const EXTRA: usize = 7;

/// B: mTLS inbound with a per-identity limit of LIMIT requests an hour on
/// POST /orders/*.
async fn limited_b(pki: &Pki, app: &Upstream) -> Proxy {
    let extra = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         [[inbound.rate_limits]]\nmethods = [\"POST\"]\npaths = [\"/orders/*\"]\n\
         requests = {LIMIT}\nperiod = \"1h\"\nkey = \"identity\"\n",
        pki.path("b.crt"),
        pki.path("b.key"),
        pki.path("ca.pem")
    );
    Proxy::start(&inbound_config(app.addr, &extra)).await
}

/// A client sidecar whose outbound calls B with certificate `name`.
async fn caller(pki: &Pki, b: std::net::SocketAddr, name: &str) -> Proxy {
    let tls = format!(
        "[upstreams.svc.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_identity = \"{B_ID}\"",
        pki.path("ca.pem"),
        pki.path(&format!("{name}.crt")),
        pki.path(&format!("{name}.key"))
    );
    Proxy::start(&outbound_config(&[b], &tls, "")).await
}

async fn post(via: &Proxy, n: usize) -> reqwest::Response {
    client()
        .post(format!("http://{}/orders/{n}", via.outbound()))
        .header("host", "svc")
        .body("{}")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_burst_over_the_limit_gets_exactly_the_excess_refused_and_other_identities_pass() {
    let pki = Pki::new("ratelimit");
    pki.leaf("a", A_ID);
    pki.leaf("c", C_ID);
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = limited_b(&pki, &app).await;
    let a = caller(&pki, b.inbound(), "a").await;
    let c = caller(&pki, b.inbound(), "c").await;

    let burst = (0..LIMIT + EXTRA).map(|n| post(&a, n));
    let responses = futures_util::future::join_all(burst).await;
    let mut refused = 0;
    for res in responses {
        match res.status().as_u16() {
            200 => {}
            429 => {
                refused += 1;
                assert_eq!(res.headers()["x-kawal-error"], "rate_limited");
                let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry_after >= 1, "Retry-After {retry_after}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(refused, EXTRA);
    assert_eq!(app.hits(), LIMIT, "the refused requests never reached the app");

    // C's bucket is its own; GETs are out of the rule's scope.
    assert_eq!(post(&c, 0).await.status(), 200);
    let get = client()
        .get(format!("http://{}/orders/1", a.outbound()))
        .header("host", "svc")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(app.hits(), LIMIT + 2);

    let lines = b.wait_log_lines(LIMIT + EXTRA + 2).await;
    let limited: Vec<_> = lines.iter().filter(|l| l["error"] == "rate_limited").collect();
    assert_eq!(limited.len(), EXTRA);
    assert!(limited
        .iter()
        .all(|l| l["statusCode"] == 429 && l["peerIdentity"] == A_ID));
    assert_eq!(
        b.metric("kawal_rate_limited_total{rule=\"0\"}").await,
        EXTRA as f64
    );
}
