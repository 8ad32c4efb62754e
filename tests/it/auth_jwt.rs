//! `[auth.*] kind = "jwt"` against the real binary: identity headers,
//! every refusal of CONTRACT §4 with its `WWW-Authenticate`, security events
//! and metrics, keys from a JWKS file, a JWKS URL and OIDC discovery served
//! by a real identity provider, key rotation and its rate limit,
//! stale-on-error, fail-closed without keys, several providers on one route,
//! reloads and the verified-token cache.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};

use common::client::{build_request, request, send_raw, Conn, Response};
use common::gateway::{free_addr, Gateway};
use common::idp::{Idp, DISCOVERY_PATH, JWKS_PATH};
use common::jwt::{self, claims, jwks, TestKey};
use common::upstream::Upstream;
use common::wait_until;

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders";
/// `max_token_bytes` of the JWKS-file fixture: ordinary test tokens are
/// well under it (an RS256 token with these claims is ~700 bytes).
const MAX_TOKEN_BYTES: usize = 2048;
/// The refetch rate limit of CONTRACT §3 (one per provider per 10 s).
const REFETCH_WINDOW: Duration = Duration::from_secs(10);
/// Bound for waiting on a periodic JWKS refresh (`jwks_refresh_seconds =
/// 10`, the minimum) to have happened.
const REFRESH_WAIT: Duration = Duration::from_secs(16);

// ---------------------------------------------------------------- config

fn config(admin: SocketAddr, up: &Upstream, providers: &str, routes: &str) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[upstreams.app]
targets = ["{up}"]

{providers}

{routes}
"#,
        up = up.addr()
    )
}

/// A `[auth.NAME]` jwt provider; `source` is its `jwks_file` / `jwks_uri` /
/// `discovery_url` line, `extra` more keys.
fn jwt_provider(name: &str, issuer: &str, source: &str, extra: &str) -> String {
    format!(
        r#"
[auth.{name}]
kind = "jwt"
issuer = "{issuer}"
audiences = ["{AUD}"]
{source}
algorithms = ["RS256", "ES256"]
roles_claim = "realm_access.roles"
{extra}
"#
    )
}

fn file_source(file: &str) -> String {
    format!("jwks_file = \"{{dir}}/{file}\"")
}

fn uri_source(idp: &Idp) -> String {
    format!("jwks_uri = \"{}\"", idp.jwks_uri())
}

fn orders_route(auth: &[&str]) -> String {
    let auth: Vec<String> = auth.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
auth = [{}]
upstream = "app"
"#,
        auth.join(", ")
    )
}

const PUBLIC_ROUTE: &str = r#"
[[routes]]
name = "public"
path_prefix = "/public"
public = true
upstream = "app"
"#;

const PING_ROUTE: &str = r#"
[[routes]]
name = "ping"
path = "/ping"
public = true
respond = { status = 200, body = "pong" }
"#;

// --------------------------------------------------------------- helpers

/// A token for `key` that every fixture accepts, unique per call.
fn token(key: &TestKey) -> String {
    key.sign(claims(ISS, AUD, "alice", 300))
}

/// `claims(ISS, AUD, "alice", 300)` with `changes` applied (a `null`
/// removes the claim).
fn claims_with(changes: Value) -> Value {
    let mut c = claims(ISS, AUD, "alice", 300);
    for (name, value) in changes.as_object().expect("object") {
        if value.is_null() {
            c.as_object_mut().expect("object").remove(name);
        } else {
            c[name] = value.clone();
        }
    }
    c
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, None)
}

fn get_token(addr: SocketAddr, token: &str) -> Response {
    let auth = bearer(token);
    get_with(addr, "/orders/1", &[("authorization", &auth)])
}

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    request(admin, "GET", path, &[], None)
}

fn admin_post(admin: SocketAddr, path: &str) -> Response {
    request(admin, "POST", path, &[], None)
}

/// Waits (≤ 10 s) for the admin listener to answer `/readyz` with 200.
fn wait_admin(admin: SocketAddr) {
    let ready = wait_until(Duration::from_secs(10), || {
        send_raw(admin, &build_request("GET", "/readyz", &[], None, true))
            .is_ok_and(|r| r.status == 200)
    });
    assert!(ready, "admin listener {admin} never became ready");
}

/// The upstream's echo of the request headers (lower-case names).
fn echoed_headers(resp: &Response) -> Value {
    assert_eq!(resp.status, 200, "expected 200, got {}", resp.body_str());
    resp.json()["headers"].clone()
}

/// A §4 error: status, `content-type: application/json`, the JSON body with
/// `error`, `message` and the response's `x-request-id` as `request_id`.
fn assert_error(resp: &Response, status: u16, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got headers {:?} body {}",
        resp.headers,
        resp.body_str()
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{:?}",
        resp.headers
    );
    let body = resp.json();
    assert_eq!(body["error"], code, "body {body}");
    assert!(body["message"].is_string(), "body {body}");
    let rid = body["request_id"].as_str().expect("request_id string");
    assert!(!rid.is_empty());
    assert_eq!(resp.header("x-request-id"), Some(rid), "request id");
    body
}

fn assert_missing_credentials(resp: &Response) {
    assert_error(resp, 401, "missing_credentials");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="portcullis""#),
        "{:?}",
        resp.headers
    );
}

fn assert_invalid_token(resp: &Response) {
    assert_error(resp, 401, "invalid_token");
    let www = resp
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {:?}", resp.headers));
    assert!(
        www.starts_with(r#"Bearer realm="portcullis""#),
        "WWW-Authenticate {www:?}"
    );
    assert!(
        www.contains(r#"error="invalid_token""#),
        "WWW-Authenticate {www:?}"
    );
}

/// A Prometheus sample `name{labels...}`; `None` when no series matches.
fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = admin_get(admin, "/metrics").body_str();
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

/// Polls (≤ 5 s) until the metric reaches `want`; returns the last value.
fn wait_metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) -> Option<f64> {
    let mut last = None;
    wait_until(Duration::from_secs(5), || {
        last = metric(admin, name, labels);
        last.is_some_and(|v| v >= want)
    });
    last
}

/// The pieces of `secret` that must never be shown: the whole string and,
/// for a JWT, each long segment.
fn secret_pieces(secret: &str) -> Vec<&str> {
    let mut pieces = vec![secret];
    pieces.extend(secret.split('.').filter(|s| s.len() >= 20));
    pieces.retain(|p| p.len() >= 8);
    pieces
}

/// Neither the access log, the security log, nor the process's stdout and
/// stderr contain `secret` (or a long segment of it).
fn assert_not_logged(gw: &Gateway, secret: &str) {
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
        for piece in secret_pieces(secret) {
            assert!(
                !text.contains(piece),
                "the {what} contains a credential ({piece:.24}...):\n{text}"
            );
        }
    }
}

