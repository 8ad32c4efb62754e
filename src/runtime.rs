//! The compiled, immutable form of a configuration that requests run on.
//!
//! A `Runtime` is built whole beside the running one and swapped in
//! atomically; a request keeps the snapshot it started with until it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::auth::{self, Authenticator};
use crate::authz::external::ExternalAuthz;
use crate::authz::RouteAuthz;
use crate::config::{
    Config, ExternalAuthzConfig, HeaderOps, Limits, RateKey, RouteAction, RouteRateLimit, Secret,
    UnderscoreHeaders,
};
use crate::observe::Observer;
use crate::protect::cidr::CidrRules;
use crate::protect::cors::Cors;
use crate::protect::ratelimit::{Limit, Lockout, RateLimitStore, StoreError};
use crate::protect::schema::JsonSchema;
use crate::proxy::request::{canonical_ip, Rules};
use crate::routing::table::{ListenerSet, PathMatch, RouteSpec, RouteTable};
use crate::tls::{CertStore, TlsListener};
use crate::upstream::pool::{PoolError, UpstreamPool};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Auth(#[from] auth::BuildError),
    #[error("listener `{0}`: {1}")]
    Tls(String, crate::tls::TlsError),
    #[error("[rate_limit_store]: {0}")]
    Store(#[from] StoreError),
}

pub struct Runtime {
    pub generation: u64,
    pub admin_token: Option<Secret>,
    pub config_sha256: String,
    pub loaded_at: SystemTime,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub underscore_headers: UnderscoreHeaders,
    /// Listen addresses by listener index, to tell which listener a
    /// connection came in on.
    pub listener_addrs: Vec<SocketAddr>,
    pub routes: Vec<Route>,
    pub table: RouteTable,
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// Indexed like `Config::auth`; routes refer to them by index.
    pub providers: Vec<Arc<dyn Authenticator>>,
    /// TLS of each listener, by listener index (`None`: plain): read per
    /// handshake, so a reload changes certificates for the next connection.
    pub tls: Vec<Option<Arc<TlsListener>>>,
    /// `[protection]` network rules, checked before routing.
    pub cidrs: CidrRules,
    /// Rate-limit buckets and lockouts; kept across reloads while
    /// `[rate_limit_store]` is unchanged, so counters survive.
    pub rate_limits: Arc<RateLimitStore>,
    /// `[protection.failed_auth]`.
    pub lockout: Option<Lockout>,
}

/// A route's `rate_limit` as requests use it.
pub struct RouteLimit {
    pub per: RateKey,
    pub limit: Limit,
    /// Route name and limit, the start of every bucket key of the route,
    /// built once here rather than per request. The limit is part of it so
    /// that a reload that changes the limit starts with fresh buckets.
    prefix: Box<[u8]>,
}

impl RouteLimit {
    pub(crate) fn new(route: &str, config: RouteRateLimit) -> Self {
        let l = &config.limit;
        let prefix = format!(
            "{route}\0{}/{}/{}\0",
            l.requests,
            l.window.as_secs(),
            l.burst
        );
        RouteLimit {
            per: config.per,
            limit: config.limit,
            prefix: prefix.into_bytes().into_boxed_slice(),
        }
    }

    /// The bucket of one caller: `kind` says what `value` is (IP,
    /// consumer, header), so that values of different kinds never meet.
    pub fn key(&self, kind: &[u8], value: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + kind.len() + value.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(kind);
        key.extend_from_slice(value);
        key
    }
}

/// A route as requests need it; its index is its id in the route table.
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub action: RouteAction,
    /// Indices into `Runtime::providers`; empty for public routes.
    pub auth: Vec<usize>,
    pub max_body_bytes: u64,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub authz: RouteAuthz,
    pub cidrs: CidrRules,
    pub rate_limit: Option<RouteLimit>,
    pub json_schema: Option<Arc<JsonSchema>>,
    pub cors: Option<Cors>,
    pub allow_path_params: bool,
    /// Query parameters of the route's API-key providers: taken out of the
    /// forwarded query, the logs and authorization questions.
    pub credential_params: Vec<String>,
}

