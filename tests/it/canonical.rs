//! CONTRACT §8 against the real binary, with raw sockets where a client
//! library would normalize the bytes, and an upstream that records the
//! bytes it received: what is checked is what is forwarded.

use crate::common;

use std::net::SocketAddr;

use common::assert_error;
use common::client::{send_raw, Conn, Response};
use common::gateway::{config_header, free_addr, Gateway};
use common::raw_upstream::RawUpstream;
use common::upstream::Upstream;
use sha2::{Digest, Sha256};

const KEY: &str = "pc_k1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn keys_file() -> String {
    let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!("[[keys]]\nid = \"k1\"\nconsumer = \"acme\"\nhash = \"sha256:{hash}\"\n")
}

/// A public catch-all on a recording upstream beside protected routes: a
/// request that dodges a protected route lands on the catch-all, and the
/// upstream shows what it was sent.
fn routes(up: SocketAddr) -> String {
    format!(
        r#"
[auth.keys]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"
query_param = "api_key"

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "admin-host"
hosts = ["admin.example.com"]
path_prefix = "/"
auth = ["keys"]
upstream = "app"

[[routes]]
name = "admin"
path_prefix = "/admin"
auth = ["keys"]
upstream = "app"

[[routes]]
name = "shop"
path_prefix = "/shop"
public = true
allow_path_params = true
upstream = "app"

[[routes]]
name = "tenant"
path_prefix = "/tenant"
auth = ["keys"]
policy = 'request.headers["x-tenant-id"] == "acme"'
upstream = "app"

[[routes]]
name = "schema"
path = "/orders"
public = true
json_schema = "{{dir}}/order.json"
upstream = "app"

[[routes]]
name = "catch-all"
path_prefix = "/"
public = true
upstream = "app"
"#
    )
}

const SCHEMA: &str =
    r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}"#;

fn start(up: &RawUpstream, server: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), keys_file()).unwrap();
    std::fs::write(dir.path().join("order.json"), SCHEMA).unwrap();
    let addr = free_addr();
    let header =
        config_header(dir.path(), addr).replacen("[server]\n", &format!("[server]\n{server}"), 1);
    let body = routes(up.addr()).replace("{dir}", &dir.path().to_string_lossy());
    Gateway::start_full(format!("{header}{body}"), addr, dir)
}

fn raw(gw: &Gateway, bytes: &str) -> Response {
    send_raw(gw.addr, bytes.as_bytes()).unwrap_or_else(|e| panic!("{bytes:?}: {e}"))
}

/// Asserts a 400 `bad_request` (JSON, with a request id) and that the
/// upstream saw nothing new.
fn refused(gw: &Gateway, up: &RawUpstream, bytes: &str) {
    let before = up.count();
    let r = raw(gw, bytes);
    assert_error(&r, 400, "bad_request");
    assert!(r.header("x-request-id").is_some(), "{bytes:?}");
    assert_eq!(
        up.count(),
        before,
        "{bytes:?} reached the upstream: {:?}",
        up.last()
    );
}

#[test]
fn other_target_forms_are_refused() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    for target in [
        "admin/secret",
        "x:/admin/secret",
        "./admin/secret",
        "admin:80",
        "*",
        "ftp://admin.example.com/secret",
        "http:/admin/secret",
        "//admin/secret#x",
        "/admin/secret#frag",
    ] {
        refused(
            &gw,
            &up,
            &format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
    }
}

