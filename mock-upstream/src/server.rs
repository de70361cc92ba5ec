//! The server: the state every request shares, the accept loop on its own thread and runtime, and
//! the dispatch of one request to its dialect.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::batch::{self, BatchStore};
use crate::body::{fail_code, hdr_u64, mock_error, InFlight, MockBody};
use crate::control::{self, Recorded, KNOWN_PATHS};
use crate::limits::{self, Limiter};
use crate::openai::{self, Endpoint, ReqBody};
use crate::tokens::{self, Api};
use crate::{anthropic, azure, bedrock, gemini, sigv4, tgi, vertex, Options};

/// What every request of one mock shares: its settings, counters, recordings, rate limiter and
/// batch store.
pub(crate) struct State {
    pub(crate) name: HeaderValue,
    pub(crate) fail_code: Option<String>,
    pub(crate) fail_message: Option<String>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) ttft_ms: u64,
    pub(crate) chunks: u64,
    pub(crate) chunk_interval_ms: Option<u64>,
    pub(crate) tokens_per_sec: u64,
    pub(crate) response_bytes: u64,
    pub(crate) embedding_dim: usize,
    pub(crate) record: bool,
    pub(crate) latency_ms: AtomicU64,
    pub(crate) fail_status: AtomicU16,
    pub(crate) ids: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) path_counts: [AtomicU64; KNOWN_PATHS.len()],
    pub(crate) other_paths: Mutex<HashMap<String, u64>>,
    pub(crate) records: Mutex<VecDeque<Recorded>>,
    /// Rate limits: `start` is time zero of the buckets and of the admissions' `t_ms`.
    pub(crate) start: std::time::Instant,
    pub(crate) default_max_tokens: u64,
    /// Whether a limit is set (read without the lock on the hot path).
    pub(crate) limits_on: AtomicBool,
    pub(crate) limiter: Mutex<Limiter>,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) admitted_tokens: AtomicU64,
    /// Echo mode: chat answers carry the last user message as their content.
    pub(crate) echo: AtomicBool,
    /// Files and Batch API state, with its `/__mock/batch` settings.
    pub(crate) batch: Mutex<BatchStore>,
    /// `--max-input-tokens`.
    pub(crate) max_input_tokens: u64,
    /// `--no-stream-usage`.
    pub(crate) no_stream_usage: bool,
    /// Bedrock's SigV4 credentials (`--aws-*`), when requests must be signed.
    pub(crate) aws: Option<sigv4::Credentials>,
    pub(crate) aws_region: String,
    pub(crate) bedrock_api_key: Option<String>,
    /// `--gemini-api-key`.
    pub(crate) gemini_api_key: Option<String>,
    /// Vertex AI's service account and the access tokens issued.
    pub(crate) gcp: vertex::GcpAuth,
    /// Access tokens issued (`/token`, the metadata server).
    pub(crate) token_grants: AtomicU64,
    /// `--tgi-model-id`.
    pub(crate) tgi_model_id: String,
}

impl State {
    fn new(o: &Options) -> io::Result<State> {
        let name = HeaderValue::from_str(&o.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--name: {e}")))?;
        Ok(State {
            name,
            ttft_ms: o.ttft_ms,
            chunks: o.chunks,
            chunk_interval_ms: o.chunk_interval_ms,
            tokens_per_sec: o.tokens_per_sec,
            response_bytes: o.response_bytes,
            embedding_dim: o.embedding_dim,
            record: !o.no_record,
            latency_ms: AtomicU64::new(o.latency_ms),
            fail_status: AtomicU16::new(o.fail_status),
            fail_code: o.fail_code.clone(),
            fail_message: o.fail_message.clone(),
            retry_after: o.retry_after,
            ids: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            path_counts: Default::default(),
            other_paths: Mutex::new(HashMap::new()),
            records: Mutex::new(VecDeque::new()),
            start: std::time::Instant::now(),
            default_max_tokens: o.default_max_tokens,
            limits_on: AtomicBool::new(o.rpm > 0 || o.tpm > 0),
            limiter: Mutex::new(Limiter::new(o.limit_mode, o.rpm, o.tpm, Duration::ZERO)),
            rate_limited: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            admitted_tokens: AtomicU64::new(0),
            echo: AtomicBool::new(o.echo),
            batch: Mutex::new(BatchStore::default()),
            max_input_tokens: o.max_input_tokens,
            no_stream_usage: o.no_stream_usage,
            aws: match (&o.aws_access_key_id, &o.aws_secret_access_key) {
                (Some(id), Some(secret)) => Some(sigv4::Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: o.aws_session_token.clone(),
                    region: o.aws_region.clone(),
                    service: "bedrock".to_owned(),
                }),
                _ => None,
            },
            aws_region: o.aws_region.clone(),
            bedrock_api_key: o.bedrock_api_key.clone(),
            gemini_api_key: o.gemini_api_key.clone(),
            gcp: vertex::GcpAuth::new(o)?,
            token_grants: AtomicU64::new(0),
            tgi_model_id: o.tgi_model_id.clone(),
        })
    }
}

/// A mock's state built from command-line arguments (unit tests).
#[cfg(test)]
pub(crate) fn test_state(args: &[&str]) -> State {
    match Options::from_args(args).map(|o| State::new(&o)) {
        Ok(Ok(s)) => s,
        _ => panic!("bad test arguments {args:?}"),
    }
}

