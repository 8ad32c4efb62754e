//! The per-request record: every stage writes to it, `logging` reads it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};

use super::reject::Reject;
use super::request::{Canonical, Conn};
use crate::auth::{Authenticator, Identity};
use crate::authz::Rule;
use crate::protect::ratelimit::Decision;
use crate::runtime::Runtime;

pub struct Ctx {
    /// The configuration snapshot this request runs on, taken once.
    pub runtime: Arc<Runtime>,
    pub started: Instant,
    pub request_id: super::client::RequestId,
    pub client_ip: Option<IpAddr>,
    /// The connection the request came in on.
    pub conn: Conn,
    /// The canonical request (CONTRACT §8): what was checked and what goes
    /// upstream. Empty until the canonical step ran.
    pub canon: Canonical,
    pub route: Option<usize>,
    /// Targets this request has connected to, in order; the last one is
    /// the current one.
    pub tried: Vec<SocketAddr>,
    pub retries_left: usize,
    pub reject: Option<Reject>,
    /// The authenticated caller, once a provider accepted the request.
    pub identity: Option<Arc<Identity>>,
    /// The provider that accepted the request (what to strip before
    /// forwarding).
    pub provider: Option<Arc<dyn Authenticator>>,
    /// The provider and reason of a refused credential, for the security
    /// log and metrics.
    pub auth_failure: Option<(Arc<str>, &'static str)>,
    /// The rule that refused an authenticated (or network-checked) request.
    pub authz_denied: Option<Rule>,
    /// Headers an external authorizer added for the upstream.
    pub authz_headers: Vec<(HeaderName, HeaderValue)>,
    /// The route's rate-limit decision, for the `RateLimit-*` headers of
    /// every response.
    pub rate_limit: Option<Decision>,
    /// This request's failed credential locked its client out.
    pub locked_out: bool,
    /// A CORS preflight for a route with `cors`: the gateway answers it.
    pub preflight: bool,
    /// CORS headers for every response of this request.
    pub cors_headers: Vec<(HeaderName, HeaderValue)>,
    pub body_bytes: u64,
    pub upstream_started: Option<Instant>,
    pub upstream_elapsed: Option<Duration>,
}

impl Ctx {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Ctx {
            runtime,
            started: Instant::now(),
            request_id: super::client::RequestId::default(),
            client_ip: None,
            conn: Conn::default(),
            canon: Canonical::default(),
            route: None,
            tried: Vec::new(),
            retries_left: 0,
            reject: None,
            identity: None,
            provider: None,
            auth_failure: None,
            authz_denied: None,
            authz_headers: Vec::new(),
            rate_limit: None,
            locked_out: false,
            preflight: false,
            cors_headers: Vec::new(),
            body_bytes: 0,
            upstream_started: None,
            upstream_elapsed: None,
        }
    }

    pub fn route(&self) -> Option<&crate::runtime::Route> {
        self.route.and_then(|i| self.runtime.routes.get(i))
    }

    pub fn target(&self) -> Option<SocketAddr> {
        self.tried.last().copied()
    }
}
