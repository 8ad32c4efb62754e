//! Refusals: one type for every error the gateway answers itself, and one
//! function that renders it as the contract's JSON.
//!
//! Keeping the rendering in one place is what guarantees that no refusal
//! leaks a stack trace, a token or a secret, and that every one carries the
//! request id.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::Result;

use crate::auth::{AuthError, AuthMethod};

/// The error codes of CONTRACT §4; each fixes its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    NoRoute,
    MethodNotAllowed,
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    BadGateway,
    NoHealthyUpstream,
    UpstreamTimeout,
    Internal,
    MissingCredentials,
    InvalidToken,
    InvalidApiKey,
    InvalidClientCertificate,
    AuthUnavailable,
    InsufficientScope,
    Forbidden,
    RateLimited,
    TemporarilyBlocked,
    InvalidBody,
    UnsupportedMediaType,
    /// The admin listener's missing or wrong bearer token.
    Unauthorized,
    /// `POST /reload` with a configuration that does not validate.
    InvalidConfig,
}

impl Code {
    pub fn status(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::NoRoute => 404,
            Code::MethodNotAllowed => 405,
            Code::PayloadTooLarge => 413,
            Code::UriTooLong => 414,
            Code::HeadersTooLarge => 431,
            Code::BadGateway => 502,
            Code::NoHealthyUpstream => 503,
            Code::UpstreamTimeout => 504,
            Code::Internal => 500,
            Code::MissingCredentials
            | Code::InvalidToken
            | Code::InvalidApiKey
            | Code::InvalidClientCertificate => 401,
            Code::AuthUnavailable => 503,
            Code::InsufficientScope | Code::Forbidden => 403,
            Code::RateLimited | Code::TemporarilyBlocked => 429,
            Code::InvalidBody => 400,
            Code::UnsupportedMediaType => 415,
            Code::Unauthorized => 401,
            Code::InvalidConfig => 400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::NoRoute => "no_route",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UriTooLong => "uri_too_long",
            Code::HeadersTooLarge => "headers_too_large",
            Code::BadGateway => "bad_gateway",
            Code::NoHealthyUpstream => "no_healthy_upstream",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::Internal => "internal_error",
            Code::MissingCredentials => "missing_credentials",
            Code::InvalidToken => "invalid_token",
            Code::InvalidApiKey => "invalid_api_key",
            Code::InvalidClientCertificate => "invalid_client_certificate",
            Code::AuthUnavailable => "auth_unavailable",
            Code::InsufficientScope => "insufficient_scope",
            Code::Forbidden => "forbidden",
            Code::RateLimited => "rate_limited",
            Code::TemporarilyBlocked => "temporarily_blocked",
            Code::InvalidBody => "invalid_body",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::Unauthorized => "unauthorized",
            Code::InvalidConfig => "invalid_config",
        }
    }

    /// Refusals that point at a hostile or broken client are security
    /// events; upstream trouble is not.
    pub fn is_security_relevant(self) -> bool {
        matches!(
            self,
            Code::BadRequest | Code::PayloadTooLarge | Code::UriTooLong | Code::HeadersTooLarge
        )
    }
}

/// A refusal: what the client is told, and why (for the security log).
#[derive(Debug, Clone)]
pub struct Reject {
    pub code: Code,
    /// Shown to the client: must never contain client input or secrets.
    pub message: Cow<'static, str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Itemized reasons, rendered as `errors` (e.g. every configuration
    /// error of a failed reload).
    pub details: Vec<String>,
}

impl Reject {
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            code,
            message: message.into(),
            headers: Vec::new(),
            details: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The response header and JSON body of CONTRACT §4.
    pub fn render(&self, request_id: &str) -> Result<(ResponseHeader, Bytes)> {
        let mut body = serde_json::json!({
            "error": self.code.as_str(),
            "message": self.message,
            "request_id": request_id,
        });
        if !self.details.is_empty() {
            body["errors"] = serde_json::json!(self.details);
        }
        let body = Bytes::from(body.to_string());
        let mut h = ResponseHeader::build(self.status(), Some(4 + self.headers.len()))?;
        h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        for (name, value) in &self.headers {
            h.insert_header(name.clone(), value.clone())?;
        }
        Ok((h, body))
    }
}

impl Reject {
    /// The contract's 401/503 for a refused credential, with RFC 6750
    /// `WWW-Authenticate` when the route has a bearer provider.
    pub fn credential(error: &AuthError, bearer: bool, method: AuthMethod) -> Reject {
        let (reject, challenge) = match error {
            AuthError::Missing | AuthError::Invalid { .. } if method == AuthMethod::Mtls => {
                return Reject::new(
                    Code::InvalidClientCertificate,
                    "a verified, allowed client certificate is required",
                );
            }
            AuthError::Missing => (
                Reject::new(Code::MissingCredentials, "credentials are required"),
                Cow::Borrowed(r#"Bearer realm="portcullis""#),
            ),
            AuthError::Invalid { description, .. } if method == AuthMethod::ApiKey => {
                return Reject::new(Code::InvalidApiKey, *description);
            }
            AuthError::Invalid { description, .. } => (
                Reject::new(Code::InvalidToken, *description),
                Cow::Owned(format!(
                    r#"Bearer realm="portcullis", error="invalid_token", error_description="{description}""#
                )),
            ),
            AuthError::Unavailable { .. } => {
                return Reject::new(
                    Code::AuthUnavailable,
                    "the identity service is unavailable; try again later",
                );
            }
        };
        reject.with_challenge(bearer, &challenge)
    }

    /// 403 `insufficient_scope`, naming the route's scopes in the bearer
    /// challenge.
    pub fn insufficient_scope(scopes: &[String], bearer: bool) -> Reject {
        let challenge = format!(
            r#"Bearer realm="portcullis", error="insufficient_scope", scope="{}""#,
            scopes.join(" ")
        );
        Reject::new(
            Code::InsufficientScope,
            "the credential lacks a scope this resource requires",
        )
        .with_challenge(bearer, &challenge)
    }

    /// 403 for a request an authorization or network rule refused.
    pub fn denied() -> Reject {
        Reject::new(Code::Forbidden, "access to this resource is denied")
    }

    fn with_challenge(self, bearer: bool, challenge: &str) -> Reject {
        match HeaderValue::from_str(challenge) {
            Ok(value) if bearer => self.with_header(http::header::WWW_AUTHENTICATE, value),
            _ => self,
        }
    }

    /// The whole HTTP/1.1 response, for refusals made before Pingora has a
    /// session to write to (a head that is too large or malformed). The
    /// connection is closed after it.
    pub fn to_http1(&self, request_id: &str) -> Vec<u8> {
        let Ok((header, body)) = self.render(request_id) else {
            return Vec::new();
        };
        let status = header.status;
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in header.headers.iter() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_json() {
        let r = Reject::new(Code::MethodNotAllowed, "method not allowed")
            .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        let (h, body) = r.render("abc").unwrap();
        assert_eq!(h.status.as_u16(), 405);
        assert_eq!(h.headers.get("allow").unwrap(), "GET, HEAD");
        assert_eq!(h.headers.get("content-type").unwrap(), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "method_not_allowed");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["message"], "method not allowed");
    }

    #[test]
    fn http1_bytes() {
        let bytes =
            Reject::new(Code::HeadersTooLarge, "request headers are too large").to_http1("r1");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\ncontent-type: application/json\r\n"));
        assert!(text.contains("\r\nx-request-id: r1\r\nconnection: close\r\n\r\n{"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "headers_too_large");
    }
}