/// Start a mock on a thread of its own: build its runtime, bind, and serve until `stop` fires.
/// Returns once the listener is bound (or binding failed).
pub(crate) fn spawn(
    options: Options,
) -> io::Result<(SocketAddr, oneshot::Sender<()>, JoinHandle<()>)> {
    let state = Arc::new(State::new(&options)?);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<SocketAddr>>(1);
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("mock-{}", options.name))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(options.threads.max(1))
                .thread_name(format!("mock-{}-worker", options.name))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                if options.rpm > 0 || options.tpm > 0 {
                    // Before the mock says it listens: the first limited request must not wait.
                    tokens::warm_up();
                }
                let listener = match bind(options.listen) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(listener.local_addr());
                accept_loop(listener, state, stop_rx).await;
            });
            // Dropping the runtime drops every connection task and so closes its socket: a stream
            // still being sent breaks off, as it would if the upstream died.
            drop(rt);
        })?;
    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok((addr, stop_tx, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other(
                "the mock server thread ended before it listened",
            ))
        }
    }
}

/// A listener with `SO_REUSEADDR` and a backlog deep enough for load tests.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)
}

/// Accept connections until `stop` fires (or its sender is gone); one task per connection.
async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // e.g. EMFILE under extreme load: back off briefly.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            // A connection error (the client went away, an aborted stream) ends only this task.
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// One request: control paths first; then counted, read, recorded, routed by dialect, checked
/// against the rate limits, delayed, and answered.
async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();

    if path.starts_with("/__mock/") {
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        return Ok(control::control(
            &state,
            &parts.method,
            path,
            parts.uri.query(),
            &body,
        ));
    }

    state.requests.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight::new(state.clone());
    control::count_path(&state, path);

    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };

    if bedrock::is_path(path) {
        let mut resp = bedrock::handle(&state, &parts, body).await;
        resp.body_mut().track(guard);
        return Ok(resp);
    }

    if let Some(route) = gemini::route(&parts.method, path) {
        let mut resp = gemini::handle(&state, &parts, body, route).await;
        resp.body_mut().track(guard);
        return Ok(resp);
    }

    if tgi::is_path(&parts.method, path) {
        let mut resp = tgi::handle(&state, &parts, body).await;
        resp.body_mut().track(guard);
        return Ok(resp);
    }

    if vertex::is_auth_path(path) {
        let mut resp = vertex::handle_auth(&state, &parts, body);
        resp.body_mut().track(guard);
        return Ok(resp);
    }

    if anthropic::is_path(path) {
        let mut resp = anthropic::handle(&state, &parts, body).await;
        resp.body_mut().track(guard);
        return Ok(resp);
    }

    let azure = azure::route(path, parts.uri.query());
    let endpoint = match &azure {
        Some(az) => az.endpoint,
        None => openai::openai_endpoint(path),
    };
    let batch_route = match &azure {
        Some(_) => batch::azure_route(path),
        None => batch::route(path).map(|r| (r, batch::Dialect::OpenAi)),
    };
    let parsed: Option<Result<ReqBody, serde_json::Error>> = (parts.method == Method::POST
        && (endpoint.is_some_and(|e| e != Endpoint::Models) || !body.is_empty()))
    .then(|| serde_json::from_slice::<ReqBody>(&body));

    if state.record {
        control::record(
            &state,
            &parts.method,
            path,
            parts.uri.query(),
            &parts.headers,
            &body,
            parsed.as_ref().and_then(|r| r.as_ref().ok()),
        );
    }

    if let Some(mut resp) = azure
        .as_ref()
        .and_then(|az| azure::reject(&state, az, batch_route.is_some(), &parts.headers))
    {
        resp.body_mut().track(guard);
        return Ok(resp);
    }

    let api = match endpoint {
        _ if parts.method != Method::POST => None,
        Some(Endpoint::Chat) => Some(Api::Chat),
        Some(Endpoint::Completions) => Some(Api::Completions),
        Some(Endpoint::Embeddings) => Some(Api::Embeddings),
        Some(Endpoint::Responses) => Some(Api::Responses),
        Some(Endpoint::Models) | None => None,
    };
    let rate_headers = match limits::rate_limit(&state, &parts.headers, api, &body) {
        Ok(rh) => rh,
        Err(mut resp) => {
            resp.body_mut().track(guard);
            return Ok(*resp);
        }
    };

    let latency = hdr_u64(&parts.headers, "x-mock-latency-ms")
        .unwrap_or_else(|| state.latency_ms.load(Ordering::Relaxed));
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let creating = parts.method == Method::POST
        && matches!(batch_route, Some((batch::Route::Batches, _)))
        && fail_code(u64::from(state.fail_status.load(Ordering::Relaxed))).is_none();
    let create = if creating {
        batch::create_controls(&state)
    } else {
        batch::CreateControls::default()
    };
    if create.hang {
        // Never created, never answered (until the client goes away).
        std::future::pending::<()>().await;
    }
    let mut resp = match batch_route {
        Some(route) => batch::api(
            &state,
            &parts.method,
            &parts.headers,
            route,
            parts.uri.query(),
            &body,
        ),
        None => openai::respond(&state, &parts, endpoint, azure.as_ref(), &body, parsed),
    };
    if azure.is_some() && resp.status().is_success() {
        azure::success_headers(resp.headers_mut());
    }
    if let Some(rh) = rate_headers {
        rh.apply(resp.headers_mut());
    }
    if let Some(code) = create.then_fail.and_then(|c| StatusCode::from_u16(c).ok()) {
        if resp.status().is_success() {
            // Created; the answer is lost on the way.
            resp = mock_error(&state, code);
        }
    }
    if create.delay_ms > 0 {
        // The batch exists already; its creator hears of it this much later.
        tokio::time::sleep(Duration::from_millis(create.delay_ms)).await;
    }
    resp.body_mut().track(guard);
    Ok(resp)
}
