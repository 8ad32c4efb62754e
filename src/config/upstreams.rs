//! `[upstreams.NAME]`: targets, balancing, timeouts and health checks.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::diag::Diagnostics;
use super::model::*;
use super::parse::ONE_HOUR_MS;
use super::reader::{MapOf, Table, Value};
use super::schema::Items;
use super::values::existing_file;
use super::values::name_rule;
use super::values::required_string;
use super::values::valid_name;
use crate::core::location::Located;

pub(super) fn upstreams(d: &mut Diagnostics, root: &Table) -> Vec<Upstream> {
    let Some(all) = root.table(d, "upstreams") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in all.entries(MapOf::Tables) {
        if !valid_name(name.get_ref()) {
            d.error(name.span(), name_rule(name.get_ref()));
        }
        let Some(t) = all.entry_table(d, name.get_ref(), value) else {
            continue;
        };
        if let Some(u) = upstream(d, &t, name.get_ref()) {
            out.push(u);
        }
        t.finish(d);
    }
    out
}

pub(super) fn upstream(d: &mut Diagnostics, t: &Table, name: &str) -> Option<Upstream> {
    let targets = targets(d, t);
    let balance = t
        .keyword(
            d,
            "balance",
            Balance::RoundRobin,
            &[
                ("round_robin", Balance::RoundRobin),
                ("random", Balance::Random),
                ("consistent_hash", Balance::ConsistentHash),
            ],
        )
        .unwrap_or(Balance::RoundRobin);
    let hash_key = match t.string(d, "hash_key") {
        None => HashKey::ClientIp,
        Some(k) => {
            if balance != Balance::ConsistentHash {
                d.error(
                    k.span(),
                    "`hash_key` only applies to balance = \"consistent_hash\"",
                );
            }
            hash_key(d, &k).unwrap_or(HashKey::ClientIp)
        }
    };
    let tls = t.boolean(d, "tls").unwrap_or(false);
    let protocol = t
        .keyword(
            d,
            "protocol",
            UpstreamProtocol::Http1,
            &[
                ("http1", UpstreamProtocol::Http1),
                ("http2", UpstreamProtocol::Http2),
                ("h2c", UpstreamProtocol::H2c),
            ],
        )
        .unwrap_or(UpstreamProtocol::Http1);
    match (protocol, tls) {
        (UpstreamProtocol::Http2, false) => d.error(
            t.span(),
            format!(
                "[{}] protocol = \"http2\" negotiates h2 by TLS ALPN: set `tls = true`, or use \"h2c\" for plaintext HTTP/2",
                t.section()
            ),
        ),
        (UpstreamProtocol::H2c, true) => d.error(
            t.span(),
            format!(
                "[{}] protocol = \"h2c\" is plaintext HTTP/2: use \"http2\" with `tls = true`",
                t.section()
            ),
        ),
        _ => {}
    }
    let sni = t.string(d, "sni").map(Spanned::into_inner);
    let ca_file = t.string(d, "ca_file").and_then(|ca| {
        if !tls {
            d.error(ca.span(), "`ca_file` only applies with `tls = true`");
            return None;
        }
        let at = d.location(ca.span());
        let path = Located {
            value: existing_file(d, ca)?,
            at,
        };
        d.pending(Pending::CaFile(path.clone()));
        Some(path)
    });
    let connect_timeout = t
        .duration(
            d,
            "connect_timeout_ms",
            1..=ONE_HOUR_MS,
            Duration::from_millis,
        )
        .unwrap_or(Duration::from_secs(1));
    let read_timeout = t
        .duration(d, "read_timeout_ms", 1..=ONE_HOUR_MS, Duration::from_millis)
        .unwrap_or(Duration::from_secs(30));
    let retries = t.integer(d, "retries", 0..=10).unwrap_or(1) as usize;
    let health_check = t.table(d, "health_check").and_then(|h| {
        let hc = health_check(d, &h);
        h.finish(d);
        hc
    });
    let outlier_detection = t.table(d, "outlier_detection").and_then(|o| {
        let od = outlier_detection(d, &o);
        o.finish(d);
        od
    });
    let refresh_span = t.raw("dns_refresh_seconds").map(|v| v.span());
    let dns_refresh = t
        .duration(
            d,
            "dns_refresh_seconds",
            1..=ONE_DAY_SECONDS,
            Duration::from_secs,
        )
        .unwrap_or(DEFAULT_DNS_REFRESH);
    let targets = targets?;
    if let Some(span) = refresh_span {
        if !targets
            .iter()
            .any(|t| matches!(t.addr, TargetAddr::Name { .. }))
        {
            d.error(
                span,
                "`dns_refresh_seconds` only applies to host-name targets",
            );
        }
    }
    Some(Upstream {
        name: name.to_string(),
        targets,
        balance,
        hash_key,
        tls,
        protocol,
        sni: sni.unwrap_or_default(),
        ca_file,
        connect_timeout,
        read_timeout,
        retries,
        health_check,
        dns_refresh,
        outlier_detection,
    })
}

