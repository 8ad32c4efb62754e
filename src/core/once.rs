//! "Seen once" checks (CONTRACT §13): one-time tokens and DPoP proof
//! `jti`s. The trait lives here so that authentication providers can ask
//! it while the store behind it (local, or shared through Redis) belongs to
//! the protection layer.

use std::time::Duration;

use async_trait::async_trait;

/// The store could not say whether a key was seen: the caller fails
/// closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnceUnavailable;

#[async_trait]
pub trait SeenOnce: Send + Sync {
    /// Records `key` for `ttl`: `Ok(true)` the first time, `Ok(false)` for
    /// every later use within `ttl`.
    async fn first_use(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, OnceUnavailable>;
}
