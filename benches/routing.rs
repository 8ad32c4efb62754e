//! Routing hot-path benchmarks: the route table must stay well under a
//! microsecond per lookup at 10,000 routes, and normalization of an
//! already-normal path must cost no allocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use portcullis::core::ids::RouteId;
use portcullis::core::matching::{ListenerSet, MethodSet, PathMatch};
use portcullis::core::normalize::normalize_path;
use portcullis::routing::table::*;

const ROUTES: usize = 10_000;

/// Every tenth route is host-specific; routes alternate between exact paths
/// (`/svc{i}/v1/items`) and prefixes (`/svc{i}/v1`), with a few methods mixed
/// in so method filtering is exercised too.
fn build_table() -> RouteTable {
    let get = MethodSet::parse("GET").unwrap_or(MethodSet::ANY);
    let post = MethodSet::parse("POST").unwrap_or(MethodSet::ANY);
    let routes = (0..ROUTES)
        .map(|id| RouteSpec {
            id: RouteId::new(id),
            hosts: if id % 10 == 0 {
                vec![format!("h{id}.example.com")]
            } else {
                Vec::new()
            },
            path: if id % 2 == 0 {
                PathMatch::Exact(format!("/svc{id}/v1/items"))
            } else {
                PathMatch::Prefix(format!("/svc{id}/v1"))
            },
            methods: if id % 3 == 0 { get.union(post) } else { get },
            listeners: ListenerSet::ALL,
            match_headers: Vec::new(),
        })
        .collect();
    RouteTable::new(routes)
}

fn lookups(c: &mut Criterion) {
    let table = build_table();
    let mut group = c.benchmark_group("lookup");
    let cases = [
        ("exact_hit", None, "/svc4242/v1/items"),
        (
            "deep_prefix_hit",
            None,
            "/svc4243/v1/items/42/details/extra",
        ),
        ("miss", None, "/nothing/here/at/all"),
        (
            "host_route",
            Some("h4240.example.com:8443"),
            "/svc4240/v1/items",
        ),
    ];
    for (name, host, path) in cases {
        // A bench that silently measured a miss would prove nothing.
        let expected_hit = name != "miss";
        let answer = table.lookup(host, path, &Method::GET);
        assert_eq!(matches!(answer, Lookup::Found(_)), expected_hit, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| table.lookup(black_box(host), black_box(path), black_box(&Method::GET)))
        });
    }
    group.finish();
}

fn normalization(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_path");
    let cases = [
        ("already_normal", "/api/v1/orders/12345/items"),
        ("dots_and_escapes", "/a/./b/%7euser/../c//d"),
    ];
    for (name, path) in cases {
        group.bench_function(name, |b| b.iter(|| normalize_path(black_box(path))));
    }
    group.finish();
}

criterion_group!(benches, lookups, normalization);
criterion_main!(benches);
