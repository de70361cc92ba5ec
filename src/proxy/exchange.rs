//! The upstream exchange for model requests, run from `request_filter` with Pingora's `Connector`.
//!
//! Why not Pingora's proxy loop: routing needs `model` from the body, and Pingora 0.9 can only replay a
//! body it buffered itself, up to 64 KiB. Holding the body as `Bytes` here lets every attempt (the next
//! deployment after a refused connect, retries after a 429 or 5xx, fallbacks to other models) resend
//! bodies of any size up to `server.max_request_body`, through one code path.
//!
//! Order of events for one request:
//! 1. models: the requested one, then its `fallbacks` (or the request's own `fallbacks`); an upstream
//!    that says the context is too long switches to `context_window_fallbacks` at once;
//! 2. per model, up to `retry.attempts` attempts, each on a deployment not tried yet when one is left,
//!    with exponential backoff and jitter (an upstream's `Retry-After` cools that deployment instead of
//!    making the client wait when another deployment can answer);
//! 3. per attempt: connect, send, read the response header and the first body chunk. Until that first
//!    chunk is written to the client a failure can still move to another attempt; after it, an upstream
//!    failure ends an SSE stream with an error event and `[DONE]` (never a silent truncation).
//!
//! The response is relayed chunk by chunk as it arrives (each chunk written and flushed before the next
//! read), so SSE pacing and bytes are preserved; usage is read from a bounded tail of the body. A client
//! that goes away is noticed while waiting on the upstream, and the upstream connection is dropped so the
//! provider stops generating.

use super::body::ModelRequest;
use super::ctx::RequestCtx;
use crate::balance::UpstreamPool;
use crate::config::Model;
use crate::config::Provider;
use crate::error::GatewayError;
use crate::providers::anthropic::{self, StreamTranslator};
use crate::providers::anthropic_inbound::{self, ChatStreamToMessages};
use crate::providers::usage::{UsageEventStrip, UsageScanner};
use crate::providers::{openai, relayable};
use crate::route::{self, Endpoint};
use crate::state::{Shared, State};
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use rand::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// Error bodies up to this size are buffered to decide on a retry or a context-window fallback.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// At most this many fallback models per request (configured or per-request).
const MAX_FALLBACKS: usize = 5;

/// How a relay ended once the response header was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    Complete,
    /// The response broke off midway (upstream failure on a non-SSE body, or the client left): the
    /// client connection must be dropped, not finished, so a truncation is visible.
    Truncated,
}

/// Everything one exchange needs from the request.
pub struct Exchange<'r, 'b> {
    pub endpoint: Endpoint,
    pub model_idx: usize,
    pub req: &'r ModelRequest<'b>,
    pub raw: &'r Bytes,
}

/// An upstream answer held back (an error status) until the gateway decides to retry or relay it.
struct Buffered {
    header: ResponseHeader,
    body: Bytes,
    upstream: usize,
}

/// Why a model could not answer.
enum Failure {
    Error(GatewayError),
    /// The last upstream answer, relayed as it is when nothing else works.
    Upstream(Buffered),
    /// The upstream said the context is too long.
    ContextWindow(Buffered),
    ClientGone,
}

/// One attempt's outcome.
enum Outcome {
    Done(Relayed),
    ClientGone,
    /// Nothing was sent upstream; `true` when the connect timed out.
    Connect(String, bool),
    /// No response (or first byte) within the first-byte timeout or the request deadline.
    Timeout,
    /// The upstream closed or broke before the first byte reached the client.
    Broken(String),
    /// An error status, buffered; with the upstream's `Retry-After`.
    Status(Box<Buffered>, Option<Duration>),
}

/// The wire format of one attempt: what is sent upstream and how the answer is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// OpenAI's format both ways (OpenAI, Azure OpenAI, OpenAI-compatible servers).
    Native,
    /// An OpenAI chat request answered by Anthropic: translated both ways.
    AnthropicChat,
    /// Anthropic's own `/v1/messages`, relayed as it is (usage read from Anthropic's events).
    AnthropicMessages,
    /// An Anthropic Messages request answered by an OpenAI-style deployment: sent as a chat
    /// completion, the answer translated back (`anthropic_inbound`).
    MessagesViaChat,
}

impl Dialect {
    fn of(provider: Provider, endpoint: Endpoint) -> Dialect {
        match (provider, endpoint) {
            (Provider::Anthropic, Endpoint::Messages | Endpoint::CountTokens) => {
                Dialect::AnthropicMessages
            }
            (Provider::Anthropic, _) => Dialect::AnthropicChat,
            (_, Endpoint::Messages) => Dialect::MessagesViaChat,
            _ => Dialect::Native,
        }
    }
}

