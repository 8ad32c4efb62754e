//! The validated configuration: what the program needs, not what the file says.
//!
//! Every value here has passed validation; later stages never re-check it.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::core::alg::Alg;
use crate::core::ids::{ListenerId, ProviderId, UpstreamId};
use crate::core::location::Located;
use crate::core::matching::{MethodSet, PathMatch};
use crate::core::net::CidrRules;
use crate::core::secret::Secret;

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    /// Hex SHA-256 of the main file's bytes, so operators can tell which
    /// revision a running gateway serves.
    pub sha256: String,
    pub server: Server,
    pub log: Log,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub limits: Limits,
    pub upstreams: Vec<Upstream>,
    pub auth: Vec<AuthProvider>,
    pub routes: Vec<Route>,
    pub protection: Protection,
    pub rate_limit_store: StoreConfig,
    pub cache: CacheLimits,
    /// `[tracing]`; nothing is traced without it.
    pub tracing: Option<TracingConfig>,
    /// `[alerts]`; none when absent.
    pub alerts: Option<Alerts>,
    /// `[auth]` settings shared by every provider.
    pub tokens: TokenSettings,
    /// `[waf]`; routes with `waf` need it.
    pub waf: Option<WafConfig>,
}

/// `[waf]` (CONTRACT §14): the rule set and how much of a body it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct WafConfig {
    /// Rule files in load order; a `*` in a file name matches in name order.
    pub rules: Vec<Located<String>>,
    pub paranoia_level: u8,
    pub anomaly_threshold: u32,
    pub inspect_body_bytes: u64,
    pub oversize: WafOversize,
    /// How long one request's inspection (waiting for a slot, then the
    /// rules) may take; past it a `block` route refuses, a `detect` route
    /// goes on.
    pub timeout: std::time::Duration,
}

/// What a WAF route does with a body over `inspect_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafOversize {
    Reject,
    InspectPrefix,
    Skip,
}

/// A route's `waf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WafMode {
    #[default]
    Off,
    Detect,
    Block,
}

/// A route's `waf` and `waf_exclude_rules`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteWaf {
    pub mode: WafMode,
    /// Sorted, without repeats: routes with the same list share rules.
    pub exclude_rules: Vec<u32>,
}

/// `[tracing]`: OTLP/HTTP export of one server span per request.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    pub otlp_endpoint: String,
    pub service_name: String,
    /// Of traces that start here; a sampled incoming parent is followed.
    pub sample_ratio: f64,
    /// Whether a client's `traceparent` is continued (else a new trace
    /// starts at the gateway).
    pub trust_incoming: bool,
}

/// `[cache]`: the bounds of the process's one response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Every route's stored responses together; the least recently used
    /// go first.
    pub max_bytes: usize,
    /// A larger response is passed on but not stored.
    pub max_object_bytes: usize,
}

/// A route's `cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// The lifetime of a stored response, and the cap of the origin's own.
    pub ttl: std::time::Duration,
    pub statuses: Vec<u16>,
    /// Request headers whose values are part of the key.
    pub vary: Vec<HeaderName>,
    pub scope: CacheScope,
}

/// Who may be served a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Everyone the route admits; on a route that authenticates, only what
    /// the origin marks `public` or `s-maxage` is stored.
    Shared,
    /// Only the same consumer (the subject when it has none).
    Consumer,
}

/// `[auth]` settings beside the providers (CONTRACT §13).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSettings {
    /// Where revocations persist; without it they last as long as the
    /// process.
    pub revocations_file: Option<Located<PathBuf>>,
    /// The file's entries at load.
    pub revocations: Vec<super::revocations::Revocation>,
}

/// `[protection]`: rules for every route, checked before routing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protection {
    pub cidrs: CidrRules,
    /// `[protection.failed_auth]`; off when absent.
    pub failed_auth: Option<Lockout>,
}

/// A route's `rate_limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRateLimit {
    pub per: RateKey,
    pub limit: Limit,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The identity's consumer, else its subject; the client IP when the
    /// request has no identity.
    Consumer,
    ClientIp,
    /// One bucket for the whole route.
    Route,
    /// The header's value; requests without it share one bucket.
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub threads: usize,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub underscore_headers: UnderscoreHeaders,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_keepalive_pool_size: usize,
    /// Whether the worker threads share one work-stealing runtime.
    pub work_stealing: bool,
}

