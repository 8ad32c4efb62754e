//! What goes upstream: the target chosen, and the request built from the
//! canonical view — never from the client's raw bytes.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType, Result};
use sha2::{Digest, Sha256};

use super::ctx::Ctx;
use super::reject::{Code, Reject};
use super::request;
use super::respond::X_REQUEST_ID;
use crate::config::{Balance, HashKey, RouteAction, UpstreamProtocol, UpstreamSplit};
use crate::core::ids::UpstreamId;
use crate::core::matching::PathMatch;
use crate::observe::otel::{TRACEPARENT, TRACESTATE};
use crate::runtime::Route;
use crate::upstream::pool::UpstreamPool;

const X_FORWARDED_HOST: &str = "x-forwarded-host";
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// gRPC's `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`,
/// `m`illi-, `u` micro-, `n`anoseconds); anything else is no deadline.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The next target for this request (a retry never picks one it tried), or
/// the refusal when there is none.
/// `headers` are the request's canonical headers.
pub(crate) fn peer(
    pool: &UpstreamPool,
    headers: &HeaderMap,
    ctx: &mut Ctx,
) -> Result<HttpPeer, Reject> {
    let key = match pool.config.balance {
        Balance::ConsistentHash => hash_key(&pool.config.hash_key, headers, ctx),
        Balance::RoundRobin | Balance::Random => Vec::new(),
    };
    let Some(addr) = pool.select(&key, &ctx.upstream.tried) else {
        return Err(if ctx.upstream.tried.is_empty() {
            Reject::new(Code::NoHealthyUpstream, "no healthy upstream target")
        } else {
            Reject::new(Code::BadGateway, "upstream connection failed")
        });
    };
    ctx.upstream.tried.push(addr);
    let cfg = &pool.config;
    let mut peer = HttpPeer::new(addr, cfg.tls, cfg.sni.clone());
    if let Some(ca) = &pool.ca {
        peer.options.ca = Some(ca.certs.clone());
        peer.group_key = ca.reuse_group();
    }
    peer.options.connection_timeout = Some(cfg.connect_timeout);
    peer.options.total_connection_timeout = Some(cfg.connect_timeout);
    // A gRPC call's own deadline, never beyond the upstream's limit.
    let read_timeout = match ctx.grpc.then(|| headers.get(GRPC_TIMEOUT)).flatten() {
        Some(v) => grpc_timeout(v.as_bytes()).map_or(cfg.read_timeout, |d| d.min(cfg.read_timeout)),
        None => cfg.read_timeout,
    };
    peer.options.read_timeout = Some(read_timeout);
    peer.options.write_timeout = Some(read_timeout);
    let websocket = if ctx.canon.wants_websocket() {
        ctx.route().and_then(|r| r.websocket)
    } else {
        None
    };
    match (websocket, cfg.protocol) {
        // The upgrade is HTTP/1.1's; the open socket waits as long as the
        // route allows between frames.
        (Some(idle), _) => {
            peer.options.read_timeout = Some(idle);
            peer.options.write_timeout = Some(idle);
        }
        (None, UpstreamProtocol::Http1) => {}
        // h2 by ALPN, HTTP/1.1 when the upstream does not offer it.
        (None, UpstreamProtocol::Http2) => peer.options.set_http_version(2, 1),
        // Plaintext: only prior knowledge is possible.
        (None, UpstreamProtocol::H2c) => peer.options.set_http_version(2, 2),
    }
    ctx.upstream.started.get_or_insert_with(Instant::now);
    Ok(peer)
}

/// The upstream of this request among the route's: a stable hash of the
/// `split_key` when there is one (the same caller lands on the same side
/// in every process), else a weighted draw.
pub(crate) fn choose_upstream(
    split: &UpstreamSplit,
    headers: &HeaderMap,
    ctx: &Ctx,
) -> Option<UpstreamId> {
    if let [(only, _)] = split.choices.as_slice() {
        return Some(*only);
    }
    let total: u64 = split.choices.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let point = match &split.key {
        Some(key) => {
            let digest = Sha256::digest(hash_key(key, headers, ctx));
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(first) % total
        }
        None => rand::random_range(0..total),
    };
    let mut end = 0u64;
    split
        .choices
        .iter()
        .find(|(_, weight)| {
            end += u64::from(*weight);
            point < end
        })
        .map(|(id, _)| *id)
}

/// The key a consistent-hash upstream hashes on. `consumer` is the
/// identity's consumer (else its subject); requests without an identity
/// hash on the client IP.
fn hash_key(key: &HashKey, headers: &HeaderMap, ctx: &Ctx) -> Vec<u8> {
    let client_ip = || match ctx.client.ip {
        Some(IpAddr::V4(ip)) => ip.octets().to_vec(),
        Some(IpAddr::V6(ip)) => ip.octets().to_vec(),
        None => Vec::new(),
    };
    match key {
        HashKey::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::Consumer => match &ctx.caller.identity {
            Some(id) => id
                .consumer
                .as_ref()
                .unwrap_or(&id.subject)
                .as_bytes()
                .to_vec(),
            None => client_ip(),
        },
        HashKey::ClientIp => client_ip(),
    }
}

