//! RFC 9449 DPoP on `jwt` and `introspection` providers (CONTRACT §13): a
//! token bound to a key the client holds (`cnf.jkt`) is accepted only with
//! a proof signed by that key for this very request.
//!
//! The proof is read from its raw bytes: the header JSON is checked member
//! by member (a JWT library would drop private key members silently, and a
//! private `jwk` must be refused, not used), its `jwk` becomes a key on the
//! same OpenSSL path as the providers' keys, and every claim is compared
//! with the canonical request (CONTRACT §8), never the raw one. Proof keys
//! are cached by their RFC 7638 thumbprint, so a client that keeps its key
//! costs one signature check per request. Every refusal is a fixed text.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use moka::sync::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::bearer::Scheme;
use super::jwks::{proof_key, Key};
use super::jwt_auth::{now_unix, once_key};
use super::{AuthError, Credentials, Identity};
use crate::config::{DpopConfig, DpopMode};
use crate::core::alg::Alg;

/// A proof's `iat` may be this far in the future (clock skew).
const FUTURE_SKEW_SECONDS: u64 = 5;
/// Proofs are small; anything larger is not one.
const MAX_PROOF_BYTES: usize = 8192;
const KEY_CACHE_ENTRIES: u64 = 10_000;

/// A provider's DPoP rules and its proof-key cache.
pub(crate) struct Dpop {
    config: DpopConfig,
    /// `algs="..."` of the challenge.
    algs: Arc<str>,
    keys: Cache<[u8; 32], Arc<Key>>,
}

fn proof_error(reason: &'static str, description: &'static str) -> AuthError {
    AuthError::DpopProof {
        reason,
        description,
    }
}

impl Dpop {
    pub(crate) fn new(config: DpopConfig) -> Self {
        let algs: Vec<&str> = config.algorithms.iter().map(|a| a.as_str()).collect();
        Dpop {
            algs: algs.join(" ").into(),
            config,
            keys: Cache::new(KEY_CACHE_ENTRIES),
        }
    }

    pub(crate) fn mode(&self) -> DpopMode {
        self.config.mode
    }

    /// The algorithms of the `WWW-Authenticate: DPoP` challenge.
    pub(crate) fn algs(&self) -> &str {
        &self.algs
    }

    /// Checks the token's binding for this request: a `cnf.jkt` token only
    /// with a valid proof of that key, a `DPoP` token only bound, `Bearer`
    /// only where the mode allows it.
    pub(crate) async fn check(
        &self,
        provider: &str,
        scheme: Scheme,
        token: &str,
        identity: &Identity,
        request: &Credentials<'_>,
    ) -> Result<(), AuthError> {
        let jkt = identity.claims.get("cnf").and_then(|c| c.get("jkt"));
        match scheme {
            Scheme::Bearer if jkt.is_some() => Err(AuthError::invalid(
                "dpop_bound_token",
                "The access token is bound to a DPoP key and needs a DPoP proof",
            )),
            Scheme::Bearer if self.config.mode == DpopMode::Required => Err(AuthError::invalid(
                "dpop_required",
                "The access token must come with a DPoP proof",
            )),
            Scheme::Bearer => Ok(()),
            Scheme::Dpop => {
                let Some(Value::String(jkt)) = jkt else {
                    return Err(AuthError::invalid(
                        "not_dpop_bound",
                        "The access token is not bound to a DPoP key",
                    ));
                };
                let proof = self.verify_proof(token, request)?;
                let thumbprint_matches: bool =
                    subtle::ConstantTimeEq::ct_eq(jkt.as_bytes(), proof.thumbprint.as_bytes())
                        .into();
                if !thumbprint_matches {
                    return Err(proof_error(
                        "dpop_key_mismatch",
                        "The DPoP proof key is not the one the access token is bound to",
                    ));
                }
                self.use_once(provider, &proof.jti, request).await
            }
        }
    }

    async fn use_once(
        &self,
        provider: &str,
        jti: &str,
        request: &Credentials<'_>,
    ) -> Result<(), AuthError> {
        let unavailable = AuthError::Unavailable {
            reason: "replay_cache_unavailable",
        };
        let once = request.once.ok_or(unavailable.clone())?;
        let ttl = Duration::from_secs(self.config.proof_lifetime_seconds + FUTURE_SKEW_SECONDS);
        match once.first_use(&once_key(b"dpop", provider, jti), ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(proof_error(
                "dpop_proof_replayed",
                "The DPoP proof was already used",
            )),
            Err(_) => Err(unavailable),
        }
    }

