//! What `request_filter` does with a request once it is authenticated: dispatch by path (key
//! management, a passthrough route, the model listing, a model endpoint), and the model request's
//! flow — parse, resolve the model, key limits, token counting, cache, batch, the upstream exchange.

use super::ctx::RequestCtx;
use super::{batch, body, cached, models, passthrough, respond};
use crate::body::ModelRequest;
use crate::error::GatewayError;
use crate::exchange::{self, Relayed};
use crate::route::{self, Endpoint, Target};
use crate::state::Shared;
use bytes::Bytes;
use pingora::proxy::Session;

/// What `request_filter` decided.
pub enum Handled {
    /// The response was written.
    Done,
    /// Pingora's proxy loop carries on (passthrough).
    Proxy,
    /// The response broke off midway; the client connection must be dropped.
    Abort,
}

impl From<Relayed> for Handled {
    fn from(r: Relayed) -> Handled {
        match r {
            Relayed::Complete => Handled::Done,
            Relayed::Truncated => Handled::Abort,
        }
    }
}

/// Serve an authenticated request. `Err`: nothing was written; the caller answers with the error.
pub async fn handle(
    shared: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Handled, GatewayError> {
    let method = session.req_header().method.clone();
    let path = session.req_header().uri.path();
    if crate::keys::api::is_management_path(path) {
        ctx.path_label = management_label(path);
        return management_api(shared, session, ctx, &method).await;
    }
    let target = route::classify(&ctx.state.config, path);
    match target {
        Target::Passthrough(i, rest) => {
            passthrough::prepare(shared, session, ctx, i, &rest).await?;
            Ok(Handled::Proxy)
        }
        Target::ListModels => {
            ctx.path_label = "/v1/models";
            require_method(&method, http::Method::GET)?;
            let body = models::list(session, ctx);
            reply(session, ctx, 200, body).await
        }
        Target::GetModel(id) => {
            ctx.path_label = "/v1/models/{model}";
            require_method(&method, http::Method::GET)?;
            let body = models::get(session, ctx, &id)?;
            reply(session, ctx, 200, body).await
        }
        Target::Health => {
            ctx.path_label = "/health";
            require_method(&method, http::Method::GET)?;
            // With a master key, only its holder sees the deployments (a virtual key gets 403).
            if ctx.state.master_digest.is_some()
                && !matches!(ctx.caller, super::ctx::Caller::Master)
            {
                return Err(GatewayError::MasterKeyRequired(
                    "The health report needs the master key".into(),
                ));
            }
            let body = Bytes::from(crate::admin::upstream_report(&ctx.state).to_string());
            reply(session, ctx, 200, body).await
        }
        Target::Model(endpoint) => {
            ctx.path_label = endpoint.template();
            require_method(&method, http::Method::POST)?;
            model_request(shared, session, ctx, endpoint).await
        }
        Target::Unknown => Err(GatewayError::NotFound(
            session.req_header().uri.path().to_string(),
        )),
    }
}

/// A model endpoint: read and parse the body, resolve the model (the key's own aliases first),
/// check scopes and the key's limits, then answer from the gateway (token counting), the cache or a
/// batch, or go through the upstream exchange.
async fn model_request(
    shared: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
) -> Result<Handled, GatewayError> {
    let state = ctx.state.clone();
    ctx.endpoint = Some(endpoint);
    let raw = body::read(session, state.config.server.max_request_body).await?;
    if let Some(t) = &state.tracing {
        ctx.traced_answer = Some(Box::default());
        if t.cfg.include_content {
            ctx.traced_body = Some(raw.clone());
        }
    }
    let req = ModelRequest::parse(&raw)?;
    let requested = ctx
        .caller
        .key()
        .map_or(req.model.as_str(), |k| k.resolve_model(&req.model))
        .to_string();
    let model_idx = models::resolve(ctx, &requested)?;
    if !ctx
        .caller
        .allows(&state.config.models[model_idx].name, &req.model)
    {
        return Err(GatewayError::ModelNotAllowed(format!(
            "This key may not use model `{}`",
            req.model
        )));
    }
    ctx.model = Some(model_idx);
    let user = crate::auth::end_user(&req);
    let model_name = &state.config.models[model_idx].name;
    crate::auth::govern(
        shared,
        ctx,
        Some((model_name, &req.model)),
        user.as_deref(),
        // The key's, team's and end user's `tpm` charge an estimate that is settled with the real
        // usage when the answer ends, so it is made by size (one token per 3 bytes of the prompt's
        // JSON, an over-count): tiktoken's exact count cost as much CPU as the rest of the
        // governance (callgrind: ~35k of a governed request's ~37k extra instructions), parsing
        // the messages for their text 3k of the 18k left.
        || {
            let sched = &state.sched.models[model_idx];
            crate::sched::tokens::estimate_by_size(
                endpoint,
                &req.body,
                sched.policy.default_max_tokens,
            )
            .total()
        },
    )
    .await?;
    // Anthropic's token counting, for a model with no deployment that counts itself.
    if endpoint == Endpoint::CountTokens && !serves_natively(ctx, model_idx, endpoint) {
        let n = count_tokens_locally(ctx, model_idx, &raw).await;
        let body = serde_json::json!({ "input_tokens": n }).to_string();
        return reply(session, ctx, 200, Bytes::from(body)).await;
    }
    // Response cache: a hit is answered here, at no rate budget or spend.
    let plan = cached::plan(session, ctx, endpoint, model_idx, &req);
    let mut flight = None;
    if let Some(p) = &plan {
        match cached::lookup(session, ctx, p, &req).await {
            cached::Lookup::Served => return Ok(Handled::Done),
            cached::Lookup::Lead(guard) => flight = guard,
        }
        if p.store {
            ctx.cache_record = Some(crate::cache::Recorder::new(
                state.cache.cfg.max_entry_bytes,
                p.key,
                p.ttl,
            ));
        }
    }
    // Batch API coalescing: answered from a batch, or sent back to go synchronously.
    if let Some(relayed) = batch::try_batch(
        shared, &state, session, ctx, endpoint, model_idx, &req, &raw,
    )
    .await?
    {
        return Ok(relayed.into());
    }
    let ex = exchange::Exchange {
        endpoint,
        model_idx,
        req: &req,
        raw: &raw,
    };
    // A complete answer is stored by the relay before its last byte goes out.
    let relayed = exchange::forward(shared, &state, session, ctx, ex).await?;
    ctx.cache_record = None;
    // Followers of this miss look again now (the answer is stored, or it failed).
    drop(flight);
    Ok(relayed.into())
}

/// The metric `path` label of a management endpoint.
fn management_label(path: &str) -> &'static str {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    [
        "/key/",
        "/team/",
        "/customer/",
        "/spend/",
        "/global/spend/",
        "/audit/",
    ]
    .iter()
    .zip([
        "/key/*",
        "/team/*",
        "/customer/*",
        "/spend/*",
        "/global/spend/*",
        "/audit/*",
    ])
    .find(|(prefix, _)| p.starts_with(**prefix))
    .map_or("other", |(_, label)| label)
}

