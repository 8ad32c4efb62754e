//! The canonical request (CONTRACT §8): built once, before routing, from
//! the parsed request head; every stage reads it and the upstream request
//! is built from it. Stages receive a [`Request`], never Pingora's
//! `RequestHeader` or `Session`, so none can reach for the raw target or a
//! header the canonical step removed.

use std::net::IpAddr;

use http::header::{CONTENT_LENGTH, COOKIE, FORWARDED, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use pingora::http::RequestHeader;

use super::reject::{Code, Reject};
use crate::auth::identity::IDENTITY_HEADERS;
use crate::config::UnderscoreHeaders;
use crate::core::ids::ListenerId;
use crate::core::net::canonical_ip;
use crate::core::normalize::{has_path_params, normalize_path, strip_path_params};
use crate::routing::target::{canonical_query, parse_host, parse_target, without_params};
use crate::tls::ClientCert;

/// Names as `&'static str`: Pingora's case-preserving header maps copy a
/// `HeaderName` into a title-cased name on every insert, a string not.
pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub(crate) const X_REAL_IP: &str = "x-real-ip";
pub(crate) const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Headers the gateway sets on every forwarded request, replacing a
/// client's. Their `_` look-alikes (which CGI-style backends read as the
/// same variable) never get past the canonical step when
/// `underscore_headers = "allow"`.
const SET_HEADERS: [&str; 4] = [
    "x-request-id",
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    "x-forwarded-host",
];

/// What the connection says about a request: who sent it and where.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conn {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// Index of the listener the request came in on.
    pub listener: Option<ListenerId>,
    pub https: bool,
}

/// The rules the canonical step applies; from the runtime snapshot.
pub struct Rules<'a> {
    /// Whether the TCP peer is a trusted proxy.
    pub peer_trusted: bool,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub underscore_headers: UnderscoreHeaders,
    pub trusted_proxies: &'a [IpNet],
}

impl<'a> Rules<'a> {
    /// The rules of a runtime snapshot.
    pub(crate) fn of(rt: &'a crate::runtime::Runtime) -> Self {
        Rules {
            peer_trusted: false,
            max_uri_bytes: rt.limits.max_uri_bytes,
            max_header_bytes: rt.limits.max_header_bytes,
            max_body_bytes: rt.limits.max_body_bytes,
            underscore_headers: rt.underscore_headers,
            trusted_proxies: &rt.trusted_proxies,
        }
    }
}

/// The canonical host: `name[:port]` as the upstream's `Host` gets it,
/// and where the name ends.
#[derive(Debug, Clone)]
struct CanonHost {
    authority: HeaderValue,
    name_len: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Canonical {
    method: Method,
    host: Option<CanonHost>,
    /// `normalized_path[?query]`: the origin-form target the upstream gets.
    target: String,
    path_len: usize,
    /// The path with `;` parameters removed, when it had some.
    route_path: Option<String>,
    /// The query as received, when credential parameters were taken out of
    /// `target`: only providers read it.
    credential_query: Option<String>,
    client_ip: Option<IpAddr>,
    conn: Conn,
    peer_trusted: bool,
    /// The scheme the client used: the listener's, or the one a trusted
    /// proxy names in its single `x-forwarded-proto`. What DPoP's `htu` is
    /// checked against and what the upstream is told.
    https: bool,
    /// `OPTIONS *`.
    asterisk: bool,
    close: bool,
    /// `Upgrade: websocket`.
    websocket: bool,
}

/// What a stage sees of a request: the canonical view, the request's
/// headers as the canonical step left them, and the connection's verified
/// client certificate.
pub(crate) struct Request<'a> {
    pub canon: &'a Canonical,
    pub headers: &'a HeaderMap,
    pub client_cert: Option<&'a ClientCert>,
}

fn bad(message: &'static str) -> Reject {
    Reject::new(Code::BadRequest, message)
}

/// The client IP per CONTRACT §3: the TCP peer, unless the peer is a
/// trusted proxy; then every `x-forwarded-for` line, in order, is one list
/// walked from the right, trusted addresses skipped, and the first
/// untrusted one is the client. A header from an untrusted peer is never
/// believed.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer.map(canonical_ip)?;
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let mut client = peer;
    // Lines from the last to the first, hops of each from the right.
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return Some(client);
        };
        for hop in line.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // An unparseable hop ends the chain of trust.
                return Some(client);
            };
            client = canonical_ip(ip);
            if !is_trusted(client, trusted) {
                return Some(client);
            }
        }
    }
    Some(client)
}

