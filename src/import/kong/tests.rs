use super::consumers::portcullis_key_id;
use super::services::split_url;
use super::*;

fn run(yaml: &str) -> Converted {
    convert("kong.yaml", Path::new("kong.yaml"), yaml, Path::new("/out")).unwrap()
}

#[test]
fn urls_split() {
    assert_eq!(
        split_url("https://api.internal:8443/v1"),
        Some((
            "https".into(),
            "api.internal".into(),
            Some("8443".into()),
            Some("/v1".into())
        ))
    );
    assert_eq!(
        split_url("http://[::1]:80"),
        Some(("http".into(), "::1".into(), Some("80".into()), None))
    );
    assert_eq!(split_url("grpc://x"), None);
    assert_eq!(split_url("http://user:pw@x"), None);
    assert_eq!(split_url("http://x:99999"), None);
}

#[test]
fn weights_keep_their_ratio() {
    let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    host: up
    routes: [{ name: r, paths: [/x] }]
upstreams:
  - name: up
    targets:
      - { target: "10.0.0.1:80", weight: 100 }
      - { target: "10.0.0.2:80", weight: 300 }
      - { target: "10.0.0.3", weight: 0 }
"#);
    assert!(c.config.contains(r#"targets = [{ address = "10.0.0.1:80", weight = 1 }, { address = "10.0.0.2:80", weight = 3 }]"#), "{}", c.config);
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("upstreams[0].targets[2]: not converted: weight 0")));
}

#[test]
fn a_larger_body_limit_keeps_other_routes_at_the_default() {
    let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: big
        paths: [/big]
        plugins:
          - name: request-size-limiting
            config: { allowed_payload_size: 8 }
      - name: small
        paths: [/small]
"#);
    assert!(
        c.config.contains("[limits]\nmax_body_bytes = 8388608\n"),
        "{}",
        c.config
    );
    let small = c.config.split("name = \"small\"").nth(1).unwrap();
    assert!(small.contains("max_body_bytes = 1048576"), "{}", c.config);
}

#[test]
fn key_ids() {
    assert_eq!(portcullis_key_id("pc_abc_DEF123"), Some("abc"));
    assert_eq!(portcullis_key_id("my-kong-key"), None);
    assert_eq!(portcullis_key_id("pc_a_b_c"), None);
}

#[test]
fn refuses_other_formats() {
    let err = convert(
        "k",
        Path::new("k"),
        "_format_version: \"1.1\"\n",
        Path::new("/o"),
    );
    assert!(matches!(err, Err(ImportError::Format { .. })));
    let err = convert("k", Path::new("k"), "services: []\n", Path::new("/o"));
    assert!(matches!(err, Err(ImportError::Format { .. })));
    let err = convert("k", Path::new("k"), "a: [\n", Path::new("/o"));
    assert!(matches!(err, Err(ImportError::Yaml { .. })));
}

#[test]
fn plaintext_keys_never_written() {
    let c = run(r#"
_format_version: "3.0"
consumers:
  - username: "a\"b"
    keyauth_credentials:
      - key: pc_id1_SuperSecretValue1234567890
      - key: plain-kong-key
"#);
    assert!(!c.keys.contains("SuperSecretValue"));
    assert!(!c.config.contains("SuperSecretValue"));
    assert!(c.keys.contains("id = \"id1\""));
    assert!(c.keys.contains(r#"consumer = "a\"b""#));
    assert!(c.notes.iter().all(|n| !n.contains("plain-kong-key")));
    assert!(!c.keys.contains("plain-kong-key"));
    assert!(c.keys.contains("id = \"kong2\""));
    assert!(c.notes.iter().any(|n| n.contains(
        "consumers[0].keyauth_credentials[1]: converted approximately: a key of 14 characters"
    )));
    assert_eq!(c.keys_converted, 2);
}

#[test]
fn both_auth_plugins_leave_the_route_out() {
    let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/x"]
        plugins:
          - name: key-auth
          - name: jwt
"#);
    assert_eq!(c.routes, 0);
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("services[0].routes[0]: not converted: key-auth and jwt")));
}

#[test]
fn unknown_plugins_and_sections_are_listed() {
    let c = run(r#"
_format_version: "3.0"
certificates:
  - cert: x
plugins:
  - name: prometheus
  - name: cors
    enabled: false
"#);
    let joined = c.notes.join("\n");
    assert!(joined.contains("kong.yaml: certificates: not converted"));
    assert!(joined.contains("kong.yaml: plugins[0]: not converted: plugin prometheus"));
    assert!(joined.contains("kong.yaml: plugins[1]: not converted: plugin cors is disabled"));
}

#[test]
fn redis_over_tls_becomes_rediss_and_credentials_stay_out() {
    let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/x"]
plugins:
  - name: rate-limiting
    config:
      minute: 10
      policy: redis
      redis:
        host: redis.internal
        port: 6380
        ssl: true
        ssl_verify: false
        password: hunter2hunter2
"#);
    assert!(
        c.config
            .contains("redis_url = \"rediss://redis.internal:6380/0\""),
        "{}",
        c.config
    );
    assert!(!c.config.contains("hunter2"));
    let notes = c.notes.join("\n");
    assert!(notes.contains("redis_ssl_verify: converted approximately: Portcullis always verifies"));
    assert!(notes.contains("redis_password: not converted: Redis credentials are not written out"));
    assert!(!notes.contains("hunter2"));
}
