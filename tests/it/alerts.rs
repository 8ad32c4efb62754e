//! Alerts and analytics (CONTRACT §12) through the real binary: a webhook
//! receiver in the test gets configured events and one alert per auth
//! failure spike; a hanging or down webhook never holds a request and its
//! losses are counted; `[alerts]` follows reload; the consumer label cap;
//! the shipped Prometheus rules pass `promtool`, and they and the Grafana
//! dashboard name only metrics `/metrics` exposes.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::gateway::{config_header, free_addr, Gateway};
use crate::common::sink::{Mode, Sink};
use crate::common::{request, wait_until, Upstream};

const BAD_KEY: &str = "pc_nope_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A webhook receiver: every body it got, as JSON.
struct Webhook {
    addr: SocketAddr,
    sink: Sink,
}

impl Webhook {
    fn start(mode: Mode) -> Webhook {
        let sink = Sink::start(mode);
        Webhook {
            addr: sink.addr,
            sink,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/alerts?token=hook-secret", self.addr)
    }

    fn received(&self) -> Vec<Value> {
        (self.sink.bodies().iter())
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect()
    }

    fn alerts(&self, alert: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|a| a["alert"] == alert)
            .collect()
    }

    fn wait_alert(&self, alert: &str) -> Value {
        assert!(
            wait_until(Duration::from_secs(15), || !self.alerts(alert).is_empty()),
            "no `{alert}` alert; received {:?}",
            self.received()
        );
        self.alerts(alert).remove(0)
    }
}

fn keys_entry(id: &str, key: &str) -> String {
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    format!("[[keys]]\nid = \"{id}\"\nconsumer = \"c-{id}\"\nhash = \"sha256:{hash}\"\n")
}

const KEY_A: &str = "pc_keya_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const KEY_B: &str = "pc_keyb_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const KEY_C: &str = "pc_keyc_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

fn keys() -> String {
    format!(
        "{}{}{}",
        keys_entry("keya", KEY_A),
        keys_entry("keyb", KEY_B),
        keys_entry("keyc", KEY_C)
    )
}

/// An API-key route and an admin listener, with `extra` appended.
fn body(admin: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[auth.partners]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"

[[routes]]
name = "partner"
path_prefix = "/p"
auth = ["partners"]
respond = {{ status = 200, body = "ok" }}
{extra}
"#
    )
}

fn alerts_section(hook: &Webhook, events: &str, spike: &str) -> String {
    format!(
        "\n[alerts]\nwebhook_url = \"{}\"\nevents = [{events}]\n{spike}\n",
        hook.url()
    )
}

fn fail_auth(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let r = request(addr, "GET", "/p/x", &[("x-api-key", BAD_KEY)], None);
        assert_eq!(r.status, 401);
    }
}

fn metrics(admin: SocketAddr) -> String {
    assert!(crate::common::gateway::wait_for_port(
        admin,
        Duration::from_secs(10)
    ));
    request(admin, "GET", "/metrics", &[], None).body_str()
}

/// The value of one sample line of `/metrics`, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn configured_events_and_one_alert_per_auth_failure_spike_reach_the_webhook() {
    let hook = Webhook::start(Mode::Accept);
    let admin = free_addr();
    let config = body(
        admin,
        &alerts_section(
            &hook,
            "\"config_reload_failed\"",
            "auth_failure_spike = { per_minute = 3 }",
        ),
    );
    let gw = Gateway::start_with_files(&config, &[("keys.toml", &keys())]);
    fail_auth(gw.addr, 10);
    let spike = hook.wait_alert("auth_failure_spike");
    assert_eq!(spike["event"], "auth_failure");
    assert!(spike["count"].as_u64().unwrap() > 3, "{spike}");
    assert_eq!(spike["route"], "partner");
    assert_eq!(spike["client_ip"], "127.0.0.1");
    let fields: Vec<&str> = spike
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "ts",
        "alert",
        "event",
        "summary",
        "client_ip",
        "route",
        "subject",
        "count",
    ] {
        assert!(fields.contains(&field), "{field} missing in {spike}");
    }
    assert_eq!(fields.len(), 8, "{spike}");
    fail_auth(gw.addr, 10);

    // A failed reload raises its alert and keeps `[alerts]` as it was.
    gw.write_config_full("[[[ not toml");
    gw.signal("HUP");
    let failed = hook.wait_alert("config_reload_failed");
    assert_eq!(
        (failed["event"].as_str(), failed["count"].as_u64()),
        (Some("config_reload_failed"), Some(1))
    );
    assert!(!failed["summary"].as_str().unwrap().is_empty());
    // Alerts are delivered in order: the spike went before this one, and
    // the same spike raised no second alert.
    assert_eq!(hook.alerts("auth_failure_spike").len(), 1);
    assert!(!gw.stderr().contains("hook-secret"));

    // A reload changes `[alerts]`: another webhook, other events, no spike.
    let second = Webhook::start(Mode::Accept);
    gw.write_config_body(&body(
        admin,
        &alerts_section(&second, "\"config_reloaded\"", ""),
    ));
    gw.signal("HUP");
    second.wait_alert("config_reloaded");
    fail_auth(gw.addr, 10);
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(15), || second
        .alerts("config_reloaded")
        .len()
        == 2));
    assert_eq!(hook.received().len(), 2);
    assert!(second.alerts("auth_failure_spike").is_empty());
}

