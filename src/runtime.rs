//! The compiled, immutable form of a configuration that requests run on.
//!
//! A `Runtime` is built whole beside the running one and swapped in
//! atomically; a request keeps the snapshot it started with until it ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::auth::jwks::KeySet;
use crate::auth::jwt_auth::RefreshError;
use crate::auth::{self, Authenticator};
use crate::authz::external::ExternalAuthz;
use crate::authz::policy::{Policy, PolicyError};
use crate::authz::RouteAuthz;
use crate::cache::EdgeCache;
use crate::config::{
    AuthKind, AuthProvider, CacheLimits, Config, ConfigError, ConfigErrors, CorsSpec,
    ExternalAuthzConfig, HeaderOps, KeySource, Limits, Pending, PolicySource, RateKey, RouteAction,
    RouteCache, RouteRateLimit, UnderscoreHeaders, WafMode,
};
use crate::core::ids::{ListenerId, ProviderId, RouteId, UpstreamId};
use crate::core::location::Located;
use crate::core::matching::{ListenerSet, PathMatch};
use crate::core::net::canonical_ip;
use crate::core::net::CidrRules;
use crate::core::secret::Secret;
use crate::observe::otel::{ExportCounters, Tracing};
use crate::observe::Observer;
use crate::protect::cors::Cors;
use crate::protect::ratelimit::{Limit, Lockout, RateLimitStore};
use crate::protect::replay::ReplayCache;
use crate::protect::revocation::Revocations;
use crate::protect::schema::JsonSchema;
use crate::protect::waf::{RuleSet, Waf};
use crate::routing::table::{RouteSpec, RouteTable};
use crate::tls::{CertStore, TlsListener, UpstreamCa};
use crate::upstream::pool::UpstreamPool;

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
    /// Names by listener index, for the admin dashboard.
    pub listener_names: Vec<String>,
    pub routes: Vec<Route>,
    pub table: RouteTable,
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// Indexed like `Config::auth`; routes refer to them by index.
    pub providers: Vec<Arc<dyn Authenticator>>,
    /// TLS of each listener, by listener index (`None`: plain): read per
    /// handshake, so a reload changes certificates for the next connection.
    pub tls: Vec<Option<Arc<TlsListener>>>,
    /// Per listener: plaintext with HTTP/2 by prior knowledge.
    h2c: Vec<bool>,
    /// `[protection]` network rules, checked before routing.
    pub cidrs: CidrRules,
    /// Rate-limit buckets and lockouts; kept across reloads while
    /// `[rate_limit_store]` is unchanged, so counters survive.
    pub rate_limits: Arc<RateLimitStore>,
    /// `[protection.failed_auth]`.
    pub lockout: Option<Lockout>,
    /// The process's response cache, the same in every snapshot.
    pub(crate) cache: &'static EdgeCache,
    pub cache_limits: CacheLimits,
    /// `[tracing]`: kept across reloads while unchanged.
    pub tracing: Option<Arc<Tracing>>,
    /// Token revocations (CONTRACT §13): one list for the process, kept by
    /// reloads.
    pub revocations: Arc<Revocations>,
    /// One-time tokens and DPoP proof `jti`s; kept while the store is.
    pub replay: Arc<ReplayCache>,
    /// `[waf]`'s compiled rules: kept across reloads while unchanged.
    pub waf: Option<Arc<Waf>>,
}

/// A route's WAF: its mode and the rule set of its exclusion list.
pub struct RouteWafRules {
    pub mode: WafMode,
    pub rules: Arc<RuleSet>,
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
    /// [`PathMatch::template`], made once.
    pub path_template: String,
    /// `Deprecation`, `Sunset`, `Link` on every response of the route.
    pub deprecation: Vec<(HeaderName, HeaderValue)>,
    pub action: RouteAction,
    /// Indices into `Runtime::providers`; empty for public routes.
    pub auth: Vec<ProviderId>,
    pub max_body_bytes: u64,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub authz: RouteAuthz,
    pub cidrs: CidrRules,
    pub rate_limit: Option<RouteLimit>,
    pub json_schema: Option<Arc<JsonSchema>>,
    pub cors: Option<Cors>,
    pub allow_path_params: bool,
    /// WebSocket upgrades allowed, with the idle timeout of an open socket.
    pub websocket: Option<Duration>,
    /// Query parameters of the route's API-key providers: taken out of the
    /// forwarded query, the logs and authorization questions.
    pub credential_params: Vec<String>,
    /// `cache`: responses stored in [`Runtime::cache`].
    pub cache: Option<RouteCache>,
    /// `waf`, when not `off`.
    pub waf: Option<RouteWafRules>,
}

