//! TLS listeners with certificates made in the test.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::gateway::{check, Gateway};
use common::h2_upstream::{H2Upstream, MESSAGE};
use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora::tls::x509::X509;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    pki_for(&["localhost"], "localhost")
}

/// A fresh CA and a leaf for `names` with common name `cn`.
fn pki_for(names: &[&str], cn: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = rcgen::CertificateParams::new(names).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A client trusting `ca_pem` (and verifying the server), offering `alpn`.
fn connector(ca_pem: &str, alpn: Option<&[u8]>) -> SslConnector {
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder
        .cert_store_mut()
        .add_cert(X509::from_pem(ca_pem.as_bytes()).unwrap())
        .unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    if let Some(protocols) = alpn {
        builder.set_alpn_protos(protocols).unwrap();
    }
    builder.build()
}

/// One HTTPS GET, verifying the server against `ca_pem`.
fn https_get(addr: std::net::SocketAddr, ca_pem: &str, path: &str) -> String {
    let connector = connector(ca_pem, None);
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

/// The common name of the certificate the server presents for `sni`
/// (no verification: this looks at what is served).
fn served_cn(addr: std::net::SocketAddr, sni: &str) -> String {
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tls = builder.build().connect(sni, tcp).unwrap();
    let cert = tls.ssl().peer_certificate().unwrap();
    let cn = cert
        .subject_name()
        .entries_by_nid(pingora::tls::nid::Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    cn
}

fn tls_gateway(files: &[(&str, &str)], extra_tls: &str) -> (Gateway, std::net::SocketAddr) {
    let tls_addr = common::gateway::free_addr();
    let gw = Gateway::start_with_files(
        &format!(
            r#"
[[listeners]]
name = "https"
listen = "{tls_addr}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key"{extra_tls} }}

[[routes]]
name = "ping"
path = "/ping"
public = true
respond = {{ status = 200, body = "pong" }}
"#
        ),
        files,
    );
    assert!(common::gateway::wait_for_port(
        tls_addr,
        Duration::from_secs(10)
    ));
    (gw, tls_addr)
}

#[test]
fn reload_replaces_the_server_certificate_on_the_next_handshake() {
    let first = pki_for(&["localhost"], "first");
    let (gw, addr) = tls_gateway(
        &[
            ("server.crt", &first.cert_pem),
            ("server.key", &first.key_pem),
        ],
        "",
    );
    assert_eq!(served_cn(addr, "localhost"), "first");
    // A connection made before the reload keeps working.
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut old = builder.build().connect("localhost", tcp).unwrap();

    let second = pki_for(&["localhost"], "second");
    gw.write_file("server.crt", &second.cert_pem);
    gw.write_file("server.key", &second.key_pem);
    gw.signal("HUP");
    let ev = gw.wait_security_event("config_reloaded").expect("reloaded");
    assert!(
        ev.get("needs_upgrade").is_none(),
        "certificates reload in place: {ev}"
    );
    assert_eq!(served_cn(addr, "localhost"), "second");

    write!(
        old,
        "GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = old.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A broken pair is refused and the current one stays.
    gw.write_file("server.key", &first.key_pem);
    gw.signal("HUP");
    let failed = gw
        .wait_security_event("config_reload_failed")
        .expect("refused");
    assert!(failed["reason"]
        .as_str()
        .unwrap()
        .contains("does not belong to the certificate"));
    assert_eq!(served_cn(addr, "localhost"), "second");
}

#[test]
fn sni_picks_among_several_certificates() {
    let default = pki_for(&["default.test"], "default");
    let api = pki_for(&["api.example.test"], "api");
    let wild = pki_for(&["*.apps.example.test"], "wildcard");
    let (_gw, addr) = tls_gateway(
        &[
            ("server.crt", &default.cert_pem),
            ("server.key", &default.key_pem),
            ("api.crt", &api.cert_pem),
            ("api.key", &api.key_pem),
            ("wild.crt", &wild.cert_pem),
            ("wild.key", &wild.key_pem),
        ],
        r#", sni_certificates = [{ cert = "{dir}/api.crt", key = "{dir}/api.key" }, { cert = "{dir}/wild.crt", key = "{dir}/wild.key" }]"#,
    );
    assert_eq!(served_cn(addr, "api.example.test"), "api");
    assert_eq!(served_cn(addr, "API.example.test"), "api");
    assert_eq!(served_cn(addr, "shop.apps.example.test"), "wildcard");
    assert_eq!(served_cn(addr, "other.test"), "default");
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

/// Reads until the peer closes the connection (EOF or reset) or `within`
/// has passed; true when it was closed.
fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        tcp.set_read_timeout(Some(left)).unwrap();
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. an alert before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

/// A Prometheus sample `name{labels...}` from the admin listener.
fn metric(admin: std::net::SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = common::client::request(admin, "GET", "/metrics", &[], None).body_str();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (n == name && all).then(|| value.parse().ok()).flatten()
        })
}

/// `[limits] tls_handshake_timeout_ms = 500`: a client that connects to a
/// TLS listener and never finishes the handshake (it sends nothing, or half
/// a ClientHello) is disconnected well before the 10 s default would, and
/// the close is counted as `tls_handshake_timeout`; a normal TLS client is
/// served as before.
#[test]
fn tls_handshake_timeout_closes_stalled_handshakes() {
    let pki = pki();
    let tls_addr = common::gateway::free_addr();
    let admin = common::gateway::free_addr();
    let _gw = Gateway::start_with_files(
        &format!(
            r#"
[admin]
listen = "{admin}"

[limits]
tls_handshake_timeout_ms = 500

[[listeners]]
name = "https"
listen = "{tls_addr}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key" }}

[[routes]]
name = "ping"
path = "/ping"
public = true
respond = {{ status = 200, body = "pong" }}
"#
        ),
        &[("server.crt", &pki.cert_pem), ("server.key", &pki.key_pem)],
    );
    assert!(common::gateway::wait_for_port(
        tls_addr,
        Duration::from_secs(10)
    ));
    assert!(common::gateway::wait_for_port(
        admin,
        Duration::from_secs(10)
    ));

    // A TLS record header announcing a 512-byte ClientHello, then only its
    // first bytes.
    let mut half_hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    half_hello.extend_from_slice(&[0x5a; 32]);
    let stalls: [(&str, &[u8]); 2] = [("silent", &[]), ("half a ClientHello", &half_hello)];
    for (what, bytes) in stalls {
        let mut tcp = TcpStream::connect_timeout(&tls_addr, Duration::from_secs(5)).unwrap();
        tcp.write_all(bytes).unwrap();
        assert!(
            closed_within(&mut tcp, Duration::from_secs(5)),
            "{what}: the connection was still open 5 s into a 500 ms handshake deadline"
        );
    }
    let mut refused = None;
    common::wait_until(Duration::from_secs(5), || {
        refused = metric(
            admin,
            "portcullis_connections_refused_total",
            &[("reason", "tls_handshake_timeout")],
        );
        refused.is_some_and(|v| v >= 2.0)
    });
    assert!(
        refused.is_some_and(|v| v >= 2.0),
        "connections_refused_total{{reason=\"tls_handshake_timeout\"}} = {refused:?}"
    );

    let response = https_get(tls_addr, &pki.ca_pem, "/ping");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("pong"), "{response}");
}

