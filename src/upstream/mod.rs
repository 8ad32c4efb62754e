//! Upstreams: load-balanced, health-checked target pools.

pub mod pool;

pub use pool::UpstreamPool;
