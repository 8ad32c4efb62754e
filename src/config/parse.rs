//! From the TOML document to the validated [`Config`], section by section.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::diag::Diagnostics;
use super::model::*;
use super::reader::{Table, Value};
use crate::core::location::Located;
use crate::core::matching::{MethodSet, PathMatch};
use crate::core::secret::Secret;

const DEFAULT_MAX_URI_BYTES: u64 = 8192;
const DEFAULT_MAX_HEADER_BYTES: u64 = 16384;
const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
const DEFAULT_MAX_CONNECTIONS_PER_IP: u64 = 512;
const ONE_HOUR_MS: u64 = 3_600_000;
/// The most Pingora buffers for replay after a body was read whole.
pub(super) const MAX_SCHEMA_BODY_BYTES: u64 = 64 * 1024;

/// Headers whose framing meaning the gateway owns; letting configuration
/// rewrite them would open request smuggling.
const FRAMING_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

pub(super) fn config(
    d: &mut Diagnostics,
    root: &Table,
    path: &Path,
    sha256: String,
) -> Option<Config> {
    let server = server(d, root);
    let log = log(d, root);
    let admin = admin(d, root);
    let listeners = listeners(d, root);
    let limits = limits(d, root);
    let upstreams = upstreams(d, root);
    let auth = super::auth::providers(d, root);
    let routes = routes(d, root, &upstreams, &auth, &limits, &listeners);
    let protection = super::protect::protection(d, root);
    let rate_limit_store = super::protect::rate_limit_store(d, root);
    if root.raw("listeners").is_none() {
        d.error(0..0, "at least one [[listeners]] is required");
    }
    Some(Config {
        path: path.to_path_buf(),
        sha256,
        server,
        log,
        admin,
        listeners,
        limits,
        upstreams,
        auth,
        routes,
        protection,
        rate_limit_store,
    })
}

fn server(d: &mut Diagnostics, root: &Table) -> Server {
    let mut out = Server {
        threads: 1,
        pid_file: PathBuf::from("/tmp/portcullis.pid"),
        upgrade_sock: PathBuf::from("/tmp/portcullis_upgrade.sock"),
        grace_period_seconds: 30,
        graceful_shutdown_timeout_seconds: 5,
        trusted_proxies: Vec::new(),
        underscore_headers: UnderscoreHeaders::Drop,
    };
    let Some(t) = root.table(d, "server") else {
        return out;
    };
    if let Some(n) = t.integer(d, "threads", 1..=1024) {
        out.threads = n as usize;
    }
    if let Some(p) = non_empty_string(d, &t, "pid_file") {
        out.pid_file = PathBuf::from(p.into_inner());
    }
    if let Some(p) = non_empty_string(d, &t, "upgrade_sock") {
        out.upgrade_sock = PathBuf::from(p.into_inner());
    }
    if let Some(n) = t.integer(d, "grace_period_seconds", 0..=3600) {
        out.grace_period_seconds = n;
    }
    if let Some(n) = t.integer(d, "graceful_shutdown_timeout_seconds", 0..=3600) {
        out.graceful_shutdown_timeout_seconds = n;
    }
    for cidr in t.strings(d, "trusted_proxies").unwrap_or_default() {
        match parse_cidr(cidr.get_ref()) {
            Some(net) => out.trusted_proxies.push(net),
            None => d.error(
                cidr.span(),
                format!("`{}` is not an IP address or CIDR", cidr.get_ref()),
            ),
        }
    }
    if let Some(mode) = t.string(d, "underscore_headers") {
        out.underscore_headers = match mode.get_ref().as_str() {
            "drop" => UnderscoreHeaders::Drop,
            "reject" => UnderscoreHeaders::Reject,
            "allow" => UnderscoreHeaders::Allow,
            other => {
                d.error(
                    mode.span(),
                    format!("unknown underscore_headers `{other}`; use drop, reject or allow"),
                );
                UnderscoreHeaders::Drop
            }
        };
    }
    t.finish(d);
    out
}

