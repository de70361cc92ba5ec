//! One batch job, from the JSONL file to the last answer.
//!
//! Live job: journal it (`creating`, a random job id), build the JSONL (one line per waiting
//! request), upload it (file id journaled), create the batch with `metadata.llmproxy_job` = the
//! job id (batch id journaled), then [`Driver::drive`]: poll every `poll_interval`, cancel after
//! `grace`, and at the final status download the output and error files, mark the journal row
//! done, answer every waiting client with its line (or a fallback), record spend, delete the files.
//! The lease is renewed during the upload and the create too. A create that failed without a clear
//! refusal (a timeout, a 5xx, a dropped connection) may have happened: the batch is looked for by
//! its metadata and, when found, used as if the create had answered.
//!
//! Recovered job (a journaled job whose owner stopped): with a batch id, the same driver with no
//! clients; without one (the owner stopped while creating it), the upstream's batches are listed
//! for its metadata: found → adopted and driven; not found → the create never happened, the input
//! file (if its id was journaled) is deleted and the row is `done` (`not_created`).
//!
//! Which line answers a client, and how:
//! - a line with a response whose status is 2xx, or 4xx other than 429 → [`Reply::Answer`]: exactly
//!   that status and body (what the synchronous API answered inside the batch);
//! - 429 and 5xx lines, lines with only an `error` (e.g. `batch_expired`), lines missing from the
//!   output of a failed, expired or cancelled batch → [`Reply::Fallback`]: the request goes through
//!   the synchronous API, with its retry policy.

use super::api::{ApiError, Batch, BatchApi};
use super::journal::{Journal, Record};
use super::{now_ms, ActiveJob, Answer, Driving, QueueKey, Reply, Waiting};
use crate::config::batch::ModelBatch;
use crate::config::Upstream;
use crate::providers::usage::{find_usage, Usage};
use crate::state::Shared;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// After a cancel, how long clients wait for `cancelled` (OpenAI: "up to 10 minutes") before they
/// go synchronously; the job keeps polling for the spend and the files either way.
const CANCEL_WAIT: Duration = Duration::from_secs(600);
/// A batch with no final status this long after it was created (an upstream unreachable for days)
/// is given up: journaled `abandoned`.
const GIVE_UP: Duration = Duration::from_secs(72 * 3600);
/// JSON nesting accepted in output lines (a response body sits two levels down).
const MAX_DEPTH: usize = 160;

/// A gathered queue, ready to submit.
pub(crate) struct Live {
    pub key: QueueKey,
    pub upstream: Arc<Upstream>,
    pub settings: ModelBatch,
    pub items: Vec<Waiting>,
}

/// One line of the output or error file.
#[derive(Debug, Clone, PartialEq)]
pub enum LineResult {
    Response {
        status: u16,
        body: Bytes,
        usage: Option<Usage>,
    },
    /// An `error` without a response (e.g. `batch_expired`, `batch_cancelled`).
    Error,
}

/// The JSONL input file: `{"custom_id", "method": "POST", "url", "body"}` per line (`url` as the
/// upstream writes it: [`super::api::Surface::line_url`]).
pub fn jsonl<'a>(url: &str, lines: impl Iterator<Item = &'a super::Line>) -> Bytes {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(b"{\"custom_id\":");
        let _ = serde_json::to_writer(&mut out, &l.custom_id);
        out.extend_from_slice(b",\"method\":\"POST\",\"url\":");
        let _ = serde_json::to_writer(&mut out, url);
        out.extend_from_slice(b",\"body\":");
        let start = out.len();
        out.extend_from_slice(&l.body);
        // The body is validated JSON, where a raw CR or LF can only be whitespace between tokens
        // (inside strings they are escaped): blank them so the request stays on one line.
        for b in &mut out[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        out.extend_from_slice(b"}\n");
    }
    Bytes::from(out)
}

