//! The spend log: one row per request in `state.database`, queued off the request path and written
//! in batches by a background task, with retention.
//!
//! The request path only calls [`SpendLog::push`] (a non-blocking send into a bounded queue). The
//! writer takes whatever is queued, up to [`BATCH`] rows, and writes it in one statement or
//! transaction; under load batches grow by themselves, so the writer keeps up with the request rate
//! as long as one batch write takes less than the time the next batch takes to arrive. A database
//! that is down (or too slow) fills the queue, and rows beyond `keys.spend_log_queue` are dropped and
//! counted (`llmproxy_spend_log_rows_total{result="dropped"}`): memory never grows with the backlog.
//! Budgets do not depend on the spend log (spend is kept apart, see [`super::Keys::record_spend`]).

use super::store::Store;
use crate::pricing::Micros;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Rows written per batch at most.
pub const BATCH: usize = 1000;
/// How long the writer gathers rows after the first of a batch before writing them. Every commit
/// writes the pages it touched to SQLite's WAL (checksummed) or makes a PostgreSQL round trip: a
/// batch per arrival cost ~10k instructions per request in commits at a few rows per batch
/// (callgrind); gathering makes it one commit per interval. A row is in the database within this
/// much of its request's end (plus the write).
pub const LINGER: Duration = Duration::from_millis(200);
/// The default bound of the queue (`keys.spend_log_queue`).
pub const DEFAULT_QUEUE: usize = 100_000;
/// The default retention (`keys.spend_log_retention`): 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86400);
/// How often rows past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One request's row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendLogRow {
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The key's, its team's and the end user's ids are shared with the request (no copy per row).
    pub key_id: Option<Arc<str>>,
    pub team_id: Option<Arc<str>>,
    /// The request's `user` (end user), known or not.
    pub end_user: Option<Arc<str>>,
    /// The configured model name.
    pub model: String,
    /// The upstream that answered.
    pub deployment: Option<String>,
    /// Every input token (cached and cache writes included).
    pub prompt_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Every output token (reasoning included).
    pub completion_tokens: u64,
    /// The reasoning part of the output.
    pub reasoning_tokens: u64,
    pub cost: Micros,
    /// `false` when the model had no price (the cost is then 0 and the request is counted as
    /// unpriced).
    pub priced: bool,
    /// Answered from the gateway's response cache (at no cost).
    pub cache_hit: bool,
    /// The Batch API job that answered.
    pub batch_id: Option<String>,
    /// The HTTP status sent to the client.
    pub status: u16,
    /// Unix milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
}

impl SpendLogRow {
    /// The JSON the API prints (LiteLLM's field names where it has them).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "request_id": self.request_id,
            "key_id": self.key_id.as_deref(),
            "team_id": self.team_id.as_deref(),
            "user": self.end_user.as_deref(),
            "end_user": self.end_user.as_deref(),
            "model": self.model,
            "deployment": self.deployment,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
            "spend": self.cost.as_usd_f64(),
            "spend_micros": self.cost.0,
            "priced": self.priced,
            "cache_hit": self.cache_hit,
            "batch_id": self.batch_id,
            "status": self.status,
            "startTime": super::units::iso8601_ms(self.start_ms),
            "endTime": super::units::iso8601_ms(self.end_ms),
        })
    }
}

/// The queue and its writer.
pub struct SpendLog {
    store: Arc<dyn Store>,
    tx: mpsc::Sender<SpendLogRow>,
    rx: tokio::sync::Mutex<mpsc::Receiver<SpendLogRow>>,
    capacity: usize,
    rows: IntCounterVec,
    depth: IntGauge,
}

