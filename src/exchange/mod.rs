//! The upstream exchange for model requests, run from `request_filter` with Pingora's `Connector`.
//! Provider-blind: what a request looks like on the wire and how its answer is read come from
//! [`crate::providers`]; this module connects, sends, retries, falls back, relays and cancels.
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
//!    making the client wait when another deployment can answer); the rate scheduler admits each
//!    attempt ([`admit`]);
//! 3. per attempt ([`attempt`]): connect, send, read the response header and the first body chunk.
//!    Until that first chunk is written to the client a failure can still move to another attempt;
//!    after it, an upstream failure ends an SSE stream with an error event (never a silent truncation);
//! 4. the answer is relayed chunk by chunk as it arrives ([`relay`]), each chunk written before the
//!    next read, so SSE pacing and bytes are preserved. A client that goes away is noticed while
//!    waiting on the upstream, and the upstream connection is dropped so the provider stops generating.
//!
//! | room | holds |
//! | --- | --- |
//! | `mod.rs` | [`forward`]: the model chain, attempts per model, backoff, failure classes |
//! | [`admit`] | waiting for rate budget in the model's scheduler |
//! | [`attempt`] | one attempt: request, connect, send, error answers, first byte |
//! | [`relay`] | the answer to the client: streamed, converted whole, or a buffered error |
//! | [`pins`] | Responses API conversations pinned to the upstream that stored them |

pub mod admit;
pub mod attempt;
pub mod pins;
pub mod relay;

use crate::body::ModelRequest;
use crate::config::Model;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::route::{self, Endpoint};
use crate::state::{Shared, State};
use attempt::{Buffered, Outcome};
use bytes::Bytes;
use pingora::proxy::Session;
use rand::Rng;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

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

/// Why a model could not answer.
enum Failure {
    Error(GatewayError),
    /// The last upstream answer, relayed as it is when nothing else works.
    Upstream(Buffered),
    /// The upstream said the context is too long.
    ContextWindow(Buffered),
    ClientGone,
}

/// Time limits of one request.
#[derive(Clone, Copy)]
pub struct Deadlines {
    pub total: TokioInstant,
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
        &primary.fallback_models,
        "fallbacks",
    )?;
    let cw_fallbacks = resolve_list(
        state,
        ctx,
        o.context_window_fallbacks.as_ref(),
        &primary.context_window_fallback_models,
        "context_window_fallbacks",
    )?;
    // The whole-request limit: the model's `timeout` (default: its first upstream's request timeout),
    // lowered by the request's own `request_timeout`.
    let model_limit = primary.timeout.unwrap_or_else(|| {
        primary
            .deployments
            .first()
            .map(|d| cfg.upstreams[d.upstream_id.index()].client.request_timeout)
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
            Ok(relay::buffered(state, session, ctx, b).await)
        }
        Some(Failure::Error(e)) => Err(e),
        Some(Failure::ClientGone) => Ok(Relayed::Truncated),
        None => Err(GatewayError::UpstreamTimeout(format!(
            "No answer for model `{}` within {limit:?}",
            primary.name
        ))),
    }
}

