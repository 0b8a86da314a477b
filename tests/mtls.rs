//! Two kawals talking mTLS: A's outbound originates, B's inbound terminates
//! and hands the verified SPIFFE identity to its app. Certificates are made
//! at test time with rcgen.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::pki::Pki;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A_ID: &str = "spiffe://shop.test/ns/default/sa/a";
const B_ID: &str = "spiffe://shop.test/ns/default/sa/b";

/// B: TLS inbound requiring a client certificate from `pki`'s CA.
async fn sidecar_b(pki: &Pki, app: &Upstream) -> Proxy {
    let tls = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nhandshake_timeout = \"2s\"",
        pki.path("b.crt"),
        pki.path("b.key"),
        pki.path("ca.pem")
    );
    Proxy::start(&inbound_config(app.addr, &tls)).await
}

/// A: outbound with mTLS toward `b`, expecting `server_identity`.
async fn sidecar_a(pki: &Pki, b: std::net::SocketAddr, server_identity: &str) -> Proxy {
    Proxy::start(&outbound_config(&[b], &a_tls(pki, server_identity), "")).await
}

/// A's `[upstreams.svc.tls]` table: its certificate, `pki`'s CA, `server_identity`.
fn a_tls(pki: &Pki, server_identity: &str) -> String {
    format!(
        "[upstreams.svc.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_identity = \"{server_identity}\"",
        pki.path("ca.pem"),
        pki.path("a.crt"),
        pki.path("a.key")
    )
}

