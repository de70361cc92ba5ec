//! `sse_bench` — the load test's own client (tokio + hyper 1 HTTP/1.1 client).
//!
//! Two modes, each printing one JSON object on stdout:
//!
//! * `sse_bench stream` — N concurrent paced SSE chat streams. Stream `i` starts at
//!   `i / ramp_per_sec` seconds on its own TCP connection, sends a `"stream": true` chat request
//!   (pacing asked of the mock with `x-mock-chunks` / `x-mock-chunk-interval-ms`), and reads the
//!   SSE body event by event. Measured: time to first token (request sent → first event whose
//!   `choices[0].delta.content` is a non-empty string), content events received per stream,
//!   whether `data: [DONE]` arrived, the peak number of streams open at once.
//!   `chunks_lost = streams * chunks - content events received` (a failed stream loses all the
//!   chunks it did not deliver).
//! * `sse_bench rr` — request/response load on keep-alive connections (`--concurrency`
//!   connections, `--duration-s` seconds, closed loop; with `--rate` each connection is paced to
//!   `rate / concurrency` req/s and latency is measured from the *intended* send time, so a
//!   stalled server is not hidden by coordinated omission). Used by the harness only where oha
//!   is not installed (the CI smoke mode).
//! * `sse_bench serve` — a chunk source for the chunk-relay scenario: an OpenAI-compatible
//!   upstream (`POST .../chat/completions`, `GET .../models`) whose stream chunks are sent on a
//!   fixed schedule (chunk `i` at request arrival + `i * interval`, `x-mock-chunks` /
//!   `x-mock-chunk-interval-ms` as the mock reads them, `--chunks` / `--interval-ms` otherwise)
//!   and carry their send time: each chunk's `delta.content` is `@<unix time in ns>`, taken
//!   when the chunk is handed to the socket. Prints `listening on ADDR` and serves until killed.
//!   `sse_bench stream --stamped` reads those stamps: the per-chunk latency (receive time − send
//!   time, one machine, one clock) is exact, whatever path the chunk took.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(name = "sse_bench", about = "SSE streaming / request-response load client")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Target host:port (the gateway, or the mock for "direct").
    #[arg(long)]
    addr: String,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Model name in the request body.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// Extra request header "name: value" (repeatable), e.g. an Authorization header.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Per-request timeout (s).
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Tokio worker threads (0 = one per CPU the process may run on).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Concurrent paced SSE streams.
    Stream {
        #[command(flatten)]
        common: Common,
        /// Number of streams.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Stream starts per second (ramp); 0 = all at once.
        #[arg(long, default_value_t = 5000.0)]
        ramp_per_sec: f64,
        /// Content chunks per stream (sent as x-mock-chunks).
        #[arg(long, default_value_t = 20)]
        chunks: u64,
        /// Delay between chunks (ms; sent as x-mock-chunk-interval-ms).
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// The chunks carry their send time (`sse_bench serve`): report the per-chunk latency.
        #[arg(long)]
        stamped: bool,
    },
    /// A chunk source: an upstream whose stream chunks carry their send time.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Content chunks per stream when the request has no x-mock-chunks header.
        #[arg(long, default_value_t = 20)]
        chunks: u64,
        /// Interval between chunks (ms) when the request has no x-mock-chunk-interval-ms header.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// Tokio worker threads (0 = one per CPU the process may run on).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Request/response load on keep-alive connections.
    Rr {
        #[command(flatten)]
        common: Common,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Duration (s).
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// Total request rate (req/s) spread over the connections; 0 = closed loop.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Request body file (default: a small non-streaming chat request).
        #[arg(long)]
        body_file: Option<String>,
    },
}

