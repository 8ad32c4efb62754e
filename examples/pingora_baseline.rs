//! The smallest possible Pingora reverse proxy: one worker thread, one
//! fixed upstream, no logic. `scripts/bench.sh` runs it beside the gateway
//! to separate what the Pingora framework costs from what Portcullis adds.
//!
//! `cargo run --release --example pingora_baseline -- LISTEN UPSTREAM`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Baseline {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Baseline {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2).and_then(|u| u.parse().ok()))
    else {
        eprintln!("usage: pingora_baseline LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let pid = std::process::id();
    let conf = ServerConf {
        threads: 1,
        pid_file: format!("/tmp/pingora_baseline.{pid}.pid"),
        upgrade_sock: format!("/tmp/pingora_baseline.{pid}.sock"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Baseline { upstream });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
