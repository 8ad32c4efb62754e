//! Mutual TLS through the real binary, with certificates made in the test:
//! required and optional client certificates, untrusted and expired ones,
//! subjects from the CN and SAN URIs, allowed-subject globs, and
//! certificate-bound access tokens (RFC 8705).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::gateway::{free_addr, wait_for_port, Gateway};
use common::jwt::{claims, jwks, TestKey};
use common::upstream::Upstream;
use pingora::tls::pkey::PKey;
use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora::tls::x509::X509;

struct Issued {
    cert_pem: String,
    key_pem: String,
}

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn issue(ca: &Ca, cn: &str, dns: &[&str], uris: &[&str], expired: bool) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .unwrap();
    for uri in uris {
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(*uri).unwrap(),
        ));
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// One HTTPS request, optionally with a client certificate and headers;
/// `Err` when the handshake or the exchange fails.
fn https(
    addr: SocketAddr,
    client: Option<&Issued>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<String, String> {
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    builder.set_verify(SslVerifyMode::NONE);
    if let Some(c) = client {
        builder
            .set_certificate(&X509::from_pem(c.cert_pem.as_bytes()).unwrap())
            .unwrap();
        builder
            .set_private_key(&PKey::private_key_from_pem(c.key_pem.as_bytes()).unwrap())
            .unwrap();
    }
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = builder
        .build()
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("no response".into());
    }
    Ok(out)
}

fn body_json(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

struct Setup {
    gw: Gateway,
    addr: SocketAddr,
    trusted: Ca,
    jwt_key: TestKey,
    _up: Upstream,
}

fn setup(client_auth: &str) -> Setup {
    let trusted = ca("trusted client ca");
    let server_ca = ca("server ca");
    let server = issue(&server_ca, "localhost", &["localhost"], &[], false);
    let jwt_key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let addr = free_addr();
    let gw = Gateway::start_with_files(
        &format!(
            r#"
[[listeners]]
name = "mtls"
listen = "{addr}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key", client_ca = "{{dir}}/client-ca.crt", client_auth = "{client_auth}" }}

[auth.internal]
kind = "mtls"
subject_from = "san_uri"
allowed_subjects = ["spiffe://corp.example/ns/billing/*"]

[auth.bycn]
kind = "mtls"
subject_from = "cn"

[auth.corp]
kind = "jwt"
issuer = "https://idp.test/"
audiences = ["orders"]
jwks_file = "{{dir}}/jwks.json"
algorithms = ["RS256"]

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "internal"
path_prefix = "/internal"
auth = ["internal"]
upstream = "app"

[[routes]]
name = "cn"
path_prefix = "/cn"
auth = ["bycn"]
upstream = "app"

[[routes]]
name = "token"
path_prefix = "/token"
auth = ["corp"]
upstream = "app"

[[routes]]
name = "open"
path = "/open"
public = true
respond = {{ status = 200, body = "open" }}
"#,
            up = up.addr()
        ),
        &[
            ("server.crt", &server.cert_pem),
            ("server.key", &server.key_pem),
            ("client-ca.crt", &trusted.pem),
            ("jwks.json", &jwks(&[&jwt_key])),
        ],
    );
    assert!(wait_for_port(addr, Duration::from_secs(10)));
    Setup {
        gw,
        addr,
        trusted,
        jwt_key,
        _up: up,
    }
}

