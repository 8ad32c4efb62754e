//! Reload: build a new `Runtime` beside the running one, carry over what did
//! not change, swap it in atomically. Requests in flight keep the snapshot
//! they started with.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Admin, Config, ConfigError, ConfigErrors, Listener, Log, Server};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;
use crate::runtime::Runtime;
use crate::upstream::pool::UpstreamPool;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("the reload task failed")]
    Task,
}

impl ReloadError {
    /// Every reason, one per line, as `check` prints them.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            ReloadError::Config(errors) => errors.0.iter().map(ConfigError::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub(crate) struct Reloaded {
    pub generation: u64,
    pub config_sha256: String,
    /// Sections that changed but only take effect through an upgrade
    /// (`SIGQUIT` + `run --upgrade`): sockets, threads and log files are
    /// fixed for the life of a process.
    pub needs_upgrade: Vec<&'static str>,
}

/// The parts of the configuration a running process cannot change.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    server: Server,
    log: Log,
    /// Name, address and whether it speaks TLS; certificates reload in
    /// place.
    listeners: Vec<(String, String, bool)>,
    admin_listen: Option<String>,
}

impl Fixed {
    fn of(config: &Config) -> Self {
        Fixed {
            server: config.server.clone(),
            log: config.log.clone(),
            listeners: config
                .listeners
                .iter()
                .map(|l: &Listener| (l.name.clone(), l.listen.clone(), l.tls.is_some()))
                .collect(),
            admin_listen: config.admin.as_ref().map(|a: &Admin| a.listen.clone()),
        }
    }

    fn changed_sections(&self, new: &Fixed) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.listeners != new.listeners {
            out.push("listeners");
        }
        if self.admin_listen != new.admin_listen {
            out.push("admin.listen");
        }
        if self.server != new.server {
            out.push("server");
        }
        if self.log != new.log {
            out.push("log");
        }
        out
    }
}

/// The process's control plane: the live runtime and how to replace it.
pub(crate) struct Control {
    pub config_path: PathBuf,
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub observer: Arc<Observer>,
    /// Set once the process serves and its signal handlers are installed.
    pub ready: AtomicBool,
    /// Set on SIGQUIT: responses then close their connections, so clients
    /// reconnect to the process that took the sockets over.
    pub draining: Arc<AtomicBool>,
    fixed: Fixed,
    reloading: tokio::sync::Mutex<()>,
    /// The admin listener's address (it changes only with a restart).
    admin_addr: Option<std::net::SocketAddr>,
    /// When the process started, for the dashboard's uptime.
    pub started: std::time::Instant,
    /// The outcome of the last reload, for the dashboard; none before one.
    pub last_reload: arc_swap::ArcSwapOption<LastReload>,
}

/// What the last reload did, without its error messages (they may quote
/// the configuration).
#[derive(Debug, Clone)]
pub(crate) struct LastReload {
    pub at: std::time::SystemTime,
    /// The new generation, or `None` when the reload was refused.
    pub generation: Option<u64>,
    pub errors: usize,
}

impl Control {
    pub(crate) fn new(config: Config, observer: Arc<Observer>) -> Result<Self, ConfigErrors> {
        let fixed = Fixed::of(&config);
        let config_path = config.path.clone();
        let admin_addr = config.admin.as_ref().map(|a| a.addr);
        observer.configure_alerts(config.alerts.as_ref());
        let runtime = Runtime::compile(config, 1, &observer, None)?;
        Ok(Control {
            config_path,
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            observer,
            ready: AtomicBool::new(false),
            draining: Arc::new(AtomicBool::new(false)),
            fixed,
            reloading: tokio::sync::Mutex::new(()),
            admin_addr,
            started: std::time::Instant::now(),
            last_reload: arc_swap::ArcSwapOption::empty(),
        })
    }

    pub(crate) fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Re-reads the configuration file and every file it names, and swaps
    /// the new runtime in. On any error nothing changes. Reloads run one at
    /// a time.
    pub(crate) async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.build_and_swap().await;
        self.last_reload.store(Some(Arc::new(LastReload {
            at: std::time::SystemTime::now(),
            generation: result.as_ref().ok().map(|done| done.generation),
            errors: result.as_ref().err().map_or(0, |e| e.lines().len()),
        })));
        let metrics = &self.observer.metrics;
        match &result {
            Ok(done) => {
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                let mut event = SecurityEvent::new("config_reloaded", "configuration reloaded")
                    .field("generation", done.generation)
                    .field("config_sha256", done.config_sha256.as_str());
                if !done.needs_upgrade.is_empty() {
                    event = event.field("needs_upgrade", done.needs_upgrade.clone());
                    tracing::warn!(
                        sections = ?done.needs_upgrade,
                        "configuration changes that need an upgrade (SIGQUIT + run --upgrade) to take effect"
                    );
                }
                self.observer.security_event(&event);
            }
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                let reason = e.lines().join("; ");
                self.observer
                    .security_event(&SecurityEvent::new("config_reload_failed", reason));
            }
        }
        result
    }

    async fn build_and_swap(&self) -> Result<Reloaded, ReloadError> {
        let path = self.config_path.clone();
        let config = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|_| ReloadError::Task)??;
        let needs_upgrade = self.fixed.changed_sections(&Fixed::of(&config));
        let alerts = config.alerts.clone();
        let old = self.runtime.load_full();
        let generation = old.generation + 1;
        let new = Arc::new(Runtime::compile(
            config,
            generation,
            &self.observer,
            Some(&old),
        )?);
        let fresh: Vec<Arc<UpstreamPool>> = new
            .upstreams
            .iter()
            .filter(|p| !old.owns(p))
            .cloned()
            .collect();
        let fresh_providers: Vec<_> = new
            .providers
            .iter()
            .filter(|p| !old.owns_provider(p))
            .cloned()
            .collect();
        // New pools know their targets' addresses and health, and new providers have
        // their keys, before they take traffic.
        for pool in &fresh {
            pool.prepare().await;
        }
        for provider in &fresh_providers {
            provider.prepare().await;
        }
        self.runtime.store(new.clone());
        new.take_cache_over(&old);
        let routes: Vec<&str> = new.routes.iter().map(|r| r.name.as_str()).collect();
        self.observer.charts.retain(&routes);
        self.observer.configure_alerts(alerts.as_ref());
        for pool in &fresh {
            UpstreamPool::start_background(pool);
        }
        for provider in fresh_providers {
            provider.start_background();
        }
        // Starts only a list the reload made anew.
        new.revocations.start_background();
        for pool in old.upstreams.iter().filter(|p| !new.owns(p)) {
            pool.forget_metrics();
        }
        for pool in &fresh {
            pool.refresh_metrics();
        }
        Ok(Reloaded {
            generation,
            config_sha256: new.config_sha256.clone(),
            needs_upgrade,
        })
    }
}
