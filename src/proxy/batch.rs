//! The request path's side of Batch API coalescing ([`crate::batch`]): decide whether a request is
//! batched, hand its line to the batcher, wait (watching the client), and answer with the line's
//! status and body — or return `None` so the request goes through the synchronous exchange.
//!
//! Eligible: `POST /v1/chat/completions` and `/v1/embeddings`, not streaming, on a model with
//! `batch` enabled, when the model's `mode` is `always` or the request says `x-llmproxy-batch: 1`
//! (`x-llmproxy-batch: 0` opts a request out of `always`). A streaming request on a batch model is
//! served synchronously in both modes: the Batch API has no streams, and refusing it would break
//! clients that stream some calls and not others behind one model name.

use super::ctx::RequestCtx;
use super::respond::{X_BATCH, X_CACHE, X_DEPLOYMENT, X_MODEL, X_REQUEST_ID};
use crate::batch::{Account, BatchEndpoint, Line, QueueKey, Reply, Target};
use crate::body::ModelRequest;
use crate::config::batch::Mode;
use crate::error::GatewayError;
use crate::exchange::{self, Relayed};
use crate::route::Endpoint;
use crate::state::{Shared, State};
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What batching did to a request (in [`RequestCtx`]).
#[derive(Debug, Default, Clone)]
pub struct BatchState {
    /// The batch that answered (`x-llmproxy-batch`). Its spend is recorded by the batcher, at the
    /// batch price, not by the request's own accounting.
    pub id: Option<Arc<str>>,
    /// How long the request waited for a batch before it went synchronously: the model's time
    /// limit for the synchronous exchange starts after this wait.
    pub waited: Duration,
}

/// The request's `x-llmproxy-batch` header: `Some(true)` opts in, `Some(false)` opts out.
fn opted(headers: &http::HeaderMap) -> Option<bool> {
    let v = headers.get("x-llmproxy-batch")?.to_str().ok()?.trim();
    if ["1", "true", "yes", "on"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(true)
    } else if ["0", "false", "no", "off"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(false)
    } else {
        None
    }
}

fn count(shared: &Shared, result: &str) {
    shared
        .metrics
        .batch_requests
        .with_label_values(&[result])
        .inc();
}

