//! One upstream: its targets behind a Pingora `LoadBalancer`, with active
//! health checks and passive outlier detection that take targets out, and
//! host-name targets resolved into addresses of their own.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora::http::ResponseHeader;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::{
    HealthCheck as PingoraHealthCheck, HttpHealthCheck, TcpHealthCheck,
};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::{Error, ErrorType};
use pingora_load_balancing::health_check::HealthObserve;

use super::dns::Resolver;
use super::outlier::{Attempt, Budget, TargetOutlier};
use crate::config::{Balance, HealthCheck, HealthKind, TargetAddr, Upstream};
use crate::core::tasks::TaskGuard;
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;
use crate::tls::UpstreamCa;

/// How far a selection may walk the ring before giving up; bounds the work
/// a request can cause when most targets are down.
const MAX_SELECT_STEPS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("upstream `{0}`: cannot build its target list")]
    Discovery(String),
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

/// One address the balancer picks from.
struct Member {
    addr: SocketAddr,
    backend: Backend,
    /// The host-name target it was resolved from.
    name: Option<Arc<str>>,
    outlier: Arc<TargetOutlier>,
}

/// Every member, sorted by address.
#[derive(Default)]
struct Members(Vec<Member>);

impl Members {
    fn get(&self, addr: &SocketAddr) -> Option<&Member> {
        self.0
            .binary_search_by(|m| m.addr.cmp(addr))
            .ok()
            .and_then(|i| self.0.get(i))
    }
}

/// A host-name target and what its last lookup found.
struct NameTarget {
    host: String,
    port: u16,
    /// `host:port`, as reports name it.
    label: Arc<str>,
    last: ArcSwap<Resolution>,
}

#[derive(Default)]
struct Resolution {
    /// The last good set of addresses (empty before any lookup worked).
    addrs: Vec<SocketAddr>,
    /// Why the last lookup failed, when it did.
    error: Option<String>,
}

/// A target's state for status reports.
pub struct TargetStatus {
    pub addr: SocketAddr,
    pub healthy: bool,
    pub ejected: bool,
    /// The host-name target the address was resolved from.
    pub name: Option<Arc<str>>,
}

/// A host-name target's addresses for status reports.
pub struct NameStatus {
    pub name: Arc<str>,
    pub addrs: Vec<SocketAddr>,
    pub error: Option<String>,
}

/// The balancer's view of the members: what the last membership change
/// stored.
struct Discovered(Arc<ArcSwap<BTreeSet<Backend>>>);

#[async_trait]
impl ServiceDiscovery for Discovered {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.load()), HashMap::new()))
    }
}

pub struct UpstreamPool {
    pub config: Upstream,
    /// The CAs of `ca_file`; the system's when `None`.
    pub ca: Option<UpstreamCa>,
    balancer: Balancer,
    observer: Arc<Observer>,
    discovered: Arc<ArcSwap<BTreeSet<Backend>>>,
    members: ArcSwap<Members>,
    names: Vec<NameTarget>,
    outlier: Option<Budget>,
    /// One membership change at a time.
    changing: tokio::sync::Mutex<()>,
    /// Set once a reload dropped the pool: requests still running on the
    /// old snapshot (and ejection timers) must not write the series that
    /// the pool replacing it owns now.
    retired: AtomicBool,
}

