//! The storage behind Pingora's cache: whole responses in memory, each
//! counted with its weight so the eviction manager keeps them all under
//! `[cache] max_bytes`. Pingora's own `MemCache` is a test helper behind
//! one global lock that never frees memory; this one is sharded, and
//! every entry knows its route and path so the admin API can purge them.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use http::{HeaderName, HeaderValue};
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use prometheus::IntGauge;

use super::key;

/// What an entry costs beyond its body, header and key bytes: the map
/// slot, the `Arc`, the header's own structure, the eviction manager's
/// node and the allocator's rounding, as the process's resident memory
/// grows per entry (README, "Response caching").
const ENTRY_OVERHEAD: usize = 1536;

/// One stored response. The metadata is kept as its parts because
/// Pingora's `CacheMeta` cannot be cloned and re-parsing a serialized one
/// on every hit would cost more than the hit saves.
pub(crate) struct Stored {
    primary: Box<[u8]>,
    pub(crate) compact: CompactCacheKey,
    fresh_until: SystemTime,
    created: SystemTime,
    /// When it was last revalidated: the reference of `Age`.
    updated: SystemTime,
    header: ResponseHeader,
    body: Bytes,
    weight: usize,
}

impl Stored {
    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(self.fresh_until, self.created, 0, 0, self.header.clone());
        if self.updated != self.created {
            meta.set_epoch_override(self.updated);
        }
        meta
    }

    /// The route and path it was stored under (see [`key`]).
    pub(crate) fn is_of(&self, route: &str, path: Option<&str>) -> bool {
        let mut fields = key::fields(&self.primary);
        let (Some(r), Some(_host), Some(p)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        r == route.as_bytes() && path.is_none_or(|want| p == want.as_bytes())
    }
}

pub(crate) struct Store {
    entries: DashMap<HashBinary, Arc<Stored>>,
    max_object_bytes: AtomicUsize,
    bytes: IntGauge,
}

impl Store {
    pub(crate) fn new(max_object_bytes: usize, bytes: IntGauge) -> Self {
        Store {
            entries: DashMap::new(),
            max_object_bytes: AtomicUsize::new(max_object_bytes),
            bytes,
        }
    }

    pub(crate) fn set_max_object_bytes(&self, n: usize) {
        self.max_object_bytes.store(n, Ordering::Relaxed);
    }

    fn insert(&self, hash: HashBinary, stored: Stored) -> usize {
        let weight = stored.weight;
        self.bytes.add(weight as i64);
        if let Some(old) = self.entries.insert(hash, Arc::new(stored)) {
            self.bytes.sub(old.weight as i64);
        }
        weight
    }

    fn remove(&self, hash: &HashBinary) -> Option<Arc<Stored>> {
        let (_, old) = self.entries.remove(hash)?;
        self.bytes.sub(old.weight as i64);
        Some(old)
    }

    /// Removes every entry `keep` refuses, returning them (for the
    /// eviction manager to forget).
    pub(crate) fn remove_where(&self, drop: impl Fn(&Stored) -> bool) -> Vec<Arc<Stored>> {
        let mut removed = Vec::new();
        self.entries.retain(|_, stored| {
            if drop(stored) {
                removed.push(stored.clone());
                false
            } else {
                true
            }
        });
        for stored in &removed {
            self.bytes.sub(stored.weight as i64);
        }
        removed
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The body of a hit, served whole or from a range.
struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    weight: usize,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(ErrorType::InternalError, "seek beyond the stored body");
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        if self.end < self.start {
            return Error::e_explain(ErrorType::InternalError, "seek to an empty range");
        }
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A response on its way into the store: kept only when it ends within
/// `max_object_bytes`. A larger one still reaches the client whole; it is
/// just not stored (Pingora's own size limit would cut the client off).
struct Miss {
    store: &'static Store,
    hash: HashBinary,
    primary: Box<[u8]>,
    compact: CompactCacheKey,
    fresh_until: SystemTime,
    created: SystemTime,
    header: ResponseHeader,
    body: BytesMut,
    limit: usize,
    too_large: bool,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_large {
            return Ok(());
        }
        if self.body.len() + data.len() > self.limit {
            self.too_large = true;
            self.body = BytesMut::new();
        } else {
            self.body.extend_from_slice(&data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let header = compact(&self.header)?;
        if self.too_large {
            return Error::e_explain(
                ErrorType::InternalError,
                "response above max_object_bytes; not stored",
            );
        }
        let body = self.body.freeze();
        let weight = ENTRY_OVERHEAD
            + body.len()
            + self.primary.len()
            + header_bytes(&header)
            + self.compact.user_tag.len();
        let stored = Stored {
            primary: self.primary,
            compact: self.compact,
            fresh_until: self.fresh_until,
            created: self.created,
            updated: self.created,
            header,
            body,
            weight,
        };
        Ok(MissFinishType::Created(
            self.store.insert(self.hash, stored),
        ))
    }
}

/// A copy of `header` that owns its bytes: a parsed header's names and
/// values point into the whole buffer the response was read into, which a
/// stored entry would otherwise keep alive, and its maps keep the capacity
/// of the parser's.
fn compact(header: &ResponseHeader) -> Result<ResponseHeader> {
    let mut out = ResponseHeader::build_no_case(header.status, Some(header.headers.len()))?;
    out.set_version(header.version);
    for (name, value) in &header.headers {
        let name = HeaderName::from_bytes(name.as_str().as_bytes())
            .map_err(|e| Error::because(ErrorType::InternalError, "stored header name", e))?;
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|e| Error::because(ErrorType::InternalError, "stored header value", e))?;
        out.append_header(name, value)?;
    }
    Ok(out)
}

/// What a stored header costs: its bytes and the map's slots.
fn header_bytes(header: &ResponseHeader) -> usize {
    header
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 96)
        .sum()
}

#[async_trait]
impl Storage for Store {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(stored) = self.entries.get(&key.combined_bin()).map(|e| e.clone()) else {
            return Ok(None);
        };
        // The hash stands for the key; comparing the key itself rules out
        // a collision ever serving one caller's response to another.
        if *stored.primary != *key.primary_key() {
            return Ok(None);
        }
        let hit = Hit {
            body: stored.body.clone(),
            start: 0,
            end: stored.body.len(),
            done: false,
            weight: stored.weight,
        };
        Ok(Some((stored.meta(), Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Miss {
            store: self,
            hash: key.combined_bin(),
            primary: key.primary_key().into(),
            compact: key.to_compact(),
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            header: meta.response_header_copy(),
            body: BytesMut::new(),
            limit: self.max_object_bytes.load(Ordering::Relaxed),
            too_large: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(match self.remove(&target.key().combined_bin()) {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let Some(mut entry) = self.entries.get_mut(&hash) else {
            return Ok(false);
        };
        let old = entry.value();
        let updated = Stored {
            primary: old.primary.clone(),
            compact: old.compact.clone(),
            fresh_until: meta.fresh_until(),
            created: old.created,
            updated: meta.updated(),
            header: compact(meta.response_header())?,
            body: old.body.clone(),
            weight: old.weight,
        };
        *entry.value_mut() = Arc::new(updated);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
