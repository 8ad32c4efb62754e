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
mod tests;
