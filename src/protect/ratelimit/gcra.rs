//! The Generic Cell Rate Algorithm, as pure functions of `now`.
//!
//! GCRA is a token bucket that needs a single number per key: the
//! "theoretical arrival time" (TAT), the instant at which the bucket would be
//! full again. Each request pushes it `interval` (= window / requests) into
//! the future; a request is allowed when the pushed TAT is at most
//! `tolerance` (= interval × burst) ahead of now. So a full bucket lets
//! exactly `burst` requests through at once, then one per `interval`, and
//! because the state is a continuous time rather than a per-window counter
//! there is no window edge to double-burst across.
//!
//! Time is an integer count of "units" (both stores use microseconds, the
//! resolution of Redis's `TIME`; tests also use nanoseconds): the same code
//! serves both stores, and tests pass any `now`.

use super::{Decision, Limit};

/// Nanoseconds per second.
pub const NANOS: u64 = 1_000_000_000;
/// Microseconds per second: the unit of both stores.
pub const MICROS: u64 = 1_000_000;

/// Bound of every duration (142 years in µs), so that `now + tolerance +
/// interval` neither overflows here nor leaves the integers that Lua's
/// doubles and `%d` handle, whatever the configuration says.
const MAX_UNITS: u64 = 1 << 52;

/// A [`Limit`] in time units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Time one token takes to come back; at least one unit, so a limit
    /// above one request per unit is clamped rather than divided by zero.
    pub interval: u64,
    /// How far ahead of now the TAT may run: the bucket's capacity in time.
    pub tolerance: u64,
    pub burst: u64,
    pub units_per_second: u64,
}

impl Params {
    /// `units_per_second` divides [`NANOS`] ([`NANOS`] or [`MICROS`]).
    pub fn new(limit: &Limit, units_per_second: u64) -> Self {
        // 64-bit arithmetic only: this runs on every request, and 128-bit
        // division costs more than the rest of a local check.
        let nanos_per_unit = (NANOS / units_per_second.max(1)).max(1);
        let window = u64::try_from(limit.window.as_nanos()).unwrap_or(u64::MAX) / nanos_per_unit;
        // `requests = 0` would divide by zero: treat it as one request per
        // window, the most restrictive reading that still refills.
        let interval = (window / limit.requests.max(1)).clamp(1, MAX_UNITS);
        Params {
            interval,
            tolerance: interval.saturating_mul(limit.burst).min(MAX_UNITS),
            burst: limit.burst,
            units_per_second: units_per_second.max(1),
        }
    }
}

/// Decides one request against the stored TAT (0 for a key never seen).
/// Returns the decision and, when the request is allowed, the TAT to store.
pub fn check(stored_tat: u64, now: u64, p: &Params) -> (Decision, Option<u64>) {
    // A TAT further ahead than the tolerance cannot come from this limit
    // (a smaller burst after a reload, another clock after a Redis
    // failover): cap it instead of refusing the key for that long.
    let tat = stored_tat.max(now).min(now.saturating_add(p.tolerance));
    let new_tat = tat.saturating_add(p.interval);
    if new_tat.saturating_sub(p.tolerance) <= now {
        (decision(true, new_tat - now, p), Some(new_tat))
    } else {
        (decision(false, tat - now, p), None)
    }
}

/// The decision once the outcome is known, from `debt` = TAT after the
/// request − now. Shared with the Redis store, whose script returns exactly
/// these two numbers, so both stores report the same headers.
pub fn decision(allowed: bool, debt: u64, p: &Params) -> Decision {
    let remaining = (p.tolerance.saturating_sub(debt) / p.interval).min(p.burst);
    let retry_after_seconds = if allowed {
        0
    } else {
        // The next request is allowed once the TAT it would push is within
        // the tolerance: `debt + interval - tolerance` from now.
        ceil_div(
            debt.saturating_add(p.interval).saturating_sub(p.tolerance),
            p.units_per_second,
        )
        .max(1)
    };
    Decision {
        allowed,
        limit: p.burst,
        remaining,
        reset_seconds: ceil_div(debt, p.units_per_second),
        retry_after_seconds,
    }
}

