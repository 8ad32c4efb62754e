//! Upstreams: load-balanced, health-checked target pools.

pub(crate) mod pool;

pub(crate) use pool::UpstreamPool;
