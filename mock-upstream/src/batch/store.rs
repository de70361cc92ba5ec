//! The simulated batches: the `/__mock/batch` settings, each batch's timeline (a pure function of
//! the time since its creation and of its cancel time) and the store of files and batches.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::files::StoredFile;

/// `expires_at` of a batch: creation + its 24 h completion window.
pub(super) const COMPLETION_WINDOW_SECS: u64 = 24 * 3600;

/// How a batch ends when nobody cancels it (`POST /__mock/batch` `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum BatchOutcome {
    Completed,
    Failed,
    Expired,
}

/// `POST /__mock/batch` settings; each batch keeps the values current at its creation.
#[derive(Clone, Debug, Serialize)]
pub(super) struct BatchConfig {
    pub(super) complete_after_ms: u64,
    pub(super) outcome: BatchOutcome,
    pub(super) omit_custom_ids: Vec<String>,
    pub(super) fail_custom_ids: BTreeMap<String, u16>,
    pub(super) cancel_after_ms: u64,
    pub(super) reverse_output: bool,
    /// `POST /batches` creates the batch at once and answers this much later.
    pub(super) create_delay_ms: u64,
    /// `POST /batches` never creates anything and never answers.
    pub(super) create_hang: bool,
    /// `POST /batches` creates the batch, then answers this 5xx instead of the Batch object.
    pub(super) create_then_fail: Option<u16>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            complete_after_ms: 300,
            outcome: BatchOutcome::Completed,
            omit_custom_ids: Vec::new(),
            fail_custom_ids: BTreeMap::new(),
            cancel_after_ms: 50,
            reverse_output: false,
            create_delay_ms: 0,
            create_hang: false,
            create_then_fail: None,
        }
    }
}