/// Parse an output or error file into `results` (a custom_id seen twice keeps its first line:
/// the output file is read first). Bodies are slices of `file`, not copies.
pub fn parse_output(file: &Bytes, results: &mut HashMap<String, LineResult>) {
    use crate::body::scan::top_level;
    for line in file.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let Ok(members) = top_level(line, MAX_DEPTH) else {
            continue;
        };
        let get = |k: &str| members.iter().rev().find(|(m, _)| m == k).map(|(_, v)| *v);
        let Some(custom_id) =
            get("custom_id").and_then(|raw| serde_json::from_str::<String>(raw).ok())
        else {
            continue;
        };
        let result = match get("response").filter(|r| r.trim() != "null") {
            Some(resp) => match top_level(resp.as_bytes(), MAX_DEPTH) {
                Ok(r) => {
                    let get = |k: &str| r.iter().rev().find(|(m, _)| m == k).map(|(_, v)| *v);
                    let status = get("status_code").and_then(|s| s.trim().parse::<u16>().ok());
                    match (status, get("body")) {
                        (Some(status), Some(body)) => LineResult::Response {
                            status,
                            body: file.slice_ref(body.as_bytes()),
                            usage: find_usage(body.as_bytes()),
                        },
                        _ => LineResult::Error,
                    }
                }
                Err(_) => LineResult::Error,
            },
            None => LineResult::Error,
        };
        results.entry(custom_id).or_insert(result);
    }
}

fn count_job(shared: &Shared, status: &str, ms: f64, lines: usize) {
    shared.metrics.batch_jobs.with_label_values(&[status]).inc();
    shared.batcher.record_job(status == "completed", ms, lines);
}

/// A new job id: 128 random bits, hex.
fn new_job_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn ms_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Keeps a job's lease while something slow (an upload, a create, a listing) runs, so no other
/// gateway takes the job over meanwhile.
struct Lease<'a> {
    journal: Option<&'a Journal>,
    job_id: &'a str,
    owner: &'a str,
    lease: Duration,
}

impl Lease<'_> {
    /// Run `fut`, renewing the lease every third of it (noting `status` in the row).
    async fn hold<F: Future>(&self, status: &str, fut: F) -> F::Output {
        let Some(j) = self.journal else {
            return fut.await;
        };
        tokio::pin!(fut);
        let every = (self.lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick() => {
                    let until = now_ms().saturating_add(ms_of(self.lease));
                    match j.renew(self.job_id, self.owner, until, status).await {
                        Ok(true) => {}
                        Ok(false) => {
                            if !warned {
                                warned = true;
                                log::warn!(
                                    "batch job {}: claimed by another gateway while {status} (the \
                                     lease ran out); whoever records the batch first owns it",
                                    self.job_id
                                );
                            }
                        }
                        Err(e) => log::warn!("batch job {}: {e}", self.job_id),
                    }
                }
            }
        }
    }
}

/// Mark a job that has (or will have) no batch `done` with `status`, if this process still owns it.
async fn close(journal: Option<&Journal>, job_id: &str, owner: &str, status: &str) {
    if let Some(j) = journal {
        if let Err(e) = j.finish(job_id, owner, "done", status, now_ms()).await {
            log::warn!("batch job {job_id}: {e}");
        }
    }
}

async fn delete_unused(api: &BatchApi, file_id: &str) {
    if let Err(e) = api.delete_file(file_id).await {
        log::debug!("deleting unused batch input file {file_id}: {e}");
    }
}

/// Submitting failed: every waiting client goes through the synchronous API.
fn submit_failed(shared: &Shared, what: &str, e: &ApiError, started: Instant, items: Vec<Waiting>) {
    log::warn!("batch of {what}: submitting failed ({e}); they go through the synchronous API");
    count_job(
        shared,
        "submit_error",
        started.elapsed().as_secs_f64() * 1000.0,
        items.len(),
    );
    for w in items {
        let _ = w.reply.send(Reply::Fallback("submit_error"));
    }
}

