//! Route authorization (`require_scopes`, `allow_roles`, `policy`,
//! `authz_url`) and client network rules (`allow_cidrs`, `deny_cidrs`,
//! per route and in `[protection]`).

use std::time::Duration;

use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::model::{ExternalAuthzConfig, Pending, PolicySource, RouteAuthzConfig};
use super::reader::Table;
use super::values::{header_name, parse_cidr};
use crate::core::location::Located;
use crate::core::net::CidrRules;

const DEFAULT_AUTHZ_TIMEOUT_MS: u64 = 5000;
const ONE_DAY_SECONDS: u64 = 86_400;

/// `allow_cidrs` / `deny_cidrs` of a route or of `[protection]`.
pub(super) fn cidr_rules(d: &mut Diagnostics, t: &Table) -> CidrRules {
    let mut list = |key: &'static str| {
        let mut out = Vec::new();
        for cidr in t.strings(d, key).unwrap_or_default() {
            match parse_cidr(cidr.get_ref()) {
                Some(net) => out.push(net.trunc()),
                None => d.error(
                    cidr.span(),
                    format!("`{}` is not an IP address or CIDR", cidr.get_ref()),
                ),
            }
        }
        out
    };
    let allow = list("allow_cidrs");
    let deny = list("deny_cidrs");
    CidrRules { allow, deny }
}

/// The authorization rules of a route. Scope and role rules need an
/// identity, so a public route cannot have them.
pub(super) fn route_authz(d: &mut Diagnostics, t: &Table, public: bool) -> RouteAuthzConfig {
    let mut list = |key: &'static str| {
        let items = t.strings(d, key).unwrap_or_default();
        if public && !items.is_empty() {
            let span = t.raw(key).map_or_else(|| t.span(), |v| v.span());
            d.error(
                span,
                format!("`{key}` needs an authenticated caller; a public route cannot have it"),
            );
        }
        for item in &items {
            if item.get_ref().is_empty() {
                d.error(item.span(), format!("`{key}` entries must not be empty"));
            }
        }
        items.into_iter().map(Spanned::into_inner).collect()
    };
    let require_scopes = list("require_scopes");
    let allow_roles = list("allow_roles");
    let policy = t.string(d, "policy").and_then(|p| policy(d, &p));
    let external = external(d, t);
    RouteAuthzConfig {
        require_scopes,
        allow_roles,
        policy,
        external,
    }
}

/// A CEL policy, kept with its place for the compile step.
fn policy(d: &mut Diagnostics, p: &Spanned<String>) -> Option<PolicySource> {
    let policy = PolicySource {
        one_line: one_line(d.source(p.span())),
        source: Located {
            value: p.get_ref().clone(),
            at: d.location(p.span()),
        },
    };
    d.pending(Pending::Policy(policy.clone()));
    Some(policy)
}

/// A single-quoted or plain double-quoted one-line string, where source
/// columns and expression columns line up.
fn one_line(source: &str) -> bool {
    let literal = source.starts_with('\'') && !source.starts_with("'''");
    let basic = source.starts_with('"') && !source.starts_with("\"\"\"") && !source.contains('\\');
    literal || basic
}

fn external(d: &mut Diagnostics, t: &Table) -> Option<ExternalAuthzConfig> {
    let url = t.string(d, "authz_url");
    let cache = t.integer(d, "authz_cache_seconds", 0..=ONE_DAY_SECONDS);
    let timeout = t.integer(d, "authz_timeout_ms", 1..=60_000);
    let headers = t.strings(d, "authz_response_headers");
    let Some(url) = url else {
        if cache.is_some() || timeout.is_some() || headers.is_some() {
            d.error(
                t.span(),
                "`authz_cache_seconds`, `authz_timeout_ms` and `authz_response_headers` need an `authz_url`",
            );
        }
        return None;
    };
    let valid = reqwest::Url::parse(url.get_ref())
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !valid {
        d.error(url.span(), "`authz_url` must be an http:// or https:// URL");
        return None;
    }
    let response_headers = headers
        .unwrap_or_default()
        .iter()
        .filter_map(|h| header_name(d, &Spanned::new(h.span(), h.get_ref().as_str())))
        .collect();
    Some(ExternalAuthzConfig {
        url: url.into_inner(),
        cache: Duration::from_secs(cache.unwrap_or(0)),
        timeout: Duration::from_millis(timeout.unwrap_or(DEFAULT_AUTHZ_TIMEOUT_MS)),
        response_headers,
    })
}
