//! Traffic protection settings: `[protection]` (network rules and the
//! failed-auth lockout), `[rate_limit_store]`, and a route's `rate_limit`.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use serde_spanned::Spanned;

use super::authz::cidr_rules;
use super::diag::Diagnostics;
use super::model::{
    CorsSpec, Limit, Lockout, OnError, Pending, Protection, RateKey, RedisTls, RouteRateLimit,
    StoreConfig, StoreKind,
};
use super::reader::Table;
use super::values::{header_name, valid_name};
use crate::core::location::Located;
use crate::core::secret::Secret;

const ONE_DAY_SECONDS: u64 = 86_400;
const MAX_REQUESTS: u64 = 1_000_000_000;

pub(super) fn protection(d: &mut Diagnostics, root: &Table) -> Protection {
    let mut out = Protection::default();
    let Some(t) = root.table(d, "protection") else {
        return out;
    };
    out.cidrs = cidr_rules(d, &t);
    if let Some(f) = t.table(d, "failed_auth") {
        out.failed_auth = Some(Lockout {
            threshold: f.integer(d, "threshold", 1..=1_000_000).unwrap_or(20),
            window: f
                .duration(
                    d,
                    "window_seconds",
                    1..=ONE_DAY_SECONDS,
                    Duration::from_secs,
                )
                .unwrap_or(Duration::from_secs(60)),
            block: f
                .duration(d, "block_seconds", 1..=ONE_DAY_SECONDS, Duration::from_secs)
                .unwrap_or(Duration::from_secs(300)),
        });
        f.finish(d);
    }
    t.finish(d);
    out
}

pub(super) fn rate_limit_store(d: &mut Diagnostics, root: &Table) -> StoreConfig {
    let mut out = StoreConfig::default();
    let Some(t) = root.table(d, "rate_limit_store") else {
        return out;
    };
    let kind = t.string(d, "kind");
    let url = t.string(d, "redis_url");
    let cluster = t.strings(d, "redis_cluster_urls");
    let sentinels = t.strings(d, "redis_sentinel_urls");
    let master = t.string(d, "redis_sentinel_master");
    let is_redis = match kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("local") => false,
        Some("redis") => true,
        Some(other) => {
            if let Some(k) = &kind {
                d.error(
                    k.span(),
                    format!("unknown rate-limit store `{other}`; use \"local\" or \"redis\""),
                );
            }
            false
        }
    };
    let span_of = |key: &'static str| t.raw(key).map_or(t.span(), |v| v.span());
    let given: Vec<&'static str> = [
        ("redis_url", url.is_some()),
        ("redis_cluster_urls", cluster.is_some()),
        ("redis_sentinel_urls", sentinels.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let mut tls_url = false;
    if !is_redis {
        for key in &given {
            d.error(span_of(key), format!("`{key}` needs `kind = \"redis\"`"));
        }
    } else if given.len() > 1 {
        d.error(
            span_of(given[0]),
            "`redis_url`, `redis_cluster_urls` and `redis_sentinel_urls` are exclusive: one server, one cluster or one primary found through Sentinel",
        );
    } else if let Some(u) = url {
        if let Some(scheme) = redis_url(d, &u, "redis_url", false) {
            tls_url = scheme == Scheme::Tls;
            out.kind = StoreKind::Redis {
                url: u.into_inner(),
            };
        }
    } else if let Some(seeds) = cluster {
        if let Some((urls, tls)) = seed_urls(
            d,
            "redis_cluster_urls",
            span_of("redis_cluster_urls"),
            seeds,
        ) {
            tls_url = tls;
            out.kind = StoreKind::RedisCluster { urls };
        }
    } else if let Some(seeds) = sentinels {
        let urls = seed_urls(
            d,
            "redis_sentinel_urls",
            span_of("redis_sentinel_urls"),
            seeds,
        );
        let master = match &master {
            Some(m) => sentinel_master(d, m),
            None => {
                d.error(
                    span_of("redis_sentinel_urls"),
                    "`redis_sentinel_urls` needs `redis_sentinel_master`, the name the sentinels monitor",
                );
                None
            }
        };
        if let (Some((urls, _)), Some(master)) = (urls, master) {
            out.kind = StoreKind::RedisSentinel { urls, master };
        }
    } else {
        d.error(
            t.span(),
            "`kind = \"redis\"` needs a `redis_url`, `redis_cluster_urls` or `redis_sentinel_urls`",
        );
    }
    if let Some(m) = &master {
        if !matches!(out.kind, StoreKind::RedisSentinel { .. })
            && !given.contains(&"redis_sentinel_urls")
        {
            d.error(
                m.span(),
                "`redis_sentinel_master` needs `redis_sentinel_urls`",
            );
        }
    }
    out.tls = redis_tls(
        d,
        &t,
        tls_url,
        matches!(out.kind, StoreKind::RedisCluster { .. }),
    );
    if let Some(e) = t.string(d, "on_error") {
        out.on_error = match e.get_ref().as_str() {
            "local" => OnError::Local,
            "allow" => OnError::Allow,
            "deny" => OnError::Deny,
            other => {
                d.error(
                    e.span(),
                    format!("unknown `on_error` `{other}`; use \"local\", \"allow\" or \"deny\""),
                );
                OnError::Local
            }
        };
    }
    if let Some(timeout) = t.duration(d, "timeout_ms", 1..=10_000, Duration::from_millis) {
        out.timeout = timeout;
    }
    if let Some(n) = t.integer(d, "max_local_keys", 1_000..=100_000_000) {
        out.max_local_keys = n;
    }
    t.finish(d);
    out
}

