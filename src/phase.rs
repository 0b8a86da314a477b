//! The phases a feature plugs into, pingora-style.
//!
//! A feature (cache, guard, rate limit) is one numbered step in a
//! direction's handler plus its own module. The step is its **on request**
//! phase: a function of the module that may answer the request itself with
//! an `http::Response<Bytes>` (a hit, a replay, a 409/429) or let it go on.
//! What it must do later it registers on the request's exchange as
//! [`ResponsePhases`]: **on response head** ([`ResponsePhases::head`]), each
//! chunk of the body ([`ResponsePhases::data`]), and **at body end**
//! ([`ResponsePhases::end`]), which runs exactly once, also when the client
//! goes away or the upstream breaks mid-body. The access line is written at
//! the same point, with the same [`BodyEnd`].

use bytes::Bytes;

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every frame went to the client.
    Complete,
    /// The client went away (the body was dropped) before the end.
    ClientGone,
    /// The upstream's body failed midway (a broken stream, an idle timeout).
    UpstreamBroke,
}

impl BodyEnd {
    /// `complete`, `client_gone` or `upstream_broke`.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEnd::Complete => "complete",
            BodyEnd::ClientGone => "client_gone",
            BodyEnd::UpstreamBroke => "upstream_broke",
        }
    }
}

/// A feature's response phases, registered on one request's exchange. They
/// are called in registration order.
pub trait ResponsePhases: Send + 'static {
    /// The final response head as it goes to the client: the upstream's, or
    /// one kawal answers with itself. May add or change headers.
    fn head(&mut self, _head: &mut http::response::Parts) {}

    /// Each data chunk as it goes to the client (a `Bytes` clone is a
    /// reference count, never a copy).
    fn data(&mut self, _chunk: &Bytes) {}

    /// The body ended so. Runs exactly once.
    fn end(self: Box<Self>, how: BodyEnd);
}