/// An address or a CIDR; a bare address is a /32 or /128.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn log(d: &mut Diagnostics, root: &Table) -> Log {
    let mut out = Log {
        level: "info".into(),
        access_log: LogTarget::Stdout,
        security_log: LogTarget::Stdout,
    };
    let Some(t) = root.table(d, "log") else {
        return out;
    };
    if let Some(level) = t.string(d, "level") {
        match level.get_ref().as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => out.level = level.into_inner(),
            other => d.error(
                level.span(),
                format!("unknown log level `{other}`; use error, warn, info, debug or trace"),
            ),
        }
    }
    if let Some(target) = non_empty_string(d, &t, "access_log") {
        out.access_log = log_target(target.get_ref());
    }
    if let Some(target) = non_empty_string(d, &t, "security_log") {
        out.security_log = match log_target(target.get_ref()) {
            LogTarget::Off => {
                d.error(
                    target.span(),
                    "the security log cannot be turned off; use \"stdout\" or a file path",
                );
                LogTarget::Stdout
            }
            other => other,
        };
    }
    t.finish(d);
    out
}

fn log_target(s: &str) -> LogTarget {
    match s {
        "stdout" => LogTarget::Stdout,
        "off" => LogTarget::Off,
        path => LogTarget::File(PathBuf::from(path)),
    }
}

fn admin(d: &mut Diagnostics, root: &Table) -> Option<Admin> {
    let t = root.table(d, "admin")?;
    let listen = required_string(d, &t, "listen");
    let token_file = t.string(d, "token_file");
    t.finish(d);
    let token = token_file.and_then(|f| read_secret(d, &f, 16));
    let listen = listen?;
    let Ok(addr) = listen.get_ref().parse::<SocketAddr>() else {
        d.error(
            listen.span(),
            format!("`{}` is not an IP:port address", listen.get_ref()),
        );
        return None;
    };
    if token.is_none() && !addr.ip().is_loopback() {
        d.error(
            listen.span(),
            "an admin listener on a non-loopback address needs a `token_file`",
        );
    }
    Some(Admin {
        listen: listen.into_inner(),
        addr,
        token,
    })
}

fn listeners(d: &mut Diagnostics, root: &Table) -> Vec<Listener> {
    let mut out: Vec<Listener> = Vec::new();
    for t in root.tables(d, "listeners") {
        let name = required_string(d, &t, "name");
        let listen = required_string(d, &t, "listen");
        let tls = t.table(d, "tls").and_then(|tls| {
            let out = listener_tls(d, &tls);
            tls.finish(d);
            out
        });
        t.finish(d);
        let (Some(name), Some(listen)) = (name, listen) else {
            continue;
        };
        if out.iter().any(|l| l.name == *name.get_ref()) {
            d.error(
                name.span(),
                format!("duplicate listener name `{}`", name.get_ref()),
            );
        }
        let Ok(addr) = listen.get_ref().parse::<SocketAddr>() else {
            d.error(
                listen.span(),
                format!(
                    "`{}` is not an IP:port address (host names are not resolved)",
                    listen.get_ref()
                ),
            );
            continue;
        };
        if out.iter().any(|l| l.addr == addr) {
            d.error(
                listen.span(),
                format!("address {addr} is used by two listeners"),
            );
        }
        if out.len() == crate::core::matching::ListenerSet::MAX {
            d.error(
                name.span(),
                format!(
                    "at most {} [[listeners]] are supported",
                    crate::core::matching::ListenerSet::MAX
                ),
            );
        }
        out.push(Listener {
            name: name.into_inner(),
            listen: listen.into_inner(),
            addr,
            tls,
        });
    }
    out
}