#[test]
fn the_upstream_gets_the_canonical_origin_form() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let cases = [
        ("/a/../b?x=1", "/b?x=1"),
        ("/a/%2e%2e/b", "/b"),
        ("//c///d", "/c/d"),
        ("/caf%c3%a9?q=m\u{fc}ller", "/caf%C3%A9?q=m%C3%BCller"),
        ("/%41%7e?x=%41", "/A~?x=%41"),
        ("http://www.example.com/w?y", "/w?y"),
        ("HTTP://www.example.com", "/"),
    ];
    for (sent, forwarded) in cases {
        let host = if sent.contains("://") {
            "www.example.com"
        } else {
            "a"
        };
        let r = raw(
            &gw,
            &format!("GET {sent} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "{sent}: {}", r.body_str());
        let got = up.last();
        assert_eq!(got.target(), forwarded, "{sent}");
        assert_eq!(got.one("host"), host);
    }
}

#[test]
fn host_rules() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    // Every spelling of the protected host reaches the protected route.
    for (target, host) in [
        ("http://admin.example.com/secret", None),
        ("http://ADMIN.example.com./secret", None),
        ("/secret", Some("admin.example.com.")),
        ("/secret", Some("Admin.Example.COM")),
        ("/secret", Some("admin.example.com:8080")),
        ("/secret", Some("admin.example.com.:8080")),
    ] {
        let host_line = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        let r = raw(
            &gw,
            &format!("GET {target} HTTP/1.1\r\n{host_line}Connection: close\r\n\r\n"),
        );
        assert_error(&r, 401, "missing_credentials");
    }
    assert_eq!(up.count(), 0);
    // With the key, the upstream sees the canonical host, port as sent.
    let r = raw(
        &gw,
        &format!("GET /s HTTP/1.1\r\nHost: ADMIN.example.com.:8080\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().one("host"), "admin.example.com:8080");
    assert_eq!(up.last().one("x-forwarded-host"), "admin.example.com:8080");
    // An absolute-form target names the host; the upstream gets a Host.
    let r = raw(
        &gw,
        &format!("GET http://Admin.example.com/s HTTP/1.1\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().target(), "/s");
    assert_eq!(up.last().one("host"), "admin.example.com");

    for head in [
        // HTTP/1.1 without a host.
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        // Two hosts, or one that disagrees with the target.
        "GET /x HTTP/1.1\r\nHost: a\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
        "GET http://admin.example.com/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
        "GET http://user@admin.example.com/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        // Not a host name.
        "GET /x HTTP/1.1\r\nHost: admin.example.com,evil\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: admin.example.com..\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: adm%69n.example.com\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: admin.example.com:99999\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
    ] {
        refused(&gw, &up, head);
    }
    // HTTP/1.0 may leave the host out: the any-host routes serve it.
    let r = raw(&gw, "GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    // The upstream (spoken to in HTTP/1.1) gets the target's address.
    assert_eq!(up.last().one("host"), up.addr().to_string());
}

#[test]
fn path_parameters() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    for target in [
        "/admin;x/secret",
        "/admin;jsessionid=1",
        "/admin%3Bx/secret",
        "/admin%3bx/secret",
        "/;x/admin/secret",
        "/x;y",
    ] {
        refused(
            &gw,
            &up,
            &format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
    }
    // A route that allows them is matched without them, and the upstream
    // gets the path as normalized, parameters kept.
    let r = raw(
        &gw,
        "GET /shop;jsessionid=1/cart HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().target(), "/shop;jsessionid=1/cart");
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || gw
            .access_log()
            .iter()
            .any(|l| l["route"] == "shop" && l["path"] == "/shop;jsessionid=1/cart")
    ));
    // Parameters that would climb out of it are still refused.
    refused(
        &gw,
        &up,
        "GET /shop/..;/admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
}

#[test]
fn every_forwarded_for_line_counts() {
    let up = RawUpstream::start();
    let gw = start(&up, "trusted_proxies = [\"127.0.0.1/32\"]\n");
    // The client's own line, then the trusted proxy's.
    let r = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(
        got.one("x-forwarded-for"),
        "6.6.6.6, 203.0.113.9, 127.0.0.1"
    );
    assert_eq!(got.one("x-real-ip"), "203.0.113.9");
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || gw
            .access_log()
            .iter()
            .any(|l| l["client_ip"] == "203.0.113.9")
    ));
}

#[test]
fn address_headers_are_the_gateways() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let r = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\nX-Real-Ip: 7.7.7.7\r\nForwarded: for=6.6.6.6;host=admin.example.com\r\nX-Forwarded-For: 6.6.6.6\r\nX-Original-URL: /admin/secret\r\nX-Rewrite-Url: /admin\r\nX-HTTP-Method-Override: DELETE\r\nX-Host: admin.example.com\r\nX-Forwarded-Host: admin.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(got.all("x-real-ip"), vec!["127.0.0.1"]);
    assert!(!got.has("forwarded"), "{got:?}");
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-host",
    ] {
        assert!(!got.has(name), "{name} reached the upstream: {got:?}");
    }
    assert_eq!(got.all("x-forwarded-host"), vec!["a"]);
    // An untrusted peer's list is kept, the peer appended.
    assert_eq!(got.one("x-forwarded-for"), "6.6.6.6, 127.0.0.1");

    // From a trusted proxy, Forwarded stays.
    let up2 = RawUpstream::start();
    let trusted = start(&up2, "trusted_proxies = [\"127.0.0.1/32\"]\n");
    let r = raw(
        &trusted,
        "GET /x HTTP/1.1\r\nHost: a\r\nForwarded: for=198.51.100.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up2.last().one("forwarded"), "for=198.51.100.1");
    assert_eq!(up2.last().one("x-forwarded-proto"), "http");
    // A trusted proxy's scheme is the client's: what DPoP checks `htu`
    // against is what the upstream is told.
    let r = raw(
        &trusted,
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up2.last().all("x-forwarded-proto"), vec!["https"]);
    // An untrusted peer's claim is replaced by the listener's scheme.
    let r = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().all("x-forwarded-proto"), vec!["http"]);
}

#[test]
fn an_oversized_head_is_refused_and_the_connection_closed() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let big = "a".repeat(16_500);
    let mut conn = Conn::open(gw.addr);
    let r = conn
        .send(format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .expect("a 431");
    assert_error(&r, 431, "headers_too_large");
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
    assert!(
        conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").is_err(),
        "the connection stays open after a 431"
    );
    assert_eq!(up.count(), 0);
}

#[test]
fn cookie_lines_reach_the_upstream_as_one() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let r = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().all("cookie"), vec!["a=1; b=2"]);
}