/// Submit a gathered queue and see it through.
pub(crate) async fn run_live(shared: Arc<Shared>, job: Live, stop: watch::Receiver<bool>) {
    let _active = ActiveJob::new(&shared);
    let started = Instant::now();
    let what = format!(
        "{} request(s) for {} {} on {}",
        job.items.len(),
        job.key.model,
        job.key.endpoint.url(),
        job.key.upstream
    );
    let api = match BatchApi::new(job.upstream.clone()) {
        Ok(api) => api,
        Err(e) => return submit_failed(&shared, &what, &e, started, job.items),
    };
    let owner = shared.batcher.owner.clone();
    let url = api.surface().line_url(job.key.endpoint);
    let mut rec = Record {
        job_id: new_job_id(),
        batch_id: None,
        upstream: job.key.upstream.clone(),
        endpoint: url.to_string(),
        model: job.key.model.clone(),
        input_file_id: None,
        lines: job
            .items
            .iter()
            .map(|w| (w.line.custom_id.clone(), w.line.account.clone()))
            .collect(),
        created_ms: now_ms(),
        poll: job.settings.poll_interval,
        grace: job.settings.grace,
    };
    // This process's scans leave the job alone while it runs, whatever its lease.
    let driving = Driving::new(&shared, &rec.job_id);
    let mut journal = shared.batcher.journal(&shared).await;
    if let Some(j) = &journal {
        if let Err(e) = j.insert(&rec, &owner, now_ms()).await {
            log::warn!(
                "batch job {}: {e}; not journaled (a restart would not finish its batch)",
                rec.job_id
            );
            journal = None;
        }
    }
    let job_id = rec.job_id.clone();
    let lease = Lease {
        journal: journal.as_deref(),
        job_id: &job_id,
        owner: &owner,
        lease: rec.lease(),
    };

    let file = jsonl(url, job.items.iter().map(|w| &w.line));
    let file_id = match lease.hold("uploading", api.upload(file, &job_id)).await {
        Ok(id) => id,
        Err(e) => {
            close(journal.as_deref(), &job_id, &owner, "submit_error").await;
            return submit_failed(&shared, &what, &e, started, job.items);
        }
    };
    if let Some(j) = &journal {
        if let Err(e) = j.set_file(&job_id, &file_id).await {
            log::warn!("batch job {job_id}: {e}; its input file {file_id} is not journaled");
        }
    }
    rec.input_file_id = Some(file_id.clone());

    let window = &job.settings.completion_window;
    let created = lease
        .hold("creating", api.create(&file_id, url, window, &job_id))
        .await;
    let batch = match created {
        Ok(b) => b,
        Err(e) if e.is_refusal() => {
            delete_unused(&api, &file_id).await;
            close(journal.as_deref(), &job_id, &owner, "submit_error").await;
            return submit_failed(&shared, &what, &e, started, job.items);
        }
        Err(e) => {
            // No answer is not a no: the batch may have been created. Its metadata tells.
            log::warn!(
                "batch job {job_id}: creating the batch failed ({e}); looking for it at the upstream"
            );
            match lease
                .hold("creating", api.find_job(&job_id, rec.created_ms))
                .await
            {
                Ok(Some(b)) => {
                    log::info!("batch {}: created for job {job_id} after all", b.id);
                    b
                }
                Ok(None) => {
                    delete_unused(&api, &file_id).await;
                    close(journal.as_deref(), &job_id, &owner, "not_created").await;
                    return submit_failed(&shared, &what, &e, started, job.items);
                }
                Err(find) => {
                    // Undecided: the row stays `creating`; once its lease runs out a scan (this
                    // process's or another gateway's) looks again and adopts or closes it.
                    log::warn!(
                        "batch job {job_id}: cannot tell whether its batch was created ({find}); \
                         a recovery scan settles it"
                    );
                    return submit_failed(&shared, &what, &e, started, job.items);
                }
            }
        }
    };
    rec.batch_id = Some(batch.id.clone());
    rec.created_ms = now_ms();
    if rec.input_file_id.is_none() {
        rec.input_file_id = batch.input_file_id.clone();
    }
    let mut owned = true;
    let mut recorded = journal.is_none();
    if let Some(j) = &journal {
        let until = now_ms().saturating_add(ms_of(rec.lease()));
        match j
            .set_batch(
                &job_id,
                &owner,
                &batch.id,
                Some(&file_id),
                rec.created_ms,
                until,
            )
            .await
        {
            Ok(true) => recorded = true,
            Ok(false) => {
                log::warn!(
                    "batch {}: adopted by another gateway while it was being created (the lease \
                     ran out); it records the spend",
                    batch.id
                );
                recorded = true;
                owned = false;
            }
            Err(e) => log::warn!("batch {}: {e}; recorded with the next poll", batch.id),
        }
    }
    log::info!("batch {}: submitted {what}", batch.id);
    let waiting = job
        .items
        .into_iter()
        .map(|w| (w.line.custom_id, w.reply))
        .collect();
    let driver = Driver {
        batch_id: Arc::from(batch.id.as_str()),
        _driving: driving,
        shared,
        api,
        rec,
        journal,
        waiting,
        live: true,
        owned,
        recorded,
    };
    driver.drive(stop, Some(batch)).await;
}

