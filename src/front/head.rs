//! Reading an HTTP/1 request head before Pingora does: within a deadline,
//! into a bounded buffer, and checked so that every head Pingora would
//! refuse with its own empty 400 gets the contract's JSON instead.

use std::time::Duration;

use std::pin::Pin;

use pingora::http::authority::{is_http_family_scheme, raw_target_authority, RawTargetAuthority};

use super::stream::{Framing, Replay};
use crate::proxy::reject::{Code, Reject};

/// Room for the request line beside the header section's own limit.
const REQUEST_LINE_SLACK: usize = 1024;
/// As many header lines as Pingora parses.
const MAX_HEADERS: usize = 256;

/// Why no head came.
/// What the start of a connection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// An HTTP/1 request head, checked and marked in the buffer.
    Http1,
    /// The HTTP/2 connection preface (h2c by prior knowledge), still
    /// buffered for Pingora's HTTP/2 server.
    H2Preface,
}

/// The client preface of RFC 9113 §3.4.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug)]
pub enum HeadError {
    /// The client closed the connection between requests, stayed idle too
    /// long, or the process is shutting down: close without a word.
    Gone,
    /// The head did not complete in time.
    Timeout,
    /// An answer to send before closing.
    Refused(Reject),
}

/// The limits a head is read under.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The most bytes of a head held before the answer is 431.
    pub max_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl HeadLimits {
    pub fn new(limits: &crate::config::Limits) -> Self {
        HeadLimits {
            max_bytes: limits.max_header_bytes + limits.max_uri_bytes + REQUEST_LINE_SLACK,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }
}

/// Finds the end of a head as bytes arrive, without rescanning: a client
/// trickling a byte at a time costs one pass over what it sent, and a
/// whole head costs a `memchr` per line.
#[derive(Debug, Default)]
pub struct HeadScanner {
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Whether a line with content has been seen (empty lines before the
    /// request line are skipped, as RFC 9112 §2.2 allows).
    started: bool,
}

impl HeadScanner {
    /// The length of the head (through its empty line) if `buf` holds all
    /// of it; `buf` must extend what the previous call saw. A line of
    /// nothing but `\r` counts as empty.
    pub fn find_end(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(offset) = buf
            .get(self.scanned..)
            .and_then(|rest| memchr::memchr(b'\n', rest))
        {
            let newline = self.scanned + offset;
            let line = buf.get(self.line_start..newline).unwrap_or_default();
            self.scanned = newline + 1;
            self.line_start = newline + 1;
            if line.iter().all(|b| *b == b'\r') {
                if self.started {
                    return Some(newline + 1);
                }
            } else {
                self.started = true;
            }
        }
        self.scanned = buf.len();
        None
    }
}

/// A connection's clock for [`read`]: one timer, re-armed per request
/// (re-arming an entry costs a fraction of making one).
pub struct HeadTimer(Pin<Box<tokio::time::Sleep>>);

impl HeadTimer {
    pub fn new() -> Self {
        HeadTimer(Box::pin(tokio::time::sleep(Duration::ZERO)))
    }

    fn arm(&mut self, after: Duration) {
        self.0.as_mut().reset(tokio::time::Instant::now() + after);
    }
}

impl Default for HeadTimer {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the next request head into `conn`'s buffer and checks it.
///
/// Waits up to `idle_timeout` for the first byte (the connection is idle
/// until then), then up to `header_timeout` from that byte for the whole
/// head, holding at most `max_bytes` of it. `shutdown` ends an idle wait.
/// With `h2c`, the connection may instead open with the HTTP/2 preface,
/// which is read whole before anything is decided: it contains a blank
/// line, so a head scanner would take its first 18 bytes for a request.
pub async fn read(
    conn: &mut Replay,
    limits: HeadLimits,
    timer: &mut HeadTimer,
    shutdown: &mut pingora::server::ShutdownWatch,
    h2c: bool,
) -> Result<Head, HeadError> {
    let mut scanner = HeadScanner::default();
    // Bytes already here (pipelined): the head's clock is running.
    let mut started = !conn.buffered().is_empty();
    if started {
        timer.arm(limits.header_timeout);
    } else {
        timer.arm(limits.idle_timeout);
    }
    loop {
        let buffered = conn.buffered();
        let preface =
            h2c && H2_PREFACE.starts_with(&buffered[..buffered.len().min(H2_PREFACE.len())]);
        if preface && buffered.len() >= H2_PREFACE.len() {
            return Ok(Head::H2Preface);
        }
        if let Some(end) = scanner.find_end(buffered).filter(|_| !preface) {
            let body =
                check(buffered.get(..end).unwrap_or_default()).map_err(HeadError::Refused)?;
            conn.set_head(end, body);
            return Ok(Head::Http1);
        }
        if conn.buffered().len() > limits.max_bytes {
            return Err(HeadError::Refused(too_large()));
        }
        let room = limits.max_bytes + 1 - conn.buffered().len();
        let read = std::future::poll_fn(|cx| conn.poll_fill(cx, room));
        let n = if started {
            tokio::select! {
                biased;
                result = read => result,
                () = &mut timer.0 => return Err(HeadError::Timeout),
            }
        } else {
            if *shutdown.borrow() {
                return Err(HeadError::Gone);
            }
            tokio::select! {
                biased;
                result = read => result,
                () = &mut timer.0 => return Err(HeadError::Gone),
                _ = shutdown.changed() => return Err(HeadError::Gone),
            }
        };
        match n {
            // Closed, between requests or in the middle of a head: nobody
            // to answer.
            Ok(0) | Err(_) => return Err(HeadError::Gone),
            Ok(_) if !started => {
                started = true;
                timer.arm(limits.header_timeout);
            }
            Ok(_) => {}
        }
    }
}

fn too_large() -> Reject {
    Reject::new(Code::HeadersTooLarge, "request headers are too large")
}

fn bad(message: &'static str) -> Reject {
    Reject::new(Code::BadRequest, message)
}

/// Refuses every head that Pingora's own parser or its validation would
/// refuse (so they get JSON, not Pingora's empty 400), and the framing and
/// target forms the gateway never forwards: a fragment, CONNECT, more than
/// one `Host` or `Content-Length`, `Transfer-Encoding` other than a single
/// `chunked` (or with `Content-Length`, or on HTTP/1.0), an absolute-form
/// authority with user information or differing from `Host`.
///
/// The head's body framing on success.
///
/// # Errors
///
/// The refusal to send.
pub fn check(head: &[u8]) -> Result<Framing, Reject> {
    // Uninitialized: filling 256 empty headers would cost more than
    // parsing a typical head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(_) => return Err(bad("malformed request head")),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request head"));
    };
    if method == "CONNECT" {
        return Err(bad("CONNECT is not supported"));
    }
    if target.contains('#') {
        return Err(bad("the request target must not contain a fragment"));
    }
    // What Pingora's URI parser refuses it answers with its own empty 400;
    // only targets with characters beyond the plain URI set can be such.
    let plain = target.bytes().all(|b| PLAIN_URI[usize::from(b)]);
    if !plain
        && pingora::http::RequestHeader::build_no_case(method, target.as_bytes(), Some(0)).is_err()
    {
        return Err(bad(
            "the request target has characters that must be percent-encoded",
        ));
    }
    let mut host = None;
    let mut content_length = None;
    let mut transfer_encoding = None;
    let mut upgrade = false;
    for h in req.headers.iter() {
        upgrade |= h.name.eq_ignore_ascii_case("upgrade");
        let slot = if h.name.eq_ignore_ascii_case("host") {
            &mut host
        } else if h.name.eq_ignore_ascii_case("content-length") {
            &mut content_length
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            &mut transfer_encoding
        } else {
            continue;
        };
        if slot.replace(h.value).is_some() {
            return Err(bad("a framing or Host header is repeated"));
        }
    }
    if host.is_some_and(|h| h.contains(&b'@')) {
        return Err(bad("the Host header must not contain user information"));
    }
    // Pingora's own classifier, so that no target it would refuse gets
    // past this check.
    match raw_target_authority(target.as_bytes()) {
        RawTargetAuthority::None => {}
        RawTargetAuthority::AmbiguousAuthority => {
            return Err(bad("the request target's authority is ambiguous"));
        }
        RawTargetAuthority::Absolute {
            scheme, authority, ..
        } => {
            if authority.contains(&b'@') {
                return Err(bad("the request target must not contain user information"));
            }
            if is_http_family_scheme(scheme) && http::uri::Authority::try_from(authority).is_err() {
                return Err(bad("the request target's authority is not valid"));
            }
            if host.is_some_and(|h| h != authority) {
                return Err(bad(
                    "the Host header differs from the request target's authority",
                ));
            }
        }
    }
    let mut length = 0;
    if let Some(cl) = content_length {
        length = std::str::from_utf8(cl)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad("Content-Length is not a number"))?;
    }
    if let Some(te) = transfer_encoding {
        if version == 0 {
            return Err(bad("HTTP/1.0 requests cannot use Transfer-Encoding"));
        }
        if content_length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding are present"));
        }
        if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(bad("the only Transfer-Encoding accepted is chunked"));
        }
        return Ok(Framing::Unbounded);
    }
    // After an upgrade the connection carries another protocol.
    if upgrade {
        return Ok(Framing::Unbounded);
    }
    Ok(Framing::Length(length))
}

