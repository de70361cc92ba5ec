//! `RequestCtx`: everything one request carries through the phases — the config snapshot it runs
//! on (loaded once, when the request starts), who is calling, what it asked for, the exchange's
//! working state, and its [`Outcome`], which observation reads at the end.

use crate::providers::usage::{Usage, UsageScanner};
use crate::state::State;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A passthrough request handed to Pingora's proxy loop.
pub struct Passthrough {
    pub route: usize,
    pub upstream: usize,
    /// Path (and query) sent upstream.
    pub path: String,
    pub tried: Vec<SocketAddr>,
    pub scanner: Box<UsageScanner>,
    /// Request body bytes still allowed (`server.max_request_body`), counted as the body streams.
    pub body_left: usize,
}

/// Pingora holds it boxed (`proxy::Ctx`): its connection future keeps three copies of the context
/// and moves it per request, so its size costs one allocation, not copies.
pub struct RequestCtx {
    /// The config snapshot this request runs on, from start to end.
    pub state: Arc<State>,
    pub start: Instant,
    pub request_id: String,
    /// Which configured listener accepted the connection.
    pub listener: usize,
    /// Who is calling (with `server.master_key` set).
    pub caller: Caller,
    /// A stable identity of the caller's API key (a hash; never the key).
    pub key_id: Option<Arc<str>>,
    /// Metric `path` label: a route template, never the raw URL.
    pub path_label: &'static str,
    /// The passthrough route matched by the path (set even when the request is then refused).
    pub route: Option<usize>,
    pub passthrough: Option<Passthrough>,
    /// The model being served (after fallbacks: the one that answered) and its upstream.
    pub model: Option<usize>,
    pub upstream: Option<usize>,
    /// The deployment (index in the model's `deployments`) of the attempt that answered.
    pub deployment: Option<usize>,
    /// The scheduler's admission of the attempt that answered (for feedback and reconciliation).
    pub admission: Option<Admission>,
    /// Time spent waiting in scheduler queues, all attempts together.
    pub queue_wait: Duration,
    /// Recording the answer for the response cache (a cacheable miss).
    pub cache_record: Option<crate::cache::Recorder>,
    /// Batch API coalescing: the batch that answered, or how long the request waited for one.
    pub batch: super::batch::BatchState,
    /// The request body, kept only when `tracing.include_content` is on.
    pub traced_body: Option<bytes::Bytes>,
    /// The model endpoint asked for (`gen_ai.operation.name`).
    pub endpoint: Option<crate::route::Endpoint>,
    /// With tracing on: the last bytes of the answer sent to the client (the whole of a small one),
    /// for the span's response model, finish reasons and (with `include_content`) output.
    pub traced_answer: Option<Box<UsageScanner>>,
    /// The key, team and end user the request is governed as (budgets, spend, the spend log).
    pub governed: crate::keys::Governed,
    /// The token budgets charged at admission (key, team, end user), settled with the real usage.
    pub rates_charged: crate::keys::admit::Charged,
    pub outcome: Outcome,
}

/// What happened, for metrics, the access log, the span and spend.
#[derive(Default)]
pub struct Outcome {
    /// The status sent to the client (0: none was sent).
    pub status: u16,
    pub error: Option<ErrorKind>,
    pub usage: Option<Metered>,
    /// When the first byte of the answer reached the client.
    pub first_byte: Option<Instant>,
    /// `x-llmproxy-cache` of the answer.
    pub cache: Option<CacheOutcome>,
}

/// Why a request did not end well, as counted in `llmproxy_http_request_errors_total{error}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The gateway refused or failed it: the error's code (`rate_limited`, `upstream_timeout`, ...).
    Gateway(&'static str),
    /// The client went away before the answer was complete.
    ClientClosed,
    /// The client stopped reading the answer and the request's time limit passed.
    ClientTimeout,
    /// The upstream broke off after the first byte.
    UpstreamStream,
    /// A key-management call failed.
    KeyApi,
}

impl ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Gateway(code) => code,
            ErrorKind::ClientClosed => "client_closed",
            ErrorKind::ClientTimeout => "client_timeout",
            ErrorKind::UpstreamStream => "upstream_stream_error",
            ErrorKind::KeyApi => "key_api",
        }
    }
}