/// How often host names are resolved again when `dns_refresh_seconds` is
/// not set.
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

/// The longest ejection and DNS refresh period accepted: a day.
const ONE_DAY_SECONDS: u64 = 86_400;

pub(super) fn outlier_detection(d: &mut Diagnostics, o: &Table) -> Option<OutlierDetection> {
    let consecutive_failures = o.integer(d, "consecutive_failures", 1..=1000).unwrap_or(5) as u32;
    let base_span = o.raw("base_ejection_seconds").map(|v| v.span());
    let base_ejection = o
        .duration(
            d,
            "base_ejection_seconds",
            1..=ONE_DAY_SECONDS,
            Duration::from_secs,
        )
        .unwrap_or(Duration::from_secs(30));
    let max_ejection = o
        .duration(
            d,
            "max_ejection_seconds",
            1..=ONE_DAY_SECONDS,
            Duration::from_secs,
        )
        .unwrap_or(Duration::from_secs(300));
    let max_ejection_percent = o.integer(d, "max_ejection_percent", 0..=100).unwrap_or(50) as u8;
    if base_ejection > max_ejection {
        d.error(
            base_span.unwrap_or_else(|| o.span()),
            format!(
                "[{}] `base_ejection_seconds` ({}) must not exceed `max_ejection_seconds` ({})",
                o.section(),
                base_ejection.as_secs(),
                max_ejection.as_secs()
            ),
        );
        return None;
    }
    Some(OutlierDetection {
        consecutive_failures,
        base_ejection,
        max_ejection,
        max_ejection_percent,
    })
}

