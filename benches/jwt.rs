//! JWT verification benchmarks: the full, uncached cost of `verify` (header,
//! key choice, signature, claims) for the two most common algorithms, so a
//! verified-token cache can be judged against it.
//!
//! The key set holds three keys of different types (RSA, P-256, Ed25519),
//! as a typical provider's JWKS during a rotation would. The keys are fixed
//! test keys, generated once with `openssl genpkey`; never trust them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use portcullis::auth::jwks::{Alg, KeySet};
use portcullis::auth::jwt::{verify, JwtRules};
use serde_json::json;

const RSA_PRIVATE: &str = "-----BEGIN RSA PRIVATE KEY-----
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

const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaUVxgtgcf9G35/yK
zw2rOXrfO+piiSoSZIpZ5FgEnVqhRANCAATpKN6V3R82ikzZf8j65Bd4BO6JlOFt
5fyEmiRhDgJuiykjtmO/MDsrtwMVtBCZ/jFoEr7BCLB5sYbmcMk6wnpA
-----END PRIVATE KEY-----
";

const P384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBqfmmKHBY8KL+WSWRI
Vmum4EPnKDBhuo5CytqSHCmfqc/L7SNZg/RM65BakJ83t0ShZANiAARwDRrOWJ+C
I6YHDfZm62dOPA4HaXbtM9vgezC640daa7LhvFdknFWsWfTSm2r36fNDTB/0m4PY
wa+dzZ86i27yd3KBMXSGxK59XWmD4obK1GWkihVnQ6UVRVu6H5cBLHg=
-----END PRIVATE KEY-----
";

const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFTRZn7wcmLc50mMVfnkNaTcaPQoWJaGLP3XV6QmnOMF
-----END PRIVATE KEY-----
";

const NOW: u64 = 1_700_000_000;

struct Signer {
    alg: Algorithm,
    kid: &'static str,
    key: EncodingKey,
}

fn signers() -> Vec<Signer> {
    let key = |parsed: Result<EncodingKey, _>| parsed.expect("fixed bench key parses");
    vec![
        Signer {
            alg: Algorithm::RS256,
            kid: "rsa-2025",
            key: key(EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes())),
        },
        Signer {
            alg: Algorithm::ES256,
            kid: "ec-2025",
            key: key(EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes())),
        },
        Signer {
            alg: Algorithm::PS256,
            kid: "rsa-pss-2025",
            key: key(EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes())),
        },
        Signer {
            alg: Algorithm::ES384,
            kid: "ec384-2025",
            key: key(EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes())),
        },
        Signer {
            alg: Algorithm::EdDSA,
            kid: "ed-2025",
            key: key(EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes())),
        },
    ]
}

/// The public JWKS document of `signers`.
fn jwks_document(signers: &[Signer]) -> Vec<u8> {
    let keys: Vec<serde_json::Value> = signers
        .iter()
        .map(|signer| {
            let mut jwk = Jwk::from_encoding_key(&signer.key, signer.alg).expect("public JWK");
            jwk.common.key_id = Some(signer.kid.to_owned());
            serde_json::to_value(&jwk).expect("JWK serializes")
        })
        .collect();
    serde_json::to_vec(&json!({ "keys": keys })).expect("JWKS serializes")
}

fn key_set(signers: &[Signer], allowed: &[Alg]) -> KeySet {
    KeySet::from_jwks(&jwks_document(signers), allowed).expect("key set")
}

/// A realistic access token: issuer, audience, subject, scopes and roles.
fn token(signer: &Signer) -> String {
    let claims = json!({
        "iss": "https://idp.example.com/",
        "aud": ["orders-api", "account"],
        "sub": "4f1c2a9e-5b7d-4e0a-9c3f-2d8e6b1a7c55",
        "azp": "web-frontend",
        "exp": NOW + 3600,
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "scope": "openid profile orders:read orders:write",
        "realm_access": { "roles": ["customer", "beta"] },
        "tenant": "acme",
    });
    let mut header = Header::new(signer.alg);
    header.kid = Some(signer.kid.to_owned());
    encode(&header, &claims, &signer.key).expect("token signs")
}

