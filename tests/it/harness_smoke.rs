//! Smoke tests for the parts of the test harness that do not need the
//! gateway: the upstream and the raw client.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{build_request, get, request, send_raw, wait_until, Conn, Upstream};

fn connect_refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

#[test]
fn upstream_echoes_request_exactly() {
    let up = Upstream::start("alpha");
    let resp = get(up.addr(), "/a/../b?x=1");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    let echo = resp.json();
    assert_eq!(echo["server"], "alpha");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["uri"], "/a/../b?x=1");
    assert_eq!(echo["headers"]["host"], "localhost");
    assert_eq!(echo["headers"]["connection"], "close");
    assert_eq!(echo["body_len"], 0);

    // Encoded dot segments and odd targets pass through untouched.
    let echo = get(up.addr(), "/x/%2e%2e/y/..;z?q=%41&r").json();
    assert_eq!(echo["uri"], "/x/%2e%2e/y/..;z?q=%41&r");

    // Repeated headers are joined, names lower-cased, body length counted.
    let raw = b"POST /submit HTTP/1.1\r\nHost: example.test\r\nX-Multi: a\r\nx-multi: b\r\n\
                X-Tenant-ID: t1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let echo = send_raw(up.addr(), raw).unwrap().json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/submit");
    assert_eq!(echo["headers"]["host"], "example.test");
    assert_eq!(echo["headers"]["x-multi"], "a, b");
    assert_eq!(echo["headers"]["x-tenant-id"], "t1");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["body"], "hello");

    // request() adds Host and Content-Length, keeps a given Host.
    let resp = request(
        up.addr(),
        "PUT",
        "/put",
        &[("host", "api.example.com"), ("x-api-key", "k")],
        Some(b"{\"a\":1}"),
    );
    let echo = resp.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["headers"]["host"], "api.example.com");
    assert_eq!(echo["headers"]["content-length"], "7");
    assert_eq!(echo["headers"]["x-api-key"], "k");

    assert_eq!(up.hits(), 4);
    let recorded = up.requests();
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0]["uri"], "/a/../b?x=1");
    assert_eq!(up.last_request().unwrap()["uri"], "/put");
}

#[test]
fn keep_alive_connection_carries_several_requests() {
    let up = Upstream::start("ka");
    let mut conn = Conn::open(up.addr());
    let local = conn.local_addr().unwrap();
    for i in 0..3 {
        let req = build_request(
            "GET",
            &format!("/n/{i}"),
            &[("x-i", &i.to_string())],
            None,
            false,
        );
        let resp = conn.send(&req).unwrap();
        assert_eq!(resp.status, 200);
        let echo = resp.json();
        assert_eq!(echo["uri"], format!("/n/{i}"));
        assert_eq!(echo["headers"]["x-i"], i.to_string());
    }
    // A HEAD answer has no body; the connection stays usable afterwards.
    let resp = conn
        .send(b"HEAD /h HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert!(resp.header("content-length").is_some());
    let resp = conn.get("/after-head").unwrap();
    assert_eq!(resp.json()["uri"], "/after-head");
    let resp = conn.request("POST", "/post", &[], Some(b"xyz")).unwrap();
    assert_eq!(resp.json()["body_len"], 3);

    assert_eq!(conn.local_addr().unwrap(), local, "same socket throughout");
    assert!(!conn.is_closed());
    assert_eq!(up.hits(), 6);
}

#[test]
fn sleep_and_status_query_parameters() {
    let up = Upstream::start("params");
    let started = Instant::now();
    let resp = get(up.addr(), "/slow?a=1&sleep_ms=300&b=2");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["uri"], "/slow?a=1&sleep_ms=300&b=2");

    let resp = get(up.addr(), "/x?status=503");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["uri"], "/x?status=503");

    let resp = get(up.addr(), "/x?y=z&status=404");
    assert_eq!(resp.status, 404);
    let resp = get(up.addr(), "/x?status=abc");
    assert_eq!(resp.status, 200);
}

#[test]
fn health_status_is_settable_and_not_counted() {
    let up = Upstream::start("health");
    let resp = get(up.addr(), "/healthz");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "ok");
    up.set_health_status(500);
    let resp = get(up.addr(), "/healthz");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.body_str(), "ok");
    up.set_health_status(200);
    assert_eq!(get(up.addr(), "/healthz").status, 200);
    assert_eq!(up.hits(), 0);
    assert!(up.requests().is_empty());

    get(up.addr(), "/counted");
    assert_eq!(up.hits(), 1);
    up.reset();
    assert_eq!(up.hits(), 0);
    assert!(up.last_request().is_none());
}

#[test]
fn request_records_are_capped() {
    let up = Upstream::start("cap");
    let mut conn = Conn::open(up.addr());
    for i in 0..105 {
        assert_eq!(conn.get(&format!("/r/{i}")).unwrap().status, 200);
    }
    assert_eq!(up.hits(), 105);
    let recorded = up.requests();
    assert_eq!(recorded.len(), 100);
    assert_eq!(recorded[0]["uri"], "/r/5");
    assert_eq!(recorded[99]["uri"], "/r/104");
}

#[test]
fn stop_refuses_and_closes_then_restart_serves_again() {
    let up = Upstream::start("stopper");
    let addr = up.addr();
    let mut idle = Conn::open(addr);
    assert_eq!(idle.get("/before").unwrap().status, 200);

    up.stop();
    assert!(up.is_stopped());
    assert!(
        wait_until(Duration::from_secs(5), || connect_refused(addr)),
        "connections to a stopped upstream must be refused"
    );
    assert!(
        wait_until(Duration::from_secs(5), || idle.is_closed()),
        "existing connections must be closed"
    );
    assert!(idle.get("/after").is_err());
    up.stop(); // idempotent

    up.restart().unwrap();
    assert_eq!(get(addr, "/again").json()["uri"], "/again");
    assert_eq!(up.hits(), 2);

    drop(up);
    assert!(wait_until(Duration::from_secs(5), || connect_refused(addr)));

    // A new upstream can take over the same address.
    let again = Upstream::start_on("second", addr).unwrap();
    assert_eq!(get(addr, "/").json()["server"], "second");
    drop(again);
}

/// Serves one canned response on a fresh port and returns the address.
fn canned(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(response);
    });
    addr
}

#[test]
fn client_parses_chunked_interim_and_close_delimited_bodies() {
    let addr = canned(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    );
    let resp = send_raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-a"), Some("1"));
    assert_eq!(resp.body_str(), "hello world");

    let addr = canned(b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nuntil close");
    let resp = send_raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.body_str(), "until close");

    let addr = canned(b"HTTP/1.1 204 No Content\r\nX-B: 2\r\nX-B: 3\r\n\r\n");
    let resp = send_raw(addr, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header_all("x-b"), vec!["2", "3"]);
    assert!(resp.body.is_empty());

    // A peer that closes without answering is an error, not a response.
    let addr = canned(b"");
    let err = send_raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn wait_until_is_bounded() {
    let started = Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || false));
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(1), || {
        n += 1;
        n >= 3
    }));
    let a = common::free_port();
    let b = common::free_port();
    assert_ne!(a, b);
}
