//! The read-only dashboard at `/ui/`: three static files built into the
//! binary, and the JSON API under `/ui/api/` they read.
//!
//! The page loads without a token; every API call needs the admin token
//! as any admin endpoint does. What the API returns is chosen field by
//! field from the runtime snapshot, so a secret (a token, a key, a key's
//! hash, a client secret) can only appear if someone adds it here.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::{json, refusal};
use crate::config::{AuthKind, CacheScope, ClientAuth, RateKey, RouteAction, WafMode};
use crate::core::ids::ListenerId;
use crate::observe::series::{BUCKETS, BUCKET_SECONDS};
use crate::proxy::reject::{Code, Reject};
use crate::reload::Control;
use crate::runtime::{Route, Runtime};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Lockouts listed at most; the count beside them is the full one.
const MAX_LOCKOUTS: usize = 1000;

/// The headers of every `/ui` response, refusals included: the page may
/// load only its own script and style and talk only to its own origin,
/// and may not be framed.
const HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

pub(super) fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

pub(super) fn is_api(path: &str) -> bool {
    path.starts_with("/ui/api/")
}

/// Adds [`HEADERS`] to a `/ui` response.
pub(super) fn harden(response: &mut Response<Vec<u8>>) {
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// A static file of the page, or the redirect from `/ui` to `/ui/`.
pub(super) fn static_file(path: &str, id: &str) -> Option<Response<Vec<u8>>> {
    let (content_type, body) = match path {
        "/ui" => {
            let mut response = super::text(StatusCode::PERMANENT_REDIRECT, "", id);
            response
                .headers_mut()
                .insert(http::header::LOCATION, HeaderValue::from_static("/ui/"));
            return Some(response);
        }
        "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/ui/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/ui/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    Some(super::respond(
        StatusCode::OK,
        content_type,
        body.as_bytes().to_vec(),
        id,
    ))
}

/// An authorized `GET /ui/api/...`.
pub(super) fn api(
    control: &Control,
    path: &str,
    query: Option<&str>,
    id: &str,
) -> Response<Vec<u8>> {
    let rt = control.runtime.load();
    let value = match path {
        "/ui/api/overview" => overview(control, &rt),
        "/ui/api/listeners" => listeners(&rt),
        "/ui/api/routes" => routes(&rt),
        "/ui/api/upstreams" => upstreams(&rt),
        "/ui/api/certificates" => certificates(&rt),
        "/ui/api/events" => return events(control, query, id),
        "/ui/api/lockouts" => lockouts(&rt),
        "/ui/api/charts" => charts(control, &rt),
        _ => {
            return refusal(
                &Reject::new(Code::NoRoute, "no such dashboard endpoint"),
                id,
            )
        }
    };
    json(StatusCode::OK, &value, id)
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn overview(control: &Control, rt: &Runtime) -> Value {
    let last_reload = control.last_reload.load().as_ref().map(|r| {
        json!({
            "at": rfc3339(r.at),
            "result": if r.generation.is_some() { "ok" } else { "error" },
            "generation": r.generation,
            "errors": r.errors,
        })
    });
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": control.started.elapsed().as_secs(),
        "generation": rt.generation,
        "config_sha256": rt.config_sha256,
        "loaded_at": rfc3339(rt.loaded_at),
        "last_reload": last_reload,
        "draining": control.draining.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn client_auth(mode: Option<ClientAuth>) -> &'static str {
    match mode {
        None => "off",
        Some(ClientAuth::Optional) => "optional",
        Some(ClientAuth::Required) => "required",
    }
}

fn listeners(rt: &Runtime) -> Value {
    let list: Vec<Value> = rt
        .listener_addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let tls = rt.tls.get(i).and_then(Option::as_ref).map(|t| t.summary());
            let http2 = match &tls {
                Some(t) => t.http2,
                None => rt.h2c(ListenerId::new(i)),
            };
            json!({
                "name": rt.listener_names.get(i),
                "address": addr.to_string(),
                "tls": tls.is_some(),
                "mtls": client_auth(tls.as_ref().and_then(|t| t.client_auth)),
                "http2": http2,
            })
        })
        .collect();
    Value::from(list)
}

fn certificates(rt: &Runtime) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut list = Vec::new();
    for (i, tls) in rt.tls.iter().enumerate() {
        let Some(tls) = tls else { continue };
        for cert in tls.summary().certificates {
            let not_after = cert.not_after.and_then(|secs| {
                let secs = u64::try_from(secs).ok()?;
                UNIX_EPOCH.checked_add(Duration::from_secs(secs))
            });
            list.push(json!({
                "listener": rt.listener_names.get(i),
                "subject": cert.subject,
                "names": cert.names,
                "not_after": not_after.map(rfc3339),
                "days_left": cert.not_after.map(|secs| (secs - now).div_euclid(86_400)),
            }));
        }
    }
    Value::from(list)
}

fn routes(rt: &Runtime) -> Value {
    Value::from(rt.routes.iter().map(|r| route(rt, r)).collect::<Vec<_>>())
}