impl SpendLog {
    /// A queue of at most `capacity` rows writing into `store`.
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> prometheus::Result<SpendLog> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let rows = IntCounterVec::new(
            Opts::new(
                "llmproxy_spend_log_rows_total",
                "Spend-log rows by result (written; dropped: the queue was full or the database down at shutdown)",
            ),
            &["result"],
        )?;
        let depth = IntGauge::new(
            "llmproxy_spend_log_queue_depth",
            "Spend-log rows waiting to be written",
        )?;
        Ok(SpendLog {
            store,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            capacity,
            rows,
            depth,
        })
    }

    /// Registers the writer's metrics.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.rows.clone()))?;
        registry.register(Box::new(self.depth.clone()))?;
        // Export both results from the start, at 0.
        self.rows.with_label_values(&["written"]);
        self.rows.with_label_values(&["dropped"]);
        Ok(())
    }

    /// Queues a row (never waits); `false` when the queue was full and the row was dropped.
    pub fn push(&self, row: SpendLogRow) -> bool {
        match self.tx.try_send(row) {
            Ok(()) => true,
            Err(_) => {
                self.rows.with_label_values(&["dropped"]).inc();
                false
            }
        }
    }

    /// Rows waiting to be written.
    pub fn depth(&self) -> usize {
        let d = self.capacity.saturating_sub(self.tx.capacity());
        self.depth.set(d as i64);
        d
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.rows.with_label_values(&["written"]).get()
    }

    /// Rows dropped so far (queue full).
    pub fn dropped(&self) -> u64 {
        self.rows.with_label_values(&["dropped"]).get()
    }

    /// Writes one batch, retrying with backoff until it is written or `give_up` says so.
    async fn write(&self, buf: &mut Vec<SpendLogRow>, give_up: impl Fn() -> bool) {
        // Shared with the store's blocking writer thread, which binds the rows' text in place.
        let rows: Arc<[SpendLogRow]> = buf.drain(..).collect();
        let mut backoff = Duration::from_millis(100);
        let mut last_log: Option<Instant> = None;
        loop {
            match self.store.insert_spend_logs(rows.clone()).await {
                Ok(()) => {
                    self.rows
                        .with_label_values(&["written"])
                        .inc_by(rows.len() as u64);
                    return;
                }
                Err(e) => {
                    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        last_log = Some(Instant::now());
                        log::error!(
                            "spend log: writing {} rows failed ({e}); retrying (rows beyond the queue bound are dropped)",
                            rows.len()
                        );
                    }
                    if give_up() {
                        self.rows
                            .with_label_values(&["dropped"])
                            .inc_by(rows.len() as u64);
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Writes everything queued now (tests, shutdown); one attempt per batch.
    pub async fn drain(&self) {
        let mut rx = self.rx.lock().await;
        let mut buf = Vec::with_capacity(BATCH);
        while let Ok(row) = rx.try_recv() {
            buf.push(row);
            if buf.len() == BATCH {
                self.write(&mut buf, || true).await;
            }
        }
        if !buf.is_empty() {
            self.write(&mut buf, || true).await;
        }
        self.depth();
    }

    /// The writer: batches queued rows into the database and deletes rows older than `retention`
    /// (hourly), until `shutdown` turns true; then writes what is still queued.
    pub async fn run(
        &self,
        retention: Option<Duration>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut rx = self.rx.lock().await;
        let mut buf = Vec::with_capacity(BATCH);
        let mut next_prune = tokio::time::Instant::now();
        loop {
            if let Some(keep) = retention {
                if tokio::time::Instant::now() >= next_prune {
                    next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
                    self.prune(keep).await;
                }
            }
            // Idle (`write` empties the buffer): the first rows wake the writer, one wake-up per
            // batch; `recv_many` takes what is queued, up to a batch.
            tokio::select! {
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next_prune), if retention.is_some() => continue,
            }
            // Gather the rest of the batch (see LINGER) without listening to the queue: rows that
            // arrive meanwhile wake nobody (a wake-up per row cost a context switch per request on a
            // busy gateway). A full batch, or a backlog, is written at once.
            if buf.len() < BATCH && !*shutdown.borrow() {
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    _ = shutdown.changed() => {}
                }
                take_queued(&mut rx, &mut buf);
            }
            self.depth();
            let stop = shutdown.clone();
            self.write(&mut buf, || *stop.borrow()).await;
            if *shutdown.borrow() {
                break;
            }
        }
        drop(rx);
        self.drain().await;
    }

    async fn prune(&self, keep: Duration) {
        let before = super::audit::now_ms().saturating_sub(keep.as_millis() as i64);
        match self.store.prune_spend_logs(before).await {
            Ok(0) => {}
            Ok(n) => log::info!("spend log: deleted {n} rows older than the retention"),
            Err(e) => log::warn!("spend log: deleting old rows failed: {e}"),
        }
    }
}

/// Moves what is queued now into `buf`, up to a batch, without waiting.
fn take_queued(rx: &mut mpsc::Receiver<SpendLogRow>, buf: &mut Vec<SpendLogRow>) {
    while buf.len() < BATCH {
        match rx.try_recv() {
            Ok(row) => buf.push(row),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> SpendLogRow {
        SpendLogRow {
            request_id: format!("r{i}"),
            model: "m".into(),
            cost: Micros(i as u64),
            priced: true,
            start_ms: 1_000 + i as i64,
            end_ms: 2_000 + i as i64,
            ..SpendLogRow::default()
        }
    }

    /// The writer writes a batch within its linger, and on shutdown everything still queued.
    #[tokio::test]
    async fn the_writer_gathers_batches_and_writes_all_at_shutdown() {
        let store = crate::keys::store::open("sqlite://:memory:").await.unwrap();
        let log = Arc::new(SpendLog::new(store, 100).unwrap());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn({
            let log = log.clone();
            async move { log.run(None, shutdown).await }
        });
        for i in 0..5 {
            log.push(row(i));
        }
        let t = Instant::now();
        while log.written() < 5 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the batch was never written"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 5..8 {
            log.push(row(i));
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer stops at shutdown")
            .unwrap();
        assert_eq!((log.written(), log.dropped(), log.depth()), (8, 0, 0));
    }

    /// A backlog larger than a batch is written whole, in batches, while the writer runs.
    #[tokio::test]
    async fn a_backlog_is_written_in_batches() {
        let store = crate::keys::store::open("sqlite://:memory:").await.unwrap();
        let log = Arc::new(SpendLog::new(store, 10 * BATCH).unwrap());
        for i in 0..(2 * BATCH + BATCH / 2) {
            assert!(log.push(row(i)));
        }
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn({
            let log = log.clone();
            async move { log.run(None, shutdown).await }
        });
        let t = Instant::now();
        while log.written() < (2 * BATCH + BATCH / 2) as u64 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{} written",
                log.written()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        writer.await.unwrap();
        assert_eq!((log.dropped(), log.depth()), (0, 0));
    }

    /// The queue never holds more than its bound: rows beyond it are dropped and counted, and a
    /// drain writes every queued row.
    #[tokio::test]
    async fn the_queue_is_bounded_and_drains() {
        let store = crate::keys::store::open("sqlite://:memory:").await.unwrap();
        let log = SpendLog::new(store.clone(), 100).unwrap();
        for i in 0..130 {
            log.push(row(i));
        }
        assert_eq!(log.depth(), 100);
        assert_eq!(log.dropped(), 30);
        log.drain().await;
        assert_eq!((log.depth(), log.written()), (0, 100));
        let q = crate::keys::store::SpendLogQuery {
            limit: 1000,
            ..Default::default()
        };
        let (rows, total) = store.spend_logs(&q).await.unwrap();
        assert_eq!(total, 100);
        // Newest first, every field as written.
        assert_eq!(rows[0], row(99));
    }
}
