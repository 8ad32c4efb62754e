//! Whether an upstream response may be stored, and for how long
//! (CONTRACT §10, after RFC 9111): the route's rules and the origin's
//! `Cache-Control`, never the client's.

use std::time::Duration;

use http::header::{SET_COOKIE, VARY};
use pingora::cache::cache_control::CacheControl;
use pingora::http::ResponseHeader;

use crate::config::{CacheScope, RouteCache};

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    Status,
    SetCookie,
    /// `Vary: *`, or a header the route's key does not hold.
    Vary,
    /// `no-store`, `no-cache`, `private` or a lifetime of zero.
    Origin,
    /// An authenticated request on a shared cache, without `public` or
    /// `s-maxage` from the origin.
    Authenticated,
}

/// How long `resp` may be served from the cache, or why it may not be
/// stored. `authenticated`: the request carried credentials or the route
/// authenticated the caller.
pub(crate) fn lifetime(
    spec: &RouteCache,
    resp: &ResponseHeader,
    authenticated: bool,
) -> Result<Duration, Skip> {
    if !spec.statuses.contains(&resp.status.as_u16()) {
        return Err(Skip::Status);
    }
    if resp.headers.contains_key(SET_COOKIE) {
        return Err(Skip::SetCookie);
    }
    for value in resp.headers.get_all(VARY) {
        let Ok(list) = value.to_str() else {
            return Err(Skip::Vary);
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !spec
                .vary
                .iter()
                .any(|v| v.as_str().eq_ignore_ascii_case(name))
            {
                return Err(Skip::Vary);
            }
        }
    }
    let cc = CacheControl::from_resp_headers(resp);
    let Some(cc) = cc else {
        if authenticated && spec.scope == CacheScope::Shared {
            return Err(Skip::Authenticated);
        }
        return Ok(spec.ttl);
    };
    if cc.no_store() || cc.no_cache() {
        return Err(Skip::Origin);
    }
    if cc.private() && spec.scope != CacheScope::Consumer {
        return Err(Skip::Origin);
    }
    // A malformed lifetime is no permission to store.
    let s_maxage = cc.s_maxage().map_err(|_| Skip::Origin)?;
    let max_age = cc.max_age().map_err(|_| Skip::Origin)?;
    if authenticated && spec.scope == CacheScope::Shared && !(cc.public() || s_maxage.is_some()) {
        return Err(Skip::Authenticated);
    }
    let ttl = match s_maxage.or(max_age) {
        Some(seconds) => Duration::from_secs(u64::from(seconds)).min(spec.ttl),
        None => spec.ttl,
    };
    if ttl.is_zero() {
        return Err(Skip::Origin);
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn spec(scope: CacheScope) -> RouteCache {
        RouteCache {
            ttl: Duration::from_secs(60),
            statuses: vec![200, 404],
            vary: vec![HeaderName::from_static("accept-encoding")],
            scope,
        }
    }

    fn resp(status: u16, headers: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(*n, *v).unwrap();
        }
        r
    }

    fn life(
        scope: CacheScope,
        status: u16,
        h: &[(&'static str, &'static str)],
        auth: bool,
    ) -> Result<u64, Skip> {
        lifetime(&spec(scope), &resp(status, h), auth).map(|d| d.as_secs())
    }

    use CacheScope::{Consumer, Shared};

    #[test]
    fn the_route_ttl_caps_the_origin() {
        assert_eq!(life(Shared, 200, &[], false), Ok(60));
        assert_eq!(
            life(Shared, 200, &[("cache-control", "max-age=10")], false),
            Ok(10)
        );
        assert_eq!(
            life(Shared, 200, &[("cache-control", "max-age=600")], false),
            Ok(60)
        );
        assert_eq!(
            life(
                Shared,
                200,
                &[("cache-control", "max-age=600, s-maxage=5")],
                false
            ),
            Ok(5)
        );
        assert_eq!(
            life(Shared, 200, &[("cache-control", "max-age=0")], false),
            Err(Skip::Origin)
        );
        assert_eq!(
            life(Shared, 200, &[("cache-control", "max-age=x")], false),
            Err(Skip::Origin)
        );
        assert_eq!(life(Shared, 404, &[], false), Ok(60));
        assert_eq!(life(Shared, 500, &[], false), Err(Skip::Status));
    }

    #[test]
    fn what_is_never_stored() {
        for h in [
            ("cache-control", "no-store"),
            ("cache-control", "no-cache"),
            ("cache-control", "private"),
        ] {
            assert_eq!(life(Shared, 200, &[h], false), Err(Skip::Origin), "{h:?}");
        }
        assert_eq!(
            life(Shared, 200, &[("set-cookie", "a=b")], false),
            Err(Skip::SetCookie)
        );
        assert_eq!(
            life(Consumer, 200, &[("set-cookie", "a=b")], true),
            Err(Skip::SetCookie)
        );
        assert_eq!(life(Shared, 200, &[("vary", "*")], false), Err(Skip::Vary));
        assert_eq!(
            life(Shared, 200, &[("vary", "Accept-Language")], false),
            Err(Skip::Vary)
        );
        assert_eq!(
            life(Shared, 200, &[("vary", "Accept-Encoding")], false),
            Ok(60)
        );
        assert_eq!(
            life(
                Shared,
                200,
                &[("vary", "accept-encoding"), ("vary", "cookie")],
                false
            ),
            Err(Skip::Vary)
        );
    }

    #[test]
    fn authenticated_responses_follow_the_scope() {
        assert_eq!(life(Shared, 200, &[], true), Err(Skip::Authenticated));
        assert_eq!(
            life(Shared, 200, &[("cache-control", "max-age=30")], true),
            Err(Skip::Authenticated)
        );
        assert_eq!(
            life(
                Shared,
                200,
                &[("cache-control", "public, max-age=30")],
                true
            ),
            Ok(30)
        );
        assert_eq!(
            life(Shared, 200, &[("cache-control", "s-maxage=30")], true),
            Ok(30)
        );
        assert_eq!(life(Consumer, 200, &[], true), Ok(60));
        assert_eq!(
            life(
                Consumer,
                200,
                &[("cache-control", "private, max-age=20")],
                true
            ),
            Ok(20)
        );
    }
}
