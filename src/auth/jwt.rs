//! Verifying one JWT against a provider's keys and rules.
//!
//! The order is fixed and deliberate: the header is read first (only to
//! learn `alg` and `kid`), the algorithm is checked against the allowlist
//! before any key is touched, the signature is verified before the payload
//! is trusted for anything, and only then are the time and audience rules
//! applied. Time is the caller's `now_unix`, never the system clock, so the
//! rules are deterministic to test and one request sees one "now".
//!
//! Nothing here echoes the token or key material: every refusal is a fixed
//! [`VerifyError`] whose `reason` and `description` are constant strings.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::identity::AuthError;
use crate::auth::jwks::{Alg, KeySet};

/// A provider's acceptance rules, from its `[auth.NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    /// When set, `iss` must equal it exactly.
    pub issuer: Option<String>,
    /// Empty: `aud` is not checked. Otherwise the token's `aud` (a string or
    /// an array of strings) must contain at least one of them.
    pub audiences: Vec<String>,
    /// The allowlist; a token whose header names anything else is refused
    /// before any key is looked at.
    pub algorithms: Vec<Alg>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_seconds: u64,
    /// Claims that must be present and not null (`exp` always is), named
    /// like `roles_claim`: a claim name or a dotted path.
    pub required_claims: Vec<String>,
    /// Where the roles are: a claim name, or a dotted path into nested
    /// objects such as `realm_access.roles`.
    pub roles_claim: Option<String>,
    /// Where the scopes are: `scope` (a space-separated string) by default,
    /// or e.g. `scp` (an array).
    pub scopes_claim: String,
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Map<String, Value>,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The fingerprint of the key that verified the signature.
    pub key: [u8; 32],
    /// The token's `exp`, in Unix seconds; a cache must not outlive it.
    pub exp: u64,
    /// `sub`, else `client_id` (client-credentials tokens often lack
    /// `sub`), else empty.
    pub subject: String,
    /// `azp`, else `client_id`.
    pub consumer: Option<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
}

/// Why a token was refused. Every variant maps to a fixed `reason` (for
/// logs and metrics) and a fixed `description` (for `WWW-Authenticate`);
/// neither ever contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("signing algorithm not allowed")]
    AlgNotAllowed,
    /// The header names a key id the set does not have. The kid is kept so
    /// the caller can decide on a JWKS refetch; it is deliberately left out
    /// of the message, as it is attacker-chosen text.
    #[error("unknown signing key id")]
    UnknownKid(String),
    /// No key in the set fits the token's algorithm (and kid).
    #[error("no key matches the token's algorithm")]
    NoMatchingKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// A token without `exp` would be valid forever; such tokens are refused
    /// whatever the configuration.
    #[error("token has no exp claim")]
    MissingExp,
    /// A configured required claim (or `iss`/`aud` when those are checked)
    /// is absent. The name comes from the configuration, not the token.
    #[error("missing required claim `{0}`")]
    MissingClaim(String),
}

impl VerifyError {
    /// A short fixed identifier for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed => "malformed",
            VerifyError::AlgNotAllowed => "alg_not_allowed",
            VerifyError::UnknownKid(_) => "unknown_kid",
            VerifyError::NoMatchingKey => "no_matching_key",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::IssuedInFuture => "issued_in_future",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::MissingExp => "missing_exp",
            VerifyError::MissingClaim(_) => "missing_claim",
        }
    }

    /// A fixed human text for the `error_description` of
    /// `WWW-Authenticate` (so it never contains `"` or `\`).
    pub fn description(&self) -> &'static str {
        match self {
            VerifyError::Malformed => "The access token is malformed",
            VerifyError::AlgNotAllowed => "The access token signing algorithm is not accepted",
            VerifyError::UnknownKid(_) => "The access token signing key is unknown",
            VerifyError::NoMatchingKey => "No key can verify the access token",
            VerifyError::BadSignature => "The access token signature is invalid",
            VerifyError::Expired => "The access token expired",
            VerifyError::NotYetValid => "The access token is not valid yet",
            VerifyError::IssuedInFuture => "The access token was issued in the future",
            VerifyError::WrongIssuer => "The access token issuer is not accepted",
            VerifyError::WrongAudience => "The access token audience is not accepted",
            VerifyError::MissingExp => "The access token has no expiry",
            VerifyError::MissingClaim(_) => "The access token lacks a required claim",
        }
    }

    /// The provider-level refusal: a presented but invalid credential.
    pub fn to_auth_error(&self) -> AuthError {
        AuthError::invalid(self.reason(), self.description())
    }
}

