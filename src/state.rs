//! Shared state: the process-wide parts (metrics, the upstream connector) and the per-config
//! [`State`] snapshot that each request loads once and keeps until it ends, so a config swap never
//! changes a request midway.

use crate::balance::{Balancer, DeploymentLive, UpstreamPool};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::route::Router;
use arc_swap::ArcSwap;
use pingora::connectors::http::v1::Connector as H1Connector;
use pingora::connectors::ConnectorOptions;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Everything derived from one validated config.
pub struct State {
    pub config: Arc<Config>,
    pub router: Router,
    /// One per `config.models` entry.
    pub balancers: Vec<Balancer>,
    /// One per `config.upstreams` entry.
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// Rate budgets and queues, one per `config.models` entry.
    pub sched: crate::sched::Scheduler,
    /// The response cache (kept across reloads while its settings stay the same).
    pub cache: Arc<crate::cache::Cache>,
    /// `state.redis`, for the Responses API's conversation pins (`providers::pins`).
    pub redis: Option<Arc<crate::redis_conn::RedisConn>>,
    /// SHA-256 of `server.master_key`, hashed once per config.
    pub master_digest: Option<[u8; 32]>,
    /// OpenTelemetry export, when `tracing.otlp_endpoint` is set.
    pub tracing: Option<Arc<crate::otel::Tracing>>,
    /// Every deployment's price (`models[].pricing`, else the built-in table).
    pub prices: crate::pricing::ConfigPrices,
    /// This config's metric handles (empty when built without metrics).
    pub metrics: crate::metrics::handles::Handles,
}

impl State {
    /// Build the state for `config`. With `previous`, an upstream whose settings did not change keeps
    /// its pool (addresses, health, last error), and a deployment on it that did not change keeps its
    /// live state (cooldown, requests in flight).
    pub fn build(
        config: Arc<Config>,
        previous: Option<&State>,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> pingora::Result<State> {
        // Mask this config's credentials in every log line (and the previous one's, still serving
        // until the swap).
        let mut secrets = config.secrets();
        if let Some(p) = previous {
            secrets.extend(p.config.secrets());
        }
        crate::logging::set_secrets(secrets);
        let sched = crate::sched::Scheduler::build(&config, previous.map(|p| &p.sched), metrics)
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e))?;
        let redis_url = config.state.redis.as_ref().map(|s| s.expose());
        let cache = match previous {
            Some(p) if p.cache.matches(&config.cache, redis_url) => p.cache.clone(),
            _ => Arc::new(
                crate::cache::Cache::new(&config.cache, redis_url, metrics)
                    .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e))?,
            ),
        };
        let redis = match (previous.and_then(|p| p.redis.as_ref()), redis_url) {
            (Some(r), Some(url)) if r.url == url => Some(r.clone()),
            (_, Some(url)) => Some(Arc::new(
                crate::redis_conn::RedisConn::new(url)
                    .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e))?,
            )),
            (_, None) => None,
        };
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut kept = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let old = previous.and_then(|p| p.upstreams.iter().find(|o| *o.cfg == *u));
            kept.push(old.is_some());
            upstreams.push(match old {
                Some(pool) => pool.clone(),
                None => Arc::new(UpstreamPool::new(Arc::new(u.clone()))?),
            });
        }
        // (model, upstream, deployment model) → live state, from the previous config.
        let mut live: HashMap<(&str, &str, &str), Arc<DeploymentLive>> = HashMap::new();
        if let Some(p) = previous {
            for (m, b) in p.config.models.iter().zip(&p.balancers) {
                for (d, s) in m.deployments.iter().zip(&b.deployments) {
                    live.insert((&m.name, &d.upstream, &d.model), s.live.clone());
                }
            }
        }
        let balancers = config
            .models
            .iter()
            .map(|m| {
                let carry = |i: usize| {
                    let d = &m.deployments[i];
                    if !kept[d.upstream_id.index()] {
                        return None;
                    }
                    live.get(&(m.name.as_str(), d.upstream.as_str(), d.model.as_str()))
                        .cloned()
                };
                Balancer::new(m, &carry)
            })
            .collect();
        let tracing = match previous.and_then(|p| p.tracing.as_ref()) {
            Some(t) if t.cfg == config.tracing => Some(t.clone()),
            _ => crate::otel::Tracing::new(&config.tracing)
                .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e))?
                .map(Arc::new),
        };
        let master_digest = config
            .server
            .master_key
            .as_ref()
            .map(|k| crate::keys::material::digest(k.expose()));
        // Nothing fails from here on: the new config's window limits bind now.
        sched.activate();
        Ok(State {
            prices: crate::pricing::ConfigPrices::for_config(&config),
            metrics: metrics
                .map(|m| crate::metrics::handles::Handles::new(&config, m))
                .unwrap_or_default(),
            router: Router::new(&config),
            master_digest,
            tracing,
            balancers,
            upstreams,
            sched,
            cache,
            redis,
            config,
        })
    }
}

