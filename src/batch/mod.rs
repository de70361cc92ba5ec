//! Batch API coalescing: ordinary requests answered through the provider's Batch API, at
//! its price, behind a client that simply waits longer.
//!
//! - The request path ([`crate::proxy::batch`]) decides a request is eligible, builds its JSONL line
//!   and hands it to the [`Batcher`] with [`Batcher::submit`], then waits for the [`Reply`] (or for
//!   the client to leave).
//! - The [`Batcher`]'s loop (the Pingora background service [`BatchService`]) gathers lines per
//!   (upstream, endpoint, deployment model) until `max_size` lines or `max_wait`, then starts a job
//!   ([`job`]): upload the JSONL file, create the batch, poll it, download the output and error
//!   files, answer each waiting client with its line's status and body, record spend at
//!   `pricing.batch_discount`, delete the files.
//! - Every failure path ends in [`Reply::Fallback`]: the request path then sends the request through
//!   the synchronous exchange, so no client is left waiting for an answer that will not come. A
//!   batch unfinished after `grace` is cancelled; its finished lines are delivered.
//! - Batch jobs are journaled in `state.database` ([`journal`]) before the upload, and the batch
//!   carries the job's id in its metadata, so a restarted gateway finishes polling every batch
//!   (also one whose creation it never heard back from), records its spend exactly once and
//!   deletes its files.
//!
//! The background work uses its own HTTP client ([`api`], reqwest): it is rare, slow and
//! file-sized, and never shares a path with client requests.

pub mod api;
pub mod job;
pub mod journal;

use crate::config::batch::ModelBatch;
use crate::config::Upstream;
use crate::providers::usage::Usage;
use crate::state::Shared;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// How often the journal is searched for batches whose owner stopped renewing its lease (a
/// gateway that was killed, or one that handed over in a graceful upgrade).
const RECOVERY_SCAN: Duration = Duration::from_secs(2);
/// After a failed attempt to open the journal, the next attempt waits this long.
const JOURNAL_RETRY: Duration = Duration::from_secs(30);
/// Opening the journal gives up after this (an unreachable database must not hold up a job).
const JOURNAL_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A queue whose lines reach this many bytes is submitted at once (OpenAI takes input files of
/// up to 200 MB).
const MAX_FILE_BYTES: usize = 190 << 20;

/// The two endpoints the Batch API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchEndpoint {
    ChatCompletions,
    Embeddings,
}

impl BatchEndpoint {
    /// The `url` of a JSONL line and the batch's `endpoint`, as OpenAI's reference writes them.
    pub fn url(&self) -> &'static str {
        match self {
            BatchEndpoint::ChatCompletions => "/v1/chat/completions",
            BatchEndpoint::Embeddings => "/v1/embeddings",
        }
    }

    /// The same on Azure's dated API (no `/v1`).
    pub fn azure_url(&self) -> &'static str {
        match self {
            BatchEndpoint::ChatCompletions => "/chat/completions",
            BatchEndpoint::Embeddings => "/embeddings",
        }
    }

    /// From either form.
    pub fn from_url(s: &str) -> Option<BatchEndpoint> {
        match s.strip_prefix("/v1").unwrap_or(s) {
            "/chat/completions" => Some(BatchEndpoint::ChatCompletions),
            "/embeddings" => Some(BatchEndpoint::Embeddings),
            _ => None,
        }
    }
}

/// One queue, and so one batch job at a time: lines for the same upstream, endpoint and deployment
/// model (a batch input file names one endpoint and, at OpenAI, one model).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueKey {
    /// The upstream's name (stable across reloads, unlike its index).
    pub upstream: String,
    pub endpoint: BatchEndpoint,
    /// The deployment each line's body names: the deployment's model, or the model's
    /// `batch.deployments` entry for the upstream (Azure's Global Batch deployment).
    pub model: String,
}

/// Where a line goes and under which settings.
pub struct Target {
    pub key: QueueKey,
    /// The upstream as configured when the request arrived (the newest one is used for the job).
    pub upstream: Arc<Upstream>,
    /// The model's `batch` settings (the first line of a queue sets them for its job).
    pub settings: ModelBatch,
}

/// What spend accounting needs of one line, also after a restart (it is journaled).
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// SHA-256 hex of the caller's virtual key; `None` for the master key or without auth.
    pub key_hash: Option<String>,
    /// The request's end user (`user`), whose budget the spend also counts against.
    pub user: Option<String>,
    /// The configured model name (the spend label).
    pub model: String,
    /// The deployment's price at submission, exact; `None`: the model has no price.
    pub price: Option<crate::pricing::Price>,
}