/// The access log record of the response's request id (waits ≤ 5 s).
fn access_record(gw: &Gateway, resp: &Response) -> Value {
    let rid = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = gw
            .access_log()
            .into_iter()
            .find(|r| r["request_id"] == rid.as_str());
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no access log record for {rid}: {:?}", gw.access_log()))
}

/// Security events named `event` for `provider`, waiting up to `timeout`
/// for at least one.
fn wait_provider_event(gw: &Gateway, event: &str, provider: &str, timeout: Duration) -> Value {
    let mut found = None;
    wait_until(timeout, || {
        found = gw
            .security_events(event)
            .into_iter()
            .find(|e| e["provider"] == provider);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {event} event for provider {provider} within {timeout:?}; security log: {:?}",
            gw.security_log()
        )
    })
}

fn status_auth(admin: SocketAddr, provider: &str) -> Value {
    let status = admin_get(admin, "/status");
    assert_eq!(status.status, 200, "{}", status.body_str());
    status.json()["auth"][provider].clone()
}

/// Whether `s` looks like an RFC 3339 UTC timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.fff]Z` or with an offset).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s[19..].contains(['+', '-']))
}

// --------------------------------------------------------------- fixtures

/// A gateway with provider `corp` reading `{dir}/jwks.json` (an RS256 key
/// `k1` and an ES256 key `e1`), route `/orders` (auth corp) and public route
/// `/public`, both to one upstream, and an admin listener.
struct FileFixture {
    gw: Gateway,
    up: Upstream,
    admin: SocketAddr,
    rsa: TestKey,
    ec: TestKey,
}

impl FileFixture {
    fn start(extra: &str) -> FileFixture {
        let rsa = TestKey::rsa("k1");
        let ec = TestKey::ec256("e1");
        let up = Upstream::start("app");
        let admin = free_addr();
        let provider = jwt_provider(
            "corp",
            ISS,
            &file_source("jwks.json"),
            &format!("max_token_bytes = {MAX_TOKEN_BYTES}\n{extra}"),
        );
        let routes = format!("{}{PUBLIC_ROUTE}", orders_route(&["corp"]));
        let body = config(admin, &up, &provider, &routes);
        let gw = Gateway::start_with_files(&body, &[("jwks.json", jwks(&[&rsa, &ec]).as_str())]);
        wait_admin(admin);
        FileFixture {
            gw,
            up,
            admin,
            rsa,
            ec,
        }
    }

    /// Sends `headers` to `/orders/1` and checks the whole refusal: 401
    /// `invalid_token` with its `WWW-Authenticate`, nothing sent upstream,
    /// an `auth_failure` event with one of `reasons` for provider `corp`,
    /// the matching `portcullis_auth_failures_total` sample, and `secret`
    /// nowhere in the response or the logs.
    fn expect_invalid(&self, headers: &[(&str, &str)], reasons: &[&str], secret: &str) {
        let resp = get_with(self.gw.addr, "/orders/1", headers);
        assert_invalid_token(&resp);
        for piece in secret_pieces(secret) {
            assert!(
                !resp.body_str().contains(piece),
                "response body shows the credential: {}",
                resp.body_str()
            );
            for (name, value) in &resp.headers {
                assert!(!value.contains(piece), "response header {name} shows it");
            }
        }
        assert_eq!(self.up.hits(), 0, "a refused request reached the upstream");

        let rid = resp.header("x-request-id").expect("x-request-id");
        let event = self
            .gw
            .wait_security_event("auth_failure")
            .unwrap_or_else(|| {
                panic!(
                    "no auth_failure event; security log {:?}",
                    self.gw.security_log()
                )
            });
        let reason = event["reason"].as_str().unwrap_or_default().to_string();
        assert!(
            reasons.contains(&reason.as_str()),
            "auth_failure reason {reason:?}, expected one of {reasons:?}: {event}"
        );
        assert_eq!(event["provider"], "corp", "{event}");
        assert_eq!(event["route"], "orders", "{event}");
        assert_eq!(event["request_id"], rid, "{event}");
        assert_eq!(event["client_ip"], "127.0.0.1", "{event}");
        assert!(event["ts"].as_str().is_some_and(is_rfc3339), "{event}");

        let labels = [("provider", "corp"), ("reason", reason.as_str())];
        assert_eq!(
            wait_metric(self.admin, "portcullis_auth_failures_total", &labels, 1.0),
            Some(1.0),
            "portcullis_auth_failures_total{{provider=\"corp\",reason=\"{reason}\"}}"
        );

        let record = access_record(&self.gw, &resp);
        assert_eq!(record["status"], 401, "{record}");
        assert_eq!(record["route"], "orders", "{record}");
        assert_not_logged(&self.gw, secret);
    }
}

/// A gateway whose provider `corp` gets its keys from `idp` by `jwks_uri`.
struct UriFixture {
    gw: Gateway,
    up: Upstream,
    admin: SocketAddr,
}

impl UriFixture {
    fn start(idp: &Idp, extra: &str) -> UriFixture {
        let up = Upstream::start("app");
        let admin = free_addr();
        let provider = jwt_provider("corp", ISS, &uri_source(idp), extra);
        let body = config(admin, &up, &provider, &orders_route(&["corp"]));
        let gw = Gateway::start(&body);
        wait_admin(admin);
        UriFixture { gw, up, admin }
    }

