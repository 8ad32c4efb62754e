//! The proxy's side of the response cache (CONTRACT §10): which requests
//! take part, their key, which responses are stored. Every stage of the
//! pipeline has run before any of this, so a stored response only ever
//! reaches a request that was admitted.

use http::header::{AUTHORIZATION, CONTENT_LENGTH, PROXY_AUTHORIZATION};
use http::Method;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::time::SystemTime;

use super::ctx::Ctx;
use crate::cache::key::KeyParts;
use crate::cache::{self, policy};
use crate::config::CacheScope;

/// Turns the cache on for a request of a caching route that it can
/// answer: GET or HEAD, not an upgrade or a gRPC call, and with
/// `scope = "consumer"` a known caller.
pub(crate) fn enable(session: &mut Session, ctx: &mut Ctx) {
    let Some(route) = ctx.route() else {
        return;
    };
    let Some(spec) = &route.cache else {
        return;
    };
    let method = ctx.canon.method();
    let eligible = (method == Method::GET || method == Method::HEAD)
        && !ctx.canon.wants_websocket()
        && !ctx.grpc
        && (spec.scope == CacheScope::Shared || ctx.caller.identity.is_some());
    let Some(pool) = ctx.upstream.chosen.and_then(|id| ctx.runtime.upstream(id)) else {
        return;
    };
    if !eligible {
        return;
    }
    let wait = pool.config.read_timeout;
    ctx.runtime.cache.enable(&mut session.cache, wait);
    ctx.upstream.cache_enabled = true;
}

/// The key of CONTRACT §10: route, canonical host, normalized path and
/// query, the route's `vary` headers, the consumer for `scope =
/// "consumer"` — and the upstream chosen, so a canary's answers are never
/// served to the stable side's callers or the other way round.
pub(crate) fn key(session: &Session, ctx: &Ctx) -> Option<CacheKey> {
    let route = ctx.route()?;
    let spec = route.cache.as_ref()?;
    let consumer = match spec.scope {
        CacheScope::Shared => None,
        CacheScope::Consumer => {
            let id = ctx.caller.identity.as_deref()?;
            Some(id.consumer.as_deref().unwrap_or(&id.subject))
        }
    };
    let upstream = ctx
        .upstream
        .chosen
        .and_then(|id| ctx.runtime.upstream(id))
        .map_or("", |u| u.name());
    let primary = KeyParts {
        route: &route.name,
        host: ctx.canon.authority().map_or(&b""[..], |a| a.as_bytes()),
        path: ctx.canon.path(),
        query: ctx.canon.query(),
        consumer,
        upstream,
        vary: &spec.vary,
        headers: &session.req_header().headers,
    }
    .build();
    Some(CacheKey::new(primary, route.name.as_str()))
}

/// Whether the upstream's response is stored, and until when.
pub(crate) fn storable(session: &Session, resp: &ResponseHeader, ctx: &Ctx) -> RespCacheable {
    let Some(spec) = ctx.route().and_then(|r| r.cache.as_ref()) else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    if too_large(resp, ctx) {
        return RespCacheable::Uncacheable(NoCacheReason::ResponseTooLarge);
    }
    match policy::lifetime(spec, resp, authenticated(session, ctx)) {
        Ok(ttl) => {
            let now = SystemTime::now();
            RespCacheable::Cacheable(CacheMeta::new(now + ttl, now, 0, 0, resp.clone()))
        }
        Err(_) => RespCacheable::Uncacheable(NoCacheReason::OriginNotCache),
    }
}

/// Credentials of any kind: an identity the route established, or an
/// `Authorization` the upstream may have answered for.
fn authenticated(session: &Session, ctx: &Ctx) -> bool {
    let headers = &session.req_header().headers;
    ctx.caller.identity.is_some()
        || headers.contains_key(AUTHORIZATION)
        || headers.contains_key(PROXY_AUTHORIZATION)
}

fn too_large(resp: &ResponseHeader, ctx: &Ctx) -> bool {
    let limit = ctx.runtime.cache_limits.max_object_bytes;
    resp.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Records what the cache did for this response, for `x-cache-status`,
/// the access log and the metrics.
pub(crate) fn note_status(session: &Session, ctx: &mut Ctx) {
    if ctx.route().is_some_and(|r| r.cache.is_some()) {
        ctx.outcome.cache_status = Some(if ctx.upstream.cache_enabled {
            cache::status_of(session.cache.phase())
        } else {
            cache::BYPASS
        });
    }
}
