//! The keys a JWT provider trusts, as an immutable, verified set.
//!
//! A set is built once, when a JWKS document is loaded or refreshed (or a
//! `secret_file` is read), and then shared by every request behind an `Arc`:
//! all parsing and sanity checking of key material happens here, so
//! verifying a token never parses a key document and a broken key is
//! dropped at load time instead of failing every token that names it.
//!
//! Keys that cannot be used for verification under the provider's algorithm
//! allowlist are skipped rather than fatal, because identity providers
//! routinely publish encryption keys, keys for other algorithms and key types
//! this gateway does not support next to the signing keys it needs. Only a
//! document that is not a JWKS at all, or one that leaves no usable key, is
//! an error: callers treat that as a failed refresh and keep their last good
//! set.

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;

use super::signature::VerifyKey;
pub use crate::core::alg::Alg;
use pingora::tls::nid::Nid;

impl From<Alg> for Algorithm {
    fn from(alg: Alg) -> Algorithm {
        match alg {
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
        }
    }
}

/// Why a key set could not be built. The messages name no key material:
/// they end up in logs and in the security log's `jwks_refresh_failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("not a JWKS document (expected a JSON object with a \"keys\" array)")]
    Malformed,
    /// The document parsed, but none of its keys can verify a token under
    /// the configured algorithms.
    #[error(
        "the JWKS has no usable signature key for the allowed algorithms ({skipped} keys skipped)"
    )]
    NoUsableKeys { skipped: usize },
    /// An empty shared secret would make every HMAC trivially forgeable.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// A shared secret was given but no HS* algorithm is allowed, so it
    /// could never verify anything.
    #[error("an HMAC secret needs an HS256, HS384 or HS512 algorithm in `algorithms`")]
    NoHmacAlgorithm,
}

/// RSA moduli below 2048 bits are factorable in practice (NIST SP 800-131A);
/// a provider publishing one is misconfigured, and trusting it would let
/// anyone who factors it mint tokens.
const MIN_RSA_BITS: usize = 2048;
/// The largest modulus the RSA backend verifies with; larger keys would only
/// fail every token later.
const MAX_RSA_BITS: usize = 8192;
/// The largest public exponent the RSA backend accepts (2^33 - 1).
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;

/// What a key is, which decides the algorithms it may verify. Keeping this
/// next to the key (rather than trusting the token's `alg`) is what rules
/// out algorithm confusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// A shared secret; only ever from [`KeySet::from_secret`].
    Oct,
}

impl KeyFamily {
    fn supports(self, alg: Alg) -> bool {
        match self {
            KeyFamily::Rsa => matches!(
                alg,
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ),
            KeyFamily::P256 => alg == Alg::ES256,
            KeyFamily::P384 => alg == Alg::ES384,
            KeyFamily::Ed25519 => alg == Alg::EdDSA,
            KeyFamily::Oct => alg.is_hmac(),
        }
    }
}

/// One trusted key, ready to verify with.
#[derive(Debug)]
pub(crate) struct Key {
    kid: Option<String>,
    /// Built once here, as an OpenSSL key of the key's family, which refuses
    /// an algorithm of another family.
    key: VerifyKey,
    family: KeyFamily,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Alg>,
    /// SHA-256 over the key material and its pinned `alg`: what a cached
    /// verification is bound to, so that a key replaced under the same
    /// `kid` does not vouch for tokens the old one verified.
    fingerprint: [u8; 32],
}

impl Key {
    /// Whether this key may verify a token signed with `alg`: the key type
    /// must fit the algorithm and a pinned JWK `alg` must be exactly it.
    fn accepts(&self, alg: Alg) -> bool {
        self.family.supports(alg) && self.alg.is_none_or(|own| own == alg)
    }

