//! Process wiring: the Pingora server, its listeners and background work.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{background_service, http_proxy_service, Opt};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::BackgroundService;

use crate::config::{Config, Listener};
use crate::observe::Observer;
use crate::proxy::Gateway;
use crate::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pool(#[from] crate::upstream::pool::PoolError),
    #[error("listener `{0}`: {1}")]
    Tls(String, String),
}

/// Flags of `portcullis run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub upgrade: bool,
    pub daemon: bool,
}

/// Builds the Pingora server for `config` and runs it until shutdown.
pub fn run(config: Config, flags: RunFlags) -> Result<(), StartError> {
    let observer = Arc::new(Observer::new(&config.log));
    let server_conf = server_conf(&config, flags);
    let listeners = config.listeners.clone();
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::compile(
        config, 1, &observer,
    )?));

    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let gateway = Gateway {
        runtime: runtime.clone(),
        observer: observer.clone(),
    };
    let mut proxy = http_proxy_service(&server.configuration, gateway);
    for l in &listeners {
        add_listener(&mut proxy, l)?;
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "runtime",
        Background {
            runtime: runtime.clone(),
        },
    ));
    server.run_forever()
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
        ..ServerConf::default()
    }
}

fn add_listener<S>(
    service: &mut pingora::services::listening::Service<S>,
    l: &Listener,
) -> Result<(), StartError> {
    match &l.tls {
        None => service.add_tcp(&l.listen),
        Some(tls) => {
            let cert = tls.cert.display().to_string();
            let key = tls.key.display().to_string();
            let mut settings = TlsSettings::intermediate(&cert, &key)
                .map_err(|e| StartError::Tls(l.name.clone(), e.to_string()))?;
            settings.enable_h2();
            service.add_tls_with_settings(&l.listen, None, settings);
        }
    }
    Ok(())
}

/// Starts the runtime's background work (health checks) inside Pingora's
/// service runtime, after any daemonizing fork.
struct Background {
    runtime: Arc<ArcSwap<Runtime>>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.runtime.load().start_background();
        let _ = shutdown.changed().await;
    }
}
