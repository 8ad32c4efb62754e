//! A real HTTP/1.1 upstream (hyper 1 server) for black-box tests.
//!
//! Self-contained on purpose (std, tokio, hyper, hyper-util, http-body-util,
//! bytes, serde_json, http only): `examples/echo.rs` includes this file with
//! `#[path = "../tests/it/common/upstream.rs"] mod upstream;`.
//!
//! Every request is answered with `200` (or the `status=NNN` query parameter)
//! and a JSON echo of what was received:
//! `{"server", "method", "uri", "headers", "body_len", "body"}`, where `uri` is
//! the request target exactly as received and `headers` maps lower-case names
//! to values (repeated headers joined with `", "`). `sleep_ms=N` anywhere in
//! the query delays the answer by N ms (at most 30 s), `vary=V` adds a
//! `Vary: V` response header, `cache_control=V` a `Cache-Control: V` and
//! `set_cookie=V` a `Set-Cookie: V`; `pad=N` adds a `"pad"` member of N
//! bytes (at most 1 MiB) to the body. `/healthz` answers the
//! status set with [`Upstream::set_health_status`] (default 200) with body
//! `ok`, and is neither counted in [`Upstream::hits`] nor recorded in
//! [`Upstream::requests`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// How many request records [`Upstream::requests`] keeps.
pub const MAX_RECORDS: usize = 100;
/// Upper bound for the `sleep_ms` query parameter.
pub const MAX_SLEEP_MS: u64 = 30_000;
/// At most this many body bytes are echoed (as lossy UTF-8) in `"body"`.
pub const MAX_ECHOED_BODY: usize = 64 * 1024;
/// How long `stop()` waits for the accept and connection tasks to go away.
const STOP_WAIT: Duration = Duration::from_secs(5);

struct Shared {
    name: String,
    hits: AtomicUsize,
    health_status: AtomicU16,
    records: Mutex<VecDeque<Value>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
}

/// A running upstream on its own multi-thread tokio runtime.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
    runtime: Mutex<Option<Runtime>>,
}

impl Upstream {
    /// Starts an upstream on `127.0.0.1:0` (a fresh port). Panics on failure.
    pub fn start(name: &str) -> Upstream {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(name, any)
            .unwrap_or_else(|e| panic!("upstream {name}: cannot start on {any}: {e}"))
    }

    /// Starts an upstream on `addr` (e.g. to bring a stopped target back on
    /// the same port).
    pub fn start_on(name: &str, addr: SocketAddr) -> io::Result<Upstream> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("upstream-{name}"))
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            hits: AtomicUsize::new(0),
            health_status: AtomicU16::new(200),
            records: Mutex::new(VecDeque::with_capacity(MAX_RECORDS)),
            conns: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let (addr, accept) = spawn_listener(&runtime, addr, &shared)?;
        Ok(Upstream {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received (counted once the body is read, before any
    /// `sleep_ms`), excluding `/healthz`.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Status that `GET /healthz` answers from now on (default 200).
    pub fn set_health_status(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// The last [`MAX_RECORDS`] request records, oldest first (the same JSON
    /// the upstream answered with).
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .records
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// The most recent request record, if any.
    pub fn last_request(&self) -> Option<Value> {
        self.shared.records.lock().unwrap().back().cloned()
    }

    /// Forgets the hit counter and the request records.
    pub fn reset(&self) {
        let mut records = self.shared.records.lock().unwrap();
        records.clear();
        self.shared.hits.store(0, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every open connection. Returns once the
    /// listening socket and the connections are closed (bounded wait), so a
    /// client sees "connection refused" afterwards. Idempotent.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + STOP_WAIT;
        // The accept task must be gone before the connection list is drained,
        // or it could still register a connection after the drain.
        let accept = self.accept.lock().unwrap().take();
        if let Some(task) = accept {
            task.abort();
            wait_finished(&task, deadline);
        }
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for task in &conns {
            task.abort();
        }
        for task in &conns {
            wait_finished(task, deadline);
        }
    }

    /// Listens again on the same address after [`Upstream::stop`]; hits,
    /// records and health status are kept. No-op if it is running.
    pub fn restart(&self) -> io::Result<()> {
        let mut accept = self.accept.lock().unwrap();
        if accept.is_some() {
            return Ok(());
        }
        let runtime = self.runtime.lock().unwrap();
        let runtime = runtime
            .as_ref()
            .ok_or_else(|| io::Error::other("upstream runtime is gone"))?;
        // Cleared first: the new accept loop exits when it sees the flag set.
        self.shared.stopped.store(false, Ordering::SeqCst);
        match spawn_listener(runtime, self.addr, &self.shared) {
            Ok((_, task)) => {
                *accept = Some(task);
                Ok(())
            }
            Err(e) => {
                self.shared.stopped.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.lock().unwrap().take() {
            // Never blocks, so dropping an Upstream inside async code is fine.
            runtime.shutdown_background();
        }
    }
}

fn spawn_listener(
    runtime: &Runtime,
    addr: SocketAddr,
    shared: &Arc<Shared>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    // Bind synchronously so that errors (address in use) reach the caller.
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let task = runtime.spawn(accept_loop(listener, shared.clone()));
    Ok((local, task))
}

/// Busy-waits (bounded by `deadline`) until an aborted task is gone; a
/// finished task has dropped its future, hence its sockets.
fn wait_finished(task: &JoinHandle<()>, deadline: Instant) {
    while !task.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs until the task is aborted by `stop()` (or the runtime shuts down).
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // e.g. EMFILE: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let task = tokio::spawn(serve_connection(stream, shared.clone()));
        let mut conns = shared.conns.lock().unwrap();
        conns.retain(|t| !t.is_finished());
        conns.push(task);
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_headers(1000)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_string();

    if parts.uri.path() == "/healthz" {
        let _ = body.collect().await;
        let code = shared.health_status.load(Ordering::SeqCst);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return respond(shared, status, "text/plain", Bytes::from_static(b"ok"));
    }

    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let msg = format!("cannot read request body: {e}");
            return respond(shared, StatusCode::BAD_REQUEST, "text/plain", msg.into());
        }
    };

    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_string(), Value::String(joined));
    }
    let echoed = &body[..body.len().min(MAX_ECHOED_BODY)];
    let record = json!({
        "server": shared.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body_len": body.len(),
        "body": String::from_utf8_lossy(echoed),
    });
    {
        let mut records = shared.records.lock().unwrap();
        if records.len() >= MAX_RECORDS {
            records.pop_front();
        }
        records.push_back(record.clone());
        shared.hits.fetch_add(1, Ordering::SeqCst);
    }

    if let Some(ms) = query_param(&query, "sleep_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS))).await;
    }
    let status = query_param(&query, "status")
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let mut record = record;
    if let Some(n) = query_param(&query, "pad").and_then(|v| v.parse::<usize>().ok()) {
        record["pad"] = Value::String("x".repeat(n.min(1 << 20)));
    }
    let body = serde_json::to_vec(&record).expect("serializable record");
    let mut resp = respond(shared, status, "application/json", body.into());
    for (param, name) in [
        ("vary", header::VARY),
        ("cache_control", header::CACHE_CONTROL),
        ("set_cookie", header::SET_COOKIE),
    ] {
        if let Some(v) = query_param(&query, param).and_then(|v| HeaderValue::from_str(v).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn respond(
    shared: &Shared,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        headers.insert("x-upstream", name);
    }
    resp
}

/// The first value of `key` in a query string (no percent-decoding).
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}
