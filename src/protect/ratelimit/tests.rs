use super::*;
use crate::config::{Log, LogTarget};
use std::path::{Path, PathBuf};

fn observer(dir: &Path) -> (Arc<Observer>, PathBuf) {
    let path = dir.join("security.log");
    let log = Log {
        level: "info".into(),
        access_log: LogTarget::Off,
        security_log: LogTarget::File(path.clone()),
        ..Log::default()
    };
    (Arc::new(Observer::new(&log).unwrap()), path)
}

/// The `event` names logged so far, once `want` of them are there or
/// two seconds have passed (the log is written by another thread).
fn events(path: &Path, want: usize) -> Vec<String> {
    let mut found = Vec::new();
    for _ in 0..100 {
        found = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["event"].as_str().map(str::to_string))
            .collect();
        if found.len() >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    found
}

/// A Redis URL nothing listens on: every call is refused at once.
fn dead_redis(on_error: OnError) -> StoreConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    StoreConfig {
        kind: StoreKind::Redis {
            url: format!("redis://127.0.0.1:{port}"),
        },
        on_error,
        ..StoreConfig::default()
    }
}

fn limit() -> Limit {
    Limit {
        requests: 2,
        window: Duration::from_secs(60),
        burst: 2,
    }
}

#[tokio::test]
async fn local_store_limits_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let store = RateLimitStore::new(StoreConfig::default(), observer(dir.path()).0).unwrap();
    assert!(store.check(b"k", &limit()).await.allowed);
    assert!(store.check(b"k", &limit()).await.allowed);
    let refused = store.check(b"k", &limit()).await;
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after_seconds, 30);
}

#[tokio::test]
async fn unreachable_redis_with_on_error_local_limits_per_instance_and_reports_once() {
    let dir = tempfile::tempdir().unwrap();
    let (obs, log) = observer(dir.path());
    let store = RateLimitStore::new(dead_redis(OnError::Local), obs).unwrap();
    let mut allowed = 0;
    for _ in 0..10 {
        if store.check(b"k", &limit()).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 2);
    assert_eq!(events(&log, 2), vec!["rate_limit_store_unavailable"]);
}

#[tokio::test]
async fn unreachable_redis_with_on_error_allow_or_deny() {
    let dir = tempfile::tempdir().unwrap();
    let (obs, _) = observer(dir.path());
    let allow = RateLimitStore::new(dead_redis(OnError::Allow), obs.clone()).unwrap();
    let deny = RateLimitStore::new(dead_redis(OnError::Deny), obs).unwrap();
    for _ in 0..5 {
        let d = allow.check(b"k", &limit()).await;
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (2, 2));
        let d = deny.check(b"k", &limit()).await;
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_seconds), (0, 1));
    }
}

#[tokio::test]
async fn lockout_falls_back_to_local_even_with_on_error_deny() {
    let dir = tempfile::tempdir().unwrap();
    let store = RateLimitStore::new(dead_redis(OnError::Deny), observer(dir.path()).0).unwrap();
    let lockout = Lockout {
        threshold: 2,
        window: Duration::from_secs(60),
        block: Duration::from_secs(120),
    };
    assert_eq!(store.is_blocked(b"1.2.3.4").await, None);
    assert!(!store.record_failure(b"1.2.3.4", &lockout).await);
    assert!(store.record_failure(b"1.2.3.4", &lockout).await);
    assert!(!store.record_failure(b"1.2.3.4", &lockout).await);
    assert_eq!(store.is_blocked(b"1.2.3.4").await, Some(120));
    assert_eq!(store.is_blocked(b"5.6.7.8").await, None);
}

#[test]
fn bad_redis_urls_are_refused_without_echoing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["redis://:hunter2@127.0.0.1:notaport", "http://x", "hunter2"] {
        let config = StoreConfig {
            kind: StoreKind::Redis { url: url.into() },
            ..StoreConfig::default()
        };
        let err = RateLimitStore::new(config, observer(dir.path()).0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("invalid redis_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// The store lives in the runtime shared by Pingora's threads, and its
/// futures run inside `async_trait` request filters.
#[test]
fn store_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let dir = tempfile::tempdir().unwrap();
    let store = RateLimitStore::new(dead_redis(OnError::Local), observer(dir.path()).0).unwrap();
    send_sync(&store);
    let lockout = Lockout {
        threshold: 1,
        window: Duration::from_secs(1),
        block: Duration::from_secs(1),
    };
    send(store.check(b"k", &limit()));
    send(store.is_blocked(b"ip"));
    send(store.record_failure(b"ip", &lockout));
}

#[test]
fn debug_output_redacts_redis_passwords() {
    let config = StoreConfig {
        kind: StoreKind::Redis {
            url: "redis://user:hunter2@cache:6379/0".into(),
        },
        ..StoreConfig::default()
    };
    let shown = format!("{config:?}");
    assert!(shown.contains("redis://***@cache:6379/0"), "{shown}");
    assert!(!shown.contains("hunter2"));
}