/// Largest translated (non-streamed) Anthropic answer the gateway holds to convert.
const TRANSLATED_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Deployments of `model` whose provider cannot serve `endpoint` (`providers::supports`).
fn unsupported_deployments(state: &State, model: &Model, endpoint: Endpoint) -> Vec<usize> {
    model
        .deployments
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            !crate::providers::supports(state.config.upstreams[d.upstream_idx].provider, endpoint)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The deployment of `model` on the upstream that created the request's `previous_response_id`
/// (Responses API), if the gateway saw it created.
async fn pinned_deployment(
    shared: &Shared,
    state: &State,
    model: &Model,
    ex: &Exchange<'_, '_>,
) -> Option<usize> {
    if ex.endpoint != Endpoint::Responses {
        return None;
    }
    let raw = ex.req.body.get("previous_response_id")?;
    let id: String = serde_json::from_str(raw).ok()?;
    let upstream = shared.response_pins.get(&id, state.redis.as_ref()).await?;
    model
        .deployments
        .iter()
        .position(|d| state.config.upstreams[d.upstream_idx].name == *upstream)
}

/// The `id` of a Responses API answer (`resp_...`), from its first bytes: the object itself, or
/// the stream's first event (`response.created`).
fn response_id(first: &[u8]) -> Option<&str> {
    let at = memchr::memmem::find(first, b"\"id\":\"resp_")? + 6;
    let len = memchr::memchr(b'"', &first[at..])?;
    std::str::from_utf8(&first[at..at + len])
        .ok()
        .filter(|id| id.len() <= 256)
}

/// Time limits of one request.
#[derive(Clone, Copy)]
struct Deadlines {
    total: TokioInstant,
}

/// Forward a model request with retries and fallbacks. `Err` means nothing was written to the client.
pub async fn forward(
    shared: &Shared,
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    ex: Exchange<'_, '_>,
) -> Result<Relayed, GatewayError> {
    let cfg = &state.config;
    let primary = &cfg.models[ex.model_idx];
    let o = &ex.req.overrides;
    let fallbacks = resolve_list(
        state,
        ctx,
        o.fallbacks.as_ref(),
        &primary.fallbacks,
        "fallbacks",
    )?;
    let cw_fallbacks = resolve_list(
        state,
        ctx,
        o.context_window_fallbacks.as_ref(),
        &primary.context_window_fallbacks,
        "context_window_fallbacks",
    )?;
    // The whole-request limit: the model's `timeout` (default: its first upstream's request timeout),
    // lowered by the request's own `request_timeout`.
    let model_limit = primary.timeout.unwrap_or_else(|| {
        primary
            .deployments
            .first()
            .map(|d| cfg.upstreams[d.upstream_idx].client.request_timeout)
            .unwrap_or(Duration::from_secs(300))
    });
    let limit = o
        .request_timeout
        .map_or(model_limit, |t| t.min(model_limit));
    let deadlines = Deadlines {
        // After a wait for a batch that sent the request back, the limit starts anew.
        total: TokioInstant::from_std(ctx.start) + ctx.batch.waited + limit,
    };

    let mut chain: Vec<usize> = std::iter::once(ex.model_idx).chain(fallbacks).collect();
    let mut next = 0;
    let mut in_context_fallback = false;
    let mut last: Option<Failure> = None;
    while next < chain.len() {
        let m = chain[next];
        next += 1;
        if next > 1 {
            shared
                .metrics
                .fallbacks
                .with_label_values(&[primary.name.as_str(), cfg.models[m].name.as_str()])
                .inc();
        }
        match try_model(shared, state, session, ctx, &ex, m, deadlines).await {
            Ok(relayed) => return Ok(relayed),
            Err(Failure::ClientGone) => return Ok(Relayed::Truncated),
            Err(Failure::ContextWindow(b)) if !in_context_fallback => {
                in_context_fallback = true;
                chain = cw_fallbacks.clone();
                next = 0;
                last = Some(Failure::ContextWindow(b));
            }
            Err(f) => last = Some(f),
        }
        if TokioInstant::now() >= deadlines.total {
            break;
        }
    }
    match last {
        Some(Failure::Upstream(b)) | Some(Failure::ContextWindow(b)) => {
            Ok(relay_buffered(state, session, ctx, b).await)
        }
        Some(Failure::Error(e)) => Err(e),
        Some(Failure::ClientGone) => Ok(Relayed::Truncated),
        None => Err(GatewayError::UpstreamTimeout(format!(
            "No answer for model `{}` within {limit:?}",
            primary.name
        ))),
    }
}

/// Per-request fallbacks (checked against the listener's scope, capped) or the configured ones.
fn resolve_list(
    state: &State,
    ctx: &RequestCtx,
    requested: Option<&Vec<String>>,
    configured: &[String],
    param: &'static str,
) -> Result<Vec<usize>, GatewayError> {
    let cfg = &state.config;
    let listener = &cfg.server.listeners[ctx
        .listener
        .min(cfg.server.listeners.len().saturating_sub(1))];
    let names: &[String] = requested.map(|v| v.as_slice()).unwrap_or(configured);
    let mut out = Vec::with_capacity(names.len());
    for name in names.iter().take(MAX_FALLBACKS) {
        match state.router.lookup(name) {
            Some(i) if route::allowed(cfg, listener, i) => out.push(i),
            _ if requested.is_some() => {
                return Err(GatewayError::invalid(
                    format!("`{param}` names an unknown or not allowed model `{name}`"),
                    Some(param),
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Try one model: attempts over its deployments under its retry policy.
async fn try_model(
    shared: &Shared,
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    ex: &Exchange<'_, '_>,
    m: usize,
    deadlines: Deadlines,
) -> Result<Relayed, Failure> {
    let model = &state.config.models[m];
    let balancer = &state.balancers[m];
    let policy = &model.retry;
    let attempts = match ex.req.overrides.num_retries {
        Some(n) => (n + 1).min(policy.attempts),
        None => policy.attempts,
    };
    // Deployments on a provider without this endpoint are never picked (a model may mix providers).
    let unsupported = unsupported_deployments(state, model, ex.endpoint);
    if unsupported.len() == model.deployments.len() {
        return Err(Failure::Error(GatewayError::invalid(
            format!(
                "Model `{}` is not served by a provider that has {} (its deployments are on `provider: anthropic`, which has chat completions only)",
                model.name,
                ex.endpoint.template(),
            ),
            Some("model"),
        )));
    }
    let mut unsupported = unsupported;
    // A Responses request continuing a stored response goes to the deployment that created it.
    if let Some(pinned) = pinned_deployment(shared, state, model, ex).await {
        unsupported = (0..model.deployments.len())
            .filter(|&i| i != pinned)
            .collect();
    }
    let mut tried: Vec<usize> = unsupported.clone();
    let mut last: Option<Failure> = None;
    let mut retry_after: Option<Duration> = None;
    for attempt in 0..attempts {
        let picked = balancer.pick(&state.upstreams, &tried).or_else(|| {
            // Every deployment was tried once: start over (retries may go back to one).
            tried.clear();
            tried.extend_from_slice(&unsupported);
            balancer.pick(&state.upstreams, &unsupported)
        });
        let Some(mut d) = picked else {
            break;
        };
        if attempt > 0 {
            let delay = backoff(model, attempt, retry_after.take());
            if TokioInstant::now() + delay >= deadlines.total {
                break;
            }
            shared
                .metrics
                .retries
                .with_label_values(&[model.name.as_str()])
                .inc();
            if !delay.is_zero() && wait_or_client_gone(session, delay).await {
                return Err(Failure::ClientGone);
            }
        }
        let sched = &state.sched.models[m];
        // Counting tokens uses no model capacity (Anthropic limits it apart).
        if sched.active() && ex.endpoint != Endpoint::CountTokens {
            match admit(state, session, ctx, ex, m, d, &tried, deadlines).await {
                Ok(admitted) => d = admitted,
                Err(f) => return Err(f),
            }
        }
        tried.push(d);
        let dep = &model.deployments[d];
        let pool = &state.upstreams[dep.upstream_idx];
        let Some(addr) = pool.pick(&[]) else {
            continue;
        };
        ctx.model = Some(m);
        ctx.upstream = Some(dep.upstream_idx);
        let dialect = Dialect::of(pool.cfg.provider, ex.endpoint);
        // Reconciling a stream's tokens needs its usage: ask for it when the client did not, and
        // take the extra event out of the client's stream.
        ctx.strip_usage = dialect == Dialect::Native
            && ex.req.stream
            && matches!(
                ex.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions
            )
            && state.sched.models[m].needs_usage(d)
            && !client_asked_usage(&ex.req.body);
        let body = if dialect == Dialect::AnthropicChat {
            match anthropic::request_body(
                ex.raw,
                &dep.model,
                &dep.params,
                anthropic::DEFAULT_MAX_TOKENS,
                model.drops_params(),
            ) {
                Ok(b) => b,
                // The client's request has no Anthropic equivalent: a 400 naming the field.
                Err(e) => return Err(Failure::Error(translate_error(e))),
            }
        } else if dialect == Dialect::MessagesViaChat {
            let opts = anthropic_inbound::Options {
                limit_field: limit_field(pool.cfg.provider, &dep.model),
                drop_unsupported: model.drops_params(),
            };
            match anthropic_inbound::request_body(ex.raw, &dep.model, &dep.params, opts) {
                Ok(b) => b,
                Err(e) => return Err(Failure::Error(translate_inbound_error(e))),
            }
        } else if ctx.strip_usage || !dep.params.is_empty() {
            ex.req.body.with_model_and(
                &dep.model,
                ex.raw.len(),
                ctx.strip_usage
                    .then_some(("stream_options", r#"{"include_usage":true}"#)),
                &dep.params,
            )
        } else if dep.model == ex.req.model && !ex.req.has_controls {
            ex.raw.clone()
        } else {
            ex.req.body.with_model(&dep.model, ex.raw.len())
        };
        let _in_flight = balancer.enter(d);
        let labels = [model.name.as_str(), pool.cfg.name.as_str()];
        shared
            .metrics
            .upstream_requests
            .with_label_values(&labels)
            .inc();
        let started = Instant::now();
        let target = Target {
            pool,
            upstream_idx: dep.upstream_idx,
            model,
            // Upstream path: Azure puts the deployment name in it.
            deployment: &dep.model,
            headers: &dep.headers,
            addr,
            dialect,
            include_usage: dialect == Dialect::AnthropicChat && client_asked_usage(&ex.req.body),
            pin_response: ex.endpoint == Endpoint::Responses,
            // Self-hosted servers may report no usage: a stream sends it only when asked
            // (`stream_options.include_usage`), and some servers ignore even that.
            estimate_usage: pool.cfg.provider == Provider::OpenAiCompatible
                && matches!(
                    ex.endpoint,
                    Endpoint::ChatCompletions | Endpoint::Completions
                ),
            // Only a stream nobody asked usage for is likely to end without it.
            keep_stream_text: pool.cfg.provider == Provider::OpenAiCompatible
                && ex.req.stream
                && !ctx.strip_usage
                && matches!(
                    ex.endpoint,
                    Endpoint::ChatCompletions | Endpoint::Completions
                )
                && !client_asked_usage(&ex.req.body),
            input_estimate: if dialect == Dialect::MessagesViaChat && ex.req.stream {
                prompt_estimate(ctx, ex)
            } else {
                0
            },
        };
        // Anthropic's Messages API on an OpenAI-style deployment is a chat completion there.
        let upstream_endpoint = if dialect == Dialect::MessagesViaChat {
            Endpoint::ChatCompletions
        } else {
            ex.endpoint
        };
        let outcome = attempt_once(
            shared,
            &target,
            session,
            ctx,
            upstream_endpoint,
            body,
            deadlines,
        )
        .await;
        shared
            .metrics
            .upstream_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        let state_d = &balancer.deployments[d];
        let (failure, retryable) = match outcome {
            Outcome::Done(relayed) => {
                if let Some(text) = ctx.estimate_text.take() {
                    estimate_usage(ctx, ex, &dep.model, text).await;
                }
                return Ok(relayed);
            }
            Outcome::ClientGone => return Err(Failure::ClientGone),
            Outcome::Connect(msg, timed_out) => {
                count_error(
                    shared,
                    if timed_out {
                        "connect_timeout"
                    } else {
                        "connect"
                    },
                    &labels,
                );
                log::warn!(
                    "request {}: connect to {} ({addr}) failed: {msg}",
                    ctx.request_id,
                    pool.cfg.name
                );
                pool.note_error(format!("connect to {addr}: {msg}"));
                state_d.record_failure(model.cooldown.as_ref());
                let what = format!("a deployment of `{}` ({})", model.name, pool.cfg.name);
                let e = if timed_out {
                    GatewayError::UpstreamTimeout(format!("Connecting to {what} timed out"))
                } else {
                    GatewayError::UpstreamError(format!("Could not connect to {what}: {msg}"))
                };
                (Failure::Error(e), policy.on.connect)
            }
            Outcome::Timeout => {
                count_error(shared, "timeout", &labels);
                pool.note_error("timed out waiting for the response".into());
                state_d.record_failure(model.cooldown.as_ref());
                let e = GatewayError::UpstreamTimeout(format!(
                    "Upstream `{}` did not answer model `{}` in time",
                    pool.cfg.name, model.name
                ));
                (Failure::Error(e), policy.on.timeout)
            }
            Outcome::Broken(msg) => {
                count_error(shared, "closed", &labels);
                pool.note_error(msg.clone());
                state_d.record_failure(model.cooldown.as_ref());
                let e = GatewayError::UpstreamError(format!(
                    "Upstream `{}` failed: {msg}",
                    pool.cfg.name
                ));
                (Failure::Error(e), policy.on.server_error)
            }
            Outcome::Status(b, after) => {
                let status = b.header.status.as_u16();
                let b = *b;
                if is_context_window_error(status, &b.body) {
                    count_error(shared, "context_window", &labels);
                    return Err(Failure::ContextWindow(b));
                }
                match status {
                    429 => {
                        count_error(shared, "rate_limited", &labels);
                        match after {
                            // The upstream said when: take it out that long, try another meanwhile.
                            Some(d) => state_d.cool_for(d),
                            None => {
                                state_d.record_failure(model.cooldown.as_ref());
                            }
                        }
                        retry_after = after;
                        (Failure::Upstream(b), policy.on.rate_limited)
                    }
                    500..=599 => {
                        count_error(shared, "server_error", &labels);
                        pool.note_error(format!("answered {status}"));
                        state_d.record_failure(model.cooldown.as_ref());
                        retry_after = after;
                        (Failure::Upstream(b), policy.on.server_error)
                    }
                    // Any other error status is the client's problem: relay it as it is.
                    _ => return Ok(relay_buffered(state, session, ctx, b).await),
                }
            }
        };
        last = Some(failure);
        if !retryable {
            break;
        }
    }
    Err(last.unwrap_or_else(|| {
        Failure::Error(GatewayError::NoHealthyUpstream(format!(
            "No healthy deployment for model `{}`",
            model.name
        )))
    }))
}

/// Wait for rate budget (seed 000): the balancer's pick `first` is preferred, any other usable
/// deployment of the model that has budget will do. Charges the request; refuses with 429 when the
/// model's queue is full or the wait would pass `queue.max_wait` (or the request's deadline).
#[allow(clippy::too_many_arguments)]
async fn admit(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    ex: &Exchange<'_, '_>,
    m: usize,
    first: usize,
    tried: &[usize],
    deadlines: Deadlines,
) -> Result<usize, Failure> {
    let sched = &state.sched.models[m];
    let balancer = &state.balancers[m];
    let mut candidates = vec![first];
    let usable = |i: usize| {
        state
            .upstreams
            .get(balancer.deployments[i].upstream_idx)
            .is_some_and(|u| u.healthy())
            && !balancer.deployments[i].cooling()
    };
    candidates.extend(
        (0..balancer.deployments.len()).filter(|&i| i != first && !tried.contains(&i) && usable(i)),
    );
    let estimate = if sched.needs_tokens() {
        crate::sched::tokens::estimate(
            ex.endpoint,
            &ex.req.body,
            sched.counter,
            sched.policy.default_max_tokens,
        )
    } else {
        crate::sched::tokens::Estimate::default()
    };
    let priority = session
        .req_header()
        .headers
        .get("x-llmproxy-priority")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0);
    if sched.policy.scheduling == crate::config::models::Scheduling::Priority {
        ctx.key_identity(&session.req_header().headers);
    }
    let ask = crate::sched::Ask {
        tokens: estimate.total() as f64,
        priority,
        key: ctx.key_id.clone(),
        key_requests: None,
        key_tokens: None,
    };
    let remaining = deadlines
        .total
        .saturating_duration_since(TokioInstant::now());
    let acquired = tokio::select! {
        biased;
        r = tokio::time::timeout(remaining, sched.acquire(candidates, ask)) => r,
        _ = client_gone(session, PROBE_AFTER) => return Err(Failure::ClientGone),
    };
    let model = &sched.name;
    match acquired {
        Ok(Ok(ticket)) => {
            ctx.queue_wait += ticket.waited;
            ctx.admission = Some(super::ctx::Admission {
                sched: sched.clone(),
                deployment: ticket.deployment,
                estimate,
            });
            Ok(ticket.deployment)
        }
        Ok(Err(crate::sched::Refusal::StateUnavailable)) => Err(Failure::Error(
            GatewayError::StateUnavailable(format!(
                "Rate budgets for model `{model}` are unavailable (shared state unreachable); try again shortly"
            )),
        )),
        Ok(Err(crate::sched::Refusal::QueueFull { retry_after })) => {
            Err(Failure::Error(GatewayError::RateLimited {
                message: format!(
                    "Model `{model}` is at its rate limit and its queue is full; retry after {}s",
                    retry_after.as_secs()
                ),
                retry_after,
            }))
        }
        Ok(Err(crate::sched::Refusal::Timeout { .. })) | Err(_) => {
            let retry_after = match acquired {
                Ok(Err(crate::sched::Refusal::Timeout { retry_after })) => retry_after,
                _ => Duration::from_secs(1),
            };
            ctx.queue_wait += sched.policy.max_wait.min(remaining);
            Err(Failure::Error(GatewayError::RateLimited {
                message: format!(
                    "Model `{model}` is at its rate limit and the request could not start within its queue's max_wait; retry after {}s",
                    retry_after.as_secs()
                ),
                retry_after,
            }))
        }
    }
}

/// The upstream reported no usage: estimate it with tiktoken (off the worker thread, as loading a
/// vocabulary takes a moment), prompt from the request and completion from the answer's text.
async fn estimate_usage(ctx: &mut RequestCtx, ex: &Exchange<'_, '_>, model: &str, text: String) {
    let (endpoint, raw, model) = (ex.endpoint, ex.raw.clone(), model.to_string());
    let counted = tokio::task::spawn_blocking(move || {
        let prompt = crate::sched::tokens::estimate_raw(endpoint, &raw, &model, 0).prompt;
        let completion = crate::sched::tokens::Counter::for_model(&model).count(&text);
        crate::providers::usage::Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        }
    })
    .await;
    if let Ok(u) = counted {
        ctx.usage = Some(u);
        ctx.usage_estimated = true;
    }
}

/// The generated text of an OpenAI chat or completions answer (JSON, or SSE chunks).
fn answer_text(body: &[u8], is_sse: bool) -> String {
    fn push_choices(v: &serde_json::Value, out: &mut String) {
        for c in v["choices"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            for s in [
                &c["delta"]["content"],
                &c["message"]["content"],
                &c["text"],
                &c["delta"]["reasoning_content"],
            ] {
                if let Some(s) = s.as_str() {
                    out.push_str(s);
                }
            }
        }
    }
    let mut out = String::new();
    if is_sse {
        for line in body.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
                push_choices(&v, &mut out);
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        push_choices(&v, &mut out);
    }
    out
}

/// At most this much of an answer is kept to estimate its tokens.
const ESTIMATE_BODY_LIMIT: usize = 256 * 1024;

/// A request the Anthropic translation refused, as the client's 400.
fn translate_error(e: anthropic::TranslateError) -> GatewayError {
    match e {
        anthropic::TranslateError::Unsupported { .. } => GatewayError::UnsupportedParameter {
            message: format!("{e}; set `drop_params: true` on the model to drop it instead"),
            param: e.field().to_string(),
        },
        anthropic::TranslateError::Invalid { .. } => GatewayError::invalid(e.to_string(), None),
    }
}

/// An Anthropic request the translation to chat completions refused, as the client's 400.
fn translate_inbound_error(e: anthropic::TranslateError) -> GatewayError {
    match e {
        anthropic::TranslateError::Unsupported { ref field, ref reason } => {
            GatewayError::UnsupportedParameter {
                message: format!(
                    "`{field}` is not supported for this model (its provider speaks the OpenAI API): {reason}; set `drop_params: true` on the model to drop it instead"
                ),
                param: field.clone(),
            }
        }
        anthropic::TranslateError::Invalid { .. } => GatewayError::invalid(e.to_string(), None),
    }
}

/// The request's prompt tokens: the scheduler's estimate when it made one, else one token per 3
/// bytes of text (no tokenizer vocabulary is loaded on the request path for this).
fn prompt_estimate(ctx: &RequestCtx, ex: &Exchange<'_, '_>) -> u64 {
    match &ctx.admission {
        Some(a) if a.estimate.prompt > 0 => a.estimate.prompt,
        _ => {
            crate::sched::tokens::estimate(
                ex.endpoint,
                &ex.req.body,
                crate::sched::tokens::Counter::Bytes,
                0,
            )
            .prompt
        }
    }
}

/// Which field carries an Anthropic request's `max_tokens` to an OpenAI-style deployment: OpenAI's
/// current `max_completion_tokens` for OpenAI itself and for reasoning models (which refuse
/// `max_tokens`), `max_tokens` elsewhere (every OpenAI-compatible server knows it).
fn limit_field(provider: Provider, model: &str) -> anthropic_inbound::LimitField {
    let reasoning = ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p));
    if provider == Provider::OpenAi || reasoning {
        anthropic_inbound::LimitField::MaxCompletionTokens
    } else {
        anthropic_inbound::LimitField::MaxTokens
    }
}

/// Whether the request asks for `stream_options.include_usage: true` itself.
fn client_asked_usage(body: &super::body::JsonBody) -> bool {
    body.get("stream_options")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .is_some_and(|v| v["include_usage"] == serde_json::Value::Bool(true))
}

/// Exponential backoff with equal jitter, at least the upstream's `Retry-After`, at most
/// `max_backoff`.
fn backoff(model: &Model, attempt: usize, retry_after: Option<Duration>) -> Duration {
    let p = &model.retry;
    let exp = p
        .backoff
        .saturating_mul(1u32 << (attempt - 1).min(16) as u32);
    let capped = exp.min(p.max_backoff);
    let jittered = if capped.is_zero() {
        capped
    } else {
        let half = capped / 2;
        half + Duration::from_secs_f64(rand::thread_rng().gen::<f64>() * half.as_secs_f64())
    };
    match retry_after {
        // Honour it only up to max_backoff: beyond that the deployment is cooling and another is used.
        Some(ra) if ra <= p.max_backoff => jittered.max(ra),
        _ => jittered,
    }
}

/// Watching the client costs a read attempt; an upstream that answers within this needs no watching.
const PROBE_AFTER: Duration = Duration::from_millis(20);
/// Between stream chunks: a client that leaves a fast stream is noticed when a write fails, so only
/// gaps longer than this are watched (well within the 1 s the gateway allows itself to notice).
const PROBE_BETWEEN_CHUNKS: Duration = Duration::from_millis(400);

/// Resolves when the client has gone away (checked after `after`; pending while it is connected).
pub(super) async fn client_gone(session: &mut Session, after: Duration) {
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    let _ = session.as_downstream_mut().read_body_or_idle(true).await;
}

/// Sleep for `d`, returning early with `true` if the client disconnects meanwhile.
async fn wait_or_client_gone(session: &mut Session, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = client_gone(session, Duration::ZERO) => true,
    }
}

fn count_error(shared: &Shared, error: &str, labels: &[&str; 2]) {
    shared
        .metrics
        .upstream_errors
        .with_label_values(&[error, labels[0], labels[1]])
        .inc();
}

/// `context_length_exceeded` and its kin, from OpenAI, Azure, Anthropic, vLLM and llama.cpp.
fn is_context_window_error(status: u16, body: &[u8]) -> bool {
    if !matches!(status, 400 | 413 | 422) {
        return false;
    }
    const MARKERS: &[&[u8]] = &[
        b"context_length_exceeded",
        b"maximum context length",
        b"prompt is too long",
        b"context window",
        b"exceeds the context",
        b"input is too long",
    ];
    let lower = body.to_ascii_lowercase();
    MARKERS
        .iter()
        .any(|m| lower.windows(m.len()).any(|w| w == *m))
}

/// Where one attempt goes.
struct Target<'a> {
    pool: &'a UpstreamPool,
    upstream_idx: usize,
    model: &'a Model,
    /// The deployment's upstream model name (Azure: the deployment in the upstream path).
    deployment: &'a str,
    /// The deployment's own extra request headers.
    headers: &'a [(http::HeaderName, http::HeaderValue)],
    addr: SocketAddr,
    dialect: Dialect,
    /// The client asked for a usage chunk (`stream_options.include_usage`): translated streams.
    include_usage: bool,
    /// A Responses API request: remember which upstream created the answer.
    pin_response: bool,
    /// Estimate the usage when the upstream reports none.
    estimate_usage: bool,
    /// Keep a stream's text for that estimate.
    keep_stream_text: bool,
    /// Prompt tokens announced in a translated Anthropic stream's `message_start`.
    input_estimate: u64,
}

/// One upstream attempt: connect, send, read the header and first chunk, relay the rest.
async fn attempt_once(
    shared: &Shared,
    t: &Target<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    body: Bytes,
    deadlines: Deadlines,
) -> Outcome {
    let pool = t.pool;
    let client = &pool.cfg.client;
    let peer = pool.peer(t.addr);
    let build = |session: &Session| {
        openai::request_header(
            &pool.cfg,
            endpoint,
            t.deployment, // upstream path: Azure's deployment segment
            t.headers,
            session.req_header(),
            body.len(),
            &ctx.request_id,
        )
        .map(Box::new)
    };
    let mut header = match build(session) {
        Ok(h) => Some(h),
        Err(e) => return Outcome::Broken(format!("building the upstream request: {e}")),
    };
    if log::log_enabled!(log::Level::Debug) {
        if let Some(h) = header.as_deref() {
            log::debug!(
                "request {}: upstream {} {}",
                ctx.request_id,
                pool.cfg.name,
                describe_request(h, t.addr)
            );
        }
    }
    let first_byte = deadlines
        .total
        .min(TokioInstant::now() + client.first_byte_timeout);

    // A pooled connection the upstream already closed fails on first use; that is not the upstream's
    // fault, so it is retried on a fresh connection (bounded).
    let mut stale_retries = 0;
    let mut http = loop {
        let (mut http, reused) = match shared.connector.session(&peer).await {
            Ok(s) => s,
            Err(e) => return Outcome::Connect(e.to_string(), e.etype() == &ConnectTimedout),
        };
        // The header is sent by value; a retry on a fresh connection (rare) builds it again.
        let h = match header.take().map(Ok).unwrap_or_else(|| build(session)) {
            Ok(h) => h,
            Err(e) => return Outcome::Broken(format!("building the upstream request: {e}")),
        };
        let sent = tokio::select! {
            biased;
            r = send(&mut http, h, &body, first_byte) => r,
            _ = client_gone(session, PROBE_AFTER) => return Outcome::ClientGone,
        };
        match sent {
            Ok(()) => break http,
            Err(e) if e.etype() == &ReadTimedout => return Outcome::Timeout,
            Err(e) if reused && stale_retries < 2 => {
                stale_retries += 1;
                log::debug!(
                    "request {}: stale pooled connection ({e}), retrying",
                    ctx.request_id
                );
            }
            Err(e) => return Outcome::Broken(e.to_string()),
        }
    };
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    let status = up.status.as_u16();
    if let Some(a) = &ctx.admission {
        a.sched.feedback(a.deployment, status, &up.headers);
    }
    if status >= 400 {
        let outcome = buffer_error(shared, t, http, &peer, session, ctx, first_byte).await;
        return match outcome {
            // Anthropic's error, in OpenAI's shape with the same status.
            Outcome::Status(mut b, after)
                if matches!(t.dialect, Dialect::AnthropicChat | Dialect::MessagesViaChat) =>
            {
                b.body = if t.dialect == Dialect::AnthropicChat {
                    anthropic::error_to_openai(status, &b.body)
                } else {
                    anthropic_inbound::error_to_anthropic(status, &b.body)
                };
                let _ = b
                    .header
                    .insert_header(http::header::CONTENT_TYPE, "application/json");
                Outcome::Status(b, after)
            }
            other => other,
        };
    }
    let is_sse = up
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if matches!(t.dialect, Dialect::AnthropicChat | Dialect::MessagesViaChat) && !is_sse {
        return translate_whole(shared, t, http, &peer, session, ctx, deadlines).await;
    }

    // Read the first chunk before answering the client: until then, a failure can still fail over.
    http.set_read_timeout(Some(
        first_byte.saturating_duration_since(TokioInstant::now()),
    ));
    let first = tokio::select! {
        biased;
        r = http.read_response_body() => r,
        _ = client_gone(session, PROBE_AFTER) => return Outcome::ClientGone,
    };
    let first = match first {
        Ok(c) => c,
        Err(e) if e.etype() == &ReadTimedout => return Outcome::Timeout,
        Err(e) => {
            return Outcome::Broken(format!(
                "closed before the first byte: {}",
                e.etype().as_str()
            ))
        }
    };
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    if t.pin_response && status < 300 {
        if let Some(id) = first.as_deref().and_then(response_id) {
            let redis = ctx.state.as_ref().and_then(|s| s.redis.as_ref());
            shared.response_pins.insert(id, &pool.cfg.name, redis);
        }
    }
    let translated = matches!(t.dialect, Dialect::AnthropicChat | Dialect::MessagesViaChat);
    let resp = match downstream_header(up, ctx, &pool.cfg.name, &t.model.name, None, translated) {
        Ok(r) => r,
        Err(e) => return Outcome::Broken(format!("building the response header: {e}")),
    };
    ctx.status = status;
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        ctx.error = Some("client_closed");
        return Outcome::ClientGone;
    }
    http.set_read_timeout(Some(client.stream_idle_timeout));
    let (relayed, reusable) =
        relay(shared, t, &mut http, session, ctx, first, is_sse, deadlines).await;
    if reusable {
        shared
            .connector
            .release(http, &peer, client.idle_timeout)
            .await;
    }
    Outcome::Done(relayed)
}

/// `--debug`: the upstream request line and headers, credentials masked.
fn describe_request(h: &RequestHeader, addr: SocketAddr) -> String {
    let headers: Vec<String> = h
        .headers
        .iter()
        .map(|(n, v)| {
            let secret = matches!(
                n.as_str(),
                "authorization" | "api-key" | "x-api-key" | "proxy-authorization"
            ) || n.as_str().contains("token")
                || n.as_str().contains("secret");
            let value = if secret {
                "***"
            } else {
                v.to_str().unwrap_or("<binary>")
            };
            format!("{n}: {value}")
        })
        .collect();
    format!("{addr} {} {} [{}]", h.method, h.uri, headers.join(", "))
}

/// Write the request and read the response header by `deadline`.
async fn send(
    http: &mut HttpSession,
    header: Box<RequestHeader>,
    body: &Bytes,
    deadline: TokioInstant,
) -> Result<()> {
    let io = async {
        http.write_request_header(header).await?;
        http.write_request_body(body.clone(), true).await?;
        http.finish_request_body().await?;
        http.read_response_header().await
    };
    match tokio::time::timeout_at(deadline, io).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(ReadTimedout, "waiting for the response header"),
    }
}

/// Read an error response's body (bounded) so the gateway can decide to retry or relay it. A body over
/// the limit is relayed at once as it streams.
async fn buffer_error(
    shared: &Shared,
    t: &Target<'_>,
    mut http: HttpSession,
    peer: &HttpPeer,
    session: &mut Session,
    ctx: &mut RequestCtx,
    deadline: TokioInstant,
) -> Outcome {
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    let header = up.clone();
    let retry_after = retry_after(&header);
    let mut buf = BytesMut::new();
    loop {
        let r = match tokio::time::timeout_at(deadline, http.read_response_body()).await {
            Ok(r) => r,
            Err(_) => return Outcome::Timeout,
        };
        match r {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > ERROR_BODY_LIMIT {
                    // Too large to hold: relay it as it comes.
                    let b = Buffered {
                        header,
                        body: buf.freeze(),
                        upstream: t.upstream_idx,
                    };
                    let relayed =
                        relay_large_error(shared, t, &mut http, session, ctx, b, deadline).await;
                    return Outcome::Done(relayed);
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Outcome::Broken(format!("error body broke off: {}", e.etype().as_str()))
            }
        }
    }
    shared
        .connector
        .release(http, peer, t.pool.cfg.client.idle_timeout)
        .await;
    Outcome::Status(
        Box::new(Buffered {
            header,
            body: buf.freeze(),
            upstream: t.upstream_idx,
        }),
        retry_after,
    )
}

/// `Retry-After` (seconds) or `retry-after-ms`, capped at an hour.
fn retry_after(h: &ResponseHeader) -> Option<Duration> {
    let get = |name: &str| {
        h.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let d = get("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| get("retry-after"))?;
    (d.is_finite() && d >= 0.0).then(|| Duration::from_secs_f64(d.min(3600.0)))
}

/// Relay a buffered upstream answer as it is.
async fn relay_buffered(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    b: Buffered,
) -> Relayed {
    let upstream = state
        .upstreams
        .get(b.upstream)
        .map(|u| u.cfg.name.as_str())
        .unwrap_or("");
    let model = ctx
        .model
        .and_then(|m| state.config.models.get(m))
        .map(|m| m.name.as_str())
        .unwrap_or("");
    ctx.upstream = Some(b.upstream);
    ctx.status = b.header.status.as_u16();
    let resp = match downstream_header(&b.header, ctx, upstream, model, Some(b.body.len()), false) {
        Ok(r) => r,
        Err(e) => {
            log::error!(
                "request {}: building the response header failed: {e}",
                ctx.request_id
            );
            return Relayed::Truncated;
        }
    };
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
        || session
            .write_response_body(Some(b.body), true)
            .await
            .is_err()
    {
        ctx.error = Some("client_closed");
        return Relayed::Truncated;
    }
    Relayed::Complete
}

/// An error answer too large to buffer: what was read, then the rest as it streams.
async fn relay_large_error(
    shared: &Shared,
    t: &Target<'_>,
    http: &mut HttpSession,
    session: &mut Session,
    ctx: &mut RequestCtx,
    b: Buffered,
    deadline: TokioInstant,
) -> Relayed {
    ctx.status = b.header.status.as_u16();
    let resp = match downstream_header(&b.header, ctx, &t.pool.cfg.name, &t.model.name, None, false)
    {
        Ok(r) => r,
        Err(_) => return Relayed::Truncated,
    };
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        return Relayed::Truncated;
    }
    let deadlines = Deadlines { total: deadline };
    relay(
        shared,
        t,
        http,
        session,
        ctx,
        Some(b.body),
        false,
        deadlines,
    )
    .await
    .0
}

/// The SSE event that ends a stream whose upstream failed after the first byte.
const STREAM_ERROR: &[u8] = b"data: {\"error\":{\"message\":\"The upstream connection failed during the stream\",\"type\":\"api_error\",\"param\":null,\"code\":\"upstream_error\"}}\n\ndata: [DONE]\n\n";

/// A stream translator, by direction.
enum StreamTx {
    /// Anthropic events → OpenAI chunks.
    ToOpenAi(StreamTranslator),
    /// OpenAI chunks → Anthropic events.
    ToAnthropic(ChatStreamToMessages),
}

impl StreamTx {
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        match self {
            StreamTx::ToOpenAi(t) => t.feed(chunk),
            StreamTx::ToAnthropic(t) => t.feed(chunk),
        }
    }

    fn finish(&mut self) -> Bytes {
        match self {
            StreamTx::ToOpenAi(t) => t.finish(),
            StreamTx::ToAnthropic(t) => t.finish(),
        }
    }

    fn usage(&self) -> Option<crate::providers::usage::Usage> {
        match self {
            StreamTx::ToOpenAi(t) => t.usage(),
            StreamTx::ToAnthropic(t) => t.usage(),
        }
    }
}

/// The same for Anthropic's own stream format (`/v1/messages`).
const ANTHROPIC_STREAM_ERROR: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream connection failed during the stream\"}}\n\n";

/// A non-streamed Anthropic answer to an OpenAI chat request: read whole (bounded), translated,
/// written in one piece. Until it is written, a failure can still move to another attempt.
async fn translate_whole(
    shared: &Shared,
    t: &Target<'_>,
    mut http: HttpSession,
    peer: &HttpPeer,
    session: &mut Session,
    ctx: &mut RequestCtx,
    deadlines: Deadlines,
) -> Outcome {
    let mut buf = BytesMut::new();
    loop {
        let read = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadlines.total, http.read_response_body()) => r,
            _ = client_gone(session, PROBE_AFTER) => return Outcome::ClientGone,
        };
        match read {
            Err(_) => return Outcome::Timeout,
            Ok(Ok(Some(chunk))) => {
                if ctx.first_byte.is_none() {
                    ctx.first_byte = Some(Instant::now());
                }
                buf.extend_from_slice(&chunk);
                if buf.len() > TRANSLATED_BODY_LIMIT {
                    return Outcome::Broken("the answer is too large to translate".into());
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) if e.etype() == &ReadTimedout => return Outcome::Timeout,
            Ok(Err(e)) => {
                return Outcome::Broken(format!("answer broke off: {}", e.etype().as_str()))
            }
        }
    }
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    let not_json = || Outcome::Broken("the upstream's answer is not JSON".into());
    let body = if t.dialect == Dialect::MessagesViaChat {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(&buf) else {
            return not_json();
        };
        // Usage from the OpenAI answer (its prompt count includes cached tokens).
        ctx.usage = crate::providers::usage::find_usage(&buf);
        Bytes::from(
            anthropic_inbound::chat_to_messages_response(&message, t.deployment).to_string(),
        )
    } else {
        let Some((b, usage)) = anthropic::messages_to_chat_bytes(&buf, t.deployment) else {
            return not_json();
        };
        ctx.usage = Some(usage);
        b
    };
    ctx.status = up.status.as_u16();
    let mut resp = match downstream_header(
        up,
        ctx,
        &t.pool.cfg.name,
        &t.model.name,
        Some(body.len()),
        true,
    ) {
        Ok(r) => r,
        Err(e) => return Outcome::Broken(format!("building the response header: {e}")),
    };
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/json");
    shared
        .connector
        .release(http, peer, t.pool.cfg.client.idle_timeout)
        .await;
    if let Some(mut rec) = ctx.cache_record.take() {
        rec.sse = false;
        rec.push(&body);
        store_answer(ctx, rec).await;
    }
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
        || session.write_response_body(Some(body), true).await.is_err()
    {
        ctx.error = Some("client_closed");
        ctx.cache_record = None;
        return Outcome::Done(Relayed::Truncated);
    }
    Outcome::Done(Relayed::Complete)
}

