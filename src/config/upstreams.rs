//! `[upstreams.NAME]`: targets, balancing, timeouts and health checks.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::diag::Diagnostics;
use super::model::*;
use super::parse::ONE_HOUR_MS;
use super::reader::{Table, Value};
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
    for (name, value) in all.entries() {
        if !valid_name(name.get_ref()) {
            d.error(name.span(), name_rule(name.get_ref()));
        }
        let Some(t) = Table::from_value(d, value, format!("upstreams.{}", name.get_ref())) else {
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
    let targets = targets?;
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
    })
}

pub(super) fn targets(d: &mut Diagnostics, t: &Table) -> Option<Vec<Target>> {
    let Some(items) = t.array(d, "targets") else {
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
                let tt = Table::from_value(d, item, format!("{}.targets", t.section()))?;
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
                        "a target is \"IP:port\" or {{ address = \"IP:port\", weight = N }}, found {}",
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

pub(super) fn target_addr(d: &mut Diagnostics, item: &Value, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(
                item.span(),
                format!("target `{s}` is not an IP:port address (host names are not resolved)"),
            );
            None
        }
    }
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
