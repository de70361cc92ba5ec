//! `GET /v1/models` and `GET /v1/models/{id}`: the models this caller may use (listener scope and
//! key scope), in OpenAI's list shape, or Anthropic's for a caller that sent `anthropic-version`
//! (the Anthropic SDKs always do). Also the scoped model lookup every model request uses.

use super::ctx::{Caller, RequestCtx};
use crate::config::Listener;
use crate::error::GatewayError;
use crate::route;
use crate::state::State;
use bytes::Bytes;
use pingora::proxy::Session;

/// The body of `GET /v1/models`.
pub fn list(session: &Session, ctx: &RequestCtx) -> Bytes {
    let anthropic = wants_anthropic(session);
    let data: Vec<serde_json::Value> = caller_models(&ctx.state, ctx.listener(), &ctx.caller)
        .iter()
        .map(|id| model_object(id, anthropic))
        .collect();
    let body = if anthropic {
        // Anthropic's list shape (the Anthropic SDKs' `models.list()`).
        let first = data.first().map(|m| m["id"].clone());
        let last = data.last().map(|m| m["id"].clone());
        serde_json::json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
    } else {
        serde_json::json!({"object": "list", "data": data})
    };
    Bytes::from(body.to_string())
}

/// The body of `GET /v1/models/{id}`: 404 for a model the caller cannot see, 403 outside its key's
/// scope.
pub fn get(session: &Session, ctx: &RequestCtx, id: &str) -> Result<Bytes, GatewayError> {
    let i = resolve(ctx, id)?;
    if !ctx.caller.allows(&ctx.state.config.models[i].name, id) {
        return Err(GatewayError::ModelNotAllowed(format!(
            "This key may not use model `{id}`"
        )));
    }
    Ok(Bytes::from(
        model_object(id, wants_anthropic(session)).to_string(),
    ))
}

/// [`route::Router::resolve`] for this request's listener, with an unknown model's 404 listing
/// only what this caller may use.
pub fn resolve(ctx: &RequestCtx, name: &str) -> Result<usize, GatewayError> {
    let state = &ctx.state;
    state
        .router
        .resolve(&state.config, ctx.listener(), name)
        .map_err(|e| match e {
            GatewayError::ModelNotFound { model, .. } => GatewayError::ModelNotFound {
                model,
                available: caller_models(state, ctx.listener(), &ctx.caller),
            },
            other => other,
        })
}

/// The model ids (names and aliases) this caller may use on this listener.
fn caller_models(state: &State, listener: &Listener, caller: &Caller) -> Vec<String> {
    let cfg = &state.config;
    route::visible_models(cfg, listener)
        .into_iter()
        .filter(|id| {
            let name = state
                .router
                .lookup(id)
                .and_then(|i| cfg.models.get(i))
                .map_or(id.as_str(), |m| m.name.as_str());
            caller.allows(name, id)
        })
        .collect()
}

fn wants_anthropic(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .contains_key("anthropic-version")
}

/// A model as `/v1/models` lists it: OpenAI's shape, or Anthropic's.
fn model_object(id: &str, anthropic: bool) -> serde_json::Value {
    if anthropic {
        serde_json::json!({"type": "model", "id": id, "display_name": id,
            "created_at": "1970-01-01T00:00:00Z"})
    } else {
        serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "llmproxy"})
    }
}