impl Account {
    /// The cost of `usage` at the batch price (the price less its batch discount); `None` when the
    /// model has no price.
    pub fn cost(&self, usage: &Usage) -> Option<crate::pricing::Micros> {
        self.price
            .map(|p| crate::pricing::cost(&p, &usage.tokens(), true))
    }
}

/// One request as a JSONL line.
pub struct Line {
    /// Unique among every line this process submits (random 128 bits).
    pub custom_id: String,
    /// The request body as the upstream receives it synchronously (deployment model, controls
    /// removed, deployment defaults merged).
    pub body: Bytes,
    pub account: Account,
}

/// How the batcher answers a waiting request.
#[derive(Debug)]
pub enum Reply {
    /// The line's answer from the batch output: send it as it is.
    Answer(Answer),
    /// Send the request through the synchronous API (the reason is for logs).
    Fallback(&'static str),
}

#[derive(Debug)]
pub struct Answer {
    /// The status the synchronous API returned for this line inside the batch.
    pub status: u16,
    /// The body it returned, byte for byte as the output file has it.
    pub body: Bytes,
    pub batch_id: Arc<str>,
    pub usage: Option<Usage>,
}

/// A line and the client waiting for it.
pub(crate) struct Waiting {
    pub line: Line,
    pub reply: oneshot::Sender<Reply>,
}

struct Queue {
    deadline: tokio::time::Instant,
    /// Bytes of the lines gathered (the input file's size, about).
    bytes: usize,
    upstream: Arc<Upstream>,
    settings: ModelBatch,
    items: Vec<Waiting>,
}

/// The process's batcher: one per process, in [`Shared`]. The request path submits lines; the
/// background service gathers them into jobs.
pub struct Batcher {
    tx: mpsc::UnboundedSender<(Target, Waiting)>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<(Target, Waiting)>>>,
    /// Set once shutdown began: new lines are answered with a fallback at once.
    closing: AtomicBool,
    /// Tells running jobs that the process is shutting down.
    stopping: watch::Sender<bool>,
    journal: tokio::sync::Mutex<JournalSlot>,
    /// This process's identity in the journal (who holds a batch's lease).
    pub(crate) owner: String,
    stats: Mutex<Stats>,
    /// Lines gathered and not yet submitted.
    queued: AtomicUsize,
    /// Jobs submitted and not finished (recovered ones included).
    active: AtomicUsize,
    /// A recovery scan is running.
    scanning: AtomicBool,
    /// Jobs (journal job ids) this process works on now: never claimed from the journal by its own
    /// scans, even when a slow poll let their lease run out.
    driving: Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
struct JournalSlot {
    journal: Option<Arc<journal::Journal>>,
    last_failure: Option<Instant>,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher::new()
    }
}

impl Batcher {
    pub fn new() -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stopping, _) = watch::channel(false);
        let owner = format!("{:016x}-{}", rand::random::<u64>(), std::process::id());
        Batcher {
            tx,
            rx: Mutex::new(Some(rx)),
            closing: AtomicBool::new(false),
            stopping,
            journal: tokio::sync::Mutex::new(JournalSlot::default()),
            owner,
            stats: Mutex::new(Stats::default()),
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            scanning: AtomicBool::new(false),
            driving: Mutex::new(Default::default()),
        }
    }

    /// Hand a line to the batcher; the receiver gets its [`Reply`]. Dropping the receiver (the
    /// client left) removes the line from delivery; if it was not submitted yet, from the batch.
    pub fn submit(&self, target: Target, line: Line) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting { line, reply: tx };
        if self.closing.load(Ordering::Acquire) {
            let _ = waiting.reply.send(Reply::Fallback("shutting_down"));
            return rx;
        }
        if let Err(mpsc::error::SendError((_, w))) = self.tx.send((target, waiting)) {
            let _ = w.reply.send(Reply::Fallback("shutting_down"));
        }
        rx
    }

    /// The journal, opened on first use from the current config's `state.database` (a failed
    /// attempt is retried after [`JOURNAL_RETRY`]); `None` while it cannot be opened.
    pub(crate) async fn journal(&self, shared: &Shared) -> Option<Arc<journal::Journal>> {
        let mut slot = self.journal.lock().await;
        if let Some(j) = &slot.journal {
            return Some(j.clone());
        }
        if slot
            .last_failure
            .is_some_and(|t| t.elapsed() < JOURNAL_RETRY)
        {
            return None;
        }
        let url = shared
            .state
            .load()
            .config
            .state
            .database
            .expose()
            .to_string();
        let opened = tokio::time::timeout(JOURNAL_OPEN_TIMEOUT, journal::Journal::open(&url))
            .await
            .unwrap_or_else(|_| Err(journal::JournalError("opening timed out".into())));
        match opened {
            Ok(j) => {
                let j = Arc::new(j);
                slot.journal = Some(j.clone());
                Some(j)
            }
            Err(e) => {
                log::error!(
                    "batch journal in state.database ({}): {e}; submitted batches are not \
                     journaled (a restart would not finish them) until it opens",
                    crate::config::secret::redact_url(&url)
                );
                slot.last_failure = Some(Instant::now());
                None
            }
        }
    }

    /// The background loop, until shutdown: gather lines into queues, submit full or due queues,
    /// look for journaled batches to recover.
    pub async fn run(shared: Arc<Shared>, mut shutdown: ShutdownWatch) {
        let me = &shared.batcher;
        let Some(mut rx) = me.rx.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        {
            let cfg = shared.state.load().config.clone();
            // The database is opened when something may need it: batching is on, or the keys
            // database is in use anyway (batches journaled before batching was turned off).
            if cfg.models.iter().any(|m| m.batch.enabled) || cfg.server.master_key.is_some() {
                me.journal(&shared).await;
            }
        }
        let mut queues: HashMap<QueueKey, Queue> = HashMap::new();
        let mut scan = tokio::time::interval(RECOVERY_SCAN);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = queues.values().map(|q| q.deadline).min();
            tokio::select! {
                got = rx.recv() => match got {
                    Some((target, w)) => me.gather(&shared, &mut queues, target, w),
                    None => break,
                },
                _ = sleep_until(next) => {
                    let now = tokio::time::Instant::now();
                    let due: Vec<QueueKey> = queues
                        .iter()
                        .filter(|(_, q)| q.deadline <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in due {
                        if let Some(q) = queues.remove(&key) {
                            me.start_job(&shared, key, q);
                        }
                    }
                }
                _ = scan.tick() => me.scan(&shared),
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Shutdown: nothing new is gathered; what was not submitted goes synchronously now, within
        // the grace period, and running jobs release their clients the same way.
        me.closing.store(true, Ordering::Release);
        rx.close();
        let _ = me.stopping.send(true);
        let mut released = 0;
        for (_, q) in queues.drain() {
            for w in q.items {
                released += 1;
                let _ = w.reply.send(Reply::Fallback("shutting_down"));
            }
        }
        while let Ok((_, w)) = rx.try_recv() {
            released += 1;
            let _ = w.reply.send(Reply::Fallback("shutting_down"));
        }
        me.queued.store(0, Ordering::Relaxed);
        if released > 0 {
            log::info!(
                "shutdown: {released} request(s) gathered for batching go through the synchronous API"
            );
        }
    }

    fn gather(
        &self,
        shared: &Arc<Shared>,
        queues: &mut HashMap<QueueKey, Queue>,
        target: Target,
        w: Waiting,
    ) {
        let key = target.key;
        let q = queues.entry(key.clone()).or_insert_with(|| Queue {
            deadline: tokio::time::Instant::now() + target.settings.max_wait,
            upstream: target.upstream.clone(),
            settings: target.settings,
            items: Vec::new(),
            bytes: 0,
        });
        q.upstream = target.upstream;
        q.bytes += w.line.body.len() + w.line.custom_id.len() + 64;
        q.items.push(w);
        self.queued.fetch_add(1, Ordering::Relaxed);
        if q.items.len() >= q.settings.max_size || q.bytes >= MAX_FILE_BYTES {
            if let Some(q) = queues.remove(&key) {
                self.start_job(shared, key, q);
            }
        }
    }

    fn start_job(&self, shared: &Arc<Shared>, key: QueueKey, q: Queue) {
        let n = q.items.len();
        self.queued.fetch_sub(n, Ordering::Relaxed);
        // Clients that left while the queue filled are not batched at all.
        let items: Vec<Waiting> = q
            .items
            .into_iter()
            .filter(|w| !w.reply.is_closed())
            .collect();
        if items.is_empty() {
            return;
        }
        let job = job::Live {
            key,
            upstream: q.upstream,
            settings: q.settings,
            items,
        };
        tokio::spawn(job::run_live(
            shared.clone(),
            job,
            self.stopping.subscribe(),
        ));
    }

    /// Start a recovery scan unless one is running: batches journaled as active whose lease ran
    /// out are claimed and finished by this process.
    fn scan(&self, shared: &Arc<Shared>) {
        if self.scanning.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let journal = {
                let slot = shared.batcher.journal.lock().await;
                slot.journal.clone()
            };
            if let Some(j) = journal {
                let driving = shared.batcher.driving_now();
                match j.claim(&shared.batcher.owner, now_ms(), &driving).await {
                    Ok(claimed) => {
                        for rec in claimed {
                            match &rec.batch_id {
                                Some(b) => log::info!(
                                    "batch {b}: journaled as unfinished by a previous gateway; \
                                     polling it to completion"
                                ),
                                None => log::info!(
                                    "batch job {}: a previous gateway stopped while creating its \
                                     batch; looking for the batch at the upstream",
                                    rec.job_id
                                ),
                            }
                            tokio::spawn(job::run_recovered(
                                shared.clone(),
                                rec,
                                shared.batcher.stopping.subscribe(),
                            ));
                        }
                    }
                    Err(e) => log::warn!("batch journal: recovery scan failed: {e}"),
                }
            }
            shared.batcher.scanning.store(false, Ordering::Release);
        });
    }

    fn driving_now(&self) -> std::collections::HashSet<String> {
        self.driving.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Count a finished job for `/stats` (`ok`: the batch completed).
    pub(crate) fn record_job(&self, ok: bool, ms: f64, lines: usize) {
        if let Ok(mut s) = self.stats.lock() {
            s.add(ok, ms, lines);
        }
    }

    /// The `/stats` `batches` section (the documented shape, plus requests per batch and what is
    /// pending now).
    pub fn stats_json(&self) -> Value {
        let mut v = match self.stats.lock() {
            Ok(s) => s.json(),
            Err(_) => json!({}),
        };
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "queued_requests".into(),
                json!(self.queued.load(Ordering::Relaxed)),
            );
            m.insert(
                "active_jobs".into(),
                json!(self.active.load(Ordering::Relaxed)),
            );
        }
        v
    }
}

