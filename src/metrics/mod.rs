//! Prometheus collectors, registered once per process in their own registry.
//!
//! The documented names and labels are kept exactly (`llmproxy_upstream_*`, `llmproxy_http_*`,
//! `llmproxy_ratelimit_total`); `group` is the model name, `upstream` the upstream name, `forward` the
//! listener name and `path` the route template, never a raw URL.

pub mod handles;
pub mod recent;
pub mod stats;
pub mod timeline;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The GenAI metrics' labels: the semantic conventions' attribute names, dots as underscores.
const GENAI_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
];
const GENAI_LABELS_TOKENS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_token_type",
];

/// Latency buckets (seconds) suited to both fast non-LLM calls and long generations.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

pub struct Metrics {
    pub registry: Registry,
    /// `/stats`: counts and latency percentiles.
    pub stats: stats::Stats,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_errors: IntCounterVec,
    pub ratelimit: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub tokens: IntCounterVec,
    pub ttft: HistogramVec,
    pub upstream_healthy: IntGaugeVec,
    pub stream_errors: IntCounterVec,
    pub retries: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub fallbacks: IntCounterVec,
    /// OpenTelemetry's GenAI client metrics, in Prometheus form: `gen_ai.client.token.usage`
    /// and `gen_ai.client.operation.duration` (the gateway is the client of the provider).
    pub genai_tokens: HistogramVec,
    pub genai_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub queue_wait: HistogramVec,
    pub queue_rejections: IntCounterVec,
    pub state_errors: IntCounterVec,
    pub token_estimate_error: HistogramVec,
    pub cache_requests: IntCounterVec,
    pub spend: prometheus::CounterVec,
    /// Lifetime spend of the top `keys.metrics_top_teams` teams, the rest as `team="other"` (set at
    /// each scrape from the key view, so the label set stays bounded).
    pub team_spend: prometheus::GaugeVec,
    /// Requests whose model has no price (neither `models[].pricing` nor the built-in table).
    pub unpriced: IntCounterVec,
    /// Batch API jobs by how they ended (completed, failed, expired, cancelled, submit_error).
    pub batch_jobs: IntCounterVec,
    /// Batch-eligible requests by how they were answered (batched, error, fallback, client_gone).
    pub batch_requests: IntCounterVec,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "llmproxy_upstream_healthy",
                "1 when the upstream has a healthy address",
            ),
            &["upstream"],
        )?;
        r.register(Box::new(upstream_healthy.clone()))?;
        // Counted by the span exporters, which run outside any one config (see `otel`).
        if let Some(c) = crate::otel::EXPORT_FAILURES.as_ref() {
            r.register(Box::new(c.clone()))?;
        }
        let queue_depth = IntGaugeVec::new(
            Opts::new("llmproxy_queue_depth", "Requests waiting for rate budget"),
            &["model"],
        )?;
        r.register(Box::new(queue_depth.clone()))?;
        let token_estimate_error = HistogramVec::new(
            HistogramOpts::new(
                "llmproxy_token_estimate_error_ratio",
                "(estimated - actual) / actual prompt tokens, per answered request",
            )
            .buckets(vec![
                -0.5, -0.2, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.2, 0.5,
            ]),
            &["model"],
        )?;
        r.register(Box::new(token_estimate_error.clone()))?;
        let spend = prometheus::CounterVec::new(
            Opts::new(
                "llmproxy_spend_usd_total",
                "Spend in USD: usage priced with models[].pricing or the built-in price table (cache hits cost nothing)",
            ),
            &["model"],
        )?;
        r.register(Box::new(spend.clone()))?;
        let team_spend = prometheus::GaugeVec::new(
            Opts::new(
                "llmproxy_team_spend_usd",
                "Lifetime spend in USD of the top teams (keys.metrics_top_teams), the rest as team=\"other\"",
            ),
            &["team"],
        )?;
        r.register(Box::new(team_spend.clone()))?;
        Ok(Metrics {
            spend,
            team_spend,
            unpriced: counter(
                &r,
                "llmproxy_unpriced_requests_total",
                "Requests whose model has no price (spend not counted): set models[].pricing",
                &["model"],
            )?,
            queue_depth,
            token_estimate_error,
            queue_wait: histogram(
                &r,
                "llmproxy_queue_wait_seconds",
                "Time requests waited in the scheduler's queue",
                &["model"],
            )?,
            queue_rejections: counter(
                &r,
                "llmproxy_queue_rejections_total",
                "Requests the scheduler refused, by reason (queue_full, max_wait, state_unavailable)",
                &["model", "reason"],
            )?,
            cache_requests: counter(
                &r,
                "llmproxy_cache_requests_total",
                "Response cache lookups by result (hit, miss, bypass, error)",
                &["result"],
            )?,
            batch_jobs: counter(
                &r,
                "llmproxy_batch_jobs_total",
                "Batch API jobs by final status (completed, failed, expired, cancelled, submit_error)",
                &["status"],
            )?,
            batch_requests: counter(
                &r,
                "llmproxy_batch_requests_total",
                "Requests handed to the batcher by result (batched, error, fallback, client_gone)",
                &["result"],
            )?,
            state_errors: counter(
                &r,
                "llmproxy_state_errors_total",
                "Failed calls to shared state (Redis)",
                &["backend"],
            )?,
            stats: stats::Stats::default(),
            upstream_requests: counter(
                &r,
                "llmproxy_upstream_requests_total",
                "Requests forwarded to upstreams",
                &["group", "upstream"],
            )?,
            upstream_duration: histogram(
                &r,
                "llmproxy_upstream_duration_seconds",
                "Upstream request duration",
                &["group", "upstream"],
            )?,
            upstream_errors: counter(
                &r,
                "llmproxy_upstream_errors_total",
                "Upstream errors",
                &["error", "group", "upstream"],
            )?,
            http_requests: counter(
                &r,
                "llmproxy_http_requests_total",
                "Client HTTP requests",
                &["forward", "method", "path"],
            )?,
            http_duration: histogram(
                &r,
                "llmproxy_http_request_duration_seconds",
                "Client HTTP request duration",
                &["forward", "method", "path"],
            )?,
            http_errors: counter(
                &r,
                "llmproxy_http_request_errors_total",
                "Client HTTP requests that ended in an error",
                &["forward", "error", "status"],
            )?,
            ratelimit: counter(
                &r,
                "llmproxy_ratelimit_total",
                "Requests rejected by rate limiting",
                &["forward"],
            )?,
            connections_refused: counter(
                &r,
                "llmproxy_connections_refused_total",
                "Client connections closed at once for being over a cap (reason: max_connections, max_connections_per_ip)",
                &["reason"],
            )?,
            tokens: counter(
                &r,
                "llmproxy_tokens_total",
                "Tokens reported by upstreams",
                &["model", "kind"],
            )?,
            ttft: histogram(
                &r,
                "llmproxy_time_to_first_token_seconds",
                "Time from request start to the first response byte",
                &["model"],
            )?,
            stream_errors: counter(
                &r,
                "llmproxy_stream_errors_total",
                "Streams ended by an upstream failure after their first byte",
                &["group", "upstream"],
            )?,
            retries: counter(
                &r,
                "llmproxy_retries_total",
                "Upstream attempts after the first, per model",
                &["group"],
            )?,
            config_reloads: counter(
                &r,
                "llmproxy_config_reloads_total",
                "Config reloads by result",
                &["result"],
            )?,
            fallbacks: counter(
                &r,
                "llmproxy_fallbacks_total",
                "Requests handed to a fallback model",
                &["group", "fallback"],
            )?,
            genai_tokens: {
                // The semantic conventions' advised buckets (powers of 4 tokens).
                let buckets = (0..14).map(|i| 4f64.powi(i)).collect();
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_token_usage",
                        "OpenTelemetry gen_ai.client.token.usage: tokens per request, by type (input, output)",
                    )
                    .buckets(buckets),
                    GENAI_LABELS_TOKENS,
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            genai_duration: {
                let buckets = (0..14).map(|i| 0.01 * 2f64.powi(i)).collect();
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_operation_duration_seconds",
                        "OpenTelemetry gen_ai.client.operation.duration: a model request, start to end",
                    )
                    .buckets(buckets),
                    GENAI_LABELS,
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            upstream_healthy,
            registry: r,
        })
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics failed: {e}");
        }
        buf
    }
}
