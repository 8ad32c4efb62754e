//! What each upstream attempt tells outlier detection (CONTRACT §11): a
//! connect error, a timeout or a 502/503/504 from the target is a failure,
//! any other answer a success.

use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use super::ctx::Ctx;
use crate::upstream::outlier::Attempt;

fn report(ctx: &Ctx, attempt: Attempt) {
    let (Some(id), Some(addr)) = (ctx.upstream.chosen, ctx.target()) else {
        return;
    };
    if let Some(pool) = ctx.runtime.upstream(id) {
        pool.report(addr, attempt);
    }
}

/// The target refused or did not answer the connection (TLS included).
pub(crate) fn connect_failed(ctx: &Ctx) {
    report(ctx, Attempt::Failure);
}

/// The upstream's response head.
pub(crate) fn answered(ctx: &Ctx, status: u16) {
    let attempt = match status {
        502..=504 => Attempt::Failure,
        _ => Attempt::Success,
    };
    report(ctx, attempt);
}

/// An error after the connection was made. Only the target's own failures
/// count: not the client's (gone, too slow, refused by a stage), not a
/// deadline the client chose shorter (`grpc-timeout`) than the upstream's
/// `read_timeout`, not the idle end of an upgraded socket, and not a
/// kept-alive connection the target had closed meanwhile (Pingora retries
/// those).
pub(crate) fn proxy_failed(ctx: &Ctx, peer: &HttpPeer, e: &Error, reused: bool, upgraded: bool) {
    if e.esource() != &ErrorSource::Upstream || upgraded {
        return;
    }
    let timeout = matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    if timeout {
        let configured = ctx
            .upstream
            .chosen
            .and_then(|id| ctx.runtime.upstream(id))
            .map(|p| p.config.read_timeout);
        if peer.options.read_timeout < configured {
            return;
        }
    } else if reused {
        return;
    }
    report(ctx, Attempt::Failure);
}
