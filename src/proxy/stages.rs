//! The stages of the request pipeline, one job each; their order lives in
//! [`super::pipeline`]. A stage passes or returns the [`Reject`] the client
//! gets, and records what the logs need as outcome events.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{ACCESS_CONTROL_REQUEST_METHOD, CONTENT_ENCODING, CONTENT_TYPE, EXPECT};
use http::{HeaderName, HeaderValue, Method};
use pingora::proxy::Session;
use sha2::{Digest, Sha256};

use super::ctx::{Caller, Decoration};
use super::reject::{Code, Reject};
use super::request::{Canonical, Request};
use crate::auth::{AuthError, Authenticator, Credentials, Identity};
use crate::authz::external::Question;
use crate::authz::policy::RequestView;
use crate::authz::{Denial, Rule};
use crate::config::RateKey;
use crate::config::{WafMode, WafOversize};
use crate::core::ids::RouteId;
use crate::core::net::CidrRules;
use crate::observe::outcome::{Event, WafAction, WafReason};
use crate::protect::cors::{Cors, Preflight};
use crate::protect::schema::is_json_content_type;
use crate::protect::waf::Inspected;
use crate::routing::table::Lookup;
use crate::runtime::{Route, RouteLimit, Runtime};
use crate::upstream::pool::UpstreamPool;

/// 403 when the client's network is denied (or not allowed). Runs before
/// anything costly, authentication included.
pub(crate) fn network(
    rules: &CidrRules,
    client_ip: Option<IpAddr>,
    events: &mut Vec<Event>,
) -> Result<(), Reject> {
    if rules.permits(client_ip) {
        return Ok(());
    }
    Err(deny(events, Rule::Cidr))
}

/// Records which rule refused the request and makes the 403.
fn deny(events: &mut Vec<Event>, rule: Rule) -> Reject {
    events.push(Event::AuthzDenied {
        rule: rule.as_str(),
    });
    Reject::denied()
}

/// The route a request reached, and whether it is a CORS preflight the
/// gateway answers.
pub(crate) struct Routed {
    pub id: RouteId,
    pub preflight: bool,
}

pub(crate) fn no_route() -> Reject {
    Reject::new(Code::NoRoute, "no route matches the request")
}

/// 404 / 405 from the route table, on the path without `;` parameters;
/// such a path is 400 unless the route it reaches allows them. A CORS
/// preflight is routed by the method it asks about, when that leads to a
/// route with `cors`.
pub(crate) fn route(
    rt: &Runtime,
    canon: &Canonical,
    headers: &http::HeaderMap,
) -> Result<Routed, Reject> {
    let (host, path, listener) = (canon.host(), canon.route_path(), canon.conn().listener);
    let allows_params =
        |id: RouteId| !canon.has_path_params() || rt.route(id).is_some_and(|r| r.allow_path_params);
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
            if let Lookup::Found(id) = rt.table.lookup_on(host, path, &method, headers, listener) {
                if rt.route(id).is_some_and(|r| r.cors.is_some()) {
                    if !allows_params(id) {
                        return Err(params_refused());
                    }
                    return Ok(Routed {
                        id,
                        preflight: true,
                    });
                }
            }
        }
    }
    match rt
        .table
        .lookup_on(host, path, canon.method(), headers, listener)
    {
        Lookup::Found(id) if allows_params(id) => Ok(Routed {
            id,
            preflight: false,
        }),
        Lookup::Found(_) => Err(params_refused()),
        _ if canon.has_path_params() => Err(params_refused()),
        Lookup::MethodNotAllowed(allowed) => {
            let allow = HeaderValue::from_str(&allowed.allow_header())
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            Err(
                Reject::new(Code::MethodNotAllowed, "method not allowed for this path")
                    .with_header("allow", allow),
            )
        }
        Lookup::NotFound => Err(no_route()),
    }
}

