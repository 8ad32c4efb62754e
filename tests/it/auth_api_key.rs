//! API keys through the real binary: valid, unknown, disabled and expired
//! keys, keys added and removed by reload, the key header not forwarded,
//! query-parameter mode, and `apikey generate`.

use crate::common;

use common::client::request;
use common::gateway::{run_cli, Gateway};
use common::upstream::Upstream;
use sha2::{Digest, Sha256};

fn entry(id: &str, key: &str, extra: &str) -> String {
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    format!("[[keys]]\nid = \"{id}\"\nconsumer = \"c-{id}\"\nhash = \"sha256:{hash}\"\nscopes = [\"orders:read\"]\nroles = [\"partner\"]\n{extra}\n")
}

fn config(up: &Upstream, provider_extra: &str) -> String {
    format!(
        r#"
[auth.partners]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"
{provider_extra}

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "partner"
path_prefix = "/p"
auth = ["partners"]
upstream = "app"
"#,
        up = up.addr()
    )
}

const GOOD: &str = "pc_good1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OFF: &str = "pc_off1_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const OLD: &str = "pc_old1_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

fn keys() -> String {
    format!(
        "{}{}{}",
        entry("good1", GOOD, ""),
        entry("off1", OFF, "disabled = true"),
        entry("old1", OLD, "expires_at = \"2020-01-01T00:00:00Z\"")
    )
}

