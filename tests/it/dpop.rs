//! DPoP (RFC 9449, CONTRACT §13) against the real binary: proofs minted
//! here with real EC, RSA and Ed25519 keys, every broken variant refused
//! with `invalid_dpop_proof` and the `DPoP` challenge, proof replay, a bound
//! token sent as Bearer, `dpop = "required"`, and an introspection answer
//! with `cnf.jkt`.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::client::{request, Response};
use common::gateway::{free_addr, Gateway};
use common::idp::Idp;
use common::jwt::{b64url, claims, jwks, jwks_file_provider, now, unique_id, TestKey};
use common::upstream::Upstream;
use common::{assert_error, wait_until};

const ALGS: &str = r#"DPoP algs="ES256 ES384 RS256 PS256 EdDSA""#;

struct Fixture {
    gw: Gateway,
    issuer: TestKey,
    _up: Upstream,
}

fn start(mode: &str) -> Fixture {
    let issuer = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let admin = free_addr();
    let body = format!(
        r#"
[admin]
listen = "{admin}"

[upstreams.app]
targets = ["{up}"]
{provider}

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["corp"]
upstream = "app"
"#,
        up = up.addr(),
        provider = jwks_file_provider("corp", &format!("dpop = \"{mode}\"")),
    );
    let gw = Gateway::start_with_files(&body, &[("jwks.json", &jwks(&[&issuer]))]);
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(admin).is_ok()
    }));
    Fixture {
        gw,
        issuer,
        _up: up,
    }
}

/// The public JWK a proof carries (no `kid`, `use` or `alg` needed).
fn public_jwk(key: &TestKey) -> Value {
    let mut jwk = key.jwk();
    let map = jwk.as_object_mut().unwrap();
    for member in ["kid", "use", "alg"] {
        map.remove(member);
    }
    jwk
}

/// RFC 7638, computed here independently of the gateway.
fn jkt(key: &TestKey) -> String {
    let jwk = public_jwk(key);
    let canonical = match jwk["kty"].as_str().unwrap() {
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        ),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap()
        ),
        other => panic!("{other}"),
    };
    b64url(&Sha256::digest(canonical.as_bytes()))
}

fn ath(token: &str) -> String {
    b64url(&Sha256::digest(token.as_bytes()))
}

/// A token bound to `client`'s key.
pub(crate) fn bound_token(issuer: &TestKey, client: &TestKey) -> String {
    let mut c = claims("https://idp.test/", "orders", "alice", 300);
    c["cnf"] = json!({"jkt": jkt(client)});
    issuer.sign(c)
}

fn proof_header(client: &TestKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": client.alg_name(), "jwk": public_jwk(client)})
}

fn proof_claims(method: &str, htu: &str, token: &str) -> Value {
    json!({"jti": unique_id(), "htm": method, "htu": htu, "iat": now(), "ath": ath(token)})
}

const HTU: &str = "http://localhost/orders/1";

pub(crate) fn proof(client: &TestKey, token: &str) -> String {
    client.sign_raw(&proof_header(client), &proof_claims("GET", HTU, token))
}

pub(crate) fn send(
    addr: SocketAddr,
    method: &str,
    scheme: &str,
    token: &str,
    proofs: &[&str],
) -> Response {
    let auth = format!("{scheme} {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    for p in proofs {
        headers.push(("dpop", p));
    }
    request(addr, method, "/orders/1", &headers, None)
}

fn assert_proof_refused(resp: &Response, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.body_str());
    assert_eq!(resp.json()["error"], "invalid_dpop_proof", "{what}");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(ALGS) && challenge.contains(r#"error="invalid_dpop_proof""#),
        "{what}: {challenge}"
    );
}

#[test]
fn proofs_by_ec_rsa_and_ed25519_keys_are_accepted_once() {
    let f = start("optional");
    for client in [
        TestKey::ec256("c"),
        TestKey::rsa("c"),
        TestKey::ed25519("c"),
    ] {
        let token = bound_token(&f.issuer, &client);
        let first = proof(&client, &token);
        let r = send(f.gw.addr, "GET", "DPoP", &token, &[&first]);
        assert_eq!(r.status, 200, "{}: {}", client.alg_name(), r.body_str());
        // A new proof for the (now cached) token.
        let r = send(f.gw.addr, "GET", "DPoP", &token, &[&proof(&client, &token)]);
        assert_eq!(r.status, 200, "{}", r.body_str());
        // The first proof again: a replay.
        let r = send(f.gw.addr, "GET", "DPoP", &token, &[&first]);
        assert_proof_refused(&r, "replayed proof");
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("already used"));
        // The scheme is case-insensitive; a query in htu is ignored.
        let with_query = client.sign_raw(
            &proof_header(&client),
            &proof_claims("GET", "HTTP://LOCALHOST:80/orders/1?x=1#frag", &token),
        );
        let r = send(f.gw.addr, "GET", "dpop", &token, &[&with_query]);
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    let event = f.gw.wait_security_event("token_replayed").expect("event");
    assert_eq!(event["reason"], "dpop_proof_replayed");
}