/// A CORS preflight: the `Access-Control-*` headers of the 204, or 403.
pub(crate) fn preflight(
    cors: &Cors,
    req: &Request<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Reject> {
    match cors.preflight(req.headers) {
        Preflight::Allowed(headers) => Ok(headers),
        Preflight::Denied => Err(Reject::new(
            Code::Forbidden,
            "this cross-origin request is not allowed",
        )),
    }
}

/// 400 for `Upgrade: websocket` on a route that opens no WebSocket tunnel:
/// nothing would check what flows through it.
pub(crate) fn websocket(route: &Route, canon: &Canonical) -> Result<(), Reject> {
    if canon.wants_websocket() && route.websocket.is_none() {
        return Err(Reject::new(
            Code::BadRequest,
            "WebSocket upgrades are not enabled on this route",
        ));
    }
    Ok(())
}

/// A gRPC call to an HTTP/1 upstream would lose its trailers, which carry
/// the call's status: UNAVAILABLE before anything is sent.
pub(crate) fn grpc_upstream(grpc: bool, pool: Option<&UpstreamPool>) -> Result<(), Reject> {
    if grpc && pool.is_some_and(|u| !u.config.protocol.carries_trailers()) {
        return Err(Reject::new(
            Code::BadGateway,
            "gRPC needs an HTTP/2 upstream (protocol = \"h2c\" or \"http2\")",
        ));
    }
    Ok(())
}

/// An upgraded WebSocket waits as long as its route allows between
/// frames, not Pingora's per-read default.
pub(crate) fn websocket_timeouts(session: &mut Session, route: &Route, canon: &Canonical) {
    if let Some(idle) = route.websocket.filter(|_| canon.wants_websocket()) {
        session.set_read_timeout(Some(idle));
        session.set_write_timeout(Some(idle));
    }
}

/// 413 before reading anything when the declared length is over the limit.
/// Chunked bodies are counted while they stream (`request_body_filter`).
pub(crate) fn declared_body(req: &Request<'_>, max: u64) -> Result<(), Reject> {
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

pub(crate) fn too_large() -> Reject {
    Reject::new(Code::PayloadTooLarge, "request body is too large")
}

/// 429 `temporarily_blocked` for a client locked out after too many failed
/// credentials — before authentication, so a blocked client costs nothing.
/// Only routes that authenticate are guarded: that is what is attacked.
pub(crate) async fn lockout(rt: &Runtime, client_ip: Option<IpAddr>) -> Result<(), Reject> {
    let (Some(_), Some(ip)) = (&rt.lockout, client_ip) else {
        return Ok(());
    };
    match rt.rate_limits.is_blocked(&ip_key(ip)).await {
        Some(retry_after) => Err(Reject::new(
            Code::TemporarilyBlocked,
            "too many failed authentication attempts; try again later",
        )
        .with_header("retry-after", HeaderValue::from(retry_after))),
        None => Ok(()),
    }
}

/// Counts a presented-but-invalid credential towards the client's lockout.
async fn count_failure(rt: &Runtime, client_ip: Option<IpAddr>, events: &mut Vec<Event>) {
    let (Some(lockout), Some(ip)) = (&rt.lockout, client_ip) else {
        return;
    };
    if rt.rate_limits.record_failure(&ip_key(ip), lockout).await {
        events.push(Event::LockedOut);
    }
}

fn ip_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// 401 / 503 unless one of the route's providers accepts the request.
pub(crate) async fn authenticate(
    rt: &Runtime,
    route: &Route,
    req: &Request<'_>,
    client_ip: Option<IpAddr>,
    events: &mut Vec<Event>,
) -> Result<(Arc<Identity>, Arc<dyn Authenticator>), Reject> {
    let credentials = Credentials {
        headers: req.headers,
        query: req.canon.credential_query(),
        client_cert: req.client_cert,
        once: Some(&*rt.replay),
        target: dpop_target(req),
    };
    let providers = || route.auth.iter().filter_map(|id| rt.provider(*id));
    let (provider, error, subject) =
        match crate::auth::first_accepting(providers(), &credentials).await {
            Ok((identity, provider)) if !is_revoked(rt, &identity) => {
                return Ok((identity, provider.clone()))
            }
            Ok((identity, provider)) => (
                provider,
                AuthError::invalid("revoked", "The access token was revoked"),
                Some(identity.subject.as_str().into()),
            ),
            Err(Some((provider, error))) => (provider, error, None),
            Err(None) => {
                return Err(Reject::new(
                    Code::AuthUnavailable,
                    "no authentication provider is available",
                ))
            }
        };
    events.push(Event::AuthFailure {
        provider: provider.name().into(),
        reason: error.reason(),
        subject,
    });
    if matches!(
        error,
        AuthError::Invalid { .. } | AuthError::DpopProof { .. }
    ) {
        count_failure(rt, client_ip, events).await;
    }
    let bearer = providers().any(|p| p.is_bearer());
    Err(Reject::credential(
        &error,
        bearer,
        provider.method(),
        provider.dpop_algs(),
    ))
}

/// The request as a DPoP proof names it: the scheme is the client's
/// (the listener's, or a trusted proxy's `x-forwarded-proto`).
fn dpop_target<'a>(req: &Request<'a>) -> Option<crate::auth::RequestTarget<'a>> {
    let canon = req.canon;
    let host = canon.host()?;
    let authority = canon.authority()?.to_str().ok()?;
    let port = match authority.get(host.len()..) {
        Some("") => None,
        Some(rest) => Some(rest.strip_prefix(':')?.parse().ok()?),
        None => return None,
    };
    Some(crate::auth::RequestTarget {
        method: canon.method(),
        https: canon.https(),
        host,
        port,
        path: canon.path(),
    })
}