    /// Like `start`, then waits (≤ 5 s) until the startup JWKS fetch has
    /// installed keys, so that later fetch counts are exact.
    fn start_ready(idp: &Idp, extra: &str) -> UriFixture {
        let f = Self::start(idp, extra);
        let ready = wait_until(Duration::from_secs(5), || {
            idp.hits(JWKS_PATH) >= 1
                && status_auth(f.admin, "corp")["kids"]
                    .as_array()
                    .is_some_and(|k| !k.is_empty())
        });
        assert!(ready, "the provider never loaded its keys");
        f
    }
}

// ------------------------------------------------- 1. identity headers

fn valid_rs256_token_reaches_upstream_with_identity_headers() {
    let f = FileFixture::start("");
    let token = f.rsa.sign(claims_with(json!({
        "azp": "orders-web",
        "scope": "orders:read orders:write",
        "realm_access": {"roles": ["admin", "user"]},
    })));
    let auth = bearer(&token);
    let resp = get_with(
        f.gw.addr,
        "/orders/1",
        &[
            ("authorization", &auth),
            ("X-Auth-Subject", "admin"),
            ("x-auth-method", "api_key"),
            ("x-auth-consumer", "evil"),
            ("x-auth-scopes", "everything"),
            ("X-AUTH-ROLES", "superuser"),
        ],
    );
    let h = echoed_headers(&resp);
    assert_eq!(h["x-auth-method"], "jwt", "{h}");
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert_eq!(h["x-auth-consumer"], "orders-web", "{h}");
    assert_eq!(h["x-auth-scopes"], "orders:read orders:write", "{h}");
    assert_eq!(h["x-auth-roles"], "admin,user", "{h}");
    // forward_credentials defaults to true for jwt providers.
    assert_eq!(h["authorization"], auth, "{h}");

    let record = access_record(&f.gw, &resp);
    assert_eq!(record["auth_method"], "jwt", "{record}");
    assert_eq!(record["subject"], "alice", "{record}");
    assert_eq!(record["route"], "orders", "{record}");
    assert_eq!(record["status"], 200, "{record}");
    assert_not_logged(&f.gw, &token);
}

fn es256_token_without_sub_uses_client_id_and_drops_client_headers() {
    let f = FileFixture::start("");
    let token =
        f.ec.sign(claims_with(json!({"sub": null, "client_id": "batch-job"})));
    let auth = bearer(&token);
    let resp = get_with(
        f.gw.addr,
        "/orders/2",
        &[
            ("authorization", &auth),
            ("x-auth-scopes", "orders:admin"),
            ("x-auth-roles", "admin"),
            ("x-auth-subject", "root"),
        ],
    );
    let h = echoed_headers(&resp);
    assert_eq!(h["x-auth-method"], "jwt", "{h}");
    assert_eq!(h["x-auth-subject"], "batch-job", "{h}");
    assert_eq!(h["x-auth-consumer"], "batch-job", "{h}");
    // The token grants no scope and no role: the client's claims of them
    // must not survive.
    for name in ["x-auth-scopes", "x-auth-roles"] {
        assert!(
            h.get(name).is_none_or(|v| *v == ""),
            "client-sent {name} reached the upstream: {h}"
        );
    }
}

fn public_route_never_forwards_client_identity_headers() {
    let f = FileFixture::start("");
    let resp = get_with(
        f.gw.addr,
        "/public/x",
        &[
            ("x-auth-method", "jwt"),
            ("x-auth-subject", "admin"),
            ("x-auth-consumer", "acme"),
            ("x-auth-scopes", "orders:admin"),
            ("x-auth-roles", "admin"),
        ],
    );
    let h = echoed_headers(&resp);
    for name in [
        "x-auth-method",
        "x-auth-subject",
        "x-auth-consumer",
        "x-auth-scopes",
        "x-auth-roles",
    ] {
        assert!(h.get(name).is_none(), "{name} reached the upstream: {h}");
    }
    // A valid token on a public route authenticates nobody either.
    let token = token(&f.rsa);
    let auth = bearer(&token);
    let h = echoed_headers(&get_with(
        f.gw.addr,
        "/public/y",
        &[("authorization", &auth), ("x-auth-subject", "admin")],
    ));
    assert!(h.get("x-auth-subject").is_none(), "{h}");
}

fn forward_credentials_false_removes_authorization() {
    let f = FileFixture::start("forward_credentials = false");
    let token = token(&f.rsa);
    let h = echoed_headers(&get_token(f.gw.addr, &token));
    assert!(h.get("authorization").is_none(), "{h}");
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert_eq!(h["x-auth-method"], "jwt", "{h}");
}

// ------------------------------------------------------- 2. refusals

fn no_token_is_missing_credentials() {
    let f = FileFixture::start("");
    assert_missing_credentials(&get_with(f.gw.addr, "/orders/1", &[]));
    // Another scheme is no bearer credential either.
    assert_missing_credentials(&get_with(
        f.gw.addr,
        "/orders/1",
        &[("authorization", "Basic dXNlcjpwYXNzd29yZA==")],
    ));
    assert_eq!(f.up.hits(), 0);
    assert!(
        wait_metric(
            f.admin,
            "portcullis_auth_failures_total",
            &[("provider", "corp")],
            2.0
        )
        .is_some(),
        "missing credentials are counted"
    );
}

fn expired_token_is_invalid_token() {
    let f = FileFixture::start("");
    // Beyond the default 30 s leeway.
    let token = f.rsa.sign(claims(ISS, AUD, "alice", -3600));
    f.expect_invalid(&[("authorization", &bearer(&token))], &["expired"], &token);
}

fn not_yet_valid_token_is_invalid_token() {
    let f = FileFixture::start("");
    let token = f.rsa.sign(claims_with(json!({"nbf": jwt::now() + 3600})));
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["not_yet_valid"],
        &token,
    );
}

fn token_without_exp_is_invalid_token() {
    let f = FileFixture::start("");
    let token = f.rsa.sign(claims_with(json!({"exp": null})));
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["missing_exp"],
        &token,
    );
}

