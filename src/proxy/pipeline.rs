//! The request pipeline: every check a request passes before a byte goes
//! upstream, in the order they run. This function is the only place the
//! order lives, and it is fixed in code, never configurable: cheap checks
//! come first so hostile requests cost the least, and after the canonical
//! step no stage reads the request but through its canonical view.

use bytes::Bytes;
use http::header::ORIGIN;
use http::HeaderValue;
use pingora::proxy::Session;

use super::ctx::Ctx;
use super::forward;
use super::reject::Reject;
use super::request::{Canonical, Request, Rules};
use super::stages::{self, Routed};
use crate::config::RouteAction;
use crate::runtime::Runtime;
use crate::tls::ClientCert;

/// What the pipeline decided.
pub(crate) enum Verdict {
    /// Proxy to the route's upstream.
    Continue,
    /// The gateway answers the request itself.
    Reply(LocalReply),
}

/// An answer the gateway writes without the upstream.
pub(crate) enum LocalReply {
    /// The contract's JSON error.
    Refuse(Reject),
    /// 204 to an allowed CORS preflight or to `OPTIONS *`.
    Preflight,
    /// A `respond` route's answer.
    Direct {
        status: u16,
        body: Bytes,
        content_type: HeaderValue,
    },
}

/// Runs the stages on the request head (and, on a `json_schema` route, its
/// body). The canonical request is kept in `ctx.canon`, the route in
/// `ctx.route`, the caller in `ctx.caller`.
pub(crate) async fn run(session: &mut Session, ctx: &mut Ctx) -> Verdict {
    let runtime = ctx.runtime.clone();
    match stages_in_order(session, ctx, &runtime).await {
        Ok(verdict) => verdict,
        Err(reject) => Verdict::Reply(LocalReply::Refuse(reject)),
    }
}

async fn stages_in_order(
    session: &mut Session,
    ctx: &mut Ctx,
    rt: &Runtime,
) -> Result<Verdict, Reject> {
    // The network rules, before anything is parsed.
    stages::network(&rt.cidrs, ctx.client.ip, &mut ctx.outcome.events)?;
    // The canonical request of CONTRACT §8.
    ctx.canon = Canonical::build(
        session.req_header_mut(),
        ctx.client.conn,
        ctx.client.ip,
        &Rules::of(rt),
    )
    .inspect_err(|_| {
        // A head refused as malformed or too large: what follows it on
        // the connection is not trusted to be the next request.
        session.set_keepalive(None);
    })?;
    if ctx.canon.wants_close() {
        // Pingora read only the first Connection line.
        session.set_keepalive(None);
    }
    if ctx.canon.is_asterisk() {
        // `OPTIONS *`: nothing to check.
        return Ok(Verdict::Reply(LocalReply::Preflight));
    }
    let headers = &session.req_header().headers;
    // Routing: 404, 405, or the route.
    let Routed { id, preflight } = stages::route(rt, &ctx.canon, headers)?;
    let Some(route) = rt.route(id) else {
        return Err(stages::no_route());
    };
    ctx.route = Some(id);
    ctx.canon.remove_query_params(&route.credential_params);
    let req = view(session, &ctx.canon);
    // A WebSocket tunnel only where the route opens one.
    stages::websocket(route, &ctx.canon)?;
    // The route's network rules.
    stages::network(&route.cidrs, ctx.client.ip, &mut ctx.outcome.events)?;
    // CORS: a preflight is answered here, without credentials.
    if let Some(cors) = &route.cors {
        if preflight {
            ctx.decoration.cors_headers = stages::preflight(cors, &req)?;
            return Ok(Verdict::Reply(LocalReply::Preflight));
        }
        ctx.decoration.cors_headers = cors.response_headers(headers.get(ORIGIN));
    }
    // A declared body over the limit, before reading it.
    stages::declared_body(&req, route.max_body_bytes)?;
    if !route.auth.is_empty() {
        // A locked-out client costs nothing more.
        stages::lockout(rt, ctx.client.ip).await?;
        // Authentication: one of the route's providers accepts.
        let (identity, provider) =
            stages::authenticate(rt, route, &req, ctx.client.ip, &mut ctx.outcome.events).await?;
        ctx.caller.identity = Some(identity);
        ctx.caller.provider = Some(provider);
    }
    // Authorization: scopes, roles, policy, external service.
    ctx.caller.authz_headers = stages::authorize(
        route,
        &req,
        &ctx.caller,
        ctx.client.ip,
        ctx.request_id.as_str(),
        &mut ctx.outcome.events,
    )
    .await?;
    // The WAF, on the canonical request and the body it reads.
    let read = stages::waf(session, rt, route, &ctx.canon, &mut ctx.outcome.events).await?;
    let req = view(session, &ctx.canon);
    // The route's rate limit for this caller.
    stages::rate_limit(
        rt,
        route,
        &req,
        &ctx.caller,
        &mut ctx.decoration,
        &mut ctx.outcome.events,
    )
    .await?;
    // A `json_schema` route's body, read and validated.
    stages::body(session, route, ctx.canon.method(), read).await?;
    Ok(match &route.action {
        RouteAction::Respond {
            status,
            body,
            content_type,
        } => Verdict::Reply(LocalReply::Direct {
            status: *status,
            body: body.clone(),
            content_type: content_type.clone(),
        }),
        RouteAction::Proxy { upstreams, .. } => {
            let chosen = forward::choose_upstream(upstreams, &session.req_header().headers, ctx);
            ctx.upstream.chosen = chosen;
            let pool = chosen.and_then(|id| rt.upstream(id));
            // A gRPC call only to an upstream that keeps its trailers.
            stages::grpc_upstream(ctx.grpc, pool.map(|p| &**p))?;
            ctx.upstream.retries_left = pool.map_or(0, |u| u.config.retries);
            stages::websocket_timeouts(session, route, &ctx.canon);
            Verdict::Continue
        }
    })
}

/// What the stages read: the canonical request, its headers and the
/// verified client certificate.
fn view<'a>(session: &'a Session, canon: &'a Canonical) -> Request<'a> {
    Request {
        canon,
        headers: &session.req_header().headers,
        client_cert: session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<ClientCert>()),
    }
}
