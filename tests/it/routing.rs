//! Routing through the real binary: precedence, methods, normalization
//! attacks and what the upstream receives.

use crate::common;

use common::client::{get, request, send_raw};
use common::gateway::Gateway;
use common::upstream::Upstream;

fn config(up: &Upstream, admin: &Upstream) -> String {
    format!(
        r#"
[upstreams.app]
targets = ["{app}"]

[upstreams.admin]
targets = ["{admin}"]

[[routes]]
name = "public"
path_prefix = "/public"
public = true
upstream = "app"

[[routes]]
name = "admin"
path_prefix = "/admin"
public = true
upstream = "admin"

[[routes]]
name = "api"
path_prefix = "/api"
methods = ["GET", "POST"]
public = true
upstream = "app"
strip_prefix = true

[[routes]]
name = "api-exact"
path = "/api/status"
methods = ["GET"]
public = true
respond = {{ status = 200, body = "exact" }}

[[routes]]
name = "api-v2"
path_prefix = "/api/v2"
public = true
respond = {{ status = 200, body = "v2", content_type = "application/json" }}

[[routes]]
name = "host-api"
hosts = ["API.example.com"]
path_prefix = "/api"
public = true
respond = {{ status = 200, body = "host" }}

[[routes]]
name = "host-only-get"
hosts = ["get.example.com"]
path = "/thing"
methods = ["GET"]
public = true
respond = {{ status = 200, body = "host-get" }}

[[routes]]
name = "any-thing"
path = "/thing"
public = true
respond = {{ status = 200, body = "any-thing" }}
"#,
        app = up.addr(),
        admin = admin.addr()
    )
}

fn with_host(gw: &Gateway, method: &str, path: &str, host: &str) -> common::client::Response {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    send_raw(gw.addr, raw.as_bytes()).unwrap()
}

#[test]
fn precedence_exact_prefix_host_and_methods() {
    let app = Upstream::start("app");
    let admin = Upstream::start("admin");
    let gw = Gateway::start(&config(&app, &admin));

    // Exact beats prefix; longest prefix wins.
    assert_eq!(get(gw.addr, "/api/status").body_str(), "exact");
    assert_eq!(get(gw.addr, "/api/v2/x").body_str(), "v2");
    let r = get(gw.addr, "/api/v2");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Segment boundaries: /apiary is not /api.
    assert_eq!(get(gw.addr, "/apiary").status, 404);
    // The method picks a less specific route: POST /api/status goes to /api.
    let r = request(gw.addr, "POST", "/api/status", &[], Some(b"{}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["server"], "app");
    assert_eq!(r.json()["uri"], "/status", "strip_prefix");
    // Path matches, method does not -> 405 with Allow.
    let r = request(gw.addr, "DELETE", "/api/x", &[], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(r.json()["error"], "method_not_allowed");

    // Host routes first (case-insensitive, port ignored)...
    assert_eq!(
        with_host(&gw, "GET", "/api/x", "api.EXAMPLE.com:8080").body_str(),
        "host"
    );
    // ...falling back to any-host routes only when no host route matches the path.
    let r = with_host(&gw, "GET", "/public/a", "api.example.com");
    assert_eq!(r.json()["server"], "app");
    // A host route that matches the path but not the method is a 405, not a fallback.
    let r = with_host(&gw, "POST", "/thing", "get.example.com");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        with_host(&gw, "POST", "/thing", "other.example.com").body_str(),
        "any-thing"
    );

    let r = get(gw.addr, "/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["request_id"], r.header("x-request-id").unwrap());
}

#[test]
fn normalization_attacks_never_reach_the_wrong_route() {
    let app = Upstream::start("app");
    let admin = Upstream::start("admin");
    let gw = Gateway::start(&config(&app, &admin));

    // Resolved safely: the upstream gets the normalized path, and routing
    // uses the same path the upstream sees.
    for (raw, expected) in [
        ("/public/../admin/users", "/admin/users"),
        ("/public/%2e%2e/admin/users", "/admin/users"),
        ("/public/%2E%2E/admin/users", "/admin/users"),
        ("//admin//users", "/admin/users"),
        ("/admin/./users", "/admin/users"),
        ("/%61dmin/users", "/admin/users"),
    ] {
        let r = get(gw.addr, raw);
        assert_eq!(r.status, 200, "{raw}");
        assert_eq!(
            r.json()["server"],
            "admin",
            "{raw} must route as {expected}"
        );
        assert_eq!(r.json()["uri"], expected, "{raw}");
    }
    let r = get(gw.addr, "/public/a/../b?q=%2e%2e");
    assert_eq!(
        r.json()["uri"],
        "/public/b?q=%2e%2e",
        "query passes untouched"
    );

    // Refused: cannot be normalized safely.
    for raw in [
        "/public/../../admin",
        "/%2e%2e/admin",
        "/public/..%2fadmin",
        "/public%2F..%2Fadmin",
        "/public/%00",
        "/public/%zz",
        "/public/%2",
        "/public/..;/admin",
        "/public/.;x/admin",
        "/public\\..\\admin",
        "/public/%5c..%5cadmin",
    ] {
        let r = get(gw.addr, raw);
        assert_eq!(r.status, 400, "{raw}");
        assert_eq!(r.json()["error"], "bad_request", "{raw}");
    }
    // Decoded once, never twice.
    let r = get(gw.addr, "/public/%252e%252e/admin");
    assert_eq!(r.json()["server"], "app");
    assert_eq!(r.json()["uri"], "/public/%252e%252e/admin");
    assert_eq!(
        admin.hits(),
        6,
        "only the six safe admin paths reached admin"
    );

    let events = gw.wait_security_events("request_rejected", 11);
    assert!(events.len() >= 11);
    assert!(events.iter().all(|e| e["client_ip"] == "127.0.0.1"));
}

#[test]
fn respond_routes_default_to_text_plain() {
    let app = Upstream::start("app");
    let admin = Upstream::start("admin");
    let gw = Gateway::start(&config(&app, &admin));
    let r = get(gw.addr, "/api/status");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("x-request-id").is_some());
    let head = send_raw(
        gw.addr,
        b"HEAD /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}