/// Per-request fallbacks (looked up by name, checked against the listener's scope, capped) or the
/// configured ones (resolved when the config was read; those the listener does not serve skipped).
fn resolve_list(
    state: &State,
    ctx: &RequestCtx,
    requested: Option<&Vec<String>>,
    configured: &[usize],
    param: &'static str,
) -> Result<Vec<usize>, GatewayError> {
    let cfg = &state.config;
    let listener = &cfg.server.listeners[ctx
        .listener
        .min(cfg.server.listeners.len().saturating_sub(1))];
    let Some(names) = requested else {
        return Ok(configured
            .iter()
            .copied()
            .filter(|&i| route::allowed(cfg, listener, i))
            .take(MAX_FALLBACKS)
            .collect());
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names.iter().take(MAX_FALLBACKS) {
        match state.router.lookup(name) {
            Some(i) if route::allowed(cfg, listener, i) => out.push(i),
            _ => {
                return Err(GatewayError::invalid(
                    format!("`{param}` names an unknown or not allowed model `{name}`"),
                    Some(param),
                ))
            }
        }
    }
    Ok(out)
}

/// Deployments of `model` whose provider cannot serve `endpoint`.
fn unsupported_deployments(state: &State, model: &Model, endpoint: Endpoint) -> Vec<usize> {
    model
        .deployments
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            !crate::providers::serves(
                state.config.upstreams[d.upstream_id.index()].provider,
                endpoint,
            )
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
        .position(|d| state.config.upstreams[d.upstream_id.index()].name == *upstream)
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
        let mut kinds: Vec<crate::config::Provider> = model
            .deployments
            .iter()
            .map(|d| state.config.upstreams[d.upstream_id.index()].provider)
            .collect();
        kinds.dedup();
        let on: Vec<String> = kinds
            .iter()
            .map(|k| {
                format!(
                    "`provider: {}`, which has {}",
                    k.as_str(),
                    crate::providers::offers(*k)
                )
            })
            .collect();
        return Err(Failure::Error(GatewayError::invalid(
            format!(
                "Model `{}` is not served by a provider that has {} (its deployments are on {})",
                model.name,
                ex.endpoint.template(),
                on.join("; "),
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
    for attempt_no in 0..attempts {
        let picked = balancer.pick(&state.upstreams, &tried).or_else(|| {
            // Every deployment was tried once: start over (retries may go back to one).
            tried.clear();
            tried.extend_from_slice(&unsupported);
            balancer.pick(&state.upstreams, &unsupported)
        });
        let Some(mut d) = picked else {
            break;
        };
        if attempt_no > 0 {
            let delay = backoff(model, attempt_no, retry_after.take());
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
            d = admit::admit(state, session, ctx, ex, m, d, &tried, deadlines).await?;
        }
        tried.push(d);
        let dep = &model.deployments[d];
        let pool = &state.upstreams[dep.upstream_id.index()];
        let Some(addr) = pool.pick(&[]) else {
            continue;
        };
        ctx.model = Some(m);
        ctx.upstream = Some(dep.upstream_id.index());
        ctx.deployment = Some(d);
        let provider = crate::providers::of(pool.cfg.provider);
        let plan = crate::providers::plan(
            provider,
            &crate::providers::Attempt {
                endpoint: ex.endpoint,
                upstream: &pool.cfg,
                deployment: dep,
                drop_params: model.drop_params,
                add_function_to_prompt: model.add_function_to_prompt,
                req: ex.req,
                raw: ex.raw,
                prompt_estimate: prompt_estimate(ctx, ex),
            },
        )
        // The client's request has no equivalent at this provider: a 400 naming the field.
        .map_err(Failure::Error)?;
        let _in_flight = balancer.enter(d);
        let labels = [model.name.as_str(), pool.cfg.name.as_str()];
        let handles = state.metrics.upstream(m, d);
        match handles {
            Some(h) => h.requests.inc(),
            None => shared
                .metrics
                .upstream_requests
                .with_label_values(&labels)
                .inc(),
        }
        let started = Instant::now();
        let target = attempt::Target {
            pool,
            provider,
            upstream_idx: dep.upstream_id.index(),
            model,
            headers: &dep.headers,
            addr,
            pin_response: ex.endpoint == Endpoint::Responses,
        };
        let outcome = attempt::run(shared, &target, session, ctx, plan, deadlines).await;
        let took = started.elapsed().as_secs_f64();
        match handles {
            Some(h) => h.duration.observe(took),
            None => shared
                .metrics
                .upstream_duration
                .with_label_values(&labels)
                .observe(took),
        }
        let state_d = &balancer.deployments[d];
        let (failure, retryable) = match outcome {
            Outcome::Done(relayed, unreported) => {
                if let Some(text) = unreported {
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
            Outcome::Status(b, after, context_window) => {
                let status = b.header.status.as_u16();
                let b = *b;
                if context_window {
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
                    _ => return Ok(relay::buffered(state, session, ctx, b).await),
                }
            }
        };
        last = Some(failure);
        if !retryable {
            break;
        }
    }
    Err(last.unwrap_or_else(|| Failure::Error(no_healthy(state, m))))
}

/// `503 no_healthy_upstream` saying why: each deployment's upstream and what is wrong with it (its
/// health check's last error, or its cooldown), never a secret.
fn no_healthy(state: &State, m: usize) -> GatewayError {
    let model = &state.config.models[m];
    let balancer = &state.balancers[m];
    let why: Vec<String> = model
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let pool = &state.upstreams[d.upstream_id.index()];
            let cooling = balancer.deployments[i].cooldown_left();
            let mut s = format!("`{}` ({})", pool.cfg.name, d.model);
            if let Some(left) = cooling {
                s.push_str(&format!(": cooling down for {:.0}s more", left.as_secs_f64().ceil()));
            } else if !pool.healthy() {
                match pool.last_error() {
                    Some(e) => {
                        let e: String = e.chars().take(200).collect();
                        s.push_str(&format!(": unhealthy, {e}"));
                        if e.contains("status 401") || e.contains("status 403") {
                            s.push_str(" (the upstream refused the gateway's credentials: is its `auth` set, e.g. its API key variable?)");
                        }
                    }
                    None => s.push_str(": unhealthy (no health check has passed yet)"),
                }
            }
            s
        })
        .collect();
    GatewayError::NoHealthyUpstream(format!(
        "No healthy deployment for model `{}`: {}",
        model.name,
        why.join("; ")
    ))
}

/// The upstream reported no usage: estimate it with tiktoken (off the worker thread, as loading a
/// vocabulary takes a moment), prompt from the request and completion from the answer's text.
async fn estimate_usage(ctx: &mut RequestCtx, ex: &Exchange<'_, '_>, model: &str, text: String) {
    let (endpoint, raw, model) = (ex.endpoint, ex.raw.clone(), model.to_string());
    let counted = crate::sched::tokens::off_worker(move || {
        let prompt = crate::sched::tokens::estimate_raw(endpoint, &raw, &model, 0).prompt;
        let completion = crate::sched::tokens::Counter::for_model(&model).count(&text);
        crate::providers::usage::Usage::new(prompt, completion)
    })
    .await;
    if let Some(u) = counted {
        ctx.outcome.usage = Some(crate::proxy::ctx::Metered::Estimated(u));
    }
}

/// The request's prompt tokens, for an Anthropic client's stream (whose first event states them
/// before the upstream reports any): the scheduler's estimate when it made one, else one token per 3
/// bytes of text (no tokenizer vocabulary is loaded on the request path for this). 0 otherwise.
fn prompt_estimate(ctx: &RequestCtx, ex: &Exchange<'_, '_>) -> u64 {
    let anthropic =
        crate::providers::ClientApi::of(ex.endpoint) == crate::providers::ClientApi::Anthropic;
    match &ctx.admission {
        _ if !ex.req.stream || !anthropic => 0,
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
///
/// A read error is a client gone. End of input (FIN) is not by itself: HTTP/1.1 lets a client
/// half-close after its request and still read the answer. So on FIN the gateway probes with
/// something every client ignores — a `100 Continue` interim response before the answer started, an
/// SSE comment line in a started stream — twice, a moment apart: a client that closed its socket
/// answers the first with a reset, and the second write fails; a half-closed one reads on and the
/// exchange continues. (A started answer that is not a stream cannot be probed: FIN ends it.)
pub async fn client_gone(session: &mut Session, after: Duration) {
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    if half_closed(session) {
        // Probed already: the client reads on; a write will tell if it leaves.
        return std::future::pending().await;
    }
    if session
        .as_downstream_mut()
        .read_body_or_idle(true)
        .await
        .is_ok()
    {
        // Pipelined bytes of the next request were set aside: nothing more to learn here.
        return std::future::pending().await;
    }
    if !half_closed(session) || gone_after_fin(session).await {
        return;
    }
    std::future::pending().await
}

/// Whether the client sent FIN (HTTP/1.1).
fn half_closed(session: &Session) -> bool {
    session
        .as_downstream()
        .as_http1()
        .is_some_and(|s| s.is_half_closed())
}

/// After FIN: whether the client closed its socket (two probes, the second fails) rather than only
/// its sending side.
async fn gone_after_fin(session: &mut Session) -> bool {
    const GAP: Duration = Duration::from_millis(100);
    let started = session.response_written().is_some();
    let sse = session
        .response_written()
        .and_then(|h| h.headers.get(http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if started && !sse {
        return true;
    }
    for i in 0..2 {
        if i > 0 {
            tokio::time::sleep(GAP).await;
        }
        let written = if started {
            session
                .write_response_body(Some(bytes::Bytes::from_static(b": \n\n")), false)
                .await
        } else {
            session.as_downstream_mut().write_continue_response().await
        };
        if written.is_err() {
            return true;
        }
    }
    false
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
