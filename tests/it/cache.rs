//! The response cache through the real binary (CONTRACT §10): hits that
//! skip the upstream, the origin's Cache-Control, Vary and Set-Cookie,
//! every check still running on hits, consumers never sharing a body,
//! one upstream request for identical misses, purge, reload and the
//! memory bound.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common;
use common::client::request;
use common::gateway::{check, free_addr, Gateway};
use common::upstream::Upstream;
use common::{assert_error, wait_until, Response};

fn status(r: &Response) -> &str {
    r.header("x-cache-status").unwrap_or("-")
}

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    request(gw.addr, "GET", path, headers, None)
}

/// A public caching route `/c` on `up`, with `cache` as given, and an
/// admin listener.
fn public_config(up: &Upstream, admin: SocketAddr, cache: &str, extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\n\n{extra}\n[upstreams.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"c\"\npath_prefix = \"/c\"\npublic = true\nupstream = \"app\"\n\
         cache = {cache}\n\n\
         [[routes]]\nname = \"plain\"\npath_prefix = \"/plain\"\npublic = true\nupstream = \"app\"\n",
        up.addr()
    )
}

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    request(admin, "GET", path, &[], None)
}

fn metric(admin: SocketAddr, line_start: &str) -> Option<f64> {
    let text = admin_get(admin, "/metrics").body_str();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn hits_skip_the_upstream_and_carry_age() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&public_config(&up, admin, "{ ttl_seconds = 60 }", ""));
    let first = get(&gw, "/c/a?x=1", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(status(&first), "MISS");
    let second = get(&gw, "/c/a?x=1", &[]);
    assert_eq!(second.status, 200);
    assert_eq!(status(&second), "HIT", "{:?}", second.headers);
    assert_eq!(second.body, first.body);
    assert!(second.header("age").is_some(), "{:?}", second.headers);
    assert_eq!(up.hits(), 1);
    // Each response has its own request id, hit or not.
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));
    // HEAD is answered from the same entry, without a body.
    let head = request(gw.addr, "HEAD", "/c/a?x=1", &[], None);
    assert_eq!(status(&head), "HIT");
    assert!(head.body.is_empty());
    // Another query is another entry; POST is never cached.
    assert_eq!(status(&get(&gw, "/c/a?x=2", &[])), "MISS");
    let post = request(gw.addr, "POST", "/c/a?x=1", &[], Some(b"{}"));
    assert_eq!(post.status, 200);
    assert_eq!(status(&post), "BYPASS");
    assert_eq!(up.hits(), 3);
    // Routes without `cache` say nothing about it.
    assert_eq!(get(&gw, "/plain", &[]).header("x-cache-status"), None);
    // A path that normalizes to the same one is the same entry.
    assert_eq!(status(&get(&gw, "/c/./a?x=1", &[])), "HIT");
    assert!(wait_until(Duration::from_secs(5), || {
        metric(
            admin,
            "portcullis_cache_requests_total{result=\"HIT\",route=\"c\"}",
        )
        .is_some_and(|n| n >= 3.0)
    }));
    assert!(metric(admin, "portcullis_cache_bytes").is_some_and(|n| n > 0.0));
    let lines = gw.wait_access_log(7);
    assert!(lines.iter().all(|l| l["status"] != 0), "{lines:?}");
}

fn the_origin_decides_what_is_stored() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&public_config(
        &up,
        free_addr(),
        "{ ttl_seconds = 60, statuses = [200, 404], vary = [\"accept-language\"] }",
        "",
    ));
    let never = [
        "/c/ns?cache_control=no-store",
        "/c/nc?cache_control=no-cache",
        "/c/pr?cache_control=private",
        "/c/sc?set_cookie=session=1",
        "/c/vs?vary=*",
        "/c/vo?vary=Accept-Encoding",
        "/c/st?status=500",
        "/c/mz?cache_control=max-age=0",
    ];
    for path in never {
        for _ in 0..2 {
            let r = get(&gw, path, &[]);
            assert_eq!(status(&r), "MISS", "{path}: {:?}", r.headers);
        }
    }
    assert_eq!(up.hits(), 2 * never.len());
    // What is stored: a 404 of the list, a Vary the key covers.
    for path in ["/c/nf?status=404", "/c/vl?vary=Accept-Language"] {
        assert_eq!(status(&get(&gw, path, &[])), "MISS", "{path}");
        assert_eq!(status(&get(&gw, path, &[])), "HIT", "{path}");
    }
    // A request's own Cache-Control changes nothing.
    let r = get(&gw, "/c/nf?status=404", &[("cache-control", "no-cache")]);
    assert_eq!(status(&r), "HIT");
    assert_eq!(r.status, 404);
    // The vary header is part of the key.
    let de = [("accept-language", "de")];
    assert_eq!(status(&get(&gw, "/c/vl?vary=Accept-Language", &de)), "MISS");
    assert_eq!(status(&get(&gw, "/c/vl?vary=Accept-Language", &de)), "HIT");
    // The origin's max-age, below the route's ttl, expires the entry.
    assert_eq!(
        status(&get(&gw, "/c/short?cache_control=max-age=1", &[])),
        "MISS"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        status(&get(&gw, "/c/short?cache_control=max-age=1", &[])) == "EXPIRED"
    }));
}

