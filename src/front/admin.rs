//! The admin listener's connections: the same HTTP/1 head reader as the
//! proxy's, so a malformed request gets the contract's JSON (and its
//! target, query included, never lands in Pingora's error log).

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::admin::AdminApp;
use crate::core::net::canonical_ip;
use crate::observe::Observer;
use crate::runtime::Runtime;

pub(crate) struct AdminFront {
    pub app: Arc<AdminApp>,
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub observer: Arc<Observer>,
}

#[async_trait]
impl ServerApp for AdminFront {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .map(|a| canonical_ip(a.ip()));
        super::http1::serve(
            &self.app,
            stream,
            peer,
            shutdown,
            &self.runtime,
            &self.observer,
            false,
        )
        .await;
        None
    }
}
