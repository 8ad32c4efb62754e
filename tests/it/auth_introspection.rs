//! `[auth.*] kind = "introspection"` (RFC 7662) against the real binary and
//! a real identity provider: identity headers, inactive and expired
//! answers, fail-closed on a refusing, failing or slow endpoint, positive
//! and negative caching, coalescing of concurrent lookups, and secrecy of
//! the client secret and the tokens.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::client::{build_request, request, send_raw, Response};
use common::gateway::{free_addr, Gateway};
use common::idp::{Idp, INTROSPECT_PATH};
use common::jwt::{now, unique_id};
use common::upstream::Upstream;
use common::wait_until;

const CLIENT_ID: &str = "gateway";
const CLIENT_SECRET: &str = "s3cr3t-Introspection-Client-Value-7f3a9c";
const TIMEOUT_MS: u64 = 300;

struct Fixture {
    gw: Gateway,
    up: Upstream,
    admin: SocketAddr,
    idp: Idp,
}

impl Fixture {
    /// A gateway with provider `opaque` asking `idp`, route `/orders` (auth
    /// opaque) to one upstream, and an admin listener. The IdP accepts the
    /// gateway's client credentials unless the test changes them.
    fn start(extra: &str) -> Fixture {
        Self::start_with(TIMEOUT_MS, 60, extra)
    }

    fn start_with(timeout_ms: u64, cache_seconds: u64, extra: &str) -> Fixture {
        let idp = Idp::start();
        idp.set_client(CLIENT_ID, CLIENT_SECRET);
        let up = Upstream::start("app");
        let admin = free_addr();
        let body = format!(
            r#"
[admin]
listen = "{admin}"

[upstreams.app]
targets = ["{up}"]

[auth.opaque]
kind = "introspection"
endpoint = "{endpoint}"
client_id = "{CLIENT_ID}"
client_secret_file = "{{dir}}/introspection.secret"
cache_seconds = {cache_seconds}
timeout_ms = {timeout_ms}
{extra}

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["opaque"]
upstream = "app"
"#,
            up = up.addr(),
            endpoint = idp.introspect_url(),
        );
        // A trailing newline, as `echo secret > file` leaves it.
        let secret = format!("{CLIENT_SECRET}\n");
        let gw = Gateway::start_with_files(&body, &[("introspection.secret", secret.as_str())]);
        let ready = wait_until(Duration::from_secs(10), || {
            send_raw(admin, &build_request("GET", "/readyz", &[], None, true))
                .is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "admin listener never became ready");
        Fixture { gw, up, admin, idp }
    }

    fn get(&self, token: &str) -> Response {
        get_token(self.gw.addr, token)
    }
}

fn get_token(addr: SocketAddr, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    request(addr, "GET", "/orders/1", &[("authorization", &auth)], None)
}

/// A fresh opaque token (token68 characters, `+`, `/` and `=` included so
/// that the form encoding towards the IdP is exercised).
fn opaque_token() -> String {
    format!("op+aq/ue.{}==", unique_id().replace('-', "_"))
}

fn active(sub: Option<&str>, client_id: &str, scope: &str, exp_in: i64) -> Value {
    let mut answer = json!({
        "active": true,
        "client_id": client_id,
        "scope": scope,
        "token_type": "Bearer",
        "iat": now(),
        "exp": now().saturating_add_signed(exp_in),
    });
    if let Some(sub) = sub {
        answer["sub"] = json!(sub);
    }
    answer
}

fn echoed_headers(resp: &Response) -> Value {
    assert_eq!(resp.status, 200, "expected 200, got {}", resp.body_str());
    resp.json()["headers"].clone()
}

fn assert_error(resp: &Response, status: u16, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got headers {:?} body {}",
        resp.headers,
        resp.body_str()
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["error"], code, "body {body}");
    assert!(body["message"].is_string(), "body {body}");
    let rid = body["request_id"].as_str().expect("request_id");
    assert_eq!(resp.header("x-request-id"), Some(rid));
    body
}

