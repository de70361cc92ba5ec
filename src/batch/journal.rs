//! The batch journal: submitted batches in `state.database` (table `batch_jobs`, SQLite or
//! PostgreSQL, created on open), so that a gateway that stopped — killed, crashed, upgraded — has
//! its batches finished by the next one: polled to their end, spend recorded, files deleted.
//!
//! Exactly-once accounting with a lease: the process that owns a row renews `lease_until_ms` on
//! every poll; a row whose lease ran out is claimed by whichever gateway scans first (a restarted
//! one, the new process of a graceful upgrade, or another instance on the same PostgreSQL). The
//! owner records a batch's spend only after it marked the row `done` while still owning it
//! ([`Journal::finish`]), so a batch is charged once even when two processes poll it.
//!
//! Calls never run on the request path: only the batcher's background tasks use the journal.
//! SQLite runs on tokio's blocking pool; PostgreSQL keeps one connection driven by a small runtime
//! on its own thread (as the key store does), reconnecting when it closed.

use super::Account;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A storage failure.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalError(pub String);

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch journal: {}", self.0)
    }
}

impl std::error::Error for JournalError {}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        JournalError(format!("sqlite: {e}"))
    }
}

impl From<tokio_postgres::Error> for JournalError {
    fn from(e: tokio_postgres::Error) -> Self {
        match std::error::Error::source(&e) {
            Some(cause) => JournalError(format!("postgres: {e}: {cause}")),
            None => JournalError(format!("postgres: {e}")),
        }
    }
}

/// One submitted batch as journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub batch_id: String,
    /// The upstream's name (looked up in the running config when the batch is recovered).
    pub upstream: String,
    /// `/v1/chat/completions` or `/v1/embeddings`.
    pub endpoint: String,
    /// The deployment model of the lines.
    pub model: String,
    pub input_file_id: String,
    /// custom_id → who pays, for which model, at which price.
    pub lines: Vec<(String, Account)>,
    /// When the batch was created (unix ms); `grace` counts from here.
    pub created_ms: i64,
    pub poll: Duration,
    pub grace: Duration,
}

impl Record {
    /// How long a lease lasts: three polls and some slack, so a slow poll never loses it.
    pub fn lease(&self) -> Duration {
        lease_for(self.poll)
    }
}

/// The lease of a batch polled every `poll`.
pub fn lease_for(poll: Duration) -> Duration {
    poll.saturating_mul(3) + Duration::from_secs(2)
}

fn lines_json(lines: &[(String, Account)]) -> String {
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|(id, a)| {
            serde_json::json!([
                id,
                a.key_hash,
                a.model,
                a.pricing.map(|(i, o, d)| [i, o, d]),
            ])
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn parse_lines(text: &str) -> Vec<(String, Account)> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|it| {
            let id = it.get(0)?.as_str()?.to_string();
            let key_hash = it.get(1).and_then(|v| v.as_str()).map(str::to_string);
            let model = it.get(2)?.as_str()?.to_string();
            let pricing = it.get(3).and_then(|p| {
                Some((
                    p.get(0)?.as_f64()?,
                    p.get(1)?.as_f64()?,
                    p.get(2)?.as_f64()?,
                ))
            });
            Some((
                id,
                Account {
                    key_hash,
                    model,
                    pricing,
                },
            ))
        })
        .collect()
}

/// Every journal call gives up after this: an unreachable database must not stall a batch's polls
/// (a failed call is logged and retried with the next poll or scan).
const OP_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(f: impl Future<Output = Result<T, JournalError>>) -> Result<T, JournalError> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(JournalError("timed out".into())))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The raw columns of a claimed row.
type RawRecord = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
);

fn from_raw(r: RawRecord) -> Record {
    let (batch_id, upstream, endpoint, model, input_file_id, lines, created_ms, poll, grace) = r;
    Record {
        batch_id,
        upstream,
        endpoint,
        model,
        input_file_id,
        lines: parse_lines(&lines),
        created_ms,
        poll: Duration::from_millis(poll.max(1) as u64),
        grace: Duration::from_millis(grace.max(1) as u64),
    }
}

const COLUMNS: &str =
    "batch_id, upstream, endpoint, model, input_file_id, lines, created_ms, poll_ms, grace_ms";

const MIGRATION: &str = "
    CREATE TABLE IF NOT EXISTS batch_jobs (
        batch_id TEXT PRIMARY KEY,
        upstream TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        input_file_id TEXT NOT NULL,
        lines TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        poll_ms BIGINT NOT NULL,
        grace_ms BIGINT NOT NULL,
        owner TEXT NOT NULL,
        lease_until_ms BIGINT NOT NULL,
        state TEXT NOT NULL,
        status TEXT,
        finished_ms BIGINT
    );
    CREATE INDEX IF NOT EXISTS batch_jobs_active ON batch_jobs (state, lease_until_ms);";