impl Runtime {
    /// The rules of the canonical step.
    pub fn canonical_rules(&self) -> Rules<'_> {
        Rules {
            peer_trusted: false,
            max_uri_bytes: self.limits.max_uri_bytes,
            max_header_bytes: self.limits.max_header_bytes,
            max_body_bytes: self.limits.max_body_bytes,
            underscore_headers: self.underscore_headers,
            trusted_proxies: &self.trusted_proxies,
        }
    }

    /// The listener bound to `local` (exactly, or on a wildcard address
    /// with the same port).
    pub fn listener_of(&self, local: SocketAddr) -> Option<usize> {
        let local_ip = canonical_ip(local.ip());
        self.listener_addrs
            .iter()
            .position(|a| a.port() == local.port() && canonical_ip(a.ip()) == local_ip)
            .or_else(|| {
                self.listener_addrs
                    .iter()
                    .position(|a| a.port() == local.port() && a.ip().is_unspecified())
            })
    }

    /// Compiles `config`. Upstream pools whose configuration did not change
    /// are taken over from `previous` as they are — with their health state
    /// and their running health checks — so a reload never makes a healthy
    /// target unknown or a dead one eligible again.
    pub fn compile(
        config: Config,
        generation: u64,
        observer: &Arc<Observer>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, CompileError> {
        let providers = config
            .auth
            .iter()
            .map(|p| {
                let kept = previous
                    .and_then(|old| old.providers.iter().find(|x| x.config() == p).cloned());
                match kept {
                    Some(provider) => Ok(provider),
                    None => auth::build(p, observer),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = config
            .listeners
            .iter()
            .map(|l| {
                let Some(t) = &l.tls else {
                    return Ok(None);
                };
                let previous =
                    previous.and_then(|p| p.tls.iter().flatten().find(|old| old.name == l.name));
                CertStore::load(&t.certificates, t.client_ca.as_ref())
                    .and_then(|store| {
                        TlsListener::new(l.name.clone(), store, previous.map(|p| &**p))
                    })
                    .map(|listener| Some(Arc::new(listener)))
                    .map_err(|e| CompileError::Tls(l.name.clone(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let upstreams = config
            .upstreams
            .into_iter()
            .map(|u| {
                let kept =
                    previous.and_then(|p| p.upstreams.iter().find(|old| old.config == u).cloned());
                match kept {
                    Some(pool) => Ok(pool),
                    None => UpstreamPool::new(u, observer.clone()).map(Arc::new),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rate_limits = match previous {
            Some(p) if *p.rate_limits.config() == config.rate_limit_store => p.rate_limits.clone(),
            _ => Arc::new(RateLimitStore::new(
                config.rate_limit_store.clone(),
                observer.clone(),
            )?),
        };
        let mut specs = Vec::with_capacity(config.routes.len());
        let mut routes = Vec::with_capacity(config.routes.len());
        for (id, r) in config.routes.into_iter().enumerate() {
            specs.push(RouteSpec {
                id,
                hosts: r.hosts,
                path: r.path.clone(),
                methods: r.methods,
                listeners: ListenerSet::of(&r.listeners),
            });
            let external = r.authz.external.map(|cfg| {
                previous
                    .and_then(|p| p.find_external(&cfg))
                    .unwrap_or_else(|| Arc::new(ExternalAuthz::new(cfg)))
            });
            let rate_limit = r.rate_limit.map(|rl| RouteLimit::new(&r.name, rl));
            let credential_params = r
                .auth
                .iter()
                .filter_map(|i| providers.get(*i))
                .filter_map(|p| p.credential_query().map(str::to_string))
                .collect();
            routes.push(Route {
                name: r.name,
                path: r.path,
                action: r.action,
                auth: r.auth,
                max_body_bytes: r.max_body_bytes,
                request_headers: r.request_headers,
                response_headers: r.response_headers,
                authz: RouteAuthz {
                    require_scopes: r.authz.require_scopes,
                    allow_roles: r.authz.allow_roles,
                    policy: r.authz.policy,
                    external,
                },
                cidrs: r.cidrs,
                rate_limit,
                json_schema: r.json_schema,
                cors: r.cors,
                allow_path_params: r.allow_path_params,
                credential_params,
            });
        }
        Ok(Runtime {
            generation,
            admin_token: config.admin.and_then(|a| a.token),
            config_sha256: config.sha256,
            loaded_at: SystemTime::now(),
            limits: config.limits,
            trusted_proxies: config.server.trusted_proxies,
            underscore_headers: config.server.underscore_headers,
            listener_addrs: config.listeners.iter().map(|l| l.addr).collect(),
            routes,
            table: RouteTable::new(specs),
            upstreams,
            providers,
            tls,
            cidrs: config.protection.cidrs,
            rate_limits,
            lockout: config.protection.failed_auth,
        })
    }

    /// An external authorizer with this configuration, to keep its
    /// decision cache across a reload.
    fn find_external(&self, config: &ExternalAuthzConfig) -> Option<Arc<ExternalAuthz>> {
        self.routes
            .iter()
            .filter_map(|r| r.authz.external.as_ref())
            .find(|e| e.config == *config)
            .cloned()
    }

    /// Whether `provider` (by identity) belongs to this runtime.
    pub fn owns_provider(&self, provider: &Arc<dyn Authenticator>) -> bool {
        self.providers.iter().any(|p| Arc::ptr_eq(p, provider))
    }

    /// Whether `pool` (by identity) belongs to this runtime.
    pub fn owns(&self, pool: &Arc<UpstreamPool>) -> bool {
        self.upstreams.iter().any(|p| Arc::ptr_eq(p, pool))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Gateways of different versions may share one Redis during a rolling
    /// upgrade: a bucket key must not change its layout silently.
    #[test]
    fn bucket_keys_keep_their_layout() {
        let rl = RouteLimit::new(
            "orders",
            RouteRateLimit {
                per: RateKey::ClientIp,
                limit: Limit {
                    requests: 10,
                    window: Duration::from_secs(60),
                    burst: 20,
                },
            },
        );
        assert_eq!(
            rl.key(b"ip:", &[127, 0, 0, 1]),
            b"orders\x0010/60/20\x00ip:\x7f\x00\x00\x01"
        );
        assert_eq!(rl.key(b"", b""), b"orders\x0010/60/20\x00");
    }
}