fn verify_uncached(c: &mut Criterion) {
    let allowed = [Alg::RS256, Alg::ES256, Alg::PS256, Alg::ES384, Alg::EdDSA];
    let signers = signers();
    let keys = key_set(&signers, &allowed);
    let rules = JwtRules {
        issuer: Some("https://idp.example.com/".to_owned()),
        audiences: vec!["orders-api".to_owned()],
        algorithms: allowed.to_vec(),
        leeway_seconds: 30,
        required_claims: vec!["sub".to_owned()],
        roles_claim: Some("realm_access.roles".to_owned()),
        scopes_claim: "scope".to_owned(),
    };
    let jwks: serde_json::Value =
        serde_json::from_slice(&jwks_document(&signers)).expect("JWKS parses");
    let mut group = c.benchmark_group("jwt_verify");
    for signer in &signers {
        let name = format!("{:?}", signer.alg).to_lowercase();
        let token = token(signer);
        // A bench that measured a refusal would prove nothing.
        let verified = verify(&token, &keys, &rules, NOW).expect("bench token verifies");
        assert_eq!(verified.roles, ["customer", "beta"]);
        group.bench_function(&name, |b| {
            b.iter(|| verify(black_box(&token), &keys, &rules, black_box(NOW)))
        });
        // The same signature check on jsonwebtoken's pure-Rust backend,
        // for comparison: the key object is built once, as ours is.
        let jwk: Jwk = serde_json::from_value(
            jwks["keys"]
                .as_array()
                .and_then(|keys| keys.iter().find(|k| k["kid"] == signer.kid))
                .cloned()
                .expect("the signer's JWK"),
        )
        .expect("JWK parses");
        let key = DecodingKey::from_jwk(&jwk).expect("decoding key");
        let mut validation = Validation::new(signer.alg);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
            .expect("the reference backend verifies it too");
        group.bench_function(format!("{name} (rust_crypto reference)"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &key, &validation)
            })
        });
    }
    group.finish();
}

/// The whole `jwt` provider on a request: bearer extraction, cache lookup
/// (SHA-256 of the token) and, on a miss, verification. With the cache on,
/// a repeated token costs a hash and a map lookup; with it off, a full
/// verification every time.
fn provider_cached_vs_uncached(c: &mut Criterion) {
    use std::sync::Arc;

    use portcullis::auth::{Authenticator, Credentials};
    use portcullis::config::{AuthKind, AuthProvider, JwtProvider, KeySource, Log, LogTarget};
    use portcullis::core::location::{Located, Location};
    use portcullis::observe::Observer;

    let allowed = [Alg::RS256, Alg::ES256, Alg::EdDSA];
    let signers = signers();
    let jwks = jwks_document(&signers);
    let log = Log {
        level: "error".into(),
        access_log: LogTarget::Off,
        security_log: LogTarget::Off,
        ..Log::default()
    };
    let observer = Arc::new(Observer::new(&log).expect("metrics"));
    let provider = |entries: u64| {
        let config = JwtProvider {
            issuer: Some("https://idp.example.com/".to_owned()),
            audiences: vec!["orders-api".to_owned()],
            keys: KeySource::File {
                path: Located {
                    value: "bench-jwks.json".into(),
                    at: Location {
                        file: std::path::Path::new("bench.toml").into(),
                        line: 1,
                        col: 1,
                    },
                },
                json: jwks.clone(),
            },
            algorithms: allowed.to_vec(),
            leeway_seconds: 30,
            jwks_refresh: std::time::Duration::from_secs(300),
            token_cache_entries: entries,
            required_claims: vec!["sub".to_owned()],
            max_token_bytes: 8192,
            roles_claim: Some("realm_access.roles".to_owned()),
            scopes_claim: "scope".to_owned(),
            forward_credentials: true,
            fetch_timeout: std::time::Duration::from_secs(5),
            replay_protection: false,
            dpop: portcullis::config::DpopConfig {
                mode: portcullis::config::DpopMode::Off,
                proof_lifetime_seconds: 60,
                algorithms: vec![Alg::ES256],
            },
        };
        let described = AuthProvider {
            name: "bench".to_owned(),
            kind: AuthKind::Jwt(config.clone()),
        };
        portcullis::auth::jwt_auth::JwtAuthenticator::new(described, config, observer.clone())
            .expect("provider")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut group = c.benchmark_group("jwt_provider");
    for (name, signer) in [("rs256", &signers[0]), ("es256", &signers[1])] {
        let claims = json!({
            "iss": "https://idp.example.com/", "aud": "orders-api", "sub": "user-1",
            "exp": now + 3600, "iat": now, "scope": "orders:read",
            "realm_access": { "roles": ["customer"] },
        });
        let mut header = Header::new(signer.alg);
        header.kid = Some(signer.kid.to_owned());
        let token = encode(&header, &claims, &signer.key).expect("token signs");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        let request = Credentials::of_headers(&headers);
        for (mode, entries) in [("cached", 1000), ("uncached", 0)] {
            let auth = provider(entries);
            futures::executor::block_on(auth.authenticate(&request)).expect("bench token verifies");
            group.bench_function(format!("{name}_{mode}"), |b| {
                b.iter(|| futures::executor::block_on(auth.authenticate(black_box(&request))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, verify_uncached, provider_cached_vs_uncached);
criterion_main!(benches);
