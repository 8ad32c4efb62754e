//! One-time tokens (`replay_protection = true`, CONTRACT §13) against the
//! real binary: a `jti` accepted once, cached or not; a token without `jti`
//! refused; replays across two gateways on one real Redis, raced, and
//! exact over 10,000 attempts; Redis down with `on_error = "deny"` fails
//! closed; every refused replay counted in
//! `portcullis_tokens_replayed_total`.

use crate::common;
use crate::dpop;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use common::client::{request, Conn, Response};
use common::gateway::{free_addr, Gateway};
use common::jwt::{claims, jwks, jwks_file_provider, TestKey};
use common::redis::RedisServer;
use common::upstream::Upstream;
use common::{assert_error, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// The value of the `portcullis_tokens_replayed_total` sample of
/// `provider` and `kind`, if it exists.
fn replayed(admin: SocketAddr, provider: &str, kind: &str) -> Option<u64> {
    let metrics = request(admin, "GET", "/metrics", &[], None).body_str();
    let (p, k) = (
        format!("provider=\"{provider}\""),
        format!("kind=\"{kind}\""),
    );
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("portcullis_tokens_replayed_total{")?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.split(',').any(|l| l == p) && labels.split(',').any(|l| l == k))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Waits (bounded) until the replay counter reads `want`.
fn wait_replayed(admin: SocketAddr, provider: &str, kind: &str, want: u64) -> Option<u64> {
    let mut last = None;
    wait_until(WAIT, || {
        last = replayed(admin, provider, kind);
        last == Some(want)
    });
    last
}

struct Fixture {
    gw: Gateway,
    admin: SocketAddr,
    _up: Upstream,
}

fn start(key: &TestKey, extra: &str) -> Fixture {
    start_provider(key, "replay_protection = true", extra)
}

/// The gateway with provider `corp` configured by `provider_extra`.
fn start_provider(key: &TestKey, provider_extra: &str, extra: &str) -> Fixture {
    let up = Upstream::start("app");
    let admin = free_addr();
    let body = format!(
        r#"
[admin]
listen = "{admin}"

[upstreams.app]
targets = ["{up}"]
{provider}
{extra}

[[routes]]
name = "orders"
path_prefix = "/orders"
auth = ["corp"]
upstream = "app"
"#,
        up = up.addr(),
        provider = jwks_file_provider("corp", provider_extra),
    );
    let gw = Gateway::start_with_files(&body, &[("jwks.json", &jwks(&[key]))]);
    assert!(wait_until(WAIT, || std::net::TcpStream::connect(admin).is_ok()));
    Fixture { gw, admin, _up: up }
}

fn get_token(addr: SocketAddr, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    request(addr, "GET", "/orders/1", &[("authorization", &auth)], None)
}

fn assert_replayed(resp: &Response) {
    let body = assert_error(resp, 401, "invalid_token");
    assert_eq!(
        body["message"], "The access token was already used",
        "{body}"
    );
}

fn redis_store(redis: &RedisServer, on_error: &str) -> String {
    format!(
        "\n[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\non_error = \"{on_error}\"\n",
        redis.url()
    )
}

#[test]
fn a_one_time_token_is_accepted_once() {
    let key = TestKey::rsa("k1");
    let f = start(&key, "");
    let token = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    assert_eq!(get_token(f.gw.addr, &token).status, 200);
    // The second use hits the verified-token cache: still refused.
    assert_replayed(&get_token(f.gw.addr, &token));
    assert_replayed(&get_token(f.gw.addr, &token));
    let event = f.gw.wait_security_event("token_replayed").expect("event");
    assert_eq!(event["provider"], "corp");
    assert_eq!(event["reason"], "replayed");
    // Another token of the same subject is another jti.
    let other = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    assert_eq!(get_token(f.gw.addr, &other).status, 200);

    let mut no_jti = claims("https://idp.test/", "orders", "alice", 300);
    no_jti.as_object_mut().unwrap().remove("jti");
    let no_jti = key.sign(no_jti);
    let body = assert_error(&get_token(f.gw.addr, &no_jti), 401, "invalid_token");
    assert!(
        body["message"].as_str().unwrap().contains("no jti"),
        "{body}"
    );
    let mut empty = claims("https://idp.test/", "orders", "alice", 300);
    empty["jti"] = json!("");
    assert_error(
        &get_token(f.gw.addr, &key.sign(empty)),
        401,
        "invalid_token",
    );

    let metrics = request(f.admin, "GET", "/metrics", &[], None).body_str();
    assert!(
        metrics.contains(r#"portcullis_auth_failures_total{provider="corp",reason="replayed"} 2"#),
        "{metrics}"
    );
    assert_eq!(wait_replayed(f.admin, "corp", "token", 2), Some(2));
    // A token without jti or an empty one is no replay.
    assert_eq!(replayed(f.admin, "corp", "dpop_proof"), None);
}

#[test]
fn replayed_dpop_proofs_are_counted_by_kind() {
    let issuer = TestKey::rsa("k1");
    let client = TestKey::ec256("c");
    let Fixture { gw, admin, _up } = start_provider(&issuer, "dpop = \"required\"", "");
    let token = dpop::bound_token(&issuer, &client);
    let first = dpop::proof(&client, &token);
    assert_eq!(
        dpop::send(gw.addr, "GET", "DPoP", &token, &[&first]).status,
        200
    );
    for _ in 0..3 {
        let r = dpop::send(gw.addr, "GET", "DPoP", &token, &[&first]);
        assert_eq!(r.json()["error"], "invalid_dpop_proof", "{}", r.body_str());
    }
    // A fresh proof is no replay; a broken one is a failure, not a replay.
    let fresh = dpop::proof(&client, &token);
    assert_eq!(
        dpop::send(gw.addr, "GET", "DPoP", &token, &[&fresh]).status,
        200
    );
    let broken = format!("{first}x");
    assert_eq!(
        dpop::send(gw.addr, "GET", "DPoP", &token, &[&broken]).status,
        401
    );
    assert_eq!(wait_replayed(admin, "corp", "dpop_proof", 3), Some(3));
    assert_eq!(replayed(admin, "corp", "token"), None);
    let metrics = request(admin, "GET", "/metrics", &[], None).body_str();
    assert!(
        metrics.contains(
            r#"portcullis_auth_failures_total{provider="corp",reason="dpop_proof_replayed"} 3"#
        ),
        "{metrics}"
    );
}

#[test]
fn replays_across_two_gateways_on_one_redis_are_refused_exactly() {
    let redis = RedisServer::start();
    replays_across_two_gateways_are_refused_exactly(&redis_store(&redis, "deny"));
}

/// One use of each token passes, on whichever gateway of a shared
/// `[rate_limit_store]` (tests/it/redis_fleet.rs runs it on a cluster).
pub(crate) fn replays_across_two_gateways_are_refused_exactly(store: &str) {
    let key = TestKey::rsa("k1");
    let a = start(&key, store);
    let b = start(&key, store);
    let token = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    assert_eq!(get_token(a.gw.addr, &token).status, 200);
    assert_replayed(&get_token(b.gw.addr, &token));

    // Each token raced on both gateways at once: exactly one use passes.
    let tokens: Vec<String> = (0..100)
        .map(|_| key.sign(claims("https://idp.test/", "orders", "alice", 300)))
        .collect();
    let (addr_a, addr_b) = (a.gw.addr, b.gw.addr);
    let handles: Vec<_> = tokens
        .chunks(25)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                for t in chunk {
                    let t2 = t.clone();
                    let other = std::thread::spawn(move || get_token(addr_b, &t2).status);
                    let here = get_token(addr_a, &t).status;
                    let there = other.join().unwrap();
                    accepted.push((here, there));
                }
                accepted
            })
        })
        .collect();
    for h in handles {
        for (here, there) in h.join().unwrap() {
            let passed = [here, there].iter().filter(|s| **s == 200).count();
            assert_eq!(passed, 1, "statuses {here} / {there}");
            assert!(here == 401 || there == 401, "{here} / {there}");
        }
    }
}

