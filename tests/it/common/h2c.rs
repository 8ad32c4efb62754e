//! An HTTP/2 client (the `h2` crate, under hyper and tonic) speaking h2c by
//! prior knowledge, and the switch that runs a test's ordinary requests
//! over it: [`over_h2c`] makes [`super::client::request`] and
//! [`super::client::get`] use HTTP/2 and makes [`super::gateway::Gateway`]
//! turn on `http2` on its first listener, so one test body checks a rule
//! on both protocols (see [`crate::on_http1_and_h2c`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};

use super::client::Response;

/// Bound for one HTTP/2 exchange.
pub const H2_TIMEOUT: Duration = Duration::from_secs(10);

/// Inside [`over_h2c`]: the listeners this thread's gateways speak h2c on.
type H2cListeners = RefCell<Option<Vec<SocketAddr>>>;

thread_local! {
    static H2C: H2cListeners = const { RefCell::new(None) };
}

/// Runs `test` with this thread's requests to its gateways' first
/// listeners on h2c; restores HTTP/1.1 after.
pub fn over_h2c<T>(test: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            H2C.with(|c| c.replace(None));
        }
    }
    H2C.with(|c| c.replace(Some(Vec::new())));
    let _reset = Reset;
    test()
}

/// Inside [`over_h2c`], records that a gateway listens on `addr` with
/// `http2 = true`; returns whether it should.
pub fn enable_on(addr: SocketAddr) -> bool {
    H2C.with(|c| match c.borrow_mut().as_mut() {
        Some(listeners) => {
            listeners.push(addr);
            true
        }
        None => false,
    })
}

/// Whether this thread's requests to `addr` go over h2c: a gateway
/// listener made inside [`over_h2c`] (admin listeners, identity providers
/// and upstreams stay HTTP/1.1).
pub fn active(addr: SocketAddr) -> bool {
    H2C.with(|c| c.borrow().as_ref().is_some_and(|l| l.contains(&addr)))
}

/// What an HTTP/2 exchange returned.
pub struct H2Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// The HEADERS frame carried END_STREAM (a Trailers-Only response).
    pub ended_with_headers: bool,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The same answer in the HTTP/1 client's shape.
    pub fn into_response(self) -> Response {
        let headers = self
            .headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).trim().to_string();
                (n.as_str().to_string(), v)
            })
            .collect();
        Response {
            status: self.status,
            headers,
            body: self.body,
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One request over a fresh h2c connection. A `host` header becomes the
/// `:authority` (as an HTTP/2 client sends it), `localhost` otherwise.
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> H2Response {
    let host = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host"));
    let authority = host.map_or("localhost", |(_, v)| v);
    let fields: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .copied()
        .collect();
    send(addr, authority, method, path, &fields, body)
}

/// One request over a fresh h2c connection to `authority`, with exactly
/// the header fields given (a `host` among them is sent as one).
pub fn send(
    addr: SocketAddr,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> H2Response {
    Connection::open(addr).request(authority, method, path, headers, body)
}

/// An h2c connection that carries requests one after another, a stream
/// each, on its own single-threaded runtime.
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    client: h2::client::SendRequest<Bytes>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Connection {
        let runtime = runtime();
        let client = runtime.block_on(async {
            tokio::time::timeout(H2_TIMEOUT, async {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (client, conn) = h2::client::handshake(tcp).await.unwrap();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            })
            .await
            .expect("HTTP/2 handshake timed out")
        });
        Connection { runtime, client }
    }

    /// One request to `authority`, with exactly the header fields given.
    pub fn request(
        &mut self,
        authority: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> H2Response {
        let uri = format!("http://{authority}{path}");
        let mut req = Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).unwrap();
        let body = body.map(Bytes::copy_from_slice);
        let client = self.client.clone();
        self.runtime.block_on(async move {
            tokio::time::timeout(H2_TIMEOUT, async move {
                let mut client = client.ready().await.unwrap();
                let (resp, mut stream) = client
                    .send_request(req, body.is_none())
                    .unwrap_or_else(|e| panic!("HTTP/2 request to {uri}: {e}"));
                if let Some(body) = body {
                    stream.send_data(body, true).unwrap();
                }
                read(resp.await.unwrap()).await
            })
            .await
            .expect("HTTP/2 exchange timed out")
        })
    }
}

async fn read(resp: http::Response<h2::RecvStream>) -> H2Response {
    let (parts, mut body) = resp.into_parts();
    let ended_with_headers = body.is_end_stream();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("{e} after {:?}", parts.headers));
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    H2Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: data,
        trailers,
        ended_with_headers,
    }
}
