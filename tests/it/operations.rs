//! Zero-downtime operations with the real binary: reload by SIGHUP and by
//! the admin API, invalid reloads, reloads and an upgrade under load, the
//! admin token, metrics and /status.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{get, request, Conn, Response};
use common::gateway::{check, free_addr, Gateway};
use common::upstream::Upstream;
use common::wait_until;

const TOKEN: &str = "test-admin-token-0123456789";

fn body(admin: SocketAddr, up: &Upstream, extra_routes: &str) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[upstreams.app]
targets = ["{up}"]
health_check = {{ kind = "http", path = "/healthz", interval_ms = 200, timeout_ms = 200 }}

[[routes]]
name = "app"
path_prefix = "/app"
public = true
upstream = "app"
{extra_routes}
"#,
        up = up.addr()
    )
}

fn route(name: &str, path: &str) -> String {
    format!("\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\npublic = true\nrespond = {{ status = 200, body = \"{name}\" }}\n")
}

fn admin_get(admin: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    request(admin, "GET", path, &headers, None)
}

fn admin_post(admin: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    request(admin, "POST", path, &headers, None)
}

fn wait_ready(admin: SocketAddr) {
    // The admin listener may bind a moment after the proxy's.
    assert!(crate::common::gateway::wait_for_port(
        admin,
        Duration::from_secs(10)
    ));
    assert!(wait_until(Duration::from_secs(10), || admin_get(
        admin, "/readyz", None
    )
    .status
        == 200));
}

#[test]
fn sighup_and_admin_reload_change_routes() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&body(admin, &up, &route("old", "/old")));
    wait_ready(admin);
    assert_eq!(get(gw.addr, "/old").body_str(), "old");
    assert_eq!(get(gw.addr, "/new").status, 404);

    gw.write_config_body(&body(admin, &up, &route("new", "/new")));
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || get(gw.addr, "/new")
        .status
        == 200));
    assert_eq!(get(gw.addr, "/old").status, 404, "removed route is gone");
    let ev = gw
        .wait_security_event("config_reloaded")
        .expect("config_reloaded event");
    assert_eq!(ev["generation"], 2);

    // Changed: the same route name with another answer, through POST /reload.
    gw.write_config_body(&body(
        admin,
        &up,
        &route("new", "/new").replace("body = \"new\"", "body = \"changed\""),
    ));
    let r = admin_post(admin, "/reload", None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["generation"], 3);
    assert_eq!(get(gw.addr, "/new").body_str(), "changed");
    let status = admin_get(admin, "/status", None).json();
    assert_eq!(status["generation"], 3);
    assert_eq!(status["routes"], serde_json::json!(["app", "new"]));
}

#[test]
fn invalid_reload_changes_nothing() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&body(admin, &up, &route("keep", "/keep")));
    wait_ready(admin);
    let before = admin_get(admin, "/status", None).json();

    gw.write_config_body(&format!(
        "{}\nbogus_key = 1\n",
        body(admin, &up, &route("keep", "/keep")).replace("public = true\nupstream", "upstream")
    ));
    let r = admin_post(admin, "/reload", None);
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["error"], "invalid_config");
    let errors: Vec<String> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let file = gw.config_path().display().to_string();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&file) && e.contains("must name its `auth` providers")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("unknown key `bogus_key`")),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| e
            .split(':')
            .nth(1)
            .is_some_and(|l| l.parse::<u32>().is_ok())),
        "FILE:LINE:COL {errors:?}"
    );

    gw.signal("HUP");
    let failed = gw.wait_security_events("config_reload_failed", 2);
    assert_eq!(failed.len(), 2);
    assert!(failed[0]["reason"].as_str().unwrap().contains("bogus_key"));

    assert_eq!(get(gw.addr, "/keep").body_str(), "keep");
    assert_eq!(get(gw.addr, "/app/x").status, 200);
    let after = admin_get(admin, "/status", None).json();
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["config_sha256"], before["config_sha256"]);
    let metrics = admin_get(admin, "/metrics", None).body_str();
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"error\"} 2"),
        "{metrics}"
    );
}

