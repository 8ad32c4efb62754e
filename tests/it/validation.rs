//! JSON schema validation and CORS against the real binary: valid, invalid,
//! too large, not JSON and wrong content type bodies (the upstream sees
//! nothing of a refused body and exactly the bytes of an accepted one);
//! chunked bodies; bad schemas refused by `check`; CORS preflights answered
//! without authentication, refused origins, and headers on actual requests.

use crate::common;

use std::net::SocketAddr;

use common::assert_error;
use common::client::{build_request, request, send_raw, Response};
use common::gateway::{check, free_addr, Gateway};
use common::upstream::Upstream;

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["customer", "items"],
  "properties": {
    "customer": {"type": "string", "maxLength": 64},
    "items": {
      "type": "array",
      "minItems": 1,
      "items": {
        "type": "object",
        "required": ["sku", "qty"],
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
      }
    }
  }
}"#;

fn start(up: &Upstream, extra: &str) -> Gateway {
    let body = format!(
        r#"
[upstreams.app]
targets = ["{}"]

[[routes]]
name = "orders"
path_prefix = "/orders"
public = true
upstream = "app"
json_schema = "{{dir}}/order.json"
max_body_bytes = 4096
{extra}
"#,
        up.addr()
    );
    Gateway::start_with_files(&body, &[("order.json", SCHEMA)])
}

fn post(addr: SocketAddr, body: &[u8], content_type: &str) -> Response {
    request(
        addr,
        "POST",
        "/orders",
        &[("content-type", content_type)],
        Some(body),
    )
}

/// The message of a §4 refusal with this status and code.
fn refusal(resp: &Response, status: u16, code: &str) -> String {
    assert_error(resp, status, code)["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn valid_bodies_pass_unchanged_and_invalid_ones_never_reach_the_upstream() {
    let up = Upstream::start("app");
    let gw = start(&up, "");
    let good = br#"{"customer":"acme","items":[{"sku":"a-1","qty":2}]}"#;
    let r = post(gw.addr, good, "application/json; charset=utf-8");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = r.json();
    assert_eq!(seen["body"], std::str::from_utf8(good).unwrap());
    assert_eq!(seen["body_len"], good.len());

    let bad = br#"{"customer":"acme","items":[{"sku":"a-1","qty":"lots"}]}"#;
    let msg = refusal(&post(gw.addr, bad, "application/json"), 400, "invalid_body");
    assert!(msg.contains("/items/0/qty"), "{msg}");
    assert!(
        !msg.contains("lots"),
        "the client's value is not echoed: {msg}"
    );
    let msg = refusal(
        &post(gw.addr, br#"{"items":[]}"#, "application/json"),
        400,
        "invalid_body",
    );
    assert!(msg.contains("schema"), "{msg}");
    assert_error(
        &post(gw.addr, b"{not json", "application/json"),
        400,
        "invalid_body",
    );
    assert_error(
        &post(
            gw.addr,
            br#"{"customer":"a","customer":"b","items":[{"sku":"x","qty":1}]}"#,
            "application/json",
        ),
        400,
        "invalid_body",
    );
    assert_error(
        &post(gw.addr, good, "text/plain"),
        415,
        "unsupported_media_type",
    );
    assert_error(
        &request(gw.addr, "POST", "/orders", &[], Some(good)),
        415,
        "unsupported_media_type",
    );
    let big = format!(
        r#"{{"customer":"acme","items":[{{"sku":"{}","qty":1}}]}}"#,
        "x".repeat(5000)
    );
    assert_error(
        &post(gw.addr, big.as_bytes(), "application/json"),
        413,
        "payload_too_large",
    );
    // GET carries no body to check.
    assert_eq!(request(gw.addr, "GET", "/orders", &[], None).status, 200);
    assert_eq!(
        up.hits(),
        2,
        "only the valid POST and the GET reached the upstream"
    );
}

#[test]
fn chunked_bodies_are_validated_too() {
    let up = Upstream::start("app");
    let gw = start(&up, "");
    let chunked = |payload: &str| {
        let mut body = String::new();
        for piece in payload.as_bytes().chunks(7) {
            body.push_str(&format!(
                "{:x}\r\n{}\r\n",
                piece.len(),
                std::str::from_utf8(piece).unwrap()
            ));
        }
        body.push_str("0\r\n\r\n");
        let req = build_request(
            "PUT",
            "/orders/1",
            &[
                ("content-type", "application/json"),
                ("transfer-encoding", "chunked"),
            ],
            Some(body.as_bytes()),
            true,
        );
        send_raw(gw.addr, &req).unwrap()
    };
    let good = r#"{"customer":"acme","items":[{"sku":"a-1","qty":2}]}"#;
    let r = chunked(good);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["body"], good);
    assert_error(
        &chunked(r#"{"customer":7,"items":[{"sku":"a","qty":1}]}"#),
        400,
        "invalid_body",
    );
    let huge = format!(r#"{{"customer":"{}","items":[]}}"#, "y".repeat(6000));
    assert_error(&chunked(&huge), 413, "payload_too_large");
    assert_eq!(up.hits(), 1);
}

#[test]
fn check_refuses_bad_schemas_and_oversized_schema_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let schema = dir.path().join("s.json");
    let listen = free_addr();
    let write = |extra: &str| {
        let text = format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"{listen}\"\n\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"r\"\npath = \"/\"\npublic = true\nupstream = \"app\"\njson_schema = \"{}\"\n{extra}\n",
            schema.display()
        );
        std::fs::write(&path, text).unwrap();
    };
    let stderr = |out: std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"a": {"type": 12}}}"#,
    )
    .unwrap();
    write("");
    let out = check(&path);
    assert!(!out.status.success());
    let err = stderr(out);
    assert!(err.contains("gw.toml:13:15: `json_schema`"), "{err}");
    std::fs::write(&schema, r#"{"$ref": "https://example.com/schema.json"}"#).unwrap();
    let out = check(&path);
    assert!(!out.status.success(), "remote references are refused");
    std::fs::write(&schema, SCHEMA).unwrap();
    assert!(check(&path).status.success());
    write("max_body_bytes = 100000");
    let out = check(&path);
    assert!(!out.status.success());
    assert!(stderr(out).contains("must be at most 65536"));
    write("cors = { origins = [\"*\"], credentials = true }");
    let out = check(&path);
    assert!(!out.status.success(), "* with credentials is refused");
}