fn assert_invalid_token(resp: &Response) {
    assert_error(resp, 401, "invalid_token");
    let www = resp
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {:?}", resp.headers));
    assert!(www.starts_with(r#"Bearer realm="portcullis""#), "{www}");
    assert!(www.contains(r#"error="invalid_token""#), "{www}");
}

/// Nothing the gateway writes (both logs, stdout, stderr) and nothing it
/// answered contains `secret`.
fn assert_not_leaked(gw: &Gateway, secret: &str, responses: &[&Response]) {
    let logs = [
        (
            "access log",
            std::fs::read_to_string(&gw.access_log_path).unwrap_or_default(),
        ),
        (
            "security log",
            std::fs::read_to_string(&gw.security_log_path).unwrap_or_default(),
        ),
        ("stdout", gw.stdout()),
        ("stderr", gw.stderr()),
    ];
    for (what, text) in logs {
        assert!(
            !text.contains(secret),
            "the {what} contains a secret:\n{text}"
        );
    }
    for resp in responses {
        assert!(
            !resp.body_str().contains(secret),
            "a response body shows it"
        );
        for (name, value) in &resp.headers {
            assert!(!value.contains(secret), "response header {name} shows it");
        }
    }
}

/// The `auth_failure` event of the response's request (waits ≤ 5 s).
fn auth_failure_of(gw: &Gateway, resp: &Response) -> Value {
    let rid = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = gw
            .security_events("auth_failure")
            .into_iter()
            .find(|e| e["request_id"] == rid.as_str());
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no auth_failure for {rid}: {:?}", gw.security_log()))
}

fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = request(admin, "GET", "/metrics", &[], None).body_str();
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

// ------------------------------------------------------------- tests

fn active_token_reaches_upstream_with_identity_headers() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp.set_answer(
        &token,
        active(Some("bob"), "mobile-app", "orders:read profile", 300),
    );
    let auth = format!("Bearer {token}");
    let resp = request(
        f.gw.addr,
        "GET",
        "/orders/7",
        &[
            ("authorization", &auth),
            ("x-auth-subject", "admin"),
            ("x-auth-method", "jwt"),
            ("x-auth-consumer", "evil"),
            ("x-auth-roles", "admin"),
        ],
        None,
    );
    let h = echoed_headers(&resp);
    assert_eq!(h["x-auth-method"], "introspection", "{h}");
    assert_eq!(h["x-auth-subject"], "bob", "{h}");
    assert_eq!(h["x-auth-consumer"], "mobile-app", "{h}");
    assert_eq!(h["x-auth-scopes"], "orders:read profile", "{h}");
    assert!(
        h.get("x-auth-roles").is_none_or(|v| *v == ""),
        "client-sent roles reached the upstream: {h}"
    );
    // forward_credentials defaults to true.
    assert_eq!(h["authorization"], auth, "{h}");

    // What the IdP received: HTTP Basic with the (trimmed) secret from the
    // file, and the token, correctly form-encoded.
    let calls = f.idp.introspections();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].client,
        Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string()))
    );
    assert_eq!(calls[0].token.as_deref(), Some(token.as_str()));

    let rid = resp.header("x-request-id").unwrap().to_string();
    let mut record = None;
    wait_until(Duration::from_secs(5), || {
        record =
            f.gw.access_log()
                .into_iter()
                .find(|r| r["request_id"] == rid.as_str());
        record.is_some()
    });
    let record = record.expect("access log record");
    assert_eq!(record["auth_method"], "introspection", "{record}");
    assert_eq!(record["subject"], "bob", "{record}");
    assert_not_leaked(&f.gw, CLIENT_SECRET, &[&resp]);
    assert_not_leaked(&f.gw, &token, &[]);
}

fn answer_without_sub_uses_client_id_as_subject() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp.set_answer(
        &token,
        active(None, "reporting-service", "reports:read", 300),
    );
    let h = echoed_headers(&f.get(&token));
    assert_eq!(h["x-auth-subject"], "reporting-service", "{h}");
    assert_eq!(h["x-auth-consumer"], "reporting-service", "{h}");
    assert_eq!(h["x-auth-method"], "introspection", "{h}");
}

fn forward_credentials_false_removes_authorization() {
    let f = Fixture::start("forward_credentials = false");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "a", 300));
    let h = echoed_headers(&f.get(&token));
    assert!(h.get("authorization").is_none(), "{h}");
    assert_eq!(h["x-auth-subject"], "bob", "{h}");
}

fn missing_token_is_missing_credentials() {
    let f = Fixture::start("");
    let resp = request(f.gw.addr, "GET", "/orders/1", &[], None);
    assert_error(&resp, 401, "missing_credentials");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="portcullis""#)
    );
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 0);
    assert_eq!(f.up.hits(), 0);
}

