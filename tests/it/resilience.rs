//! Outlier detection and host-name targets (CONTRACT §11) through the real
//! binary: ejection after failures in a row and the return, the ejection
//! cap, events, gauge and `/status`; `localhost:PORT` targets, a name that
//! does not resolve, and `check` validating names offline.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::client::{get, request};
use common::gateway::{check, free_addr, Gateway};
use common::upstream::Upstream;
use common::wait_until;

/// A target that answers every request with one status and closes.
struct Failing {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Failing {
    fn start(status: u16) -> Failing {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.is_empty() {
                    continue;
                }
                h.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status} Failing\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        Failing {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn config(admin: SocketAddr, upstream: &str) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\n\n[upstreams.app]\n{upstream}\n\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n"
    )
}

fn admin_get(admin: SocketAddr, path: &str) -> common::Response {
    request(admin, "GET", path, &[], None)
}

fn status(admin: SocketAddr) -> serde_json::Value {
    assert!(common::gateway::wait_for_port(
        admin,
        Duration::from_secs(10)
    ));
    admin_get(admin, "/status").json()
}

fn ejected_gauge(admin: SocketAddr, target: SocketAddr) -> Option<String> {
    let text = admin_get(admin, "/metrics").body_str();
    let series =
        format!("portcullis_upstream_target_ejected{{target=\"{target}\",upstream=\"app\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series).map(str::to_string))
}

fn ejected_in_status(admin: SocketAddr, target: SocketAddr) -> bool {
    status(admin)["upstreams"]["app"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["target"] == target.to_string() && t["ejected"] == true)
}

#[test]
fn a_failing_target_is_ejected_and_gets_traffic_again() {
    let a = Upstream::start("a");
    let bad = Failing::start(503);
    let admin = free_addr();
    let body = config(
        admin,
        &format!(
            "targets = [\"{}\", \"{}\"]\nretries = 0\n\
             outlier_detection = {{ consecutive_failures = 3, base_ejection_seconds = 1, max_ejection_seconds = 2 }}",
            a.addr(),
            bad.addr
        ),
    );
    let gw = Gateway::start(&body);
    assert_eq!(ejected_gauge(admin, bad.addr).as_deref(), Some("0"));
    // Round robin: every other request is the failing target's 503.
    for _ in 0..6 {
        get(gw.addr, "/");
    }
    let event = gw
        .wait_security_event("upstream_ejected")
        .expect("no upstream_ejected");
    assert_eq!(event["upstream"], "app");
    assert_eq!(event["target"], bad.addr.to_string());
    assert_eq!(event["ejection_seconds"], 1);
    assert_eq!(bad.hits(), 3);
    assert_eq!(ejected_gauge(admin, bad.addr).as_deref(), Some("1"));
    assert_eq!(ejected_gauge(admin, a.addr()).as_deref(), Some("0"));
    assert!(ejected_in_status(admin, bad.addr));
    // The event and the gauge come after the ejection: while the target
    // is out no request reaches it. Once back, it gets traffic again.
    let restored = gw
        .wait_security_event("upstream_restored")
        .expect("no upstream_restored");
    assert_eq!(restored["target"], bad.addr.to_string());
    assert_eq!(restored["upstream"], "app");
    assert_eq!(ejected_gauge(admin, bad.addr).as_deref(), Some("0"));
    assert!(!ejected_in_status(admin, bad.addr));
    assert!(wait_until(Duration::from_secs(5), || {
        get(gw.addr, "/");
        bad.hits() > 3
    }));
    // The second ejection is twice as long (capped by the maximum).
    for _ in 0..8 {
        get(gw.addr, "/");
    }
    let events = gw.wait_security_events("upstream_ejected", 2);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["ejection_seconds"], 2);
}

#[test]
fn gateway_error_statuses_and_closed_ports_count_other_statuses_do_not() {
    for status in [502u16, 504] {
        let a = Upstream::start("a");
        let bad = Failing::start(status);
        let gw = Gateway::start(&config(
            free_addr(),
            &format!(
                "targets = [\"{}\", \"{}\"]\nretries = 0\noutlier_detection = {{ consecutive_failures = 2 }}",
                a.addr(),
                bad.addr
            ),
        ));
        for _ in 0..4 {
            get(gw.addr, "/");
        }
        let event = gw.wait_security_event("upstream_ejected");
        assert_eq!(
            event.map(|e| e["target"].clone()),
            Some(bad.addr.to_string().into()),
            "{status}"
        );
        for _ in 0..10 {
            assert_eq!(get(gw.addr, "/").status, 200);
        }
    }
    // A closed port: the connect errors count, and with a retry each
    // request moves on to the other target.
    let a = Upstream::start("a");
    let dead = free_addr();
    let gw = Gateway::start(&config(
        free_addr(),
        &format!(
            "targets = [\"{}\", \"{dead}\"]\nretries = 1\noutlier_detection = {{ consecutive_failures = 2 }}",
            a.addr()
        ),
    ));
    for _ in 0..10 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    let event = gw.wait_security_event("upstream_ejected").unwrap();
    assert_eq!(event["target"], dead.to_string());
    // A 500 or 404 is the application's answer, not a failing target.
    // An ejection happens before the answer that caused it is sent, so
    // `/status` read after the answers is up to date.
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = free_addr();
    let gw = Gateway::start(&config(
        admin,
        &format!(
            "targets = [\"{}\", \"{}\"]\nretries = 0\noutlier_detection = {{ consecutive_failures = 2 }}",
            a.addr(),
            b.addr()
        ),
    ));
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "/x?status=500").status, 500);
        assert_eq!(get(gw.addr, "/x?status=404").status, 404);
    }
    assert_eq!(ejected_count(admin), 0);
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/x?status=503").status, 503);
    }
    assert_eq!(ejected_count(admin), 1);
}

