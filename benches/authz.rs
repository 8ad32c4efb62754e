//! The cost of a route's authorization rules per request: scopes and roles
//! (list lookups) and a CEL policy evaluated against a JWT-like identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use portcullis::auth::{AuthMethod, Identity};
use portcullis::authz::policy::{Policy, RequestView};
use portcullis::authz::RouteAuthz;

fn identity() -> Identity {
    let claims = serde_json::json!({
        "iss": "https://demo.portcullis.local/", "aud": "demo-api", "sub": "bench",
        "azp": "demo-cli", "scope": "bench orders:read", "tenant": "acme",
        "realm_access": {"roles": ["demo"]}, "iat": 1_700_000_000u64, "exp": 1_900_000_000u64,
    });
    Identity {
        method: AuthMethod::Jwt,
        provider: "bench".into(),
        subject: "bench".into(),
        consumer: Some("demo-cli".into()),
        scopes: vec!["bench".into(), "orders:read".into()],
        roles: vec!["demo".into()],
        claims: claims.as_object().cloned().unwrap_or_default(),
        forwarded: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let id = identity();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "127.0.0.1:8080".parse().unwrap());
    headers.insert("x-tenant-id", "acme".parse().unwrap());
    headers.insert("authorization", "Bearer xxxxxxxx".parse().unwrap());
    let view = RequestView {
        method: "GET",
        path: "/authz/",
        host: Some("127.0.0.1:8080"),
        headers: &headers,
        query: None,
        client_ip: Some("127.0.0.1".parse().unwrap()),
    };
    let rules = RouteAuthz {
        require_scopes: vec!["bench".into()],
        allow_roles: vec!["demo".into()],
        ..Default::default()
    };
    c.bench_function("authz/scopes+roles", |b| {
        b.iter(|| {
            black_box(rules.missing_scope(Some(black_box(&id))));
            black_box(rules.role_allowed(Some(black_box(&id))))
        })
    });
    let cases = [
        ("true", "true"),
        ("eq", "1 == 1"),
        (
            "identity",
            r#"identity.subject == "bench" && "demo" in identity.roles"#,
        ),
        ("claims", r#"claims.azp == "demo-cli""#),
        ("request", r#"request.method == "GET""#),
        (
            "tenant",
            r#"claims.tenant == request.headers["x-tenant-id"]"#,
        ),
        (
            "bench_route",
            r#"identity.subject == "bench" && request.method == "GET" && claims.azp == "demo-cli""#,
        ),
    ];
    for (name, source) in cases {
        let policy = Arc::new(Policy::compile(source).unwrap());
        assert_eq!(policy.allows(Some(&id), &view), Ok(true));
        c.bench_function(&format!("authz/cel/{name}"), |b| {
            b.iter(|| black_box(policy.allows(Some(black_box(&id)), black_box(&view))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