/// What happens to request header names containing `_`: many stacks read
/// `X_Auth_Subject` as `X-Auth-Subject`, so such a header could pass for
/// one the gateway owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Removed before anything reads the request.
    Drop,
    /// 400 `bad_request`.
    Reject,
    /// Kept; the identity-header removal then treats `_` as `-`.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub level: String,
    pub access_log: LogTarget,
    pub security_log: LogTarget,
    /// `security_log_chain`: `seq` and `chain` on every security log line.
    pub security_log_chain: bool,
    /// `security_log_key_file`, read and checked at load.
    pub security_log_key: Option<SeclogKey>,
    /// Consumers with their own `portcullis_consumer_requests_total` label.
    pub max_consumer_labels: usize,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            access_log: LogTarget::Stdout,
            security_log: LogTarget::Stdout,
            security_log_chain: false,
            security_log_key: None,
            max_consumer_labels: 1000,
        }
    }
}

/// The Ed25519 key that signs security log checkpoints.
#[derive(Clone)]
pub struct SeclogKey {
    pub path: PathBuf,
    pub key: std::sync::Arc<ed25519_dalek::SigningKey>,
}

impl fmt::Debug for SeclogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeclogKey({})", self.path.display())
    }
}

impl PartialEq for SeclogKey {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.key.verifying_key() == other.key.verifying_key()
    }
}

impl Eq for SeclogKey {}

/// `[alerts]` (CONTRACT §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// May carry a credential in its path or query: never logged.
    pub webhook_url: String,
    /// Security events that each raise an alert.
    pub events: Vec<String>,
    /// `auth_failure_spike.per_minute`.
    pub auth_failure_spike: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// As written, like a listener's address.
    pub listen: String,
    pub addr: SocketAddr,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// The address exactly as written: Pingora matches inherited sockets on
    /// upgrade by this string.
    pub listen: String,
    pub addr: SocketAddr,
    pub tls: Option<ListenerTls>,
    /// TLS: h2 offered by ALPN beside http/1.1; plain: h2c by prior
    /// knowledge beside HTTP/1.1.
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// (certificate, key) files; the first is the default, the others are
    /// picked by SNI. Read when the runtime is built, on every reload.
    pub certificates: Vec<(Located<PathBuf>, PathBuf)>,
    /// Trust anchors for client certificates, and whether one is required.
    pub client_ca: Option<(Located<PathBuf>, ClientAuth)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// The whole request head, from its first byte.
    pub header_timeout: Duration,
    /// A keep-alive connection waiting for its next request.
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Client connections of all listeners together.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub tls: bool,
    pub protocol: UpstreamProtocol,
    pub sni: String,
    /// The CAs that sign the targets' certificates instead of the system's
    /// (an internal PKI); loaded with the runtime.
    pub ca_file: Option<Located<PathBuf>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: usize,
    pub health_check: Option<HealthCheck>,
    /// How often host-name targets are resolved again.
    pub dns_refresh: Duration,
    pub outlier_detection: Option<OutlierDetection>,
}

/// Passive health: targets failing requests in a row are taken out for a
/// while (CONTRACT §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row that eject a target (at least 1).
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// The longest ejection (at least `base_ejection`).
    pub max_ejection: Duration,
    /// The largest share of the targets ejected at once, 0 to 100.
    pub max_ejection_percent: u8,
}

/// `upstream = "a"` (one choice of weight 1) or `upstreams = [{ name,
/// weight }, ...]` with an optional `split_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSplit {
    /// Indices into `Config::upstreams`, each with its weight (> 0).
    pub choices: Vec<(UpstreamId, u32)>,
    /// What keeps a caller on one side; `None`: each request is drawn.
    pub key: Option<HashKey>,
}

impl UpstreamSplit {
    pub fn single(upstream: UpstreamId) -> Self {
        UpstreamSplit {
            choices: vec![(upstream, 1)],
            key: None,
        }
    }
}

