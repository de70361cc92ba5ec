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

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

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
}

/// True when the SSE event's `choices[0].delta.content` (or `.text`) is a non-empty string.
fn is_content_event(data: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
        return false;
    };
    let content = choice
        .get("delta")
        .and_then(|d| d.get("content"))
        .or_else(|| choice.get("text"));
    matches!(content, Some(Value::String(s)) if !s.is_empty())
}

async fn one_stream(
    c: Arc<Common>,
    headers: Arc<Vec<(String, String)>>,
    chunks: u64,
    interval_ms: u64,
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
                            } else if is_content_event(d) {
                                r.content_events += 1;
                                if r.ttft_ms.is_none() {
                                    r.ttft_ms = Some(sent.elapsed().as_secs_f64() * 1000.0);
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
            in_flight.clone(),
            peak.clone(),
        )));
    }
    let mut ttft = Vec::with_capacity(streams);
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
    Ok(json!({
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
    }))
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
            } => run_stream(common, streams, ramp_per_sec, chunks, interval_ms).await,
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
