//! The answer to the client: a stream relayed (or translated) chunk by chunk, each chunk written
//! before the next read; an answer converted whole; a buffered upstream error relayed as it is.
//! A complete successful answer is stored in the response cache before its end is written.

use super::attempt::{Buffered, Outcome, Target};
use super::{client_gone, count_error, Deadlines, Relayed, PROBE_AFTER, PROBE_BETWEEN_CHUNKS};
use crate::providers::{relayable, Answer, HeaderFate, Mode, StreamFailure};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond::{X_CACHE, X_DEPLOYMENT, X_MODEL, X_QUEUE_MS, X_REQUEST_ID};
use crate::state::{Shared, State};
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use std::time::Instant;

/// Largest answer the gateway holds to convert whole (a translated non-streamed answer).
const WHOLE_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Relay the rest of the response, starting with `first`. Returns how it ended and whether the
/// upstream ended the body cleanly (then its connection can go back to the pool).
#[allow(
    clippy::too_many_arguments,
    reason = "the relay loop takes the exchange's parts by reference, borrowed from different owners"
)]
pub(super) async fn stream(
    shared: &Shared,
    t: &Target<'_>,
    http: &mut HttpSession,
    session: &mut Session,
    ctx: &mut RequestCtx,
    first: Option<Bytes>,
    answer: &mut dyn Answer,
    mode: Mode,
    deadlines: Deadlines,
) -> (Relayed, bool) {
    let sse = mode.is_sse();
    let timeout = tokio::time::sleep_until(deadlines.total);
    tokio::pin!(timeout);
    // One timer per stream watches for a client that left during a long gap; a chunk only moves
    // `last_chunk` (no timer is armed or cancelled per chunk).
    let mut last_chunk = tokio::time::Instant::now();
    let probe = tokio::time::sleep_until(last_chunk + PROBE_BETWEEN_CHUNKS);
    tokio::pin!(probe);
    let mut next = first;
    let upstream_failure = loop {
        let Some(chunk) = next.take() else {
            if let Some(rest) = answer.finish() {
                if let Some(rec) = ctx.cache_record.as_mut() {
                    rec.push(&rest);
                }
                ctx.trace_answer(&rest);
                if let Err(w) = write(session, Some(rest), false, deadlines).await {
                    return client_failed(ctx, w);
                }
            }
            break None;
        };
        if ctx.outcome.first_byte.is_none() {
            ctx.outcome.first_byte = Some(Instant::now());
        }
        let out = answer.chunk(chunk);
        if let Some(c) = out.as_ref() {
            ctx.trace_answer(c);
        }
        if let (Some(rec), Some(c)) = (ctx.cache_record.as_mut(), out.as_ref()) {
            if ctx.outcome.status < 300 {
                rec.sse = sse;
                rec.push(c);
            }
        }
        if out.is_some() {
            if let Err(w) = write(session, out, false, deadlines).await {
                // Dropping the upstream connection stops the generation.
                return client_failed(ctx, w);
            }
        }
        let read = tokio::select! {
            biased;
            r = http.read_response_body() => r,
            _ = &mut timeout => break Some(("timeout", StreamFailure::Timeout)),
            _ = client_gone_in_gap(session, probe.as_mut(), last_chunk) => {
                ctx.fail(crate::proxy::ctx::ErrorKind::ClientClosed);
                return (Relayed::Truncated, false);
            }
        };
        match read {
            Ok(c) => {
                next = c;
                last_chunk = tokio::time::Instant::now();
            }
            Err(e) => {
                log::warn!(
                    "request {}: upstream {} failed mid-response: {e}",
                    ctx.request_id,
                    t.pool.cfg.name
                );
                break Some(if e.etype() == &ReadTimedout {
                    ("stream_timeout", StreamFailure::Timeout)
                } else {
                    ("stream_interrupted", StreamFailure::Broken)
                });
            }
        }
    };
    ctx.set_usage(answer.usage());
    if upstream_failure.is_some() || ctx.outcome.status >= 300 {
        // Only complete successful answers are cached.
        ctx.cache_record = None;
    }
    if let Some((kind, why)) = upstream_failure {
        let labels = [t.model.name.as_str(), t.pool.cfg.name.as_str()];
        count_error(shared, kind, &labels);
        shared
            .metrics
            .stream_errors
            .with_label_values(&labels)
            .inc();
        t.pool.note_error(format!("response broke off: {kind}"));
        ctx.fail(crate::proxy::ctx::ErrorKind::UpstreamStream);
        if !sse {
            return (Relayed::Truncated, false);
        }
        // Never a silent truncation: tell the client in the stream's own format.
        let event = crate::providers::stream_error_event(answer.client_api(), why);
        let ok = write(session, Some(Bytes::from_static(event)), true, deadlines)
            .await
            .is_ok();
        return (
            if ok {
                Relayed::Complete
            } else {
                Relayed::Truncated
            },
            false,
        );
    }
    if let Some(mut rec) = ctx.cache_record.take() {
        if let Some(crate::proxy::ctx::Metered::Reported(u)) = ctx.outcome.usage {
            rec.keep_usage(&u);
        }
        store_answer(ctx, rec).await;
    }
    if write(session, None, true, deadlines).await.is_err() {
        return (Relayed::Truncated, true);
    }
    (Relayed::Complete, true)
}