/// Cluster seeds or sentinels: more is a mistake, not a topology.
const MAX_SEEDS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Plain,
    Tls,
}

/// Checks one Redis URL; its scheme when valid. Errors never echo the URL
/// (it may hold a password).
fn redis_url(
    d: &mut Diagnostics,
    u: &Spanned<String>,
    key: &'static str,
    several: bool,
) -> Option<Scheme> {
    let Ok(parsed) = reqwest::Url::parse(u.get_ref()) else {
        d.error(u.span(), format!("`{key}`: not a URL"));
        return None;
    };
    if parsed.fragment().is_some() {
        // The redis crate reads `#insecure` as "skip certificate checks".
        d.error(
            u.span(),
            format!("`{key}`: no `#` fragment (certificate checks cannot be turned off)"),
        );
        return None;
    }
    let scheme = match parsed.scheme() {
        "redis" if parsed.host().is_some() => Some(Scheme::Plain),
        "rediss" if parsed.host().is_some() => Some(Scheme::Tls),
        "unix" | "redis+unix" if !several && !parsed.path().is_empty() => Some(Scheme::Plain),
        _ => None,
    };
    if scheme.is_none() {
        d.error(
            u.span(),
            if several {
                format!("`{key}`: each must be a redis:// or rediss:// URL with a host")
            } else {
                format!("`{key}` must be a redis://, rediss:// or unix:// URL")
            },
        );
    }
    scheme
}

/// The seed URLs (cluster nodes or sentinels) and whether they are TLS;
/// all alike, since the nodes the client learns of are reached the same
/// way and with the same account.
fn seed_urls(
    d: &mut Diagnostics,
    key: &'static str,
    span: std::ops::Range<usize>,
    seeds: Vec<Spanned<String>>,
) -> Option<(Vec<String>, bool)> {
    if seeds.is_empty() || seeds.len() > MAX_SEEDS {
        d.error(span, format!("`{key}` needs 1 to {MAX_SEEDS} URLs"));
        return None;
    }
    let sentinel = key == "redis_sentinel_urls";
    let mut first: Option<(Scheme, String, Option<String>)> = None;
    let mut ok = true;
    for seed in &seeds {
        let Some(scheme) = redis_url(d, seed, key, true) else {
            ok = false;
            continue;
        };
        let Ok(parsed) = reqwest::Url::parse(seed.get_ref()) else {
            ok = false;
            continue;
        };
        if sentinel && scheme == Scheme::Tls {
            // The redis crate's Sentinel client takes no roots of its own
            // on OpenSSL, and would reach the primary in plain text.
            d.error(
                seed.span(),
                "`redis_sentinel_urls`: TLS (rediss://) is not supported with Sentinel",
            );
            ok = false;
            continue;
        }
        if !matches!(parsed.path(), "" | "/" | "/0") {
            d.error(
                seed.span(),
                if sentinel {
                    "`redis_sentinel_urls`: no `/db` (the primary's database goes in `redis_sentinel_master`)"
                } else {
                    "`redis_cluster_urls`: a cluster has database 0 only (no `/db`)"
                },
            );
            ok = false;
            continue;
        }
        let account = (
            scheme,
            parsed.username().to_string(),
            parsed.password().map(str::to_string),
        );
        match &first {
            None => first = Some(account),
            Some(f) if *f == account => {}
            Some(f) if f.0 != account.0 => {
                d.error(
                    seed.span(),
                    format!("`{key}`: all redis:// or all rediss://"),
                );
                ok = false;
            }
            Some(_) => {
                d.error(
                    seed.span(),
                    format!("`{key}`: every URL needs the same user and password"),
                );
                ok = false;
            }
        }
    }
    let tls = first.is_some_and(|f| f.0 == Scheme::Tls);
    ok.then(|| (seeds.into_iter().map(Spanned::into_inner).collect(), tls))
}