/// LiteLLM's management API — `/key/*`, `/team/*`, `/customer/*`, `/spend/logs`,
/// `/global/spend/report`, `/audit/logs` — master key only (a virtual key gets 403).
async fn management_api(
    shared: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
    method: &http::Method,
) -> Result<Handled, GatewayError> {
    let Some(keys) = shared.keys.clone() else {
        return Err(GatewayError::NotFound(format!(
            "{} (management needs server.master_key)",
            ctx.path_label
        )));
    };
    if !matches!(ctx.caller, super::ctx::Caller::Master) {
        return Err(GatewayError::MasterKeyRequired(
            "Key, team, customer, spend and audit management needs the master key".into(),
        ));
    }
    let body = if method == http::Method::POST {
        body::read(session, ctx.state.config.server.max_request_body).await?
    } else {
        Bytes::new()
    };
    let path = session.req_header().uri.path().to_string();
    let query = session.req_header().uri.query().map(str::to_string);
    let (status, v) = crate::keys::handle(&keys, method, &path, query.as_deref(), &body).await;
    if status >= 400 {
        ctx.fail(super::ctx::ErrorKind::KeyApi);
    }
    reply(session, ctx, status, Bytes::from(v.to_string())).await
}

/// Write a JSON answer of the gateway's own.
async fn reply(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
) -> Result<Handled, GatewayError> {
    if let Err(e) = respond::json(session, ctx, status, body).await {
        log::debug!(
            "request {}: writing the response failed: {e}",
            ctx.request_id
        );
    }
    Ok(Handled::Done)
}

fn require_method(got: &http::Method, want: http::Method) -> Result<(), GatewayError> {
    if *got == want {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed(format!(
            "Method {got} is not allowed here; use {want}"
        )))
    }
}

/// Whether any deployment of the model can serve `endpoint` itself (token counting: Anthropic).
fn serves_natively(ctx: &RequestCtx, model_idx: usize, endpoint: Endpoint) -> bool {
    let cfg = &ctx.state.config;
    cfg.models[model_idx]
        .deployments
        .iter()
        .any(|d| crate::providers::serves(cfg.upstreams[d.upstream_id.index()].provider, endpoint))
}

/// `POST /v1/messages/count_tokens` answered by the gateway: the prompt's tokens as the scheduler
/// estimates them (tiktoken for models it knows — off the worker thread, as loading a vocabulary
/// takes a moment — one token per 3 bytes otherwise), for the first deployment's model.
async fn count_tokens_locally(ctx: &RequestCtx, model_idx: usize, raw: &Bytes) -> u64 {
    let model = ctx.state.config.models[model_idx]
        .deployments
        .first()
        .map(|d| d.model.clone())
        .unwrap_or_default();
    let raw = raw.clone();
    crate::sched::tokens::off_worker(move || {
        crate::sched::tokens::estimate_raw(Endpoint::CountTokens, &raw, &model, 0).prompt
    })
    .await
    .unwrap_or(0)
}