/// The journal over one database.
pub struct Journal {
    backend: Backend,
}

enum Backend {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Postgres(Box<pg::Pg>),
}

impl Journal {
    /// Opens (creating the table) the database at `url`: `sqlite://PATH` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Journal, JournalError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.to_string();
            let conn = tokio::task::spawn_blocking(
                move || -> Result<rusqlite::Connection, JournalError> {
                    let conn = if path == ":memory:" {
                        rusqlite::Connection::open_in_memory()?
                    } else {
                        if let Some(dir) = std::path::Path::new(&path).parent() {
                            if !dir.as_os_str().is_empty() {
                                std::fs::create_dir_all(dir).map_err(|e| {
                                    JournalError(format!("creating {}: {e}", dir.display()))
                                })?;
                            }
                        }
                        rusqlite::Connection::open(&path)?
                    };
                    conn.busy_timeout(Duration::from_secs(5))?;
                    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
                    conn.execute_batch(MIGRATION)?;
                    Ok(conn)
                },
            )
            .await
            .map_err(|e| JournalError(format!("sqlite open task: {e}")))??;
            Ok(Journal {
                backend: Backend::Sqlite(Arc::new(std::sync::Mutex::new(conn))),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Journal {
                backend: Backend::Postgres(Box::new(pg::Pg::open(url).await?)),
            })
        } else {
            Err(JournalError(
                "unsupported database URL (expected sqlite://PATH or postgres://...)".into(),
            ))
        }
    }

    async fn sqlite<T: Send + 'static>(
        conn: &Arc<std::sync::Mutex<rusqlite::Connection>>,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| JournalError("sqlite connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| JournalError(format!("sqlite task: {e}")))?
    }

    /// Journal a batch just created, owned by `owner` with a fresh lease.
    pub async fn insert(&self, rec: &Record, owner: &str, now_ms: i64) -> Result<(), JournalError> {
        bounded(self.insert_inner(rec, owner, now_ms)).await
    }

    /// Extend `owner`'s lease until `lease_until_ms` and note the batch's status; `false` when the
    /// row is no longer this owner's (another gateway claimed it) or no longer active.
    pub async fn renew(
        &self,
        batch_id: &str,
        owner: &str,
        lease_until_ms: i64,
        status: &str,
    ) -> Result<bool, JournalError> {
        bounded(self.renew_inner(batch_id, owner, lease_until_ms, status)).await
    }

    /// Mark the batch finished (`state` `done`, or `abandoned` when it cannot be finished) with
    /// its final `status`, if `owner` still owns it. `true`: the caller owns the outcome and
    /// records the spend; `false`: another gateway does.
    pub async fn finish(
        &self,
        batch_id: &str,
        owner: &str,
        state: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<bool, JournalError> {
        bounded(self.finish_inner(batch_id, owner, state, status, now_ms)).await
    }

    /// Claim for `owner` every active batch whose lease ran out by `now_ms`, except those in
    /// `exclude` (this process polls them already). A row is claimed only if its lease is still out
    /// at the moment of the update (so two scanners never both get it).
    pub async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        exclude: &HashSet<String>,
    ) -> Result<Vec<Record>, JournalError> {
        bounded(self.claim_inner(owner, now_ms, exclude.clone())).await
    }

    async fn insert_inner(
        &self,
        rec: &Record,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), JournalError> {
        let lines = lines_json(&rec.lines);
        let lease_until = now_ms.saturating_add(ms(rec.lease()));
        let (poll, grace) = (ms(rec.poll), ms(rec.grace));
        let rec = rec.clone();
        let owner = owner.to_string();
        match &self.backend {
            Backend::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.execute(
                        &format!(
                            "INSERT INTO batch_jobs ({COLUMNS}, owner, lease_until_ms, state) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'active')"
                        ),
                        rusqlite::params![
                            rec.batch_id,
                            rec.upstream,
                            rec.endpoint,
                            rec.model,
                            rec.input_file_id,
                            lines,
                            rec.created_ms,
                            poll,
                            grace,
                            owner,
                            lease_until
                        ],
                    )?;
                    Ok(())
                })
                .await
            }
            Backend::Postgres(p) => {
                p.with(move |c| {
                    Box::pin(async move {
                        c.execute(
                            &format!(
                                "INSERT INTO batch_jobs ({COLUMNS}, owner, lease_until_ms, state) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active')"
                            ),
                            &[
                                &rec.batch_id,
                                &rec.upstream,
                                &rec.endpoint,
                                &rec.model,
                                &rec.input_file_id,
                                &lines,
                                &rec.created_ms,
                                &poll,
                                &grace,
                                &owner,
                                &lease_until,
                            ],
                        )
                        .await?;
                        Ok(())
                    })
                })
                .await
            }
        }
    }

    async fn renew_inner(
        &self,
        batch_id: &str,
        owner: &str,
        lease_until_ms: i64,
        status: &str,
    ) -> Result<bool, JournalError> {
        let (id, owner, status) = (batch_id.to_string(), owner.to_string(), status.to_string());
        match &self.backend {
            Backend::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let n = c.execute(
                        "UPDATE batch_jobs SET lease_until_ms = ?3, status = ?4 \
                         WHERE batch_id = ?1 AND owner = ?2 AND state = 'active'",
                        rusqlite::params![id, owner, lease_until_ms, status],
                    )?;
                    Ok(n == 1)
                })
                .await
            }
            Backend::Postgres(p) => {
                p.with(|c| {
                    Box::pin(async move {
                        let n = c
                            .execute(
                                "UPDATE batch_jobs SET lease_until_ms = $3, status = $4 \
                                 WHERE batch_id = $1 AND owner = $2 AND state = 'active'",
                                &[&id, &owner, &lease_until_ms, &status],
                            )
                            .await?;
                        Ok(n == 1)
                    })
                })
                .await
            }
        }
    }

    async fn finish_inner(
        &self,
        batch_id: &str,
        owner: &str,
        state: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<bool, JournalError> {
        let (id, owner, state, status) = (
            batch_id.to_string(),
            owner.to_string(),
            state.to_string(),
            status.to_string(),
        );
        match &self.backend {
            Backend::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let n = c.execute(
                        "UPDATE batch_jobs SET state = ?3, status = ?4, finished_ms = ?5 \
                         WHERE batch_id = ?1 AND owner = ?2 AND state = 'active'",
                        rusqlite::params![id, owner, state, status, now_ms],
                    )?;
                    Ok(n == 1)
                })
                .await
            }
            Backend::Postgres(p) => {
                p.with(|c| {
                    Box::pin(async move {
                        let n = c
                            .execute(
                                "UPDATE batch_jobs SET state = $3, status = $4, finished_ms = $5 \
                                 WHERE batch_id = $1 AND owner = $2 AND state = 'active'",
                                &[&id, &owner, &state, &status, &now_ms],
                            )
                            .await?;
                        Ok(n == 1)
                    })
                })
                .await
            }
        }
    }

    async fn claim_inner(
        &self,
        owner: &str,
        now_ms: i64,
        exclude: HashSet<String>,
    ) -> Result<Vec<Record>, JournalError> {
        let owner = owner.to_string();
        let raws: Vec<RawRecord> = match &self.backend {
            Backend::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let mut stale = Vec::new();
                    {
                        let mut st = c.prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM batch_jobs \
                             WHERE state = 'active' AND lease_until_ms < ?1"
                        ))?;
                        let rows = st.query_map(rusqlite::params![now_ms], |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                                r.get(7)?,
                                r.get(8)?,
                            ))
                        })?;
                        for r in rows {
                            stale.push(r?);
                        }
                    }
                    let mut claimed = Vec::new();
                    for raw in stale {
                        let r: RawRecord = raw;
                        if exclude.contains(&r.0) {
                            continue;
                        }
                        let lease = ms(lease_for(Duration::from_millis(r.7.max(1) as u64)));
                        let n = c.execute(
                            "UPDATE batch_jobs SET owner = ?2, lease_until_ms = ?3 \
                             WHERE batch_id = ?1 AND state = 'active' AND lease_until_ms < ?4",
                            rusqlite::params![r.0, owner, now_ms.saturating_add(lease), now_ms],
                        )?;
                        if n == 1 {
                            claimed.push(r);
                        }
                    }
                    Ok(claimed)
                })
                .await?
            }
            Backend::Postgres(p) => {
                p.with(|c| {
                    Box::pin(async move {
                        let rows = c
                            .query(
                                &format!(
                                    "SELECT {COLUMNS} FROM batch_jobs \
                                     WHERE state = 'active' AND lease_until_ms < $1"
                                ),
                                &[&now_ms],
                            )
                            .await?;
                        let mut claimed = Vec::new();
                        for row in rows {
                            let r: RawRecord = (
                                row.try_get(0)?,
                                row.try_get(1)?,
                                row.try_get(2)?,
                                row.try_get(3)?,
                                row.try_get(4)?,
                                row.try_get(5)?,
                                row.try_get(6)?,
                                row.try_get(7)?,
                                row.try_get(8)?,
                            );
                            if exclude.contains(&r.0) {
                                continue;
                            }
                            let lease = ms(lease_for(Duration::from_millis(r.7.max(1) as u64)));
                            let until = now_ms.saturating_add(lease);
                            let n = c
                                .execute(
                                    "UPDATE batch_jobs SET owner = $2, lease_until_ms = $3 \
                                     WHERE batch_id = $1 AND state = 'active' AND lease_until_ms < $4",
                                    &[&r.0, &owner, &until, &now_ms],
                                )
                                .await?;
                            if n == 1 {
                                claimed.push(r);
                            }
                        }
                        Ok(claimed)
                    })
                })
                .await?
            }
        };
        Ok(raws.into_iter().map(from_raw).collect())
    }
}

