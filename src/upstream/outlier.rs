//! Passive outlier detection (CONTRACT §11): the per-target counters that
//! requests update, atomics only, so the request path never waits on a
//! lock. The pool decides what an ejection does (events, gauge, timer).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::OutlierDetection;

/// What one attempt on a target came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Success,
    Failure,
}

/// One target's passive health.
#[derive(Debug, Default)]
pub(crate) struct TargetOutlier {
    failures: AtomicU32,
    ejected: AtomicBool,
    times_ejected: AtomicU32,
}

impl TargetOutlier {
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Counts a success (the count of failures in a row starts again) and
    /// returns false, or a failure and returns whether the count reached
    /// `threshold`.
    pub(crate) fn record(&self, attempt: Attempt, threshold: u32) -> bool {
        match attempt {
            Attempt::Success => {
                // Most requests succeed: read first, so that a healthy
                // target's counter is not written by every core.
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                false
            }
            Attempt::Failure => {
                let n = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                n >= threshold && !self.is_ejected()
            }
        }
    }

    /// Marks the target ejected; false when it already was. Returns the
    /// ejection's length: `base × times ejected`, at most `max`.
    pub(crate) fn eject(&self, config: &OutlierDetection) -> Option<Duration> {
        if self.ejected.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        let times = self
            .times_ejected
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        Some(
            config
                .base_ejection
                .saturating_mul(times)
                .min(config.max_ejection),
        )
    }

    /// Ends an ejection: the target takes traffic again, with a fresh count.
    pub(crate) fn restore(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejected.store(false, Ordering::Release);
    }
}

/// An upstream's ejection budget.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) config: OutlierDetection,
    ejected: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(config: OutlierDetection) -> Self {
        Budget {
            config,
            ejected: AtomicUsize::new(0),
        }
    }

    /// Whether any target is ejected now: the request path looks no
    /// further when none is.
    pub(crate) fn any_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire) != 0
    }

    /// How many of `targets` may be ejected at once: the percentage,
    /// rounded down, and never all of them.
    pub(crate) fn cap(&self, targets: usize) -> usize {
        (targets * usize::from(self.config.max_ejection_percent) / 100)
            .min(targets.saturating_sub(1))
    }

    /// Takes one ejection from the budget, or returns false when the cap
    /// is reached. Concurrent failures of several targets cannot overrun
    /// it: the count is reserved before any target is ejected.
    pub(crate) fn reserve(&self, targets: usize) -> bool {
        let cap = self.cap(targets);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(percent: u8) -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(100),
            max_ejection_percent: percent,
        }
    }

    #[test]
    fn failures_in_a_row_reach_the_threshold_and_a_success_resets() {
        let t = TargetOutlier::default();
        assert!(!t.record(Attempt::Failure, 3));
        assert!(!t.record(Attempt::Failure, 3));
        assert!(!t.record(Attempt::Success, 3));
        assert!(!t.record(Attempt::Failure, 3));
        assert!(!t.record(Attempt::Failure, 3));
        assert!(t.record(Attempt::Failure, 3));
    }

    #[test]
    fn ejections_grow_up_to_the_maximum() {
        let c = config(50);
        let t = TargetOutlier::default();
        assert_eq!(t.eject(&c), Some(Duration::from_secs(30)));
        assert!(t.is_ejected());
        assert_eq!(t.eject(&c), None, "already ejected");
        assert!(
            !t.record(Attempt::Failure, 1),
            "an ejected target is not ejected again"
        );
        t.restore();
        assert!(!t.is_ejected());
        assert_eq!(t.eject(&c), Some(Duration::from_secs(60)));
        t.restore();
        assert_eq!(t.eject(&c), Some(Duration::from_secs(90)));
        t.restore();
        assert_eq!(t.eject(&c), Some(Duration::from_secs(100)));
    }

    #[test]
    fn the_cap_keeps_one_target() {
        let b = Budget::new(config(50));
        assert_eq!(b.cap(1), 0);
        assert_eq!(b.cap(2), 1);
        assert_eq!(b.cap(3), 1);
        assert_eq!(b.cap(10), 5);
        assert_eq!(Budget::new(config(100)).cap(4), 3);
        assert_eq!(Budget::new(config(0)).cap(4), 0);
        assert_eq!(Budget::new(config(10)).cap(5), 0);
        assert!(b.reserve(2));
        assert!(b.any_ejected());
        assert!(!b.reserve(2), "a second of two targets stays");
        b.release();
        assert!(!b.any_ejected());
        b.release();
        assert!(b.reserve(2), "a release never goes below zero");
    }
}
