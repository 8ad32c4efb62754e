//! The shared store on more than one Redis: `rediss://` against a real
//! TLS `redis-server` (a CA, a client certificate, a wrong CA, a plain
//! port), and a real three-node Redis Cluster (limits, lockouts, replays
//! and revocations shared by two gateways; a node killed under each
//! `on_error`, then restarted), and a primary watched by a real Redis
//! Sentinel (shared by two gateways, followed through a failover). The
//! shared-store tests of
//! tests/it/ratelimit_store.rs, protection.rs, replay.rs and revocation.rs
//! are repeated on each.

use crate::common;
use crate::protection;
use crate::ratelimit_store::{self as store, limit, names, Gateway, TIMEOUT};

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gateway::{check, toml_str};
use common::jwt::TestKey;
use common::redis::{RedisCluster, RedisSentinel, RedisServer, TlsFiles, SENTINEL_MASTER};
use common::upstream::Upstream;
use common::wait_until;
use portcullis::core::secret::Secret;
use portcullis::protect::ratelimit::{OnError, RedisTls, StoreConfig, StoreKind};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

/// A CA and the server and client certificates it signed, as PEM.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf = |san: &str, cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf("127.0.0.1", "redis");
        let (client_cert, client_key) = leaf("gateway.test", "gateway");
        Pki {
            ca: ca_pem,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    fn server(&self, auth_clients: bool) -> RedisServer {
        RedisServer::start_tls(&TlsFiles {
            cert: &self.server_cert,
            key: &self.server_key,
            ca: &self.ca,
            auth_clients,
        })
    }

    /// What `[rate_limit_store]` reads from the files: the CA, and the
    /// client certificate when `client`.
    fn tls(&self, client: bool) -> RedisTls {
        RedisTls {
            ca: Some(self.ca.clone().into_bytes()),
            client: client.then(|| {
                (
                    self.client_cert.clone().into_bytes(),
                    Secret::new(self.client_key.clone()),
                )
            }),
        }
    }

    /// The PEM files in `dir`, for a configuration file.
    fn write(&self, dir: &Path) -> [PathBuf; 3] {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        [
            write("redis-ca.pem", &self.ca),
            write("redis-client.pem", &self.client_cert),
            write("redis-client.key", &self.client_key),
        ]
    }
}

fn tls_gateway(redis: &RedisServer, tls: RedisTls, on_error: OnError) -> Gateway {
    Gateway::with(StoreConfig {
        kind: StoreKind::Redis {
            url: redis.tls_url("127.0.0.1"),
        },
        tls,
        on_error,
        timeout: TIMEOUT,
        ..StoreConfig::default()
    })
}

fn cluster_gateway(cluster: &RedisCluster, on_error: OnError) -> Gateway {
    Gateway::with(StoreConfig {
        kind: StoreKind::RedisCluster {
            urls: cluster.urls(),
        },
        on_error,
        timeout: TIMEOUT,
        ..StoreConfig::default()
    })
}