impl UpstreamPool {
    /// The pool of `config`, with its address targets; host-name targets
    /// join at the first [`Self::resolve`].
    pub fn new(
        config: Upstream,
        ca: Option<UpstreamCa>,
        observer: Arc<Observer>,
    ) -> Result<Self, PoolError> {
        let names: Vec<NameTarget> = config
            .targets
            .iter()
            .filter_map(|t| match &t.addr {
                TargetAddr::Name { host, port } => Some(NameTarget {
                    host: host.clone(),
                    port: *port,
                    label: Arc::from(t.addr.to_string()),
                    last: ArcSwap::default(),
                }),
                TargetAddr::Ip(_) => None,
            })
            .collect();
        let members = compose(&config, &names, &Members::default());
        let discovered = Arc::new(ArcSwap::from_pointee(backend_set(&members)));
        let health = config
            .health_check
            .as_ref()
            .map(|hc| health_check(&config, ca.as_ref(), hc, observer.clone()));
        let found = || Box::new(Discovered(discovered.clone()));
        let balancer = match config.balance {
            Balance::RoundRobin => Balancer::RoundRobin(build(&config.name, found(), health)?),
            Balance::Random => Balancer::Random(build(&config.name, found(), health)?),
            Balance::ConsistentHash => Balancer::Consistent(build(&config.name, found(), health)?),
        };
        let pool = UpstreamPool {
            outlier: config.outlier_detection.map(Budget::new),
            config,
            ca,
            balancer,
            observer,
            discovered,
            members: ArcSwap::from_pointee(members),
            names,
            changing: tokio::sync::Mutex::new(()),
            retired: AtomicBool::new(false),
        };
        for m in &pool.members.load().0 {
            pool.track(m.addr);
        }
        Ok(pool)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether some targets are host names.
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// A target that passes its health checks, is not ejected and was not
    /// yet tried by this request. `key` feeds the consistent hash and is
    /// ignored by the other policies.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        // Most of the time no target is ejected, and nothing more is read.
        let members = self
            .outlier
            .as_ref()
            .is_some_and(Budget::any_ejected)
            .then(|| self.members.load());
        let accept = |b: &Backend, healthy: bool| {
            healthy
                && b.addr.as_inet().is_some_and(|a| {
                    !tried.contains(a)
                        && !members
                            .as_ref()
                            .and_then(|m| m.get(a))
                            .is_some_and(|m| m.outlier.is_ejected())
                })
        };
        let chosen = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
        };
        chosen.and_then(|b| b.addr.as_inet().copied())
    }

    /// Records what an attempt on `addr` came to, and ejects the target
    /// when it failed `consecutive_failures` times in a row and the
    /// upstream's budget allows.
    pub fn report(self: &Arc<Self>, addr: SocketAddr, attempt: Attempt) {
        let Some(budget) = &self.outlier else {
            return;
        };
        let members = self.members.load();
        let Some(member) = members.get(&addr) else {
            // Resolved away meanwhile.
            return;
        };
        if member
            .outlier
            .record(attempt, budget.config.consecutive_failures)
        {
            self.eject(budget, &members, member);
        }
    }

    fn eject(self: &Arc<Self>, budget: &Budget, members: &Members, member: &Member) {
        // The end of the ejection is a timer; without a runtime to run it
        // there is no ejection.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !budget.reserve(members.0.len()) {
            return;
        }
        // Never eject the last target that could take the traffic.
        let backends = self.backends();
        let another = members.0.iter().any(|m| {
            m.addr != member.addr && !m.outlier.is_ejected() && backends.ready(&m.backend)
        });
        let Some(length) = another
            .then(|| member.outlier.eject(&budget.config))
            .flatten()
        else {
            budget.release();
            return;
        };
        let target = member.addr.to_string();
        self.set_ejected_gauge(&target, 1);
        self.observer.security_event(
            &SecurityEvent::new(
                "upstream_ejected",
                format!(
                    "{} consecutive failures",
                    budget.config.consecutive_failures
                ),
            )
            .field("upstream", self.name())
            .field("target", target)
            .field("ejection_seconds", length.as_secs()),
        );
        let pool = Arc::downgrade(self);
        let outlier = member.outlier.clone();
        let addr = member.addr;
        runtime.spawn(async move {
            tokio::time::sleep(length).await;
            // A pool a reload dropped is gone with its counters.
            if let Some(pool) = pool.upgrade() {
                pool.restore(addr, &outlier);
            }
        });
    }

    fn restore(&self, addr: SocketAddr, outlier: &Arc<TargetOutlier>) {
        outlier.restore();
        if let Some(budget) = &self.outlier {
            budget.release();
        }
        let members = self.members.load();
        if !members
            .get(&addr)
            .is_some_and(|m| Arc::ptr_eq(&m.outlier, outlier))
        {
            return;
        }
        let target = addr.to_string();
        self.set_ejected_gauge(&target, 0);
        self.observer.security_event(
            &SecurityEvent::new("upstream_restored", "ejection ended")
                .field("upstream", self.name())
                .field("target", target),
        );
    }

    fn set_ejected_gauge(&self, target: &str, value: i64) {
        if !self.retired.load(Ordering::Acquire) {
            self.observer
                .metrics
                .target_ejected
                .with_label_values(&[self.name(), target])
                .set(value);
        }
    }

    /// Looks every host-name target up, and makes the addresses found the
    /// members: new ones join, the ones gone are drained (no new request;
    /// those under way finish). A failed lookup keeps the name's last good
    /// addresses and is a `dns_refresh_failed` event.
    pub async fn resolve(&self) {
        if self.names.is_empty() {
            return;
        }
        let _one_at_a_time = self.changing.lock().await;
        let resolver = Resolver::system();
        let found =
            futures::future::join_all(self.names.iter().map(|n| resolver.lookup(&n.host))).await;
        drop(resolver);
        self.apply_lookups(found).await;
    }

    /// Stores what each name's lookup found (in the order of `names`) and
    /// changes the members to match.
    async fn apply_lookups(&self, found: Vec<Result<Vec<std::net::IpAddr>, String>>) {
        for (name, found) in self.names.iter().zip(found) {
            let resolution = match found {
                Ok(ips) => Resolution {
                    addrs: ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, name.port))
                        .collect(),
                    error: None,
                },
                Err(why) => {
                    self.observer.security_event(
                        &SecurityEvent::new("dns_refresh_failed", why.as_str())
                            .field("upstream", self.name())
                            .field("host", name.host.as_str())
                            .field("target", &*name.label),
                    );
                    Resolution {
                        addrs: name.last.load().addrs.clone(),
                        error: Some(why),
                    }
                }
            };
            name.last.store(Arc::new(resolution));
        }
        self.change_members().await;
    }

    async fn change_members(&self) {
        let old = self.members.load_full();
        let new = compose(&self.config, &self.names, &old);
        let same =
            old.0.len() == new.0.len() && old.0.iter().zip(&new.0).all(|(a, b)| a.addr == b.addr);
        if same {
            return;
        }
        if !self.retired.load(Ordering::Acquire) {
            for m in old.0.iter().filter(|m| new.get(&m.addr).is_none()) {
                self.untrack(m.addr);
            }
            for m in new.0.iter().filter(|m| old.get(&m.addr).is_none()) {
                self.track(m.addr);
            }
        }
        self.discovered.store(Arc::new(backend_set(&new)));
        self.members.store(Arc::new(new));
        let updated = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.update().await,
            Balancer::Random(lb) => lb.update().await,
            Balancer::Consistent(lb) => lb.update().await,
        };
        if let Err(e) = updated {
            tracing::error!(upstream = self.name(), "cannot update the target list: {e}");
        }
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }

    /// Every target with its current health, for status reports.
    pub fn health(&self) -> Vec<TargetStatus> {
        let backends = self.backends();
        self.members
            .load()
            .0
            .iter()
            .map(|m| TargetStatus {
                addr: m.addr,
                healthy: backends.ready(&m.backend),
                ejected: m.outlier.is_ejected(),
                name: m.name.clone(),
            })
            .collect()
    }

    /// Every host-name target with the addresses it stands for now.
    pub fn names(&self) -> Vec<NameStatus> {
        self.names
            .iter()
            .map(|n| {
                let last = n.last.load();
                NameStatus {
                    name: n.label.clone(),
                    addrs: last.addrs.clone(),
                    error: last.error.clone(),
                }
            })
            .collect()
    }

    /// What a pool built by a reload does before it takes traffic: looks
    /// its host names up and checks its targets' health once.
    pub async fn prepare(&self) {
        self.resolve().await;
        if self.config.health_check.is_some() {
            self.backends().run_health_check(true).await;
        }
    }

    /// Starts the series of a new member.
    fn track(&self, addr: SocketAddr) {
        let labels = [self.name(), &addr.to_string()];
        let metrics = &self.observer.metrics;
        metrics.target_healthy.with_label_values(&labels).set(1);
        if self.outlier.is_some() {
            metrics.target_ejected.with_label_values(&labels).set(0);
        }
    }

    /// Removes a member's series.
    fn untrack(&self, addr: SocketAddr) {
        let labels = [self.name(), &addr.to_string()];
        let metrics = &self.observer.metrics;
        let _ = metrics.target_healthy.remove_label_values(&labels);
        let _ = metrics.target_ejected.remove_label_values(&labels);
    }

    /// Removes this pool's series from the health and ejection gauges, for
    /// a reload that drops or replaces it.
    pub fn forget_metrics(&self) {
        self.retired.store(true, Ordering::Release);
        for m in &self.members.load().0 {
            self.untrack(m.addr);
        }
    }

    /// Sets the gauges of every target from its current state.
    pub fn refresh_metrics(&self) {
        let metrics = &self.observer.metrics;
        for t in self.health() {
            let labels = [self.name(), &t.addr.to_string()];
            metrics
                .target_healthy
                .with_label_values(&labels)
                .set(i64::from(t.healthy));
            if self.outlier.is_some() {
                metrics
                    .target_ejected
                    .with_label_values(&labels)
                    .set(i64::from(t.ejected));
            }
        }
    }

    /// Runs the health checks every interval, and looks the host names up
    /// again every `dns_refresh_seconds`, until the pool is dropped (a
    /// reload that removes it) or the runtime shuts down. Holding only a
    /// weak reference is what lets a removed pool's tasks end by themselves.
    pub fn start_background(pool: &Arc<UpstreamPool>) {
        if let Some(interval) = pool.config.health_check.as_ref().map(|h| h.interval) {
            let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
            let guard = TaskGuard::new();
            tokio::spawn(async move {
                let _guard = guard;
                loop {
                    let Some(pool) = weak.upgrade() else { break };
                    pool.backends().run_health_check(true).await;
                    drop(pool);
                    tokio::time::sleep(interval).await;
                }
            });
        }
        if pool.has_names() {
            let refresh = pool.config.dns_refresh;
            let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
            let guard = TaskGuard::new();
            tokio::spawn(async move {
                let _guard = guard;
                // The first lookup ran at load.
                loop {
                    tokio::time::sleep(refresh).await;
                    let Some(pool) = weak.upgrade() else { break };
                    pool.resolve().await;
                }
            });
        }
    }
}

