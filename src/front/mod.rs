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

pub mod caps;
pub mod head;
pub mod stream;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::observe::access::AccessRecord;
use crate::observe::metrics::{status_label, UNMATCHED};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;
use crate::proxy::reject::Reject;
use crate::proxy::request::canonical_ip;
use crate::proxy::Gateway;
use crate::runtime::Runtime;
use caps::Connections;
use head::{HeadError, HeadLimits};
use stream::Replay;

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
        self.observer
            .metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
    }

    /// The TLS handshake of a listener with TLS, within its deadline.
    async fn handshake(
        &self,
        stream: Stream,
        runtime: &Runtime,
        listener: usize,
    ) -> Option<Stream> {
        let Some(tls) = runtime.tls.get(listener).cloned().flatten() else {
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

    /// HTTP/1.1 requests on one connection, one after the other, each head
    /// read by [`head::read`] first.
    async fn serve_http1(&self, stream: Stream, peer: Option<IpAddr>, shutdown: &ShutdownWatch) {
        let mut conn = Replay::new(stream);
        let mut watch = shutdown.clone();
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            let limits = self.runtime.load().limits;
            match head::read(&mut conn, HeadLimits::new(&limits), &mut watch).await {
                Ok(()) => {}
                Err(HeadError::Gone) => return,
                Err(HeadError::Timeout) => {
                    self.refused("header_timeout");
                    return;
                }
                Err(HeadError::Refused(reject)) => {
                    self.refuse(&mut conn, &reject, peer).await;
                    return;
                }
            }
            let mut session = ServerSession::new_http1(Box::new(conn));
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => session.set_keepalive(Some(limits.idle_timeout.as_secs().max(1))),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            let (stream, next) = reused.consume();
            settings = next;
            let Ok(replay) = stream.into_any().downcast::<Replay>() else {
                return;
            };
            conn = *replay;
        }
    }

    /// Answers a head that never reaches Pingora, records it like any
    /// refusal, and closes.
    async fn refuse(&self, conn: &mut Replay, reject: &Reject, peer: Option<IpAddr>) {
        let request_id = head::request_id(conn.buffered());
        let bytes = reject.to_http1(&request_id);
        let stream = conn.inner_mut();
        if stream.write_all(&bytes).await.is_ok() {
            let _ = stream.flush().await;
        }
        let _ = stream.shutdown().await;
        let status = reject.status();
        let metrics = &self.observer.metrics;
        metrics
            .requests
            .with_label_values(&[UNMATCHED, "OTHER", status_label(status)])
            .inc();
        let mut event = SecurityEvent::new("request_rejected", reject.message.as_ref());
        event.request_id = Some(&request_id);
        event.client_ip = peer;
        self.observer.security_event(&event);
        if let Some(access) = &self.observer.access {
            let record = AccessRecord {
                ts: crate::observe::now_rfc3339(),
                request_id: &request_id,
                client_ip: peer.map(|ip| ip.to_string()).unwrap_or_default(),
                method: "-",
                path: "-",
                route: None,
                upstream: None,
                target: None,
                status,
                bytes_sent: bytes.len(),
                duration_ms: 0.0,
                upstream_ms: None,
                auth_method: None,
                subject: None,
            };
            access.write_line(record.to_line());
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
        let stream = match listener {
            Some(l) => self.handshake(stream, &runtime, l).await?,
            None => stream,
        };
        drop(runtime);
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        self.serve_http1(stream, peer, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