/// `tls = { cert, key, sni_certificates = [{ cert, key }, ...] }`: every
/// pair must load and match, so a bad certificate is a `check` error, not a
/// failing handshake.
fn listener_tls(d: &mut Diagnostics, tls: &Table) -> Option<ListenerTls> {
    let mut pairs = vec![(
        required_string(d, tls, "cert"),
        required_string(d, tls, "key"),
    )];
    for (i, extra) in tls
        .array(d, "sni_certificates")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(t) =
            Table::from_value(d, extra, format!("{}.sni_certificates[{i}]", tls.section()))
        else {
            continue;
        };
        pairs.push((
            required_string(d, &t, "cert"),
            required_string(d, &t, "key"),
        ));
        t.finish(d);
    }
    let client_ca = client_ca(d, tls);
    let mut certificates = Vec::with_capacity(pairs.len());
    let mut ok = true;
    for (cert, key) in pairs {
        let (Some(cert), Some(key)) = (cert, key) else {
            ok = false;
            continue;
        };
        let at = d.location(cert.span());
        let (Some(cert), Some(key)) = (existing_file(d, cert), existing_file(d, key)) else {
            ok = false;
            continue;
        };
        let cert = Located { value: cert, at };
        d.pending(Pending::Certificate {
            cert: cert.clone(),
            key: key.clone(),
        });
        certificates.push((cert, key));
    }
    ok.then_some(ListenerTls {
        certificates,
        client_ca: client_ca?,
    })
}

/// `client_ca` and `client_auth`; `Some(None)` when client certificates
/// are not asked for, `None` on error.
fn client_ca(d: &mut Diagnostics, tls: &Table) -> Option<Option<(Located<PathBuf>, ClientAuth)>> {
    let ca = tls.string(d, "client_ca");
    let mode = tls.string(d, "client_auth");
    let mode = match &mode {
        None => ClientAuth::Required,
        Some(m) => match m.get_ref().as_str() {
            "required" => ClientAuth::Required,
            "optional" => ClientAuth::Optional,
            other => {
                d.error(
                    m.span(),
                    format!("unknown client_auth `{other}`; use required or optional"),
                );
                return None;
            }
        },
    };
    let Some(ca) = ca else {
        if let Some(m) = tls.raw("client_auth") {
            d.error(m.span(), "`client_auth` needs `client_ca`");
            return None;
        }
        return Some(None);
    };
    let at = d.location(ca.span());
    let path = Located {
        value: existing_file(d, ca)?,
        at,
    };
    d.pending(Pending::ClientCa(path.clone()));
    Some(Some((path, mode)))
}

fn limits(d: &mut Diagnostics, root: &Table) -> Limits {
    let mut out = Limits {
        max_uri_bytes: DEFAULT_MAX_URI_BYTES as usize,
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        header_timeout: Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
        idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
        tls_handshake_timeout: Duration::from_millis(DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS),
        max_connections: DEFAULT_MAX_CONNECTIONS as usize,
        max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP as usize,
    };
    let Some(t) = root.table(d, "limits") else {
        return out;
    };
    let ms = |n: u64| Duration::from_millis(n);
    if let Some(n) = t.integer(d, "header_timeout_ms", 100..=ONE_HOUR_MS) {
        out.header_timeout = ms(n);
    }
    if let Some(n) = t.integer(d, "idle_timeout_ms", 100..=ONE_HOUR_MS) {
        out.idle_timeout = ms(n);
    }
    if let Some(n) = t.integer(d, "tls_handshake_timeout_ms", 100..=ONE_HOUR_MS) {
        out.tls_handshake_timeout = ms(n);
    }
    if let Some(n) = t.integer(d, "max_connections", 1..=10_000_000) {
        out.max_connections = n as usize;
    }
    if let Some(n) = t.integer(d, "max_connections_per_ip", 1..=10_000_000) {
        out.max_connections_per_ip = n as usize;
    }
    if let Some(n) = t.integer(d, "max_uri_bytes", 16..=65536) {
        out.max_uri_bytes = n as usize;
    }
    if let Some(n) = t.integer(d, "max_header_bytes", 256..=1024 * 1024) {
        out.max_header_bytes = n as usize;
    }
    if let Some(n) = t.integer(d, "max_body_bytes", 0..=u64::from(u32::MAX)) {
        out.max_body_bytes = n;
    }
    t.finish(d);
    out
}

