//! The batch journal: batch jobs in `state.database` (table `batch_jobs`, SQLite or PostgreSQL,
//! created on open), so that a gateway that stopped — killed, crashed, upgraded — has its batches
//! finished by the next one: polled to their end, spend recorded, files deleted.
//!
//! A job is journaled before anything happens at the provider, so no batch can exist that the
//! journal does not know of:
//! 1. the row is written (state `creating`, a random job id, the lines and who pays for them);
//! 2. the input file is uploaded and its id recorded ([`Journal::set_file`]);
//! 3. the batch is created with `metadata.llmproxy_job` = the job id, and its id recorded
//!    ([`Journal::set_batch`], state `active`).
//!
//! A `creating` row whose owner stopped is resolved by the gateway that claims it, by listing the
//! upstream's batches for that metadata (see `job`): found → adopted; not found → the create never
//! happened, the input file is deleted and the row is `done` (status `not_created`). A batch id is
//! recorded once only ([`Journal::set_batch`] fills an empty one), so when a stalled owner and a
//! recovering gateway both learn it, one of them owns the batch.
//!
//! Exactly-once accounting with a lease: the process that owns a row renews `lease_until_ms` while
//! it uploads, creates and polls; a row whose lease ran out is claimed by whichever gateway scans
//! first (a restarted one, the new process of a graceful upgrade, or another instance on the same
//! PostgreSQL). The owner records a batch's spend only after it marked the row `done` while still
//! owning it ([`Journal::finish`]), so a batch is charged once even when two processes poll it.
//!
//! Calls never run on the request path: only the batcher's background tasks use the journal.
//! SQLite runs on tokio's blocking pool; PostgreSQL keeps one connection driven by a small runtime
//! on its own thread (as the key store does), reconnecting when it closed.

use super::Account;
use crate::pricing::{PerMtok, Ppm, Price};
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

/// One batch job as journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Random, unique: the row's key, and the batch's `metadata.llmproxy_job`.
    pub job_id: String,
    /// `None` while the batch is being created (or was never created).
    pub batch_id: Option<String>,
    /// The upstream's name (looked up in the running config when the batch is recovered).
    pub upstream: String,
    /// `/v1/chat/completions` or `/v1/embeddings` (whatever form the upstream's lines take).
    pub endpoint: String,
    /// The deployment model of the lines.
    pub model: String,
    /// `None` until the upload answered.
    pub input_file_id: Option<String>,
    /// custom_id → who pays, for which model, at which price.
    pub lines: Vec<(String, Account)>,
    /// When the row was written, then when the batch was created (unix ms); `grace` counts from
    /// the latter.
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