/// The members for the targets as configured: each address target, and
/// each host-name target's last good addresses, all with the target's
/// weight. An address that two targets name is one member, the first's.
/// Members that stay keep their outlier state.
fn compose(config: &Upstream, names: &[NameTarget], old: &Members) -> Members {
    let mut names = names.iter();
    let mut out: Vec<Member> = Vec::new();
    let mut add = |addr: SocketAddr, weight: usize, name: Option<&Arc<str>>| {
        if out.iter().any(|m| m.addr == addr) {
            return;
        }
        out.push(Member {
            addr,
            backend: Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                weight,
                ext: http::Extensions::new(),
            },
            name: name.cloned(),
            outlier: old
                .get(&addr)
                .map_or_else(Arc::default, |m| m.outlier.clone()),
        });
    };
    for t in &config.targets {
        match &t.addr {
            TargetAddr::Ip(addr) => add(*addr, t.weight, None),
            TargetAddr::Name { .. } => {
                if let Some(name) = names.next() {
                    for addr in &name.last.load().addrs {
                        add(*addr, t.weight, Some(&name.label));
                    }
                }
            }
        }
    }
    out.sort_by_key(|m| m.addr);
    Members(out)
}

fn backend_set(members: &Members) -> BTreeSet<Backend> {
    members.0.iter().map(|m| m.backend.clone()).collect()
}

