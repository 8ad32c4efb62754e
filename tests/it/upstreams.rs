//! Upstream behaviour through the real binary: balancing, health checks,
//! consistent hashing, retries, timeouts and the error statuses.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::client::{get, request};
use common::gateway::{free_addr, Gateway};
use common::upstream::Upstream;
use common::wait_until;

fn route(upstream_block: &str) -> String {
    format!(
        "{upstream_block}\n[[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n"
    )
}

fn servers(responses: &[common::client::Response]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in responses {
        assert_eq!(r.status, 200, "{}", r.body_str());
        *out.entry(r.json()["server"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}

#[test]
fn round_robin_spreads_evenly_and_weights_count() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{}\", \"{}\"]\n",
        a.addr(),
        b.addr()
    )));
    let got = servers(&(0..40).map(|_| get(gw.addr, "/")).collect::<Vec<_>>());
    assert_eq!(got["a"], 20);
    assert_eq!(got["b"], 20);
    drop(gw);

    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [{{ address = \"{}\", weight = 3 }}, \"{}\"]\n",
        a.addr(),
        b.addr()
    )));
    let got = servers(&(0..40).map(|_| get(gw.addr, "/")).collect::<Vec<_>>());
    assert_eq!(got["a"], 30, "{got:?}");
    assert_eq!(got["b"], 10, "{got:?}");
}

#[test]
fn random_balancing_uses_every_target() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{}\", \"{}\"]\nbalance = \"random\"\n",
        a.addr(),
        b.addr()
    )));
    let got = servers(&(0..60).map(|_| get(gw.addr, "/")).collect::<Vec<_>>());
    assert!(got.get("a").copied().unwrap_or(0) > 5, "{got:?}");
    assert!(got.get("b").copied().unwrap_or(0) > 5, "{got:?}");
}

#[test]
fn consistent_hash_on_a_header_is_stable() {
    let ups: Vec<Upstream> = (0..4).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let targets: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr())).collect();
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [{}]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user\"\n",
        targets.join(", ")
    )));
    let mut owners = HashMap::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first =
            request(gw.addr, "GET", "/", &[("x-user", &user)], None).json()["server"].clone();
        for _ in 0..3 {
            let again =
                request(gw.addr, "GET", "/", &[("x-user", &user)], None).json()["server"].clone();
            assert_eq!(first, again, "{user} moved");
        }
        owners.insert(user, first);
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        distinct.len() >= 2,
        "20 users all on one target: {owners:?}"
    );
}

#[test]
fn dead_target_is_ejected_by_the_health_check() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{}\", \"{}\"]\nretries = 0\nconnect_timeout_ms = 200\n\
         health_check = {{ kind = \"http\", path = \"/healthz\", interval_ms = 100, timeout_ms = 100, unhealthy_threshold = 2, healthy_threshold = 1 }}\n",
        a.addr(),
        b.addr()
    )));
    assert_eq!(get(gw.addr, "/").status, 200);
    b.stop();
    // Detection window: two failed checks 100 ms apart.
    let event = gw
        .wait_security_event("upstream_unhealthy")
        .expect("no upstream_unhealthy event");
    assert_eq!(event["upstream"], "app");
    assert_eq!(event["target"], b.addr().to_string());
    // After detection not a single request fails.
    for _ in 0..50 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.json()["server"], "a");
    }
    // A failing /healthz (non-2xx) ejects too; all down is 503.
    a.set_health_status(500);
    assert!(wait_until(Duration::from_secs(5), || get(gw.addr, "/")
        .status
        == 503));
    let r = get(gw.addr, "/");
    assert_eq!(r.json()["error"], "no_healthy_upstream");
    // Recovery.
    a.set_health_status(204);
    assert!(wait_until(Duration::from_secs(5), || get(gw.addr, "/")
        .status
        == 200));
    assert!(gw.wait_security_event("upstream_healthy").is_some());
}

#[test]
fn tcp_health_check_ejects_a_closed_port() {
    let a = Upstream::start("a");
    let dead = free_addr();
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{}\", \"{dead}\"]\nretries = 0\n\
         health_check = {{ kind = \"tcp\", interval_ms = 100, timeout_ms = 100, unhealthy_threshold = 1 }}\n",
        a.addr()
    )));
    assert!(gw.wait_security_event("upstream_unhealthy").is_some());
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/").status, 200);
    }
}

#[test]
fn connect_failure_is_retried_on_another_target() {
    let a = Upstream::start("a");
    let dead = free_addr();
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{dead}\", \"{}\"]\nretries = 1\n",
        a.addr()
    )));
    // No health check: every other pick is the dead target, and the retry
    // saves each of them.
    for _ in 0..10 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    assert_eq!(a.hits(), 10);

    let gw0 = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{dead}\", \"{}\"]\nretries = 0\n",
        a.addr()
    )));
    let statuses: Vec<u16> = (0..10).map(|_| get(gw0.addr, "/").status).collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    let r = (0..10)
        .map(|_| get(gw0.addr, "/"))
        .find(|r| r.status == 502)
        .unwrap();
    assert_eq!(r.json()["error"], "bad_gateway");
}

#[test]
fn requests_that_reached_the_upstream_are_not_retried() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{}\", \"{}\"]\nretries = 3\nread_timeout_ms = 300\n",
        a.addr(),
        b.addr()
    )));
    let started = Instant::now();
    let r = get(gw.addr, "/slow?sleep_ms=2000");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(1900));
    // Exactly one upstream saw it: a timeout after sending is never retried.
    assert!(wait_until(Duration::from_secs(3), || a.hits() + b.hits() >= 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.hits() + b.hits(), 1);
}

#[test]
fn connect_timeout_is_a_504() {
    // A non-routable address from TEST-NET-1 would leave the machine; use a
    // listening socket whose backlog is full instead: a bound listener that
    // never accepts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{addr}\"]\nretries = 0\nconnect_timeout_ms = 200\nread_timeout_ms = 300\n"
    )));
    let r = get(gw.addr, "/");
    // The kernel completes the handshake for the backlog; the request then
    // times out waiting for an answer.
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    drop(listener);
}

#[test]
fn upstream_error_statuses_pass_through() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&route(&format!(
        "[upstreams.app]\ntargets = [\"{}\"]\n",
        a.addr()
    )));
    let r = get(gw.addr, "/x?status=503");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["server"],
        "a",
        "an upstream's own 503 is not rewritten"
    );
    assert!(r.header("x-request-id").is_some());
}
