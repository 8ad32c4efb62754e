//! Rate limits and the failed-auth lockout against the real binary: bursts
//! and 429s with their headers, per consumer / client IP / header, two
//! gateways sharing one real Redis, Redis killed under each `on_error`, and
//! lockout with unlock, locally and shared through Redis.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use common::assert_error;
use common::client::{request, Response};
use common::gateway::Gateway;
use common::jwt::{claims, jwks, jwks_file_provider, TestKey};
use common::redis::RedisServer;
use common::upstream::Upstream;
use common::wait_until;

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders";
/// Bound for events and recoveries that depend on background work.
const WAIT: Duration = Duration::from_secs(10);

fn body(up: &Upstream, sections: &str, routes: &str) -> String {
    format!(
        "{sections}\n[upstreams.app]\ntargets = [\"{}\"]\n{}\n{routes}",
        up.addr(),
        jwks_file_provider("corp", "")
    )
}

pub(crate) fn start(key: &TestKey, up: &Upstream, sections: &str, routes: &str) -> Gateway {
    Gateway::start_with_files(
        &body(up, sections, routes),
        &[("jwks.json", jwks(&[key]).as_str())],
    )
}

/// A route `name` at `/NAME` with `extra` keys.
pub(crate) fn route(name: &str, auth: bool, extra: &str) -> String {
    let access = if auth {
        "auth = [\"corp\"]"
    } else {
        "public = true"
    };
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\n{access}\nupstream = \"app\"\n{extra}\n"
    )
}

pub(crate) fn limit(per: &str, requests: u64, window: u64, burst: u64) -> String {
    format!(
        "rate_limit = {{ per = \"{per}\", requests = {requests}, window_seconds = {window}, burst = {burst} }}"
    )
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, None)
}

fn bearer(key: &TestKey, sub: &str) -> String {
    let mut c = claims(ISS, AUD, sub, 300);
    c["azp"] = json!(format!("app-{sub}"));
    format!("Bearer {}", key.sign(c))
}

fn header_u64(r: &Response, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer: {:?}", r.header(name)))
}

/// How many of `n` requests to `path` got 200 (the others must be 429).
pub(crate) fn count_ok(addr: SocketAddr, path: &str, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            let r = get(addr, path, &[]);
            assert!(
                r.status == 200 || r.status == 429,
                "unexpected {} {}",
                r.status,
                r.body_str()
            );
            r.status == 200
        })
        .count()
}

fn burst_then_429_with_ratelimit_headers() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let admin = common::free_addr();
    let gw = start(
        &key,
        &up,
        &format!("[admin]\nlisten = \"{admin}\"\n"),
        &route("api", false, &limit("client_ip", 1, 60, 3)),
    );
    for left in [2, 1, 0] {
        let r = get(gw.addr, "/api/x", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(header_u64(&r, "ratelimit-limit"), 3);
        assert_eq!(header_u64(&r, "ratelimit-remaining"), left);
        // Refilling one token a minute: full again in (3 - left) minutes.
        let reset = header_u64(&r, "ratelimit-reset");
        assert!(
            reset > (2 - left) * 60 && reset <= (3 - left) * 60,
            "reset {reset}"
        );
    }
    let r = get(gw.addr, "/api/x", &[]);
    assert_error(&r, 429, "rate_limited");
    assert_eq!(header_u64(&r, "ratelimit-limit"), 3);
    assert_eq!(header_u64(&r, "ratelimit-remaining"), 0);
    let retry = header_u64(&r, "retry-after");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(up.hits(), 3);
    let ev = gw
        .wait_security_event("rate_limited")
        .expect("rate_limited event");
    assert_eq!(ev["route"], "api");
    let ok = wait_until(WAIT, || {
        request(admin, "GET", "/metrics", &[], None)
            .body_str()
            .contains("portcullis_rate_limited_total{route=\"api\"} 1")
    });
    assert!(ok, "rate_limited metric");
}

fn a_second_consumer_is_unaffected() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let gw = start(
        &key,
        &up,
        "",
        &route("api", true, &limit("consumer", 1, 60, 2)),
    );
    let alice = bearer(&key, "alice");
    let bob = bearer(&key, "bob");
    let as_ = |who: &str| get(gw.addr, "/api/x", &[("authorization", who)]).status;
    assert_eq!([as_(&alice), as_(&alice), as_(&alice)], [200, 200, 429]);
    // A fresh token of the same consumer shares the bucket.
    assert_eq!(as_(&bearer(&key, "alice")), 429);
    assert_eq!([as_(&bob), as_(&bob), as_(&bob)], [200, 200, 429]);
}