/// Finish a job journaled by a gateway that stopped (claimed by this one).
pub(crate) async fn run_recovered(shared: Arc<Shared>, rec: Record, stop: watch::Receiver<bool>) {
    let _active = ActiveJob::new(&shared);
    let driving = Driving::new(&shared, &rec.job_id);
    let journal = shared.batcher.journal(&shared).await;
    let owner = shared.batcher.owner.clone();
    let what = match &rec.batch_id {
        Some(b) => format!("batch {b}"),
        None => format!("batch job {}", rec.job_id),
    };
    let upstream = shared
        .state
        .load()
        .upstreams
        .iter()
        .find(|p| p.cfg.name == rec.upstream)
        .map(|p| p.cfg.clone());
    let api = match upstream.map(BatchApi::new) {
        Some(Ok(api)) => api,
        other => {
            let why = match other {
                Some(Err(e)) => e.to_string(),
                _ => format!("upstream `{}` is no longer configured", rec.upstream),
            };
            log::warn!("{what}: cannot be finished ({why}); journaled as abandoned");
            if let Some(j) = &journal {
                let _ = j
                    .finish(&rec.job_id, &owner, "abandoned", "unknown", now_ms())
                    .await;
            }
            return;
        }
    };
    let (rec, first) = if rec.batch_id.is_some() {
        (rec, None)
    } else {
        match adopt(&api, journal.as_deref(), &owner, rec).await {
            Some((rec, batch)) => (rec, Some(batch)),
            None => return,
        }
    };
    let Some(batch_id) = rec.batch_id.clone() else {
        return;
    };
    let driver = Driver {
        batch_id: Arc::from(batch_id.as_str()),
        _driving: driving,
        shared,
        api,
        rec,
        journal,
        waiting: HashMap::new(),
        live: false,
        owned: true,
        recorded: true,
    };
    driver.drive(stop, first).await;
}

/// A `creating` job whose owner stopped: its batch (found by its metadata) with the record
/// updated, or `None` when there is nothing to drive — the create never happened (input file
/// deleted, row `done` / `not_created`), another gateway adopted it, or it cannot be told yet (the
/// row is left to a later scan, until [`GIVE_UP`]).
async fn adopt(
    api: &BatchApi,
    journal: Option<&Journal>,
    owner: &str,
    mut rec: Record,
) -> Option<(Record, Batch)> {
    let job_id = rec.job_id.clone();
    let lease = Lease {
        journal,
        job_id: &job_id,
        owner,
        lease: rec.lease(),
    };
    match lease
        .hold("creating", api.find_job(&job_id, rec.created_ms))
        .await
    {
        Ok(Some(b)) => {
            let created_ms = b
                .created_at
                .map_or(rec.created_ms, |s| s.saturating_mul(1000));
            let until = now_ms().saturating_add(ms_of(rec.lease()));
            if let Some(j) = journal {
                let file = rec
                    .input_file_id
                    .clone()
                    .or_else(|| b.input_file_id.clone());
                match j
                    .set_batch(&job_id, owner, &b.id, file.as_deref(), created_ms, until)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        log::info!("batch {}: adopted by another gateway", b.id);
                        return None;
                    }
                    Err(e) => {
                        log::warn!("batch {}: {e}; adopting it is retried", b.id);
                        return None;
                    }
                }
            }
            log::info!(
                "batch {}: created for job {job_id} by a gateway that stopped before journaling \
                 it; found by its metadata, polling it to completion",
                b.id
            );
            rec.batch_id = Some(b.id.clone());
            rec.input_file_id = rec.input_file_id.or_else(|| b.input_file_id.clone());
            rec.created_ms = created_ms;
            Some((rec, b))
        }
        Ok(None) => {
            if let Some(f) = &rec.input_file_id {
                delete_unused(api, f).await;
            }
            close(journal, &job_id, owner, "not_created").await;
            log::info!(
                "batch job {job_id}: its gateway stopped before creating the batch (no batch \
                 carries its metadata){}",
                if rec.input_file_id.is_some() {
                    "; its input file is deleted"
                } else {
                    ""
                }
            );
            None
        }
        Err(e) => {
            let age = Duration::from_millis(now_ms().saturating_sub(rec.created_ms).max(0) as u64);
            let unsupported = matches!(e.status, Some(400 | 404 | 405 | 501));
            if unsupported || age >= GIVE_UP {
                log::error!(
                    "batch job {job_id}: its gateway stopped while creating the batch, and listing \
                     the upstream's batches to find it failed ({e}); journaled as abandoned (a \
                     batch it created, if any, is not polled, charged or cleaned up)"
                );
                if let Some(j) = journal {
                    let _ = j
                        .finish(&job_id, owner, "abandoned", "unresolved", now_ms())
                        .await;
                }
            } else {
                log::warn!(
                    "batch job {job_id}: listing the upstream's batches failed ({e}); retried \
                     when its lease runs out"
                );
            }
            None
        }
    }
}