    pub(crate) fn verifier(&self) -> &VerifyKey {
        &self.key
    }

    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

/// SHA-256 of length-prefixed parts, so no two different part lists hash
/// alike.
fn fingerprint_of(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// An immutable set of verification keys. `Send + Sync` and cheap to share
/// behind an `Arc`; a refresh builds a new set and swaps it in whole.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<Key>,
}

/// The JWKS envelope; keys stay untyped so one odd key cannot fail the lot.
#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The JWK members this gateway looks at (RFC 7517, RFC 7518 §6, RFC 8037).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    public_key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl RawJwk {
    /// The usable verification key this JWK describes, or `None` when it
    /// must be skipped (see [`KeySet::from_jwks`]).
    fn into_key(self, allowed: &[Alg]) -> Option<Key> {
        let member = |m: &Option<String>| m.as_deref().unwrap_or_default().as_bytes().to_vec();
        let fingerprint = fingerprint_of(&[
            self.kty.as_bytes(),
            &member(&self.crv),
            &member(&self.n),
            &member(&self.e),
            &member(&self.x),
            &member(&self.y),
            &member(&self.alg),
        ]);
        if self.public_key_use.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        if let Some(ops) = &self.key_ops {
            if !ops.iter().any(|op| op == "verify") {
                return None;
            }
        }
        let alg = match self.alg.as_deref() {
            None => None,
            Some(name) => Some(Alg::parse(name).filter(|alg| allowed.contains(alg))?),
        };
        let (family, key) = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => (KeyFamily::Rsa, rsa_key(self.n?.as_str(), self.e?.as_str())?),
            ("EC", Some("P-256")) => (KeyFamily::P256, ec_key(&self.x?, &self.y?, 32)?),
            ("EC", Some("P-384")) => (KeyFamily::P384, ec_key(&self.x?, &self.y?, 48)?),
            ("OKP", Some("Ed25519")) => (KeyFamily::Ed25519, ed25519_key(&self.x?)?),
            // Symmetric keys never come from a JWKS: a shared secret served
            // over HTTP is no secret, and HS* must only use `secret_file`.
            _ => return None,
        };
        // The algorithm to check the key against: its own, else the first
        // allowed one it fits; none means the key can never be used.
        let usable_alg = match alg {
            Some(alg) => Some(alg).filter(|alg| family.supports(*alg))?,
            None => allowed.iter().copied().find(|alg| family.supports(*alg))?,
        };
        if !backend_accepts(&key, usable_alg) {
            return None;
        }
        let key = openssl_key(family, &key)?;
        Some(Key {
            kid: self.kid,
            key,
            family,
            alg,
            fingerprint,
        })
    }
}

/// The key of a DPoP proof's header `jwk` (already checked to hold public
/// members only), usable with exactly `alg`; `None` for anything the JWKS
/// reader would skip.
pub(crate) fn proof_key(jwk: &serde_json::Value, alg: Alg) -> Option<Key> {
    RawJwk::deserialize(jwk).ok()?.into_key(&[alg])
}

/// An RSA public key from its base64url `n` and `e`, if it is of a sane
/// size with a sane exponent.
fn rsa_key(n: &str, e: &str) -> Option<DecodingKey> {
    let key = DecodingKey::from_rsa_components(n, e).ok()?;
    let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() else {
        return None;
    };
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
        None => return None,
    };
    let e = strip_leading_zeros(e);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || e.len() > 8 {
        return None;
    }
    let exponent = e
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    if exponent < 3 || exponent % 2 == 0 || exponent > MAX_RSA_EXPONENT {
        return None;
    }
    Some(key)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// An EC public key from base64url coordinates of exactly the curve's size.
fn ec_key(x: &str, y: &str, coordinate_len: usize) -> Option<DecodingKey> {
    let key = DecodingKey::from_ec_components(x, y).ok()?;
    // The backend keeps the uncompressed SEC1 point: 0x04 || x || y.
    let point_len = key.try_get_as_bytes().ok()?.len();
    (point_len == 1 + 2 * coordinate_len).then_some(key)
}

/// An Ed25519 public key from its base64url `x`, exactly 32 bytes: the
/// backend slices the first 32 bytes without a length check, so a short key
/// must never reach it.
fn ed25519_key(x: &str) -> Option<DecodingKey> {
    let key = DecodingKey::from_ed_components(x).ok()?;
    (key.try_get_as_bytes().ok()?.len() == 32).then_some(key)
}