fn keys_file(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(id, key)| {
            let hash = hex::encode(Sha256::digest(key.as_bytes()));
            format!("[[keys]]\nid = \"{id}\"\nconsumer = \"{id}\"\nhash = \"sha256:{hash}\"\n")
        })
        .collect()
}

const ALICE: &str = "pc_alice_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const BOB: &str = "pc_bobby_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn keyed_gateway(up: &Upstream, cache: &str, extra: &str) -> Gateway {
    let config = format!(
        "[auth.keys]\nkind = \"api_key\"\nkeys_file = \"{{dir}}/keys.toml\"\n\n{extra}\n\
         [upstreams.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"c\"\npath_prefix = \"/c\"\nauth = [\"keys\"]\nupstream = \"app\"\n\
         cache = {cache}\n",
        up.addr()
    );
    Gateway::start_with_files(
        &config,
        &[("keys.toml", &keys_file(&[("alice", ALICE), ("bobby", BOB)]))],
    )
}

fn every_check_runs_on_hits() {
    let up = Upstream::start("app");
    let gw = keyed_gateway(
        &up,
        "{ ttl_seconds = 60 }",
        "[protection.failed_auth]\nthreshold = 3\nwindow_seconds = 60\nblock_seconds = 60\n",
    );
    let path = "/c/x?cache_control=public,max-age=60";
    let alice = [("x-api-key", ALICE)];
    assert_eq!(status(&get(&gw, path, &alice)), "MISS");
    assert_eq!(status(&get(&gw, path, &alice)), "HIT");
    // Without a key, or with a wrong one, nothing comes from the cache.
    let r = get(&gw, path, &[]);
    assert_error(&r, 401, "missing_credentials");
    assert_eq!(status(&r), "BYPASS");
    for _ in 0..3 {
        let r = get(
            &gw,
            path,
            &[(
                "x-api-key",
                "pc_wrong_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
            )],
        );
        assert_eq!(r.status, 401);
    }
    // The client is locked out now: even a good key's hit is refused.
    let r = get(&gw, path, &alice);
    assert!(
        matches!(r.status, 403 | 429),
        "{} {}",
        r.status,
        r.body_str()
    );
    assert_ne!(status(&r), "HIT");
    assert_eq!(up.hits(), 1);
}

fn a_rate_limit_refuses_hits_too() {
    let up = Upstream::start("app");
    let up_addr = up.addr();
    let gw = Gateway::start(&format!(
        "[upstreams.app]\ntargets = [\"{up_addr}\"]\n\n\
         [[routes]]\nname = \"c\"\npath_prefix = \"/c\"\npublic = true\nupstream = \"app\"\n\
         cache = {{ ttl_seconds = 60 }}\nrate_limit = {{ per = \"client_ip\", requests = 3, window_seconds = 60 }}\n"
    ));
    for expected in ["MISS", "HIT", "HIT"] {
        assert_eq!(status(&get(&gw, "/c/r", &[])), expected);
    }
    let r = get(&gw, "/c/r", &[]);
    assert_error(&r, 429, "rate_limited");
    assert_eq!(status(&r), "BYPASS");
    assert_eq!(up.hits(), 1);
}