/// Polls one batch to its end and settles it.
struct Driver {
    shared: Arc<Shared>,
    api: BatchApi,
    rec: Record,
    batch_id: Arc<str>,
    journal: Option<Arc<Journal>>,
    /// custom_id → the waiting client (empty for a recovered batch).
    waiting: HashMap<String, oneshot::Sender<Reply>>,
    /// Submitted by this process (clients may wait); `false`: recovered.
    live: bool,
    /// This process owns the journal row (and so the accounting).
    owned: bool,
    /// The batch id is in the journal (else recording it is retried with each poll).
    recorded: bool,
    _driving: Driving,
}

impl Driver {
    fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.rec.created_ms).max(0) as u64)
    }

    fn release_all(&mut self, why: &'static str) {
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Reply::Fallback(why));
        }
    }

    async fn drive(mut self, mut stop: watch::Receiver<bool>, first: Option<Batch>) {
        let id = self.batch_id.clone();
        let job = self.rec.job_id.clone();
        let owner = self.shared.batcher.owner.clone();
        let mut last = first;
        let mut owned = self.owned;
        let mut poll_errors = 0u32;
        let mut cancel_started: Option<Instant> = None;
        let mut cancelled = false;
        loop {
            if last.as_ref().is_some_and(Batch::is_final) {
                break;
            }
            if *stop.borrow() {
                return self.stopped(owned).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.rec.poll) => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        return self.stopped(owned).await;
                    }
                }
            }
            match self.api.get(&id).await {
                Ok(b) => {
                    poll_errors = 0;
                    last = Some(b);
                }
                Err(e) if e.status == Some(404) => {
                    // The provider does not know the batch (deleted, or another account's key).
                    log::warn!("batch {id}: the upstream no longer knows it ({e}); giving up");
                    self.release_all("batch_gone");
                    if owned {
                        if let Some(j) = &self.journal {
                            let _ = j.finish(&job, &owner, "abandoned", "gone", now_ms()).await;
                        }
                        let ms = self.age().as_secs_f64() * 1000.0;
                        count_job(&self.shared, "failed", ms, self.rec.lines.len());
                    }
                    return;
                }
                Err(e) => {
                    poll_errors += 1;
                    if poll_errors == 1 || poll_errors % 20 == 0 {
                        log::warn!("batch {id}: polling failed ({poll_errors}x): {e}");
                    }
                }
            }
            if let Some(j) = self.journal.clone() {
                let status = last.as_ref().map_or("unknown", |b| b.status.as_str());
                let until = now_ms().saturating_add(self.rec.lease().as_millis() as i64);
                let kept = if self.recorded {
                    j.renew(&job, &owner, until, status).await
                } else {
                    // The batch id did not reach the journal yet: record it (it also renews).
                    let file = self.rec.input_file_id.as_deref();
                    let r = j
                        .set_batch(&job, &owner, &id, file, self.rec.created_ms, until)
                        .await;
                    if r.is_ok() {
                        self.recorded = true;
                    }
                    r
                };
                match kept {
                    Ok(true) => {}
                    Ok(false) => {
                        if owned {
                            log::warn!(
                                "batch {id}: claimed by another gateway (lease ran out); it records the spend"
                            );
                        }
                        owned = false;
                        if self.waiting.is_empty() {
                            return;
                        }
                    }
                    Err(e) => log::warn!("batch {id}: {e}"),
                }
            }
            if last.as_ref().is_some_and(Batch::is_final) {
                break;
            }
            let age = self.age();
            if age >= self.rec.grace && !cancelled && owned {
                if cancel_started.is_none() {
                    log::info!(
                        "batch {id}: not finished after grace ({:?}); cancelling it, finished lines \
                         are delivered, the rest go through the synchronous API",
                        self.rec.grace
                    );
                    cancel_started = Some(Instant::now());
                }
                match self.api.cancel(&id).await {
                    Ok(b) => {
                        cancelled = true;
                        last = Some(b);
                    }
                    Err(e) => log::warn!("batch {id}: cancel failed: {e}"),
                }
            }
            if cancel_started.is_some_and(|t| t.elapsed() >= CANCEL_WAIT)
                && !self.waiting.is_empty()
            {
                log::warn!(
                    "batch {id}: still not cancelled after {CANCEL_WAIT:?}; its {} waiting request(s) go through the synchronous API",
                    self.waiting.len()
                );
                self.release_all("cancel_timeout");
            }
            if age >= GIVE_UP {
                log::warn!("batch {id}: no final status after {GIVE_UP:?}; giving up");
                self.release_all("gave_up");
                if let (Some(j), true) = (&self.journal, owned) {
                    let _ = j
                        .finish(&job, &owner, "abandoned", "unknown", now_ms())
                        .await;
                }
                return;
            }
        }
        if let Some(b) = last {
            self.settle(b, owned).await;
        }
    }

    /// Shutdown while the batch runs: its clients go synchronously now (within the grace period),
    /// and a batch of this process is cancelled — nobody can receive its answers any more. The
    /// journal row stays active: the next gateway polls it to its end for the spend and files.
    async fn stopped(mut self, owned: bool) {
        if !self.live {
            return;
        }
        let n = self.waiting.len();
        self.release_all("shutting_down");
        if owned {
            let cancel =
                tokio::time::timeout(Duration::from_secs(5), self.api.cancel(&self.batch_id));
            match cancel.await {
                Ok(Ok(_)) => log::info!(
                    "batch {}: cancelled at shutdown; its {n} waiting request(s) go through the synchronous API",
                    self.batch_id
                ),
                Ok(Err(e)) => log::warn!("batch {}: cancel at shutdown failed: {e}", self.batch_id),
                Err(_) => log::warn!("batch {}: cancel at shutdown timed out", self.batch_id),
            }
        }
    }

    /// The batch reached a final status: read its files, answer, account, clean up.
    async fn settle(mut self, b: Batch, owned: bool) {
        let id = self.batch_id.clone();
        let owner = self.shared.batcher.owner.clone();
        let mut results: HashMap<String, LineResult> = HashMap::new();
        let mut unread = false;
        for file in [&b.output_file_id, &b.error_file_id].into_iter().flatten() {
            match self.api.content(file).await {
                Ok(bytes) => parse_output(&bytes, &mut results),
                Err(e) => {
                    log::warn!("batch {id}: downloading file {file} failed: {e}");
                    unread = true;
                }
            }
        }
        // A live batch whose files could not be read is left to recovery (the lease runs out and a
        // scan tries again: the spend is then recorded); a recovered one is given up.
        let mut settle = owned && !(unread && self.live);
        if settle && !self.recorded {
            // The batch id never reached the journal (it ended before a poll could record it):
            // record it now, so the row names its batch and nobody else can adopt it.
            if let Some(j) = &self.journal {
                let until = now_ms().saturating_add(self.rec.lease().as_millis() as i64);
                let file = self.rec.input_file_id.as_deref();
                settle = match j
                    .set_batch(
                        &self.rec.job_id,
                        &owner,
                        &id,
                        file,
                        self.rec.created_ms,
                        until,
                    )
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        log::warn!("batch {id}: {e}; left for recovery");
                        false
                    }
                };
            }
        }
        if settle {
            if let Some(j) = &self.journal {
                let state = if unread { "abandoned" } else { "done" };
                settle = match j
                    .finish(&self.rec.job_id, &owner, state, &b.status, now_ms())
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        log::warn!("batch {id}: {e}; left for recovery");
                        false
                    }
                };
            }
        }
        // Answer the clients.
        let (mut answered, mut fallback, mut gone) = (0usize, 0usize, 0usize);
        for (custom_id, tx) in self.waiting.drain() {
            let reply = match results.get(&custom_id) {
                Some(LineResult::Response {
                    status,
                    body,
                    usage,
                }) if !(*status == 429 || *status >= 500) => Reply::Answer(Answer {
                    status: *status,
                    body: body.clone(),
                    batch_id: id.clone(),
                    usage: *usage,
                }),
                Some(LineResult::Response { .. }) => Reply::Fallback("line_failed"),
                Some(LineResult::Error) => Reply::Fallback("line_error"),
                None => Reply::Fallback("missing_line"),
            };
            let fell_back = matches!(reply, Reply::Fallback(_));
            if tx.send(reply).is_err() {
                gone += 1;
            } else if fell_back {
                fallback += 1;
            } else {
                answered += 1;
            }
        }
        // Spend, once per batch (the journal decided who records it), at the batch price; lines
        // whose client left count too.
        if settle {
            let mut total = crate::pricing::Micros::ZERO;
            for (custom_id, account) in &self.rec.lines {
                let Some(LineResult::Response { usage: Some(u), .. }) = results.get(custom_id)
                else {
                    continue;
                };
                let Some(cost) = account.cost(u) else {
                    continue;
                };
                if cost == crate::pricing::Micros::ZERO {
                    continue;
                }
                total += cost;
                self.shared
                    .metrics
                    .spend
                    .with_label_values(&[account.model.as_str()])
                    .inc_by(cost.as_usd_f64());
                if let (Some(keys), Some(h)) = (&self.shared.keys, &account.key_hash) {
                    if !keys.record_spend_by_hash(h, account.user.as_deref(), &account.model, cost)
                    {
                        log::debug!("batch {id}: a key of this batch is no longer known");
                    }
                }
            }
            // Files are kept only when the spend still has to be read from them.
            for file in self
                .rec
                .input_file_id
                .iter()
                .chain(b.output_file_id.iter())
                .chain(b.error_file_id.iter())
            {
                if let Err(e) = self.api.delete_file(file).await {
                    log::debug!("batch {id}: deleting file {file}: {e}");
                }
            }
            let ms = self.age().as_secs_f64() * 1000.0;
            count_job(&self.shared, &b.status, ms, self.rec.lines.len());
            log::info!(
                "batch {id}: {} after {ms:.0} ms: {answered} answered from the batch, {fallback} sent \
                 synchronously, {gone} client(s) gone; spend {total}{}",
                b.status,
                if self.live { "" } else { " (recovered)" }
            );
        } else {
            log::info!(
                "batch {id}: {}: {answered} answered from the batch, {fallback} sent synchronously, \
                 {gone} client(s) gone (accounting left to the journal's owner)",
                b.status
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Account;
    use super::*;

    #[test]
    fn jsonl_lines_stay_on_one_line() {
        let line = super::super::Line {
            custom_id: "c1".into(),
            body: Bytes::from_static(b"{\"model\":\"m\",\r\n \"input\": [\n1]}"),
            account: Account {
                key_hash: None,
                user: None,
                model: "m".into(),
                price: None,
            },
        };
        let out = jsonl("/v1/embeddings", std::iter::once(&line));
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["custom_id"], "c1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["url"], "/v1/embeddings");
        assert_eq!(v["body"]["input"][0], 1);
    }

    #[test]
    fn output_lines_keep_status_and_body_bytes() {
        let file = concat!(
            r#"{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"r1","body":{"id":"x", "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}},"error":null}"#,
            "\n",
            r#"{"id":"batch_req_2","custom_id":"b","response":{"status_code":400,"request_id":"r2","body":{"error":{"message":"bad"}}},"error":null}"#,
            "\n",
            r#"{"id":"batch_req_3","custom_id":"c","response":null,"error":{"code":"batch_expired","message":"expired"}}"#,
            "\n\n"
        );
        let mut r = HashMap::new();
        parse_output(&Bytes::from_static(file.as_bytes()), &mut r);
        assert_eq!(
            r["a"],
            LineResult::Response {
                status: 200,
                body: Bytes::from_static(
                    br#"{"id":"x", "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
                ),
                usage: Some(Usage::new(3, 4)),
            }
        );
        assert!(matches!(r["b"], LineResult::Response { status: 400, .. }));
        assert_eq!(r["c"], LineResult::Error);
        assert_eq!(r.len(), 3);
    }
}
