//! The upstream exchange for model requests, run from `request_filter` with Pingora's `Connector`.
//!
//! Why not Pingora's proxy loop: routing needs `model` from the body, and Pingora 0.9 can only replay a
//! body it buffered itself, up to 64 KiB. Holding the body as `Bytes` here lets every attempt (the next
//! deployment after a refused connect, and the retries and fallbacks of later features) resend bodies
//! of any size up to `server.max_request_body`, through one code path. The response is relayed chunk
//! by chunk as it arrives (each chunk is written and flushed before the next read), so SSE pacing and
//! bytes are preserved; usage is read from a bounded tail of the body.

use super::body::ModelRequest;
use super::ctx::RequestCtx;
use crate::balance::UpstreamPool;
use crate::error::GatewayError;
use crate::providers::usage::UsageScanner;
use crate::providers::{openai, relayable};
use crate::route::Endpoint;
use crate::state::{Shared, State};
use bytes::Bytes;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use std::net::SocketAddr;
use std::time::Instant;

/// How an attempt ended when nothing reached the client yet.
enum AttemptError {
    /// Nothing was sent upstream: safe to try the next deployment.
    Connect(String),
    /// The request reached the upstream: answer the client with this error.
    Fatal(GatewayError),
}

/// How a relay ended once the response header was written.
pub enum Relayed {
    Complete,
    /// The upstream broke a non-SSE body midway: the client connection must be dropped, not finished,
    /// so the client sees the truncation.
    Truncated,
}

/// Everything one exchange needs from the request.
pub struct Exchange<'r, 'b> {
    pub endpoint: Endpoint,
    pub model_idx: usize,
    pub req: &'r ModelRequest<'b>,
    pub raw: &'r Bytes,
}

/// Forward a model request, trying the next deployment when a connect fails. `Err` means nothing was
/// written to the client yet.
pub async fn forward(
    shared: &Shared,
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    ex: Exchange<'_, '_>,
) -> Result<Relayed, GatewayError> {
    let model = &state.config.models[ex.model_idx];
    let balancer = &state.balancers[ex.model_idx];
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last_connect_error: Option<String> = None;
    loop {
        let Some(d) = balancer.pick(&state.upstreams, &tried) else {
            return Err(match last_connect_error {
                Some(e) => GatewayError::UpstreamError(format!(
                    "Could not connect to any deployment of `{}`: {e}",
                    model.name
                )),
                None => GatewayError::NoHealthyUpstream(format!(
                    "No healthy deployment for model `{}`",
                    model.name
                )),
            });
        };
        tried.push(d);
        let dep = &model.deployments[d];
        let pool = &state.upstreams[dep.upstream_idx];
        let Some(addr) = pool.pick(&[]) else {
            continue;
        };
        ctx.upstream = Some(dep.upstream_idx);
        let body = if dep.model == ex.req.model {
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
        let result = attempt(shared, pool, &model.name, addr, session, ctx, ex.endpoint, body).await;
        shared
            .metrics
            .upstream_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(relayed) => return Ok(relayed),
            Err(AttemptError::Connect(msg)) => {
                count_error(shared, "connect", &labels);
                log::warn!(
                    "request {}: connect to upstream {} ({addr}) failed: {msg}",
                    ctx.request_id,
                    pool.cfg.name
                );
                pool.note_error(format!("connect to {addr}: {msg}"));
                last_connect_error = Some(format!("{}: {msg}", pool.cfg.name));
            }
            Err(AttemptError::Fatal(e)) => {
                count_error(
                    shared,
                    if e.status() == 504 { "timeout" } else { "read" },
                    &labels,
                );
                pool.note_error(e.message());
                return Err(e);
            }
        }
    }
}

fn count_error(shared: &Shared, error: &str, labels: &[&str; 2]) {
    shared
        .metrics
        .upstream_errors
        .with_label_values(&[error, labels[0], labels[1]])
        .inc();
}

/// One upstream attempt: connect, send, read the response header, relay the body.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    shared: &Shared,
    pool: &UpstreamPool,
    model: &str,
    addr: SocketAddr,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    body: Bytes,
) -> Result<Relayed, AttemptError> {
    let peer = pool.peer(addr);
    let deadline = tokio::time::Instant::now() + pool.cfg.client.request_timeout;
    let header = openai::request_header(
        &pool.cfg,
        endpoint,
        session.req_header(),
        body.len(),
        &ctx.request_id,
    )
    .map_err(|e| {
        AttemptError::Fatal(GatewayError::UpstreamError(format!(
            "building the upstream request: {e}"
        )))
    })?;

    // A pooled connection the upstream already closed fails on first use; that is not the upstream's
    // fault, so it is retried on a fresh connection (bounded).
    let mut stale_retries = 0;
    let mut http = loop {
        let (mut http, reused) = shared
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        match send(&mut http, &header, &body, deadline).await {
            Ok(()) => break http,
            Err(e) if reused && stale_retries < 2 && e.etype() != &ReadTimedout => {
                stale_retries += 1;
                log::debug!(
                    "request {}: stale pooled connection ({e}), retrying",
                    ctx.request_id
                );
            }
            Err(e) => {
                return Err(AttemptError::Fatal(match e.etype() {
                    ReadTimedout => GatewayError::UpstreamTimeout(format!(
                        "Upstream `{}` did not answer within {:?}",
                        pool.cfg.name, pool.cfg.client.request_timeout
                    )),
                    _ => GatewayError::UpstreamError(format!(
                        "Upstream `{}` failed: {}",
                        pool.cfg.name,
                        e.etype().as_str()
                    )),
                }))
            }
        }
    };
    let (relayed, reusable) = relay(shared, pool, model, &mut http, session, ctx, deadline).await;
    if reusable {
        shared
            .connector
            .release_http_session(http, &peer, Some(pool.cfg.client.idle_timeout))
            .await;
    }
    Ok(relayed)
}

