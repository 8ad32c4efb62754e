//! WebSocket per route through the real binary (CONTRACT §9): the upgrade
//! only where `websocket = true`, authenticated like any request, messages
//! relayed both ways, and an idle socket closed after
//! `websocket_idle_timeout_seconds`. Client and upstream are
//! `tokio-tungstenite`, a real RFC 6455 implementation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::common;
use common::gateway::Gateway;
use common::h2c::runtime;

/// Bound for one handshake or one message.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<TcpStream>;

/// A WebSocket echo server: accepts every upgrade and answers each text or
/// binary message with the same kind, prefixed `echo: `. Records the
/// headers of each upgrade request it accepted.
struct EchoServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<HeaderMap>>>,
}

impl EchoServer {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let record = heads.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    tokio::spawn(echo(tcp, record.clone()));
                }
            })
        });
        EchoServer { addr, heads }
    }

    fn upgrades(&self) -> Vec<HeaderMap> {
        self.heads.lock().unwrap().clone()
    }
}

// The handshake callback's `Result` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn echo(tcp: TcpStream, record: Arc<Mutex<Vec<HeaderMap>>>) {
    let keep = |req: &Request, resp: Response| {
        record.lock().unwrap().push(req.headers().clone());
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, keep).await else {
        return;
    };
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                // Shown with a failing test's output.
                eprintln!("websocket upstream: {e}");
                return;
            }
        };
        let answer = match msg {
            Message::Text(text) => Message::text(format!("echo: {text}")),
            Message::Binary(bytes) => Message::binary([b"echo: ", &bytes[..]].concat()),
            _ => continue,
        };
        if ws.send(answer).await.is_err() {
            return;
        }
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

fn start(route_extra: &str) -> (EchoServer, Gateway) {
    let up = EchoServer::start();
    let gw = Gateway::start_with_files(&config(&up, route_extra), &[("keys.toml", &keys())]);
    (up, gw)
}

