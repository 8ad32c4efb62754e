//! HTTP/1 requests on one connection, one after the other: each head is
//! read and checked by [`head::read`] before the app's Pingora session
//! parses it. Pingora's own `ServerApp` runs this loop for any
//! `HttpServerApp`; the gateway's proxy and its admin listener both run it
//! here instead.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use super::head::{self, Head, HeadError, HeadLimits, HeadTimer};
use super::stream::{Framing, Replay};
use crate::observe::access::AccessRecord;
use crate::observe::metrics::{status_label, UNMATCHED};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;
use crate::proxy::reject::Reject;
use crate::runtime::Runtime;

/// Serves the connection until it closes or is not to be kept. With
/// `h2c`, a connection that opens with the HTTP/2 preface goes to the
/// app's HTTP/2 server instead.
pub(crate) async fn serve<A>(
    app: &Arc<A>,
    stream: Stream,
    peer: Option<IpAddr>,
    shutdown: &ShutdownWatch,
    runtime: &ArcSwap<Runtime>,
    observer: &Observer,
    h2c: bool,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let mut conn = Replay::new(stream);
    let mut watch = shutdown.clone();
    let mut settings: Option<HttpPersistentSettings> = None;
    let mut timer = HeadTimer::new();
    let mut first = true;
    loop {
        let limits = HeadLimits::new(&runtime.load().limits);
        let read = head::read(&mut conn, limits, &mut timer, &mut watch, h2c && first).await;
        first = false;
        match read {
            Ok(Head::Http1) => {}
            Ok(Head::H2Preface) => {
                drop(timer);
                conn.set_head(0, Framing::Unbounded);
                ServerApp::process_new(app, Box::new(conn), shutdown).await;
                return;
            }
            Err(HeadError::Gone) => return,
            Err(HeadError::Timeout) => {
                count_refused(observer, "header_timeout");
                return;
            }
            Err(HeadError::Refused(reject)) => {
                refuse(&mut conn, &reject, peer, observer).await;
                return;
            }
        }
        let mut session = ServerSession::new_http1(Box::new(conn));
        match settings.take() {
            Some(s) => s.apply_to_session(&mut session),
            // Keep-alive without Pingora's own wait: the next head is read
            // here, under `idle_timeout_ms`.
            None => session.set_keepalive(Some(0)),
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let Some(reused) = app.process_new_http(session, shutdown).await else {
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

pub(crate) fn count_refused(observer: &Observer, reason: &str) {
    observer
        .metrics
        .connections_refused
        .with_label_values(&[reason])
        .inc();
}

/// Answers a head that never reaches Pingora, records it like any
/// refusal, and closes.
async fn refuse(conn: &mut Replay, reject: &Reject, peer: Option<IpAddr>, observer: &Observer) {
    let request_id = head::request_id(conn.buffered());
    let bytes = reject.to_http1(&request_id);
    let stream = conn.inner_mut();
    if stream.write_all(&bytes).await.is_ok() {
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
    let status = reject.status();
    observer
        .metrics
        .requests
        .with_label_values(&[UNMATCHED, "OTHER", status_label(status)])
        .inc();
    let mut event = SecurityEvent::new("request_rejected", reject.message.as_ref());
    event.request_id = Some(&request_id);
    event.client_ip = peer;
    observer.security_event(&event);
    if let Some(access) = &observer.access {
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
            bytes_received: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            auth_method: None,
            subject: None,
            trace_id: None,
        };
        access.write_line(record.to_line());
    }
}