impl Runtime {
    /// The listener bound to `local` (exactly, or on a wildcard address
    /// with the same port).
    /// Whether the plaintext listener also speaks h2c by prior knowledge.
    pub fn h2c(&self, listener: ListenerId) -> bool {
        self.h2c.get(listener.index()).copied().unwrap_or(false)
    }

    pub fn listener_of(&self, local: SocketAddr) -> Option<ListenerId> {
        let local_ip = canonical_ip(local.ip());
        self.listener_addrs
            .iter()
            .position(|a| a.port() == local.port() && canonical_ip(a.ip()) == local_ip)
            .or_else(|| {
                self.listener_addrs
                    .iter()
                    .position(|a| a.port() == local.port() && a.ip().is_unspecified())
            })
            .map(ListenerId::new)
    }

    /// Compiles `config`: every feature builds its runtime object from its
    /// spec, and every failure is reported at the place of the value it is
    /// about, all at once. This is also the one place that decides what a
    /// reload carries over from `previous`: providers (their keys and token
    /// caches), TLS session state, upstream pools (their health state and
    /// running health checks), external authorizers (their decision caches)
    /// and the rate-limit store (its counters), each when its configuration
    /// did not change — so a reload never makes a healthy target unknown or
    /// a dead one eligible again.
    pub fn compile(
        config: Config,
        generation: u64,
        observer: &Arc<Observer>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, ConfigErrors> {
        let mut errors = Vec::new();
        let file = config.path.clone();
        let mut fail = |e: ConfigError| errors.push(e);
        let providers: Vec<_> = config
            .auth
            .iter()
            .filter_map(|p| {
                let kept = previous
                    .and_then(|old| old.providers.iter().find(|x| x.config() == p).cloned());
                match kept {
                    Some(provider) => Some(provider),
                    None => auth::build(p, observer)
                        .map_err(|e| fail(provider_error(&file, p, e)))
                        .ok(),
                }
            })
            .collect();
        let tls: Vec<_> = config
            .listeners
            .iter()
            .map(|l| {
                let t = l.tls.as_ref()?;
                let previous =
                    previous.and_then(|p| p.tls.iter().flatten().find(|old| old.name == l.name));
                let store = CertStore::load(&t.certificates, t.client_ca.as_ref())
                    .map_err(|(at, e)| {
                        fail(match at {
                            Some(at) => ConfigError::at(&at, e.to_string()),
                            None => {
                                ConfigError::in_file(&file, format!("listener `{}`: {e}", l.name))
                            }
                        })
                    })
                    .ok()?;
                TlsListener::new(l.name.clone(), store, l.http2, previous.map(|p| &**p))
                    .map(Arc::new)
                    .map_err(|e| {
                        fail(ConfigError::in_file(
                            &file,
                            format!("listener `{}`: {e}", l.name),
                        ))
                    })
                    .ok()
            })
            .collect();
        let upstreams: Vec<_> = config
            .upstreams
            .into_iter()
            .filter_map(|u| {
                let ca = match &u.ca_file {
                    Some(path) => match UpstreamCa::load(&path.value) {
                        Ok(ca) => Some(ca),
                        Err(e) => {
                            fail(ConfigError::at(&path.at, e.to_string()));
                            return None;
                        }
                    },
                    None => None,
                };
                let fingerprint = ca.as_ref().map(|ca| ca.fingerprint);
                let kept = previous.and_then(|p| {
                    p.upstreams
                        .iter()
                        .find(|old| {
                            old.config == u
                                && old.ca.as_ref().map(|ca| ca.fingerprint) == fingerprint
                        })
                        .cloned()
                });
                match kept {
                    Some(pool) => Some(pool),
                    None => UpstreamPool::new(u, ca, observer.clone())
                        .map(Arc::new)
                        .map_err(|e| fail(ConfigError::in_file(&file, e.to_string())))
                        .ok(),
                }
            })
            .collect();
        let rate_limits = match previous {
            Some(p) if *p.rate_limits.config() == config.rate_limit_store => {
                Some(p.rate_limits.clone())
            }
            _ => RateLimitStore::new(config.rate_limit_store.clone(), observer.clone())
                .map(Arc::new)
                .map_err(|e| {
                    fail(ConfigError::in_file(
                        &file,
                        format!("[rate_limit_store]: {e}"),
                    ))
                })
                .ok(),
        };
        let tracing = config.tracing.and_then(|t| {
            let kept = previous
                .and_then(|p| p.tracing.as_ref())
                .filter(|old| old.config == t)
                .cloned();
            kept.or_else(|| {
                let counters = ExportCounters {
                    dropped: observer.metrics.trace_spans_dropped.clone(),
                    failed: observer.metrics.trace_export_failures.clone(),
                };
                Tracing::new(t, counters)
                    .map(Arc::new)
                    .map_err(|e| fail(ConfigError::in_file(&file, format!("[tracing]: {e}"))))
                    .ok()
            })
        });
        let cache = match previous {
            Some(p) => p.cache,
            None => EdgeCache::leak(config.cache, observer.metrics.cache_bytes.clone()),
        };
        let waf = config.waf.and_then(|w| {
            let kept = previous
                .and_then(|p| p.waf.as_ref())
                .filter(|old| old.is_current(&w))
                .cloned();
            kept.or_else(|| {
                let at = w.rules.first().map(|r| r.at.clone());
                Waf::compile(w)
                    .map(Arc::new)
                    .map_err(|e| {
                        fail(match &at {
                            Some(at) => ConfigError::at(at, format!("[waf] rules: {e}")),
                            None => ConfigError::in_file(&file, format!("[waf] rules: {e}")),
                        })
                    })
                    .ok()
            })
        });
        // Routes with the same exclusion list share one rule set.
        let mut rule_sets: Vec<Arc<RuleSet>> = Vec::new();
        let mut specs = Vec::with_capacity(config.routes.len());
        let mut routes = Vec::with_capacity(config.routes.len());
        for (id, r) in config.routes.into_iter().enumerate() {
            specs.push(RouteSpec {
                id: RouteId::new(id),
                hosts: r.hosts,
                path: r.path.clone(),
                methods: r.methods,
                listeners: ListenerSet::of(&r.listeners),
                match_headers: r.match_headers,
            });
            let external = r.authz.external.map(|cfg| {
                previous
                    .and_then(|p| p.find_external(&cfg))
                    .unwrap_or_else(|| Arc::new(ExternalAuthz::new(cfg)))
            });
            let policy = r
                .authz
                .policy
                .and_then(|p| compile_policy(&p).map_err(&mut fail).ok());
            let json_schema = r
                .json_schema
                .and_then(|path| compile_schema(&path).map_err(&mut fail).ok());
            let cors = r
                .cors
                .and_then(|spec| compile_cors(&spec).map_err(&mut fail).ok());
            let rate_limit = r.rate_limit.map(|rl| RouteLimit::new(&r.name, rl));
            let route_waf = match (&waf, r.waf.mode) {
                (Some(waf), WafMode::Detect | WafMode::Block) => {
                    let excluded = &r.waf.exclude_rules;
                    let known = rule_sets
                        .iter()
                        .find(|s| s.excluded() == excluded.as_slice());
                    let rules = match known {
                        Some(set) => Some(set.clone()),
                        None => match waf.rule_set(excluded) {
                            Ok(set) => {
                                rule_sets.push(set.clone());
                                Some(set)
                            }
                            Err(e) => {
                                fail(ConfigError::in_file(
                                    &file,
                                    format!("route `{}`: waf_exclude_rules: {e}", r.name),
                                ));
                                None
                            }
                        },
                    };
                    rules.map(|rules| RouteWafRules {
                        mode: r.waf.mode,
                        rules,
                    })
                }
                _ => None,
            };
            let credential_params = r
                .auth
                .iter()
                .filter_map(|i| providers.get(i.index()))
                .filter_map(|p| p.credential_query().map(str::to_string))
                .collect();
            routes.push(Route {
                name: r.name,
                path_template: r.path.template(),
                path: r.path,
                deprecation: r.deprecation,
                action: r.action,
                auth: r.auth,
                max_body_bytes: r.max_body_bytes,
                request_headers: r.request_headers,
                response_headers: r.response_headers,
                authz: RouteAuthz {
                    require_scopes: r.authz.require_scopes,
                    allow_roles: r.authz.allow_roles,
                    policy,
                    external,
                },
                cidrs: r.cidrs,
                rate_limit,
                json_schema,
                cors,
                allow_path_params: r.allow_path_params,
                websocket: r.websocket,
                credential_params,
                cache: r.cache,
                waf: route_waf,
            });
        }
        let Some(rate_limits) = rate_limits.filter(|_| errors.is_empty()) else {
            errors.sort_by_key(|e| e.position);
            return Err(ConfigErrors(errors));
        };
        let (revocations, replay) = token_state(config.tokens, &rate_limits, observer, previous);
        Ok(Runtime {
            generation,
            admin_token: config.admin.and_then(|a| a.token),
            config_sha256: config.sha256,
            loaded_at: SystemTime::now(),
            limits: config.limits,
            trusted_proxies: config.server.trusted_proxies,
            underscore_headers: config.server.underscore_headers,
            listener_addrs: config.listeners.iter().map(|l| l.addr).collect(),
            listener_names: (config.listeners.iter()).map(|l| l.name.clone()).collect(),
            h2c: (config.listeners.iter())
                .map(|l| l.tls.is_none() && l.http2)
                .collect(),
            routes,
            table: RouteTable::new(specs),
            upstreams,
            providers,
            tls,
            cidrs: config.protection.cidrs,
            rate_limits,
            lockout: config.protection.failed_auth,
            cache,
            cache_limits: config.cache,
            tracing,
            revocations,
            replay,
            waf,
        })
    }

    /// After this snapshot replaced `old`: its cache bounds apply, and the
    /// stored responses of routes whose `cache` changed or went are
    /// dropped; every other route keeps its cache.
    pub fn take_cache_over(&self, old: &Runtime) {
        self.cache.set_limits(self.cache_limits);
        for route in &old.routes {
            if route.cache.is_none() {
                continue;
            }
            let same = self
                .routes
                .iter()
                .any(|r| r.name == route.name && r.cache == route.cache);
            if !same {
                self.cache.purge(&route.name, None);
            }
        }
    }

    pub fn route(&self, id: RouteId) -> Option<&Route> {
        self.routes.get(id.index())
    }

    pub fn provider(&self, id: ProviderId) -> Option<&Arc<dyn Authenticator>> {
        self.providers.get(id.index())
    }

    pub fn upstream(&self, id: UpstreamId) -> Option<&Arc<UpstreamPool>> {
        self.upstreams.get(id.index())
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

/// The revocation list and the replay cache: the running ones while the
/// file and the store stay the same, else new ones (a new list keeps the
/// running entries too, so a reload never drops a revocation).
fn token_state(
    tokens: crate::config::TokenSettings,
    store: &Arc<RateLimitStore>,
    observer: &Arc<Observer>,
    previous: Option<&Runtime>,
) -> (Arc<Revocations>, Arc<ReplayCache>) {
    let file = tokens.revocations_file.map(|f| f.value);
    let revocations = match previous {
        Some(p) if p.revocations.fits(file.as_deref(), store) => p.revocations.clone(),
        _ => {
            let fresh = Revocations::new(file, tokens.revocations, store.clone(), observer.clone());
            if let Some(p) = previous {
                fresh.inherit(&p.revocations);
            }
            Arc::new(fresh)
        }
    };
    let replay = match previous {
        Some(p) if p.replay.uses(store) => p.replay.clone(),
        _ => Arc::new(ReplayCache::new(store.clone())),
    };
    (revocations, replay)
}

/// The errors compiling would report for values of a file that has other
/// errors too (see [`Pending`]).
pub(crate) fn pending_errors(pending: &[Pending]) -> Vec<ConfigError> {
    pending
        .iter()
        .filter_map(|p| match p {
            Pending::Policy(policy) => compile_policy(policy).err(),
            Pending::Schema(path) => compile_schema(path).err(),
            Pending::Cors(spec) => compile_cors(spec).err(),
            Pending::Certificate { cert, key } => crate::tls::load_pair(&cert.value, key)
                .err()
                .map(|e| ConfigError::at(&cert.at, e.to_string())),
            Pending::CaFile(path) => crate::tls::load_ca(&path.value)
                .err()
                .map(|e| ConfigError::at(&path.at, e.to_string())),
            Pending::Jwks {
                path,
                json,
                algorithms,
            } => KeySet::from_jwks(json, algorithms)
                .err()
                .map(|e| ConfigError::at(&path.at, format!("`{}`: {e}", path.value.display()))),
        })
        .collect()
}

fn compile_schema(path: &Located<PathBuf>) -> Result<Arc<JsonSchema>, ConfigError> {
    JsonSchema::load(&path.value)
        .map(Arc::new)
        .map_err(|e| ConfigError::at(&path.at, format!("`json_schema`: {e}")))
}

fn compile_cors(spec: &Located<CorsSpec>) -> Result<Cors, ConfigError> {
    Cors::build(&spec.value).map_err(|e| ConfigError::at(&spec.at, format!("`cors`: {e}")))
}

/// A provider that could not be built, at its key file when that is the
/// cause.
fn provider_error(file: &Path, provider: &AuthProvider, e: auth::BuildError) -> ConfigError {
    let auth::BuildError::Jwt(_, refresh) = &e;
    if let (AuthKind::Jwt(jwt), RefreshError::Keys(keys)) = (&provider.kind, refresh) {
        if let KeySource::File { path, .. } = &jwt.keys {
            return ConfigError::at(&path.at, format!("`{}`: {keys}", path.value.display()));
        }
    }
    ConfigError::in_file(file, e.to_string())
}

/// A route's CEL policy; an error is reported where it is in the file when
/// the expression is a one-line string, else at the string.
fn compile_policy(p: &PolicySource) -> Result<Arc<Policy>, ConfigError> {
    Policy::compile(&p.source.value).map(Arc::new).map_err(|e| {
        let at = match &e {
            PolicyError::Syntax {
                line: 1, column, ..
            } if p.one_line => {
                // Past the opening quote; CEL columns count from 1.
                p.source
                    .at
                    .right(usize::try_from(*column).unwrap_or(1).max(1))
            }
            _ => p.source.at.clone(),
        };
        ConfigError::at(&at, format!("`policy`: {e}"))
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::config::tests::BASE;

    /// What `check` prints for `text`: read, then compiled.
    fn errors(text: &str) -> Vec<String> {
        let config = match crate::config::parse_str(Path::new("gw.toml"), text) {
            Ok(config) => config,
            Err(e) => return e.0.iter().map(ToString::to_string).collect(),
        };
        let observer = Arc::new(Observer::new(&config.log).unwrap());
        match Runtime::compile(config, 0, &observer, None) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

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

    #[test]
    fn policy_errors_point_into_the_expression() {
        let text = BASE.replace(
            "public = true",
            "public = true\npolicy = 'request.method == '",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("gw.toml:13:29: "), "{errs:?}");
        assert!(errs[0].contains("`policy`: invalid CEL"), "{errs:?}");
        let text = BASE.replace(
            "public = true",
            "public = true\npolicy = 'claim.tenant == \"a\"'",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("gw.toml:13:10: `policy`: unknown variable `claim`"),
            "{errs:?}"
        );
    }
}
