//! Who may call, and how much: the client-IP limit of a listener, the master key and virtual keys,
//! governance by key, team and end user (scope, budgets, rpm / tpm), and the admission of
//! passthrough routes (governed like models).
//!
//! Everything here answers from memory: the key view is refreshed in the background
//! ([`crate::keys`]); rate budgets are token buckets in process, or in Redis when `state.redis` is
//! set ([`crate::sched::store`]).

use crate::error::GatewayError;
use crate::proxy::ctx::{Caller, RequestCtx};
use crate::sched::bucket::Rate;
use crate::sched::store::{Budget, Charge, Verdict};
use crate::state::Shared;
use pingora::proxy::Session;
use std::borrow::Cow;
use std::time::Duration;

/// `listeners[].client_ratelimit`: a token bucket per client IP (exact: `burst` at once, then
/// `per_second`). Refused requests are counted in `llmproxy_ratelimit_total{forward}`.
pub fn client_limited(
    shared: &Shared,
    session: &Session,
    ctx: &RequestCtx,
) -> Option<GatewayError> {
    let state = &ctx.state;
    let l = state.config.server.listeners.get(ctx.listener)?;
    let limit = l.client_ratelimit?;
    let ip = crate::proxy::client_addr::client_ip(session, &state.config.server.trusted_proxies)?;
    let budget = Budget::bucket(
        format!("{}|{ip}", l.name).into(),
        Rate {
            unit_secs: 1.0 / limit.per_second,
            tolerance_secs: limit.burst / limit.per_second,
        },
    );
    let charge = [Charge {
        budget: &budget,
        cost: 1.0,
    }];
    match shared.client_buckets.try_admit(&charge) {
        Verdict::Admitted => None,
        Verdict::Wait(w) => {
            shared
                .metrics
                .ratelimit
                .with_label_values(&[l.name.as_str()])
                .inc();
            Some(GatewayError::RateLimited {
                message: format!(
                    "Too many requests from this client on listener `{}` (limit {} per second, burst {})",
                    l.name, limit.per_second, limit.burst
                ),
                retry_after: Duration::try_from_secs_f64(w).unwrap_or(Duration::from_secs(86_400)),
            })
        }
    }
}

/// With `server.master_key` set: the caller must present the master key or a valid virtual key
/// (`Authorization: Bearer`, `x-api-key` or `api-key`). The key never goes further.
pub fn authenticate(
    shared: &Shared,
    session: &Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let Some(expected) = ctx.state.master_digest else {
        return Ok(());
    };
    let Some(secret) = presented_key(&session.req_header().headers) else {
        return Err(GatewayError::InvalidApiKey(
            "Missing API key: send `Authorization: Bearer <key>` (or `x-api-key` / `api-key`)"
                .into(),
        ));
    };
    let presented = crate::keys::material::digest(secret);
    if bool::from(subtle::ConstantTimeEq::ct_eq(&presented[..], &expected[..])) {
        ctx.caller = Caller::Master;
        return Ok(());
    }
    // A master key turned on by a reload: the keys database opens at the next start; until then
    // only the master key gets in.
    let Some(keys) = &shared.keys else {
        return Err(GatewayError::InvalidApiKey("Invalid API key".into()));
    };
    match keys.authenticate_digest(&presented) {
        Ok(entry) => {
            ctx.key_id = Some(entry.shared_id().clone());
            ctx.caller = Caller::Key(entry);
            Ok(())
        }
        Err(e) if e.status() == 429 => Err(GatewayError::BudgetExceeded(e.message().into())),
        Err(e) => Err(GatewayError::InvalidApiKey(e.message().into())),
    }
}

/// The API key the client presented: `Authorization: Bearer` (the scheme in any case),
/// `x-api-key` or `api-key`.
pub fn presented_key(h: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest,
            _ => v,
        }
        .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|k| h.get(*k).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Governance of an authenticated request: the key's team and the end user named by the request
/// (`user`) are checked — blocked, model scope (`model`: the configured name and the name the client
/// sent; `None` for a passthrough route), budget — then the key's, the team's and the end user's
/// rpm / tpm are charged (once per request, refused at once with 429 rather than queued, so that one
/// caller over its limit never holds up the model's queue), in the scheduler's budget store: in
/// process, or in Redis with `state.redis`, shared by every instance. `tokens` (the request's
/// estimate) is asked only when a tpm applies. The refusal names the level that refused.
pub async fn govern(
    shared: &Shared,
    ctx: &mut RequestCtx,
    model: Option<(&str, &str)>,
    user: Option<&str>,
    tokens: impl FnOnce() -> u64,
) -> Result<(), GatewayError> {
    let Some(keys) = &shared.keys else {
        return Ok(());
    };
    // The master key is the operator's: it need not name a known end user.
    let require_known =
        ctx.state.config.keys.require_known_user && !matches!(ctx.caller, Caller::Master);
    ctx.governed = keys
        .admit(ctx.caller.key_entry(), user, model, require_known)
        .map_err(|r| r.to_error())?;
    let state = ctx.state.clone();
    ctx.rates_charged = ctx
        .governed
        .charge_rates(&state.sched.store, tokens)
        .await?;
    Ok(())
}

