//! Connection-level limits of CONTRACT §8 against the real binary: header
//! bytes capped while reading, the whole-head deadline, the idle timeout,
//! connection caps; the admin listener's `Origin` check; and no secret in
//! any log line at `trace`.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::assert_error;
use common::client::{request, send_raw, Conn};
use common::gateway::Gateway;
use common::upstream::Upstream;
use common::wait_until;

fn gateway(up: &Upstream, limits: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[limits]
{limits}

[upstreams.app]
targets = ["{}"]

[[routes]]
name = "app"
path_prefix = "/"
public = true
upstream = "app"
"#,
        up.addr()
    ))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until the gateway closes; what it sent. Bounded by the read
/// timeout of [`connect`] and 1 MiB.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_endless_head_gets_431_and_the_connection_closes() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "max_header_bytes = 4096");
    let mut s = connect(gw.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
    // Far past the cap, never finished: the gateway answers and closes.
    for _ in 0..100 {
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(
        answer.contains("\"error\":\"headers_too_large\""),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id: "),
        "{answer}"
    );
    assert_eq!(up.hits(), 0);
    let events = gw.wait_security_events("request_rejected", 1);
    assert!(!events.is_empty());
}

/// 200 connections, each pushing up to 1 MB of a head that never ends,
/// all open at once: the gateway holds only its cap of each.
#[test]
fn unfinished_heads_cost_bounded_memory() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let before = rss_kib(gw.pid());
    let line = format!("X-Filler: {}\r\n", "f".repeat(4000));
    let mut conns: Vec<TcpStream> = (0..200).map(|_| connect(gw.addr)).collect();
    let workers: Vec<_> = conns
        .iter_mut()
        .map(|c| {
            let mut c = c.try_clone().unwrap();
            let line = line.clone();
            std::thread::spawn(move || {
                let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n");
                for _ in 0..250 {
                    if c.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let after = rss_kib(gw.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB ({before} -> {after} KiB)"
    );
    // And every one of them was answered.
    for c in &mut conns {
        let answer = read_until_closed(c);
        assert!(
            answer.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(request(gw.addr, "GET", "/", &[], None).status, 200);
}

#[test]
fn a_trickling_head_is_cut_at_the_deadline() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "header_timeout_ms = 500");
    let mut s = connect(gw.addr);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // A header line every 100 ms: each read is quick, the head never ends.
    // The gateway closes long before 20 s of this.
    let mut closed = false;
    for i in 0..200 {
        if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .is_err()
        {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "the slow head was never cut");
    assert_eq!(up.hits(), 0);
    // A client that sends its head at once is unaffected.
    assert_eq!(request(gw.addr, "GET", "/", &[], None).status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "idle_timeout_ms = 300");
    let mut conn = Conn::open(gw.addr);
    assert_eq!(conn.get("/one").unwrap().status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || conn.is_closed()),
        "the idle connection stayed open"
    );
    // An idle fresh connection too.
    let mut s = connect(gw.addr);
    assert!(read_until_closed(&mut s).is_empty());
}

/// A keep-alive connection that has been served once. The gateway's
/// readiness probe is still counted until the gateway has seen it close,
/// so the first connection may be turned away; it is retried (bounded).
fn served(addr: SocketAddr) -> Conn {
    let mut conn = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let Ok(mut c) = Conn::try_open(addr) else {
            return false;
        };
        let ok = c.get("/").is_ok_and(|r| r.status == 200);
        if ok {
            conn = Some(c);
        }
        ok
    });
    assert!(ok, "no connection to {addr} was served");
    conn.unwrap()
}

#[test]
fn connection_caps() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "max_connections_per_ip = 3");
    let mut open: Vec<Conn> = (0..3).map(|_| served(gw.addr)).collect();
    // The fourth from the same address is closed at once.
    let mut fourth = connect(gw.addr);
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(read_until_closed(&mut fourth).is_empty());
    // One closes: there is room again.
    drop(open.pop());
    assert!(wait_until(Duration::from_secs(10), || {
        send_raw(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .is_ok_and(|r| r.status == 200)
    }));

    let up = Upstream::start("app");
    let gw = gateway(&up, "max_connections = 2");
    let _a = served(gw.addr);
    let _b = served(gw.addr);
    let mut third = connect(gw.addr);
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(read_until_closed(&mut third).is_empty());
}

#[test]
fn the_admin_listener_refuses_other_origins() {
    let up = Upstream::start("app");
    let admin = common::gateway::free_addr();
    let gw = Gateway::start(&format!(
        "[admin]\nlisten = \"{admin}\"\n\n[upstreams.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n",
        up.addr()
    ));
    assert!(common::gateway::wait_for_port(
        admin,
        Duration::from_secs(10)
    ));
    let from = |origin: &str, method: &str, path: &str| {
        request(admin, method, path, &[("origin", origin)], None)
    };
    for origin in [
        "http://evil.example",
        "null",
        "https://127.0.0.1",
        &format!("http://127.0.0.1:{}.evil.example", admin.port()),
        &format!("https://{admin}"),
    ] {
        assert_error(&from(origin, "POST", "/reload"), 403, "forbidden");
        assert_error(&from(origin, "GET", "/status"), 403, "forbidden");
    }
    // Without a token, a request naming another host (DNS rebinding) is
    // refused too, whatever its Origin.
    let r = request(
        admin,
        "GET",
        "/status",
        &[("host", &format!("evil.example:{}", admin.port()))],
        None,
    );
    assert_error(&r, 403, "forbidden");
    // A malformed head is answered as JSON, and its query is never logged.
    let r = send_raw(
        admin,
        b"GET /status?api_key=SECRETKEYSECRETKEY&a=< HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    assert_error(&r, 400, "bad_request");
    assert!(!gw.stderr().contains("SECRETKEYSECRETKEY"));
    // Its own pages, and tools that send no Origin, are served.
    assert_eq!(
        from(&format!("http://{admin}"), "GET", "/status").status,
        200
    );
    assert_eq!(
        from(
            &format!("http://localhost:{}", admin.port()),
            "POST",
            "/reload"
        )
        .status,
        200
    );
    assert_eq!(request(admin, "GET", "/status", &[], None).status, 200);
}

/// Every request shape that carries a credential, at `trace`: the
/// credential appears in no log line, the gateway's or Pingora's.
#[test]
fn no_secret_in_any_log_at_trace() {
    let up = Upstream::start("app");
    let key = "pc_k1_SECRETSECRETSECRETSECRETSECRETSECRETSE";
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("[[keys]]\nid = \"k1\"\nconsumer = \"c\"\nhash = \"sha256:{hash}\"\n"),
    )
    .unwrap();
    let addr = common::gateway::free_addr();
    let header = common::gateway::config_header(dir.path(), addr)
        .replace("level = \"info\"", "level = \"trace\"");
    let body = format!(
        r#"
[auth.keys]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"
query_param = "api_key"

[upstreams.app]
targets = ["{}"]

[[routes]]
name = "app"
path_prefix = "/"
auth = ["keys"]
upstream = "app"
"#,
        up.addr()
    )
    .replace("{dir}", &dir.path().to_string_lossy());
    let gw = Gateway::start_full(format!("{header}{body}"), addr, dir);
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJTRUNSRVRUT0tFTiJ9.c2lnbmF0dXJlU0VDUkVU";
    let requests: Vec<Vec<u8>> = vec![
        format!("GET /a?api_key={key} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /a HTTP/1.1\r\nHost: a\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /a HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes(),
        // Malformed heads that carry the credentials.
        format!("GET /a HTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes(),
        format!("GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\nx-api-key: {key}\r\n\r\n").into_bytes(),
        format!("GET /a?api_key={key} HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n").into_bytes(),
        // Accepted by the parser, refused by the gateway.
        format!("GET admin/x?api_key={key} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes(),
    ];
    for bytes in &requests {
        let _ = send_raw(gw.addr, bytes);
    }
    let started = Instant::now();
    // The lines reach the files asynchronously: wait for the last refusal.
    assert!(wait_until(Duration::from_secs(10), || gw
        .security_events("request_rejected")
        .len()
        >= 3));
    let everything = format!(
        "{}{}{}{}",
        std::fs::read_to_string(&gw.access_log_path).unwrap_or_default(),
        std::fs::read_to_string(&gw.security_log_path).unwrap_or_default(),
        gw.stdout(),
        gw.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    for secret in [
        "SECRETSECRETSECRET",
        "SECRETTOKEN",
        "c2lnbmF0dXJlU0VDUkVU",
        "eyJzdWIiOiJTRUNSRVRUT0tFTiJ9",
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} was logged:\n{everything}"
        );
    }
}
