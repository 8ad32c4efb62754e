//! The benchmark's signing key and tokens: one RSA key whose public half
//! goes to Portcullis as a JWKS file and to HAProxy as a PEM file, so both
//! verify the very same tokens; and a client's P-256 key, a token bound to
//! it (`cnf.jkt`) and its DPoP proofs (ES256), minted just before use so
//! their `iat` is fresh.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{json, Value};

pub(crate) const ISSUER: &str = "https://bench.portcullis.local/";
pub(crate) const AUDIENCE: &str = "bench-api";
const KID: &str = "bench";

/// Files written once per run, read by the servers and by wrk.
pub(crate) struct Credentials {
    pub(crate) jwks_file: PathBuf,
    pub(crate) public_pem: PathBuf,
    /// One token, for the cached rows.
    pub(crate) token: String,
    /// One token per line, every one distinct (its own `jti`), for the
    /// uncached rows.
    pub(crate) tokens_file: PathBuf,
    pub(crate) tokens: Vec<String>,
    /// The DPoP row's client key and bound token.
    pub(crate) dpop: Dpop,
}

/// A DPoP client: its key, the public JWK its proofs carry, and a token
/// bound to that key.
pub(crate) struct Dpop {
    key: EcKey<Private>,
    jwk: Value,
    /// `DPoP <token>`, the `Authorization` value.
    pub(crate) authorization: String,
}

impl Dpop {
    fn create(signer: &PKey<Private>, now: u64) -> Result<Self, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = EcKey::generate(&group)?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        let mut ctx = BigNumContext::new()?;
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
        let (x, y) = (b64(&x.to_vec_padded(32)?), b64(&y.to_vec_padded(32)?));
        // RFC 7638: the required members, in lexicographic order.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let jkt = b64(&hash(MessageDigest::sha256(), canonical.as_bytes())?);
        let token = sign_rs256(signer, now, usize::MAX, Some(&jkt))?;
        Ok(Dpop {
            key,
            jwk: json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
            authorization: format!("DPoP {token}"),
        })
    }

    /// `n` proofs for `GET htu`, each with its own `jti`, issued now.
    pub(crate) fn proofs(&self, htu: &str, n: usize) -> Result<Vec<String>, String> {
        let err = |e: openssl::error::ErrorStack| e.to_string();
        let token = self.authorization.trim_start_matches("DPoP ");
        let ath = b64(&hash(MessageDigest::sha256(), token.as_bytes()).map_err(err)?);
        let header = b64(
            json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk })
                .to_string()
                .as_bytes(),
        );
        let now = unix_now()?;
        let salt = std::process::id();
        (0..n)
            .map(|_| {
                let jti = NEXT_PROOF.fetch_add(1, Ordering::Relaxed);
                let claims = json!({
                    "jti": format!("{salt}-{jti}"), "htm": "GET", "htu": htu,
                    "iat": now, "ath": ath,
                });
                let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
                let digest = hash(MessageDigest::sha256(), input.as_bytes()).map_err(err)?;
                let sig = EcdsaSig::sign(&digest, &self.key).map_err(err)?;
                let mut raw = sig.r().to_vec_padded(32).map_err(err)?;
                raw.extend(sig.s().to_vec_padded(32).map_err(err)?);
                Ok(format!("{input}.{}", b64(&raw)))
            })
            .collect()
    }
}

/// Every proof of the run has its own `jti`.
static NEXT_PROOF: AtomicU64 = AtomicU64::new(0);

fn unix_now() -> Result<u64, String> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
}

impl Credentials {
    /// A fresh 2048-bit key and `distinct` + 1 RS256 tokens valid for a day.
    pub(crate) fn create(dir: &Path, distinct: usize) -> Result<Self, String> {
        let err = |e: openssl::error::ErrorStack| e.to_string();
        let rsa = Rsa::generate(2048).map_err(err)?;
        let jwk = json!({
            "kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig",
            "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
        });
        let public_pem = rsa.public_key_to_pem().map_err(err)?;
        let key = PKey::from_rsa(rsa).map_err(err)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let sign = |jti: usize| sign_rs256(&key, now, jti, None).map_err(err);
        let token = sign(0)?;
        let tokens = (1..=distinct).map(sign).collect::<Result<Vec<_>, _>>()?;
        let dpop = Dpop::create(&key, now).map_err(err)?;
        let creds = Credentials {
            dpop,
            jwks_file: dir.join("jwks.json"),
            public_pem: dir.join("public.pem"),
            token,
            tokens_file: dir.join("tokens.txt"),
            tokens,
        };
        let write = |path: &Path, bytes: &[u8]| {
            fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
        };
        write(
            &creds.jwks_file,
            json!({ "keys": [jwk] }).to_string().as_bytes(),
        )?;
        write(&creds.public_pem, &public_pem)?;
        write(
            &creds.tokens_file,
            (creds.tokens.join("\n") + "\n").as_bytes(),
        )?;
        Ok(creds)
    }
}

fn sign_rs256(
    key: &PKey<Private>,
    now: u64,
    jti: usize,
    jkt: Option<&str>,
) -> Result<String, openssl::error::ErrorStack> {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": KID });
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "azp": "bench-cli",
        "scope": "bench", "realm_access": { "roles": ["bench"] },
        "iat": now, "exp": now + 86_400, "jti": format!("bench-{jti}"),
    });
    if let Some(jkt) = jkt {
        claims["cnf"] = json!({ "jkt": jkt });
    }
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&signer.sign_to_vec()?)))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
