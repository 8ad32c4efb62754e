use super::*;

fn methods(names: &[&str]) -> MethodSet {
    names
        .iter()
        .map(|name| MethodSet::parse(name).unwrap())
        .reduce(MethodSet::union)
        .unwrap()
}

fn route(id: usize, hosts: &[&str], path: PathMatch, allowed: MethodSet) -> RouteSpec {
    RouteSpec {
        id: RouteId::new(id),
        hosts: hosts.iter().map(ToString::to_string).collect(),
        path,
        methods: allowed,
        listeners: ListenerSet::ALL,
        match_headers: Vec::new(),
    }
}

fn exact(path: &str) -> PathMatch {
    PathMatch::Exact(path.to_owned())
}

fn prefix(path: &str) -> PathMatch {
    PathMatch::Prefix(path.to_owned())
}

fn get(table: &RouteTable, host: Option<&str>, path: &str) -> Lookup {
    table.lookup(host, path, &Method::GET)
}

#[test]
fn table_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable>();
}

#[test]
fn host_routes_win() {
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/"), MethodSet::ANY),
        route(1, &["api.example.com"], prefix("/v1"), MethodSet::ANY),
    ]);
    assert_eq!(
        get(&table, Some("api.example.com"), "/v1/x"),
        Lookup::Found(RouteId::new(1))
    );
    assert_eq!(
        get(&table, Some("Api.Example.COM:8443"), "/v1/x"),
        Lookup::Found(RouteId::new(1))
    );
    assert_eq!(
        get(&table, Some("other.com"), "/v1/x"),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(get(&table, None, "/v1/x"), Lookup::Found(RouteId::new(0)));
}

#[test]
fn host_falls_back_to_any_host_when_no_host_route_covers_path() {
    let table = RouteTable::new(vec![
        route(0, &["api.example.com"], exact("/health"), MethodSet::ANY),
        route(1, &[], prefix("/static"), MethodSet::ANY),
    ]);
    assert_eq!(
        get(&table, Some("API.example.com:80"), "/static/app.js"),
        Lookup::Found(RouteId::new(1))
    );
    assert_eq!(
        get(&table, Some("api.example.com"), "/health"),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(get(&table, None, "/health"), Lookup::NotFound);
}

#[test]
fn host_405_does_not_fall_through() {
    let table = RouteTable::new(vec![
        route(0, &["api.example.com"], prefix("/v1"), methods(&["GET"])),
        route(1, &[], prefix("/"), MethodSet::ANY),
    ]);
    assert_eq!(
        table.lookup(Some("api.example.com"), "/v1/x", &Method::DELETE),
        Lookup::MethodNotAllowed(methods(&["GET"]))
    );
}

#[test]
fn exact_beats_prefix() {
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/api/users"), MethodSet::ANY),
        route(1, &[], exact("/api/users"), MethodSet::ANY),
    ]);
    assert_eq!(
        get(&table, None, "/api/users"),
        Lookup::Found(RouteId::new(1))
    );
    assert_eq!(
        get(&table, None, "/api/users/7"),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(
        get(&table, None, "/api/users/"),
        Lookup::Found(RouteId::new(0))
    );
}

#[test]
fn longest_prefix_wins() {
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/api"), MethodSet::ANY),
        route(1, &[], prefix("/api/v1/admin"), MethodSet::ANY),
        route(2, &[], prefix("/api/v1"), MethodSet::ANY),
    ]);
    assert_eq!(
        get(&table, None, "/api/v1/admin/x/y"),
        Lookup::Found(RouteId::new(1))
    );
    assert_eq!(
        get(&table, None, "/api/v1/adminx"),
        Lookup::Found(RouteId::new(2))
    );
    assert_eq!(get(&table, None, "/api/v1"), Lookup::Found(RouteId::new(2)));
    assert_eq!(get(&table, None, "/api/v2"), Lookup::Found(RouteId::new(0)));
}

