//! Observation, once per request when it ends: the HTTP and token metrics, spend (exact, per key,
//! team and end user), the spend-log row, the scheduler's reconciliation with the real usage, the
//! OpenTelemetry span and the access log. Never message
//! content (but for the span's body when `tracing.include_content` is on) and never a secret.

use super::client_addr;
use super::ctx::{CacheOutcome, RequestCtx};
use crate::config::AccessLog;
use crate::keys::SpendLogRow;
use crate::pricing::{self, Micros};
use crate::state::Shared;
use pingora::proxy::Session;
use std::time::Duration;

/// One finished request, as every observer sees it.
struct Seen<'a> {
    /// The listener's name (the `forward` label).
    forward: &'a str,
    method: &'a str,
    /// The route template (`path` label): never a raw URL.
    path: &'a str,
    /// The status sent, 499 when the client left before one was.
    status: u16,
    elapsed: Duration,
    model: Option<&'a str>,
    upstream: Option<&'a str>,
}

/// Record a finished request.
pub fn record(shared: &Shared, session: &Session, ctx: &RequestCtx) {
    let state = &ctx.state;
    let route_label;
    let path = match ctx.route.and_then(|r| state.config.routes.get(r)) {
        Some(route) => {
            route_label = format!("{}/*", route.prefix);
            route_label.as_str()
        }
        None => ctx.path_label,
    };
    let seen = Seen {
        forward: state
            .config
            .server
            .listeners
            .get(ctx.listener)
            .map(|l| l.name.as_str())
            .unwrap_or(""),
        method: session.req_header().method.as_str(),
        path,
        status: match ctx.outcome.status {
            0 => 499,
            s => s,
        },
        elapsed: ctx.start.elapsed(),
        model: ctx
            .model
            .and_then(|i| state.config.models.get(i))
            .map(|m| m.name.as_str()),
        upstream: ctx
            .upstream
            .and_then(|u| state.upstreams.get(u))
            .map(|u| u.cfg.name.as_str()),
    };
    metrics(shared, ctx, &seen);
    let cost = spend(shared, ctx);
    spend_log(shared, ctx, &seen, cost);
    reconcile(shared, ctx);
    if state.config.admin_ui {
        shared.timeline.record(&console(ctx, &seen, cost));
    }
    if let Some(t) = &state.tracing {
        span(t, ctx, &seen);
    }
    if state.config.logging.access_log != AccessLog::Off {
        access_log(session, ctx, &seen);
    }
}

fn metrics(shared: &Shared, ctx: &RequestCtx, seen: &Seen<'_>) {
    genai(shared, ctx, seen);
    let m = &shared.metrics;
    let handles = &ctx.state.metrics;
    // A model request (POST, not a passthrough route) has its handles resolved with the config.
    let http = match ctx.endpoint {
        Some(e) if ctx.route.is_none() && seen.method == "POST" => handles.http(ctx.listener, e),
        _ => None,
    };
    match http {
        Some(h) => {
            h.requests.inc();
            h.duration.observe(seen.elapsed.as_secs_f64());
        }
        None => {
            let labels = [seen.forward, seen.method, seen.path];
            m.http_requests.with_label_values(&labels).inc();
            m.http_duration
                .with_label_values(&labels)
                .observe(seen.elapsed.as_secs_f64());
        }
    }
    let error = ctx.outcome.error.map(|e| e.label()).or(match seen.status {
        429 => Some("upstream_rate_limited"),
        400..=499 => Some("upstream_client_error"),
        500..=599 => Some("upstream_server_error"),
        _ => None,
    });
    if let Some(error) = error {
        let status = seen.status.to_string();
        m.http_errors
            .with_label_values(&[seen.forward, error, status.as_str()])
            .inc();
    }
    let model = ctx.model.and_then(|i| handles.model(i));
    if let (Some(name), Some(first)) = (seen.model, ctx.outcome.first_byte) {
        let ttft = first.duration_since(ctx.start).as_secs_f64();
        match model {
            Some(h) => h.ttft.observe(ttft),
            None => m.ttft.with_label_values(&[name]).observe(ttft),
        }
    }
    if let (Some(u), Some(name)) = (ctx.outcome.usage, seen.model) {
        let u = u.usage();
        match model {
            Some(h) => {
                h.prompt_tokens.inc_by(u.prompt_tokens);
                h.completion_tokens.inc_by(u.completion_tokens);
            }
            None => {
                m.tokens
                    .with_label_values(&[name, "prompt"])
                    .inc_by(u.prompt_tokens);
                m.tokens
                    .with_label_values(&[name, "completion"])
                    .inc_by(u.completion_tokens);
            }
        }
    }
}