fn wrong_issuer_is_invalid_token() {
    let f = FileFixture::start("");
    let token = f.rsa.sign(claims("https://evil.test/", AUD, "alice", 300));
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["wrong_issuer"],
        &token,
    );
}

fn wrong_audience_is_invalid_token() {
    let f = FileFixture::start("");
    let token = f.rsa.sign(claims(ISS, "billing", "alice", 300));
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["wrong_audience"],
        &token,
    );
}

fn tampered_payload_is_bad_signature() {
    let f = FileFixture::start("");
    let original = token(&f.rsa);
    let mut forged_claims = jwt::payload(&original);
    forged_claims["sub"] = json!("admin");
    let forged = jwt::tamper(&original, forged_claims);
    f.expect_invalid(
        &[("authorization", &bearer(&forged))],
        &["bad_signature"],
        &forged,
    );
}

fn token_signed_by_another_key_with_a_known_kid_is_bad_signature() {
    let f = FileFixture::start("");
    let attacker = TestKey::rsa("k1");
    let token = token(&attacker);
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["bad_signature"],
        &token,
    );
}

fn alg_none_is_refused() {
    let f = FileFixture::start("");
    let token = jwt::unsigned(
        json!({"alg": "none", "typ": "JWT", "kid": "k1"}),
        claims(ISS, AUD, "admin", 300),
    );
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["alg_not_allowed"],
        &token,
    );
}

fn hs256_token_on_an_rs256_provider_is_refused() {
    let f = FileFixture::start("");
    // The classic confusion attack: the public key as the HMAC secret.
    let public = jwks(&[&f.rsa]);
    let token = jwt::sign_hs256(
        public.as_bytes(),
        Some("k1"),
        claims(ISS, AUD, "admin", 300),
    );
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["alg_not_allowed"],
        &token,
    );
}

fn es256_token_naming_an_rsa_kid_is_refused() {
    let f = FileFixture::start("");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".to_string());
    let token =
        f.ec.sign_with_header(header, claims(ISS, AUD, "alice", 300));
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["no_matching_key", "bad_signature", "alg_not_allowed"],
        &token,
    );
}

fn unknown_kid_with_a_jwks_file_is_invalid_token() {
    let f = FileFixture::start("");
    let stranger = TestKey::rsa("k9");
    let token = token(&stranger);
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["unknown_kid"],
        &token,
    );
}

fn garbage_token_is_malformed() {
    let f = FileFixture::start("");
    let garbage = "not-a-jwt-at-all-0123456789";
    f.expect_invalid(
        &[("authorization", &bearer(garbage))],
        &["malformed"],
        garbage,
    );
}

fn three_garbage_segments_are_malformed() {
    let f = FileFixture::start("");
    let garbage = "eyJub3QiOiJhIGhlYWRlciJ9.bm90IGpzb24.c2lnbmF0dXJl";
    f.expect_invalid(
        &[("authorization", &bearer(garbage))],
        &["malformed", "alg_not_allowed"],
        garbage,
    );
}

fn empty_bearer_token_is_invalid_token() {
    // CONTRACT §3: "An empty bearer token is invalid_token."
    let f = FileFixture::start("");
    let raw = b"GET /orders/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \r\n\
                Connection: close\r\n\r\n";
    let resp = send_raw(f.gw.addr, raw).expect("response");
    assert_invalid_token(&resp);
    let event =
        f.gw.wait_security_event("auth_failure")
            .expect("auth_failure");
    assert_eq!(event["reason"], "malformed", "{event}");
    assert_eq!(event["provider"], "corp", "{event}");
    assert_eq!(f.up.hits(), 0);
}

fn two_authorization_headers_are_refused() {
    let f = FileFixture::start("");
    // Even two valid tokens: which one would the upstream believe?
    let first = token(&f.rsa);
    let second = token(&f.ec);
    let (a, b) = (bearer(&first), bearer(&second));
    f.expect_invalid(
        &[("authorization", &a), ("authorization", &b)],
        &["malformed"],
        &first,
    );
    assert_not_logged(&f.gw, &second);
}

fn token_over_max_token_bytes_is_refused() {
    let f = FileFixture::start("");
    let token = f
        .rsa
        .sign(claims_with(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)})));
    assert!(token.len() > MAX_TOKEN_BYTES);
    f.expect_invalid(
        &[("authorization", &bearer(&token))],
        &["too_large", "malformed"],
        &token,
    );
}

// ------------------------------------------- 3. jwks_uri and rotation

fn jwks_uri_provider_accepts_valid_tokens() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    let e1 = TestKey::ec256("e1");
    idp.set_jwks(jwks(&[&k1, &e1]));
    let f = UriFixture::start_ready(&idp, "");
    let h = echoed_headers(&get_token(f.gw.addr, &token(&k1)));
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert_eq!(h["x-auth-method"], "jwt", "{h}");
    assert_eq!(get_token(f.gw.addr, &token(&e1)).status, 200);
    assert_eq!(idp.hits(JWKS_PATH), 1, "one fetch serves every token");
    let event = wait_provider_event(&f.gw, "jwks_refreshed", "corp", Duration::from_secs(5));
    assert!(event["ts"].is_string(), "{event}");
    assert_eq!(
        wait_metric(
            f.admin,
            "portcullis_jwks_refresh_total",
            &[("provider", "corp"), ("result", "ok")],
            1.0
        ),
        Some(1.0)
    );
}

