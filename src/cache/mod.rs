//! The response cache of CONTRACT §10, on Pingora's cache machinery: the
//! proxy hooks decide what may be stored and under which key; Pingora
//! looks up, fills, locks identical misses into one upstream request and
//! evicts the least recently used entries past `[cache] max_bytes`.
//!
//! There is one cache per process, shared by every route and kept across
//! reloads: Pingora needs its parts for the life of the process.

pub(crate) mod key;
pub(crate) mod policy;
mod store;

use std::time::Duration;

use pingora::cache::eviction::lru::Manager;
use pingora::cache::eviction::EvictionManager;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;
use pingora::cache::{CacheEntryKeyRef, CacheOptionOverrides, CachePhase, HttpCache};
use prometheus::IntGauge;

use crate::config::CacheLimits;
use store::Store;

/// `x-cache-status` of a request the cache could not answer by method,
/// key or scope (and of a refusal on a caching route).
pub(crate) const BYPASS: &str = "BYPASS";

/// `x-cache-status` of a request the cache took part in, from Pingora's
/// phase at the response.
pub(crate) fn status_of(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit | CachePhase::Stale | CachePhase::StaleUpdating => "HIT",
        CachePhase::Expired | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            "EXPIRED"
        }
        // Looked up and not found, or found not storable by the response.
        _ => "MISS",
    }
}

const SHARDS: usize = 16;
/// The longest a first miss holds back identical requests; after it they
/// go upstream on their own.
const LOCK_AGE: Duration = Duration::from_secs(30);
/// Keys remembered as not cacheable (per shard), so that requests for them
/// skip the lookup and the lock.
const UNCACHEABLE_KEYS_PER_SHARD: usize = 4096;

pub(crate) struct EdgeCache {
    store: Store,
    eviction: Manager<SHARDS>,
    lock: Box<CacheKeyLockImpl>,
    predictor: Predictor<SHARDS>,
}

impl EdgeCache {
    /// The process's cache. Leaked on purpose: Pingora holds `'static`
    /// references to it from every request, and it lives as long as the
    /// process (reloads keep it).
    pub(crate) fn leak(limits: CacheLimits, bytes: IntGauge) -> &'static EdgeCache {
        Box::leak(Box::new(EdgeCache {
            store: Store::new(limits.max_object_bytes, bytes),
            eviction: Manager::with_capacity(limits.max_bytes, 1024),
            lock: CacheLock::new_boxed(LOCK_AGE),
            predictor: Predictor::new(UNCACHEABLE_KEYS_PER_SHARD, None),
        }))
    }

    /// A reload's new bounds; entries over a smaller `max_bytes` go with
    /// the next response stored.
    pub(crate) fn set_limits(&self, limits: CacheLimits) {
        self.eviction.set_weight_limit(limits.max_bytes);
        self.store.set_max_object_bytes(limits.max_object_bytes);
    }

    /// Turns Pingora's cache on for this request; identical misses wait
    /// for the first one at most `wait`.
    pub(crate) fn enable(&'static self, cache: &mut HttpCache, wait: Duration) {
        let mut options = CacheOptionOverrides::default();
        options.wait_timeout = Some(wait);
        options.max_lock_retries = Some(2);
        cache.enable(
            &self.store,
            Some(&self.eviction),
            Some(&self.predictor),
            Some(&*self.lock),
            Some(options),
        );
    }

    /// Drops the entries of `route` (those of one normalized `path` when
    /// given, every query and variant of it); returns how many.
    pub(crate) fn purge(&self, route: &str, path: Option<&str>) -> usize {
        let removed = self.store.remove_where(|s| s.is_of(route, path));
        for stored in &removed {
            self.eviction
                .remove(CacheEntryKeyRef::from_entry_id(&stored.compact, None));
        }
        removed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::key::KeyParts;
    use super::*;
    use pingora::cache::storage::Storage;
    use pingora::cache::trace::Span;
    use pingora::cache::{CacheKey, CacheMeta};
    use pingora::http::ResponseHeader;
    use std::time::SystemTime;

    fn key(route: &str, path: &str) -> CacheKey {
        let headers = http::HeaderMap::new();
        let primary = KeyParts {
            route,
            host: b"h",
            path,
            query: None,
            consumer: None,
            upstream: "u",
            vary: &[],
            headers: &headers,
        }
        .build();
        CacheKey::new(primary, route)
    }

    async fn put(cache: &'static EdgeCache, key: &CacheKey, body: &'static [u8]) {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let span = Span::inactive().handle();
        let mut miss = cache
            .store
            .get_miss_handler(key, &meta, &span)
            .await
            .unwrap();
        miss.write_body(bytes::Bytes::from_static(body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    #[tokio::test]
    async fn purges_by_route_and_path_and_counts_bytes() {
        let gauge = IntGauge::new("t_cache_bytes", "t").unwrap();
        let cache = EdgeCache::leak(
            CacheLimits {
                max_bytes: 1 << 20,
                max_object_bytes: 1 << 10,
            },
            gauge.clone(),
        );
        for (route, path) in [("a", "/x"), ("a", "/y"), ("b", "/x")] {
            put(cache, &key(route, path), b"body").await;
        }
        assert_eq!(cache.store.len(), 3);
        assert!(gauge.get() > 0);
        let span = Span::inactive().handle();
        assert!(cache
            .store
            .lookup(&key("a", "/x"), &span)
            .await
            .unwrap()
            .is_some());
        assert_eq!(cache.purge("a", Some("/x")), 1);
        assert_eq!(cache.purge("a", Some("/x")), 0);
        assert_eq!(cache.purge("a", None), 1);
        assert_eq!(cache.store.len(), 1);
        assert_eq!(cache.purge("b", None), 1);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_response_over_the_object_limit_is_not_stored() {
        let gauge = IntGauge::new("t_cache_bytes2", "t").unwrap();
        let cache = EdgeCache::leak(
            CacheLimits {
                max_bytes: 1 << 20,
                max_object_bytes: 3,
            },
            gauge,
        );
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let span = Span::inactive().handle();
        let k = key("a", "/big");
        let mut miss = cache
            .store
            .get_miss_handler(&k, &meta, &span)
            .await
            .unwrap();
        miss.write_body(bytes::Bytes::from_static(b"ab"), false)
            .await
            .unwrap();
        miss.write_body(bytes::Bytes::from_static(b"cd"), true)
            .await
            .unwrap();
        assert!(miss.finish().await.is_err());
        assert!(cache.store.lookup(&k, &span).await.unwrap().is_none());
    }
}