fn upstreams(d: &mut Diagnostics, root: &Table) -> Vec<Upstream> {
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

fn upstream(d: &mut Diagnostics, t: &Table, name: &str) -> Option<Upstream> {
    let targets = targets(d, t);
    let balance = match t.string(d, "balance") {
        None => Balance::RoundRobin,
        Some(b) => match b.get_ref().as_str() {
            "round_robin" => Balance::RoundRobin,
            "random" => Balance::Random,
            "consistent_hash" => Balance::ConsistentHash,
            other => {
                d.error(
                    b.span(),
                    format!(
                        "unknown balance `{other}`; use round_robin, random or consistent_hash"
                    ),
                );
                Balance::RoundRobin
            }
        },
    };
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
    let sni = t.string(d, "sni").map(Spanned::into_inner);
    let connect_timeout = t
        .integer(d, "connect_timeout_ms", 1..=ONE_HOUR_MS)
        .unwrap_or(1000);
    let read_timeout = t
        .integer(d, "read_timeout_ms", 1..=ONE_HOUR_MS)
        .unwrap_or(30_000);
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
        sni: sni.unwrap_or_default(),
        connect_timeout: Duration::from_millis(connect_timeout),
        read_timeout: Duration::from_millis(read_timeout),
        retries,
        health_check,
    })
}

fn targets(d: &mut Diagnostics, t: &Table) -> Option<Vec<Target>> {
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

fn target_addr(d: &mut Diagnostics, item: &Value, s: &str) -> Option<SocketAddr> {
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

fn hash_key(d: &mut Diagnostics, k: &Spanned<String>) -> Option<HashKey> {
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

fn health_check(d: &mut Diagnostics, h: &Table) -> Option<HealthCheck> {
    let kind = required_string(d, h, "kind");
    let path = h.string(d, "path");
    let host = h.string(d, "host");
    let interval = h
        .integer(d, "interval_ms", 10..=ONE_HOUR_MS)
        .unwrap_or(1000);
    let timeout = h.integer(d, "timeout_ms", 1..=ONE_HOUR_MS).unwrap_or(500);
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
        interval: Duration::from_millis(interval),
        timeout: Duration::from_millis(timeout),
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
    })
}

fn routes(
    d: &mut Diagnostics,
    root: &Table,
    upstreams: &[Upstream],
    auth: &[AuthProvider],
    limits: &Limits,
    listeners: &[Listener],
) -> Vec<Route> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for t in root.tables(d, "routes") {
        if let Some(r) = route(d, &t, upstreams, auth, limits, listeners) {
            if !names.insert(r.name.clone()) {
                d.error(t.span(), format!("duplicate route name `{}`", r.name));
            }
            out.push(r);
        }
        t.finish(d);
    }
    out
}

