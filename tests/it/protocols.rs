//! HTTP/2 and gRPC through the real binary (CONTRACT §9): h2c by prior
//! knowledge on a plaintext listener that asks for it, gRPC refusals as
//! Trailers-Only responses with the §9 status mapping, a gRPC call to an
//! HTTP/1 upstream refused as UNAVAILABLE, and a gRPC call through an h2c
//! upstream with its trailers intact. The client and the gRPC upstream are
//! the `h2` crate, the HTTP/2 implementation under hyper and tonic.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;

use crate::common;
use common::client::request;
use common::gateway::{free_addr, Gateway};
use common::h2_upstream::H2Upstream;
use common::h2c::{runtime, H2Response, H2_TIMEOUT};
use common::upstream::Upstream;

/// One request over a fresh h2c connection to `api.example.com`.
fn h2c(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> H2Response {
    common::h2c::send(addr, "api.example.com", method, path, headers, None)
}

/// A second, plaintext listener with `http2 = true`, and the routes.
fn config(h2c_listener: SocketAddr, routes: &str) -> String {
    format!("[[listeners]]\nname = \"h2c\"\nlisten = \"{h2c_listener}\"\nhttp2 = true\n\n{routes}")
}

/// A gateway with `routes` and the h2c listener of [`config`], which it
/// returns once it accepts.
fn start(routes: &str, files: &[(&str, &str)]) -> (Gateway, SocketAddr) {
    let listener = free_addr();
    let gw = Gateway::start_with_files(&config(listener, routes), files);
    assert!(common::gateway::wait_for_port(
        listener,
        Duration::from_secs(10)
    ));
    (gw, listener)
}

fn public_route(up: &Upstream) -> String {
    format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\npublic = true\nupstream = \"app\"\n",
        up.addr()
    )
}

#[test]
fn h2c_by_prior_knowledge_where_asked_for() {
    let up = Upstream::start("app");
    let (gw, listener) = start(&public_route(&up), &[]);

    let r = h2c(listener, "GET", "/app/orders?id=7", &[("x-test", "1")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("x-request-id").is_some());
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // `:authority` is the host, and the request goes upstream as HTTP/1.1.
    assert_eq!(seen["uri"], "/app/orders?id=7");
    assert_eq!(seen["headers"]["host"], "api.example.com");
    assert_eq!(seen["headers"]["x-forwarded-host"], "api.example.com");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-test"], "1");

    // HTTP/1.1 still works on the same listener.
    let r = request(listener, "GET", "/app/x", &[], None);
    assert_eq!(r.status, 200);
    // Something that starts like the preface and then is not one is read
    // as HTTP/1, and refused like any malformed head.
    let r = common::send_raw(listener, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    // Auth, routing and refusals apply the same over HTTP/2.
    let r = h2c(listener, "GET", "/nowhere", &[]);
    assert_eq!(r.status, 404);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "no_route");

    // The default listener does not speak h2c: the preface is refused.
    let refused = runtime().block_on(async {
        tokio::time::timeout(H2_TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let (client, conn) = h2::client::handshake(tcp).await.ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut client = client.ready().await.ok()?;
            let req = Request::get("http://api.example.com/app/x")
                .body(())
                .unwrap();
            let (resp, _) = client.send_request(req, true).ok()?;
            resp.await.ok().map(|r| r.status())
        })
        .await
        .expect("timed out")
    });
    assert_eq!(refused, None, "h2c must not be spoken where http2 is off");
    assert_eq!(up.hits(), 2);
}

#[test]
fn grpc_refusals_are_trailers_only_with_grpc_status() {
    let up = Upstream::start("app");
    let routes = format!(
        "[auth.keys]\nkind = \"api_key\"\nkeys_file = \"{{dir}}/keys.toml\"\n\n\
         [upstreams.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"svc\"\npath_prefix = \"/pkg.Service/\"\nmethods = [\"POST\"]\nauth = [\"keys\"]\nupstream = \"app\"\n",
        up.addr()
    );
    let (_gw, listener) = start(&routes, &[("keys.toml", "")]);
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];

    let cases = [
        ("POST", "/pkg.Service/Call", "16", "missing_credentials"),
        ("POST", "/other.Service/Call", "12", "no_route"),
        ("GET", "/pkg.Service/Call", "12", "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let r = h2c(listener, method, path, &grpc);
        assert_eq!(r.status, 200, "{path}: HTTP status of a gRPC refusal");
        assert_eq!(r.header("content-type"), Some("application/grpc"));
        assert_eq!(r.header("grpc-status"), Some(status), "{path}");
        assert_eq!(r.header("grpc-message"), Some(code), "{path}");
        assert!(r.header("x-request-id").is_some());
        assert!(r.body.is_empty(), "Trailers-Only: no body");
        assert!(
            r.trailers.is_none(),
            "Trailers-Only: the headers end the stream"
        );
        assert!(
            r.ended_with_headers,
            "{path}: END_STREAM on the HEADERS frame"
        );
    }
    // The same refusal to a plain client is still the §4 JSON, and so is
    // one to a request that names two content types.
    let r = h2c(listener, "POST", "/pkg.Service/Call", &[]);
    assert_eq!(r.status, 401);
    let two = [
        ("content-type", "application/grpc"),
        ("content-type", "application/json"),
    ];
    let r = h2c(listener, "POST", "/pkg.Service/Call", &two);
    assert_eq!(r.status, 401);
    assert!(r.header("grpc-status").is_none());
    assert_eq!(up.hits(), 0);
}