fn limits_per_header_and_per_route() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let routes = route("tenant", false, &limit("header:X-Tenant", 1, 60, 2))
        + &route("shared", false, &limit("route", 1, 60, 2));
    let gw = start(&key, &up, "", &routes);
    let t = |tenant: &str| get(gw.addr, "/tenant", &[("x-tenant", tenant)]).status;
    assert_eq!([t("a"), t("a"), t("a")], [200, 200, 429]);
    assert_eq!([t("b"), t("b"), t("b")], [200, 200, 429]);
    // Requests without the header share one bucket.
    assert_eq!(count_ok(gw.addr, "/tenant", 3), 2);
    assert_eq!(count_ok(gw.addr, "/shared", 3), 2);
    // Other routes are not limited and carry no RateLimit headers.
    let r = get(gw.addr, "/nolimit", &[]);
    assert!(r.header("ratelimit-limit").is_none());
}

#[test]
fn two_gateways_sharing_redis_enforce_one_limit() {
    let redis = RedisServer::start();
    two_gateways_enforce_one_limit(&format!(
        "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\ntimeout_ms = 1000\n",
        redis.url()
    ));
}

/// 60 requests alternating between two gateways of one shared
/// `[rate_limit_store]` (a TOML table, tests/it/redis_fleet.rs gives a
/// cluster and TLS): 25 pass.
pub(crate) fn two_gateways_enforce_one_limit(store: &str) {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let routes = route("api", false, &limit("route", 1, 3600, 25));
    let a = start(&key, &up, store, &routes);
    let b = start(&key, &up, store, &routes);
    let mut ok = 0;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = get(gw.addr, "/api", &[]);
        assert!(r.status == 200 || r.status == 429, "{}", r.body_str());
        if r.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 25, "one combined bucket of 25");
}

/// A gateway on `redis` with `on_error`, its route `/NAME` limited to a
/// burst of 3 per route.
fn redis_gateway(
    key: &TestKey,
    up: &Upstream,
    redis: &RedisServer,
    name: &str,
    on_error: &str,
) -> Gateway {
    let store = format!(
        "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\non_error = \"{on_error}\"\ntimeout_ms = 500\n",
        redis.url()
    );
    start(
        key,
        up,
        &store,
        &route(name, false, &limit("route", 1, 3600, 3)),
    )
}

#[test]
fn redis_outage_follows_on_error_and_recovers() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let mut redis = RedisServer::start();
    let local = redis_gateway(&key, &up, &redis, "local", "local");
    let allow = redis_gateway(&key, &up, &redis, "allow", "allow");
    let deny = redis_gateway(&key, &up, &redis, "deny", "deny");
    // Healthy: the shared bucket.
    assert_eq!(count_ok(deny.addr, "/deny", 2), 2);
    redis.stop();
    // local: per-instance buckets, fresh; allow: everything; deny: nothing.
    assert_eq!(count_ok(local.addr, "/local", 5), 3);
    assert_eq!(count_ok(allow.addr, "/allow", 6), 6);
    assert_eq!(count_ok(deny.addr, "/deny", 2), 0);
    for gw in [&local, &allow, &deny] {
        assert!(gw
            .wait_security_event("rate_limit_store_unavailable")
            .is_some());
    }
    redis.restart();
    // The empty Redis gives the deny gateway a full shared bucket again,
    // once a probe has seen it back.
    recovered_after_one_outage(&deny, [&local, &allow, &deny]);
}

/// The `deny` gateway serves `/deny` again once its store is back and says
/// so; each gateway reported the outage exactly once.
pub(crate) fn recovered_after_one_outage(deny: &Gateway, all: [&Gateway; 3]) {
    let back = wait_until(WAIT, || get(deny.addr, "/deny", &[]).status == 200);
    assert!(back, "the deny gateway recovered");
    assert!(deny
        .wait_security_event("rate_limit_store_recovered")
        .is_some());
    for gw in all {
        assert_eq!(
            gw.security_events("rate_limit_store_unavailable").len(),
            1,
            "one event per outage"
        );
    }
}