/// Write the request and read the response header, within the request deadline.
async fn send(
    http: &mut HttpSession,
    header: &RequestHeader,
    body: &Bytes,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let io = async {
        http.write_request_header(Box::new(header.clone())).await?;
        http.write_request_body(body.clone(), true).await?;
        http.finish_request_body().await?;
        http.read_response_header().await
    };
    match tokio::time::timeout_at(deadline, io).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(ReadTimedout, "request deadline"),
    }
}

/// The SSE event that ends a stream whose upstream failed after the first byte.
const STREAM_ERROR: &[u8] = b"data: {\"error\":{\"message\":\"The upstream connection failed during the stream\",\"type\":\"api_error\",\"param\":null,\"code\":\"upstream_error\"}}\n\ndata: [DONE]\n\n";

/// Relay the upstream response to the client. Returns how it ended and whether the upstream
/// connection can go back to the pool.
async fn relay(
    shared: &Shared,
    pool: &UpstreamPool,
    model: &str,
    http: &mut HttpSession,
    session: &mut Session,
    ctx: &mut RequestCtx,
    deadline: tokio::time::Instant,
) -> (Relayed, bool) {
    let Some(up) = http.response_header() else {
        return (Relayed::Truncated, false);
    };
    let status = up.status.as_u16();
    let is_sse = up
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let resp = match downstream_header(up, ctx, &pool.cfg.name) {
        Ok(r) => r,
        Err(e) => {
            log::error!(
                "request {}: building the response header failed: {e}",
                ctx.request_id
            );
            return (Relayed::Truncated, false);
        }
    };
    ctx.status = status;
    if let Err(e) = session.write_response_header(Box::new(resp), false).await {
        log::debug!("request {}: client went away: {e}", ctx.request_id);
        ctx.error = Some("client_closed");
        return (Relayed::Truncated, false);
    }
    let mut scanner = UsageScanner::default();
    let timeout = tokio::time::sleep_until(deadline);
    tokio::pin!(timeout);
    let upstream_failure = loop {
        let chunk = tokio::select! {
            biased;
            r = http.read_response_body() => r,
            _ = &mut timeout => break Some("timeout"),
        };
        match chunk {
            Ok(Some(chunk)) => {
                if ctx.first_byte.is_none() {
                    ctx.first_byte = Some(Instant::now());
                }
                scanner.feed(&chunk);
                if let Err(e) = session.write_response_body(Some(chunk), false).await {
                    // The client left: dropping the upstream connection stops the generation.
                    log::debug!(
                        "request {}: client went away mid-response: {e}",
                        ctx.request_id
                    );
                    ctx.error = Some("client_closed");
                    return (Relayed::Truncated, false);
                }
            }
            Ok(None) => break None,
            Err(e) => {
                log::warn!(
                    "request {}: upstream {} failed mid-response: {e}",
                    ctx.request_id,
                    pool.cfg.name
                );
                break Some(if e.etype() == &ReadTimedout {
                    "timeout"
                } else {
                    "stream_interrupted"
                });
            }
        }
    };
    ctx.usage = scanner.usage();
    if let Some(kind) = upstream_failure {
        let labels = [model, pool.cfg.name.as_str()];
        count_error(shared, kind, &labels);
        shared
            .metrics
            .stream_errors
            .with_label_values(&labels)
            .inc();
        pool.note_error(format!("response from upstream broke off: {kind}"));
        ctx.error = Some("upstream_stream_error");
        if !is_sse {
            return (Relayed::Truncated, false);
        }
        // Never a silent truncation: tell the client in the stream's own format.
        if session
            .write_response_body(Some(Bytes::from_static(STREAM_ERROR)), true)
            .await
            .is_err()
        {
            return (Relayed::Truncated, false);
        }
        return (Relayed::Complete, false);
    }
    if let Err(e) = session.write_response_body(None, true).await {
        log::debug!(
            "request {}: finishing the response failed: {e}",
            ctx.request_id
        );
        return (Relayed::Truncated, true);
    }
    (Relayed::Complete, true)
}

/// The client's response header: the upstream's status and headers (hop-by-hop removed), plus the
/// request id and which upstream answered.
fn downstream_header(
    up: &ResponseHeader,
    ctx: &RequestCtx,
    upstream: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(up.status, Some(up.headers.len() + 3))?;
    for (name, value) in up.headers.iter() {
        if relayable(name) {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    if !resp.headers.contains_key(http::header::CONTENT_LENGTH) {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    resp.insert_header("x-llmproxy-deployment", upstream)?;
    Ok(resp)
}
