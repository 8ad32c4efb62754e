//! Caches whose entries each know how long they may be kept (a token until
//! its `exp`, an answer for its configured time): one moka expiry policy
//! that asks the value.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cached value's remaining lifetime, decided when it is stored.
pub(crate) trait Expires {
    fn time_to_live(&self) -> Duration;
}

/// Expire each entry after its value's [`Expires::time_to_live`].
pub(crate) struct ByValue;

impl<K, V: Expires> moka::Expiry<K, Arc<V>> for ByValue {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Arc<V>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.time_to_live())
    }
}
