//! Responses the gateway writes itself: refusals, preflights and `respond`
//! routes.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::ctx::Ctx;
use super::pipeline::LocalReply;
use super::reject::Reject;

pub(crate) const X_REQUEST_ID: &str = "x-request-id";
const X_CACHE_STATUS: &str = "x-cache-status";

/// Writes the gateway's own answer to the request.
pub(crate) async fn reply(session: &mut Session, ctx: &mut Ctx, reply: LocalReply) -> Result<()> {
    match reply {
        LocalReply::Refuse(reject) => send_reject(session, ctx, reject).await,
        LocalReply::Preflight => send_preflight(session, ctx).await,
        LocalReply::Direct {
            status,
            body,
            content_type,
        } => send_direct(session, ctx, status, body, content_type).await,
    }
}

/// Writes `reject` as the contract's JSON error and records it for the
/// logs. The only way a refusal reaches a client.
pub(crate) async fn send_reject(
    session: &mut Session,
    ctx: &mut Ctx,
    reject: Reject,
) -> Result<()> {
    if ctx.grpc {
        let mut header = reject.render_grpc()?;
        decorate(&mut header, ctx)?;
        if session.req_header().version < http::Version::HTTP_2 {
            header.insert_header("content-length", "0")?;
        }
        ctx.outcome.grpc_status = Some(reject.code.grpc_status());
        ctx.outcome.refused(reject);
        return write_trailers_only(session, header).await;
    }
    let (mut header, body) = reject.render(ctx.request_id.as_str())?;
    decorate(&mut header, ctx)?;
    ctx.outcome.refused(reject);
    write(session, header, body).await
}

/// A headers-only answer that ends the stream. Over HTTP/2 the HEADERS
/// frame itself must carry END_STREAM, which is what makes a gRPC
/// Trailers-Only response (an end sent later, in an empty DATA frame,
/// would leave the call without trailers); Pingora's session API only
/// ends an HTTP/2 stream with a later frame, so the frame is written here.
async fn write_trailers_only(session: &mut Session, header: ResponseHeader) -> Result<()> {
    if let ServerSession::H2(h2) = session.as_downstream_mut() {
        return h2.write_response_header(Box::new(header), true);
    }
    session.write_response_header(Box::new(header), true).await
}

/// A refusal decided in a hook that can only stop the request by failing:
/// kept for `fail_to_proxy`, which sends it with [`send_reject`]. The
/// error is the client's (downstream): Pingora's HTTP/2 upstream path
/// only stops relaying on a downstream error, and otherwise keeps waiting
/// for an upstream that waits for the rest of a body it will never get.
pub(crate) fn refuse_through_error(ctx: &mut Ctx, reject: Reject) -> Box<Error> {
    let status = reject.status();
    ctx.outcome.pending = Some(reject);
    Error::explain(ErrorType::HTTPStatus(status), "refused by the gateway").into_down()
}

/// The answer of a `respond` route.
async fn send_direct(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    body: Bytes,
    content_type: HeaderValue,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", HeaderValue::from(body.len()))?;
    decorate(&mut header, ctx)?;
    route_headers(&mut header, ctx)?;
    write(session, header, body).await
}

/// What every response carries, whoever made it: the request id, on a
/// rate-limited route the `RateLimit-*` headers, on a CORS route the
/// `Access-Control-*` and `Vary` headers.
pub(crate) fn decorate(header: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    header.insert_header(X_REQUEST_ID, ctx.request_id.header())?;
    if let Some(route) = ctx.route() {
        for (name, value) in &route.deprecation {
            header.insert_header(name.clone(), value.clone())?;
        }
        if route.cache.is_some() {
            let status = ctx.outcome.cache_status.unwrap_or(crate::cache::BYPASS);
            header.insert_header(X_CACHE_STATUS, HeaderValue::from_static(status))?;
        }
    }
    if let Some(d) = &ctx.decoration.rate_limit {
        header.insert_header("ratelimit-limit", d.limit)?;
        header.insert_header("ratelimit-remaining", d.remaining)?;
        header.insert_header("ratelimit-reset", d.reset_seconds)?;
    }
    for (name, value) in &ctx.decoration.cors_headers {
        // The upstream's own `Vary` (e.g. Accept-Encoding) must survive:
        // ours is added beside it. The `Access-Control-*` headers are ours.
        if name == http::header::VARY {
            header.append_header(name.clone(), value.clone())?;
        } else {
            header.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// The route's `response_headers`, on the upstream's responses and on a
/// `respond` route's.
pub(crate) fn route_headers(header: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    if let Some(route) = ctx.route() {
        for name in &route.response_headers.remove {
            header.remove_header(name);
        }
        for (name, value) in &route.response_headers.set {
            header.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// The gateway's answer to an allowed CORS preflight: 204 with the
/// `Access-Control-*` headers, without authentication.
async fn send_preflight(session: &mut Session, ctx: &Ctx) -> Result<()> {
    let mut header = ResponseHeader::build(204, Some(8))?;
    header.insert_header("content-length", "0")?;
    decorate(&mut header, ctx)?;
    session.write_response_header(Box::new(header), true).await
}

async fn write(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
