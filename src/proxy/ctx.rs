//! The per-request state, grouped by who writes it: the pipeline decides,
//! forwarding and the response hooks read, `logging` records.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};

use super::client::RequestId;
use super::reject::Reject;
use super::request::{Canonical, Conn};
use crate::auth::{Authenticator, Identity};
use crate::core::ids::{RouteId, UpstreamId};
use crate::observe::otel::RequestSpan;
use crate::observe::outcome::Event;
use crate::protect::ratelimit::Decision;
use crate::runtime::{Route, Runtime};

pub struct Ctx {
    /// The configuration snapshot this request runs on, taken once.
    pub runtime: Arc<Runtime>,
    pub started: Instant,
    pub request_id: RequestId,
    pub client: Client,
    /// The canonical request (CONTRACT §8): what was checked and what goes
    /// upstream. Empty until the canonical step ran.
    pub canon: Canonical,
    /// Set once the request is routed.
    pub route: Option<RouteId>,
    pub caller: Caller,
    pub upstream: UpstreamState,
    pub decoration: Decoration,
    pub outcome: Outcome,
    /// A gRPC call (`content-type: application/grpc*`): refusals and
    /// upstream failures are answered with a gRPC status (CONTRACT §9).
    pub grpc: bool,
    /// The request's span, with `[tracing]`.
    pub trace: Option<RequestSpan>,
}

/// Where the request came from.
#[derive(Default)]
pub struct Client {
    /// The connection the request came in on.
    pub conn: Conn,
    /// The client's address: the peer, or what trusted proxies say.
    pub ip: Option<IpAddr>,
}

/// Who the caller is, once authenticated, and what authorization added.
#[derive(Default)]
pub struct Caller {
    pub identity: Option<Arc<Identity>>,
    /// The provider that accepted the request (what to strip before
    /// forwarding).
    pub provider: Option<Arc<dyn Authenticator>>,
    /// Headers an external authorizer added for the upstream.
    pub authz_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The upstream side of a proxied request.
#[derive(Default)]
pub struct UpstreamState {
    /// The upstream chosen among the route's (`upstreams` splits).
    pub chosen: Option<UpstreamId>,
    /// Targets this request has connected to, in order; the last one is
    /// the current one.
    pub tried: Vec<SocketAddr>,
    pub retries_left: usize,
    pub body_bytes: u64,
    pub started: Option<Instant>,
    pub elapsed: Option<Duration>,
    /// The route's cache takes part in this request.
    pub cache_enabled: bool,
}

/// Headers every response of this request carries, whoever makes it.
#[derive(Default)]
pub struct Decoration {
    /// The route's rate-limit decision, for the `RateLimit-*` headers.
    pub rate_limit: Option<Decision>,
    /// CORS headers on a route with `cors`.
    pub cors_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What happened, for the logs and metrics.
#[derive(Default)]
pub struct Outcome {
    /// The refusal the client got.
    pub reject: Option<Reject>,
    /// A refusal decided in a hook that can only stop the request through
    /// Pingora's error path; `fail_to_proxy` sends it.
    pub pending: Option<Reject>,
    pub events: Vec<Event>,
    /// A gRPC call's status: the gateway's refusal, or the upstream's
    /// (Trailers-Only header or trailer).
    pub grpc_status: Option<&'static str>,
    /// On a caching route, what the cache did (`x-cache-status`).
    pub cache_status: Option<&'static str>,
}

impl Outcome {
    /// Records the refusal of this request, and a security event when it
    /// points at a hostile or broken client.
    pub fn refused(&mut self, reject: Reject) {
        if reject.code.is_security_relevant() {
            self.events.push(Event::Rejected {
                reason: reject.message.clone(),
            });
        }
        self.reject = Some(reject);
    }
}

impl Ctx {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Ctx {
            runtime,
            started: Instant::now(),
            request_id: RequestId::default(),
            client: Client::default(),
            canon: Canonical::default(),
            route: None,
            caller: Caller::default(),
            upstream: UpstreamState::default(),
            decoration: Decoration::default(),
            outcome: Outcome::default(),
            grpc: false,
            trace: None,
        }
    }

    /// What the request's connection and head say before any stage runs:
    /// the request id, the connection, the client address (every
    /// `x-forwarded-for` line, when the peer is a trusted proxy).
    pub(crate) fn begin(&mut self, headers: &http::HeaderMap, conn: Conn) {
        self.request_id = RequestId::of(headers.get(super::respond::X_REQUEST_ID));
        self.client.ip =
            super::request::client_ip(headers, conn.peer, &self.runtime.trusted_proxies);
        self.client.conn = conn;
        // One Content-Type, and a gRPC one: a request that says two things
        // is not answered as a gRPC call.
        let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
        self.grpc = match (types.next(), types.next()) {
            (Some(v), None) => v.as_bytes().starts_with(b"application/grpc"),
            _ => false,
        };
    }

    pub fn route(&self) -> Option<&Route> {
        self.route.and_then(|id| self.runtime.route(id))
    }

    pub fn target(&self) -> Option<SocketAddr> {
        self.upstream.tried.last().copied()
    }
}
