//! Client addresses: one form for every comparison, and the allow and
//! deny lists of client networks, global and per route.

use std::net::IpAddr;

use ipnet::IpNet;

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) are compared as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `allow_cidrs` / `deny_cidrs`. A deny match always wins; a non-empty
/// allow list admits only its members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrRules {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl CidrRules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a client at `ip` may pass. A client whose address is unknown
    /// passes only rules that say nothing.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(ip) = ip.map(canonical_ip) else {
            return false;
        };
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> CidrRules {
        CidrRules {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let r = rules(&["10.0.0.0/8", "2001:db8::/32"], &["10.9.0.0/16"]);
        assert!(r.permits(Some("10.1.2.3".parse().unwrap())));
        assert!(!r.permits(Some("10.9.2.3".parse().unwrap())));
        assert!(!r.permits(Some("192.168.1.1".parse().unwrap())));
        assert!(r.permits(Some("2001:db8::1".parse().unwrap())));
        assert!(!r.permits(Some("2001:db9::1".parse().unwrap())));
        assert!(!r.permits(None));
        assert!(CidrRules::default().permits(None));
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let r = rules(&[], &["127.0.0.0/8"]);
        assert!(!r.permits(Some("::ffff:127.0.0.1".parse().unwrap())));
    }
}