/// `redis_sentinel_master`: the monitored name, or a `redis://` URL whose
/// host is that name and whose account and database are the primary's.
fn sentinel_master(d: &mut Diagnostics, m: &Spanned<String>) -> Option<String> {
    let value = m.get_ref();
    if valid_name(value) {
        return Some(value.clone());
    }
    let parsed = reqwest::Url::parse(value).ok().filter(|u| {
        u.scheme() == "redis"
            && u.fragment().is_none()
            && u.query().is_none()
            && u.host_str().is_some_and(valid_name)
            && match u.path() {
                "" | "/" => true,
                p => p[1..].parse::<u16>().is_ok(),
            }
    });
    if parsed.is_none() {
        d.error(
            m.span(),
            "`redis_sentinel_master` must be the monitored name (A-Z a-z 0-9 - _ .) or redis://[user:password@]NAME[/db]",
        );
        return None;
    }
    Some(value.clone())
}

/// `redis_ca_file`, `redis_cert_file` and `redis_key_file`, read and
/// checked now so that a broken file is an error at its key.
fn redis_tls(d: &mut Diagnostics, t: &Table, tls_url: bool, cluster: bool) -> RedisTls {
    let mut out = RedisTls::default();
    let ca = t.string(d, "redis_ca_file");
    let cert = t.string(d, "redis_cert_file");
    let key = t.string(d, "redis_key_file");
    let given = [&ca, &cert, &key];
    if !tls_url {
        for (name, value) in ["redis_ca_file", "redis_cert_file", "redis_key_file"]
            .into_iter()
            .zip(given)
        {
            if let Some(v) = value {
                d.error(v.span(), format!("`{name}` needs a rediss:// URL"));
            }
        }
        return out;
    }
    if cluster {
        // The redis crate's cluster client takes its own roots and client
        // certificates with rustls only; on OpenSSL it trusts the system's.
        for (name, value) in ["redis_ca_file", "redis_cert_file", "redis_key_file"]
            .into_iter()
            .zip(given)
        {
            if let Some(v) = value {
                d.error(
                    v.span(),
                    format!("`{name}` is not supported with `redis_cluster_urls` (cluster nodes are verified against the system's roots)"),
                );
            }
        }
        return out;
    }
    if let Some(ca) = ca {
        out.ca = read_pem_certificates(d, &ca, "redis_ca_file");
    }
    match (cert, key) {
        (None, None) => {}
        (Some(c), None) => d.error(c.span(), "`redis_cert_file` needs `redis_key_file`"),
        (None, Some(k)) => d.error(k.span(), "`redis_key_file` needs `redis_cert_file`"),
        (Some(c), Some(k)) => {
            let chain = read_pem_certificates(d, &c, "redis_cert_file");
            let secret = read_client_key(d, &k);
            if let (Some(chain), Some(secret)) = (chain, secret) {
                if certificate_matches_key(&chain, &secret) {
                    out.client = Some((chain, secret));
                } else {
                    d.error(
                        k.span(),
                        format!(
                            "`{}` is not the key of the certificate in `{}`",
                            k.get_ref(),
                            c.get_ref()
                        ),
                    );
                }
            }
        }
    }
    out
}

/// A PEM file of one or more certificates, as read.
fn read_pem_certificates(
    d: &mut Diagnostics,
    file: &Spanned<String>,
    key: &str,
) -> Option<Vec<u8>> {
    let pem = match std::fs::read(file.get_ref()) {
        Ok(pem) => pem,
        Err(e) => {
            d.error(
                file.span(),
                format!("cannot read `{}`: {e}", file.get_ref()),
            );
            return None;
        }
    };
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Some(pem),
        _ => {
            d.error(
                file.span(),
                format!("`{key}`: `{}` holds no PEM certificate", file.get_ref()),
            );
            None
        }
    }
}

/// The client key: an unencrypted PKCS#8 PEM, which is what the TLS
/// library takes. Its contents are never echoed.
fn read_client_key(d: &mut Diagnostics, file: &Spanned<String>) -> Option<Secret> {
    let text = match std::fs::read_to_string(file.get_ref()) {
        Ok(text) => text,
        Err(e) => {
            d.error(
                file.span(),
                format!("cannot read `{}`: {e}", file.get_ref()),
            );
            return None;
        }
    };
    let pkcs8 = text.contains("-----BEGIN PRIVATE KEY-----")
        && openssl::pkey::PKey::private_key_from_pem(text.as_bytes()).is_ok();
    if !pkcs8 {
        d.error(
            file.span(),
            format!(
                "`redis_key_file`: `{}` is not an unencrypted PKCS#8 PEM private key (`openssl pkcs8 -topk8 -nocrypt` converts one)",
                file.get_ref()
            ),
        );
        return None;
    }
    Some(Secret::new(text))
}

