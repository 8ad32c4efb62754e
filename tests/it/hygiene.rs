//! Request hygiene: size limits, smuggling signals, request ids and the
//! forwarding headers the upstream receives.

use crate::common;

use common::client::{get, request, send_raw, Conn};
use common::gateway::{config_header, free_addr, Gateway};
use common::upstream::Upstream;

fn gateway(up: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[limits]
max_uri_bytes = 256
max_header_bytes = 2048
max_body_bytes = 4096
{extra}

[upstreams.app]
targets = ["{addr}"]

[[routes]]
name = "app"
path_prefix = "/"
public = true
upstream = "app"
request_headers = {{ set = {{ "x-added" = "yes" }}, remove = ["cookie"] }}
response_headers = {{ set = {{ "x-frame-options" = "DENY" }} }}

[[routes]]
name = "small"
path_prefix = "/small"
public = true
upstream = "app"
max_body_bytes = 16
"#,
        addr = up.addr()
    ))
}

#[test]
fn uri_header_and_body_limits() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");

    let long = format!("/a?{}", "q".repeat(300));
    let r = get(gw.addr, &long);
    assert_eq!(r.status, 414);
    assert_eq!(r.json()["error"], "uri_too_long");

    let big = "v".repeat(3000);
    let r = request(gw.addr, "GET", "/a", &[("x-big", big.as_str())], None);
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "headers_too_large");

    // Declared length over the limit.
    let body = vec![b'x'; 5000];
    let r = request(gw.addr, "POST", "/a", &[], Some(&body));
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");
    // Route-level limit is lower.
    let r = request(gw.addr, "POST", "/small", &[], Some(&[b'y'; 17]));
    assert_eq!(r.status, 413);
    let r = request(gw.addr, "POST", "/small", &[], Some(&[b'y'; 16]));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 16);

    // Chunked, no Content-Length: counted while streaming.
    let mut raw =
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..6 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'z'; 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = send_raw(gw.addr, &raw).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");

    // A chunked body under the limit passes unchanged.
    let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let r = send_raw(gw.addr, raw).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 5);
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let r = send_raw(gw.addr, raw).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    assert_eq!(up.hits(), 0);
}

#[test]
fn request_id_and_forwarding_headers() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");

    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[
            ("x-request-id", "client-id.1:2"),
            ("x-forwarded-for", "203.0.113.9"),
            ("cookie", "secret=1"),
            ("host", "shop.example.com"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("client-id.1:2"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-request-id"], "client-id.1:2");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen["x-added"], "yes");
    assert!(seen.get("cookie").is_none());

    // An unsafe client id is replaced.
    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[("x-request-id", "bad id<script>")],
        None,
    );
    let id = r.header("x-request-id").unwrap().to_string();
    assert_ne!(id, "bad id<script>");
    assert_eq!(id.len(), 32);
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());

    // The access log: one JSON line per request, with the contract's fields.
    let log = gw.wait_access_log(2);
    let line = &log[0];
    for field in [
        "ts",
        "request_id",
        "client_ip",
        "method",
        "path",
        "route",
        "upstream",
        "target",
        "status",
        "bytes_sent",
        "duration_ms",
        "upstream_ms",
        "auth_method",
        "subject",
    ] {
        assert!(
            line.get(field).is_some(),
            "access log lacks {field}: {line}"
        );
    }
    assert_eq!(line["request_id"], "client-id.1:2");
    assert_eq!(
        line["client_ip"], "127.0.0.1",
        "x-forwarded-for from an untrusted peer is ignored"
    );
    assert_eq!(line["route"], "app");
    assert_eq!(line["status"], 200);
    assert_eq!(line["target"], up.addr().to_string());
}

#[test]
fn trusted_proxy_names_the_client() {
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let header = config_header(dir.path(), addr).replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        1,
    );
    let body = format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n[[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n",
        up.addr()
    );
    let gw = Gateway::start_full(format!("{header}{body}"), addr, dir);
    // Walking from the right: trusted hops are skipped, the first untrusted
    // one is the client; what the client wrote further left is not believed.
    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 127.0.0.5")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"],
        "6.6.6.6, 198.51.100.7, 127.0.0.5, 127.0.0.1"
    );
    let log = gw.wait_access_log(1);
    assert_eq!(log[0]["client_ip"], "198.51.100.7");
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let mut conn = Conn::open(gw.addr);
    for i in 0..5 {
        let r = conn.get(&format!("/k/{i}")).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["uri"], format!("/k/{i}"));
    }
}