/// The GenAI client metrics of a model request that reached a deployment: its duration, and its
/// input and output tokens when the answer's usage is known.
fn genai(shared: &Shared, ctx: &RequestCtx, seen: &Seen<'_>) {
    let (Some(endpoint), Some(m), Some(d)) = (ctx.endpoint, ctx.model, ctx.deployment) else {
        return;
    };
    let Some(up) = ctx.state.metrics.upstream(m, d) else {
        return;
    };
    let g = up.genai(&shared.metrics, endpoint);
    g.duration.observe(seen.elapsed.as_secs_f64());
    if let Some(u) = ctx.outcome.usage {
        let u = u.usage();
        g.input_tokens.observe(u.prompt_tokens as f64);
        g.output_tokens.observe(u.completion_tokens as f64);
    }
}

/// What a request cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    /// No usage to price (refused, failed, a listing), or a cache hit (answered at no cost).
    Nothing,
    /// The deployment's model has no price: counted, warned about once, not added to spend.
    Unpriced,
    Priced(Micros),
}

/// Usage × the deployment's price (`models[].pricing`, else the built-in table), exactly: cached
/// prompt tokens at the cached rate, cache writes at the write rate, reasoning as output. Recorded
/// for the key, its team and the end user, and in `llmproxy_spend_usd_total{model}`. A batched
/// answer is priced at the batch price, but its spend is recorded by the batcher (once per batch,
/// also for clients that left).
fn spend(shared: &Shared, ctx: &RequestCtx) -> Cost {
    let state = &ctx.state;
    let (Some(u), Some(mi), Some(di)) = (ctx.outcome.usage, ctx.model, ctx.deployment) else {
        return Cost::Nothing;
    };
    if ctx.outcome.cache == Some(CacheOutcome::Hit) {
        return Cost::Nothing;
    }
    let Some(mc) = state.config.models.get(mi) else {
        return Cost::Nothing;
    };
    let Some(price) = state.prices.get(mi, di) else {
        if let Some(d) = mc.deployments.get(di) {
            let provider = state
                .config
                .upstreams
                .get(d.upstream_id.index())
                .map_or("", |up| up.provider.as_str());
            shared.unpriced.record(provider, &d.model);
        }
        shared
            .metrics
            .unpriced
            .with_label_values(&[mc.name.as_str()])
            .inc();
        return Cost::Unpriced;
    };
    let batched = ctx.batch.id.is_some();
    let cost = pricing::cost(price, &u.usage().tokens(), batched);
    if !batched && cost > Micros::ZERO {
        shared
            .metrics
            .spend
            .with_label_values(&[mc.name.as_str()])
            .inc_by(cost.as_usd_f64());
        if let Some(keys) = &shared.keys {
            keys.record_spend(&ctx.governed, &mc.name, cost);
        }
    }
    Cost::Priced(cost)
}

/// One spend-log row per model request (with the keys database and `keys.spend_logs`), queued for
/// the background writer: never a wait, never a secret.
fn spend_log(shared: &Shared, ctx: &RequestCtx, seen: &Seen<'_>, cost: Cost) {
    let (Some(keys), Some(model)) = (&shared.keys, seen.model) else {
        return;
    };
    if !ctx.state.config.keys.spend_logs {
        return;
    }
    let u = ctx.outcome.usage.map(|u| u.usage()).unwrap_or_default();
    let end_ms = crate::keys::audit::now_ms();
    let g = &ctx.governed;
    keys.spend_log().push(SpendLogRow {
        request_id: ctx.request_id.clone(),
        key_id: ctx.caller.key().map(|k| k.shared_id().clone()),
        team_id: g.key.as_ref().and_then(|k| k.shared_team_id().cloned()),
        end_user: g.user_id.clone(),
        model: model.to_string(),
        deployment: seen.upstream.map(str::to_string),
        prompt_tokens: u.prompt_tokens,
        cached_tokens: u.cached_tokens,
        cache_write_tokens: u.cache_write_tokens,
        completion_tokens: u.completion_tokens,
        reasoning_tokens: u.reasoning_tokens,
        cost: match cost {
            Cost::Priced(c) => c,
            Cost::Nothing | Cost::Unpriced => Micros::ZERO,
        },
        priced: cost != Cost::Unpriced,
        cache_hit: ctx.outcome.cache == Some(CacheOutcome::Hit),
        batch_id: ctx.batch.id.as_deref().map(str::to_string),
        status: seen.status,
        start_ms: end_ms.saturating_sub(seen.elapsed.as_millis() as i64),
        end_ms,
    });
}

