//! JWS signature checks: RSA, ECDSA and HMAC on OpenSSL (already linked
//! through Pingora), Ed25519 on `ed25519-dalek`, which verifies it about
//! twice as fast as OpenSSL here (README, "Micro-benchmarks"). The key
//! objects are built once when a key set is loaded, so a request pays for
//! the signature arithmetic alone.

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::memcmp;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

use crate::core::alg::Alg;

/// A verification key. Which algorithms it may check is decided by its
/// kind, never by the token.
pub(crate) enum VerifyKey {
    Rsa(PKey<Public>),
    /// A P-256 or P-384 key; `coordinate_len` is the curve's size in bytes
    /// (a JOSE signature is `r || s`, each that long).
    Ec {
        key: PKey<Public>,
        coordinate_len: usize,
    },
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(PKey<Private>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyKey::Rsa(_) => "Rsa",
            VerifyKey::Ec { .. } => "Ec",
            VerifyKey::Ed25519(_) => "Ed25519",
            VerifyKey::Hmac(_) => "Hmac(<redacted>)",
        })
    }
}

impl VerifyKey {
    /// An RSA key from its big-endian modulus and exponent.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Option<VerifyKey> {
        let rsa =
            Rsa::from_public_components(BigNum::from_slice(n).ok()?, BigNum::from_slice(e).ok()?)
                .ok()?;
        PKey::from_rsa(rsa).ok().map(VerifyKey::Rsa)
    }

    /// An EC key from its affine coordinates on `curve` (P-256 or P-384);
    /// `None` for a point that is not on the curve.
    pub(crate) fn ec(curve: Nid, x: &[u8], y: &[u8]) -> Option<VerifyKey> {
        let coordinate_len = match curve {
            Nid::X9_62_PRIME256V1 => 32,
            Nid::SECP384R1 => 48,
            _ => return None,
        };
        if x.len() != coordinate_len || y.len() != coordinate_len {
            return None;
        }
        let group = EcGroup::from_curve_name(curve).ok()?;
        let (x, y) = (BigNum::from_slice(x).ok()?, BigNum::from_slice(y).ok()?);
        let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?;
        key.check_key().ok()?;
        Some(VerifyKey::Ec {
            key: PKey::from_ec_key(key).ok()?,
            coordinate_len,
        })
    }

    /// An Ed25519 key from its 32 raw bytes; `None` for bytes that are no
    /// point of the curve.
    pub(crate) fn ed25519(x: &[u8]) -> Option<VerifyKey> {
        let bytes: &[u8; 32] = x.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .ok()
            .map(VerifyKey::Ed25519)
    }

    /// An HMAC secret.
    pub(crate) fn hmac(secret: &[u8]) -> Option<VerifyKey> {
        if secret.is_empty() {
            return None;
        }
        PKey::hmac(secret).ok().map(VerifyKey::Hmac)
    }

    /// Whether `signature` is `alg`'s signature of `message` by this key.
    /// An algorithm of another family than the key's never verifies.
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        self.check(alg, message, signature).unwrap_or(false)
    }

    fn check(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Option<bool> {
        match (self, alg) {
            (VerifyKey::Rsa(key), Alg::RS256 | Alg::RS384 | Alg::RS512) => {
                let mut v = Verifier::new(digest(alg), key).ok()?;
                v.set_rsa_padding(Padding::PKCS1).ok()?;
                v.verify_oneshot(signature, message).ok()
            }
            (VerifyKey::Rsa(key), Alg::PS256 | Alg::PS384 | Alg::PS512) => {
                // RFC 7518 §3.5: MGF1 with the same hash, salt as long as it.
                let mut v = Verifier::new(digest(alg), key).ok()?;
                v.set_rsa_padding(Padding::PKCS1_PSS).ok()?;
                v.set_rsa_mgf1_md(digest(alg)).ok()?;
                v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).ok()?;
                v.verify_oneshot(signature, message).ok()
            }
            (
                VerifyKey::Ec {
                    key,
                    coordinate_len,
                },
                Alg::ES256 | Alg::ES384,
            ) => {
                let expected = if alg == Alg::ES256 { 32 } else { 48 };
                if *coordinate_len != expected || signature.len() != 2 * expected {
                    return Some(false);
                }
                let (r, s) = signature.split_at(expected);
                let der = EcdsaSig::from_private_components(
                    BigNum::from_slice(r).ok()?,
                    BigNum::from_slice(s).ok()?,
                )
                .ok()?
                .to_der()
                .ok()?;
                let mut v = Verifier::new(digest(alg), key).ok()?;
                v.verify_oneshot(&der, message).ok()
            }
            (VerifyKey::Ed25519(key), Alg::EdDSA) => {
                // Strict: no small-order key or R, no non-canonical S.
                let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
                Some(key.verify_strict(message, &signature).is_ok())
            }
            (VerifyKey::Hmac(key), Alg::HS256 | Alg::HS384 | Alg::HS512) => {
                let mut signer = Signer::new(digest(alg), key).ok()?;
                let mac = signer.sign_oneshot_to_vec(message).ok()?;
                // Constant time; the lengths are public (the algorithm's).
                Some(mac.len() == signature.len() && memcmp::eq(&mac, signature))
            }
            _ => Some(false),
        }
    }
}

fn digest(alg: Alg) -> MessageDigest {
    match alg {
        Alg::RS256 | Alg::PS256 | Alg::ES256 | Alg::HS256 => MessageDigest::sha256(),
        Alg::RS384 | Alg::PS384 | Alg::ES384 | Alg::HS384 => MessageDigest::sha384(),
        Alg::RS512 | Alg::PS512 | Alg::HS512 | Alg::EdDSA => MessageDigest::sha512(),
    }
}
