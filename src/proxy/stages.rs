//! The request stages that run before a byte goes upstream, in their one
//! order. Each stage has one job and either passes or returns a [`Reject`];
//! cheap checks come first so hostile requests cost as little as possible.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_REQUEST_METHOD, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, ORIGIN,
    RETRY_AFTER, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::ctx::Ctx;
use super::reject::{Code, Reject};
use crate::auth::{AuthError, AuthMethod, Authenticator, Credentials};
use crate::authz::external::{Decision, Question};
use crate::authz::policy::RequestView;
use crate::authz::Rule;
use crate::config::RateKey;
use crate::protect::cidr::CidrRules;
use crate::protect::cors::{Cors, Preflight};
use crate::protect::schema::is_json_content_type;
use crate::routing::normalize::normalize_path;
use crate::routing::table::Lookup;
use crate::runtime::RouteLimit;
use crate::tls::ClientCert;

/// Runs every stage in order; on success `ctx.route` is set, and
/// `ctx.identity` on authenticated routes — or `ctx.preflight` when the
/// request is a CORS preflight the gateway answers itself.
pub async fn run(session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
    checks(session, ctx).await?;
    if ctx.preflight {
        return Ok(());
    }
    body(session, ctx).await
}

/// Everything decided from the request head.
async fn checks(session: &Session, ctx: &mut Ctx) -> Result<(), Reject> {
    let req = session.req_header();
    let limits = ctx.runtime.limits;
    let runtime = ctx.runtime.clone();
    network(&runtime.cidrs, ctx)?;
    uri_length(req, limits.max_uri_bytes)?;
    header_size(req, limits.max_header_bytes)?;
    framing(session)?;
    declared_body(req, limits.max_body_bytes)?;
    normalize(req, ctx)?;
    route(req, ctx)?;
    if let Some(r) = runtime.routes.get(ctx.route.unwrap_or(usize::MAX)) {
        network(&r.cidrs, ctx)?;
        if let Some(c) = &r.cors {
            cors(c, req, ctx)?;
            if ctx.preflight {
                return Ok(());
            }
        }
    }
    let route_limit = ctx
        .route()
        .map_or(limits.max_body_bytes, |r| r.max_body_bytes);
    declared_body(req, route_limit)?;
    let client_cert = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<ClientCert>());
    lockout(ctx).await?;
    authenticate(req, client_cert, ctx).await?;
    authorize(req, ctx).await?;
    rate_limit(req, ctx).await
}

/// 429 `temporarily_blocked` for a client locked out after too many failed
/// credentials — before authentication, so a blocked client costs nothing.
/// Only routes that authenticate are guarded: that is what is attacked.
async fn lockout(ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let (Some(_), Some(route), Some(ip)) = (&runtime.lockout, ctx.route(), ctx.client_ip) else {
        return Ok(());
    };
    if route.auth.is_empty() {
        return Ok(());
    }
    match runtime.rate_limits.is_blocked(&ip_key(ip)).await {
        Some(retry_after) => Err(Reject::new(
            Code::TemporarilyBlocked,
            "too many failed authentication attempts; try again later",
        )
        .with_header(RETRY_AFTER, HeaderValue::from(retry_after))),
        None => Ok(()),
    }
}

/// Counts a presented-but-invalid credential towards the client's lockout.
async fn count_failure(ctx: &mut Ctx) {
    let runtime = ctx.runtime.clone();
    let (Some(lockout), Some(ip)) = (&runtime.lockout, ctx.client_ip) else {
        return;
    };
    ctx.locked_out = runtime
        .rate_limits
        .record_failure(&ip_key(ip), lockout)
        .await;
}

fn ip_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// 429 `rate_limited` when the route's bucket for this caller is empty. The
/// decision is kept for the `RateLimit-*` headers of the response.
async fn rate_limit(req: &RequestHeader, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
        return Ok(());
    };
    let Some(rl) = &route.rate_limit else {
        return Ok(());
    };
    let key = bucket_key(rl, req, ctx);
    let decision = runtime.rate_limits.check(&key, &rl.limit).await;
    ctx.rate_limit = Some(decision);
    if decision.allowed {
        return Ok(());
    }
    Err(
        Reject::new(Code::RateLimited, "rate limit exceeded; retry later")
            .with_header(RETRY_AFTER, HeaderValue::from(decision.retry_after_seconds)),
    )
}

