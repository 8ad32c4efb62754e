//! The client connection as Pingora sees it: the bytes the gateway read
//! ahead (a request head, and whatever came with it) are handed back
//! first, then the socket.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::tls::ssl::SslRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// How much of what follows a head is the request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (0 without one).
    Length(u64),
    /// Chunked, or an upgrade: everything that comes is the request's.
    Unbounded,
}

/// The most bytes of a next request held while the current one runs.
const MAX_HELD: usize = 64 * 1024;
/// One read's worth of buffer.
const READ_CHUNK: usize = 4096;

/// A stream with read-ahead bytes. Pingora gets the request head, then
/// exactly the request's body; bytes beyond it (a pipelined next request)
/// are held back for the next head, since Pingora would take them for an
/// over-read body or for data sent after the end of the body, and end the
/// connection or fail the request.
#[derive(Debug)]
pub struct Replay {
    inner: Stream,
    buf: BytesMut,
    /// How many of `buf`'s bytes form the head not yet handed out.
    head: usize,
    /// What is left of the current request's body.
    body: Framing,
}

impl Replay {
    pub fn new(inner: Stream) -> Self {
        Replay {
            inner,
            buf: BytesMut::new(),
            head: 0,
            body: Framing::Unbounded,
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    #[cfg(test)]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the first `len` buffered bytes as the head of a request with
    /// this body.
    pub fn set_head(&mut self, len: usize, body: Framing) {
        self.head = len.min(self.buf.len());
        self.body = body;
    }

    /// Hands out up to `limit` buffered bytes.
    fn serve(&mut self, out: &mut ReadBuf<'_>, limit: usize) -> usize {
        let n = limit.min(self.buf.len()).min(out.remaining());
        out.put_slice(self.buf.get(..n).unwrap_or_default());
        self.buf.advance(n);
        n
    }

    /// Reads the socket into the buffer while the current request has no
    /// body left: Pingora sees only the end of the stream or an error.
    fn poll_hold(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.buf.len() < MAX_HELD {
            let room = MAX_HELD - self.buf.len();
            self.buf.reserve(room.min(READ_CHUNK));
            let mut limited = (&mut self.buf).limit(room);
            match poll_read_buf(Pin::new(&mut self.inner), cx, &mut limited) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Full: nothing more is read until the next head is taken.
        Poll::Pending
    }

    /// Reads from the socket into the buffer, at most `limit` bytes; how
    /// many came (0: the end of the stream).
    pub fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<std::io::Result<usize>> {
        self.buf.reserve(limit.min(READ_CHUNK));
        let mut limited = (&mut self.buf).limit(limit);
        poll_read_buf(Pin::new(&mut self.inner), cx, &mut limited)
    }

    pub fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = &mut *self;
        if me.head > 0 {
            let n = me.serve(out, me.head);
            me.head -= n;
            return Poll::Ready(Ok(()));
        }
        match me.body {
            Framing::Unbounded if me.buf.is_empty() => Pin::new(&mut me.inner).poll_read(cx, out),
            Framing::Unbounded => {
                me.serve(out, usize::MAX);
                Poll::Ready(Ok(()))
            }
            Framing::Length(0) => me.poll_hold(cx),
            Framing::Length(left) => {
                let limit = usize::try_from(left).unwrap_or(usize::MAX);
                let n = if me.buf.is_empty() && out.remaining() <= limit {
                    let before = out.filled().len();
                    match Pin::new(&mut me.inner).poll_read(cx, out) {
                        Poll::Ready(Ok(())) => {}
                        other => return other,
                    }
                    out.filled().len() - before
                } else if me.buf.is_empty() {
                    // From the socket, but never past the body's end.
                    match me.poll_fill(cx, limit) {
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                    me.serve(out, limit)
                } else {
                    me.serve(out, limit)
                };
                me.body = Framing::Length(left - n as u64);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Replay {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Replay {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Replay {
    fn get_ssl(&self) -> Option<&SslRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Replay {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for Replay {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Replay {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Replay {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.buf.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        // Read-ahead bytes are what a peek would have seen.
        let n = buf.len().min(self.buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(self.buf.get(..n).unwrap_or_default());
        Ok(n == buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn head_first_then_the_rest_then_the_socket() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"SOCKET").await.unwrap();
        let mut r = Replay::new(Box::new(server));
        r.extend(b"HEADNEXT");
        r.set_head(4, Framing::Unbounded);
        let mut buf = [0u8; 64];
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HEAD");
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"NEXT");
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"SOCKET");
    }

    #[tokio::test]
    async fn the_body_then_nothing_until_the_next_head() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"DYNEXT2").await.unwrap();
        let mut r = Replay::new(Box::new(server));
        r.extend(b"HEADBO");
        r.set_head(4, Framing::Length(4));
        let mut buf = [0u8; 64];
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HEAD");
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"BO");
        // The rest of the body comes from the socket, and no more.
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"DY");
        // Then the socket's bytes are held; the end of the stream shows.
        drop(client);
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(n, 0);
        assert_eq!(r.buffered(), b"NEXT2");
    }
}