/// Whether the crypto backend can build a verifier from this key. Building
/// one parses the key (an EC point must be on its curve, an Ed25519 point
/// must decompress), so an invalid key is caught here, at load time,
/// rather than as a `bad_signature` on every token. The empty signature
/// never verifies; only an error (an unparsable key) matters.
fn backend_accepts(key: &DecodingKey, alg: Alg) -> bool {
    jsonwebtoken::crypto::verify("", b"", key, alg.into()).is_ok()
}

/// The OpenSSL key for a JWK's material, which the checks above accepted.
fn openssl_key(family: KeyFamily, key: &DecodingKey) -> Option<VerifyKey> {
    match (family, key.kind()) {
        (KeyFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => VerifyKey::rsa(n, e),
        (KeyFamily::P256 | KeyFamily::P384, _) => {
            let (curve, len) = if family == KeyFamily::P256 {
                (Nid::X9_62_PRIME256V1, 32)
            } else {
                (Nid::SECP384R1, 48)
            };
            // The uncompressed SEC1 point: 0x04 || x || y.
            let point = key.try_get_as_bytes().ok()?;
            let (x, y) = point.get(1..)?.split_at_checked(len)?;
            VerifyKey::ec(curve, x, y)
        }
        (KeyFamily::Ed25519, _) => VerifyKey::ed25519(key.try_get_as_bytes().ok()?),
        _ => None,
    }
}

impl KeySet {
    /// Parse a JWKS document (`{"keys":[...]}`), keeping only the keys that
    /// can verify a token under `allowed`.
    ///
    /// A key is skipped, not fatal, when its `use` is not `sig`, its
    /// `key_ops` lack `verify`, its `kty`/`crv` is unsupported (symmetric
    /// `oct` keys included), its `alg` is unknown, not in `allowed` or does
    /// not fit the key type, no allowed algorithm fits its type, or its
    /// material is invalid (RSA outside 2048..=8192 bits, wrong coordinate
    /// sizes, a point not on the curve). Fails on a document that is not a
    /// JWKS ([`JwksError::Malformed`]) or that leaves no usable key
    /// ([`JwksError::NoUsableKeys`]): callers treat both as a failed refresh
    /// and keep their last good set.
    pub fn from_jwks(json: &[u8], allowed: &[Alg]) -> Result<KeySet, JwksError> {
        let document: Document = serde_json::from_slice(json).map_err(|_| JwksError::Malformed)?;
        let total = document.keys.len();
        let keys: Vec<Key> = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<RawJwk>(value).ok())
            .filter_map(|jwk| jwk.into_key(allowed))
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped: total });
        }
        Ok(KeySet { keys })
    }

    /// An HMAC secret (the bytes of `secret_file`, used as they are) as a
    /// set of one key without a kid, usable only with HS* algorithms.
    pub fn from_secret(secret: &[u8], allowed: &[Alg]) -> Result<KeySet, JwksError> {
        if !allowed.iter().any(|alg| alg.is_hmac()) {
            return Err(JwksError::NoHmacAlgorithm);
        }
        let key = VerifyKey::hmac(secret).ok_or(JwksError::EmptySecret)?;
        Ok(KeySet {
            keys: vec![Key {
                kid: None,
                key,
                family: KeyFamily::Oct,
                alg: None,
                fingerprint: fingerprint_of(&[b"oct", secret]),
            }],
        })
    }

    /// The key ids in the set, sorted and without repeats, for `/status`.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.iter().filter_map(|key| key.kid.clone()).collect();
        kids.sort_unstable();
        kids.dedup();
        kids
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    /// Whether the key with this fingerprint is still in the set.
    pub fn contains_key(&self, fingerprint: &[u8; 32]) -> bool {
        self.keys.iter().any(|key| key.fingerprint == *fingerprint)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys worth trying for a token header, each compatible with `alg`
    /// (key type fits, a pinned JWK `alg` equals it).
    ///
    /// A kid the set knows selects exactly the keys with that kid. A kid the
    /// set does not know falls back to the keys that have no kid, as
    /// RFC 7517 leaves kid matching to keys that carry one (a `secret_file`
    /// key, or a provider that publishes a single kid-less key); if there
    /// are none the iterator is empty and the caller reports an unknown kid.
    /// Without a kid every compatible key is a candidate, bounded by the
    /// size of the set.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        let known_kid = kid.filter(|kid| self.contains_kid(kid));
        self.keys.iter().filter(move |key| {
            key.accepts(alg)
                && match (kid, known_kid) {
                    (None, _) => true,
                    (Some(_), Some(known)) => key.kid.as_deref() == Some(known),
                    (Some(_), None) => key.kid.is_none(),
                }
        })
    }
}