mod pg {
    //! One PostgreSQL connection for the journal, driven on its own thread's runtime (so it works
    //! from any Pingora service runtime), reconnected when it closed.

    use super::{JournalError, MIGRATION};
    use std::future::Future;
    use std::pin::Pin;
    use tokio::runtime::Handle;
    use tokio::sync::{oneshot, Mutex};
    use tokio_postgres::{Client, NoTls};

    pub struct Pg {
        url: String,
        client: Mutex<Option<Client>>,
        runtime: Handle,
        _stop: oneshot::Sender<()>,
    }

    type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

    /// Serialises the migration of instances starting at once.
    const MIGRATION_LOCK: i64 = 0x6c6c_6d70_6261_7463; // "llmpbatc"

    impl Pg {
        pub async fn open(url: &str) -> Result<Pg, JournalError> {
            let (handle_tx, handle_rx) = oneshot::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name("llmproxy-batch-pg".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(JournalError(format!("runtime: {e}"))));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    let _ = rt.block_on(stop_rx);
                })
                .map_err(|e| JournalError(format!("spawning the postgres thread: {e}")))?;
            let runtime = handle_rx
                .await
                .map_err(|_| JournalError("postgres thread exited".into()))??;
            let pg = Pg {
                url: url.to_string(),
                client: Mutex::new(None),
                runtime,
                _stop: stop_tx,
            };
            pg.with(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                        .await?;
                    tx.batch_execute(MIGRATION).await?;
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await?;
            Ok(pg)
        }