/// Rewrites Pingora's copy of the request head into what the upstream gets:
/// the canonical origin-form target, the canonical host, the forwarding
/// headers, the caller's identity and the route's header rules.
pub(crate) fn upstream_request(
    upstream_request: &mut RequestHeader,
    ctx: &Ctx,
    route: &Route,
) -> Result<()> {
    let canon = &ctx.canon;
    // Most targets arrive canonical, and then nothing is rebuilt.
    let stripped = match (&route.action, &route.path) {
        (
            RouteAction::Proxy {
                strip_prefix: true, ..
            },
            PathMatch::Prefix(prefix),
        ) => Some(strip(canon.path(), prefix)),
        _ => None,
    };
    let target: Cow<'_, str> = match (stripped, canon.query()) {
        (None, _) => canon.target().into(),
        (Some(path), None) => path.into(),
        (Some(path), Some(q)) => format!("{path}?{q}").into(),
    };
    if upstream_request.raw_path() != target.as_bytes() {
        let uri = http::Uri::try_from(target.as_ref())
            .map_err(|_| Error::explain(ErrorType::InternalError, "cannot build upstream URI"))?;
        upstream_request.set_uri(uri);
    }
    match canon.authority() {
        Some(authority) => {
            if upstream_request.headers.get(HOST) != Some(authority) {
                upstream_request.insert_header(HOST, authority.clone())?;
            }
            upstream_request.insert_header(X_FORWARDED_HOST, authority.clone())?;
        }
        // An HTTP/1.0 request without a host: the upstream (HTTP/1.1)
        // must get one, and a virtual-hosting origin must not fall back
        // to a default site the gateway never routed on. Like nginx, the
        // target's own address.
        None => {
            if let Some(target) = ctx.target() {
                upstream_request.insert_header(HOST, target.to_string())?;
            }
        }
    }
    upstream_request.insert_header(X_REQUEST_ID, ctx.request_id.header())?;
    if let Some(span) = &ctx.trace {
        // The upstream's parent is the gateway's span; without `[tracing]`
        // a client's context passes unchanged.
        match &span.traceparent {
            Some(v) => upstream_request.insert_header(TRACEPARENT, v.clone())?,
            None => {
                upstream_request.remove_header(TRACEPARENT);
            }
        }
        match &span.tracestate {
            Some(v) => upstream_request.insert_header(TRACESTATE, v.clone())?,
            None => {
                if upstream_request.headers.contains_key(TRACESTATE) {
                    upstream_request.remove_header(TRACESTATE);
                }
            }
        }
    }
    if let Some(peer) = canon.conn().peer {
        let peer_value = request::ip_value(peer);
        let xff = request::forwarded_for(&upstream_request.headers, &peer_value);
        upstream_request.insert_header(request::X_FORWARDED_FOR, xff)?;
        // Mostly the client is the peer: its value is formatted once.
        let client = match canon.client_ip() {
            Some(ip) if ip != peer => request::ip_value(ip),
            _ => peer_value,
        };
        upstream_request.insert_header(request::X_REAL_IP, client)?;
    }
    let proto = if canon.https() {
        HeaderValue::from_static("https")
    } else {
        HeaderValue::from_static("http")
    };
    upstream_request.insert_header(request::X_FORWARDED_PROTO, proto)?;
    identity_headers(upstream_request, ctx)?;
    if let Some(external) = &route.authz.external {
        // Only the authorizer may set these; a client's copies go.
        for name in &external.config.response_headers {
            upstream_request.remove_header(name);
        }
        for (name, value) in &ctx.caller.authz_headers {
            upstream_request.append_header(name.clone(), value.clone())?;
        }
    }
    for name in &route.request_headers.remove {
        upstream_request.remove_header(name);
    }
    for (name, value) in &route.request_headers.set {
        upstream_request.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// The identity of the caller, for the upstream. A client's copies of
/// these headers were removed by the canonical step.
fn identity_headers(upstream_request: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    let Some(identity) = &ctx.caller.identity else {
        return Ok(());
    };
    if let Some(provider) = &ctx.caller.provider {
        if !provider.forward_credentials() {
            upstream_request.remove_header(provider.credential_header());
        }
    }
    for (name, value) in identity.header_values() {
        upstream_request.insert_header(*name, value.clone())?;
    }
    Ok(())
}

/// `/api/orders` with prefix `/api` is `/orders`; the prefix itself is `/`.
/// A prefix configured with a trailing slash (`/api/`) strips like `/api`.
/// Segments are counted, so `;` parameters on the prefix's segments
/// (`/api;v=1/orders`) go with them.
fn strip<'a>(path: &'a str, prefix: &str) -> &'a str {
    let segments = prefix
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    if segments == 0 {
        return path;
    }
    // The byte index of the '/' that opens segment `segments + 1`.
    match path.match_indices('/').nth(segments) {
        Some((i, _)) => path.get(i..).unwrap_or("/"),
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::{grpc_timeout, strip};
    use std::time::Duration;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"m",
            b"123456789S",
            b"-1S",
            b"1s",
            b"1.5S",
            b"1 S",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strips_at_segment() {
        assert_eq!(strip("/api/orders", "/api"), "/orders");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/api/", "/api"), "/");
        assert_eq!(strip("/x", "/"), "/x");
        assert_eq!(strip("/api/orders", "/api/"), "/orders");
        assert_eq!(strip("/api", "/api/"), "/");
        assert_eq!(strip("/api;v=1/orders", "/api"), "/orders");
        assert_eq!(strip("/a/b/c", "/a/b"), "/c");
    }
}
