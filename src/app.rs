//! Validated config → Pingora server: the proxy service (one per process, every listener on it), the
//! admin service, and the background services (health checks, SIGHUP reload, readiness).

use crate::admin::Admin;
use crate::balance::health::HealthService;
use crate::listener::proxy_protocol::ProxyProtocol;
use crate::listener::tls::CertStore;
use crate::listener::Draining;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::{ReloadService, Reloader, Source};
use crate::state::{Shared, State, Upstreams};
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pingora process options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessOptions {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Pooled idle upstream connections per worker thread.
const UPSTREAM_POOL_PER_THREAD: usize = 256;
/// Client connections read straight into Pingora's header and body buffers instead of through its
/// default 64 KiB zero-filled L4 read buffer per connection: with thousands of open streams that
/// buffer alone was most of the resident memory (measured in loadtest/), and plain-TCP reads of
/// JSON bodies gain nothing from the extra copy.
const CLIENT_L4_READ_BUFFER: usize = 0;
/// Pingora's default write buffer: about one MSS.
const CLIENT_L4_WRITE_BUFFER: usize = 1460;

/// Build the server for the config from `source` and run it until shutdown.
pub fn run(source: Source, process: ProcessOptions) -> Result<(), String> {
    let config = Arc::new(
        source
            .load()
            .map_err(|e| format!("invalid configuration:\n{e}"))?,
    );
    let s = &config.server;
    let conf = ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        upstream_keepalive_pool_size: UPSTREAM_POOL_PER_THREAD,
        daemon: process.daemon,
        upgrade_sock: s.upgrade_sock.clone(),
        pid_file: s.pid_file.clone(),
        ..Default::default()
    };
    let opt = Opt {
        upgrade: process.upgrade,
        daemon: process.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let metrics = Metrics::new().map_err(|e| format!("registering metrics: {e}"))?;
    let state = State::build(config.clone(), None, Some(&metrics))
        .map_err(|e| format!("building upstream pools: {e}"))?;
    resolve_upstreams(&state);
    for l in &config.server.listeners {
        // Export every listener's rate-limit counter from the start, at 0.
        metrics.ratelimit.with_label_values(&[l.name.as_str()]);
    }
    let connector = Upstreams::new(UPSTREAM_POOL_PER_THREAD * s.threads);
    let (pools_tx, pools_rx) = tokio::sync::watch::channel(state.upstreams.clone());
    let mut shared = Shared::new(state, metrics, connector);
    shared.keys = open_keys(&config)?;
    if let Some(k) = &shared.keys {
        k.spend_log()
            .register(&shared.metrics.registry)
            .map_err(|e| format!("registering metrics: {e}"))?;
    }
    let keys = shared.keys.clone();
    let shared = Arc::new(shared);

    let gateway = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway {
            shared: shared.clone(),
        },
    );
    let proxy_protocol = s
        .proxy_protocol
        .then(|| Arc::new(ProxyProtocol::new(shared.clone(), s.client_timeouts.header)));
    let draining = Draining::new(
        gateway,
        Duration::from_secs(s.grace_period.as_secs()),
        proxy_protocol.clone(),
        shared.clone(),
    );
    let drain = Drain {
        connections: draining.open_counter(),
        services: Arc::new(AtomicUsize::new(0)),
    };
    let mut proxy = Service::new("llmproxy".to_string(), draining);
    let mut certificates = Vec::new();
    for l in &s.listeners {
        let mut listener = ListenerConfig::tcp(l.listen.to_string())
            .l4_buffer(L4BufferSettings::new(
                CLIENT_L4_READ_BUFFER,
                CLIENT_L4_WRITE_BUFFER,
            ))
            .tcp_socket_options(client_socket_options());
        if let Some(tls) = &l.tls {
            let store =
                Arc::new(CertStore::new(tls).map_err(|e| format!("listener `{}`: {e}", l.name))?);
            listener = listener.tls(tls_settings(store.clone())?);
            certificates.push((l.listen, store));
        }
        proxy.add_listener(listener);
    }
    if let Some(pp) = proxy_protocol {
        // TLS listeners: the header precedes the handshake.
        proxy.endpoints().set_pre_tls_callback(pp);
    }
    proxy.threads = Some(s.threads);
    let reloader =
        Arc::new(Reloader::new(source, shared.clone(), pools_tx).with_certificates(certificates));

    let batcher = crate::batch::BatchService {
        shared: shared.clone(),
    };
    let mut admin = Service::new(
        "llmproxy admin".to_string(),
        Admin {
            shared,
            reloader: reloader.clone(),
            console: Default::default(),
        },
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service(
        "llmproxy health",
        drain.track(HealthService { pools: pools_rx }),
    ));
    server.add_service(background_service(
        "llmproxy reload",
        drain.track(ReloadService { reloader }),
    ));
    server.add_service(background_service("llmproxy batch", drain.track(batcher)));
    if let Some(keys) = keys {
        server.add_service(background_service(
            "llmproxy keys",
            drain.track(KeysService { keys }),
        ));
    }
    let mut probe: Vec<SocketAddr> = s.listeners.iter().map(|l| l.listen).collect();
    probe.push(config.admin.listen);
    server.add_service(background_service(
        "llmproxy ready",
        Readiness {
            listeners: probe,
            drain,
            grace: s.grace_period,
        },
    ));
    log::info!(
        "llmproxy listening on {} (admin {}), {} worker threads",
        s.listeners
            .iter()
            .map(|l| format!("{}={}", l.name, l.listen))
            .collect::<Vec<_>>()
            .join(", "),
        config.admin.listen,
        s.threads
    );
    server.run_forever()
}

