//! `[cache]` and a route's `cache` (CONTRACT §10).

use std::time::Duration;

use serde_spanned::Spanned;
use toml::de::DeValue;

use super::diag::Diagnostics;
use super::model::{CacheLimits, CacheScope, RouteCache};
use super::reader::Table;
use super::schema::Items;
use super::values::header_name;

const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
const DEFAULT_MAX_OBJECT_BYTES: u64 = 1024 * 1024;
const DEFAULT_TTL_SECONDS: u64 = 300;
/// Kong's default `response_code`: what is safe to store without the
/// origin saying more.
const DEFAULT_STATUSES: [u16; 3] = [200, 301, 404];
/// Statuses that are never a whole, storable answer: partial content and
/// a validator's reply would be served as if they were the resource.
const NEVER_STORED: [u16; 2] = [206, 304];

pub(super) fn limits(d: &mut Diagnostics, root: &Table) -> CacheLimits {
    let mut out = CacheLimits {
        max_bytes: DEFAULT_MAX_BYTES as usize,
        max_object_bytes: DEFAULT_MAX_OBJECT_BYTES as usize,
    };
    let Some(t) = root.table(d, "cache") else {
        return out;
    };
    if let Some(n) = t.integer(d, "max_bytes", 4096..=(1 << 40)) {
        out.max_bytes = n as usize;
    }
    if let Some(n) = t.integer(d, "max_object_bytes", 1..=(1 << 32)) {
        out.max_object_bytes = n as usize;
        if out.max_object_bytes > out.max_bytes {
            let span = t
                .raw("max_object_bytes")
                .map_or_else(|| t.span(), |v| v.span());
            d.error(
                span,
                format!(
                    "`max_object_bytes` ({n}) is above `max_bytes` ({}): no object could be stored",
                    out.max_bytes
                ),
            );
        }
    }
    t.finish(d);
    out
}

/// A route's `cache = { ttl_seconds, statuses, vary, scope }`. `public`
/// and `proxies` say what the route is, for the rules that need it.
pub(super) fn route_cache(
    d: &mut Diagnostics,
    t: &Table,
    public: bool,
    proxies: bool,
) -> Option<RouteCache> {
    let c = t.table(d, "cache")?;
    let ttl = c
        .duration(d, "ttl_seconds", 1..=31_536_000, Duration::from_secs)
        .unwrap_or(Duration::from_secs(DEFAULT_TTL_SECONDS));
    let statuses = statuses(d, &c);
    let mut vary = Vec::new();
    for name in c.strings(d, "vary").unwrap_or_default() {
        let Some(h) = header_name(d, &Spanned::new(name.span(), name.get_ref().as_str())) else {
            continue;
        };
        if vary.contains(&h) {
            d.error(name.span(), format!("`{h}` is listed twice in `vary`"));
        } else {
            vary.push(h);
        }
    }
    let scope = c.keyword(
        d,
        "scope",
        CacheScope::Shared,
        &[
            ("shared", CacheScope::Shared),
            ("consumer", CacheScope::Consumer),
        ],
    );
    if scope == Some(CacheScope::Consumer) && public {
        let span = c.raw("scope").map_or_else(|| c.span(), |v| v.span());
        d.error(
            span,
            "`scope = \"consumer\"` stores per caller and needs a route with `auth`; a public route has no caller",
        );
    }
    if !proxies {
        d.error(
            c.span(),
            "`cache` only applies to routes with an `upstream` or `upstreams`",
        );
    }
    c.finish(d);
    Some(RouteCache {
        ttl,
        statuses,
        vary,
        scope: scope?,
    })
}

fn statuses(d: &mut Diagnostics, c: &Table) -> Vec<u16> {
    let Some(items) = c.array(d, "statuses", Items::Integers) else {
        return DEFAULT_STATUSES.to_vec();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let status = match item.get_ref() {
            DeValue::Integer(i) => u16::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match status {
            Some(s) if (200..=599).contains(&s) && !NEVER_STORED.contains(&s) => {
                if out.contains(&s) {
                    d.error(item.span(), format!("status {s} is listed twice"));
                } else {
                    out.push(s);
                }
            }
            _ => d.error(
                item.span(),
                "`statuses` must be HTTP statuses from 200 to 599 (206 and 304 are never stored)",
            ),
        }
    }
    if out.is_empty() && items.is_empty() {
        let span = c.raw("statuses").map_or_else(|| c.span(), |v| v.span());
        d.error(span, "`statuses` must name at least one status");
    }
    out
}
