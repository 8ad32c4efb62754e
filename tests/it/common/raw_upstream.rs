//! An upstream that records each request's head exactly as the bytes
//! arrived, for checking what the gateway forwarded (a client library or
//! hyper would normalize or refuse what these tests look for). Answers
//! every request `200` with body `ok`; keep-alive, `Content-Length` and
//! chunked request bodies are supported.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// At most this many requests are kept.
const MAX_RECORDS: usize = 200;
/// Bounds on one request, so a test bug cannot make the recorder hang.
const MAX_HEAD: usize = 256 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as received.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The request line, e.g. `GET /a?b HTTP/1.1`.
    pub line: String,
    /// Header lines in order, as (name as sent, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The request target of the request line.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of `name`; panics when it is absent or repeated.
    pub fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [one] => one,
            other => panic!("expected one {name}, got {other:?} in {self:?}"),
        }
    }

    /// Whether any header name matches, ignoring case.
    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

pub struct RawUpstream {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<RawRequest>>>,
    stopped: Arc<AtomicBool>,
}

impl RawUpstream {
    pub fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        let addr = listener.local_addr().expect("local addr");
        let records = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (r, s) = (records.clone(), stopped.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let r = r.clone();
                std::thread::spawn(move || serve(conn, &r));
            }
        });
        RawUpstream {
            addr,
            records,
            stopped,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// The last request received; panics when there is none.
    pub fn last(&self) -> RawRequest {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("the upstream received no request"))
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(conn: TcpStream, records: &Mutex<Vec<RawRequest>>) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(conn);
    for _ in 0..1000 {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if let Ok(mut r) = records.lock() {
            if r.len() < MAX_RECORDS {
                r.push(request);
            }
        }
        if writer
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
            )
            .is_err()
        {
            return;
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, budget: &mut usize) -> Option<String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(*budget as u64)
        .read_until(b'\n', &mut line)
        .ok()?;
    if n == 0 {
        return None;
    }
    *budget = budget.saturating_sub(n);
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<RawRequest> {
    let mut budget = MAX_HEAD;
    let line = read_line(reader, &mut budget)?;
    let mut headers = Vec::new();
    loop {
        let h = read_line(reader, &mut budget)?;
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h.as_str(), ""));
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut req = RawRequest {
        line,
        headers,
        body: Vec::new(),
    };
    if req
        .all("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(reader, &mut budget)?;
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader, &mut budget)?.is_empty() {}
                break;
            }
            if req.body.len() + size > MAX_BODY {
                return None;
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            reader.read_exact(&mut req.body[start..]).ok()?;
            read_line(reader, &mut budget)?;
        }
    } else if let Some(len) = req
        .all("content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            return None;
        }
        req.body.resize(len, 0);
        reader.read_exact(&mut req.body).ok()?;
    }
    Some(req)
}