/// Marks a job (by its journal job id) as worked on by this process for as long as it lives.
pub(crate) struct Driving(Arc<Shared>, String);

impl Driving {
    pub(crate) fn new(shared: &Arc<Shared>, job_id: &str) -> Self {
        if let Ok(mut g) = shared.batcher.driving.lock() {
            g.insert(job_id.to_string());
        }
        Driving(shared.clone(), job_id.to_string())
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        if let Ok(mut g) = self.0.batcher.driving.lock() {
            g.remove(&self.1);
        }
    }
}

/// Counts a running job in `active` for as long as it lives.
pub(crate) struct ActiveJob(Arc<Shared>);

impl ActiveJob {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.batcher.active.fetch_add(1, Ordering::Relaxed);
        ActiveJob(shared.clone())
    }
}

impl Drop for ActiveJob {
    fn drop(&mut self) {
        self.0.batcher.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Batch durations kept for the percentiles.
const RECENT: usize = 1024;

/// Batch jobs since the process started: counts and the latency (creation to final status) of the
/// most recent ones.
struct Stats {
    jobs: crate::metrics::stats::Counts,
    lines: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            jobs: crate::metrics::stats::Counts::with_capacity(RECENT),
            lines: 0,
        }
    }
}

impl Stats {
    fn add(&mut self, ok: bool, ms: f64, lines: usize) {
        self.jobs.add(ok, ms);
        self.lines += lines as u64;
    }