/// Settles the token budgets charged by [`govern`] with the answer's real usage.
pub async fn settle(ctx: &RequestCtx) {
    if ctx.rates_charged.tpm.is_empty() {
        return;
    }
    let actual = ctx.outcome.usage.map_or(0, |u| {
        let u = u.usage();
        u.prompt_tokens.saturating_add(u.completion_tokens)
    });
    ctx.rates_charged
        .reconcile(&ctx.state.sched.store, actual)
        .await;
}

/// The end user a request names: `user` (OpenAI), or `metadata.user_id` (Anthropic's Messages API).
pub fn end_user<'a>(req: &crate::body::ModelRequest<'a>) -> Option<Cow<'a, str>> {
    if let Some(raw) = req.body.get("user") {
        // Most ids hold no escapes: borrowed from the body as they are, without a JSON decoder.
        if let Some(plain) = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|s| !s.bytes().any(|b| b == b'\\' || b == b'"' || b < 0x20))
        {
            return Some(Cow::Borrowed(plain));
        }
        return serde_json::from_str::<String>(raw).ok().map(Cow::Owned);
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        user_id: Option<String>,
    }
    let raw = req.body.get("metadata")?;
    serde_json::from_str::<Metadata>(raw)
        .ok()?
        .user_id
        .map(Cow::Owned)
}

/// A passthrough route is governed like a model: the listener must serve it, a virtual key must
/// be granted it (`routes` scope; the master key may use every route), the path must be one the
/// route allows, the declared body must fit `max_request_body` (a chunked body is counted as it
/// streams, `request_body_filter`), and the key's and its team's budgets and rpm / tpm apply
/// (tokens estimated from the body size, one per 4 bytes, as the body is not read here).
pub async fn admit_route(
    shared: &Shared,
    session: &Session,
    ctx: &mut RequestCtx,
    route_idx: usize,
    rest: &str,
) -> Result<(), GatewayError> {
    let state = ctx.state.clone();
    let route = &state.config.routes[route_idx];
    if !ctx.listener().route_scope.allows(route_idx) {
        return Err(GatewayError::RouteNotAllowed(format!(
            "This endpoint does not serve the route `{}`",
            route.prefix
        )));
    }
    if ctx
        .caller
        .key()
        .is_some_and(|k| !k.allows_route(&route.prefix))
    {
        return Err(GatewayError::RouteNotAllowed(format!(
            "This key may not use the route `{}` (a key's `routes` must name it)",
            route.prefix
        )));
    }
    if !route.allows_path(rest) {
        return Err(GatewayError::RouteNotAllowed(format!(
            "The route `{}` does not allow the path `{}` (routes[].allow_paths)",
            route.prefix,
            rest.chars().take(200).collect::<String>()
        )));
    }
    let limit = state.config.server.max_request_body;
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::RequestTooLarge { limit });
    }
    govern(shared, ctx, None, None, || declared.unwrap_or(0) / 4).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_users_plain_and_escaped() {
        let user = |body: &str| {
            end_user(&crate::body::ModelRequest::parse(body.as_bytes()).unwrap())
                .map(|u| u.into_owned())
        };
        let m = r#""model":"m","messages":[]"#;
        assert_eq!(
            user(&format!(r#"{{{m},"user":"u1"}}"#)).as_deref(),
            Some("u1")
        );
        assert_eq!(
            user(&format!(r#"{{{m},"user":"ünï"}}"#)).as_deref(),
            Some("ünï")
        );
        assert_eq!(
            user(&format!(r#"{{{m},"user":"a\"b\u0041"}}"#)).as_deref(),
            Some("a\"bA")
        );
        assert_eq!(
            user(&format!(r#"{{{m},"user": "spaced" }}"#)).as_deref(),
            Some("spaced")
        );
        assert_eq!(user(&format!(r#"{{{m},"user":7}}"#)), None);
        assert_eq!(
            user(&format!(r#"{{{m},"metadata":{{"user_id":"x"}}}}"#)).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn auth_schemes_are_case_insensitive() {
        let mut h = http::HeaderMap::new();
        for v in [
            "Bearer sk-1",
            "bearer sk-1",
            "BEARER sk-1",
            "  Bearer   sk-1 ",
        ] {
            h.insert("authorization", http::HeaderValue::from_str(v).unwrap());
            assert_eq!(presented_key(&h), Some("sk-1"), "{v}");
        }
        h.insert("authorization", http::HeaderValue::from_static("sk-raw"));
        assert_eq!(presented_key(&h), Some("sk-raw"));
        h.remove("authorization");
        h.insert("x-api-key", http::HeaderValue::from_static("sk-2"));
        assert_eq!(presented_key(&h), Some("sk-2"));
    }
}