#[test]
fn prefix_matches_at_segment_boundaries_only() {
    let table = RouteTable::new(vec![route(0, &[], prefix("/api"), MethodSet::ANY)]);
    assert_eq!(get(&table, None, "/api"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/api/"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/api/x"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/apiary"), Lookup::NotFound);
    assert_eq!(get(&table, None, "/ap"), Lookup::NotFound);
    assert_eq!(get(&table, None, "/"), Lookup::NotFound);
}

#[test]
fn trailing_slash_prefix_behaves_like_bare_prefix() {
    let table = RouteTable::new(vec![route(0, &[], prefix("/api/"), MethodSet::ANY)]);
    assert_eq!(get(&table, None, "/api"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/api/"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/api/x"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/apiary"), Lookup::NotFound);
}

#[test]
fn method_not_allowed_reports_union() {
    let table = RouteTable::new(vec![
        route(0, &[], exact("/orders"), methods(&["GET"])),
        route(1, &[], prefix("/orders"), methods(&["POST", "PUT"])),
        route(2, &[], prefix("/other"), methods(&["DELETE"])),
    ]);
    let answer = table.lookup(None, "/orders", &Method::DELETE);
    assert_eq!(
        answer,
        Lookup::MethodNotAllowed(methods(&["GET", "POST", "PUT"]))
    );
    let Lookup::MethodNotAllowed(allowed) = answer else {
        unreachable!()
    };
    assert_eq!(allowed.allow_header(), "GET, POST, PUT");
}

#[test]
fn method_can_select_less_specific_route() {
    let table = RouteTable::new(vec![
        route(0, &[], exact("/orders"), methods(&["GET"])),
        route(1, &[], prefix("/orders"), methods(&["POST"])),
        route(2, &[], prefix("/"), methods(&["PUT"])),
    ]);
    assert_eq!(get(&table, None, "/orders"), Lookup::Found(RouteId::new(0)));
    assert_eq!(
        table.lookup(None, "/orders", &Method::POST),
        Lookup::Found(RouteId::new(1))
    );
    assert_eq!(
        table.lookup(None, "/orders", &Method::PUT),
        Lookup::Found(RouteId::new(2))
    );
}

#[test]
fn equal_precedence_goes_to_lowest_id() {
    let table = RouteTable::new(vec![
        route(5, &[], prefix("/a"), MethodSet::ANY),
        route(3, &[], prefix("/a/"), MethodSet::ANY),
        route(4, &["h", "h"], prefix("/a"), MethodSet::ANY),
    ]);
    assert_eq!(get(&table, None, "/a/b"), Lookup::Found(RouteId::new(3)));
    assert_eq!(
        get(&table, Some("h"), "/a/b"),
        Lookup::Found(RouteId::new(4))
    );
}

#[test]
fn no_route_is_not_found() {
    let table = RouteTable::new(vec![route(0, &["a.com"], prefix("/"), MethodSet::ANY)]);
    assert_eq!(get(&table, None, "/x"), Lookup::NotFound);
    assert_eq!(get(&table, Some("b.com"), "/x"), Lookup::NotFound);
    assert_eq!(
        get(&RouteTable::new(Vec::new()), None, "/"),
        Lookup::NotFound
    );
}

#[test]
fn root_prefix_catches_everything() {
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/"), MethodSet::ANY),
        route(1, &[], prefix("/api"), MethodSet::ANY),
    ]);
    assert_eq!(get(&table, None, "/"), Lookup::Found(RouteId::new(0)));
    assert_eq!(
        get(&table, None, "/anything/deep/x"),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(get(&table, None, "/apiary"), Lookup::Found(RouteId::new(0)));
    assert_eq!(get(&table, None, "/api/x"), Lookup::Found(RouteId::new(1)));
    let any_slashes = RouteTable::new(vec![route(7, &[], prefix("///"), MethodSet::ANY)]);
    assert_eq!(
        get(&any_slashes, None, "/x"),
        Lookup::Found(RouteId::new(7))
    );
}

#[test]
fn odd_paths_do_not_panic() {
    let table = RouteTable::new(vec![route(0, &[], prefix("/a"), MethodSet::ANY)]);
    for path in ["", "a", "//", "/a//", "a/b", "/\u{e9}/x"] {
        let _ = get(&table, Some(""), path);
    }
    assert_eq!(
        prefix_keys_of("/a/b").collect::<Vec<_>>(),
        ["/a/b", "/a", "/"]
    );
    assert_eq!(
        prefix_keys_of("/a/b/").collect::<Vec<_>>(),
        ["/a/b", "/a", "/"]
    );
    assert_eq!(prefix_keys_of("/").collect::<Vec<_>>(), ["/"]);
}

#[test]
fn very_deep_path_still_reaches_short_prefix() {
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/"), methods(&["GET"])),
        route(1, &[], prefix("/a/a"), methods(&["GET"])),
    ]);
    let deep = "/a".repeat(10_000);
    assert_eq!(get(&table, None, &deep), Lookup::Found(RouteId::new(1)));
    assert_eq!(
        table.lookup(None, &deep, &Method::POST),
        Lookup::MethodNotAllowed(methods(&["GET"]))
    );
}

#[test]
fn host_of_strips_port() {
    assert_eq!(host_of("Api.Example.com:8080"), "Api.Example.com");
    assert_eq!(host_of("example.com"), "example.com");
    assert_eq!(host_of("[::1]:80"), "[::1]");
    assert_eq!(host_of("[::1]"), "[::1]");
    assert_eq!(host_of("[::1"), "[::1");
    assert_eq!(host_of(""), "");
    assert_eq!(host_of(":80"), "");
}

fn when(mut spec: RouteSpec, name: &'static str, value: &'static str) -> RouteSpec {
    spec.match_headers.push((
        http::HeaderName::from_static(name),
        http::HeaderValue::from_static(value),
    ));
    spec
}

fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, http::HeaderValue::from_static(value));
    }
    map
}

