//! `portcullis import kong` (README, "Moving from Kong") with the real
//! binary: a decK file using every plugin the importer knows converts, the
//! output passes `check` and holds no plaintext key, everything without an
//! equivalent is listed on stderr, and the converted gateway, in front of
//! real upstreams, answers the requests the Kong file describes the way
//! Kong would: key-auth accepted and refused, acl denials, rate limit,
//! CORS preflight, ip-restriction, request size, request-transformer
//! headers, route paths, methods and strip_path, weighted targets, jwt
//! credentials (HMAC and RSA).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::gateway::{check, config_header, free_addr, run_bounded, Gateway, BIN};
use crate::common::{assert_error, request, Upstream};

const ALICE_KEY: &str = "pc_alice1_AliceSecretAliceSecretAliceSecret42";
const BOB_KEY: &str = "pc_bob1_BobSecretBobSecretBobSecretBobSecret7";
/// Keys of Kong's own form, carried over as opaque keys (found by hash).
const CAROL_KEY: &str = "carol-legacy-kong-key-0123456789";
const DAVE_KEY: &str = "dave-short";
const HMAC_SECRET: &str = "alice-hmac-secret-of-at-least-32-characters";

struct Imported {
    dir: tempfile::TempDir,
    stdout: String,
    stderr: String,
    ok: bool,
}

fn kong_file(a: SocketAddr, b: SocketAddr, c: SocketAddr, rsa_pem: &str) -> String {
    let pem: String = rsa_pem
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect();
    format!(
        r#"_format_version: "3.0"
_transform: true
services:
  - name: orders
    host: orders-upstream
    port: 80
    protocol: http
    connect_timeout: 2000
    read_timeout: 5000
    write_timeout: 60000
    retries: 1
    plugins:
      - name: key-auth
        config:
          key_names: [apikey]
          hide_credentials: true
      - name: acl
        config:
          allow: [buyers]
          hide_groups_header: true
    routes:
      - name: orders-read
        paths: [/orders]
        methods: [GET]
        strip_path: true
        preserve_host: true
      - name: orders-admin
        paths: [/admin]
        strip_path: false
        preserve_host: true
        plugins:
          - name: acl
            config:
              deny: [buyers]
              hide_groups_header: true
  - name: web
    url: http://{c}
    routes:
      - name: hello
        paths: [/hello]
        strip_path: false
        preserve_host: true
        plugins:
          - name: request-transformer
            config:
              add:
                headers: ["x-added:yes"]
              remove:
                headers: [x-secret]
                querystring: [debug]
          - name: cors
            config:
              origins: ["https://app.example.com"]
              methods: [GET, POST]
              headers: [content-type]
              max_age: 600
      - name: limited
        paths: [/limited]
        preserve_host: true
        plugins:
          - name: rate-limiting
            config:
              minute: 3
              limit_by: ip
              policy: local
      - name: upload
        paths: [/upload]
        methods: [POST]
        preserve_host: true
        plugins:
          - name: request-size-limiting
            config:
              allowed_payload_size: 1
              size_unit: kilobytes
      - name: internal
        paths: [/internal]
        preserve_host: true
        plugins:
          - name: ip-restriction
            config:
              deny: [127.0.0.1]
      - name: versioned
        paths: ["~/v[0-9]+/items$"]
        preserve_host: true
  - name: tokens
    url: http://{c}
    routes:
      - name: token-route
        paths: [/tokens]
        preserve_host: true
        plugins:
          - name: jwt
            config:
              claims_to_verify: [exp]
              uri_param_names: []
upstreams:
  - name: orders-upstream
    algorithm: round-robin
    targets:
      - target: {a}
        weight: 100
      - target: {b}
        weight: 100
consumers:
  - username: alice
    keyauth_credentials:
      - key: {ALICE_KEY}
    acls:
      - group: buyers
    jwt_secrets:
      - key: https://alice.example/
        algorithm: HS256
        secret: {HMAC_SECRET}
  - username: bob
    keyauth_credentials:
      - key: {BOB_KEY}
    jwt_secrets:
      - key: https://bob.example/
        algorithm: RS256
        rsa_public_key: |
{pem}  - username: carol
    keyauth_credentials:
      - key: {CAROL_KEY}
        id: 5a1f3c2e-0b7d-4e8a-9c6f-1d2e3f4a5b6c
    acls:
      - group: buyers
  - username: dave
    keyauth_credentials:
      - key: {DAVE_KEY}
      - key: {CAROL_KEY}
    acls:
      - group: buyers
plugins:
  - name: prometheus
  - name: rate-limiting
    consumer: bob
    config:
      second: 1
"#
    )
}

