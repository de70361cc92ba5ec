//! `UpstreamPool`: one upstream's addresses, their health, and how to build a peer for them.
//!
//! Addresses come from DNS through a pingora-load-balancing `ServiceDiscovery` (async `lookup_host`,
//! refreshed in the background, so no request ever resolves a name on a worker thread) and are checked
//! by [`Probe`] (`GET` on the provider's health path with the upstream's headers, signed by its
//! [`Signer`] like every other request). A pool is healthy while at least one of its addresses is.

use super::signer::Signer;
use crate::config::{Auth, HeaderOpKind, Upstream};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::connectors::http::Connector as HttpConnector;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::*;
use pingora::protocols::TcpKeepalive;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often names are re-resolved.
const DNS_REFRESH: Duration = Duration::from_secs(60);

pub struct UpstreamPool {
    pub cfg: Arc<Upstream>,
    /// Per-request credentials (signatures, short-lived tokens), applied after the static headers.
    pub signer: Arc<Signer>,
    lb: LoadBalancer<RoundRobin>,
    last_error: Arc<Mutex<Option<String>>>,
    /// Whether an active health check ever succeeded. Pingora starts every address healthy until
    /// `unhealthy_after` failures; an upstream that never answered (no key, nothing listening) must
    /// not receive traffic meanwhile.
    ever_ok: Arc<AtomicBool>,
    active_checks: bool,
    template: HttpPeer,
    /// The peers built so far, one per address (rebuilt only when the upstream's addresses
    /// change): a request shares one instead of cloning the template (its SNI, options, 672 bytes
    /// held by every request's future for the whole exchange).
    peers: ArcSwap<Vec<(SocketAddr, Arc<HttpPeer>)>>,
}

/// Resolves the upstream host (an IP literal needs no lookup). Behind an outbound proxy the proxy
/// resolves the name, so one placeholder address stands for the upstream.
struct DnsDiscovery {
    host: String,
    port: u16,
    via_proxy: bool,
    last_error: Arc<Mutex<Option<String>>>,
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let addrs: Vec<SocketAddr> = if self.via_proxy {
            vec![SocketAddr::from(([0, 0, 0, 0], self.port))]
        } else {
            match self.host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, self.port)],
                Err(_) => match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                    Ok(a) => a.collect(),
                    Err(e) => {
                        set(
                            &self.last_error,
                            format!("dns lookup of {} failed: {e}", self.host),
                        );
                        return Error::e_explain(
                            ConnectNoRoute,
                            format!("dns lookup of {} failed", self.host),
                        );
                    }
                },
            }
        };
        let set: BTreeSet<Backend> = addrs
            .into_iter()
            .map(|a| Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(a),
                weight: 1,
                ext: Default::default(),
            })
            .collect();
        Ok((set, HashMap::new()))
    }
}

/// The active health check: `GET` on the provider's health path with the upstream's headers and
/// signature, fresh connection each time (a kept connection can hide a firewall or an L4 balancer
/// in the way); 2xx is healthy. Remembers the last failure for `/health/upstreams`.
struct Probe {
    peer_template: HttpPeer,
    req: RequestHeader,
    signer: Arc<Signer>,
    connector: HttpConnector,
    consecutive_success: usize,
    consecutive_failure: usize,
    last_error: Arc<Mutex<Option<String>>>,
    ever_ok: Arc<AtomicBool>,
    upstream: String,
}