/// Fixed key pairs for the unit tests, generated once with `openssl
/// genpkey` (`genrsa -traditional` for RSA, which `jsonwebtoken` signs with
/// in PKCS#1 form) so the tests stay hermetic. Test-only: never trust them.
#[cfg(test)]
pub(crate) mod test_keys {
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey};

    pub(crate) const RSA_PRIVATE: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAs6tm/Bis6PPvqpLijxGfZXpXYcdjv+iT94GMjDwEOIpb1rjI
YqunyTVR/pYuJHqe6x4jOPfx0+D35abkP9iPYVakI2Y1NnsTEc1Np0rngJ8fsm0i
gVAAfg/gv9b0WLw88ICoa8irXa0bJbUWdflsFm88AQW68ea0Oddn0KbQOTjl6Hh8
72kZMlfVvDUchR3uEekJAoML52HTvjLO1YTZX8TrXfIgvW3HbOi8cjsjsgp2Bttw
9AMiJZwPKOodq5+MRC170ePSQvZO1J+jkV8lAmyvbeI39H6itTDVGrFbygxxQIFi
oIDPKs7+LOE7A7GU+fVskg2FvZDeuRWriFh0vwIDAQABAoIBABul46olje4nI5ln
ExAbESFHi0zTpwjwHFz5BYzK64db2zgWpVdxvNccqmp358/bQrtBnv/0P7VwKBWh
8fvVMnMzJvz/jG6+z7dslWeKAkfrtK/7VVT636iGfvpmdKF3DhWgZsp3Tc+ThNrv
m+45nKVzJpOtsw/ohZFlEWetU9uKIN1E46jS9bVso4ernTe0ZOPB98QeBCVdciwJ
fv7RbXFYMVB4uJacRdchoxKylxVaBdqQjdqQwkw7TMBkQWcCtj1o0Cq8DkY9qP3L
vP6rOnTYb07aopAsruOUpGoLDvigtD5qjoO8mjzGB+zWyMDjOr4XmoLdE1GyRYmO
LGZXdyECgYEA4BBCR6LagPzHRN+CbgJZxfpk7062JGvrGM57ZQyXgKHny01vMUAg
6AjAWt5v3a1jwnKPLL54BzZspLhg6Otqb+3GZkm33A6VDQ06/c8ow6XngoK6+Vx8
zqfVvVaxC0eJxCGjguVO83B9EB25nnu8RHkcpcOAytOTH1iHf3U3me8CgYEAzUdG
Jrxb3QQh/kkiwYP4GmFpw37NvDfGPtITeyPEPjIOgZloYc/G9ZeZdnXF5cm7Tup3
j7Lmiu4HGyWm/KuXslrx8lXhQXYZ8l2MOhGB0a9NDAnlIiSUKrUOVL8djogNbgMm
9PhrJrQLFxVbGdyDeb6ZC/4N2udpkuiLyYUh4jECgYEAm0vJlHsUNNh+iIbdkL/C
VwygTpjgd0fxDyV1sujSTM5qqKcHzTvkUs5V++U15ZAal5ftEhcFfAJFtLkyOd2I
zQEhRJ4Nd9EHj58+5tFhMJFZb0SKsPBgdJ8w7mUamnW/z5d9C+lBGks58ySXFXgv
WcoTh/SD3JBd5Rjn+PhWTDMCgYEAkcpp/z7Ne3Xg8qlcntWsUogWxnp7gY6XJKys
m0s2p/mDJfYfFUCtDGWj32cbquyQNCb/zTYA2HDe6R/frhnsPgarSTJHLefD28cm
vWMLsTFwZfltG8eg14gJapTlWAI2j4h7lYYNC8rZCYboUcC0O7XrGoJPssWhzG2O
QgxkmTECgYBwxDH27HKG6QFXhrJVUEA7x00ESXjjuYLO9+J+E916t68oiaamZVLh
mvZS0vuw3RHw0H6vy32S26Qz9gKbOG4mHLCDgnAIfFogckOLady0n0kmuv6ghEwS
xyqWpuaVeWodUjfr5atu1LpgUYoAFIFY5tA1V2XntVWUdGkrao7F+w==
-----END RSA PRIVATE KEY-----
";

    /// The public half of [`RSA_PRIVATE`], as an attacker would find it.
    pub(crate) const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs6tm/Bis6PPvqpLijxGf