fn import(yaml: &str) -> Imported {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yaml");
    fs::write(&file, yaml).unwrap();
    let out = dir.path().join("out");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["import", "kong"])
        .arg(&file)
        .arg("--out-dir")
        .arg(&out);
    let o = run_bounded(cmd, Duration::from_secs(30));
    Imported {
        dir,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        ok: o.status.success(),
    }
}

fn rsa_pair() -> (String, EncodingKey) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let public = String::from_utf8(rsa.public_key_to_pem().unwrap()).unwrap();
    (
        public,
        EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap()),
    )
}

fn token(alg: Algorithm, key: &EncodingKey, iss: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(alg),
        &json!({"iss": iss, "sub": "s1", "exp": now + 300}),
        key,
    )
    .unwrap()
}

fn every_file(dir: &Path) -> String {
    let mut all = String::new();
    for e in fs::read_dir(dir).unwrap() {
        all.push_str(&String::from_utf8_lossy(
            &fs::read(e.unwrap().path()).unwrap(),
        ));
    }
    all
}

#[test]
fn import_kong_converts_checks_and_answers_like_kong() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let (rsa_pem, rsa_key) = rsa_pair();
    let run = import(&kong_file(a.addr(), b.addr(), c.addr(), &rsa_pem));
    assert!(run.ok, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let out = run.dir.path().join("out");

    // Every stderr line is one construct, in the documented form.
    for line in run.stderr.lines() {
        assert!(
            line.starts_with("kong.yaml: ")
                && (line.contains(": not converted: ")
                    || line.contains(": converted approximately: ")),
            "{line}"
        );
    }
    for expected in [
        "kong.yaml: plugins[0]: not converted: plugin prometheus has no Portcullis equivalent",
        "kong.yaml: plugins[1]: not converted: plugin rate-limiting for consumer bob",
        "kong.yaml: consumers[3].keyauth_credentials[0]: converted approximately: a key of 10 characters can be guessed from its hash",
        "kong.yaml: consumers[3].keyauth_credentials[1]: not converted: the same key as an earlier credential",
        "kong.yaml: services[1].routes[4].paths[0]: not converted: regex path",
        "kong.yaml: services[1].routes[0].plugins[0].config.remove.querystring: not converted",
        "kong.yaml: services[1].routes[0].plugins[0].config.add.headers: converted approximately",
        "kong.yaml: services[1].routes[1].plugins[0].config: converted approximately: a token bucket",
    ] {
        assert!(run.stderr.contains(expected), "missing `{expected}` in:\n{}", run.stderr);
    }
    assert!(run.stdout.contains("API keys (hashed)"), "{}", run.stdout);

    // No plaintext key anywhere in the output, and never echoed.
    let written = every_file(&out);
    for key in [ALICE_KEY, BOB_KEY, CAROL_KEY, DAVE_KEY] {
        assert!(!written.contains(key), "{key} written out");
        assert!(!run.stderr.contains(key) && !run.stdout.contains(key));
        let secret = key.rsplit('_').next().unwrap();
        assert!(!written.contains(secret));
    }
    let keys = fs::read_to_string(out.join("api_keys.toml")).unwrap();
    assert!(
        keys.contains("id = \"alice1\"") && keys.contains("roles = [\"buyers\"]"),
        "{keys}"
    );
    assert!(
        keys.contains("id = \"5a1f3c2e0b7d4e8a9c6f1d2e3f4a5b6c\"\nconsumer = \"carol\"")
            && keys.matches("opaque = true").count() == 2,
        "{keys}"
    );

    let config_path = out.join("portcullis.toml");
    let o = check(&config_path);
    assert!(
        o.status.success(),
        "check:\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        fs::read_to_string(&config_path).unwrap()
    );

    // Serve it on a free port with the harness' [server] and [log].
    let converted = fs::read_to_string(&config_path).unwrap();
    let listener = "[[listeners]]\nname = \"http\"\nlisten = \"0.0.0.0:8000\"\n";
    assert!(converted.contains(listener));
    let gw_dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let full = converted.replace(listener, &config_header(gw_dir.path(), addr));
    let gw = Gateway::start_full(full, addr, gw_dir);

    // key-auth on the service: accepted, missing, wrong; the key is hidden
    // from the upstream (hide_credentials); strip_path; both targets used.
    let mut saw = (0, 0);
    for _ in 0..6 {
        let r = request(addr, "GET", "/orders/7", &[("apikey", ALICE_KEY)], None);
        assert_eq!(r.status, 200, "{}", r.body_str());
        let echo = r.json();
        assert_eq!(echo["uri"], "/7");
        assert!(echo["headers"].get("apikey").is_none());
        assert_eq!(echo["headers"]["x-auth-consumer"], "alice");
        match echo["server"].as_str() {
            Some("a") => saw.0 += 1,
            Some("b") => saw.1 += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(saw.0 > 0 && saw.1 > 0, "{saw:?}");
    assert_error(
        &request(addr, "GET", "/orders/7", &[], None),
        401,
        "missing_credentials",
    );
    let wrong = "pc_alice1_NotTheRightSecretNotTheRightSecret1";
    assert_error(
        &request(addr, "GET", "/orders/7", &[("apikey", wrong)], None),
        401,
        "invalid_api_key",
    );
    // Kong-form keys work as they did in Kong.
    for (key, consumer) in [(CAROL_KEY, "carol"), (DAVE_KEY, "dave")] {
        let r = request(addr, "GET", "/orders/7", &[("apikey", key)], None);
        assert_eq!(r.status, 200, "{key}: {}", r.body_str());
        assert_eq!(r.json()["headers"]["x-auth-consumer"], consumer);
    }
    assert_error(
        &request(
            addr,
            "GET",
            "/orders/7",
            &[("apikey", "carol-legacy-kong-key-012345678")],
            None,
        ),
        401,
        "invalid_api_key",
    );
    // key_in_query (Kong's default): the parameter is read and removed.
    let r = request(
        addr,
        "GET",
        &format!("/orders/1?apikey={ALICE_KEY}&x=1"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["uri"], "/1?x=1");
    // acl allow [buyers]: bob is no buyer; methods [GET]: POST is 405.
    assert_error(
        &request(addr, "GET", "/orders/7", &[("apikey", BOB_KEY)], None),
        403,
        "forbidden",
    );
    assert_error(
        &request(
            addr,
            "POST",
            "/orders/7",
            &[("apikey", ALICE_KEY)],
            Some(b"{}"),
        ),
        405,
        "method_not_allowed",
    );
    // The route's acl (deny buyers) replaces the service's; strip_path false.
    assert_error(
        &request(addr, "GET", "/admin/x", &[("apikey", ALICE_KEY)], None),
        403,
        "forbidden",
    );
    let r = request(addr, "GET", "/admin/x", &[("apikey", BOB_KEY)], None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["uri"], "/admin/x");

    // request-transformer and cors on a public route.
    let r = request(
        addr,
        "GET",
        "/hello/there",
        &[("x-secret", "s"), ("x-added", "client")],
        None,
    );
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["uri"], "/hello/there");
    assert_eq!(echo["headers"]["x-added"], "yes");
    assert!(echo["headers"].get("x-secret").is_none());
    let preflight = |origin: &str| {
        request(
            addr,
            "OPTIONS",
            "/hello",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        )
    };
    let r = preflight("https://app.example.com");
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_error(&preflight("https://evil.example"), 403, "forbidden");

    // rate-limiting minute: 3 by ip.
    for _ in 0..3 {
        assert_eq!(request(addr, "GET", "/limited", &[], None).status, 200);
    }
    let r = request(addr, "GET", "/limited", &[], None);
    assert_error(&r, 429, "rate_limited");
    assert_eq!(r.header("ratelimit-limit"), Some("3"));

    // request-size-limiting 1 KiB.
    assert_eq!(
        request(addr, "POST", "/upload", &[], Some(&[b'x'; 1024])).status,
        200
    );
    assert_error(
        &request(addr, "POST", "/upload", &[], Some(&[b'x'; 1025])),
        413,
        "payload_too_large",
    );
    // ip-restriction deny 127.0.0.1.
    assert_error(
        &request(addr, "GET", "/internal", &[], None),
        403,
        "forbidden",
    );
    // The regex route was not converted: nothing routes there.
    assert_error(
        &request(addr, "GET", "/v1/items", &[], None),
        404,
        "no_route",
    );

    // jwt: each consumer's credential is a provider (iss = its key).
    let hs = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()).unwrap(),
        "https://alice.example/",
    );
    let rs = token(Algorithm::RS256, &rsa_key, "https://bob.example/");
    for t in [&hs, &rs] {
        let r = request(
            addr,
            "GET",
            "/tokens",
            &[("authorization", &format!("Bearer {t}"))],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    let forged = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-xx").unwrap(),
        "https://alice.example/",
    );
    assert_error(
        &request(
            addr,
            "GET",
            "/tokens",
            &[("authorization", &format!("Bearer {forged}"))],
            None,
        ),
        401,
        "invalid_token",
    );
    assert_error(
        &request(addr, "GET", "/tokens", &[], None),
        401,
        "missing_credentials",
    );
    drop(gw);
}

#[test]
fn import_kong_keeps_routes_closed_it_cannot_secure() {
    let up = Upstream::start("u");
    let yaml = format!(
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://{}
    routes:
      - name: both
        paths: [/both]
        plugins:
          - name: key-auth
          - name: jwt
      - name: acl-only
        paths: [/acl]
        plugins:
          - name: acl
            config:
              allow: [g]
      - name: open
        paths: [/open]
  - name: prefixed
    url: http://{}/base
    routes:
      - name: p
        paths: [/p]
"#,
        up.addr(),
        up.addr()
    );
    let run = import(&yaml);
    assert!(run.ok, "{}", run.stderr);
    for expected in [
        "kong.yaml: services[0].routes[0]: not converted: key-auth and jwt both apply",
        "kong.yaml: services[0].routes[1].plugins[0]: not converted: acl on acl-only without key-auth or jwt",
        "kong.yaml: services[1].path: not converted",
        "kong.yaml: services[1].routes[0]: not converted: service prefixed was not converted",
    ] {
        assert!(run.stderr.contains(expected), "missing `{expected}` in:\n{}", run.stderr);
    }
    let config = fs::read_to_string(run.dir.path().join("out/portcullis.toml")).unwrap();
    assert!(!config.contains("/both") && !config.contains("/acl") && config.contains("/open"));
    assert!(check(&run.dir.path().join("out/portcullis.toml"))
        .status
        .success());

    // A second import into the same directory keeps the files.
    let again = {
        let file = run.dir.path().join("kong.yaml");
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["import", "kong"])
            .arg(&file)
            .arg("--out-dir")
            .arg(run.dir.path().join("out"));
        run_bounded(cmd, Duration::from_secs(30))
    };
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    // Not decK 3.x, or not YAML: exit 1 with the reason.
    for bad in ["_format_version: \"2.1\"\n", "services: [\n"] {
        let run = import(bad);
        assert!(!run.ok);
        assert!(run.stderr.starts_with("portcullis: "), "{}", run.stderr);
    }
}