fn inactive_token_is_invalid_token() {
    let f = Fixture::start("");
    let token = opaque_token(); // unknown to the IdP: {"active":false}
    let resp = f.get(&token);
    assert_invalid_token(&resp);
    assert_eq!(f.up.hits(), 0);
    let event = auth_failure_of(&f.gw, &resp);
    assert_eq!(event["reason"], "inactive", "{event}");
    assert_eq!(event["provider"], "opaque", "{event}");
    assert_eq!(event["route"], "orders", "{event}");
    let mut count = None;
    wait_until(Duration::from_secs(5), || {
        count = metric(
            f.admin,
            "portcullis_auth_failures_total",
            &[("provider", "opaque"), ("reason", "inactive")],
        );
        count == Some(1.0)
    });
    assert_eq!(count, Some(1.0), "auth_failures_total{{opaque,inactive}}");
    assert_not_leaked(&f.gw, &token, &[&resp]);
    assert_not_leaked(&f.gw, CLIENT_SECRET, &[&resp]);
}

fn active_answer_with_past_exp_is_refused() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", -10));
    let resp = f.get(&token);
    assert_invalid_token(&resp);
    assert_eq!(f.up.hits(), 0);
    let event = auth_failure_of(&f.gw, &resp);
    assert_eq!(event["provider"], "opaque", "{event}");
}

fn cached_answer_is_not_used_beyond_the_token_exp() {
    let f = Fixture::start("");
    let token = opaque_token();
    let exp = now() + 2;
    let mut answer = active(Some("bob"), "app", "orders:read", 0);
    answer["exp"] = json!(exp);
    f.idp.set_answer(&token, answer);
    assert_eq!(f.get(&token).status, 200);
    assert_eq!(f.get(&token).status, 200, "cached");
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 1);

    let deadline = Instant::now() + Duration::from_secs(5);
    while now() < exp && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(now() >= exp, "the clock did not reach exp");
    assert_invalid_token(&f.get(&token));
    assert_eq!(f.up.hits(), 2);
}

fn wrong_client_secret_is_503_auth_unavailable() {
    let f = Fixture::start("");
    f.idp
        .set_client(CLIENT_ID, "the-idp-expects-another-secret");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    let resp = f.get(&token);
    assert_error(&resp, 503, "auth_unavailable");
    assert!(resp
        .header("www-authenticate")
        .is_none_or(|w| !w.contains("invalid_token")));
    assert_eq!(f.up.hits(), 0);
    let calls = f.idp.introspections();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].client,
        Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string()))
    );
    // Let the logs settle, then look for the secret everywhere.
    f.gw.wait_access_log(1);
    assert_not_leaked(&f.gw, CLIENT_SECRET, &[&resp]);
    assert_not_leaked(&f.gw, &token, &[&resp]);
}

fn failing_endpoint_is_503_and_errors_are_not_cached() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    f.idp.set_status(INTROSPECT_PATH, 500);
    assert_error(&f.get(&token), 503, "auth_unavailable");
    f.idp.clear_status(INTROSPECT_PATH);
    let h = echoed_headers(&f.get(&token));
    assert_eq!(h["x-auth-subject"], "bob", "{h}");
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 2);
}

fn unreachable_endpoint_is_503() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    f.idp.stop();
    assert_error(&f.get(&token), 503, "auth_unavailable");
    assert_eq!(f.up.hits(), 0);
}

fn endpoint_slower_than_timeout_is_503() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    // An answer that would be accepted, if the gateway waited for it.
    f.idp.set_delay_ms(2000);
    let started = Instant::now();
    let resp = f.get(&token);
    let took = started.elapsed();
    assert_error(&resp, 503, "auth_unavailable");
    assert!(
        took < Duration::from_millis(1800),
        "the gateway waited {took:?} although timeout_ms = {TIMEOUT_MS}"
    );
    assert_eq!(f.up.hits(), 0);
}

fn positive_answers_are_cached() {
    let f = Fixture::start("");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    for i in 0..5 {
        assert_eq!(f.get(&token).status, 200, "request {i}");
    }
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 1);
    // Another token is another lookup.
    let other = opaque_token();
    f.idp
        .set_answer(&other, active(Some("carol"), "app", "orders:read", 300));
    assert_eq!(echoed_headers(&f.get(&other))["x-auth-subject"], "carol");
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 2);
}

fn negative_answers_are_cached() {
    let f = Fixture::start("");
    let token = opaque_token();
    for _ in 0..3 {
        assert_invalid_token(&f.get(&token));
    }
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 1);
    assert_eq!(f.up.hits(), 0);
}

