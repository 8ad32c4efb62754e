//! The request stages that run before a byte goes upstream, in their one
//! order. Each stage has one job and either passes or returns a [`Reject`];
//! cheap checks come first so hostile requests cost as little as possible.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_REQUEST_METHOD, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, EXPECT, ORIGIN,
    RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method};
use pingora::proxy::Session;
use sha2::{Digest, Sha256};

use super::ctx::Ctx;
use super::reject::{Code, Reject};
use super::request::{Canonical, Request};
use crate::auth::{AuthError, AuthMethod, Authenticator, Credentials, Identity};
use crate::authz::external::{Decision, Question};
use crate::authz::policy::RequestView;
use crate::authz::Rule;
use crate::config::RateKey;
use crate::protect::cidr::CidrRules;
use crate::protect::cors::{Cors, Preflight};
use crate::protect::schema::is_json_content_type;
use crate::routing::table::Lookup;
use crate::runtime::RouteLimit;
use crate::tls::ClientCert;

/// Runs every stage in order. The canonical request is built first and
/// kept in `ctx.canon`; on success `ctx.route` is set, and `ctx.identity`
/// on authenticated routes — or `ctx.preflight` when the gateway answers
/// the request itself (a CORS preflight, `OPTIONS *`).
pub async fn run(session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    network(&runtime.cidrs, ctx)?;
    let rules = runtime.canonical_rules();
    let mut canon = Canonical::build(session.req_header_mut(), ctx.conn, ctx.client_ip, &rules)?;
    if canon.wants_close() {
        // Pingora read only the first Connection line.
        session.set_keepalive(None);
    }
    let headers = &session.req_header().headers;
    let routed = route(&canon, headers, ctx);
    if let Some(route) = ctx.route() {
        canon.remove_query_params(&route.credential_params);
    }
    let result = match routed {
        // `OPTIONS *`: nothing to check.
        Ok(()) if ctx.preflight && ctx.route.is_none() => Ok(()),
        Ok(()) => {
            let client_cert = session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .and_then(|s| s.extension.get::<ClientCert>());
            let req = Request {
                canon: &canon,
                headers,
                client_cert,
            };
            checks(&req, ctx).await
        }
        Err(reject) => Err(reject),
    };
    ctx.canon = canon;
    result?;
    if ctx.preflight {
        return Ok(());
    }
    body(session, ctx).await
}

