//! `RequestCtx`: everything one request carries through the phases.

use crate::providers::usage::{Usage, UsageScanner};
use crate::state::State;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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

pub struct RequestCtx {
    pub start: Instant,
    /// The config snapshot this request runs on, from start to end.
    pub state: Option<Arc<State>>,
    pub request_id: String,
    pub listener: usize,
    /// Metric `path` label: a route template, never the raw URL.
    pub path_label: &'static str,
    pub model: Option<usize>,
    pub upstream: Option<usize>,
    pub status: u16,
    /// Error label for `llmproxy_http_request_errors_total`.
    pub error: Option<&'static str>,
    pub usage: Option<Usage>,
    pub first_byte: Option<Instant>,
    /// The passthrough route matched by the path (set even when the request is then refused).
    pub route: Option<usize>,
    pub passthrough: Option<Passthrough>,
    /// The scheduler's admission of the attempt that answered (for feedback and reconciliation).
    pub admission: Option<Admission>,
    /// Time spent waiting in scheduler queues, all attempts together.
    pub queue_wait: std::time::Duration,
    /// A stable identity of the caller's API key (a hash; never the key).
    pub key_id: Option<std::sync::Arc<str>>,
    /// The gateway asked the upstream for stream usage the client did not ask for: remove the
    /// usage event from what the client receives.
    pub strip_usage: bool,
    /// The upstream reported no usage (some self-hosted servers): `usage` is the gateway's own
    /// tiktoken estimate, marked so in the access log.
    pub usage_estimated: bool,
    /// The answer's text, kept to estimate its tokens when the upstream reports no usage.
    pub estimate_text: Option<String>,
    /// Recording the answer for the response cache (a cacheable miss).
    pub cache_record: Option<crate::cache::Recorder>,
    /// `x-llmproxy-cache` of the answer: hit | miss | bypass.
    pub cache: Option<&'static str>,
    /// The request body, kept only when `tracing.include_content` is on.
    pub traced_body: Option<bytes::Bytes>,
    /// Who is calling (with `server.master_key` set).
    pub caller: Caller,
    /// Batch API coalescing: the batch that answered, or how long the request waited for one.
    pub batch: super::batch::BatchState,
}

impl RequestCtx {
    /// The caller's key identity: the virtual key's id, or else a hash of the key it presented
    /// (priority fairness and `cache.scope: key` without virtual keys).
    pub fn key_identity(&mut self, headers: &http::HeaderMap) -> Option<std::sync::Arc<str>> {
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
    Key(std::sync::Arc<crate::keys::KeyEntry>),
}

impl Caller {
    pub fn key(&self) -> Option<&crate::keys::KeyEntry> {
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
    pub sched: std::sync::Arc<crate::sched::ModelSched>,
    pub deployment: usize,
    pub estimate: crate::sched::tokens::Estimate,
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            state: None,
            request_id: String::new(),
            listener: 0,
            path_label: "other",
            model: None,
            upstream: None,
            status: 0,
            error: None,
            usage: None,
            first_byte: None,
            route: None,
            passthrough: None,
            admission: None,
            queue_wait: std::time::Duration::ZERO,
            key_id: None,
            strip_usage: false,
            usage_estimated: false,
            estimate_text: None,
            cache_record: None,
            cache: None,
            traced_body: None,
            caller: Caller::Open,
            batch: Default::default(),
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
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
