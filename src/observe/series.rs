//! Per-route request rate, error rate and p99 latency over the last
//! minutes, in memory, for the admin dashboard's charts.
//!
//! Each route has a fixed ring of time buckets made of atomics only: a
//! finished request finds its route's ring through a sharded map read
//! (no allocation once the route has a ring) and adds to a few counters.
//! A bucket is reset by the first request that lands in it after it went
//! stale; requests racing that reset may be lost from the count, which a
//! chart can afford and a lock on the request path could not.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

/// Buckets per route, and the seconds each covers: 15 minutes.
pub const BUCKETS: usize = 90;
pub const BUCKET_SECONDS: u64 = 10;
/// Rings kept at most: routes come from the configuration, so this only
/// bounds what many reloads with renamed routes could leave behind.
pub const MAX_SERIES: usize = 1024;

/// Upper bounds of the latency classes, in microseconds: from 100 µs up
/// by a factor of about √2 each, to about 4.6 s; one more class holds
/// everything slower.
const LATENCY_CLASSES: usize = 32;
const LATENCY_BOUNDS: [u64; LATENCY_CLASSES] = latency_bounds();

const fn latency_bounds() -> [u64; LATENCY_CLASSES] {
    let mut bounds = [0u64; LATENCY_CLASSES];
    let mut i = 0;
    while i < LATENCY_CLASSES {
        let base = if i % 2 == 0 { 100 } else { 141 };
        bounds[i] = base << (i / 2);
        i += 1;
    }
    bounds
}

struct Bucket {
    /// The bucket's number (seconds since the epoch / `BUCKET_SECONDS`)
    /// plus one; 0 is a bucket never used.
    epoch: AtomicU64,
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    latency: [AtomicU32; LATENCY_CLASSES + 1],
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            epoch: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Makes the bucket `epoch`'s, resetting it when it held an older one;
    /// false when it already holds a newer one (a late request).
    fn claim(&self, epoch: u64) -> bool {
        let seen = self.epoch.load(Ordering::Acquire);
        if seen == epoch {
            return true;
        }
        if seen > epoch {
            return false;
        }
        match self
            .epoch
            .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.requests.store(0, Ordering::Relaxed);
                self.client_errors.store(0, Ordering::Relaxed);
                self.server_errors.store(0, Ordering::Relaxed);
                for class in &self.latency {
                    class.store(0, Ordering::Relaxed);
                }
                true
            }
            Err(now) => now == epoch,
        }
    }
}

/// One route's ring.
pub struct RouteSeries {
    buckets: Box<[Bucket]>,
}

impl RouteSeries {
    fn new() -> Self {
        RouteSeries {
            buckets: (0..BUCKETS).map(|_| Bucket::new()).collect(),
        }
    }

    fn bucket(&self, epoch: u64) -> &Bucket {
        // The remainder is below BUCKETS.
        &self.buckets[usize::try_from(epoch % BUCKETS as u64).unwrap_or(0)]
    }

