//! Version and canary routing through the real binary (CONTRACT §11):
//! `match_headers`, weighted `upstreams` with and without `split_key`,
//! and the `deprecation` headers.

use crate::common;
use common::client::request;
use common::gateway::Gateway;
use common::upstream::Upstream;

fn server(resp: &common::Response) -> String {
    resp.json()["server"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn match_headers_send_a_version_to_its_upstream() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let gw = Gateway::start(&format!(
        "[upstreams.v1]\ntargets = [\"{}\"]\n\n[upstreams.v2]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\npublic = true\nupstream = \"v1\"\n\n\
         [[routes]]\nname = \"orders-v2\"\npath_prefix = \"/orders\"\npublic = true\nupstream = \"v2\"\n\
         match_headers = {{ \"X-Api-Version\" = \"2\" }}\n",
        v1.addr(),
        v2.addr()
    ));
    let at =
        |headers: &[(&str, &str)]| server(&request(gw.addr, "GET", "/orders/7", headers, None));
    assert_eq!(at(&[]), "v1");
    assert_eq!(at(&[("x-api-version", "2")]), "v2");
    // Exact values only, and a repeated header says two things: neither.
    assert_eq!(at(&[("x-api-version", "02")]), "v1");
    assert_eq!(at(&[("x-api-version", "2"), ("x-api-version", "2")]), "v1");
    assert_eq!(at(&[("x-api-version", "1"), ("x-api-version", "2")]), "v1");
    // The access log names the route and the upstream chosen.
    let lines = gw.wait_access_log(5);
    let v2_line = lines.iter().find(|l| l["route"] == "orders-v2").unwrap();
    assert_eq!(v2_line["upstream"], "v2", "{v2_line}");
}

fn split_config(stable: &Upstream, canary: &Upstream, extra: &str) -> String {
    format!(
        "[upstreams.stable]\ntargets = [\"{}\"]\n\n[upstreams.canary]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\npublic = true\n\
         upstreams = [{{ name = \"stable\", weight = 80 }}, {{ name = \"canary\", weight = 20 }}]\n{extra}\n",
        stable.addr(),
        canary.addr()
    )
}

#[test]
fn weighted_upstreams_split_the_traffic() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gw = Gateway::start(&split_config(&stable, &canary, ""));
    let n = 1000;
    let mut conn = common::Conn::open(gw.addr);
    for _ in 0..n {
        let r = conn.request("GET", "/orders", &[], None).unwrap();
        assert_eq!(r.status, 200);
    }
    // Binomial(1000, 0.2): mean 200, standard deviation 12.6; five of them
    // either way is a false failure once in millions of runs.
    let got = canary.hits();
    assert!((137..=263).contains(&got), "canary got {got} of {n}");
    assert_eq!(stable.hits() + got, n);
}

fn a_split_key_keeps_each_caller_on_one_side() {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let gw = Gateway::start(&split_config(
        &stable,
        &canary,
        "split_key = \"header:x-user\"",
    ));
    let mut sides = std::collections::HashMap::new();
    for user in 0..40 {
        let user = format!("user-{user}");
        let first = server(&request(
            gw.addr,
            "GET",
            "/orders",
            &[("x-user", &user)],
            None,
        ));
        for _ in 0..3 {
            let again = server(&request(
                gw.addr,
                "GET",
                "/orders",
                &[("x-user", &user)],
                None,
            ));
            assert_eq!(again, first, "{user} moved");
        }
        *sides.entry(first).or_insert(0) += 1;
    }
    // 40 callers at 80/20: both sides are used (all on one side has
    // probability 0.8^40 + 0.2^40, about 1e-4).
    assert_eq!(sides.len(), 2, "{sides:?}");
    // The choice is a hash of the key, so a second gateway agrees with the
    // first on every caller.
    let other = Gateway::start(&split_config(
        &stable,
        &canary,
        "split_key = \"header:x-user\"",
    ));
    for user in 0..40 {
        let user = format!("user-{user}");
        let a = server(&request(
            gw.addr,
            "GET",
            "/orders",
            &[("x-user", &user)],
            None,
        ));
        let b = server(&request(
            other.addr,
            "GET",
            "/orders",
            &[("x-user", &user)],
            None,
        ));
        assert_eq!(a, b, "{user}");
    }
}

