//! The admin listener: probes, status, reload and metrics, on its own
//! Pingora service so it never shares a socket with client traffic.

mod cache;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::proxy::client::request_id;
use crate::proxy::reject::{Code, Reject};
use crate::reload::Control;
use crate::upstream::UpstreamPool;

pub(crate) mod client;
mod revocations;
mod ui;

pub(crate) struct AdminApp {
    pub control: Arc<Control>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let dashboard = ui::is_ui(session.req_header().uri.path());
        let mut response = self.answer(session).await;
        if dashboard {
            ui::harden(&mut response);
        }
        response
    }
}

impl AdminApp {
    async fn answer(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let id = request_id(req.headers.get("x-request-id").map(|v| v.as_bytes()));
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let authorization = req.headers.get(http::header::AUTHORIZATION).cloned();
        // A browser says where a request comes from: only the listener's
        // own pages may call it, so a web page elsewhere cannot make the
        // browser reload or read the gateway (CSRF, DNS rebinding).
        let foreign_origin = req
            .headers
            .get_all(http::header::ORIGIN)
            .iter()
            .any(|o| !self.is_own_origin(o.as_bytes()));
        // Without a token only loopback can reach the listener, but a
        // browser can too, through DNS rebinding (a page whose name now
        // resolves to 127.0.0.1): such requests name another host.
        let foreign_host = self.control.runtime.load().admin_token.is_none()
            && !req
                .headers
                .get(http::header::HOST)
                .is_some_and(|h| self.is_own_authority(h.as_bytes()));
        if foreign_origin || foreign_host {
            return refusal(
                &Reject::new(
                    Code::Forbidden,
                    "cross-origin requests to the admin listener are refused",
                ),
                &id,
            );
        }
        if ui::is_ui(&path) {
            let query = req.uri.query().map(str::to_string);
            return self.dashboard(&path, query.as_deref(), &method, authorization, &id);
        }
        match (path.as_str(), &method) {
            ("/healthz", &Method::GET) => return text(StatusCode::OK, "ok\n", &id),
            ("/readyz", &Method::GET) => {
                return if self.control.is_ready() {
                    text(StatusCode::OK, "ready\n", &id)
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", &id)
                };
            }
            _ => {}
        }
        if !self.authorized(authorization.as_ref()) {
            return unauthorized(&id);
        }
        match (path.as_str(), &method) {
            ("/status", &Method::GET) => json(StatusCode::OK, &self.status(), &id),
            ("/metrics", &Method::GET) => {
                let body = self.control.observer.metrics.render();
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    body.into_bytes(),
                    &id,
                )
            }
            ("/reload", &Method::POST) => match self.control.reload().await {
                Ok(done) => json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "generation": done.generation,
                        "config_sha256": done.config_sha256,
                        "needs_upgrade": done.needs_upgrade,
                    }),
                    &id,
                ),
                Err(e) => refusal(
                    &Reject::new(
                        Code::InvalidConfig,
                        "the new configuration is invalid; nothing changed",
                    )
                    .with_details(e.lines()),
                    &id,
                ),
            },
            ("/cache/purge", &Method::POST) => {
                let runtime = self.control.runtime.load_full();
                match cache::purge(session, &runtime).await {
                    Ok(done) => json(StatusCode::OK, &done, &id),
                    Err(reject) => refusal(&reject, &id),
                }
            }
            ("/revocations", &Method::GET) => revocations::list(&self.control, &id),
            ("/revocations", &Method::POST | &Method::DELETE) => {
                revocations::change(&self.control, session, &method, &id).await
            }
            ("/revocations", _) => refusal(
                &Reject::new(Code::MethodNotAllowed, "method not allowed for this path")
                    .with_header("allow", http::HeaderValue::from_static("GET, POST, DELETE")),
                &id,
            ),
            ("/status" | "/metrics" | "/healthz" | "/readyz", _) => refusal(
                &Reject::new(Code::MethodNotAllowed, "method not allowed for this path")
                    .with_header("allow", http::HeaderValue::from_static("GET")),
                &id,
            ),
            ("/reload" | "/cache/purge", _) => refusal(
                &Reject::new(Code::MethodNotAllowed, "method not allowed for this path")
                    .with_header("allow", http::HeaderValue::from_static("POST")),
                &id,
            ),
            _ => refusal(&Reject::new(Code::NoRoute, "no such admin endpoint"), &id),
        }
    }

    /// `/ui/...`: the page's files for anyone who reaches the listener,
    /// its API only with the admin token.
    fn dashboard(
        &self,
        path: &str,
        query: Option<&str>,
        method: &Method,
        authorization: Option<http::HeaderValue>,
        id: &str,
    ) -> Response<Vec<u8>> {
        if method != Method::GET {
            return refusal(
                &Reject::new(Code::MethodNotAllowed, "method not allowed for this path")
                    .with_header("allow", http::HeaderValue::from_static("GET")),
                id,
            );
        }
        if !ui::is_api(path) {
            return ui::static_file(path, id).unwrap_or_else(|| {
                refusal(&Reject::new(Code::NoRoute, "no such admin endpoint"), id)
            });
        }
        if !self.authorized(authorization.as_ref()) {
            return unauthorized(id);
        }
        ui::api(&self.control, path, query, id)
    }

    /// `http://HOST:PORT` of the admin listener itself (and
    /// `http://localhost:PORT` when it listens on loopback).
    fn is_own_origin(&self, origin: &[u8]) -> bool {
        let Some(addr) = self.control.admin_addr() else {
            return false;
        };
        let Some(rest) = origin.strip_prefix(b"http://") else {
            return false;
        };
        let own = addr.to_string();
        rest == own.as_bytes()
            || (addr.ip().is_loopback() && rest == format!("localhost:{}", addr.port()).as_bytes())
    }

    /// A `Host` naming the listener's own address, or `localhost` when it
    /// listens on loopback; with its port or none.
    fn is_own_authority(&self, authority: &[u8]) -> bool {
        let Some(addr) = self.control.admin_addr() else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(authority) else {
            return false;
        };
        let Ok(host) = crate::routing::target::parse_host(text) else {
            return false;
        };
        if host.port.is_some_and(|p| p != addr.port().to_string()) {
            return false;
        }
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        host.name == ip || (addr.ip().is_loopback() && host.name == "localhost")
    }

    /// Without a configured token only loopback can reach the listener (the
    /// configuration refuses anything else), so everything is allowed.
    fn authorized(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let runtime = self.control.runtime.load();
        let Some(token) = runtime.admin_token.as_ref() else {
            return true;
        };
        let Some(value) = authorization.map(|v| v.as_bytes()) else {
            return false;
        };
        match value.split_at_checked(7) {
            Some((scheme, credential)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                token.matches(credential.trim_ascii())
            }
            _ => false,
        }
    }

    fn status(&self) -> serde_json::Value {
        let rt = self.control.runtime.load();
        let upstreams: serde_json::Map<String, serde_json::Value> = rt
            .upstreams
            .iter()
            .map(|pool| (pool.name().to_string(), upstream_targets(pool)))
            .collect();
        serde_json::json!({
            "pid": std::process::id(),
            "generation": rt.generation,
            "config_sha256": rt.config_sha256,
            "loaded_at": humantime::format_rfc3339_millis(rt.loaded_at).to_string(),
            "routes": rt.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            "upstreams": upstreams,
            "dns": dns_status(&rt.upstreams),
            "auth": rt
                .providers
                .iter()
                .map(|p| (p.name().to_string(), p.status()))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "background_tasks": crate::core::tasks::background_tasks(),
            "draining": self.control.draining.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// An upstream's targets: every address, with the host-name target it
/// was resolved from.
fn upstream_targets(pool: &UpstreamPool) -> serde_json::Value {
    pool.health()
        .into_iter()
        .map(|t| {
            let mut entry = serde_json::json!({
                "target": t.addr.to_string(),
                "healthy": t.healthy,
                "ejected": t.ejected,
            });
            if let (Some(name), Some(map)) = (t.name, entry.as_object_mut()) {
                map.insert("name".to_string(), serde_json::Value::from(&*name));
            }
            entry
        })
        .collect()
}

/// The host-name targets of each upstream that has some: the addresses
/// each stands for now, and the last lookup's error.
fn dns_status(pools: &[Arc<UpstreamPool>]) -> serde_json::Value {
    pools
        .iter()
        .filter(|p| p.has_names())
        .map(|pool| {
            let names: serde_json::Map<String, serde_json::Value> = pool
                .names()
                .into_iter()
                .map(|n| {
                    let addrs: Vec<String> = n.addrs.iter().map(ToString::to_string).collect();
                    (
                        n.name.to_string(),
                        serde_json::json!({"addresses": addrs, "error": n.error}),
                    )
                })
                .collect();
            (pool.name().to_string(), serde_json::Value::from(names))
        })
        .collect::<serde_json::Map<String, serde_json::Value>>()
        .into()
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>, id: &str) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(id) {
        headers.insert("x-request-id", v);
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = response.body().len();
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    response
}

fn text(status: StatusCode, body: &str, id: &str) -> Response<Vec<u8>> {
    respond(status, "text/plain", body.as_bytes().to_vec(), id)
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value, id: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        value.to_string().into_bytes(),
        id,
    )
}

/// The refusal of a missing or wrong admin token.
fn unauthorized(id: &str) -> Response<Vec<u8>> {
    let reject = Reject::new(Code::Unauthorized, "a valid admin bearer token is required")
        .with_header(
            "www-authenticate",
            http::HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
    refusal(&reject, id)
}

/// Admin refusals use the same renderer as the proxy's.
pub(super) fn refusal(reject: &Reject, id: &str) -> Response<Vec<u8>> {
    let Ok((header, body)) = reject.render(id) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n", id);
    };
    let mut response = Response::new(body.to_vec());
    *response.status_mut() = header.status;
    for (name, value) in header.headers.iter() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    if let Ok(v) = http::HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
