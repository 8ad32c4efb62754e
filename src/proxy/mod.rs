//! The gateway's Pingora `ProxyHttp` implementation: each hook hands its
//! work to the module that owns it. The order of request stages lives in
//! [`pipeline`], nowhere else.

pub(crate) mod caching;
pub(crate) mod client;
pub(crate) mod ctx;
pub(crate) mod forward;
pub(crate) mod passive;
pub(crate) mod pipeline;
pub(crate) mod reject;
pub(crate) mod request;
pub(crate) mod respond;
pub(crate) mod stages;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::{CacheKey, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::observe::metrics::grpc_status_label;
use crate::observe::otel::SpanEnd;
use crate::observe::outcome::Finished;
use crate::observe::Observer;
use crate::runtime::Runtime;
use ctx::Ctx;
use pipeline::Verdict;
use reject::{Code, Reject};
use request::Conn;

const GRPC_STATUS: &str = "grpc-status";

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
        let conn = Conn {
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| crate::core::net::canonical_ip(a.ip())),
            listener: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .and_then(|a| ctx.runtime.listener_of(*a)),
            https: session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .is_some(),
        };
        ctx.begin(&session.req_header().headers, conn);
        if let Some(tracing) = &ctx.runtime.tracing {
            ctx.trace = Some(tracing.start(&session.req_header().headers, SystemTime::now()));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match pipeline::run(session, ctx).await {
            Verdict::Continue => Ok(false),
            Verdict::Reply(reply) => {
                respond::reply(session, ctx, reply).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        caching::enable(session, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        caching::key(session, ctx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no cache key"))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(caching::storable(session, resp, ctx))
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let runtime = ctx.runtime.clone();
        let pool = ctx
            .upstream
            .chosen
            .and_then(|id| runtime.upstream(id))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route has no upstream"))?;
        match forward::peer(pool, &session.req_header().headers, ctx) {
            Ok(peer) => Ok(Box::new(peer)),
            Err(reject) => Err(respond::refuse_through_error(ctx, reject)),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        passive::connect_failed(ctx);
        // Nothing has been sent yet, so another target may be tried.
        if ctx.upstream.retries_left > 0 {
            ctx.upstream.retries_left -= 1;
            e.set_retry(true);
        }
        e
    }

    /// Pingora's own retry rule (an idempotent request whose body can be
    /// sent again, on a connection that was reused), and what the failure
    /// tells outlier detection.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let upgraded = session.response_written().is_some_and(|r| r.status == 101);
        passive::proxy_failed(ctx, peer, &e, client_reused, upgraded);
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
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
        forward::upstream_request(upstream_request, ctx, route)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.upstream.body_bytes += chunk.len() as u64;
            let limit = ctx
                .route()
                .map_or(ctx.runtime.limits.max_body_bytes, |r| r.max_body_bytes);
            if ctx.upstream.body_bytes > limit {
                *body = None;
                return Err(respond::refuse_through_error(ctx, stages::too_large()));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        passive::answered(ctx, upstream_response.status.as_u16());
        if let Some(started) = ctx.upstream.started {
            ctx.upstream.elapsed = Some(started.elapsed());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        caching::note_status(session, ctx);
        if ctx.grpc {
            ctx.outcome.grpc_status = response.headers.get(GRPC_STATUS).map(grpc_status_label);
        }
        respond::decorate(response, ctx)?;
        respond::route_headers(response, ctx)
    }

    /// A gRPC call's status usually comes last, in the trailers.
    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<Bytes>> {
        if ctx.grpc {
            if let Some(status) = trailers.get(GRPC_STATUS) {
                ctx.outcome.grpc_status = Some(grpc_status_label(status));
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let reject = ctx.outcome.pending.take().or_else(|| reject_for(e));
        let Some(reject) = reject else {
            // The client went away or broke the connection: nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = reject.status();
        caching::note_status(session, ctx);
        if session.response_written().is_none() {
            session.set_keepalive(None);
            if respond::send_reject(session, ctx, reject).await.is_err() {
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
        } else {
            ctx.outcome.refused(reject);
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
        ctx.outcome.reject.is_some() || e.esource() == &ErrorSource::Downstream
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let req = session.req_header();
        let identity = ctx.caller.identity.as_deref();
        let upstream = ctx.upstream.chosen.and_then(|id| ctx.runtime.upstream(id));
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let trace_id = ctx.trace.take().map(|span| {
            let id = span.trace_id();
            let route = ctx.route();
            span.finish(&SpanEnd {
                method: req.method.as_str(),
                route: route.map(|r| r.name.as_str()),
                route_pattern: route.map(|r| r.path_template.as_str()),
                upstream: upstream.map(|u| u.name()),
                auth_method: identity.map(|i| i.method.as_str()),
                status,
            });
            id
        });
        self.observer.request_finished(&Finished {
            request_id: ctx.request_id.as_str(),
            client_ip: ctx.client.ip,
            method: &req.method,
            // A request refused before the canonical step is logged with
            // the path as received (never its query).
            path: if ctx.canon.target().is_empty() {
                req.uri.path()
            } else {
                ctx.canon.path()
            },
            route: ctx.route().map(|r| r.name.as_str()),
            upstream: upstream.map(|u| u.name()),
            target: ctx.target(),
            status,
            bytes_sent: session.body_bytes_sent(),
            bytes_received: session.body_bytes_read(),
            elapsed: ctx.started.elapsed(),
            upstream_elapsed: ctx.upstream.elapsed,
            auth_method: identity.map(|i| i.method.as_str()),
            subject: identity.map(|i| i.subject.as_str()),
            consumer: identity.map(|i| i.consumer.as_deref().unwrap_or(i.subject.as_str())),
            events: &ctx.outcome.events,
            grpc_status: ctx.outcome.grpc_status,
            cache_status: ctx
                .route()
                .and_then(|r| r.cache.as_ref())
                .map(|_| ctx.outcome.cache_status.unwrap_or(crate::cache::BYPASS)),
            trace_id: trace_id.as_ref().map(|t| t.as_str()),
        });
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
