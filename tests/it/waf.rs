//! The WAF of CONTRACT §14 against the real binary and Debian's OWASP CRS:
//! attacks in queries, headers and bodies blocked (nothing reaches the
//! upstream) or recorded, ordinary API requests passed, exclusions per
//! route, the oversize policy, rule-file errors from `check`, and the WAF
//! running after authentication.

use crate::common;

use std::net::SocketAddr;

use common::assert_error;
use common::client::{request, Response};
use common::gateway::{check, Gateway};
use common::upstream::Upstream;
use sha2::{Digest, Sha256};

const KEY: &str = "pc_good1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

const CRS: &str = r#"
[waf]
engine = "modsecurity"
rules = ["/etc/modsecurity/crs/crs-setup.conf", "/usr/share/modsecurity-crs/rules/*.conf"]
inspect_body_bytes = 4096
"#;

fn start(up: &Upstream, route_extra: &str, waf_extra: &str) -> Gateway {
    let key = hex::encode(Sha256::digest(KEY.as_bytes()));
    let body = format!(
        r#"{CRS}{waf_extra}

[upstreams.app]
targets = ["{up}"]

[auth.partners]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"

[[routes]]
name = "block"
path_prefix = "/b"
public = true
upstream = "app"
waf = "block"
{route_extra}

[[routes]]
name = "detect"
path_prefix = "/d"
public = true
upstream = "app"
waf = "detect"

[[routes]]
name = "plain"
path_prefix = "/p"
public = true
upstream = "app"

[[routes]]
name = "authed"
path_prefix = "/a"
auth = ["partners"]
upstream = "app"
waf = "block"
"#,
        up = up.addr()
    );
    let keys =
        format!("[[keys]]\nid = \"good1\"\nconsumer = \"c-good1\"\nhash = \"sha256:{key}\"\n");
    Gateway::start_with_files(&body, &[("keys.toml", &keys)])
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, None)
}

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Response {
    request(
        addr,
        "POST",
        path,
        &[("content-type", content_type)],
        Some(body),
    )
}

const XSS: &str = "?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
const SQLI: &str = "?id=1%27%20OR%201%3D1%20--";
const TRAVERSAL: &str = "?file=..%2F..%2F..%2Fetc%2Fpasswd";
const RCE: &str = "?cmd=%3Bcat%20%2Fetc%2Fpasswd";
const DOUBLE_ENCODED: &str = "?q=%253Cscript%253Ealert(1)%253C%252Fscript%253E";

#[test]
fn attacks_are_blocked_and_nothing_reaches_the_upstream() {
    let up = Upstream::start("app");
    let gw = start(&up, "", "");
    for attack in [XSS, SQLI, TRAVERSAL, RCE, DOUBLE_ENCODED] {
        let r = get(gw.addr, &format!("/b/orders{attack}"), &[]);
        assert_error(&r, 403, "request_blocked");
    }
    let r = get(
        gw.addr,
        "/b/orders",
        &[("x-api-version", "${jndi:ldap://x/a}")],
    );
    assert_error(&r, 403, "request_blocked");
    let r = get(
        gw.addr,
        "/b/orders",
        &[("user-agent", "${${lower:j}ndi:ldap://x/a}")],
    );
    assert_error(&r, 403, "request_blocked");
    let json = br#"{"name":"x' OR 1=1 --","note":"ok"}"#;
    assert_error(
        &post(gw.addr, "/b/orders", "application/json", json),
        403,
        "request_blocked",
    );
    let json = br#"{"html":"<script>alert(document.cookie)</script>"}"#;
    assert_error(
        &post(gw.addr, "/b/orders", "application/json", json),
        403,
        "request_blocked",
    );
    let form = b"comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let r = post(
        gw.addr,
        "/b/orders",
        "application/x-www-form-urlencoded",
        form,
    );
    assert_error(&r, 403, "request_blocked");
    assert_eq!(up.hits(), 0, "no blocked request reached the upstream");

    let events = gw.wait_security_events("waf_blocked", 10);
    assert!(events.len() >= 10, "{events:?}");
    for e in &events {
        assert_eq!(e["route"], "block");
        let ids = e["rule_ids"].as_array().expect("rule ids");
        assert!(!ids.is_empty(), "{e}");
        assert!(e["anomaly_score"].as_u64().is_some_and(|s| s >= 5), "{e}");
        let line = e.to_string();
        for leaked in ["script", "passwd", "jndi", "1=1", "alert"] {
            assert!(!line.contains(leaked), "payload in the event: {line}");
        }
    }
}

