//! THE list of rows, in table order, and the pairs read against each other.

use crate::servers::Instance;

/// Which server a row talks to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Peer {
    Direct,
    Nginx,
    /// nginx's h2c listener (the same process).
    NginxH2c,
    Haproxy,
    HaproxyTcp,
    /// HAProxy's h2c frontend (the same process).
    HaproxyH2c,
    Caddy,
    Pingap,
    Pingora,
    Portcullis(Instance),
    /// The plain instance's h2c listener.
    PortcullisH2c,
    /// The gRPC origin itself, and the same through each proxy's h2c
    /// front to it over h2c.
    GrpcDirect,
    NginxGrpc,
    HaproxyGrpc,
    PortcullisGrpc,
}

/// What credential a row's requests carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential {
    None,
    /// The same token on every request.
    Token,
    /// A different token on every request, round robin over the set.
    Tokens,
    ApiKey,
    /// A DPoP-bound token (cached after its first use) with a fresh proof
    /// on every request.
    Dpop,
}

pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) peer: Peer,
    pub(crate) path: &'static str,
    pub(crate) credential: Credential,
    /// The status every response must have (wrk counts non-2xx).
    pub(crate) status: u16,
    /// Driven over h2c by h2load instead of HTTP/1.1 by wrk.
    pub(crate) h2: bool,
    /// Unary gRPC calls (`grpc.health.v1.Health/Check`) over h2c.
    pub(crate) grpc: bool,
}

const fn row(name: &'static str, peer: Peer, path: &'static str) -> Row {
    Row {
        name,
        peer,
        path,
        credential: Credential::None,
        status: 200,
        h2: false,
        grpc: false,
    }
}

const fn h2c(mut r: Row) -> Row {
    r.h2 = true;
    r
}

/// The unary call every gRPC row makes.
pub(crate) const GRPC_PATH: &str = "/grpc.health.v1.Health/Check";

const fn grpc(name: &'static str, peer: Peer) -> Row {
    let mut r = h2c(row(name, peer, GRPC_PATH));
    r.grpc = true;
    r
}

const fn with(mut r: Row, credential: Credential) -> Row {
    r.credential = credential;
    r
}

const fn refused(mut r: Row) -> Row {
    r.status = 401;
    r
}

/// Refused by the route's network rule: one security event per request.
const fn denied(mut r: Row) -> Row {
    r.status = 403;
    r
}

const P: Peer = Peer::Portcullis(Instance::Plain);
const LOGGED: Peer = Peer::Portcullis(Instance::Logged);
const REDIS: Peer = Peer::Portcullis(Instance::Redis);
const TRACED: Peer = Peer::Portcullis(Instance::Traced);
const HANGING: Peer = Peer::Portcullis(Instance::TracedHanging);
const CHAINED: Peer = Peer::Portcullis(Instance::Chained);

pub(crate) const ROWS: &[Row] = &[
    row("direct", Peer::Direct, "/"),
    row("nginx", Peer::Nginx, "/"),
    row("nginx +headers", Peer::Nginx, "/headers/"),
    row("haproxy", Peer::Haproxy, "/"),
    row("haproxy tcp", Peer::HaproxyTcp, "/"),
    with(
        row("haproxy jwt", Peer::Haproxy, "/jwt/"),
        Credential::Token,
    ),
    with(
        row("haproxy jwt 10k", Peer::Haproxy, "/jwt/"),
        Credential::Tokens,
    ),
    refused(row("haproxy 401", Peer::Haproxy, "/jwt/")),
    row("caddy", Peer::Caddy, "/"),
    row("pingap", Peer::Pingap, "/"),
    row("pingora bare", Peer::Pingora, "/"),
    h2c(row("nginx h2c", Peer::NginxH2c, "/")),
    h2c(row("haproxy h2c", Peer::HaproxyH2c, "/")),
    h2c(row("portcullis public h2c", Peer::PortcullisH2c, "/")),
    grpc("grpc direct", Peer::GrpcDirect),
    grpc("nginx grpc", Peer::NginxGrpc),
    grpc("haproxy grpc", Peer::HaproxyGrpc),
    grpc("portcullis grpc", Peer::PortcullisGrpc),
    row("portcullis public", P, "/"),
    row("portcullis cached", P, "/cached/"),
    row("portcullis waf", P, "/waf/"),
    row("portcullis traced", TRACED, "/"),
    row("portcullis traced hanging", HANGING, "/"),
    row("portcullis access log", LOGGED, "/"),
    with(row("portcullis jwt", P, "/jwt/"), Credential::Token),
    with(row("portcullis dpop", P, "/dpop/"), Credential::Dpop),
    with(
        row("portcullis jwt 10k uncached", P, "/jwt-uncached/"),
        Credential::Tokens,
    ),
    refused(row("portcullis 401", P, "/jwt/")),
    denied(row("portcullis 403 event", P, "/deny/")),
    denied(row("portcullis 403 event chained", CHAINED, "/deny/")),
    with(
        row("portcullis jwt+scopes+cel", P, "/authz/"),
        Credential::Token,
    ),
    row("portcullis no limit", P, "/norl/"),
    row("portcullis rate limit", P, "/rl/"),
    row("portcullis rate limit redis", REDIS, "/rl/"),
    with(row("portcullis api key", P, "/key/"), Credential::ApiKey),
    with(row("portcullis all-on", LOGGED, "/all/"), Credential::Token),
];

/// (row, baseline): a comparison with a peer, or the cost of one feature
/// read against the same route without it.
pub(crate) const PAIRS: &[(&str, &str)] = &[
    ("portcullis public", "pingora bare"),
    ("portcullis public", "pingap"),
    ("portcullis public", "nginx +headers"),
    ("portcullis public", "caddy"),
    ("portcullis public h2c", "portcullis public"),
    ("portcullis public h2c", "nginx h2c"),
    ("portcullis public h2c", "haproxy h2c"),
    ("portcullis grpc", "nginx grpc"),
    ("portcullis grpc", "haproxy grpc"),
    ("portcullis jwt", "haproxy jwt"),
    ("portcullis jwt 10k uncached", "haproxy jwt 10k"),
    ("portcullis 401", "haproxy 401"),
    ("portcullis cached", "portcullis public"),
    ("portcullis waf", "portcullis public"),
    ("portcullis traced", "portcullis public"),
    ("portcullis traced hanging", "portcullis traced"),
    ("portcullis dpop", "portcullis jwt"),
    ("portcullis 403 event chained", "portcullis 403 event"),
    ("portcullis access log", "portcullis public"),
    ("portcullis jwt", "portcullis public"),
    ("portcullis jwt+scopes+cel", "portcullis jwt"),
    ("portcullis rate limit", "portcullis no limit"),
    ("portcullis rate limit redis", "portcullis no limit"),
    ("portcullis api key", "portcullis public"),
    ("portcullis all-on", "portcullis jwt"),
];