fn route(rt: &Runtime, r: &Route) -> Value {
    let auth: Vec<Value> = r
        .auth
        .iter()
        .filter_map(|id| rt.providers.get(id.index()))
        .map(|p| {
            let kind = match &p.config().kind {
                AuthKind::Jwt(_) => "jwt",
                AuthKind::Introspection(_) => "introspection",
                AuthKind::ApiKey(_) => "api_key",
                AuthKind::Mtls(_) => "mtls",
            };
            json!({"provider": p.name(), "kind": kind})
        })
        .collect();
    let (action, upstreams) = match &r.action {
        RouteAction::Proxy { upstreams, .. } => (
            "proxy",
            upstreams
                .choices
                .iter()
                .filter_map(|(id, weight)| {
                    let pool = rt.upstreams.get(id.index())?;
                    Some(json!({"upstream": pool.name(), "weight": weight}))
                })
                .collect::<Vec<_>>(),
        ),
        RouteAction::Respond { .. } => ("respond", Vec::new()),
    };
    let rate_limit = r.rate_limit.as_ref().map(|l| {
        let per = match &l.per {
            RateKey::Consumer => "consumer".to_string(),
            RateKey::ClientIp => "client_ip".to_string(),
            RateKey::Route => "route".to_string(),
            RateKey::Header(name) => format!("header:{name}"),
        };
        json!({
            "requests": l.limit.requests,
            "window_seconds": l.limit.window.as_secs_f64(),
            "burst": l.limit.burst,
            "per": per,
        })
    });
    let waf = match r.waf.as_ref().map(|w| w.mode) {
        None | Some(WafMode::Off) => "off",
        Some(WafMode::Detect) => "detect",
        Some(WafMode::Block) => "block",
    };
    let cache = r.cache.as_ref().map(|c| {
        json!({
            "ttl_seconds": c.ttl.as_secs(),
            "scope": match c.scope {
                CacheScope::Shared => "shared",
                CacheScope::Consumer => "consumer",
            },
        })
    });
    json!({
        "name": r.name,
        "path": r.path_template.clone(),
        "action": action,
        "upstreams": upstreams,
        "public": r.auth.is_empty(),
        "auth": auth,
        "authz": {
            "require_scopes": r.authz.require_scopes,
            "allow_roles": r.authz.allow_roles,
            "policy": r.authz.policy.is_some(),
            "external": r.authz.external.is_some(),
        },
        "rate_limit": rate_limit,
        "waf": waf,
        "cache": cache,
        "cors": r.cors.is_some(),
        "json_schema": r.json_schema.is_some(),
        "websocket": r.websocket.is_some(),
        "max_body_bytes": r.max_body_bytes,
    })
}

fn upstreams(rt: &Runtime) -> Value {
    let list: Vec<Value> = rt
        .upstreams
        .iter()
        .map(|pool| {
            let targets: Vec<Value> = pool
                .health()
                .into_iter()
                .map(|t| {
                    json!({
                        "target": t.addr.to_string(),
                        "name": t.name.as_deref(),
                        "healthy": t.healthy,
                        "ejected": t.ejected,
                    })
                })
                .collect();
            let names: Vec<Value> = pool
                .names()
                .into_iter()
                .map(|n| {
                    let addrs: Vec<String> = n.addrs.iter().map(ToString::to_string).collect();
                    json!({"name": &*n.name, "addresses": addrs, "error": n.error})
                })
                .collect();
            json!({"name": pool.name(), "targets": targets, "names": names})
        })
        .collect();
    Value::from(list)
}

fn lockouts(rt: &Runtime) -> Value {
    let mut active = rt.rate_limits.active_lockouts(usize::MAX);
    let total = active.len();
    active.sort_by_key(|(ip, left)| (std::cmp::Reverse(*left), *ip));
    active.truncate(MAX_LOCKOUTS);
    let list: Vec<Value> = active
        .into_iter()
        .map(|(ip, left)| json!({"client_ip": ip.to_string(), "seconds_left": left}))
        .collect();
    let settings = rt.lockout.as_ref().map(|l| {
        json!({
            "threshold": l.threshold,
            "window_seconds": l.window.as_secs(),
            "block_seconds": l.block.as_secs(),
        })
    });
    json!({"failed_auth": settings, "total": total, "lockouts": list})
}

fn charts(control: &Control, rt: &Runtime) -> Value {
    let mut start = 0;
    let routes: Vec<Value> = rt
        .routes
        .iter()
        .map(|r| {
            let (series, first) = control.observer.charts.snapshot(&r.name);
            start = first;
            json!({
                "route": r.name,
                "requests": series.requests,
                "client_errors": series.client_errors,
                "server_errors": series.server_errors,
                "p99_ms": series.p99_ms,
            })
        })
        .collect();
    json!({
        "bucket_seconds": BUCKET_SECONDS,
        "buckets": BUCKETS,
        "start": start,
        "routes": routes,
    })
}

/// The events as the security log wrote them (each already a JSON
/// object), newest first; `?event=NAME` keeps one kind.
fn events(control: &Control, query: Option<&str>, id: &str) -> Response<Vec<u8>> {
    let mut filter = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "event" if filter.is_none() => filter = Some(value.into_owned()),
            "event" => {
                return refusal(
                    &Reject::new(Code::BadRequest, "`event` may be given once"),
                    id,
                )
            }
            _ => {
                return refusal(
                    &Reject::new(Code::BadRequest, "unknown query parameter"),
                    id,
                )
            }
        }
    }
    let filter = filter.filter(|f| !f.is_empty());
    let ring = &control.observer.recent;
    let events = ring.newest_first(filter.as_deref(), usize::MAX);
    let mut body =
        String::with_capacity(64 + events.iter().map(|e| e.line.len() + 1).sum::<usize>());
    let _ = write!(
        body,
        "{{\"capacity\":{},\"filter\":{},\"events\":[",
        ring.capacity(),
        Value::from(filter.as_deref())
    );
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event.line);
    }
    body.push_str("]}");
    super::respond(StatusCode::OK, "application/json", body.into_bytes(), id)
}