/// Resolves when the client left during a gap of more than [`PROBE_BETWEEN_CHUNKS`] since
/// `last_chunk`. `probe` is the stream's one timer: re-armed only when it fires early (a chunk came
/// since it was set), so a fast stream costs no timer work per chunk.
async fn client_gone_in_gap(
    session: &mut Session,
    mut probe: std::pin::Pin<&mut tokio::time::Sleep>,
    last_chunk: tokio::time::Instant,
) {
    loop {
        probe.as_mut().await;
        let due = last_chunk + PROBE_BETWEEN_CHUNKS;
        if probe.deadline() >= due {
            break;
        }
        probe.as_mut().reset(due);
    }
    client_gone(session, std::time::Duration::ZERO).await;
}

/// Why writing to the client failed.
enum WriteFailed {
    /// The connection is gone.
    Closed,
    /// The client stopped reading and the request's time limit passed.
    TimedOut,
}

/// Write to the client by the request's deadline: a client that stops reading cannot hold the
/// exchange (and its upstream slot) past `request_timeout`.
async fn write(
    session: &mut Session,
    body: Option<Bytes>,
    end: bool,
    deadlines: Deadlines,
) -> Result<(), WriteFailed> {
    match tokio::time::timeout_at(deadlines.total, session.write_response_body(body, end)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Closed),
        Err(_) => Err(WriteFailed::TimedOut),
    }
}

/// The client left or stopped reading: the relay ends (its connection is dropped, and with it the
/// upstream's).
fn client_failed(ctx: &mut RequestCtx, w: WriteFailed) -> (Relayed, bool) {
    ctx.fail(match w {
        WriteFailed::Closed => crate::proxy::ctx::ErrorKind::ClientClosed,
        WriteFailed::TimedOut => crate::proxy::ctx::ErrorKind::ClientTimeout,
    });
    (Relayed::Truncated, false)
}

/// An answer converted whole (a translated non-streamed answer): read (bounded), converted, written
/// in one piece. Until it is written, a failure can still move to another attempt.
#[allow(
    clippy::too_many_arguments,
    reason = "the relay loop takes the exchange's parts by reference, borrowed from different owners"
)]
pub(super) async fn whole(
    shared: &Shared,
    t: &Target<'_>,
    mut http: HttpSession,
    peer: &HttpPeer,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut answer: Box<dyn Answer>,
    deadlines: Deadlines,
) -> Outcome {
    let mut buf = BytesMut::new();
    loop {
        let read = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadlines.total, http.read_response_body()) => r,
            _ = client_gone(session, PROBE_AFTER) => return Outcome::ClientGone,
        };
        match read {
            Err(_) => return Outcome::Timeout,
            Ok(Ok(Some(chunk))) => {
                if ctx.outcome.first_byte.is_none() {
                    ctx.outcome.first_byte = Some(Instant::now());
                }
                buf.extend_from_slice(&chunk);
                if buf.len() > WHOLE_BODY_LIMIT {
                    return Outcome::Broken("the answer is too large to translate".into());
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) if e.etype() == &ReadTimedout => return Outcome::Timeout,
            Ok(Err(e)) => {
                return Outcome::Broken(format!("answer broke off: {}", e.etype().as_str()))
            }
        }
    }
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    let Some(body) = answer.whole(&buf) else {
        return Outcome::Broken("the upstream's answer is not what was expected".into());
    };
    ctx.set_usage(answer.usage());
    ctx.outcome.status = up.status.as_u16();
    ctx.trace_answer(&body);
    let resp = match downstream_header(
        up,
        ctx,
        &t.pool.cfg.name,
        &t.model.name,
        Some(body.len()),
        Mode::Whole,
        answer.as_ref(),
    ) {
        Ok(r) => r,
        Err(e) => return Outcome::Broken(format!("building the response header: {e}")),
    };
    shared
        .connector
        .release(http, peer, t.pool.cfg.client.idle_timeout)
        .await;
    if let Some(mut rec) = ctx.cache_record.take() {
        rec.sse = false;
        rec.push(&body);
        store_answer(ctx, rec).await;
    }
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
        || session.write_response_body(Some(body), true).await.is_err()
    {
        ctx.fail(crate::proxy::ctx::ErrorKind::ClientClosed);
        ctx.cache_record = None;
        return Outcome::Done(Relayed::Truncated, None);
    }
    let unreported = if ctx.outcome.usage.is_none() {
        answer.unreported()
    } else {
        None
    };
    Outcome::Done(Relayed::Complete, unreported)
}

