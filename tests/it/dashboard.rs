//! The admin dashboard's API (`/ui/api/`) through the real binary: the
//! token refusal, the headers of every `/ui` response, no secret in any
//! answer, the security-event ring (bounded, newest first, filtered) and
//! what each endpoint reports. `browser.rs` drives the page itself.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::client::{request, Response};
use common::gateway::{free_addr, Gateway};
use common::upstream::Upstream;
use common::{assert_error, wait_until};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "dashboard-admin-token-0123456789abcdef";
pub const API_KEY: &str = "pc_dash1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// A subject that would run if the page put it into HTML.
pub const XSS: &str = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";
pub const WAIT: Duration = Duration::from_secs(15);

/// Every `/ui/api/` endpoint.
pub const ENDPOINTS: [&str; 8] = [
    "overview",
    "listeners",
    "routes",
    "upstreams",
    "certificates",
    "events",
    "lockouts",
    "charts",
];

pub struct Dashboard {
    pub gw: Gateway,
    pub admin: SocketAddr,
    /// A port nothing listens on: the `dead` upstream's only target.
    pub dead: SocketAddr,
    /// PEM of the TLS listener's private key, which must never show.
    pub tls_key_pem: String,
    _up: Upstream,
}

fn key_hash() -> String {
    hex::encode(Sha256::digest(API_KEY.as_bytes()))
}

/// A gateway with an admin token, a TLS listener (HTTP/2, optional client
/// certificates), an API-key route with a rate limit and the failed-auth
/// lockout, and a public route whose upstream is a closed port under a
/// TCP health check.
pub fn start() -> Dashboard {
    let up = Upstream::start("app");
    let admin = free_addr();
    let tls = free_addr();
    let dead = free_addr();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["dashboard.test".to_string()]).unwrap();
    let cert_pem = cert.pem();
    let key_pem = signing_key.serialize_pem();
    let keys = format!(
        "[[keys]]\nid = \"dash1\"\nconsumer = \"shop\"\nhash = \"sha256:{}\"\n",
        key_hash()
    );
    let body = format!(
        r#"
[[listeners]]
name = "https"
listen = "{tls}"
http2 = true
tls = {{ cert = "{{dir}}/server.crt", key = "{{dir}}/server.key", client_ca = "{{dir}}/server.crt", client_auth = "optional" }}

[admin]
listen = "{admin}"
token_file = "{{dir}}/admin.token"

[protection.failed_auth]
threshold = 3
window_seconds = 60
block_seconds = 300

[auth.partners]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"

[upstreams.app]
targets = ["{up}"]

[upstreams.dead]
targets = ["{dead}"]
health_check = {{ kind = "tcp", interval_ms = 100, timeout_ms = 100, unhealthy_threshold = 1 }}

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["partners"]
upstream = "app"
rate_limit = {{ per = "consumer", requests = 100, window_seconds = 60 }}

[[routes]]
name = "legacy"
path_prefix = "/legacy"
public = true
upstream = "dead"
"#,
        up = up.addr()
    );
    let gw = Gateway::start_with_files(
        &body,
        &[
            ("admin.token", &format!("{TOKEN}\n")),
            ("keys.toml", &keys),
            ("server.crt", &cert_pem),
            ("server.key", &key_pem),
        ],
    );
    assert!(
        wait_until(WAIT, || std::net::TcpStream::connect(admin).is_ok()
            && request(admin, "GET", "/readyz", &[], None).status == 200),
        "admin listener never became ready"
    );
    Dashboard {
        gw,
        admin,
        dead,
        tls_key_pem: key_pem,
        _up: up,
    }
}

pub fn api(admin: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    request(admin, "GET", path, &headers, None)
}

fn ok(admin: SocketAddr, endpoint: &str) -> Value {
    let r = api(admin, &format!("/ui/api/{endpoint}"), Some(TOKEN));
    assert_eq!(r.status, 200, "{endpoint}: {}", r.body_str());
    r.json()
}

/// Wrong API keys from this client until it is locked out.
pub fn lock_out(addr: SocketAddr) {
    for _ in 0..3 {
        let r = request(
            addr,
            "GET",
            "/orders/1",
            &[(
                "x-api-key",
                "pc_dash1_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
            )],
            None,
        );
        assert_eq!(r.status, 401, "{}", r.body_str());
    }
    let r = request(addr, "GET", "/orders/1", &[("x-api-key", API_KEY)], None);
    assert_error(&r, 429, "temporarily_blocked");
}

