//! # first-byte
//!
//! A deadline on a connection's first byte.
//!
//! hyper-util's auto builder reads the first bytes to tell HTTP/1 from HTTP/2 before
//! either protocol's own timers start, and that read has no deadline: a client that
//! connected (the authority's plain listeners) or finished its TLS handshake (the
//! sidecar's ingress) and then sent nothing held its connection, a slot under the
//! connection limit and its buffers, for ever. [`FirstByteWithin`] fails the read that is
//! still waiting for the first byte when the deadline passes; after that byte, hyper's
//! header-read timeout (HTTP/1) and keep-alive pings (HTTP/2) take over.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose first byte must arrive within a deadline.
pub struct FirstByteWithin<S> {
    inner: S,
    /// Armed until the first byte is read.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FirstByteWithin<S> {
    /// `inner`, failing reads with `TimedOut` if no byte has come within `limit` from now.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByteWithin<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = self
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header-read timeout after the handshake",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByteWithin<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_fails_at_the_deadline_and_a_talking_one_never_does() {
        let (client, server) = tokio::io::duplex(64);
        let mut silent = FirstByteWithin::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 8];
        let started = tokio::time::Instant::now();
        let e = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstByteWithin::new(server, Duration::from_secs(10));
        client.write_all(b"G").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        // Past the deadline, with the first byte in, a read waits as long as it takes.
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"ET").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 2);
    }
}
