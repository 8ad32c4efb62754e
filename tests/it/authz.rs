//! Authorization against the real binary: `require_scopes`, `allow_roles`
//! (from a nested claim), CEL policies, CIDR rules (IPv4, IPv6, global,
//! spoofed `x-forwarded-for`), and `authz_url` against a real loopback
//! decision service (allow, deny, timeout, unreachable, cache, coalescing).

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use common::assert_error;
use common::client::{request, Response};
use common::gateway::{check, config_header, free_addr, free_port, Gateway};
use common::idp::{Idp, AUTHZ_PATH};
use common::jwt::{claims, jwks, jwks_file_provider, TestKey};
use common::upstream::Upstream;

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders";

fn start(key: &TestKey, up: &Upstream, routes: &str) -> Gateway {
    let body = format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n{}\n{routes}",
        up.addr(),
        jwks_file_provider("corp", r#"roles_claim = "realm_access.roles""#)
    );
    Gateway::start_with_files(&body, &[("jwks.json", jwks(&[key]).as_str())])
}

fn route(name: &str, prefix: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nauth = [\"corp\"]\nupstream = \"app\"\n{extra}\n"
    )
}

/// A token for `sub` with `extra` claims merged in.
fn token(key: &TestKey, sub: &str, extra: Value) -> String {
    let mut c = claims(ISS, AUD, sub, 300);
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    key.sign(c)
}

fn get(addr: SocketAddr, path: &str, token: &str, headers: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    request(addr, "GET", path, &all, None)
}

/// The reasons of the `authz_denied` events so far, waiting for `n`.
fn denials(gw: &Gateway, n: usize) -> Vec<String> {
    gw.wait_security_events("authz_denied", n)
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

fn require_scopes_needs_all_of_them() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let gw = start(
        &key,
        &up,
        &route(
            "orders",
            "/orders",
            r#"require_scopes = ["orders:read", "orders:write"]"#,
        ),
    );
    let one = token(&key, "alice", json!({"scope": "orders:read"}));
    let r = get(gw.addr, "/orders/1", &one, &[]);
    assert_error(&r, 403, "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            r#"Bearer realm="portcullis", error="insufficient_scope", scope="orders:read orders:write""#
        )
    );
    let both = token(
        &key,
        "alice",
        json!({"scope": "orders:write orders:read extra"}),
    );
    assert_eq!(get(gw.addr, "/orders/1", &both, &[]).status, 200);
    assert_eq!(
        up.hits(),
        1,
        "the refused request never reached the upstream"
    );
    let events = gw.wait_security_events("authz_denied", 1);
    assert_eq!(events[0]["reason"], "scope");
    assert_eq!(events[0]["route"], "orders");
    assert_eq!(events[0]["subject"], "alice");
    let log = std::fs::read_to_string(&gw.security_log_path).unwrap_or_default();
    assert!(!log.contains(&one), "no token in logs");
}

fn allow_roles_needs_one_of_them_from_a_nested_claim() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let gw = start(
        &key,
        &up,
        &route("admin", "/admin", r#"allow_roles = ["admin", "partner"]"#),
    );
    let partner = token(
        &key,
        "p",
        json!({"realm_access": {"roles": ["user", "partner"]}}),
    );
    let r = get(gw.addr, "/admin/x", &partner, &[]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["headers"]["x-auth-roles"], "user,partner");
    let user = token(&key, "u", json!({"realm_access": {"roles": ["user"]}}));
    assert_error(&get(gw.addr, "/admin/x", &user, &[]), 403, "forbidden");
    let flat = token(&key, "f", json!({"roles": ["admin"]}));
    assert_error(&get(gw.addr, "/admin/x", &flat, &[]), 403, "forbidden");
    assert_eq!(denials(&gw, 2), ["role", "role"]);
}

