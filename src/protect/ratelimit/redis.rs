//! The shared store: the same GCRA and lockout as the local store, made
//! atomic across gateways by Lua scripts in Redis.
//!
//! - One round trip per decision: `EVALSHA` of a script
//!   ([`redis::Script`] loads it on `NOSCRIPT`, e.g. after a Redis
//!   restart), which reads Redis's own clock (`TIME`) and sets a
//!   `PEXPIRE`-style expiry so idle keys vanish.
//! - One server (`redis_url`, plain or `rediss://`): [`POOL`] multiplexed
//!   [`ConnectionManager`]s, used round-robin, made on first use (they
//!   must be spawned on a running Tokio runtime, which the constructor may
//!   not have). A manager reconnects by itself; its own retries are off so
//!   that each of our calls is bounded by our timeout alone, and a call
//!   whose connection turns out to be dead is retried once on the
//!   reconnected one, within the same timeout (if the lost call had in
//!   fact run, that request counts twice: the strict side).
//! - A Redis Cluster (`redis_cluster_urls`): one [`ClusterConnection`],
//!   which multiplexes over a connection per node, follows `MOVED`/`ASK`
//!   and refreshes the slot map itself. Every script and pipeline touches
//!   the keys of one slot: a key's parts that must stay together are in a
//!   `{hash tag}`.
//! - A primary watched by Redis Sentinel (`redis_sentinel_urls`): the
//!   sentinels are asked for the primary (which must confirm its role),
//!   then it is used like one server. Any failed call drops those
//!   connections, so the next call (the next probe, while down) asks the
//!   sentinels again: a failover is followed within about a probe period,
//!   and a demoted primary answering `READONLY` is left too.
//! - Health: the first failure marks Redis down and emits
//!   `rate_limit_store_unavailable` once. While down, calls are skipped
//!   (the caller applies `on_error` at once instead of waiting for a
//!   timeout on every request), except one probe per [`PROBE_EVERY`]
//!   carried by whichever request comes first; the first success marks it
//!   up and emits `rate_limit_store_recovered` once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Script, ScriptInvocation,
    TlsCertificates, Value,
};

use super::gcra::{self, Params, MICROS};
use super::{Decision, Limit, Lockout, StoreConfig, StoreError, StoreKind};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;

/// Connections per single-server store: enough to spread pipelining over
/// a few sockets.
const POOL: usize = 4;
/// Attempts of one cluster call on a node that fails or has moved the
/// slot, each on a fresh slot map; all within our timeout.
const CLUSTER_RETRIES: u32 = 2;
/// How often a down Redis is tried again: bounds how long recovery goes
/// unnoticed, and how many requests pay a timeout while it is down.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

const RATE_PREFIX: &[u8] = b"portcullis:rl:";
/// The IP is a hash tag, so that an IP's two keys share a Cluster slot.
const LOCK_PREFIX: &[u8] = b"portcullis:lock:{";
/// One-time tokens and DPoP proof `jti`s (hashed), by `SET NX`.
const ONCE_PREFIX: &[u8] = b"portcullis:once:";

const RATE_SCRIPT: &str = include_str!("rate.lua");
const LOCKOUT_SCRIPT: &str = include_str!("lockout.lua");

/// Redis could not be used for this call; the caller falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What a recorded failure did on the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// This failure placed the block.
    pub newly_blocked: bool,
    /// Block time left, when the IP is blocked.
    pub blocked_for: Option<Duration>,
}

pub struct RedisStore {
    client: Backend,
    pool: OnceLock<Option<Box<[Conn]>>>,
    next: AtomicUsize,
    timeout: Duration,
    rate: Script,
    lockout: Script,
    health: Health,
}