#[test]
fn detect_mode_passes_and_records_and_routes_without_waf_are_untouched() {
    let up = Upstream::start("app");
    let gw = start(&up, "", "");
    let r = get(gw.addr, &format!("/d/orders{XSS}"), &[]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let e = gw
        .wait_security_event("waf_detected")
        .expect("waf_detected");
    assert_eq!(e["route"], "detect");
    assert!(!e["rule_ids"].as_array().expect("ids").is_empty());
    let r = get(gw.addr, &format!("/p/orders{XSS}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 2);
    assert!(gw.security_events("waf_blocked").is_empty());
}

#[test]
fn ordinary_api_requests_pass_at_paranoia_level_1() {
    let up = Upstream::start("app");
    let gw = start(&up, "", "");
    let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEyMyIsInNjb3BlIjoib3JkZXJzOnJlYWQifQ.c2lnbmF0dXJlLWJ5dGVz";
    let gets = [
        "/b/orders",
        "/b/orders/6f1c2a4e-8b3d-4f5a-9c7e-1d2b3a4c5e6f",
        "/b/orders?since=2026-12-02T13:00:00Z&limit=50&sort=-created_at",
        "/b/orders?cursor=eyJpZCI6NDJ9&fields=id,total,status",
        "/b/search?q=blue+shoes&page=2",
    ];
    for path in gets {
        let auth = format!("Bearer {jwt}");
        let r = get(
            gw.addr,
            path,
            &[("authorization", &auth), ("accept", "application/json")],
        );
        assert_eq!(r.status, 200, "{path}: {}", r.body_str());
    }
    let bodies: [&[u8]; 4] = [
        br#"{"customer":"acme","items":[{"sku":"a-1","qty":2}],"note":"Leave at the door, please."}"#,
        br#"{"id":"6f1c2a4e-8b3d-4f5a-9c7e-1d2b3a4c5e6f","when":"2026-12-02T13:00:00.000Z","tags":["new","vip"]}"#,
        br#"{"avatar":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==","enabled":true,"count":0}"#,
        br#"{"email":"alice@example.com","name":"Alice O'Brien","phone":"+1-555-0100"}"#,
    ];
    for body in bodies {
        for method in ["POST", "PUT", "PATCH"] {
            let r = request(
                gw.addr,
                method,
                "/b/orders",
                &[("content-type", "application/json")],
                Some(body),
            );
            assert_eq!(
                r.status,
                200,
                "{method} {}: {}",
                String::from_utf8_lossy(body),
                r.body_str()
            );
        }
    }
    let r = post(
        gw.addr,
        "/b/orders",
        "application/x-www-form-urlencoded",
        b"name=Alice&qty=2&date=2026-12-02",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = up.last_request().expect("forwarded");
    assert_eq!(
        seen["body"], "name=Alice&qty=2&date=2026-12-02",
        "the body reaches the upstream unchanged"
    );
    assert!(gw.security_events("waf_blocked").is_empty());
}

#[test]
fn an_excluded_rule_stops_blocking_on_that_route_only() {
    let up = Upstream::start("app");
    // 99010: the Log4Shell rule Portcullis adds to the CRS.
    let gw = start(&up, "waf_exclude_rules = [99010]", "");
    let jndi = [("x-api-version", "${jndi:ldap://x/a}")];
    let r = get(gw.addr, "/b/orders", &jndi);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = get(
        gw.addr,
        "/a/orders",
        &[
            (
                "x-api-key",
                "pc_good1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            jndi[0],
        ],
    );
    assert_error(&r, 403, "request_blocked");
    let r = get(gw.addr, &format!("/b/orders{XSS}"), &[]);
    assert_error(&r, 403, "request_blocked");
}

#[test]
fn the_waf_runs_after_authentication() {
    let up = Upstream::start("app");
    let gw = start(&up, "", "");
    let r = get(gw.addr, &format!("/a/orders{XSS}"), &[]);
    assert_eq!(r.status, 401, "{}", r.body_str());
    let r = get(
        gw.addr,
        &format!("/a/orders{XSS}"),
        &[(
            "x-api-key",
            "pc_good1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
    );
    assert_error(&r, 403, "request_blocked");
    let r = get(
        gw.addr,
        "/a/orders",
        &[(
            "x-api-key",
            "pc_good1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.hits(), 1);
}

#[test]
fn a_body_over_inspect_body_bytes_follows_oversize() {
    let up = Upstream::start("app");
    let big = format!(r#"{{"pad":"{}"}}"#, "a".repeat(5000));
    let gw = start(&up, "", "");
    let r = post(gw.addr, "/b/orders", "application/json", big.as_bytes());
    assert_error(&r, 413, "payload_too_large");
    assert_eq!(up.hits(), 0);
    drop(gw);
    let gw = start(&up, "", "oversize = \"skip\"");
    let r = post(gw.addr, "/b/orders", "application/json", big.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last_request().expect("forwarded")["body_len"], big.len());
    drop(gw);
    let gw = start(&up, "", "oversize = \"inspect_prefix\"");
    let attack = format!(
        r#"{{"q":"<script>alert(1)</script>","pad":"{}"}}"#,
        "a".repeat(5000)
    );
    let r = post(gw.addr, "/b/orders", "application/json", attack.as_bytes());
    assert_error(&r, 403, "request_blocked");
    let r = post(gw.addr, "/b/orders", "application/json", big.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body_str());
}

#[test]
fn check_reports_rule_file_errors_and_waf_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    let rules = dir.path().join("bad.conf");
    std::fs::write(
        &rules,
        "# local rules\nSecRule ARGS \"@rx a\" \"id:1,phase:2,nosuchaction\"\n",
    )
    .expect("write");
    let write = |waf: &str, route: &str| {
        let text = format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:1\"\n\n{waf}\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"r\"\npath = \"/\"\npublic = true\nupstream = \"app\"\n{route}\n"
        );
        std::fs::write(&path, text).expect("write");
    };
    let stderr = |out: std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    write(
        &format!("[waf]\nrules = [\"{}\"]\n", rules.display()),
        "waf = \"block\"",
    );
    let out = check(&path);
    assert!(!out.status.success());
    let err = stderr(out);
    assert!(err.contains("bad.conf:2:"), "{err}");
    assert!(err.contains("gw.toml:6:"), "{err}");
    write("", "waf = \"block\"");
    let err = stderr(check(&path));
    assert!(err.contains("needs a [waf] section"), "{err}");
    write(CRS, "waf = \"on\"");
    let err = stderr(check(&path));
    assert!(err.contains("gw.toml:") && err.contains("waf"), "{err}");
    write(&format!("{CRS}paranoia_level = 5\n"), "waf = \"block\"");
    assert!(!check(&path).status.success());
    write(&format!("{CRS}timeout_ms = 5\n"), "waf = \"block\"");
    let err = stderr(check(&path));
    assert!(
        err.contains("gw.toml:") && err.contains("timeout_ms"),
        "{err}"
    );
    write(CRS, "waf = \"detect\"\nwaf_exclude_rules = [942100, \"x\"]");
    assert!(!check(&path).status.success());
    write(CRS, "waf = \"block\"\nwaf_exclude_rules = [942100]");
    let out = check(&path);
    assert!(out.status.success(), "{}", stderr(out));
}

/// A gateway whose `[waf]` loads the CRS and then `local.conf` of its
/// directory, with one `block` route and one `detect` route.
fn start_local(up: &Upstream, local: &str, waf_extra: &str) -> Gateway {
    let body = format!(
        r#"
[waf]
engine = "modsecurity"
rules = ["/etc/modsecurity/crs/crs-setup.conf", "/usr/share/modsecurity-crs/rules/*.conf", "{{dir}}/local.conf"]
{waf_extra}

[upstreams.app]
targets = ["{up}"]

[[routes]]
name = "block"
path_prefix = "/b"
public = true
upstream = "app"
waf = "block"

[[routes]]
name = "detect"
path_prefix = "/d"
public = true
upstream = "app"
waf = "detect"
"#,
        up = up.addr()
    );
    Gateway::start_with_files(&body, &[("local.conf", local)])
}

fn probe_rule(value: &str) -> String {
    format!("# local rules\nSecRule REQUEST_HEADERS:x-probe \"@streq {value}\" \"id:10001,phase:1,deny,log\"\n")
}

#[test]
fn a_reload_with_a_broken_rule_file_keeps_the_old_rules() {
    let up = Upstream::start("app");
    let gw = start_local(&up, &probe_rule("one"), "");
    assert_error(
        &get(gw.addr, "/b/x", &[("x-probe", "one")]),
        403,
        "request_blocked",
    );
    assert_eq!(get(gw.addr, "/b/x", &[("x-probe", "two")]).status, 200);

    gw.write_file(
        "local.conf",
        "# local rules\nSecRule REQUEST_HEADERS:x-probe \"@streq two\" \"id:10001,phase:1,nosuchaction\"\n",
    );
    gw.signal("HUP");
    let failed = gw
        .wait_security_event("config_reload_failed")
        .expect("config_reload_failed event");
    assert!(
        failed.to_string().contains("local.conf:2"),
        "the rule file's place is named: {failed}"
    );
    // The old rules, the CRS's and the local one, still hold.
    assert_error(
        &get(gw.addr, "/b/x", &[("x-probe", "one")]),
        403,
        "request_blocked",
    );
    assert_error(
        &get(gw.addr, &format!("/b/x{XSS}"), &[]),
        403,
        "request_blocked",
    );
    assert_eq!(get(gw.addr, "/b/x", &[("x-probe", "two")]).status, 200);

    gw.write_file("local.conf", &probe_rule("two"));
    gw.signal("HUP");
    gw.wait_security_event("config_reloaded")
        .expect("config_reloaded event");
    assert_eq!(get(gw.addr, "/b/x", &[("x-probe", "one")]).status, 200);
    assert_error(
        &get(gw.addr, "/b/x", &[("x-probe", "two")]),
        403,
        "request_blocked",
    );
}

#[test]
fn paranoia_level_2_blocks_what_level_1_lets_through() {
    let up = Upstream::start("app");
    // Many SQL special characters in one value: CRS rule 942430, which
    // runs from paranoia level 2 on.
    let odd = "/b/x?a=b'c'd'e'f'g'h'i'j'k'l'm'n'o";
    let gw = start(&up, "", "");
    assert_eq!(get(gw.addr, odd, &[]).status, 200);
    drop(gw);
    let gw = start(&up, "", "paranoia_level = 2");
    assert_error(&get(gw.addr, odd, &[]), 403, "request_blocked");
    let event = gw.wait_security_event("waf_blocked").expect("waf_blocked");
    let ids = event["rule_ids"].as_array().expect("rule ids");
    assert!(ids.iter().any(|id| id == 942430), "{event}");
    // Ordinary requests still pass at level 2.
    assert_eq!(get(gw.addr, "/b/orders?id=42&page=2", &[]).status, 200);
    let json = br#"{"name":"Alice","when":"2026-12-02T13:00:00Z"}"#;
    assert_eq!(
        post(gw.addr, "/b/orders", "application/json", json).status,
        200
    );
}

#[test]
fn xml_bodies_are_parsed_and_unparsable_bodies_blocked() {
    let up = Upstream::start("app");
    let gw = start(&up, "", "");
    let ok = br#"<?xml version="1.0"?><order><id>42</id><note>two apples</note></order>"#;
    for kind in ["application/xml", "text/xml", "application/soap+xml"] {
        let r = post(gw.addr, "/b/orders", kind, ok);
        assert_eq!(r.status, 200, "{kind}: {}", r.body_str());
    }
    let hits = up.hits();
    for (kind, attack) in [
        (
            "application/xml",
            &b"<order><id>1' OR 1=1 --</id></order>"[..],
        ),
        (
            "text/xml",
            b"<order><note>&lt;script&gt;alert(1)&lt;/script&gt;</note></order>",
        ),
        (
            "application/xml",
            b"<order><cmd>;cat /etc/passwd</cmd></order>",
        ),
        (
            "application/xml",
            br#"<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>"#,
        ),
        ("application/xml", b"<order><id>42</id>"),
        ("application/json", br#"{"a":1,,"b":"x' OR 1=1 --"}"#),
        (
            "application/json",
            br#"garbage{"b":"<script>alert(1)</script>"}"#,
        ),
    ] {
        let r = post(gw.addr, "/b/orders", kind, attack);
        assert_error(&r, 403, "request_blocked");
    }
    assert_eq!(up.hits(), hits, "no blocked body reached the upstream");
}

#[test]
fn an_inspection_past_timeout_ms_blocks_or_passes_by_mode() {
    let up = Upstream::start("app");
    // Ten rules that backtrack on one header value until PCRE's match
    // limit: a pathological request, far slower than 300 ms, where an
    // ordinary one takes a few milliseconds.
    let slow: String = (0..10)
        .map(|i| {
            format!(
                "SecRule REQUEST_HEADERS:x-slow \"@rx ^(a|aa|aaa)+$\" \"id:{},phase:1,pass,nolog,t:none\"\n",
                12_000 + i
            )
        })
        .collect();
    let gw = start_local(&up, &slow, "timeout_ms = 300");
    let value = format!("{}!", "a".repeat(60));
    assert_error(
        &get(gw.addr, "/b/x", &[("x-slow", &value)]),
        403,
        "request_blocked",
    );
    let event = gw.wait_security_event("waf_blocked").expect("waf_blocked");
    assert_eq!(event["reason"], "timeout", "{event}");
    let r = get(gw.addr, "/d/x", &[("x-slow", &value)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let event = gw
        .wait_security_event("waf_detected")
        .expect("waf_detected");
    assert_eq!(event["reason"], "timeout", "{event}");
    assert_eq!(get(gw.addr, "/b/x", &[]).status, 200);
}