ZXpXYcdjv+iT94GMjDwEOIpb1rjIYqunyTVR/pYuJHqe6x4jOPfx0+D35abkP9iP
YVakI2Y1NnsTEc1Np0rngJ8fsm0igVAAfg/gv9b0WLw88ICoa8irXa0bJbUWdfls
Fm88AQW68ea0Oddn0KbQOTjl6Hh872kZMlfVvDUchR3uEekJAoML52HTvjLO1YTZ
X8TrXfIgvW3HbOi8cjsjsgp2Bttw9AMiJZwPKOodq5+MRC170ePSQvZO1J+jkV8l
AmyvbeI39H6itTDVGrFbygxxQIFioIDPKs7+LOE7A7GU+fVskg2FvZDeuRWriFh0
vwIDAQAB
-----END PUBLIC KEY-----
";

    pub(crate) const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaUVxgtgcf9G35/yK
zw2rOXrfO+piiSoSZIpZ5FgEnVqhRANCAATpKN6V3R82ikzZf8j65Bd4BO6JlOFt
5fyEmiRhDgJuiykjtmO/MDsrtwMVtBCZ/jFoEr7BCLB5sYbmcMk6wnpA
-----END PRIVATE KEY-----
";

    pub(crate) const P384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCcbFN7BuxucsAnYRFF
CjhF+ky45qpCcjZhgz33isxwfXxuYB7ARyOY0F9dl+A6k2OhZANiAASnhqDLzs12
7roKZ3LnCejZAj/NRHLAdAMM/+VeVApdO/LUhJxv7TgQfRw+qZWSV1ByCxc6fFxJ
Dpuxlodbiis/UUewck1VJ+8V/KiTJqzF996s2b071I3rZ+smmx7dqaY=
-----END PRIVATE KEY-----
";

    pub(crate) const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFTRZn7wcmLc50mMVfnkNaTcaPQoWJaGLP3XV6QmnOMF
