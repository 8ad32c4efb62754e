//! `POST /cache/purge` (CONTRACT §10): drops a route's stored responses,
//! or those of one path of it.

use pingora::protocols::http::ServerSession;
use serde::Deserialize;

use crate::proxy::reject::{Code, Reject};
use crate::runtime::Runtime;

/// The most a purge request's body may be.
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    route: String,
    path: Option<String>,
}

/// Reads the request and purges; the JSON answer or the refusal.
pub(super) async fn purge(
    session: &mut ServerSession,
    runtime: &Runtime,
) -> Result<serde_json::Value, Reject> {
    let body = read_body(session).await?;
    let purge: Purge = serde_json::from_slice(&body).map_err(|_| {
        Reject::new(
            Code::BadRequest,
            "the body must be JSON: {\"route\": \"NAME\"} or {\"route\": \"NAME\", \"path\": \"/PATH\"}",
        )
    })?;
    let known = runtime
        .routes
        .iter()
        .any(|r| r.name == purge.route && r.cache.is_some());
    if !known {
        return Err(Reject::new(
            Code::NoRoute,
            "no route of that name has a `cache`",
        ));
    }
    if purge.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
        return Err(Reject::new(Code::BadRequest, "`path` must start with `/`"));
    }
    let purged = runtime.cache.purge(&purge.route, purge.path.as_deref());
    Ok(serde_json::json!({
        "route": purge.route,
        "path": purge.path,
        "purged": purged,
    }))
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reject> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(Reject::new(
                        Code::PayloadTooLarge,
                        "the request body is too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(Reject::new(
                    Code::BadRequest,
                    "the request body could not be read",
                ))
            }
        }
    }
}