/// `[rate_limit_store]` on the cluster, as TOML.
fn cluster_store(cluster: &RedisCluster, on_error: &str) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| toml_str(u)).collect();
    format!(
        "\n[rate_limit_store]\nkind = \"redis\"\nredis_cluster_urls = [{}]\non_error = \"{on_error}\"\ntimeout_ms = 1000\n",
        urls.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_two_gateways_enforce_one_limit_exactly_and_share_lockouts() {
    let pki = Pki::new("redis");
    let redis = pki.server(false);
    let a = tls_gateway(&redis, pki.tls(false), OnError::Deny);
    let b = tls_gateway(&redis, pki.tls(false), OnError::Deny);
    store::one_limit_exactly(&a, &b).await;
    store::lockout_shared(&a, &b).await;
    // The state is in the server behind the TLS port.
    assert_eq!(
        redis
            .command("EXISTS portcullis:rl:orders|consumer:acme")
            .unwrap(),
        ":1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_when_the_server_asks_for_them() {
    let pki = Pki::new("redis");
    let redis = pki.server(true);
    let a = tls_gateway(&redis, pki.tls(true), OnError::Deny);
    let b = tls_gateway(&redis, pki.tls(true), OnError::Deny);
    store::one_limit_exactly(&a, &b).await;
    // Without one, the server refuses the handshake: on_error applies.
    let anonymous = tls_gateway(&redis, pki.tls(false), OnError::Deny);
    assert_eq!(anonymous.allowed(b"mtls", &limit(5), 3).await, 0);
    let events = anonymous.events_with("rate_limit_store_unavailable").await;
    assert_eq!(names(&events), ["rate_limit_store_unavailable"]);
    // A certificate of another CA is refused too.
    let stranger = Pki::new("stranger");
    let forged = tls_gateway(
        &redis,
        RedisTls {
            ca: Some(pki.ca.clone().into_bytes()),
            client: stranger.tls(true).client,
        },
        OnError::Deny,
    );
    assert_eq!(forged.allowed(b"mtls", &limit(5), 3).await, 0);
    assert!(!forged
        .events_with("rate_limit_store_unavailable")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_server_of_another_ca_or_a_plain_port_never_connects() {
    let pki = Pki::new("redis");
    let redis = pki.server(false);
    let other = Pki::new("other");
    let local = tls_gateway(&redis, other.tls(false), OnError::Local);
    let allow = tls_gateway(&redis, other.tls(false), OnError::Allow);
    let deny = tls_gateway(&redis, other.tls(false), OnError::Deny);
    assert_eq!(local.allowed(b"k", &limit(3), 10).await, 3);
    assert_eq!(allow.allowed(b"k", &limit(3), 10).await, 10);
    assert_eq!(deny.allowed(b"k", &limit(3), 10).await, 0);
    for g in [&local, &allow, &deny] {
        let events = g.events_with("rate_limit_store_unavailable").await;
        assert_eq!(names(&events), ["rate_limit_store_unavailable"]);
    }
    // The system's roots do not know the test CA either.
    let system = tls_gateway(&redis, RedisTls::default(), OnError::Deny);
    assert_eq!(system.allowed(b"k", &limit(3), 2).await, 0);
    // rediss:// to the plain port: no handshake, no plain-text fallback.
    let plain = Gateway::with(StoreConfig {
        kind: StoreKind::Redis {
            url: format!("rediss://127.0.0.1:{}", redis.port()),
        },
        tls: pki.tls(false),
        on_error: OnError::Deny,
        timeout: TIMEOUT,
        ..StoreConfig::default()
    });
    assert_eq!(plain.allowed(b"k", &limit(3), 2).await, 0);
    // Nothing reached Redis.
    assert_eq!(redis.command("EXISTS portcullis:rl:k").unwrap(), ":0");
}

#[test]
fn tls_store_from_the_configuration_file_is_shared_by_two_real_gateways() {
    let pki = Pki::new("redis");
    let redis = pki.server(true);
    let dir = TempDir::new().unwrap();
    let [ca, cert, key] = pki.write(dir.path());
    protection::two_gateways_enforce_one_limit(&format!(
        "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\nredis_ca_file = {}\nredis_cert_file = {}\nredis_key_file = {}\ntimeout_ms = 1000\n",
        redis.tls_url("127.0.0.1"),
        toml_str(&ca.to_string_lossy()),
        toml_str(&cert.to_string_lossy()),
        toml_str(&key.to_string_lossy()),
    ));
}

/// `check` on a configuration whose `[rate_limit_store]` is `store`.
fn check_store(dir: &TempDir, store: &str) -> (Option<i32>, String) {
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\nname = \"r\"\npath = \"/\"\npublic = true\nrespond = {{ status = 200 }}\n\n[rate_limit_store]\nkind = \"redis\"\n{store}"
        ),
    )
    .unwrap();
    let out = check(&path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_broken_redis_tls_files_at_their_place() {
    let dir = TempDir::new().unwrap();
    let pki = Pki::new("redis");
    let [ca, cert, _] = pki.write(dir.path());
    let p = |path: &Path| toml_str(&path.to_string_lossy());
    // `url` is on line 13, right after `kind`.
    let url = "redis_url = \"rediss://127.0.0.1:6380\"\n";
    let (code, err) = check_store(&dir, &format!("{url}redis_ca_file = {}\n", p(&ca)));
    assert_eq!(code, Some(0), "{err}");

    let missing = dir.path().join("missing.pem");
    let (code, err) = check_store(&dir, &format!("{url}redis_ca_file = {}\n", p(&missing)));
    assert_eq!(code, Some(1));
    assert!(err.contains("gw.toml:14:17:"), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let (code, err) = check_store(&dir, &format!("{url}redis_ca_file = {}\n", p(&garbage)));
    assert_eq!(code, Some(1));
    assert!(err.contains("gw.toml:14:17:"), "{err}");
    assert!(err.contains("holds no PEM certificate"), "{err}");

    // The key of another certificate; the key is never echoed.
    let other = Pki::new("other");
    let wrong_key = dir.path().join("wrong.key");
    std::fs::write(&wrong_key, &other.client_key).unwrap();
    let (code, err) = check_store(
        &dir,
        &format!(
            "{url}redis_cert_file = {}\nredis_key_file = {}\n",
            p(&cert),
            p(&wrong_key)
        ),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("gw.toml:15:18:"), "{err}");
    assert!(err.contains("is not the key of the certificate"), "{err}");
    assert!(!err.contains("PRIVATE"), "{err}");

    // A certificate without its key.
    let (code, err) = check_store(&dir, &format!("{url}redis_cert_file = {}\n", p(&cert)));
    assert_eq!(code, Some(1));
    assert!(err.contains("needs `redis_key_file`"), "{err}");

    // TLS files with a plain URL, and the crate's no-verify fragment.
    let (code, err) = check_store(
        &dir,
        &format!(
            "redis_url = \"redis://127.0.0.1:6379\"\nredis_ca_file = {}\n",
            p(&ca)
        ),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("needs a rediss:// URL"), "{err}");
    let (code, err) = check_store(
        &dir,
        "redis_url = \"rediss://user:hunter2@127.0.0.1:6380/#insecure\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("gw.toml:13:13:"), "{err}");
    assert!(
        err.contains("certificate checks cannot be turned off"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_gateways_enforce_limits_exactly_and_share_lockouts() {
    let cluster = RedisCluster::start();
    let a = cluster_gateway(&cluster, OnError::Deny);
    let b = cluster_gateway(&cluster, OnError::Deny);
    store::one_limit_exactly(&a, &b).await;
    store::lockout_shared(&a, &b).await;
    // Keys all over the slot space (so on every node): each its own
    // exact bucket.
    for i in 0..30 {
        let key = format!("route|client_ip:198.51.100.{i}");
        let mut allowed = 0;
        for n in 0..8 {
            let g = if n % 2 == 0 { &a } else { &b };
            if g.store.check(key.as_bytes(), &limit(5)).await.allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5, "{key}");
    }
    assert!(a.events().is_empty() && b.events().is_empty());
}

#[test]
fn cluster_two_real_gateways_share_limits_replays_and_revocations() {
    let cluster = RedisCluster::start();
    protection::two_gateways_enforce_one_limit(&cluster_store(&cluster, "deny"));
    crate::replay::replays_across_two_gateways_are_refused_exactly(&cluster_store(
        &cluster, "deny",
    ));
    crate::revocation::two_gateways_share_revocations(&cluster_store(&cluster, "deny"));
}

#[test]
fn cluster_node_killed_mid_run_follows_on_error_and_recovers() {
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let mut cluster = RedisCluster::start();
    let gateway = |name: &str| {
        protection::start(
            &key,
            &up,
            &cluster_store(&cluster, name),
            &protection::route(name, false, &protection::limit("route", 1, 3600, 3)),
        )
    };
    let local = gateway("local");
    let allow = gateway("allow");
    let deny = gateway("deny");
    // Healthy: the shared bucket.
    assert_eq!(protection::count_ok(deny.addr, "/deny", 2), 2);

    cluster.nodes[1].stop();
    // Its slots are uncovered once the others mark it failed.
    assert!(
        wait_until(WAIT, || cluster.nodes[0].cluster_state() == "fail"),
        "the cluster never noticed the dead node"
    );
    assert_eq!(protection::count_ok(local.addr, "/local", 5), 3);
    assert_eq!(protection::count_ok(allow.addr, "/allow", 6), 6);
    assert_eq!(protection::count_ok(deny.addr, "/deny", 2), 0);
    for gw in [&local, &allow, &deny] {
        assert!(gw
            .wait_security_event("rate_limit_store_unavailable")
            .is_some());
    }

    cluster.nodes[1].restart();
    assert!(cluster.wait_ok(), "the node did not rejoin");
    // The restarted node is empty: the deny gateway gets a full shared
    // bucket once a probe sees the cluster back.
    protection::recovered_after_one_outage(&deny, [&local, &allow, &deny]);
}

#[test]
fn a_reload_rereads_the_redis_ca_file() {
    let pki = Pki::new("redis");
    let redis = pki.server(false);
    let dir = TempDir::new().unwrap();
    let ca = dir.path().join("redis-ca.pem");
    std::fs::write(&ca, Pki::new("other").ca).unwrap();
    let key = TestKey::rsa("k1");
    let up = Upstream::start("app");
    let gw = protection::start(
        &key,
        &up,
        &format!(
            "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\nredis_ca_file = {}\non_error = \"deny\"\ntimeout_ms = 1000\n",
            redis.tls_url("127.0.0.1"),
            toml_str(&ca.to_string_lossy())
        ),
        &protection::route("api", false, &protection::limit("route", 1, 3600, 3)),
    );
    // The wrong CA: Redis is never reached, on_error = "deny" refuses.
    assert_eq!(protection::count_ok(gw.addr, "/api", 2), 0);
    assert!(gw
        .wait_security_event("rate_limit_store_unavailable")
        .is_some());

    std::fs::write(&ca, &pki.ca).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_security_event("config_reloaded").is_some());
    assert_eq!(protection::count_ok(gw.addr, "/api", 5), 3);

    // A broken file is a failed reload at its place; the store stays.
    std::fs::write(&ca, "garbage").unwrap();
    gw.signal("HUP");
    let failed = gw
        .wait_security_event("config_reload_failed")
        .expect("reload must fail");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("holds no PEM certificate"), "{reason}");
    assert_eq!(protection::count_ok(gw.addr, "/api", 1), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_down_when_the_gateway_starts_is_used_once_it_is_up() {
    let mut cluster = RedisCluster::start();
    for node in &mut cluster.nodes {
        node.stop();
    }
    let g = cluster_gateway(&cluster, OnError::Deny);
    assert_eq!(g.allowed(b"late", &limit(3), 2).await, 0);
    let events = g.events_with("rate_limit_store_unavailable").await;
    assert_eq!(names(&events), ["rate_limit_store_unavailable"]);

    for node in &mut cluster.nodes {
        node.restart();
    }
    assert!(cluster.wait_ok(), "the cluster did not come back");
    let mut allowed = false;
    for _ in 0..WAIT.as_millis() / 50 {
        if g.store.check(b"late", &limit(3)).await.allowed {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(allowed, "never connected: {:?}", g.events());
    assert_eq!(
        names(&g.events_with("rate_limit_store_recovered").await),
        ["rate_limit_store_unavailable", "rate_limit_store_recovered"]
    );
    // The bucket is shared from now on: 2 more, then refused.
    assert_eq!(g.allowed(b"late", &limit(3), 3).await, 2);
}

fn sentinel_gateway(watched: &RedisSentinel, on_error: OnError) -> Gateway {
    Gateway::with(StoreConfig {
        kind: StoreKind::RedisSentinel {
            urls: vec![watched.url()],
            master: SENTINEL_MASTER.into(),
        },
        on_error,
        timeout: TIMEOUT,
        ..StoreConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_two_gateways_share_the_primary_and_follow_a_failover() {
    let mut watched = RedisSentinel::start();
    let a = sentinel_gateway(&watched, OnError::Deny);
    let b = sentinel_gateway(&watched, OnError::Deny);
    store::one_limit_exactly(&a, &b).await;
    store::lockout_shared(&a, &b).await;
    assert_eq!(
        watched
            .primary
            .command("EXISTS portcullis:rl:orders|consumer:acme")
            .unwrap(),
        ":1"
    );

    watched.primary.stop();
    // The old primary is gone: on_error applies.
    assert_eq!(a.allowed(b"failover", &limit(3), 1).await, 0);
    let replica = watched.replica.port();
    assert!(
        wait_until(WAIT, || watched.primary_port() == Some(replica)),
        "the sentinel never promoted the replica"
    );
    // The probes ask the sentinel again and find the new primary.
    for g in [&a, &b] {
        let mut back = false;
        for _ in 0..WAIT.as_millis() / 50 {
            if g.store.check(b"probe", &limit(1_000)).await.allowed {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back, "never found the new primary: {:?}", g.events());
        assert_eq!(
            names(&g.events_with("rate_limit_store_recovered").await),
            ["rate_limit_store_unavailable", "rate_limit_store_recovered"]
        );
    }
    // One bucket again, on the promoted replica.
    assert_eq!(a.allowed(b"after", &limit(2), 1).await, 1);
    assert_eq!(b.allowed(b"after", &limit(2), 3).await, 1);
    assert_eq!(
        watched
            .replica
            .command("EXISTS portcullis:rl:after")
            .unwrap(),
        ":1"
    );
}

#[test]
fn sentinel_store_from_the_configuration_file_is_shared_by_two_real_gateways() {
    let watched = RedisSentinel::start();
    protection::two_gateways_enforce_one_limit(&format!(
        "[rate_limit_store]\nkind = \"redis\"\nredis_sentinel_urls = [\"{}\"]\nredis_sentinel_master = \"{SENTINEL_MASTER}\"\ntimeout_ms = 1000\n",
        watched.url()
    ));
}