fn consumers_never_share_a_cached_body() {
    let up = Upstream::start("app");
    let gw = keyed_gateway(&up, "{ ttl_seconds = 60, scope = \"consumer\" }", "");
    let consumer = |r: &Response| {
        r.json()["headers"]["x-auth-consumer"]
            .as_str()
            .map(str::to_string)
    };
    let a1 = get(&gw, "/c/me?cache_control=private", &[("x-api-key", ALICE)]);
    assert_eq!(status(&a1), "MISS");
    let b1 = get(&gw, "/c/me?cache_control=private", &[("x-api-key", BOB)]);
    assert_eq!(status(&b1), "MISS");
    let a2 = get(&gw, "/c/me?cache_control=private", &[("x-api-key", ALICE)]);
    let b2 = get(&gw, "/c/me?cache_control=private", &[("x-api-key", BOB)]);
    assert_eq!((status(&a2), status(&b2)), ("HIT", "HIT"));
    assert_eq!(consumer(&a2).as_deref(), Some("alice"), "{}", a2.body_str());
    assert_eq!(consumer(&b2).as_deref(), Some("bobby"), "{}", b2.body_str());
    assert_eq!(up.hits(), 2);
}

fn a_shared_cache_stores_authenticated_responses_only_when_public() {
    let up = Upstream::start("app");
    let gw = keyed_gateway(&up, "{ ttl_seconds = 60 }", "");
    let alice = [("x-api-key", ALICE)];
    for path in ["/c/plain", "/c/aged?cache_control=max-age=60"] {
        assert_eq!(status(&get(&gw, path, &alice)), "MISS", "{path}");
        assert_eq!(status(&get(&gw, path, &alice)), "MISS", "{path}");
    }
    for path in [
        "/c/pub?cache_control=public",
        "/c/s?cache_control=s-maxage=30",
    ] {
        assert_eq!(status(&get(&gw, path, &alice)), "MISS", "{path}");
        assert_eq!(
            status(&get(&gw, path, &[("x-api-key", BOB)])),
            "HIT",
            "{path}"
        );
    }
}

crate::on_http1_and_h2c!(
    hits_skip_the_upstream_and_carry_age,
    the_origin_decides_what_is_stored,
    every_check_runs_on_hits,
    a_rate_limit_refuses_hits_too,
    consumers_never_share_a_cached_body,
    a_shared_cache_stores_authenticated_responses_only_when_public,
);

#[test]
fn identical_misses_are_one_upstream_request() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&public_config(&up, free_addr(), "{ ttl_seconds = 60 }", ""));
    let addr = gw.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || request(addr, "GET", "/c/slow?sleep_ms=700", &[], None))
        })
        .collect();
    let responses: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(responses.iter().all(|r| r.status == 200));
    assert_eq!(
        up.hits(),
        1,
        "identical misses reached the upstream separately"
    );
}

