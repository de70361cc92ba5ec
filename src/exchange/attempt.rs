//! One attempt: the provider's request on the wire (auth and header operations applied), connect,
//! send, read the response header; an error answer is buffered (bounded) for the retry decision and
//! shaped for the client; a success goes to [`super::relay`] once its first chunk arrived, so that
//! until then a failure can still move to another attempt.

use super::{client_gone, Deadlines, Relayed, PROBE_AFTER};
use crate::balance::UpstreamPool;
use crate::config::Model;
use crate::providers::{Mode, Outbound, Provider};
use crate::proxy::ctx::RequestCtx;
use crate::state::Shared;
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// Error bodies up to this size are buffered to decide on a retry or a context-window fallback.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// An upstream answer held back (an error status) until the gateway decides to retry or relay it.
pub struct Buffered {
    pub header: ResponseHeader,
    pub body: Bytes,
    pub upstream: usize,
}

/// One attempt's outcome.
pub enum Outcome {
    /// Relayed; with the answer's text when its usage must be estimated.
    Done(Relayed, Option<String>),
    ClientGone,
    /// Nothing was sent upstream; `true` when the connect timed out.
    Connect(String, bool),
    /// No response (or first byte) within the first-byte timeout or the request deadline.
    Timeout,
    /// The upstream closed or broke before the first byte reached the client.
    Broken(String),
    /// An error status, buffered (in the client's shape); the upstream's `Retry-After`; whether it
    /// says the context window is exceeded.
    Status(Box<Buffered>, Option<Duration>, bool),
}

/// Where one attempt goes.
pub struct Target<'a> {
    pub pool: &'a UpstreamPool,
    pub provider: &'static dyn Provider,
    pub upstream_idx: usize,
    pub model: &'a Model,
    /// The deployment's own extra request headers.
    pub headers: &'a [(http::HeaderName, http::HeaderValue)],
    pub addr: SocketAddr,
    /// A Responses API request: remember which upstream created the answer.
    pub pin_response: bool,
}