/// Opens a WebSocket to `path` through the gateway, with the API key when
/// given; `Err(status)` when the upgrade is refused.
async fn connect(addr: SocketAddr, path: &str, key: Option<&str>) -> Result<Socket, u16> {
    let mut req = format!("ws://chat.example.com{path}")
        .into_client_request()
        .unwrap();
    if let Some(key) = key {
        req.headers_mut().insert("x-api-key", key.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let handshake = tokio_tungstenite::client_async(req, tcp);
    match tokio::time::timeout(IO_TIMEOUT, handshake).await {
        Ok(Ok((ws, resp))) => {
            assert_eq!(resp.status(), 101);
            Ok(ws)
        }
        Ok(Err(WsError::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(e)) => panic!("WebSocket handshake: {e}"),
        Err(_) => panic!("WebSocket handshake timed out"),
    }
}

/// Sends `msg` and returns the next text, binary or pong message.
async fn round_trip(ws: &mut Socket, msg: Message) -> Message {
    ws.send(msg).await.unwrap();
    next_event(ws)
        .await
        .unwrap_or_else(|closed| panic!("no answer: {closed}"))
}

/// The next text, binary or pong message; `None` once the socket is closed.
async fn next_data(ws: &mut Socket) -> Option<Message> {
    next_event(ws).await.ok()
}

/// The next text, binary or pong message, or how the socket closed.
async fn next_event(ws: &mut Socket) -> Result<Message, String> {
    for _ in 0..100 {
        let next = tokio::time::timeout(IO_TIMEOUT, ws.next())
            .await
            .map_err(|_| "no message or close within the timeout".to_string())?;
        match next {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_) | Message::Pong(_)))) => {
                return Ok(msg)
            }
            Some(Ok(Message::Close(frame))) => return Err(format!("close frame {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("error {e}")),
            None => return Err("end of stream".into()),
        }
    }
    Err("only control frames".into())
}

#[test]
fn websocket_routes_upgrade_after_authentication_and_relay_messages() {
    let (up, gw) = start("websocket = true");
    runtime().block_on(async {
        // Authenticated like any request, and refused where not allowed.
        assert_eq!(connect(gw.addr, "/ws/room", None).await.err(), Some(401));
        assert_eq!(connect(gw.addr, "/plain/room", None).await.err(), Some(400));
        assert!(up.upgrades().is_empty());

        let mut ws = connect(gw.addr, "/ws/room", Some(API_KEY)).await.unwrap();
        for text in ["hello", "second"] {
            let answer = round_trip(&mut ws, Message::text(text)).await;
            assert_eq!(answer, Message::text(format!("echo: {text}")));
        }
        let answer = round_trip(&mut ws, Message::binary(vec![0u8, 255, 7])).await;
        assert_eq!(answer, Message::binary(b"echo: \x00\xff\x07".to_vec()));
        // Control frames cross too: the upstream answers a ping.
        let answer = round_trip(&mut ws, Message::Ping(b"are you there".to_vec().into())).await;
        assert_eq!(answer, Message::Pong(b"are you there".to_vec().into()));
        ws.close(None).await.unwrap();
    });
    // The upstream saw the upgrade with the caller's identity, not the key.
    let upgrades = up.upgrades();
    assert_eq!(upgrades.len(), 1);
    assert_eq!(upgrades[0]["x-auth-consumer"], "chat");
    assert_eq!(upgrades[0]["upgrade"], "websocket");
    assert!(upgrades[0].get("x-api-key").is_none(), "{:?}", upgrades[0]);
}

#[test]
fn idle_websocket_is_closed_after_its_timeout() {
    let (_up, gw) = start("websocket = true\nwebsocket_idle_timeout_seconds = 1");
    runtime().block_on(async {
        let mut ws = connect(gw.addr, "/ws/room", Some(API_KEY)).await.unwrap();
        let answer = round_trip(&mut ws, Message::text("ping")).await;
        assert_eq!(answer, Message::text("echo: ping"));
        // Then nothing either way: the gateway closes the socket (bounded
        // by IO_TIMEOUT, far beyond the 1 s idle limit).
        assert_eq!(
            next_data(&mut ws).await,
            None,
            "an idle WebSocket is closed"
        );
    });
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
    let (up, gw) = start("websocket = true");
    runtime().block_on(async {
        let mut ws = connect(gw.addr, "/ws/room", Some(API_KEY)).await.unwrap();
        // The route loses its WebSocket permission.
        gw.write_config_body(&config(&up, ""));
        gw.signal("HUP");
        gw.wait_security_event("config_reloaded")
            .expect("config_reloaded event");
        // New upgrades follow the new configuration...
        assert_eq!(
            connect(gw.addr, "/ws/room", Some(API_KEY)).await.err(),
            Some(400)
        );
        // ...and the open socket keeps running on the snapshot it started on.
        ws.send(Message::text("still here")).await.unwrap();
        let answer = next_event(&mut ws).await.unwrap_or_else(|closed| {
            // How the gateway ended the socket is in its access log line.
            panic!(
                "{closed}; gateway: {}\naccess log: {:?}\nsecurity log: {:?}",
                gw.stderr(),
                gw.access_log(),
                gw.security_log()
            )
        });
        assert_eq!(answer, Message::text("echo: still here"));
    });
}

#[test]
fn a_graceful_upgrade_drains_open_websockets() {
    let (_up, mut gw) = start("websocket = true");
    let rt = runtime();
    let mut ws = rt
        .block_on(connect(gw.addr, "/ws/room", Some(API_KEY)))
        .unwrap();
    // The old process hands its sockets over and drains; the open socket
    // stays with it until it exits.
    let (tx, rx) = std::sync::mpsc::channel();
    let upgrader = std::thread::spawn(move || {
        let status = gw.upgrade();
        let _ = tx.send(());
        (gw, status)
    });
    let answer = rt.block_on(round_trip(&mut ws, Message::text("during")));
    assert_eq!(answer, Message::text("echo: during"));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the old process exits");
    let (gw, status) = upgrader.join().unwrap();
    assert!(status.success(), "old process: {status}");
    rt.block_on(async {
        // With the old process gone, so is its socket...
        assert_eq!(next_data(&mut ws).await, None);
        // ...and the new process serves new upgrades.
        let mut ws = connect(gw.addr, "/ws/room", Some(API_KEY)).await.unwrap();
        let answer = round_trip(&mut ws, Message::text("after")).await;
        assert_eq!(answer, Message::text("echo: after"));
    });
}
