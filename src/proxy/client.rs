//! Who the client is: its IP address and the request id it is known by.

use std::net::IpAddr;

use ipnet::IpNet;

const MAX_REQUEST_ID: usize = 128;

/// The client IP per CONTRACT §3: the TCP peer, unless the peer is a
/// trusted proxy; then `x-forwarded-for` is walked from the right, skipping
/// trusted addresses, and the first untrusted one is the client. A header
/// from an untrusted peer is never believed.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&[u8]>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let Some(xff) = xff.and_then(|v| std::str::from_utf8(v).ok()) else {
        return Some(peer);
    };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // An unparseable hop ends the chain of trust.
            break;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    Some(client)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) are compared as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's `x-request-id` when it is safe to repeat in logs and
/// headers (`[A-Za-z0-9._:-]{1,128}`), else a fresh random one.
pub fn request_id(client_value: Option<&[u8]>) -> String {
    match client_value {
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.iter().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            // Checked ASCII above.
            String::from_utf8_lossy(v).into_owned()
        }
        _ => {
            let n: u128 = rand::random();
            format!("{n:032x}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_header_ignored() {
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let got = client_ip(Some(peer), Some(b"1.2.3.4"), &nets(&["10.0.0.0/8"]));
        assert_eq!(got, Some(peer));
        let got = client_ip(Some(peer), Some(b"1.2.3.4"), &[]);
        assert_eq!(got, Some(peer));
    }

    #[test]
    fn trusted_chain_walked_from_the_right() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(Some(peer), Some(b"6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted);
        assert_eq!(got, Some("1.2.3.4".parse().unwrap()));
        let got = client_ip(Some(peer), Some(b"garbage, 10.0.0.9"), &trusted);
        assert_eq!(got, Some("10.0.0.9".parse().unwrap()));
        let got = client_ip(Some(peer), None, &trusted);
        assert_eq!(got, Some(peer));
    }

    #[test]
    fn request_id_kept_or_generated() {
        assert_eq!(request_id(Some(b"abc-1.2:3_x")), "abc-1.2:3_x");
        assert_eq!(request_id(Some(b"bad id")).len(), 32);
        assert_eq!(request_id(Some(&[b'a'; 129])).len(), 32);
        assert_eq!(request_id(None).len(), 32);
    }
}