/// Whether the token behind `identity` is revoked: checked on every use,
/// after the providers' caches, so a revocation is in force at once.
fn is_revoked(rt: &Runtime, identity: &Identity) -> bool {
    if !matches!(
        identity.method,
        crate::auth::AuthMethod::Jwt | crate::auth::AuthMethod::Introspection
    ) {
        return false;
    }
    let claims = &identity.claims;
    let jti = claims.get("jti").and_then(|v| v.as_str());
    let iat = claims.get("iat").and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    });
    rt.revocations.is_revoked(
        jti,
        &identity.subject,
        iat,
        crate::auth::jwt_auth::now_unix(),
    )
}

/// 403 (or 503) unless the route's authorization rules allow the caller;
/// the headers an external service added for the upstream otherwise.
pub(crate) async fn authorize(
    route: &Route,
    req: &Request<'_>,
    caller: &Caller,
    client_ip: Option<IpAddr>,
    request_id: &str,
    events: &mut Vec<Event>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Reject> {
    let rules = &route.authz;
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let identity = caller.identity.as_deref();
    let view = RequestView {
        method: req.canon.method().as_str(),
        path: req.canon.route_path(),
        host: req.canon.host(),
        headers: req.headers,
        query: req.canon.query(),
        client_ip,
    };
    let question = Question {
        method: req.canon.method().as_str(),
        uri: req.canon.target(),
        host: req.canon.authority().and_then(|a| a.to_str().ok()),
        client_ip,
        identity,
        request_id,
    };
    match rules.decide(identity, &view, &question).await {
        Ok(headers) => Ok(headers),
        Err(Denial::Scope) => {
            events.push(Event::AuthzDenied {
                rule: Rule::Scope.as_str(),
            });
            let bearer = caller.provider.as_ref().is_some_and(|p| p.is_bearer());
            Err(Reject::insufficient_scope(&rules.require_scopes, bearer))
        }
        Err(Denial::Rule(rule)) => Err(deny(events, rule)),
        Err(Denial::Unavailable) => Err(Reject::new(
            Code::AuthUnavailable,
            "the authorization service is unavailable; try again later",
        )),
    }
}

/// 429 `rate_limited` when the route's bucket for this caller is empty. The
/// decision is kept for the `RateLimit-*` headers of the response.
pub(crate) async fn rate_limit(
    rt: &Runtime,
    route: &Route,
    req: &Request<'_>,
    caller: &Caller,
    decoration: &mut Decoration,
    events: &mut Vec<Event>,
) -> Result<(), Reject> {
    let Some(rl) = &route.rate_limit else {
        return Ok(());
    };
    let key = bucket_key(rl, req, caller.identity.as_deref());
    let decision = rt.rate_limits.check(&key, &rl.limit).await;
    decoration.rate_limit = Some(decision);
    if decision.allowed {
        return Ok(());
    }
    events.push(Event::RateLimited);
    Err(
        Reject::new(Code::RateLimited, "rate limit exceeded; retry later").with_header(
            "retry-after",
            HeaderValue::from(decision.retry_after_seconds),
        ),
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

/// The body the WAF read before the schema stage.
pub(crate) enum ReadBody {
    /// Nothing was read.
    None,
    /// All of it.
    Whole(Vec<u8>),
    /// Its first bytes; the rest streams to the upstream.
    Prefix,
}

/// 403 `request_blocked` when the CRS's anomaly score reaches the
/// threshold on a `block` route; a `detect` route records it and goes on.
/// The canonical request is inspected: method, normalized target, the
/// canonical headers and, for POST/PUT/PATCH with a JSON, form or XML type,
/// the body up to `inspect_body_bytes` (beyond: per `oversize`).
pub(crate) async fn waf(
    session: &mut Session,
    rt: &Runtime,
    route: &Route,
    canon: &Canonical,
    events: &mut Vec<Event>,
) -> Result<ReadBody, Reject> {
    let (Some(on), Some(waf)) = (&route.waf, &rt.waf) else {
        return Ok(ReadBody::None);
    };
    let config = &waf.config;
    let method = canon.method();
    let headers = &session.req_header().headers;
    let wants_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && crate::protect::waf::inspects_body(headers.get(CONTENT_TYPE));
    let limit = config.inspect_body_bytes;
    let (mut read, mut inspected) = (ReadBody::None, None);
    if wants_body {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let oversize = config.oversize;
        let over = declared.is_some_and(|n| n > limit);
        if over && oversize == WafOversize::Reject {
            session.set_keepalive(None);
            return Err(too_large());
        }
        if !(over && oversize == WafOversize::Skip) {
            let (body, whole) = read_up_to(session, limit).await?;
            if !whole {
                // Over the limit while streaming (no or a wrong length).
                if oversize == WafOversize::Reject || session.retry_buffer_truncated() {
                    session.set_keepalive(None);
                    return Err(too_large());
                }
            }
            if whole {
                inspected = Some(body);
            } else if oversize == WafOversize::InspectPrefix {
                // One byte past the limit tells the engine the body was
                // cut there, so a JSON or XML body ending early is not
                // taken for an unparsable one.
                let keep = usize::try_from(limit)
                    .map_or(usize::MAX, |l| l.saturating_add(1))
                    .min(body.len());
                inspected = body.get(..keep).map(<[u8]>::to_vec);
            }
            read = match inspected.as_ref() {
                Some(b) if whole => ReadBody::Whole(b.clone()),
                _ => ReadBody::Prefix,
            };
        }
    }
    let headers = session.req_header().headers.clone();
    let (client_ip, method, target) = (
        canon.client_ip(),
        method.as_str().to_string(),
        canon.target().to_string(),
    );
    let http_version = match session.req_header().version {
        http::Version::HTTP_2 => "2.0",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let rules = on.rules.clone();
    let unavailable = || Reject::new(Code::Internal, "the request could not be inspected");
    let slot = waf.slots.clone().acquire_owned();
    let inspection = async move {
        let slot = slot.await.ok()?;
        tokio::task::spawn_blocking(move || {
            // Held until the transaction ends, even when the request has
            // stopped waiting for it, so the pool stays bounded.
            let _slot = slot;
            rules.inspect(&Inspected {
                client_ip,
                method: &method,
                target: &target,
                http_version,
                headers: &headers,
                body: inspected.as_deref(),
            })
        })
        .await
        .ok()
    };
    let Ok(verdict) = tokio::time::timeout(config.timeout, inspection).await else {
        events.push(Event::Waf {
            action: match on.mode {
                WafMode::Block => WafAction::Block,
                _ => WafAction::Detect,
            },
            reason: WafReason::Timeout,
            rules: Vec::new(),
            score: None,
        });
        if on.mode == WafMode::Block {
            return Err(Reject::new(
                Code::RequestBlocked,
                "the request could not be inspected in time",
            ));
        }
        return Ok(read);
    };
    let verdict = verdict.ok_or_else(unavailable)?;
    let action = match (verdict.matched, on.mode) {
        (false, _) => WafAction::Pass,
        (true, WafMode::Block) => WafAction::Block,
        (true, _) => WafAction::Detect,
    };
    events.push(Event::Waf {
        action,
        reason: WafReason::AnomalyThreshold,
        rules: verdict.rules,
        score: verdict.score,
    });
    if action == WafAction::Block {
        return Err(Reject::new(
            Code::RequestBlocked,
            "the request was blocked by the web application firewall",
        ));
    }
    Ok(read)
}

/// A `json_schema` route's POST/PUT/PATCH body, read whole (bounded by the
/// route's limit) and validated before anything is sent upstream; Pingora
/// then replays the buffered body to the upstream unchanged. The WAF may
/// have read it already.
pub(crate) async fn body(
    session: &mut Session,
    route: &Route,
    method: &Method,
    read: ReadBody,
) -> Result<(), Reject> {
    let Some(schema) = &route.json_schema else {
        return Ok(());
    };
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
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
    let body = match read {
        ReadBody::None => read_body(session, route.max_body_bytes).await?,
        ReadBody::Whole(body) => body,
        ReadBody::Prefix => return Err(too_large()),
    };
    schema
        .validate(&body)
        .map_err(|e| Reject::new(Code::InvalidBody, e.to_string()))
}

async fn read_body(session: &mut Session, limit: u64) -> Result<Vec<u8>, Reject> {
    match read_up_to(session, limit).await? {
        (body, true) => Ok(body),
        (_, false) => {
            session.set_keepalive(None);
            Err(too_large())
        }
    }
}

/// The body, or its first bytes when it is over `limit` (then `false`),
/// buffered for Pingora to replay.
async fn read_up_to(session: &mut Session, limit: u64) -> Result<(Vec<u8>, bool), Reject> {
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
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Ok((body, false));
        }
    }
    Ok((body, true))
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
