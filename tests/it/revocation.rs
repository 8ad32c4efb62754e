//! Token revocation (CONTRACT §13) against the real binary: by `jti` and by
//! subject, in force at once for tokens already in the verification and
//! introspection caches; the admin API and its refusals; persistence in
//! `revocations_file` across reload and restart; the `revoke` CLI; sharing
//! between two gateways through one real Redis.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use common::client::{request, Response};
use common::gateway::{check, free_addr, run_cli, Gateway};
use common::idp::Idp;
use common::jwt::{claims, jwks, jwks_file_provider, now, unique_id, TestKey};
use common::redis::RedisServer;
use common::upstream::Upstream;
use common::{assert_error, wait_until};

const ADMIN_TOKEN: &str = "admin-token-for-revocation-tests-0123456789";
const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    gw: Gateway,
    admin: SocketAddr,
    key: TestKey,
    _up: Upstream,
}

/// A gateway with a jwt provider `corp` (JWKS file, token cache on) on
/// `/orders`, an admin listener with a token, and `extra` appended.
fn start(extra: &str) -> Fixture {
    let key = TestKey::rsa("k1");
    start_with_key(key, extra)
}

fn start_with_key(key: TestKey, extra: &str) -> Fixture {
    let up = Upstream::start("app");
    let admin = free_addr();
    let body = config(admin, &up, extra);
    let gw = Gateway::start_with_files(
        &body,
        &[("jwks.json", &jwks(&[&key])), ("admin.token", ADMIN_TOKEN)],
    );
    wait_admin(admin);
    Fixture {
        gw,
        admin,
        key,
        _up: up,
    }
}

fn config(admin: SocketAddr, up: &Upstream, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"
token_file = "{{dir}}/admin.token"

[upstreams.app]
targets = ["{up}"]
{provider}
{extra}

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["corp"]
upstream = "app"
"#,
        up = up.addr(),
        provider = jwks_file_provider("corp", ""),
    )
}

fn wait_admin(admin: SocketAddr) {
    assert!(
        wait_until(WAIT, || std::net::TcpStream::connect(admin).is_ok()
            && admin_call(admin, "GET", "/readyz", None).status == 200),
        "admin listener never became ready"
    );
}