/// The bucket a request counts against, as the route's `per` says.
fn bucket_key(rl: &RouteLimit, req: &RequestHeader, ctx: &Ctx) -> Vec<u8> {
    let ip = || match ctx.client_ip {
        Some(IpAddr::V4(v4)) => rl.key(b"ip:", &v4.octets()),
        Some(IpAddr::V6(v6)) => rl.key(b"ip:", &v6.octets()),
        None => rl.key(b"ip:", b""),
    };
    match &rl.per {
        RateKey::Route => rl.key(b"", b""),
        RateKey::ClientIp => ip(),
        RateKey::Consumer => match &ctx.identity {
            Some(id) => rl.key(
                b"c:",
                id.consumer.as_ref().unwrap_or(&id.subject).as_bytes(),
            ),
            None => ip(),
        },
        RateKey::Header(name) => rl.key(
            b"h:",
            req.headers.get(name).map_or(&b""[..], |v| v.as_bytes()),
        ),
    }
}

/// A route's CORS: a preflight is allowed (answered with 204 later) or
/// refused with 403; other requests get the headers for their response.
fn cors(c: &Cors, req: &RequestHeader, ctx: &mut Ctx) -> Result<(), Reject> {
    if !ctx.preflight {
        ctx.cors_headers = c.response_headers(req.headers.get(ORIGIN));
        return Ok(());
    }
    match c.preflight(&req.headers) {
        Preflight::Allowed(headers) => {
            ctx.cors_headers = headers;
            Ok(())
        }
        Preflight::Denied => {
            ctx.preflight = false;
            Err(Reject::new(
                Code::Forbidden,
                "this cross-origin request is not allowed",
            ))
        }
    }
}

/// A `json_schema` route's POST/PUT/PATCH body, read whole (bounded by the
/// route's limit) and validated before anything is sent upstream; Pingora
/// then replays the buffered body to the upstream unchanged.
async fn body(session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
        return Ok(());
    };
    let Some(schema) = &route.json_schema else {
        return Ok(());
    };
    let req = session.req_header();
    if !matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    if !is_json_content_type(req.headers.get(CONTENT_TYPE)) {
        return Err(Reject::new(
            Code::UnsupportedMediaType,
            "the request body must be application/json",
        ));
    }
    let body = read_body(session, route.max_body_bytes).await?;
    schema
        .validate(&body)
        .map_err(|e| Reject::new(Code::InvalidBody, e.to_string()))
}

async fn read_body(session: &mut Session, limit: u64) -> Result<Vec<u8>, Reject> {
    let unreadable = || Reject::new(Code::BadRequest, "the request body could not be read");
    let expects_continue = session
        .req_header()
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // Pingora does not answer it when the body is read here; the
        // upstream must not wait for a second one.
        session
            .write_continue_response()
            .await
            .map_err(|_| unreadable())?;
        session.req_header_mut().remove_header(&EXPECT);
    }
    session.enable_retry_buffering();
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| unreadable())?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            session.set_keepalive(None);
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// 403 when the client's network is denied (or not allowed). Runs before
/// anything costly, authentication included.
fn network(rules: &CidrRules, ctx: &mut Ctx) -> Result<(), Reject> {
    if rules.permits(ctx.client_ip) {
        return Ok(());
    }
    Err(deny(ctx, Rule::Cidr))
}

/// Records which rule refused the request and makes the 403.
fn deny(ctx: &mut Ctx, rule: Rule) -> Reject {
    ctx.authz_denied = Some(rule);
    Reject::new(Code::Forbidden, "access to this resource is denied")
}