fn cel_policy_isolates_tenants_and_fails_closed() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let routes = route(
        "tenant",
        "/t",
        r#"policy = 'claims.tenant == request.headers["x-tenant-id"]'"#,
    ) + &route(
        "writes",
        "/w",
        r#"policy = 'request.method == "GET" || "orders:write" in identity.scopes'"#,
    );
    let gw = start(&key, &up, &routes);
    let acme = token(
        &key,
        "alice",
        json!({"tenant": "acme", "scope": "orders:read"}),
    );
    assert_eq!(
        get(gw.addr, "/t/1", &acme, &[("x-tenant-id", "acme")]).status,
        200
    );
    assert_error(
        &get(gw.addr, "/t/1", &acme, &[("x-tenant-id", "globex")]),
        403,
        "forbidden",
    );
    // A missing header is an evaluation error: denied, never a 5xx.
    assert_error(&get(gw.addr, "/t/1", &acme, &[]), 403, "forbidden");
    // A token without the claim is denied too.
    let none = token(&key, "bob", json!({}));
    assert_error(
        &get(gw.addr, "/t/1", &none, &[("x-tenant-id", "acme")]),
        403,
        "forbidden",
    );
    // Method-specific scope.
    assert_eq!(get(gw.addr, "/w/1", &acme, &[]).status, 200);
    let auth = format!("Bearer {acme}");
    let post = request(
        gw.addr,
        "POST",
        "/w/1",
        &[("authorization", &auth)],
        Some(b"{}"),
    );
    assert_error(&post, 403, "forbidden");
    assert_eq!(
        denials(&gw, 4),
        ["policy", "policy_error", "policy_error", "policy"]
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn invalid_policies_are_refused_by_check_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let listen = free_addr();
    let write = |policy: &str| {
        let text = format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"{listen}\"\n\n[[routes]]\nname = \"r\"\npath = \"/\"\npublic = true\nrespond = {{ status = 200 }}\npolicy = '{policy}'\n"
        );
        std::fs::write(&path, text).unwrap();
    };
    write("request.method == ");
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("gw.toml:10:29: `policy`: invalid CEL"),
        "{stderr}"
    );
    write("claimz.tenant == \"a\"");
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("gw.toml:10:10: `policy`: unknown variable `claimz`"),
        "{stderr}"
    );
    write("request.path.startsWith(\"/\")");
    assert!(check(&path).status.success());
}

fn cidr_rules_for_ipv4_and_ipv6() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let v6: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let routes = format!(
        r#"
[[listeners]]
name = "v6"
listen = "{v6}"

[[routes]]
name = "v4only"
path_prefix = "/v4"
public = true
upstream = "app"
allow_cidrs = ["127.0.0.1/32"]

[[routes]]
name = "v6only"
path_prefix = "/v6"
public = true
upstream = "app"
allow_cidrs = ["::1/128"]

[[routes]]
name = "nolocal"
path_prefix = "/nolocal"
public = true
upstream = "app"
allow_cidrs = ["0.0.0.0/0", "::/0"]
deny_cidrs = ["127.0.0.0/8"]

[[routes]]
name = "closed"
path_prefix = "/closed"
auth = ["corp"]
upstream = "app"
deny_cidrs = ["::1/128"]
"#
    );
    let gw = start(&key, &up, &routes);
    assert!(common::gateway::wait_for_port(v6, Duration::from_secs(10)));
    let v4 = gw.addr;
    let plain = |addr, path| request(addr, "GET", path, &[], None);
    assert_eq!(plain(v4, "/v4/x").status, 200);
    assert_error(&plain(v6, "/v4/x"), 403, "forbidden");
    assert_eq!(plain(v6, "/v6/x").status, 200);
    assert_error(&plain(v4, "/v6/x"), 403, "forbidden");
    assert_error(&plain(v4, "/nolocal"), 403, "forbidden");
    assert_eq!(plain(v6, "/nolocal").status, 200);
    // Decided before authentication: no credentials, yet 403, not 401.
    assert_error(&plain(v6, "/closed"), 403, "forbidden");
    assert_error(&plain(v4, "/closed"), 401, "missing_credentials");
    assert_eq!(denials(&gw, 4), ["cidr", "cidr", "cidr", "cidr"]);
    let ev = &gw.security_events("authz_denied")[0];
    assert_eq!(ev["client_ip"], "::1");
}