#[test]
fn look_alike_headers() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let r = raw(
        &gw,
        &format!("GET /admin/x HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\nX_Auth_Subject: root\r\nx_auth_roles: admin\r\nX-Auth-Subject: root\r\nX_Custom: 1\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(got.all("x-auth-subject"), vec!["acme"]);
    for name in ["x_auth_subject", "x_auth_roles", "x_custom"] {
        assert!(!got.has(name), "{name} reached the upstream: {got:?}");
    }

    let up = RawUpstream::start();
    let strict = start(&up, "underscore_headers = \"reject\"\n");
    refused(
        &strict,
        &up,
        "GET /x HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\nConnection: close\r\n\r\n",
    );

    let up = RawUpstream::start();
    let lenient = start(&up, "underscore_headers = \"allow\"\n");
    let r = raw(
        &lenient,
        &format!("GET /admin/x HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\nX_Auth_Subject: root\r\nX_Custom: 1\r\nx_request_id: zz\r\nX_Forwarded_For: 6.6.6.6\r\nx_forwarded_proto: https\r\nx_forwarded_host: admin.example.com\r\nx_real_ip: 6.6.6.6\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(got.one("x_custom"), "1");
    assert!(!got.has("x_auth_subject"), "{got:?}");
    // The `_` forms of the headers the gateway sets go too: CGI-style
    // backends read them as the same variable.
    for name in [
        "x_request_id",
        "x_forwarded_for",
        "x_forwarded_proto",
        "x_forwarded_host",
        "x_real_ip",
    ] {
        assert!(!got.has(name), "{name} reached the upstream: {got:?}");
    }
    assert_eq!(got.all("x-auth-subject"), vec!["acme"]);
}

#[test]
fn a_policy_header_must_arrive_once_as_visible_ascii() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let send = |tenant_lines: &str| {
        let head = format!(
            "GET /tenant/x HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\n{tenant_lines}Connection: close\r\n\r\n"
        );
        let mut bytes = head.into_bytes();
        // A raw Latin-1 byte, as a client library would never send it.
        if let Some(i) = bytes.iter().position(|b| *b == b'#') {
            bytes[i] = 0xfc;
        }
        send_raw(gw.addr, &bytes).unwrap()
    };
    assert_eq!(send("X-Tenant-Id: acme\r\n").status, 200);
    let before = up.count();
    for lines in [
        "X-Tenant-Id: m#ller\r\nX-Tenant-Id: acme\r\n",
        "X-Tenant-Id: acme\r\nX-Tenant-Id: acme\r\n",
        "X-Tenant-Id: acme\r\nx-tenant-id: other\r\n",
        "X-Tenant-Id: ac#me\r\n",
    ] {
        assert_error(&send(lines), 403, "forbidden");
    }
    assert_eq!(up.count(), before);
}

#[test]
fn a_schema_body_is_one_json_body() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let body = r#"{"id":1}"#;
    let post = |extra: &str, method: &str| {
        raw(
            &gw,
            &format!(
                "{method} /orders HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert_eq!(
        post("Content-Type: application/json\r\n", "POST").status,
        200
    );
    let before = up.count();
    for extra in [
        "Content-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Type: application/json\r\n",
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
        "Content-Type: application/json, text/plain\r\n",
    ] {
        assert_error(&post(extra, "POST"), 415, "unsupported_media_type");
    }
    // Methods are case-sensitive: none of these skips the schema.
    for method in ["post", "Post", "pUT", "patch"] {
        assert_error(
            &post("Content-Type: text/plain\r\n", method),
            400,
            "bad_request",
        );
    }
    assert_eq!(up.count(), before);
    // Repeated Content-Length is framing trouble, identical or not.
    for extra in ["Content-Length: 8\r\n", "Content-Length: 8, 8\r\n"] {
        let r = raw(
            &gw,
            &format!("POST /x HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: 8\r\nConnection: close\r\n\r\n{body}"),
        );
        assert_error(&r, 400, "bad_request");
    }
    assert_eq!(up.count(), before);
}

#[test]
fn malformed_heads_get_json_not_pingoras_empty_400() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    for head in [
        "GET / HTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        "CONNECT admin.example.com:443 HTTP/1.1\r\nHost: admin.example.com:443\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
    ] {
        refused(&gw, &up, head);
    }
    let log = gw.wait_security_events("request_rejected", 8);
    assert!(log.len() >= 8, "{log:?}");
}

#[test]
fn options_asterisk_is_answered_by_the_gateway() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let r = raw(
        &gw,
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    assert!(r.header("x-request-id").is_some());
    assert_eq!(up.count(), 0);
}

#[test]
fn credentials_in_the_query_stay_put() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let r = raw(
        &gw,
        &format!(
            "GET /admin/x?a=1&api_key={KEY}&b=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last().target(), "/admin/x?a=1&b=2");
    // A look-alike spelling of the parameter is removed too.
    let r = raw(
        &gw,
        &format!("GET /admin/x?api_key={KEY}&api%5Fkey=other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last().target(), "/admin/x");
    let logs = format!(
        "{}{}{}{}",
        std::fs::read_to_string(&gw.access_log_path).unwrap_or_default(),
        std::fs::read_to_string(&gw.security_log_path).unwrap_or_default(),
        gw.stdout(),
        gw.stderr()
    );
    assert!(!logs.contains(&KEY[10..]), "the key was logged");
}

#[test]
fn routes_bound_to_listeners() {
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_addr(), free_addr());
    let header = config_header(dir.path(), a);
    let body = format!(
        r#"
[[listeners]]
name = "internal"
listen = "{b}"

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "internal-only"
path_prefix = "/ops"
listeners = ["internal"]
public = true
upstream = "app"

[[routes]]
name = "everywhere"
path_prefix = "/"
methods = ["POST"]
public = true
upstream = "app"
"#,
        up = up.addr()
    );
    let gw = Gateway::start_full(format!("{header}{body}"), a, dir);
    assert!(common::gateway::wait_for_port(
        b,
        std::time::Duration::from_secs(10)
    ));
    let on = |addr| {
        send_raw(
            addr,
            b"GET /ops/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
    };
    assert_eq!(on(b).status, 200);
    // On the other listener the route does not exist: the catch-all's
    // 405, as if the internal route were not there.
    let r = on(gw.addr);
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn check_refuses_unknown_listeners_on_routes() {
    let up = Upstream::start("app");
    let err = Gateway::try_start(&format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\nlisteners = [\"nope\"]\n",
        up.addr()
    ))
    .err()
    .unwrap_or_default();
    assert!(err.contains("unknown listener `nope`"), "{err}");
}

#[test]
fn keep_alive_and_pipelining_survive_the_front() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    let mut conn = Conn::open(gw.addr);
    for i in 0..3 {
        let r = conn.get(&format!("/k{i}")).unwrap();
        assert_eq!(r.status, 200);
    }
    // Two requests in one write: both answered, in order.
    conn.write_raw(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    let targets: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.target().to_string())
        .collect();
    assert_eq!(targets, vec!["/k0", "/k1", "/k2", "/p1", "/p2"]);
}

/// Neighbours of the classes above, found by attacking the build.
#[test]
fn hop_by_hop_upgrades_and_lenient_decoders() {
    let up = RawUpstream::start();
    let gw = start(&up, "");
    // A header named in Connection is gone before any stage reads it: the
    // policy fails closed and the schema route wants its Content-Type.
    let r = raw(
        &gw,
        &format!("GET /tenant/x HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\nX-Tenant-Id: acme\r\nConnection: x-tenant-id\r\n\r\n"),
    );
    assert_error(&r, 403, "forbidden");
    let body = r#"{"id":1}"#;
    let r = raw(
        &gw,
        &format!("POST /orders HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nConnection: content-type\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    );
    assert_error(&r, 415, "unsupported_media_type");
    refused(
        &gw,
        &up,
        "POST /x HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\nx",
    );
    // `close` counts on any Connection line.
    let r = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    // No route enables WebSocket: the upgrade never becomes a tunnel.
    refused(
        &gw,
        &up,
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    // What Pingora's URI parser refuses is refused as JSON.
    for target in ["/x?a=<", "/x<y", "/x?q=\"a\""] {
        refused(
            &gw,
            &up,
            &format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
    }
    // Paths a lenient decoder, a Unicode normalizer or Windows would read
    // as another path.
    for target in [
        "/x/%C0%AE%C0%AE/admin",
        "/x/%E0%80%AE%E0%80%AE/admin",
        "/x%C0%AFadmin",
        "/x/%EF%BC%8E%EF%BC%8E/admin",
        "/x/%E2%80%A5/admin",
        "/x%EF%BC%8Fadmin",
        "/admin./secret",
        "/admin%20/secret",
        "/x/..%20/admin",
        "/admin%3F/x",
        "/admin%23/x",
    ] {
        refused(
            &gw,
            &up,
            &format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
    }
    // Only the one request that was fine got through.
    assert_eq!(up.count(), 1, "{:?}", up.requests());
}