fn unknown_kid_triggers_one_refetch_then_is_rate_limited() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k2");
    let k3 = TestKey::ec256("k3");
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(&idp, "");
    let old = token(&k1);
    assert_eq!(get_token(f.gw.addr, &old).status, 200);
    assert_eq!(idp.hits(JWKS_PATH), 1);
    let started = Instant::now();

    // Wait out any refetch window the startup fetch may have opened (the
    // current implementation counts it, see
    // key_rotation_soon_after_startup_is_accepted), so that this test checks
    // the unknown-kid refetch and its rate limit on their own.
    std::thread::sleep(
        (REFETCH_WINDOW + Duration::from_millis(1500)).saturating_sub(started.elapsed()),
    );

    // Rotation: k1 is withdrawn, k2 published.
    idp.set_jwks(jwks(&[&k2]));
    let before = idp.hits(JWKS_PATH);
    let h = echoed_headers(&get_token(f.gw.addr, &token(&k2)));
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert_eq!(
        idp.hits(JWKS_PATH),
        before + 1,
        "exactly one refetch for the unknown kid"
    );

    // The cached k1 token was verified by a key that is gone.
    assert_invalid_token(&get_token(f.gw.addr, &old));

    // A second unknown kid within 10 s: no fetch, refused, even though the
    // IdP would now know it.
    idp.set_jwks(jwks(&[&k2, &k3]));
    let k3_token = token(&k3);
    let resp = get_token(f.gw.addr, &k3_token);
    assert_invalid_token(&resp);
    let rid = resp.header("x-request-id").unwrap().to_string();
    let mut event = None;
    wait_until(Duration::from_secs(5), || {
        event =
            f.gw.security_events("auth_failure")
                .into_iter()
                .find(|e| e["request_id"] == rid.as_str());
        event.is_some()
    });
    let event = event.expect("auth_failure for the k3 token");
    assert_eq!(event["reason"], "unknown_kid", "{event}");
    assert_eq!(event["provider"], "corp", "{event}");
    assert_eq!(
        idp.hits(JWKS_PATH),
        before + 1,
        "the second unknown kid must not cause another fetch"
    );
    // A flood of invented kids does not either.
    for i in 0..20 {
        let fake = k3.with_kid(&format!("invented-{i}"));
        assert_invalid_token(&get_token(f.gw.addr, &token(&fake)));
    }
    assert_eq!(idp.hits(JWKS_PATH), before + 1);
    assert_eq!(get_token(f.gw.addr, &token(&k2)).status, 200);
}

/// The IdP rotates its key a few seconds after the gateway started: the
/// first token with the new kid must be accepted through the unknown-kid
/// refetch ("Key rotation must never break valid tokens").
fn key_rotation_soon_after_startup_is_accepted() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k2");
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(&idp, "");
    assert_eq!(get_token(f.gw.addr, &token(&k1)).status, 200);
    assert_eq!(idp.hits(JWKS_PATH), 1);

    idp.set_jwks(jwks(&[&k1, &k2]));
    let resp = get_token(f.gw.addr, &token(&k2));
    assert_eq!(
        resp.status,
        200,
        "a token signed with the newly published key k2 was refused ({}); \
         JWKS fetches so far: {} (the startup fetch must not use up the \
         unknown-kid refetch allowance)",
        resp.body_str(),
        idp.hits(JWKS_PATH)
    );
    assert_eq!(idp.hits(JWKS_PATH), 2);
}

fn failing_jwks_refresh_keeps_the_last_good_keys() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(&idp, "jwks_refresh_seconds = 10");
    assert_eq!(get_token(f.gw.addr, &token(&k1)).status, 200);

    idp.set_status(JWKS_PATH, 500);
    let event = wait_provider_event(&f.gw, "jwks_refresh_failed", "corp", REFRESH_WAIT);
    assert!(event["ts"].is_string(), "{event}");
    assert!(idp.hits(JWKS_PATH) >= 2, "the refresh did ask the IdP");
    assert!(
        wait_metric(
            f.admin,
            "portcullis_jwks_refresh_total",
            &[("provider", "corp"), ("result", "error")],
            1.0
        )
        .is_some_and(|v| v >= 1.0),
        "jwks_refresh_total{{result=\"error\"}}"
    );
    // A token never seen before (so not from the token cache) is still
    // verified with the stale keys.
    let h = echoed_headers(&get_token(f.gw.addr, &token(&k1)));
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert_eq!(status_auth(f.admin, "corp")["kids"], json!(["k1"]));

    // The IdP disappears altogether: still the same.
    idp.stop();
    assert_eq!(get_token(f.gw.addr, &token(&k1)).status, 200);
}

fn empty_jwks_answer_keeps_the_last_good_keys() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(&idp, "jwks_refresh_seconds = 10");
    assert_eq!(get_token(f.gw.addr, &token(&k1)).status, 200);

    idp.set_jwks(r#"{"keys":[]}"#);
    wait_provider_event(&f.gw, "jwks_refresh_failed", "corp", REFRESH_WAIT);
    assert_eq!(get_token(f.gw.addr, &token(&k1)).status, 200);
    assert_eq!(status_auth(f.admin, "corp")["kids"], json!(["k1"]));
}

// ----------------------------------------------------- 4. no keys at all

fn no_keys_ever_fetched_is_503_auth_unavailable() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    idp.stop();
    let f = UriFixture::start(&idp, "");
    let token = token(&k1);
    let resp = get_token(f.gw.addr, &token);
    assert_error(&resp, 503, "auth_unavailable");
    assert!(!resp.body_str().contains(&token));
    assert_eq!(f.up.hits(), 0);
    let event = wait_provider_event(&f.gw, "jwks_refresh_failed", "corp", Duration::from_secs(5));
    assert!(event["ts"].is_string(), "{event}");
    assert_eq!(
        status_auth(f.admin, "corp")["kids"],
        json!([]),
        "no keys yet"
    );
    // Without a token there is nothing to verify: 401 (or 503), never 200.
    let status = get_with(f.gw.addr, "/orders/1", &[]).status;
    assert!(matches!(status, 401 | 503), "no token: {status}");

    // The IdP comes back: within the refetch window plus slack, keys are
    // fetched on demand and the token is accepted.
    idp.restart().expect("restart idp");
    let mut last = 0;
    let recovered = wait_until(REFETCH_WINDOW + Duration::from_secs(6), || {
        last = get_token(f.gw.addr, &token).status;
        std::thread::sleep(Duration::from_millis(250));
        last == 200
    });
    assert!(recovered, "still {last} after the IdP came back");
    assert_not_logged(&f.gw, &token);
}

// ------------------------------------------------------- 5. discovery