fn global_cidr_rules_apply_before_routing() {
    let up = Upstream::start("app");
    let v6: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let body = format!(
        r#"
[[listeners]]
name = "v6"
listen = "{v6}"

[protection]
deny_cidrs = ["::1"]

[upstreams.app]
targets = ["{}"]

[[routes]]
name = "app"
path_prefix = "/"
public = true
upstream = "app"
"#,
        up.addr()
    );
    let gw = Gateway::start(&body);
    assert!(common::gateway::wait_for_port(v6, Duration::from_secs(10)));
    assert_eq!(request(gw.addr, "GET", "/x", &[], None).status, 200);
    assert_error(&request(v6, "GET", "/x", &[], None), 403, "forbidden");
    // Even a request for nothing is refused as a network denial.
    assert_error(
        &request(v6, "GET", "/%2e%2e/x", &[], None),
        403,
        "forbidden",
    );
    let admin_free = gw.wait_security_events("authz_denied", 2);
    assert!(admin_free.iter().all(|e| e["reason"] == "cidr"));
}

fn spoofed_forwarded_for_is_ignored_unless_the_peer_is_trusted() {
    let up = Upstream::start("app");
    let routes = format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n[[routes]]\nname = \"office\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\nallow_cidrs = [\"203.0.113.0/24\"]\n",
        up.addr()
    );
    let untrusted = Gateway::start(&routes);
    let spoof = [("x-forwarded-for", "203.0.113.7")];
    assert_error(
        &request(untrusted.addr, "GET", "/x", &spoof, None),
        403,
        "forbidden",
    );

    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let header = config_header(dir.path(), addr).replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        1,
    );
    let trusted = Gateway::start_full(format!("{header}{routes}"), addr, dir);
    assert_eq!(request(trusted.addr, "GET", "/x", &spoof, None).status, 200);
    let other = [("x-forwarded-for", "203.0.113.7, 198.51.100.1")];
    assert_error(
        &request(trusted.addr, "GET", "/x", &other, None),
        403,
        "forbidden",
    );
    assert_error(
        &request(trusted.addr, "GET", "/x", &[], None),
        403,
        "forbidden",
    );
}

/// A gateway whose route `/ext` asks a real decision service (`idp`),
/// with `extra` route keys.
struct External {
    key: TestKey,
    up: Upstream,
    idp: Idp,
    gw: Gateway,
}

fn external(extra: &str) -> External {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let idp = Idp::start();
    let keys = format!(
        "authz_url = \"{}\"\nauthz_response_headers = [\"x-tenant\"]\n{extra}",
        idp.authz_url()
    );
    let gw = start(&key, &up, &route("ext", "/ext", &keys));
    External { key, up, idp, gw }
}