#[test]
fn every_broken_proof_is_refused() {
    let f = start("optional");
    let client = TestKey::ec256("c");
    let token = bound_token(&f.issuer, &client);
    let header = proof_header(&client);
    let signed = |h: &Value, c: &Value| client.sign_raw(h, c);
    let good = || proof_claims("GET", HTU, &token);
    let with = |changes: Value| {
        let mut c = good();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("wrong htm", signed(&header, &with(json!({"htm": "POST"})))),
        (
            "wrong htu path",
            signed(&header, &with(json!({"htu": "http://localhost/orders/2"}))),
        ),
        (
            "wrong htu host",
            signed(&header, &with(json!({"htu": "http://evil.test/orders/1"}))),
        ),
        (
            "wrong htu scheme",
            signed(&header, &with(json!({"htu": "https://localhost/orders/1"}))),
        ),
        (
            "wrong htu port",
            signed(
                &header,
                &with(json!({"htu": "http://localhost:8080/orders/1"})),
            ),
        ),
        (
            "htu prefix",
            signed(&header, &with(json!({"htu": "http://localhost/orders"}))),
        ),
        (
            "stale iat",
            signed(&header, &with(json!({"iat": now() - 120}))),
        ),
        (
            "future iat",
            signed(&header, &with(json!({"iat": now() + 60}))),
        ),
        (
            "bad ath",
            signed(&header, &with(json!({"ath": ath("another token")}))),
        ),
        ("no ath", {
            let mut c = good();
            c.as_object_mut().unwrap().remove("ath");
            signed(&header, &c)
        }),
        ("no jti", {
            let mut c = good();
            c.as_object_mut().unwrap().remove("jti");
            signed(&header, &c)
        }),
    ];
    // The key the token is bound to is not the proof's.
    let other = TestKey::ec256("o");
    cases.push((
        "jkt mismatch",
        other.sign_raw(&proof_header(&other), &good()),
    ));
    // A private member in the header's jwk.
    let mut private = header.clone();
    private["jwk"]["d"] = json!(b64url(&[7u8; 32]));
    cases.push(("private jwk member", signed(&private, &good())));
    let mut typ = header.clone();
    typ["typ"] = json!("JWT");
    cases.push(("typ", signed(&typ, &good())));
    let mut no_typ = header.clone();
    no_typ.as_object_mut().unwrap().remove("typ");
    cases.push(("no typ", signed(&no_typ, &good())));
    // A symmetric proof, keyed with the (public) jwk as secret.
    let hs_header =
        json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64url(b"secret")}});
    cases.push((
        "symmetric alg",
        common::jwt::sign_hs256_raw(b"secret", &hs_header, &good()),
    ));
    let none_header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk(&client)});
    cases.push(("alg none", common::jwt::unsigned(none_header, good())));
    let mut no_jwk = header.clone();
    no_jwk.as_object_mut().unwrap().remove("jwk");
    cases.push(("no jwk", signed(&no_jwk, &good())));
    // The signature of another payload.
    let a = signed(&header, &good());
    let b = signed(&header, &with(json!({"htm": "DELETE"})));
    let forged = format!(
        "{}.{}",
        b.rsplit_once('.').unwrap().0,
        a.rsplit_once('.').unwrap().1
    );
    cases.push(("bad signature", forged));
    cases.push(("not a JWS", "abc".to_string()));
    for (what, p) in &cases {
        let r = send(f.gw.addr, "GET", "DPoP", &token, &[p]);
        assert_proof_refused(&r, what);
    }
    // `typ` is a media type: its case does not matter.
    let mut upper = header.clone();
    upper["typ"] = json!("DPoP+JWT");
    let r = send(
        f.gw.addr,
        "GET",
        "DPoP",
        &token,
        &[&signed(&upper, &good())],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    // Exactly one DPoP header: none, or two valid ones.
    assert_proof_refused(&send(f.gw.addr, "GET", "DPoP", &token, &[]), "no proof");
    let (p1, p2) = (proof(&client, &token), proof(&client, &token));
    assert_proof_refused(
        &send(f.gw.addr, "GET", "DPoP", &token, &[&p1, &p2]),
        "two proofs",
    );
    // A port in Host must be in htu too (the default one may be left out).
    let p = client.sign_raw(
        &header,
        &proof_claims("GET", "http://localhost:8443/orders/1", &token),
    );
    let auth = format!("DPoP {token}");
    let r = request(
        f.gw.addr,
        "GET",
        "/orders/1",
        &[
            ("authorization", &auth),
            ("dpop", &p),
            ("host", "LocalHost:8443"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    // Nothing of the proof or token in the security log.
    assert!(!f
        .gw
        .security_log()
        .iter()
        .any(|e| e.to_string().contains(&token)));
}

#[test]
fn bound_tokens_need_proofs_and_proofs_need_bound_tokens() {
    let f = start("optional");
    let client = TestKey::ec256("c");
    let token = bound_token(&f.issuer, &client);
    let p = proof(&client, &token);
    // A bound token as Bearer, with or without a proof: refused.
    for proofs in [vec![], vec![p.as_str()]] {
        let r = send(f.gw.addr, "GET", "Bearer", &token, &proofs);
        let body = assert_error(&r, 401, "invalid_token");
        assert!(
            body["message"].as_str().unwrap().contains("bound"),
            "{body}"
        );
    }
    // "optional": an unbound token as Bearer is fine, not as DPoP.
    let plain = f
        .issuer
        .sign(claims("https://idp.test/", "orders", "bob", 300));
    assert_eq!(send(f.gw.addr, "GET", "Bearer", &plain, &[]).status, 200);
    let p = proof(&client, &plain);
    assert_error(
        &send(f.gw.addr, "GET", "DPoP", &plain, &[&p]),
        401,
        "invalid_token",
    );

    let f = start("required");
    let plain = f
        .issuer
        .sign(claims("https://idp.test/", "orders", "bob", 300));
    assert_error(
        &send(f.gw.addr, "GET", "Bearer", &plain, &[]),
        401,
        "invalid_token",
    );
    let token = bound_token(&f.issuer, &client);
    let r = send(f.gw.addr, "GET", "DPoP", &token, &[&proof(&client, &token)]);
    assert_eq!(r.status, 200, "{}", r.body_str());

    // "off": the DPoP scheme is not this provider's; a bound token as
    // Bearer is still refused.
    let f = start("off");
    let token = bound_token(&f.issuer, &client);
    let r = send(f.gw.addr, "GET", "DPoP", &token, &[&proof(&client, &token)]);
    assert_error(&r, 401, "missing_credentials");
    assert_error(
        &send(f.gw.addr, "GET", "Bearer", &token, &[]),
        401,
        "invalid_token",
    );
}

#[test]
fn introspection_answers_with_cnf_jkt_need_proofs() {
    let idp = Idp::start();
    idp.set_client("gateway", "introspection-secret");
    let up = Upstream::start("app");
    let body = format!(
        r#"
[upstreams.app]
targets = ["{up}"]

[auth.opaque]
kind = "introspection"
endpoint = "{endpoint}"
client_id = "gateway"
client_secret_file = "{{dir}}/introspection.secret"
dpop = "optional"
dpop_algorithms = ["ES256"]

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["opaque"]
upstream = "app"
"#,
        up = up.addr(),
        endpoint = idp.introspect_url(),
    );
    let gw = Gateway::start_with_files(&body, &[("introspection.secret", "introspection-secret")]);
    let client = TestKey::ec256("c");
    let token = unique_id();
    idp.set_answer(
        &token,
        json!({"active": true, "sub": "carol", "exp": now() + 300, "cnf": {"jkt": jkt(&client)}}),
    );
    let r = send(gw.addr, "GET", "DPoP", &token, &[&proof(&client, &token)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_error(
        &send(gw.addr, "GET", "Bearer", &token, &[]),
        401,
        "invalid_token",
    );
    // Only ES256 proofs here: an RSA-signed one is refused, and the
    // challenge names the provider's algorithms.
    let rsa = TestKey::rsa("r");
    let r = send(gw.addr, "GET", "DPoP", &token, &[&proof(&rsa, &token)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_dpop_proof");
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with(r#"DPoP algs="ES256""#));
}
