//! Inbound authentication and authorization: who is calling, and may they.
//!
//! kawal applies three checks to each inbound request, in this order:
//!
//! 1. **mTLS peer identity** (in `tls`): the client certificate is verified
//!    during the handshake and its SPIFFE ID (or DNS SAN) becomes the peer
//!    identity. A peer without a valid certificate never gets an HTTP
//!    response at all.
//! 2. **Policy** ([`policy`]): [`Policy::decide`] allows or denies the
//!    verified identity × method × path. It runs before the JWT because it is
//!    cheaper and because a peer the policy rejects should learn nothing
//!    about token handling: a denial is a 403.
//! 3. **JWT** ([`jwt`]): [`JwtVerifier::verify`] checks the bearer token (the
//!    end user or calling service's token, on top of the transport identity);
//!    a failure is a 401 with [`JwtVerifier::www_authenticate`]. The verified
//!    `sub` becomes the access log's `userId` and the app's user header.
//!
//! Both cores are pure and synchronous: no sockets, no clock of their own
//! (the time is passed in), and only [`JwtVerifier::load`] and
//! [`JwtVerifier::reload`] touch the file system. A JWKS from a URL is
//! fetched by [`jwks_url`] (async, off the request path) and handed over as bytes.

pub mod jwks_url;
pub mod jwt;
pub mod policy;

pub use jwks_url::JwksFetcher;
pub use jwt::{Claims, JwksSource, JwtError, JwtSettings, JwtVerifier};
pub use policy::{AllowRule, ClaimRoute, ClaimRoutes, Decision, Policy};