/// The two header members verification needs before choosing a key.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    kid: Option<String>,
    /// No extension is understood, so any critical one refuses the token
    /// (RFC 7515 §4.1.11), as does an unencoded payload (RFC 7797).
    crit: Option<serde_json::Value>,
    b64: Option<serde_json::Value>,
}

/// Decode just the header: its `kid` and its `alg`, without verifying
/// anything. Cheap, so the caller can decide on an unknown-kid refetch
/// before paying for a signature check.
///
/// The token must have exactly three `.`-separated segments and a base64url
/// (unpadded) JSON object header with a string `alg` (and a string `kid`, if
/// any); otherwise [`VerifyError::Malformed`]. An `alg` that is `none` or
/// unsupported is [`VerifyError::AlgNotAllowed`].
pub fn peek_header(token: &str) -> Result<(Option<String>, Alg), VerifyError> {
    let mut segments = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(VerifyError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::Malformed)?;
    // serde skips members it does not read without checking them: the
    // whole header must be text (RFC 7515 §4: UTF-8 JSON).
    let json = std::str::from_utf8(&json).map_err(|_| VerifyError::Malformed)?;
    let header: PeekedHeader = serde_json::from_str(json).map_err(|_| VerifyError::Malformed)?;
    if header.crit.is_some() || header.b64.is_some() {
        return Err(VerifyError::Malformed);
    }
    let alg = Alg::parse(&header.alg).ok_or(VerifyError::AlgNotAllowed)?;
    Ok((header.kid, alg))
}

/// Verify `token` against `keys` under `rules`, at `now_unix` (seconds).
///
/// The signature is checked by `jsonwebtoken` with only the header's
/// algorithm allowed and a key whose family fits it, so an HS* token can
/// never be checked with public key bytes as its secret. Claims are checked
/// here rather than by `jsonwebtoken`, whose time checks read the system
/// clock and whose `iss` check also accepts an array: `exp` is required and
/// must be in the future (less leeway), `nbf` and `iat` must not be (beyond
/// leeway), `iss` must equal the configured issuer, `aud` must name one of
/// the configured audiences, and every required claim must be present.
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &JwtRules,
    now_unix: u64,
) -> Result<Verified, VerifyError> {
    let (kid, alg) = peek_header(token)?;
    if !rules.algorithms.contains(&alg) {
        return Err(VerifyError::AlgNotAllowed);
    }
    let (claims, key) = verify_signature(token, keys, kid.as_deref(), alg)?;
    let exp = check_claims(&claims, rules, now_unix)?;

    let client_id = string_claim(&claims, "client_id")?;
    let subject = match string_claim(&claims, "sub")? {
        Some(sub) => sub,
        None => client_id.clone().unwrap_or_default(),
    };
    let consumer = string_claim(&claims, "azp")?.or(client_id);
    let scopes = string_list(&claims, &rules.scopes_claim);
    let roles = match &rules.roles_claim {
        Some(path) => string_list(&claims, path),
        None => Vec::new(),
    };
    Ok(Verified {
        claims,
        kid,
        key,
        exp,
        subject,
        consumer,
        scopes,
        roles,
    })
}