fn parse_headers(h: &[String]) -> Result<Vec<(String, String)>, String> {
    h.iter()
        .map(|s| {
            let (k, v) = s
                .split_once(':')
                .ok_or_else(|| format!("bad --header {s:?} (want 'name: value')"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn build_request(
    c: &Common,
    headers: &[(String, String)],
    extra: &[(&str, String)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(c.path.as_str())
        .header("host", c.addr.as_str())
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(body)).map_err(|e| format!("request: {e}"))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn summary_ms(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = if v.is_empty() {
        None
    } else {
        Some(v.iter().sum::<f64>() / v.len() as f64)
    };
    json!({
        "count": v.len(),
        "mean": mean,
        "p50": percentile(&v, 50.0),
        "p90": percentile(&v, 90.0),
        "p99": percentile(&v, 99.0),
        "p999": percentile(&v, 99.9),
        "max": v.last().copied(),
    })
}

// ---------------------------------------------------------------- stream mode

#[derive(Default)]
struct StreamResult {
    status: u16,
    ttft_ms: Option<f64>,
    content_events: u64,
    done: bool,
    error: Option<String>,
    /// `--stamped`: receive time − send time of every stamped chunk (ms).
    chunk_latency_ms: Vec<f64>,
}

/// The SSE event's `choices[0].delta.content` (or `.text`) when it is a non-empty string.
fn content_of(data: &str) -> Option<String> {
    let Ok(mut v) = serde_json::from_str::<Value>(data) else {
        return None;
    };
    let choice = v.get_mut("choices")?.get_mut(0)?.take();
    let content = match choice.get("delta").and_then(|d| d.get("content")) {
        Some(c) => c.clone(),
        None => choice.get("text")?.clone(),
    };
    match content {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Wall-clock time in ns since the Unix epoch (the clock `serve` stamps chunks with; one machine,
/// so sender and receiver read the same clock).
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn one_stream(
    c: Arc<Common>,
    headers: Arc<Vec<(String, String)>>,
    chunks: u64,
    interval_ms: u64,
    stamped: bool,
    in_flight: Arc<AtomicI64>,
    peak: Arc<AtomicI64>,
) -> StreamResult {
    let mut r = StreamResult::default();
    let mut sender = match connect(&c.addr).await {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let body = json!({
        "model": c.model,
        "stream": true,
        "messages": [{"role": "user", "content": "Say hello, slowly."}],
    })
    .to_string();
    let req = match build_request(
        &c,
        &headers,
        &[
            ("x-mock-chunks", chunks.to_string()),
            ("x-mock-chunk-interval-ms", interval_ms.to_string()),
        ],
        Bytes::from(body),
    ) {
        Ok(r) => r,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    peak.fetch_max(now, Ordering::SeqCst);
    let sent = Instant::now();
    let fut = async {
        if sender.ready().await.is_err() {
            r.error = Some("connection closed before request".into());
            return;
        }
        let resp = match sender.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                r.error = Some(format!("send: {e}"));
                return;
            }
        };
        r.status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    r.error = Some(format!("body: {e}"));
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let recv_ns = if stamped { unix_ns() } else { 0 };
                    buf.extend_from_slice(&data);
                    // Complete events end with a blank line ("\n\n"; tolerate "\r\n\r\n").
                    while let Some(pos) = find_event_end(&buf) {
                        let (ev_len, sep_len) = pos;
                        let ev = String::from_utf8_lossy(&buf[..ev_len]).into_owned();
                        buf.drain(..ev_len + sep_len);
                        for line in ev.lines() {
                            let Some(d) = line.strip_prefix("data:") else { continue };
                            let d = d.trim();
                            if d == "[DONE]" {
                                r.done = true;
                            } else if let Some(content) = content_of(d) {
                                r.content_events += 1;
                                if r.ttft_ms.is_none() {
                                    r.ttft_ms = Some(sent.elapsed().as_secs_f64() * 1000.0);
                                }
                                if stamped {
                                    if let Some(ns) = content
                                        .strip_prefix('@')
                                        .and_then(|t| t.trim().parse::<u64>().ok())
                                    {
                                        let lat = (recv_ns as i128 - ns as i128) as f64 / 1e6;
                                        r.chunk_latency_ms.push(lat);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if r.status != 200 && r.error.is_none() {
            r.error = Some(format!("status {}", r.status));
        }
    };
    if tokio::time::timeout(Duration::from_secs(c.timeout_s), fut)
        .await
        .is_err()
    {
        r.error = Some("timeout".into());
    }
    in_flight.fetch_sub(1, Ordering::SeqCst);
    r
}

fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let a = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let b = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, 4));
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.0 <= y.0 { x } else { y }),
        (x, None) => x,
        (None, y) => y,
    }
}

async fn run_stream(
    c: Common,
    streams: usize,
    ramp_per_sec: f64,
    chunks: u64,
    interval_ms: u64,
    stamped: bool,
) -> Result<Value, String> {
    let headers = Arc::new(parse_headers(&c.headers)?);
    let c = Arc::new(c);
    let in_flight = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(streams);
    for i in 0..streams {
        if ramp_per_sec > 0.0 {
            let at = start + Duration::from_secs_f64(i as f64 / ramp_per_sec);
            tokio::time::sleep_until(at.into()).await;
        }
        handles.push(tokio::spawn(one_stream(
            c.clone(),
            headers.clone(),
            chunks,
            interval_ms,
            stamped,
            in_flight.clone(),
            peak.clone(),
        )));
    }
    let mut ttft = Vec::with_capacity(streams);
    let mut chunk_lat: Vec<f64> = Vec::new();
    let (mut ok, mut received, mut no_done) = (0u64, 0u64, 0u64);
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for h in handles {
        let r = match h.await {
            Ok(r) => r,
            Err(e) => StreamResult {
                error: Some(format!("task: {e}")),
                ..Default::default()
            },
        };
        received += r.content_events;
        chunk_lat.extend_from_slice(&r.chunk_latency_ms);
        if let Some(t) = r.ttft_ms {
            ttft.push(t);
        }
        if !r.done {
            no_done += 1;
        }
        match r.error {
            None if r.done && r.content_events == chunks => ok += 1,
            None => *errors.entry("incomplete stream".into()).or_default() += 1,
            Some(e) => {
                let key: String = e.chars().take(80).collect();
                *errors.entry(key).or_default() += 1
            }
        }
    }
    let expected = streams as u64 * chunks;
    let stamped_chunks = chunk_lat.len();
    let mut out = json!({
        "mode": "stream",
        "streams": streams,
        "ok_streams": ok,
        "failed_streams": streams as u64 - ok,
        "errors": errors,
        "chunks_per_stream": chunks,
        "chunk_interval_ms": interval_ms,
        "chunks_expected": expected,
        "chunks_received": received,
        "chunks_lost": expected.saturating_sub(received),
        "streams_without_done": no_done,
        "peak_concurrent_streams": peak.load(Ordering::SeqCst),
        "ttft_ms": summary_ms(ttft),
        "elapsed_s": start.elapsed().as_secs_f64(),
    });
    if stamped {
        out["stamped_chunks"] = json!(stamped_chunks);
        out["chunk_latency_ms"] = summary_ms(chunk_lat);
    }
    Ok(out)
}

// ---------------------------------------------------------------- serve mode

struct ServeState {
    chunks: u64,
    interval_ms: u64,
    requests: AtomicU64,
}

/// A response body: either one buffer, or a paced stream whose content chunks are due at
/// `start + i * interval` (a fixed schedule: a late chunk does not delay the next ones) and are
/// stamped with the wall-clock time at which they are handed to hyper.
enum SourceBody {
    Full(Option<Bytes>),
    Paced(Box<Paced>),
}

struct Paced {
    id: u64,
    model: String,
    created: u64,
    start: tokio::time::Instant,
    interval: Duration,
    chunks: u64,
    next: u64,
    tail: Option<Bytes>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for SourceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            SourceBody::Full(d) => Poll::Ready(d.take().map(|d| Ok(Frame::data(d)))),
            SourceBody::Paced(p) => {
                if p.next < p.chunks {
                    let due = p.start + p.interval.saturating_mul(p.next as u32);
                    if tokio::time::Instant::now() < due {
                        p.sleep.as_mut().reset(due);
                        if p.sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    let role = if p.next == 0 {
                        r#""role":"assistant","#
                    } else {
                        ""
                    };
                    let chunk = format!(
                        "data: {{\"id\":\"chatcmpl-src-{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"@{}\"}},\"finish_reason\":null}}]}}\n\n",
                        p.id,
                        p.created,
                        p.model,
                        unix_ns()
                    );
                    p.next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))));
                }
                Poll::Ready(p.tail.take().map(|t| Ok(Frame::data(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SourceBody::Full(d) => d.is_none(),
            SourceBody::Paced(p) => p.next >= p.chunks && p.tail.is_none(),
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response<SourceBody> {
    let mut r = Response::new(SourceBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn serve_request(
    req: Request<Incoming>,
    st: Arc<ServeState>,
) -> Result<Response<SourceBody>, Infallible> {
    let hdr = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let chunks = hdr("x-mock-chunks").unwrap_or(st.chunks);
    let interval_ms = hdr("x-mock-chunk-interval-ms").unwrap_or(st.interval_ms);
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path.ends_with("/models") {
        return Ok(json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "sse_bench"}]})
                .to_string(),
        ));
    }
    if req.method() != Method::POST || !path.ends_with("/chat/completions") {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"message": format!("sse_bench serve: no route for {path}"), "type": "not_found"}})
                .to_string(),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or("gpt-4o-mini");
    let model = Value::String(model.to_string()).to_string();
    let id = st.requests.fetch_add(1, Ordering::Relaxed);
    let created = unix_ns() / 1_000_000_000;
    let prompt = (body.len() as u64 / 4).max(1);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": chunks, "total_tokens": prompt + chunks});
    if v.get("stream").and_then(|s| s.as_bool()) != Some(true) {
        return Ok(json_response(
            StatusCode::OK,
            format!(
                "{{\"id\":\"chatcmpl-src-{id}\",\"object\":\"chat.completion\",\"created\":{created},\"model\":{model},\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"Hello from sse_bench\"}},\"finish_reason\":\"stop\"}}],\"usage\":{usage}}}"
            ),
        ));
    }
    let include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(|u| u.as_bool())
        == Some(true);
    let mut tail = format!(
        "data: {{\"id\":\"chatcmpl-src-{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
    );
    if include_usage {
        tail += &format!(
            "data: {{\"id\":\"chatcmpl-src-{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{model},\"choices\":[],\"usage\":{usage}}}\n\n"
        );
    }
    tail += "data: [DONE]\n\n";
    let start = tokio::time::Instant::now();
    let mut r = Response::new(SourceBody::Paced(Box::new(Paced {
        id,
        model,
        created,
        start,
        interval: Duration::from_millis(interval_ms),
        chunks,
        next: 0,
        tail: Some(Bytes::from(tail)),
        sleep: Box::pin(tokio::time::sleep_until(start)),
    })));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

async fn run_serve(listen: String, chunks: u64, interval_ms: u64) -> Result<Value, String> {
    let l = TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    let st = Arc::new(ServeState {
        chunks,
        interval_ms,
        requests: AtomicU64::new(0),
    });
    loop {
        let (tcp, _) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("sse_bench serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let st = st.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| serve_request(req, st.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------- rr mode

struct WorkerOut {
    latencies_ms: Vec<f64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: std::collections::BTreeMap<String, u64>,
}

async fn rr_worker(
    c: Arc<Common>,
    headers: Arc<Vec<(String, String)>>,
    body: Bytes,
    deadline: Instant,
    interval: Option<Duration>,
    offset: Duration,
    bytes_in: Arc<AtomicU64>,
) -> WorkerOut {
    let mut out = WorkerOut {
        latencies_ms: Vec::new(),
        statuses: Default::default(),
        errors: Default::default(),
    };
    let mut sender: Option<Sender> = None;
    let start = Instant::now() + offset;
    let mut k: u32 = 0;
    loop {
        let intended = match interval {
            Some(iv) => {
                let t = start + iv * k;
                k += 1;
                if t >= deadline {
                    break;
                }
                tokio::time::sleep_until(t.into()).await;
                t
            }
            None => {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                t
            }
        };
        if sender.is_none() {
            match connect(&c.addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    *out.errors.entry(e).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = match build_request(&c, &headers, &[], body.clone()) {
            Ok(r) => r,
            Err(e) => {
                *out.errors.entry(e).or_default() += 1;
                break;
            }
        };
        let res = tokio::time::timeout(Duration::from_secs(c.timeout_s), async {
            s.ready().await.map_err(|e| format!("ready: {e}"))?;
            let resp = s.send_request(req).await.map_err(|e| format!("send: {e}"))?;
            let status = resp.status().as_u16();
            let b = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, b.len()))
        })
        .await;
        match res {
            Ok(Ok((status, n))) => {
                out.latencies_ms
                    .push(intended.elapsed().as_secs_f64() * 1000.0);
                *out.statuses.entry(status).or_default() += 1;
                bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                let key: String = e.chars().take(80).collect();
                *out.errors.entry(key).or_default() += 1;
                sender = None;
            }
            Err(_) => {
                *out.errors.entry("timeout".into()).or_default() += 1;
                sender = None;
            }
        }
    }
    out
}

async fn run_rr(
    c: Common,
    concurrency: usize,
    duration_s: f64,
    rate: f64,
    body_file: Option<String>,
) -> Result<Value, String> {
    let headers = Arc::new(parse_headers(&c.headers)?);
    let body = match body_file {
        Some(f) => Bytes::from(std::fs::read(&f).map_err(|e| format!("{f}: {e}"))?),
        None => Bytes::from(
            json!({"model": c.model, "messages": [{"role": "user", "content": "Hello!"}]})
                .to_string(),
        ),
    };
    let c = Arc::new(c);
    let concurrency = concurrency.max(1);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(concurrency as f64 / rate));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration_s);
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..concurrency {
        // Spread the paced connections' send times evenly over one interval.
        let offset = interval
            .map(|iv| iv.mul_f64(i as f64 / concurrency as f64))
            .unwrap_or_default();
        handles.push(tokio::spawn(rr_worker(
            c.clone(),
            headers.clone(),
            body.clone(),
            deadline,
            interval,
            offset,
            bytes_in.clone(),
        )));
    }
    let mut lat = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for h in handles {
        let w = h.await.map_err(|e| format!("task: {e}"))?;
        lat.extend(w.latencies_ms);
        for (k, v) in w.statuses {
            *statuses.entry(k).or_default() += v;
        }
        for (k, v) in w.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = lat.len();
    let statuses: serde_json::Map<String, Value> = statuses
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(json!({
        "mode": "rr",
        "requests": n,
        "status_codes": statuses,
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": n as f64 / elapsed,
        "bytes_in": bytes_in.load(Ordering::Relaxed),
        "latency_ms": summary_ms(lat),
    }))
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.mode {
        Mode::Stream { common, .. } | Mode::Rr { common, .. } => common.threads,
        Mode::Serve { threads, .. } => *threads,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if threads > 0 {
        rt.worker_threads(threads);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sse_bench: runtime: {e}");
            std::process::exit(2);
        }
    };
    let res = rt.block_on(async move {
        match cli.mode {
            Mode::Stream {
                common,
                streams,
                ramp_per_sec,
                chunks,
                interval_ms,
                stamped,
            } => run_stream(common, streams, ramp_per_sec, chunks, interval_ms, stamped).await,
            Mode::Serve {
                listen,
                chunks,
                interval_ms,
                ..
            } => run_serve(listen, chunks, interval_ms).await,
            Mode::Rr {
                common,
                concurrency,
                duration_s,
                rate,
                body_file,
            } => run_rr(common, concurrency, duration_s, rate, body_file).await,
        }
    });
    match res {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("sse_bench: {e}");
            std::process::exit(2);
        }
    }
}
