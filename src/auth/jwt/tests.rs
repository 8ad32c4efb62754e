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
    let forged = URL_SAFE_NO_PAD.encode(with(good_claims(), json!({"sub": "admin"})).to_string());
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
    // And even if a key were handed over regardless of its family, the
    // OpenSSL key refuses an algorithm of another family.
    let token = sign_with(Algorithm::HS256, None, &good_claims(), &attacker_key);
    let rsa = set.candidates(None, Alg::RS256).next().expect("rsa key");
    let (signed, signature) = token.rsplit_once('.').expect("three segments");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    assert!(!rsa
        .verifier()
        .verify(Alg::HS256, signed.as_bytes(), &signature));
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

/// Found by fuzzing: a header that is not UTF-8 in a member nobody
/// reads must still be refused as malformed.
#[test]
fn header_must_be_text() {
    assert_eq!(
        peek_header("eyJhbGciOiJIUzI1NiIsIngiOiL_In0.e30.c2ln"),
        Err(VerifyError::Malformed)
    );
}

/// Every algorithm the configuration can allow, signed by an independent
/// implementation (jsonwebtoken's RustCrypto backend) and verified on
/// OpenSSL; one flipped bit in the signature or the signed input refuses
/// it, and so does an ECDSA signature in DER form instead of JOSE `r || s`.
#[test]
fn openssl_verifies_every_algorithm_and_nothing_else() {
    let all = Alg::ALL.to_vec();
    let strict = JwtRules {
        algorithms: all.clone(),
        ..rules()
    };
    for alg in all {
        let name = alg.as_str();
        let set = if alg.is_hmac() {
            KeySet::from_secret(HMAC_SECRET, &[alg]).expect("secret set")
        } else {
            let doc = jwks(vec![public_jwk(alg.into(), name)]);
            KeySet::from_jwks(&doc, &[alg]).expect("key set")
        };
        let kid = (!alg.is_hmac()).then_some(name);
        let token = sign(alg.into(), kid, &good_claims());
        verify(&token, &set, &strict, NOW).unwrap_or_else(|e| panic!("{name}: {e:?}"));

        let (signed, signature) = token.rsplit_once('.').expect("three segments");
        let mut bad = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        bad[0] ^= 1;
        let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bad));
        assert_eq!(
            verify(&tampered, &set, &strict, NOW).map(|_| ()),
            Err(VerifyError::BadSignature),
            "{name}: tampered signature"
        );
        let forged_payload = format!(
            "{}.{}.{signature}",
            signed.split('.').next().expect("header"),
            URL_SAFE_NO_PAD.encode(with(good_claims(), json!({"sub": "admin"})).to_string())
        );
        assert_eq!(
            verify(&forged_payload, &set, &strict, NOW).map(|_| ()),
            Err(VerifyError::BadSignature),
            "{name}: changed payload"
        );
    }
}

#[test]
fn an_ecdsa_signature_must_be_jose_r_and_s() {
    use openssl::bn::BigNum;
    use openssl::ecdsa::EcdsaSig;
    let token = sign(Algorithm::ES256, Some("es256"), &good_claims());
    let (signed, signature) = token.rsplit_once('.').expect("three segments");
    let raw = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let (r, s) = raw.split_at(32);
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(r).expect("r"),
        BigNum::from_slice(s).expect("s"),
    )
    .expect("sig")
    .to_der()
    .expect("der");
    let as_der = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(der));
    assert_eq!(check(&as_der).map(|_| ()), Err(VerifyError::BadSignature));
    // A signature of the wrong length for the curve.
    let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&raw[..63]));
    assert_eq!(check(&short).map(|_| ()), Err(VerifyError::BadSignature));
}