    /// Every proof check of CONTRACT §13 but the replay check; the key's
    /// thumbprint and the proof's `jti`.
    fn verify_proof(&self, token: &str, request: &Credentials<'_>) -> Result<Proof, AuthError> {
        let mut proofs = request.headers.get_all("dpop").iter();
        let (Some(proof), None) = (proofs.next(), proofs.next()) else {
            return Err(proof_error(
                "dpop_proof_count",
                "Exactly one DPoP proof header is required",
            ));
        };
        let malformed = || proof_error("dpop_malformed", "The DPoP proof is malformed");
        let proof = proof.to_str().map_err(|_| malformed())?.trim();
        if proof.len() > MAX_PROOF_BYTES {
            return Err(malformed());
        }
        let mut parts = proof.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let header = json_object(header_b64).ok_or_else(malformed)?;
        // A media type: compared without regard to case (RFC 7515 §4.1.9).
        let typ = header.get("typ").and_then(Value::as_str);
        if !typ.is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
            return Err(proof_error(
                "dpop_typ",
                "The DPoP proof typ must be dpop+jwt",
            ));
        }
        if header.contains_key("crit") || header.contains_key("b64") {
            return Err(malformed());
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::parse)
            .filter(|a| !a.is_hmac() && self.config.algorithms.contains(a))
            .ok_or_else(|| {
                proof_error(
                    "dpop_alg",
                    "The DPoP proof signing algorithm is not accepted",
                )
            })?;
        let jwk = header
            .get("jwk")
            .and_then(Value::as_object)
            .ok_or_else(|| proof_error("dpop_jwk", "The DPoP proof has no public jwk"))?;
        if jwk.keys().any(|m| PRIVATE_MEMBERS.contains(&m.as_str())) {
            return Err(proof_error(
                "dpop_private_key",
                "The DPoP proof jwk must not contain a private key",
            ));
        }
        let thumbprint = thumbprint(jwk)
            .ok_or_else(|| proof_error("dpop_jwk", "The DPoP proof jwk is not a usable key"))?;
        let cache_key: [u8; 32] = Sha256::digest(format!("{}\0{thumbprint}", alg.as_str())).into();
        let key = match self.keys.get(&cache_key) {
            Some(key) => key,
            None => {
                let key = proof_key(&Value::Object(jwk.clone()), alg)
                    .map(Arc::new)
                    .ok_or_else(|| {
                        proof_error("dpop_jwk", "The DPoP proof jwk is not a usable key")
                    })?;
                self.keys.insert(cache_key, key.clone());
                key
            }
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| malformed())?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signed = proof.get(..signed_len).ok_or_else(malformed)?;
        if !key.verifier().verify(alg, signed.as_bytes(), &signature) {
            return Err(proof_error(
                "dpop_bad_signature",
                "The DPoP proof signature is invalid",
            ));
        }
        let claims = json_object(payload_b64).ok_or_else(malformed)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let jti = text("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| proof_error("dpop_jti", "The DPoP proof has no jti"))?;
        let target = request.target.as_ref().ok_or_else(|| {
            proof_error("dpop_htu", "The DPoP proof htu does not match the request")
        })?;
        if text("htm") != Some(target.method.as_str()) {
            return Err(proof_error(
                "dpop_htm",
                "The DPoP proof htm does not match the request method",
            ));
        }
        if !text("htu").is_some_and(|htu| target.matches_htu(htu)) {
            return Err(proof_error(
                "dpop_htu",
                "The DPoP proof htu does not match the request URI",
            ));
        }
        let now = now_unix();
        let iat = claims.get("iat").and_then(Value::as_u64);
        let fresh = iat.is_some_and(|iat| {
            iat <= now.saturating_add(FUTURE_SKEW_SECONDS)
                && iat.saturating_add(self.config.proof_lifetime_seconds) >= now
        });
        if !fresh {
            return Err(proof_error(
                "dpop_iat",
                "The DPoP proof is too old or from the future",
            ));
        }
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        let ath_matches = text("ath").is_some_and(|a| {
            bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), ath.as_bytes()))
        });
        if !ath_matches {
            return Err(proof_error(
                "dpop_ath",
                "The DPoP proof ath does not match the access token",
            ));
        }
        Ok(Proof {
            thumbprint,
            jti: jti.to_string(),
        })
    }
}

struct Proof {
    thumbprint: String,
    jti: String,
}

/// JWK members that hold private key material (RFC 7518 §6).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn json_object(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The RFC 7638 SHA-256 thumbprint (base64url) of a public JWK: its
/// required members, in lexicographic order, as JSON without spaces.
pub(crate) fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let required: &[&str] = match member("kty")? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = serde_json::Map::new();
    for name in required {
        canonical.insert((*name).to_string(), Value::from(member(name)?));
    }
    // Inserted in lexicographic order, so the text is canonical whether
    // or not the map keeps insertion order.
    let text = serde_json::to_string(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk: Map<String, Value> = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
        )
        .unwrap();
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        let mut partial = jwk.clone();
        partial.remove("e");
        assert_eq!(thumbprint(&partial), None);
    }
}