fn route(
    d: &mut Diagnostics,
    t: &Table,
    upstreams: &[Upstream],
    providers: &[AuthProvider],
    limits: &Limits,
    listeners: &[Listener],
) -> Option<Route> {
    let name = required_string(d, t, "name");
    if let Some(n) = &name {
        if !valid_name(n.get_ref()) {
            d.error(n.span(), name_rule(n.get_ref()));
        }
    }
    let hosts = t
        .strings(d, "hosts")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| route_host(d, &h))
        .collect();
    let path = route_path(d, t);
    let methods = route_methods(d, t);
    let public = t.boolean(d, "public").unwrap_or(false);
    let auth = route_auth(d, t, providers, public, name.as_ref());
    let upstream = t.string(d, "upstream");
    let strip_prefix = t.boolean(d, "strip_prefix");
    let respond = t.table(d, "respond").and_then(|r| {
        let out = respond(d, &r);
        r.finish(d);
        out
    });
    let explicit_body_limit = t.integer(d, "max_body_bytes", 0..=u64::from(u32::MAX));
    let max_body_bytes = match explicit_body_limit {
        Some(n) if n > limits.max_body_bytes => {
            d.error(
                t.span(),
                format!(
                    "route `max_body_bytes` ({n}) is above the global [limits] max_body_bytes ({}); routes may only lower it",
                    limits.max_body_bytes
                ),
            );
            limits.max_body_bytes
        }
        Some(n) => n,
        None => limits.max_body_bytes,
    };
    let request_headers = header_ops(d, t, "request_headers");
    let response_headers = header_ops(d, t, "response_headers");
    let authz = super::authz::route_authz(d, t, public);
    let cidrs = super::authz::cidr_rules(d, t);
    let rate_limit = super::protect::route_rate_limit(d, t);
    let json_schema = super::protect::route_schema(d, t);
    let cors = super::protect::route_cors(d, t);
    let route_listeners = route_listeners(d, t, listeners);
    let allow_path_params = t.boolean(d, "allow_path_params").unwrap_or(false);
    // A schema route's body is read whole before anything goes upstream,
    // which Pingora can replay only up to 64 KiB.
    let max_body_bytes = match (&json_schema, explicit_body_limit) {
        (Some(_), Some(n)) if n > MAX_SCHEMA_BODY_BYTES => {
            d.error(
                t.span(),
                format!("a `json_schema` route reads the body whole before forwarding it, so its `max_body_bytes` ({n}) must be at most {MAX_SCHEMA_BODY_BYTES}"),
            );
            max_body_bytes
        }
        (Some(_), _) => max_body_bytes.min(MAX_SCHEMA_BODY_BYTES),
        (None, _) => max_body_bytes,
    };

    let action = match (upstream, respond) {
        (Some(u), None) => {
            let Some(index) = upstreams.iter().position(|x| x.name == *u.get_ref()) else {
                d.error(u.span(), format!("unknown upstream `{}`", u.get_ref()));
                return None;
            };
            let strip_prefix = strip_prefix.unwrap_or(false);
            if strip_prefix && !matches!(path, Some(PathMatch::Prefix(_))) {
                d.error(t.span(), "`strip_prefix` needs a `path_prefix`");
            }
            RouteAction::Proxy {
                upstream: index,
                strip_prefix,
            }
        }
        (None, Some(respond)) => {
            if strip_prefix.is_some() {
                d.error(
                    t.span(),
                    "`strip_prefix` only applies to routes with an `upstream`",
                );
            }
            respond
        }
        (Some(u), Some(_)) => {
            d.error(
                u.span(),
                "a route has either `upstream` or `respond`, not both",
            );
            return None;
        }
        (None, None) => {
            d.error(t.span(), "a route needs an `upstream` or a `respond`");
            return None;
        }
    };
    Some(Route {
        name: name?.into_inner(),
        hosts,
        path: path?,
        methods,
        auth,
        action,
        max_body_bytes,
        request_headers,
        response_headers,
        authz,
        cidrs,
        rate_limit,
        json_schema,
        cors,
        listeners: route_listeners,
        allow_path_params,
    })
}

/// `listeners = ["https"]`: the route matches only requests received on
/// those listeners.
fn route_listeners(d: &mut Diagnostics, t: &Table, listeners: &[Listener]) -> Vec<usize> {
    let Some(names) = t.strings(d, "listeners") else {
        return Vec::new();
    };
    if names.is_empty() {
        let span = t.raw("listeners").map_or_else(|| t.span(), |v| v.span());
        d.error(
            span,
            "`listeners` must name at least one listener (omit it for all)",
        );
    }
    let mut out = Vec::new();
    for name in names {
        match listeners.iter().position(|l| l.name == *name.get_ref()) {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => d.error(
                name.span(),
                format!("listener `{}` is listed twice", name.get_ref()),
            ),
            None => d.error(
                name.span(),
                format!("unknown listener `{}`", name.get_ref()),
            ),
        }
    }
    out
}