/// Connect, send, read the header and the first chunk, relay the rest.
pub async fn run(
    shared: &Shared,
    t: &Target<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    plan: Outbound,
    deadlines: Deadlines,
) -> Outcome {
    let Outbound {
        path,
        body,
        mut answer,
    } = plan;
    let pool = t.pool;
    let client = &pool.cfg.client;
    let peer = pool.shared_peer(t.addr);
    let build = |session: &Session| {
        crate::providers::request_header(
            t.provider,
            &pool.cfg,
            &path,
            t.headers,
            session.req_header(),
            body.len(),
            &ctx.request_id,
        )
        .map(Box::new)
    };
    let mut header = match build(session) {
        Ok(h) => Some(h),
        Err(e) => return Outcome::Broken(format!("building the upstream request: {e}")),
    };
    if let Some(h) = header.as_deref_mut() {
        if let Err(e) = pool.signer.sign(h, Some(&body)).await {
            return Outcome::Broken(format!("signing the upstream request: {e}"));
        }
    }
    if log::log_enabled!(log::Level::Debug) {
        if let Some(h) = header.as_deref() {
            log::debug!(
                "request {}: upstream {} {}",
                ctx.request_id,
                pool.cfg.name,
                describe_request(h, t.addr)
            );
        }
    }
    let first_byte = deadlines
        .total
        .min(TokioInstant::now() + client.first_byte_timeout);

    // A pooled connection the upstream already closed fails on first use; that is not the upstream's
    // fault, so it is retried on a fresh connection (bounded).
    let mut stale_retries = 0;
    let mut http = loop {
        let (mut http, reused) = match shared.connector.session(&peer).await {
            Ok(s) => s,
            Err(e) => return Outcome::Connect(e.to_string(), e.etype() == &ConnectTimedout),
        };
        // The header is sent by value; a retry on a fresh connection (rare) builds it again.
        let h = match header.take() {
            Some(h) => h,
            None => {
                let mut h = match build(session) {
                    Ok(h) => h,
                    Err(e) => {
                        return Outcome::Broken(format!("building the upstream request: {e}"))
                    }
                };
                if let Err(e) = pool.signer.sign(&mut h, Some(&body)).await {
                    return Outcome::Broken(format!("signing the upstream request: {e}"));
                }
                h
            }
        };
        if crate::curl::enabled() {
            let u = &pool.cfg.url;
            let scheme = if u.tls { "https" } else { "http" };
            let url = format!("{scheme}://{}{}", u.authority, h.uri);
            crate::curl::log_request(&h.method, &url, &h.headers, &body);
        }
        let sent = tokio::select! {
            biased;
            r = send(&mut http, h, &body, first_byte) => r,
            _ = client_gone(session, PROBE_AFTER) => return Outcome::ClientGone,
        };
        match sent {
            Ok(()) => break http,
            Err(e) if e.etype() == &ReadTimedout => return Outcome::Timeout,
            Err(e) if reused && stale_retries < 2 => {
                stale_retries += 1;
                log::debug!(
                    "request {}: stale pooled connection ({e}), retrying",
                    ctx.request_id
                );
            }
            Err(e) => return Outcome::Broken(brief(&e, &ctx.request_id)),
        }
    };
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    let status = up.status.as_u16();
    if let Some(a) = &ctx.admission {
        a.sched.feedback(a.deployment, status, &up.headers);
    }
    if status >= 400 {
        // Boxed: the error path's future (~4.3 KB) would otherwise size every request's.
        return match Box::pin(buffer_error(
            shared, t, http, &peer, session, ctx, first_byte,
        ))
        .await
        {
            Outcome::Status(mut b, mut after, _) => {
                // Classified on the provider's own words, then shown in the client's API's shape.
                let context_window = t.provider.is_context_window(status, &b.body);
                if after.is_none() {
                    // A delay only the body states (Google's RetryInfo): the scheduler, the
                    // cooldown and the client learn it as a `Retry-After`.
                    after = t.provider.retry_after(status, &b.body);
                    if let Some(d) = after {
                        let secs = d.as_secs_f64().ceil().max(1.0) as u64;
                        let _ = b.header.insert_header(http::header::RETRY_AFTER, secs);
                        if let Some(a) = &ctx.admission {
                            a.sched.feedback(a.deployment, status, &b.header.headers);
                        }
                    }
                }
                if let Some(shaped) = answer.error_body(status, &b.body) {
                    b.body = shaped;
                    let _ = b
                        .header
                        .insert_header(http::header::CONTENT_TYPE, "application/json");
                }
                Outcome::Status(b, after, context_window)
            }
            other => other,
        };
    }
    let mode = answer.begin(status, &up.headers);
    if mode == Mode::Whole {
        // Boxed: a JSON answer's future (~3.4 KB) would otherwise size every stream's for its
        // whole life (the exchange's future lives as long as the stream).
        return Box::pin(super::relay::whole(
            shared, t, http, &peer, session, ctx, answer, deadlines,
        ))
        .await;
    }

    // Read the first chunk before answering the client: until then, a failure can still fail over.
    http.set_read_timeout(Some(
        first_byte.saturating_duration_since(TokioInstant::now()),
    ));
    let first = tokio::select! {
        biased;
        r = http.read_response_body() => r,
        _ = client_gone(session, PROBE_AFTER) => return Outcome::ClientGone,
    };
    let first = match first {
        Ok(c) => c,
        Err(e) if e.etype() == &ReadTimedout => return Outcome::Timeout,
        Err(e) => {
            return Outcome::Broken(format!(
                "closed before the first byte: {}",
                e.etype().as_str()
            ))
        }
    };
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    if t.pin_response && status < 300 {
        if let Some(id) = first.as_deref().and_then(super::pins::response_id) {
            let redis = ctx.state.redis.as_ref();
            shared.response_pins.insert(id, &pool.cfg.name, redis);
        }
    }
    let resp = match super::relay::downstream_header(
        up,
        ctx,
        &pool.cfg.name,
        &t.model.name,
        None,
        mode,
        answer.as_ref(),
    ) {
        Ok(r) => r,
        Err(e) => return Outcome::Broken(format!("building the response header: {e}")),
    };
    ctx.outcome.status = status;
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        ctx.fail(crate::proxy::ctx::ErrorKind::ClientClosed);
        return Outcome::ClientGone;
    }
    http.set_read_timeout(Some(client.stream_idle_timeout));
    // `clean`: the upstream ended the body properly (the connection can be pooled again).
    let (relayed, clean) = super::relay::stream(
        shared,
        t,
        &mut http,
        session,
        ctx,
        first,
        answer.as_mut(),
        mode,
        deadlines,
    )
    .await;
    if clean {
        shared
            .connector
            .release(http, &peer, client.idle_timeout)
            .await;
    }
    let unreported = if clean && ctx.outcome.status < 300 && ctx.outcome.usage.is_none() {
        answer.unreported()
    } else {
        None
    };
    Outcome::Done(relayed, unreported)
}