#[test]
fn concurrent_identical_lookups_make_one_call() {
    let f = Fixture::start_with(3000, 60, "");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    f.idp.set_delay_ms(300);
    let addr = f.gw.addr;
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let barrier = barrier.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                barrier.wait();
                get_token(addr, &token).status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    assert_eq!(statuses, vec![200; 8]);
    assert_eq!(
        f.idp.hits(INTROSPECT_PATH),
        1,
        "8 concurrent lookups of one token must share one call"
    );
    assert_eq!(f.up.hits(), 8);
}

/// `cache_seconds = 0` (the configuration allows it) turns caching off:
/// every request asks the IdP, and an active answer still admits the
/// request.
fn cache_seconds_zero_disables_caching_but_accepts_active_tokens() {
    let f = Fixture::start_with(TIMEOUT_MS, 0, "");
    let token = opaque_token();
    f.idp
        .set_answer(&token, active(Some("bob"), "app", "orders:read", 300));
    let first = f.get(&token);
    assert_eq!(
        first.status,
        200,
        "an active token was refused with cache_seconds = 0: {}",
        first.body_str()
    );
    assert_eq!(f.get(&token).status, 200);
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 2, "nothing may be cached");
    // Inactive answers are not cached either.
    let inactive = opaque_token();
    assert_invalid_token(&f.get(&inactive));
    assert_invalid_token(&f.get(&inactive));
    assert_eq!(f.idp.hits(INTROSPECT_PATH), 4);
}

fn roles_and_scopes_come_from_the_configured_claims() {
    let f = Fixture::start("roles_claim = \"realm_access.roles\"\nscopes_claim = \"scp\"");
    let token = opaque_token();
    let mut answer = active(Some("carol"), "app", "ignored", 300);
    answer["realm_access"] = serde_json::json!({"roles": ["auditor", "viewer"]});
    answer["scp"] = serde_json::json!(["orders:read", "orders:write"]);
    f.idp.set_answer(&token, answer);
    let h = echoed_headers(&f.get(&token));
    assert_eq!(h["x-auth-roles"], "auditor,viewer", "{h}");
    assert_eq!(h["x-auth-scopes"], "orders:read orders:write", "{h}");
}

// ------------------------------------- RFC 8705 certificate binding

mod cert_bound {
    //! A TLS listener that asks for client certificates (CA made in the
    //! test) in front of the introspection provider.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use pingora::tls::hash::{hash, MessageDigest};
    use pingora::tls::pkey::PKey;
    use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use pingora::tls::x509::X509;

    pub struct Issued {
        pub cert_pem: String,
        pub key_pem: String,
    }

    pub struct Ca {
        pub pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    pub fn ca(name: &str) -> Ca {
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

    pub fn issue(ca: &Ca, cn: &str, dns: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// RFC 8705 `x5t#S256`: base64url-no-pad(SHA-256(DER of the leaf)).
    pub fn thumbprint(issued: &Issued) -> String {
        let der = X509::from_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        crate::common::jwt::b64url(&hash(MessageDigest::sha256(), &der).unwrap())
    }

    /// One HTTPS GET with an optional client certificate and headers;
    /// returns the status and the raw response.
    pub fn https_get(
        addr: SocketAddr,
        client: Option<&Issued>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        if let Some(c) = client {
            builder
                .set_certificate(&X509::from_pem(c.cert_pem.as_bytes()).unwrap())
                .unwrap();
            builder
                .set_private_key(&PKey::private_key_from_pem(c.key_pem.as_bytes()).unwrap())
                .unwrap();
        }
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = builder
            .build()
            .connect("localhost", tcp)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        tls.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = tls.read_to_string(&mut out);
        let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, out)
    }

    pub fn body_json(response: &str) -> serde_json::Value {
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }
}

/// RFC 8705 on introspection: an answer whose `cnf` carries `x5t#S256`
/// admits the token only on a connection presenting that very client
/// certificate. Another certificate (from the same trusted CA), no
/// certificate, or the plain listener is 401 `invalid_token` with reason
/// `cert_binding_mismatch` — before and after the answer is cached.
fn certificate_bound_introspection_answers_need_the_matching_certificate() {
    use cert_bound::{body_json, ca, https_get, issue, thumbprint};

    let clients = ca("client ca");
    let server = issue(&ca("server ca"), "localhost", &["localhost"]);
    let mine = issue(&clients, "me", &[]);
    let other = issue(&clients, "other", &[]);
    let idp = Idp::start();
    idp.set_client(CLIENT_ID, CLIENT_SECRET);
    let up = Upstream::start("app");
    let tls = free_addr();
    let body = format!(
        r#"
[[listeners]]
name = "https"
listen = "{tls}"
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key", client_ca = "{{dir}}/client-ca.crt", client_auth = "optional" }}

[upstreams.app]
targets = ["{up}"]

[auth.opaque]
kind = "introspection"
endpoint = "{endpoint}"
client_id = "{CLIENT_ID}"
client_secret_file = "{{dir}}/introspection.secret"
cache_seconds = 60
timeout_ms = 3000

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["opaque"]
upstream = "app"
"#,
        up = up.addr(),
        endpoint = idp.introspect_url(),
    );
    let gw = Gateway::start_with_files(
        &body,
        &[
            ("introspection.secret", CLIENT_SECRET),
            ("server.crt", &server.cert_pem),
            ("server.key", &server.key_pem),
            ("client-ca.crt", &clients.pem),
        ],
    );
    assert!(common::gateway::wait_for_port(tls, Duration::from_secs(10)));

    let token = opaque_token();
    let mut answer = active(Some("alice"), "app", "orders:read", 300);
    answer["cnf"] = json!({ "x5t#S256": thumbprint(&mine) });
    idp.set_answer(&token, answer);
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];