-----END PRIVATE KEY-----
";

    pub(crate) const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// The signing key for `alg` from the fixed keys above.
    pub(crate) fn signing_key(alg: Algorithm) -> EncodingKey {
        let key = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()),
            Algorithm::ES384 => EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()),
            _ => EncodingKey::from_secret(HMAC_SECRET),
        };
        key.expect("fixed test key parses")
    }

    /// The public JWK for `alg`'s test key with the given kid, pinned to
    /// `alg` (the tests remove or change `alg` where they need to).
    pub(crate) fn public_jwk(alg: Algorithm, kid: &str) -> serde_json::Value {
        let mut jwk = Jwk::from_encoding_key(&signing_key(alg), alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(&jwk).expect("JWK serializes")
    }

    pub(crate) fn jwks(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("JWKS serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::{jwks, public_jwk, HMAC_SECRET};
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    const ASYMMETRIC: &[Alg] = &[Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA];

    fn full_set() -> KeySet {
        let doc = jwks(vec![
            public_jwk(Algorithm::RS256, "rsa"),
            public_jwk(Algorithm::ES256, "p256"),
            public_jwk(Algorithm::ES384, "p384"),
            public_jwk(Algorithm::EdDSA, "ed"),
        ]);
        KeySet::from_jwks(&doc, ASYMMETRIC).expect("key set")
    }

    #[test]
    fn alg_names_round_trip_and_none_is_not_an_alg() {
        for alg in Alg::ALL {
            assert_eq!(Alg::parse(alg.as_str()), Some(alg));
        }
        for name in ["none", "None", "NONE", "rs256", "ES512", "", "RSA-OAEP"] {
            assert_eq!(Alg::parse(name), None, "{name}");
        }
        assert!(Alg::HS384.is_hmac());
        assert!(!Alg::RS256.is_hmac());
        assert_eq!(Algorithm::from(Alg::EdDSA), Algorithm::EdDSA);
    }

    #[test]
    fn parses_every_supported_key_type() {
        let set = full_set();
        assert_eq!(set.len(), 4);
        assert!(!set.is_empty());
        assert_eq!(set.kids(), vec!["ed", "p256", "p384", "rsa"]);
        assert!(set.contains_kid("p384"));
        assert!(!set.contains_kid("nope"));
    }

    #[test]
    fn key_set_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeySet>();
    }

    #[test]
    fn skips_keys_not_for_signature_verification() {
        let mut enc = public_jwk(Algorithm::RS256, "enc");
        enc["use"] = json!("enc");
        let mut sig = public_jwk(Algorithm::RS256, "sig");
        sig["use"] = json!("sig");
        let mut sign_only = public_jwk(Algorithm::RS256, "sign-only");
        sign_only["key_ops"] = json!(["sign"]);
        let set =
            KeySet::from_jwks(&jwks(vec![enc, sig, sign_only]), &[Alg::RS256]).expect("key set");
        assert_eq!(set.kids(), vec!["sig"]);
    }

    #[test]
    fn skips_unsupported_and_disallowed_keys() {
        let oct = json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
        let p521 = json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"});
        let x25519 = json!({"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": "AA"});
        let mut unknown_alg = public_jwk(Algorithm::RS256, "oaep");
        unknown_alg["alg"] = json!("RSA-OAEP");
        let mut mismatched_alg = public_jwk(Algorithm::RS256, "mismatch");
        mismatched_alg["alg"] = json!("ES256");
        let rs384 = public_jwk(Algorithm::RS384, "rs384");
        let not_an_object = json!("garbage");
        let wrong_member_type = json!({"kty": "RSA", "kid": 7, "n": "AQAB", "e": "AQAB"});
        let keep = public_jwk(Algorithm::ES256, "keep");
        let doc = jwks(vec![
            oct,
            p521,
            x25519,
            unknown_alg,
            mismatched_alg,
            rs384,
            not_an_object,
            wrong_member_type,
            keep,
        ]);
        let set = KeySet::from_jwks(&doc, &[Alg::RS256, Alg::ES256, Alg::HS256]).expect("set");
        assert_eq!(set.kids(), vec!["keep"]);
    }

    #[test]
    fn skips_keys_whose_type_fits_no_allowed_alg() {
        let mut ec_without_alg = public_jwk(Algorithm::ES256, "ec");
        ec_without_alg
            .as_object_mut()
            .expect("object")
            .remove("alg");
        let doc = jwks(vec![ec_without_alg, public_jwk(Algorithm::RS256, "rsa")]);
        let set = KeySet::from_jwks(&doc, &[Alg::RS256]).expect("set");
        assert_eq!(set.kids(), vec!["rsa"]);
    }

    #[test]
    fn skips_invalid_key_material_without_panicking() {
        let rsa = public_jwk(Algorithm::RS256, "rsa");
        // A 1024-bit modulus: too weak to trust.
        let mut weak = rsa.clone();
        weak["kid"] = json!("weak");
        weak["n"] = json!(URL_SAFE_NO_PAD.encode([0xff; 128]));
        let mut even_exponent = rsa.clone();
        even_exponent["kid"] = json!("even-e");
        even_exponent["e"] = json!("AQAA");
        let mut bad_base64 = rsa.clone();
        bad_base64["kid"] = json!("bad-b64");
        bad_base64["n"] = json!("!!!");
        // Ed25519 with a short x would make the backend slice out of range.
        let short_ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "short-ed", "x": "AAEC"});
        let mut long_ec = public_jwk(Algorithm::ES256, "long-ec");
        long_ec["x"] = json!(URL_SAFE_NO_PAD.encode([7; 33]));
        // Right sizes, but (0, 1) is not a point on P-256.
        let off_curve = json!({
            "kty": "EC", "crv": "P-256", "kid": "off-curve",
            "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE",
        });
        let missing_member = json!({"kty": "RSA", "kid": "no-e", "n": rsa["n"].clone()});
        let doc = jwks(vec![
            weak,
            even_exponent,
            bad_base64,
            short_ed,
            long_ec,
            off_curve,
            missing_member,
            rsa,
        ]);
        let set = KeySet::from_jwks(&doc, ASYMMETRIC).expect("set");
        assert_eq!(set.kids(), vec!["rsa"]);
    }

    #[test]
    fn malformed_documents_fail() {
        for doc in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"keys\": {}}",
            b"{\"keys\": \"x\"}",
            b"",
        ] {
            assert_eq!(
                KeySet::from_jwks(doc, ASYMMETRIC).err(),
                Some(JwksError::Malformed)
            );
        }
    }

    #[test]
    fn a_document_without_usable_keys_fails() {
        assert_eq!(
            KeySet::from_jwks(b"{\"keys\": []}", ASYMMETRIC).err(),
            Some(JwksError::NoUsableKeys { skipped: 0 })
        );
        let mut enc = public_jwk(Algorithm::RS256, "enc");
        enc["use"] = json!("enc");
        assert_eq!(
            KeySet::from_jwks(&jwks(vec![enc]), ASYMMETRIC).err(),
            Some(JwksError::NoUsableKeys { skipped: 1 })
        );
    }

    #[test]
    fn secret_sets() {
        let set = KeySet::from_secret(HMAC_SECRET, &[Alg::HS256]).expect("set");
        assert_eq!(set.len(), 1);
        assert!(set.kids().is_empty());
        assert_eq!(
            KeySet::from_secret(b"", &[Alg::HS256]).err(),
            Some(JwksError::EmptySecret)
        );
        assert_eq!(
            KeySet::from_secret(HMAC_SECRET, &[Alg::RS256]).err(),
            Some(JwksError::NoHmacAlgorithm)
        );
        // Neither the set nor an error shows the secret.
        let shown = format!("{set:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn candidates_by_kid_and_alg() {
        let set = full_set();
        let kids = |kid: Option<&str>, alg: Alg| -> Vec<Option<String>> {
            set.candidates(kid, alg)
                .map(|key| key.kid.clone())
                .collect()
        };
        assert_eq!(kids(Some("rsa"), Alg::RS256), vec![Some("rsa".into())]);
        // The RSA JWK pins RS256: no other RSA algorithm may use it.
        assert!(kids(Some("rsa"), Alg::PS256).is_empty());
        // A known kid whose key does not fit the alg.
        assert!(kids(Some("p256"), Alg::ES384).is_empty());
        // An unknown kid, and no kid-less key to fall back on.
        assert!(kids(Some("other"), Alg::ES256).is_empty());
        // No kid: every compatible key.
        assert_eq!(kids(None, Alg::ES384), vec![Some("p384".into())]);
        assert!(kids(None, Alg::HS256).is_empty());
    }

    #[test]
    fn an_unknown_kid_falls_back_to_kidless_keys() {
        let set = KeySet::from_secret(HMAC_SECRET, &[Alg::HS256]).expect("set");
        assert_eq!(set.candidates(Some("k1"), Alg::HS256).count(), 1);
        assert_eq!(set.candidates(None, Alg::HS512).count(), 1);
        assert_eq!(set.candidates(None, Alg::RS256).count(), 0);
    }
}