fn ejected_count(admin: SocketAddr) -> usize {
    status(admin)["upstreams"]["app"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ejected"] == true)
        .count()
}

#[test]
fn one_success_resets_the_count() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = free_addr();
    let gw = Gateway::start(&config(
        admin,
        &format!(
            "targets = [\"{}\", \"{}\"]\nretries = 0\noutlier_detection = {{ consecutive_failures = 2 }}",
            a.addr(),
            b.addr()
        ),
    ));
    // Round robin: each target sees failure, success, failure, success...
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/?status=503").status, 503);
        assert_eq!(get(gw.addr, "/?status=503").status, 503);
        assert_eq!(get(gw.addr, "/").status, 200);
        assert_eq!(get(gw.addr, "/").status, 200);
    }
    assert_eq!(ejected_count(admin), 0);
    // Two in a row for each: one is ejected (the cap keeps the other).
    for _ in 0..4 {
        get(gw.addr, "/?status=503");
    }
    assert_eq!(ejected_count(admin), 1);
    let events = gw.wait_security_events("upstream_ejected", 1);
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn the_ejection_cap_keeps_targets() {
    // Two targets, both failing, 100 %: one is always kept.
    let f1 = Failing::start(503);
    let f2 = Failing::start(503);
    let admin = free_addr();
    let gw = Gateway::start(&config(
        admin,
        &format!(
            "targets = [\"{}\", \"{}\"]\nretries = 0\n\
             outlier_detection = {{ consecutive_failures = 2, base_ejection_seconds = 30, max_ejection_percent = 100 }}",
            f1.addr, f2.addr
        ),
    ));
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/").status, 503);
    }
    assert!(gw.wait_security_event("upstream_ejected").is_some());
    let targets = status(admin)["upstreams"]["app"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        targets.iter().filter(|t| t["ejected"] == true).count(),
        1,
        "{targets:?}"
    );
    assert_eq!(gw.security_events("upstream_ejected").len(), 1);
    assert_eq!(f1.hits() + f2.hits(), 20);

    // Three targets, 50 %: one of the two failing ones may go, the other
    // keeps getting its share.
    let a = Upstream::start("a");
    let f1 = Failing::start(502);
    let f2 = Failing::start(502);
    let gw = Gateway::start(&config(
        free_addr(),
        &format!(
            "targets = [\"{}\", \"{}\", \"{}\"]\nretries = 0\n\
             outlier_detection = {{ consecutive_failures = 2, base_ejection_seconds = 30, max_ejection_percent = 50 }}",
            a.addr(),
            f1.addr,
            f2.addr
        ),
    ));
    for _ in 0..30 {
        get(gw.addr, "/");
    }
    assert!(gw.wait_security_event("upstream_ejected").is_some());
    let before = f1.hits() + f2.hits();
    for _ in 0..10 {
        get(gw.addr, "/");
    }
    assert_eq!(gw.security_events("upstream_ejected").len(), 1);
    assert!(
        f1.hits() + f2.hits() > before,
        "the kept one still gets traffic"
    );
}

/// The bar: with one of two targets failing every request, fewer
/// than `consecutive_failures` + 2 % of the requests fail.
#[test]
fn few_requests_fail_once_the_failing_target_is_out() {
    for failing in ["status", "closed"] {
        let a = Upstream::start("a");
        let bad = Failing::start(503);
        let dead = free_addr();
        let target = if failing == "status" { bad.addr } else { dead };
        let gw = Gateway::start(&config(
            free_addr(),
            &format!(
                "targets = [\"{}\", \"{target}\"]\nretries = 0\n\
                 outlier_detection = {{ consecutive_failures = 5, base_ejection_seconds = 30 }}",
                a.addr()
            ),
        ));
        let n = 200;
        let failed = (0..n).filter(|_| get(gw.addr, "/").status != 200).count();
        assert!(
            failed < 5 + n * 2 / 100,
            "{failing}: {failed} of {n} requests failed"
        );
        assert!(
            failed >= 5,
            "{failing}: {failed}: ejected before 5 failures"
        );
    }
}