        /// Run `f` on the connection (reconnecting first when it closed).
        pub async fn with<T>(
            &self,
            f: impl for<'c> FnOnce(&'c mut Client) -> BoxFut<'c, T>,
        ) -> Result<T, JournalError> {
            let mut guard = self.client.lock().await;
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = None;
                let url = self.url.clone();
                let client = self
                    .runtime
                    .spawn(async move {
                        let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                log::warn!("batch journal: postgres connection closed: {e}");
                            }
                        });
                        Ok::<_, JournalError>(client)
                    })
                    .await
                    .map_err(|e| JournalError(format!("postgres connect task: {e}")))??;
                *guard = Some(client);
            }
            let c = guard
                .as_mut()
                .ok_or_else(|| JournalError("not connected".into()))?;
            f(c).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            batch_id: id.into(),
            upstream: "a".into(),
            endpoint: "/v1/chat/completions".into(),
            model: "gpt-4o-mini".into(),
            input_file_id: "file-1".into(),
            lines: vec![
                (
                    "c1".into(),
                    Account {
                        key_hash: Some("ab".repeat(32)),
                        model: "m".into(),
                        pricing: Some((2.5, 10.0, 0.5)),
                    },
                ),
                (
                    "c2".into(),
                    Account {
                        key_hash: None,
                        model: "m".into(),
                        pricing: None,
                    },
                ),
            ],
            created_ms: 1000,
            poll: Duration::from_millis(100),
            grace: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn lease_claim_and_finish_on_sqlite() {
        let j = Journal::open("sqlite://:memory:").await.unwrap();
        let none = HashSet::new();
        let rec = record("batch_1");
        j.insert(&rec, "old", 10_000).await.unwrap();
        // The lease (3 polls + 2 s) still holds: nothing to claim.
        assert!(j.claim("new", 10_500, &none).await.unwrap().is_empty());
        assert!(j
            .renew("batch_1", "old", 20_000, "in_progress")
            .await
            .unwrap());
        // Ran out: claimed once, with the lines intact.
        let got = j.claim("new", 20_001, &none).await.unwrap();
        assert_eq!(got, vec![rec]);
        assert!(j.claim("third", 20_002, &none).await.unwrap().is_empty());
        // The old owner lost it: it can neither renew nor finish.
        assert!(!j.renew("batch_1", "old", 30_000, "x").await.unwrap());
        assert!(!j
            .finish("batch_1", "old", "done", "completed", 1)
            .await
            .unwrap());
        assert!(j
            .finish("batch_1", "new", "done", "completed", 1)
            .await
            .unwrap());
        assert!(!j
            .finish("batch_1", "new", "done", "completed", 1)
            .await
            .unwrap());
        assert!(j.claim("x", i64::MAX - 1, &none).await.unwrap().is_empty());
    }
}