fn discovery_with_matching_issuer_is_accepted() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    idp.set_issuer(ISS);
    let up = Upstream::start("app");
    let admin = free_addr();
    let provider = jwt_provider(
        "corp",
        ISS,
        &format!("discovery_url = \"{}\"", idp.discovery_url()),
        "",
    );
    let gw = Gateway::start(&config(admin, &up, &provider, &orders_route(&["corp"])));
    wait_admin(admin);
    let h = echoed_headers(&get_token(gw.addr, &token(&k1)));
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert!(idp.hits(DISCOVERY_PATH) >= 1);
    assert_eq!(idp.hits(JWKS_PATH), 1);
    assert_eq!(status_auth(admin, "corp")["kids"], json!(["k1"]));
}

fn discovery_with_mismatching_issuer_fails_closed() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    idp.set_issuer("https://evil.test/");
    let up = Upstream::start("app");
    let admin = free_addr();
    let provider = jwt_provider(
        "corp",
        ISS,
        &format!("discovery_url = \"{}\"", idp.discovery_url()),
        "",
    );
    let gw = Gateway::start(&config(admin, &up, &provider, &orders_route(&["corp"])));
    wait_admin(admin);
    let resp = get_token(gw.addr, &token(&k1));
    assert_error(&resp, 503, "auth_unavailable");
    assert_eq!(up.hits(), 0);
    wait_provider_event(&gw, "jwks_refresh_failed", "corp", Duration::from_secs(5));
    assert!(idp.hits(DISCOVERY_PATH) >= 1);
    assert_eq!(
        idp.hits(JWKS_PATH),
        0,
        "keys of an IdP that names another issuer must not be fetched"
    );
}

// ------------------------------------------------ 6. several providers

fn two_providers(up: &Upstream, admin: SocketAddr, a_source: &str) -> String {
    let a = jwt_provider("a", ISS, a_source, "");
    let b = jwt_provider("b", "https://partner.test/", &file_source("b.json"), "");
    config(admin, up, &format!("{a}{b}"), &orders_route(&["a", "b"]))
}

fn second_provider_accepts_and_invalid_beats_missing() {
    let ka = TestKey::rsa("a1");
    let kb = TestKey::ec256("b1");
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start_with_files(
        &two_providers(&up, admin, &file_source("a.json")),
        &[
            ("a.json", jwks(&[&ka]).as_str()),
            ("b.json", jwks(&[&kb]).as_str()),
        ],
    );
    wait_admin(admin);

    let partner = kb.sign(claims("https://partner.test/", AUD, "partner-user", 300));
    let h = echoed_headers(&get_token(gw.addr, &partner));
    assert_eq!(h["x-auth-subject"], "partner-user", "{h}");
    let h = echoed_headers(&get_token(gw.addr, &token(&ka)));
    assert_eq!(h["x-auth-subject"], "alice", "{h}");

    // Invalid for both: the presented-but-bad credential is the answer.
    let expired = ka.sign(claims(ISS, AUD, "alice", -3600));
    assert_invalid_token(&get_token(gw.addr, &expired));
    assert_invalid_token(&get_token(gw.addr, "garbage-token-value"));
    // b's token with a's issuer: b refuses the issuer, a the kid.
    let confused = kb.sign(claims(ISS, AUD, "alice", 300));
    assert_invalid_token(&get_token(gw.addr, &confused));
    assert_missing_credentials(&get_with(gw.addr, "/orders/1", &[]));
    assert_eq!(up.hits(), 2);
    let events = gw.wait_security_events("auth_failure", 3);
    assert_eq!(events.len(), 3, "{events:?}");
    for e in &events {
        assert!(e["provider"] == "a" || e["provider"] == "b", "{e}");
    }
}

fn an_unavailable_provider_does_not_hide_a_valid_one() {
    let dead = Idp::start();
    dead.stop();
    let ka = TestKey::rsa("a1");
    let kb = TestKey::ec256("b1");
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start_with_files(
        &two_providers(&up, admin, &uri_source(&dead)),
        &[("b.json", jwks(&[&kb]).as_str())],
    );
    wait_admin(admin);
    let partner = kb.sign(claims("https://partner.test/", AUD, "partner-user", 300));
    let h = echoed_headers(&get_token(gw.addr, &partner));
    assert_eq!(h["x-auth-subject"], "partner-user", "{h}");
    // A token only `a` could judge: fail closed.
    assert_error(&get_token(gw.addr, &token(&ka)), 503, "auth_unavailable");
}

// --------------------------------------------------------- 7. reload

fn reload_keeps_unchanged_provider_keys_and_status_shows_them() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    let up = Upstream::start("app");
    let admin = free_addr();
    let provider = jwt_provider("corp", ISS, &uri_source(&idp), "");
    let body = |extra_routes: &str, provider: &str| {
        config(
            admin,
            &up,
            provider,
            &format!("{}{extra_routes}", orders_route(&["corp"])),
        )
    };
    let gw = Gateway::start(&body("", &provider));
    wait_admin(admin);
    assert_eq!(get_token(gw.addr, &token(&k1)).status, 200);
    assert_eq!(idp.hits(JWKS_PATH), 1);

    let before = status_auth(admin, "corp");
    assert_eq!(before["kind"], "jwt", "{before}");
    assert_eq!(before["kids"], json!(["k1"]), "{before}");
    let last_refresh = before["last_refresh"]
        .as_str()
        .unwrap_or_else(|| panic!("last_refresh: {before}"))
        .to_string();
    assert!(is_rfc3339(&last_refresh), "{last_refresh}");

    // Only the routes change.
    gw.write_config_body(&body(PING_ROUTE, &provider));
    let r = admin_post(admin, "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(get_with(gw.addr, "/ping", &[]).body_str(), "pong");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(idp.hits(JWKS_PATH), 1, "an unchanged provider refetched");
    let after = status_auth(admin, "corp");
    assert_eq!(after["kids"], json!(["k1"]), "{after}");
    assert_eq!(after["last_refresh"], last_refresh.as_str(), "{after}");
    assert_eq!(get_token(gw.addr, &token(&k1)).status, 200);
    assert_eq!(idp.hits(JWKS_PATH), 1);

    // The same by SIGHUP.
    gw.write_config_body(&body("", &provider));
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || get_with(
        gw.addr,
        "/ping",
        &[]
    )
    .status
        == 404));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(idp.hits(JWKS_PATH), 1, "an unchanged provider refetched");

    // A changed provider is a new one: it fetches its keys again.
    let changed = provider.replace(
        &format!("audiences = [\"{AUD}\"]"),
        &format!("audiences = [\"{AUD}\", \"billing\"]"),
    );
    assert_ne!(changed, provider);
    gw.write_config_body(&body("", &changed));
    let r = admin_post(admin, "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(
        wait_until(Duration::from_secs(5), || idp.hits(JWKS_PATH) >= 2),
        "a changed provider did not fetch its keys"
    );
    let billing = k1.sign(claims(ISS, "billing", "bob", 300));
    assert_eq!(get_token(gw.addr, &billing).status, 200);
    assert_eq!(status_auth(admin, "corp")["kids"], json!(["k1"]));
}

