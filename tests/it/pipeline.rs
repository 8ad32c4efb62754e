//! The request pipeline in process (`portcullis::testkit`): requests given
//! as bytes over an in-memory stream, the verdict and the outcome events
//! read directly. Beside the black-box tests, these pin down which stage
//! answers and what it records, without sockets or timing.

use std::net::IpAddr;

use portcullis::observe::outcome::Event;
use portcullis::testkit::{Decided, Pipeline};

const CONFIG: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:1"

[log]
access_log = "off"

[protection]
deny_cidrs = ["192.0.2.0/24"]

[upstreams.app]
targets = ["127.0.0.1:9"]

[auth.corp]
kind = "jwt"
issuer = "https://idp.example.com/"
audiences = ["api"]
jwks_uri = "http://127.0.0.1:9/jwks"

[[routes]]
name = "public"
path_prefix = "/pub"
public = true
upstream = "app"

[[routes]]
name = "hello"
path = "/hello"
methods = ["GET"]
public = true
respond = { status = 200, body = "hi" }

[[routes]]
name = "office"
path_prefix = "/office"
public = true
upstream = "app"
allow_cidrs = ["10.0.0.0/8"]

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["corp"]
upstream = "app"

[[routes]]
name = "limited"
path_prefix = "/limited"
public = true
upstream = "app"
rate_limit = { per = "route", requests = 1, window_seconds = 60 }

[[routes]]
name = "browser"
path_prefix = "/browser"
public = true
upstream = "app"
cors = { origins = ["https://app.example.com"], methods = ["GET", "POST"] }
"#;

const LOCAL: &str = "127.0.0.1";

fn pipeline() -> Pipeline {
    Pipeline::new(CONFIG).unwrap_or_else(|e| panic!("{e}"))
}

fn run(p: &Pipeline, raw: &str, peer: &str) -> Decided {
    let peer: IpAddr = peer.parse().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(p.run(raw.as_bytes(), peer))
        .expect("Pingora read the head")
}

fn get(p: &Pipeline, target: &str) -> Decided {
    run(
        p,
        &format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"),
        LOCAL,
    )
}

fn header<'a>(d: &'a Decided, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_public_route_continues_with_the_canonical_target() {
    let p = pipeline();
    let d = get(&p, "/pub/a/../b/%7euser?x=1");
    assert_eq!(d.status, None, "{d:?}");
    assert_eq!(d.route.as_deref(), Some("public"));
    assert_eq!(d.target, "/pub/b/~user?x=1");
    assert!(d.events.is_empty());
}

#[test]
fn routing_refusals_come_from_the_route_table() {
    let p = pipeline();
    let d = get(&p, "/nowhere");
    assert_eq!((d.status, d.error), (Some(404), Some("no_route")));
    let d = run(
        &p,
        "POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        LOCAL,
    );
    assert_eq!((d.status, d.error), (Some(405), Some("method_not_allowed")));
    assert_eq!(header(&d, "allow"), Some("GET, HEAD"));
    let d = get(&p, "/pub;jsessionid=1/x");
    assert_eq!((d.status, d.error), (Some(400), Some("bad_request")));
}

#[test]
fn a_respond_route_is_answered_directly() {
    let p = pipeline();
    let d = get(&p, "/hello");
    assert_eq!(d.status, Some(200));
    assert_eq!(d.route.as_deref(), Some("hello"));
}

#[test]
fn network_rules_run_first_and_record_the_rule() {
    let p = pipeline();
    // The global deny list, before the request is even routed.
    let d = run(&p, "GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n", "192.0.2.7");
    assert_eq!((d.status, d.error), (Some(403), Some("forbidden")));
    assert_eq!(d.route, None);
    assert_eq!(d.events, [Event::AuthzDenied { rule: "cidr" }]);
    // A route's allow list.
    let d = get(&p, "/office/x");
    assert_eq!((d.status, d.error), (Some(403), Some("forbidden")));
    assert_eq!(d.events, [Event::AuthzDenied { rule: "cidr" }]);
    let d = run(&p, "GET /office/x HTTP/1.1\r\nHost: a\r\n\r\n", "10.1.2.3");
    assert_eq!(d.status, None);
}

#[test]
fn a_missing_credential_is_challenged_and_counted() {
    let p = pipeline();
    let d = get(&p, "/orders/1");
    assert_eq!(
        (d.status, d.error),
        (Some(401), Some("missing_credentials"))
    );
    assert_eq!(
        header(&d, "www-authenticate"),
        Some(r#"Bearer realm="portcullis""#)
    );
    assert_eq!(
        d.events,
        [Event::AuthFailure {
            provider: "corp".into(),
            reason: "missing",
            subject: None,
        }]
    );
    // A token while the provider has no keys (its JWKS URL answers
    // nothing): the provider is unavailable, fail closed.
    let d = run(
        &p,
        "GET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer not-a-jwt\r\n\r\n",
        LOCAL,
    );
    assert_eq!((d.status, d.error), (Some(503), Some("auth_unavailable")));
    assert!(
        matches!(&d.events[..], [Event::AuthFailure { reason, .. }] if *reason != "missing"),
        "{:?}",
        d.events
    );
}

#[test]
fn the_rate_limit_refuses_the_second_request_and_records_it() {
    let p = pipeline();
    assert_eq!(get(&p, "/limited/x").status, None);
    let d = get(&p, "/limited/x");
    assert_eq!((d.status, d.error), (Some(429), Some("rate_limited")));
    assert!(header(&d, "retry-after").is_some());
    assert_eq!(d.events, [Event::RateLimited]);
}

#[test]
fn a_cors_preflight_is_answered_without_going_upstream() {
    let p = pipeline();
    let preflight = |origin: &str| {
        run(
            &p,
            &format!(
                "OPTIONS /browser/x HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\r\n"
            ),
            LOCAL,
        )
    };
    let d = preflight("https://app.example.com");
    assert_eq!(d.status, Some(204));
    assert_eq!(
        header(&d, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let d = preflight("https://evil.example");
    assert_eq!((d.status, d.error), (Some(403), Some("forbidden")));
    // `OPTIONS *` is the gateway's own.
    let d = run(&p, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", LOCAL);
    assert_eq!(d.status, Some(204));
}

#[test]
fn the_canonical_step_refuses_before_any_route_is_read() {
    let p = pipeline();
    let d = run(&p, "GET /pub/x HTTP/1.1\r\n\r\n", LOCAL);
    assert_eq!((d.status, d.error), (Some(400), Some("bad_request")));
    assert_eq!(d.route, None);
    let d = run(
        &p,
        "GET /pub/x HTTP/1.1\r\nHost: a\r\nX_Auth_Subject: root\r\n\r\n",
        LOCAL,
    );
    assert_eq!(d.status, None, "dropped, not refused, by default");
}