/// `workers` threads sending requests over keep-alive connections
/// (reconnecting when the gateway says `Connection: close`) until `during`
/// has returned and each has sent at least `min_per_worker` (bounded by a
/// count and a deadline). Returns the failures and the number of requests.
fn load(
    addr: SocketAddr,
    workers: usize,
    min_per_worker: usize,
    during: impl FnOnce(),
) -> (Vec<String>, usize) {
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let failures = failures.clone();
            let done = done.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn: Option<Conn> = None;
                let deadline = Instant::now() + Duration::from_secs(60);
                for i in 0..min_per_worker * 20 {
                    if (i >= min_per_worker && stop.load(Ordering::Relaxed))
                        || Instant::now() > deadline
                    {
                        break;
                    }
                    if conn.is_none() {
                        match Conn::try_open(addr) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("w{w} r{i} connect: {e}"));
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match c.get(&format!("/app/w{w}/r{i}")) {
                        Ok(r) if r.status == 200 => {
                            if r.header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                            {
                                conn = None;
                            }
                        }
                        Ok(r) => {
                            failures.lock().unwrap().push(format!(
                                "w{w} r{i}: {} {}",
                                r.status,
                                r.body_str()
                            ));
                            conn = None;
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(format!("w{w} r{i}: {e}"));
                            conn = None;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    during();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let out = failures.lock().unwrap().clone();
    (out, done.load(Ordering::Relaxed))
}

#[test]
fn reloads_under_load_fail_no_request() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&body(admin, &up, ""));
    wait_ready(admin);
    let (failures, sent) = load(gw.addr, 8, 250, || {
        for i in 0..5 {
            std::thread::sleep(Duration::from_millis(150));
            gw.write_config_body(&body(
                admin,
                &up,
                &route(&format!("r{i}"), &format!("/r{i}")),
            ));
            if i % 2 == 0 {
                gw.signal("HUP");
            } else {
                assert_eq!(admin_post(admin, "/reload", None).status, 200);
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(wait_until(Duration::from_secs(5), || admin_get(
        admin, "/status", None
    )
    .json()["generation"]
        == 6));
    assert!(sent >= 2000, "only {sent} requests sent");
    assert_eq!(up.hits(), sent);
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn hundred_reloads_leak_no_task_or_thread() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = free_addr();
    let with_b = |on: bool| {
        let extra = if on {
            format!(
                "\n[upstreams.b]\ntargets = [\"{}\"]\nhealth_check = {{ kind = \"tcp\", interval_ms = 50 }}\n\
                 [[routes]]\nname = \"b\"\npath_prefix = \"/b\"\npublic = true\nupstream = \"b\"\n",
                b.addr()
            )
        } else {
            String::new()
        };
        body(admin, &a, &extra)
    };
    let gw = Gateway::start(&with_b(false));
    wait_ready(admin);
    let tasks = |admin| {
        admin_get(admin, "/status", None).json()["background_tasks"]
            .as_u64()
            .unwrap()
    };
    // The upstream's health check and the revocation list's sync.
    let baseline = 2;
    assert_eq!(tasks(admin), baseline);
    // Warm up: the first reloads start the blocking pool's thread.
    for on in [true, false] {
        gw.write_config_body(&with_b(on));
        assert_eq!(admin_post(admin, "/reload", None).status, 200);
    }
    let threads_before = threads_of(gw.pid());
    for i in 0..100 {
        gw.write_config_body(&with_b(i % 2 == 0));
        let r = admin_post(admin, "/reload", None);
        assert_eq!(r.status, 200, "{}", r.body_str());
        if i % 2 == 0 {
            assert_eq!(get(gw.addr, "/b/x").json()["server"], "b");
        } else {
            assert_eq!(get(gw.addr, "/b/x").status, 404);
        }
    }
    // Removed pools' tasks end at their next tick once nothing holds them.
    assert!(
        wait_until(Duration::from_secs(3), || tasks(admin) == baseline),
        "tasks: {}",
        tasks(admin)
    );
    // A blocking-pool thread started while the machine was busy ends after
    // Tokio's 10 s keep-alive; a leaked thread never does.
    let settled = wait_until(Duration::from_secs(15), || {
        threads_of(gw.pid()) <= threads_before + 1
    });
    assert!(
        settled,
        "threads {threads_before} -> {}",
        threads_of(gw.pid())
    );
    assert_eq!(admin_get(admin, "/status", None).json()["generation"], 103);
}

#[test]
fn unchanged_upstreams_keep_their_health_across_reloads() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&body(admin, &up, ""));
    wait_ready(admin);
    up.set_health_status(500);
    assert!(gw.wait_security_event("upstream_unhealthy").is_some());
    assert_eq!(get(gw.addr, "/app/x").status, 503);
    gw.write_config_body(&body(admin, &up, &route("other", "/other")));
    assert_eq!(admin_post(admin, "/reload", None).status, 200);
    // Right after the swap, still known to be down: no flap to healthy.
    assert_eq!(get(gw.addr, "/app/x").status, 503);
    let status = admin_get(admin, "/status", None).json();
    assert_eq!(status["upstreams"]["app"][0]["healthy"], false);
    up.set_health_status(200);
    assert!(wait_until(Duration::from_secs(5), || get(
        gw.addr, "/app/x"
    )
    .status
        == 200));
}

#[test]
fn listener_changes_are_reported_as_needing_an_upgrade() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&body(admin, &up, ""));
    wait_ready(admin);
    let extra = free_addr();
    gw.write_config_body(&format!(
        "{}\n[[listeners]]\nname = \"extra\"\nlisten = \"{extra}\"\n",
        body(admin, &up, "")
    ));
    let r = admin_post(admin, "/reload", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["needs_upgrade"], serde_json::json!(["listeners"]));
    let ev = gw.wait_security_event("config_reloaded").unwrap();
    assert_eq!(ev["needs_upgrade"], serde_json::json!(["listeners"]));
}

#[test]
fn admin_token_is_enforced() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let conf = body(admin, &up, "").replace(
        &format!("listen = \"{admin}\""),
        &format!("listen = \"{admin}\"\ntoken_file = \"{{dir}}/admin.token\""),
    );
    let gw = Gateway::start_with_files(&conf, &[("admin.token", &format!("{TOKEN}\n"))]);
    wait_ready(admin);
    assert_eq!(
        admin_get(admin, "/healthz", None).status,
        200,
        "probes need no token"
    );
    for token in [None, Some("wrong-token-wrong-token"), Some("")] {
        let r = admin_get(admin, "/status", token);
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "unauthorized");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(!r.body_str().contains(TOKEN));
        assert_eq!(admin_post(admin, "/reload", token).status, 401);
        assert_eq!(admin_get(admin, "/metrics", token).status, 401);
    }
    assert_eq!(admin_get(admin, "/status", Some(TOKEN)).status, 200);
    let r = request(
        admin,
        "GET",
        "/status",
        &[("authorization", &format!("bearer {TOKEN}"))],
        None,
    );
    assert_eq!(r.status, 200, "the scheme is case-insensitive");
    assert_eq!(admin_post(admin, "/reload", Some(TOKEN)).status, 200);
    for log in [
        gw.stdout(),
        gw.stderr(),
        std::fs::read_to_string(&gw.security_log_path).unwrap_or_default(),
    ] {
        assert!(!log.contains(TOKEN), "the token leaked into a log");
    }
}

