//! Passthrough routes (`routes[].prefix`): admitted like a model request ([`crate::auth::admit_route`]),
//! then handed to Pingora's proxy loop with the upstream's auth and header operations, the client's
//! credentials removed, and nothing else rewritten. The phases of that loop call the functions here.

use super::ctx::{Passthrough, RequestCtx};
use super::respond::{X_DEPLOYMENT, X_REQUEST_ID};
use crate::error::GatewayError;
use crate::providers::forwardable;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Check the path and the caller's right to the route; set up the request for the proxy loop.
pub async fn prepare(
    shared: &crate::state::Shared,
    session: &Session,
    ctx: &mut RequestCtx,
    route: usize,
    rest: &str,
) -> Result<(), GatewayError> {
    ctx.route = Some(route);
    let raw_target = String::from_utf8_lossy(session.req_header().raw_path()).into_owned();
    crate::route::check_passthrough_path(rest, &raw_target)?;
    crate::auth::admit_route(shared, session, ctx, route, rest).await?;
    let query = session
        .req_header()
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let upstream = ctx.state.config.routes[route].upstream_id.index();
    ctx.upstream = Some(upstream);
    ctx.passthrough = Some(Passthrough {
        route,
        upstream,
        path: format!("{rest}{query}"),
        tried: Vec::new(),
        scanner: Box::default(),
        body_left: ctx.state.config.server.max_request_body,
    });
    Ok(())
}

fn route_of(ctx: &mut RequestCtx) -> Result<(&crate::state::State, &mut Passthrough)> {
    match ctx.passthrough.as_mut() {
        Some(p) => Ok((&ctx.state, p)),
        None => Error::e_explain(InternalError, "no passthrough route for this request"),
    }
}

/// A healthy address of the route's upstream, another one than those tried when there is one.
pub fn peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let (state, p) = route_of(ctx)?;
    let pool = &state.upstreams[p.upstream];
    let addr = pool
        .pick(&p.tried)
        .or_else(|| pool.pick(&[]).filter(|_| p.tried.len() < 2))
        .or_err(HTTPStatus(503), "no healthy upstream address")?;
    p.tried.push(addr);
    Ok(Box::new(pool.peer(addr)))
}

/// The request as the upstream gets it: the route's path, the upstream's `Host`, auth and header
/// operations; the client's credentials and hop-by-hop headers removed.
pub async fn upstream_request(ctx: &mut RequestCtx, req: &mut RequestHeader) -> Result<()> {
    let request_id = ctx.request_id.clone();
    let (state, p) = route_of(ctx)?;
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
    req.insert_header(X_REQUEST_ID, request_id.as_str())?;
    crate::providers::of(pool.cfg.provider).request_headers(req)?;
    crate::balance::upstream::apply_upstream_headers(&pool.cfg, req)?;
    // A passthrough body streams from the client: a signature cannot cover it.
    pool.signer.sign(req, None).await.map_err(|e| {
        Error::explain(
            InternalError,
            format!("signing the passthrough request: {e}"),
        )
    })
}

/// Headers the passthrough keeps although model requests drop them (the upstream sees the client's
/// own content framing; Pingora handles hop-by-hop headers itself).
fn keep_for_passthrough(n: &http::HeaderName) -> bool {
    matches!(
        n.as_str(),
        "content-length" | "content-encoding" | "transfer-encoding" | "accept-encoding"
    )
}

/// Count a body chunk against `max_request_body` (a chunked body declares no length up front).
pub fn count_body(ctx: &mut RequestCtx, body: Option<&Bytes>) -> Result<()> {
    if let (Some(p), Some(b)) = (ctx.passthrough.as_mut(), body) {
        match p.body_left.checked_sub(b.len()) {
            Some(left) => p.body_left = left,
            None => return Error::e_explain(HTTPStatus(413), "request body over max_request_body"),
        }
    }
    Ok(())
}

/// A connect failed: note it, count it, and retry on another address (nothing was sent).
pub fn connect_failed(
    shared: &crate::state::Shared,
    ctx: &RequestCtx,
    peer: &HttpPeer,
    mut e: Box<Error>,
) -> Box<Error> {
    if let Some(p) = ctx.passthrough.as_ref() {
        let state = &ctx.state;
        let pool = &state.upstreams[p.upstream];
        pool.note_error(format!("connect to {peer}: {e}"));
        let group = state
            .config
            .routes
            .get(p.route)
            .map(|r| r.prefix.as_str())
            .unwrap_or("");
        shared
            .metrics
            .upstream_errors
            .with_label_values(&["connect", group, pool.cfg.name.as_str()])
            .inc();
        e.set_retry(p.tried.len() < pool.address_count().max(2));
    }
    e
}

/// The answer's header: the request id and the upstream's name.
pub fn response_header(ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    ctx.outcome.status = resp.status.as_u16();
    resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    if let Some(up) = ctx.upstream.and_then(|u| ctx.state.upstreams.get(u)) {
        resp.insert_header(X_DEPLOYMENT, up.cfg.name.as_str())?;
    }
    Ok(())
}

/// A body chunk of the answer: its first byte's time and its usage.
pub fn response_body(ctx: &mut RequestCtx, body: Option<&Bytes>, end_of_stream: bool) {
    let Some(p) = ctx.passthrough.as_mut() else {
        return;
    };
    if let Some(b) = body {
        if ctx.outcome.first_byte.is_none() && !b.is_empty() {
            ctx.outcome.first_byte = Some(std::time::Instant::now());
        }
        p.scanner.feed(b);
    }
    if end_of_stream {
        let usage = p.scanner.usage();
        ctx.set_usage(usage);
    }
}

/// What the client is told when Pingora's proxy loop failed (`None`: an answer already started and
/// broke off; nothing more can be written).
pub fn failure(ctx: &RequestCtx, e: &Error) -> Option<GatewayError> {
    Some(match e.etype() {
        HTTPStatus(413) => GatewayError::RequestTooLarge {
            limit: ctx.state.config.server.max_request_body,
        },
        HTTPStatus(503) => GatewayError::NoHealthyUpstream("No healthy upstream address".into()),
        ConnectTimedout | ReadTimedout | WriteTimedout => {
            GatewayError::UpstreamTimeout("The upstream did not answer in time".into())
        }
        ConnectionClosed if ctx.outcome.status != 0 => return None,
        _ => {
            GatewayError::UpstreamError(format!("Upstream request failed: {}", e.etype().as_str()))
        }
    })
}