/// An address as a header value. IPv4 is written digit by digit: the
/// formatting machinery costs more than the rest of building the header.
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
    };
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + (octet / 10) % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the upstream's `x-forwarded-for` says: every line the client (or
/// its proxies) sent, in order, as one list, then the peer (`peer`, its
/// value from [`ip_value`]).
pub(crate) fn forwarded_for(headers: &HeaderMap, peer: &HeaderValue) -> HeaderValue {
    let mut joined: Vec<u8> = Vec::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        let line = line.as_bytes().trim_ascii();
        if line.is_empty() {
            continue;
        }
        joined.extend_from_slice(line);
        joined.extend_from_slice(b", ");
    }
    if joined.is_empty() {
        return peer.clone();
    }
    joined.extend_from_slice(peer.as_bytes());
    // Each line was a header value, and so is a list of them.
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer.clone())
}

/// HTTP/2 clients send each cookie as its own field (RFC 9113 §8.2.3);
/// an HTTP/1.1 origin expects one `Cookie` line. The fields become one,
/// joined with `; `, before any stage reads them, so a policy sees the
/// `Cookie` the upstream gets.
fn join_cookies(req: &mut RequestHeader) -> Result<(), Reject> {
    let mut cookies = req.headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return Ok(());
    };
    let mut joined = first.as_bytes().to_vec();
    for more in req.headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(more.as_bytes());
    }
    let value =
        HeaderValue::from_bytes(&joined).map_err(|_| bad("the Cookie fields cannot be joined"))?;
    req.insert_header(COOKIE, value)
        .map_err(|_| bad("the Cookie fields cannot be joined"))?;
    Ok(())
}

