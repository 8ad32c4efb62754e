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
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
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

    /// The refusal for an error from `jsonwebtoken`, by kind.
    fn from_jwt(kind: &ErrorKind) -> VerifyError {
        match kind {
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
            ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
            ErrorKind::InvalidAudience => VerifyError::WrongAudience,
            ErrorKind::InvalidSignature => VerifyError::BadSignature,
            ErrorKind::InvalidAlgorithm => VerifyError::AlgNotAllowed,
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => VerifyError::MissingExp,
            ErrorKind::MissingRequiredClaim(claim) => VerifyError::MissingClaim(claim.clone()),
            // A key the backend cannot use for this algorithm: the set only
            // hands out compatible keys, so this means none really fits.
            ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey => VerifyError::NoMatchingKey,
            // Base64, Json, Utf8, InvalidToken (bad shape, unsupported
            // `crit`), InvalidClaimFormat and anything newer: the token is
            // not something we can accept, so refuse it as malformed.
            _ => VerifyError::Malformed,
        }
    }
}

/// The two header members verification needs before choosing a key.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    kid: Option<String>,
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
/// and that key's fingerprint.
fn verify_signature(
    token: &str,
    keys: &KeySet,
    kid: Option<&str>,
    alg: Alg,
) -> Result<(Map<String, Value>, [u8; 32]), VerifyError> {
    // Signature only: every claim rule is applied by `check_claims`.
    let mut validation = Validation::new(alg.into());
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;

    let mut candidates = keys.candidates(kid, alg).peekable();
    if candidates.peek().is_none() {
        return Err(match kid {
            Some(kid) if !keys.contains_kid(kid) => VerifyError::UnknownKid(kid.to_owned()),
            _ => VerifyError::NoMatchingKey,
        });
    }
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding_key(), &validation) {
            Ok(data) => return Ok((data.claims, key.fingerprint())),
            // Another candidate may still be the signer.
            Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => continue,
            Err(error) => return Err(VerifyError::from_jwt(error.kind())),
        }
    }
    Err(VerifyError::BadSignature)
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
mod tests {
    use super::*;
    use crate::auth::jwks::test_keys::{jwks, public_jwk, signing_key, HMAC_SECRET, RSA_PUBLIC};
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISSUER: &str = "https://idp.example.com/";

    fn rules() -> JwtRules {
        JwtRules {
            issuer: Some(ISSUER.to_owned()),
            audiences: vec!["orders-api".to_owned()],
            algorithms: vec![
                Alg::RS256,
                Alg::PS256,
                Alg::ES256,
                Alg::ES384,
                Alg::EdDSA,
                Alg::HS256,
            ],
            leeway_seconds: 30,
            required_claims: vec!["sub".to_owned()],
            roles_claim: Some("realm_access.roles".to_owned()),
            scopes_claim: "scope".to_owned(),
        }
    }

    /// The asymmetric test keys, each pinned to the algorithm it is used
    /// with here.
    fn jwks_set() -> KeySet {
        let doc = jwks(vec![
            public_jwk(Algorithm::RS256, "rs256"),
            public_jwk(Algorithm::PS256, "ps256"),
            public_jwk(Algorithm::ES256, "es256"),
            public_jwk(Algorithm::ES384, "es384"),
            public_jwk(Algorithm::EdDSA, "eddsa"),
        ]);
        KeySet::from_jwks(&doc, &rules().algorithms).expect("key set")
    }

