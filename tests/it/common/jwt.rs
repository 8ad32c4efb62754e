//! Signing keys generated at test time, their public JWKs, and tokens.
//!
//! RSA keys come from OpenSSL (through `pingora::tls::ssl_sys`, the only
//! RSA key generator the crate's dependencies expose), P-256 keys from
//! rcgen; tokens are signed with `jsonwebtoken`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A private signing key with its key id.
pub struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// An Ed25519 key's public `x` (base64url), kept from generation.
    okp_x: Option<String>,
}

impl TestKey {
    /// A fresh 2048-bit RSA key for RS256.
    pub fn rsa(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&generate_rsa_pkcs1_der(2048)),
            okp_x: None,
        }
    }

    /// A fresh P-256 key for ES256.
    pub fn ec256(kid: &str) -> TestKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate P-256 key");
        let encoding =
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("P-256 PKCS#8 PEM");
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding,
            okp_x: None,
        }
    }

    /// A fresh Ed25519 key for EdDSA.
    pub fn ed25519(kid: &str) -> TestKey {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("generate Ed25519 key");
        let encoding =
            EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("Ed25519 PEM");
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::EdDSA,
            encoding,
            okp_x: Some(b64url(pair.public_key_raw())),
        }
    }

    /// The JOSE name of the key's algorithm.
    pub fn alg_name(&self) -> &'static str {
        alg_name(self.alg)
    }

    /// A compact JWS of exactly these header and payload JSON texts, so a
    /// test controls every member (DPoP proofs with odd headers).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.encoding, self.alg)
                .expect("sign JWS");
        format!("{signing_input}.{signature}")
    }

    /// The same key material under another kid.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            alg: self.alg,
            encoding: self.encoding.clone(),
            okp_x: self.okp_x.clone(),
        }
    }

    /// The public JWK: `kty`, `kid`, `alg`, `use = "sig"` and `n`/`e` or
    /// `crv`/`x`/`y`.
    pub fn jwk(&self) -> Value {
        if let Some(x) = &self.okp_x {
            return json!({
                "kty": "OKP", "kid": self.kid, "alg": "EdDSA", "use": "sig",
                "crv": "Ed25519", "x": x,
            });
        }
        let jwk = Jwk::from_encoding_key(&self.encoding, self.alg).expect("public JWK");
        let alg = alg_name(self.alg);
        match jwk.algorithm {
            AlgorithmParameters::RSA(p) => json!({
                "kty": "RSA", "kid": self.kid, "alg": alg, "use": "sig", "n": p.n, "e": p.e,
            }),
            AlgorithmParameters::EllipticCurve(p) => json!({
                "kty": "EC", "kid": self.kid, "alg": alg, "use": "sig",
                "crv": "P-256", "x": p.x, "y": p.y,
            }),
            AlgorithmParameters::OctetKeyPair(p) => json!({
                "kty": "OKP", "kid": self.kid, "alg": alg, "use": "sig",
                "crv": "Ed25519", "x": p.x,
            }),
            other => panic!("unexpected JWK parameters {other:?}"),
        }
    }

    /// A token signed with this key: header `alg` per key type, `kid`.
    pub fn sign(&self, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with_header(header, claims)
    }

    /// A token with a header of the caller's choosing (its `alg` must fit
    /// the key).
    pub fn sign_with_header(&self, header: Header, claims: Value) -> String {
        encode(&header, &claims, &self.encoding).expect("sign token")
    }
}

/// `{"keys": [jwk, ...]}`.
pub fn jwks(keys: &[&TestKey]) -> String {
    let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Standard claims: `iss`, `aud`, `sub`, `iat` (now), `exp` (now +
/// `exp_in_secs`, which may be negative) and a unique `jti`, so that two
/// calls never mint the same token.
pub fn claims(iss: &str, aud: &str, sub: &str, exp_in_secs: i64) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": now,
        "exp": now.saturating_add_signed(exp_in_secs),
        "jti": unique_id(),
    })
}

/// A process-unique string.
pub fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "jti-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An HS256 token signed with `secret` (for algorithm-confusion tests).
pub fn sign_hs256(secret: &[u8], kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_secret(secret).expect("HMAC key");
    encode(&header, &claims, &key).expect("sign HS256")
}

/// An unsigned token: `b64(header).b64(claims).` (e.g. `alg: none`).
pub fn unsigned(header: Value, claims: Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// `token` with its payload replaced by `claims` and the original header
/// and signature kept: a forgery whose signature no longer matches.
pub fn tamper(token: &str, claims: Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token");
    format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// The decoded payload of a compact token (no verification).
pub fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload segment");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        other => panic!("no test keys for {other:?}"),
    }
}

/// A new RSA private key as PKCS#1 DER (the form `jsonwebtoken` signs with).
///
/// The crate depends on OpenSSL only through Pingora, which re-exports the
/// raw `openssl-sys` bindings but not the safe `openssl::rsa` API, hence
/// the FFI here.
fn generate_rsa_pkcs1_der(bits: i32) -> Vec<u8> {
    use pingora::tls::ssl_sys as ffi;
    ffi::init();
    // SAFETY: plain OpenSSL calls on objects created and freed here; every
    // pointer is checked before use, the DER buffer is sized by the first
    // `i2d_RSAPrivateKey` call and written by the second, which advances
    // only the local copy of the pointer.
    unsafe {
        let e = ffi::BN_new();
        assert!(!e.is_null(), "BN_new");
        assert_eq!(ffi::BN_set_word(e, 65537), 1, "BN_set_word");
        let rsa = ffi::RSA_new();
        assert!(!rsa.is_null(), "RSA_new");
        let generated = ffi::RSA_generate_key_ex(rsa, bits, e, std::ptr::null_mut());
        ffi::BN_free(e);
        if generated != 1 {
            ffi::RSA_free(rsa);
            panic!("RSA_generate_key_ex failed");
        }
        let len = ffi::i2d_RSAPrivateKey(rsa, std::ptr::null_mut());
        if len <= 0 {
            ffi::RSA_free(rsa);
            panic!("i2d_RSAPrivateKey failed");
        }
        let mut der = vec![0u8; len as usize];
        let mut out = der.as_mut_ptr();
        let written = ffi::i2d_RSAPrivateKey(rsa, &mut out);
        ffi::RSA_free(rsa);
        assert_eq!(written, len, "i2d_RSAPrivateKey wrote a different length");
        der
    }
}

/// An `[auth.NAME]` jwt provider for tokens made by [`claims`] with issuer
/// `https://idp.test/` and audience `orders`, its keys in `{dir}/jwks.json`
/// (RS256); `extra` adds keys to the section.
pub fn jwks_file_provider(name: &str, extra: &str) -> String {
    format!(
        "\n[auth.{name}]\nkind = \"jwt\"\nissuer = \"https://idp.test/\"\naudiences = [\"orders\"]\njwks_file = \"{{dir}}/jwks.json\"\nalgorithms = [\"RS256\"]\n{extra}\n"
    )
}

/// An HS256 JWS of exactly these header and payload JSON texts.
pub fn sign_hs256_raw(secret: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = EncodingKey::from_secret(secret).expect("HMAC key");
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).expect("sign");
    format!("{signing_input}.{signature}")
}
