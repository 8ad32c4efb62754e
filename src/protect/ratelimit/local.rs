//! The in-process store: rate-limit buckets and failed-auth lockouts in
//! bounded concurrent tables.
//!
//! Keys are chosen by clients (an IP, a consumer, a header value), so the
//! tables must stay bounded however many distinct keys arrive:
//!
//! - Hot path: a [`DashMap`] shard *read* lock and, for buckets, a
//!   compare-and-swap on the key's TAT. No global lock; the only
//!   allocation is the boxed key when a key is first seen.
//! - Expiry: an entry is idle once its bucket would be full again (or its
//!   failure window and block are over). An idle entry already behaves like
//!   a missing one, so removing it is invisible; sweeps remove them.
//! - Size: every insert is counted. Once the count reaches the cap (or, on
//!   a quieter table, after [`SWEEP_AFTER_INSERTS`] inserts and
//!   [`SWEEP_EVERY`]), one sweep runs, off the request path when a Tokio
//!   runtime is there to take it. It drops idle entries and, when more than
//!   90% of the cap is still live, evicts the entries closest to idle
//!   first: forgetting them costs the least, since a forgotten key restarts
//!   with a full bucket. If inserts outrun the sweep past cap + 1/8, new
//!   keys are decided as fresh ones without being stored (which is what a
//!   new key gets anyway), so memory stays bounded.
//!
//! Lockout uses a fixed window that opens at an IP's first failure: once
//! `threshold` failures fall within `window` of it the IP is blocked for
//! `block`, and the count starts from zero when the block is placed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::gcra::{self, Params, MICROS};
use super::{Decision, Limit, Lockout};

/// Shards per table: with a million entries a sweep holds each shard's
/// lock for a few thousand entries only, and request threads rarely meet.
const SHARDS: usize = 256;
/// A table far below its cap is still swept of idle keys after this many
/// inserts, once [`SWEEP_EVERY`] has passed since the last sweep.
const SWEEP_AFTER_INSERTS: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Entries looked at to choose which to evict when live ones fill the table.
const EVICTION_SAMPLE: usize = 1024;

/// Rate-limit buckets and lockouts of this process.
pub struct LocalStore {
    epoch: Instant,
    buckets: Arc<Table<AtomicU64>>,
    lockouts: Arc<Table<LockState>>,
}

impl LocalStore {
    /// `max_keys` bounds each of the two tables (buckets and lockouts).
    pub fn new(max_keys: u64) -> Self {
        let cap = usize::try_from(max_keys).unwrap_or(usize::MAX).max(1);
        LocalStore {
            epoch: Instant::now(),
            buckets: Arc::new(Table::new(cap)),
            lockouts: Arc::new(Table::new(cap)),
        }
    }

    /// Decides one request for `key` now.
    pub fn check(&self, key: &[u8], limit: &Limit) -> Decision {
        self.check_at(key, limit, self.now())
    }

    /// Seconds until `ip` may try again, if it is blocked.
    pub fn is_blocked(&self, ip: &[u8]) -> Option<u64> {
        self.is_blocked_at(ip, self.now())
    }

    /// The IPs blocked now (at most `max`) with the seconds each has left.
    pub fn blocked(&self, max: usize) -> Vec<(IpAddr, u64)> {
        let now = self.now();
        self.lockouts
            .map
            .iter()
            .filter(|e| e.value().blocked_until > now)
            .filter_map(|e| {
                let ip = ip_of(e.key())?;
                let left = gcra::ceil_div(e.value().blocked_until - now, MICROS).max(1);
                Some((ip, left))
            })
            .take(max)
            .collect()
    }

    /// Counts one failure; true exactly when it blocked the IP.
    pub fn record_failure(&self, ip: &[u8], lockout: &Lockout) -> bool {
        self.record_failure_at(ip, lockout, self.now())
    }