fn certificate_matches_key(chain: &[u8], key: &Secret) -> bool {
    let leaf = openssl::x509::X509::stack_from_pem(chain)
        .ok()
        .and_then(|certs| certs.into_iter().next());
    let key = openssl::pkey::PKey::private_key_from_pem(key.expose().as_bytes()).ok();
    match (leaf.and_then(|l| l.public_key().ok()), key) {
        (Some(public), Some(key)) => public.public_eq(&key),
        _ => false,
    }
}

/// A route's `rate_limit = { per, requests, window_seconds, burst }`.
pub(super) fn route_rate_limit(d: &mut Diagnostics, t: &Table) -> Option<RouteRateLimit> {
    let r = t.table(d, "rate_limit")?;
    let per = r.string(d, "per");
    let requests = r.integer(d, "requests", 1..=MAX_REQUESTS);
    let window = r
        .integer(d, "window_seconds", 1..=ONE_DAY_SECONDS)
        .unwrap_or(1);
    let burst = r.integer(d, "burst", 1..=MAX_REQUESTS);
    if per.is_none() && r.raw("per").is_none() {
        d.error(r.span(), "`rate_limit` needs `per`");
    }
    if requests.is_none() && r.raw("requests").is_none() {
        d.error(r.span(), "`rate_limit` needs `requests`");
    }
    r.finish(d);
    let per = per?;
    let key = match per.get_ref().as_str() {
        "consumer" => RateKey::Consumer,
        "client_ip" => RateKey::ClientIp,
        "route" => RateKey::Route,
        other => match other.strip_prefix("header:").map(str::to_ascii_lowercase) {
            Some(name) if !name.is_empty() => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => RateKey::Header(h),
                Err(_) => {
                    d.error(per.span(), format!("`{other}`: not a valid header name"));
                    return None;
                }
            },
            _ => {
                d.error(
                    per.span(),
                    format!("unknown `per` `{other}`; use \"consumer\", \"client_ip\", \"route\" or \"header:NAME\""),
                );
                return None;
            }
        },
    };
    let requests = requests?;
    Some(RouteRateLimit {
        per: key,
        limit: Limit {
            requests,
            window: Duration::from_secs(window),
            burst: burst.unwrap_or(requests),
        },
    })
}

/// A route's `json_schema` file, compiled with the runtime.
pub(super) fn route_schema(d: &mut Diagnostics, t: &Table) -> Option<Located<PathBuf>> {
    let path = t.string(d, "json_schema")?;
    let schema = Located {
        value: PathBuf::from(path.get_ref()),
        at: d.location(path.span()),
    };
    d.pending(Pending::Schema(schema.clone()));
    Some(schema)
}

/// A route's `cors = { origins, methods, headers, credentials,
/// max_age_seconds, expose_headers }`.
pub(super) fn route_cors(d: &mut Diagnostics, t: &Table) -> Option<Located<CorsSpec>> {
    let c = t.table(d, "cors")?;
    let origins = c.strings(d, "origins");
    if origins.is_none() && c.raw("origins").is_none() {
        d.error(c.span(), "`cors` needs `origins`");
    }
    let methods: Vec<Method> = match c.strings(d, "methods") {
        None => vec![Method::GET, Method::HEAD, Method::POST],
        Some(list) => list
            .iter()
            .filter_map(
                |m| match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        d.error(m.span(), format!("`{}` is not an HTTP method", m.get_ref()));
                        None
                    }
                },
            )
            .collect(),
    };
    let mut names = |key: &'static str| -> Vec<HeaderName> {
        c.strings(d, key)
            .unwrap_or_default()
            .iter()
            .filter_map(|h| header_name(d, &Spanned::new(h.span(), h.get_ref().as_str())))
            .collect()
    };
    let headers = names("headers");
    let expose = names("expose_headers");
    let credentials = c.boolean(d, "credentials").unwrap_or(false);
    let max_age = c
        .integer(d, "max_age_seconds", 0..=ONE_DAY_SECONDS)
        .unwrap_or(600);
    let at = d.location(c.span());
    c.finish(d);
    let cors = Located {
        value: CorsSpec {
            origins: origins?.into_iter().map(Spanned::into_inner).collect(),
            methods,
            headers,
            credentials,
            max_age_seconds: max_age,
            expose_headers: expose,
        },
        at,
    };
    d.pending(Pending::Cors(cors.clone()));
    Some(cors)
}
