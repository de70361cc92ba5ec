//! Response bodies and the answers every dialect shares: a full body, or pre-rendered SSE frames
//! emitted one body frame each after their delay (pacing, time to first token), with the
//! `x-mock-drop-after-chunks` abort; JSON and OpenAI-shaped error answers; small header and query
//! helpers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::server::State;

/// One pre-rendered SSE frame (or any other piece of a streamed body) and the delay before it is
/// emitted.
pub(crate) struct SseFrame {
    delay: Duration,
    data: Bytes,
}

impl SseFrame {
    /// Any bytes, emitted as one body frame after `delay`.
    pub(crate) fn raw(delay: Duration, data: impl Into<Bytes>) -> SseFrame {
        SseFrame {
            delay,
            data: data.into(),
        }
    }
}

struct SseBody {
    frames: std::vec::IntoIter<SseFrame>,
    pending: Option<SseFrame>,
    /// Number of frames to emit before aborting the connection.
    drop_after: Option<usize>,
    emitted: usize,
    drop_flushed: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    done: bool,
}

enum Kind {
    Full(Option<Bytes>),
    Sse(SseBody),
}

/// Counts a request in `/__mock/stats`' `in_flight` until its response body is dropped (so an
/// open stream counts).
pub(crate) struct InFlight(Arc<State>);

