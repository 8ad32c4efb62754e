//! `[[routes]]`: what a route matches, who may use it, what it does.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::model::*;
use super::reader::{MapOf, Table};
use super::schema::Items;
use super::values::header_name;
use super::values::name_rule;
use super::values::required_string;
use super::values::valid_name;
use crate::core::ids::{ListenerId, ProviderId, UpstreamId};
use crate::core::matching::{MethodSet, PathMatch};

/// The most Pingora buffers for replay after a body was read whole.
pub(super) const MAX_SCHEMA_BODY_BYTES: u64 = 64 * 1024;

pub(super) fn routes(
    d: &mut Diagnostics,
    root: &Table,
    upstreams: &[Upstream],
    auth: &[AuthProvider],
    limits: &Limits,
    listeners: &[Listener],
) -> Vec<Route> {
    let has_waf = root.raw("waf").is_some();
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for t in root.tables(d, "routes") {
        if let Some(r) = route(d, &t, upstreams, auth, limits, listeners, has_waf) {
            if !names.insert(r.name.clone()) {
                d.error(t.span(), format!("duplicate route name `{}`", r.name));
            }
            out.push(r);
        }
        t.finish(d);
    }
    out
}

pub(super) fn route(
    d: &mut Diagnostics,
    t: &Table,
    upstreams: &[Upstream],
    providers: &[AuthProvider],
    limits: &Limits,
    listeners: &[Listener],
    has_waf: bool,
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
    let split = route_split(d, t, upstreams);
    let match_headers = match_headers(d, t);
    let deprecation = deprecation(d, t);
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
    let websocket = t.boolean(d, "websocket").unwrap_or(false);
    let idle = t.duration(
        d,
        "websocket_idle_timeout_seconds",
        1..=86_400,
        Duration::from_secs,
    );
    if idle.is_some() && !websocket {
        d.error(
            t.span(),
            "`websocket_idle_timeout_seconds` only applies with `websocket = true`",
        );
    }
    let websocket = websocket.then(|| idle.unwrap_or(Duration::from_secs(300)));
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

    let upstream = match (upstream, split) {
        (Some(u), None) => {
            let Some(index) = upstreams.iter().position(|x| x.name == *u.get_ref()) else {
                d.error(u.span(), format!("unknown upstream `{}`", u.get_ref()));
                return None;
            };
            Some(UpstreamSplit::single(UpstreamId::new(index)))
        }
        (None, Some(split)) => Some(split?),
        (Some(u), Some(_)) => {
            d.error(
                u.span(),
                "a route has either `upstream` or `upstreams`, not both",
            );
            return None;
        }
        (None, None) => None,
    };
    let cache = super::cache::route_cache(d, t, public, respond.is_none());
    let waf = super::waf::route_waf(d, t, has_waf);
    let action = match (upstream, respond) {
        (Some(upstreams), None) => {
            let strip_prefix = strip_prefix.unwrap_or(false);
            if strip_prefix && !matches!(path, Some(PathMatch::Prefix(_))) {
                d.error(t.span(), "`strip_prefix` needs a `path_prefix`");
            }
            RouteAction::Proxy {
                upstreams,
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
        (Some(_), Some(_)) => {
            d.error(
                t.span(),
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
        match_headers,
        deprecation,
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
        websocket,
        cache,
        waf,
    })
}

/// `listeners = ["https"]`: the route matches only requests received on
/// those listeners.
pub(super) fn route_listeners(
    d: &mut Diagnostics,
    t: &Table,
    listeners: &[Listener],
) -> Vec<ListenerId> {
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
    resolve_names(d, names, "listener", "listener", |name| {
        listeners
            .iter()
            .position(|l| l.name == name)
            .map(ListenerId::new)
    })
}

/// The ids of `names`, in order: an unknown or repeated name is an error
/// at its place (`unknown {unknown} `x``, `{kind} `x` is listed twice`).
fn resolve_names<Id: PartialEq>(
    d: &mut Diagnostics,
    names: Vec<Spanned<String>>,
    kind: &str,
    unknown: &str,
    find: impl Fn(&str) -> Option<Id>,
) -> Vec<Id> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match find(name.get_ref()) {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => d.error(
                name.span(),
                format!("{kind} `{}` is listed twice", name.get_ref()),
            ),
            None => d.error(
                name.span(),
                format!("unknown {unknown} `{}`", name.get_ref()),
            ),
        }
    }
    out
}

/// A route names its providers or says `public = true` — exactly one of
/// the two, so that no route is open by accident.
pub(super) fn route_auth(
    d: &mut Diagnostics,
    t: &Table,
    providers: &[AuthProvider],
    public: bool,
    name: Option<&Spanned<String>>,
) -> Vec<ProviderId> {
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
    resolve_names(d, list, "provider", "auth provider", |name| {
        providers
            .iter()
            .position(|x| x.name == name)
            .map(ProviderId::new)
    })
}

pub(super) fn route_host(d: &mut Diagnostics, h: &Spanned<String>) -> Option<String> {
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

pub(super) fn route_path(d: &mut Diagnostics, t: &Table) -> Option<PathMatch> {
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

pub(super) fn route_methods(d: &mut Diagnostics, t: &Table) -> MethodSet {
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

pub(super) fn respond(d: &mut Diagnostics, r: &Table) -> Option<RouteAction> {
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

pub(super) fn header_ops(d: &mut Diagnostics, t: &Table, key: &'static str) -> HeaderOps {
    let mut out = HeaderOps::default();
    let Some(ops) = t.table(d, key) else {
        return out;
    };
    if let Some(set) = ops.table(d, "set") {
        for (name, value) in set.entries(MapOf::Strings) {
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

/// The most upstreams one route may split its traffic over.
const MAX_SPLIT: usize = 64;

/// `upstreams = [{ name, weight }, ...]` and `split_key`: `None` when the
/// route has no `upstreams`, `Some(None)` when it has bad ones.
fn route_split(
    d: &mut Diagnostics,
    t: &Table,
    upstreams: &[Upstream],
) -> Option<Option<UpstreamSplit>> {
    let key = t.string(d, "split_key");
    let Some(items) = t.array(d, "upstreams", Items::Tables) else {
        if let Some(k) = key {
            d.error(k.span(), "`split_key` only applies with `upstreams`");
        }
        return None;
    };
    let key = key.and_then(|k| super::upstreams::hash_key(d, &k));
    let span = t.raw("upstreams").map_or_else(|| t.span(), |v| v.span());
    if items.is_empty() || items.len() > MAX_SPLIT {
        d.error(
            span,
            format!("`upstreams` must name 1 to {MAX_SPLIT} upstreams"),
        );
        return Some(None);
    }
    let mut choices = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let Some(u) = t.item_table(
            d,
            "upstreams",
            item,
            format!("{}.upstreams[{i}]", t.section()),
        ) else {
            ok = false;
            continue;
        };
        let name = required_string(d, &u, "name");
        let weight = u.integer(d, "weight", 1..=1_000_000).unwrap_or(1) as u32;
        u.finish(d);
        let Some(name) = name else {
            ok = false;
            continue;
        };
        match upstreams.iter().position(|x| x.name == *name.get_ref()) {
            Some(index) if choices.iter().any(|(id, _)| *id == UpstreamId::new(index)) => {
                d.error(
                    name.span(),
                    format!("upstream `{}` is listed twice", name.get_ref()),
                );
                ok = false;
            }
            Some(index) => choices.push((UpstreamId::new(index), weight)),
            None => {
                d.error(
                    name.span(),
                    format!("unknown upstream `{}`", name.get_ref()),
                );
                ok = false;
            }
        }
    }
    Some(ok.then_some(UpstreamSplit { choices, key }))
}

/// `match_headers = { "x-api-version" = "2" }`: names and exact values.
fn match_headers(d: &mut Diagnostics, t: &Table) -> Vec<(HeaderName, HeaderValue)> {
    let Some(m) = t.table(d, "match_headers") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut empty = true;
    for (name, value) in m.entries(MapOf::Strings) {
        empty = false;
        let Ok(n) = HeaderName::from_bytes(name.get_ref().to_ascii_lowercase().as_bytes()) else {
            d.error(
                name.span(),
                format!("`{}` is not a valid header name", name.get_ref()),
            );
            continue;
        };
        match value.get_ref().as_str().map(HeaderValue::from_str) {
            Some(Ok(v)) => out.push((n, v)),
            _ => d.error(
                value.span(),
                "a header value must be a string of visible characters",
            ),
        }
    }
    if empty {
        d.error(m.span(), "`match_headers` must name at least one header");
    }
    out
}

/// `deprecation = { since, sunset, link }`, made into its response headers
/// once: `Deprecation: @<unix seconds>` (RFC 9745), `Sunset: <HTTP-date>`
/// (RFC 8594), `Link: <uri>; rel="deprecation"`.
fn deprecation(d: &mut Diagnostics, t: &Table) -> Vec<(HeaderName, HeaderValue)> {
    let Some(dep) = t.table(d, "deprecation") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let instant = |d: &mut Diagnostics, key: &'static str| {
        let value = dep.string(d, key)?;
        match chrono::DateTime::parse_from_rfc3339(value.get_ref()) {
            Ok(at) => Some((at.with_timezone(&chrono::Utc), value)),
            Err(e) => {
                d.error(
                    value.span(),
                    format!("`{key}` must be an RFC 3339 date-time (2026-12-01T00:00:00Z): {e}"),
                );
                None
            }
        }
    };
    let since = instant(d, "since");
    let sunset = instant(d, "sunset");
    match &since {
        Some((at, _)) => {
            if let Ok(v) = HeaderValue::from_str(&format!("@{}", at.timestamp())) {
                out.push((HeaderName::from_static("deprecation"), v));
            }
        }
        None if dep.raw("since").is_none() => {
            d.error(dep.span(), "`deprecation` needs `since`");
        }
        None => {}
    }
    if let Some((at, value)) = &sunset {
        if since.as_ref().is_some_and(|(s, _)| at < s) {
            d.error(value.span(), "`sunset` must not be before `since`");
        }
        let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = HeaderValue::from_str(&date) {
            out.push((HeaderName::from_static("sunset"), v));
        }
    }
    if let Some(link) = dep.string(d, "link") {
        let uri = link.get_ref().parse::<http::Uri>().ok();
        let absolute = uri.is_some_and(|u| u.scheme().is_some() && u.authority().is_some());
        match HeaderValue::from_str(&format!("<{}>; rel=\"deprecation\"", link.get_ref())) {
            Ok(v) if absolute && !link.get_ref().contains(['<', '>']) => {
                out.push((http::header::LINK, v));
            }
            _ => d.error(link.span(), "`link` must be an absolute URI (https://...)"),
        }
    }
    dep.finish(d);
    out
}
