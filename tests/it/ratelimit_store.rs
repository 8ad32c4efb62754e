//! The rate-limit/lockout store against a real Redis, through the library
//! API: shared limits across "gateways" (stores), outages under each
//! `on_error`, recovery, and shared lockouts.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use portcullis::config::{Log, LogTarget};
use portcullis::observe::Observer;
use portcullis::protect::ratelimit::{
    Limit, Lockout, OnError, RateLimitStore, StoreConfig, StoreKind,
};
use serde_json::Value;
use tempfile::TempDir;

/// Generous, so a loaded CI machine does not turn into a false outage.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(1);
/// Bound of every wait for an event or a recovery.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// One gateway's store with its own security log.
pub(crate) struct Gateway {
    pub(crate) store: Arc<RateLimitStore>,
    log: PathBuf,
    _dir: TempDir,
}

impl Gateway {
    fn new(redis: &RedisServer, on_error: OnError) -> Self {
        Self::with(StoreConfig {
            kind: StoreKind::Redis { url: redis.url() },
            on_error,
            timeout: TIMEOUT,
            ..StoreConfig::default()
        })
    }

    /// A store of any kind (tests/it/redis_fleet.rs: TLS, cluster).
    pub(crate) fn with(config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("security.log");
        let observer = Observer::new(&Log {
            level: "info".into(),
            access_log: LogTarget::Off,
            security_log: LogTarget::File(log.clone()),
            ..Log::default()
        })
        .unwrap();
        let store = RateLimitStore::new(config, Arc::new(observer)).unwrap();
        Gateway {
            store: Arc::new(store),
            log,
            _dir: dir,
        }
    }

    /// `(event, reason)` of the security events written so far.
    pub(crate) fn events(&self) -> Vec<(String, String)> {
        read_events(&self.log)
    }

    /// The events once `want` is among them (bounded wait).
    pub(crate) async fn events_with(&self, want: &str) -> Vec<(String, String)> {
        let polls = WAIT.as_millis() / POLL.as_millis();
        for _ in 0..polls {
            let events = self.events();
            if events.iter().any(|(e, _)| e == want) {
                return events;
            }
            tokio::time::sleep(POLL).await;
        }
        self.events()
    }

    pub(crate) async fn allowed(&self, key: &[u8], limit: &Limit, n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            if self.store.check(key, limit).await.allowed {
                allowed += 1;
            }
        }
        allowed
    }
}