/// A trusted proxy's single `x-forwarded-proto`, when it says `http` or
/// `https`; anything else leaves the listener's scheme.
fn forwarded_https(headers: &HeaderMap, peer_trusted: bool) -> Option<bool> {
    if !peer_trusted {
        return None;
    }
    let mut proto = headers.get_all(X_FORWARDED_PROTO).iter();
    match (proto.next(), proto.next()) {
        (Some(v), None) => match v.as_bytes().trim_ascii() {
            p if p.eq_ignore_ascii_case(b"https") => Some(true),
            p if p.eq_ignore_ascii_case(b"http") => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical_ip(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// Headers with which a client could make an origin serve another path,
/// method or host than the one the gateway checked: IIS, Symfony and
/// friends honour the URL and host overrides, many frameworks the method
/// override. A client's copies never get past the canonical step.
const OVERRIDE_HEADERS: [&str; 8] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-host",
    "x-forwarded-server",
];

/// Headers that are the gateway's to set, or that override what it
/// checked: a client's copies never get past the canonical step.
fn is_owned_header(name: &str, underscore_as_dash: bool) -> bool {
    // All of them start with `x-` (or `x_`): most names are done here.
    if !name.starts_with('x') {
        return false;
    }
    let owned = || {
        IDENTITY_HEADERS
            .iter()
            .chain(OVERRIDE_HEADERS.iter())
            .chain(std::iter::once(&"x-real-ip"))
    };
    if owned().any(|o| *o == name) {
        return true;
    }
    underscore_as_dash
        && name.contains('_')
        && owned().chain(SET_HEADERS.iter()).any(|owned| {
            owned.len() == name.len()
                && owned
                    .bytes()
                    .zip(name.bytes())
                    .all(|(o, n)| o == n || (o == b'-' && n == b'_'))
        })
}

impl Canonical {
    /// Builds the canonical view of `req` and cleans `req` in place: header
    /// names with `_` dropped (or refused), a client's copies of the
    /// gateway's own headers removed, `Forwarded` removed unless the peer
    /// is trusted. Checks, in order: header and target sizes, framing, the
    /// declared body size, the method, the target form, the host and the
    /// path.
    ///
    /// # Errors
    ///
    /// The contract's refusal: 431, 414, 413 or 400.
    pub fn build(
        req: &mut RequestHeader,
        conn: Conn,
        client_ip: Option<IpAddr>,
        rules: &Rules<'_>,
    ) -> Result<Canonical, Reject> {
        let peer_trusted = conn
            .peer
            .is_some_and(|p| is_trusted(p, rules.trusted_proxies));
        let rules = &Rules {
            peer_trusted,
            ..*rules
        };
        if req.raw_path().len() > rules.max_uri_bytes {
            return Err(Reject::new(Code::UriTooLong, "request URI is too long"));
        }
        let seen = clean_headers(req, rules)?;
        join_cookies(req)?;
        if seen.connection {
            hop_by_hop(req)?;
        }
        let websocket = seen.upgrade && asks_websocket(&req.headers);
        if seen.framing {
            check_framing(&req.headers, rules.max_body_bytes)?;
        }
        check_method(&req.method)?;

        let target = parse_target(req.raw_path()).map_err(|e| bad(e.message()))?;
        if target.asterisk && req.method != Method::OPTIONS {
            return Err(bad("the `*` request target is only allowed for OPTIONS"));
        }
        let host = canonical_host(req, target.authority)?;

        let path = if target.asterisk {
            std::borrow::Cow::Borrowed("*")
        } else {
            normalize_path(target.path).map_err(|e| Reject::new(Code::BadRequest, e.to_string()))?
        };
        let route_path = if has_path_params(&path) {
            strip_path_params(&path).map_err(|e| Reject::new(Code::BadRequest, e.to_string()))?
        } else {
            None
        };
        let query = target.query.map(canonical_query);
        let mut full =
            String::with_capacity(path.len() + query.as_ref().map_or(0, |q| q.len() + 1));
        full.push_str(&path);
        if let Some(q) = &query {
            full.push('?');
            full.push_str(q);
        }
        let close = seen.connection
            && req
                .headers
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| {
                    v.as_bytes()
                        .split(|b| *b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                });
        let https = forwarded_https(&req.headers, peer_trusted).unwrap_or(conn.https);
        Ok(Canonical {
            close,
            https,
            method: req.method.clone(),
            host,
            path_len: path.len(),
            target: full,
            route_path,
            credential_query: None,
            client_ip,
            conn,
            peer_trusted,
            asterisk: target.asterisk,
            websocket,
        })
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The normalized path, `;` parameters included: what goes upstream.
    pub fn path(&self) -> &str {
        self.target.get(..self.path_len).unwrap_or("/")
    }

    /// The path routes and policies are matched on: [`Self::path`] without
    /// `;` parameters.
    pub fn route_path(&self) -> &str {
        self.route_path.as_deref().unwrap_or_else(|| self.path())
    }

    /// Whether the path carries `;` parameters (raw or `%3B`).
    pub fn has_path_params(&self) -> bool {
        self.route_path.is_some()
    }

    /// The query as forwarded: credential parameters removed once a route
    /// has been chosen.
    pub fn query(&self) -> Option<&str> {
        self.target.get(self.path_len..)?.strip_prefix('?')
    }

    /// The query the credential providers read (the one received).
    pub fn credential_query(&self) -> Option<&str> {
        self.credential_query.as_deref().or_else(|| self.query())
    }

    /// `normalized_path[?query]`, the upstream's origin-form target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The host name routes are matched on: lower-case, without port and
    /// trailing dot.
    pub fn host(&self) -> Option<&str> {
        let h = self.host.as_ref()?;
        std::str::from_utf8(h.authority.as_bytes().get(..h.name_len)?).ok()
    }

    /// `host[:port]` as the upstream gets it.
    pub fn authority(&self) -> Option<&HeaderValue> {
        self.host.as_ref().map(|h| &h.authority)
    }

    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    pub fn conn(&self) -> Conn {
        self.conn
    }

    pub fn peer_trusted(&self) -> bool {
        self.peer_trusted
    }

    /// Whether the client spoke HTTPS (to us, or to a trusted proxy).
    pub fn https(&self) -> bool {
        self.https
    }

    pub fn is_asterisk(&self) -> bool {
        self.asterisk
    }

    /// Whether the client asked to close the connection after this
    /// request (on any of its `Connection` lines).
    pub fn wants_close(&self) -> bool {
        self.close
    }

    /// The request asks to upgrade to WebSocket.
    pub fn wants_websocket(&self) -> bool {
        self.websocket
    }

    /// Takes the route's credential query parameters out of the forwarded
    /// query (and so out of logs and authorization questions); providers
    /// keep reading the query as received.
    pub fn remove_query_params(&mut self, names: &[String]) {
        let Some(query) = self.query() else {
            return;
        };
        let std::borrow::Cow::Owned(kept) = without_params(query, names) else {
            return;
        };
        let original = query.to_string();
        self.target.truncate(self.path_len);
        if !kept.is_empty() {
            self.target.push('?');
            self.target.push_str(&kept);
        }
        self.credential_query = Some(original);
    }
}

/// Which headers that later checks look at are there at all, so that
/// requests without them skip the lookups.
struct Seen {
    connection: bool,
    upgrade: bool,
    framing: bool,
}

/// One pass over the headers: 431 when the header section is over the
/// limit (names, values and their separators, as on the wire); header
/// names with `_` dropped or refused; a client's copies of the gateway's
/// own headers removed, and `Forwarded` from an untrusted peer. Nothing is
/// removed on a request that needs none.
fn clean_headers(req: &mut RequestHeader, rules: &Rules<'_>) -> Result<Seen, Reject> {
    let underscore = rules.underscore_headers;
    let allow_underscore = underscore == UnderscoreHeaders::Allow;
    let peer_trusted = rules.peer_trusted;
    let mut seen = Seen {
        connection: false,
        upgrade: false,
        framing: false,
    };
    let mut total = 0usize;
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut last: Option<&HeaderName> = None;
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
        if total > rules.max_header_bytes {
            return Err(Reject::new(
                Code::HeadersTooLarge,
                "request headers are too large",
            ));
        }
        // Repeated names come one after another: judged once.
        if last == Some(name) {
            continue;
        }
        last = Some(name);
        seen.connection |= *name == http::header::CONNECTION;
        seen.upgrade |= *name == http::header::UPGRADE;
        seen.framing |= *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING;
        let s = name.as_str();
        let drop = if s.contains('_') && !allow_underscore {
            if underscore == UnderscoreHeaders::Reject {
                return Err(bad("header names must not contain `_`"));
            }
            true
        } else {
            is_owned_header(s, allow_underscore) || (*name == FORWARDED && !peer_trusted)
        };
        if drop {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        req.remove_header(&name);
    }
    Ok(seen)
}

/// `Connection` tokens that are the connection's own, not header names.
const CONNECTION_OPTIONS: [&str; 5] = ["close", "keep-alive", "upgrade", "te", "http2-settings"];

/// Headers a client names in `Connection` are hop-by-hop (RFC 9110 §7.6.1):
/// Pingora drops them before forwarding, so they are dropped here, before
/// any stage reads them — a checked header must not vanish on the way up.
/// Naming `Host` or a framing header is refused, and several `Connection`
/// lines become one, so that `close` on any of them counts.
fn hop_by_hop(req: &mut RequestHeader) -> Result<(), Reject> {
    let mut lines = req.headers.get_all(http::header::CONNECTION).iter();
    let (Some(first), second) = (lines.next(), lines.next()) else {
        return Ok(());
    };
    let repeated = second.is_some();
    let named = |v: &HeaderValue| {
        v.as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .filter(|t| {
                !CONNECTION_OPTIONS
                    .iter()
                    .any(|o| o.as_bytes().eq_ignore_ascii_case(t))
            })
            .count()
    };
    if !repeated && named(first) == 0 {
        return Ok(());
    }
    let mut options: Vec<String> = Vec::new();
    let mut doomed: Vec<HeaderName> = Vec::new();
    for line in req.headers.get_all(http::header::CONNECTION) {
        let text = line
            .to_str()
            .map_err(|_| bad("the Connection header is not valid"))?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let token = token.to_ascii_lowercase();
            if CONNECTION_OPTIONS.contains(&token.as_str()) {
                if !options.contains(&token) {
                    options.push(token);
                }
                continue;
            }
            let name = HeaderName::from_bytes(token.as_bytes())
                .map_err(|_| bad("the Connection header is not valid"))?;
            if matches!(name, HOST | CONTENT_LENGTH | TRANSFER_ENCODING) {
                return Err(bad(
                    "the Connection header names a header that cannot be hop-by-hop",
                ));
            }
            doomed.push(name);
        }
    }
    for name in doomed {
        req.remove_header(&name);
    }
    req.remove_header(&http::header::CONNECTION);
    // `close` wins over `keep-alive` (RFC 9112 §9.6).
    if options.iter().any(|o| o == "close") {
        options.retain(|o| o != "keep-alive");
    }
    if !options.is_empty() {
        let joined = HeaderValue::from_str(&options.join(", "))
            .map_err(|_| bad("the Connection header is not valid"))?;
        req.insert_header(http::header::CONNECTION, joined)
            .map_err(|_| bad("the Connection header is not valid"))?;
    }
    Ok(())
}

/// Whether the request asks to upgrade to WebSocket: only routes with
/// `websocket = true` may open that tunnel (CONTRACT §9).
fn asks_websocket(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::UPGRADE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

/// 400 for ambiguous framing — `Content-Length` with `Transfer-Encoding`,
/// or more than one `Content-Length` — and 413 before reading anything
/// when the declared length is over the global limit.
fn check_framing(headers: &HeaderMap, max_body: u64) -> Result<(), Reject> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(bad("more than one Content-Length"));
    }
    if length.is_some() && headers.contains_key(TRANSFER_ENCODING) {
        return Err(bad("both Content-Length and Transfer-Encoding are present"));
    }
    if let Some(value) = length {
        let declared = std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad("Content-Length is not a number"))?;
        if declared > max_body {
            return Err(super::stages::too_large());
        }
    }
    Ok(())
}

/// Method names are case-sensitive (RFC 9110 §9.1), and origins that
/// upper-case them would serve `post` as `POST` after the gateway treated
/// it as another method: a method with lower-case letters is refused.
fn check_method(method: &Method) -> Result<(), Reject> {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(bad(
            "method names are case-sensitive and must be upper-case",
        ));
    }
    Ok(())
}

