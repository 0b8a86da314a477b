//! Idempotency and ordering guard (inbound step 5).
pub mod dedup;
pub mod idempotency;
pub mod order;
pub mod store;