/// Relay a buffered upstream answer as it is.
pub(super) async fn buffered(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    b: Buffered,
) -> Relayed {
    let upstream = state
        .upstreams
        .get(b.upstream)
        .map(|u| u.cfg.name.as_str())
        .unwrap_or("");
    let model = ctx
        .model
        .and_then(|m| state.config.models.get(m))
        .map(|m| m.name.as_str())
        .unwrap_or("");
    ctx.upstream = Some(b.upstream);
    ctx.outcome.status = b.header.status.as_u16();
    let resp = match downstream_header(
        &b.header,
        ctx,
        upstream,
        model,
        Some(b.body.len()),
        Mode::Relay { sse: false },
        &Untranslated,
    ) {
        Ok(r) => r,
        Err(e) => {
            log::error!(
                "request {}: building the response header failed: {e}",
                ctx.request_id
            );
            return Relayed::Truncated;
        }
    };
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
        || session
            .write_response_body(Some(b.body), true)
            .await
            .is_err()
    {
        ctx.fail(crate::proxy::ctx::ErrorKind::ClientClosed);
        return Relayed::Truncated;
    }
    Relayed::Complete
}

/// An error answer too large to buffer: what was read, then the rest as it streams.
pub(super) async fn large_error(
    shared: &Shared,
    t: &Target<'_>,
    http: &mut HttpSession,
    session: &mut Session,
    ctx: &mut RequestCtx,
    b: Buffered,
    deadline: tokio::time::Instant,
) -> Relayed {
    ctx.outcome.status = b.header.status.as_u16();
    let mode = Mode::Relay { sse: false };
    let resp = match downstream_header(
        &b.header,
        ctx,
        &t.pool.cfg.name,
        &t.model.name,
        None,
        mode,
        &Untranslated,
    ) {
        Ok(r) => r,
        Err(_) => return Relayed::Truncated,
    };
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        return Relayed::Truncated;
    }
    let mut relay = crate::providers::openai::Relay::plain();
    stream(
        shared,
        t,
        http,
        session,
        ctx,
        Some(b.body),
        &mut relay,
        mode,
        Deadlines { total: deadline },
    )
    .await
    .0
}

/// Store a complete answer in the response cache before its end is written to the client.
async fn store_answer(ctx: &RequestCtx, rec: crate::cache::Recorder) {
    rec.store(&ctx.state.cache).await;
}

/// Header handling for answers relayed as they are.
struct Untranslated;

impl Answer for Untranslated {
    fn begin(&mut self, _: u16, _: &http::HeaderMap) -> Mode {
        Mode::Relay { sse: false }
    }
    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(body))
    }
    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        Some(chunk)
    }
    fn finish(&mut self) -> Option<Bytes> {
        None
    }
    fn usage(&self) -> Option<crate::providers::usage::Usage> {
        None
    }
    fn error_body(&self, _: u16, _: &[u8]) -> Option<Bytes> {
        None
    }
}

/// The client's response header: the upstream's status and headers (hop-by-hop removed; for a
/// translated answer, its length dropped and its headers as the client's API names them), plus the
/// request id, the upstream and the model that answered.
pub(super) fn downstream_header(
    up: &ResponseHeader,
    ctx: &RequestCtx,
    upstream: &str,
    model: &str,
    content_length: Option<usize>,
    mode: Mode,
    answer: &dyn Answer,
) -> Result<ResponseHeader> {
    let translated = mode.translated();
    // Built as `http` parts and handed to Pingora whole: its `append_header` turns every name into
    // its case-preserving form and parses it back (`HeaderName::from_bytes` per header, the largest
    // cost of this function in callgrind), for a header that keeps no case anyway.
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = up.status;
    let h = &mut parts.headers;
    h.reserve(up.headers.len() + 4);
    for (name, value) in up.headers.iter() {
        if !relayable(name) || (translated && name == http::header::CONTENT_LENGTH) {
            continue;
        }
        if translated {
            match answer.client_header(name, value) {
                HeaderFate::Keep => {}
                HeaderFate::Drop => continue,
                HeaderFate::Rename(n, v) => {
                    h.append(http::HeaderName::from_static(n), header_value(v)?);
                    continue;
                }
            }
        }
        h.append(name.clone(), value.clone());
    }
    match mode {
        Mode::Stream if !crate::providers::is_event_stream(h) => {
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
        }
        // Converted into one JSON body, whatever the upstream's framing was.
        Mode::Whole => {
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        _ => {}
    }
    if let Some(len) = content_length {
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    } else if !h.contains_key(http::header::CONTENT_LENGTH) {
        h.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
    h.insert(X_REQUEST_ID, header_value(ctx.request_id.as_str())?);
    h.insert(X_DEPLOYMENT, header_value(upstream)?);
    h.insert(X_MODEL, header_value(model)?);
    if !ctx.queue_wait.is_zero() {
        h.insert(
            X_QUEUE_MS,
            http::HeaderValue::from(ctx.queue_wait.as_millis() as u64),
        );
    }
    if let Some(c) = ctx.outcome.cache {
        h.insert(X_CACHE, http::HeaderValue::from_static(c.label()));
    }
    Ok(ResponseHeader::from(parts))
}

/// A header value from text the gateway holds (an id, a name from the config, a translated value).
fn header_value<T>(v: T) -> Result<http::HeaderValue>
where
    http::HeaderValue: TryFrom<T>,
{
    http::HeaderValue::try_from(v)
        .ok()
        .or_err(InvalidHTTPHeader, "invalid response header value")
}
