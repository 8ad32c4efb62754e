//! The benchmark's signing key and tokens: one RSA key whose public half
//! goes to Portcullis as a JWKS file and to HAProxy as a PEM file, so both
//! verify the very same tokens.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::json;

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
        let sign = |jti: usize| sign_rs256(&key, now, jti).map_err(err);
        let token = sign(0)?;
        let tokens = (1..=distinct).map(sign).collect::<Result<Vec<_>, _>>()?;
        let creds = Credentials {
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
) -> Result<String, openssl::error::ErrorStack> {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": KID });
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "azp": "bench-cli",
        "scope": "bench", "realm_access": { "roles": ["bench"] },
        "iat": now, "exp": now + 86_400, "jti": format!("bench-{jti}"),
    });
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