impl RedisStore {
    /// Parses the URLs and certificates only; nothing connects before the
    /// first call. `None` for a local store.
    pub fn new(config: &StoreConfig, observer: Arc<Observer>) -> Result<Option<Self>, StoreError> {
        let timeout = config.timeout;
        let client = match &config.kind {
            StoreKind::Local => return Ok(None),
            StoreKind::Redis { url } => Backend::Single(single_client(url, config)?),
            StoreKind::RedisCluster { urls } => Backend::Cluster(
                ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .retries(CLUSTER_RETRIES)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .map_err(|e| StoreError::RedisUrl(e.to_string()))?,
            ),
            StoreKind::RedisSentinel { urls, master } => {
                let (name, account) = primary_account(master)?;
                let client = SentinelClient::build(
                    urls.iter().map(String::as_str).collect(),
                    name,
                    Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(account)),
                    SentinelServerType::Master,
                )
                .map_err(|e| StoreError::RedisUrl(e.to_string()))?;
                Backend::Sentinel(Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    primary: ArcSwapOption::empty(),
                })
            }
        };
        Ok(Some(RedisStore {
            client,
            pool: OnceLock::new(),
            next: AtomicUsize::new(0),
            timeout,
            rate: Script::new(RATE_SCRIPT),
            lockout: Script::new(LOCKOUT_SCRIPT),
            health: Health::new(observer),
        }))
    }

    pub async fn check(&self, key: &[u8], limit: &Limit) -> Result<Decision, Unavailable> {
        let p = Params::new(limit, MICROS);
        let mut invocation = self.rate.prepare_invoke();
        invocation
            .key(prefixed(RATE_PREFIX, key, b""))
            .arg(p.interval)
            .arg(p.tolerance);
        self.call(Request::Script(&invocation), |reply| {
            let (allowed, debt) = pair(reply)?;
            let allowed = match allowed {
                0 => false,
                1 => true,
                _ => return None,
            };
            Some(gcra::decision(allowed, u64::try_from(debt).ok()?, &p))
        })
        .await
    }

    /// Block time left for `ip`, `None` when it is not blocked.
    pub async fn blocked_for(&self, ip: &[u8]) -> Result<Option<Duration>, Unavailable> {
        let mut pttl = redis::cmd("PTTL");
        pttl.arg(prefixed(LOCK_PREFIX, ip, b"}:b"));
        self.call(Request::Command(&pttl), |reply| match reply {
            Value::Int(ms) => Some(positive_millis(ms)),
            _ => None,
        })
        .await
    }

    pub async fn record_failure(
        &self,
        ip: &[u8],
        lockout: &Lockout,
    ) -> Result<FailureOutcome, Unavailable> {
        let mut invocation = self.lockout.prepare_invoke();
        invocation
            .key(prefixed(LOCK_PREFIX, ip, b"}:n"))
            .key(prefixed(LOCK_PREFIX, ip, b"}:b"))
            .arg(lockout.threshold)
            .arg(millis(lockout.window))
            .arg(millis(lockout.block));
        self.call(Request::Script(&invocation), |reply| {
            let (newly, left) = pair(reply)?;
            Some(FailureOutcome {
                newly_blocked: newly == 1,
                blocked_for: positive_millis(left),
            })
        })
        .await
    }

    /// `SET key 1 NX PX ttl`: true when the key was not there (its first
    /// use), false when it was (a replay).
    pub async fn set_once(&self, key: &[u8], ttl: Duration) -> Result<bool, Unavailable> {
        let mut set = redis::cmd("SET");
        set.arg(prefixed(ONCE_PREFIX, key, b""))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        self.call(Request::Command(&set), |reply| match reply {
            Value::Okay => Some(true),
            Value::SimpleString(s) if s == "OK" => Some(true),
            Value::Nil => Some(false),
            _ => None,
        })
        .await
    }

    /// One command of another feature sharing this store (revocations),
    /// with the same timeout and health state; `parse` checks the reply.
    pub async fn query<T>(
        &self,
        cmd: &Cmd,
        parse: impl FnOnce(Value) -> Option<T>,
    ) -> Result<T, Unavailable> {
        self.call(Request::Command(cmd), parse).await
    }

    /// Like [`Self::query`] for a pipeline (`MULTI`/`EXEC` when atomic).
    pub async fn query_pipeline<T>(
        &self,
        pipe: &Pipeline,
        parse: impl FnOnce(Value) -> Option<T>,
    ) -> Result<T, Unavailable> {
        self.call(Request::Pipeline(pipe), parse).await
    }

    /// Sends `request` within the timeout, keeps the health state and
    /// parses the reply; a reply `parse` rejects counts as a failure.
    async fn call<T>(
        &self,
        request: Request<'_>,
        parse: impl FnOnce(Value) -> Option<T>,
    ) -> Result<T, Unavailable> {
        if !self.health.should_try() {
            return Err(Unavailable);
        }
        let attempt = async {
            let mut con = self.connection().await?;
            match request.send(&mut con).await {
                // The manager has started reconnecting; the second try
                // waits for that connection.
                Err(e) if e.is_io_error() || e.is_unrecoverable_error() => {
                    request.send(&mut con).await
                }
                other => other,
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(e)) => Err(Failure::of(&e)),
            Ok(Ok(reply)) => parse(reply).ok_or(Failure::BadReply),
        };
        match outcome {
            Ok(value) => {
                self.health.succeeded();
                Ok(value)
            }
            Err(failure) => {
                if let Backend::Sentinel(sentinel) = &self.client {
                    sentinel.primary.store(None);
                }
                self.health.failed(failure);
                Err(Unavailable)
            }
        }
    }

    async fn connection(&self) -> RedisResult<Conn> {
        if let Backend::Sentinel(sentinel) = &self.client {
            return self.primary(sentinel).await;
        }
        let pool = self
            .pool
            .get_or_init(|| match &self.client {
                Backend::Single(client) => self.managers(client).ok(),
                Backend::Cluster(client) => {
                    let config = ClusterConfig::new()
                        .set_connection_timeout(self.timeout)
                        .set_response_timeout(self.timeout);
                    Some(Box::new([Conn::Cluster(
                        client.get_pending_async_connection_with_config(config),
                    )]))
                }
                Backend::Sentinel(_) => None,
            })
            .as_ref();
        pool.and_then(|p| self.pick(p)).ok_or_else(no_connection)
    }

    /// The primary's connections, asking the sentinels for it first when
    /// there are none (at the first call, and after a failure).
    async fn primary(&self, sentinel: &Sentinel) -> RedisResult<Conn> {
        if let Some(pool) = sentinel.primary.load().as_deref() {
            return self.pick(pool).ok_or_else(no_connection);
        }
        let mut client = sentinel.client.lock().await;
        // Another call may have found it while this one waited.
        if let Some(pool) = sentinel.primary.load().as_deref() {
            return self.pick(pool).ok_or_else(no_connection);
        }
        let primary = client.async_get_client().await?;
        let pool = Arc::new(self.managers(&primary)?);
        sentinel.primary.store(Some(Arc::clone(&pool)));
        self.pick(&pool).ok_or_else(no_connection)
    }

    fn managers(&self, client: &Client) -> RedisResult<Box<[Conn]>> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        (0..POOL)
            .map(|_| {
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map(Conn::Single)
            })
            .collect()
    }

    fn pick(&self, pool: &[Conn]) -> Option<Conn> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.len().max(1);
        pool.get(i).cloned()
    }
}