/// TCP keepalive on client connections: a client waiting minutes for a batched answer (or a long
/// generation) sends nothing, and load balancers and NATs drop connections idle for a few minutes
/// (AWS NLB 350 s, Azure 4 min); probes every minute keep them open, and find dead peers.
fn client_socket_options() -> pingora::listeners::TcpSocketOptions {
    let mut o = pingora::listeners::TcpSocketOptions::default();
    o.tcp_keepalive = Some(pingora::protocols::TcpKeepalive {
        idle: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        count: 6,
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    });
    o
}

/// HTTPS with HTTP/2 offered first by ALPN (HTTP/1.1 otherwise), Mozilla's intermediate profile
/// (TLS 1.2 and 1.3), the certificate from `store` on each handshake (so reloads replace it).
fn tls_settings(store: Arc<CertStore>) -> Result<TlsSettings, String> {
    // The paths are unused: a certificate resolver takes their place.
    let mut settings =
        TlsSettings::intermediate("", "").map_err(|e| format!("TLS settings: {e}"))?;
    settings.set_cert_resolver(store);
    settings.enable_h2();
    Ok(settings)
}

/// Resolve every upstream once before the listeners open (bounded), so the first request finds
/// addresses. Runs on a throwaway runtime: the service runtimes do not exist yet.
fn resolve_upstreams(state: &State) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::warn!("cannot resolve upstreams at start: {e}");
            return;
        }
    };
    rt.block_on(async {
        let mut all = tokio::task::JoinSet::new();
        for p in &state.upstreams {
            let p = p.clone();
            all.spawn(async move { p.discover().await });
        }
        let done = async { while all.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .is_err()
        {
            log::warn!(
                "resolving and probing upstreams took over 10s; the health service keeps trying"
            );
        }
    });
}

/// What a graceful shutdown waits for: client connections still open (requests and streams in
/// flight; idle ones close within a second) and background services still finishing their work
/// (the batcher releasing its clients, the final spend flush).
struct Drain {
    connections: Arc<AtomicUsize>,
    services: Arc<AtomicUsize>,
}

impl Drain {
    fn track<S: BackgroundService + Send + Sync + 'static>(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            services: self.services.clone(),
        }
    }

    fn drained(&self) -> bool {
        self.connections.load(Ordering::Acquire) == 0 && self.services.load(Ordering::Acquire) == 0
    }
}

/// A background service counted as busy from its start until it returns (after shutdown).
struct Tracked<S> {
    inner: S,
    services: Arc<AtomicUsize>,
}

#[async_trait]
impl<S: BackgroundService + Send + Sync> BackgroundService for Tracked<S> {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.services.fetch_add(1, Ordering::AcqRel);
        self.inner.start(shutdown).await;
        self.services.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells systemd (`Type=notify`) the gateway is ready once every listener accepts connections, and
/// that it is stopping at shutdown. Then it ends the process as soon as the shutdown has drained:
/// Pingora sleeps the whole grace period, which made an idle gateway take 30 s to stop; the grace
/// period stays the most a request in flight gets.
struct Readiness {
    listeners: Vec<SocketAddr>,
    drain: Drain,
    grace: Duration,
}

impl Readiness {
    /// Wait until every listener accepts connections (false: one did not within a minute).
    async fn probe(&self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for addr in &self.listeners {
            // Connect to the wildcard address through loopback.
            let target = if addr.ip().is_unspecified() {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
            } else {
                *addr
            };
            while tokio::net::TcpStream::connect(target).await.is_err() {
                if tokio::time::Instant::now() > deadline {
                    log::error!("listener {addr} did not come up within 60s");
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        true
    }
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // A shutdown can come before every listener answered (a SIGTERM right after start): the
        // listeners then close and would never answer, so the probe gives way to the drain.
        let up = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => None,
            up = self.probe() => Some(up),
        };
        if up == Some(true) {
            log::info!("ready");
            crate::sd_notify::notify("READY=1");
        }
        if up.is_some() {
            stopping(&mut shutdown).await;
        }
        crate::sd_notify::notify("STOPPING=1");
        let started = tokio::time::Instant::now();
        while started.elapsed() < self.grace {
            if self.drain.drained() {
                log::info!(
                    "shutdown: nothing left in flight after {} ms; exiting",
                    started.elapsed().as_millis()
                );
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Resolves once a shutdown was signalled (at once if it already was).
async fn stopping(shutdown: &mut ShutdownWatch) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// With `server.master_key`, open the keys database (`state.database`) and load the keys; without it,
/// client auth is off (said loudly: anyone who reaches a listener may use every model).
fn open_keys(config: &crate::config::Config) -> Result<Option<Arc<crate::keys::Keys>>, String> {
    if config.server.master_key.is_none() {
        log::warn!(
            "server.master_key is not set: client authentication is OFF, every caller may use every model"
        );
        return Ok(None);
    }
    let url = config.state.database.expose();
    let options = crate::keys::KeysOptions {
        refresh: config.state.key_refresh,
        flush: config.keys.spend_flush,
        spend_log_queue: config.keys.spend_log_queue,
        spend_log_retention: config.keys.spend_log_retention,
    };
    let keys = crate::keys::Keys::open_blocking(url, options).map_err(|e| {
        format!(
            "state.database ({}): {e}",
            crate::config::secret::redact_url(url)
        )
    })?;
    log::info!(
        "client authentication on: master key and virtual keys from {}",
        crate::config::secret::redact_url(url)
    );
    Ok(Some(keys))
}

/// Refreshes the key view, writes pending spend and the spend log (a final flush at shutdown).
struct KeysService {
    keys: Arc<crate::keys::Keys>,
}

#[async_trait]
impl BackgroundService for KeysService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.keys.run(shutdown).await;
    }
}