    // First use, with the wrong certificate: not cached yet.
    let (status, r) = https_get(tls, Some(&other), "/orders/1", &headers);
    assert_eq!(status, 401, "another certificate: {r}");
    assert_eq!(body_json(&r)["error"], "invalid_token", "{r}");

    let (status, r) = https_get(tls, Some(&mine), "/orders/1", &headers);
    assert_eq!(status, 200, "the bound certificate: {r}");
    assert_eq!(body_json(&r)["headers"]["x-auth-subject"], "alice", "{r}");

    // From the cache now: the binding is still checked per connection.
    for (client, what) in [
        (Some(&other), "another certificate"),
        (None, "no certificate"),
    ] {
        let (status, r) = https_get(tls, client, "/orders/1", &headers);
        assert_eq!(status, 401, "{what}: {r}");
        let body = body_json(&r);
        assert_eq!(body["error"], "invalid_token", "{what}: {r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"portcullis\", error=\"invalid_token\""),
            "{what}: {r}"
        );
    }
    // The plain listener has no client certificate at all.
    assert_invalid_token(&get_token(gw.addr, &token));
    let (status, r) = https_get(tls, Some(&mine), "/orders/1", &headers);
    assert_eq!(status, 200, "the bound certificate again: {r}");
    assert_eq!(
        idp.hits(INTROSPECT_PATH),
        1,
        "the answer is cached; the binding is checked on every request"
    );
    assert_eq!(
        up.hits(),
        2,
        "only the two matching requests reached the upstream"
    );

    let events = gw.wait_security_events("auth_failure", 4);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["reason"] == "cert_binding_mismatch" && e["provider"] == "opaque"),
        "{events:?}"
    );

    // An unbound answer still works without a certificate.
    let plain = opaque_token();
    idp.set_answer(&plain, active(Some("bob"), "app", "orders:read", 300));
    let (status, r) = https_get(
        tls,
        None,
        "/orders/1",
        &[("authorization", &format!("Bearer {plain}"))],
    );
    assert_eq!(status, 200, "{r}");
}

// Each of these runs twice, over HTTP/1.1 and over h2c (CONTRACT §9).
crate::on_http1_and_h2c!(
    active_token_reaches_upstream_with_identity_headers,
    answer_without_sub_uses_client_id_as_subject,
    forward_credentials_false_removes_authorization,
    missing_token_is_missing_credentials,
    inactive_token_is_invalid_token,
    active_answer_with_past_exp_is_refused,
    cached_answer_is_not_used_beyond_the_token_exp,
    wrong_client_secret_is_503_auth_unavailable,
    failing_endpoint_is_503_and_errors_are_not_cached,
    unreachable_endpoint_is_503,
    endpoint_slower_than_timeout_is_503,
    positive_answers_are_cached,
    negative_answers_are_cached,
    cache_seconds_zero_disables_caching_but_accepts_active_tokens,
    roles_and_scopes_come_from_the_configured_claims,
    certificate_bound_introspection_answers_need_the_matching_certificate,
);