async fn through_a(a: &Proxy, spoof: bool) -> reqwest::Response {
    let mut req = client()
        .get(format!("http://{}/orders/1", a.outbound()))
        .header("host", "svc");
    if spoof {
        req = req.header("x-kawal-peer-identity", "spiffe://shop.test/ns/default/sa/admin");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn mtls_between_sidecars_hands_the_verified_identity_to_the_app() {
    let pki = Pki::new("ok");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let a = sidecar_a(&pki, b.inbound(), B_ID).await;

    let res = through_a(&a, true).await;
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    // The spoofed copy from A's app is replaced by the verified identity.
    assert_eq!(echo["headers"]["x-kawal-peer-identity"], A_ID);
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    let line = &b.wait_log_lines(1).await[0];
    assert_eq!(line["peerIdentity"], A_ID);
    assert_eq!(line["userId"], A_ID);

    // Both ends expose how long their certificate has left (about a day here).
    for (proxy, cert) in [(&b, "inbound"), (&a, "upstream:svc")] {
        let secs = proxy
            .metric(&format!("kawal_tls_cert_expiry_seconds{{cert=\"{cert}\"}}"))
            .await;
        assert!((80_000.0..=86_400.0).contains(&secs), "{secs}");
    }
}

#[tokio::test]
async fn http2_between_sidecars_multiplexes_one_connection_and_keeps_the_routed_host() {
    let pki = Pki::new("h2");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let upstream = format!("protocol = \"http2\"\n{}", a_tls(&pki, B_ID));
    let a = Proxy::start(&outbound_config(&[b.inbound()], &upstream, "")).await;

    // Concurrent calls from A's app, over plain HTTP/1.1 connections of their own.
    let calls = (0..8).map(|_| through_a(&a, false));
    for res in futures_util::future::join_all(calls).await {
        assert_eq!(res.status(), 200);
        let echo: serde_json::Value = res.json().await.unwrap();
        // HTTP/2 carries the name the request was routed by in :authority;
        // B hands it to its app as Host, with the verified identity.
        assert_eq!(echo["headers"]["host"], "svc");
        assert_eq!(echo["headers"]["x-kawal-peer-identity"], A_ID);
    }
    assert_eq!(b.wait_log_lines(8).await.len(), 8);
    let open = b.metric("kawal_open_connections{listener=\"inbound\"}").await;
    assert_eq!(open, 1.0, "one HTTP/2 connection from A to B");
}

#[tokio::test]
async fn websocket_crosses_the_mtls_hop() {
    let pki = Pki::new("ws");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    let app = support::websocket::app().await;
    let b = sidecar_b(&pki, &app).await;
    let a = sidecar_a(&pki, b.inbound(), B_ID).await;
    support::websocket::assert_tunnel(a.outbound(), "svc").await;
    let line = &b.wait_log_lines(1).await[0];
    assert_eq!(
        (line["statusCode"].as_u64(), line["peerIdentity"].as_str()),
        (Some(101), Some(A_ID))
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_gets_no_http_response() {
    let pki = Pki::new("nocert");
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;

    // A TLS client that trusts the CA but has no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(b.inbound()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // TLS 1.3: the client may finish its side before the server refuses, so
    // the refusal shows on the first exchange.
    let outcome = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n").await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .unwrap();
    match outcome {
        Err(_) => {}
        Ok(buf) => assert!(
            buf.is_empty(),
            "got an HTTP response: {}",
            String::from_utf8_lossy(&buf)
        ),
    }
    assert_eq!(app.hits(), 0);
}

/// A TLS 1.1 ClientHello (no supported_versions extension). Besides the
/// CBC suites of TLS 1.1 it offers what kawal accepts in TLS 1.2
/// (ECDHE-ECDSA-AES128-GCM, ecdsa_secp256r1_sha256), so that only the
/// version is wrong; without those the refusal is a handshake_failure.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend([0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x2f]); // cipher suites
    hello.extend([0x01, 0x00]); // null compression
    let groups = [0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]; // supported_groups: P-256
    let points = [0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]; // ec_point_formats: uncompressed
    let sigalgs = [0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]; // signature_algorithms
    hello.extend(((groups.len() + points.len() + sigalgs.len()) as u16).to_be_bytes());
    hello.extend(groups);
    hello.extend(points);
    hello.extend(sigalgs);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((hello.len() as u16).to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_protocol_version_alert() {
    let pki = Pki::new("tls11");
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let mut s = tokio::net::TcpStream::connect(b.inbound()).await.unwrap();
    s.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .unwrap();
    // One fatal alert record, protocol_version (70); no ServerHello, then close.
    assert_eq!(answer.first(), Some(&0x15), "not an alert: {answer:02x?}");
    assert_eq!(answer.get(5..7), Some(&[0x02, 70][..]), "{answer:02x?}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn a_client_hello_sent_byte_by_byte_is_cut_off_at_the_handshake_timeout() {
    let pki = Pki::new("slowhello");
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await; // handshake_timeout = "2s"
    let mut s = tokio::net::TcpStream::connect(b.inbound()).await.unwrap();
    let hello = tls11_client_hello();
    let started = std::time::Instant::now();
    // One byte every 100 ms: the whole hello would take far longer than 2 s.
    for byte in &hello {
        if s.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break, // closed
            Ok(Ok(_)) => panic!("the server answered a hello it never fully got"),
            Err(_) => {} // still open: send the next byte
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never cut off");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "never cut off");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn plaintext_on_the_tls_port_is_refused() {
    let pki = Pki::new("plain");
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let raw = raw_exchange(b.inbound(), b"GET / HTTP/1.1\r\nHost: b\r\n\r\n").await;
    assert!(!raw.contains("HTTP/1.1 200"), "{raw}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn a_server_presenting_another_identity_is_rejected_with_502() {
    let pki = Pki::new("wrongid");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let a = sidecar_a(&pki, b.inbound(), "spiffe://shop.test/ns/default/sa/payments").await;
    let res = through_a(&a, false).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_tls");
    let line = &a.wait_log_lines(1).await[0];
    assert!(
        line["errorDetail"].as_str().unwrap().contains("identity"),
        "{line}"
    );
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("b-side");
    pki.leaf("b", B_ID);
    let other = Pki::new("a-side");
    other.leaf("a", A_ID);
    // A trusts B's CA for the server, but presents a certificate B does not trust.
    std::fs::copy(pki.path("ca.pem"), other.path("ca.pem")).unwrap();
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let a = sidecar_a(&other, b.inbound(), B_ID).await;
    let res = through_a(&a, false).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_tls");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn a_self_signed_client_certificate_is_refused() {
    let pki = Pki::new("selfsigned");
    pki.leaf("b", B_ID);
    // Right SPIFFE id and key usages, but its own issuer: no chain to B's CA.
    pki.self_signed_leaf("a", A_ID);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let a = sidecar_a(&pki, b.inbound(), B_ID).await;
    let res = through_a(&a, false).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["x-kawal-error"], "upstream_tls");
    // B refused it (TLS 1.3: the alert arrives after A's side of the handshake).
    let line = &a.wait_log_lines(1).await[0];
    assert!(
        line["errorDetail"].as_str().unwrap().contains("UnknownCA"),
        "{line}"
    );
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn expired_and_not_yet_valid_client_certificates_are_refused() {
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    for (tag, not_before, not_after) in [
        ("expired", now - 2 * day, now - day),
        ("early", now + day, now + 2 * day),
    ] {
        let pki = Pki::new(tag);
        pki.leaf("b", B_ID);
        pki.leaf_between("a", A_ID, &[], not_before, not_after);
        let app = Upstream::echo().await;
        let b = sidecar_b(&pki, &app).await;
        let a = sidecar_a(&pki, b.inbound(), B_ID).await;
        let res = through_a(&a, false).await;
        assert_eq!(res.status(), 502, "{tag}");
        assert_eq!(res.headers()["x-kawal-error"], "upstream_tls", "{tag}");
        assert_eq!(app.hits(), 0, "{tag}");
    }
}

#[tokio::test]
async fn a_missing_key_file_stops_startup_with_a_clear_error() {
    let pki = Pki::new("missing");
    pki.leaf("b", B_ID);
    let tls = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path("b.crt"),
        pki.path("nope.key")
    );
    let cfg =
        kawal::config::Config::from_toml_str(&inbound_config("127.0.0.1:9".parse().unwrap(), &tls), "t.toml")
            .unwrap();
    let err = kawal::start(cfg, kawal::log::Sink::Memory(Default::default()))
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("inbound.tls") && msg.contains("nope.key"), "{msg}");
}

#[tokio::test]
async fn without_server_identity_the_endpoint_host_name_is_verified() {
    let pki = Pki::new("dns");
    pki.leaf("a", A_ID);
    pki.leaf_with_dns("b", B_ID, &["localhost"]);
    let app = Upstream::echo().await;
    let b = sidecar_b(&pki, &app).await;
    let tls = format!(
        "[upstreams.svc.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        pki.path("ca.pem"),
        pki.path("a.crt"),
        pki.path("a.key")
    );
    // The endpoint is named: its name (not the resolved address) is checked.
    let cfg = outbound_config(&[b.inbound()], &tls, "").replace(
        &format!("\"{}\"]", b.inbound()),
        &format!("\"localhost:{}\"]", b.inbound().port()),
    );
    let a = Proxy::start(&cfg).await;
    assert_eq!(through_a(&a, false).await.status(), 200);
}

/// A raw mTLS client to B with A's certificate; returns the server's leaf.
async fn server_leaf_seen_by_new_connection(pki: &Pki, b: std::net::SocketAddr) -> Vec<u8> {
    let tls = connect_as_a(pki, b).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A new TLS connection to B presenting A's certificate (no ALPN: HTTP/1.1).
async fn connect_as_a(
    pki: &Pki,
    b: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(pki.path("a.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.path("a.key")).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    // The leaf has a SPIFFE URI SAN only: check the chain, not a DNS name.
    let mut config = config;
    config.dangerous().set_certificate_verifier(Arc::new(ChainOnly(
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new({
                let mut r = rustls::RootCertStore::empty();
                r.add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
                    .unwrap();
                r
            }),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap(),
    )));
    let tcp = tokio::net::TcpStream::connect(b).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("b.test").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Verifies the chain to the CA but accepts any name (the test compares the leaf itself).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                ..
            })) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// B with inbound mTLS whose files are re-read every 50 ms.
async fn reloading_b(pki: &Pki, app: &Upstream) -> Proxy {
    let tls = format!(
        "[inbound.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nreload_interval = \"100ms\"",
        pki.path("b.crt"),
        pki.path("b.key"),
        pki.path("ca.pem")
    );
    Proxy::start(&inbound_config(app.addr, &tls)).await
}

/// Rotates B's leaf (a new one valid for two days), waits until B reports
/// the new expiry, and returns the new leaf.
async fn rotate_b(pki: &Pki, b: &Proxy) -> Vec<u8> {
    pki.leaf_valid("b", B_ID, &[], Duration::from_secs(2 * 86_400));
    let series = r#"kawal_tls_cert_expiry_seconds{cert="inbound"}"#;
    for _ in 0..200 {
        if b.metric(series).await > 86_400.0 * 1.5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        b.metric(series).await > 86_400.0 * 1.5,
        "the new certificate was not loaded"
    );
    pem_der(&pki.path("b.crt"))
}

fn pem_der(path: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn rotated_certificates_apply_to_new_connections_and_a_broken_file_is_ignored() {
    let pki = Pki::new("rotate");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = reloading_b(&pki, &app).await;
    let a = sidecar_a(&pki, b.inbound(), B_ID).await;
    assert_eq!(through_a(&a, false).await.status(), 200);
    let first = pem_der(&pki.path("b.crt"));
    assert_eq!(server_leaf_seen_by_new_connection(&pki, b.inbound()).await, first);

    let second = rotate_b(&pki, &b).await;
    // Traffic goes on (A's pooled connection may predate the rotation; that an
    // established connection keeps serving across a reload is shown by
    // `an_open_connection_keeps_working_across_a_certificate_rotation`);
    // a new connection sees the new leaf.
    assert_eq!(through_a(&a, false).await.status(), 200);
    assert_eq!(
        server_leaf_seen_by_new_connection(&pki, b.inbound()).await,
        second
    );

    // A garbage file is refused; the last good certificate stays in use.
    std::fs::write(pki.path("b.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server_leaf_seen_by_new_connection(&pki, b.inbound()).await,
        second
    );
    assert_eq!(through_a(&a, false).await.status(), 200);
}

#[tokio::test]
async fn an_open_connection_keeps_working_across_a_certificate_rotation() {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    let pki = Pki::new("keepopen");
    pki.leaf("a", A_ID);
    pki.leaf("b", B_ID);
    let app = Upstream::echo().await;
    let b = reloading_b(&pki, &app).await;
    let first = pem_der(&pki.path("b.crt"));

    // One TLS connection, HTTP/1.1 over it, opened before the rotation.
    let stream = connect_as_a(&pki, b.inbound()).await;
    let seen_by_open = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(seen_by_open, first);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::get(path)
            .header("host", "b")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let res = sender.send_request(get("/one")).await.unwrap();
    assert_eq!(res.status(), 200);
    http_body_util::BodyExt::collect(res.into_body()).await.unwrap();

    let second = rotate_b(&pki, &b).await;
    assert_ne!(second, first);

    // The connection opened before the rotation is still up and serves the
    // next request; it still speaks with the first leaf.
    assert!(
        !sender.is_closed(),
        "the open connection was closed by the rotation"
    );
    sender.ready().await.unwrap();
    let res = sender.send_request(get("/two")).await.unwrap();
    assert_eq!(res.status(), 200);
    http_body_util::BodyExt::collect(res.into_body()).await.unwrap();
    assert_eq!(app.hits(), 2);
    assert!(!conn.is_finished());
    assert_eq!(seen_by_open, first);

    // A new connection sees the new leaf.
    assert_eq!(
        server_leaf_seen_by_new_connection(&pki, b.inbound()).await,
        second
    );
}
