//! A whole-header deadline for HTTP/1.1 client connections.
//!
//! Pingora's read timeout is per read: a client that dribbles its request header a byte at a time
//! (slowloris) keeps a connection for as long as it likes. [`HeaderDeadline`] wraps the client stream
//! and watches the bytes the server reads: from the first byte of a request until the blank line
//! that ends its header, at most `client_timeouts.header` may pass; a read after that fails with
//! `TimedOut` and the connection is closed. After the header, reads are the body's and the wait for
//! the next request (Pingora's own idle timeout) — a request is known to start again when a read
//! follows a write (the previous answer).
//!
//! No timer is involved: a dribbling client makes the server read, and each read checks the clock;
//! a client that sends nothing at all meets Pingora's per-read timeout. HTTP/2 connections (ALPN
//! `h2`) are not wrapped: their frames have no such header.

use super::Ticket;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wrap `stream` unless it speaks HTTP/2.
pub(crate) fn wrap(
    stream: Stream,
    timeout: Duration,
    ticket: Ticket,
) -> Result<Stream, (Stream, Ticket)> {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return Err((stream, ticket));
    }
    Ok(Box::new(HeaderDeadline::new(stream, timeout, Some(ticket))))
}

/// [`wrap`] for a connection whose count is held elsewhere (the PROXY protocol loop).
pub(crate) fn wrap_untracked(stream: Stream, timeout: Duration) -> Stream {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return stream;
    }
    Box::new(HeaderDeadline::new(stream, timeout, None))
}

#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    timeout: Duration,
    /// Reading a request header (from its first byte to its blank line).
    in_header: bool,
    /// When the header being read must be complete (armed at its first byte).
    deadline: Option<Instant>,
    /// Something was written since the last header ended (an answer): the next read starts a request.
    wrote: bool,
    /// The last bytes of the header read so far, to find a blank line split across reads.
    tail: [u8; 3],
    /// The connection's place in the open-connection counts, given back when it is dropped.
    _ticket: Option<Ticket>,
}

impl HeaderDeadline {
    fn new(inner: Stream, timeout: Duration, ticket: Option<Ticket>) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            timeout,
            in_header: true,
            deadline: None,
            wrote: false,
            tail: [0; 3],
            _ticket: ticket,
        }
    }

    /// Account for `data`, just read.
    fn saw(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if !self.in_header && self.wrote {
            // A read after an answer: the next request's header begins.
            self.in_header = true;
            self.wrote = false;
            self.tail = [0; 3];
        }
        if !self.in_header {
            return;
        }
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.timeout);
        }
        // The blank line may straddle the previous read and this one.
        let k = data.len().min(3);
        let mut seam = [0u8; 6];
        seam[..3].copy_from_slice(&self.tail);
        seam[3..3 + k].copy_from_slice(&data[..k]);
        if memchr::memmem::find(&seam[..3 + k], b"\r\n\r\n").is_some()
            || memchr::memmem::find(data, b"\r\n\r\n").is_some()
        {
            self.in_header = false;
            self.deadline = None;
            return;
        }
        if data.len() >= 3 {
            self.tail.copy_from_slice(&data[data.len() - 3..]);
        } else {
            let keep = 3 - data.len();
            self.tail.copy_within(3 - keep.., 0);
            self.tail[keep..].copy_from_slice(data);
        }
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.in_header && self.deadline.is_some_and(|d| Instant::now() > d) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request header did not arrive within client_timeouts.header",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let this = &mut *self;
            this.saw(&buf.filled()[before..]);
        }
        res
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.in_header {
            self.wrote = true;
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
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
        if !self.in_header {
            self.wrote = true;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, d: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> HeaderDeadline {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std.set_nonblocking(true).unwrap();
        HeaderDeadline::new(
            Box::new(pingora::protocols::l4::stream::Stream::from(
                tokio::net::TcpStream::from_std(std).unwrap(),
            )),
            Duration::from_secs(10),
            None,
        )
    }

    #[tokio::test]
    async fn finds_the_blank_line_across_reads_and_restarts_after_an_answer() {
        let mut h = fresh();
        h.saw(b"GET / HTTP/1.1\r\nHost: x\r");
        assert!(h.in_header && h.deadline.is_some());
        h.saw(b"\n\r");
        assert!(h.in_header);
        h.saw(b"\n");
        assert!(!h.in_header && h.deadline.is_none());
        // Body bytes are not a header.
        h.saw(b"{\"a\":1}");
        assert!(!h.in_header);
        // An answer, then the next request.
        h.wrote = true;
        h.saw(b"POST");
        assert!(h.in_header && h.deadline.is_some());
    }
}
