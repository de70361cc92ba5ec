//! The client-facing proxy: `impl ProxyHttp` only sequences the phases; the work lives in the modules.
//!
//! | phase | model endpoints (`/v1/chat/completions`, ...) | passthrough routes (`routes[].prefix`) |
//! | --- | --- | --- |
//! | `early_request_filter` | client timeouts | same |
//! | `request_filter` | request id, listener, route; read + parse body; resolve model; run the upstream exchange ([`exchange`]); answer | request id, route, path check; hand to Pingora's proxy loop |
//! | `upstream_peer` | — | a healthy address of the route's upstream |
//! | `upstream_request_filter` | — | path, Host, the upstream's auth and header ops; client credentials removed |
//! | `fail_to_connect` | — | retry on the next address |
//! | `response_filter` / `response_body_filter` | — | `x-request-id`, `x-llmproxy-deployment`; usage scan |
//! | `fail_to_proxy` | OpenAI-shaped error | same |
//! | `logging` | metrics, access log | same |

pub mod batch;
pub mod body;
pub mod client_addr;
pub mod ctx;
pub mod respond;

use crate::cache;
use crate::config::AccessLog;
use crate::error::GatewayError;
use crate::providers::forwardable;
use crate::route::{self, Target};
use crate::state::{Shared, State};
use async_trait::async_trait;
use bytes::Bytes;
use ctx::{Passthrough, RequestCtx};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

/// The gateway service: one per process, shared by every listener.
pub struct Gateway {
    pub shared: Arc<Shared>,
}

/// What `request_filter` decided.
/// The outcome of a cache lookup.
enum Lookup {
    /// A stored answer was sent.
    Served,
    /// Go upstream (holding the single-flight guard when others may wait for this answer).
    Lead(Option<cache::FlightGuard>),
}