/// Batch the request when it is eligible. `Some`: answered (or the client left); `None`: not
/// batched, or the batcher sent it back — go through the synchronous exchange.
#[allow(
    clippy::too_many_arguments,
    reason = "one batched request's parts, each from a different phase"
)]
pub async fn try_batch(
    shared: &Shared,
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    model_idx: usize,
    req: &ModelRequest<'_>,
    raw: &Bytes,
) -> Result<Option<Relayed>, GatewayError> {
    let cfg = &state.config;
    let Some(model) = cfg.models.get(model_idx) else {
        return Ok(None);
    };
    let settings = &model.batch;
    if !settings.enabled || req.stream {
        return Ok(None);
    }
    let batch_endpoint = match endpoint {
        Endpoint::ChatCompletions => BatchEndpoint::ChatCompletions,
        Endpoint::Embeddings => BatchEndpoint::Embeddings,
        _ => return Ok(None),
    };
    let wanted = match (opted(&session.req_header().headers), settings.mode) {
        (Some(x), _) => x,
        (None, Mode::Always) => true,
        (None, Mode::OptIn) => false,
    };
    if !wanted {
        return Ok(None);
    }
    // A healthy deployment on a provider whose Batch API the gateway speaks.
    let not_batchable: Vec<usize> = model
        .deployments
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            cfg.upstreams
                .get(d.upstream_id.index())
                .is_none_or(|u| !crate::config::batch::supports(u.provider))
        })
        .map(|(i, _)| i)
        .collect();
    let Some(d) = state.balancers[model_idx].pick(&state.upstreams, &not_batchable) else {
        return Ok(None);
    };
    let dep = &model.deployments[d];
    let pool = &state.upstreams[dep.upstream_id.index()];
    // The deployment the lines name (on Azure, the model's Global Batch deployment).
    let batch_model = settings.deployment_on(&pool.cfg.name, &dep.model);
    let line = Line {
        custom_id: format!("llmproxy-{:032x}", rand::random::<u128>()),
        body: req
            .body
            .with_model_and(batch_model, raw.len(), None, &dep.params),
        account: Account {
            key_hash: ctx.caller.key().map(|k| k.key.hash.clone()),
            user: ctx.governed.user_id.as_deref().map(str::to_string),
            model: model.name.clone(),
            price: crate::pricing::resolve(
                model.pricing.as_ref(),
                pool.cfg.provider.as_str(),
                &dep.model,
            ),
        },
    };
    let target = Target {
        key: QueueKey {
            upstream: pool.cfg.name.clone(),
            endpoint: batch_endpoint,
            model: batch_model.to_string(),
        },
        upstream: pool.cfg.clone(),
        settings: settings.clone(),
    };
    let mut rx = shared.batcher.submit(target, line);
    // Wait for the batch, noticing a client that leaves (its line is then dropped from delivery;
    // if it was not submitted yet, from the batch).
    let reply = tokio::select! {
        r = &mut rx => r.unwrap_or(Reply::Fallback("batcher_stopped")),
        _ = exchange::client_gone(session, Duration::ZERO) => {
            count(shared, "client_gone");
            ctx.fail(crate::proxy::ctx::ErrorKind::ClientClosed);
            return Ok(Some(Relayed::Truncated));
        }
    };
    let answer = match reply {
        Reply::Answer(a) if (100..=599).contains(&a.status) => a,
        Reply::Answer(_) => return Ok(fallback(shared, ctx, "bad_status")),
        Reply::Fallback(why) => return Ok(fallback(shared, ctx, why)),
    };
    ctx.upstream = Some(dep.upstream_id.index());
    ctx.deployment = Some(d);
    ctx.set_usage(answer.usage);
    ctx.batch.id = Some(answer.batch_id.clone());
    ctx.outcome.status = answer.status;
    ctx.outcome.first_byte = Some(Instant::now());
    let header = match response_header(ctx, &answer, &pool.cfg.name, &model.name) {
        Ok(h) => h,
        Err(e) => {
            log::warn!(
                "request {}: building the batch answer's header failed: {e}",
                ctx.request_id
            );
            ctx.batch.id = None;
            ctx.set_usage(None);
            return Ok(fallback(shared, ctx, "bad_header"));
        }
    };
    let written = session
        .write_response_header(Box::new(header), false)
        .await
        .is_ok()
        && session
            .write_response_body(Some(answer.body), true)
            .await
            .is_ok();
    if !written {
        count(shared, "client_gone");
        ctx.fail(crate::proxy::ctx::ErrorKind::ClientClosed);
        return Ok(Some(Relayed::Truncated));
    }
    count(
        shared,
        if answer.status < 400 {
            "batched"
        } else {
            "error"
        },
    );
    Ok(Some(Relayed::Complete))
}

/// The batcher sent the request back: it goes synchronously, with its full time limit.
fn fallback(shared: &Shared, ctx: &mut RequestCtx, why: &str) -> Option<Relayed> {
    count(shared, "fallback");
    ctx.batch.waited = ctx.start.elapsed();
    log::debug!(
        "request {}: not answered by a batch ({why}) after {:?}; sending it synchronously",
        ctx.request_id,
        ctx.batch.waited
    );
    None
}

/// The answer's header: the line's status, its JSON body's length, and the gateway's headers.
fn response_header(
    ctx: &RequestCtx,
    a: &crate::batch::Answer,
    upstream: &str,
    model: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(a.status, Some(8))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, a.body.len())?;
    resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    resp.insert_header(X_DEPLOYMENT, upstream)?;
    resp.insert_header(X_MODEL, model)?;
    resp.insert_header(X_BATCH, &*a.batch_id)?;
    if let Some(c) = ctx.outcome.cache {
        resp.insert_header(X_CACHE, c.label())?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_in_header_values() {
        let mut h = http::HeaderMap::new();
        assert_eq!(opted(&h), None);
        for (v, want) in [
            ("1", Some(true)),
            ("TRUE", Some(true)),
            ("0", Some(false)),
            ("off", Some(false)),
            ("maybe", None),
        ] {
            h.insert("x-llmproxy-batch", http::HeaderValue::from_static(v));
            assert_eq!(opted(&h), want, "{v}");
        }
    }
}
