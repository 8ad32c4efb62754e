//! Rate-limit and failed-auth lockout state (CONTRACT §3 `rate_limit`,
//! `[rate_limit_store]`, `[protection.failed_auth]`).
//!
//! One [`RateLimitStore`] per process, kept across reloads while its
//! [`StoreConfig`] is unchanged so that counters survive; it holds no other
//! configuration, and limits and lockout settings come with each call.
//! Keys are opaque bytes built by the caller (route + per-value key for
//! limits, the client IP for lockouts).
//!
//! - [`gcra`]: the token bucket as pure functions of `now`.
//! - [`local`]: bounded in-process tables (also the `on_error = "local"`
//!   fallback of the Redis store).
//! - [`redis`]: the shared store, with its health state and probing.
//!
//! When Redis cannot be used, rate limits follow `on_error`. Lockouts always
//! fall back to the local tables whatever `on_error` says: `deny` would
//! answer `temporarily_blocked` to every client, and `allow` would turn
//! brute-force protection off exactly while the shared state is gone.
//!
//! Differences from the first sketch of this API: [`RateLimitStore::is_blocked`]
//! takes no [`Lockout`], since a block carries its own expiry.

pub mod gcra;
pub mod local;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use self::local::LocalStore;
use self::redis::RedisStore;
pub use crate::config::{Limit, Lockout, OnError, RedisTls, StoreConfig, StoreKind};
use crate::observe::Observer;

/// The outcome of one request against a [`Limit`], with what the
/// `RateLimit-*` and `Retry-After` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket size (`burst`).
    pub limit: u64,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// Seconds until the bucket is full again, rounded up.
    pub reset_seconds: u64,
    /// Seconds until a request may pass, rounded up and at least 1 when
    /// refused; 0 when allowed.
    pub retry_after_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid redis_url: {0}")]
    RedisUrl(String),
}

pub struct RateLimitStore {
    config: StoreConfig,
    local: LocalStore,
    redis: Option<RedisStore>,
}

impl RateLimitStore {
    /// Never connects: Redis connections are made by the first call, on
    /// the runtime that serves requests.
    pub fn new(config: StoreConfig, observer: Arc<Observer>) -> Result<Self, StoreError> {
        let redis = RedisStore::new(&config, observer)?;
        Ok(RateLimitStore {
            local: LocalStore::new(config.max_local_keys),
            config,
            redis,
        })
    }

    /// What this store was made from: a reload keeps the store when the
    /// new configuration's is equal.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The shared store, for the other state gateways share through it
    /// (replay caches, revocations).
    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    pub async fn check(&self, key: &[u8], limit: &Limit) -> Decision {
        let Some(redis) = &self.redis else {
            return self.local.check(key, limit);
        };
        match redis.check(key, limit).await {
            Ok(decision) => decision,
            Err(redis::Unavailable) => match self.config.on_error {
                OnError::Local => self.local.check(key, limit),
                OnError::Allow => Decision {
                    allowed: true,
                    limit: limit.burst,
                    remaining: limit.burst,
                    reset_seconds: 0,
                    retry_after_seconds: 0,
                },
                OnError::Deny => Decision {
                    allowed: false,
                    limit: limit.burst,
                    remaining: 0,
                    reset_seconds: gcra::ceil_div(
                        u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX),
                        1_000,
                    ),
                    retry_after_seconds: redis::PROBE_EVERY.as_secs().max(1),
                },
            },
        }
    }

    /// Seconds until `ip` may try again if it is locked out. Cheap for a
    /// blocked client whatever the store: blocks are mirrored locally.
    pub async fn is_blocked(&self, ip: &[u8]) -> Option<u64> {
        if let Some(seconds) = self.local.is_blocked(ip) {
            return Some(seconds);
        }
        let left = self.redis.as_ref()?.blocked_for(ip).await.ok()??;
        self.local.mirror_block(ip, left);
        Some(seconds_up(left))
    }

    /// The lockouts this process knows of (its own, and those it saw in
    /// Redis), at most `max`, with the seconds each has left.
    pub fn active_lockouts(&self, max: usize) -> Vec<(std::net::IpAddr, u64)> {
        self.local.blocked(max)
    }

    /// Counts one presented-but-invalid credential from `ip`; true exactly
    /// when this failure placed a block, so the caller emits one
    /// `brute_force_lockout` per block.
    pub async fn record_failure(&self, ip: &[u8], lockout: &Lockout) -> bool {
        if lockout.threshold == 0 {
            return false;
        }
        let Some(redis) = &self.redis else {
            return self.local.record_failure(ip, lockout);
        };
        match redis.record_failure(ip, lockout).await {
            Ok(outcome) => {
                if let Some(left) = outcome.blocked_for {
                    self.local.mirror_block(ip, left);
                }
                outcome.newly_blocked
            }
            Err(redis::Unavailable) => self.local.record_failure(ip, lockout),
        }
    }
}

fn seconds_up(d: Duration) -> u64 {
    gcra::ceil_div(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), 1_000).max(1)
}

#[cfg(test)]
mod tests;
