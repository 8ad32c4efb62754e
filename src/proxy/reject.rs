//! Refusals: one type for every error the gateway answers itself, and one
//! function that renders it as the contract's JSON.
//!
//! Keeping the rendering in one place is what guarantees that no refusal
//! leaks a stack trace, a token or a secret, and that every one carries the
//! request id.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;
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
    /// RFC 9449: a DPoP proof missing, broken or not for this request.
    InvalidDpopProof,
    InvalidApiKey,
    InvalidClientCertificate,
    AuthUnavailable,
    InsufficientScope,
    Forbidden,
    RateLimited,
    TemporarilyBlocked,
    InvalidBody,
    UnsupportedMediaType,
    /// The WAF found an attack pattern (CONTRACT §14).
    RequestBlocked,
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
            | Code::InvalidDpopProof
            | Code::InvalidApiKey
            | Code::InvalidClientCertificate => 401,
            Code::AuthUnavailable => 503,
            Code::InsufficientScope | Code::Forbidden | Code::RequestBlocked => 403,
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
            Code::InvalidDpopProof => "invalid_dpop_proof",
            Code::InvalidApiKey => "invalid_api_key",
            Code::InvalidClientCertificate => "invalid_client_certificate",
            Code::AuthUnavailable => "auth_unavailable",
            Code::InsufficientScope => "insufficient_scope",
            Code::Forbidden => "forbidden",
            Code::RateLimited => "rate_limited",
            Code::TemporarilyBlocked => "temporarily_blocked",
            Code::InvalidBody => "invalid_body",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::RequestBlocked => "request_blocked",
            Code::Unauthorized => "unauthorized",
            Code::InvalidConfig => "invalid_config",
        }
    }

    /// The gRPC status of CONTRACT §9 for this refusal.
    pub fn grpc_status(self) -> &'static str {
        match self.status() {
            400 | 413 | 414 | 415 | 431 => "3", // INVALID_ARGUMENT
            401 => "16",                        // UNAUTHENTICATED
            403 => "7",                         // PERMISSION_DENIED
            404 | 405 => "12",                  // UNIMPLEMENTED
            429 => "8",                         // RESOURCE_EXHAUSTED
            502 | 503 => "14",                  // UNAVAILABLE
            504 => "4",                         // DEADLINE_EXCEEDED
            _ => "13",                          // INTERNAL
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
    /// Names are static: Pingora's case-preserving maps copy any other.
    pub headers: Vec<(&'static str, HeaderValue)>,
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

    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
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
        let body = self.body(request_id);
        let mut h = ResponseHeader::build(self.status(), Some(5 + self.headers.len()))?;
        h.insert_header("content-type", APPLICATION_JSON)?;
        h.insert_header("content-length", HeaderValue::from(body.len()))?;
        h.insert_header("cache-control", NO_STORE)?;
        for (name, value) in &self.headers {
            h.insert_header(*name, value.clone())?;
        }
        Ok((h, body))
    }

    /// A gRPC Trailers-Only response: HTTP 200 whose headers end the
    /// stream, `grpc-status` by [`Code::grpc_status`] and `grpc-message`
    /// the error code (a token, so no percent-encoding is needed).
    pub fn render_grpc(&self) -> Result<ResponseHeader> {
        let mut h = ResponseHeader::build(200, Some(5 + self.headers.len()))?;
        h.insert_header("content-type", APPLICATION_GRPC)?;
        h.insert_header("grpc-status", self.code.grpc_status())?;
        h.insert_header("grpc-message", self.code.as_str())?;
        for (name, value) in &self.headers {
            h.insert_header(*name, value.clone())?;
        }
        Ok(h)
    }

    /// `{"error":…,("errors":[…],)"message":…,"request_id":…}` in one
    /// buffer: the keys in the order serde_json's sorted maps gave them.
    fn body(&self, request_id: &str) -> Bytes {
        let code = self.code.as_str();
        let details: usize = self.details.iter().map(|d| d.len() + 3).sum();
        let mut out =
            Vec::with_capacity(48 + code.len() + details + self.message.len() + request_id.len());
        out.extend_from_slice(br#"{"error":""#);
        out.extend_from_slice(code.as_bytes());
        out.push(b'"');
        if !self.details.is_empty() {
            out.extend_from_slice(br#","errors":"#);
            json_into(&mut out, &self.details);
        }
        out.extend_from_slice(br#","message":"#);
        json_into(&mut out, self.message.as_ref());
        out.extend_from_slice(br#","request_id":"#);
        json_into(&mut out, request_id);
        out.push(b'}');
        Bytes::from(out)
    }
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const CHALLENGE: HeaderValue = HeaderValue::from_static(r#"Bearer realm="portcullis""#);

/// Appends `value` as JSON; writing into a `Vec` cannot fail.
fn json_into<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

impl Reject {
    /// The contract's 401/503 for a refused credential, with RFC 6750
    /// `WWW-Authenticate` when the route has a bearer provider, or the RFC
    /// 9449 `DPoP` challenge (with the provider's proof algorithms) for a
    /// refused proof.
    pub fn credential(
        error: &AuthError,
        bearer: bool,
        method: AuthMethod,
        dpop_algs: Option<&str>,
    ) -> Reject {
        let (reject, challenge) = match error {
            AuthError::DpopProof { description, .. } => (
                Reject::new(Code::InvalidDpopProof, *description),
                format!(
                    r#"DPoP algs="{}", error="invalid_dpop_proof", error_description="{description}""#,
                    dpop_algs.unwrap_or_default()
                ),
            ),
            AuthError::Missing | AuthError::Invalid { .. } if method == AuthMethod::Mtls => {
                return Reject::new(
                    Code::InvalidClientCertificate,
                    "a verified, allowed client certificate is required",
                );
            }
            AuthError::Missing => {
                let reject = Reject::new(Code::MissingCredentials, "credentials are required");
                return if bearer {
                    reject.with_header("www-authenticate", CHALLENGE)
                } else {
                    reject
                };
            }
            AuthError::Invalid { description, .. } if method == AuthMethod::ApiKey => {
                return Reject::new(Code::InvalidApiKey, *description);
            }
            AuthError::Invalid { description, .. } => (
                Reject::new(Code::InvalidToken, *description),
                format!(
                    r#"Bearer realm="portcullis", error="invalid_token", error_description="{description}""#
                ),
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
            Ok(value) if bearer => self.with_header("www-authenticate", value),
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
            .with_header("allow", HeaderValue::from_static("GET, HEAD"));
        let (h, body) = r.render("abc").unwrap();
        assert_eq!(h.status.as_u16(), 405);
        assert_eq!(h.headers.get("allow").unwrap(), "GET, HEAD");
        assert_eq!(h.headers.get("content-type").unwrap(), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "method_not_allowed");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["message"], "method not allowed");
    }

    /// The hand-built body is byte for byte what serde_json makes of the
    /// same object, escapes included.
    #[test]
    fn body_matches_serde_json() {
        let cases = [
            Reject::new(Code::Forbidden, "access denied"),
            Reject::new(Code::InvalidConfig, "quote \" back\\slash \u{1} tab\t é")
                .with_details(vec!["a.toml:1:2: \"x\"\n".into(), String::new()]),
        ];
        for r in cases {
            let id = "id\"\u{7f}";
            let mut want = serde_json::json!({
                "error": r.code.as_str(), "message": r.message, "request_id": id,
            });
            if !r.details.is_empty() {
                want["errors"] = serde_json::json!(r.details);
            }
            assert_eq!(r.body(id), want.to_string().into_bytes());
        }
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