/// The protocol a TLS listener picks when the client offers h2 and
/// http/1.1 by ALPN.
fn negotiated_alpn(addr: std::net::SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    let connector = connector(ca_pem, Some(b"\x02h2\x08http/1.1"));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tls = connector.connect("localhost", tcp).unwrap();
    tls.ssl().selected_alpn_protocol().map(<[u8]>::to_vec)
}

#[test]
fn http2_is_offered_by_alpn_unless_turned_off() {
    let pki = pki();
    let (on, off) = (common::gateway::free_addr(), common::gateway::free_addr());
    let _gw = Gateway::start_with_files(
        &format!(
            r#"
[[listeners]]
name = "h2"
listen = "{on}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key" }}

[[listeners]]
name = "h1"
listen = "{off}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key" }}
http2 = false

[[routes]]
name = "ok"
path_prefix = "/"
public = true
respond = {{ status = 200, body = "ok" }}
"#
        ),
        &[("server.crt", &pki.cert_pem), ("server.key", &pki.key_pem)],
    );
    for addr in [on, off] {
        assert!(common::gateway::wait_for_port(
            addr,
            Duration::from_secs(10)
        ));
    }
    assert_eq!(
        negotiated_alpn(on, &pki.ca_pem).as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(
        negotiated_alpn(off, &pki.ca_pem).as_deref(),
        Some(&b"http/1.1"[..])
    );
    let response = https_get(off, &pki.ca_pem, "/");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        h2_over_tls(on, &pki.ca_pem, "/anything"),
        (200, b"ok".to_vec())
    );
}