#[test]
fn non_loopback_admin_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gw.toml");
    std::fs::write(
        &conf,
        "[admin]\nlisten = \"0.0.0.0:9901\"\n[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = check(&conf);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(":2:10: an admin listener on a non-loopback address needs a `token_file`"));
}

#[test]
fn metrics_and_status() {
    let up = Upstream::start("app");
    let dead = free_addr();
    let admin = free_addr();
    let conf = body(admin, &up, &route("ping", "/ping")).replace(
        &format!("targets = [\"{}\"]", up.addr()),
        &format!("targets = [\"{}\", \"{dead}\"]", up.addr()),
    );
    let gw = Gateway::start(&conf);
    wait_ready(admin);
    assert!(gw.wait_security_event("upstream_unhealthy").is_some());
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/app/x").status, 200);
    }
    assert_eq!(get(gw.addr, "/ping").status, 200);
    assert_eq!(get(gw.addr, "/nowhere/abc").status, 404);
    assert_eq!(
        request(gw.addr, "PROPFIND", "/nowhere/xyz", &[], None).status,
        404
    );

    // Requests are counted in the logging phase, after the response went
    // out: wait (bounded) until the last one is in.
    let mut text = String::new();
    common::wait_until(Duration::from_secs(5), || {
        text = admin_get(admin, "/metrics", None).body_str();
        text.contains(
            r#"portcullis_requests_total{method="OTHER",route="unmatched",status="404"} 1"#,
        )
    });
    for name in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds",
        "portcullis_upstream_duration_seconds",
        "portcullis_upstream_target_healthy",
        "portcullis_config_reloads_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name}")),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains(r#"portcullis_requests_total{method="GET",route="app",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_requests_total{method="GET",route="ping",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"portcullis_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"portcullis_requests_total{method="OTHER",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("nowhere"),
        "raw paths must never become labels"
    );
    assert!(
        text.contains(&format!(
            "portcullis_upstream_target_healthy{{target=\"{dead}\",upstream=\"app\"}} 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "portcullis_upstream_target_healthy{{target=\"{}\",upstream=\"app\"}} 1",
            up.addr()
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_upstream_duration_seconds_count{upstream="app"} 3"#),
        "{text}"
    );

    let status = admin_get(admin, "/status", None).json();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["config_sha256"].as_str().unwrap().len(), 64);
    let sha = {
        use std::process::Command;
        let out = Command::new("sha256sum")
            .arg(gw.config_path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(status["config_sha256"], sha.as_str());
    assert!(status["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status["routes"], serde_json::json!(["app", "ping"]));
    let targets = status["upstreams"]["app"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets
        .iter()
        .any(|t| t["target"] == up.addr().to_string() && t["healthy"] == true));
    assert!(targets
        .iter()
        .any(|t| t["target"] == dead.to_string() && t["healthy"] == false));
    assert_eq!(status["pid"], gw.pid());
    assert_eq!(admin_get(admin, "/nope", None).json()["error"], "no_route");
}

#[test]
fn upgrade_under_load_drops_no_connection() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let mut gw = Gateway::start(&body(admin, &up, ""));
    wait_ready(admin);
    let old_pid = gw.pid();
    let addr = gw.addr;
    let mut old_status = None;
    let (failures, sent) = load(addr, 8, 250, || {
        std::thread::sleep(Duration::from_millis(300));
        old_status = Some(gw.upgrade());
    });
    assert!(sent >= 2000, "only {sent} requests sent");
    assert_eq!(up.hits(), sent);
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        old_status.unwrap().success(),
        "the old process exits 0 after draining"
    );
    let new_pid = gw.pid();
    assert_ne!(new_pid, old_pid);
    wait_ready(admin);
    assert_eq!(
        admin_get(admin, "/status", None).json()["pid"],
        new_pid,
        "the admin listener moved too"
    );
    assert_eq!(get(addr, "/app/after").status, 200);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let mut gw = Gateway::start(&body(admin, &up, ""));
    wait_ready(admin);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || get(addr, "/app/slow?sleep_ms=600"));
    assert!(wait_until(Duration::from_secs(3), || up.hits() >= 1));
    gw.signal("TERM");
    let r = slow.join().unwrap();
    assert_eq!(
        r.status,
        200,
        "in-flight request finished: {}",
        r.body_str()
    );
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status}");
}