/// 403 unless the route's rules allow the caller, in order: scopes, roles,
/// the CEL policy, the external service (503 when it cannot answer).
async fn authorize(req: &RequestHeader, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
        return Ok(());
    };
    let rules = &route.authz;
    if rules.is_empty() {
        return Ok(());
    }
    let identity = ctx.identity.clone();
    let identity = identity.as_deref();
    if rules.missing_scope(identity).is_some() {
        ctx.authz_denied = Some(Rule::Scope);
        let scopes = rules.require_scopes.join(" ");
        let reject = Reject::new(
            Code::InsufficientScope,
            "the credential lacks a scope this resource requires",
        );
        let bearer = ctx.provider.as_ref().is_some_and(|p| p.is_bearer());
        let challenge =
            format!(r#"Bearer realm="portcullis", error="insufficient_scope", scope="{scopes}""#);
        return Err(match HeaderValue::from_str(&challenge) {
            Ok(value) if bearer => reject.with_header(WWW_AUTHENTICATE, value),
            _ => reject,
        });
    }
    if !rules.role_allowed(identity) {
        return Err(deny(ctx, Rule::Role));
    }
    if let Some(policy) = &rules.policy {
        let view = RequestView {
            method: req.method.as_str(),
            path: &ctx.path,
            host: request_host(req),
            headers: &req.headers,
            query: req.uri.query(),
            client_ip: ctx.client_ip,
        };
        match policy.allows(identity, &view) {
            Ok(true) => {}
            Ok(false) => return Err(deny(ctx, Rule::Policy)),
            Err(_) => return Err(deny(ctx, Rule::PolicyError)),
        }
    }
    if let Some(external) = &rules.external {
        let uri = match req.uri.query() {
            Some(q) => format!("{}?{q}", ctx.path),
            None => ctx.path.clone(),
        };
        let question = Question {
            method: req.method.as_str(),
            uri: &uri,
            host: request_host(req),
            client_ip: ctx.client_ip,
            identity,
            request_id: &ctx.request_id,
        };
        match external.decide(&question).await {
            Ok(decision) => match &*decision {
                Decision::Allow(headers) => ctx.authz_headers.clone_from(headers),
                Decision::Deny => return Err(deny(ctx, Rule::External)),
            },
            Err(_) => {
                return Err(Reject::new(
                    Code::AuthUnavailable,
                    "the authorization service is unavailable; try again later",
                ))
            }
        }
    }
    Ok(())
}

/// 401 / 503 unless one of the route's providers accepts the request; they
/// are tried in order, and when all refuse the most specific refusal wins.
async fn authenticate(
    req: &RequestHeader,
    client_cert: Option<&ClientCert>,
    ctx: &mut Ctx,
) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
        return Ok(());
    };
    if route.auth.is_empty() {
        return Ok(());
    }
    let request = Credentials {
        headers: &req.headers,
        query: req.uri.query(),
        client_cert,
    };
    let mut refusal: Option<(&Arc<dyn Authenticator>, AuthError)> = None;
    for provider in route.auth.iter().filter_map(|i| runtime.providers.get(*i)) {
        match provider.authenticate(&request).await {
            Ok(identity) => {
                ctx.identity = Some(identity);
                ctx.provider = Some(provider.clone());
                return Ok(());
            }
            Err(e) => {
                refusal = Some(match refusal {
                    Some((p, worst)) if worst.clone().most_specific(e.clone()) == worst => {
                        (p, worst)
                    }
                    _ => (provider, e),
                });
            }
        }
    }
    let Some((provider, error)) = refusal else {
        return Err(Reject::new(
            Code::AuthUnavailable,
            "no authentication provider is available",
        ));
    };
    let bearer = route
        .auth
        .iter()
        .filter_map(|i| runtime.providers.get(*i))
        .any(|p| p.is_bearer());
    ctx.auth_failure = Some((provider.name().into(), error.reason()));
    if matches!(error, AuthError::Invalid { .. }) {
        count_failure(ctx).await;
    }
    Err(auth_reject(&error, bearer, provider.method()))
}

/// The contract's 401/503 for a refused credential, with RFC 6750
/// `WWW-Authenticate` when the route has a bearer provider.
fn auth_reject(error: &AuthError, bearer: bool, method: AuthMethod) -> Reject {
    let (reject, challenge) = match error {
        AuthError::Missing | AuthError::Invalid { .. } if method == AuthMethod::Mtls => {
            return Reject::new(
                Code::InvalidClientCertificate,
                "a verified, allowed client certificate is required",
            );
        }
        AuthError::Missing => (
            Reject::new(Code::MissingCredentials, "credentials are required"),
            r#"Bearer realm="portcullis""#.to_string(),
        ),
        AuthError::Invalid { description, .. } if method == AuthMethod::ApiKey => {
            return Reject::new(Code::InvalidApiKey, *description);
        }
        AuthError::Invalid { description, .. } => (
            Reject::new(Code::InvalidToken, *description),
            format!(
                r#"Bearer realm="portcullis", error="invalid_token", error_description="{description}""#
            ),
        ),
        AuthError::Unavailable { .. } => {
            return Reject::new(
                Code::AuthUnavailable,
                "the identity service is unavailable; try again later",
            );
        }
    };
    match HeaderValue::from_str(&challenge) {
        Ok(value) if bearer => reject.with_header(WWW_AUTHENTICATE, value),
        _ => reject,
    }
}