/// A route names its providers or says `public = true` — exactly one of
/// the two, so that no route is open by accident.
fn route_auth(
    d: &mut Diagnostics,
    t: &Table,
    providers: &[AuthProvider],
    public: bool,
    name: Option<&Spanned<String>>,
) -> Vec<usize> {
    let route_name = name.map_or("?", |n| n.get_ref().as_str());
    let Some(list) = t.strings(d, "auth") else {
        if !public {
            d.error(
                t.span(),
                format!(
                    "route `{route_name}` must name its `auth` providers or say `public = true` (routes are closed by default)"
                ),
            );
        }
        return Vec::new();
    };
    let span = t.raw("auth").map_or_else(|| t.span(), |v| v.span());
    if public {
        d.error(
            span.clone(),
            format!("route `{route_name}` says both `public = true` and `auth`; choose one"),
        );
    }
    if list.is_empty() {
        d.error(span, "`auth` must name at least one provider");
    }
    let mut out = Vec::new();
    for p in list {
        match providers.iter().position(|x| x.name == *p.get_ref()) {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => d.error(
                p.span(),
                format!("provider `{}` is listed twice", p.get_ref()),
            ),
            None => d.error(p.span(), format!("unknown auth provider `{}`", p.get_ref())),
        }
    }
    out
}

fn route_host(d: &mut Diagnostics, h: &Spanned<String>) -> Option<String> {
    let host = h.get_ref().to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'))
        && (host.starts_with('[') || !host.contains(':'));
    if ok {
        Some(host)
    } else {
        d.error(
            h.span(),
            format!(
                "`{}` is not a host name (give it without port or scheme)",
                h.get_ref()
            ),
        );
        None
    }
}

fn route_path(d: &mut Diagnostics, t: &Table) -> Option<PathMatch> {
    let exact = t.string(d, "path");
    let prefix = t.string(d, "path_prefix");
    let (value, make): (Spanned<String>, fn(String) -> PathMatch) = match (exact, prefix) {
        (Some(p), None) => (p, PathMatch::Exact),
        (None, Some(p)) => (p, PathMatch::Prefix),
        (Some(p), Some(_)) => {
            d.error(
                p.span(),
                "a route has either `path` or `path_prefix`, not both",
            );
            return None;
        }
        (None, None) => {
            d.error(t.span(), "a route needs `path` or `path_prefix`");
            return None;
        }
    };
    match crate::core::normalize::normalize_path(value.get_ref()) {
        Ok(n) if n == value.get_ref().as_str() => Some(make(value.into_inner())),
        Ok(n) => {
            d.error(
                value.span(),
                format!("route path is not in normal form; write it as `{n}`"),
            );
            None
        }
        Err(e) => {
            d.error(value.span(), format!("invalid route path: {e}"));
            None
        }
    }
}

fn route_methods(d: &mut Diagnostics, t: &Table) -> MethodSet {
    let Some(list) = t.strings(d, "methods") else {
        return MethodSet::ANY;
    };
    let mut set: Option<MethodSet> = None;
    for m in list {
        match MethodSet::parse(m.get_ref()) {
            Some(one) => set = Some(set.map_or(one, |s| s.union(one))),
            None => d.error(
                m.span(),
                format!(
                    "unknown method `{}`; use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE or CONNECT",
                    m.get_ref()
                ),
            ),
        }
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2): allowing GET allows it.
    match set {
        Some(s) if s.contains(&http::Method::GET) => s.union(MethodSet::HEAD),
        Some(s) => s,
        None => {
            d.error(
                t.span(),
                "`methods` must not be empty (omit it to allow any method)",
            );
            MethodSet::ANY
        }
    }
}

