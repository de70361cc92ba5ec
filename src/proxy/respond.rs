//! Writing the gateway's own responses (errors, model lists) with keep-alive preserved.

use super::ctx::RequestCtx;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Write a complete JSON response.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
) -> Result<()> {
    ctx.status = status;
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answer with an OpenAI-shaped error. A 413 closes the connection: the unread body is not drained.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, e: &GatewayError) {
    ctx.error = Some(e.code());
    if matches!(e, GatewayError::RequestTooLarge { .. }) {
        session.set_keepalive(None);
    }
    if let Err(err) = json(session, ctx, e.status(), e.body()).await {
        log::debug!(
            "request {}: writing error response failed: {err}",
            ctx.request_id
        );
    }
    ctx.status = e.status();
}
