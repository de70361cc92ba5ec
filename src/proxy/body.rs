//! Reading a request body from the client, with the size limit (413 beyond it).

use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

/// Read the whole request body, refusing more than `limit` bytes (413).
pub async fn read(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::RequestTooLarge { limit };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|e| GatewayError::invalid(format!("cannot continue: {e}"), None))?;
    }
    let read_err = |e: Box<pingora::Error>| {
        GatewayError::invalid(format!("error reading the request body: {e}"), None)
    };
    // The common case is one chunk: keep it without copying.
    let Some(first) = session.read_request_body().await.map_err(read_err)? else {
        return Ok(Bytes::new());
    };
    if first.len() > limit {
        return Err(too_large());
    }
    let Some(second) = session.read_request_body().await.map_err(read_err)? else {
        return Ok(first);
    };
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(first.len() * 4).min(limit));
    buf.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
        next = session.read_request_body().await.map_err(read_err)?;
    }
    Ok(buf.freeze())
}
