//! The client-connection layer between Pingora's listeners and the proxy: it reads PROXY protocol
//! headers ([`proxy_protocol`]), serves TLS with reloadable certificates ([`tls`]), and counts open
//! client connections so a shutdown or upgrade can drain them instead of cutting them.
//!
//! Pingora's proxy drops every idle keep-alive connection the moment a shutdown starts. A client
//! that just picked such a connection from its pool and wrote a request on it then sees the
//! connection close under it — a failed request on every graceful upgrade under load (seen in CI).
//! This layer delays that cut for a moment: idle connections stay open for up to a second (a
//! quarter of the grace period at most), a request that arrives on one meanwhile is served with
//! `Connection: close` (Pingora turns keep-alive off once shutdown is signalled) so its client
//! reconnects to the new process, and only connections the clients left idle all that time are
//! closed. The rest of the grace period is left for the requests and streams that were started.

pub mod proxy_protocol;
pub mod tls;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use proxy_protocol::ProxyProtocol;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long idle client connections stay open after a shutdown began (at most a quarter of the
/// grace period): long enough for busy clients to send their next request on them.
const IDLE_DRAIN: Duration = Duration::from_secs(1);

/// A [`ServerApp`] wrapper that drains client connections on shutdown.
pub struct Draining<A> {
    inner: Arc<A>,
    open: AtomicUsize,
    changed: Notify,
    grace: Duration,
    /// `server.proxy_protocol`: read each plain connection's header before serving it.
    proxy_protocol: Option<Arc<ProxyProtocol>>,
}

impl<A> Draining<A> {
    pub fn new(inner: A, grace: Duration, proxy_protocol: Option<Arc<ProxyProtocol>>) -> Self {
        Draining {
            inner: Arc::new(inner),
            open: AtomicUsize::new(0),
            changed: Notify::new(),
            grace,
            proxy_protocol,
        }
    }

    /// Client connections currently open (serving or idle between requests).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// Counts one connection for as long as its request (or its wait for the next one) runs.
struct OpenGuard<'a, A>(&'a Draining<A>);

impl<'a, A> OpenGuard<'a, A> {
    fn new(app: &'a Draining<A>) -> Self {
        app.open.fetch_add(1, Ordering::AcqRel);
        OpenGuard(app)
    }
}

impl<A> Drop for OpenGuard<'_, A> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Draining<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = OpenGuard::new(self);
        let Some(pp) = &self.proxy_protocol else {
            return self.inner.process_new(stream, shutdown).await;
        };
        // The header opens the connection, not each request: read it once, then serve the
        // connection's requests here (the loop Pingora would otherwise run around this call).
        let mut next = pp.accept_plain(stream).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    /// Called once the listeners stopped accepting: wait until every client connection finished
    /// (idle ones close as soon as they serve their next request), but no longer than
    /// [`IDLE_DRAIN`], then let the proxy close what is still idle.
    async fn cleanup(&self) {
        let wait = IDLE_DRAIN.min(self.grace / 4);
        let drained = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.open() == 0 {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(wait, drained).await.is_err() {
            log::info!(
                "shutdown: closing idle client connections ({} still open)",
                self.open()
            );
        }
        self.inner.cleanup().await;
    }
}
