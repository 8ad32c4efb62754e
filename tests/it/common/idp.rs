//! A real identity provider (hyper 1 server on 127.0.0.1) for black-box
//! authentication tests, on its own tokio runtime like [`super::upstream`].
//!
//! Serves, all mutable while it runs:
//! - `GET /jwks.json`: the document set with [`Idp::set_jwks`] (default
//!   `{"keys":[]}`);
//! - `GET /.well-known/openid-configuration`: `{"issuer", "jwks_uri"}`, the
//!   issuer set with [`Idp::set_issuer`] and `jwks_uri` pointing at this
//!   server's `/jwks.json`;
//! - `POST /introspect` (RFC 7662): HTTP Basic client credentials must be
//!   the ones set with [`Idp::set_client`] (else `401`), the form field
//!   `token` selects the answer set with [`Idp::set_answer`] (default
//!   `{"active":false}`).
//!
//! - `GET /check`: a forward-auth decision point. It records the request's
//!   headers ([`Idp::authz_requests`]) and answers `403` when
//!   `x-forwarded-uri` contains `deny`, else `200` with `x-tenant: acme`
//!   and `x-other: ignored`.
//!
//! Every request is counted per path ([`Idp::hits`]) when it arrives, before
//! the artificial delay ([`Idp::set_delay_ms`], applied to every path) and
//! before a forced status ([`Idp::set_status`]) is answered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub const JWKS_PATH: &str = "/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const INTROSPECT_PATH: &str = "/introspect";
pub const AUTHZ_PATH: &str = "/check";
/// Upper bound for [`Idp::set_delay_ms`].
pub const MAX_DELAY_MS: u64 = 30_000;
/// The largest request body the server reads.
const MAX_BODY: usize = 64 * 1024;
/// How many introspection requests [`Idp::introspections`] keeps.
const MAX_RECORDS: usize = 1000;
/// How long `stop()` waits for the accept and connection tasks to go away.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What one `POST /introspect` carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    /// The HTTP Basic user and password, if the header could be decoded.
    pub client: Option<(String, String)>,
    /// The decoded `token` form field.
    pub token: Option<String>,
    /// The decoded `token_type_hint` form field.
    pub token_type_hint: Option<String>,
}

struct Shared {
    jwks: Mutex<String>,
    issuer: Mutex<String>,
    client: Mutex<(String, String)>,
    answers: Mutex<HashMap<String, Value>>,
    delay_ms: AtomicU64,
    statuses: Mutex<HashMap<String, u16>>,
    hits: Mutex<HashMap<String, usize>>,
    introspections: Mutex<Vec<Introspection>>,
    authz_requests: Mutex<Vec<HashMap<String, String>>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
    addr: Mutex<Option<SocketAddr>>,
}

/// A running identity provider. Dropping it stops it.
pub struct Idp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
    runtime: Mutex<Option<Runtime>>,
}

impl Idp {
    /// Starts on `127.0.0.1:0` (a fresh port). Panics on failure.
    pub fn start() -> Idp {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(any).unwrap_or_else(|e| panic!("idp: cannot start on {any}: {e}"))
    }

    pub fn start_on(addr: SocketAddr) -> io::Result<Idp> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("idp")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            jwks: Mutex::new(r#"{"keys":[]}"#.to_string()),
            issuer: Mutex::new("https://idp.test/".to_string()),
            client: Mutex::new(("gateway".to_string(), "secret".to_string())),
            answers: Mutex::new(HashMap::new()),
            delay_ms: AtomicU64::new(0),
            statuses: Mutex::new(HashMap::new()),
            hits: Mutex::new(HashMap::new()),
            introspections: Mutex::new(Vec::new()),
            authz_requests: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            addr: Mutex::new(None),
        });
        let (addr, accept) = spawn_listener(&runtime, addr, &shared)?;
        *shared.addr.lock().unwrap() = Some(addr);
        Ok(Idp {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        self.url(JWKS_PATH)
    }

    pub fn discovery_url(&self) -> String {
        self.url(DISCOVERY_PATH)
    }

    pub fn introspect_url(&self) -> String {
        self.url(INTROSPECT_PATH)
    }

    /// The document `GET /jwks.json` answers from now on.
    pub fn set_jwks(&self, jwks: impl Into<String>) {
        *self.shared.jwks.lock().unwrap() = jwks.into();
    }

    /// The `issuer` of the discovery document (default `https://idp.test/`).
    pub fn set_issuer(&self, issuer: &str) {
        *self.shared.issuer.lock().unwrap() = issuer.to_string();
    }

    /// The client credentials `/introspect` accepts (default
    /// `gateway` / `secret`).
    pub fn set_client(&self, id: &str, secret: &str) {
        *self.shared.client.lock().unwrap() = (id.to_string(), secret.to_string());
    }

    /// What `/introspect` answers for `token` (default `{"active":false}`).
    pub fn set_answer(&self, token: &str, answer: Value) {
        self.shared
            .answers
            .lock()
            .unwrap()
            .insert(token.to_string(), answer);
    }

    /// Delays every answer by `ms` (at most [`MAX_DELAY_MS`]).
    pub fn set_delay_ms(&self, ms: u64) {
        self.shared
            .delay_ms
            .store(ms.min(MAX_DELAY_MS), Ordering::SeqCst);
    }

    /// Makes `path` answer `status` with a small JSON error body.
    pub fn set_status(&self, path: &str, status: u16) {
        self.shared
            .statuses
            .lock()
            .unwrap()
            .insert(path.to_string(), status);
    }

    /// Undoes [`Idp::set_status`] for `path`.
    pub fn clear_status(&self, path: &str) {
        self.shared.statuses.lock().unwrap().remove(path);
    }

    /// Requests received on `path` (counted on arrival, failures included).
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The introspection requests received, oldest first.
    pub fn introspections(&self) -> Vec<Introspection> {
        self.shared.introspections.lock().unwrap().clone()
    }

    /// Forgets every counter and record (settings are kept).
    /// The headers of every `GET /check` so far (lower-case names).
    pub fn authz_requests(&self) -> Vec<HashMap<String, String>> {
        self.shared.authz_requests.lock().unwrap().clone()
    }

    pub fn authz_url(&self) -> String {
        self.url(AUTHZ_PATH)
    }

    /// Stops accepting and closes every connection; afterwards a client gets
    /// "connection refused". Idempotent.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + STOP_WAIT;
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

    /// Listens again on the same address after [`Idp::stop`]; settings and
    /// counters are kept. No-op if it is running.
    pub fn restart(&self) -> io::Result<()> {
        let mut accept = self.accept.lock().unwrap();
        if accept.is_some() {
            return Ok(());
        }
        let runtime = self.runtime.lock().unwrap();
        let runtime = runtime
            .as_ref()
            .ok_or_else(|| io::Error::other("idp runtime is gone"))?;
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

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.lock().unwrap().take() {
            runtime.shutdown_background();
        }
    }
}

