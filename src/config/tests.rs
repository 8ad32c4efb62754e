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

#[test]
fn host_name_targets_are_checked_not_resolved() {
    let text = BASE.replace(
        "targets = [\"127.0.0.1:9001\", { address = \"127.0.0.1:9002\", weight = 3 }]",
        "targets = [\"Orders.Internal:8080\", { address = \"localhost.:9002\", weight = 3 }, \"[::1]:9003\"]\ndns_refresh_seconds = 5",
    );
    let c = parse_str(Path::new("gw.toml"), &text).unwrap();
    let u = &c.upstreams[0];
    assert_eq!(
        u.targets[0].addr,
        TargetAddr::Name {
            host: "orders.internal".into(),
            port: 8080
        }
    );
    assert_eq!(u.targets[1].addr.to_string(), "localhost.:9002");
    assert_eq!(u.targets[1].weight, 3);
    assert_eq!(u.targets[2].addr.to_string(), "[::1]:9003");
    assert_eq!(u.dns_refresh, std::time::Duration::from_secs(5));
    assert_eq!(
        parse_str(Path::new("gw.toml"), BASE).unwrap().upstreams[0].dns_refresh,
        std::time::Duration::from_secs(30)
    );
    for bad in [
        "a.com",
        "a.com:",
        "a.com:0",
        "a.com:65536",
        "a.com:+80",
        "::1:80",
        "[::1:80",
        "a..com:80",
        "-a.com:80",
        "a-.com:80",
        "a b:80",
        "a%2e.com:80",
        "10.0.0:80",
        "256.1.1.1:80",
        "user@a.com:80",
        "a.com/x:80",
        ":80",
    ] {
        let text = BASE.replace("\"127.0.0.1:9001\"", &format!("\"{bad}\""));
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert!(errs[0].starts_with("gw.toml:7:"), "{bad}: {errs:?}");
        assert!(
            errs[0].contains("is not an IP:port address or a host:port name"),
            "{bad}: {errs:?}"
        );
    }
    let long = format!("{}.com:80", "a".repeat(64));
    assert_eq!(errors(&BASE.replace("127.0.0.1:9001", &long)).len(), 1);
    let errs = errors(
        &BASE
            .replace("\"127.0.0.1:9002\"", "\"A.com:80\"")
            .replace("\"127.0.0.1:9001\"", "\"a.COM:80\""),
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("duplicate target a.com:80"), "{errs:?}");
}