#[test]
fn grpc_to_an_http1_upstream_is_unavailable() {
    let up = Upstream::start("app");
    let routes = public_route(&up);
    let (_gw, listener) = start(&routes, &[]);
    let r = h2c(
        listener,
        "POST",
        "/app/pkg.Service/Call",
        &[("content-type", "application/grpc+proto")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("grpc-message"), Some("bad_gateway"));
    assert_eq!(up.hits(), 0, "an HTTP/1 upstream would lose the trailers");
}

#[test]
fn grpc_through_an_h2c_upstream_keeps_trailers() {
    let grpc_up = H2Upstream::start();
    let admin = free_addr();
    let routes = format!(
        "[admin]\nlisten = \"{admin}\"\n\n\
         [upstreams.grpc]\ntargets = [\"{}\"]\nprotocol = \"h2c\"\n\n\
         [[routes]]\nname = \"grpc\"\npath_prefix = \"/pkg.Service/\"\npublic = true\nupstream = \"grpc\"\n\n\
         [[routes]]\nname = \"closed\"\npath_prefix = \"/pkg.Closed/\"\npublic = true\nupstream = \"grpc\"\nallow_cidrs = [\"10.0.0.0/8\"]\n",
        grpc_up.addr
    );
    let (_gw, listener) = start(&routes, &[]);
    let r = h2c(
        listener,
        "POST",
        "/pkg.Service/Call",
        &[("content-type", "application/grpc"), ("te", "trailers")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"\0\0\0\0\x02hi");
    let trailers = r.trailers.expect("the upstream's trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("x-trailer").unwrap(), "kept");
    // A refusal of the gateway's own, for the metric below.
    let r = h2c(
        listener,
        "POST",
        "/pkg.Closed/Call",
        &[("content-type", "application/grpc")],
    );
    assert_eq!(r.header("grpc-status"), Some("7"));
    // Calls are counted by their grpc-status, the upstream's from its
    // trailers, the gateway's from its refusal.
    let wanted = [
        "portcullis_grpc_requests_total{grpc_status=\"0\",route=\"grpc\"} 1",
        "portcullis_grpc_requests_total{grpc_status=\"7\",route=\"closed\"} 1",
    ];
    let mut metrics = String::new();
    let counted = common::wait_until(Duration::from_secs(5), || {
        metrics = request(admin, "GET", "/metrics", &[], None).body_str();
        wanted.iter().all(|w| metrics.contains(w))
    });
    assert!(counted, "{metrics}");
    let seen = grpc_up.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("x-request-id").is_some());
    assert_eq!(
        seen[0].headers.get("content-type").unwrap(),
        "application/grpc"
    );
}

#[test]
fn grpc_timeout_is_the_deadline_upstream() {
    let grpc_up = H2Upstream::start();
    let routes = format!(
        "[upstreams.grpc]\ntargets = [\"{}\"]\nprotocol = \"h2c\"\nread_timeout_ms = 10000\n\n\
         [[routes]]\nname = \"grpc\"\npath_prefix = \"/pkg.Service/\"\npublic = true\nupstream = \"grpc\"\n",
        grpc_up.addr
    );
    let (_gw, listener) = start(&routes, &[]);
    let grpc = |timeout: &'static str| {
        [
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", timeout),
        ]
    };
    let started = std::time::Instant::now();
    let r = h2c(listener, "POST", "/pkg.Service/Slow", &grpc("300m"));
    assert_eq!(r.header("grpc-status"), Some("4"), "{:?}", r.headers);
    assert_eq!(r.header("grpc-message"), Some("upstream_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the call's deadline, not the upstream's"
    );
    // A deadline that is not one is ignored: the upstream's limit applies.
    let r = h2c(listener, "POST", "/pkg.Service/Call", &grpc("soon"));
    assert_eq!(r.status, 200);
    assert_eq!(r.trailers.unwrap().get("grpc-status").unwrap(), "0");
}

#[test]
fn http2_is_checked_at_load() {
    let listener = free_addr();
    for (upstream, message) in [
        (
            "protocol = \"http2\"",
            "protocol = \"http2\" negotiates h2 by TLS ALPN",
        ),
        (
            "protocol = \"h2c\"\ntls = true",
            "protocol = \"h2c\" is plaintext HTTP/2",
        ),
        ("protocol = \"spdy\"", "unknown protocol `spdy`"),
    ] {
        let routes = format!(
            "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n{upstream}\n\n[[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n"
        );
        let err = Gateway::try_start(&config(listener, &routes))
            .err()
            .expect("refused");
        assert!(err.contains(message), "{message}: {err}");
    }
}

#[test]
fn http2_requests_get_the_same_canonical_checks() {
    let up = Upstream::start("app");
    let (_gw, listener) = start(&public_route(&up), &[]);
    // A Host header that disagrees with `:authority`.
    let r = h2c(listener, "GET", "/app/x", &[("host", "admin.internal")]);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    // Dot segments and encoded slashes are judged on the canonical path.
    let r = h2c(listener, "GET", "/app/../secret", &[]);
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    let r = h2c(listener, "GET", "/app/%2e%2e/secret", &[]);
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The gateway's own identity headers cannot be sent by the client.
    let r = h2c(
        listener,
        "GET",
        "/app/x",
        &[("x-auth-subject", "admin"), ("x-forwarded-for", "10.0.0.1")],
    );
    assert_eq!(r.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(seen["headers"].get("x-auth-subject").is_none(), "{seen}");
    // As over HTTP/1: an untrusted peer's list is extended, and the client
    // address is the peer.
    assert_eq!(seen["headers"]["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1", "{seen}");
    assert_eq!(up.hits(), 1);
}

#[test]
fn grpc_upstream_failures_are_grpc_statuses() {
    let dead = free_addr();
    let routes = format!(
        "[upstreams.grpc]\ntargets = [\"{dead}\"]\nprotocol = \"h2c\"\nretries = 0\n\n\
         [[routes]]\nname = \"grpc\"\npath_prefix = \"/pkg.Service/\"\npublic = true\nupstream = \"grpc\"\n"
    );
    let (_gw, listener) = start(&routes, &[]);
    let r = h2c(
        listener,
        "POST",
        "/pkg.Service/Call",
        &[("content-type", "application/grpc")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"), "{:?}", r.headers);
    assert_eq!(r.header("grpc-message"), Some("bad_gateway"));
    assert!(r.header("x-request-id").is_some());
    assert!(r.ended_with_headers);
}

#[test]
fn auth_and_rate_limits_hold_over_http2() {
    let up = Upstream::start("app");
    let key = "pc_h2key_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let keys = {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        format!("[[keys]]\nid = \"h2key\"\nconsumer = \"h2-client\"\nhash = \"sha256:{hash}\"\n")
    };
    let routes = format!(
        "[auth.keys]\nkind = \"api_key\"\nkeys_file = \"{{dir}}/keys.toml\"\n\n\
         [upstreams.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nauth = [\"keys\"]\nupstream = \"app\"\n\
         rate_limit = {{ per = \"consumer\", requests = 2, window_seconds = 60, burst = 2 }}\n\n\
         [[routes]]\nname = \"closed\"\npath_prefix = \"/closed\"\npublic = true\nupstream = \"app\"\n\
         allow_cidrs = [\"10.0.0.0/8\"]\n",
        up.addr()
    );
    let (_gw, listener) = start(&routes, &[("keys.toml", &keys)]);
    let json = |r: &H2Response| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();

    let r = h2c(listener, "GET", "/app/x", &[]);
    assert_eq!(
        (r.status, json(&r)["error"].clone()),
        (401, "missing_credentials".into())
    );
    let r = h2c(listener, "GET", "/closed/x", &[]);
    assert_eq!(
        (r.status, json(&r)["error"].clone()),
        (403, "forbidden".into())
    );

    let r = h2c(listener, "GET", "/app/x", &[("x-api-key", key)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("ratelimit-remaining"), Some("1"));
    let seen = json(&r);
    assert_eq!(seen["headers"]["x-auth-consumer"], "h2-client", "{seen}");
    assert!(
        seen["headers"].get("x-api-key").is_none(),
        "the key is not forwarded: {seen}"
    );
    let _ = h2c(listener, "GET", "/app/x", &[("x-api-key", key)]);
    let r = h2c(listener, "GET", "/app/x", &[("x-api-key", key)]);
    assert_eq!(
        (r.status, json(&r)["error"].clone()),
        (429, "rate_limited".into())
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(up.hits(), 2);
}

#[test]
fn http2_cookie_fields_are_joined_and_large_header_lists_get_the_json_431() {
    let up = Upstream::start("app");
    let (_gw, listener) = start(&public_route(&up), &[]);
    let r = h2c(
        listener,
        "GET",
        "/app/x",
        &[("cookie", "a=1"), ("cookie", "b=2")],
    );
    assert_eq!(r.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // One line for the HTTP/1.1 origin (RFC 9113 §8.2.3), not two.
    assert_eq!(seen["headers"]["cookie"], "a=1; b=2", "{seen}");

    // 200 fields of 100 bytes: over `max_header_bytes` as the gateway
    // counts them, refused by the gateway (not by h2) with the §4 JSON.
    let names: Vec<String> = (0..200).map(|i| format!("x-field-{i:03}")).collect();
    let value = "v".repeat(100);
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let r = h2c(listener, "GET", "/app/x", &fields);
    assert_eq!(r.status, 431, "{}", String::from_utf8_lossy(&r.body));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "headers_too_large", "{body}");
    assert!(r.header("x-request-id").is_some());
    assert_eq!(up.hits(), 1);
}
