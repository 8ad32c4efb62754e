//! Token revocation (CONTRACT §13): the list every authenticated token is
//! checked against, after any verification or introspection cache, so a
//! revocation takes effect on the next request.
//!
//! - Reads are lock-free: requests load an immutable snapshot
//!   ([`ArcSwap`]); with no revocation at all the check is one load and one
//!   emptiness test. Changes build a new snapshot, one at a time.
//! - `revocations_file` is rewritten whole on every change, atomically
//!   (a temporary file in the same directory, `fsync`, `rename`, `fsync` of
//!   the directory), so a crash leaves the old list or the new one, never
//!   a torn file. It is read when the configuration is loaded: restarts and
//!   graceful upgrades start from it; a reload keeps the running list.
//! - With `[rate_limit_store] kind = "redis"` the list is shared: a hash
//!   `portcullis:{revoked}` (field `j:<jti>` or `s:<subject>`) and a version
//!   counter `portcullis:{revoked}:v` bumped with every change, in one
//!   `MULTI` (the hash tag keeps both in one Redis Cluster slot). Each gateway polls the counter every [`SYNC_EVERY`] and
//!   reloads the hash when it moved, so a change made on one gateway is in
//!   force on all within that period (on the gateway that took the admin
//!   call, at once). After a Redis outage (and at start) a gateway first
//!   adds its own entries that Redis lacks: a revocation is never lost to
//!   an outage, at the price that one deleted elsewhere meanwhile comes
//!   back (delete it again).
//! - Expired entries are dropped every [`SYNC_EVERY`]: a `jti` entry at its
//!   `expires_at`, a subject entry at its optional `expires_at` (without
//!   one it stays until deleted: no bound on the lifetime of the tokens an
//!   identity provider issued can be known here).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use redis::Value;

use super::ratelimit::RateLimitStore;
use crate::config::revocations::{render_file, Revocation, RevocationKey};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;

/// How often expired entries are dropped and the shared list is polled.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The most entries held: the list lives in memory whole.
pub const MAX_ENTRIES: usize = 100_000;

const HASH: &str = "portcullis:{revoked}";
const VERSION: &str = "portcullis:{revoked}:v";

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("the revocation list is full ({MAX_ENTRIES} entries)")]
    Full,
    #[error("`expires_at` is in the past")]
    Expired,
}

/// What a change did beyond memory, where it takes effect at once.
#[derive(Debug)]
pub struct Applied {
    /// `Some` when writing `revocations_file` failed.
    pub persist_error: Option<String>,
    /// Whether Redis has it; `None` without Redis.
    pub shared: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct List {
    jtis: HashMap<String, u64>,
    /// Subject to (`issued_before`, `expires_at`).
    subjects: HashMap<String, (u64, Option<u64>)>,
}

impl List {
    fn of(entries: impl IntoIterator<Item = Revocation>) -> List {
        let mut list = List::default();
        for e in entries {
            list.insert(e);
        }
        list
    }

    fn len(&self) -> usize {
        self.jtis.len() + self.subjects.len()
    }

    fn is_empty(&self) -> bool {
        self.jtis.is_empty() && self.subjects.is_empty()
    }

    fn contains(&self, key: RevocationKey<'_>) -> bool {
        match key {
            RevocationKey::Jti(jti) => self.jtis.contains_key(jti),
            RevocationKey::Subject(s) => self.subjects.contains_key(s),
        }
    }

    fn insert(&mut self, e: Revocation) {
        match e {
            Revocation::Jti { jti, expires_at } => {
                self.jtis.insert(jti, expires_at);
            }
            Revocation::Subject {
                subject,
                issued_before,
                expires_at,
            } => {
                self.subjects.insert(subject, (issued_before, expires_at));
            }
        }
    }

    fn remove(&mut self, key: RevocationKey<'_>) -> bool {
        match key {
            RevocationKey::Jti(jti) => self.jtis.remove(jti).is_some(),
            RevocationKey::Subject(s) => self.subjects.remove(s).is_some(),
        }
    }

    /// Drops expired entries; the dropped ones.
    fn drop_expired(&mut self, now: u64) -> Vec<Revocation> {
        let gone: Vec<Revocation> = self.entries().filter(|e| e.is_expired(now)).collect();
        for e in &gone {
            self.remove(e.key());
        }
        gone
    }

    /// In a stable order (the file and `GET` list read the same every
    /// time).
    fn entries(&self) -> impl Iterator<Item = Revocation> + '_ {
        let mut jtis: Vec<_> = self.jtis.iter().collect();
        jtis.sort();
        let mut subjects: Vec<_> = self.subjects.iter().collect();
        subjects.sort();
        jtis.into_iter()
            .map(|(jti, at)| Revocation::Jti {
                jti: jti.clone(),
                expires_at: *at,
            })
            .chain(
                subjects
                    .into_iter()
                    .map(|(subject, (before, at))| Revocation::Subject {
                        subject: subject.clone(),
                        issued_before: *before,
                        expires_at: *at,
                    }),
            )
    }