/// The payload of `token` once some candidate key verifies its signature,
/// and that key's fingerprint. The signature is checked over the token as
/// sent (`header.payload`), before the payload is decoded.
fn verify_signature(
    token: &str,
    keys: &KeySet,
    kid: Option<&str>,
    alg: Alg,
) -> Result<(Map<String, Value>, [u8; 32]), VerifyError> {
    let mut candidates = keys.candidates(kid, alg).peekable();
    if candidates.peek().is_none() {
        return Err(match kid {
            Some(kid) if !keys.contains_kid(kid) => VerifyError::UnknownKid(kid.to_owned()),
            _ => VerifyError::NoMatchingKey,
        });
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VerifyError::Malformed)?;
    let Some(key) =
        candidates.find(|key| key.verifier().verify(alg, signed.as_bytes(), &signature))
    else {
        return Err(VerifyError::BadSignature);
    };
    let (_, payload) = signed.split_once('.').ok_or(VerifyError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| VerifyError::Malformed)?;
    let claims = serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
    Ok((claims, key.fingerprint()))
}

/// Apply the time, issuer, audience and required-claim rules; the token's
/// `exp` on success.
fn check_claims(
    claims: &Map<String, Value>,
    rules: &JwtRules,
    now_unix: u64,
) -> Result<u64, VerifyError> {
    let leeway = rules.leeway_seconds;
    let exp = numeric_date(claims, "exp")?.ok_or(VerifyError::MissingExp)?;
    // RFC 7519 §4.1.4: valid only while now is before exp.
    if now_unix >= exp.saturating_add(leeway) {
        return Err(VerifyError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now_unix.saturating_add(leeway) {
            return Err(VerifyError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > now_unix.saturating_add(leeway) {
            return Err(VerifyError::IssuedInFuture);
        }
    }
    if let Some(issuer) = &rules.issuer {
        match present(claims.get("iss")) {
            None => return Err(VerifyError::MissingClaim("iss".to_owned())),
            Some(Value::String(iss)) if iss == issuer => {}
            Some(_) => return Err(VerifyError::WrongIssuer),
        }
    }
    if !rules.audiences.is_empty() {
        let aud = present(claims.get("aud"))
            .ok_or_else(|| VerifyError::MissingClaim("aud".to_owned()))?;
        if !audience_accepted(aud, &rules.audiences)? {
            return Err(VerifyError::WrongAudience);
        }
    }
    if let Some(missing) = rules
        .required_claims
        .iter()
        .find(|name| claim_at(claims, name).is_none())
    {
        return Err(VerifyError::MissingClaim(missing.clone()));
    }
    Ok(exp)
}

/// `null` counts as absent, so `"exp": null` cannot pass for an expiry.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

/// A NumericDate claim (RFC 7519 §2): a non-negative number of seconds,
/// fractions truncated. Absent: `None`; anything else: malformed.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, VerifyError> {
    let Some(value) = present(claims.get(name)) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(VerifyError::Malformed);
    };
    let seconds = match number.as_u64() {
        Some(seconds) => Some(seconds),
        None => number
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < u64::MAX as f64)
            .map(|seconds| seconds as u64),
    };
    seconds.map(Some).ok_or(VerifyError::Malformed)
}

/// Whether `aud` (a string or an array of strings) names an accepted
/// audience; any other shape is malformed.
fn audience_accepted(aud: &Value, accepted: &[String]) -> Result<bool, VerifyError> {
    match aud {
        Value::String(aud) => Ok(accepted.iter().any(|a| a == aud)),
        Value::Array(items) => {
            let mut found = false;
            for item in items {
                let aud = item.as_str().ok_or(VerifyError::Malformed)?;
                found |= accepted.iter().any(|a| a == aud);
            }
            Ok(found)
        }
        _ => Err(VerifyError::Malformed),
    }
}

/// A registered identity claim (`sub`, `azp`, `client_id`): a string, or
/// absent; any other type is malformed rather than silently ignored.
fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, VerifyError> {
    match present(claims.get(name)) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(VerifyError::Malformed),
    }
}

/// The claim at `path`: a top-level claim of exactly that name first (so
/// namespaced claims such as `https://example.com/roles` work), else the
/// `.`-separated path walked through nested objects. Missing or null along
/// the way: `None`.
fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return present(Some(value));
    }
    let mut segments = path.split('.');
    let mut value = claims.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    present(Some(value))
}

/// Scopes or roles: a space-separated string, or an array whose string
/// elements count. Absent or of another shape: none, so a misplaced claim
/// grants nothing.
pub fn string_list(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    match claim_at(claims, path) {
        Some(Value::String(list)) => list.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