#[test]
fn purge_drops_entries_by_route_and_path() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&public_config(&up, admin, "{ ttl_seconds = 60 }", ""));
    for path in ["/c/a", "/c/a?q=1", "/c/b"] {
        assert_eq!(status(&get(&gw, path, &[])), "MISS");
    }
    let purge = |body: &str| {
        request(
            admin,
            "POST",
            "/cache/purge",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
    };
    let r = purge(r#"{"route": "c", "path": "/c/a"}"#);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(status(&get(&gw, "/c/a", &[])), "MISS");
    assert_eq!(status(&get(&gw, "/c/b", &[])), "HIT");
    let r = purge(r#"{"route": "c"}"#);
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(status(&get(&gw, "/c/b", &[])), "MISS");
    assert_error(&purge(r#"{"route": "plain"}"#), 404, "no_route");
    assert_error(&purge(r#"{"route": 1}"#), 400, "bad_request");
    assert_error(
        &purge(r#"{"route": "c", "paths": "/c"}"#),
        400,
        "bad_request",
    );
    assert_eq!(admin_get(admin, "/cache/purge").status, 405);
}

#[test]
fn reload_keeps_the_caches_of_unchanged_routes() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let two = |ttl: u32| {
        format!(
            "[admin]\nlisten = \"{admin}\"\n\n[upstreams.app]\ntargets = [\"{}\"]\n\n\
             [[routes]]\nname = \"a\"\npath_prefix = \"/a\"\npublic = true\nupstream = \"app\"\ncache = {{ ttl_seconds = 60 }}\n\n\
             [[routes]]\nname = \"b\"\npath_prefix = \"/b\"\npublic = true\nupstream = \"app\"\ncache = {{ ttl_seconds = {ttl} }}\n",
            up.addr()
        )
    };
    let gw = Gateway::start(&two(60));
    assert_eq!(status(&get(&gw, "/a", &[])), "MISS");
    assert_eq!(status(&get(&gw, "/b", &[])), "MISS");
    gw.write_config_body(&two(30));
    let r = request(admin, "POST", "/reload", &[], None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(status(&get(&gw, "/a", &[])), "HIT");
    assert_eq!(status(&get(&gw, "/b", &[])), "MISS");
}

#[test]
fn the_cache_stays_within_max_bytes() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let max_bytes = 64 * 1024;
    let gw = Gateway::start(&public_config(
        &up,
        admin,
        "{ ttl_seconds = 60 }",
        &format!("[cache]\nmax_bytes = {max_bytes}\nmax_object_bytes = 4096\n"),
    ));
    let mut conn = common::Conn::open(gw.addr);
    for i in 0..400 {
        let r = conn.get(&format!("/c/{i}?pad=300")).unwrap();
        assert_eq!(r.status, 200);
    }
    let within = wait_until(Duration::from_secs(5), || {
        metric(admin, "portcullis_cache_bytes ").is_some_and(|n| n > 0.0 && n <= max_bytes as f64)
    });
    assert!(within, "{:?}", metric(admin, "portcullis_cache_bytes "));
    // The newest entries are there, the oldest were evicted.
    assert_eq!(status(&conn.get("/c/399?pad=300").unwrap()), "HIT");
    assert_eq!(status(&conn.get("/c/0?pad=300").unwrap()), "MISS");
    // A response above max_object_bytes reaches the client whole, unstored.
    for _ in 0..2 {
        let r = conn.get("/c/big?pad=8000").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["pad"].as_str().map(str::len), Some(8000));
        assert_eq!(status(&r), "MISS");
    }
}

#[test]
fn cache_mistakes_are_refused_at_load() {
    let up = Upstream::start("app");
    let cases = [
        ("{ ttl_seconds = 0 }", "ttl_seconds"),
        ("{ statuses = [206] }", "206 and 304 are never stored"),
        ("{ statuses = [] }", "at least one status"),
        ("{ vary = [\"accept\", \"Accept\"] }", "listed twice"),
        ("{ scope = \"everyone\" }", "unknown scope"),
        ("{ ttl = 5 }", "unknown key `ttl`"),
    ];
    for (cache, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let text = format!(
            "[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\n\n{}",
            public_config(&up, free_addr(), cache, "")
        );
        std::fs::write(&path, text).unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cache} was accepted");
        assert!(stderr.contains(expected), "{cache}: {stderr}");
        assert!(stderr.contains("c.toml:"), "{stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = format!(
        "[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\n\n[cache]\nmax_bytes = 8192\nmax_object_bytes = 9000\n\n\
         [upstreams.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"c\"\npath = \"/c\"\npublic = true\nupstream = \"app\"\ncache = {{ scope = \"consumer\" }}\n\n\
         [[routes]]\nname = \"r\"\npath = \"/r\"\npublic = true\nrespond = {{ status = 200, body = \"x\" }}\ncache = {{}}\n",
        up.addr()
    );
    std::fs::write(&path, text).unwrap();
    let stderr = String::from_utf8_lossy(&check(&path).stderr).into_owned();
    for expected in [
        "above `max_bytes`",
        "needs a route with `auth`",
        "only applies to routes with an `upstream`",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[test]
fn a_canary_and_the_stable_side_keep_their_own_entries() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gw = Gateway::start(&format!(
        "[upstreams.stable]\ntargets = [\"{}\"]\n\n[upstreams.canary]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"c\"\npath_prefix = \"/c\"\npublic = true\n\
         upstreams = [{{ name = \"stable\", weight = 1 }}, {{ name = \"canary\", weight = 1 }}]\n\
         split_key = \"header:x-user\"\ncache = {{ ttl_seconds = 60 }}\n",
        stable.addr(),
        canary.addr()
    ));
    let server = |r: &Response| r.json()["server"].as_str().unwrap_or_default().to_string();
    let mut seen = std::collections::HashMap::new();
    for i in 0..64 {
        let user = format!("u{i}");
        let r = get(&gw, "/c/same", &[("x-user", &user)]);
        seen.entry(server(&r)).or_insert(user);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both sides were never chosen: {seen:?}");
    for (side, user) in &seen {
        let r = get(&gw, "/c/same", &[("x-user", user)]);
        assert_eq!(status(&r), "HIT");
        assert_eq!(&server(&r), side, "a stored answer crossed sides");
    }
}
