//! The response cache on the request path: whether it applies ([`plan`]), serving a stored answer in
//! the mode the client asked (a stored JSON answer replayed as a stream and the other way round),
//! and single flight: identical concurrent misses wait for the one request that went upstream.

use super::ctx::{CacheOutcome, RequestCtx};
use super::respond;
use crate::body::ModelRequest;
use crate::cache;
use crate::route::Endpoint;
use bytes::Bytes;
use pingora::proxy::Session;

/// The outcome of a cache lookup.
pub enum Lookup {
    /// A stored answer was sent.
    Served,
    /// Go upstream (holding the single-flight guard when others may wait for this answer).
    Lead(Option<cache::FlightGuard>),
}

/// Whether and how the response cache applies to this request.
pub fn plan(
    session: &Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    model_idx: usize,
    req: &ModelRequest<'_>,
) -> Option<cache::Plan> {
    let state = ctx.state.clone();
    let model = &state.config.models[model_idx];
    if !model.cache.enabled || endpoint == Endpoint::CountTokens {
        return None;
    }
    let controls = cache::Controls::read(&req.body, &session.req_header().headers);
    let caller = match state.cache.cfg.scope {
        crate::config::cache::Scope::Key => ctx.key_identity(&session.req_header().headers),
        crate::config::cache::Scope::Global => None,
    };
    let plan = state.cache.plan(
        &model.name,
        &model.cache,
        endpoint,
        &req.body,
        controls,
        caller.as_deref(),
    );
    if plan.as_ref().is_none_or(|p| !p.read) {
        count(ctx, CacheOutcome::Bypass);
    }
    plan
}

/// Serve a stored answer, or wait for an identical request already fetching it, or lead.
pub async fn lookup(
    session: &mut Session,
    ctx: &mut RequestCtx,
    p: &cache::Plan,
    req: &ModelRequest<'_>,
) -> Lookup {
    if !p.read {
        return Lookup::Lead(None);
    }
    if serve(session, ctx, p, req).await {
        return Lookup::Served;
    }
    let cache = ctx.state.cache.clone();
    let guard = if p.store {
        match cache.join(p.key) {
            cache::Join::Leader(g) => Some(g),
            cache::Join::Follower(flight) => {
                flight.wait(cache.cfg.single_flight_wait).await;
                if serve(session, ctx, p, req).await {
                    return Lookup::Served;
                }
                // The leader failed or its answer was not stored: go on alone.
                None
            }
        }
    } else {
        None
    };
    count(ctx, CacheOutcome::Miss);
    Lookup::Lead(guard)
}

fn count(ctx: &mut RequestCtx, outcome: CacheOutcome) {
    ctx.outcome.cache = Some(outcome);
    ctx.state.cache.count(outcome.label());
}

/// Answer from the cache when an entry can serve this request's mode.
async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    p: &cache::Plan,
    req: &ModelRequest<'_>,
) -> bool {
    let Some(entry) = ctx.state.cache.get(&p.key, p.ttl).await else {
        return false;
    };
    let asked_usage = crate::providers::client_asked_usage(&req.body);
    let chunks: Vec<Bytes> = match (entry.sse, req.stream) {
        (true, true) if !asked_usage => cache::convert::without_usage_events(&entry.chunks),
        (true, true) | (false, false) => entry.chunks.clone(),
        (false, true) => {
            let body: Vec<u8> = entry
                .chunks
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            match cache::convert::json_to_sse(&body, asked_usage) {
                Some(c) => c,
                None => return false,
            }
        }
        (true, false) => match cache::convert::sse_to_json(&entry.chunks) {
            Some(b) => vec![b],
            None => return false,
        },
    };
    count(ctx, CacheOutcome::Hit);
    let model = ctx
        .model
        .and_then(|m| ctx.state.config.models.get(m))
        .map(|m| m.name.clone())
        .unwrap_or_default();
    if let Err(e) = respond::cached(session, ctx, req.stream, chunks, &model).await {
        log::debug!(
            "request {}: writing a cached answer failed: {e}",
            ctx.request_id
        );
    }
    true
}