/// A `rediss://` URL's client carries the configured roots and client
/// certificate; without `redis_ca_file` the system's roots are trusted.
fn single_client(url: &str, config: &StoreConfig) -> Result<Client, StoreError> {
    let client = if url.starts_with("rediss:") {
        Client::build_with_tls(
            url,
            TlsCertificates {
                client_tls: config
                    .tls
                    .client
                    .as_ref()
                    .map(|(cert, key)| ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.expose().as_bytes().to_vec(),
                    }),
                root_cert: config.tls.ca.clone(),
            },
        )
    } else {
        Client::open(url)
    };
    client.map_err(|e| StoreError::RedisUrl(e.to_string()))
}

fn no_connection() -> RedisError {
    RedisError::from((ErrorKind::Io, "no connection to Redis"))
}

/// `redis_sentinel_master`: the monitored name, and the primary's own
/// account from `redis://[user:password@]NAME[/db]`.
fn primary_account(master: &str) -> Result<(String, RedisConnectionInfo), StoreError> {
    if !master.contains("://") {
        return Ok((master.to_string(), RedisConnectionInfo::default()));
    }
    let info = master
        .into_connection_info()
        .map_err(|e| StoreError::RedisUrl(e.to_string()))?;
    match info.addr() {
        ConnectionAddr::Tcp(name, _) => Ok((name.clone(), info.redis_settings().clone())),
        _ => Err(StoreError::RedisUrl(
            "redis_sentinel_master: not a redis:// URL".into(),
        )),
    }
}

