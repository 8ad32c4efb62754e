//! Traffic protection settings: `[protection]` (network rules and the
//! failed-auth lockout), `[rate_limit_store]`, and a route's `rate_limit`.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use serde_spanned::Spanned;

use super::authz::cidr_rules;
use super::diag::Diagnostics;
use super::model::{
    CorsSpec, Limit, Lockout, OnError, Pending, Protection, RateKey, RouteRateLimit, StoreConfig,
    StoreKind,
};
use super::reader::Table;
use super::values::header_name;
use crate::core::location::Located;

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
    match kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("local") => {
            if let Some(u) = &url {
                d.error(u.span(), "`redis_url` needs `kind = \"redis\"`");
            }
        }
        Some("redis") => match url {
            Some(u) if valid_redis_url(u.get_ref()) => {
                out.kind = StoreKind::Redis {
                    url: u.into_inner(),
                }
            }
            Some(u) => d.error(
                u.span(),
                "`redis_url` must be a redis:// or unix:// URL (rediss:// is not supported)",
            ),
            None => d.error(t.span(), "`kind = \"redis\"` needs a `redis_url`"),
        },
        Some(other) => {
            if let Some(k) = &kind {
                d.error(
                    k.span(),
                    format!("unknown rate-limit store `{other}`; use \"local\" or \"redis\""),
                );
            }
        }
    }
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

fn valid_redis_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| match u.scheme() {
        "redis" => u.host().is_some(),
        "unix" | "redis+unix" => !u.path().is_empty(),
        _ => false,
    })
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