fn deprecated_routes_say_so_on_every_response() {
    let up = Upstream::start("old");
    let gw = Gateway::start(&format!(
        "[upstreams.old]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"old\"\npath_prefix = \"/v1\"\npublic = true\nupstream = \"old\"\n\
         rate_limit = {{ per = \"client_ip\", requests = 1, window_seconds = 60, burst = 1 }}\n\
         deprecation = {{ since = \"2026-12-01T00:00:00Z\", sunset = \"2027-06-30T12:00:00+02:00\", link = \"https://developer.example.com/v2\" }}\n\n\
         [[routes]]\nname = \"new\"\npath_prefix = \"/v2\"\npublic = true\nupstream = \"old\"\n",
        up.addr()
    ));
    let check = |r: &common::Response| {
        assert_eq!(
            r.header("deprecation"),
            Some("@1796083200"),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("sunset"), Some("Wed, 30 Jun 2027 10:00:00 GMT"));
        assert_eq!(
            r.header("link"),
            Some("<https://developer.example.com/v2>; rel=\"deprecation\"")
        );
    };
    let r = request(gw.addr, "GET", "/v1/orders", &[], None);
    assert_eq!(r.status, 200);
    check(&r);
    // A refusal of the route says it too.
    let r = request(gw.addr, "GET", "/v1/orders", &[], None);
    assert_eq!(r.status, 429);
    check(&r);
    let r = request(gw.addr, "GET", "/v2/orders", &[], None);
    assert!(r.header("deprecation").is_none());
}

#[test]
fn version_routing_mistakes_are_refused_at_load() {
    let up = Upstream::start("app");
    let cases = [
        (
            "upstream = \"app\"\nupstreams = [{ name = \"app\" }]",
            "either `upstream` or `upstreams`",
        ),
        ("upstream = \"app\"\nsplit_key = \"consumer\"", "`split_key` only applies with `upstreams`"),
        ("upstreams = [{ name = \"nope\" }]", "unknown upstream `nope`"),
        (
            "upstreams = [{ name = \"app\" }, { name = \"app\" }]",
            "upstream `app` is listed twice",
        ),
        ("upstreams = [{ name = \"app\", weight = 0 }]", "weight"),
        ("upstreams = []", "`upstreams` must name 1 to 64 upstreams"),
        (
            "upstreams = [{ name = \"app\" }]\nsplit_key = \"cookie\"",
            "unknown hash_key `cookie`",
        ),
        (
            "upstream = \"app\"\nmatch_headers = {}",
            "`match_headers` must name at least one header",
        ),
        (
            "upstream = \"app\"\nmatch_headers = { \"bad name\" = \"1\" }",
            "`bad name` is not a valid header name",
        ),
        (
            "upstream = \"app\"\ndeprecation = { since = \"yesterday\" }",
            "`since` must be an RFC 3339 date-time",
        ),
        (
            "upstream = \"app\"\ndeprecation = { sunset = \"2027-01-01T00:00:00Z\" }",
            "`deprecation` needs `since`",
        ),
        (
            "upstream = \"app\"\ndeprecation = { since = \"2027-01-01T00:00:00Z\", sunset = \"2026-01-01T00:00:00Z\" }",
            "`sunset` must not be before `since`",
        ),
        (
            "upstream = \"app\"\ndeprecation = { since = \"2027-01-01T00:00:00Z\", link = \"/docs\" }",
            "`link` must be an absolute URI",
        ),
    ];
    for (route, message) in cases {
        let body = format!(
            "[upstreams.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\npublic = true\n{route}\n",
            up.addr()
        );
        let err = Gateway::try_start(&body).err().expect("refused");
        assert!(err.contains(message), "{route}: {err}");
    }
}

// Each of these runs twice, over HTTP/1.1 and over h2c (CONTRACT §9).
crate::on_http1_and_h2c!(
    match_headers_send_a_version_to_its_upstream,
    a_split_key_keeps_each_caller_on_one_side,
    deprecated_routes_say_so_on_every_response,
);