impl BatchConfig {
    /// Apply the fields of `patch` (`null` restores a field's default); nothing changes on error.
    pub(super) fn patched(
        &self,
        patch: &serde_json::Map<String, Value>,
    ) -> Result<BatchConfig, String> {
        let d = BatchConfig::default();
        let mut c = self.clone();
        let ms = |k: &str, v: &Value| {
            v.as_u64()
                .ok_or_else(|| format!("{k} must be a non-negative integer (ms) or null"))
        };
        for (k, v) in patch {
            let null = v.is_null();
            match k.as_str() {
                "complete_after_ms" if null => c.complete_after_ms = d.complete_after_ms,
                "complete_after_ms" => c.complete_after_ms = ms(k, v)?,
                "cancel_after_ms" if null => c.cancel_after_ms = d.cancel_after_ms,
                "cancel_after_ms" => c.cancel_after_ms = ms(k, v)?,
                "outcome" => {
                    c.outcome = match v.as_str() {
                        _ if null => d.outcome,
                        Some("completed") => BatchOutcome::Completed,
                        Some("failed") => BatchOutcome::Failed,
                        Some("expired") => BatchOutcome::Expired,
                        _ => return Err("outcome must be completed, failed or expired".into()),
                    }
                }
                "omit_custom_ids" if null => c.omit_custom_ids = Vec::new(),
                "omit_custom_ids" => {
                    c.omit_custom_ids = serde_json::from_value(v.clone())
                        .map_err(|_| "omit_custom_ids must be an array of strings".to_owned())?
                }
                "fail_custom_ids" if null => c.fail_custom_ids = BTreeMap::new(),
                "fail_custom_ids" => {
                    let m: BTreeMap<String, u16> = serde_json::from_value(v.clone())
                        .map_err(|_| "fail_custom_ids must map custom_id to a status".to_owned())?;
                    if let Some((id, s)) = m.iter().find(|(_, s)| !(400..=599).contains(*s)) {
                        return Err(format!("fail_custom_ids[{id}]: {s} is not in 400..=599"));
                    }
                    c.fail_custom_ids = m;
                }
                "reverse_output" => c.reverse_output = v.as_bool().unwrap_or(d.reverse_output),
                "create_delay_ms" if null => c.create_delay_ms = d.create_delay_ms,
                "create_delay_ms" => c.create_delay_ms = ms(k, v)?,
                "create_then_fail" if null => c.create_then_fail = None,
                "create_then_fail" => match v.as_u64() {
                    Some(st @ 500..=599) => c.create_then_fail = Some(st as u16),
                    _ => return Err("create_then_fail must be a status 500..=599 or null".into()),
                },
                "create_hang" if null => c.create_hang = d.create_hang,
                "create_hang" => {
                    c.create_hang = v
                        .as_bool()
                        .ok_or_else(|| "create_hang must be a boolean or null".to_owned())?
                }
                other => {
                    return Err(format!(
                        "unknown field {other} (complete_after_ms, outcome, omit_custom_ids, fail_custom_ids, cancel_after_ms, reverse_output, create_delay_ms, create_hang, create_then_fail)"
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// One request of a batch, answered when the batch is created and revealed as it "runs".
pub(super) struct BatchLine {
    pub(super) custom_id: String,
    pub(super) status: u16,
    /// The answer's JSON, exactly as the synchronous endpoint would send it.
    pub(super) body: Bytes,
    pub(super) line_id: String,
    pub(super) request_id: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    pub(super) fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

/// A batch. Its progress is a pure function of the time since creation (ms on the mock's clock)
/// and of the cancel time, so every observer sees the same consistent state; the output and error
/// files are written on the first look after it ends (`BatchStore::settle`).
pub(super) struct Batch {
    pub(super) id: String,
    pub(super) endpoint: String,
    pub(super) input_file_id: String,
    pub(super) model: String,
    pub(super) metadata: Value,
    /// Creation, in ms on the mock's clock and as Unix ms.
    pub(super) t0_ms: u64,
    pub(super) created_unix_ms: u64,
    pub(super) cfg: BatchConfig,
    pub(super) lines: Vec<BatchLine>,
    /// When cancel was accepted, in ms since creation.
    pub(super) cancel_ms: Option<u64>,
    pub(super) cancel_calls: u64,
    pub(super) polls: u64,
    pub(super) settled: bool,
    pub(super) output_file_id: Option<String>,
    pub(super) error_file_id: Option<String>,
}

impl Batch {
    fn validated_ms(&self) -> u64 {
        self.cfg.complete_after_ms / 10
    }

    fn finalizing_ms(&self) -> u64 {
        self.cfg.complete_after_ms * 9 / 10
    }

    /// Lines that run if nothing stops the batch: all, the first half when it expires, none when
    /// it fails.
    fn runnable(&self) -> usize {
        match self.cfg.outcome {
            BatchOutcome::Completed => self.lines.len(),
            BatchOutcome::Expired => self.lines.len() / 2,
            BatchOutcome::Failed => 0,
        }
    }

    /// When runnable line `i` finishes: evenly spread, in file order, over the in-progress phase.
    fn line_done_ms(&self, i: usize, runnable: usize) -> u64 {
        let (v, f) = (self.validated_ms(), self.finalizing_ms());
        v + (f - v) * (i as u64 + 1) / (runnable.max(1) as u64)
    }

    /// Lines finished at `e` ms after creation (a prefix of the file; frozen by a cancel).
    fn finished(&self, e: u64) -> usize {
        let stop = self.cancel_ms.map_or(e, |c| e.min(c));
        let k = self.runnable();
        (0..k)
            .take_while(|&i| self.line_done_ms(i, k) <= stop)
            .count()
    }

    /// The status nobody cancelled.
    fn natural_status(&self, e: u64) -> BatchStatus {
        let t = self.cfg.complete_after_ms;
        match self.cfg.outcome {
            _ if e >= t => match self.cfg.outcome {
                BatchOutcome::Completed => BatchStatus::Completed,
                BatchOutcome::Failed => BatchStatus::Failed,
                BatchOutcome::Expired => BatchStatus::Expired,
            },
            BatchOutcome::Failed => BatchStatus::Validating,
            _ if e < self.validated_ms() => BatchStatus::Validating,
            BatchOutcome::Completed if e >= self.finalizing_ms() => BatchStatus::Finalizing,
            _ => BatchStatus::InProgress,
        }
    }

    pub(super) fn status(&self, e: u64) -> BatchStatus {
        match self.cancel_ms {
            Some(c) if e >= c + self.cfg.cancel_after_ms => BatchStatus::Cancelled,
            Some(c) if e >= c => BatchStatus::Cancelling,
            _ => self.natural_status(e),
        }
    }

    /// When the batch reaches its terminal status (ms since creation).
    fn end_ms(&self) -> u64 {
        match self.cancel_ms {
            Some(c) => c + self.cfg.cancel_after_ms,
            None => self.cfg.complete_after_ms,
        }
    }

    /// `(completed, failed)` among the lines finished at `e`.
    fn counts(&self, e: u64) -> (usize, usize) {
        let done = &self.lines[..self.finished(e)];
        let ok = done.iter().filter(|l| l.status < 300).count();
        (ok, done.len() - ok)
    }

    /// The Batch object at `e` ms after creation.
    pub(super) fn object(&self, e: u64) -> Value {
        let status = self.status(e);
        let unix = |off: u64| Value::from((self.created_unix_ms + off) / 1000);
        // A phase's time is set once it has been reached (and not cut off by a cancel).
        let reached = |off: u64| off <= e && self.cancel_ms.is_none_or(|c| off <= c);
        let stamp = |cond: bool, off: u64| {
            if cond && reached(off) {
                unix(off)
            } else {
                Value::Null
            }
        };
        let t = self.cfg.complete_after_ms;
        let outcome = self.cfg.outcome;
        let (completed, failed) = self.counts(e);
        let total = if matches!(status, BatchStatus::Validating | BatchStatus::Failed) {
            0
        } else {
            self.lines.len()
        };
        let (completed, failed) = if total == 0 {
            (0, 0)
        } else {
            (completed, failed)
        };
        let errors = if status == BatchStatus::Failed {
            serde_json::json!({"object": "list", "data": [{
                "code": "mock_failed",
                "message": "The batch failed (mock outcome \"failed\").",
                "param": null,
                "line": null,
            }]})
        } else {
            Value::Null
        };
        serde_json::json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_unix_ms / 1000,
            "in_progress_at": stamp(outcome != BatchOutcome::Failed, self.validated_ms()),
            "expires_at": self.created_unix_ms / 1000 + COMPLETION_WINDOW_SECS,
            "finalizing_at": stamp(outcome == BatchOutcome::Completed, self.finalizing_ms()),
            "completed_at": stamp(outcome == BatchOutcome::Completed, t),
            "failed_at": stamp(outcome == BatchOutcome::Failed, t),
            "expired_at": stamp(outcome == BatchOutcome::Expired, t),
            "cancelling_at": self.cancel_ms.map_or(Value::Null, unix),
            "cancelled_at": match self.cancel_ms {
                Some(c) if status == BatchStatus::Cancelled => unix(c + self.cfg.cancel_after_ms),
                _ => Value::Null,
            },
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": self.metadata,
        })
    }

    /// What `GET /__mock/batches` shows of the batch at `e`.
    pub(super) fn mock_view(&self, now: u64) -> Value {
        let e = now.saturating_sub(self.t0_ms);
        let (completed, failed) = self.counts(e);
        serde_json::json!({
            "id": self.id,
            "status": self.status(e).as_str(),
            "endpoint": self.endpoint,
            "model": self.model,
            "input_file_id": self.input_file_id,
            "lines": self.lines.len(),
            "custom_ids": self.lines.iter().map(|l| l.custom_id.as_str()).collect::<Vec<_>>(),
            "finished": completed + failed,
            "polls": self.polls,
            "cancel_called": self.cancel_calls > 0,
            "cancel_calls": self.cancel_calls,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "metadata": self.metadata,
            "config": self.cfg,
        })
    }

    /// The output and error files' contents once the batch has ended: lines that ran go to the
    /// output file (2xx) or the error file (with their status and error body); lines that never
    /// ran (expired or cancelled batch) go to the error file with `response: null`.
    fn result_files(&self) -> (String, String) {
        let done = self.finished(self.end_ms());
        let never_ran = match self.status(self.end_ms()) {
            BatchStatus::Expired => Some((
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )),
            BatchStatus::Cancelled => Some((
                "batch_cancelled",
                "This request was not executed because the batch was cancelled.",
            )),
            _ => None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for (i, l) in self.lines.iter().enumerate() {
            if self.cfg.omit_custom_ids.contains(&l.custom_id) {
                continue;
            }
            let id = serde_json::to_string(&l.custom_id).unwrap_or_default();
            if i < done {
                let body = String::from_utf8_lossy(&l.body);
                let line = format!(
                    r#"{{"id":"{}","custom_id":{id},"response":{{"status_code":{},"request_id":"{}","body":{body}}},"error":null}}"#,
                    l.line_id, l.status, l.request_id
                );
                if l.status < 300 {
                    out.push(line);
                } else {
                    err.push(line);
                }
            } else if let Some((code, message)) = never_ran {
                err.push(format!(
                    r#"{{"id":"{}","custom_id":{id},"response":null,"error":{{"code":"{code}","message":"{message}"}}}}"#,
                    l.line_id
                ));
            }
        }
        if self.cfg.reverse_output {
            out.reverse();
            err.reverse();
        }
        let jsonl = |v: Vec<String>| {
            v.into_iter().fold(String::new(), |mut s, l| {
                s.push_str(&l);
                s.push('\n');
                s
            })
        };
        (jsonl(out), jsonl(err))
    }
}

/// Every file and batch, the `/__mock/batch` settings and the batch figures of `/__mock/stats`.
#[derive(Default)]
pub(crate) struct BatchStore {
    pub(super) config: BatchConfig,
    pub(super) files: Vec<StoredFile>,
    pub(super) batches: Vec<Batch>,
    pub(super) next_id: u64,
    pub(super) files_uploaded: u64,
    pub(super) batches_created: u64,
    pub(super) batches_cancelled: u64,
    pub(super) batch_polls: u64,
}

impl BatchStore {
    /// `POST /__mock/reset`: forget every file, batch and setting. Ids stay unique across resets:
    /// a stale id held by a client never names a new object.
    pub(crate) fn reset(&mut self) {
        *self = BatchStore {
            next_id: self.next_id,
            ..BatchStore::default()
        };
    }

    /// The batch figures of `GET /__mock/stats`.
    pub(crate) fn stats(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("files_uploaded".to_owned(), self.files_uploaded.into());
        m.insert("batches_created".to_owned(), self.batches_created.into());
        m.insert(
            "batches_cancelled".to_owned(),
            self.batches_cancelled.into(),
        );
        m.insert("batch_polls".to_owned(), self.batch_polls.into());
        m
    }

    pub(super) fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn file(&self, id: &str) -> Option<&StoredFile> {
        self.files.iter().find(|f| f.id == id)
    }

    pub(super) fn batch_index(&self, id: &str) -> Option<usize> {
        self.batches.iter().position(|b| b.id == id)
    }

    /// Write the output / error files of the batches that have ended by `now`.
    pub(super) fn settle(&mut self, now: u64) {
        let mut new_files = Vec::new();
        for b in self.batches.iter_mut().filter(|b| !b.settled) {
            let e = now.saturating_sub(b.t0_ms);
            if !b.status(e).is_terminal() {
                continue;
            }
            b.settled = true;
            let (out, err) = b.result_files();
            let created_at = (b.created_unix_ms + b.end_ms()) / 1000;
            for (content, kind) in [(out, "output"), (err, "error")] {
                if content.is_empty() {
                    continue;
                }
                self.next_id += 1;
                let id = format!("file-mock{}", self.next_id);
                if kind == "output" {
                    b.output_file_id = Some(id.clone());
                } else {
                    b.error_file_id = Some(id.clone());
                }
                new_files.push(StoredFile {
                    id,
                    filename: format!("{}_{kind}.jsonl", b.id),
                    purpose: "batch_output",
                    created_at,
                    content: Bytes::from(content),
                    input: None,
                });
            }
        }
        self.files.extend(new_files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, cfg: BatchConfig) -> Batch {
        Batch {
            id: "batch_t".into(),
            endpoint: "/v1/chat/completions".into(),
            input_file_id: "file-t".into(),
            model: "m".into(),
            metadata: Value::Null,
            t0_ms: 0,
            created_unix_ms: 1_700_000_000_000,
            cfg,
            lines: (0..n)
                .map(|i| BatchLine {
                    custom_id: format!("c{i}"),
                    status: 200,
                    body: Bytes::from_static(b"{}"),
                    line_id: format!("l{i}"),
                    request_id: format!("r{i}"),
                })
                .collect(),
            cancel_ms: None,
            cancel_calls: 0,
            polls: 0,
            settled: false,
            output_file_id: None,
            error_file_id: None,
        }
    }

    #[test]
    fn timeline() {
        let cfg = BatchConfig {
            complete_after_ms: 1000,
            ..BatchConfig::default()
        };
        let mut b = batch(10, cfg.clone());
        let st = |b: &Batch, e| b.status(e);
        assert_eq!(st(&b, 0), BatchStatus::Validating);
        assert_eq!(st(&b, 100), BatchStatus::InProgress);
        assert_eq!(b.finished(100), 0);
        assert_eq!(b.finished(500), 5);
        assert_eq!(b.finished(900), 10);
        assert_eq!(st(&b, 900), BatchStatus::Finalizing);
        assert_eq!(st(&b, 1000), BatchStatus::Completed);
        b.cancel_ms = Some(500);
        assert_eq!(st(&b, 520), BatchStatus::Cancelling);
        assert_eq!(st(&b, 550), BatchStatus::Cancelled);
        assert_eq!(b.finished(5000), 5);
        let (out, err) = b.result_files();
        assert_eq!(out.lines().count(), 5);
        assert_eq!(err.lines().count(), 5);
        assert!(err.contains("batch_cancelled"));

        let b = batch(
            5,
            BatchConfig {
                outcome: BatchOutcome::Expired,
                ..cfg.clone()
            },
        );
        assert_eq!(st(&b, 1000), BatchStatus::Expired);
        assert_eq!(b.finished(1000), 2);
        let b = batch(
            5,
            BatchConfig {
                outcome: BatchOutcome::Failed,
                ..cfg.clone()
            },
        );
        assert_eq!(st(&b, 999), BatchStatus::Validating);
        assert_eq!(st(&b, 1000), BatchStatus::Failed);
        assert_eq!(b.object(1000)["request_counts"]["total"], 0);
        // No delay at all: done at once.
        let b = batch(
            3,
            BatchConfig {
                complete_after_ms: 0,
                ..cfg
            },
        );
        assert_eq!(st(&b, 0), BatchStatus::Completed);
        assert_eq!(b.finished(0), 3);
    }
}
