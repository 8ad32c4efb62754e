//! The gateway's Pingora `ProxyHttp` implementation. The order of request
//! stages lives here and in [`stages`], nowhere else.

pub mod client;
pub mod ctx;
pub mod reject;
pub mod request;
pub mod respond;
pub mod stages;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::HOST;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::{Balance, HashKey, RouteAction};
use crate::observe::access::AccessRecord;
use crate::observe::metrics::{method_label, status_label, UNMATCHED};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;
use crate::routing::table::PathMatch;
use crate::runtime::Runtime;
use ctx::Ctx;
use reject::{Code, Reject};
use request::Conn;
use respond::X_REQUEST_ID;

const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

pub struct Gateway {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub observer: Arc<Observer>,
    /// Set when the process is handing over or shutting down.
    pub draining: Arc<AtomicBool>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.runtime.load_full())
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if self.draining.load(Ordering::Relaxed) {
            // Answer, then close: the client's next connection lands on the
            // process that took the listening sockets over.
            session.set_keepalive(None);
        }
        let req = session.req_header();
        ctx.request_id = client::RequestId::of(req.headers.get(X_REQUEST_ID));
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| request::canonical_ip(a.ip()));
        ctx.conn = Conn {
            peer,
            listener: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .and_then(|a| ctx.runtime.listener_of(*a)),
            https: session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .is_some(),
        };
        ctx.client_ip = request::client_ip(&req.headers, peer, &ctx.runtime.trusted_proxies);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Err(reject) = stages::run(session, ctx).await {
            respond::send_reject(session, ctx, reject).await?;
            return Ok(true);
        }
        if ctx.preflight {
            respond::send_preflight(session, ctx).await?;
            return Ok(true);
        }
        let runtime = ctx.runtime.clone();
        let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
            respond::send_reject(
                session,
                ctx,
                Reject::new(Code::NoRoute, "no route matches the request"),
            )
            .await?;
            return Ok(true);
        };
        match &route.action {
            RouteAction::Respond {
                status,
                body,
                content_type,
            } => {
                respond::send_direct(session, ctx, *status, body.clone(), content_type).await?;
                Ok(true)
            }
            RouteAction::Proxy { upstream, .. } => {
                ctx.retries_left = runtime
                    .upstreams
                    .get(*upstream)
                    .map_or(0, |u| u.config.retries);
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let runtime = ctx.runtime.clone();
        let pool = ctx
            .route()
            .and_then(|r| match r.action {
                RouteAction::Proxy { upstream, .. } => runtime.upstreams.get(upstream),
                RouteAction::Respond { .. } => None,
            })
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route has no upstream"))?;
        let key = match pool.config.balance {
            Balance::ConsistentHash => hash_key(&pool.config.hash_key, session, ctx),
            Balance::RoundRobin | Balance::Random => Vec::new(),
        };
        let Some(addr) = pool.select(&key, &ctx.tried) else {
            let reject = if ctx.tried.is_empty() {
                Reject::new(Code::NoHealthyUpstream, "no healthy upstream target")
            } else {
                Reject::new(Code::BadGateway, "upstream connection failed")
            };
            ctx.reject = Some(reject);
            return Err(Error::explain(
                ErrorType::HTTPStatus(ctx.reject.as_ref().map_or(502, Reject::status)),
                "no upstream target",
            ));
        };
        ctx.tried.push(addr);
        let cfg = &pool.config;
        let mut peer = HttpPeer::new(addr, cfg.tls, cfg.sni.clone());
        peer.options.connection_timeout = Some(cfg.connect_timeout);
        peer.options.total_connection_timeout = Some(cfg.connect_timeout);
        peer.options.read_timeout = Some(cfg.read_timeout);
        peer.options.write_timeout = Some(cfg.read_timeout);
        ctx.upstream_started.get_or_insert_with(Instant::now);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing has been sent yet, so another target may be tried.
        if ctx.retries_left > 0 {
            ctx.retries_left -= 1;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route() else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        let canon = &ctx.canon;
        // The upstream gets the canonical origin-form target, never the
        // client's; most targets arrive canonical, and then nothing is
        // rebuilt.
        let stripped = match (&route.action, &route.path) {
            (
                RouteAction::Proxy {
                    strip_prefix: true, ..
                },
                PathMatch::Prefix(prefix),
            ) => Some(strip(canon.path(), prefix)),
            _ => None,
        };
        let target: std::borrow::Cow<'_, str> = match (stripped, canon.query()) {
            (None, _) => canon.target().into(),
            (Some(path), None) => path.into(),
            (Some(path), Some(q)) => format!("{path}?{q}").into(),
        };
        if upstream_request.raw_path() != target.as_bytes() {
            let uri = http::Uri::try_from(target.as_ref()).map_err(|_| {
                Error::explain(ErrorType::InternalError, "cannot build upstream URI")
            })?;
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
            // must get one, and a virtual-hosting origin must not fall
            // back to a default site the gateway never routed on. Like
            // nginx, the target's own address.
            None => {
                if let Some(target) = ctx.target() {
                    upstream_request.insert_header(HOST, target.to_string())?;
                }
            }
        }

        upstream_request.insert_header(X_REQUEST_ID, ctx.request_id.header())?;
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
        let proto = if canon.conn().https {
            http::HeaderValue::from_static("https")
        } else {
            http::HeaderValue::from_static("http")
        };
        upstream_request.insert_header(X_FORWARDED_PROTO, proto)?;
        identity_headers(upstream_request, ctx)?;
        if let Some(external) = &route.authz.external {
            // Only the authorizer may set these; a client's copies go.
            for name in &external.config.response_headers {
                upstream_request.remove_header(name);
            }
            for (name, value) in &ctx.authz_headers {
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

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let limit = ctx
                .route()
                .map_or(ctx.runtime.limits.max_body_bytes, |r| r.max_body_bytes);
            if ctx.body_bytes > limit {
                *body = None;
                ctx.reject = Some(stages::too_large());
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over limit");
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(started) = ctx.upstream_started {
            ctx.upstream_elapsed = Some(started.elapsed());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        respond::decorate(response, ctx)?;
        if let Some(route) = ctx.route() {
            for name in &route.response_headers.remove {
                response.remove_header(name);
            }
            for (name, value) in &route.response_headers.set {
                response.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let reject = ctx.reject.take().or_else(|| reject_for(e));
        let Some(reject) = reject else {
            // The client went away or broke the connection: nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = reject.status();
        if session.response_written().is_none() {
            session.set_keepalive(None);
            if respond::send_reject(session, ctx, reject).await.is_err() {
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
        } else {
            ctx.reject = Some(reject);
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// The summary Pingora puts in its error log: method, path and host,
    /// never the query string, which may carry credentials.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        format!(
            "{} {}, Host: {}",
            session.req_header().method,
            ctx.canon.path(),
            ctx.canon.host().unwrap_or("-")
        )
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        // Refusals of our own are logged as security events, not errors;
        // a client that went away is not the gateway's error either.
        ctx.reject.is_some() || e.esource() == &ErrorSource::Downstream
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let route = ctx.route().map(|r| r.name.as_str());
        let subject = ctx.identity.as_ref().map(|i| i.subject.as_str());
        if let Some((provider, reason)) = &ctx.auth_failure {
            self.observer
                .metrics
                .auth_failures
                .with_label_values(&[&**provider, reason])
                .inc();
            if *reason != "missing" {
                let mut event =
                    SecurityEvent::new("auth_failure", *reason).field("provider", &**provider);
                event.request_id = Some(ctx.request_id.as_str());
                event.client_ip = ctx.client_ip;
                event.route = route;
                self.observer.security_event(&event);
            }
        }
        if let Some(rule) = ctx.authz_denied {
            self.observer
                .metrics
                .authz_denied
                .with_label_values(&[route.unwrap_or(UNMATCHED)])
                .inc();
            let mut event = SecurityEvent::new("authz_denied", rule.as_str());
            event.request_id = Some(ctx.request_id.as_str());
            event.client_ip = ctx.client_ip;
            event.route = route;
            event.subject = subject;
            self.observer.security_event(&event);
        }
        if ctx.locked_out {
            let mut event = SecurityEvent::new("brute_force_lockout", "failed_auth_threshold");
            event.request_id = Some(ctx.request_id.as_str());
            event.client_ip = ctx.client_ip;
            event.route = route;
            self.observer.security_event(&event);
        }
        if ctx
            .reject
            .as_ref()
            .is_some_and(|r| r.code == Code::RateLimited)
        {
            self.observer
                .metrics
                .rate_limited
                .with_label_values(&[route.unwrap_or(UNMATCHED)])
                .inc();
            let mut event = SecurityEvent::new("rate_limited", "rate_limit");
            event.request_id = Some(ctx.request_id.as_str());
            event.client_ip = ctx.client_ip;
            event.route = route;
            event.subject = subject;
            self.observer.security_event(&event);
        }
        if let Some(reject) = &ctx.reject {
            if reject.code.is_security_relevant() {
                let mut event = SecurityEvent::new("request_rejected", reject.message.as_ref());
                event.request_id = Some(ctx.request_id.as_str());
                event.client_ip = ctx.client_ip;
                event.route = route;
                self.observer.security_event(&event);
            }
        }
        let upstream = ctx.route().and_then(|r| match r.action {
            RouteAction::Proxy { upstream, .. } => ctx.runtime.upstreams.get(upstream),
            RouteAction::Respond { .. } => None,
        });
        let elapsed = ctx.started.elapsed();
        let metrics = &self.observer.metrics;
        let route_label = route.unwrap_or(UNMATCHED);
        metrics
            .requests
            .with_label_values(&[route_label, method_label(&req.method), status_label(status)])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route_label])
            .observe(elapsed.as_secs_f64());
        if let (Some(pool), Some(up)) = (upstream, ctx.upstream_elapsed) {
            metrics
                .upstream_duration
                .with_label_values(&[pool.name()])
                .observe(up.as_secs_f64());
        }
        let Some(access) = &self.observer.access else {
            return;
        };
        let record = AccessRecord {
            ts: crate::observe::now_rfc3339(),
            request_id: ctx.request_id.as_str(),
            client_ip: ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            method: req.method.as_str(),
            // A request refused before the canonical step is logged with
            // the path as received (never its query).
            path: if ctx.canon.target().is_empty() {
                req.uri.path()
            } else {
                ctx.canon.path()
            },
            route,
            upstream: upstream.map(|u| u.name()),
            target: ctx.target().map(|t| t.to_string()),
            status,
            bytes_sent: session.body_bytes_sent(),
            duration_ms: ms(elapsed),
            upstream_ms: ctx.upstream_elapsed.map(ms),
            auth_method: ctx.identity.as_ref().map(|i| i.method.as_str()),
            subject,
        };
        access.write_line(record.to_line());
    }
}

/// The identity of the caller, for the upstream. A client's copies of
/// these headers were removed by the canonical step.
fn identity_headers(upstream_request: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    let Some(identity) = &ctx.identity else {
        return Ok(());
    };
    if let Some(provider) = &ctx.provider {
        if !provider.forward_credentials() {
            upstream_request.remove_header(provider.credential_header());
        }
    }
    for (name, value) in identity.header_values() {
        upstream_request.insert_header(name, value)?;
    }
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
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

/// The key a consistent-hash upstream hashes on. `consumer` is the
/// identity's consumer (else its subject); requests without an identity
/// hash on the client IP.
fn hash_key(key: &HashKey, session: &Session, ctx: &Ctx) -> Vec<u8> {
    let client_ip = || match ctx.client_ip {
        Some(std::net::IpAddr::V4(ip)) => ip.octets().to_vec(),
        Some(std::net::IpAddr::V6(ip)) => ip.octets().to_vec(),
        None => Vec::new(),
    };
    match key {
        HashKey::Header(name) => session
            .req_header()
            .headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::Consumer => match &ctx.identity {
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

/// The refusal for a proxy error that no stage recorded; `None` when the
/// client itself is gone.
fn reject_for(e: &Error) -> Option<Reject> {
    use ErrorType::*;
    let etype = e.etype();
    if let HTTPStatus(code) = etype {
        return Some(match code {
            400 => Reject::new(Code::BadRequest, "malformed request"),
            413 => stages::too_large(),
            504 => Reject::new(Code::UpstreamTimeout, "upstream timed out"),
            503 => Reject::new(Code::NoHealthyUpstream, "no healthy upstream target"),
            _ => Reject::new(Code::BadGateway, "upstream error"),
        });
    }
    match e.esource() {
        ErrorSource::Upstream => Some(match etype {
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                Reject::new(Code::UpstreamTimeout, "upstream timed out")
            }
            _ => Reject::new(Code::BadGateway, "upstream error"),
        }),
        ErrorSource::Downstream => match etype {
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout => None,
            _ => Some(Reject::new(Code::BadRequest, "malformed request")),
        },
        ErrorSource::Internal | ErrorSource::Unset => match etype {
            ConnectTimedout => Some(Reject::new(Code::UpstreamTimeout, "upstream timed out")),
            ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure => {
                Some(Reject::new(Code::BadGateway, "upstream connection failed"))
            }
            _ => Some(Reject::new(Code::Internal, "internal error")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::strip;

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
