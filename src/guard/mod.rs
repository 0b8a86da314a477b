//! Idempotency and ordering guard (inbound step 5).
pub mod store;