/// Relay the rest of the response, starting with `first`. Returns how it ended and whether the
/// upstream connection can go back to the pool.
#[allow(clippy::too_many_arguments)]
async fn relay(
    shared: &Shared,
    t: &Target<'_>,
    http: &mut HttpSession,
    session: &mut Session,
    ctx: &mut RequestCtx,
    first: Option<Bytes>,
    is_sse: bool,
    deadlines: Deadlines,
) -> (Relayed, bool) {
    let mut scanner = UsageScanner::default();
    let mut strip = (ctx.strip_usage && is_sse).then(UsageEventStrip::default);
    // Anthropic streams: translated into OpenAI chunks for chat clients; read for usage only when
    // relayed as they are (`/v1/messages`: Anthropic's usage is split across two events).
    let translate =
        is_sse && matches!(t.dialect, Dialect::AnthropicChat | Dialect::MessagesViaChat);
    let mut translator = match t.dialect {
        _ if !is_sse => None,
        Dialect::Native => None,
        Dialect::AnthropicChat | Dialect::AnthropicMessages => Some(StreamTx::ToOpenAi(
            StreamTranslator::new(t.deployment, t.include_usage),
        )),
        Dialect::MessagesViaChat => Some(StreamTx::ToAnthropic(
            ChatStreamToMessages::new(t.deployment).with_input_estimate(t.input_estimate),
        )),
    };
    // A stream's text is kept (bounded) in case it ends without usage; a JSON answer without usage
    // is estimated from the scanner's window when it fitted there.
    let mut kept = (t.keep_stream_text && is_sse).then(BytesMut::new);
    let timeout = tokio::time::sleep_until(deadlines.total);
    tokio::pin!(timeout);
    let mut next = first;
    let upstream_failure = loop {
        let Some(chunk) = next.take() else {
            let rest = match translator.as_mut() {
                Some(tr) if translate => Some(tr.finish()).filter(|b| !b.is_empty()),
                _ => strip.as_mut().and_then(|s| s.finish()),
            };
            if let Some(rest) = rest {
                if let Some(rec) = ctx.cache_record.as_mut() {
                    rec.push(&rest);
                }
                let _ = session.write_response_body(Some(rest), false).await;
            }
            break None;
        };
        if ctx.first_byte.is_none() {
            ctx.first_byte = Some(Instant::now());
        }
        if let Some(k) = kept.as_mut() {
            let room = ESTIMATE_BODY_LIMIT.saturating_sub(k.len());
            k.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        let chunk = match (translator.as_mut(), strip.as_mut()) {
            (Some(tr), _) if translate => Some(tr.feed(&chunk)).filter(|b| !b.is_empty()),
            (Some(tr), _) => {
                let _ = tr.feed(&chunk);
                Some(chunk)
            }
            (None, None) => {
                scanner.feed(&chunk);
                Some(chunk)
            }
            (None, Some(s)) => {
                scanner.feed(&chunk);
                s.filter(chunk)
            }
        };
        if let (Some(rec), Some(c)) = (ctx.cache_record.as_mut(), chunk.as_ref()) {
            if ctx.status < 300 {
                rec.sse = is_sse;
                rec.push(c);
            }
        }
        if chunk.is_some() && session.write_response_body(chunk, false).await.is_err() {
            // The client left: dropping the upstream connection stops the generation.
            ctx.error = Some("client_closed");
            return (Relayed::Truncated, false);
        }
        let read = tokio::select! {
            biased;
            r = http.read_response_body() => r,
            _ = &mut timeout => break Some("timeout"),
            _ = client_gone(session, PROBE_BETWEEN_CHUNKS) => {
                ctx.error = Some("client_closed");
                return (Relayed::Truncated, false);
            }
        };
        match read {
            Ok(c) => next = c,
            Err(e) => {
                log::warn!(
                    "request {}: upstream {} failed mid-response: {e}",
                    ctx.request_id,
                    t.pool.cfg.name
                );
                break Some(if e.etype() == &ReadTimedout {
                    "stream_timeout"
                } else {
                    "stream_interrupted"
                });
            }
        }
    };
    ctx.usage = match &translator {
        Some(tr) => tr.usage(),
        None => scanner.usage(),
    };
    if t.estimate_usage && ctx.usage.is_none() && upstream_failure.is_none() && ctx.status < 300 {
        let body = match &kept {
            Some(k) => Some(&k[..]),
            None => scanner.whole(),
        };
        ctx.estimate_text = body.map(|b| answer_text(b, is_sse));
    }
    if upstream_failure.is_some() || ctx.status >= 300 {
        // Only complete successful answers are cached.
        ctx.cache_record = None;
    }
    if let Some(kind) = upstream_failure {
        let labels = [t.model.name.as_str(), t.pool.cfg.name.as_str()];
        count_error(shared, kind, &labels);
        shared
            .metrics
            .stream_errors
            .with_label_values(&labels)
            .inc();
        t.pool.note_error(format!("response broke off: {kind}"));
        ctx.error = Some("upstream_stream_error");
        if !is_sse {
            return (Relayed::Truncated, false);
        }
        // Never a silent truncation: tell the client in the stream's own format.
        let event = if matches!(
            t.dialect,
            Dialect::AnthropicMessages | Dialect::MessagesViaChat
        ) {
            ANTHROPIC_STREAM_ERROR
        } else {
            STREAM_ERROR
        };
        let ok = session
            .write_response_body(Some(Bytes::from_static(event)), true)
            .await
            .is_ok();
        return (
            if ok {
                Relayed::Complete
            } else {
                Relayed::Truncated
            },
            false,
        );
    }
    if let Some(rec) = ctx.cache_record.take() {
        store_answer(ctx, rec).await;
    }
    if session.write_response_body(None, true).await.is_err() {
        return (Relayed::Truncated, true);
    }
    (Relayed::Complete, true)
}

/// Store a complete answer in the response cache before its end is written to the client.
async fn store_answer(ctx: &RequestCtx, rec: crate::cache::Recorder) {
    if let Some(state) = ctx.state.as_ref() {
        rec.store(&state.cache).await;
    }
}

/// Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` as OpenAI's
/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (a reset instant becomes OpenAI's
/// duration, e.g. `12s` or `250ms`); Anthropic's separate input/output token limits have no OpenAI
/// counterpart and are left out.
fn openai_ratelimit_header(
    name: &str,
    value: &http::HeaderValue,
) -> Option<(&'static str, String)> {
    let rest = name.strip_prefix("anthropic-ratelimit-")?;
    let v = value.to_str().ok()?;
    let out = match rest {
        "requests-limit" => ("x-ratelimit-limit-requests", v.to_string()),
        "requests-remaining" => ("x-ratelimit-remaining-requests", v.to_string()),
        "tokens-limit" => ("x-ratelimit-limit-tokens", v.to_string()),
        "tokens-remaining" => ("x-ratelimit-remaining-tokens", v.to_string()),
        "requests-reset" | "tokens-reset" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let secs = crate::sched::seconds_until_rfc3339(v, now)?;
            let name = if rest == "requests-reset" {
                "x-ratelimit-reset-requests"
            } else {
                "x-ratelimit-reset-tokens"
            };
            let d = if secs < 1.0 {
                format!("{}ms", (secs * 1000.0).round() as u64)
            } else {
                format!("{}s", secs.ceil() as u64)
            };
            (name, d)
        }
        _ => return None,
    };
    Some(out)
}

/// The client's response header: the upstream's status and headers (hop-by-hop removed), plus the
/// request id, the upstream and the model that answered. `translated`: the body is not the
/// upstream's, so its length is not either.
fn downstream_header(
    up: &ResponseHeader,
    ctx: &RequestCtx,
    upstream: &str,
    model: &str,
    content_length: Option<usize>,
    translated: bool,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build_no_case(up.status, Some(up.headers.len() + 4))?;
    for (name, value) in up.headers.iter() {
        if !relayable(name) || (translated && name == http::header::CONTENT_LENGTH) {
            continue;
        }
        if translated && name.as_str().starts_with("anthropic-ratelimit-") {
            // The client speaks OpenAI's API: its rate-limit headers, in its names and formats.
            if let Some((openai, v)) = openai_ratelimit_header(name.as_str(), value) {
                resp.append_header(openai, v)?;
            }
            continue;
        }
        resp.append_header(name.clone(), value.clone())?;
    }
    if let Some(len) = content_length {
        resp.insert_header(http::header::CONTENT_LENGTH, len)?;
    } else if !resp.headers.contains_key(http::header::CONTENT_LENGTH) {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    resp.insert_header("x-llmproxy-deployment", upstream)?;
    resp.insert_header("x-llmproxy-model", model)?;
    if !ctx.queue_wait.is_zero() {
        resp.insert_header("x-llmproxy-queue-ms", ctx.queue_wait.as_millis() as u64)?;
    }
    if let Some(c) = ctx.cache {
        resp.insert_header("x-llmproxy-cache", c)?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_context_window_errors() {
        assert!(is_context_window_error(
            400,
            br#"{"error":{"code":"context_length_exceeded","message":"This model's maximum context length is 8192 tokens"}}"#
        ));
        assert!(is_context_window_error(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#));
        assert!(!is_context_window_error(
            400,
            br#"{"error":{"message":"bad"}}"#
        ));
        assert!(!is_context_window_error(500, b"maximum context length"));
    }

    #[test]
    fn anthropic_rate_limits_in_openai_names() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(
            openai_ratelimit_header("anthropic-ratelimit-requests-remaining", &v("49")),
            Some(("x-ratelimit-remaining-requests", "49".to_string()))
        );
        assert_eq!(
            openai_ratelimit_header(
                "anthropic-ratelimit-tokens-reset",
                &v("2000-01-01T00:00:00Z")
            ),
            Some(("x-ratelimit-reset-tokens", "0ms".to_string()))
        );
        assert_eq!(
            openai_ratelimit_header("anthropic-ratelimit-input-tokens-limit", &v("1")),
            None
        );
    }

    #[test]
    fn finds_response_ids() {
        assert_eq!(
            response_id(br#"{"id":"resp_abc123","object":"response"}"#),
            Some("resp_abc123")
        );
        assert_eq!(
            response_id(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_9\",\"status\":\"in_progress\"}}\n\n"),
            Some("resp_9")
        );
        assert_eq!(response_id(br#"{"id":"chatcmpl-1"}"#), None);
    }

    #[test]
    fn parses_retry_after() {
        let mut h = ResponseHeader::build(429, None).unwrap();
        h.insert_header("retry-after", "2").unwrap();
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert_header("retry-after-ms", "150").unwrap();
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
    }
}
