//! `portcullis revoke`: the admin API's `/revocations` from the command
//! line, so an incident responder needs no hand-written JSON.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::revocations::{parse_time, rfc3339};

/// What to ask the admin listener.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    /// `http://HOST:PORT` of the admin listener.
    pub admin: String,
    /// The admin bearer token, first line of this file.
    pub token_file: Option<PathBuf>,
    pub action: RevokeAction,
}

#[derive(Debug, Clone)]
pub enum RevokeAction {
    List,
    Add(Target),
    Delete(Target),
}

#[derive(Debug, Clone)]
pub enum Target {
    Jti {
        jti: String,
        expires_at: Option<String>,
    },
    Subject {
        subject: String,
        issued_before: Option<String>,
        expires_at: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("--admin must be an http:// or https:// URL")]
    AdminUrl,
    #[error("cannot read the token file: {0}")]
    TokenFile(std::io::Error),
    #[error("`{0}` is not an RFC 3339 time such as 2027-01-01T00:00:00Z")]
    Time(String),
    #[error("{0}")]
    Usage(&'static str),
    #[error("the admin listener cannot be reached: {0}")]
    Transport(String),
    #[error("the admin listener answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// Sends the request; the admin listener's JSON answer on success.
pub fn revoke(request: &RevokeRequest) -> Result<String, RevokeError> {
    let base = request.admin.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(RevokeError::AdminUrl);
    }
    let token = match &request.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(RevokeError::TokenFile)?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let (method, body) = match &request.action {
        RevokeAction::List => (reqwest::Method::GET, None),
        RevokeAction::Add(target) => (reqwest::Method::POST, Some(body(target, true)?)),
        RevokeAction::Delete(target) => (reqwest::Method::DELETE, Some(body(target, false)?)),
    };
    let url = format!("{base}/revocations");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RevokeError::Transport(e.to_string()))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RevokeError::Transport(e.to_string()))?;
        let mut call = client.request(method, &url);
        if let Some(token) = token {
            call = call.bearer_auth(token);
        }
        if let Some(body) = body {
            call = call
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = call
            .send()
            .await
            .map_err(|e| RevokeError::Transport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| RevokeError::Transport(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(RevokeError::Refused { status, body: text })
        }
    })
}

/// The JSON body, times checked and written in the canonical form.
fn body(target: &Target, add: bool) -> Result<serde_json::Value, RevokeError> {
    let time = |t: &Option<String>| -> Result<Option<String>, RevokeError> {
        t.as_deref()
            .map(|t| {
                parse_time(t)
                    .map(rfc3339)
                    .ok_or_else(|| RevokeError::Time(t.to_string()))
            })
            .transpose()
    };
    let mut out = serde_json::Map::new();
    match target {
        Target::Jti { jti, expires_at } => {
            out.insert("jti".into(), jti.as_str().into());
            match time(expires_at)? {
                Some(at) => {
                    out.insert("expires_at".into(), at.into());
                }
                None if add => {
                    return Err(RevokeError::Usage(
                        "--jti needs --expires-at (at least the token's exp)",
                    ))
                }
                None => {}
            }
        }
        Target::Subject {
            subject,
            issued_before,
            expires_at,
        } => {
            out.insert("subject".into(), subject.as_str().into());
            match time(issued_before)? {
                Some(at) => {
                    out.insert("issued_before".into(), at.into());
                }
                None if add => return Err(RevokeError::Usage("--subject needs --issued-before")),
                None => {}
            }
            if let Some(at) = time(expires_at)? {
                out.insert("expires_at".into(), at.into());
            }
        }
    }
    Ok(out.into())
}