fn build<S>(
    name: &str,
    discovery: Box<Discovered>,
    health: Option<Box<dyn PingoraHealthCheck + Send + Sync>>,
) -> Result<LoadBalancer<S>, PoolError>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let mut backends = Backends::new(discovery);
    if let Some(hc) = health {
        backends.set_health_check(hc);
    }
    let lb = LoadBalancer::<S>::from_backends(backends);
    // The discovery is a stored set, so the first update completes without
    // waiting.
    match lb.update().now_or_never() {
        Some(Ok(())) => Ok(lb),
        _ => Err(PoolError::Discovery(name.to_string())),
    }
}

fn health_check(
    upstream: &Upstream,
    ca: Option<&UpstreamCa>,
    hc: &HealthCheck,
    observer: Arc<Observer>,
) -> Box<dyn PingoraHealthCheck + Send + Sync> {
    let callback = Box::new(HealthEvents {
        upstream: upstream.name.clone(),
        observer,
    });
    match &hc.kind {
        HealthKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.total_connection_timeout = Some(hc.timeout);
            check.health_changed_callback = Some(callback);
            check
        }
        HealthKind::Http { path, host } => {
            let mut check = HttpHealthCheck::new(host, upstream.tls);
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.total_connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            check.peer_template.options.write_timeout = Some(hc.timeout);
            if upstream.tls && !upstream.sni.is_empty() {
                check.peer_template.sni = upstream.sni.clone();
            }
            if let Some(ca) = ca {
                check.peer_template.options.ca = Some(ca.certs.clone());
                check.peer_template.group_key = ca.reuse_group();
            }
            if let Ok(req) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) {
                let mut req = req;
                if req.insert_header(http::header::HOST, host.as_str()).is_ok() {
                    check.req = req;
                }
            }
            check.validator = Some(Box::new(expect_2xx));
            check.health_changed_callback = Some(callback);
            Box::new(check)
        }
    }
}

fn expect_2xx(resp: &ResponseHeader) -> pingora::Result<()> {
    if resp.status.is_success() {
        Ok(())
    } else {
        Error::e_explain(
            ErrorType::CustomCode("health check status", resp.status.as_u16()),
            "health check answered a non-2xx status",
        )
    }
}

/// Turns Pingora's health flips into security-log events.
struct HealthEvents {
    upstream: String,
    observer: Arc<Observer>,
}