/// What a client may be told about an upstream exchange that failed: the kind of failure in words,
/// never the upstream's bytes (an invalid header block would otherwise be echoed back). The whole
/// error goes to the debug log, bounded.
fn brief(e: &Error, request_id: &str) -> String {
    let detail: String = e.to_string().chars().take(300).collect();
    log::debug!("request {request_id}: upstream exchange failed: {detail}");
    let what = match e.etype() {
        InvalidHTTPHeader => "its response header was not valid HTTP (or too large)",
        ConnectionClosed => "it closed the connection",
        ReadError => "reading its response failed",
        WriteError => "sending the request failed",
        ReadTimedout | WriteTimedout => "it did not answer in time",
        _ => "the exchange failed",
    };
    format!("{what} ({})", e.etype().as_str())
}

/// `--debug`: the upstream request line and headers, credentials masked.
fn describe_request(h: &RequestHeader, addr: SocketAddr) -> String {
    let headers: Vec<String> = h
        .headers
        .iter()
        .map(|(n, v)| {
            let secret = matches!(
                n.as_str(),
                "authorization" | "api-key" | "x-api-key" | "proxy-authorization"
            ) || n.as_str().contains("token")
                || n.as_str().contains("secret");
            let value = if secret {
                "***"
            } else {
                v.to_str().unwrap_or("<binary>")
            };
            format!("{n}: {value}")
        })
        .collect();
    format!("{addr} {} {} [{}]", h.method, h.uri, headers.join(", "))
}

/// Write the request and read the response header by `deadline`.
async fn send(
    http: &mut HttpSession,
    header: Box<RequestHeader>,
    body: &Bytes,
    deadline: TokioInstant,
) -> Result<()> {
    let io = async {
        http.write_request_header(header).await?;
        http.write_request_body(body.clone(), true).await?;
        http.finish_request_body().await?;
        http.read_response_header().await
    };
    match tokio::time::timeout_at(deadline, io).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(ReadTimedout, "waiting for the response header"),
    }
}

/// Read an error response's body (bounded) so the gateway can decide to retry or relay it. A body over
/// the limit is relayed at once as it streams.
async fn buffer_error(
    shared: &Shared,
    t: &Target<'_>,
    mut http: HttpSession,
    peer: &HttpPeer,
    session: &mut Session,
    ctx: &mut RequestCtx,
    deadline: TokioInstant,
) -> Outcome {
    let Some(up) = http.response_header() else {
        return Outcome::Broken("no response header".into());
    };
    let header = up.clone();
    let retry_after = retry_after(&header);
    let mut buf = BytesMut::new();
    loop {
        let r = match tokio::time::timeout_at(deadline, http.read_response_body()).await {
            Ok(r) => r,
            Err(_) => return Outcome::Timeout,
        };
        match r {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > ERROR_BODY_LIMIT {
                    // Too large to hold: relay it as it comes.
                    let b = Buffered {
                        header,
                        body: buf.freeze(),
                        upstream: t.upstream_idx,
                    };
                    let relayed =
                        super::relay::large_error(shared, t, &mut http, session, ctx, b, deadline)
                            .await;
                    return Outcome::Done(relayed, None);
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Outcome::Broken(format!("error body broke off: {}", e.etype().as_str()))
            }
        }
    }
    shared
        .connector
        .release(http, peer, t.pool.cfg.client.idle_timeout)
        .await;
    Outcome::Status(
        Box::new(Buffered {
            header,
            body: buf.freeze(),
            upstream: t.upstream_idx,
        }),
        retry_after,
        false,
    )
}

/// `Retry-After` (seconds) or `retry-after-ms`, capped at an hour.
fn retry_after(h: &ResponseHeader) -> Option<Duration> {
    let get = |name: &str| {
        h.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let d = get("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| get("retry-after"))?;
    (d.is_finite() && d >= 0.0).then(|| Duration::from_secs_f64(d.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after() {
        let mut h = ResponseHeader::build(429, None).unwrap();
        h.insert_header("retry-after", "2").unwrap();
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert_header("retry-after-ms", "150").unwrap();
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
    }
}