    fn is_revoked(&self, jti: Option<&str>, subject: &str, iat: Option<u64>, now: u64) -> bool {
        if let Some(at) = jti.and_then(|j| self.jtis.get(j)) {
            if *at > now {
                return true;
            }
        }
        match self.subjects.get(subject) {
            Some((before, expires)) if expires.is_none_or(|at| at > now) => {
                // A token without `iat` may be from any time: revoked.
                iat.is_none_or(|iat| iat <= *before)
            }
            _ => false,
        }
    }
}

pub struct Revocations {
    file: Option<PathBuf>,
    current: ArcSwap<List>,
    /// One change at a time, so that the file and Redis see them in order
    /// and a poll never overwrites a change not yet shared.
    write: tokio::sync::Mutex<()>,
    store: Arc<RateLimitStore>,
    /// Redis holds every local entry (false at start and after a failure).
    synced: AtomicBool,
    /// The last version of the shared list read.
    seen_version: AtomicI64,
    /// The file lags memory (a reload merged lists, or a write failed).
    dirty: AtomicBool,
    started: AtomicBool,
    observer: Arc<Observer>,
}

impl Revocations {
    /// The list as `entries` (the file's, at load); nothing is written or
    /// contacted before the background task starts.
    pub fn new(
        file: Option<PathBuf>,
        entries: Vec<Revocation>,
        store: Arc<RateLimitStore>,
        observer: Arc<Observer>,
    ) -> Self {
        Revocations {
            file,
            current: ArcSwap::from_pointee(List::of(entries)),
            write: tokio::sync::Mutex::new(()),
            store,
            synced: AtomicBool::new(false),
            seen_version: AtomicI64::new(-1),
            dirty: AtomicBool::new(false),
            started: AtomicBool::new(false),
            observer,
        }
    }

    /// Whether a reload can keep this list as it is.
    pub fn fits(&self, file: Option<&Path>, store: &Arc<RateLimitStore>) -> bool {
        self.file.as_deref() == file && Arc::ptr_eq(&self.store, store)
    }

    /// A reload that changed the file or the store: the running entries
    /// are kept too, and written to the new file by the next sync.
    pub fn inherit(&self, old: &Revocations) {
        let mut list = (**self.current.load()).clone();
        for e in old.current.load().entries() {
            if !list.contains(e.key()) {
                list.insert(e);
            }
        }
        self.current.store(Arc::new(list));
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether a token with these claims is revoked at `now`: its `jti`
    /// is listed, or its subject is with an `issued_before` at or after
    /// its `iat` (or it has no `iat`).
    pub fn is_revoked(&self, jti: Option<&str>, subject: &str, iat: Option<u64>, now: u64) -> bool {
        let list = self.current.load();
        !list.is_empty() && list.is_revoked(jti, subject, iat, now)
    }

    pub fn list(&self) -> Vec<Revocation> {
        self.current.load().entries().collect()
    }

    /// Adds (or replaces) an entry: in force at once, then saved and
    /// shared.
    pub async fn add(&self, entry: Revocation) -> Result<Applied, RevocationError> {
        let _one = self.write.lock().await;
        if entry.is_expired(now_unix()) {
            return Err(RevocationError::Expired);
        }
        let mut list = (**self.current.load()).clone();
        if !list.contains(entry.key()) && list.len() >= MAX_ENTRIES {
            return Err(RevocationError::Full);
        }
        list.insert(entry.clone());
        self.current.store(Arc::new(list));
        let persist_error = self.persist().await;
        let shared = match self.store.redis() {
            None => None,
            Some(redis) => {
                let (field, value) = encode(&entry);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset(HASH, field, value)
                    .ignore()
                    .incr(VERSION, 1)
                    .ignore();
                Some(self.shared_write(redis, &pipe).await)
            }
        };
        Ok(Applied {
            persist_error,
            shared,
        })
    }

    /// Deletes the entry of `key`; `None` when there was none.
    pub async fn remove(&self, key: RevocationKey<'_>) -> Option<Applied> {
        let _one = self.write.lock().await;
        let mut list = (**self.current.load()).clone();
        let local = list.remove(key);
        self.current.store(Arc::new(list));
        let (remote, shared) = match self.store.redis() {
            None => (false, None),
            Some(redis) => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hdel(HASH, field_of(key))
                    .incr(VERSION, 1)
                    .ignore();
                let removed = redis
                    .query_pipeline(&pipe, |reply| match reply {
                        Value::Array(items) => match items.as_slice() {
                            [Value::Int(n)] => Some(*n > 0),
                            _ => None,
                        },
                        _ => None,
                    })
                    .await;
                match removed {
                    Ok(remote) => (remote, Some(true)),
                    Err(_) => {
                        self.synced.store(false, Ordering::Release);
                        (false, Some(false))
                    }
                }
            }
        };
        if !local && !remote {
            return None;
        }
        let persist_error = if local { self.persist().await } else { None };
        Some(Applied {
            persist_error,
            shared,
        })
    }