fn reload_rereads_the_jwks_file() {
    let f = FileFixture::start("");
    let k2 = TestKey::rsa("k2");
    assert_eq!(get_token(f.gw.addr, &token(&f.rsa)).status, 200);
    assert_invalid_token(&get_token(f.gw.addr, &token(&k2)));
    assert_eq!(status_auth(f.admin, "corp")["kids"], json!(["e1", "k1"]));

    f.gw.write_file("jwks.json", &jwks(&[&k2]));
    let r = admin_post(f.admin, "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(get_token(f.gw.addr, &token(&k2)).status, 200);
    assert_invalid_token(&get_token(f.gw.addr, &token(&f.rsa)));
    assert_eq!(status_auth(f.admin, "corp")["kids"], json!(["k2"]));
}

// ------------------------------------------- 8. verified-token cache

fn the_same_token_fifty_times_needs_one_jwks_fetch() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(&idp, "");
    let token = token(&k1);
    let auth = bearer(&token);
    let mut conn = Conn::open(f.gw.addr);
    for i in 0..50 {
        let resp = conn
            .request("GET", "/orders/1", &[("authorization", &auth)], None)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body_str());
    }
    assert_eq!(f.up.hits(), 50);
    assert_eq!(idp.hits(JWKS_PATH), 1);
}

fn a_cached_token_is_refused_once_it_expires() {
    let f = FileFixture::start("leeway_seconds = 0");
    let exp = jwt::now() + 2;
    let token = f.rsa.sign(claims_with(json!({"exp": exp})));
    assert_eq!(get_token(f.gw.addr, &token).status, 200);
    assert_eq!(get_token(f.gw.addr, &token).status, 200, "cached");

    let deadline = Instant::now() + Duration::from_secs(5);
    while jwt::now() < exp && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(jwt::now() >= exp, "the clock did not reach exp");
    let resp = get_token(f.gw.addr, &token);
    assert_invalid_token(&resp);
    let event =
        f.gw.wait_security_event("auth_failure")
            .expect("auth_failure");
    assert_eq!(event["reason"], "expired", "{event}");
    assert_eq!(f.up.hits(), 2);
}

// ------------------------------------------------------- more options

fn scopes_claim_array_and_lowercase_scheme() {
    let f = FileFixture::start("scopes_claim = \"scp\"");
    let token = f.rsa.sign(claims_with(json!({
        "scp": ["orders:read", "orders:write"],
        "scope": "ignored",
    })));
    let auth = format!("bearer {token}");
    let h = echoed_headers(&get_with(
        f.gw.addr,
        "/orders/1",
        &[("authorization", &auth)],
    ));
    assert_eq!(h["x-auth-scopes"], "orders:read orders:write", "{h}");
}

fn a_missing_required_claim_is_invalid_token() {
    let f = FileFixture::start("required_claims = [\"sub\", \"tenant\"]");
    let ok = f.rsa.sign(claims_with(json!({"tenant": "t1"})));
    assert_eq!(get_token(f.gw.addr, &ok).status, 200);
    let token = token(&f.rsa);
    let resp = get_token(f.gw.addr, &token);
    assert_invalid_token(&resp);
    let event = f.gw.wait_security_event("auth_failure").expect("event");
    assert_eq!(event["reason"], "missing_claim", "{event}");
    assert_not_logged(&f.gw, &token);
}

fn secret_file_provider_accepts_hs256_only() {
    let secret = "0123456789abcdef0123456789abcdef-hmac";
    let up = Upstream::start("app");
    let admin = free_addr();
    let provider = r#"
[auth.corp]
kind = "jwt"
issuer = "https://idp.test/"
audiences = ["orders"]
secret_file = "{dir}/hmac.secret"
algorithms = ["HS256"]
"#;
    let gw = Gateway::start_with_files(
        &config(admin, &up, provider, &orders_route(&["corp"])),
        &[("hmac.secret", &format!("{secret}\n"))],
    );
    wait_admin(admin);
    let good = jwt::sign_hs256(secret.as_bytes(), None, claims(ISS, AUD, "svc", 300));
    let h = echoed_headers(&get_token(gw.addr, &good));
    assert_eq!(h["x-auth-subject"], "svc", "{h}");
    let forged = jwt::sign_hs256(
        b"another-secret-another-secret-xx",
        None,
        claims(ISS, AUD, "svc", 300),
    );
    assert_invalid_token(&get_token(gw.addr, &forged));
    let rsa = TestKey::rsa("k1");
    assert_invalid_token(&get_token(gw.addr, &token(&rsa)));
    assert_not_logged(&gw, secret);
    assert_not_logged(&gw, &good);
}

// ------------------------------- key replaced under the same kid

/// Polls (≤ `timeout`) until every JWKS fetch the IdP has answered has been
/// installed (one `jwks_refreshed` event of provider `corp` per fetch) and
/// there are more than `fetches_before`; panics otherwise.
fn wait_refreshed_after(gw: &Gateway, idp: &Idp, fetches_before: usize, timeout: Duration) {
    let mut seen = (0, 0);
    let done = wait_until(timeout, || {
        let fetches = idp.hits(JWKS_PATH);
        let installed = gw
            .security_events("jwks_refreshed")
            .iter()
            .filter(|e| e["provider"] == "corp")
            .count();
        seen = (fetches, installed);
        fetches > fetches_before && installed >= fetches
    });
    assert!(
        done,
        "no JWKS refresh installed within {timeout:?} (fetches, jwks_refreshed) = {seen:?}; \
         security log {:?}",
        gw.security_log()
    );
}

