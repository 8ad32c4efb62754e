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