fn read_events(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["event"].as_str().unwrap_or_default().to_string(),
                v["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub(crate) fn names(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

pub(crate) fn limit(burst: u64) -> Limit {
    // A long window: nothing refills during a test.
    Limit {
        requests: burst,
        window: Duration::from_secs(3600),
        burst,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_enforce_one_limit_exactly() {
    let redis = RedisServer::start();
    let a = Gateway::new(&redis, OnError::Deny);
    let b = Gateway::new(&redis, OnError::Deny);
    one_limit_exactly(&a, &b).await;
    assert_eq!(
        redis
            .command("EXISTS portcullis:rl:orders|consumer:acme")
            .unwrap(),
        ":1"
    );
}

/// 200 decisions raced on two stores of one shared backend: exactly the
/// bucket's 100 pass, each with its own `remaining`.
pub(crate) async fn one_limit_exactly(a: &Gateway, b: &Gateway) {
    let limit = limit(100);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = if i % 2 == 0 { &a.store } else { &b.store };
            let store = Arc::clone(store);
            let limit = limit.clone();
            tokio::spawn(async move { store.check(b"orders|consumer:acme", &limit).await })
        })
        .collect();
    let mut decisions = Vec::new();
    for task in tasks {
        decisions.push(task.await.unwrap());
    }
    let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
    assert_eq!(allowed.len(), 100);
    // Redis serialized them: each allowed one saw a different count.
    let mut remaining: Vec<u64> = allowed.iter().map(|d| d.remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..100).collect::<Vec<u64>>());
    for d in &decisions {
        assert_eq!(d.limit, 100);
        if !d.allowed {
            assert_eq!(d.remaining, 0);
            assert!(d.retry_after_seconds >= 1);
            assert!(d.reset_seconds >= d.retry_after_seconds);
        }
    }
    // A different key has its own bucket.
    assert!(
        a.store
            .check(b"orders|consumer:other", &limit)
            .await
            .allowed
    );
    assert!(a.events().is_empty() && b.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_follows_on_error_and_recovery_shares_state_again() {
    let mut redis = RedisServer::start();
    let local = Gateway::new(&redis, OnError::Local);
    let allow = Gateway::new(&redis, OnError::Allow);
    let deny = Gateway::new(&redis, OnError::Deny);
    let gateways = [&local, &allow, &deny];
    for g in gateways {
        assert_eq!(g.allowed(b"warm-up", &limit(10), 1).await, 1);
    }

    redis.stop();
    assert_eq!(local.allowed(b"outage", &limit(3), 10).await, 3);
    assert_eq!(allow.allowed(b"outage", &limit(3), 10).await, 10);
    assert_eq!(deny.allowed(b"outage", &limit(3), 10).await, 0);
    let refused = deny.store.check(b"outage", &limit(3)).await;
    assert!(refused.retry_after_seconds >= 1);
    for g in gateways {
        let events = g.events_with("rate_limit_store_unavailable").await;
        assert_eq!(names(&events), ["rate_limit_store_unavailable"]);
        let reason = events[0].1.as_str();
        assert!(reason == "connection" || reason == "timeout", "{reason}");
    }
    // Still down: more requests, still exactly one event each.
    for g in gateways {
        g.allowed(b"outage-2", &limit(3), 5).await;
    }

    redis.restart();
    // Requests carry the probes; a bounded number of them finds Redis back.
    let polls = WAIT.as_millis() / POLL.as_millis();
    for g in gateways {
        let mut recovered = false;
        for _ in 0..polls {
            g.store.check(b"probe", &limit(1_000)).await;
            if names(&g.events()).contains(&"rate_limit_store_recovered") {
                recovered = true;
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        assert!(recovered, "no recovery seen: {:?}", g.events());
    }
    // The three share one bucket again.
    assert_eq!(local.allowed(b"after", &limit(2), 1).await, 1);
    assert_eq!(deny.allowed(b"after", &limit(2), 1).await, 1);
    assert_eq!(allow.allowed(b"after", &limit(2), 3).await, 0);
    assert_eq!(redis.command("EXISTS portcullis:rl:after").unwrap(), ":1");
    for g in gateways {
        assert_eq!(
            names(&g.events()),
            ["rate_limit_store_unavailable", "rate_limit_store_recovered"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_redis_holds_decisions_do_not_panic() {
    let redis = RedisServer::start();
    let g = Gateway::new(&redis, OnError::Deny);
    // A value that is not a number reads as a full bucket.
    assert_eq!(
        redis.command("SET portcullis:rl:junk hello").unwrap(),
        "+OK"
    );
    assert!(g.store.check(b"junk", &limit(5)).await.allowed);
    // A key of the wrong type is a store error: on_error applies.
    assert_eq!(redis.command("HSET portcullis:rl:hash f v").unwrap(), ":1");
    assert!(!g.store.check(b"hash", &limit(5)).await.allowed);
    let events = g.events_with("rate_limit_store_unavailable").await;
    assert_eq!(events[0].1, "error");
    // Binary keys are fine.
    let recovered = {
        let mut ok = false;
        for _ in 0..WAIT.as_millis() / POLL.as_millis() {
            if g.store.check(b"\0\xff{}\r\n", &limit(5)).await.allowed {
                ok = true;
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        ok
    };
    assert!(recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_is_shared_across_gateways() {
    let redis = RedisServer::start();
    let a = Gateway::new(&redis, OnError::Deny);
    let b = Gateway::new(&redis, OnError::Deny);
    lockout_shared(&a, &b).await;
    assert_eq!(
        redis
            .command("EXISTS portcullis:lock:{203.0.113.7}:b")
            .unwrap(),
        ":1"
    );
    // The counter was reset when the block was placed.
    assert_eq!(
        redis
            .command("EXISTS portcullis:lock:{203.0.113.7}:n")
            .unwrap(),
        ":0"
    );
}

/// Failures counted on two stores of one shared backend block together.
pub(crate) async fn lockout_shared(a: &Gateway, b: &Gateway) {
    let lockout = Lockout {
        threshold: 3,
        window: Duration::from_secs(60),
        block: Duration::from_secs(120),
    };
    let ip = b"203.0.113.7";
    assert!(!a.store.record_failure(ip, &lockout).await);
    assert!(!b.store.record_failure(ip, &lockout).await);
    assert_eq!(a.store.is_blocked(ip).await, None);
    assert_eq!(b.store.is_blocked(ip).await, None);
    // The third failure, wherever it lands, blocks, and only it reports so.
    assert!(b.store.record_failure(ip, &lockout).await);
    assert!(!a.store.record_failure(ip, &lockout).await);
    assert!(!b.store.record_failure(ip, &lockout).await);
    for g in [&a, &b] {
        let left = g.store.is_blocked(ip).await.unwrap();
        assert!((1..=120).contains(&left), "{left}");
    }
    assert_eq!(a.store.is_blocked(b"203.0.113.8").await, None);
    assert!(a.events().is_empty() && b.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_blocks_placed_elsewhere_are_seen_and_outages_fall_back_to_local() {
    let mut redis = RedisServer::start();
    let g = Gateway::new(&redis, OnError::Deny);
    let lockout = Lockout {
        threshold: 2,
        window: Duration::from_secs(60),
        block: Duration::from_secs(30),
    };
    // A block another gateway placed.
    assert_eq!(
        redis
            .command("SET portcullis:lock:{198.51.100.1}:b 1 PX 30000")
            .unwrap(),
        "+OK"
    );
    let left = g.store.is_blocked(b"198.51.100.1").await.unwrap();
    assert!((1..=30).contains(&left), "{left}");

    redis.stop();
    // Known blocks are remembered locally; new failures count locally,
    // even with on_error = deny (which must not block everyone).
    assert!(g.store.is_blocked(b"198.51.100.1").await.is_some());
    assert_eq!(g.store.is_blocked(b"198.51.100.2").await, None);
    assert!(!g.store.record_failure(b"198.51.100.2", &lockout).await);
    assert!(g.store.record_failure(b"198.51.100.2", &lockout).await);
    assert!(g.store.is_blocked(b"198.51.100.2").await.is_some());
    let events = g.events_with("rate_limit_store_unavailable").await;
    assert_eq!(names(&events), ["rate_limit_store_unavailable"]);
}
