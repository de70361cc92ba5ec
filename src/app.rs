//! Validated config → Pingora server: the proxy service (one per process, every listener on it), the
//! admin service, and the health background service.

use crate::admin::Admin;
use crate::balance::health::HealthService;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::state::{Shared, State};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// Pingora process options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessOptions {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Seconds a SIGTERM waits for in-flight requests before the runtime stops (Pingora's default is 300).
const GRACE_PERIOD_SECS: u64 = 30;
/// Pooled idle upstream connections per worker thread.
const UPSTREAM_POOL_PER_THREAD: usize = 256;
/// Client connections read straight into Pingora's header and body buffers instead of through its
/// default 64 KiB zero-filled L4 read buffer per connection: with thousands of open streams that
/// buffer alone was most of the resident memory (measured in loadtest/), and plain-TCP reads of
/// JSON bodies gain nothing from the extra copy.
const CLIENT_L4_READ_BUFFER: usize = 0;
/// Pingora's default write buffer: about one MSS.
const CLIENT_L4_WRITE_BUFFER: usize = 1460;

/// Build the server for `config` and run it until shutdown.
pub fn run(config: Config, process: ProcessOptions) -> Result<(), String> {
    let config = Arc::new(config);
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(GRACE_PERIOD_SECS),
        graceful_shutdown_timeout_seconds: Some(5),
        upstream_keepalive_pool_size: UPSTREAM_POOL_PER_THREAD,
        daemon: process.daemon,
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

    let state =
        State::build(config.clone()).map_err(|e| format!("building upstream pools: {e}"))?;
    resolve_upstreams(&state);
    let metrics = Metrics::new().map_err(|e| format!("registering metrics: {e}"))?;
    let connector = Connector::new(Some(ConnectorOptions::new(
        UPSTREAM_POOL_PER_THREAD * config.server.threads,
    )));
    for l in &config.server.listeners {
        // Export every listener's rate-limit counter from the start, at 0.
        metrics.ratelimit.with_label_values(&[l.name.as_str()]);
    }
    let pools = state.upstreams.clone();
    let shared = Arc::new(Shared::new(state, metrics, connector));

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway {
            shared: shared.clone(),
        },
        "llmproxy",
    );
    for l in &config.server.listeners {
        proxy.add_listener(ListenerConfig::tcp(l.listen.to_string()).l4_buffer(
            L4BufferSettings::new(CLIENT_L4_READ_BUFFER, CLIENT_L4_WRITE_BUFFER),
        ));
    }
    proxy.threads = Some(config.server.threads);

    let mut admin = Service::new("llmproxy admin".to_string(), Admin { shared });
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    let health = background_service("llmproxy health", HealthService { pools });

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(health);
    log::info!(
        "llmproxy listening on {} (admin {}), {} worker threads",
        config
            .server
            .listeners
            .iter()
            .map(|l| format!("{}={}", l.name, l.listen))
            .collect::<Vec<_>>()
            .join(", "),
        config.admin.listen,
        config.server.threads
    );
    server.run_forever()
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
        let all = async {
            for p in &state.upstreams {
                p.discover().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            log::warn!("resolving upstreams took over 10s; the health service keeps trying");
        }
    });
}