#[async_trait]
impl HealthObserve for HealthEvents {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let (event, reason) = if healthy {
            ("upstream_healthy", "health check passed")
        } else {
            ("upstream_unhealthy", "health check failed")
        };
        let addr = target.addr.to_string();
        self.observer
            .metrics
            .target_healthy
            .with_label_values(&[self.upstream.as_str(), &addr])
            .set(i64::from(healthy));
        self.observer.security_event(
            &SecurityEvent::new(event, reason)
                .field("upstream", self.upstream.as_str())
                .field("target", addr),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::*;

    fn pool(targets: &str, extra: &str) -> Arc<UpstreamPool> {
        let text = format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
             [upstreams.app]\ntargets = [{targets}]\n{extra}\n\
             [[routes]]\nname = \"app\"\npath_prefix = \"/\"\npublic = true\nupstream = \"app\"\n"
        );
        let config = crate::config::parse_str(Path::new("gw.toml"), &text).unwrap();
        let observer = Arc::new(Observer::new(&config.log).unwrap());
        let upstream = config.upstreams.into_iter().next().unwrap();
        Arc::new(UpstreamPool::new(upstream, None, observer).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addrs(pool: &UpstreamPool) -> Vec<String> {
        pool.health().iter().map(|t| t.addr.to_string()).collect()
    }

    #[tokio::test]
    async fn names_join_drain_and_keep_their_last_good_set() {
        let p = pool("\"127.0.0.1:9000\", \"svc.internal:81\"", "");
        assert!(p.has_names());
        assert_eq!(addrs(&p), ["127.0.0.1:9000"], "a name joins once resolved");
        p.apply_lookups(vec![Ok(vec![ip("10.0.0.2"), ip("::1")])])
            .await;
        assert_eq!(addrs(&p), ["10.0.0.2:81", "127.0.0.1:9000", "[::1]:81"]);
        let kept = p
            .members
            .load()
            .get(&"10.0.0.2:81".parse().unwrap())
            .unwrap()
            .outlier
            .clone();
        assert!(p
            .health()
            .iter()
            .any(|t| t.name.as_deref() == Some("svc.internal:81")));
        // A failed lookup keeps the last good set and says why.
        p.apply_lookups(vec![Err("timed out".into())]).await;
        assert_eq!(addrs(&p), ["10.0.0.2:81", "127.0.0.1:9000", "[::1]:81"]);
        let names = p.names();
        assert_eq!(names[0].error.as_deref(), Some("timed out"));
        assert_eq!(names[0].addrs.len(), 2);
        // An address gone is drained: never selected again; one that
        // stays keeps its state.
        p.apply_lookups(vec![Ok(vec![ip("10.0.0.2")])]).await;
        assert_eq!(addrs(&p), ["10.0.0.2:81", "127.0.0.1:9000"]);
        assert!(p.names()[0].error.is_none());
        let now = p
            .members
            .load()
            .get(&"10.0.0.2:81".parse().unwrap())
            .unwrap()
            .outlier
            .clone();
        assert!(Arc::ptr_eq(&kept, &now));
        for _ in 0..20 {
            let chosen = p.select(b"", &[]).unwrap();
            assert_ne!(chosen.to_string(), "[::1]:81");
        }
    }

    #[tokio::test]
    async fn an_address_named_twice_is_one_target() {
        let p = pool("\"127.0.0.1:81\", \"localhost:81\"", "");
        p.apply_lookups(vec![Ok(vec![ip("127.0.0.1")])]).await;
        assert_eq!(addrs(&p), ["127.0.0.1:81"]);
    }

    #[tokio::test]
    async fn ejection_skips_the_target_and_keeps_one() {
        let p = pool(
            "\"127.0.0.1:9001\", \"127.0.0.1:9002\"",
            "outlier_detection = { consecutive_failures = 2, base_ejection_seconds = 60, max_ejection_percent = 100 }",
        );
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        p.report(a, Attempt::Failure);
        p.report(a, Attempt::Success);
        p.report(a, Attempt::Failure);
        assert!(
            !p.health().iter().any(|t| t.ejected),
            "a success resets the count"
        );
        p.report(a, Attempt::Failure);
        assert!(p.health().iter().any(|t| t.addr == a && t.ejected));
        for _ in 0..10 {
            assert_eq!(p.select(b"", &[]), Some(b));
        }
        assert_eq!(
            p.select(b"", &[b]),
            None,
            "a retry never goes to an ejected target"
        );
        // Even at 100 % the last target stays.
        for _ in 0..5 {
            p.report(b, Attempt::Failure);
        }
        assert!(!p.health().iter().any(|t| t.addr == b && t.ejected));
    }
}