/// Bytes that may stand raw in a request target (RFC 3986 unreserved,
/// sub-delims, `:@/?%`), as a table: this runs over every target byte.
const PLAIN_URI: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            );
        i += 1;
    }
    table
};

/// The request id for a refusal of a head: the client's when it is a safe
/// one, else a new one.
pub fn request_id(head: &[u8]) -> String {
    let value = head
        .split(|b| *b == b'\n')
        .skip(1)
        .take(MAX_HEADERS)
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|b| *b == b':')?);
            name.trim_ascii()
                .eq_ignore_ascii_case(b"x-request-id")
                .then(|| value.get(1..).unwrap_or_default().trim_ascii())
        });
    crate::proxy::client::request_id(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(chunks: &[&[u8]]) -> Option<usize> {
        let mut scanner = HeadScanner::default();
        let mut buf = Vec::new();
        let mut found = None;
        for c in chunks {
            buf.extend_from_slice(c);
            found = scanner.find_end(&buf);
            if found.is_some() {
                break;
            }
        }
        found
    }

    #[test]
    fn finds_the_end_of_a_head() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(end(&[head]), Some(head.len() - 4));
        assert_eq!(end(&[b"GET / HTTP/1.1\nHost: a\n\nx"]), Some(24));
        assert_eq!(end(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), Some(22));
        // A byte at a time, split inside the final CRLFCRLF.
        let bytes: Vec<&[u8]> = head[..head.len() - 4].chunks(1).collect();
        assert_eq!(end(&bytes), Some(head.len() - 4));
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), None);
    }

    fn refused(head: &str) -> Option<u16> {
        check(head.as_bytes()).err().map(|r| r.status())
    }

    #[test]
    fn framing_of_a_head() {
        let framing = |h: &str| check(h.as_bytes()).ok();
        assert_eq!(
            framing("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(Framing::Length(0))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
            Some(Framing::Length(12))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Framing::Unbounded)
        );
        assert_eq!(
            framing(
                "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
            ),
            Some(Framing::Unbounded)
        );
    }

    #[test]
    fn accepts_ordinary_heads() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://a.com/x HTTP/1.1\r\nHost: a.com\r\n\r\n",
            "GET /x HTTP/1.0\r\n\r\n",
            "GET admin/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET x:/admin HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(refused(head), None, "{head:?}");
        }
    }

    #[test]
    fn refuses_what_pingora_would_and_more() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            "GET http://u@a.com/ HTTP/1.1\r\n\r\n",
            "GET http://a.com/ HTTP/1.1\r\nHost: b.com\r\n\r\n",
            "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET /x?a=< HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /x<y HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http:admin/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET ://admin/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a\\@b/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        ] {
            assert_eq!(refused(head), Some(400), "{head:?}");
        }
        let many: String = (0..300).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Some(431));
    }

    #[test]
    fn request_id_of_a_head() {
        assert_eq!(
            request_id(b"GET / HTTP/1.1\r\nX-Request-Id: abc-1\r\n\r\n"),
            "abc-1"
        );
        assert_eq!(
            request_id(b"GET / HTTP/1.1\r\nx-request-id: bad id\r\n\r\n").len(),
            32
        );
        assert_eq!(request_id(b"garbage").len(), 32);
    }
}