fn valid_unknown_disabled_expired() {
    let up = Upstream::start("app");
    let gw = Gateway::start_with_files(&config(&up, ""), &[("keys.toml", &keys())]);
    let r = request(
        gw.addr,
        "GET",
        "/p/x",
        &[("x-api-key", GOOD), ("x-auth-subject", "admin")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-auth-method"], "api_key");
    assert_eq!(seen["x-auth-subject"], "c-good1");
    assert_eq!(seen["x-auth-consumer"], "c-good1");
    assert_eq!(seen["x-auth-scopes"], "orders:read");
    assert_eq!(seen["x-auth-roles"], "partner");
    assert!(seen.get("x-api-key").is_none(), "the key is not forwarded");

    let wrong_secret = "pc_good1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB";
    for (key, reason) in [
        (wrong_secret, "unknown_key"),
        (
            "pc_nobody_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "unknown_key",
        ),
        (OFF, "disabled"),
        (OLD, "expired"),
        ("not-a-key", "malformed"),
    ] {
        let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", key)], None);
        assert_eq!(r.status, 401, "{key}");
        assert_eq!(r.json()["error"], "invalid_api_key", "{key}");
        assert!(!r.body_str().contains(key));
        let _ = reason;
    }
    let r = request(gw.addr, "GET", "/p/x", &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_credentials");
    assert!(
        r.header("www-authenticate").is_none(),
        "no bearer challenge for api keys"
    );

    let events = gw.wait_security_events("auth_failure", 5);
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    for reason in ["unknown_key", "disabled", "expired", "malformed"] {
        assert!(reasons.contains(&reason), "{reasons:?}");
    }
    assert!(events.iter().all(|e| e["provider"] == "partners"));
    // No plaintext key in any log.
    let logs = format!(
        "{}{}{}{}",
        std::fs::read_to_string(&gw.access_log_path).unwrap_or_default(),
        std::fs::read_to_string(&gw.security_log_path).unwrap_or_default(),
        gw.stdout(),
        gw.stderr()
    );
    for key in [GOOD, OFF, OLD, wrong_secret] {
        assert!(!logs.contains(key), "a key reached a log");
    }
    // The logging phase runs after the response is sent, so the next
    // request's line may come first: find the accepted request's line.
    let access = gw.wait_access_log(7);
    let ok = access
        .iter()
        .find(|l| l["status"] == 200)
        .expect("the accepted request's access log line");
    assert_eq!(ok["auth_method"], "api_key");
    assert_eq!(ok["subject"], "c-good1");
}

fn keys_added_and_removed_by_reload() {
    let up = Upstream::start("app");
    let gw = Gateway::start_with_files(
        &config(&up, ""),
        &[("keys.toml", &entry("good1", GOOD, ""))],
    );
    let new_key = "pc_new1_DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD";
    assert_eq!(
        request(gw.addr, "GET", "/p", &[("x-api-key", new_key)], None).status,
        401
    );
    gw.write_file("keys.toml", &entry("new1", new_key, ""));
    gw.signal("HUP");
    assert!(gw.wait_security_event("config_reloaded").is_some());
    assert_eq!(
        request(gw.addr, "GET", "/p", &[("x-api-key", new_key)], None).status,
        200
    );
    assert_eq!(
        request(gw.addr, "GET", "/p", &[("x-api-key", GOOD)], None).status,
        401,
        "removed key refused"
    );
    // A broken keys file is a failed reload: nothing changes.
    gw.write_file(
        "keys.toml",
        "[[keys]]\nid = \"x\"\nhash = \"plaintext-key\"\n",
    );
    gw.signal("HUP");
    let failed = gw
        .wait_security_event("config_reload_failed")
        .expect("reload must fail");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("keys.toml:3:8: `hash` must be"), "{reason}");
    assert!(
        reason.contains("keys.toml:1:1: [keys[0]] needs `consumer`"),
        "{reason}"
    );
    assert_eq!(
        request(gw.addr, "GET", "/p", &[("x-api-key", new_key)], None).status,
        200
    );
}

fn query_param_mode_and_forwarding() {
    let up = Upstream::start("app");
    let gw = Gateway::start_with_files(
        &config(&up, "query_param = \"api_key\"\nforward_credentials = true"),
        &[("keys.toml", &keys())],
    );
    let r = request(
        gw.addr,
        "GET",
        &format!("/p/x?a=1&api_key={GOOD}&b=2"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        r.json()["uri"],
        "/p/x?a=1&b=2",
        "the parameter is removed before forwarding"
    );
    assert_eq!(r.json()["headers"]["x-auth-subject"], "c-good1");
    let r = request(gw.addr, "GET", &format!("/p/x?api_key={GOOD}"), &[], None);
    assert_eq!(r.json()["uri"], "/p/x");
    // Header mode still works, and with forward_credentials the header is kept.
    let r = request(gw.addr, "GET", "/p/y", &[("x-api-key", GOOD)], None);
    assert_eq!(r.json()["headers"]["x-api-key"], GOOD);
    let r = request(gw.addr, "GET", "/p/x?api_key=pc_bad_x", &[], None);
    assert_eq!(r.status, 401);
    // Query strings never reach the access log.
    let log = std::fs::read_to_string(&gw.access_log_path).unwrap_or_default();
    assert!(!log.contains(GOOD));
}

#[test]
fn generated_keys_work_among_a_hundred_thousand() {
    let out = run_cli(&[
        "apikey",
        "generate",
        "--consumer",
        "acme",
        "--scopes",
        "a,b",
        "--roles",
        "r",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().next().unwrap().to_string();
    let block: String = text.lines().skip(2).collect::<Vec<_>>().join("\n");
    assert!(!block.contains(&key));

    let mut file = String::with_capacity(100_001 * 200);
    file.push_str(&block);
    file.push('\n');
    for i in 0..100_000 {
        let k = format!("pc_bulk{i}_{:0>40}", i);
        file.push_str(&entry(&format!("bulk{i}"), &k, ""));
    }
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), &file).unwrap();
    let conf = dir.path().join("gw.toml");
    std::fs::write(
        &conf,
        config(&up, "").replace("{dir}", &dir.path().display().to_string())
            + "\n[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = common::gateway::check(&conf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let gw = Gateway::start_with_files(&config(&up, ""), &[("keys.toml", &file)]);
    let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", &key)], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-auth-consumer"], "acme");
    assert_eq!(r.json()["headers"]["x-auth-scopes"], "a b");
    let bulk = format!("pc_bulk99999_{:0>40}", 99_999);
    assert_eq!(
        request(gw.addr, "GET", "/p/x", &[("x-api-key", &bulk)], None).status,
        200
    );
}

/// Keys of another gateway's form (`opaque = true`), found by their hash
/// beside ordinary ones; a `pc_`-looking opaque key too, and a disabled one.
fn opaque_keys_beside_portcullis_keys() {
    const KONG: &str = "3f9a1c0e-kong-style-key-7d2b4e6f8a0c";
    const LOOKALIKE: &str = "pc_imported_QQQQQQQQQQQQQQQQQQQQ";
    const OFF_OPAQUE: &str = "retired partner key 0001";
    let up = Upstream::start("app");
    let file = format!(
        "{}{}{}{}",
        entry("good1", GOOD, ""),
        entry("kong1", KONG, "opaque = true"),
        entry("kong2", LOOKALIKE, "opaque = true"),
        entry("kong3", OFF_OPAQUE, "opaque = true\ndisabled = true"),
    );
    let gw = Gateway::start_with_files(&config(&up, ""), &[("keys.toml", &file)]);
    for (key, consumer) in [(GOOD, "c-good1"), (KONG, "c-kong1"), (LOOKALIKE, "c-kong2")] {
        let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", key)], None);
        assert_eq!(r.status, 200, "{key}: {}", r.body_str());
        assert_eq!(r.json()["headers"]["x-auth-consumer"], consumer);
        assert!(r.json()["headers"].get("x-api-key").is_none());
    }
    for key in [
        "3f9a1c0e-kong-style-key-7d2b4e6f8a0", // one character short
        "3F9A1C0E-KONG-STYLE-KEY-7D2B4E6F8A0C",
        "pc_kong1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // an opaque key's id is no pc_ id
        OFF_OPAQUE,
    ] {
        let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", key)], None);
        assert_eq!(r.status, 401, "{key}");
        assert_eq!(r.json()["error"], "invalid_api_key");
    }
    let events = gw.wait_security_events("auth_failure", 4);
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        ["unknown_key", "unknown_key", "unknown_key", "disabled"]
    );
    let logs = format!(
        "{}{}{}",
        std::fs::read_to_string(&gw.access_log_path).unwrap_or_default(),
        std::fs::read_to_string(&gw.security_log_path).unwrap_or_default(),
        gw.stderr()
    );
    for key in [KONG, LOOKALIKE, OFF_OPAQUE] {
        assert!(!logs.contains(key), "a key reached a log");
    }
}

#[test]
fn two_opaque_keys_with_one_hash_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!(
        "{}{}",
        entry("a1", "same key", "opaque = true"),
        entry("a2", "same key", "opaque = true")
    );
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, keys).unwrap();
    let conf = dir.path().join("portcullis.toml");
    let up = Upstream::start("app");
    let body = config(&up, "").replace("{dir}", dir.path().to_str().unwrap());
    let listen = common::free_addr();
    std::fs::write(
        &conf,
        format!("[[listeners]]\nname = \"p\"\nlisten = \"{listen}\"\n{body}"),
    )
    .unwrap();
    let out = common::gateway::check(&conf);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keys.toml:") && stderr.contains("another opaque key has the same hash"),
        "{stderr}"
    );
}

// Each of these runs twice, over HTTP/1.1 and over h2c (CONTRACT §9).
crate::on_http1_and_h2c!(
    valid_unknown_disabled_expired,
    opaque_keys_beside_portcullis_keys,
    keys_added_and_removed_by_reload,
    query_param_mode_and_forwarding,
);