/// The bar of CONTRACT §13's replay detection: this many attempts in all,
/// every token sent `SENDS` times.
const ATTEMPTS: usize = 10_000;
const SENDS: usize = 5;

#[test]
fn ten_thousand_attempts_on_two_gateways_accept_each_token_exactly_once() {
    let redis = RedisServer::start();
    let key = TestKey::rsa("k1");
    let a = start(&key, &redis_store(&redis, "deny"));
    let b = start(&key, &redis_store(&redis, "deny"));
    let tokens: Vec<String> = std::thread::scope(|s| {
        let signers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..ATTEMPTS / SENDS / 2)
                        .map(|_| key.sign(claims("https://idp.test/", "orders", "alice", 300)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        signers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(tokens.len() * SENDS, ATTEMPTS);
    let gateways = [a.gw.addr, b.gw.addr];
    // SENDS clients walk the tokens in the same order, so each token is
    // raced by all of them at nearly the same moment; client `c` sends
    // token `i` to gateway `(i + c) % 2`, so every token reaches both.
    let statuses: Vec<Vec<(u16, String)>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..SENDS)
            .map(|c| {
                let tokens = &tokens;
                s.spawn(move || {
                    let mut conns = gateways.map(Conn::open);
                    tokens
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            let g = (i + c) % 2;
                            let auth = format!("Bearer {t}");
                            let headers = [("authorization", auth.as_str())];
                            let r = conns[g]
                                .request("GET", "/orders/1", &headers, None)
                                .unwrap_or_else(|e| panic!("client {c}, token {i}: {e}"));
                            if r.header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                            {
                                conns[g] = Conn::open(gateways[g]);
                            }
                            let message = match r.status {
                                200 => String::new(),
                                _ => r.json()["message"].as_str().unwrap_or_default().to_string(),
                            };
                            (r.status, message)
                        })
                        .collect()
                })
            })
            .collect();
        clients.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, _) in tokens.iter().enumerate() {
        let answers: Vec<&(u16, String)> = statuses.iter().map(|by| &by[i]).collect();
        let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(accepted, 1, "token {i}: {answers:?}");
        for (status, message) in answers.iter().filter(|(s, _)| *s != 200) {
            assert_eq!(
                (*status, message.as_str()),
                (401, "The access token was already used"),
                "token {i}"
            );
        }
    }
    // Every refusal is counted once, on the gateway that refused it; the
    // counters trail the answers by the logging phase.
    let refused = (ATTEMPTS - tokens.len()) as u64;
    let mut total = 0;
    wait_until(WAIT, || {
        total = [a.admin, b.admin]
            .iter()
            .map(|admin| replayed(*admin, "corp", "token").unwrap_or(0))
            .sum();
        total == refused
    });
    assert_eq!(total, refused);
}

#[test]
fn redis_down_fails_closed_with_on_error_deny() {
    let mut redis = RedisServer::start();
    let key = TestKey::rsa("k1");
    let deny = start(&key, &redis_store(&redis, "deny"));
    let local = start(&key, &redis_store(&redis, "local"));
    redis.stop();
    let token = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    assert_error(&get_token(deny.gw.addr, &token), 503, "auth_unavailable");
    // Refused without a use: once Redis is back, the token's one use works.
    redis.restart();
    assert!(
        wait_until(WAIT, || get_token(deny.gw.addr, &token).status == 200),
        "the token never worked after the outage"
    );
    assert_replayed(&get_token(deny.gw.addr, &token));
    redis.stop();
    let token = key.sign(claims("https://idp.test/", "orders", "alice", 300));
    // "local": this gateway's own cache still refuses its own replays.
    assert_eq!(get_token(local.gw.addr, &token).status, 200);
    assert_replayed(&get_token(local.gw.addr, &token));
}
