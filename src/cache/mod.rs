//! Response cache (WIP skeleton).

pub mod coalesce;
pub mod key;
pub mod metrics;
pub mod policy;
pub mod store;
