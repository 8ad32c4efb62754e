//! WebSocket per route through the real binary (CONTRACT §9): the upgrade
//! only where `websocket = true`, authenticated like any request, frames
//! relayed both ways, and an idle socket closed after
//! `websocket_idle_timeout_seconds`. The upstream and the client speak RFC
//! 6455 here by hand (handshake, masked client frames, unmasked server
//! frames): small enough to read, and exactly what goes over the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use base64::Engine;

use crate::common;
use common::gateway::Gateway;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn accept_value(key: &str) -> String {
    let digest = openssl::sha::sha1(format!("{key}{GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Reads an HTTP head (up to the blank line) and returns its lines.
fn read_head(reader: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    lines
}

/// One text frame, masked when a client sends it.
fn frame(text: &str, masked: bool) -> Vec<u8> {
    assert!(text.len() < 126, "short frames only");
    let mut out = vec![0x81, text.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        let mask = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&mask);
        out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// Reads one short frame and returns its (unmasked) text.
fn read_frame(stream: &mut impl Read) -> std::io::Result<String> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let len = usize::from(head[1] & 0x7f);
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        stream.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(String::from_utf8_lossy(&payload).into_owned())
}

/// A WebSocket echo server: answers each upgrade with 101 and every text
/// frame with `echo: <text>`. Records each upgrade request's head.
struct EchoServer {
    addr: SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

impl EchoServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let record = record.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let head = read_head(&mut reader);
                    let key = head
                        .iter()
                        .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                        .or_else(|| {
                            head.iter()
                                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                        })
                        .unwrap_or_default()
                        .to_string();
                    record.lock().unwrap().push(head);
                    let mut out = stream;
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        accept_value(&key)
                    );
                    if out.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    while let Ok(text) = read_frame(&mut reader) {
                        if out
                            .write_all(&frame(&format!("echo: {text}"), false))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer { addr, heads }
    }
}

fn config(up: &EchoServer, route_extra: &str) -> String {
    format!(
        r#"
[auth.keys]
kind = "api_key"
keys_file = "{{dir}}/keys.toml"

[upstreams.chat]
targets = ["{up}"]

[[routes]]
name = "chat"
path_prefix = "/ws"
auth = ["keys"]
upstream = "chat"
{route_extra}

[[routes]]
name = "plain"
path_prefix = "/plain"
public = true
upstream = "chat"
"#,
        up = up.addr
    )
}

const API_KEY: &str = "pc_chat1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn keys() -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(API_KEY.as_bytes()));
    format!("[[keys]]\nid = \"chat1\"\nconsumer = \"chat\"\nhash = \"sha256:{hash}\"\n")
}

/// Sends the upgrade request; returns the response head and the stream.
fn upgrade(addr: SocketAddr, path: &str, key: Option<&str>) -> (Vec<String>, BufReader<TcpStream>) {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let auth = key.map_or(String::new(), |k| format!("x-api-key: {k}\r\n"));
    write!(
        writer,
        "GET {path} HTTP/1.1\r\nHost: chat.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    (head, reader)
}

#[test]
fn websocket_routes_upgrade_after_authentication_and_relay_frames() {
    let up = EchoServer::start();
    let gw = Gateway::start_with_files(&config(&up, "websocket = true"), &[("keys.toml", &keys())]);

    // Authenticated like any request.
    let (head, _) = upgrade(gw.addr, "/ws/room", None);
    assert!(head[0].starts_with("HTTP/1.1 401"), "{head:?}");
    // Elsewhere the upgrade is refused.
    let (head, _) = upgrade(gw.addr, "/plain/room", None);
    assert!(head[0].starts_with("HTTP/1.1 400"), "{head:?}");
    assert_eq!(up.heads.lock().unwrap().len(), 0);

    let (head, mut conn) = upgrade(gw.addr, "/ws/room", Some(API_KEY));
    assert!(head[0].starts_with("HTTP/1.1 101"), "{head:?}");
    let accept = head.iter().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("sec-websocket-accept: ")
            .map(str::to_string)
    });
    assert_eq!(
        accept.as_deref().map(str::to_string),
        Some(accept_value(KEY).to_ascii_lowercase())
    );
    for text in ["hello", "second"] {
        conn.get_mut().write_all(&frame(text, true)).unwrap();
        assert_eq!(read_frame(&mut conn).unwrap(), format!("echo: {text}"));
    }
    // The upstream saw the upgrade with the caller's identity, not the key.
    let heads = up.heads.lock().unwrap();
    let seen = heads[0].join("\n").to_ascii_lowercase();
    assert!(seen.contains("x-auth-consumer: chat"), "{seen}");
    assert!(seen.contains("upgrade: websocket"), "{seen}");
}

