use std::path::Path;

use super::*;

pub(crate) const BASE: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[upstreams.app]
targets = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]

[[routes]]
name = "app"
path_prefix = "/app"
public = true
upstream = "app"
"#;

fn errors(text: &str) -> Vec<String> {
    match parse_str(Path::new("gw.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn base_config_is_valid() {
    let c = parse_str(Path::new("gw.toml"), BASE).unwrap();
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.upstreams[0].targets[1].weight, 3);
    assert_eq!(c.sha256.len(), 64);
}

#[test]
fn typo_is_an_error_with_place_and_hint() {
    let text = BASE.replace("public = true", "public = true\nupstrem = \"x\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("gw.toml:13:1: unknown key `upstrem` in [routes[0]]"),
        "{errs:?}"
    );
    assert!(errs[0].contains("did you mean `upstream`?"), "{errs:?}");
}

#[test]
fn later_issue_keys_are_not_silently_accepted() {
    let text = BASE.replace("public = true", "public = true\nrequre_scopes = [\"a\"]");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("unknown key `requre_scopes`"), "{errs:?}");
}

#[test]
fn route_without_auth_or_public_is_refused() {
    let errs = errors(&BASE.replace("public = true\n", ""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("must name its `auth` providers or say `public = true`"));
    let errs = errors(&BASE.replace("public = true", "public = false"));
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn all_errors_reported_at_once_in_file_order() {
    let text = r#"
[server]
threads = 0
[[listeners]]
name = "http"
listen = "localhost:80"
[upstreams.app]
targets = ["nope"]
balance = "fastest"
[[routes]]
name = "r"
path = "/a/../b"
public = true
upstream = "missing"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(errs[0].starts_with("gw.toml:3:11: `threads`"), "{errs:#?}");
    assert!(errs[1].starts_with("gw.toml:6:10: `localhost:80` is not an IP:port"));
    assert!(errs[2].starts_with("gw.toml:8:12: target `nope`"));
    assert!(errs[3].starts_with("gw.toml:9:11: unknown balance `fastest`"));
    assert!(errs[4].starts_with("gw.toml:12:8: route path is not in normal form; write it as `/b`"));
    assert!(errs[5].starts_with("gw.toml:14:12: unknown upstream `missing`"));
}

#[test]
fn runtime_settings_of_server() {
    let c = parse_str(Path::new("gw.toml"), BASE).unwrap();
    assert_eq!(c.server.upstream_keepalive_pool_size, 1024);
    assert!(c.server.work_stealing);
    let text =
        format!("[server]\nupstream_keepalive_pool_size = 64\nwork_stealing = false\n{BASE}");
    let c = parse_str(Path::new("gw.toml"), &text).unwrap();
    assert_eq!(c.server.upstream_keepalive_pool_size, 64);
    assert!(!c.server.work_stealing);
    let errs = errors(&format!(
        "[server]\nupstream_keepalive_pool_size = 0\nwork_stealing = \"no\"\n{BASE}"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("gw.toml:2:32: `upstream_keepalive_pool_size`"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("gw.toml:3:17: `work_stealing`"),
        "{errs:#?}"
    );
}

#[test]
fn syntax_error_has_position() {
    let errs = errors("[server\nthreads = 1\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("gw.toml:1:"), "{errs:?}");
}

#[test]
fn wrong_types_and_ranges() {
    let text = BASE.replace(
        "[upstreams.app]",
        "[limits]\nmax_uri_bytes = \"big\"\nmax_body_bytes = -1\n[upstreams.app]\nretries = 99",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("`max_uri_bytes` in [limits] must be an integer, found string"));
    assert!(errs[1].contains("`max_body_bytes` in [limits] must be between"));
    assert!(errs[2].contains("`retries` in [upstreams.app] must be between 0 and 10"));
}

#[test]
fn route_cannot_raise_body_limit_or_mix_actions() {
    let text = BASE.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nmax_body_bytes = 99999999\nrespond = { status = 200 }\n",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("routes may only lower it")));
    assert!(errs
        .iter()
        .any(|e| e.contains("either `upstream` or `respond`")));
}

#[test]
fn framing_headers_cannot_be_rewritten() {
    let text = BASE.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nrequest_headers = { set = { \"Transfer-Encoding\" = \"chunked\" } }\n",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("controls message framing"));
}

#[test]
fn duplicate_names_and_hash_key_outside_consistent_hash() {
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"app\"\npath = \"/x\"\npublic = true\nrespond = {{ status = 204 }}\n"
    )
    .replace("weight = 3 }]", "weight = 3 }]\nhash_key = \"client_ip\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("`hash_key` only applies"));
    assert!(errs[1].contains("duplicate route name `app`"));
}

#[test]
fn authz_rules_are_validated() {
    let text = BASE.replace(
        "public = true",
        "public = true\nrequire_scopes = [\"a\"]\nallow_cidrs = [\"10.0.0.0/8\", \"nope\"]\nauthz_url = \"ftp://x\"\nauthz_cache_seconds = 5",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains("a public route cannot have it"),
        "{errs:?}"
    );
    assert!(
        errs[1].contains("`nope` is not an IP address or CIDR"),
        "{errs:?}"
    );
    assert!(
        errs[2].contains("must be an http:// or https:// URL"),
        "{errs:?}"
    );
    let text = format!("{BASE}\n[protection]\ndeny_cidrs = [\"::1/128\"]\nallow_cidr = []\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("did you mean `allow_cidrs`"), "{errs:?}");
}

/// `[auth]` holds providers and the token settings of CONTRACT §13 side
/// by side; each is told apart, and each mistake has its place.
#[test]
fn auth_settings_beside_providers() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "introspection-secret").unwrap();
    let provider = format!(
        "[auth.opaque]\nkind = \"introspection\"\nendpoint = \"http://127.0.0.1:9/i\"\nclient_id = \"gw\"\nclient_secret_file = \"{}\"\n",
        secret.display()
    );
    let file = dir.path().join("revocations.json");
    let text = format!(
        "{BASE}\n[auth]\nrevocations_file = \"{}\"\n\n{provider}dpop = \"required\"\ndpop_algorithms = [\"ES256\"]\n",
        file.display()
    );
    let c = parse_str(Path::new("gw.toml"), &text).unwrap();
    assert_eq!(c.auth.len(), 1);
    assert_eq!(
        c.tokens.revocations_file.map(|f| f.value),
        Some(file.clone())
    );
    let AuthKind::Introspection(p) = &c.auth[0].kind else {
        panic!("introspection");
    };
    assert_eq!(p.dpop.mode, DpopMode::Required);
    assert_eq!(p.dpop.proof_lifetime_seconds, 60);

    let text = format!("{BASE}\n[auth]\nrevocation_file = \"x\"\n\n{provider}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("gw.toml:16:1: unknown setting `revocation_file` in [auth]"),
        "{errs:?}"
    );

    let text = format!(
        "{BASE}\n{provider}dpop = \"sometimes\"\ndpop_algorithms = [\"HS256\", \"none\"]\ndpop_proof_lifetime_seconds = 0\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs[0].contains("unknown dpop `sometimes`"), "{errs:?}");
    assert!(errs[1].contains("use an asymmetric algorithm"), "{errs:?}");
    assert!(
        errs[2].contains("algorithm `none` is not allowed"),
        "{errs:?}"
    );
    assert!(errs[3].contains("between 1 and 3600"), "{errs:?}");

    std::fs::write(&file, "{\"revocations\": [{\"jti\": \"x\"}]}").unwrap();
    let text = format!(
        "{BASE}\n[auth]\nrevocations_file = \"{}\"\n",
        file.display()
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("entry 1: a `jti` revocation needs `expires_at`"),
        "{errs:?}"
    );
}