pub(super) fn targets(d: &mut Diagnostics, t: &Table) -> Option<Vec<Target>> {
    let Some(items) = t.array(d, "targets", Items::StringsOrTables) else {
        d.error(t.span(), format!("[{}] needs `targets`", t.section()));
        return None;
    };
    if items.is_empty() {
        d.error(t.span(), format!("[{}] has no targets", t.section()));
    }
    let mut out: Vec<Target> = Vec::new();
    for item in items {
        let parsed = match item.get_ref() {
            DeValue::String(s) => target_addr(d, item, s).map(|addr| Target { addr, weight: 1 }),
            DeValue::Table(_) => {
                let tt = t.item_table(d, "targets", item, format!("{}.targets", t.section()))?;
                let addr = required_string(d, &tt, "address");
                let weight = tt.integer(d, "weight", 1..=1000).unwrap_or(1) as usize;
                tt.finish(d);
                addr.and_then(|a| {
                    let v = Spanned::new(a.span(), DeValue::String(a.get_ref().clone().into()));
                    target_addr(d, &v, a.get_ref())
                })
                .map(|addr| Target { addr, weight })
            }
            other => {
                d.error(
                    item.span(),
                    format!(
                        "a target is \"IP:port\", \"host:port\" or {{ address = \"IP:port\", weight = N }}, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        };
        if let Some(target) = parsed {
            if out.iter().any(|o| o.addr == target.addr) {
                d.error(item.span(), format!("duplicate target {}", target.addr));
            } else {
                out.push(target);
            }
        }
    }
    Some(out)
}

/// An `IP:port` address (IPv6 in brackets), or `host:port` with a host
/// name of letters, digits, `-` and `_` in dot-separated labels (a
/// trailing dot allowed). Only the syntax is checked: nothing is resolved
/// here, so `check` works offline.
pub(super) fn target_addr(d: &mut Diagnostics, item: &Value, s: &str) -> Option<TargetAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(TargetAddr::Ip(addr));
    }
    match host_target(s) {
        Ok((host, port)) => Some(TargetAddr::Name { host, port }),
        Err(why) => {
            d.error(
                item.span(),
                format!("target `{s}` is not an IP:port address or a host:port name: {why}"),
            );
            None
        }
    }
}

/// The longest host name DNS allows, and its longest label.
const MAX_HOST_NAME: usize = 253;
const MAX_LABEL: usize = 63;

fn host_target(s: &str) -> Result<(String, u16), &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("the port is missing");
    };
    if host.starts_with('[') || host.contains(':') {
        return Err("an IPv6 address is written in brackets, as [::1]:8080");
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err("the port must be a number from 1 to 65535"),
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > MAX_HOST_NAME {
        return Err("a host name has 1 to 253 characters");
    }
    let mut last = "";
    for label in name.split('.') {
        let edge = |b: Option<u8>| b.is_some_and(|b| b == b'-');
        if label.is_empty()
            || label.len() > MAX_LABEL
            || edge(label.bytes().next())
            || edge(label.bytes().last())
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "each dot-separated label has 1 to 63 letters, digits, `-` or `_` and does not start or end with `-`",
            );
        }
        last = label;
    }
    // A name ending in a number is a mistyped address (`10.0.0:80`,
    // `256.1.1.1:80`), never a name a resolver should be asked for.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("it looks like an IP address but is not a valid one");
    }
    Ok((host.to_ascii_lowercase(), port))
}

pub(super) fn hash_key(d: &mut Diagnostics, k: &Spanned<String>) -> Option<HashKey> {
    match k.get_ref().as_str() {
        "consumer" => Some(HashKey::Consumer),
        "client_ip" => Some(HashKey::ClientIp),
        other => match other.strip_prefix("header:") {
            Some(h) => match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(name) => Some(HashKey::Header(name)),
                Err(_) => {
                    d.error(k.span(), format!("`{h}` is not a valid header name"));
                    None
                }
            },
            None => {
                d.error(
                    k.span(),
                    format!("unknown hash_key `{other}`; use consumer, client_ip or header:NAME"),
                );
                None
            }
        },
    }
}

pub(super) fn health_check(d: &mut Diagnostics, h: &Table) -> Option<HealthCheck> {
    let kind = required_string(d, h, "kind");
    let path = h.string(d, "path");
    let host = h.string(d, "host");
    let interval = h
        .duration(d, "interval_ms", 10..=ONE_HOUR_MS, Duration::from_millis)
        .unwrap_or(Duration::from_secs(1));
    let timeout = h
        .duration(d, "timeout_ms", 1..=ONE_HOUR_MS, Duration::from_millis)
        .unwrap_or(Duration::from_millis(500));
    let unhealthy = h.integer(d, "unhealthy_threshold", 1..=100).unwrap_or(2) as usize;
    let healthy = h.integer(d, "healthy_threshold", 1..=100).unwrap_or(1) as usize;
    let kind = match kind?.get_ref().as_str() {
        "http" => {
            let path = match path {
                Some(p) if p.get_ref().starts_with('/') => p.into_inner(),
                Some(p) => {
                    d.error(p.span(), "health check `path` must start with /");
                    return None;
                }
                None => "/".to_string(),
            };
            HealthKind::Http {
                path,
                host: host.map_or_else(|| "localhost".to_string(), Spanned::into_inner),
            }
        }
        "tcp" => {
            if let Some(p) = path.or(host) {
                d.error(p.span(), "`path` and `host` only apply to kind = \"http\"");
            }
            HealthKind::Tcp
        }
        other => {
            d.error(
                h.span(),
                format!("unknown health check kind `{other}`; use http or tcp"),
            );
            return None;
        }
    };
    Some(HealthCheck {
        kind,
        interval,
        timeout,
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
    })
}