    /// Remembers a block placed elsewhere (Redis), so that a blocked
    /// client's further requests are refused without a round trip.
    pub fn mirror_block(&self, ip: &[u8], remaining: Duration) {
        let now = self.now();
        let until = now.saturating_add(micros(remaining));
        self.lockouts.upsert(ip, now, LockState::default, |s| {
            s.blocked_until = s.blocked_until.max(until);
        });
    }

    /// Microseconds since the store was made: monotonic, so a wall-clock
    /// step cannot refill or drain buckets; the unit of the Redis script,
    /// so both stores round alike.
    fn now(&self) -> u64 {
        micros(self.epoch.elapsed())
    }

    fn check_at(&self, key: &[u8], limit: &Limit, now: u64) -> Decision {
        let p = Params::new(limit, MICROS);
        if let Some(tat) = self.buckets.map.get(key) {
            return take(&tat, now, &p);
        }
        self.buckets
            .upsert(key, now, || AtomicU64::new(0), |tat| take(tat, now, &p))
            .unwrap_or_else(|| gcra::check(0, now, &p).0)
    }

    fn is_blocked_at(&self, ip: &[u8], now: u64) -> Option<u64> {
        let state = self.lockouts.map.get(ip)?;
        (state.blocked_until > now)
            .then(|| gcra::ceil_div(state.blocked_until - now, MICROS).max(1))
    }

    fn record_failure_at(&self, ip: &[u8], lockout: &Lockout, now: u64) -> bool {
        // A zero threshold would block on no failure at all: read it as
        // "lockout off" (the configuration should refuse it anyway).
        if lockout.threshold == 0 {
            return false;
        }
        self.lockouts
            .upsert(ip, now, LockState::default, |s| {
                if s.blocked_until > now {
                    return false;
                }
                if s.window_end <= now {
                    s.failures = 0;
                    s.window_end = now.saturating_add(micros(lockout.window));
                }
                s.failures += 1;
                if s.failures < lockout.threshold {
                    return false;
                }
                s.failures = 0;
                s.window_end = now;
                s.blocked_until = now.saturating_add(micros(lockout.block));
                true
            })
            .unwrap_or(false)
    }
}

/// The address of a lockout key (an IP's octets).
fn ip_of(key: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(key) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(key).ok().map(IpAddr::from)
}

/// Takes a token from `tat` if GCRA allows it; lock-free, retried only when
/// another thread moved the TAT in between.
fn take(tat: &AtomicU64, now: u64, p: &Params) -> Decision {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let (decision, new) = gcra::check(current, now, p);
        let Some(new) = new else {
            return decision;
        };
        match tat.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return decision,
            Err(actual) => current = actual,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One IP's failed-auth record.
#[derive(Debug, Default)]
struct LockState {
    window_end: u64,
    failures: u64,
    blocked_until: u64,
}

/// What a table needs to know to expire and evict an entry.
trait Expiring: Send + Sync + 'static {
    /// The instant from which the entry is indistinguishable from a
    /// missing one.
    fn idle_at(&self) -> u64;
}