fn lockout_section(threshold: u64, block: u64) -> String {
    format!(
        "[protection.failed_auth]\nthreshold = {threshold}\nwindow_seconds = 60\nblock_seconds = {block}\n"
    )
}

fn failed_credentials_lock_the_client_out_until_the_block_ends() {
    let key = TestKey::rsa("k1");
    let other = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let routes = route("api", true, "") + &route("open", false, "");
    let gw = start(&key, &up, &lockout_section(3, 2), &routes);
    let good = bearer(&key, "alice");
    let forged = bearer(&other, "alice");
    // Missing credentials do not count.
    for _ in 0..5 {
        assert_error(&get(gw.addr, "/api", &[]), 401, "missing_credentials");
    }
    for _ in 0..3 {
        assert_error(
            &get(gw.addr, "/api", &[("authorization", &forged)]),
            401,
            "invalid_token",
        );
    }
    let r = get(gw.addr, "/api", &[("authorization", &good)]);
    assert_error(&r, 429, "temporarily_blocked");
    let retry = header_u64(&r, "retry-after");
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    // Routes without authentication are not what is guarded.
    assert_eq!(get(gw.addr, "/open", &[]).status, 200);
    let unlocked = wait_until(WAIT, || {
        get(gw.addr, "/api", &[("authorization", &good)]).status == 200
    });
    assert!(unlocked, "unblocked after block_seconds");
    let events = gw.wait_security_events("brute_force_lockout", 1);
    assert_eq!(events.len(), 1, "one event per block");
    assert_eq!(events[0]["client_ip"], "127.0.0.1");
    assert_eq!(up.hits(), 2);
}

#[test]
fn lockouts_are_shared_through_redis() {
    let key = TestKey::rsa("k1");
    let other = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let sections = format!(
        "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\ntimeout_ms = 1000\n{}",
        redis.url(),
        lockout_section(2, 60)
    );
    let a = start(&key, &up, &sections, &route("api", true, ""));
    let b = start(&key, &up, &sections, &route("api", true, ""));
    let forged = bearer(&other, "mallory");
    assert_error(
        &get(a.addr, "/api", &[("authorization", &forged)]),
        401,
        "invalid_token",
    );
    assert_error(
        &get(b.addr, "/api", &[("authorization", &forged)]),
        401,
        "invalid_token",
    );
    let good = bearer(&key, "alice");
    assert_error(
        &get(a.addr, "/api", &[("authorization", &good)]),
        429,
        "temporarily_blocked",
    );
    assert_error(
        &get(b.addr, "/api", &[("authorization", &good)]),
        429,
        "temporarily_blocked",
    );
    let total = a.security_events("brute_force_lockout").len()
        + b.wait_security_events("brute_force_lockout", 1).len();
    assert_eq!(total, 1, "one block, one event");
}

fn reload_keeps_buckets_of_unchanged_limits() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let routes = route("api", false, &limit("route", 1, 3600, 2));
    let gw = start(&key, &up, "", &routes);
    assert_eq!(count_ok(gw.addr, "/api", 3), 2);
    // Another route added: the unchanged limit keeps its empty bucket.
    gw.write_config_body(&body(
        &up,
        "",
        &(routes.clone() + &route("other", false, "")),
    ));
    gw.signal("HUP");
    assert!(gw.wait_security_event("config_reloaded").is_some());
    assert_eq!(count_ok(gw.addr, "/api", 2), 0);
    // A changed limit starts with a full bucket.
    let changed = route("api", false, &limit("route", 1, 3600, 4));
    gw.write_config_body(&body(&up, "", &changed));
    gw.signal("HUP");
    assert_eq!(gw.wait_security_events("config_reloaded", 2).len(), 2);
    assert_eq!(count_ok(gw.addr, "/api", 5), 4);
}

// Each of these runs twice, over HTTP/1.1 and over h2c (CONTRACT §9).
crate::on_http1_and_h2c!(
    burst_then_429_with_ratelimit_headers,
    a_second_consumer_is_unaffected,
    limits_per_header_and_per_route,
    failed_credentials_lock_the_client_out_until_the_block_ends,
    reload_keeps_buckets_of_unchanged_limits,
);