    fn record(&self, epoch: u64, status: u16, elapsed: Duration) {
        let bucket = self.bucket(epoch);
        if !bucket.claim(epoch) {
            return;
        }
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => bucket.client_errors.fetch_add(1, Ordering::Relaxed),
            500.. => bucket.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let class = LATENCY_BOUNDS.partition_point(|&bound| bound < micros);
        if let Some(counter) = bucket.latency.get(class) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The ring from the oldest bucket to the current one, `now` being
    /// the current bucket's epoch.
    fn snapshot(&self, now: u64) -> Snapshot {
        let mut out = Snapshot::default();
        let first = now.saturating_sub(BUCKETS as u64 - 1);
        for epoch in first..=now {
            let bucket = self.bucket(epoch);
            let held = bucket.epoch.load(Ordering::Acquire) == epoch;
            let read = |c: &AtomicU64| if held { c.load(Ordering::Relaxed) } else { 0 };
            out.requests.push(read(&bucket.requests));
            out.client_errors.push(read(&bucket.client_errors));
            out.server_errors.push(read(&bucket.server_errors));
            out.p99_ms
                .push(if held { p99_ms(&bucket.latency) } else { None });
        }
        out
    }
}

/// The upper bound of the latency class that holds the 99th percentile,
/// in milliseconds; the slowest class reports twice the last bound.
fn p99_ms(latency: &[AtomicU32; LATENCY_CLASSES + 1]) -> Option<f64> {
    let counts: Vec<u64> = latency
        .iter()
        .map(|c| u64::from(c.load(Ordering::Relaxed)))
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = total.saturating_mul(99).div_ceil(100);
    let mut seen = 0;
    for (class, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let bound = LATENCY_BOUNDS
                .get(class)
                .copied()
                .unwrap_or(LATENCY_BOUNDS[LATENCY_CLASSES - 1] * 2);
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

/// One route's ring as the dashboard reads it, oldest bucket first.
#[derive(Debug, Default, serde::Serialize)]
pub struct Snapshot {
    pub requests: Vec<u64>,
    pub client_errors: Vec<u64>,
    pub server_errors: Vec<u64>,
    pub p99_ms: Vec<Option<f64>>,
}

/// Every route's ring; lives as long as the process, across reloads.
pub struct Charts {
    series: DashMap<Box<str>, Arc<RouteSeries>>,
}

impl Default for Charts {
    fn default() -> Self {
        Charts {
            series: DashMap::new(),
        }
    }
}

impl Charts {
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let epoch = current_epoch();
        if let Some(series) = self.series.get(route) {
            series.record(epoch, status, elapsed);
            return;
        }
        if self.series.len() >= MAX_SERIES {
            return;
        }
        let series = Arc::clone(
            self.series
                .entry(Box::from(route))
                .or_insert_with(|| Arc::new(RouteSeries::new()))
                .value(),
        );
        series.record(epoch, status, elapsed);
    }

    /// Drops the rings of routes a reload removed.
    pub fn retain(&self, routes: &[&str]) {
        self.series.retain(|name, _| routes.contains(&&**name));
    }

    /// `route`'s ring, and the start (seconds since the epoch) of its
    /// oldest bucket; an empty ring for a route without requests yet.
    pub fn snapshot(&self, route: &str) -> (Snapshot, u64) {
        let now = current_epoch();
        let first = now.saturating_sub(BUCKETS as u64 - 1);
        let start = first.saturating_sub(1) * BUCKET_SECONDS;
        let snapshot = match self.series.get(route).map(|s| Arc::clone(s.value())) {
            Some(series) => series.snapshot(now),
            None => RouteSeries::new().snapshot(now),
        };
        (snapshot, start)
    }
}

/// The current bucket's epoch (see [`Bucket::epoch`]).
fn current_epoch() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs / BUCKET_SECONDS + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_classes_grow_by_about_root_two() {
        assert_eq!(LATENCY_BOUNDS[0], 100);
        assert_eq!(LATENCY_BOUNDS[1], 141);
        assert_eq!(LATENCY_BOUNDS[2], 200);
        assert!(LATENCY_BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_bucket_counts_requests_errors_and_p99() {
        let s = RouteSeries::new();
        let epoch = 1_000;
        for _ in 0..98 {
            s.record(epoch, 200, Duration::from_micros(150));
        }
        s.record(epoch, 404, Duration::from_millis(3));
        s.record(epoch, 502, Duration::from_secs(30));
        let snap = s.snapshot(epoch);
        assert_eq!(snap.requests.len(), BUCKETS);
        assert_eq!(snap.requests[BUCKETS - 1], 100);
        assert_eq!(snap.client_errors[BUCKETS - 1], 1);
        assert_eq!(snap.server_errors[BUCKETS - 1], 1);
        // The 99th of 100 requests took 3 ms: its class's bound is 3.2 ms.
        assert_eq!(snap.p99_ms[BUCKETS - 1], Some(3.2));
        assert_eq!(snap.requests[BUCKETS - 2], 0);
        assert_eq!(snap.p99_ms[BUCKETS - 2], None);
    }

    #[test]
    fn a_stale_bucket_is_reset_and_a_late_request_dropped() {
        let s = RouteSeries::new();
        s.record(5, 200, Duration::from_millis(1));
        // The same slot, one lap later.
        let lap = 5 + BUCKETS as u64;
        s.record(lap, 500, Duration::from_millis(1));
        s.record(5, 200, Duration::from_millis(1));
        let snap = s.snapshot(lap);
        assert_eq!(snap.requests[BUCKETS - 1], 1);
        assert_eq!(snap.server_errors[BUCKETS - 1], 1);
        assert_eq!(snap.requests.iter().sum::<u64>(), 1);
        // Read a lap later still, the bucket is out of the window.
        let later = s.snapshot(lap + BUCKETS as u64);
        assert_eq!(later.requests.iter().sum::<u64>(), 0);
    }

    #[test]
    fn charts_keep_only_the_routes_a_reload_kept() {
        let charts = Charts::default();
        charts.record("a", 200, Duration::from_millis(1));
        charts.record("b", 200, Duration::from_millis(1));
        charts.retain(&["a"]);
        assert_eq!(charts.snapshot("a").0.requests.iter().sum::<u64>(), 1);
        assert_eq!(charts.snapshot("b").0.requests.iter().sum::<u64>(), 0);
    }
}