/// The request as the web console's timeline and recent-request list keep it.
fn console<'a>(
    ctx: &'a RequestCtx,
    seen: &Seen<'a>,
    cost: Cost,
) -> crate::metrics::timeline::Finished<'a> {
    let usage = ctx.outcome.usage.map(|u| u.usage());
    crate::metrics::timeline::Finished {
        request_id: &ctx.request_id,
        listener: seen.forward,
        method: seen.method,
        path: seen.path,
        model: seen.model,
        upstream: seen.upstream,
        key_id: ctx.key_id.as_deref(),
        status: seen.status,
        duration: seen.elapsed,
        ttft: ctx.outcome.first_byte.map(|t| t.duration_since(ctx.start)),
        queue: ctx.queue_wait,
        prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
        completion_tokens: usage.map_or(0, |u| u.completion_tokens),
        spend_usd: match cost {
            Cost::Priced(c) => c.as_usd_f64(),
            Cost::Nothing | Cost::Unpriced => 0.0,
        },
        cache: ctx.outcome.cache.map(|c| c.label()),
        error: ctx.outcome.error.map(|e| e.label()),
    }
}

/// Correct the scheduler's token charge with the real usage (and measure its estimate's error).
fn reconcile(shared: &Shared, ctx: &RequestCtx) {
    let (Some(a), Some(u)) = (&ctx.admission, ctx.outcome.usage) else {
        return;
    };
    let u = u.usage();
    if a.estimate.prompt > 0 && u.prompt_tokens > 0 {
        let actual = u.prompt_tokens as f64;
        shared
            .metrics
            .token_estimate_error
            .with_label_values(&[a.sched.name.as_str()])
            .observe((a.estimate.prompt as f64 - actual) / actual);
    }
    a.sched.reconcile(
        a.deployment,
        a.estimate.total() as f64,
        (u.prompt_tokens + u.completion_tokens) as f64,
        a.at,
    );
}

/// One line per request, never with message content or secrets.
fn access_log(session: &Session, ctx: &RequestCtx, seen: &Seen<'_>) {
    let state = &ctx.state;
    let client = client_addr::client_ip(session, &state.config.server.trusted_proxies)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let ms = seen.elapsed.as_secs_f64() * 1000.0;
    let (pt, ct) = ctx
        .outcome
        .usage
        .map(|u| (u.usage().prompt_tokens, u.usage().completion_tokens))
        .unwrap_or((0, 0));
    let ttft_ms = ctx
        .outcome
        .first_byte
        .map(|t| (t.duration_since(ctx.start).as_secs_f64() * 1e6).round() / 1000.0);
    let (forward, path, status) = (seen.forward, seen.path, seen.status);
    match state.config.logging.access_log {
        AccessLog::Json => {
            let line = serde_json::json!({
                "request_id": ctx.request_id, "listener": forward, "client": client,
                "method": seen.method, "path": path,
                "model": seen.model, "upstream": seen.upstream, "status": status,
                "duration_ms": (ms * 1000.0).round() / 1000.0, "ttft_ms": ttft_ms,
                "error": ctx.outcome.error.map(|e| e.label()),
                "prompt_tokens": pt, "completion_tokens": ct,
                "queue_ms": ctx.queue_wait.as_millis() as u64, "key_id": ctx.key_id.as_deref(),
                "cache": ctx.outcome.cache.map(|c| c.label()),
                "usage_estimated": ctx.outcome.usage.is_some_and(|u| u.estimated()),
                "batch": ctx.batch.id.as_deref(),
            });
            log::info!(target: "access", "{line}");
        }
        AccessLog::Text => log::info!(
            target: "access",
            "{} {client} {forward} {} {path} model={} upstream={} status={status} {ms:.1}ms tokens={pt}/{ct}",
            ctx.request_id,
            seen.method,
            seen.model.unwrap_or("-"),
            seen.upstream.unwrap_or("-")
        ),
        AccessLog::Off => {}
    }
}