/// `a / b` rounded up; `b` is never zero here, but a zero is read as one.
pub fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn limit(requests: u64, window_s: u64, burst: u64) -> Params {
        Params::new(
            &Limit {
                requests,
                window: Duration::from_secs(window_s),
                burst,
            },
            NANOS,
        )
    }

    /// Runs `n` requests at `now` against `tat`, returning the decisions.
    fn run(tat: &mut u64, now: u64, n: usize, p: &Params) -> Vec<Decision> {
        (0..n)
            .map(|_| {
                let (d, new) = check(*tat, now, p);
                if let Some(new) = new {
                    *tat = new;
                }
                d
            })
            .collect()
    }

    #[test]
    fn exactly_burst_passes_from_a_full_bucket_then_one_per_interval() {
        let p = limit(10, 1, 5); // interval 100 ms, 5 tokens
        let mut tat = 0;
        let now = 1_000 * MS;
        let ds = run(&mut tat, now, 6, &p);
        assert!(ds[..5].iter().all(|d| d.allowed));
        assert!(!ds[5].allowed);
        let remaining: Vec<u64> = ds.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, vec![4, 3, 2, 1, 0, 0]);
        // One interval later, exactly one more.
        let ds = run(&mut tat, now + 100 * MS, 2, &p);
        assert!(ds[0].allowed);
        assert!(!ds[1].allowed);
        // Just short of the interval: still refused.
        let ds = run(&mut tat, now + 199 * MS, 1, &p);
        assert!(!ds[0].allowed);
    }

    #[test]
    fn burst_defaults_to_requests_semantics() {
        let p = limit(100, 1, 100);
        let mut tat = 0;
        let ds = run(&mut tat, 5 * NANOS, 101, &p);
        assert_eq!(ds.iter().filter(|d| d.allowed).count(), 100);
        assert_eq!(ds[0].limit, 100);
        assert_eq!(ds[0].remaining, 99);
    }

    #[test]
    fn reset_and_retry_after_round_up() {
        let p = limit(1, 10, 2); // interval 10 s, 2 tokens
        let mut tat = 0;
        let now = 100 * NANOS;
        let ds = run(&mut tat, now, 3, &p);
        assert_eq!((ds[0].remaining, ds[0].reset_seconds), (1, 10));
        assert_eq!((ds[1].remaining, ds[1].reset_seconds), (0, 20));
        assert!(!ds[2].allowed);
        assert_eq!(ds[2].retry_after_seconds, 10);
        assert_eq!(ds[2].reset_seconds, 20);
        // 0.5 s later: 9.5 s left → 10 when rounded up.
        let ds = run(&mut tat, now + 500 * MS, 1, &p);
        assert_eq!(ds[0].retry_after_seconds, 10);
        assert_eq!(ds[0].reset_seconds, 20);
        // 9.999 s later: a fraction of a second is still one second.
        let ds = run(&mut tat, now + 9_999 * MS, 1, &p);
        assert_eq!(ds[0].retry_after_seconds, 1);
        // Allowed decisions carry no retry-after.
        let ds = run(&mut tat, now + 10 * NANOS, 1, &p);
        assert!(ds[0].allowed);
        assert_eq!(ds[0].retry_after_seconds, 0);
    }

    #[test]
    fn a_short_interval_still_retries_after_at_least_one_second() {
        let p = limit(100, 1, 1); // 10 ms interval, 1 token
        let mut tat = 0;
        let ds = run(&mut tat, NANOS, 2, &p);
        assert!(ds[0].allowed);
        assert_eq!(ds[0].reset_seconds, 1);
        assert!(!ds[1].allowed);
        assert_eq!(ds[1].retry_after_seconds, 1);
    }

    #[test]
    fn no_double_burst_across_a_window_edge() {
        let p = limit(10, 1, 10);
        let mut tat = 0;
        let start = 50 * NANOS;
        // Spend the whole bucket just before the "edge"...
        let ds = run(&mut tat, start + 999 * MS, 10, &p);
        assert!(ds.iter().all(|d| d.allowed));
        // ...and right after it nothing comes back yet: a fixed window
        // would have handed out 10 more here.
        let ds = run(&mut tat, start + NANOS, 10, &p);
        assert_eq!(ds.iter().filter(|d| d.allowed).count(), 0);
        // After a full window the bucket is full again, not fuller.
        let ds = run(&mut tat, start + 999 * MS + NANOS, 11, &p);
        assert_eq!(ds.iter().filter(|d| d.allowed).count(), 10);
    }

    #[test]
    fn a_full_bucket_reports_full_and_an_idle_key_refills_only_to_burst() {
        let p = limit(10, 1, 3);
        let mut tat = 0;
        run(&mut tat, NANOS, 3, &p);
        // Long idle: bucket full again, exactly `burst` pass.
        let ds = run(&mut tat, 1_000 * NANOS, 4, &p);
        assert_eq!(ds.iter().filter(|d| d.allowed).count(), 3);
    }

    #[test]
    fn a_tat_far_in_the_future_is_capped_to_the_tolerance() {
        let p = limit(1, 1, 2);
        let now = 10 * NANOS;
        let (d, _) = check(now + 3_600 * NANOS, now, &p);
        assert!(!d.allowed);
        assert_eq!(d.reset_seconds, 2);
        assert_eq!(d.retry_after_seconds, 1);
    }

    #[test]
    fn degenerate_limits_do_not_divide_by_zero() {
        let zero_burst = limit(10, 1, 0);
        assert!(!check(0, NANOS, &zero_burst).0.allowed);
        let mut tat = 0;
        let ds = run(&mut tat, NANOS, 2, &limit(0, 1, 1));
        assert!(ds[0].allowed && !ds[1].allowed);
        let huge = Params::new(
            &Limit {
                requests: 1,
                window: Duration::MAX,
                burst: u64::MAX,
            },
            NANOS,
        );
        // Saturates rather than overflowing.
        let _ = check(u64::MAX, u64::MAX, &huge);
        let _ = decision(false, u64::MAX, &huge);
        let (d, _) = check(0, 0, &limit(u64::MAX, 1, 1));
        assert!(d.allowed);
    }

    #[test]
    fn microsecond_and_nanosecond_units_agree() {
        let l = Limit {
            requests: 3,
            window: Duration::from_secs(1),
            burst: 3,
        };
        let (us, ns) = (Params::new(&l, MICROS), Params::new(&l, NANOS));
        assert_eq!(us.interval, 333_333);
        assert_eq!(ns.interval, 333_333_333);
        let d_us = decision(true, us.interval, &us);
        let d_ns = decision(true, ns.interval, &ns);
        assert_eq!(d_us, d_ns);
    }
}