impl Expiring for AtomicU64 {
    fn idle_at(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
}

impl Expiring for LockState {
    fn idle_at(&self) -> u64 {
        self.window_end.max(self.blocked_until)
    }
}

/// A bounded map whose idle entries are swept (see the module docs).
struct Table<V> {
    map: DashMap<Box<[u8]>, V>,
    cap: usize,
    /// Entries after the last sweep plus inserts since: an upper bound of
    /// the size that costs one atomic add to keep.
    estimate: AtomicUsize,
    after_sweep: AtomicUsize,
    last_sweep: AtomicU64,
    sweeping: AtomicBool,
}

impl<V: Expiring> Table<V> {
    fn new(cap: usize) -> Self {
        Table {
            map: DashMap::with_shard_amount(SHARDS),
            cap,
            estimate: AtomicUsize::new(0),
            after_sweep: AtomicUsize::new(0),
            last_sweep: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the key's entry, inserting `make()` first when missing.
    /// `None` when the table is over its hard bound and the key is new.
    fn upsert<R>(
        self: &Arc<Self>,
        key: &[u8],
        now: u64,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        if let Some(mut v) = self.map.get_mut(key) {
            return Some(f(&mut v));
        }
        let hard_bound = self.cap.saturating_add(self.cap / 8);
        if self.estimate.load(Ordering::Relaxed) >= hard_bound {
            self.maybe_sweep(now);
            return None;
        }
        // The entry's shard lock is released at the end of this statement,
        // before a sweep that may run on this very thread.
        let (result, inserted) = match self.map.entry(Box::from(key)) {
            Entry::Occupied(mut o) => (f(o.get_mut()), false),
            Entry::Vacant(v) => (f(&mut v.insert(make())), true),
        };
        if inserted {
            self.estimate.fetch_add(1, Ordering::Relaxed);
            self.maybe_sweep(now);
        }
        Some(result)
    }

    fn maybe_sweep(self: &Arc<Self>, now: u64) {
        let estimate = self.estimate.load(Ordering::Relaxed);
        let inserted = estimate.saturating_sub(self.after_sweep.load(Ordering::Relaxed));
        let quiet_due = inserted >= SWEEP_AFTER_INSERTS
            && now.saturating_sub(self.last_sweep.load(Ordering::Relaxed)) >= micros(SWEEP_EVERY);
        if !(estimate >= self.cap || quiet_due) {
            return;
        }
        if self
            .sweeping
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let guard = SweepGuard(Arc::clone(self));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Detached: if the runtime drops the task unrun, the
                // guard's drop still clears the flag.
                drop(runtime.spawn_blocking(move || guard.0.sweep(now)));
            }
            Err(_) => guard.0.sweep(now),
        }
    }

    fn sweep(&self, now: u64) {
        self.map.retain(|_, v| v.idle_at() > now);
        let target = self.cap - self.cap / 10;
        let len = self.map.len();
        if len > target {
            self.evict(len - target, len, now);
        }
        let len = self.map.len();
        self.after_sweep.store(len, Ordering::Relaxed);
        self.estimate.store(len, Ordering::Relaxed);
        self.last_sweep.store(now, Ordering::Relaxed);
    }