/// What the gateway speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// TLS with ALPN h2, falling back to HTTP/1.1.
    Http2,
    /// Plaintext HTTP/2 by prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    /// gRPC needs trailers, which only HTTP/2 carries end to end.
    pub fn carries_trailers(self) -> bool {
        !matches!(self, UpstreamProtocol::Http1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: TargetAddr,
    pub weight: usize,
}

/// A target as written: an address, or a host name whose every A and AAAA
/// address is a target of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    Ip(SocketAddr),
    /// `host` is lower-case, as written otherwise (a trailing dot keeps
    /// the resolver's search domains out).
    Name {
        host: String,
        port: u16,
    },
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(addr) => addr.fmt(f),
            TargetAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Consumer,
    ClientIp,
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: usize,
    pub healthy_threshold: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    Http { path: String, host: String },
    Tcp,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<String>,
    pub path: PathMatch,
    pub methods: MethodSet,
    /// Indices into `Config::auth`, tried in order; empty only when the
    /// route is public.
    pub auth: Vec<ProviderId>,
    /// `match_headers`: exact values every one of which the request must
    /// carry; such a route beats one without on the same path.
    pub match_headers: Vec<(HeaderName, HeaderValue)>,
    /// `deprecation`: the RFC 9745 / RFC 8594 headers of every response.
    pub deprecation: Vec<(HeaderName, HeaderValue)>,
    pub action: RouteAction,
    /// The route's own body limit; never above the global one.
    pub max_body_bytes: u64,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub authz: RouteAuthzConfig,
    pub cidrs: CidrRules,
    pub rate_limit: Option<RouteRateLimit>,
    /// The JSON Schema file POST/PUT/PATCH bodies must match (and be
    /// JSON); compiled with the runtime.
    pub json_schema: Option<Located<PathBuf>>,
    pub cors: Option<Located<CorsSpec>>,
    /// Indices into `Config::listeners`; empty: every listener.
    pub listeners: Vec<ListenerId>,
    /// `;` path parameters are accepted (and kept upstream) on this route.
    pub allow_path_params: bool,
    /// `Upgrade: websocket` is allowed, and an open socket is closed after
    /// this long without a frame.
    pub websocket: Option<Duration>,
    /// `cache`: responses stored and served at the edge.
    pub cache: Option<RouteCache>,
    pub waf: RouteWaf,
}

/// A route's `cors`, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSpec {
    pub origins: Vec<String>,
    pub methods: Vec<http::Method>,
    pub headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age_seconds: u64,
    pub expose_headers: Vec<HeaderName>,
}

/// A route's authorization rules as configured.
#[derive(Debug, Default)]
pub struct RouteAuthzConfig {
    pub require_scopes: Vec<String>,
    pub allow_roles: Vec<String>,
    pub policy: Option<PolicySource>,
    pub external: Option<ExternalAuthzConfig>,
}

/// A value compiled only with the runtime, kept so that `check` can still
/// compile it when another part of the file is wrong and no `Config` is
/// made: every error is reported at once.
#[derive(Debug, Clone)]
pub enum Pending {
    Policy(PolicySource),
    Schema(Located<PathBuf>),
    Cors(Located<CorsSpec>),
    Certificate {
        cert: Located<PathBuf>,
        key: PathBuf,
    },
    /// A PEM file of CA certificates (`client_ca`, an upstream's `ca_file`).
    CaFile(Located<PathBuf>),
    Jwks {
        path: Located<PathBuf>,
        json: Vec<u8>,
        algorithms: Vec<Alg>,
    },
}

/// A CEL expression, compiled with the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The expression; its place is the string's opening quote.
    pub source: Located<String>,
    /// Written as a one-line string without escapes, so columns of the
    /// expression are columns of the file, past the quote.
    pub one_line: bool,
}

/// `authz_url` and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAuthzConfig {
    pub url: String,
    /// Zero: decisions are not reused (identical checks in flight are
    /// still coalesced).
    pub cache: Duration,
    pub timeout: Duration,
    pub response_headers: Vec<HeaderName>,
}