#[test]
fn a_reload_keeps_an_unchanged_upstreams_ejections() {
    let a = Upstream::start("a");
    let bad = Failing::start(503);
    let admin = free_addr();
    let upstream = format!(
        "targets = [\"{}\", \"{}\"]\nretries = 0\n\
         outlier_detection = {{ consecutive_failures = 2, base_ejection_seconds = 30 }}",
        a.addr(),
        bad.addr
    );
    let gw = Gateway::start(&config(admin, &upstream));
    for _ in 0..4 {
        get(gw.addr, "/");
    }
    assert!(gw.wait_security_event("upstream_ejected").is_some());
    gw.write_config_body(&format!(
        "{}\n[[routes]]\nname = \"other\"\npath_prefix = \"/other\"\npublic = true\nupstream = \"app\"\n",
        config(admin, &upstream)
    ));
    assert_eq!(request(admin, "POST", "/reload", &[], None).status, 200);
    assert!(ejected_in_status(admin, bad.addr));
    let hits = bad.hits();
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "/other").status, 200);
    }
    assert_eq!(bad.hits(), hits);
}

/// `localhost` comes from /etc/hosts (or the resolver's own loopback
/// answer): 127.0.0.1 and usually ::1 too. The test upstream listens on
/// 127.0.0.1 only, so a ::1 address fails its connects: the retry takes
/// the request to 127.0.0.1, and outlier detection takes ::1 out.
#[test]
fn localhost_targets_resolve_and_status_lists_their_addresses() {
    let a = Upstream::start("a");
    let admin = free_addr();
    let name = format!("localhost:{}", a.addr().port());
    let gw = Gateway::start(&config(
        admin,
        &format!(
            "targets = [\"{name}\"]\ndns_refresh_seconds = 1\nretries = 1\n\
             outlier_detection = {{ consecutive_failures = 1, base_ejection_seconds = 30 }}"
        ),
    ));
    for _ in 0..20 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    let s = status(admin);
    let dns = &s["dns"]["app"][name.as_str()];
    assert!(dns["error"].is_null(), "{s}");
    let addresses: Vec<&str> = dns["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let v4 = a.addr().to_string();
    assert!(addresses.contains(&v4.as_str()), "{s}");
    let targets = s["upstreams"]["app"].as_array().unwrap();
    assert_eq!(targets.len(), addresses.len(), "{s}");
    assert!(targets.iter().all(|t| t["name"] == name.as_str()), "{s}");
    let v6 = format!("[::1]:{}", a.addr().port());
    if addresses.contains(&v6.as_str()) {
        let event = gw.wait_security_event("upstream_ejected").unwrap();
        assert_eq!(event["target"], v6);
    }
    // Refreshes that find the same addresses change nothing.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(gw.addr, "/").status, 200);
    assert!(gw.security_events("dns_refresh_failed").is_empty());
}

#[test]
fn a_name_that_does_not_resolve_leaves_the_gateway_up_and_is_retried() {
    // `.invalid` never resolves (RFC 6761), and is answered without asking
    // any name server.
    let a = Upstream::start("a");
    let admin = free_addr();
    let gw = Gateway::start(&config(
        admin,
        "targets = [\"nothing.invalid.:80\"]\ndns_refresh_seconds = 1",
    ));
    let r = get(gw.addr, "/");
    common::assert_error(&r, 503, "no_healthy_upstream");
    let events = gw.wait_security_events("dns_refresh_failed", 2);
    assert_eq!(events.len(), 2, "the name is tried again: {events:?}");
    assert_eq!(events[0]["upstream"], "app");
    assert_eq!(events[0]["host"], "nothing.invalid.");
    assert_eq!(events[0]["target"], "nothing.invalid.:80");
    assert_eq!(events[0]["reason"], "no such name (NXDOMAIN)");
    let s = status(admin);
    let dns = &s["dns"]["app"]["nothing.invalid.:80"];
    assert_eq!(dns["addresses"], serde_json::json!([]), "{s}");
    assert!(dns["error"].is_string(), "{s}");
    assert_eq!(s["upstreams"]["app"], serde_json::json!([]));
    drop(gw);

    // Beside an address target, the address keeps serving.
    let gw = Gateway::start(&config(
        free_addr(),
        &format!("targets = [\"nothing.invalid.:80\", \"{}\"]", a.addr()),
    ));
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/").status, 200);
    }
    assert!(gw.wait_security_event("dns_refresh_failed").is_some());
}