/// One HTTP/2 GET over TLS (ALPN h2), verifying the server: status, body.
fn h2_over_tls(addr: std::net::SocketAddr, ca_pem: &str, path: &str) -> (u16, Vec<u8>) {
    let ssl = connector(ca_pem, Some(b"\x02h2"))
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
            std::pin::Pin::new(&mut tls).connect().await.unwrap();
            assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
            let (client, conn) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut client = client.ready().await.unwrap();
            let req = http::Request::get(format!("https://localhost{path}"))
                .body(())
                .unwrap();
            let (resp, _) = client.send_request(req, true).unwrap();
            let resp = resp.await.unwrap();
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            (status, data)
        })
        .await
        .expect("HTTP/2 over TLS timed out")
    })
}

/// An HTTP/2-over-TLS upstream (ALPN h2 only) with the certificate of
/// `pki`.
fn h2_tls_upstream(pki: &Pki) -> H2Upstream {
    use pingora::tls::ssl::{AlpnError, SslAcceptor};
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    let cert = X509::from_pem(pki.cert_pem.as_bytes()).unwrap();
    let key = pingora::tls::pkey::PKey::private_key_from_pem(pki.key_pem.as_bytes()).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_alpn_select_callback(|_, offered| {
        pingora::tls::ssl::select_next_proto(b"\x02h2", offered).ok_or(AlpnError::NOACK)
    });
    H2Upstream::start_tls(acceptor.build())
}

#[test]
fn an_http2_tls_upstream_is_verified_against_its_ca_file() {
    let pki = pki_for(&["upstream.test"], "upstream.test");
    let h2 = h2_tls_upstream(&pki);
    let upstream = h2.addr;
    let seen = || -> Vec<String> {
        h2.seen()
            .iter()
            .map(|s| format!("{:?} {}", s.version, s.path))
            .collect()
    };
    let h2c = common::free_addr();
    let body = format!(
        "[[listeners]]\nname = \"h2c\"\nlisten = \"{h2c}\"\nhttp2 = true\n\n\
         [upstreams.internal]\ntargets = [\"{upstream}\"]\ntls = true\nprotocol = \"http2\"\n\
         sni = \"upstream.test\"\nca_file = \"{{dir}}/internal-ca.pem\"\n\n\
         [upstreams.untrusted]\ntargets = [\"{upstream}\"]\ntls = true\nprotocol = \"http2\"\n\
         sni = \"upstream.test\"\nretries = 0\n\n\
         [[routes]]\nname = \"internal\"\npath_prefix = \"/internal\"\npublic = true\nupstream = \"internal\"\n\n\
         [[routes]]\nname = \"untrusted\"\npath_prefix = \"/untrusted\"\npublic = true\nupstream = \"untrusted\"\n"
    );
    let gw = Gateway::start_with_files(&body, &[("internal-ca.pem", &pki.ca_pem)]);
    assert!(common::gateway::wait_for_port(h2c, Duration::from_secs(10)));

    // An HTTP/1.1 client, an HTTP/2 upstream over verified TLS.
    let r = common::request(gw.addr, "GET", "/internal/x", &[], None);
    assert_eq!((r.status, r.body.as_slice()), (200, MESSAGE));
    // A gRPC call keeps the upstream's trailers across TLS.
    let r = common::h2c::send(
        h2c,
        "localhost",
        "POST",
        "/internal/pkg.Service/Call",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        None,
    );
    assert_eq!(r.status, 200);
    let trailers = r.trailers.expect("the upstream's trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(
        seen(),
        [
            "HTTP/2.0 /internal/x",
            "HTTP/2.0 /internal/pkg.Service/Call"
        ]
    );
    // Without the CA file the system's CAs do not trust the target, even
    // with a verified connection to the same address and name in the pool.
    let r = common::request(gw.addr, "GET", "/untrusted/x", &[], None);
    common::assert_error(&r, 502, "bad_gateway");
    assert_eq!(seen().len(), 2);
}

#[test]
fn ca_file_mistakes_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "no certificate here\n").unwrap();
    let ca = not_a_ca.display();
    for (upstream, message) in [
        (
            format!("ca_file = \"{ca}\""),
            "`ca_file` only applies with `tls = true`".to_string(),
        ),
        (
            format!("tls = true\nca_file = \"{ca}\""),
            format!("{ca} holds no PEM CA certificate"),
        ),
        (
            "tls = true\nca_file = \"/nonexistent/ca.pem\"".to_string(),
            "cannot read `/nonexistent/ca.pem`".to_string(),
        ),
    ] {
        let path = dir.path().join("portcullis.toml");
        let text = format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\n\
             [upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n{upstream}\n\n\
             [[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n"
        );
        std::fs::write(&path, &text).unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(&message), "{message}: {stderr}");
        // The place of the value: FILE:LINE:COL.
        let place = format!("{}:", path.display());
        assert!(stderr.contains(&place), "{stderr}");
    }
}