impl InFlight {
    pub(crate) fn new(state: Arc<State>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every response body the mock sends.
pub(crate) struct MockBody {
    kind: Kind,
    guard: Option<InFlight>,
}

impl MockBody {
    fn full(data: impl Into<Bytes>) -> Self {
        MockBody {
            kind: Kind::Full(Some(data.into())),
            guard: None,
        }
    }

    fn sse(frames: Vec<SseFrame>, drop_after: Option<usize>) -> Self {
        MockBody {
            kind: Kind::Sse(SseBody {
                frames: frames.into_iter(),
                pending: None,
                drop_after,
                emitted: 0,
                drop_flushed: false,
                sleep: None,
                armed: false,
                done: false,
            }),
            guard: None,
        }
    }

    /// Keep the request counted as in flight until this body is dropped.
    pub(crate) fn track(&mut self, guard: InFlight) {
        self.guard = Some(guard);
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Sse(s) => {
                if s.done {
                    return Poll::Ready(None);
                }
                if s.drop_after == Some(s.emitted) {
                    if !s.drop_flushed {
                        // Yield once so hyper flushes the frames written so
                        // far; an error frame discards its write buffer.
                        s.drop_flushed = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    s.done = true;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "mock: x-mock-drop-after-chunks",
                    ))));
                }
                if s.pending.is_none() {
                    match s.frames.next() {
                        Some(f) => s.pending = Some(f),
                        None => {
                            s.done = true;
                            return Poll::Ready(None);
                        }
                    }
                }
                let delay = s.pending.as_ref().map(|f| f.delay).unwrap_or_default();
                if !delay.is_zero() {
                    if !s.armed {
                        let deadline = Instant::now() + delay;
                        match &mut s.sleep {
                            Some(sl) => sl.as_mut().reset(deadline),
                            None => s.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        s.armed = true;
                    }
                    if let Some(sl) = &mut s.sleep {
                        if sl.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    s.armed = false;
                }
                match s.pending.take() {
                    Some(f) => {
                        s.emitted += 1;
                        Poll::Ready(Some(Ok(Frame::data(f.data))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.is_none(),
            Kind::Sse(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hdr_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub(crate) fn hdr_string(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

pub(crate) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

pub(crate) fn json_response(
    state: &State,
    status: StatusCode,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("x-mock-name", state.name.clone());
    resp
}

pub(crate) fn error_response(
    state: &State,
    status: StatusCode,
    message: &str,
    typ: &str,
    code: &str,
) -> Response<MockBody> {
    let message = serde_json::to_string(message).unwrap_or_default();
    let body = format!(
        r#"{{"error":{{"message":{message},"type":"{typ}","param":null,"code":"{code}"}}}}"#
    );
    json_response(state, status, body)
}

pub(crate) fn mock_error(state: &State, status: StatusCode) -> Response<MockBody> {
    let code = state
        .fail_code
        .clone()
        .unwrap_or_else(|| format!("mock_{}", status.as_u16()));
    let message = state.fail_message.as_deref().unwrap_or("mock error");
    let mut resp = error_response(state, status, message, "mock_error", &code);
    if let Some(secs) = state.retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

/// A failure status worth honouring (>= 400, valid).
pub(crate) fn fail_code(code: u64) -> Option<StatusCode> {
    if (400..=999).contains(&code) {
        StatusCode::from_u16(code as u16).ok()
    } else {
        None
    }
}

pub(crate) fn sse_response(
    state: &State,
    frames: Vec<SseFrame>,
    drop_after: Option<usize>,
) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::sse(frames, drop_after));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-mock-name", state.name.clone());
    resp
}

/// A paced streamed body of any content type (the frames as `sse_response` sends them).
pub(crate) fn stream_response(
    state: &State,
    frames: Vec<SseFrame>,
    drop_after: Option<usize>,
    content_type: &'static str,
) -> Response<MockBody> {
    let mut resp = sse_response(state, frames, drop_after);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The failure status a request gets: the global one (`--fail-status`, `/__mock/fail`), else its
/// `x-mock-status`.
pub(crate) fn failure_status(state: &State, h: &HeaderMap) -> Option<StatusCode> {
    fail_code(u64::from(state.fail_status.load(Ordering::Relaxed)))
        .or_else(|| hdr_u64(h, "x-mock-status").and_then(fail_code))
}

/// Wait the request's latency (`x-mock-latency-ms`, else the mock's); returns it in ms.
pub(crate) async fn apply_latency(state: &State, h: &HeaderMap) -> u64 {
    let latency =
        hdr_u64(h, "x-mock-latency-ms").unwrap_or_else(|| state.latency_ms.load(Ordering::Relaxed));
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    latency
}

/// A fresh request id shaped like a UUID (`00000000-0000-4000-8000-<n>`).
pub(crate) fn uuid_like(state: &State) -> String {
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

pub(crate) fn data_frame(delay: Duration, json: &str) -> SseFrame {
    let mut s = String::with_capacity(json.len() + 8);
    s.push_str("data: ");
    s.push_str(json);
    s.push_str("\n\n");
    SseFrame {
        delay,
        data: Bytes::from(s),
    }
}

pub(crate) fn event_frame(delay: Duration, event: &str, json: &str) -> SseFrame {
    let mut s = String::with_capacity(json.len() + event.len() + 16);
    s.push_str("event: ");
    s.push_str(event);
    s.push_str("\ndata: ");
    s.push_str(json);
    s.push_str("\n\n");
    SseFrame {
        delay,
        data: Bytes::from(s),
    }
}

/// The status and body of a fully built answer.
pub(crate) fn full_body(resp: Response<MockBody>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    match resp.into_body().kind {
        Kind::Full(Some(b)) => (status, b),
        _ => (status, Bytes::new()),
    }
}

/// The status, headers and whole body of an answer, streamed frames concatenated (up to an
/// `x-mock-drop-after-chunks` abort), delays skipped (unit tests).
#[cfg(test)]
pub(crate) fn collect(resp: Response<MockBody>) -> (u16, HeaderMap, Vec<u8>) {
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let data = match body.kind {
        Kind::Full(Some(b)) => b.to_vec(),
        Kind::Full(None) => Vec::new(),
        Kind::Sse(s) => s
            .frames
            .take(s.drop_after.unwrap_or(usize::MAX))
            .flat_map(|f| f.data.to_vec())
            .collect(),
    };
    (status, parts.headers, data)
}
