//! The whole request pipeline on one request, in process: Pingora reading
//! the head from an in-memory stream, the canonical request, routing and
//! every check a route asks for — what a request costs before the upstream
//! is chosen. Rows: a public route, a refusal (no route), a route with
//! network rules, CORS, a rate limit and a CEL policy on a public caller,
//! and a JWT route with its token cached, uncached, and missing (401).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The type of the whole pipeline's future over an in-memory stream is
// deeper than rustc's default query limit.
#![recursion_limit = "256"]

#[allow(dead_code, unreachable_pub)]
#[path = "peers/tokens.rs"]
mod tokens;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::testkit::Pipeline;

const CONFIG: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:1"

[log]
access_log = "off"

[upstreams.app]
targets = ["127.0.0.1:9"]

[[routes]]
name = "public"
path_prefix = "/pub"
public = true
upstream = "app"

[[routes]]
name = "guarded"
path_prefix = "/guarded"
public = true
upstream = "app"
allow_cidrs = ["127.0.0.0/8"]
cors = { origins = ["https://app.example.com"] }
rate_limit = { per = "client_ip", requests = 1000000000, window_seconds = 1 }
policy = 'request.method == "GET" && request.headers["x-tenant"] == "acme"'
"#;

/// A cached and an uncached JWT provider on the same key.
fn jwt_routes(jwks_file: &str) -> String {
    let provider = |name: &str, cache: usize| {
        format!(
            "[auth.{name}]\nkind = \"jwt\"\nissuer = \"{}\"\naudiences = [\"{}\"]\n\
             jwks_file = \"{jwks_file}\"\nalgorithms = [\"RS256\"]\ntoken_cache_entries = {cache}\n\n\
             [[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nauth = [\"{name}\"]\n\
             upstream = \"app\"\n\n",
            tokens::ISSUER,
            tokens::AUDIENCE
        )
    };
    provider("cached", 100_000) + &provider("uncached", 0)
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let creds = tokens::Credentials::create(dir.path(), 1).unwrap();
    let jwks = creds.jwks_file.to_string_lossy().into_owned();
    let p = Pipeline::new(&format!("{CONFIG}\n{}", jwt_routes(&jwks))).unwrap();
    let with_token = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {}\r\n\r\n",
            creds.token
        )
        .into_bytes()
    };
    let (cached, uncached) = (with_token("/cached/x"), with_token("/uncached/x"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rows: [(&str, &[u8], Option<u16>); 6] = [
        (
            "pipeline/public",
            b"GET /pub/orders/17?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n",
            None,
        ),
        (
            "pipeline/no route (404)",
            b"GET /nowhere HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n",
            Some(404),
        ),
        (
            "pipeline/cidr+cors+rate limit+policy",
            b"GET /guarded/orders/17 HTTP/1.1\r\nHost: api.example.com\r\nOrigin: https://app.example.com\r\nX-Tenant: acme\r\nAccept: */*\r\n\r\n",
            None,
        ),
        ("pipeline/jwt (cached)", &cached, None),
        ("pipeline/jwt (uncached, RS256)", &uncached, None),
        (
            "pipeline/jwt missing (401)",
            b"GET /cached/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            Some(401),
        ),
    ];
    for (name, raw, status) in rows {
        let decided = rt.block_on(p.run(raw, peer)).unwrap();
        assert_eq!(decided.status, status, "{name}: {decided:?}");
        c.bench_function(name, |b| {
            b.iter(|| rt.block_on(p.run(black_box(raw), peer)));
        });
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
