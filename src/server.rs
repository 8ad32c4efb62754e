//! Process wiring: the Pingora server, its listeners, the admin listener and
//! the background work (health checks, signals).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::{background_service, Opt};
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::AdminApp;
use crate::config::Config;
use crate::front::admin::AdminFront;
use crate::front::Front;
use crate::observe::Observer;
use crate::proxy::Gateway;
use crate::reload::Control;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Compile(#[from] crate::config::ConfigErrors),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// `portcullis check`: the configuration read and compiled as `run` would,
/// without listening or starting anything; every error at once.
pub fn check(path: &std::path::Path) -> Result<(), crate::config::ConfigErrors> {
    let config = crate::config::load_for_check(path).map_err(|(mut errors, pending)| {
        errors.0.extend(crate::runtime::pending_errors(&pending));
        errors
    })?;
    let observer = Observer::new(&config.log).map_err(|e| {
        crate::config::ConfigErrors(vec![crate::config::ConfigError::in_file(
            path,
            format!("metrics: {e}"),
        )])
    })?;
    crate::runtime::Runtime::compile(config, 0, &Arc::new(observer), None).map(drop)
}

pub use crate::admin::client::{revoke, RevokeAction, RevokeError, RevokeRequest, Target};

/// Flags of `portcullis run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub upgrade: bool,
    pub daemon: bool,
}

/// Builds the Pingora server for `config` and runs it until shutdown.
pub fn run(config: Config, flags: RunFlags) -> Result<(), StartError> {
    let observer = Arc::new(Observer::new(&config.log)?);
    let server_conf = server_conf(&config, flags);
    let listeners = config.listeners.clone();
    let limits = config.limits;
    let admin = config.admin.clone();
    let control = Arc::new(Control::new(config, observer.clone())?);
    crate::upstream::dns::resolve_at_start(&control.runtime.load().upstreams);

    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let pid_file = server_conf.pid_file.clone();
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    if !flags.daemon {
        // Pingora writes the pid file only when it daemonizes; operators
        // and scripts/upgrade.sh need it either way.
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!("cannot write pid file {pid_file}: {e}");
        }
    }

    let gateway = Gateway {
        runtime: control.runtime.clone(),
        observer: observer.clone(),
        draining: control.draining.clone(),
    };
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 connections go to Pingora whole: its own idle timeout and
    // header-list cap carry the `[limits]` of the start configuration.
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.idle_timeout);
    // Only connections the front found opening with the HTTP/2 preface
    // reach Pingora in plaintext (`[[listeners]] http2`).
    options.h2c = true;
    proxy.server_options = Some(options);
    // HTTP/2 counts 32 bytes more per field than the head's own size; the
    // cap leaves room for that so the canonical step, not h2, refuses an
    // oversized list, with the contract's 431.
    let mut h2 = default_h2_options();
    h2.max_header_list_size(
        u32::try_from(2 * (limits.max_header_bytes + limits.max_uri_bytes) + 32 * 512)
            .unwrap_or(u32::MAX),
    );
    proxy.h2_options = Some(h2);
    // Every listener is plain TCP to Pingora: the front does TLS itself,
    // with its own handshake deadline.
    let mut service = Service::new(
        "portcullis".to_string(),
        Front::new(proxy, control.runtime.clone(), observer.clone()),
    );
    for l in &listeners {
        service.add_tcp(&l.listen);
    }
    server.add_service(service);
    if let Some(admin) = admin {
        let mut service = Service::new(
            "admin".to_string(),
            AdminFront {
                app: Arc::new(AdminApp {
                    control: control.clone(),
                }),
                runtime: control.runtime.clone(),
                observer: control.observer.clone(),
            },
        );
        service.add_tcp(&admin.listen);
        server.add_service(service);
    }
    server.add_service(background_service("control", Background { control }));
    server.run(pingora::server::RunArgs::default());
    // Every service has stopped: what is left to log is written, with the
    // security log's shutdown checkpoint.
    observer.close();
    Ok(())
}

fn server_conf(config: &Config, flags: RunFlags) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.display().to_string(),
        upgrade_sock: s.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        daemon: flags.daemon,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        work_stealing: s.work_stealing,
        ..ServerConf::default()
    }
}

/// Health checks and signals, started inside Pingora's service runtime
/// (after any daemonizing fork).
struct Background {
    control: Arc<Control>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let runtime = self.control.runtime.load_full();
        for pool in &runtime.upstreams {
            crate::upstream::UpstreamPool::start_background(pool);
        }
        for provider in &runtime.providers {
            provider.clone().start_background();
        }
        runtime.revocations.start_background();
        drop(runtime);
        // Installed before readiness is reported: until a handler exists,
        // SIGHUP's default action would kill the process.
        let (mut hup, mut quit, mut term) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(h), Ok(q), Ok(t)) => (h, q, t),
            _ => {
                tracing::error!("cannot install signal handlers; reload by signal is unavailable");
                self.control.ready.store(true, Ordering::Release);
                let _ = shutdown.changed().await;
                return;
            }
        };
        self.control.ready.store(true, Ordering::Release);
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    match self.control.reload().await {
                        Ok(done) => tracing::info!(generation = done.generation, "configuration reloaded"),
                        Err(e) => tracing::error!("configuration reload failed, keeping the running one:\n{e}"),
                    }
                }
                _ = quit.recv() => self.control.draining.store(true, Ordering::Release),
                _ = term.recv() => self.control.draining.store(true, Ordering::Release),
                _ = shutdown.changed() => break,
            }
        }
    }
}