    /// The documented shape (the requests' one) plus `requests_per_batch`.
    fn json(&self) -> Value {
        let mut v = self.jobs.json();
        let per_batch = match self.jobs.total() {
            0 => 0.0,
            n => ((self.lines as f64 / n as f64) * 1000.0).round() / 1000.0,
        };
        v["requests_per_batch"] = json!(per_batch);
        v
    }
}

/// The batcher as a Pingora background service.
pub struct BatchService {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for BatchService {
    async fn start(&self, shutdown: ShutdownWatch) {
        Batcher::run(self.shared.clone(), shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_shape() {
        let mut s = Stats::default();
        s.add(true, 100.0, 200);
        s.add(false, 300.0, 100);
        let v = s.json();
        assert_eq!(v["total"], 2);
        assert_eq!(v["successful"], 1);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["avg_time_ms"], 200.0);
        assert_eq!(v["requests_per_batch"], 150.0);
        assert_eq!(v["p99_time_ms"], 300.0);
    }

    #[test]
    fn account_cost_uses_the_discount() {
        use crate::pricing::{Micros, PerMtok, Ppm, Price};
        let a = Account {
            key_hash: None,
            user: None,
            model: "m".into(),
            price: Some(Price {
                input: PerMtok(2_500_000),
                cached_input: PerMtok(1_250_000),
                cache_write: PerMtok(2_500_000),
                output: PerMtok(10_000_000),
                batch_discount: Ppm(500_000),
            }),
        };
        let mut u = Usage::new(1_000_000, 100_000);
        assert_eq!(a.cost(&u), Some(Micros(1_750_000)));
        // Cached prompt tokens at the cached rate, discounted too.
        u.cached_tokens = 400_000;
        assert_eq!(a.cost(&u), Some(Micros(1_500_000)));
        assert_eq!(Account { price: None, ..a }.cost(&u), None);
    }
}