fn cors_gateway(up: &Upstream) -> Gateway {
    let body = format!(
        r#"
{}
[upstreams.app]
targets = ["{}"]

[[routes]]
name = "api"
path_prefix = "/api"
methods = ["GET", "POST"]
auth = ["corp"]
upstream = "app"
cors = {{ origins = ["https://app.example.com"], methods = ["GET", "POST"], headers = ["authorization", "content-type"], credentials = true, max_age_seconds = 600 }}

[[routes]]
name = "plain"
path_prefix = "/plain"
public = true
upstream = "app"

[[routes]]
name = "pub"
path_prefix = "/pub"
public = true
upstream = "app"
cors = {{ origins = ["https://app.example.com"] }}
"#,
        common::jwt::jwks_file_provider("corp", ""),
        up.addr()
    );
    let key = common::jwt::TestKey::rsa("k1");
    Gateway::start_with_files(&body, &[("jwks.json", common::jwt::jwks(&[&key]).as_str())])
}

#[test]
fn cors_preflights_are_answered_without_authentication() {
    let up = Upstream::start("app");
    let gw = cors_gateway(&up);
    let preflight = |origin: &str, method: &str, headers: &str| {
        let mut h = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            h.push(("access-control-request-headers", headers));
        }
        request(gw.addr, "OPTIONS", "/api/orders", &h, None)
    };
    let r = preflight(
        "https://app.example.com",
        "POST",
        "Authorization, Content-Type",
    );
    assert_eq!(r.status, 204, "{:?} {}", r.headers, r.body_str());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(r.header("vary").unwrap_or("").contains("Origin"));
    assert!(r.header("x-request-id").is_some());

    assert_error(
        &preflight("https://evil.example.com", "POST", ""),
        403,
        "forbidden",
    );
    // A method no route allows for the path: the ordinary 405.
    assert_error(
        &preflight("https://app.example.com", "DELETE", ""),
        405,
        "method_not_allowed",
    );
    assert_error(
        &preflight("https://app.example.com", "GET", "x-secret"),
        403,
        "forbidden",
    );
    assert_eq!(up.hits(), 0, "preflights never reach the upstream");
}

#[test]
fn actual_cors_requests_get_origin_headers_and_still_authenticate() {
    let up = Upstream::start("app");
    let gw = cors_gateway(&up);
    let r = request(
        gw.addr,
        "GET",
        "/api/orders",
        &[("origin", "https://app.example.com")],
        None,
    );
    assert_error(&r, 401, "missing_credentials");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "a browser can read the error"
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.header("vary").unwrap_or("").contains("Origin"));
    let r = request(
        gw.addr,
        "GET",
        "/api/orders",
        &[("origin", "https://evil.example.com")],
        None,
    );
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("vary").unwrap_or("").contains("Origin"));
    // The upstream's own Vary survives beside ours.
    let r = request(
        gw.addr,
        "GET",
        "/pub?vary=Accept-Encoding",
        &[("origin", "https://app.example.com")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let vary = r.header_all("vary").join(", ");
    assert!(
        vary.contains("Accept-Encoding") && vary.contains("Origin"),
        "{vary}"
    );
    // A route without cors: OPTIONS is an ordinary, proxied request.
    let r = request(
        gw.addr,
        "OPTIONS",
        "/plain",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "proxied like any request: {}", r.body_str());
    assert!(r.header("access-control-allow-origin").is_none());
}