fn respond(d: &mut Diagnostics, r: &Table) -> Option<RouteAction> {
    let status = r.integer(d, "status", 100..=599).unwrap_or(200) as u16;
    let body = r
        .string(d, "body")
        .map(Spanned::into_inner)
        .unwrap_or_default();
    let content_type = match r.string(d, "content_type") {
        None => HeaderValue::from_static("text/plain"),
        Some(ct) => match HeaderValue::from_str(ct.get_ref()) {
            Ok(v) => v,
            Err(_) => {
                d.error(ct.span(), "`content_type` is not a valid header value");
                return None;
            }
        },
    };
    Some(RouteAction::Respond {
        status,
        body: Bytes::from(body),
        content_type,
    })
}

fn header_ops(d: &mut Diagnostics, t: &Table, key: &'static str) -> HeaderOps {
    let mut out = HeaderOps::default();
    let Some(ops) = t.table(d, key) else {
        return out;
    };
    if let Some(set) = ops.table(d, "set") {
        for (name, value) in set.entries() {
            let Some(name) = header_name(d, &name) else {
                continue;
            };
            match value.get_ref().as_str().map(HeaderValue::from_str) {
                Some(Ok(v)) => out.set.push((name, v)),
                _ => d.error(
                    value.span(),
                    "a header value must be a string of visible characters",
                ),
            }
        }
    }
    for name in ops.strings(d, "remove").unwrap_or_default() {
        let spanned = Spanned::new(name.span(), name.get_ref().as_str());
        if let Some(n) = header_name(d, &spanned) {
            out.remove.push(n);
        }
    }
    ops.finish(d);
    out
}

pub(super) fn header_name(d: &mut Diagnostics, name: &Spanned<&str>) -> Option<HeaderName> {
    let lower = name.get_ref().to_ascii_lowercase();
    if FRAMING_HEADERS.contains(&lower.as_str()) {
        d.error(
            name.span(),
            format!("header `{lower}` controls message framing and cannot be changed"),
        );
        return None;
    }
    match HeaderName::from_bytes(lower.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            d.error(
                name.span(),
                format!("`{}` is not a valid header name", name.get_ref()),
            );
            None
        }
    }
}

fn required_string(d: &mut Diagnostics, t: &Table, key: &'static str) -> Option<Spanned<String>> {
    let v = t.string(d, key);
    if v.is_none() && t.raw(key).is_none() {
        d.error(t.span(), format!("[{}] needs `{key}`", t.section()));
    }
    v
}

fn non_empty_string(d: &mut Diagnostics, t: &Table, key: &'static str) -> Option<Spanned<String>> {
    let v = t.string(d, key)?;
    if v.get_ref().is_empty() {
        d.error(v.span(), format!("`{key}` must not be empty"));
        return None;
    }
    Some(v)
}

fn existing_file(d: &mut Diagnostics, p: Spanned<String>) -> Option<PathBuf> {
    let path = PathBuf::from(p.get_ref());
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            d.error(p.span(), format!("`{}` is not a file", p.get_ref()));
            None
        }
        Err(e) => {
            d.error(p.span(), format!("cannot read `{}`: {e}", p.get_ref()));
            None
        }
    }
}

/// A secret from a file: trimmed, at least `min_len` characters.
pub(super) fn read_secret(
    d: &mut Diagnostics,
    file: &Spanned<String>,
    min_len: usize,
) -> Option<Secret> {
    match std::fs::read_to_string(file.get_ref()) {
        Ok(text) if text.trim().len() >= min_len => Some(Secret::new(text.trim().to_string())),
        Ok(_) => {
            d.error(
                file.span(),
                format!(
                    "the secret in `{}` must be at least {min_len} characters",
                    file.get_ref()
                ),
            );
            None
        }
        Err(e) => {
            d.error(
                file.span(),
                format!("cannot read `{}`: {e}", file.get_ref()),
            );
            None
        }
    }
}

/// Names appear in metrics labels and logs, so they are kept to a safe set.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn name_rule(name: &str) -> String {
    format!("name `{name}` must be 1-64 characters of A-Z a-z 0-9 - _ .")
}
