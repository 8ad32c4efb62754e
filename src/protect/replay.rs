//! The replay cache of CONTRACT §13: one-time token `jti`s and DPoP proof
//! `jti`s, each accepted once within its lifetime.
//!
//! A cache that may drop a new key (moka's TinyLFU admission does, by
//! design) would let exactly that key be replayed, so this is a plain
//! bounded map: a key is kept until its own expiry, expired keys are
//! evicted first (soonest expiry first, from a heap), and a live key is
//! never evicted. When the map is full of live keys the answer is
//! [`OnceUnavailable`]: the caller refuses the request (fail closed) rather
//! than forget a key. Shards keep the locks short and spread.
//!
//! With `[rate_limit_store] kind = "redis"` the local map answers first (a
//! replay seen here costs no round trip); a key new here is then set with
//! `SET NX PX` in Redis, which is what makes a replay on another gateway
//! visible. Redis unreachable: `on_error = "deny"` fails closed; `local`
//! and `allow` keep the local answer (replays across gateways then go
//! unseen until Redis is back).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::ratelimit::{OnError, RateLimitStore};
use crate::core::once::{OnceUnavailable, SeenOnce};

const SHARDS: usize = 64;

pub struct ReplayCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    epoch: Instant,
    /// The shared store, and what to do when it cannot answer.
    store: Arc<RateLimitStore>,
}

#[derive(Default)]
struct Shard {
    /// Key to expiry (milliseconds since `epoch`).
    seen: HashMap<[u8; 32], u64>,
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

impl Shard {
    /// `Ok(true)` on first use; `Err` when full of live keys.
    fn first_use(
        &mut self,
        key: &[u8; 32],
        expiry: u64,
        now: u64,
        capacity: usize,
    ) -> Result<bool, OnceUnavailable> {
        if self.seen.get(key).is_some_and(|&at| at > now) {
            return Ok(false);
        }
        while let Some(Reverse((at, old))) = self.by_expiry.peek().copied() {
            if at > now {
                break;
            }
            self.by_expiry.pop();
            if self.seen.get(&old) == Some(&at) {
                self.seen.remove(&old);
            }
        }
        if self.seen.len() >= capacity && !self.seen.contains_key(key) {
            return Err(OnceUnavailable);
        }
        self.seen.insert(*key, expiry);
        self.by_expiry.push(Reverse((expiry, *key)));
        Ok(true)
    }
}

impl ReplayCache {
    /// At most `capacity` live keys in this process (the store's
    /// `max_local_keys`).
    pub fn new(store: Arc<RateLimitStore>) -> Self {
        let capacity = usize::try_from(store.config().max_local_keys).unwrap_or(usize::MAX);
        ReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
            store,
        }
    }

    /// Whether this cache shares `store` (a reload keeps the cache then).
    pub fn uses(&self, store: &Arc<RateLimitStore>) -> bool {
        Arc::ptr_eq(&self.store, store)
    }

    fn local_first_use(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, OnceUnavailable> {
        let now = millis(self.epoch.elapsed());
        let expiry = now.saturating_add(millis(ttl).max(1));
        let shard = self
            .shards
            .get(usize::from(key[0]) % SHARDS)
            .ok_or(OnceUnavailable)?;
        let mut shard = shard.lock().map_err(|_| OnceUnavailable)?;
        shard.first_use(key, expiry, now, self.per_shard)
    }

    fn forget(&self, key: &[u8; 32]) {
        if let Some(Ok(mut shard)) = self
            .shards
            .get(usize::from(key[0]) % SHARDS)
            .map(|s| s.lock())
        {
            shard.seen.remove(key);
        }
    }
}

#[async_trait]
impl SeenOnce for ReplayCache {
    async fn first_use(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, OnceUnavailable> {
        if !self.local_first_use(key, ttl)? {
            return Ok(false);
        }
        let Some(redis) = self.store.redis() else {
            return Ok(true);
        };
        match redis.set_once(key, ttl).await {
            Ok(first) => Ok(first),
            Err(_) => match self.store.config().on_error {
                OnError::Deny => {
                    // Refused without a use: a retry once Redis is back
                    // is not a replay.
                    self.forget(key);
                    Err(OnceUnavailable)
                }
                OnError::Local | OnError::Allow => Ok(true),
            },
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_accepted_once_until_it_expires() {
        let mut shard = Shard::default();
        let k = [1u8; 32];
        assert_eq!(shard.first_use(&k, 100, 0, 10), Ok(true));
        assert_eq!(shard.first_use(&k, 100, 50, 10), Ok(false));
        assert_eq!(shard.first_use(&k, 100, 99, 10), Ok(false));
        assert_eq!(shard.first_use(&k, 300, 100, 10), Ok(true));
        assert_eq!(shard.first_use(&k, 300, 200, 10), Ok(false));
    }

    #[test]
    fn full_of_live_keys_fails_closed_and_never_forgets_one() {
        let mut shard = Shard::default();
        for i in 0..3u8 {
            assert_eq!(
                shard.first_use(&[i; 32], 100 + u64::from(i), 0, 3),
                Ok(true)
            );
        }
        assert_eq!(shard.first_use(&[9; 32], 500, 10, 3), Err(OnceUnavailable));
        for i in 0..3u8 {
            assert_eq!(shard.first_use(&[i; 32], 500, 10, 3), Ok(false));
        }
        // Once one has expired, its room goes to the new key.
        assert_eq!(shard.first_use(&[9; 32], 500, 100, 3), Ok(true));
        assert_eq!(shard.first_use(&[1; 32], 500, 100, 3), Ok(false));
        assert_eq!(shard.first_use(&[9; 32], 500, 100, 3), Ok(false));
        assert_eq!(shard.seen.len(), 3);
        assert_eq!(shard.by_expiry.len(), 3);
    }
}