/// A security event whose text is [`XSS`], through the admin API.
pub fn revoke_xss_subject(admin: SocketAddr) {
    let body = json!({
        "subject": XSS,
        "issued_before": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
    .to_string();
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        admin,
        "POST",
        "/revocations",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
}

/// The `dead` upstream's target is reported unhealthy.
pub fn wait_unhealthy(d: &Dashboard) {
    let dead = d.dead.to_string();
    assert!(
        wait_until(WAIT, || {
            ok(d.admin, "upstreams")
                .as_array()
                .unwrap()
                .iter()
                .any(|u| {
                    u["name"] == "dead"
                        && u["targets"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|t| t["target"] == dead.as_str() && t["healthy"] == false)
                })
        }),
        "the dead target never showed unhealthy"
    );
}

fn assert_ui_headers(r: &Response, what: &str) {
    assert_eq!(
        r.header("content-security-policy"),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
        "{what}"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert!(r.header("set-cookie").is_none(), "{what}");
}

#[test]
fn the_api_refuses_without_the_admin_token() {
    let d = start();
    let wrong = format!("{TOKEN}x");
    let prefix = &TOKEN[..TOKEN.len() - 1];
    for endpoint in ENDPOINTS {
        let path = format!("/ui/api/{endpoint}");
        for token in [None, Some(wrong.as_str()), Some(prefix), Some("")] {
            let r = api(d.admin, &path, token);
            assert_error(&r, 401, "unauthorized");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"portcullis-admin\""),
                "{path}"
            );
            assert_ui_headers(&r, &path);
            assert!(!r.body_str().contains(TOKEN));
        }
        // Another scheme, or the token as a cookie or query, is no token.
        let basic = format!("Basic {TOKEN}");
        let cookie = format!("token={TOKEN}");
        for (name, value) in [("authorization", &basic), ("cookie", &cookie)] {
            let r = request(d.admin, "GET", &path, &[(name, value.as_str())], None);
            assert_eq!(r.status, 401, "{path} with {name}");
        }
        let r = api(d.admin, &format!("{path}?token={TOKEN}"), None);
        assert_eq!(r.status, 401);
        // The scheme is case-insensitive, as on every admin endpoint.
        let auth = format!("bearer {TOKEN}");
        let r = request(d.admin, "GET", &path, &[("authorization", &auth)], None);
        assert_eq!(r.status, 200, "{path}");
    }
    // The unknown endpoint is refused before it is looked up.
    assert_eq!(api(d.admin, "/ui/api/nope", None).status, 401);
    assert_error(&api(d.admin, "/ui/api/nope", Some(TOKEN)), 404, "no_route");
    // The page is GET only, the API too.
    let r = request(d.admin, "POST", "/ui/api/overview", &[], None);
    assert_error(&r, 405, "method_not_allowed");
    // A page elsewhere cannot read the API through the visitor's browser.
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        d.admin,
        "GET",
        "/ui/api/overview",
        &[("authorization", &auth), ("origin", "http://evil.test")],
        None,
    );
    assert_error(&r, 403, "forbidden");
}

#[test]
fn the_page_loads_without_a_token_with_strict_headers() {
    let d = start();
    for (path, content_type, needle) in [
        ("/ui/", "text/html; charset=utf-8", "<script src=\"app.js\""),
        ("/ui/index.html", "text/html; charset=utf-8", "Admin token"),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "textContent",
        ),
        ("/ui/app.css", "text/css; charset=utf-8", "font-family"),
    ] {
        let r = api(d.admin, path, None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert!(r.body_str().contains(needle), "{path}");
        assert_ui_headers(&r, path);
    }
    let js = api(d.admin, "/ui/app.js", None).body_str();
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(banned), "app.js uses {banned}");
    }
    assert!(!js.contains("document.cookie"));
    let html = api(d.admin, "/ui/", None).body_str();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    let r = api(d.admin, "/ui", None);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/ui/"));
    assert_ui_headers(&r, "/ui");
    for path in ["/ui/missing.js", "/ui/../status", "/ui/app.js/", "/uix"] {
        let r = api(d.admin, path, None);
        assert!(r.status == 404 || r.status == 401, "{path}: {}", r.status);
        assert!(!r.body_str().contains("textContent"), "{path}");
    }
}