enum Handled {
    /// The response was written.
    Done,
    /// Pingora's proxy loop carries on (passthrough).
    Proxy,
    /// The response broke off midway; the client connection must be dropped.
    Abort,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let t = self.shared.state.load().config.server.client_timeouts;
        session.set_read_timeout(Some(t.header));
        // Pingora turns keep-alive off when the client asks for `Connection: close` and for every
        // request read after a shutdown or upgrade began (the answer then says `Connection: close`,
        // so the client reconnects to the new process); only lengthen what is still on.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(t.idle.as_secs()));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.shared.state.load_full();
        ctx.state = Some(state.clone());
        ctx.request_id = ctx::request_id(
            session
                .req_header()
                .headers
                .get("x-request-id")
                .map(|v| v.as_bytes()),
        );
        ctx.listener = listener_index(&state, session);
        if let Some(e) = self.client_limited(&state, session, ctx) {
            respond::error(session, ctx, &e).await;
            return Ok(true);
        }
        if let Err(e) = self.authenticate(session, ctx) {
            respond::error(session, ctx, &e).await;
            return Ok(true);
        }
        match self.handle(&state, session, ctx).await {
            Ok(Handled::Done) => Ok(true),
            Ok(Handled::Proxy) => Ok(false),
            Ok(Handled::Abort) => Error::e_explain(ConnectionClosed, "upstream response broke off"),
            Err(e) => {
                respond::error(session, ctx, &e).await;
                Ok(true)
            }
        }
    }

    /// Passthrough bodies stream to the upstream; one that grows past `max_request_body` (a chunked
    /// body declares no length up front) fails the request with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(p), Some(b)) = (ctx.passthrough.as_mut(), body.as_ref()) {
            match p.body_left.checked_sub(b.len()) {
                Some(left) => p.body_left = left,
                None => {
                    return Error::e_explain(HTTPStatus(413), "request body over max_request_body")
                }
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(state), Some(p)) = (ctx.state.as_ref(), ctx.passthrough.as_mut()) else {
            return Error::e_explain(InternalError, "upstream_peer without a passthrough route");
        };
        let pool = &state.upstreams[p.upstream];
        let addr = pool
            .pick(&p.tried)
            .or_else(|| pool.pick(&[]).filter(|_| p.tried.len() < 2))
            .or_err(HTTPStatus(503), "no healthy upstream address")?;
        p.tried.push(addr);
        Ok(Box::new(pool.peer(addr)))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(state), Some(p)) = (ctx.state.as_ref(), ctx.passthrough.as_ref()) else {
            return Error::e_explain(
                InternalError,
                "upstream request without a passthrough route",
            );
        };
        let pool = &state.upstreams[p.upstream];
        let uri: http::Uri = p.path.parse().or_err(InternalError, "passthrough path")?;
        req.set_uri(uri);
        let drop: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| !forwardable(n) && !keep_for_passthrough(n))
            .cloned()
            .collect();
        for n in drop {
            req.remove_header(&n);
        }
        req.insert_header(http::header::HOST, pool.cfg.url.authority.as_str())?;
        req.insert_header("x-request-id", ctx.request_id.as_str())?;
        crate::providers::of(pool.cfg.provider).request_headers(req)?;
        crate::balance::upstream::apply_upstream_headers(&pool.cfg, req)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: retrying on another address is always safe.
        if let (Some(state), Some(p)) = (ctx.state.as_ref(), ctx.passthrough.as_ref()) {
            let pool = &state.upstreams[p.upstream];
            pool.note_error(format!("connect to {peer}: {e}"));
            self.shared
                .metrics
                .upstream_errors
                .with_label_values(&[
                    "connect",
                    route_group(state, p.route),
                    pool.cfg.name.as_str(),
                ])
                .inc();
            e.set_retry(p.tried.len() < pool.address_count().max(2));
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let (Some(state), Some(up)) = (ctx.state.as_ref(), ctx.upstream) {
            resp.insert_header(
                "x-llmproxy-deployment",
                state.upstreams[up].cfg.name.as_str(),
            )?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(p) = ctx.passthrough.as_mut() {
            if let Some(b) = body.as_ref() {
                if ctx.first_byte.is_none() && !b.is_empty() {
                    ctx.first_byte = Some(std::time::Instant::now());
                }
                p.scanner.feed(b);
            }
            if end_of_stream {
                ctx.usage = p.scanner.usage();
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let ge = match e.etype() {
            HTTPStatus(413) => GatewayError::RequestTooLarge {
                limit: ctx
                    .state
                    .as_ref()
                    .map_or(0, |s| s.config.server.max_request_body),
            },
            HTTPStatus(503) => {
                GatewayError::NoHealthyUpstream("No healthy upstream address".into())
            }
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                GatewayError::UpstreamTimeout("The upstream did not answer in time".into())
            }
            ConnectionClosed if ctx.status != 0 => {
                // A response already started and broke off: nothing more can be written.
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            _ => GatewayError::UpstreamError(format!(
                "Upstream request failed: {}",
                e.etype().as_str()
            )),
        };
        if session.response_written().is_none() {
            respond::error(session, ctx, &ge).await;
        }
        ctx.error.get_or_insert(ge.code());
        FailToProxy {
            error_code: ge.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.record(session, ctx);
    }
}

/// Headers the passthrough keeps although model requests drop them (the upstream sees the client's
/// own content framing; Pingora handles hop-by-hop headers itself).
fn keep_for_passthrough(n: &http::HeaderName) -> bool {
    matches!(
        n.as_str(),
        "content-length" | "transfer-encoding" | "accept-encoding"
    )
}

fn route_group(state: &State, route: usize) -> &str {
    state
        .config
        .routes
        .get(route)
        .map(|r| r.prefix.as_str())
        .unwrap_or("")
}

/// Which configured listener accepted this connection.
fn listener_index(state: &State, session: &Session) -> usize {
    let Some(local) = session.server_addr().and_then(|a| a.as_inet()) else {
        return 0;
    };
    let listeners = &state.config.server.listeners;
    listeners
        .iter()
        .position(|l| l.listen == *local)
        .or_else(|| {
            listeners
                .iter()
                .position(|l| l.listen.port() == local.port() && l.listen.ip().is_unspecified())
        })
        .unwrap_or(0)
}

impl Gateway {
    async fn handle(
        &self,
        state: &Arc<State>,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Handled, GatewayError> {
        let cfg = &state.config;
        let listener = &cfg.server.listeners[ctx
            .listener
            .min(cfg.server.listeners.len().saturating_sub(1))];
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path();
        if let Some(rest) = path
            .strip_prefix("/v1")
            .unwrap_or(path)
            .strip_prefix("/key/")
        {
            ctx.path_label = "/key/*";
            let _ = rest;
            return self.key_api(session, ctx, &method).await;
        }
        let target = route::classify(cfg, session.req_header().uri.path());
        let anthropic = session
            .req_header()
            .headers
            .contains_key("anthropic-version");
        match target {
            Target::Passthrough(i, rest) => {
                ctx.route = Some(i);
                let raw_target =
                    String::from_utf8_lossy(session.req_header().raw_path()).into_owned();
                route::check_passthrough_path(&rest, &raw_target)?;
                self.admit_route(state, session, ctx, listener, i, &rest)?;
                let query = session
                    .req_header()
                    .uri
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                let upstream = cfg.routes[i].upstream_idx;
                ctx.upstream = Some(upstream);
                ctx.passthrough = Some(Passthrough {
                    route: i,
                    upstream,
                    path: format!("{rest}{query}"),
                    tried: Vec::new(),
                    scanner: Box::default(),
                    body_left: cfg.server.max_request_body,
                });
                Ok(Handled::Proxy)
            }
            Target::ListModels => {
                ctx.path_label = "/v1/models";
                require_method(&method, http::Method::GET)?;
                let data: Vec<serde_json::Value> = caller_models(state, listener, &ctx.caller)
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
                }
                .to_string();
                self.reply(session, ctx, 200, Bytes::from(body)).await
            }
            Target::GetModel(id) => {
                ctx.path_label = "/v1/models/{model}";
                require_method(&method, http::Method::GET)?;
                let i = resolve_for(state, listener, &ctx.caller, &id)?;
                if !ctx.caller.allows(&cfg.models[i].name, &id) {
                    return Err(GatewayError::ModelNotAllowed(format!(
                        "This key may not use model `{id}`"
                    )));
                }
                self.reply(
                    session,
                    ctx,
                    200,
                    Bytes::from(model_object(&id, anthropic).to_string()),
                )
                .await
            }
            Target::Model(endpoint) => {
                ctx.path_label = endpoint.template();
                require_method(&method, http::Method::POST)?;
                let raw = body::read(session, cfg.server.max_request_body).await?;
                if state
                    .tracing
                    .as_ref()
                    .is_some_and(|t| t.cfg.include_content)
                {
                    ctx.traced_body = Some(raw.clone());
                }
                let req = crate::body::ModelRequest::parse(&raw)?;
                // A key's own aliases map the requested name first (seed 002).
                let requested = ctx
                    .caller
                    .key()
                    .map_or(req.model.as_str(), |k| k.resolve_model(&req.model))
                    .to_string();
                let model_idx = resolve_for(state, listener, &ctx.caller, &requested)?;
                if !ctx.caller.allows(&cfg.models[model_idx].name, &req.model) {
                    return Err(GatewayError::ModelNotAllowed(format!(
                        "This key may not use model `{}`",
                        req.model
                    )));
                }
                ctx.model = Some(model_idx);
                self.key_limits(state, ctx, || {
                    let sched = &state.sched.models[model_idx];
                    crate::sched::tokens::estimate(
                        endpoint,
                        &req.body,
                        sched.counter,
                        sched.policy.default_max_tokens,
                    )
                    .total()
                })?;
                // Anthropic's token counting, for a model with no Anthropic deployment to ask.
                if endpoint == crate::route::Endpoint::CountTokens
                    && !serves_natively(state, model_idx, endpoint)
                {
                    let n = count_tokens_locally(state, model_idx, &raw).await;
                    let body = serde_json::json!({ "input_tokens": n }).to_string();
                    return self.reply(session, ctx, 200, Bytes::from(body)).await;
                }
                // Response cache: a hit is answered here, at no rate budget or spend.
                let plan = self.cache_plan(state, session, ctx, endpoint, model_idx, &req);
                let mut flight = None;
                if let Some(p) = &plan {
                    match self.cache_lookup(state, session, ctx, p, &req).await {
                        Lookup::Served => return Ok(Handled::Done),
                        Lookup::Lead(guard) => flight = guard,
                    }
                    if p.store {
                        ctx.cache_record = Some(cache::Recorder::new(
                            state.cache.cfg.max_entry_bytes,
                            p.key,
                            p.ttl,
                        ));
                    }
                }
                // Batch API coalescing: answered from a batch, or sent back to go synchronously.
                if let Some(relayed) = batch::try_batch(
                    &self.shared,
                    state,
                    session,
                    ctx,
                    endpoint,
                    model_idx,
                    &req,
                    &raw,
                )
                .await?
                {
                    return Ok(match relayed {
                        crate::exchange::Relayed::Complete => Handled::Done,
                        crate::exchange::Relayed::Truncated => Handled::Abort,
                    });
                }
                let ex = crate::exchange::Exchange {
                    endpoint,
                    model_idx,
                    req: &req,
                    raw: &raw,
                };
                // A complete answer is stored by the relay before its last byte goes out.
                let relayed =
                    crate::exchange::forward(&self.shared, state, session, ctx, ex).await?;
                ctx.cache_record = None;
                // Followers of this miss look again now (the answer is stored, or it failed).
                drop(flight);
                match relayed {
                    crate::exchange::Relayed::Complete => Ok(Handled::Done),
                    crate::exchange::Relayed::Truncated => Ok(Handled::Abort),
                }
            }
            Target::Unknown => Err(GatewayError::NotFound(
                session.req_header().uri.path().to_string(),
            )),
        }
    }

    /// With `server.master_key` set: the caller must present the master key or a valid virtual key
    /// (`Authorization: Bearer`, `x-api-key` or `api-key`). The key never goes further.
    fn authenticate(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), GatewayError> {
        let Some(expected) = ctx.state.as_ref().and_then(|s| s.master_digest) else {
            return Ok(());
        };
        let Some(secret) = presented_key(session) else {
            return Err(GatewayError::InvalidApiKey(
                "Missing API key: send `Authorization: Bearer <key>` (or `x-api-key` / `api-key`)"
                    .into(),
            ));
        };
        let presented = crate::keys::material::digest(secret);
        if bool::from(subtle::ConstantTimeEq::ct_eq(&presented[..], &expected[..])) {
            ctx.caller = ctx::Caller::Master;
            return Ok(());
        }
        // A master key turned on by a reload: the keys database opens at the next start; until then
        // only the master key gets in.
        let Some(keys) = &self.shared.keys else {
            return Err(GatewayError::InvalidApiKey("Invalid API key".into()));
        };
        match keys.authenticate_digest(&presented) {
            Ok(entry) => {
                ctx.key_id = Some(entry.key_id().into());
                ctx.caller = ctx::Caller::Key(entry);
                Ok(())
            }
            Err(e) if e.status() == 429 => Err(GatewayError::BudgetExceeded(e.message().into())),
            Err(e) => Err(GatewayError::InvalidApiKey(e.message().into())),
        }
    }

    /// `/key/*` (LiteLLM's key management), master key only.
    async fn key_api(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        method: &http::Method,
    ) -> std::result::Result<Handled, GatewayError> {
        let Some(keys) = self.shared.keys.clone() else {
            return Err(GatewayError::NotFound(
                "/key/* (key management needs server.master_key)".into(),
            ));
        };
        if !matches!(ctx.caller, ctx::Caller::Master) {
            return Err(GatewayError::MasterKeyRequired(
                "Key management needs the master key".into(),
            ));
        }
        let limit = ctx
            .state
            .as_ref()
            .map_or(1 << 20, |s| s.config.server.max_request_body);
        let body = if method == http::Method::POST {
            body::read(session, limit).await?
        } else {
            Bytes::new()
        };
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let (status, v) = crate::keys::handle(&keys, method, &path, query.as_deref(), &body).await;
        if status >= 400 {
            ctx.error = Some("key_api");
        }
        self.reply(session, ctx, status, Bytes::from(v.to_string()))
            .await
    }

    /// A key's own `rpm` / `tpm`: checked (and charged) once per request, refused at once with 429
    /// rather than queued, so one key over its limit never holds up the model's queue.
    fn key_limits(
        &self,
        state: &State,
        ctx: &RequestCtx,
        tokens: impl FnOnce() -> u64,
    ) -> std::result::Result<(), GatewayError> {
        let Some(k) = ctx.caller.key() else {
            return Ok(());
        };
        if k.rpm().is_none() && k.tpm().is_none() {
            return Ok(());
        }
        let rpm = k.rpm().map(|r| crate::sched::store::Budget {
            id: format!("key:{}:rpm", k.key_id()).into(),
            rate: crate::sched::bucket::Rate::per_minute(r),
        });
        let tpm = k.tpm().map(|t| crate::sched::store::Budget {
            id: format!("key:{}:tpm", k.key_id()).into(),
            rate: crate::sched::bucket::Rate::per_minute(t),
        });
        let tokens = if tpm.is_some() { tokens() as f64 } else { 0.0 };
        let mut charges = Vec::with_capacity(2);
        if let Some(b) = &rpm {
            charges.push(crate::sched::store::Charge {
                budget: b,
                cost: 1.0,
            });
        }
        if let Some(b) = &tpm {
            charges.push(crate::sched::store::Charge {
                budget: b,
                cost: tokens,
            });
        }
        match state.sched.store.local.try_admit(&charges) {
            crate::sched::store::Verdict::Admitted => Ok(()),
            crate::sched::store::Verdict::Wait(w) => Err(GatewayError::RateLimited {
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
    fn admit_route(
        &self,
        state: &State,
        session: &Session,
        ctx: &RequestCtx,
        listener: &crate::config::Listener,
        i: usize,
        rest: &str,
    ) -> std::result::Result<(), GatewayError> {
        let route = &state.config.routes[i];
        if !listener.route_scope.allows(i) {
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
        self.key_limits(state, ctx, || declared.unwrap_or(0) / 4)
    }

    /// Whether and how the response cache applies to this request.
    fn cache_plan(
        &self,
        state: &State,
        session: &Session,
        ctx: &mut RequestCtx,
        endpoint: crate::route::Endpoint,
        model_idx: usize,
        req: &crate::body::ModelRequest<'_>,
    ) -> Option<cache::Plan> {
        let model = &state.config.models[model_idx];
        if !model.cache.enabled || endpoint == crate::route::Endpoint::CountTokens {
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
            ctx.cache = Some("bypass");
            state.cache.count("bypass");
        }
        plan
    }

    /// Serve a stored answer, or wait for an identical request already fetching it, or lead.
    async fn cache_lookup(
        &self,
        state: &State,
        session: &mut Session,
        ctx: &mut RequestCtx,
        p: &cache::Plan,
        req: &crate::body::ModelRequest<'_>,
    ) -> Lookup {
        if !p.read {
            return Lookup::Lead(None);
        }
        if self.serve_cached(state, session, ctx, p, req).await {
            return Lookup::Served;
        }
        let guard = if p.store {
            match state.cache.join(p.key) {
                cache::Join::Leader(g) => Some(g),
                cache::Join::Follower(flight) => {
                    flight.wait(state.cache.cfg.single_flight_wait).await;
                    if self.serve_cached(state, session, ctx, p, req).await {
                        return Lookup::Served;
                    }
                    // The leader failed or its answer was not stored: go on alone.
                    None
                }
            }
        } else {
            None
        };
        ctx.cache = Some("miss");
        state.cache.count("miss");
        Lookup::Lead(guard)
    }

    /// Answer from the cache when an entry can serve this request's mode.
    async fn serve_cached(
        &self,
        state: &State,
        session: &mut Session,
        ctx: &mut RequestCtx,
        p: &cache::Plan,
        req: &crate::body::ModelRequest<'_>,
    ) -> bool {
        let Some(entry) = state.cache.get(&p.key, p.ttl).await else {
            return false;
        };
        let chunks: Vec<Bytes> = match (entry.sse, req.stream) {
            (true, true) | (false, false) => entry.chunks.clone(),
            (false, true) => {
                let body: Vec<u8> = entry
                    .chunks
                    .iter()
                    .flat_map(|c| c.iter().copied())
                    .collect();
                let usage = req
                    .body
                    .get("stream_options")
                    .is_some_and(|o| o.contains("\"include_usage\"") && o.contains("true"));
                match cache::convert::json_to_sse(&body, usage) {
                    Some(c) => c,
                    None => return false,
                }
            }
            (true, false) => match cache::convert::sse_to_json(&entry.chunks) {
                Some(b) => vec![b],
                None => return false,
            },
        };
        ctx.cache = Some("hit");
        state.cache.count("hit");
        if let Err(e) = respond::cached(
            session,
            ctx,
            req.stream,
            chunks,
            &state.config.models[ctx.model.unwrap_or(0)].name,
        )
        .await
        {
            log::debug!(
                "request {}: writing a cached answer failed: {e}",
                ctx.request_id
            );
        }
        true
    }

    async fn reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        body: Bytes,
    ) -> std::result::Result<Handled, GatewayError> {
        if let Err(e) = respond::json(session, ctx, status, body).await {
            log::debug!(
                "request {}: writing the response failed: {e}",
                ctx.request_id
            );
        }
        Ok(Handled::Done)
    }

    /// Metrics and the access log, once per request.
    /// `listeners[].client_ratelimit`: a token bucket per client IP (exact: `burst` at once, then
    /// `per_second`). Refused requests are counted in `llmproxy_ratelimit_total{forward}`.
    fn client_limited(
        &self,
        state: &State,
        session: &Session,
        ctx: &RequestCtx,
    ) -> Option<GatewayError> {
        let l = state.config.server.listeners.get(ctx.listener)?;
        let limit = l.client_ratelimit?;
        let ip = client_addr::client_ip(session, &state.config.server.trusted_proxies)?;
        let budget = crate::sched::store::Budget {
            id: format!("{}|{ip}", l.name).into(),
            rate: crate::sched::bucket::Rate {
                unit_secs: 1.0 / limit.per_second,
                tolerance_secs: limit.burst / limit.per_second,
            },
        };
        let charge = [crate::sched::store::Charge {
            budget: &budget,
            cost: 1.0,
        }];
        match self.shared.client_buckets.try_admit(&charge) {
            crate::sched::store::Verdict::Admitted => None,
            crate::sched::store::Verdict::Wait(w) => {
                self.shared
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

    fn record(&self, session: &Session, ctx: &RequestCtx) {
        let Some(state) = ctx.state.as_ref() else {
            return;
        };
        let m = &self.shared.metrics;
        let forward = state
            .config
            .server
            .listeners
            .get(ctx.listener)
            .map(|l| l.name.as_str())
            .unwrap_or("");
        let method = session.req_header().method.as_str();
        let elapsed = ctx.start.elapsed();
        let status = if ctx.status == 0 { 499 } else { ctx.status };
        let route_label;
        let path = match ctx.route {
            Some(route) => {
                route_label = format!("{}/*", route_group(state, route));
                route_label.as_str()
            }
            None => ctx.path_label,
        };
        m.http_requests
            .with_label_values(&[forward, method, path])
            .inc();
        m.http_duration
            .with_label_values(&[forward, method, path])
            .observe(elapsed.as_secs_f64());
        let error = ctx.error.or(match status {
            429 => Some("upstream_rate_limited"),
            400..=499 => Some("upstream_client_error"),
            500..=599 => Some("upstream_server_error"),
            _ => None,
        });
        if let Some(error) = error {
            let status_s = status.to_string();
            m.http_errors
                .with_label_values(&[forward, error, status_s.as_str()])
                .inc();
        }
        let model = ctx
            .model
            .and_then(|i| state.config.models.get(i))
            .map(|m| m.name.as_str());
        if let (Some(model), Some(first)) = (model, ctx.first_byte) {
            m.ttft
                .with_label_values(&[model])
                .observe(first.duration_since(ctx.start).as_secs_f64());
        }
        if let (Some(u), Some(mc)) = (
            ctx.usage,
            ctx.model.and_then(|i| state.config.models.get(i)),
        ) {
            // A batched answer's spend is recorded by the batcher, at the batch price.
            if let (Some(p), None) = (mc.pricing, &ctx.batch.id) {
                let usd = (u.prompt_tokens as f64 * p.input_per_mtok
                    + u.completion_tokens as f64 * p.output_per_mtok)
                    / 1_000_000.0;
                if usd > 0.0 {
                    m.spend.with_label_values(&[mc.name.as_str()]).inc_by(usd);
                    if let (Some(keys), Some(k)) = (&self.shared.keys, ctx.caller.key()) {
                        keys.record_spend(k, &mc.name, usd);
                    }
                }
            }
        }
        if let (Some(u), Some(model)) = (ctx.usage, model) {
            m.tokens
                .with_label_values(&[model, "prompt"])
                .inc_by(u.prompt_tokens);
            m.tokens
                .with_label_values(&[model, "completion"])
                .inc_by(u.completion_tokens);
        }
        if let (Some(a), Some(u)) = (&ctx.admission, ctx.usage) {
            if a.estimate.prompt > 0 && u.prompt_tokens > 0 {
                let actual = u.prompt_tokens as f64;
                m.token_estimate_error
                    .with_label_values(&[a.sched.name.as_str()])
                    .observe((a.estimate.prompt as f64 - actual) / actual);
            }
            a.sched.reconcile(
                a.deployment,
                a.estimate.total() as f64,
                (u.prompt_tokens + u.completion_tokens) as f64,
            );
        }
        if let Some(t) = &state.tracing {
            trace(
                t, state, session, ctx, forward, path, status, elapsed, model,
            );
        }
        if state.config.logging.access_log != AccessLog::Off {
            access_log(state, session, ctx, forward, path, status, elapsed, model);
        }
    }
}

/// Whether any deployment of the model can serve `endpoint` itself (token counting: Anthropic).
fn serves_natively(state: &State, model_idx: usize, endpoint: crate::route::Endpoint) -> bool {
    state.config.models[model_idx].deployments.iter().any(|d| {
        crate::providers::serves(state.config.upstreams[d.upstream_idx].provider, endpoint)
    })
}

/// `POST /v1/messages/count_tokens` answered by the gateway: the prompt's tokens as the scheduler
/// estimates them (tiktoken for models it knows — off the worker thread, as loading a vocabulary
/// takes a moment — one token per 3 bytes otherwise), for the first deployment's model.
async fn count_tokens_locally(state: &State, model_idx: usize, raw: &Bytes) -> u64 {
    let model = state.config.models[model_idx]
        .deployments
        .first()
        .map(|d| d.model.clone())
        .unwrap_or_default();
    let raw = raw.clone();
    tokio::task::spawn_blocking(move || {
        crate::sched::tokens::estimate_raw(crate::route::Endpoint::CountTokens, &raw, &model, 0)
            .prompt
    })
    .await
    .unwrap_or(0)
}

/// The model ids (names and aliases) this caller may use on this listener.
fn caller_models(
    state: &State,
    listener: &crate::config::Listener,
    caller: &ctx::Caller,
) -> Vec<String> {
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

/// [`route::Router::resolve`], with an unknown model's 404 listing only what this caller may use.
fn resolve_for(
    state: &State,
    listener: &crate::config::Listener,
    caller: &ctx::Caller,
    name: &str,
) -> std::result::Result<usize, GatewayError> {
    state
        .router
        .resolve(&state.config, listener, name)
        .map_err(|e| match e {
            GatewayError::ModelNotFound { model, .. } => GatewayError::ModelNotFound {
                model,
                available: caller_models(state, listener, caller),
            },
            other => other,
        })
}

fn require_method(got: &http::Method, want: http::Method) -> std::result::Result<(), GatewayError> {
    if *got == want {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed(format!(
            "Method {got} is not allowed here; use {want}"
        )))
    }
}

/// A model as `/v1/models` lists it: OpenAI's shape, or Anthropic's for a caller that sent
/// `anthropic-version` (the Anthropic SDKs always do).
fn model_object(id: &str, anthropic: bool) -> serde_json::Value {
    if anthropic {
        serde_json::json!({"type": "model", "id": id, "display_name": id,
            "created_at": "1970-01-01T00:00:00Z"})
    } else {
        serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "llmproxy"})
    }
}

/// One line per request, never with message content or secrets.
#[allow(clippy::too_many_arguments)]
fn access_log(
    state: &State,
    session: &Session,
    ctx: &RequestCtx,
    forward: &str,
    path: &str,
    status: u16,
    elapsed: Duration,
    model: Option<&str>,
) {
    let upstream = ctx
        .upstream
        .and_then(|u| state.upstreams.get(u))
        .map(|u| u.cfg.name.as_str());
    let client = client_addr::client_ip(session, &state.config.server.trusted_proxies)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let ms = elapsed.as_secs_f64() * 1000.0;
    let (pt, ct) = ctx
        .usage
        .map(|u| (u.prompt_tokens, u.completion_tokens))
        .unwrap_or((0, 0));
    let ttft_ms = ctx
        .first_byte
        .map(|t| (t.duration_since(ctx.start).as_secs_f64() * 1e6).round() / 1000.0);
    match state.config.logging.access_log {
        AccessLog::Json => {
            let line = serde_json::json!({
                "request_id": ctx.request_id, "listener": forward, "client": client,
                "method": session.req_header().method.as_str(), "path": path,
                "model": model, "upstream": upstream, "status": status,
                "duration_ms": (ms * 1000.0).round() / 1000.0, "ttft_ms": ttft_ms, "error": ctx.error,
                "prompt_tokens": pt, "completion_tokens": ct,
                "queue_ms": ctx.queue_wait.as_millis() as u64, "key_id": ctx.key_id.as_deref(),
                "cache": ctx.cache, "usage_estimated": ctx.usage_estimated,
                "batch": ctx.batch.id.as_deref(),
            });
            log::info!(target: "access", "{line}");
        }
        AccessLog::Text => log::info!(
            target: "access",
            "{} {client} {forward} {} {} model={} upstream={} status={status} {ms:.1}ms tokens={pt}/{ct}",
            ctx.request_id,
            session.req_header().method,
            path,
            model.unwrap_or("-"),
            upstream.unwrap_or("-")
        ),
        AccessLog::Off => {}
    }
}

/// One OpenTelemetry span for the finished request.
#[allow(clippy::too_many_arguments)]
fn trace(
    t: &crate::otel::Tracing,
    state: &State,
    session: &Session,
    ctx: &RequestCtx,
    forward: &str,
    path: &str,
    status: u16,
    elapsed: Duration,
    model: Option<&str>,
) {
    use opentelemetry::KeyValue;
    let end = std::time::SystemTime::now();
    let start = end.checked_sub(elapsed).unwrap_or(end);
    let method = session.req_header().method.as_str().to_string();
    let mut a = vec![
        KeyValue::new("llmproxy.request_id", ctx.request_id.clone()),
        KeyValue::new("llmproxy.listener", forward.to_string()),
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("http.route", path.to_string()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("llmproxy.queue_ms", ctx.queue_wait.as_millis() as i64),
        KeyValue::new("llmproxy.duration_ms", elapsed.as_secs_f64() * 1000.0),
    ];
    if let Some(m) = model {
        a.push(KeyValue::new("gen_ai.request.model", m.to_string()));
    }
    if let Some(u) = ctx.upstream.and_then(|i| state.upstreams.get(i)) {
        a.push(KeyValue::new("llmproxy.deployment", u.cfg.name.clone()));
    }
    if let Some(u) = ctx.usage {
        a.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            u.prompt_tokens as i64,
        ));
        a.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            u.completion_tokens as i64,
        ));
    }
    if let Some(first) = ctx.first_byte {
        a.push(KeyValue::new(
            "llmproxy.ttft_ms",
            first.duration_since(ctx.start).as_secs_f64() * 1000.0,
        ));
    }
    if let Some(c) = ctx.cache {
        a.push(KeyValue::new("llmproxy.cache", c));
    }
    if let Some(k) = &ctx.key_id {
        a.push(KeyValue::new("llmproxy.key_id", k.to_string()));
    }
    t.record(crate::otel::RequestSpan {
        name: &format!("{method} {path}"),
        start,
        end,
        attributes: a,
        error: ctx.error,
        content: ctx.traced_body.as_deref(),
    });
}

/// The API key the client presented: `Authorization: Bearer`, `x-api-key` or `api-key`.
fn presented_key(session: &Session) -> Option<&str> {
    let h = &session.req_header().headers;
    if let Some(v) = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
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