#[derive(Debug)]
pub enum RouteAction {
    Proxy {
        /// The upstream, or the weighted upstreams a request is drawn from.
        upstreams: UpstreamSplit,
        strip_prefix: bool,
    },
    Respond {
        status: u16,
        body: Bytes,
        content_type: HeaderValue,
    },
}

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// `[auth.NAME]`: one way of proving who the caller is.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthProvider {
    pub name: String,
    pub kind: AuthKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthKind {
    Jwt(JwtProvider),
    Introspection(IntrospectionProvider),
    ApiKey(ApiKeyProvider),
    Mtls(MtlsProvider),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MtlsProvider {
    pub subject_from: SubjectFrom,
    /// Glob patterns (`*` matches any run of characters); empty: any
    /// verified certificate.
    pub allowed_subjects: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectFrom {
    Cn,
    SanUri,
    SanDns,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyProvider {
    pub keys_file: PathBuf,
    /// Shared: a reload compares them, requests look them up.
    pub keys: std::sync::Arc<Vec<ApiKey>>,
    pub header: HeaderName,
    /// Off unless set; the parameter is removed before forwarding.
    pub query_param: Option<String>,
    pub forward_credentials: bool,
}

/// One key of a keys file. Only the SHA-256 of the whole key is known.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub consumer: String,
    pub hash: [u8; 32],
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub disabled: bool,
    /// A key of any form (one carried over from another gateway), found by
    /// its hash; a `pc_<id>_<secret>` key is found by the id inside it.
    pub opaque: bool,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtProvider {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub algorithms: Vec<Alg>,
    pub leeway_seconds: u64,
    pub jwks_refresh: Duration,
    pub token_cache_entries: u64,
    pub required_claims: Vec<String>,
    pub max_token_bytes: usize,
    pub roles_claim: Option<String>,
    pub scopes_claim: String,
    pub forward_credentials: bool,
    /// Timeout of every JWKS and discovery fetch.
    pub fetch_timeout: Duration,
    /// Each `jti` accepted once, until the token's `exp`.
    pub replay_protection: bool,
    pub dpop: DpopConfig,
}

/// RFC 9449 DPoP on a `jwt` or `introspection` provider (CONTRACT §13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopConfig {
    pub mode: DpopMode,
    /// How far in the past a proof's `iat` may be.
    pub proof_lifetime_seconds: u64,
    /// Asymmetric algorithms a proof may be signed with.
    pub algorithms: Vec<Alg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopMode {
    /// Only `Authorization: Bearer`; a DPoP-bound token is still refused.
    Off,
    /// `DPoP` with a proof, or `Bearer` for tokens without `cnf.jkt`.
    Optional,
    /// Only `Authorization: DPoP` with a proof.
    Required,
}

/// Where a JWT provider's keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    JwksUri(String),
    /// An OpenID Connect discovery document naming `issuer` and `jwks_uri`.
    Discovery(String),
    /// A JWKS file, read at load; its keys are checked when the provider
    /// is built.
    File {
        path: Located<PathBuf>,
        json: Vec<u8>,
    },
    /// An HMAC secret for HS* algorithms.
    Secret {
        path: PathBuf,
        secret: Secret,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionProvider {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub cache_seconds: u64,
    pub cache_entries: u64,
    pub max_token_bytes: usize,
    pub forward_credentials: bool,
    pub timeout: Duration,
    /// Where roles and scopes are in the answer, like a JWT provider's.
    pub roles_claim: String,
    pub scopes_claim: String,
    pub dpop: DpopConfig,
}

/// A route's limit: a bucket of `burst` tokens refilled with `requests`
/// tokens per `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub requests: u64,
    pub window: Duration,
    /// The bucket size; the configuration defaults it to `requests`.
    pub burst: u64,
}

/// What rate limits do while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Per-instance limits from the local tables.
    Local,
    /// Every request passes (reported as a full bucket).
    Allow,
    /// Every request is refused, to be retried after the next probe.
    Deny,
}

#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    /// One server (or a proxy in front of several): `redis_url`.
    Redis {
        url: String,
    },
    /// The seed nodes of a Redis Cluster (`redis_cluster_urls`); the client
    /// learns the others and the slot map from them.
    RedisCluster {
        urls: Vec<String>,
    },
    /// The primary that Redis Sentinel names (`redis_sentinel_urls`,
    /// `redis_sentinel_master`: a name, or `redis://[user:password@]NAME[/db]`
    /// for the primary's own account).
    RedisSentinel {
        urls: Vec<String>,
        master: String,
    },
}

/// URLs may hold a password: `Debug` shows them redacted.
impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreKind::Local => f.write_str("Local"),
            StoreKind::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redacted(url))
                .finish(),
            StoreKind::RedisCluster { urls } => f
                .debug_struct("RedisCluster")
                .field(
                    "urls",
                    &urls.iter().map(|u| redacted(u)).collect::<Vec<_>>(),
                )
                .finish(),
            StoreKind::RedisSentinel { urls, master } => f
                .debug_struct("RedisSentinel")
                .field(
                    "urls",
                    &urls.iter().map(|u| redacted(u)).collect::<Vec<_>>(),
                )
                .field("master", &redacted(master))
                .finish(),
        }
    }
}

/// The PEM files of `rediss://` (read at load, so that a reload that
/// changes them builds a new store); empty for plain connections.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// `redis_ca_file`: the only roots trusted when set; the system's
    /// otherwise.
    pub ca: Option<Vec<u8>>,
    /// `redis_cert_file` and `redis_key_file` (PKCS#8), for servers that
    /// ask for client certificates.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

fn redacted(url: &str) -> Cow<'_, str> {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..]).into()
        }
        _ => url.into(),
    }
}

/// `[rate_limit_store]`: the only state-shaping configuration of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub tls: RedisTls,
    pub on_error: OnError,
    /// Bound of every Redis call, connecting included.
    pub timeout: Duration,
    /// Bound of each local table (buckets, lockouts).
    pub max_local_keys: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Local,
            tls: RedisTls::default(),
            on_error: OnError::Local,
            timeout: Duration::from_millis(100),
            max_local_keys: 1_000_000,
        }
    }
}

/// `[protection.failed_auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// Failures within `window` that block the IP; 0 turns lockout off.
    pub threshold: u64,
    pub window: Duration,
    pub block: Duration,
}