fn admin_call(admin: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Response {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let body = body.map(|b| b.to_string());
    request(
        admin,
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.as_deref().map(str::as_bytes),
    )
}

fn revoke(admin: SocketAddr, body: &Value) -> Response {
    admin_call(admin, "POST", "/revocations", Some(body))
}

fn get_token(addr: SocketAddr, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    request(addr, "GET", "/orders/1", &[("authorization", &auth)], None)
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn assert_revoked(resp: &Response) {
    let body = assert_error(resp, 401, "invalid_token");
    assert_eq!(body["message"], "The access token was revoked", "{body}");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#)
            && challenge.contains("The access token was revoked"),
        "{challenge}"
    );
}

fn jti_of(token: &str) -> String {
    common::jwt::payload(token)["jti"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_revoked_jti_is_refused_at_once_even_from_the_cache() {
    let f = start("");
    let token = f
        .key
        .sign(claims("https://idp.test/", "orders", "alice", 300));
    let other = f
        .key
        .sign(claims("https://idp.test/", "orders", "alice", 300));
    // Twice: the second answer comes from the verified-token cache.
    assert_eq!(get_token(f.gw.addr, &token).status, 200);
    assert_eq!(get_token(f.gw.addr, &token).status, 200);

    let entry = json!({"jti": jti_of(&token), "expires_at": rfc3339(now() + 300)});
    let r = revoke(f.admin, &entry);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["revocation"], entry);
    // The next request, with no wait.
    assert_revoked(&get_token(f.gw.addr, &token));
    assert_eq!(get_token(f.gw.addr, &other).status, 200);
    let event =
        f.gw.wait_security_event("token_revoked_used")
            .expect("event");
    assert_eq!(event["provider"], "corp");
    assert_eq!(event["reason"], "revoked");
    // Who used the revoked token: what an incident responder asks first.
    assert_eq!(event["subject"], "alice", "{event}");
    assert!(!f
        .gw
        .security_log()
        .iter()
        .any(|e| e.to_string().contains(&token)));

    let list = admin_call(f.admin, "GET", "/revocations", None);
    assert_eq!(list.status, 200);
    assert_eq!(list.json(), json!([entry]));

    // Deleted: the token works again (it is still cached, and valid).
    let r = admin_call(
        f.admin,
        "DELETE",
        "/revocations",
        Some(&json!({"jti": jti_of(&token)})),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(get_token(f.gw.addr, &token).status, 200);
    assert_eq!(
        admin_call(f.admin, "GET", "/revocations", None).json(),
        json!([])
    );
    let again = admin_call(
        f.admin,
        "DELETE",
        "/revocations",
        Some(&json!({"jti": jti_of(&token)})),
    );
    assert_error(&again, 404, "no_route");
}

#[test]
fn a_subject_revocation_covers_its_older_tokens_only() {
    let f = start("");
    let t = now();
    let old = f
        .key
        .sign(claims("https://idp.test/", "orders", "alice", 300));
    let bob = f
        .key
        .sign(claims("https://idp.test/", "orders", "bob", 300));
    let mut newer = claims("https://idp.test/", "orders", "alice", 300);
    newer["iat"] = json!(t + 20);
    let newer = f.key.sign(newer);
    let mut no_iat = claims("https://idp.test/", "orders", "alice", 300);
    no_iat.as_object_mut().unwrap().remove("iat");
    let no_iat = f.key.sign(no_iat);
    for tok in [&old, &bob, &newer, &no_iat] {
        assert_eq!(get_token(f.gw.addr, tok).status, 200);
    }
    let r = revoke(
        f.admin,
        &json!({"subject": "alice", "issued_before": rfc3339(t + 5)}),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_revoked(&get_token(f.gw.addr, &old));
    // Without `iat` it may be from any time: revoked too.
    assert_revoked(&get_token(f.gw.addr, &no_iat));
    assert_eq!(get_token(f.gw.addr, &bob).status, 200);
    assert_eq!(get_token(f.gw.addr, &newer).status, 200);
    // A look-alike subject is another subject.
    let alice2 = f
        .key
        .sign(claims("https://idp.test/", "orders", "Alice", 300));
    assert_eq!(get_token(f.gw.addr, &alice2).status, 200);
}

#[test]
fn admin_api_refusals() {
    let f = start("");
    let bad = [
        json!({"jti": "x"}),
        json!({"subject": "x"}),
        json!({"jti": "x", "subject": "y", "expires_at": rfc3339(now() + 60)}),
        json!({"jti": "x", "expires_at": "tomorrow"}),
        json!({"jti": "", "expires_at": rfc3339(now() + 60)}),
        json!({"jti": "x", "expires_at": rfc3339(now() + 60), "extra": 1}),
        json!({"jti": "x", "expires_at": rfc3339(now() - 60)}),
        json!(["jti"]),
    ];
    for body in bad {
        assert_error(&revoke(f.admin, &body), 400, "bad_request");
    }
    // Without the admin token: 401, nothing changes.
    let r = request(
        f.admin,
        "POST",
        "/revocations",
        &[],
        Some(
            json!({"jti": "x", "expires_at": rfc3339(now() + 60)})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_error(&r, 401, "unauthorized");
    let r = request(f.admin, "GET", "/revocations", &[], None);
    assert_error(&r, 401, "unauthorized");
    let r = admin_call(f.admin, "PUT", "/revocations", None);
    assert_error(&r, 405, "method_not_allowed");
    let big = json!({"jti": "x".repeat(20_000), "expires_at": rfc3339(now() + 60)});
    assert_error(&revoke(f.admin, &big), 413, "payload_too_large");
    assert_eq!(
        admin_call(f.admin, "GET", "/revocations", None).json(),
        json!([])
    );
}

#[test]
fn introspection_answers_in_the_cache_are_revoked_at_once() {
    let idp = Idp::start();
    idp.set_client("gateway", "introspection-secret");
    let up = Upstream::start("app");
    let admin = free_addr();
    let body = format!(
        r#"
[admin]
listen = "{admin}"
token_file = "{{dir}}/admin.token"

[upstreams.app]
targets = ["{up}"]

[auth.opaque]
kind = "introspection"
endpoint = "{endpoint}"
client_id = "gateway"
client_secret_file = "{{dir}}/introspection.secret"
cache_seconds = 300

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
            ("introspection.secret", "introspection-secret"),
            ("admin.token", ADMIN_TOKEN),
        ],
    );
    wait_admin(admin);
    let token = unique_id();
    let jti = unique_id();
    idp.set_answer(
        &token,
        json!({"active": true, "sub": "carol", "jti": jti, "iat": now(), "exp": now() + 300}),
    );
    assert_eq!(get_token(gw.addr, &token).status, 200);
    assert_eq!(get_token(gw.addr, &token).status, 200);
    assert_eq!(
        idp.introspections().len(),
        1,
        "the second answer was cached"
    );
    let r = revoke(
        admin,
        &json!({"jti": jti, "expires_at": rfc3339(now() + 300)}),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_revoked(&get_token(gw.addr, &token));
    assert_eq!(idp.introspections().len(), 1);
}

/// A file outside the gateways' own directories, so that it outlives them.
fn revocations_line(dir: &Path) -> String {
    format!(
        "\n[auth]\nrevocations_file = \"{}\"\n",
        dir.join("revocations.json").display()
    )
}

#[test]
fn revocations_persist_across_reload_and_restart() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("revocations.json");
    let key = TestKey::rsa("k1");
    let token = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    let kept = key.sign(claims("https://idp.test/", "orders", "bob", 300));
    let f = start_with_key(key, &revocations_line(state.path()));
    assert!(!file.exists(), "nothing is written before a change");
    let r = revoke(
        f.admin,
        &json!({"jti": jti_of(&token), "expires_at": rfc3339(now() + 300)}),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    // The file holds it, whole, and no temporary file is left.
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["revocations"][0]["jti"], jti_of(&token));
    let names: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["revocations.json"]);

    // Reload: still revoked.
    assert_eq!(admin_call(f.admin, "POST", "/reload", None).status, 200);
    assert_revoked(&get_token(f.gw.addr, &token));
    assert_eq!(get_token(f.gw.addr, &kept).status, 200);
    let key = f.key;
    drop(f.gw);

    // Restart on the same file: revoked from the first request.
    let f = start_with_key(key, &revocations_line(state.path()));
    assert_revoked(&get_token(f.gw.addr, &token));
    assert_eq!(get_token(f.gw.addr, &kept).status, 200);
    assert_eq!(
        admin_call(f.admin, "GET", "/revocations", None).json()[0]["jti"],
        jti_of(&token)
    );
}

#[test]
fn check_reports_revocations_file_problems_with_places() {
    let up = Upstream::start("app");
    let state = tempfile::tempdir().unwrap();
    let f = start("");
    let base = config(free_addr(), &up, "").replace("{dir}", &f.gw.dir.path().to_string_lossy());
    let write = |name: &str, text: &str| {
        let path = state.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };

    let cfg = write(
        "missing-dir.toml",
        &format!(
            "{}{base}\n[auth]\nrevocations_file = \"/nonexistent-dir/r.json\"\n",
            header(f.gw.dir.path())
        ),
    );
    let out = check(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("missing-dir.toml:") && stderr.contains("does not exist"),
        "{stderr}"
    );

    let broken = write(
        "broken.json",
        "{\n  \"revocations\": [\n    {\"jti\": 1}\n  ]\n}\n",
    );
    let cfg = write(
        "broken.toml",
        &format!(
            "{}{base}\n[auth]\nrevocations_file = \"{}\"\n",
            header(f.gw.dir.path()),
            broken.display()
        ),
    );
    let out = check(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken.json:3:"), "{stderr}");

    let cfg = write(
        "setting.toml",
        &format!(
            "{}{base}\n[auth]\nrevocation_file = \"x\"\n",
            header(f.gw.dir.path())
        ),
    );
    let out = check(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("setting.toml:")
            && stderr.contains("unknown setting `revocation_file` in [auth]"),
        "{stderr}"
    );

    let good = write("r.json", "{\"revocations\": []}");
    let cfg = write(
        "good.toml",
        &format!(
            "{}{base}\n[auth]\nrevocations_file = \"{}\"\n",
            header(f.gw.dir.path()),
            good.display()
        ),
    );
    let out = check(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[[listeners]]` for a configuration that is only checked.
fn header(dir: &Path) -> String {
    common::gateway::config_header(dir, free_addr())
}

#[test]
fn the_revoke_cli_talks_to_the_admin_listener() {
    let f = start("");
    let token = f
        .key
        .sign(claims("https://idp.test/", "orders", "alice", 300));
    assert_eq!(get_token(f.gw.addr, &token).status, 200);
    let url = format!("http://{}", f.admin);
    let token_file = f.gw.dir.path().join("admin.token");
    let token_file = token_file.to_str().unwrap();
    let jti = jti_of(&token);
    let at = rfc3339(now() + 300);
    let out = run_cli(&[
        "revoke",
        "--admin",
        &url,
        "--token-file",
        token_file,
        "--jti",
        &jti,
        "--expires-at",
        &at,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_revoked(&get_token(f.gw.addr, &token));

    let out = run_cli(&[
        "revoke",
        "--admin",
        &url,
        "--token-file",
        token_file,
        "--list",
    ]);
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, json!([{"jti": jti, "expires_at": at}]));

    let out = run_cli(&[
        "revoke",
        "--admin",
        &url,
        "--token-file",
        token_file,
        "--jti",
        &jti,
        "--delete",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get_token(f.gw.addr, &token).status, 200);

    // Without the token the admin listener refuses; the CLI exits 1.
    let out = run_cli(&["revoke", "--admin", &url, "--list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // A jti needs its expiry; nothing is sent.
    let out = run_cli(&[
        "revoke",
        "--admin",
        &url,
        "--token-file",
        token_file,
        "--jti",
        &jti,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--expires-at"));
    let out = run_cli(&[
        "revoke",
        "--admin",
        &url,
        "--token-file",
        token_file,
        "--subject",
        "alice",
        "--issued-before",
        &rfc3339(now()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_revoked(&get_token(f.gw.addr, &token));
}

#[test]
fn two_gateways_share_revocations_through_redis() {
    let redis = RedisServer::start();
    two_gateways_share_revocations(&format!(
        "\n[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    ));
}

/// Revoked on one gateway, refused by the other; deleted there, accepted
/// again here: on any shared `[rate_limit_store]` (tests/it/redis_fleet.rs
/// runs it on a cluster).
pub(crate) fn two_gateways_share_revocations(store: &str) {
    let key = TestKey::rsa("k1");
    let token = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    let a = start_with_key(key, store);
    let b = start_with_key(a.key.with_kid("k1"), store);
    assert_eq!(get_token(a.gw.addr, &token).status, 200);
    assert_eq!(get_token(b.gw.addr, &token).status, 200);
    let r = revoke(
        a.admin,
        &json!({"jti": jti_of(&token), "expires_at": rfc3339(now() + 300)}),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["shared"], true);
    assert_revoked(&get_token(a.gw.addr, &token));
    assert!(
        wait_until(WAIT, || get_token(b.gw.addr, &token).status == 401),
        "the other gateway never saw the revocation"
    );
    assert_revoked(&get_token(b.gw.addr, &token));
    // Deleted on B: A follows.
    let r = admin_call(
        b.admin,
        "DELETE",
        "/revocations",
        Some(&json!({"jti": jti_of(&token)})),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(wait_until(WAIT, || get_token(a.gw.addr, &token).status == 200));
}
