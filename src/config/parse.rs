//! From the TOML document to the validated [`Config`], section by section:
//! the top-level sections here, listeners, upstreams and routes in their
//! own files, the typed value helpers in `values.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::Diagnostics;
use super::listeners::listeners;
use super::model::*;
use super::reader::Table;
use super::routes::routes;
use super::upstreams::upstreams;
use super::values::non_empty_string;
use super::values::parse_cidr;
use super::values::read_secret;
use super::values::required_string;

const DEFAULT_MAX_URI_BYTES: u64 = 8192;
const DEFAULT_MAX_HEADER_BYTES: u64 = 16384;
pub(super) const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
const DEFAULT_MAX_CONNECTIONS_PER_IP: u64 = 512;
pub(super) const ONE_HOUR_MS: u64 = 3_600_000;

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
    let tokens = super::auth::settings(d, root);
    let routes = routes(d, root, &upstreams, &auth, &limits, &listeners);
    let protection = super::protect::protection(d, root);
    let rate_limit_store = super::protect::rate_limit_store(d, root);
    let cache = super::cache::limits(d, root);
    let tracing = super::trace::tracing(d, root);
    let alerts = super::observe::alerts(d, root);
    let waf = super::waf::waf(d, root);
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
        cache,
        tracing,
        alerts,
        tokens,
        waf,
    })
}

pub(super) fn server(d: &mut Diagnostics, root: &Table) -> Server {
    let mut out = Server {
        threads: 1,
        pid_file: PathBuf::from("/tmp/portcullis.pid"),
        upgrade_sock: PathBuf::from("/tmp/portcullis_upgrade.sock"),
        grace_period_seconds: 30,
        graceful_shutdown_timeout_seconds: 5,
        trusted_proxies: Vec::new(),
        underscore_headers: UnderscoreHeaders::Drop,
        upstream_keepalive_pool_size: 1024,
        work_stealing: true,
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
    if let Some(mode) = t.keyword(
        d,
        "underscore_headers",
        out.underscore_headers,
        &[
            ("drop", UnderscoreHeaders::Drop),
            ("reject", UnderscoreHeaders::Reject),
            ("allow", UnderscoreHeaders::Allow),
        ],
    ) {
        out.underscore_headers = mode;
    }
    if let Some(n) = t.integer(d, "upstream_keepalive_pool_size", 1..=1_000_000) {
        out.upstream_keepalive_pool_size = n as usize;
    }
    if let Some(b) = t.boolean(d, "work_stealing") {
        out.work_stealing = b;
    }
    t.finish(d);
    out
}

pub(super) fn log(d: &mut Diagnostics, root: &Table) -> Log {
    let mut out = Log::default();
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
    super::observe::log_keys(d, &t, &mut out);
    t.finish(d);
    out
}

pub(super) fn log_target(s: &str) -> LogTarget {
    match s {
        "stdout" => LogTarget::Stdout,
        "off" => LogTarget::Off,
        path => LogTarget::File(PathBuf::from(path)),
    }
}

pub(super) fn admin(d: &mut Diagnostics, root: &Table) -> Option<Admin> {
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

pub(super) fn limits(d: &mut Diagnostics, root: &Table) -> Limits {
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
    if let Some(timeout) = t.duration(
        d,
        "header_timeout_ms",
        100..=ONE_HOUR_MS,
        Duration::from_millis,
    ) {
        out.header_timeout = timeout;
    }
    if let Some(timeout) = t.duration(
        d,
        "idle_timeout_ms",
        100..=ONE_HOUR_MS,
        Duration::from_millis,
    ) {
        out.idle_timeout = timeout;
    }
    if let Some(timeout) = t.duration(
        d,
        "tls_handshake_timeout_ms",
        100..=ONE_HOUR_MS,
        Duration::from_millis,
    ) {
        out.tls_handshake_timeout = timeout;
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