    async fn shared_write(
        &self,
        redis: &super::ratelimit::redis::RedisStore,
        pipe: &redis::Pipeline,
    ) -> bool {
        let ok = redis.query_pipeline(pipe, |_| Some(())).await.is_ok();
        if !ok {
            self.synced.store(false, Ordering::Release);
        }
        ok
    }

    /// Starts the periodic sync (expiry, Redis, a lagging file) once.
    pub fn start_background(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Revocations> = Arc::downgrade(self);
        let guard = crate::core::tasks::TaskGuard::new();
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                let Some(me) = weak.upgrade() else { break };
                me.sync().await;
                drop(me);
                tokio::time::sleep(SYNC_EVERY).await;
            }
        });
    }

    /// One round of the background work.
    pub async fn sync(&self) {
        let _one = self.write.lock().await;
        let now = now_unix();
        let mut list = (**self.current.load()).clone();
        let expired = list.drop_expired(now);
        let mut changed = !expired.is_empty();
        if let Some(redis) = self.store.redis() {
            if let Some(remote) = self.pull(redis, &list, now).await {
                changed |= remote != list;
                list = remote;
            }
            if !expired.is_empty() {
                let mut hdel = redis::cmd("HDEL");
                hdel.arg(HASH);
                for e in &expired {
                    hdel.arg(field_of(e.key()));
                }
                let _ = redis.query(&hdel, |_| Some(())).await;
            }
        }
        if changed {
            self.current.store(Arc::new(list));
            self.dirty.store(true, Ordering::Release);
        }
        if self.dirty.load(Ordering::Acquire) {
            self.persist().await;
        }
    }

    /// The shared list when it moved since the last read (after first
    /// adding the local entries it lacks, when not in sync); `None` when
    /// it did not move or Redis cannot answer.
    async fn pull(
        &self,
        redis: &super::ratelimit::redis::RedisStore,
        local: &List,
        now: u64,
    ) -> Option<List> {
        let synced = self.synced.load(Ordering::Acquire);
        let version = redis
            .query(redis::cmd("GET").arg(VERSION), |reply| match reply {
                Value::Nil => Some(0),
                Value::BulkString(b) => std::str::from_utf8(&b).ok()?.parse().ok(),
                Value::Int(n) => Some(n),
                _ => None,
            })
            .await;
        let Ok(version) = version else {
            self.synced.store(false, Ordering::Release);
            return None;
        };
        if synced && version == self.seen_version.load(Ordering::Acquire) {
            return None;
        }
        let remote = self.read_hash(redis).await?;
        let mut merged = remote.clone();
        if !synced {
            let missing: Vec<Revocation> = local
                .entries()
                .filter(|e| !remote.contains(e.key()))
                .collect();
            if !missing.is_empty() {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for e in &missing {
                    let (field, value) = encode(e);
                    pipe.hset(HASH, field, value).ignore();
                }
                pipe.incr(VERSION, 1).ignore();
                if redis.query_pipeline(&pipe, |_| Some(())).await.is_err() {
                    return None;
                }
                for e in missing {
                    merged.insert(e);
                }
            }
            self.synced.store(true, Ordering::Release);
        }
        self.seen_version.store(version, Ordering::Release);
        merged.drop_expired(now);
        Some(merged)
    }

    async fn read_hash(&self, redis: &super::ratelimit::redis::RedisStore) -> Option<List> {
        redis
            .query(redis::cmd("HGETALL").arg(HASH), |reply| {
                let items = match reply {
                    Value::Array(items) => items,
                    Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                    _ => return None,
                };
                let mut list = List::default();
                let mut it = items.into_iter();
                while let (Some(Value::BulkString(f)), Some(Value::BulkString(v))) =
                    (it.next(), it.next())
                {
                    // Entries this version cannot read are left alone.
                    if let Some(e) = decode(&f, &v) {
                        list.insert(e);
                    }
                }
                Some(list)
            })
            .await
            .map_err(|_| self.synced.store(false, Ordering::Release))
            .ok()
    }

    /// Writes the list to `revocations_file`; the error text on failure
    /// (the file is then written again by the next sync).
    async fn persist(&self) -> Option<String> {
        let path = self.file.clone()?;
        let bytes = render_file(self.current.load().entries().collect::<Vec<_>>().iter());
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        match written {
            Ok(()) => {
                self.dirty.store(false, Ordering::Release);
                None
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                let reason = format!("cannot write revocations_file: {e}");
                tracing::error!("{reason}");
                self.observer.security_event(&SecurityEvent::new(
                    "revocations_persist_failed",
                    reason.clone(),
                ));
                Some(reason)
            }
        }
    }
}