/// Everything decided from the request head, after routing.
async fn checks(req: &Request<'_>, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let limits = runtime.limits;
    if let Some(r) = ctx.route.and_then(|i| runtime.routes.get(i)) {
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
    lockout(ctx).await?;
    authenticate(req, ctx).await?;
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
async fn rate_limit(req: &Request<'_>, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
        return Ok(());
    };
    let Some(rl) = &route.rate_limit else {
        return Ok(());
    };
    let key = bucket_key(rl, req, ctx.identity.as_deref());
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

/// The bucket a request counts against, as the route's `per` says. A
/// header's value is hashed, so a key is small whatever the client sends.
fn bucket_key(rl: &RouteLimit, req: &Request<'_>, identity: Option<&Identity>) -> Vec<u8> {
    let ip = || match req.canon.client_ip() {
        Some(IpAddr::V4(v4)) => rl.key(b"ip:", &v4.octets()),
        Some(IpAddr::V6(v6)) => rl.key(b"ip:", &v6.octets()),
        None => rl.key(b"ip:", b""),
    };
    match &rl.per {
        RateKey::Route => rl.key(b"", b""),
        RateKey::ClientIp => ip(),
        RateKey::Consumer => match identity {
            Some(id) => rl.key(
                b"c:",
                id.consumer.as_ref().unwrap_or(&id.subject).as_bytes(),
            ),
            None => ip(),
        },
        RateKey::Header(name) => match req.headers.get(name) {
            Some(v) => rl.key(b"h:", &Sha256::digest(v.as_bytes())),
            None => rl.key(b"h:", b""),
        },
    }
}

/// A route's CORS: a preflight is allowed (answered with 204 later) or
/// refused with 403; other requests get the headers for their response.
fn cors(c: &Cors, req: &Request<'_>, ctx: &mut Ctx) -> Result<(), Reject> {
    if !ctx.preflight {
        ctx.cors_headers = c.response_headers(req.headers.get(ORIGIN));
        return Ok(());
    }
    match c.preflight(req.headers) {
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
    if !matches!(
        *ctx.canon.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) {
        return Ok(());
    }
    let headers = &session.req_header().headers;
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let (content_type, second) = (types.next(), types.next());
    // One Content-Type, and a body as sent: what is validated here is
    // what the upstream reads.
    let identity = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .all(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if second.is_some() || !identity || !is_json_content_type(content_type) {
        return Err(Reject::new(
            Code::UnsupportedMediaType,
            "the request body must be one application/json body without content coding",
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
async fn authorize(req: &Request<'_>, ctx: &mut Ctx) -> Result<(), Reject> {
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
            method: req.canon.method().as_str(),
            path: req.canon.route_path(),
            host: req.canon.host(),
            headers: req.headers,
            query: req.canon.query(),
            client_ip: ctx.client_ip,
        };
        match policy.allows(identity, &view) {
            Ok(true) => {}
            Ok(false) => return Err(deny(ctx, Rule::Policy)),
            Err(_) => return Err(deny(ctx, Rule::PolicyError)),
        }
    }
    if let Some(external) = &rules.external {
        let question = Question {
            method: req.canon.method().as_str(),
            uri: req.canon.target(),
            host: req.canon.authority().and_then(|a| a.to_str().ok()),
            client_ip: ctx.client_ip,
            identity,
            request_id: ctx.request_id.as_str(),
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
async fn authenticate(req: &Request<'_>, ctx: &mut Ctx) -> Result<(), Reject> {
    let runtime = ctx.runtime.clone();
    let Some(route) = ctx.route.and_then(|i| runtime.routes.get(i)) else {
        return Ok(());
    };
    if route.auth.is_empty() {
        return Ok(());
    }
    let request = Credentials {
        headers: req.headers,
        query: req.canon.credential_query(),
        client_cert: req.client_cert,
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

/// 413 before reading anything when the declared length is over the limit.
/// Chunked bodies are counted while they stream (`request_body_filter`).
fn declared_body(req: &Request<'_>, max: u64) -> Result<(), Reject> {
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
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

/// 404 / 405 from the route table, on the path without `;` parameters;
/// such a path is 400 unless the route it reaches allows them. A CORS
/// preflight is routed by the method it asks about, when that leads to a
/// route with `cors`; `OPTIONS *` is answered by the gateway.
fn route(canon: &Canonical, headers: &http::HeaderMap, ctx: &mut Ctx) -> Result<(), Reject> {
    if canon.is_asterisk() {
        ctx.preflight = true;
        return Ok(());
    }
    let runtime = ctx.runtime.clone();
    let (host, path, listener) = (canon.host(), canon.route_path(), canon.conn().listener);
    let allows_params = |id: usize| {
        !canon.has_path_params() || runtime.routes.get(id).is_some_and(|r| r.allow_path_params)
    };
    let params_refused = || {
        Reject::new(
            Code::BadRequest,
            "path parameters (`;`) are not allowed on this route",
        )
    };
    if Cors::is_preflight(canon.method(), headers) {
        let asked = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        if let Some(method) = asked {
            if let Lookup::Found(id) = runtime.table.lookup_on(host, path, &method, listener) {
                if runtime.routes.get(id).is_some_and(|r| r.cors.is_some()) {
                    if !allows_params(id) {
                        return Err(params_refused());
                    }
                    ctx.route = Some(id);
                    ctx.preflight = true;
                    return Ok(());
                }
            }
        }
    }
    match runtime
        .table
        .lookup_on(host, path, canon.method(), listener)
    {
        Lookup::Found(id) if allows_params(id) => {
            ctx.route = Some(id);
            Ok(())
        }
        Lookup::Found(_) => Err(params_refused()),
        _ if canon.has_path_params() => Err(params_refused()),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::RouteRateLimit;
    use crate::protect::ratelimit::Limit;

    #[test]
    fn a_header_bucket_key_is_small_whatever_the_value() {
        let rl = RouteLimit::new(
            "r",
            RouteRateLimit {
                per: RateKey::Header(http::HeaderName::from_static("x-tenant")),
                limit: Limit {
                    requests: 1,
                    window: Duration::from_secs(1),
                    burst: 1,
                },
            },
        );
        let canon = Canonical::default();
        let key_for = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-tenant", HeaderValue::from_str(value).unwrap());
            let req = Request {
                canon: &canon,
                headers: &headers,
                client_cert: None,
            };
            bucket_key(&rl, &req, None)
        };
        let big = "v".repeat(12 * 1024);
        let (a, b) = (key_for(&big), key_for("acme"));
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
        assert_eq!(key_for("acme"), b);
        assert_eq!(a.len(), rl.key(b"h:", &[0u8; 32]).len());
    }
}