/// Process-wide state shared by the proxy and admin services.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub metrics: Metrics,
    /// The upstream connection pool for model requests (one per process, so connections are reused
    /// across requests and config reloads).
    pub connector: Upstreams,
    /// Per-client-IP token buckets (`listeners[].client_ratelimit`), kept across reloads.
    pub client_buckets: crate::sched::store::LocalStore,
    /// Virtual keys and spend, when `server.master_key` is set (opened once, at start).
    pub keys: Option<Arc<crate::keys::Keys>>,
    /// Batch API coalescing: gathers batch-eligible requests into jobs (its background service).
    pub batcher: crate::batch::Batcher,
    /// Responses API: response id → the upstream that created it, so a request continuing it
    /// (`previous_response_id`) goes back there (the conversation state lives upstream).
    pub response_pins: crate::exchange::pins::ResponsePins,
    /// Requests whose model has no price: counted and warned about once per model.
    pub unpriced: crate::pricing::Unpriced,
    /// The web console's last hour, spend per day and recent requests (bounded; fed by
    /// `proxy::observe` while `admin_ui` is on).
    pub timeline: crate::metrics::timeline::Timeline,
}

/// The upstream connection pool (HTTP/1.1), shared by every request.
///
/// Reuse of a pooled connection is awaited inline; opening a new one (TCP, TLS, proxy CONNECT) is a
/// boxed, cold path. Pingora's connect future is about 10 KiB, and inline it made every request's
/// future that large, a size the async-trait boxing of `request_filter` then copies on every request
/// (measured with callgrind: ~12k instructions per request).
pub struct Upstreams {
    h1: H1Connector,
}

impl Upstreams {
    pub fn new(pool_size: usize) -> Upstreams {
        Upstreams {
            h1: H1Connector::new(Some(ConnectorOptions::new(pool_size))),
        }
    }

    /// A pooled connection to `peer`, or a new one; `true` when pooled.
    pub async fn session(&self, peer: &HttpPeer) -> pingora::Result<(HttpSession, bool)> {
        if let Some(s) = self.h1.reused_http_session(peer).await {
            return Ok((HttpSession::H1(s), true));
        }
        let (s, reused) = Box::pin(self.h1.get_http_session(peer)).await?;
        Ok((HttpSession::H1(s), reused))
    }

    /// Return a connection whose response was read completely to the pool. Pingora's release future
    /// itself, not wrapped in an `async fn` of ours: the wrapper held the session twice more and
    /// added ~1 KB to every request's future.
    pub fn release<'a>(
        &'a self,
        session: HttpSession,
        peer: &'a HttpPeer,
        idle: Duration,
    ) -> impl std::future::Future<Output = Option<()>> + Send + 'a {
        let h1 = match session {
            HttpSession::H1(s) => Some(s),
            _ => None,
        };
        futures_util::future::OptionFuture::from(
            h1.map(|s| self.h1.release_http_session(s, peer, Some(idle))),
        )
    }
}

impl Shared {
    pub fn new(state: State, metrics: Metrics, connector: Upstreams) -> Shared {
        Shared {
            state: ArcSwap::from_pointee(state),
            metrics,
            connector,
            client_buckets: Default::default(),
            keys: None,
            batcher: crate::batch::Batcher::new(),
            response_pins: Default::default(),
            unpriced: Default::default(),
            timeline: Default::default(),
        }
    }

    /// Refresh gauges that are read rather than counted (`llmproxy_upstream_healthy`, spend by
    /// team, the spend-log queue).
    pub fn refresh_gauges(&self) {
        let state = self.state.load();
        if let Some(keys) = &self.keys {
            keys.spend_log().depth();
            let top = state.config.keys.metrics_top_teams;
            let g = &self.metrics.team_spend;
            g.reset();
            for (team, usd) in keys.team_spend_top(top) {
                g.with_label_values(&[team.as_str()]).set(usd);
            }
        }
        for (ui, u) in state.upstreams.iter().enumerate() {
            // Unhealthy when its health checks fail, or when every deployment on it is cooling down.
            let mut deployments = state
                .config
                .models
                .iter()
                .zip(&state.balancers)
                .flat_map(|(m, b)| m.deployments.iter().zip(&b.deployments))
                .filter(|(d, _)| d.upstream_id.index() == ui)
                .peekable();
            let all_cooling = deployments.peek().is_some() && deployments.all(|(_, s)| s.cooling());
            self.metrics
                .upstream_healthy
                .with_label_values(&[u.cfg.name.as_str()])
                .set(i64::from(u.healthy() && !all_cooling));
        }
    }
}