#[test]
fn idle_websocket_is_closed_after_its_timeout() {
    let up = EchoServer::start();
    let gw = Gateway::start_with_files(
        &config(&up, "websocket = true\nwebsocket_idle_timeout_seconds = 1"),
        &[("keys.toml", &keys())],
    );
    let (head, mut conn) = upgrade(gw.addr, "/ws/room", Some(API_KEY));
    assert!(head[0].starts_with("HTTP/1.1 101"), "{head:?}");
    conn.get_mut().write_all(&frame("ping", true)).unwrap();
    assert_eq!(read_frame(&mut conn).unwrap(), "echo: ping");
    // Then nothing either way: the gateway closes the socket (bounded by
    // the read timeout of IO_TIMEOUT, far beyond the 1 s idle limit).
    let mut buf = [0u8; 16];
    let closed = match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "an idle WebSocket must be closed");
    // The access log records the upgrade when the socket is closed, with
    // the bytes of the frames both ways: the client's masked 10-byte
    // "ping" frame, the upstream's 12-byte "echo: ping".
    let lines = gw.wait_access_log(1);
    let line = lines
        .iter()
        .find(|l| l["status"] == 101 && l["route"] == "chat")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(line["bytes_received"], 10, "{line}");
    assert_eq!(line["bytes_sent"], 12, "{line}");
}

#[test]
fn idle_timeout_needs_a_websocket_route() {
    let up = EchoServer::start();
    let err = Gateway::try_start_with_files(
        &config(&up, "websocket_idle_timeout_seconds = 10"),
        &[("keys.toml", &keys())],
    )
    .err()
    .expect("refused");
    assert!(
        err.contains("only applies with `websocket = true`"),
        "{err}"
    );
}

#[test]
fn a_reload_leaves_open_websockets_alone() {
    let up = EchoServer::start();
    let gw = Gateway::start_with_files(&config(&up, "websocket = true"), &[("keys.toml", &keys())]);
    let (head, mut conn) = upgrade(gw.addr, "/ws/room", Some(API_KEY));
    assert!(head[0].starts_with("HTTP/1.1 101"), "{head:?}");
    // The route loses its WebSocket permission.
    gw.write_config_body(&config(&up, ""));
    gw.signal("HUP");
    gw.wait_security_event("config_reloaded")
        .expect("config_reloaded event");
    // New upgrades follow the new configuration...
    let (head, _) = upgrade(gw.addr, "/ws/room", Some(API_KEY));
    assert!(head[0].starts_with("HTTP/1.1 400"), "{head:?}");
    // ...and the open socket keeps running on the snapshot it started on.
    conn.get_mut()
        .write_all(&frame("still here", true))
        .unwrap();
    assert_eq!(read_frame(&mut conn).unwrap(), "echo: still here");
}

#[test]
fn a_graceful_upgrade_drains_open_websockets() {
    let up = EchoServer::start();
    let mut gw =
        Gateway::start_with_files(&config(&up, "websocket = true"), &[("keys.toml", &keys())]);
    let (head, mut conn) = upgrade(gw.addr, "/ws/room", Some(API_KEY));
    assert!(head[0].starts_with("HTTP/1.1 101"), "{head:?}");
    // The old process hands its sockets over and drains; the open socket
    // stays with it until it exits.
    let (tx, rx) = std::sync::mpsc::channel();
    let upgrader = std::thread::spawn(move || {
        let status = gw.upgrade();
        let _ = tx.send(());
        (gw, status)
    });
    conn.get_mut().write_all(&frame("during", true)).unwrap();
    assert_eq!(read_frame(&mut conn).unwrap(), "echo: during");
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the old process exits");
    let (gw, status) = upgrader.join().unwrap();
    assert!(status.success(), "old process: {status}");
    // With the old process gone, so is its socket...
    let mut buf = [0u8; 16];
    assert!(matches!(conn.read(&mut buf), Ok(0) | Err(_)));
    // ...and the new process serves new upgrades.
    let (head, mut conn) = upgrade(gw.addr, "/ws/room", Some(API_KEY));
    assert!(head[0].starts_with("HTTP/1.1 101"), "{head:?}");
    conn.get_mut().write_all(&frame("after", true)).unwrap();
    assert_eq!(read_frame(&mut conn).unwrap(), "echo: after");
}