impl Probe {
    async fn probe(&self, target: &Backend) -> Result<()> {
        let mut peer = self.peer_template.clone();
        peer._address = target.addr.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        session.set_write_timeout(peer.options.write_timeout);
        let mut req = self.req.clone();
        self.signer
            .sign(&mut req, Some(b""))
            .await
            .map_err(|e| Error::explain(InternalError, format!("signing the probe: {e}")))?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.set_read_timeout(peer.options.read_timeout);
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        if !(200..300).contains(&status) {
            return Error::e_explain(
                CustomCode("unhealthy status", status),
                format!("status {status}"),
            );
        }
        // Drain a short body (a model list); a long one is not worth the wait.
        let mut drained = 0;
        while let Some(chunk) = session.read_response_body().await? {
            drained += chunk.len();
            if drained > 1 << 20 {
                break;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let res = self.probe(target).await;
        match &res {
            Ok(()) => {
                self.ever_ok.store(true, Ordering::Relaxed);
                clear(&self.last_error)
            }
            Err(e) => set(
                &self.last_error,
                format!("health check of {}: {e}", target.addr),
            ),
        }
        res
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!(
                "upstream {} address {} is healthy",
                self.upstream,
                target.addr
            );
        } else {
            log::warn!(
                "upstream {} address {} is unhealthy",
                self.upstream,
                target.addr
            );
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.consecutive_success
        } else {
            self.consecutive_failure
        }
    }
}

fn set(slot: &Mutex<Option<String>>, msg: String) {
    if let Ok(mut g) = slot.lock() {
        *g = Some(msg);
    }
}

fn clear(slot: &Mutex<Option<String>>) {
    if let Ok(mut g) = slot.lock() {
        *g = None;
    }
}

impl UpstreamPool {
    pub fn new(cfg: Arc<Upstream>) -> Result<UpstreamPool> {
        let last_error = Arc::new(Mutex::new(None));
        let ever_ok = Arc::new(AtomicBool::new(false));
        let discovery = DnsDiscovery {
            host: cfg.url.host.clone(),
            port: cfg.url.port,
            via_proxy: cfg.client.proxy.is_some(),
            last_error: last_error.clone(),
        };
        let custom_l4: Option<Arc<dyn pingora::connectors::L4Connect + Send + Sync>> =
            cfg.client.proxy.as_ref().map(|p| {
                Arc::new(super::connect_proxy::ConnectProxy {
                    proxy: p.clone(),
                    target: format!("{}:{}", cfg.url.host, cfg.url.port),
                    timeout: cfg.client.connect_timeout,
                }) as Arc<dyn pingora::connectors::L4Connect + Send + Sync>
            });
        let signer = Arc::new(Signer::for_upstream(&cfg));
        let mut backends = Backends::new(Box::new(discovery));
        let hc = &cfg.health_check;
        if hc.interval.is_some() {
            let mut peer = HttpPeer::new(
                SocketAddr::from(([127, 0, 0, 1], cfg.url.port)),
                cfg.url.tls,
                if cfg.url.tls {
                    cfg.url.host.clone()
                } else {
                    String::new()
                },
            );
            peer.options.connection_timeout = Some(hc.timeout);
            peer.options.total_connection_timeout = Some(hc.timeout);
            peer.options.read_timeout = Some(hc.timeout);
            peer.options.write_timeout = Some(hc.timeout);
            peer.options.custom_l4 = custom_l4.clone();
            // The provider's probe (Azure: `/openai/models?api-version=...`).
            let provider = crate::providers::of(cfg.provider);
            let path = provider.health_path(&cfg);
            let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
            req.insert_header(http::header::HOST, cfg.url.authority.as_str())?;
            provider.request_headers(&mut req)?;
            apply_upstream_headers(&cfg, &mut req)?;
            backends.set_health_check(Box::new(Probe {
                peer_template: peer,
                req,
                signer: signer.clone(),
                connector: HttpConnector::new(None),
                consecutive_success: hc.healthy_after,
                consecutive_failure: hc.unhealthy_after,
                last_error: last_error.clone(),
                ever_ok: ever_ok.clone(),
                upstream: cfg.name.clone(),
            }));
        }
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        lb.health_check_frequency = hc.interval;
        let literal_ip =
            cfg.url.host.parse::<std::net::IpAddr>().is_ok() || cfg.client.proxy.is_some();
        lb.update_frequency = if literal_ip { None } else { Some(DNS_REFRESH) };
        lb.parallel_health_check = true;

        let mut template = HttpPeer::new(
            SocketAddr::from(([127, 0, 0, 1], cfg.url.port)),
            cfg.url.tls,
            if cfg.url.tls {
                cfg.url.host.clone()
            } else {
                String::new()
            },
        );
        let c = &cfg.client;
        template.options.connection_timeout = Some(c.connect_timeout);
        template.options.total_connection_timeout = Some(c.connect_timeout);
        template.options.read_timeout = Some(c.request_timeout);
        template.options.write_timeout = Some(c.request_timeout);
        template.options.idle_timeout = Some(c.idle_timeout);
        template.options.custom_l4 = custom_l4;
        template.options.tcp_keepalive = c.tcp_keepalive.map(|idle| TcpKeepalive {
            idle,
            interval: Duration::from_secs(10),
            count: 5,
            #[cfg(target_os = "linux")]
            user_timeout: Duration::ZERO,
        });
        Ok(UpstreamPool {
            active_checks: cfg.health_check.interval.is_some(),
            cfg,
            signer,
            lb,
            last_error,
            ever_ok,
            template,
            peers: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Resolve the addresses once, before the listeners open, so the first request finds them.
    /// Resolve the addresses and, with active checks, probe them once: before the listeners open (or a
    /// reloaded config goes live), so the first request finds addresses whose health is known.
    pub async fn discover(&self) {
        if let Err(e) = self.lb.update().await {
            log::warn!("upstream {}: {e}", self.cfg.name);
        }
        if self.active_checks {
            self.lb.backends().run_health_check(true).await;
        }
    }

    /// Run discovery refresh and health checks until shutdown (called by the health service).
    pub async fn run(&self, shutdown: pingora::server::ShutdownWatch) {
        self.lb.run(shutdown, None).await
    }

    /// A healthy address not in `exclude`, round robin.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let b = self.lb.select_with(b"", 64, |b, healthy| {
            healthy && b.addr.as_inet().is_some_and(|a| !exclude.contains(a))
        })?;
        b.addr.as_inet().copied()
    }

