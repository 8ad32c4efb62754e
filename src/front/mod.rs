//! The connection layer, in front of Pingora's HTTP handling: connection
//! caps, the TLS handshake with its deadline, and for HTTP/1 the request
//! head, read by the gateway under a whole-head deadline and a byte cap
//! before Pingora parses it.
//!
//! Pingora 0.9 buffers up to 1 MiB of head per connection and has only a
//! per-read timeout, so both limits have to be enforced before it sees the
//! bytes. The HTTP/1 keep-alive loop runs here (it would otherwise run in
//! Pingora's `ServerApp` for `HttpServerApp`), so each request's head is
//! read the same way; HTTP/2 connections are handed to Pingora whole.

pub(crate) mod admin;
pub(crate) mod caps;
pub mod head;
pub(crate) mod http1;
pub(crate) mod stream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::core::ids::ListenerId;
use crate::core::net::canonical_ip;
use crate::observe::Observer;
use crate::proxy::Gateway;
use crate::runtime::Runtime;
use caps::Connections;

/// The gateway's `ServerApp`: every client connection starts here.
pub struct Front {
    proxy: Arc<HttpProxy<Gateway>>,
    runtime: Arc<ArcSwap<Runtime>>,
    observer: Arc<Observer>,
    connections: Connections,
}

impl Front {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        runtime: Arc<ArcSwap<Runtime>>,
        observer: Arc<Observer>,
    ) -> Self {
        Front {
            proxy: Arc::new(proxy),
            connections: Connections::new(observer.metrics.connections.clone()),
            runtime,
            observer,
        }
    }

    fn refused(&self, reason: &str) {
        http1::count_refused(&self.observer, reason);
    }

    /// The TLS handshake of a listener with TLS, within its deadline.
    async fn handshake(
        &self,
        stream: Stream,
        runtime: &Runtime,
        listener: ListenerId,
    ) -> Option<Stream> {
        let Some(tls) = runtime.tls.get(listener.index()).cloned().flatten() else {
            return Some(stream);
        };
        // Pingora accepted the socket as plain TCP, so it is its L4 stream.
        let l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        let deadline = runtime.limits.tls_handshake_timeout;
        match tokio::time::timeout(
            deadline,
            handshake_with_callback(&tls.acceptor, *l4, tls.as_ref()),
        )
        .await
        {
            Ok(Ok(tls_stream)) => Some(Box::new(tls_stream)),
            Ok(Err(e)) => {
                tracing::debug!(listener = %tls.name, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                self.refused("tls_handshake_timeout");
                None
            }
        }
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let digest = stream.get_socket_digest();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .map(|a| canonical_ip(a.ip()));
        let local = digest
            .as_ref()
            .and_then(|d| d.local_addr())
            .and_then(|a| a.as_inet())
            .copied();
        let runtime = self.runtime.load_full();
        // Dropping the stream closes the connection before anything else
        // is spent on it.
        let _slot = match self.connections.admit(peer, &runtime.limits) {
            Ok(slot) => slot,
            Err(reason) => {
                self.refused(reason);
                return None;
            }
        };
        let listener = local.and_then(|l| runtime.listener_of(l));
        let h2c = listener.is_some_and(|l| runtime.h2c(l));
        let stream = match listener {
            Some(l) => self.handshake(stream, &runtime, l).await?,
            None => stream,
        };
        drop(runtime);
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        http1::serve(
            &self.proxy,
            stream,
            peer,
            shutdown,
            &self.runtime,
            &self.observer,
            h2c,
        )
        .await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
