//! An HTTP/2 upstream (the `h2` crate's server), plaintext (h2c) or behind
//! TLS with ALPN h2, answering every request like a gRPC server: one
//! message `\0\0\0\0\x02hi`, then the trailers `grpc-status: 0` and
//! `x-trailer: kept` (a path ending `/Slow` waits 3 s first). It records
//! the head of every request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, Version};
use pingora::tls::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the upstream sees of a request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub version: Version,
    pub path: String,
    pub headers: HeaderMap,
}

/// The message every answer carries.
pub const MESSAGE: &[u8] = b"\0\0\0\0\x02hi";

pub struct H2Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl H2Upstream {
    /// Plaintext HTTP/2 by prior knowledge.
    pub fn start() -> Self {
        Self::serve(None)
    }

    /// HTTP/2 over TLS, with `acceptor`'s certificate and ALPN.
    pub fn start_tls(acceptor: SslAcceptor) -> Self {
        Self::serve(Some(acceptor))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn serve(tls: Option<SslAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            super::h2c::runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let record = record.clone();
                    let Some(acceptor) = &tls else {
                        tokio::spawn(answer(tcp, record));
                        continue;
                    };
                    let ssl = Ssl::new(acceptor.context()).unwrap();
                    tokio::spawn(async move {
                        let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                        if std::pin::Pin::new(&mut tls).accept().await.is_ok() {
                            answer(tls, record).await;
                        }
                    });
                }
            })
        });
        H2Upstream { addr, seen }
    }
}

async fn answer<S>(io: S, record: Arc<Mutex<Vec<Seen>>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        record.lock().unwrap().push(Seen {
            version: req.version(),
            path: req.uri().path().to_string(),
            headers: req.headers().clone(),
        });
        if req.uri().path().ends_with("/Slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let resp = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok(mut send) = respond.send_response(resp, false) else {
            continue;
        };
        let _ = send.send_data(Bytes::from_static(MESSAGE), false);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("x-trailer", "kept".parse().unwrap());
        let _ = send.send_trailers(trailers);
    }
}
