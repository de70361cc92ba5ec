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
//!
//! It also caps client connections: `server.max_connections_per_ip` per client address (the peer,
//! or the address a PROXY protocol header named; peers in `server.trusted_proxies` carry many
//! clients and are not capped per address) and `server.max_connections` in all, below the process's
//! file-descriptor limit, so a flood of idle connections cannot starve the admin listener or the
//! upstream connections. A connection over a cap is closed before anything is read from it, and
//! counted in `llmproxy_connections_refused_total{reason}`.

pub mod header_deadline;
pub mod proxy_protocol;
pub mod tls;

use crate::state::Shared;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use proxy_protocol::ProxyProtocol;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long idle client connections stay open after a shutdown began (at most a quarter of the
/// grace period): long enough for busy clients to send their next request on them.
const IDLE_DRAIN: Duration = Duration::from_secs(1);

/// A [`ServerApp`] wrapper that drains client connections on shutdown.
pub struct Draining<A> {
    inner: Arc<A>,
    counts: Arc<Counts>,
    grace: Duration,
    /// `server.proxy_protocol`: read each plain connection's header before serving it.
    proxy_protocol: Option<Arc<ProxyProtocol>>,
    shared: Arc<Shared>,
}

/// Open client connections, in all and per client address.
#[derive(Debug, Default)]
struct Counts {
    open: Arc<AtomicUsize>,
    /// Open connections per client address (addresses with none are removed).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Told when the last open connection closed.
    changed: Notify,
}

/// One client connection's place in [`Counts`], from its admission until the connection is
/// dropped. An HTTP/1 connection carries it inside its stream (Pingora hands the stream back and
/// forth between keep-alive requests, so a count taken per call would fall to zero between two
/// requests of a connection that stays open); an HTTP/2 connection, served in one call, and a PROXY
/// protocol connection, served in this layer's own loop, hold it for that call.
#[derive(Debug)]
pub(crate) struct Ticket {
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        if self.counts.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counts.changed.notify_waiters();
        }
    }
}

impl<A> Draining<A> {
    pub fn new(
        inner: A,
        grace: Duration,
        proxy_protocol: Option<Arc<ProxyProtocol>>,
        shared: Arc<Shared>,
    ) -> Self {
        Draining {
            inner: Arc::new(inner),
            counts: Arc::default(),
            grace,
            proxy_protocol,
            shared,
        }
    }

    /// Count a new connection from `ip` against the caps; `None` when it is over one (close it).
    fn admit(&self, ip: Option<IpAddr>) -> Option<Ticket> {
        let state = self.shared.state.load();
        let server = &state.config.server;
        if self.open() > server.max_connections {
            self.refused("max_connections");
            return None;
        }
        let ip = ip.filter(|ip| !server.trusted_proxies.contains(*ip));
        if let Some(ip) = ip {
            let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= server.max_connections_per_ip {
                drop(per_ip);
                self.refused("max_connections_per_ip");
                return None;
            }
            *n += 1;
        }
        self.counts.open.fetch_add(1, Ordering::AcqRel);
        Some(Ticket {
            counts: self.counts.clone(),
            ip,
        })
    }

    fn refused(&self, reason: &str) {
        self.shared
            .metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
    }

    /// Client connections currently open (serving or idle between requests).
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::Acquire)
    }

    /// The open-connection count, to watch from elsewhere (the shutdown drain).
    pub fn open_counter(&self) -> Arc<AtomicUsize> {
        self.counts.open.clone()
    }
}

/// The connection's peer address (after a PROXY protocol header: the client it named).
fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    let addr = digest.peer_addr()?.as_inet()?.ip();
    Some(crate::config::server::canonical(addr))
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Draining<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let header_timeout = self
            .shared
            .state
            .load()
            .config
            .server
            .client_timeouts
            .header;
        let Some(pp) = &self.proxy_protocol else {
            // Pingora calls this again with the same (wrapped) stream for each keep-alive request:
            // the connection was admitted, and its ticket travels in the stream.
            if stream.as_any().is::<header_deadline::HeaderDeadline>() {
                return self.inner.process_new(stream, shutdown).await;
            }
            let ticket = self.admit(peer_ip(&stream))?;
            return match header_deadline::wrap(stream, header_timeout, ticket) {
                Ok(stream) => self.inner.process_new(stream, shutdown).await,
                // HTTP/2: the whole connection is served in this call.
                Err((stream, _ticket)) => self.inner.process_new(stream, shutdown).await,
            };
        };
        // The header opens the connection, not each request: read it once, then serve the
        // connection's requests here (the loop Pingora would otherwise run around this call).
        let mut next = pp.accept_plain(stream).await;
        let _ticket = self.admit(next.as_ref().and_then(peer_ip))?;
        next = next.map(|s| header_deadline::wrap_untracked(s, header_timeout));
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
                let changed = self.counts.changed.notified();
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