/// Checks CONTRACT §8 "Key material" once the IdP has replaced key K1 with
/// K2 under the same kid `k1` and the gateway has refreshed: the token
/// verified (and cached) with K1 is refused, a new K1 token too, and K2
/// tokens are accepted.
fn assert_k1_replaced_by_k2(f: &UriFixture, cached_k1: &str, k1: &TestKey, k2: &TestKey) {
    let resp = get_token(f.gw.addr, cached_k1);
    assert_invalid_token(&resp);
    let rid = resp.header("x-request-id").unwrap().to_string();
    let mut event = None;
    wait_until(Duration::from_secs(5), || {
        event =
            f.gw.security_events("auth_failure")
                .into_iter()
                .find(|e| e["request_id"] == rid.as_str());
        event.is_some()
    });
    let event = event.expect("auth_failure for the cached K1 token");
    assert_eq!(event["reason"], "bad_signature", "{event}");
    assert_eq!(event["provider"], "corp", "{event}");
    assert_invalid_token(&get_token(f.gw.addr, &token(k1)));
    let h = echoed_headers(&get_token(f.gw.addr, &token(k2)));
    assert_eq!(h["x-auth-subject"], "alice", "{h}");
    assert_eq!(status_auth(f.admin, "corp")["kids"], json!(["k1"]));
}

/// A refresh that replaces the key behind kid `k1` (K1 -> K2), triggered by
/// a token naming an unknown kid, drops the verified-token cache entry of a
/// K1 token: the cache is bound to the key, not only to its kid.
fn a_key_replaced_under_the_same_kid_refuses_cached_tokens_after_a_refetch() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k1"); // another key, the same kid
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(&idp, "token_cache_entries = 1000");
    let cached = token(&k1);
    assert_eq!(get_token(f.gw.addr, &cached).status, 200);
    assert_eq!(get_token(f.gw.addr, &cached).status, 200, "cached");
    assert_eq!(idp.hits(JWKS_PATH), 1);

    idp.set_jwks(jwks(&[&k2]));
    let fetches = idp.hits(JWKS_PATH);
    // A kid the gateway does not know makes it refetch the JWKS now.
    let probe = k2.with_kid("not-published");
    assert_invalid_token(&get_token(f.gw.addr, &token(&probe)));
    wait_refreshed_after(&f.gw, &idp, fetches, Duration::from_secs(5));

    assert_k1_replaced_by_k2(&f, &cached, &k1, &k2);
}

/// The same through the periodic refresh (`jwks_refresh_seconds = 10`, the
/// smallest allowed): once it has installed K2 under kid `k1`, the cached K1
/// token is refused.
fn a_key_replaced_under_the_same_kid_refuses_cached_tokens_after_a_periodic_refresh() {
    let idp = Idp::start();
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k1");
    idp.set_jwks(jwks(&[&k1]));
    let f = UriFixture::start_ready(
        &idp,
        "token_cache_entries = 1000\njwks_refresh_seconds = 10",
    );
    let cached = token(&k1);
    assert_eq!(get_token(f.gw.addr, &cached).status, 200);
    assert_eq!(get_token(f.gw.addr, &cached).status, 200, "cached");

    idp.set_jwks(jwks(&[&k2]));
    let fetches = idp.hits(JWKS_PATH);
    wait_refreshed_after(&f.gw, &idp, fetches, REFRESH_WAIT);

    assert_k1_replaced_by_k2(&f, &cached, &k1, &k2);
}

// Each of these runs twice, over HTTP/1.1 and over h2c (CONTRACT §9).
crate::on_http1_and_h2c!(
    valid_rs256_token_reaches_upstream_with_identity_headers,
    es256_token_without_sub_uses_client_id_and_drops_client_headers,
    public_route_never_forwards_client_identity_headers,
    forward_credentials_false_removes_authorization,
    no_token_is_missing_credentials,
    expired_token_is_invalid_token,
    not_yet_valid_token_is_invalid_token,
    token_without_exp_is_invalid_token,
    wrong_issuer_is_invalid_token,
    wrong_audience_is_invalid_token,
    tampered_payload_is_bad_signature,
    token_signed_by_another_key_with_a_known_kid_is_bad_signature,
    alg_none_is_refused,
    hs256_token_on_an_rs256_provider_is_refused,
    es256_token_naming_an_rsa_kid_is_refused,
    unknown_kid_with_a_jwks_file_is_invalid_token,
    garbage_token_is_malformed,
    three_garbage_segments_are_malformed,
    empty_bearer_token_is_invalid_token,
    two_authorization_headers_are_refused,
    token_over_max_token_bytes_is_refused,
    jwks_uri_provider_accepts_valid_tokens,
    unknown_kid_triggers_one_refetch_then_is_rate_limited,
    key_rotation_soon_after_startup_is_accepted,
    failing_jwks_refresh_keeps_the_last_good_keys,
    empty_jwks_answer_keeps_the_last_good_keys,
    no_keys_ever_fetched_is_503_auth_unavailable,
    discovery_with_matching_issuer_is_accepted,
    discovery_with_mismatching_issuer_fails_closed,
    second_provider_accepts_and_invalid_beats_missing,
    an_unavailable_provider_does_not_hide_a_valid_one,
    reload_keeps_unchanged_provider_keys_and_status_shows_them,
    reload_rereads_the_jwks_file,
    the_same_token_fifty_times_needs_one_jwks_fetch,
    a_cached_token_is_refused_once_it_expires,
    scopes_claim_array_and_lowercase_scheme,
    a_missing_required_claim_is_invalid_token,
    secret_file_provider_accepts_hs256_only,
    a_key_replaced_under_the_same_kid_refuses_cached_tokens_after_a_refetch,
    a_key_replaced_under_the_same_kid_refuses_cached_tokens_after_a_periodic_refresh,
);
