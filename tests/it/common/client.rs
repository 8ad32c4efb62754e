//! A raw HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Request bytes are written exactly as given (no path normalization, no
//! header rewriting), so tests can send `/public/../admin`, `%2e%2e`,
//! conflicting `Content-Length`/`Transfer-Encoding` and the like.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Socket read/write timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for reading one whole response.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(30);
const MAX_LINE: u64 = 64 * 1024;
const MAX_HEADER_LINES: usize = 1000;
const MAX_INTERIM_RESPONSES: usize = 10;
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_CHUNKS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// In received order; names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics (showing status and body) otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, headers {:?}, body {:?}",
                self.status,
                self.headers,
                self.body_str()
            )
        })
    }
}

/// Builds an HTTP/1.1 request. Adds `Host: localhost` unless a `host` header
/// is given, `Content-Length` when there is a body (unless `content-length`
/// or `transfer-encoding` is given), and `Connection: close` when `close`
/// (unless a `connection` header is given).
pub fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    if close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Connects (5 s timeout), writes `request` as is and reads one response.
pub fn send_raw(addr: SocketAddr, request: &[u8]) -> io::Result<Response> {
    let mut conn = Conn::try_open(addr)?;
    conn.send(request)
}

/// `GET path` with `Connection: close` (over h2c inside
/// [`super::h2c::over_h2c`]); panics on I/O errors.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    if super::h2c::active(addr) {
        return super::h2c::exchange(addr, "GET", path, &[], None).into_response();
    }
    let req = build_request("GET", path, &[], None, true);
    send_raw(addr, &req).unwrap_or_else(|e| panic!("GET {path} to {addr}: {e}"))
}

/// One request with `Connection: close` (see [`build_request`]), or over
/// h2c inside [`super::h2c::over_h2c`]; panics on I/O errors.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    if super::h2c::active(addr) {
        return super::h2c::exchange(addr, method, path, headers, body).into_response();
    }
    let req = build_request(method, path, headers, body, true);
    send_raw(addr, &req).unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// A connection that can carry several requests (keep-alive, pipelining).
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects; panics on failure.
    pub fn open(addr: SocketAddr) -> Conn {
        Self::try_open(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    /// Writes `request` as is and reads one response (no body if the request
    /// starts with `HEAD `). If the write fails because the peer already
    /// answered and closed (e.g. 413 while the body is still being sent), the
    /// response is still returned when it can be read.
    pub fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        let head = request.starts_with(b"HEAD ");
        if let Err(write_err) = self.write_raw(request) {
            return self.read_response(head).map_err(|_| write_err);
        }
        self.read_response(head)
    }

    /// `GET path` keeping the connection open.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(&build_request("GET", path, &[], None, false))
    }

    /// A request keeping the connection open (see [`build_request`]).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        self.send(&build_request(method, path, headers, body, false))
    }

    /// Writes bytes without reading anything (pipelining, slow clients).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads one response; `head` means the request was a HEAD (no body).
    pub fn read_response(&mut self, head: bool) -> io::Result<Response> {
        read_response(&mut self.reader, head, Instant::now() + RESPONSE_DEADLINE)
    }

    /// True if the peer has closed (or reset) the connection and no unread
    /// data is pending. Does not block.
    pub fn is_closed(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_ref();
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let closed = match stream.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        };
        let _ = stream.set_nonblocking(false);
        closed
    }
}

fn check_deadline(deadline: Instant) -> io::Result<()> {
    if Instant::now() > deadline {
        return Err(io::Error::new(
            ErrorKind::TimedOut,
            "response not complete within the deadline",
        ));
    }
    Ok(())
}

/// One CRLF- (or LF-) terminated line without its terminator.
fn read_line(reader: &mut BufReader<TcpStream>, deadline: Instant) -> io::Result<String> {
    check_deadline(deadline)?;
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn read_headers(
    reader: &mut BufReader<TcpStream>,
    deadline: Instant,
) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for _ in 0..MAX_HEADER_LINES {
        let line = read_line(reader, deadline)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            io::Error::new(ErrorKind::InvalidData, format!("bad header line {line:?}"))
        })?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Err(io::Error::new(
        ErrorKind::InvalidData,
        "too many header lines",
    ))
}

fn parse_status_line(line: &str) -> io::Result<u16> {
    let bad = || io::Error::new(ErrorKind::InvalidData, format!("bad status line {line:?}"));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(bad());
    }
    let code = parts.next().unwrap_or("");
    if code.len() != 3 {
        return Err(bad());
    }
    code.parse::<u16>().map_err(|_| bad())
}

fn read_response(
    reader: &mut BufReader<TcpStream>,
    head: bool,
    deadline: Instant,
) -> io::Result<Response> {
    for _ in 0..MAX_INTERIM_RESPONSES {
        let status = parse_status_line(&read_line(reader, deadline)?)?;
        let headers = read_headers(reader, deadline)?;
        if (100..200).contains(&status) && status != 101 {
            continue; // 100 Continue, 103 Early Hints: the real answer follows
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(response);
        }
        let chunked = response
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        response.body = if chunked {
            read_chunked(reader, deadline)?
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad content-length {len:?}"),
                )
            })?;
            read_exact_len(reader, len, deadline)?
        } else {
            read_to_close(reader, deadline)?
        };
        return Ok(response);
    }
    Err(io::Error::new(
        ErrorKind::InvalidData,
        "too many interim (1xx) responses",
    ))
}

fn read_exact_len(
    reader: &mut BufReader<TcpStream>,
    len: usize,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    if len > MAX_BODY {
        return Err(io::Error::new(ErrorKind::InvalidData, "body too large"));
    }
    let mut body = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        check_deadline(deadline)?;
        let n = reader.read(&mut body[filled..])?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("connection closed after {filled} of {len} body bytes"),
            ));
        }
        filled += n;
    }
    Ok(body)
}

fn read_to_close(reader: &mut BufReader<TcpStream>, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        check_deadline(deadline)?;
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(body);
        }
        if body.len() + n > MAX_BODY {
            return Err(io::Error::new(ErrorKind::InvalidData, "body too large"));
        }
        body.extend_from_slice(&buf[..n]);
    }
}

fn read_chunked(reader: &mut BufReader<TcpStream>, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    for _ in 0..MAX_CHUNKS {
        let line = read_line(reader, deadline)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(ErrorKind::InvalidData, format!("bad chunk size {line:?}"))
        })?;
        if size == 0 {
            read_headers(reader, deadline)?; // trailers
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(io::Error::new(ErrorKind::InvalidData, "body too large"));
        }
        body.extend(read_exact_len(reader, size, deadline)?);
        if !read_line(reader, deadline)?.is_empty() {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
    }
    Err(io::Error::new(ErrorKind::InvalidData, "too many chunks"))
}
