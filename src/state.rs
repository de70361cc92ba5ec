//! Shared state: the process-wide parts (metrics, the upstream connector) and the per-config
//! [`State`] snapshot that each request loads once and keeps until it ends, so a config swap never
//! changes a request midway.

use crate::balance::{Balancer, UpstreamPool};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::route::Router;
use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use std::sync::Arc;

/// Everything derived from one validated config.
pub struct State {
    pub config: Arc<Config>,
    pub router: Router,
    /// One per `config.models` entry.
    pub balancers: Vec<Balancer>,
    /// One per `config.upstreams` entry.
    pub upstreams: Vec<Arc<UpstreamPool>>,
}

impl State {
    pub fn build(config: Arc<Config>) -> pingora::Result<State> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| UpstreamPool::new(Arc::new(u.clone())).map(Arc::new))
            .collect::<pingora::Result<Vec<_>>>()?;
        Ok(State {
            router: Router::new(&config),
            balancers: config.models.iter().map(Balancer::new).collect(),
            upstreams,
            config,
        })
    }
}

/// Process-wide state shared by the proxy and admin services.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub metrics: Metrics,
    /// The upstream connection pool for model requests (one per process, so connections are reused
    /// across requests).
    pub connector: Connector,
}

impl Shared {
    pub fn new(state: State, metrics: Metrics, connector: Connector) -> Shared {
        Shared {
            state: ArcSwap::from_pointee(state),
            metrics,
            connector,
        }
    }

    /// Refresh gauges that are read rather than counted (`llmproxy_upstream_healthy`).
    pub fn refresh_gauges(&self) {
        let state = self.state.load();
        for (ui, u) in state.upstreams.iter().enumerate() {
            // Unhealthy when its health checks fail, or when every deployment on it is cooling down.
            let mut deployments = state
                .config
                .models
                .iter()
                .zip(&state.balancers)
                .flat_map(|(m, b)| m.deployments.iter().zip(&b.deployments))
                .filter(|(d, _)| d.upstream_idx == ui)
                .peekable();
            let all_cooling = deployments.peek().is_some() && deployments.all(|(_, s)| s.cooling());
            self.metrics
                .upstream_healthy
                .with_label_values(&[u.cfg.name.as_str()])
                .set(i64::from(u.healthy() && !all_cooling));
        }
    }
}