#[test]
fn a_route_whose_headers_match_beats_one_without() {
    let all = methods(&["GET", "POST"]);
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/orders"), all),
        when(route(1, &[], prefix("/orders"), all), "x-api-version", "2"),
        when(
            when(route(2, &[], prefix("/orders"), all), "x-api-version", "3"),
            "x-beta",
            "yes",
        ),
    ]);
    let find = |h: &[(&'static str, &'static str)]| {
        table.lookup_on(None, "/orders/7", &Method::GET, &headers(h), None)
    };
    assert_eq!(find(&[]), Lookup::Found(RouteId::new(0)));
    assert_eq!(
        find(&[("x-api-version", "2")]),
        Lookup::Found(RouteId::new(1))
    );
    // Exact and case-sensitive values; every header of the route.
    assert_eq!(
        find(&[("x-api-version", "2 ")]),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(
        find(&[("x-api-version", "3")]),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(
        find(&[("x-api-version", "3"), ("x-beta", "yes")]),
        Lookup::Found(RouteId::new(2))
    );
    assert_eq!(
        find(&[("x-beta", "YES"), ("x-api-version", "3")]),
        Lookup::Found(RouteId::new(0))
    );
    // A repeated header matches no value, whatever its copies say.
    assert_eq!(
        find(&[("x-api-version", "2"), ("x-api-version", "2")]),
        Lookup::Found(RouteId::new(0))
    );
    assert_eq!(
        find(&[("x-api-version", "1"), ("x-api-version", "2")]),
        Lookup::Found(RouteId::new(0))
    );
}

#[test]
fn a_header_route_beats_a_longer_plain_prefix_and_is_invisible_unmatched() {
    let get = methods(&["GET"]);
    let table = RouteTable::new(vec![
        route(0, &[], prefix("/orders/archive"), get),
        when(
            route(1, &[], prefix("/orders"), methods(&["POST"])),
            "x-api-version",
            "2",
        ),
    ]);
    let find = |m: &Method, h: &[(&'static str, &'static str)]| {
        table.lookup_on(None, "/orders/archive/1", m, &headers(h), None)
    };
    // Among the routes covering the path, the one whose headers match.
    assert_eq!(
        find(&Method::POST, &[("x-api-version", "2")]),
        Lookup::Found(RouteId::new(1))
    );
    // Its method set only counts when its headers match.
    assert_eq!(find(&Method::POST, &[]), Lookup::MethodNotAllowed(get));
    assert_eq!(
        find(&Method::GET, &[("x-api-version", "2")]),
        Lookup::Found(RouteId::new(0))
    );
}