    /// Number of known addresses.
    pub fn address_count(&self) -> usize {
        self.lb.backends().get_backend().len()
    }

    pub fn healthy(&self) -> bool {
        if self.active_checks && !self.ever_ok.load(Ordering::Relaxed) {
            return false;
        }
        let backends = self.lb.backends();
        backends.get_backend().iter().any(|b| backends.ready(b))
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    pub fn note_error(&self, msg: String) {
        set(&self.last_error, msg);
    }

    /// A peer for `addr` with this upstream's TLS, SNI, timeouts and pooling.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut p = self.template.clone();
        p._address = pingora::protocols::l4::socket::SocketAddr::Inet(addr);
        p
    }

    /// The shared peer for `addr` (see `peers`): built on its first use; the addresses discovery no
    /// longer reports are dropped then.
    pub fn shared_peer(&self, addr: SocketAddr) -> Arc<HttpPeer> {
        if let Some((_, p)) = self.peers.load().iter().find(|(a, _)| *a == addr) {
            return p.clone();
        }
        let peer = Arc::new(self.peer(addr));
        let known = self.lb.backends().get_backend();
        self.peers.rcu(|current| {
            let mut next: Vec<(SocketAddr, Arc<HttpPeer>)> = current
                .iter()
                .filter(|(a, _)| known.iter().any(|b| b.addr.as_inet() == Some(a)))
                .cloned()
                .collect();
            if !next.iter().any(|(a, _)| *a == addr) {
                next.push((addr, peer.clone()));
            }
            next
        });
        peer
    }
}

/// The upstream's auth, user agent and header operations, applied to an outgoing request whose
/// client credentials were already removed.
pub fn apply_upstream_headers(cfg: &Upstream, req: &mut RequestHeader) -> Result<()> {
    if let Auth::Header { name, value } = &cfg.auth {
        req.insert_header(name.clone(), value.expose())?;
    }
    if let Some(ua) = &cfg.client.user_agent {
        req.insert_header(http::header::USER_AGENT, ua.as_str())?;
    }
    for op in &cfg.headers {
        match (op.op, &op.value) {
            (HeaderOpKind::Insert, Some(v)) => {
                if !req.headers.contains_key(&op.key) {
                    req.insert_header(op.key.clone(), v.clone())?;
                }
            }
            (HeaderOpKind::Replace, Some(v)) => req.insert_header(op.key.clone(), v.clone())?,
            _ => {
                req.remove_header(&op.key);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::ProcessEnv;

    #[tokio::test]
    async fn a_peer_is_shared_per_address_until_discovery_drops_it() {
        let yaml = "server: {listeners: [{name: m, listen: \"127.0.0.1:1\"}]}\nupstreams: [{name: a, url: \"http://127.0.0.1:9\"}]\nmodels: [{name: m, deployments: [{upstream: a, model: m}]}]\n";
        let cfg = crate::config::parse(yaml, &ProcessEnv).unwrap();
        let pool = UpstreamPool::new(Arc::new(cfg.upstreams[0].clone())).unwrap();
        pool.discover().await;
        let known: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:9".parse().unwrap();
        let p = pool.shared_peer(known);
        assert!(Arc::ptr_eq(&p, &pool.shared_peer(known)));
        assert_eq!(p._address.as_inet(), Some(&known));
        assert_eq!(p.sni, pool.peer(known).sni);
        // An address discovery does not report is served, and dropped by the next new address.
        let q = pool.shared_peer(other);
        assert_eq!(q._address.as_inet(), Some(&other));
        assert_eq!(pool.peers.load().len(), 2);
        let _ = pool.shared_peer("127.0.0.3:9".parse().unwrap());
        let kept: Vec<SocketAddr> = pool.peers.load().iter().map(|(a, _)| *a).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains(&known) && !kept.contains(&other), "{kept:?}");
    }
}