/// Each line as `[custom_id, key_hash, model, null, price, user]`, the price exact as
/// `[input, cached_input, cache_write, output]` micro-dollars per million tokens and the batch
/// discount in parts per million. (Index 3 held a float price `[input, output, discount]` before
/// prices were exact; it is still read.)
fn lines_json(lines: &[(String, Account)]) -> String {
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|(id, a)| {
            serde_json::json!([
                id,
                a.key_hash,
                a.model,
                serde_json::Value::Null,
                a.price.map(|p| [
                    p.input.0,
                    p.cached_input.0,
                    p.cache_write.0,
                    p.output.0,
                    u64::from(p.batch_discount.0)
                ]),
                a.user,
            ])
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

/// A journaled price: the exact form, or the float form of older journals (converted by rounding
/// to micro-dollars; the cache rates were the input rate then).
fn parse_price(
    exact: Option<&serde_json::Value>,
    old: Option<&serde_json::Value>,
) -> Option<Price> {
    if let Some(p) = exact.filter(|p| p.is_array()) {
        let n = |i: usize| p.get(i).and_then(|v| v.as_u64());
        return Some(Price {
            input: PerMtok(n(0)?),
            cached_input: PerMtok(n(1)?),
            cache_write: PerMtok(n(2)?),
            output: PerMtok(n(3)?),
            batch_discount: Ppm(u32::try_from(n(4)?).ok()?.min(Ppm::ONE.0)),
        });
    }
    let p = old?;
    let f = |i: usize| {
        p.get(i)
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| (v * 1e6).round() as u64)
    };
    let input = PerMtok(f(0)?);
    Some(Price {
        input,
        cached_input: input,
        cache_write: input,
        output: PerMtok(f(1)?),
        batch_discount: Ppm(u32::try_from(f(2)?.min(1_000_000)).ok()?),
    })
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
            let price = parse_price(it.get(4), it.get(3));
            let user = it.get(5).and_then(|v| v.as_str()).map(str::to_string);
            Some((
                id,
                Account {
                    key_hash,
                    user,
                    model,
                    price,
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
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
);

fn from_raw(r: RawRecord) -> Record {
    let (
        job_id,
        batch_id,
        upstream,
        endpoint,
        model,
        input_file_id,
        lines,
        created_ms,
        poll,
        grace,
    ) = r;
    Record {
        job_id,
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

const COLUMNS: &str = "job_id, batch_id, upstream, endpoint, model, input_file_id, lines, \
                       created_ms, poll_ms, grace_ms";

/// Rows someone is working on (or should be): `creating` and `active`; `done` and `abandoned` are
/// final.
const LIVE: &str = "state IN ('creating', 'active')";

const MIGRATION: &str = "
    CREATE TABLE IF NOT EXISTS batch_jobs (
        job_id TEXT PRIMARY KEY,
        batch_id TEXT,
        upstream TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        input_file_id TEXT,
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

/// `1` when `batch_jobs` has the first schema (keyed by batch id, journaled after the create).
const OLD_SCHEMA_SQLITE: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
     AND name = 'batch_jobs' \
     AND NOT EXISTS (SELECT 1 FROM pragma_table_info('batch_jobs') WHERE name = 'job_id')";
const OLD_SCHEMA_POSTGRES: &str = "SELECT COUNT(*) FROM information_schema.tables t \
     WHERE t.table_schema = current_schema() AND t.table_name = 'batch_jobs' \
     AND NOT EXISTS (SELECT 1 FROM information_schema.columns c \
         WHERE c.table_schema = current_schema() AND c.table_name = 'batch_jobs' \
         AND c.column_name = 'job_id')";

/// Moves the rows of the first schema into the current one (their job id is their batch id).
fn upgrade_from_first_schema() -> String {
    format!(
        "ALTER TABLE batch_jobs RENAME TO batch_jobs_v1;
         DROP INDEX IF EXISTS batch_jobs_active;
         {MIGRATION}
         INSERT INTO batch_jobs ({COLUMNS}, owner, lease_until_ms, state, status, finished_ms)
             SELECT batch_id, batch_id, upstream, endpoint, model, input_file_id, lines,
                    created_ms, poll_ms, grace_ms, owner, lease_until_ms, state, status, finished_ms
             FROM batch_jobs_v1;
         DROP TABLE batch_jobs_v1;"
    )
}

/// The journal over one database.
pub struct Journal {
    backend: Backend,
}

enum Backend {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Postgres(Box<pg::Pg>),
}

/// A SQL parameter that is either backend's.
type SqlParams = Vec<Box<dyn Param>>;

/// A value both rusqlite and tokio-postgres can bind.
trait Param: Send + Sync {
    fn sqlite(&self) -> &dyn rusqlite::ToSql;
    fn postgres(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + Send + Sync> Param for T {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        self
    }

    fn postgres(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}

impl Journal {
    /// Opens (creating or upgrading the table) the database at `url`: `sqlite://PATH` or
    /// `postgres://...`.
    pub async fn open(url: &str) -> Result<Journal, JournalError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.to_string();
            let conn = tokio::task::spawn_blocking(
                move || -> Result<rusqlite::Connection, JournalError> {
                    let mut conn = if path == ":memory:" {
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
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let old: i64 = tx.query_row(OLD_SCHEMA_SQLITE, [], |r| r.get(0))?;
                    if old > 0 {
                        tx.execute_batch(&upgrade_from_first_schema())?;
                    }
                    tx.execute_batch(MIGRATION)?;
                    tx.commit()?;
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

    /// Run one statement (`?N` placeholders; `$N` for PostgreSQL is derived) with `params`;
    /// returns the rows it changed.
    async fn execute(&self, sql: String, params: SqlParams) -> Result<u64, JournalError> {
        match &self.backend {
            Backend::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let refs: Vec<&dyn rusqlite::ToSql> =
                        params.iter().map(|p| p.sqlite()).collect();
                    Ok(c.execute(&sql, refs.as_slice())? as u64)
                })
                .await
            }
            Backend::Postgres(p) => {
                let sql = sql.replace('?', "$");
                p.with(move |c| {
                    Box::pin(async move {
                        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                            params.iter().map(|p| p.postgres()).collect();
                        Ok(c.execute(&sql, refs.as_slice()).await?)
                    })
                })
                .await
            }
        }
    }

    /// Journal a job owned by `owner` with a fresh lease: `creating` while it has no batch id,
    /// else `active`.
    pub async fn insert(&self, rec: &Record, owner: &str, now_ms: i64) -> Result<(), JournalError> {
        let state = if rec.batch_id.is_some() {
            "active"
        } else {
            "creating"
        };
        let sql = format!(
            "INSERT INTO batch_jobs ({COLUMNS}, owner, lease_until_ms, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        );
        let params: SqlParams = vec![
            Box::new(rec.job_id.clone()),
            Box::new(rec.batch_id.clone()),
            Box::new(rec.upstream.clone()),
            Box::new(rec.endpoint.clone()),
            Box::new(rec.model.clone()),
            Box::new(rec.input_file_id.clone()),
            Box::new(lines_json(&rec.lines)),
            Box::new(rec.created_ms),
            Box::new(ms(rec.poll)),
            Box::new(ms(rec.grace)),
            Box::new(owner.to_string()),
            Box::new(now_ms.saturating_add(ms(rec.lease()))),
            Box::new(state.to_string()),
        ];
        bounded(self.execute(sql, params)).await.map(|_| ())
    }

    /// Record the uploaded input file of a job that has no batch yet (whoever owns it now: the
    /// id lets a recovering gateway delete the file).
    pub async fn set_file(&self, job_id: &str, file_id: &str) -> Result<bool, JournalError> {
        let sql = "UPDATE batch_jobs SET input_file_id = ?2 \
                   WHERE job_id = ?1 AND batch_id IS NULL"
            .to_string();
        let params: SqlParams = vec![Box::new(job_id.to_string()), Box::new(file_id.to_string())];
        Ok(bounded(self.execute(sql, params)).await? == 1)
    }

    /// Record the batch created for `job_id`, if none was recorded yet (by anyone): `owner` then
    /// owns the row (`active`, lease until `lease_until_ms`, grace counted from `created_ms`) and
    /// its accounting — `true`. `false`: another gateway recorded a batch for this job first.
    /// A row already resolved as `not_created` is reopened: the batch exists after all.
    pub async fn set_batch(
        &self,
        job_id: &str,
        owner: &str,
        batch_id: &str,
        input_file_id: Option<&str>,
        created_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, JournalError> {
        let sql = "UPDATE batch_jobs SET batch_id = ?2, owner = ?3, \
                   input_file_id = COALESCE(input_file_id, ?4), created_ms = ?5, \
                   lease_until_ms = ?6, state = 'active', status = NULL, finished_ms = NULL \
                   WHERE job_id = ?1 AND batch_id IS NULL"
            .to_string();
        let params: SqlParams = vec![
            Box::new(job_id.to_string()),
            Box::new(batch_id.to_string()),
            Box::new(owner.to_string()),
            Box::new(input_file_id.map(str::to_string)),
            Box::new(created_ms),
            Box::new(lease_until_ms),
        ];
        Ok(bounded(self.execute(sql, params)).await? == 1)
    }

    /// Extend `owner`'s lease until `lease_until_ms` and note the job's status; `false` when the
    /// row is no longer this owner's (another gateway claimed it) or no longer live.
    pub async fn renew(
        &self,
        job_id: &str,
        owner: &str,
        lease_until_ms: i64,
        status: &str,
    ) -> Result<bool, JournalError> {
        let sql = format!(
            "UPDATE batch_jobs SET lease_until_ms = ?3, status = ?4 \
             WHERE job_id = ?1 AND owner = ?2 AND {LIVE}"
        );
        let params: SqlParams = vec![
            Box::new(job_id.to_string()),
            Box::new(owner.to_string()),
            Box::new(lease_until_ms),
            Box::new(status.to_string()),
        ];
        Ok(bounded(self.execute(sql, params)).await? == 1)
    }

    /// Mark the job finished (`state` `done`, or `abandoned` when it cannot be finished) with its
    /// final `status`, if `owner` still owns it. `true`: the caller owns the outcome and records
    /// the spend; `false`: another gateway does.
    pub async fn finish(
        &self,
        job_id: &str,
        owner: &str,
        state: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<bool, JournalError> {
        let sql = format!(
            "UPDATE batch_jobs SET state = ?3, status = ?4, finished_ms = ?5 \
             WHERE job_id = ?1 AND owner = ?2 AND {LIVE}"
        );
        let params: SqlParams = vec![
            Box::new(job_id.to_string()),
            Box::new(owner.to_string()),
            Box::new(state.to_string()),
            Box::new(status.to_string()),
            Box::new(now_ms),
        ];
        Ok(bounded(self.execute(sql, params)).await? == 1)
    }

    /// Claim for `owner` every live job (`creating` or `active`) whose lease ran out by `now_ms`,
    /// except those in `exclude` (this process works on them already). A row is claimed only if
    /// its lease is still out at the moment of the update (so two scanners never both get it).
    pub async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        exclude: &HashSet<String>,
    ) -> Result<Vec<Record>, JournalError> {
        bounded(self.claim_inner(owner, now_ms, exclude.clone())).await
    }

    async fn claim_inner(
        &self,
        owner: &str,
        now_ms: i64,
        exclude: HashSet<String>,
    ) -> Result<Vec<Record>, JournalError> {
        let owner = owner.to_string();
        let select =
            format!("SELECT {COLUMNS} FROM batch_jobs WHERE {LIVE} AND lease_until_ms < ?1");
        let update = format!(
            "UPDATE batch_jobs SET owner = ?2, lease_until_ms = ?3 \
             WHERE job_id = ?1 AND {LIVE} AND lease_until_ms < ?4"
        );
        let raws: Vec<RawRecord> = match &self.backend {
            Backend::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let mut stale = Vec::new();
                    {
                        let mut st = c.prepare_cached(&select)?;
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
                                r.get(9)?,
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
                        let lease = ms(lease_for(Duration::from_millis(r.8.max(1) as u64)));
                        let n = c.execute(
                            &update,
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
                let (select, update) = (select.replace('?', "$"), update.replace('?', "$"));
                p.with(|c| {
                    Box::pin(async move {
                        let rows = c.query(&select, &[&now_ms]).await?;
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
                                row.try_get(9)?,
                            );
                            if exclude.contains(&r.0) {
                                continue;
                            }
                            let lease = ms(lease_for(Duration::from_millis(r.8.max(1) as u64)));
                            let until = now_ms.saturating_add(lease);
                            let n = c.execute(&update, &[&r.0, &owner, &until, &now_ms]).await?;
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

    use super::{upgrade_from_first_schema, JournalError, MIGRATION, OLD_SCHEMA_POSTGRES};
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
                    let old: i64 = tx.query_one(OLD_SCHEMA_POSTGRES, &[]).await?.try_get(0)?;
                    if old > 0 {
                        tx.batch_execute(&upgrade_from_first_schema()).await?;
                    }
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
    #[test]
    fn journals_with_float_prices_are_read() {
        let lines =
            parse_lines(r#"[["c1", null, "m", [2.5, 10.0, 0.5]], ["c2", null, "m", null]]"#);
        let p = lines[0].1.price.unwrap();
        assert_eq!(
            (p.input, p.cached_input, p.output),
            (PerMtok(2_500_000), PerMtok(2_500_000), PerMtok(10_000_000))
        );
        assert_eq!(p.batch_discount, Ppm(500_000));
        assert_eq!(lines[1].1.price, None);
        assert_eq!(lines[0].1.user, None);
    }

    use super::*;

    fn record(job: &str, batch: Option<&str>) -> Record {
        Record {
            job_id: job.into(),
            batch_id: batch.map(str::to_string),
            upstream: "a".into(),
            endpoint: "/v1/chat/completions".into(),
            model: "gpt-4o-mini".into(),
            input_file_id: batch.map(|_| "file-1".to_string()),
            lines: vec![
                (
                    "c1".into(),
                    Account {
                        key_hash: Some("ab".repeat(32)),
                        user: Some("u1".into()),
                        model: "m".into(),
                        price: Some(Price {
                            input: PerMtok(2_500_000),
                            cached_input: PerMtok(1_250_000),
                            cache_write: PerMtok(2_500_000),
                            output: PerMtok(10_000_000),
                            batch_discount: Ppm(500_000),
                        }),
                    },
                ),
                (
                    "c2".into(),
                    Account {
                        key_hash: None,
                        user: None,
                        model: "m".into(),
                        price: None,
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
        let rec = record("job_1", Some("batch_1"));
        j.insert(&rec, "old", 10_000).await.unwrap();
        // The lease (3 polls + 2 s) still holds: nothing to claim.
        assert!(j.claim("new", 10_500, &none).await.unwrap().is_empty());
        assert!(j
            .renew("job_1", "old", 20_000, "in_progress")
            .await
            .unwrap());
        // Ran out: claimed once, with the lines intact.
        let got = j.claim("new", 20_001, &none).await.unwrap();
        assert_eq!(got, vec![rec]);
        assert!(j.claim("third", 20_002, &none).await.unwrap().is_empty());
        // The old owner lost it: it can neither renew nor finish.
        assert!(!j.renew("job_1", "old", 30_000, "x").await.unwrap());
        assert!(!j
            .finish("job_1", "old", "done", "completed", 1)
            .await
            .unwrap());
        assert!(j
            .finish("job_1", "new", "done", "completed", 1)
            .await
            .unwrap());
        assert!(!j
            .finish("job_1", "new", "done", "completed", 1)
            .await
            .unwrap());
        assert!(j.claim("x", i64::MAX - 1, &none).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_id_is_recorded_once_whoever_learns_it() {
        let j = Journal::open("sqlite://:memory:").await.unwrap();
        let none = HashSet::new();
        let rec = record("job_2", None);
        j.insert(&rec, "old", 10_000).await.unwrap();
        assert!(j.set_file("job_2", "file-9").await.unwrap());
        // The owner stalls in the create; another gateway claims the creating row.
        let got = j.claim("new", 20_000, &none).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].batch_id, None);
        assert_eq!(got[0].input_file_id.as_deref(), Some("file-9"));
        // The first to record the batch owns it (here the stalled owner, whose create answered).
        assert!(j
            .set_batch("job_2", "old", "batch_9", None, 21_000, 40_000)
            .await
            .unwrap());
        assert!(!j
            .set_batch("job_2", "new", "batch_9", Some("file-9"), 21_500, 40_000)
            .await
            .unwrap());
        assert!(!j.set_file("job_2", "file-x").await.unwrap());
        assert!(!j.renew("job_2", "new", 50_000, "x").await.unwrap());
        assert!(j
            .renew("job_2", "old", 50_000, "in_progress")
            .await
            .unwrap());
        let rec = j.claim("third", 50_001, &none).await.unwrap();
        assert_eq!(rec[0].batch_id.as_deref(), Some("batch_9"));
        assert_eq!(rec[0].input_file_id.as_deref(), Some("file-9"));
        assert_eq!(rec[0].created_ms, 21_000);
    }

    #[tokio::test]
    async fn a_row_resolved_as_not_created_reopens_when_its_batch_turns_up() {
        let j = Journal::open("sqlite://:memory:").await.unwrap();
        let none = HashSet::new();
        j.insert(&record("job_3", None), "old", 10_000)
            .await
            .unwrap();
        assert_eq!(j.claim("new", 20_000, &none).await.unwrap().len(), 1);
        assert!(j
            .finish("job_3", "new", "done", "not_created", 20_100)
            .await
            .unwrap());
        assert!(j.claim("x", 90_000, &none).await.unwrap().is_empty());
        // The stalled owner's create answered after all: the batch exists, the row is live again.
        assert!(j
            .set_batch("job_3", "old", "batch_3", Some("file-3"), 21_000, 30_000)
            .await
            .unwrap());
        let got = j.claim("x", 90_000, &none).await.unwrap();
        assert_eq!(got[0].batch_id.as_deref(), Some("batch_3"));
    }

    #[tokio::test]
    async fn rows_of_the_first_schema_are_upgraded() {
        let path = std::env::temp_dir().join(format!(
            "llmproxy-journal-upgrade-{}-{:x}.db",
            std::process::id(),
            rand::random::<u64>()
        ));
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE batch_jobs (
                    batch_id TEXT PRIMARY KEY, upstream TEXT NOT NULL, endpoint TEXT NOT NULL,
                    model TEXT NOT NULL, input_file_id TEXT NOT NULL, lines TEXT NOT NULL,
                    created_ms BIGINT NOT NULL, poll_ms BIGINT NOT NULL, grace_ms BIGINT NOT NULL,
                    owner TEXT NOT NULL, lease_until_ms BIGINT NOT NULL, state TEXT NOT NULL,
                    status TEXT, finished_ms BIGINT);
                 CREATE INDEX batch_jobs_active ON batch_jobs (state, lease_until_ms);
                 INSERT INTO batch_jobs VALUES ('batch_old', 'a', '/v1/chat/completions', 'm',
                    'file-old', '[[\"c1\",null,\"m\",null]]', 5, 100, 60000, 'gone', 0, 'active',
                    'in_progress', NULL);",
            )
            .unwrap();
        }
        let url = format!("sqlite://{}", path.display());
        let j = Journal::open(&url).await.unwrap();
        let got = j.claim("new", 1000, &HashSet::new()).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].job_id, "batch_old");
        assert_eq!(got[0].batch_id.as_deref(), Some("batch_old"));
        assert_eq!(got[0].input_file_id.as_deref(), Some("file-old"));
        assert_eq!(got[0].lines.len(), 1);
        drop(j);
        // Opening again leaves the current schema alone.
        let j = Journal::open(&url).await.unwrap();
        j.insert(&record("job_4", None), "o", 1).await.unwrap();
        drop(j);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