fn external_authz_allows_denies_and_passes_headers() {
    let External { key, up, idp, gw } = external("");
    let t = token(&key, "alice", json!({"scope": "orders:read", "azp": "web"}));
    let r = get(
        gw.addr,
        "/ext/./orders/1?page=2",
        &t,
        &[("x-tenant", "evil"), ("host", "api.test")],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = &r.json()["headers"];
    assert_eq!(
        seen["x-tenant"], "acme",
        "the authorizer's value replaces the client's"
    );
    assert!(
        seen.get("x-other").is_none(),
        "only the listed headers are copied"
    );
    let asked = idp.authz_requests();
    assert_eq!(asked.len(), 1);
    let q = &asked[0];
    assert_eq!(q["x-forwarded-method"], "GET");
    assert_eq!(q["x-forwarded-uri"], "/ext/orders/1?page=2");
    assert_eq!(q["x-forwarded-host"], "api.test");
    assert_eq!(q["x-forwarded-for"], "127.0.0.1");
    assert_eq!(q["x-auth-subject"], "alice");
    assert_eq!(q["x-auth-consumer"], "web");
    assert_eq!(q["x-auth-scopes"], "orders:read");
    assert!(
        !q.contains_key("authorization"),
        "the credential is not sent"
    );

    assert_error(&get(gw.addr, "/ext/deny/1", &t, &[]), 403, "forbidden");
    assert_eq!(denials(&gw, 1), ["external"]);
    // Without credentials the authorizer is never asked.
    let before = idp.hits(AUTHZ_PATH);
    assert_error(
        &request(gw.addr, "GET", "/ext/1", &[], None),
        401,
        "missing_credentials",
    );
    assert_eq!(idp.hits(AUTHZ_PATH), before);
    // No caching by default: every request asks.
    assert_eq!(get(gw.addr, "/ext/1", &t, &[]).status, 200);
    assert_eq!(get(gw.addr, "/ext/1", &t, &[]).status, 200);
    assert_eq!(idp.hits(AUTHZ_PATH), before + 2);
    assert_eq!(up.hits(), 3);
}

fn external_authz_timeout_and_unreachable_fail_closed() {
    let External { key, up, idp, gw } = external("authz_timeout_ms = 300");
    let t = token(&key, "alice", json!({}));
    assert_eq!(get(gw.addr, "/ext/1", &t, &[]).status, 200);
    idp.set_delay_ms(2000);
    assert_error(&get(gw.addr, "/ext/1", &t, &[]), 503, "auth_unavailable");
    idp.set_delay_ms(0);
    idp.stop();
    assert_error(&get(gw.addr, "/ext/1", &t, &[]), 503, "auth_unavailable");
    assert_eq!(up.hits(), 1);
}

fn external_authz_decisions_are_cached_per_path_and_query() {
    let External {
        key,
        up: _up,
        idp,
        gw,
    } = external("authz_cache_seconds = 60");
    let alice = token(&key, "alice", json!({}));
    let hits = || idp.hits(AUTHZ_PATH);
    for _ in 0..3 {
        let r = get(gw.addr, "/ext/a", &alice, &[("x-tenant", "evil")]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["headers"]["x-tenant"],
            "acme",
            "also from the cache"
        );
    }
    assert_eq!(hits(), 1);
    assert_eq!(get(gw.addr, "/ext/b", &alice, &[]).status, 200);
    assert_eq!(get(gw.addr, "/ext/a?v=1", &alice, &[]).status, 200);
    assert_eq!(hits(), 3, "never shared across paths or queries");
    let bob = token(&key, "bob", json!({}));
    assert_eq!(get(gw.addr, "/ext/a", &bob, &[]).status, 200);
    assert_eq!(hits(), 4, "never shared across callers");
    // Denials are cached too.
    assert_error(&get(gw.addr, "/ext/deny", &alice, &[]), 403, "forbidden");
    assert_error(&get(gw.addr, "/ext/deny", &alice, &[]), 403, "forbidden");
    assert_eq!(hits(), 5);
}

#[test]
fn identical_external_checks_in_flight_are_coalesced() {
    let External {
        key,
        up: _up,
        idp,
        gw,
    } = external("");
    let t = token(&key, "alice", json!({}));
    idp.set_delay_ms(1500);
    let addr = gw.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let t = t.clone();
            std::thread::spawn(move || get(addr, "/ext/same", &t, &[]).status)
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses, vec![200; 8]);
    assert_eq!(idp.hits(AUTHZ_PATH), 1, "eight identical checks, one call");
    idp.set_delay_ms(0);
    // With caching off the next check asks again.
    assert_eq!(get(addr, "/ext/same", &t, &[]).status, 200);
    assert_eq!(idp.hits(AUTHZ_PATH), 2);
}

fn denials_are_counted_per_route() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let admin = free_addr();
    let routes = format!(
        "[admin]\nlisten = \"{admin}\"\n{}",
        route("orders", "/orders", r#"allow_roles = ["admin"]"#)
    );
    let gw = start(&key, &up, &routes);
    let t = token(&key, "alice", json!({}));
    for _ in 0..3 {
        assert_error(&get(gw.addr, "/orders", &t, &[]), 403, "forbidden");
    }
    let ok = common::wait_until(Duration::from_secs(5), || {
        request(admin, "GET", "/metrics", &[], None)
            .body_str()
            .contains("portcullis_authz_denied_total{route=\"orders\"} 3")
    });
    assert!(
        ok,
        "metric portcullis_authz_denied_total{{route=\"orders\"}} 3"
    );
}

// Each of these runs twice, over HTTP/1.1 and over h2c (CONTRACT §9).
crate::on_http1_and_h2c!(
    require_scopes_needs_all_of_them,
    allow_roles_needs_one_of_them_from_a_nested_claim,
    cel_policy_isolates_tenants_and_fails_closed,
    cidr_rules_for_ipv4_and_ipv6,
    global_cidr_rules_apply_before_routing,
    spoofed_forwarded_for_is_ignored_unless_the_peer_is_trusted,
    external_authz_allows_denies_and_passes_headers,
    external_authz_timeout_and_unreachable_fail_closed,
    external_authz_decisions_are_cached_per_path_and_query,
    denials_are_counted_per_route,
);