#[test]
fn check_validates_names_without_resolving_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let base = |targets: &str| {
        format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:1\"\n\n[upstreams.app]\ntargets = [{targets}]\n\n\
             [[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n"
        )
    };
    // Names nobody can resolve here are fine for `check`.
    let out = check(&write(&base(
        "\"nothing.invalid.:80\", \"orders.svc.cluster.local:8080\", \"localhost:9\"",
    )));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = write(&base("\"orders..internal:80\", \"10.0.0:80\""));
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:6:12: target `orders..internal:80`",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{}:6:35: target `10.0.0:80`", path.display())),
        "{stderr}"
    );
}

#[test]
fn a_target_needs_both_health_checks_and_outlier_detection() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = free_addr();
    let gw = Gateway::start(&config(
        admin,
        &format!(
            "targets = [\"{}\", \"{}\"]\nretries = 0\n\
             health_check = {{ kind = \"http\", path = \"/healthz\", interval_ms = 100, timeout_ms = 100, unhealthy_threshold = 1 }}\n\
             outlier_detection = {{ consecutive_failures = 2, base_ejection_seconds = 30 }}",
            a.addr(),
            b.addr()
        ),
    ));
    b.set_health_status(500);
    assert!(gw.wait_security_event("upstream_unhealthy").is_some());
    // a is the one target passing the health checks: failing, it stays.
    for _ in 0..6 {
        let r = get(gw.addr, "/?status=503");
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["server"], "a");
    }
    assert_eq!(ejected_count(admin), 0);
    // With b healthy again, a's failures eject it and b takes everything.
    b.set_health_status(200);
    assert!(gw.wait_security_event("upstream_healthy").is_some());
    assert!(wait_until(Duration::from_secs(5), || {
        get(gw.addr, "/?status=503");
        ejected_count(admin) == 1
    }));
    let targets = status(admin)["upstreams"]["app"]
        .as_array()
        .unwrap()
        .clone();
    assert!(targets
        .iter()
        .any(|t| t["target"] == a.addr().to_string() && t["ejected"] == true));
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/").json()["server"], "b");
    }
}

#[test]
fn a_reload_resolves_new_names_before_they_take_traffic() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = free_addr();
    let gw = Gateway::start(&config(admin, &format!("targets = [\"{}\"]", b.addr())));
    assert_eq!(get(gw.addr, "/").json()["server"], "b");
    gw.write_config_body(&config(
        admin,
        &format!("targets = [\"localhost:{}\"]\nretries = 1", a.addr().port()),
    ));
    let r = request(admin, "POST", "/reload", &[], None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    // No wait: the names were resolved before the swap.
    for _ in 0..5 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.json()["server"], "a");
    }
}

/// A client cannot eject targets by asking for a deadline shorter than the
/// upstream's `read_timeout_ms`: only the configured timeout counts.
#[test]
fn a_client_chosen_grpc_deadline_is_not_the_targets_failure() {
    use common::h2_upstream::H2Upstream;
    let u1 = H2Upstream::start();
    let u2 = H2Upstream::start();
    let admin = free_addr();
    let h2c_listener = free_addr();
    let gw = Gateway::start(&format!(
        "[[listeners]]\nname = \"h2c\"\nlisten = \"{h2c_listener}\"\nhttp2 = true\n\n{}",
        config(
            admin,
            &format!(
                "targets = [\"{}\", \"{}\"]\nprotocol = \"h2c\"\nretries = 0\nread_timeout_ms = 1000\n\
                 outlier_detection = {{ consecutive_failures = 1, base_ejection_seconds = 30 }}",
                u1.addr, u2.addr
            ),
        )
    ));
    assert!(common::gateway::wait_for_port(
        h2c_listener,
        Duration::from_secs(10)
    ));
    let call = |timeout: Option<&str>| {
        let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
        if let Some(t) = timeout {
            headers.push(("grpc-timeout", t));
        }
        common::h2c::send(
            h2c_listener,
            "localhost",
            "POST",
            "/pkg.Service/Slow",
            &headers,
            None,
        )
    };
    for _ in 0..4 {
        let r = call(Some("100m"));
        assert_eq!(r.header("grpc-status"), Some("4"), "{:?}", r.headers);
    }
    assert_eq!(ejected_count(admin), 0);
    // The upstream's own limit is the target's failure.
    let r = call(None);
    assert_eq!(r.header("grpc-status"), Some("4"), "{:?}", r.headers);
    assert_eq!(ejected_count(admin), 1);
    drop(gw);
}