#[test]
fn the_api_reports_routes_upstreams_listeners_lockouts_and_never_a_secret() {
    let d = start();
    wait_unhealthy(&d);
    // Traffic for the charts, a lockout, a hostile-looking event.
    let r = request(
        d.gw.addr,
        "GET",
        "/orders/1",
        &[("x-api-key", API_KEY)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(request(d.gw.addr, "GET", "/legacy", &[], None).status >= 500);
    lock_out(d.gw.addr);
    revoke_xss_subject(d.admin);
    let reload = request(
        d.admin,
        "POST",
        "/reload",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(reload.status, 200, "{}", reload.body_str());

    let overview = ok(d.admin, "overview");
    assert_eq!(overview["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(overview["generation"], 2);
    assert_eq!(overview["last_reload"]["result"], "ok");
    assert_eq!(overview["last_reload"]["generation"], 2);
    assert_eq!(overview["config_sha256"].as_str().unwrap().len(), 64);
    assert!(overview["uptime_seconds"].is_u64());

    let listeners = ok(d.admin, "listeners");
    let https = listeners
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "https")
        .expect("https listener");
    assert_eq!(https["tls"], true);
    assert_eq!(https["mtls"], "optional");
    assert_eq!(https["http2"], true);
    let http = &listeners[0];
    assert_eq!(http["tls"], false);
    assert_eq!(http["mtls"], "off");
    assert_eq!(http["address"], d.gw.addr.to_string());

    let certs = ok(d.admin, "certificates");
    assert_eq!(certs.as_array().unwrap().len(), 1);
    assert_eq!(certs[0]["listener"], "https");
    assert_eq!(certs[0]["names"], json!(["dashboard.test"]));
    assert!(certs[0]["not_after"].as_str().unwrap().ends_with('Z'));
    assert!(certs[0]["days_left"].as_i64().unwrap() > 300);

    let routes = ok(d.admin, "routes");
    let orders = &routes[0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["public"], false);
    assert_eq!(
        orders["auth"],
        json!([{"provider": "partners", "kind": "api_key"}])
    );
    assert_eq!(orders["rate_limit"]["requests"], 100);
    assert_eq!(orders["rate_limit"]["per"], "consumer");
    assert_eq!(orders["waf"], "off");
    assert_eq!(
        orders["upstreams"],
        json!([{"upstream": "app", "weight": 1}])
    );
    assert_eq!(routes[1]["name"], "legacy");
    assert_eq!(routes[1]["public"], true);

    let lockouts = ok(d.admin, "lockouts");
    assert_eq!(lockouts["failed_auth"]["threshold"], 3);
    assert_eq!(lockouts["total"], 1);
    assert_eq!(lockouts["lockouts"][0]["client_ip"], "127.0.0.1");
    let left = lockouts["lockouts"][0]["seconds_left"].as_u64().unwrap();
    assert!((1..=300).contains(&left), "{left}");

    let charts = ok(d.admin, "charts");
    assert_eq!(charts["bucket_seconds"], 10);
    assert_eq!(charts["buckets"], 90);
    let series = |name: &str| -> Value {
        charts["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap()
    };
    let sum = |v: &Value| -> u64 {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    let orders = series("orders");
    assert_eq!(orders["requests"].as_array().unwrap().len(), 90);
    // 1 good, 3 refused keys, 1 locked out (the reload kept the route).
    assert_eq!(sum(&orders["requests"]), 5);
    assert_eq!(sum(&orders["client_errors"]), 4);
    assert_eq!(sum(&series("legacy")["server_errors"]), 1);
    assert!(orders["p99_ms"]
        .as_array()
        .unwrap()
        .iter()
        .any(Value::is_f64));

    // The events carry the hostile subject as plain JSON text.
    let events = ok(d.admin, "events");
    assert_eq!(events["events"][0]["event"], "config_reloaded");
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["revoked_subject"] == XSS));

    // No secret anywhere: the admin token, the API key and its hash, the
    // TLS private key.
    let hash = key_hash();
    let key_body: String = d
        .tls_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for endpoint in ENDPOINTS {
        let body = api(d.admin, &format!("/ui/api/{endpoint}"), Some(TOKEN)).body_str();
        for (name, secret) in [
            ("admin token", TOKEN),
            ("api key", API_KEY),
            ("api key secret part", &API_KEY[9..]),
            ("key hash", hash.as_str()),
            ("tls key", &key_body[..40]),
            ("private key marker", "PRIVATE KEY"),
        ] {
            assert!(
                !body.contains(secret),
                "{endpoint} shows the {name}: {body}"
            );
        }
    }
}

#[test]
fn the_event_ring_is_bounded_newest_first_and_filtered() {
    let d = start();
    let events = |query: &str| ok(d.admin, &format!("events{query}"));
    let capacity = events("")["capacity"].as_u64().unwrap();
    assert_eq!(capacity, 500);
    // Malformed requests from the client: each one a `request_rejected`,
    // none of them a failed credential, so no lockout either.
    let total = capacity as usize + 20;
    for i in 0..total {
        let raw = format!("GET /x{i} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        let r = common::send_raw(d.gw.addr, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{}", r.body_str());
    }
    assert!(
        wait_until(WAIT, || events("?event=request_rejected")["events"]
            .as_array()
            .unwrap()
            .len()
            == capacity as usize),
        "the ring never filled"
    );
    revoke_xss_subject(d.admin);
    let all = events("");
    let list = all["events"].as_array().unwrap();
    assert_eq!(list.len(), capacity as usize, "bounded");
    assert_eq!(list[0]["event"], "token_revoked", "newest first");
    let times: Vec<&str> = list.iter().map(|e| e["ts"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let filtered = events("?event=token_revoked");
    assert_eq!(filtered["filter"], "token_revoked");
    let list = filtered["events"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["revoked_subject"], XSS);
    // Names are matched whole and exactly.
    for query in [
        "?event=token",
        "?event=TOKEN_REVOKED",
        "?event=token_revoked%20",
        "?event=%3Cscript%3E",
    ] {
        assert_eq!(events(query)["events"], json!([]), "{query}");
    }
    // An empty filter is no filter; a repeated or unknown parameter is refused.
    assert_eq!(
        events("?event=")["events"].as_array().unwrap().len(),
        capacity as usize
    );
    for query in ["?event=a&event=b", "?limit=1"] {
        let r = api(d.admin, &format!("/ui/api/events{query}"), Some(TOKEN));
        assert_error(&r, 400, "bad_request");
    }
}