/// One per store, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Single(Client),
    Cluster(ClusterClient),
    Sentinel(Sentinel),
}

struct Sentinel {
    /// Held while asking the sentinels, so that one call asks for all.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The current primary's connections; empty until found, and again
    /// after a failure.
    primary: ArcSwapOption<Box<[Conn]>>,
}

/// A handle on one of the pool's connections (cheap to clone).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Request<'a> {
    Script(&'a ScriptInvocation<'a>),
    Command(&'a Cmd),
    Pipeline(&'a Pipeline),
}

impl Request<'_> {
    async fn send(&self, con: &mut Conn) -> RedisResult<Value> {
        match self {
            Request::Script(invocation) => invocation.invoke_async(con).await,
            Request::Command(cmd) => cmd.query_async(con).await,
            Request::Pipeline(pipe) => pipe.query_async(con).await,
        }
    }
}

/// Why a call failed, as the fixed `reason` of the unavailable event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Connection,
    Server,
    BadReply,
}

impl Failure {
    fn of(e: &RedisError) -> Self {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            Failure::Connection
        } else {
            Failure::Server
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connection => "connection",
            Failure::Server => "error",
            Failure::BadReply => "bad_reply",
        }
    }
}

/// Up/down state of Redis, shared by all calls of one store.
struct Health {
    observer: Arc<Observer>,
    epoch: Instant,
    down: AtomicBool,
    /// Milliseconds since `epoch` from which a down Redis may be probed.
    next_probe: AtomicU64,
}

impl Health {
    fn new(observer: Arc<Observer>) -> Self {
        Health {
            observer,
            epoch: Instant::now(),
            down: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Whether this call may use Redis: always when up; when down, only
    /// the one call that wins the next probe slot.
    fn should_try(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe.load(Ordering::Acquire);
        now >= next
            && self
                .next_probe
                .compare_exchange(
                    next,
                    now.saturating_add(millis(PROBE_EVERY)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn succeeded(&self) {
        if self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel) {
            self.observer.security_event(&SecurityEvent::new(
                "rate_limit_store_recovered",
                "redis answered",
            ));
        }
    }

    fn failed(&self, failure: Failure) {
        // The probe slot is set before `down`, so that calls seeing `down`
        // do not all probe at once.
        self.next_probe.store(
            self.now_ms().saturating_add(millis(PROBE_EVERY)),
            Ordering::Release,
        );
        if !self.down.swap(true, Ordering::AcqRel) {
            self.observer.security_event(&SecurityEvent::new(
                "rate_limit_store_unavailable",
                failure.reason(),
            ));
        }
    }
}

fn prefixed(prefix: &[u8], key: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + key.len() + suffix.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k.extend_from_slice(suffix);
    k
}

/// A two-integer script reply.
fn pair(reply: Value) -> Option<(i64, i64)> {
    match reply {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(a), Value::Int(b)] => Some((*a, *b)),
            _ => None,
        },
        _ => None,
    }
}

/// A PTTL-style answer: only a positive count of milliseconds is a block.
fn positive_millis(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

/// Whole milliseconds, at least one: `PEXPIRE 0` would delete the key.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_wrong_shape_are_rejected() {
        assert_eq!(
            pair(Value::Array(vec![Value::Int(1), Value::Int(2)])),
            Some((1, 2))
        );
        assert_eq!(pair(Value::Array(vec![Value::Int(1)])), None);
        assert_eq!(pair(Value::Int(1)), None);
        assert_eq!(pair(Value::Nil), None);
        assert_eq!(pair(Value::Array(vec![Value::Nil, Value::Int(2)])), None);
        assert_eq!(positive_millis(-2), None);
        assert_eq!(positive_millis(0), None);
        assert_eq!(positive_millis(1500), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn keys_are_prefixed_and_binary_safe() {
        assert_eq!(
            prefixed(LOCK_PREFIX, b"10.0.0.1", b"}:b"),
            b"portcullis:lock:{10.0.0.1}:b".to_vec()
        );
        assert_eq!(
            prefixed(RATE_PREFIX, b"\0\xff", b""),
            b"portcullis:rl:\0\xff".to_vec()
        );
    }
}
