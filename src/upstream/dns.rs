//! Host-name targets: resolved off the request path with the system's
//! resolver configuration (`/etc/hosts`, `/etc/resolv.conf`).
//!
//! A resolver is built for each round of lookups and dropped after it: it
//! then always reads the current files, and never outlives the runtime its
//! sockets belong to (the first round runs before Pingora's runtimes exist).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use super::pool::UpstreamPool;

/// How long one name's lookup may take, whatever `/etc/resolv.conf` says:
/// bounds a start or a reload on a name server that does not answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The most addresses one name contributes: each is a target with its own
/// state and metric series, and a selection walks at most a bounded ring.
const MAX_ADDRESSES: usize = 64;

/// The resolver of one round of lookups.
pub(crate) struct Resolver(TokioResolver);

impl Resolver {
    /// The system's configuration; without a readable `/etc/resolv.conf`,
    /// `/etc/hosts` alone (never a public name server the operator did not
    /// choose).
    pub(crate) fn system() -> Resolver {
        let mut builder = TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!("cannot read the system resolver configuration ({e}); host-name targets are looked up in /etc/hosts only");
            TokioResolver::builder_with_config(
                ResolverConfig::new(),
                TokioConnectionProvider::default(),
            )
        });
        let options = builder.options_mut();
        // Every A and AAAA address is a target.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Resolver(builder.build())
    }

    /// Every address of `host`, or why there is none. A lookup that finds
    /// no address is a failure too: the last good set is kept.
    pub(crate) async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.0.lookup_ip(host)).await {
            Err(_) => Err(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(why(&e)),
            Ok(Ok(found)) => {
                let mut addrs: Vec<IpAddr> = found.iter().collect();
                addrs.sort_unstable();
                addrs.dedup();
                addrs.truncate(MAX_ADDRESSES);
                if addrs.is_empty() {
                    Err("no A or AAAA record".to_string())
                } else {
                    Ok(addrs)
                }
            }
        }
    }
}

/// A lookup's failure in a few words, without the resolver's internal
/// query dump.
fn why(e: &hickory_resolver::ResolveError) -> String {
    if e.is_nx_domain() {
        "no such name (NXDOMAIN)".to_string()
    } else if e.is_no_records_found() {
        "no A or AAAA record".to_string()
    } else if e.proto().is_some_and(|p| p.is_no_connections()) {
        "no name server to ask".to_string()
    } else {
        e.to_string()
    }
}

/// Resolves the host-name targets of every pool once, before the
/// listeners open, so the first requests find them. Runs on a runtime of
/// its own that is gone before Pingora starts its own (and forks, when it
/// daemonizes). A name that does not resolve leaves its pool without its
/// addresses; the pool's refresh task tries again.
pub(crate) fn resolve_at_start(pools: &[Arc<UpstreamPool>]) {
    if !pools.iter().any(|p| p.has_names()) {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(
                "cannot resolve host-name targets at start ({e}); their refresh tasks will"
            );
            return;
        }
    };
    runtime.block_on(futures::future::join_all(pools.iter().map(|p| p.resolve())));
}
