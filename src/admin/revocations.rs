//! `GET`, `POST` and `DELETE /revocations` (CONTRACT §13).

use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;

use super::{json, refusal};
use crate::config::revocations::{parse_entry, Purpose, Revocation};
use crate::protect::revocation::RevocationError;
use crate::proxy::reject::{Code, Reject};
use crate::reload::Control;

/// A revocation body is a small JSON object.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The list, as a JSON array of entries.
pub(super) fn list(control: &Control, id: &str) -> Response<Vec<u8>> {
    let entries: Vec<serde_json::Value> = control
        .runtime
        .load()
        .revocations
        .list()
        .iter()
        .map(Revocation::to_json)
        .collect();
    json(StatusCode::OK, &serde_json::Value::from(entries), id)
}

/// Adds (`POST`) or deletes (`DELETE`) the entry the body names.
pub(super) async fn change(
    control: &Control,
    session: &mut ServerSession,
    method: &Method,
    id: &str,
) -> Response<Vec<u8>> {
    let body = match read_body(session).await {
        Ok(body) => body,
        Err(reject) => return refusal(&reject, id),
    };
    let purpose = if method == Method::DELETE {
        Purpose::Delete
    } else {
        Purpose::Add
    };
    let entry = match parse_entry(&body, purpose) {
        Ok(entry) => entry,
        Err(e) => return refusal(&Reject::new(Code::BadRequest, e.to_string()), id),
    };
    let revocations = control.runtime.load().revocations.clone();
    let applied = match purpose {
        Purpose::Add => match revocations.add(entry.clone()).await {
            Ok(applied) => applied,
            Err(e @ RevocationError::Expired) => {
                return refusal(&Reject::new(Code::BadRequest, e.to_string()), id)
            }
            Err(e @ RevocationError::Full) => {
                return refusal(&Reject::new(Code::Internal, e.to_string()), id)
            }
        },
        Purpose::Delete => match revocations.remove(entry.key()).await {
            Some(applied) => applied,
            None => return refusal(&Reject::new(Code::NoRoute, "no such revocation"), id),
        },
    };
    let event = if purpose == Purpose::Add {
        "token_revoked"
    } else {
        "token_revocation_deleted"
    };
    let mut record = crate::observe::security::SecurityEvent::new(event, "admin api");
    record = match &entry {
        Revocation::Jti { .. } => record.field("kind", "jti"),
        Revocation::Subject { subject, .. } => record
            .field("kind", "subject")
            .field("revoked_subject", subject.as_str()),
    };
    control.observer.security_event(&record);
    if let Some(reason) = applied.persist_error {
        // In force in memory (and Redis), but a restart would lose it.
        return refusal(
            &Reject::new(
                Code::Internal,
                "the change is in force but could not be saved to revocations_file",
            )
            .with_details(vec![reason]),
            id,
        );
    }
    let mut answer = serde_json::json!({
        "revocation": entry.to_json(),
        "deleted": purpose == Purpose::Delete,
    });
    if let Some(shared) = applied.shared {
        answer["shared"] = shared.into();
    }
    json(StatusCode::OK, &answer, id)
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reject> {
    let unreadable = || Reject::new(Code::BadRequest, "the request body could not be read");
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| unreadable())?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Reject::new(
                Code::PayloadTooLarge,
                "request body is too large",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