#[test]
fn dns_refresh_and_outlier_detection_are_validated() {
    let at = |extra: &str| BASE.replace("\n[[routes]]", &format!("{extra}\n\n[[routes]]"));
    let errs = errors(&at("dns_refresh_seconds = 10"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .starts_with("gw.toml:8:23: `dns_refresh_seconds` only applies to host-name targets"),
        "{errs:?}"
    );
    let errs = errors(&at("dns_refresh_seconds = 0"));
    assert!(errs[0].contains("must be between 1 and 86400"), "{errs:?}");

    let c = parse_str(
        Path::new("gw.toml"),
        &at("outlier_detection = { consecutive_failures = 3, base_ejection_seconds = 2, max_ejection_seconds = 4, max_ejection_percent = 100 }"),
    )
    .unwrap();
    let od = c.upstreams[0].outlier_detection.unwrap();
    assert_eq!(od.consecutive_failures, 3);
    assert_eq!(od.base_ejection, std::time::Duration::from_secs(2));
    assert_eq!(od.max_ejection, std::time::Duration::from_secs(4));
    assert_eq!(od.max_ejection_percent, 100);
    let c = parse_str(Path::new("gw.toml"), &at("outlier_detection = {}")).unwrap();
    let od = c.upstreams[0].outlier_detection.unwrap();
    assert_eq!(
        (
            od.consecutive_failures,
            od.base_ejection.as_secs(),
            od.max_ejection.as_secs(),
            od.max_ejection_percent
        ),
        (5, 30, 300, 50)
    );
    assert!(parse_str(Path::new("gw.toml"), BASE).unwrap().upstreams[0]
        .outlier_detection
        .is_none());

    for (bad, message) in [
        ("consecutive_failures = 0", "`consecutive_failures` in [upstreams.app.outlier_detection] must be between 1 and 1000"),
        ("max_ejection_percent = 101", "`max_ejection_percent` in [upstreams.app.outlier_detection] must be between 0 and 100"),
        ("base_ejection_seconds = 0", "must be between 1 and 86400"),
        ("max_ejection_seconds = -1", "must be between 1 and 86400"),
        ("base_ejection_seconds = 60, max_ejection_seconds = 10", "`base_ejection_seconds` (60) must not exceed `max_ejection_seconds` (10)"),
        ("base_ejection_seconds = 600", "`base_ejection_seconds` (600) must not exceed `max_ejection_seconds` (300)"),
        ("consecutive_failure = 3", "unknown key"),
        ("max_ejection_percent = \"50\"", "must be an integer"),
    ] {
        let errs = errors(&at(&format!("outlier_detection = {{ {bad} }}")));
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert!(errs[0].starts_with("gw.toml:8:"), "{bad}: {errs:?}");
        assert!(errs[0].contains(message), "{bad}: {errs:?}");
    }
    let errs = errors(&at("outlier_detection = 5"));
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn alerts_and_chained_log_keys_are_validated() {
    let ok = format!(
        "{BASE}\n[alerts]\nwebhook_url = \"https://hooks.example/x?token=s\"\nevents = [\"brute_force_lockout\", \"upstream_ejected\"]\nauth_failure_spike = {{ per_minute = 100 }}\n\n[log]\nsecurity_log = \"/var/log/portcullis/security.log\"\nsecurity_log_chain = true\nmax_consumer_labels = 5\n"
    );
    let c = parse_str(Path::new("gw.toml"), &ok).unwrap();
    let alerts = c.alerts.unwrap();
    assert_eq!(alerts.events, ["brute_force_lockout", "upstream_ejected"]);
    assert_eq!(alerts.auth_failure_spike, Some(100));
    assert!(c.log.security_log_chain);
    assert_eq!(c.log.max_consumer_labels, 5);

    let cases: [(&str, &str); 8] = [
        (
            "[log]\nsecurity_log_chain = true\n",
            "gw.toml:16:22: `security_log_chain` needs `security_log` to be a file",
        ),
        (
            "[alerts]\nwebhook_url = \"ftp://x\"\n",
            "gw.toml:16:15: `webhook_url` must be an http:// or https:// URL",
        ),
        ("[alerts]\nevents = []\n", "gw.toml:15:1: [alerts] needs `webhook_url`"),
        (
            "[alerts]\nwebhook_url = \"http://h/\"\nevents = [\"brute_force_lockuot\"]\n",
            "did you mean `brute_force_lockout`?",
        ),
        (
            "[alerts]\nwebhook_url = \"http://h/\"\nevents = [\"config_reloaded\", \"config_reloaded\"]\n",
            "gw.toml:17:30: `config_reloaded` is listed twice",
        ),
        (
            "[alerts]\nwebhook_url = \"http://h/\"\nauth_failure_spike = { per_minut = 3 }\n",
            "unknown key `per_minut` in [alerts.auth_failure_spike]",
        ),
        (
            "[log]\nsecurity_log_key_file = \"/nonexistent/k\"\n",
            "set `security_log_chain = true`",
        ),
        (
            "[log]\nsecurity_log_chain = true\nsecurity_log_key_file = \"/nonexistent/k\"\n",
            "gw.toml:17:25: cannot read `/nonexistent/k`",
        ),
    ];
    for (extra, want) in cases {
        let errs = errors(&format!("{BASE}\n{extra}"));
        assert!(errs.iter().any(|e| e.contains(want)), "{extra}: {errs:?}");
    }
}

#[test]
fn the_checkpoint_key_must_be_a_private_ed25519_key_only_its_owner_reads() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
    let private = write("k.key", &key.to_pkcs8_pem(LineEnding::LF).unwrap());
    let public = write(
        "k.pub",
        &key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    );
    let config = |file: &Path| {
        format!(
            "{BASE}\n[log]\nsecurity_log = \"s.log\"\nsecurity_log_chain = true\nsecurity_log_key_file = \"{}\"\n",
            file.display()
        )
    };
    let c = parse_str(Path::new("gw.toml"), &config(&private)).unwrap();
    assert!(c.log.security_log_key.is_some());
    let shown = format!("{:?}", c.log.security_log_key);
    assert!(!shown.contains("PRIVATE"), "{shown}");

    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
    let errs = errors(&config(&private));
    assert!(
        errs[0].contains("can be read by group or others"),
        "{errs:?}"
    );

    // The public key, or any other text, is not a signing key; the file's
    // contents are not echoed.
    let errs = errors(&config(&public));
    assert!(
        errs[0].contains("is not an Ed25519 private key"),
        "{errs:?}"
    );
    assert!(!errs[0].contains("BEGIN"), "{errs:?}");
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

/// `[rate_limit_store]` after [`BASE`]: its first key is on line 17.
fn with_store(store: &str) -> String {
    format!("{BASE}\n[rate_limit_store]\nkind = \"redis\"\n{store}")
}

#[test]
fn redis_cluster_seeds_are_alike_and_exclusive_with_redis_url() {
    let c = parse_str(
        Path::new("gw.toml"),
        &with_store(
            "redis_cluster_urls = [\"redis://:pw@10.0.0.1:7000\", \"redis://:pw@10.0.0.2:7000\"]\n",
        ),
    )
    .unwrap();
    let StoreKind::RedisCluster { urls } = &c.rate_limit_store.kind else {
        panic!("{:?}", c.rate_limit_store.kind);
    };
    assert_eq!(urls.len(), 2);
    let shown = format!("{:?}", c.rate_limit_store);
    assert!(!shown.contains("pw"), "{shown}");

    let errs = errors(&with_store(
        "redis_url = \"redis://10.0.0.1\"\nredis_cluster_urls = [\"redis://10.0.0.1:7000\"]\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("gw.toml:17:13:"), "{errs:?}");
    assert!(errs[0].contains("are exclusive"), "{errs:?}");

    let errs = errors(&with_store("redis_cluster_urls = []\n"));
    assert!(errs[0].contains("needs 1 to 64 URLs"), "{errs:?}");
    let errs = errors(&with_store(
        "redis_cluster_urls = [\"redis://10.0.0.1:7000\", \"rediss://10.0.0.2:7000\"]\n",
    ));
    assert!(
        errs[0].contains("all redis:// or all rediss://"),
        "{errs:?}"
    );
    let errs = errors(&with_store(
        "redis_cluster_urls = [\"redis://:secret1@10.0.0.1:7000\", \"redis://:secret2@10.0.0.2:7000\"]\n",
    ));
    assert!(errs[0].contains("the same user and password"), "{errs:?}");
    assert!(!errs[0].contains("secret"), "{errs:?}");
    let errs = errors(&with_store(
        "redis_cluster_urls = [\"redis://10.0.0.1:7000/3\"]\n",
    ));
    assert!(errs[0].contains("database 0 only"), "{errs:?}");
    let errs = errors(&with_store(
        "redis_cluster_urls = [\"unix:///run/redis.sock\"]\n",
    ));
    assert!(
        errs[0].contains("redis:// or rediss:// URL with a host"),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{BASE}\n[rate_limit_store]\nredis_cluster_urls = [\"redis://10.0.0.1:7000\"]\n"
    ));
    assert!(errs[0].contains("needs `kind = \"redis\"`"), "{errs:?}");
    let errs = errors(&with_store("on_error = \"deny\"\n"));
    assert!(
        errs[0].contains("needs a `redis_url`, `redis_cluster_urls` or `redis_sentinel_urls`"),
        "{errs:?}"
    );
}

#[test]
fn rediss_files_are_read_checked_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gateway.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = write("c.pem", &cert.pem());
    let key_file = write("c.key", &key.serialize_pem());
    let url = "redis_url = \"rediss://:pw@redis.internal:6380/2\"\n";
    let c = parse_str(
        Path::new("gw.toml"),
        &with_store(&format!(
            "{url}redis_ca_file = \"{cert_file}\"\nredis_cert_file = \"{cert_file}\"\nredis_key_file = \"{key_file}\"\n"
        )),
    )
    .unwrap();
    let tls = &c.rate_limit_store.tls;
    assert_eq!(tls.ca.as_deref(), Some(cert.pem().as_bytes()));
    assert!(tls.client.is_some());
    let shown = format!("{:?}", c.rate_limit_store);
    assert!(
        !shown.contains("PRIVATE") && !shown.contains("pw"),
        "{shown}"
    );

    // Only the system's roots without `redis_ca_file`.
    let c = parse_str(Path::new("gw.toml"), &with_store(url)).unwrap();
    assert_eq!(c.rate_limit_store.tls, RedisTls::default());

    // A traditional (not PKCS#8) key is refused at its key, unechoed.
    let traditional = openssl::pkey::PKey::private_key_from_pem(key.serialize_pem().as_bytes())
        .unwrap()
        .ec_key()
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    let traditional = write("t.key", &String::from_utf8(traditional).unwrap());
    let errs = errors(&with_store(&format!(
        "{url}redis_cert_file = \"{cert_file}\"\nredis_key_file = \"{traditional}\"\n"
    )));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("gw.toml:19:18:"), "{errs:?}");
    assert!(errs[0].contains("PKCS#8"), "{errs:?}");
    assert!(!errs[0].contains("BEGIN"), "{errs:?}");

    let garbage = write("g.pem", "not a certificate");
    let errs = errors(&with_store(&format!(
        "{url}redis_ca_file = \"{garbage}\"\n"
    )));
    assert!(errs[0].starts_with("gw.toml:18:17:"), "{errs:?}");
    assert!(errs[0].contains("holds no PEM certificate"), "{errs:?}");

    let errs = errors(&with_store(&format!(
        "{url}redis_key_file = \"{key_file}\"\n"
    )));
    assert!(errs[0].contains("needs `redis_cert_file`"), "{errs:?}");

    // Cluster nodes: the system's roots only.
    let errs = errors(&with_store(&format!(
        "redis_cluster_urls = [\"rediss://10.0.0.1:7000\"]\nredis_ca_file = \"{cert_file}\"\n"
    )));
    assert!(
        errs[0].contains("not supported with `redis_cluster_urls`"),
        "{errs:?}"
    );

    // No way to turn certificate checks off.
    for bad in [
        "redis_url = \"rediss://:pw@redis.internal:6380/#insecure\"\n",
        "redis_cluster_urls = [\"rediss://:pw@10.0.0.1:7000/#insecure\"]\n",
    ] {
        let errs = errors(&with_store(bad));
        assert!(
            errs[0].contains("certificate checks cannot be turned off"),
            "{errs:?}"
        );
        assert!(!errs[0].contains("pw"), "{errs:?}");
    }
}

#[test]
fn redis_sentinel_needs_its_master_and_no_other_topology() {
    let c = parse_str(
        Path::new("gw.toml"),
        &with_store(
            "redis_sentinel_urls = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\nredis_sentinel_master = \"redis://app:pw@mymaster/2\"\n",
        ),
    )
    .unwrap();
    let StoreKind::RedisSentinel { urls, master } = &c.rate_limit_store.kind else {
        panic!("{:?}", c.rate_limit_store.kind);
    };
    assert_eq!(
        (urls.len(), master.as_str()),
        (2, "redis://app:pw@mymaster/2")
    );
    let shown = format!("{:?}", c.rate_limit_store);
    assert!(!shown.contains("pw"), "{shown}");
    assert!(parse_str(
        Path::new("gw.toml"),
        &with_store(
            "redis_sentinel_urls = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"mymaster\"\n"
        ),
    )
    .is_ok());

    let errs = errors(&with_store(
        "redis_sentinel_urls = [\"redis://10.0.0.1:26379\"]\n",
    ));
    assert!(errs[0].starts_with("gw.toml:17:23:"), "{errs:?}");
    assert!(
        errs[0].contains("needs `redis_sentinel_master`"),
        "{errs:?}"
    );
    let errs = errors(&with_store(
        "redis_url = \"redis://10.0.0.1\"\nredis_sentinel_urls = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\n",
    ));
    assert!(errs[0].contains("are exclusive"), "{errs:?}");
    let errs = errors(&with_store(
        "redis_url = \"redis://10.0.0.1\"\nredis_sentinel_master = \"m\"\n",
    ));
    assert!(errs[0].starts_with("gw.toml:18:25:"), "{errs:?}");
    assert!(errs[0].contains("needs `redis_sentinel_urls`"), "{errs:?}");
    for (master, why) in [
        ("my master", "must be the monitored name"),
        ("rediss://:pw@mymaster", "must be the monitored name"),
        ("redis://:pw@mymaster/x", "must be the monitored name"),
    ] {
        let errs = errors(&with_store(&format!(
            "redis_sentinel_urls = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"{master}\"\n"
        )));
        assert!(errs[0].contains(why), "{master}: {errs:?}");
        assert!(!errs[0].contains("pw"), "{errs:?}");
    }
    let errs = errors(&with_store(
        "redis_sentinel_urls = [\"rediss://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\n",
    ));
    assert!(errs[0].contains("not supported with Sentinel"), "{errs:?}");
    let errs = errors(&with_store(
        "redis_sentinel_urls = [\"redis://10.0.0.1:26379/1\"]\nredis_sentinel_master = \"m\"\n",
    ));
    assert!(
        errs[0].contains("goes in `redis_sentinel_master`"),
        "{errs:?}"
    );
}
