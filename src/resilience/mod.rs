//! Resilience per upstream: retry policy, backoff with jitter, retry budget,
//! circuit breaker. Each is a pure core (time passed in); the request path
//! wraps them in `proxy::outbound`.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod policy;
mod window;
