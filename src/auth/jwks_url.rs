//! Fetching the JWKS from `[inbound.jwt] jwks_url`.
//!
//! One GET through a hyper-util client and the proxy's own [`Connector`]:
//! plain HTTP, or HTTPS verified against `jwks_ca` or else the webpki roots
//! (a [`ClientTls`] without client certificate). The whole exchange is bounded by
//! [`FETCH_TIMEOUT`] and the body by the same 1 MiB cap as a JWKS file. The
//! body never appears in an error. Parsing is the verifier's
//! ([`super::JwtVerifier::load_fetched`]), the same code as for a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::jwt::MAX_JWKS_BYTES;
use crate::connect::Connector;
use crate::error::error_chain;
use crate::tls::{ClientTls, ClientTlsFiles, ALPN_HTTP1};

/// Longest a fetch (connect, TLS, response, body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one early refresh (on an unknown `kid`) per this period.
pub const EARLY_REFRESH_MIN_GAP: Duration = Duration::from_secs(30);

/// Checks that `url` is an absolute http or https URL with a host.
pub fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    }
    // Credentials in the URL would end up in every error and log line naming it.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("user:password in the URL is not supported".into());
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(uri),
        _ => Err(format!("{url:?} has no host")),
    }
}

/// GETs one JWKS URL; cheap to share.
pub struct JwksFetcher {
    url: Uri,
    client: Client<Connector, Empty<Bytes>>,
}

impl std::fmt::Debug for JwksFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksFetcher").field("url", &self.url).finish()
    }
}

impl JwksFetcher {
    /// A fetcher for `url` (http or https, as [`parse_url`] checked it at
    /// config load); `ca` replaces the webpki roots.
    pub fn new(url: &Uri, ca: Option<PathBuf>) -> Result<Self, String> {
        let uri = url.clone();
        let tls = if uri.scheme_str() == Some("https") {
            let tls = ClientTls::load(ClientTlsFiles {
                ca,
                alpn: vec![ALPN_HTTP1.to_vec()],
                ..ClientTlsFiles::default()
            })
            .map_err(|e| format!("JWKS {url}: TLS setup: {e}"))?;
            Some(Arc::new(tls))
        } else {
            None
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(Connector::new(http, tls, None));
        Ok(JwksFetcher { url: uri, client })
    }

    /// The URL fetched.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// One GET; the body on a 2xx of at most 1 MiB. Errors name the URL.
    pub async fn fetch(&self) -> Result<Vec<u8>, String> {
        let url = &self.url;
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_inner()).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => Err(format!("JWKS {url}: {e}")),
            Err(_) => Err(format!(
                "JWKS {url}: no complete response within {}s",
                FETCH_TIMEOUT.as_secs()
            )),
        }
    }

    async fn fetch_inner(&self) -> Result<Vec<u8>, String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.url.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(header::USER_AGENT, concat!("kawal/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let res = self.client.request(req).await.map_err(|e| error_chain(&e))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        // Same cap as a JWKS file; usize: the crate does not build for 16-bit targets.
        let limited = Limited::new(res.into_body(), MAX_JWKS_BYTES as usize);
        let body = limited
            .collect()
            .await
            .map_err(|e| format!("reading the body: {}", error_chain(&*e)))?;
        Ok(body.to_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_https_gets_the_webpki_roots() {
        assert!(parse_url("http://127.0.0.1:8080/jwks").is_ok());
        for bad in ["ftp://idp/jwks", "/jwks.json", "https://", "https://u:p@idp/jwks"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let f = JwksFetcher::new(
            &parse_url("https://idp.example/.well-known/jwks.json").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(f.url().host(), Some("idp.example"));
    }
}