/// The response cache's part in an answer (`x-llmproxy-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Bypass,
}

impl CacheOutcome {
    /// The header value and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

/// An answer's token usage: as the upstream reported it, or the gateway's own estimate (some
/// self-hosted servers report none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metered {
    Reported(Usage),
    Estimated(Usage),
}

impl Metered {
    pub fn usage(&self) -> Usage {
        match self {
            Metered::Reported(u) | Metered::Estimated(u) => *u,
        }
    }

    pub fn estimated(&self) -> bool {
        matches!(self, Metered::Estimated(_))
    }
}

impl RequestCtx {
    /// A request starting now on `state`.
    pub fn new(state: Arc<State>) -> RequestCtx {
        RequestCtx {
            state,
            start: Instant::now(),
            request_id: String::new(),
            listener: 0,
            caller: Caller::Open,
            key_id: None,
            path_label: "other",
            route: None,
            passthrough: None,
            model: None,
            upstream: None,
            deployment: None,
            admission: None,
            queue_wait: Duration::ZERO,
            cache_record: None,
            batch: Default::default(),
            traced_body: None,
            endpoint: None,
            traced_answer: None,
            governed: Default::default(),
            rates_charged: Default::default(),
            outcome: Outcome::default(),
        }
    }

    /// The listener that accepted the request.
    pub fn listener(&self) -> &crate::config::Listener {
        let listeners = &self.state.config.server.listeners;
        &listeners[self.listener.min(listeners.len().saturating_sub(1))]
    }

    /// Record the answer's usage as the upstream reported it.
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        self.outcome.usage = usage.map(Metered::Reported);
    }

    /// Keep `bytes` of the answer for the span (with tracing on).
    pub fn trace_answer(&mut self, bytes: &[u8]) {
        if let Some(t) = self.traced_answer.as_mut() {
            t.feed(bytes);
        }
    }

    /// Count the request as failed with `kind`.
    pub fn fail(&mut self, kind: ErrorKind) {
        self.outcome.error = Some(kind);
    }

    /// The caller's key identity: the virtual key's id, or else a hash of the key it presented
    /// (priority fairness and `cache.scope: key` without virtual keys).
    pub fn key_identity(&mut self, headers: &http::HeaderMap) -> Option<Arc<str>> {
        if self.key_id.is_none() {
            self.key_id = ["authorization", "x-api-key", "api-key"]
                .iter()
                .find_map(|k| headers.get(*k))
                .map(|v| crate::sched::key_identity(v.as_bytes()));
        }
        self.key_id.clone()
    }
}

/// The authenticated caller.
#[derive(Clone, Default)]
pub enum Caller {
    /// Auth is off (no master key configured).
    #[default]
    Open,
    Master,
    Key(Arc<crate::keys::KeyEntry>),
}

impl Caller {
    pub fn key(&self) -> Option<&crate::keys::KeyEntry> {
        match self {
            Caller::Key(k) => Some(k),
            _ => None,
        }
    }

    /// The virtual key, shared.
    pub fn key_entry(&self) -> Option<&Arc<crate::keys::KeyEntry>> {
        match self {
            Caller::Key(k) => Some(k),
            _ => None,
        }
    }

    /// Whether the caller may use `model` (by name) requested as `requested`.
    pub fn allows(&self, model: &str, requested: &str) -> bool {
        match self {
            Caller::Key(k) => k.allows_model(model) || k.allows_model(requested),
            _ => true,
        }
    }
}

/// What the scheduler charged a request's current attempt.
pub struct Admission {
    pub sched: Arc<crate::sched::ModelSched>,
    pub deployment: usize,
    pub estimate: crate::sched::tokens::Estimate,
    /// When the scheduler admitted it (a refund of its over-estimate is due only while its window
    /// still counts it).
    pub at: std::time::Instant,
}

/// A request id: the client's `x-request-id` when it is sane, else 128 random bits in hex.
pub fn request_id(client: Option<&[u8]>) -> String {
    if let Some(v) = client {
        if !v.is_empty()
            && v.len() <= 128
            && v.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return String::from_utf8_lossy(v).into_owned();
        }
    }
    let n: u128 = rand::random();
    format!("{n:032x}")
}