/// One OpenTelemetry span for the finished request: the OpenTelemetry GenAI semantic conventions'
/// attributes and the gateway's own; content only with `tracing.include_content`.
fn span(t: &crate::otel::Tracing, ctx: &RequestCtx, seen: &Seen<'_>) {
    use opentelemetry::{KeyValue, StringValue, Value};
    let end = std::time::SystemTime::now();
    let start = end.checked_sub(seen.elapsed).unwrap_or(end);
    let state = &ctx.state;
    let mut a = vec![
        KeyValue::new("llmproxy.request_id", ctx.request_id.clone()),
        KeyValue::new("llmproxy.listener", seen.forward.to_string()),
        KeyValue::new("http.request.method", seen.method.to_string()),
        KeyValue::new("http.route", seen.path.to_string()),
        KeyValue::new("http.response.status_code", i64::from(seen.status)),
        KeyValue::new("llmproxy.queue_ms", ctx.queue_wait.as_millis() as i64),
        KeyValue::new("llmproxy.duration_ms", seen.elapsed.as_secs_f64() * 1000.0),
    ];
    if let Some(e) = ctx.endpoint {
        a.push(KeyValue::new(
            "gen_ai.operation.name",
            crate::otel::operation(e),
        ));
    }
    if let Some(m) = seen.model {
        a.push(KeyValue::new("gen_ai.request.model", m.to_string()));
    }
    if let Some(pool) = ctx.upstream.and_then(|u| state.upstreams.get(u)) {
        a.push(KeyValue::new(
            "gen_ai.provider.name",
            crate::otel::provider_name(pool.cfg.provider, &pool.cfg.url.host),
        ));
        a.push(KeyValue::new("server.address", pool.cfg.url.host.clone()));
        a.push(KeyValue::new("server.port", i64::from(pool.cfg.url.port)));
    }
    if let Some(u) = seen.upstream {
        a.push(KeyValue::new("llmproxy.deployment", u.to_string()));
    }
    if let Some(m) = ctx.outcome.usage {
        let u = m.usage();
        a.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            u.prompt_tokens as i64,
        ));
        a.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            u.completion_tokens as i64,
        ));
        if u.cached_tokens > 0 {
            a.push(KeyValue::new(
                "gen_ai.usage.cache_read.input_tokens",
                u.cached_tokens as i64,
            ));
        }
        if u.cache_write_tokens > 0 {
            a.push(KeyValue::new(
                "gen_ai.usage.cache_creation.input_tokens",
                u.cache_write_tokens as i64,
            ));
        }
        if u.reasoning_tokens > 0 {
            a.push(KeyValue::new(
                "gen_ai.usage.reasoning.output_tokens",
                u.reasoning_tokens as i64,
            ));
        }
        if m.estimated() {
            a.push(KeyValue::new("llmproxy.usage_estimated", true));
        }
    }
    if let Some(first) = ctx.outcome.first_byte {
        let ttft = first.duration_since(ctx.start);
        a.push(KeyValue::new(
            "llmproxy.ttft_ms",
            ttft.as_secs_f64() * 1000.0,
        ));
        if ctx.endpoint.is_some() {
            a.push(KeyValue::new(
                "gen_ai.server.time_to_first_token",
                ttft.as_secs_f64(),
            ));
        }
    }
    let include_content = t.cfg.include_content;
    if let Some(tail) = &ctx.traced_answer {
        let facts = crate::otel::AnswerFacts::read(tail.whole(), tail.tail());
        if let Some(m) = facts.model {
            a.push(KeyValue::new("gen_ai.response.model", m));
        }
        if !facts.finish_reasons.is_empty() {
            let reasons: Vec<StringValue> = facts
                .finish_reasons
                .into_iter()
                .map(StringValue::from)
                .collect();
            a.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(reasons.into()),
            ));
        }
        if include_content {
            if let Some(o) = facts.output {
                a.push(KeyValue::new("gen_ai.output.messages", o));
            }
        }
    }
    if include_content {
        if let Some(body) = ctx.traced_body.as_deref() {
            a.extend(crate::otel::input_content(body));
        }
    }
    if let Some(c) = ctx.outcome.cache {
        a.push(KeyValue::new("llmproxy.cache", c.label()));
    }
    if let Some(k) = &ctx.key_id {
        a.push(KeyValue::new("llmproxy.key_id", k.to_string()));
    }
    if let Some(e) = ctx.outcome.error {
        a.push(KeyValue::new("error.type", e.label()));
    }
    t.record(crate::otel::RequestSpan {
        name: &format!("{} {}", seen.method, seen.path),
        start,
        end,
        attributes: a,
        error: ctx.outcome.error.map(|e| e.label()),
    });
}