/// 414 when the request target (path and query) is over the limit.
fn uri_length(req: &RequestHeader, max: usize) -> Result<(), Reject> {
    if req.raw_path().len() > max {
        return Err(Reject::new(Code::UriTooLong, "request URI is too long"));
    }
    Ok(())
}

/// 431 when the header section is over the limit (names, values and their
/// separators, as on the wire).
fn header_size(req: &RequestHeader, max: usize) -> Result<(), Reject> {
    let mut total = 0usize;
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
        if total > max {
            return Err(Reject::new(
                Code::HeadersTooLarge,
                "request headers are too large",
            ));
        }
    }
    Ok(())
}

/// 400 for requests that carry both `Content-Length` and
/// `Transfer-Encoding`: the classic request-smuggling signal. Pingora drops
/// the `Content-Length` before we see the parsed header, so the raw header
/// bytes are consulted — only when `Transfer-Encoding` is present.
fn framing(session: &Session) -> Result<(), Reject> {
    let req = session.req_header();
    if !req.headers.contains_key(TRANSFER_ENCODING) {
        return Ok(());
    }
    let both = req.headers.contains_key(CONTENT_LENGTH)
        || session
            .as_downstream()
            .as_http1()
            .is_some_and(|h1| raw_has_header(&h1.get_headers_raw_bytes(), b"content-length"));
    if both {
        return Err(Reject::new(
            Code::BadRequest,
            "both Content-Length and Transfer-Encoding are present",
        ));
    }
    Ok(())
}

fn raw_has_header(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.iter().position(|b| *b == b':') {
            Some(colon) => line[..colon].trim_ascii().eq_ignore_ascii_case(name),
            None => false,
        }
    })
}

/// 413 before reading anything when the declared length is over the limit.
/// Chunked bodies are counted while they stream (`request_body_filter`).
fn declared_body(req: &RequestHeader, max: u64) -> Result<(), Reject> {
    let declared = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    Ok(())
}

pub fn too_large() -> Reject {
    Reject::new(Code::PayloadTooLarge, "request body is too large")
}

/// 400 for paths that cannot be normalized safely; the normalized path is
/// what is routed on and what the upstream receives.
fn normalize(req: &RequestHeader, ctx: &mut Ctx) -> Result<(), Reject> {
    let raw = req.uri.path();
    match normalize_path(raw) {
        Ok(path) => {
            ctx.path = path.into_owned();
            Ok(())
        }
        Err(e) => {
            ctx.path = String::new();
            Err(Reject::new(Code::BadRequest, e.to_string()))
        }
    }
}

/// 404 / 405 from the route table. A CORS preflight is routed by the
/// method it asks about, when that leads to a route with `cors`.
fn route(req: &RequestHeader, ctx: &mut Ctx) -> Result<(), Reject> {
    let host = request_host(req);
    if Cors::is_preflight(&req.method, &req.headers) {
        let asked = req
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        if let Some(method) = asked {
            if let Lookup::Found(id) = ctx.runtime.table.lookup(host, &ctx.path, &method) {
                if ctx.runtime.routes.get(id).is_some_and(|r| r.cors.is_some()) {
                    ctx.route = Some(id);
                    ctx.preflight = true;
                    return Ok(());
                }
            }
        }
    }
    match ctx.runtime.table.lookup(host, &ctx.path, &req.method) {
        Lookup::Found(id) => {
            ctx.route = Some(id);
            Ok(())
        }
        Lookup::MethodNotAllowed(allowed) => {
            let allow = HeaderValue::from_str(&allowed.allow_header())
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            Err(
                Reject::new(Code::MethodNotAllowed, "method not allowed for this path")
                    .with_header(ALLOW, allow),
            )
        }
        Lookup::NotFound => Err(Reject::new(Code::NoRoute, "no route matches the request")),
    }
}

/// The host the client asked for: the `Host` header, or the authority of an
/// absolute-form request target (and HTTP/2's `:authority`).
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_raw_header_case_insensitively() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nCONTENT-LENGTH : 5\r\n\r\n";
        assert!(raw_has_header(raw, b"content-length"));
        let raw =
            b"POST /content-length: HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!raw_has_header(raw, b"content-length"));
    }
}