    fn secret_set() -> KeySet {
        KeySet::from_secret(HMAC_SECRET, &[Alg::HS256]).expect("secret set")
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": "orders-api",
            "sub": "user-1",
            "exp": NOW + 300,
            "iat": NOW - 10,
            "nbf": NOW - 10,
        })
    }

    fn sign_with(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).expect("token signs")
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        sign_with(alg, kid, claims, &signing_key(alg))
    }

    /// A token with a hand-made header and payload and a junk signature.
    fn raw_token(header: &Value, payload: &Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    fn check(token: &str) -> Result<Verified, VerifyError> {
        verify(token, &jwks_set(), &rules(), NOW)
    }

    fn with(claims: Value, changes: Value) -> Value {
        let mut claims = claims;
        for (name, value) in changes.as_object().expect("object") {
            if value.is_null() {
                claims.as_object_mut().expect("object").remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    #[test]
    fn accepts_every_asymmetric_algorithm() {
        for (alg, kid) in [
            (Algorithm::RS256, "rs256"),
            (Algorithm::PS256, "ps256"),
            (Algorithm::ES256, "es256"),
            (Algorithm::ES384, "es384"),
            (Algorithm::EdDSA, "eddsa"),
        ] {
            let verified = check(&sign(alg, Some(kid), &good_claims()))
                .unwrap_or_else(|error| panic!("{alg:?}: {error:?}"));
            assert_eq!(verified.kid.as_deref(), Some(kid));
            assert_eq!(verified.subject, "user-1");
            assert_eq!(verified.exp, NOW + 300);
            assert_eq!(verified.claims.get("iss"), Some(&json!(ISSUER)));
        }
    }

    #[test]
    fn accepts_hs256_with_the_secret() {
        let token = sign(Algorithm::HS256, None, &good_claims());
        let verified = verify(&token, &secret_set(), &rules(), NOW).expect("valid");
        assert_eq!(verified.subject, "user-1");
        // A kid on an HMAC token falls back to the kid-less secret.
        let token = sign(Algorithm::HS256, Some("k1"), &good_claims());
        assert!(verify(&token, &secret_set(), &rules(), NOW).is_ok());
    }

    #[test]
    fn tries_every_compatible_key_without_kid() {
        let token = sign(Algorithm::ES384, None, &good_claims());
        assert_eq!(check(&token).expect("valid").kid, None);
    }

    #[test]
    fn expiry_honours_leeway_and_now() {
        let expired = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"exp": NOW - 31})),
        );
        assert_eq!(check(&expired), Err(VerifyError::Expired));
        let within_leeway = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"exp": NOW - 29})),
        );
        assert!(check(&within_leeway).is_ok());
        let no_leeway = JwtRules {
            leeway_seconds: 0,
            ..rules()
        };
        let at_exp = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"exp": NOW, "iat": NOW - 1})),
        );
        assert_eq!(
            verify(&at_exp, &jwks_set(), &no_leeway, NOW),
            Err(VerifyError::Expired)
        );
        assert!(verify(&at_exp, &jwks_set(), &no_leeway, NOW - 1).is_ok());
    }

    #[test]
    fn nbf_and_iat_in_the_future() {
        let nbf = sign(
            Algorithm::ES256,
            Some("es256"),
            &with(good_claims(), json!({"nbf": NOW + 31})),
        );
        assert_eq!(check(&nbf), Err(VerifyError::NotYetValid));
        let nbf_within = sign(
            Algorithm::ES256,
            Some("es256"),
            &with(good_claims(), json!({"nbf": NOW + 30})),
        );
        assert!(check(&nbf_within).is_ok());
        let iat = sign(
            Algorithm::ES256,
            Some("es256"),
            &with(good_claims(), json!({"iat": NOW + 31, "nbf": null})),
        );
        assert_eq!(check(&iat), Err(VerifyError::IssuedInFuture));
    }

    #[test]
    fn time_claims_must_be_numbers() {
        for bad in [json!("1700000300"), json!(-5), json!(true), json!({"a": 1})] {
            let token = sign(
                Algorithm::EdDSA,
                Some("eddsa"),
                &with(good_claims(), json!({ "exp": bad })),
            );
            assert_eq!(check(&token), Err(VerifyError::Malformed), "{bad}");
        }
        let float = sign(
            Algorithm::EdDSA,
            Some("eddsa"),
            &with(good_claims(), json!({"exp": (NOW + 10) as f64 + 0.5})),
        );
        assert_eq!(check(&float).map(|v| v.exp), Ok(NOW + 10));
    }

    #[test]
    fn missing_exp_is_refused() {
        let token = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"exp": null})),
        );
        let error = check(&token).expect_err("refused");
        assert_eq!(error, VerifyError::MissingExp);
        assert_eq!(error.reason(), "missing_exp");
        // An explicit null is no expiry either.
        let mut claims = good_claims();
        claims["exp"] = Value::Null;
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert_eq!(check(&token), Err(VerifyError::MissingExp));
    }

    #[test]
    fn issuer_must_match_exactly() {
        for iss in [
            json!("https://evil.example.com/"),
            json!([ISSUER]),
            json!(7),
        ] {
            let token = sign(
                Algorithm::RS256,
                Some("rs256"),
                &with(good_claims(), json!({ "iss": iss })),
            );
            assert_eq!(check(&token), Err(VerifyError::WrongIssuer), "{iss}");
        }
        let no_iss = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"iss": null})),
        );
        assert_eq!(check(&no_iss), Err(VerifyError::MissingClaim("iss".into())));
        let unchecked = JwtRules {
            issuer: None,
            ..rules()
        };
        assert!(verify(&no_iss, &jwks_set(), &unchecked, NOW).is_ok());
    }

    #[test]
    fn audience_rules() {
        let token = |aud: Value| {
            sign(
                Algorithm::RS256,
                Some("rs256"),
                &with(good_claims(), json!({ "aud": aud })),
            )
        };
        assert_eq!(
            check(&token(json!("other-api"))),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            check(&token(json!(["a", "b"]))),
            Err(VerifyError::WrongAudience)
        );
        assert!(check(&token(json!(["billing", "orders-api"]))).is_ok());
        assert_eq!(check(&token(json!(42))), Err(VerifyError::Malformed));
        assert_eq!(
            check(&token(json!(["orders-api", 1]))),
            Err(VerifyError::Malformed)
        );
        let no_aud = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"aud": null})),
        );
        assert_eq!(check(&no_aud), Err(VerifyError::MissingClaim("aud".into())));
        let unchecked = JwtRules {
            audiences: Vec::new(),
            ..rules()
        };
        assert!(verify(&no_aud, &jwks_set(), &unchecked, NOW).is_ok());
        assert!(verify(&token(json!("anything")), &jwks_set(), &unchecked, NOW).is_ok());
    }

    #[test]
    fn required_claims() {
        let no_sub = with(good_claims(), json!({"sub": null}));
        let token = sign(Algorithm::RS256, Some("rs256"), &no_sub);
        let error = check(&token).expect_err("refused");
        assert_eq!(error, VerifyError::MissingClaim("sub".into()));
        assert_eq!(error.reason(), "missing_claim");
        let nested = JwtRules {
            required_claims: vec!["tenant".into(), "realm_access.roles".into()],
            ..rules()
        };
        let claims = with(
            good_claims(),
            json!({"tenant": "t1", "realm_access": {"roles": []}}),
        );
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert!(verify(&token, &jwks_set(), &nested, NOW).is_ok());
        let claims = with(good_claims(), json!({"tenant": "t1"}));
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert_eq!(
            verify(&token, &jwks_set(), &nested, NOW),
            Err(VerifyError::MissingClaim("realm_access.roles".into()))
        );
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let token = sign(Algorithm::RS256, Some("rs256"), &good_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(with(good_claims(), json!({"sub": "admin"})).to_string());
        parts[1] = &forged;
        assert_eq!(check(&parts.join(".")), Err(VerifyError::BadSignature));
        // Also without a kid, after trying every ES256 key.
        let token = sign(Algorithm::ES256, None, &good_claims());
        let (head, _) = token.split_once('.').expect("dot");
        let signature = token.rsplit('.').next().expect("signature");
        let forged = format!("{head}.{forged}.{signature}");
        assert_eq!(check(&forged), Err(VerifyError::BadSignature));
    }

    #[test]
    fn unknown_kid_is_reported_for_refetch() {
        let token = sign(Algorithm::RS256, Some("rotated"), &good_claims());
        let error = check(&token).expect_err("refused");
        assert_eq!(error, VerifyError::UnknownKid("rotated".into()));
        assert_eq!(error.reason(), "unknown_kid");
        assert_eq!(
            peek_header(&token),
            Ok((Some("rotated".into()), Alg::RS256))
        );
    }

    #[test]
    fn alg_none_and_unlisted_algs_are_refused() {
        let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &good_claims());
        assert_eq!(check(&none), Err(VerifyError::AlgNotAllowed));
        let unsigned = none.rsplit_once('.').expect("dot").0.to_owned() + ".";
        assert_eq!(check(&unsigned), Err(VerifyError::AlgNotAllowed));
        for alg in ["None", "NONE", "ES512", "HS1"] {
            let token = raw_token(&json!({ "alg": alg }), &good_claims());
            assert_eq!(check(&token), Err(VerifyError::AlgNotAllowed), "{alg}");
        }
        // Supported, and a key would fit, but not on the allowlist.
        let only_es = JwtRules {
            algorithms: vec![Alg::ES256],
            ..rules()
        };
        let token = sign(Algorithm::RS256, Some("rs256"), &good_claims());
        assert_eq!(
            verify(&token, &jwks_set(), &only_es, NOW),
            Err(VerifyError::AlgNotAllowed)
        );
    }

    /// The classic confusion attack: HMAC-"sign" with the RSA public key
    /// (which anyone can fetch) as the secret and hope the verifier uses
    /// that key's bytes as an HMAC secret.
    #[test]
    fn hmac_with_the_rsa_public_key_is_refused() {
        let attacker_key = EncodingKey::from_secret(RSA_PUBLIC.as_bytes()).expect("key");
        let set = KeySet::from_jwks(
            &jwks(vec![public_jwk(Algorithm::RS256, "rs256")]),
            &[Alg::RS256, Alg::HS256],
        )
        .expect("set");
        for kid in [Some("rs256"), None] {
            let token = sign_with(Algorithm::HS256, kid, &good_claims(), &attacker_key);
            assert_eq!(
                verify(&token, &set, &rules(), NOW),
                Err(VerifyError::NoMatchingKey),
                "{kid:?}"
            );
        }
        // And even if a key were handed over regardless of its family,
        // `jsonwebtoken` refuses to use an RSA key for HS256.
        let token = sign_with(Algorithm::HS256, None, &good_claims(), &attacker_key);
        let rsa = set.candidates(None, Alg::RS256).next().expect("rsa key");
        let validation = Validation::new(Algorithm::HS256);
        let error =
            jsonwebtoken::decode::<Map<String, Value>>(&token, rsa.decoding_key(), &validation)
                .expect_err("refused");
        assert_ne!(
            VerifyError::from_jwt(error.kind()),
            VerifyError::BadSignature
        );
        assert!(matches!(
            error.kind(),
            ErrorKind::InvalidKeyFormat | ErrorKind::InvalidAlgorithm
        ));
    }

    #[test]
    fn asymmetric_tokens_never_verify_with_the_secret_set() {
        let token = sign(Algorithm::RS256, None, &good_claims());
        assert_eq!(
            verify(&token, &secret_set(), &rules(), NOW),
            Err(VerifyError::NoMatchingKey)
        );
    }

    #[test]
    fn a_jwk_pinned_to_another_alg_is_not_used() {
        let mut rs384 = public_jwk(Algorithm::RS256, "k");
        rs384["alg"] = json!("RS384");
        let algs = [Alg::RS256, Alg::RS384];
        let set = KeySet::from_jwks(&jwks(vec![rs384]), &algs).expect("set");
        let token = sign(Algorithm::RS256, Some("k"), &good_claims());
        let rules = JwtRules {
            algorithms: algs.to_vec(),
            ..rules()
        };
        assert_eq!(
            verify(&token, &set, &rules, NOW),
            Err(VerifyError::NoMatchingKey)
        );
    }

    #[test]
    fn an_encryption_key_is_never_used() {
        let mut enc = public_jwk(Algorithm::RS256, "enc");
        enc["use"] = json!("enc");
        let set = KeySet::from_jwks(
            &jwks(vec![enc, public_jwk(Algorithm::ES256, "es256")]),
            &rules().algorithms,
        )
        .expect("set");
        let token = sign(Algorithm::RS256, Some("enc"), &good_claims());
        assert_eq!(
            verify(&token, &set, &rules(), NOW),
            Err(VerifyError::UnknownKid("enc".into()))
        );
    }

    #[test]
    fn malformed_tokens() {
        let good = sign(Algorithm::RS256, Some("rs256"), &good_claims());
        let (header, rest) = good.split_once('.').expect("dot");
        let cases = [
            "".to_owned(),
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{good}.extra"),
            format!("!!!.{rest}"),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[\"RS256\"]")),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("{\"kid\":\"rs256\"}")),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("{\"alg\":256}")),
            format!(
                "{}.{rest}",
                URL_SAFE_NO_PAD.encode("{\"alg\":\"RS256\",\"kid\":5}")
            ),
            format!("{header}=.{rest}"),
        ];
        for token in &cases {
            assert_eq!(check(token), Err(VerifyError::Malformed), "{token}");
        }
        // Valid header, garbage payload or signature encoding.
        let signature = good.rsplit('.').next().expect("signature");
        assert_eq!(
            check(&format!("{header}.%%%.{signature}")),
            Err(VerifyError::BadSignature)
        );
        let (message, _) = good.rsplit_once('.').expect("dot");
        assert_eq!(
            check(&format!("{message}.***")),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn a_validly_signed_non_object_payload_is_malformed() {
        let header = Header::new(Algorithm::HS256);
        let key = signing_key(Algorithm::HS256);
        let token = encode(&header, &json!(["not", "claims"]), &key).expect("token");
        assert_eq!(
            verify(&token, &secret_set(), &rules(), NOW),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn unsupported_crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let token = encode(&header, &good_claims(), &signing_key(Algorithm::HS256)).expect("token");
        assert_eq!(
            verify(&token, &secret_set(), &rules(), NOW),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn scopes_from_a_string_or_an_array() {
        let token = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"scope": "orders:read  orders:write"})),
        );
        assert_eq!(
            check(&token).expect("valid").scopes,
            vec!["orders:read", "orders:write"]
        );
        let scp = JwtRules {
            scopes_claim: "scp".into(),
            ..rules()
        };
        let token = sign(
            Algorithm::RS256,
            Some("rs256"),
            &with(good_claims(), json!({"scp": ["orders:read", 7, "x"]})),
        );
        assert_eq!(
            verify(&token, &jwks_set(), &scp, NOW)
                .expect("valid")
                .scopes,
            vec!["orders:read", "x"]
        );
        let token = sign(Algorithm::RS256, Some("rs256"), &good_claims());
        assert!(check(&token).expect("valid").scopes.is_empty());
    }

    #[test]
    fn roles_from_a_nested_path() {
        let claims = with(
            good_claims(),
            json!({"realm_access": {"roles": ["admin", "partner"]}}),
        );
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert_eq!(
            check(&token).expect("valid").roles,
            vec!["admin", "partner"]
        );

        let claims = with(good_claims(), json!({"realm_access": {"roles": "a b"}}));
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert_eq!(check(&token).expect("valid").roles, vec!["a", "b"]);

        for absent in [
            json!({"realm_access": {}}),
            json!({"realm_access": ["x"]}),
            json!({}),
        ] {
            let token = sign(
                Algorithm::RS256,
                Some("rs256"),
                &with(good_claims(), absent),
            );
            assert!(check(&token).expect("valid").roles.is_empty());
        }

        // A namespaced claim whose name contains dots is found as is.
        let namespaced = JwtRules {
            roles_claim: Some("https://corp.example/roles".into()),
            ..rules()
        };
        let claims = with(
            good_claims(),
            json!({"https://corp.example/roles": ["ops"]}),
        );
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert_eq!(
            verify(&token, &jwks_set(), &namespaced, NOW)
                .expect("valid")
                .roles,
            vec!["ops"]
        );
        let none = JwtRules {
            roles_claim: None,
            ..rules()
        };
        let claims = with(good_claims(), json!({"realm_access": {"roles": ["admin"]}}));
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert!(verify(&token, &jwks_set(), &none, NOW)
            .expect("valid")
            .roles
            .is_empty());
    }

    #[test]
    fn subject_and_consumer() {
        let claims = with(good_claims(), json!({"azp": "web", "client_id": "cli"}));
        let verified = check(&sign(Algorithm::RS256, Some("rs256"), &claims)).expect("valid");
        assert_eq!(verified.consumer.as_deref(), Some("web"));
        assert_eq!(verified.subject, "user-1");

        let claims = with(good_claims(), json!({"client_id": "cli"}));
        let verified = check(&sign(Algorithm::RS256, Some("rs256"), &claims)).expect("valid");
        assert_eq!(verified.consumer.as_deref(), Some("cli"));

        let no_sub_rules = JwtRules {
            required_claims: Vec::new(),
            ..rules()
        };
        let claims = with(good_claims(), json!({"sub": null, "client_id": "svc"}));
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        let verified = verify(&token, &jwks_set(), &no_sub_rules, NOW).expect("valid");
        assert_eq!(verified.subject, "svc");
        assert_eq!(verified.consumer.as_deref(), Some("svc"));

        let claims = with(good_claims(), json!({"sub": null}));
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        let verified = verify(&token, &jwks_set(), &no_sub_rules, NOW).expect("valid");
        assert_eq!(verified.subject, "");
        assert_eq!(verified.consumer, None);

        let claims = with(good_claims(), json!({"sub": 42}));
        let token = sign(Algorithm::RS256, Some("rs256"), &claims);
        assert_eq!(check(&token), Err(VerifyError::Malformed));
    }

    #[test]
    fn errors_map_to_auth_errors_without_the_token() {
        let token = sign(Algorithm::RS256, Some("rs256"), &good_claims());
        let expired = verify(&token, &jwks_set(), &rules(), NOW + 3600).expect_err("expired");
        assert_eq!(
            expired.to_auth_error(),
            AuthError::invalid("expired", "The access token expired")
        );
        let unknown = VerifyError::UnknownKid(token.clone());
        assert!(!unknown.to_string().contains(&token));
        for error in [
            VerifyError::Malformed,
            VerifyError::AlgNotAllowed,
            unknown,
            VerifyError::NoMatchingKey,
            VerifyError::BadSignature,
            VerifyError::Expired,
            VerifyError::NotYetValid,
            VerifyError::IssuedInFuture,
            VerifyError::WrongIssuer,
            VerifyError::WrongAudience,
            VerifyError::MissingExp,
            VerifyError::MissingClaim("sub".into()),
        ] {
            let description = error.description();
            assert!(!description.contains('"') && !description.contains('\\'));
            assert_eq!(error.to_auth_error().reason(), error.reason());
        }
    }

    #[test]
    fn jsonwebtoken_error_kinds_map_precisely() {
        let cases = [
            (ErrorKind::ExpiredSignature, VerifyError::Expired),
            (ErrorKind::ImmatureSignature, VerifyError::NotYetValid),
            (ErrorKind::InvalidIssuer, VerifyError::WrongIssuer),
            (ErrorKind::InvalidAudience, VerifyError::WrongAudience),
            (ErrorKind::InvalidSignature, VerifyError::BadSignature),
            (ErrorKind::InvalidAlgorithm, VerifyError::AlgNotAllowed),
            (ErrorKind::InvalidToken, VerifyError::Malformed),
            (
                ErrorKind::InvalidClaimFormat("aud".into()),
                VerifyError::Malformed,
            ),
            (
                ErrorKind::MissingRequiredClaim("exp".into()),
                VerifyError::MissingExp,
            ),
            (
                ErrorKind::MissingRequiredClaim("sub".into()),
                VerifyError::MissingClaim("sub".into()),
            ),
            (ErrorKind::InvalidKeyFormat, VerifyError::NoMatchingKey),
        ];
        for (kind, expected) in cases {
            assert_eq!(VerifyError::from_jwt(&kind), expected, "{kind:?}");
        }
    }

    /// Found by fuzzing: a header that is not UTF-8 in a member nobody
    /// reads must still be refused as malformed.
    #[test]
    fn header_must_be_text() {
        assert_eq!(
            peek_header("eyJhbGciOiJIUzI1NiIsIngiOiL_In0.e30.c2ln"),
            Err(VerifyError::Malformed)
        );
    }
}
