//! Observation, once per request when it ends: the HTTP and token metrics, spend, the scheduler's
//! reconciliation with the real usage, the OpenTelemetry span and the access log. Never message
//! content (but for the span's body when `tracing.include_content` is on) and never a secret.

use super::client_addr;
use super::ctx::RequestCtx;
use crate::config::AccessLog;
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
    spend(shared, ctx);
    reconcile(shared, ctx);
    if let Some(t) = &state.tracing {
        span(t, ctx, &seen);
    }
    if state.config.logging.access_log != AccessLog::Off {
        access_log(session, ctx, &seen);
    }
}

fn metrics(shared: &Shared, ctx: &RequestCtx, seen: &Seen<'_>) {
    let m = &shared.metrics;
    let labels = [seen.forward, seen.method, seen.path];
    m.http_requests.with_label_values(&labels).inc();
    m.http_duration
        .with_label_values(&labels)
        .observe(seen.elapsed.as_secs_f64());
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
    if let (Some(model), Some(first)) = (seen.model, ctx.outcome.first_byte) {
        m.ttft
            .with_label_values(&[model])
            .observe(first.duration_since(ctx.start).as_secs_f64());
    }
    if let (Some(u), Some(model)) = (ctx.outcome.usage, seen.model) {
        let u = u.usage();
        m.tokens
            .with_label_values(&[model, "prompt"])
            .inc_by(u.prompt_tokens);
        m.tokens
            .with_label_values(&[model, "completion"])
            .inc_by(u.completion_tokens);
    }
}

/// Usage × the model's price, for the caller's key and `llmproxy_spend_usd_total{model}`. A batched
/// answer's spend is recorded by the batcher, at the batch price; a cache hit costs nothing.
fn spend(shared: &Shared, ctx: &RequestCtx) {
    let (Some(u), Some(mc)) = (
        ctx.outcome.usage,
        ctx.model.and_then(|i| ctx.state.config.models.get(i)),
    ) else {
        return;
    };
    let (Some(p), None) = (mc.pricing.as_ref(), &ctx.batch.id) else {
        return;
    };
    let u = u.usage();
    let usd = crate::keys::cost(
        u.prompt_tokens,
        u.completion_tokens,
        p.input_per_mtok,
        p.output_per_mtok,
        None,
    );
    if usd > 0.0 {
        shared
            .metrics
            .spend
            .with_label_values(&[mc.name.as_str()])
            .inc_by(usd);
        if let (Some(keys), Some(k)) = (&shared.keys, ctx.caller.key()) {
            keys.record_spend(k, &mc.name, usd);
        }
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

/// One OpenTelemetry span for the finished request.
fn span(t: &crate::otel::Tracing, ctx: &RequestCtx, seen: &Seen<'_>) {
    use opentelemetry::KeyValue;
    let end = std::time::SystemTime::now();
    let start = end.checked_sub(seen.elapsed).unwrap_or(end);
    let mut a = vec![
        KeyValue::new("llmproxy.request_id", ctx.request_id.clone()),
        KeyValue::new("llmproxy.listener", seen.forward.to_string()),
        KeyValue::new("http.request.method", seen.method.to_string()),
        KeyValue::new("http.route", seen.path.to_string()),
        KeyValue::new("http.response.status_code", i64::from(seen.status)),
        KeyValue::new("llmproxy.queue_ms", ctx.queue_wait.as_millis() as i64),
        KeyValue::new("llmproxy.duration_ms", seen.elapsed.as_secs_f64() * 1000.0),
    ];
    if let Some(m) = seen.model {
        a.push(KeyValue::new("gen_ai.request.model", m.to_string()));
    }
    if let Some(u) = seen.upstream {
        a.push(KeyValue::new("llmproxy.deployment", u.to_string()));
    }
    if let Some(u) = ctx.outcome.usage {
        let u = u.usage();
        a.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            u.prompt_tokens as i64,
        ));
        a.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            u.completion_tokens as i64,
        ));
    }
    if let Some(first) = ctx.outcome.first_byte {
        a.push(KeyValue::new(
            "llmproxy.ttft_ms",
            first.duration_since(ctx.start).as_secs_f64() * 1000.0,
        ));
    }
    if let Some(c) = ctx.outcome.cache {
        a.push(KeyValue::new("llmproxy.cache", c.label()));
    }
    if let Some(k) = &ctx.key_id {
        a.push(KeyValue::new("llmproxy.key_id", k.to_string()));
    }
    t.record(crate::otel::RequestSpan {
        name: &format!("{} {}", seen.method, seen.path),
        start,
        end,
        attributes: a,
        error: ctx.outcome.error.map(|e| e.label()),
        content: ctx.traced_body.as_deref(),
    });
}