#[test]
fn a_hanging_or_down_webhook_never_holds_a_request_and_losses_are_counted() {
    let hook = Webhook::start(Mode::Hang);
    let admin = free_addr();
    let config = body(admin, &alerts_section(&hook, "\"auth_failure\"", ""));
    let gw = Gateway::start_with_files(&config, &[("keys.toml", &keys())]);
    // One alert hangs in delivery, 1,000 wait, the rest push the oldest out.
    fail_auth(gw.addr, 1_100);
    let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", KEY_A)], None);
    assert_eq!(r.status, 200);
    let text = metrics(admin);
    assert!(
        sample(&text, "portcullis_alerts_dropped_total") >= 99.0,
        "{text}"
    );
    drop(gw);

    let down = free_addr();
    let config = body(
        admin,
        &format!("\n[alerts]\nwebhook_url = \"http://{down}/\"\nevents = [\"auth_failure\"]\n"),
    );
    let gw = Gateway::start_with_files(&config, &[("keys.toml", &keys())]);
    fail_auth(gw.addr, 3);
    assert!(wait_until(Duration::from_secs(20), || {
        sample(&metrics(admin), "portcullis_alerts_failed_total") >= 1.0
    }));
    let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", KEY_A)], None);
    assert_eq!(r.status, 200);
}

#[test]
fn consumer_labels_stop_at_max_consumer_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), keys()).unwrap();
    let addr = free_addr();
    let admin = free_addr();
    let header =
        config_header(dir.path(), addr).replace("[log]\n", "[log]\nmax_consumer_labels = 2\n");
    let body = body(admin, "").replace("{dir}", &dir.path().to_string_lossy());
    let gw = Gateway::start_full(format!("{header}{body}"), addr, dir);
    for key in [KEY_A, KEY_B, KEY_A, KEY_C, KEY_C] {
        let r = request(gw.addr, "GET", "/p/x", &[("x-api-key", key)], None);
        assert_eq!(r.status, 200);
    }
    fail_auth(gw.addr, 1);
    let text = metrics(admin);
    let series = |c: &str| {
        format!("portcullis_consumer_requests_total{{consumer=\"{c}\",status_class=\"2xx\"}}")
    };
    assert_eq!(sample(&text, &series("c-keya")), 2.0, "{text}");
    assert_eq!(sample(&text, &series("c-keyb")), 1.0, "{text}");
    assert_eq!(sample(&text, &series("other")), 2.0, "{text}");
    assert!(!text.contains("c-keyc"), "{text}");
    // Refused callers have no identity: no consumer label.
    assert!(!text.contains("status_class=\"4xx\""), "{text}");
}

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/conf/alerts/portcullis-rules.yml"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/grafana/portcullis.json");

#[test]
fn the_shipped_alerting_rules_pass_promtool() {
    let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules", RULES])
        .output()
    else {
        // CI installs Debian's `prometheus` (scripts/setup.sh).
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed"
        );
        eprintln!("promtool not installed; skipping the rules check");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric families `text` names: words starting `portcullis_`, a
/// histogram's `_bucket`, `_sum` and `_count` series under their family.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("portcullis_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_string()
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[test]
fn the_grafana_dashboard_is_a_dashboard_with_a_query_per_panel() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "portcullis-overview");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            assert!(t["expr"].as_str().unwrap().contains("portcullis_"), "{t}");
        }
    }
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.contains("portcullis_consumer_requests_total"));
}

#[test]
fn the_shipped_alerting_rules_and_dashboard_name_only_exposed_metrics() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let dead_redis = free_addr();
    let extra = format!(
        r#"
[upstreams.app]
targets = ["{up}"]
health_check = {{ kind = "http", path = "/healthz", interval_ms = 200, timeout_ms = 200 }}

[rate_limit_store]
kind = "redis"
redis_url = "redis://{dead_redis}"
timeout_ms = 200

[[routes]]
name = "limited"
path_prefix = "/limited"
public = true
upstream = "app"
rate_limit = {{ per = "route", requests = 1, window_seconds = 60 }}

[[routes]]
name = "scoped"
path_prefix = "/scoped"
auth = ["partners"]
require_scopes = ["admin"]
respond = {{ status = 200, body = "ok" }}
"#,
        up = up.addr()
    );
    let gw = Gateway::start_with_files(&body(admin, &extra), &[("keys.toml", &keys())]);
    fail_auth(gw.addr, 1);
    request(gw.addr, "GET", "/p/x", &[("x-api-key", KEY_A)], None);
    let scoped = request(gw.addr, "GET", "/scoped", &[("x-api-key", KEY_A)], None);
    assert_eq!(scoped.status, 403);
    request(gw.addr, "GET", "/limited/x", &[], None);
    let limited = request(gw.addr, "GET", "/limited/x", &[], None);
    assert_eq!(limited.status, 429);
    let rules = metric_names(&std::fs::read_to_string(RULES).unwrap());
    assert!(rules.len() >= 7, "{rules:?}");
    let dashboard = metric_names(&std::fs::read_to_string(DASHBOARD).unwrap());
    assert!(dashboard.len() >= 14, "{dashboard:?}");
    let mut names = rules;
    names.extend(dashboard);
    names.sort_unstable();
    names.dedup();
    let mut text = String::new();
    let exposed = wait_until(Duration::from_secs(10), || {
        text = metrics(admin);
        names.iter().all(|n| text.contains(&format!("# TYPE {n} ")))
    });
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !text.contains(&format!("# TYPE {n} ")))
        .collect();
    assert!(exposed, "not exposed: {missing:?}\n{text}");
}