    /// Removes `excess` live entries, those closest to idle first, with a
    /// cut-off estimated from a sample rather than a full sort.
    fn evict(&self, excess: usize, len: usize, now: u64) {
        let mut sample: Vec<u64> = self
            .map
            .iter()
            .take(EVICTION_SAMPLE)
            .map(|e| e.value().idle_at().saturating_sub(now))
            .collect();
        sample.sort_unstable();
        let quantile = excess.saturating_mul(sample.len()) / len.max(1);
        let cutoff = sample
            .get(quantile.min(sample.len().saturating_sub(1)))
            .copied()
            .unwrap_or(u64::MAX);
        let mut left = excess;
        self.map.retain(|_, v| {
            if left > 0 && v.idle_at().saturating_sub(now) <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
        // The sample misjudged the cut-off: drop arbitrary entries to stay
        // within the bound.
        if left > 0 {
            self.map.retain(|_, _| {
                if left > 0 {
                    left -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

/// Clears the table's `sweeping` flag however the sweep ends.
struct SweepGuard<V: Expiring>(Arc<Table<V>>);

impl<V: Expiring> Drop for SweepGuard<V> {
    fn drop(&mut self) {
        self.0.sweeping.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = MICROS;

    fn limit(requests: u64, window_s: u64, burst: u64) -> Limit {
        Limit {
            requests,
            window: Duration::from_secs(window_s),
            burst,
        }
    }

    fn lockout() -> Lockout {
        Lockout {
            threshold: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
        }
    }

    #[test]
    fn buckets_are_per_key() {
        let store = LocalStore::new(100);
        let l = limit(2, 60, 2);
        let now = 10 * S;
        assert!(store.check_at(b"a", &l, now).allowed);
        assert!(store.check_at(b"a", &l, now).allowed);
        assert!(!store.check_at(b"a", &l, now).allowed);
        assert!(store.check_at(b"b", &l, now).allowed);
        assert!(store.check_at(b"a", &l, now + 30 * S).allowed);
    }

    #[test]
    fn concurrent_checks_on_one_key_allow_exactly_burst() {
        let store = Arc::new(LocalStore::new(100));
        let l = limit(500, 3600, 500);
        let allowed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..250 {
                        if store.check(b"hot", &l).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 500);
    }

    #[test]
    fn idle_keys_are_swept_and_the_table_stays_bounded() {
        let store = LocalStore::new(1_000);
        let l = limit(1, 1, 1);
        for i in 0..5_000u32 {
            // Each key is idle one second after its request.
            let now = u64::from(i) * S;
            store.check_at(&i.to_be_bytes(), &l, now);
        }
        assert!(
            store.buckets.map.len() <= 1_000,
            "{}",
            store.buckets.map.len()
        );
    }

    #[test]
    fn live_keys_beyond_the_cap_evict_the_least_indebted() {
        let store = LocalStore::new(1_000);
        let now = 5 * S;
        // One heavy key, far from idle...
        let heavy = limit(1, 3600, 5);
        for _ in 0..5 {
            store.check_at(b"heavy", &heavy, now);
        }
        // ...then many live keys closer to idle.
        let light = limit(1, 60, 5);
        for i in 0..3_000u32 {
            store.check_at(&i.to_be_bytes(), &light, now);
        }
        let len = store.buckets.map.len();
        assert!(len <= 1_000 + 1_000 / 8, "{len}");
        assert!(!store.check_at(b"heavy", &heavy, now).allowed);
    }

    #[test]
    fn lockout_blocks_at_threshold_once_and_expires() {
        let store = LocalStore::new(100);
        let lo = lockout();
        let now = 100 * S;
        assert!(!store.record_failure_at(b"ip", &lo, now));
        assert!(!store.record_failure_at(b"ip", &lo, now + S));
        assert_eq!(store.is_blocked_at(b"ip", now + S), None);
        assert!(store.record_failure_at(b"ip", &lo, now + 2 * S));
        assert!(!store.record_failure_at(b"ip", &lo, now + 3 * S));
        assert_eq!(store.is_blocked_at(b"ip", now + 2 * S), Some(300));
        assert_eq!(store.is_blocked_at(b"ip", now + 2 * S + S / 2), Some(300));
        assert_eq!(store.is_blocked_at(b"other", now + 2 * S), None);
        // Unblocked after `block`, and counting starts afresh.
        let after = now + 302 * S;
        assert_eq!(store.is_blocked_at(b"ip", after), None);
        assert!(!store.record_failure_at(b"ip", &lo, after));
        assert!(!store.record_failure_at(b"ip", &lo, after));
        assert!(store.record_failure_at(b"ip", &lo, after));
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_block() {
        let store = LocalStore::new(100);
        let lo = lockout();
        let now = 100 * S;
        assert!(!store.record_failure_at(b"ip", &lo, now));
        assert!(!store.record_failure_at(b"ip", &lo, now + 30 * S));
        // The window opened at the first failure has closed.
        assert!(!store.record_failure_at(b"ip", &lo, now + 61 * S));
        assert!(!store.record_failure_at(b"ip", &lo, now + 62 * S));
        assert!(store.record_failure_at(b"ip", &lo, now + 63 * S));
    }

    #[test]
    fn zero_threshold_never_blocks() {
        let store = LocalStore::new(100);
        let lo = Lockout {
            threshold: 0,
            ..lockout()
        };
        assert!(!store.record_failure(b"ip", &lo));
        assert_eq!(store.is_blocked(b"ip"), None);
    }

    #[test]
    fn mirrored_blocks_are_honoured() {
        let store = LocalStore::new(100);
        store.mirror_block(b"ip", Duration::from_millis(1_500));
        assert_eq!(store.is_blocked(b"ip"), Some(2));
    }
}
