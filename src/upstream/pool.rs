//! One upstream: its targets behind a Pingora `LoadBalancer`, with active
//! health checks that eject dead targets.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use futures::FutureExt;
use pingora::http::ResponseHeader;
use pingora::lb::health_check::{
    HealthCheck as PingoraHealthCheck, HttpHealthCheck, TcpHealthCheck,
};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use pingora::{Error, ErrorType};
use pingora_load_balancing::health_check::HealthObserve;

use crate::config::{Balance, HealthCheck, HealthKind, Upstream};
use crate::core::tasks::TaskGuard;
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;
use crate::tls::UpstreamCa;

/// How far a selection may walk the ring before giving up; bounds the work
/// a request can cause when most targets are down.
const MAX_SELECT_STEPS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("upstream `{0}`: invalid target {1}")]
    Target(String, SocketAddr),
    #[error("upstream `{0}`: cannot build its target list")]
    Discovery(String),
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

pub struct UpstreamPool {
    pub config: Upstream,
    /// The CAs of `ca_file`; the system's when `None`.
    pub ca: Option<UpstreamCa>,
    balancer: Balancer,
}

impl UpstreamPool {
    pub fn new(
        config: Upstream,
        ca: Option<UpstreamCa>,
        observer: Arc<Observer>,
    ) -> Result<Self, PoolError> {
        let mut set = BTreeSet::new();
        for t in &config.targets {
            let b = Backend::new_with_weight(&t.addr.to_string(), t.weight)
                .map_err(|_| PoolError::Target(config.name.clone(), t.addr))?;
            set.insert(b);
        }
        for t in &config.targets {
            observer
                .metrics
                .target_healthy
                .with_label_values(&[config.name.as_str(), &t.addr.to_string()])
                .set(1);
        }
        let health = config
            .health_check
            .as_ref()
            .map(|hc| health_check(&config, ca.as_ref(), hc, observer));
        let balancer = match config.balance {
            Balance::RoundRobin => Balancer::RoundRobin(build(&config.name, &set, health)?),
            Balance::Random => Balancer::Random(build(&config.name, &set, health)?),
            Balance::ConsistentHash => Balancer::Consistent(build(&config.name, &set, health)?),
        };
        Ok(UpstreamPool {
            config,
            ca,
            balancer,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A healthy target not yet tried by this request. `key` feeds the
    /// consistent hash and is ignored by the other policies.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !tried.contains(a))
        };
        let chosen = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_STEPS, accept),
        };
        chosen.and_then(|b| b.addr.as_inet().copied())
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }

    /// Every target with its current health, for status reports.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, backends.ready(b))))
            .collect()
    }

    /// One health-check pass now, so a pool built by a reload knows its
    /// targets' health before it takes traffic.
    pub async fn check_now(&self) {
        if self.config.health_check.is_some() {
            self.backends().run_health_check(true).await;
        }
    }

    /// Removes this pool's series from the health gauge, for a reload that
    /// drops or replaces it.
    pub fn forget_metrics(&self, observer: &Observer) {
        for t in &self.config.targets {
            let _ = observer
                .metrics
                .target_healthy
                .remove_label_values(&[self.config.name.as_str(), &t.addr.to_string()]);
        }
    }

    /// Sets the health gauge of every target from the current health.
    pub fn refresh_metrics(&self, observer: &Observer) {
        for (addr, healthy) in self.health() {
            observer
                .metrics
                .target_healthy
                .with_label_values(&[self.config.name.as_str(), &addr.to_string()])
                .set(i64::from(healthy));
        }
    }

    /// Runs the health checks every interval until the pool is dropped (a
    /// reload that removes it) or the runtime shuts down. Holding only a
    /// weak reference is what lets a removed pool's task end by itself.
    pub fn spawn_health_checks(pool: &Arc<UpstreamPool>) {
        let Some(interval) = pool.config.health_check.as_ref().map(|h| h.interval) else {
            return;
        };
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
}

fn build<S>(
    name: &str,
    set: &BTreeSet<Backend>,
    health: Option<Box<dyn PingoraHealthCheck + Send + Sync>>,
) -> Result<LoadBalancer<S>, PoolError>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let mut backends = Backends::new(discovery::Static::new(set.clone()));
    if let Some(hc) = health {
        backends.set_health_check(hc);
    }
    let lb = LoadBalancer::<S>::from_backends(backends);
    // Static discovery resolves nothing, so the first update completes
    // without waiting.
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