/// Replaces `path` with `bytes` so that a reader (or a crash) sees the old
/// file or the new one whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn field_of(key: RevocationKey<'_>) -> Vec<u8> {
    let (tag, id) = match key {
        RevocationKey::Jti(j) => (b"j:", j),
        RevocationKey::Subject(s) => (b"s:", s),
    };
    [tag.as_slice(), id.as_bytes()].concat()
}

/// Field and value in the shared hash: `<expires_at>` for a `jti`,
/// `<issued_before> <expires_at or ->` for a subject.
fn encode(e: &Revocation) -> (Vec<u8>, String) {
    let value = match e {
        Revocation::Jti { expires_at, .. } => expires_at.to_string(),
        Revocation::Subject {
            issued_before,
            expires_at,
            ..
        } => format!(
            "{issued_before} {}",
            expires_at.map_or_else(|| "-".to_string(), |a| a.to_string())
        ),
    };
    (field_of(e.key()), value)
}

fn decode(field: &[u8], value: &[u8]) -> Option<Revocation> {
    let value = std::str::from_utf8(value).ok()?;
    let id = std::str::from_utf8(field.get(2..)?).ok()?.to_string();
    if id.is_empty() {
        return None;
    }
    match field.get(..2)? {
        b"j:" => Some(Revocation::Jti {
            jti: id,
            expires_at: value.parse().ok()?,
        }),
        b"s:" => {
            let (before, at) = value.split_once(' ')?;
            Some(Revocation::Subject {
                subject: id,
                issued_before: before.parse().ok()?,
                expires_at: match at {
                    "-" => None,
                    at => Some(at.parse().ok()?),
                },
            })
        }
        _ => None,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jti(j: &str, at: u64) -> Revocation {
        Revocation::Jti {
            jti: j.into(),
            expires_at: at,
        }
    }

    fn subject(s: &str, before: u64, at: Option<u64>) -> Revocation {
        Revocation::Subject {
            subject: s.into(),
            issued_before: before,
            expires_at: at,
        }
    }

    #[test]
    fn what_a_list_revokes() {
        let list = List::of([jti("t1", 100), subject("alice", 50, None)]);
        assert!(list.is_revoked(Some("t1"), "bob", Some(10), 99));
        assert!(!list.is_revoked(Some("t1"), "bob", Some(10), 100));
        assert!(!list.is_revoked(Some("T1"), "bob", Some(10), 99));
        assert!(list.is_revoked(None, "alice", Some(50), 99));
        assert!(list.is_revoked(None, "alice", None, 99));
        assert!(!list.is_revoked(None, "alice", Some(51), 99));
        assert!(!list.is_revoked(None, "Alice", Some(1), 99));
        let list = List::of([subject("alice", 50, Some(60))]);
        assert!(list.is_revoked(None, "alice", Some(1), 59));
        assert!(!list.is_revoked(None, "alice", Some(1), 60));
    }

    #[test]
    fn expired_entries_are_dropped() {
        let mut list = List::of([jti("a", 10), jti("b", 20), subject("s", 1, None)]);
        assert_eq!(list.drop_expired(15), vec![jti("a", 10)]);
        assert_eq!(list.len(), 2);
        assert_eq!(list.drop_expired(1_000_000).len(), 1);
        assert_eq!(
            list.entries().collect::<Vec<_>>(),
            vec![subject("s", 1, None)]
        );
    }

    #[test]
    fn shared_encoding_round_trips() {
        for e in [
            jti("a b:c", 10),
            subject("s", 1, None),
            subject("s:x", 1, Some(2)),
        ] {
            let (f, v) = encode(&e);
            assert_eq!(decode(&f, v.as_bytes()), Some(e));
        }
        assert_eq!(decode(b"x:a", b"1"), None);
        assert_eq!(decode(b"j:", b"1"), None);
        assert_eq!(decode(b"j:a", b"x"), None);
        assert_eq!(decode(b"s:a", b"1"), None);
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        assert!(write_atomically(&dir.path().join("missing/r.json"), b"x").is_err());
    }
}