#[test]
fn required_client_certificates() {
    let s = setup("required");
    let billing = issue(
        &s.trusted,
        "billing-api",
        &[],
        &["spiffe://corp.example/ns/billing/sa/api"],
        false,
    );
    let r = https(s.addr, Some(&billing), "/internal/x", &[]).expect("trusted client");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = &body_json(&r)["headers"];
    assert_eq!(seen["x-auth-method"], "mtls");
    assert_eq!(
        seen["x-auth-subject"],
        "spiffe://corp.example/ns/billing/sa/api"
    );
    assert_eq!(seen["x-forwarded-proto"], "https");
    // The CN provider takes the common name.
    let r = https(s.addr, Some(&billing), "/cn/x", &[]).unwrap();
    assert_eq!(body_json(&r)["headers"]["x-auth-subject"], "billing-api");

    // Outside the allowed subjects.
    let orders = issue(
        &s.trusted,
        "orders",
        &[],
        &["spiffe://corp.example/ns/orders/sa/api"],
        false,
    );
    let r = https(s.addr, Some(&orders), "/internal/x", &[]).unwrap();
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert_eq!(body_json(&r)["error"], "invalid_client_certificate");

    // No certificate, an untrusted CA, an expired certificate: no handshake.
    assert!(
        https(s.addr, None, "/open", &[]).is_err(),
        "no certificate must fail the handshake"
    );
    let rogue = issue(
        &ca("rogue ca"),
        "rogue",
        &[],
        &["spiffe://corp.example/ns/billing/sa/api"],
        false,
    );
    assert!(
        https(s.addr, Some(&rogue), "/open", &[]).is_err(),
        "untrusted CA must fail"
    );
    let expired = issue(
        &s.trusted,
        "old",
        &[],
        &["spiffe://corp.example/ns/billing/sa/api"],
        true,
    );
    assert!(
        https(s.addr, Some(&expired), "/open", &[]).is_err(),
        "expired certificate must fail"
    );
    drop(s.gw);
}

#[test]
fn optional_client_certificates() {
    let s = setup("optional");
    let r = https(s.addr, None, "/open", &[]).expect("no certificate is allowed");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = https(s.addr, None, "/internal/x", &[]).unwrap();
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert_eq!(body_json(&r)["error"], "invalid_client_certificate");
    let billing = issue(
        &s.trusted,
        "billing",
        &[],
        &["spiffe://corp.example/ns/billing/sa/x"],
        false,
    );
    let r = https(s.addr, Some(&billing), "/internal/x", &[]).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A certificate from an unknown CA still fails the handshake.
    let rogue = issue(&ca("rogue"), "rogue", &[], &[], false);
    assert!(https(s.addr, Some(&rogue), "/open", &[]).is_err());
}

fn thumbprint(issued: &Issued) -> String {
    let der = X509::from_pem(issued.cert_pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    let digest =
        pingora::tls::hash::hash(pingora::tls::hash::MessageDigest::sha256(), &der).unwrap();
    common::jwt::b64url(&digest)
}

#[test]
fn certificate_bound_tokens() {
    let s = setup("optional");
    let mine = issue(&s.trusted, "me", &[], &[], false);
    let other = issue(&s.trusted, "other", &[], &[], false);
    let mut c = claims("https://idp.test/", "orders", "alice", 600);
    c["cnf"] = serde_json::json!({ "x5t#S256": thumbprint(&mine) });
    let token = s.jwt_key.sign(c);
    let auth = format!("Bearer {token}");
    let ok = https(s.addr, Some(&mine), "/token/x", &[("authorization", &auth)]).unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Again (now from the token cache), still checked against the connection.
    for (client, what) in [
        (Some(&other), "another certificate"),
        (None, "no certificate"),
    ] {
        let r = https(s.addr, client, "/token/x", &[("authorization", &auth)]).unwrap();
        assert!(r.starts_with("HTTP/1.1 401"), "{what}: {r}");
        assert_eq!(body_json(&r)["error"], "invalid_token", "{what}");
    }
    let events = s.gw.wait_security_events("auth_failure", 2);
    assert!(
        events
            .iter()
            .all(|e| e["reason"] == "cert_binding_mismatch"),
        "{events:?}"
    );
    // Unbound tokens work without a certificate.
    let plain = s
        .jwt_key
        .sign(claims("https://idp.test/", "orders", "bob", 600));
    let r = https(
        s.addr,
        None,
        "/token/x",
        &[("authorization", &format!("Bearer {plain}"))],
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}
