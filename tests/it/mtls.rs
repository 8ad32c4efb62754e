//! Mutual TLS through the real binary, with certificates made in the test:
//! required and optional client certificates, untrusted and expired ones,
//! subjects from the CN and SAN URIs, allowed-subject globs, and
//! certificate-bound access tokens (RFC 8705).

use crate::common;

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

// ------------------------------------------- TLS session resumption

/// The certificates, gateway and admin listener of a resumption test: a TLS
/// listener trusting `ca-a.crt` at first, route `/cn` behind an `mtls`
/// provider (subject from the CN) and a public `/open`.
struct Resumption {
    gw: Gateway,
    tls: SocketAddr,
    admin: SocketAddr,
    a: Ca,
    b: Ca,
    client_auth: &'static str,
    up: Upstream,
}

impl Resumption {
    fn start(client_auth: &'static str) -> Resumption {
        let a = ca("client ca A");
        let b = ca("client ca B");
        let server = issue(&ca("server ca"), "localhost", &["localhost"], &[], false);
        let up = Upstream::start("app");
        let tls = free_addr();
        let admin = free_addr();
        let r = Resumption {
            gw: Gateway::start_with_files(
                &Self::body(tls, admin, &up, client_auth, "ca-a.crt", ""),
                &[
                    ("server.crt", &server.cert_pem),
                    ("server.key", &server.key_pem),
                    ("ca-a.crt", &a.pem),
                    ("ca-b.crt", &b.pem),
                ],
            ),
            tls,
            admin,
            a,
            b,
            client_auth,
            up,
        };
        assert!(wait_for_port(tls, Duration::from_secs(10)));
        assert!(wait_for_port(admin, Duration::from_secs(10)));
        r
    }

    fn body(
        tls: SocketAddr,
        admin: SocketAddr,
        up: &Upstream,
        client_auth: &str,
        client_ca: &str,
        extra_routes: &str,
    ) -> String {
        format!(
            r#"
[admin]
listen = "{admin}"

[[listeners]]
name = "mtls"
listen = "{tls}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key", client_ca = "{{dir}}/{client_ca}", client_auth = "{client_auth}" }}

[auth.bycn]
kind = "mtls"
subject_from = "cn"

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "cn"
path_prefix = "/cn"
auth = ["bycn"]
upstream = "app"

[[routes]]
name = "open"
path = "/open"
public = true
respond = {{ status = 200, body = "open" }}
{extra_routes}
"#,
            up = up.addr()
        )
    }

    /// Rewrites the configuration (trusting `client_ca`, plus
    /// `extra_routes`) and reloads it through `POST /reload`, which answers
    /// once the new snapshot is live; returns the new generation.
    fn reload(&self, client_ca: &str, extra_routes: &str) -> u64 {
        self.gw.write_config_body(&Self::body(
            self.tls,
            self.admin,
            &self.up,
            self.client_auth,
            client_ca,
            extra_routes,
        ));
        let r = common::client::request(self.admin, "POST", "/reload", &[], None);
        assert_eq!(r.status, 200, "reload: {}", r.body_str());
        let generation = r.json()["generation"]
            .as_u64()
            .unwrap_or_else(|| panic!("no generation in {}", r.body_str()));
        let status = common::client::request(self.admin, "GET", "/status", &[], None);
        assert_eq!(
            status.json()["generation"],
            generation,
            "{}",
            status.body_str()
        );
        generation
    }
}

/// A client certificate and its key as files, for `openssl s_client`.
struct ClientFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn client_files(dir: &std::path::Path, name: &str, issued: &Issued) -> ClientFiles {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    ClientFiles { cert, key }
}

/// What one `openssl s_client` run printed.
struct SClient {
    stdout: String,
    stderr: String,
}

impl SClient {
    /// `Some(true)` when the handshake resumed a session ("Reused, ..."),
    /// `Some(false)` for a full handshake ("New, TLSv1.x, ..."), `None` when
    /// no handshake completed ("New, (NONE), Cipher is (NONE)" or nothing).
    fn reused(&self) -> Option<bool> {
        self.stdout.lines().find_map(|line| {
            if line.starts_with("Reused, TLSv1") {
                Some(Some(true))
            } else if line.starts_with("New, TLSv1") {
                Some(Some(false))
            } else if line.starts_with("New, (NONE)") {
                Some(None)
            } else {
                None
            }
        })?
    }

    /// The HTTP response, if one arrived.
    fn response(&self) -> Option<&str> {
        self.stdout.find("HTTP/1.1 ").map(|i| &self.stdout[i..])
    }

    fn status(&self) -> Option<u16> {
        self.response()?.get(9..12)?.parse().ok()
    }

