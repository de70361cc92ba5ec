//! Writing the gateway's own responses (errors, model lists) with keep-alive preserved.

use super::ctx::RequestCtx;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

/// The gateway's own response headers (names in the spec's headers reference).
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
pub const X_DEPLOYMENT: http::HeaderName = http::HeaderName::from_static("x-llmproxy-deployment");
pub const X_MODEL: http::HeaderName = http::HeaderName::from_static("x-llmproxy-model");
pub const X_QUEUE_MS: http::HeaderName = http::HeaderName::from_static("x-llmproxy-queue-ms");
pub const X_CACHE: http::HeaderName = http::HeaderName::from_static("x-llmproxy-cache");
pub const X_BATCH: http::HeaderName = http::HeaderName::from_static("x-llmproxy-batch");

/// Write a complete JSON response.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
) -> Result<()> {
    json_with(session, ctx, status, body, None).await
}

async fn json_with(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
    retry_after: Option<std::time::Duration>,
) -> Result<()> {
    ctx.outcome.status = status;
    let mut resp = ResponseHeader::build(status, Some(6))?;
    if let Some(ra) = retry_after {
        let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
        resp.insert_header(http::header::RETRY_AFTER, secs.max(1))?;
    }
    if !ctx.queue_wait.is_zero() {
        resp.insert_header(X_QUEUE_MS, ctx.queue_wait.as_millis() as u64)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answer with an OpenAI-shaped error. A 413 closes the connection: the unread body is not drained.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, e: &GatewayError) {
    ctx.fail(super::ctx::ErrorKind::Gateway(e.code()));
    if matches!(e, GatewayError::RequestTooLarge { .. }) {
        session.set_keepalive(None);
    }
    // Anthropic SDK callers get the error in Anthropic's shape (same status).
    let body = if is_messages_path(session.req_header().uri.path()) {
        e.anthropic_body()
    } else {
        e.body()
    };
    if let Err(err) = json_with(session, ctx, e.status(), body, e.retry_after()).await {
        log::debug!(
            "request {}: writing error response failed: {err}",
            ctx.request_id
        );
    }
    ctx.outcome.status = e.status();
}

/// `POST /v1/messages` (Anthropic's Messages API), also without `/v1`.
pub fn is_messages_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    let p = p.strip_suffix("/count_tokens").unwrap_or(p);
    p == "/v1/messages" || p == "/messages"
}

/// Answer from the response cache: JSON in one body, or SSE replayed chunk by chunk as recorded.
pub async fn cached(
    session: &mut Session,
    ctx: &mut RequestCtx,
    sse: bool,
    chunks: Vec<Bytes>,
    model: &str,
) -> Result<()> {
    ctx.outcome.status = 200;
    ctx.outcome.first_byte = Some(std::time::Instant::now());
    let mut resp = ResponseHeader::build_no_case(200, Some(6))?;
    if sse {
        resp.insert_header(http::header::CONTENT_TYPE, "text/event-stream")?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    } else {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, len)?;
    }
    resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    resp.insert_header(X_CACHE, "hit")?;
    resp.insert_header(X_MODEL, model)?;
    session.write_response_header(Box::new(resp), false).await?;
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        session.write_response_body(Some(c), i + 1 == n).await?;
    }
    if n == 0 {
        session.write_response_body(None, true).await?;
    }
    Ok(())
}
