//! Upstreams: load-balanced target pools, health-checked actively and
//! passively, with host-name targets resolved in the background.

pub(crate) mod dns;
pub(crate) mod outlier;
pub(crate) mod pool;

pub(crate) use pool::UpstreamPool;