    /// The response body, cut at its `content-length` (s_client prints
    /// more after it, e.g. "closed").
    fn body(&self) -> &str {
        let Some((head, rest)) = self.response().and_then(|r| r.split_once("\r\n\r\n")) else {
            return "";
        };
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(rest.len());
        rest.get(..length).unwrap_or(rest)
    }

    fn body_json(&self) -> serde_json::Value {
        serde_json::from_str(self.body()).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Display for SClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// How long one `openssl s_client` run may take before it is killed.
const S_CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// `GET path` over `openssl s_client -<version>` (`tls1_2` / `tls1_3`),
/// with the client certificate, resuming `sess_in`, saving the session to
/// `sess_out`. The request goes on stdin with `Connection: close`;
/// `-ign_eof` keeps s_client reading until the gateway closes. Killed (and
/// the test failed) after [`S_CLIENT_TIMEOUT`].
fn s_client(
    addr: SocketAddr,
    version: &str,
    client: Option<&ClientFiles>,
    sess_in: Option<&std::path::Path>,
    sess_out: Option<&std::path::Path>,
    path: &str,
) -> SClient {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-ign_eof"])
        .arg(format!("-{version}"));
    if let Some(c) = client {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    if let Some(p) = sess_in {
        cmd.arg("-sess_in").arg(p);
    }
    if let Some(p) = sess_out {
        cmd.arg("-sess_out").arg(p);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut stdin = child.stdin.take().unwrap();
    // A handshake failure may close the pipe first: that is not an error.
    let _ = stdin.write_all(request.as_bytes());
    drop(stdin);
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let finished = common::wait_until(S_CLIENT_TIMEOUT, || {
        child.try_wait().ok().flatten().is_some()
    });
    if !finished {
        let _ = child.kill();
    }
    let _ = child.wait();
    let out = SClient {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        finished,
        "openssl s_client did not finish within {S_CLIENT_TIMEOUT:?} (killed); {out}"
    );
    out
}

const TLS_VERSIONS: [&str; 2] = ["tls1_2", "tls1_3"];

/// A full handshake with a certificate from CA A that saves its session;
/// checks the request is authenticated as `cn`. Then a reconnection that
/// resumes the session without a certificate, still authenticated as `cn`:
/// sessions are resumable at all, so a "New" later means the gateway
/// refused the session, not that resumption never works.
fn authenticated_session(
    r: &Resumption,
    version: &str,
    client: &ClientFiles,
    cn: &str,
    session: &std::path::Path,
) {
    let first = s_client(r.tls, version, Some(client), None, Some(session), "/cn/x");
    assert_eq!(
        first.reused(),
        Some(false),
        "{version} first handshake: {first}"
    );
    assert_eq!(first.status(), Some(200), "{version}: {first}");
    assert_eq!(
        first.body_json()["headers"]["x-auth-subject"],
        cn,
        "{first}"
    );
    assert!(
        std::fs::metadata(session).is_ok_and(|m| m.len() > 0),
        "{version}: s_client saved no session; {first}"
    );
    let resumed = s_client(r.tls, version, None, Some(session), None, "/cn/x");
    assert_eq!(
        resumed.reused(),
        Some(true),
        "{version} resumption: {resumed}"
    );
    assert_eq!(resumed.status(), Some(200), "{version}: {resumed}");
    assert_eq!(
        resumed.body_json()["headers"]["x-auth-subject"],
        cn,
        "{resumed}"
    );
}

/// A reload that changes `client_ca` from CA A to CA B (same server
/// certificate) makes every earlier TLS session unresumable, in TLS 1.2 and
/// 1.3: a client that resumes a session made with a CA A certificate gets a
/// full handshake ("New") and, without a certificate, 401
/// `invalid_client_certificate` instead of the old identity; presenting the
/// CA A certificate again fails the handshake; CA B certificates work.
#[test]
fn reload_changing_client_ca_refuses_resumption_of_old_sessions() {
    let r = Resumption::start("optional");
    let dir = tempfile::tempdir().unwrap();
    let old_client = client_files(
        dir.path(),
        "a",
        &issue(&r.a, "client-of-a", &[], &[], false),
    );
    let new_client = client_files(
        dir.path(),
        "b",
        &issue(&r.b, "client-of-b", &[], &[], false),
    );
    let sessions: Vec<(&str, std::path::PathBuf)> = TLS_VERSIONS
        .iter()
        .map(|v| (*v, dir.path().join(format!("{v}.session"))))
        .collect();
    for (version, session) in &sessions {
        authenticated_session(&r, version, &old_client, "client-of-a", session);
    }

    r.reload("ca-b.crt", "");

    for (version, session) in &sessions {
        let after = s_client(r.tls, version, None, Some(session), None, "/cn/x");
        assert_eq!(
            after.reused(),
            Some(false),
            "{version}: a session verified under CA A was resumed after client_ca became CA B; {after}"
        );
        assert_eq!(after.status(), Some(401), "{version}: {after}");
        assert_eq!(
            after.body_json()["error"],
            "invalid_client_certificate",
            "{version}: {after}"
        );
        // The public route still works on such a connection.
        let open = s_client(r.tls, version, None, Some(session), None, "/open");
        assert_eq!(open.status(), Some(200), "{version}: {open}");

        // Resuming while offering the CA A certificate: no resumption, and
        // the certificate is no longer trusted.
        let with_old = s_client(
            r.tls,
            version,
            Some(&old_client),
            Some(session),
            None,
            "/cn/x",
        );
        assert_ne!(with_old.reused(), Some(true), "{version}: {with_old}");
        assert_eq!(with_old.status(), None, "{version}: {with_old}");

        // The new CA is in force.
        let b_session = dir.path().join(format!("{version}.b.session"));
        let fresh = s_client(
            r.tls,
            version,
            Some(&new_client),
            None,
            Some(&b_session),
            "/cn/x",
        );
        assert_eq!(fresh.status(), Some(200), "{version}: {fresh}");
        assert_eq!(
            fresh.body_json()["headers"]["x-auth-subject"],
            "client-of-b",
            "{fresh}"
        );
    }
}

/// With `client_auth = "required"`, resuming a pre-reload session after
/// `client_ca` changed is a full handshake that needs a certificate:
/// without one the handshake fails and nothing is served.
#[test]
fn reload_changing_required_client_ca_refuses_resumption_of_old_sessions() {
    let r = Resumption::start("required");
    let dir = tempfile::tempdir().unwrap();
    let old_client = client_files(
        dir.path(),
        "a",
        &issue(&r.a, "client-of-a", &[], &[], false),
    );
    let sessions: Vec<(&str, std::path::PathBuf)> = TLS_VERSIONS
        .iter()
        .map(|v| (*v, dir.path().join(format!("{v}.session"))))
        .collect();
    for (version, session) in &sessions {
        authenticated_session(&r, version, &old_client, "client-of-a", session);
    }

    r.reload("ca-b.crt", "");

    for (version, session) in &sessions {
        let after = s_client(r.tls, version, None, Some(session), None, "/cn/x");
        assert_ne!(
            after.reused(),
            Some(true),
            "{version}: a session verified under CA A was resumed after client_ca became CA B; {after}"
        );
        assert_eq!(
            after.status(),
            None,
            "{version}: something was served: {after}"
        );
    }
}

/// The intended counterpart: a reload that leaves `client_ca` alone (here
/// it only adds a route) keeps the acceptor, so sessions made before it are
/// still resumed, in TLS 1.2 and 1.3, with their verified certificate.
#[test]
fn reload_without_client_ca_change_keeps_sessions_resumable() {
    let r = Resumption::start("optional");
    let dir = tempfile::tempdir().unwrap();
    let client = client_files(
        dir.path(),
        "a",
        &issue(&r.a, "client-of-a", &[], &[], false),
    );
    let sessions: Vec<(&str, std::path::PathBuf)> = TLS_VERSIONS
        .iter()
        .map(|v| (*v, dir.path().join(format!("{v}.session"))))
        .collect();
    for (version, session) in &sessions {
        authenticated_session(&r, version, &client, "client-of-a", session);
    }

    let before = common::client::request(r.admin, "GET", "/status", &[], None).json()["generation"]
        .as_u64()
        .expect("generation");
    let new_route = r#"
[[routes]]
name = "added"
path = "/added"
public = true
respond = { status = 200, body = "added" }
"#;
    let generation = r.reload("ca-a.crt", new_route);
    assert!(generation > before, "generation {before} -> {generation}");

    for (version, session) in &sessions {
        // The reload is live: the new route answers on the TLS listener.
        let added = s_client(r.tls, version, None, Some(session), None, "/added");
        assert_eq!(added.status(), Some(200), "{version}: {added}");
        assert_eq!(added.body(), "added", "{added}");

        let resumed = s_client(r.tls, version, None, Some(session), None, "/cn/x");
        assert_eq!(
            resumed.reused(),
            Some(true),
            "{version}: a reload that kept client_ca made the session unresumable; {resumed}"
        );
        assert_eq!(resumed.status(), Some(200), "{version}: {resumed}");
        assert_eq!(
            resumed.body_json()["headers"]["x-auth-subject"],
            "client-of-a",
            "{resumed}"
        );
    }
}
