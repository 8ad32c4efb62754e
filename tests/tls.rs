//! TLS listeners with certificates made in the test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::gateway::{check, Gateway};
use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora::tls::x509::X509;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// One HTTPS GET, verifying the server against `ca_pem`.
fn https_get(addr: std::net::SocketAddr, ca_pem: &str, path: &str) -> String {
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder
        .cert_store_mut()
        .add_cert(X509::from_pem(ca_pem.as_bytes()).unwrap())
        .unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    let connector = builder.build();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = connector.connect("localhost", tcp).unwrap();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    out
}

#[test]
fn tls_listener_serves_with_the_configured_certificate() {
    let pki = pki();
    let up = common::upstream::Upstream::start("app");
    let tls_addr = common::gateway::free_addr();
    let gw = Gateway::start_with_files(
        &format!(
            r#"
[[listeners]]
name = "https"
listen = "{tls_addr}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key" }}

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "app"
path_prefix = "/"
public = true
upstream = "app"
"#,
            up = up.addr()
        ),
        &[("server.crt", &pki.cert_pem), ("server.key", &pki.key_pem)],
    );
    assert!(common::gateway::wait_for_port(
        tls_addr,
        Duration::from_secs(10)
    ));
    let response = https_get(tls_addr, &pki.ca_pem, "/hello");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"x-forwarded-proto\":\"https\""),
        "{response}"
    );
    // The plain listener keeps working beside it.
    assert_eq!(common::client::get(gw.addr, "/x").status, 200);
}

#[test]
fn check_refuses_a_key_that_does_not_match_the_certificate() {
    let a = pki();
    let b = pki();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.crt"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("b.key"), &b.key_pem).unwrap();
    std::fs::write(dir.path().join("junk.crt"), "not a certificate").unwrap();
    let conf = dir.path().join("gw.toml");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ntls = {{ cert = \"{d}/a.crt\", key = \"{d}/b.key\" }}\n\
             [[listeners]]\nname = \"b\"\nlisten = \"127.0.0.1:2\"\ntls = {{ cert = \"{d}/junk.crt\", key = \"{d}/b.key\" }}\n\
             [[listeners]]\nname = \"c\"\nlisten = \"127.0.0.1:3\"\ntls = {{ cert = \"{d}/missing.crt\", key = \"{d}/b.key\" }}\n"
        ),
    )
    .unwrap();
    let out = check(&conf);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4:16: the private key"), "{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");
    assert!(
        err.contains(":8:16:") && err.contains("holds no PEM certificate"),
        "{err}"
    );
    assert!(err.contains(":12:16: cannot read"), "{err}");
}
