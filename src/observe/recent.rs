//! The most recent security events, in memory, for the admin dashboard.
//!
//! A fixed ring of slots written without a lock: a writer takes the next
//! sequence number with one atomic add and swaps its event into the slot
//! that number falls on, so events that come in bursts (an attack) never
//! queue behind each other or behind a reader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// How many events the ring keeps; older ones are overwritten.
pub const RECENT_EVENTS: usize = 500;

/// One event as the security log wrote it.
#[derive(Debug)]
pub struct Recorded {
    seq: u64,
    pub event: &'static str,
    /// The event's JSON object, exactly the security log's line.
    pub line: Box<str>,
}

pub struct RecentEvents {
    slots: Box<[ArcSwapOption<Recorded>]>,
    next: AtomicU64,
}

impl RecentEvents {
    pub fn new(capacity: usize) -> Self {
        RecentEvents {
            slots: (0..capacity.max(1))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            next: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn push(&self, event: &'static str, line: &str) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[self.slot_of(seq)];
        slot.store(Some(Arc::new(Recorded {
            seq,
            event,
            line: line.into(),
        })));
    }

    /// Newest first, at most `limit`, only events named `event` when
    /// given. A slot a later writer already reused (or one whose writer
    /// has not finished) is skipped rather than shown out of order.
    pub fn newest_first(&self, event: Option<&str>, limit: usize) -> Vec<Arc<Recorded>> {
        let end = self.next.load(Ordering::Relaxed);
        let start = end.saturating_sub(self.slots.len() as u64);
        (start..end)
            .rev()
            .filter_map(|seq| {
                let entry = self.slots[self.slot_of(seq)].load_full()?;
                (entry.seq == seq).then_some(entry)
            })
            .filter(|e| event.is_none_or(|name| e.event == name))
            .take(limit)
            .collect()
    }

    fn slot_of(&self, seq: u64) -> usize {
        // The remainder is below the slot count, a usize.
        usize::try_from(seq % self.slots.len() as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(ring: &RecentEvents, event: Option<&str>) -> Vec<String> {
        ring.newest_first(event, usize::MAX)
            .iter()
            .map(|e| e.line.to_string())
            .collect()
    }

    #[test]
    fn keeps_the_newest_capacity_events_newest_first() {
        let ring = RecentEvents::new(3);
        assert!(seqs(&ring, None).is_empty());
        for i in 0..5 {
            ring.push(if i % 2 == 0 { "even" } else { "odd" }, &i.to_string());
        }
        assert_eq!(seqs(&ring, None), ["4", "3", "2"]);
        assert_eq!(seqs(&ring, Some("even")), ["4", "2"]);
        assert_eq!(seqs(&ring, Some("odd")), ["3"]);
        assert!(seqs(&ring, Some("ev")).is_empty());
        assert_eq!(ring.newest_first(None, 1).len(), 1);
    }

    #[test]
    fn concurrent_writers_leave_a_bounded_ordered_ring() {
        let ring = Arc::new(RecentEvents::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        ring.push("e", &format!("{t}-{i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let got = ring.newest_first(None, usize::MAX);
        assert!(got.len() <= 64 && !got.is_empty());
        assert!(got.windows(2).all(|w| w[0].seq > w[1].seq));
    }
}