/// The canonical host from `Host`, the absolute-form authority or
/// HTTP/2's `:authority`; they must agree when more than one is sent. An
/// HTTP/1.1 request must name one.
fn canonical_host(
    req: &RequestHeader,
    target_authority: Option<&str>,
) -> Result<Option<CanonHost>, Reject> {
    let mut hosts = req.headers.get_all(HOST).iter();
    let header_value = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let header = match header_value {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad("the Host header is not valid"))?,
        ),
        None => None,
    };
    let uri_authority = req.uri.authority().map(http::uri::Authority::as_str);
    let authority = target_authority.or(uri_authority);
    let chosen = match (authority, header) {
        (Some(a), Some(h)) => {
            let (pa, ph) = (parse_host(a), parse_host(h));
            match (pa, ph) {
                (Ok(pa), Ok(ph)) if pa == ph => Some(h),
                (Ok(_), Ok(_)) => {
                    return Err(bad(
                        "the Host header differs from the request target's authority",
                    ))
                }
                _ => return Err(bad(crate::routing::target::TargetError::Host.message())),
            }
        }
        (Some(a), None) => Some(a),
        (None, Some(h)) => Some(h),
        (None, None) => {
            if req.version == http::Version::HTTP_11 || req.version == http::Version::HTTP_2 {
                return Err(bad("the request has no Host header"));
            }
            None
        }
    };
    let Some(value) = chosen else {
        return Ok(None);
    };
    let host = parse_host(value).map_err(|e| bad(e.message()))?;
    let name_len = host.name.len();
    // The client's value is forwarded as it is whenever it is canonical
    // already (nearly always): no new header value is built.
    let authority = match header {
        Some(h) if host.is_exactly(h) => header_value.cloned(),
        _ => None,
    };
    let authority = match authority {
        Some(v) => v,
        None => HeaderValue::from_str(&host.authority())
            .map_err(|_| bad(crate::routing::target::TargetError::Host.message()))?,
    };
    Ok(Some(CanonHost {
        authority,
        name_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules<'static> {
        Rules {
            peer_trusted: false,
            max_uri_bytes: 8192,
            max_header_bytes: 16384,
            max_body_bytes: 1 << 20,
            underscore_headers: UnderscoreHeaders::Drop,
            trusted_proxies: &[],
        }
    }

    fn req(method: &str, target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn build(r: &mut RequestHeader) -> Result<Canonical, Reject> {
        Canonical::build(r, Conn::default(), None, &rules())
    }

    #[test]
    fn origin_form_with_host() {
        let mut r = req("GET", b"/a/../b?x=1", &[("Host", "API.example.com.:8080")]);
        let c = build(&mut r).unwrap();
        assert_eq!(c.path(), "/b");
        assert_eq!(c.query(), Some("x=1"));
        assert_eq!(c.target(), "/b?x=1");
        assert_eq!(c.host(), Some("api.example.com"));
        assert_eq!(c.authority().unwrap(), "api.example.com:8080");
    }

    #[test]
    fn cookie_fields_are_one_before_any_stage_reads_them() {
        let mut r = req(
            "GET",
            b"/",
            &[("Host", "a"), ("Cookie", "a=1"), ("Cookie", "b=2")],
        );
        build(&mut r).unwrap();
        let cookies: Vec<_> = r.headers.get_all(COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }

    #[test]
    fn canonical_host_value_is_reused() {
        let mut r = req("GET", b"/", &[("Host", "api.example.com")]);
        let c = build(&mut r).unwrap();
        assert_eq!(c.authority().unwrap(), "api.example.com");
        assert_eq!(c.host(), Some("api.example.com"));
    }

    #[test]
    fn refusals() {
        type Case<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            ("GET", b"admin/secret", &[("Host", "a")]),
            ("GET", b"x:/admin/secret", &[("Host", "a")]),
            ("GET", b"/", &[]),
            ("GET", b"/", &[("Host", "a"), ("Host", "b")]),
            ("GET", b"/", &[("Host", "a,b")]),
            (
                "GET",
                b"http://admin.example.com/secret",
                &[("Host", "other.example.com")],
            ),
            ("GET", b"*", &[("Host", "a")]),
            ("post", b"/", &[("Host", "a")]),
            ("Post", b"/", &[("Host", "a")]),
            (
                "GET",
                b"/",
                &[
                    ("Host", "a"),
                    ("Content-Length", "3"),
                    ("Content-Length", "3"),
                ],
            ),
            ("GET", b"/", &[("Host", "a"), ("Content-Length", "3, 3")]),
            ("GET", b"/a/../../b", &[("Host", "a")]),
        ];
        for (method, target, headers) in cases {
            let mut r = req(method, target, headers);
            let got = build(&mut r);
            assert!(
                got.as_ref().is_err_and(|e| e.status() == 400),
                "{method} {:?} {headers:?} -> {:?}",
                String::from_utf8_lossy(target),
                got.map(|c| c.target().to_string())
            );
        }
    }

    #[test]
    fn absolute_form_names_the_host() {
        let mut r = req("GET", b"http://Admin.Example.com/secret", &[]);
        let c = build(&mut r).unwrap();
        assert_eq!(c.host(), Some("admin.example.com"));
        assert_eq!(c.target(), "/secret");
        let mut r = req("GET", b"http://a.com/x", &[("Host", "A.com")]);
        assert_eq!(build(&mut r).unwrap().host(), Some("a.com"));
    }

    #[test]
    fn http10_needs_no_host() {
        let mut r = req("GET", b"/x", &[]);
        r.set_version(http::Version::HTTP_10);
        assert_eq!(build(&mut r).unwrap().host(), None);
    }

    #[test]
    fn options_asterisk() {
        let mut r = req("OPTIONS", b"*", &[("Host", "a")]);
        assert!(build(&mut r).unwrap().is_asterisk());
    }

    #[test]
    fn path_params_route_without_them() {
        let mut r = req("GET", b"/admin;x/secret", &[("Host", "a")]);
        let c = build(&mut r).unwrap();
        assert_eq!(c.path(), "/admin;x/secret");
        assert_eq!(c.route_path(), "/admin/secret");
        assert!(c.has_path_params());
    }

    #[test]
    fn headers_cleaned() {
        let mut r = req(
            "GET",
            b"/",
            &[
                ("Host", "a"),
                ("X_Auth_Subject", "root"),
                ("X-Auth-Subject", "root"),
                ("X-Real-IP", "1.2.3.4"),
                ("Forwarded", "for=1.2.3.4"),
                ("X-Original-URL", "/admin"),
                ("X-HTTP-Method-Override", "DELETE"),
                ("Accept", "*/*"),
            ],
        );
        build(&mut r).unwrap();
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host", "accept"]);

        // Named in Connection: hop-by-hop, gone before any stage reads it.
        let mut r = req(
            "GET",
            b"/",
            &[
                ("Host", "a"),
                ("X-Tenant-Id", "acme"),
                ("Connection", "x-tenant-id"),
                ("Connection", "close"),
            ],
        );
        build(&mut r).unwrap();
        assert!(r.headers.get("x-tenant-id").is_none());
        assert_eq!(r.headers.get_all("connection").iter().count(), 1);
        assert_eq!(r.headers.get("connection").unwrap(), "close");
        let mut r = req(
            "GET",
            b"/",
            &[("Host", "a"), ("Connection", "content-length")],
        );
        assert!(build(&mut r).is_err());
        let mut r = req(
            "GET",
            b"/",
            &[
                ("Host", "a"),
                ("Upgrade", "WebSocket"),
                ("Connection", "upgrade"),
            ],
        );
        // Whether the route opens WebSocket tunnels is the pipeline's
        // decision, after routing: the canonical step marks the request.
        assert!(build(&mut r).unwrap().wants_websocket());
        let mut r = req("GET", b"/", &[("Host", "a"), ("Upgrade", "h2c")]);
        assert!(!build(&mut r).unwrap().wants_websocket());

        let mut r = req("GET", b"/", &[("Host", "a"), ("X_Y", "1")]);
        let strict = Rules {
            underscore_headers: UnderscoreHeaders::Reject,
            ..rules()
        };
        assert!(Canonical::build(&mut r, Conn::default(), None, &strict).is_err());

        let mut r = req(
            "GET",
            b"/",
            &[("Host", "a"), ("X_Y", "1"), ("x_auth_roles", "admin")],
        );
        let lenient = Rules {
            underscore_headers: UnderscoreHeaders::Allow,
            ..rules()
        };
        Canonical::build(&mut r, Conn::default(), None, &lenient).unwrap();
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host", "x_y"]);
    }

    #[test]
    fn credential_params_leave_the_forwarded_query() {
        let mut r = req("GET", b"/x?a=1&api_key=secret&b=2", &[("Host", "a")]);
        let mut c = build(&mut r).unwrap();
        c.remove_query_params(&["api_key".to_string()]);
        assert_eq!(c.target(), "/x?a=1&b=2");
        assert_eq!(c.query(), Some("a=1&b=2"));
        assert_eq!(c.credential_query(), Some("a=1&api_key=secret&b=2"));
        let mut r = req("GET", b"/x?api_key=secret", &[("Host", "a")]);
        let mut c = build(&mut r).unwrap();
        c.remove_query_params(&["api_key".to_string()]);
        assert_eq!(c.target(), "/x");
        assert_eq!(c.query(), None);
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                HeaderName::from_static(X_FORWARDED_FOR),
                HeaderValue::from_str(l).unwrap(),
            );
        }
        h
    }

    #[test]
    fn addresses_as_header_values() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "203.0.113.9",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn forwarded_for_joins_every_line() {
        let peer = ip_value("127.0.0.1".parse().unwrap());
        assert_eq!(forwarded_for(&HeaderMap::new(), &peer), "127.0.0.1");
        assert_eq!(
            forwarded_for(&xff(&["6.6.6.6", " 1.2.3.4, 5.6.7.8 "]), &peer),
            "6.6.6.6, 1.2.3.4, 5.6.7.8, 127.0.0.1"
        );
    }

    #[test]
    fn untrusted_peer_header_ignored() {
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let got = client_ip(&xff(&["1.2.3.4"]), Some(peer), &nets(&["10.0.0.0/8"]));
        assert_eq!(got, Some(peer));
        assert_eq!(client_ip(&xff(&["1.2.3.4"]), Some(peer), &[]), Some(peer));
    }

    #[test]
    fn trusted_chain_walked_from_the_right_over_every_line() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        let one = |l: &[&str]| client_ip(&xff(l), Some(peer), &trusted);
        assert_eq!(
            one(&["6.6.6.6, 1.2.3.4, 10.0.0.7"]),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            one(&["garbage, 10.0.0.9"]),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(one(&[]), Some(peer));
        // The client's own line first, the proxy's appended line last.
        assert_eq!(
            one(&["6.6.6.6", "1.2.3.4"]),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            one(&["6.6.6.6", "1.2.3.4, 10.0.0.3"]),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            one(&["6.6.6.6", "10.0.0.3"]),
            Some("6.6.6.6".parse().unwrap())
        );
    }
}