fn spawn_listener(
    runtime: &Runtime,
    addr: SocketAddr,
    shared: &Arc<Shared>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
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

fn wait_finished(task: &JoinHandle<()>, deadline: Instant) {
    while !task.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
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
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let body = match read_body(body).await {
        Some(body) => body,
        None => return json_response(StatusCode::BAD_REQUEST, json!({"error": "bad body"})),
    };
    *shared.hits.lock().unwrap().entry(path.clone()).or_insert(0) += 1;

    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let forced = shared.statuses.lock().unwrap().get(&path).copied();
    if let Some(code) = forced {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_response(status, json!({"error": "forced_status"}));
    }

    match (parts.method.clone(), path.as_str()) {
        (Method::GET, JWKS_PATH) => {
            let jwks = shared.jwks.lock().unwrap().clone();
            text_response(StatusCode::OK, "application/json", jwks.into())
        }
        (Method::GET, DISCOVERY_PATH) => {
            let issuer = shared.issuer.lock().unwrap().clone();
            let addr = shared.addr.lock().unwrap().expect("idp address");
            json_response(
                StatusCode::OK,
                json!({
                    "issuer": issuer,
                    "jwks_uri": format!("http://{addr}{JWKS_PATH}"),
                    "introspection_endpoint": format!("http://{addr}{INTROSPECT_PATH}"),
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }),
            )
        }
        (Method::POST, INTROSPECT_PATH) => introspect(shared, &parts.headers, &body),
        (Method::GET, AUTHZ_PATH) => authz(shared, &parts.headers),
        (_, JWKS_PATH | DISCOVERY_PATH | INTROSPECT_PATH | AUTHZ_PATH) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method_not_allowed"}),
        ),
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}

fn authz(shared: &Shared, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let record: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let uri = record.get("x-forwarded-uri").cloned().unwrap_or_default();
    {
        let mut records = shared.authz_requests.lock().unwrap();
        if records.len() < MAX_RECORDS {
            records.push(record);
        }
    }
    if uri.contains("deny") {
        return json_response(StatusCode::FORBIDDEN, json!({"allow": false}));
    }
    let mut resp = json_response(StatusCode::OK, json!({"allow": true}));
    resp.headers_mut()
        .insert("x-tenant", HeaderValue::from_static("acme"));
    resp.headers_mut()
        .insert("x-other", HeaderValue::from_static("ignored"));
    resp
}

fn introspect(shared: &Shared, headers: &http::HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
    let client = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials);
    let form = parse_form(body);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let record = Introspection {
        client: client.clone(),
        token: field("token"),
        token_type_hint: field("token_type_hint"),
    };
    {
        let mut records = shared.introspections.lock().unwrap();
        if records.len() < MAX_RECORDS {
            records.push(record.clone());
        }
    }
    let expected = shared.client.lock().unwrap().clone();
    if client.as_ref() != Some(&expected) {
        let mut resp = json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"idp\""),
        );
        return resp;
    }
    let Some(token) = record.token else {
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    let answer = shared
        .answers
        .lock()
        .unwrap()
        .get(&token)
        .cloned()
        .unwrap_or_else(|| json!({"active": false}));
    json_response(StatusCode::OK, answer)
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_body(body: Incoming) -> Option<Bytes> {
    let collected = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()?;
    Some(collected.to_bytes())
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(&body).expect("serializable JSON");
    text_response(status, "application/json", bytes.into())
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
