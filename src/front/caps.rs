//! Connection caps: all listeners together, and per client IP.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::config::Limits;

/// Open client connections, counted as they are accepted and closed.
pub(crate) struct Connections {
    inner: Arc<Counts>,
}

struct Counts {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    gauge: prometheus::IntGauge,
}

/// One admitted connection; dropping it gives its place back.
pub(crate) struct Slot {
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
}

impl Connections {
    pub(crate) fn new(gauge: prometheus::IntGauge) -> Self {
        Connections {
            inner: Arc::new(Counts {
                total: AtomicUsize::new(0),
                per_ip: DashMap::new(),
                gauge,
            }),
        }
    }

    /// A place for a new connection from `ip`, or the name of the cap it
    /// is over (`max_connections`, `max_connections_per_ip`).
    pub(crate) fn admit(&self, ip: Option<IpAddr>, limits: &Limits) -> Result<Slot, &'static str> {
        let counts = &self.inner;
        if counts.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            counts.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections");
        }
        if let Some(ip) = ip {
            let mut entry = counts.per_ip.entry(ip).or_insert(0);
            if *entry >= limits.max_connections_per_ip {
                drop(entry);
                counts.total.fetch_sub(1, Ordering::AcqRel);
                return Err("max_connections_per_ip");
            }
            *entry += 1;
        }
        counts.gauge.inc();
        Ok(Slot {
            counts: counts.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.inner.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counts = &self.counts;
        counts.total.fetch_sub(1, Ordering::AcqRel);
        counts.gauge.dec();
        if let Some(ip) = self.ip {
            // The entry goes with its last connection, so the map holds
            // only addresses that have connections open.
            counts.per_ip.remove_if_mut(&ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> Limits {
        Limits {
            max_uri_bytes: 1,
            max_header_bytes: 1,
            max_body_bytes: 1,
            header_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
            tls_handshake_timeout: std::time::Duration::from_secs(1),
            max_connections: total,
            max_connections_per_ip: per_ip,
        }
    }

    #[test]
    fn caps_and_release() {
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let c = Connections::new(gauge.clone());
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let b: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        let l = limits(3, 2);
        let s1 = c.admit(a, &l).unwrap();
        let s2 = c.admit(a, &l).unwrap();
        assert_eq!(c.admit(a, &l).err(), Some("max_connections_per_ip"));
        let s3 = c.admit(b, &l).unwrap();
        assert_eq!(c.admit(b, &l).err(), Some("max_connections"));
        assert_eq!((c.open(), gauge.get()), (3, 3));
        drop((s1, s2, s3));
        assert_eq!((c.open(), gauge.get()), (0, 0));
        assert!(c.inner.per_ip.is_empty());
        let _again = c.admit(a, &l).unwrap();
    }
}
