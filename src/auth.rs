//! Who may call, and how much: the client-IP limit of a listener, the master key and virtual keys,
//! a key's own rpm / tpm, and the admission of passthrough routes (governed like models).
//!
//! Everything here answers from memory: the key view is refreshed in the background
//! ([`crate::keys`]), budgets are token buckets in process ([`crate::sched::store`]).

use crate::error::GatewayError;
use crate::proxy::ctx::{Caller, RequestCtx};
use crate::sched::bucket::Rate;
use crate::sched::store::{Budget, Charge, Verdict};
use crate::state::{Shared, State};
use pingora::proxy::Session;
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
                retry_after: Duration::from_secs_f64(w),
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
            ctx.key_id = Some(entry.key_id().into());
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

/// A key's own `rpm` / `tpm`: checked (and charged) once per request, refused at once with 429
/// rather than queued, so one key over its limit never holds up the model's queue. `tokens` is
/// asked only when the key has a `tpm`.
pub fn key_limits(
    state: &State,
    ctx: &RequestCtx,
    tokens: impl FnOnce() -> u64,
) -> Result<(), GatewayError> {
    let Some(k) = ctx.caller.key() else {
        return Ok(());
    };
    if k.rpm().is_none() && k.tpm().is_none() {
        return Ok(());
    }
    let rpm = k.rpm().map(|r| {
        Budget::bucket(
            format!("key:{}:rpm", k.key_id()).into(),
            Rate::per_minute(r),
        )
    });
    let tpm = k.tpm().map(|t| {
        Budget::bucket(
            format!("key:{}:tpm", k.key_id()).into(),
            Rate::per_minute(t),
        )
    });
    let tokens = if tpm.is_some() { tokens() as f64 } else { 0.0 };
    let mut charges = Vec::with_capacity(2);
    if let Some(b) = &rpm {
        charges.push(Charge {
            budget: b,
            cost: 1.0,
        });
    }
    if let Some(b) = &tpm {
        charges.push(Charge {
            budget: b,
            cost: tokens,
        });
    }
    match state.sched.store.local.try_admit(&charges) {
        Verdict::Admitted => Ok(()),
        Verdict::Wait(w) => Err(GatewayError::RateLimited {
            message: format!(
                "This key is over its own rate limit ({}); retry after {:.0}s",
                match (k.rpm(), k.tpm()) {
                    (Some(r), Some(t)) => format!("{r} requests / {t} tokens per minute"),
                    (Some(r), None) => format!("{r} requests per minute"),
                    (None, Some(t)) => format!("{t} tokens per minute"),
                    (None, None) => String::new(),
                },
                w.ceil()
            ),
            retry_after: Duration::from_secs_f64(w.max(1.0)),
        }),
    }
}

/// A passthrough route is governed like a model: the listener must serve it, a virtual key must
/// be granted it (`routes` scope; the master key may use every route), the path must be one the
/// route allows, the declared body must fit `max_request_body` (a chunked body is counted as it
/// streams, `request_body_filter`), and the key's own rpm / tpm apply (tokens estimated from the
/// body size, one per 4 bytes, as the body is not read here).
pub fn admit_route(
    session: &Session,
    ctx: &RequestCtx,
    route_idx: usize,
    rest: &str,
) -> Result<(), GatewayError> {
    let state = &ctx.state;
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
    key_limits(state, ctx, || declared.unwrap_or(0) / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

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
