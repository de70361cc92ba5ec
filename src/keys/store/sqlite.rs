//! The embedded SQLite backend. rusqlite is blocking: every call runs on tokio's blocking pool
//! (`spawn_blocking`), never on an async worker, with the connection behind a mutex.

use super::logs::{Param, AUDIT_COLUMNS, SPEND_LOG_COLUMNS};
use super::*;
use rusqlite::types::ToSqlOutput;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Mutex;

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

const MIGRATION: &str = "
    CREATE TABLE IF NOT EXISTS keys (
        hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        alias TEXT,
        models TEXT NOT NULL DEFAULT '[]',
        aliases TEXT NOT NULL DEFAULT '{}',
        expires INTEGER,
        max_budget_micros INTEGER,
        budget_duration INTEGER,
        budget_reset_at INTEGER,
        spend_micros INTEGER NOT NULL DEFAULT 0,
        rpm INTEGER,
        tpm INTEGER,
        metadata TEXT NOT NULL DEFAULT 'null',
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        routes TEXT NOT NULL DEFAULT '[]',
        team_id TEXT
    );
    CREATE TABLE IF NOT EXISTS spend (
        key_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        spend_micros INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_hash, model)
    );
    CREATE TABLE IF NOT EXISTS spend_logs (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        key_id TEXT,
        team_id TEXT,
        end_user TEXT,
        model TEXT NOT NULL,
        deployment TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_micros INTEGER NOT NULL DEFAULT 0,
        priced INTEGER NOT NULL DEFAULT 1,
        cache_hit INTEGER NOT NULL DEFAULT 0,
        batch_id TEXT,
        status INTEGER NOT NULL DEFAULT 0,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS spend_logs_start ON spend_logs (start_ms);
    CREATE INDEX IF NOT EXISTS spend_logs_key ON spend_logs (key_id, start_ms);
    CREATE INDEX IF NOT EXISTS spend_logs_team ON spend_logs (team_id, start_ms);
    CREATE TABLE IF NOT EXISTS audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        updated_at_ms INTEGER NOT NULL,
        changed_by TEXT NOT NULL,
        action TEXT NOT NULL,
        table_name TEXT NOT NULL,
        object_id TEXT,
        before_value TEXT NOT NULL DEFAULT 'null',
        updated_values TEXT NOT NULL DEFAULT 'null'
    );
    CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (updated_at_ms);";

/// `teams` / `end_users`: the same columns, by `team_id` / `user_id`.
fn account_table(kind: AccountKind) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
            {} TEXT PRIMARY KEY,
            alias TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            max_budget_micros INTEGER,
            budget_duration INTEGER,
            budget_reset_at INTEGER,
            spend_micros INTEGER NOT NULL DEFAULT 0,
            total_spend_micros INTEGER NOT NULL DEFAULT 0,
            rpm INTEGER,
            tpm INTEGER,
            metadata TEXT NOT NULL DEFAULT 'null',
            blocked INTEGER NOT NULL DEFAULT 0,
            created INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0
        );",
        kind.table(),
        kind.id_field()
    )
}

/// Columns added after the first release, each with its default for existing rows.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("keys", "routes", "TEXT NOT NULL DEFAULT '[]'"),
    ("keys", "team_id", "TEXT"),
    ("keys", "spend_micros", "INTEGER NOT NULL DEFAULT 0"),
    ("keys", "max_budget_micros", "INTEGER"),
    ("spend", "spend_micros", "INTEGER NOT NULL DEFAULT 0"),
];

fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let mut have = Vec::new();
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = st.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        have.push(n?);
    }
    Ok(have)
}

/// Brings a database created by an older release to the current schema: adds the columns it lacks
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`), then moves dollar amounts into micro-dollar columns
/// (× 10⁶, rounded) and drops the old ones — all in one transaction, which takes the write lock
/// first, so that two processes opening one file at once do not both convert it.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (table, name, decl) in ADDED_COLUMNS {
        if !columns(&tx, table)?.iter().any(|h| h == name) {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {decl}"))?;
        }
    }
    for (table, old, new) in MONEY_COLUMNS {
        if columns(&tx, table)?.iter().any(|h| h == old) {
            let n = tx.execute(
                &format!(
                    "UPDATE {table} SET {new} = CAST(ROUND({old} * 1000000) AS INTEGER) \
                     WHERE {old} IS NOT NULL"
                ),
                [],
            )?;
            tx.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {old}"))?;
            log::info!("key store: converted {table}.{old} (USD) to {table}.{new} (micro-dollars) in {n} rows");
        }
    }
    tx.commit()?;
    Ok(())
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey {
        hash: r.get(0)?,
        key_id: r.get(1)?,
        alias: r.get(2)?,
        models: r.get(3)?,
        aliases: r.get(4)?,
        expires: r.get(5)?,
        limits: RawLimits {
            max_budget: r.get(6)?,
            budget_duration: r.get(7)?,
            budget_reset_at: r.get(8)?,
            rpm: r.get(10)?,
            tpm: r.get(11)?,
        },
        spend: r.get(9)?,
        metadata: r.get(12)?,
        created: r.get(13)?,
        deleted: r.get(14)?,
        routes: r.get(15)?,
        team_id: r.get(16)?,
    })
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAccount> {
    // id, then ACCOUNT_COLUMNS: alias 1, models 2, max_budget 3, duration 4, reset 5, spend 6,
    // total 7, rpm 8, tpm 9, metadata 10, blocked 11, created 12, deleted 13.
    Ok(RawAccount {
        id: r.get(0)?,
        alias: r.get(1)?,
        models: r.get(2)?,
        limits: RawLimits {
            max_budget: r.get(3)?,
            budget_duration: r.get(4)?,
            budget_reset_at: r.get(5)?,
            rpm: r.get(8)?,
            tpm: r.get(9)?,
        },
        spend: r.get(6)?,
        total_spend: r.get(7)?,
        metadata: r.get(10)?,
        blocked: r.get(11)?,
        created: r.get(12)?,
        deleted: r.get(13)?,
    })
}

fn log_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SpendLogRow> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(to_u64(r.get::<_, i64>(i)?)) };
    Ok(SpendLogRow {
        request_id: r.get(0)?,
        key_id: r.get::<_, Option<String>>(1)?.map(Arc::from),
        team_id: r.get::<_, Option<String>>(2)?.map(Arc::from),
        end_user: r.get::<_, Option<String>>(3)?.map(Arc::from),
        model: r.get(4)?,
        deployment: r.get(5)?,
        prompt_tokens: n(6)?,
        cached_tokens: n(7)?,
        cache_write_tokens: n(8)?,
        completion_tokens: n(9)?,
        reasoning_tokens: n(10)?,
        cost: Micros(n(11)?),
        priced: r.get(12)?,
        cache_hit: r.get(13)?,
        batch_id: r.get(14)?,
        status: u16::try_from(r.get::<_, i64>(15)?).unwrap_or(0),
        start_ms: r.get(16)?,
        end_ms: r.get(17)?,
    })
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        changed_by: r.get(2)?,
        action: r.get(3)?,
        table_name: r.get(4)?,
        object_id: r.get(5)?,
        before_value: json_value(&r.get::<_, String>(6)?),
        updated_values: json_value(&r.get::<_, String>(7)?),
    })
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(s) => s.to_sql(),
            Param::Int(i) => i.to_sql(),
        }
    }
}

fn placeholder(i: usize) -> String {
    format!("?{i}")
}

impl SqliteStore {
    /// Opens `path` (`:memory:` for a private in-memory database), creating its directory, the
    /// file and the tables.
    pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let path = path.to_string();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = if path == ":memory:" {
                Connection::open_in_memory()?
            } else {
                if let Some(dir) = std::path::Path::new(&path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| StoreError(format!("creating {}: {e}", dir.display())))?;
                    }
                }
                Connection::open(&path)?
            };
            // WAL lets readers (another instance's refresh, the CLI, the spend-log writer's
            // connection) work beside the writer; the busy timeout waits out a concurrent writer
            // instead of failing. NORMAL sync is durable in WAL mode except for the last
            // transactions before a power loss.
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
            conn.execute_batch("PRAGMA synchronous=NORMAL")?;
            conn.execute_batch(MIGRATION)?;
            for kind in [AccountKind::Team, AccountKind::EndUser] {
                conn.execute_batch(&account_table(kind))?;
            }
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError(format!("sqlite open task: {e}")))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError("sqlite connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError(format!("sqlite task: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, key: &VirtualKey) -> Result<(), StoreError> {
        let f = KeyFields::of(key);
        let (hash, key_id, spend, created, deleted) = (
            key.hash.clone(),
            key.key_id.clone(),
            to_i64(key.spend.0),
            key.created,
            key.deleted,
        );
        self.run(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ),
                params![
                    hash,
                    key_id,
                    f.alias,
                    f.models,
                    f.aliases,
                    f.expires,
                    f.limits.max_budget,
                    f.limits.budget_duration,
                    f.limits.budget_reset_at,
                    spend,
                    f.limits.rpm,
                    f.limits.tpm,
                    f.metadata,
                    created,
                    deleted,
                    f.routes,
                    f.team_id
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn update(&self, key: &VirtualKey) -> Result<bool, StoreError> {
        let f = KeyFields::of(key);
        let hash = key.hash.clone();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE keys SET alias = ?2, models = ?3, aliases = ?4, expires = ?5, \
                 max_budget_micros = ?6, budget_duration = ?7, budget_reset_at = ?8, rpm = ?9, \
                 tpm = ?10, metadata = ?11, routes = ?12, team_id = ?13 \
                 WHERE hash = ?1 AND deleted = 0",
                params![
                    hash,
                    f.alias,
                    f.models,
                    f.aliases,
                    f.expires,
                    f.limits.max_budget,
                    f.limits.budget_duration,
                    f.limits.budget_reset_at,
                    f.limits.rpm,
                    f.limits.tpm,
                    f.metadata,
                    f.routes,
                    f.team_id
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete(&self, hash: &str) -> Result<bool, StoreError> {
        let hash = hash.to_string();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE keys SET deleted = 1 WHERE hash = ?1 AND deleted = 0",
                params![hash],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn get(&self, hash: &str) -> Result<Option<VirtualKey>, StoreError> {
        let hash = hash.to_string();
        self.run(move |c| {
            let r = c
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = ?1"),
                    params![hash],
                    key_row,
                )
                .optional()?;
            Ok(r.map(RawKey::into_key))
        })
        .await
    }

    async fn load_all(&self) -> Result<Vec<VirtualKey>, StoreError> {
        self.run(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys"))?;
            let rows = st.query_map([], key_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?.into_key());
            }
            Ok(out)
        })
        .await
    }

    async fn insert_account(&self, kind: AccountKind, a: &Account) -> Result<bool, StoreError> {
        let a = RawAccount::of(a);
        self.run(move |c| {
            let (table, id) = (kind.table(), kind.id_field());
            // A deleted row with this id is replaced; a live one is left alone (0 rows changed).
            let n = c.execute(
                &format!(
                    "INSERT INTO {table} ({id}, {ACCOUNT_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?9, ?10, ?11, 0) \
                     ON CONFLICT ({id}) DO UPDATE SET alias = excluded.alias, \
                     models = excluded.models, max_budget_micros = excluded.max_budget_micros, \
                     budget_duration = excluded.budget_duration, \
                     budget_reset_at = excluded.budget_reset_at, spend_micros = 0, \
                     total_spend_micros = 0, rpm = excluded.rpm, tpm = excluded.tpm, \
                     metadata = excluded.metadata, blocked = excluded.blocked, \
                     created = excluded.created, deleted = 0 WHERE {table}.deleted = 1"
                ),
                params![
                    a.id,
                    a.alias,
                    a.models,
                    a.limits.max_budget,
                    a.limits.budget_duration,
                    a.limits.budget_reset_at,
                    a.limits.rpm,
                    a.limits.tpm,
                    a.metadata,
                    a.blocked,
                    a.created
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn update_account(&self, kind: AccountKind, a: &Account) -> Result<bool, StoreError> {
        let a = RawAccount::of(a);
        self.run(move |c| {
            let n = c.execute(
                &format!(
                    "UPDATE {} SET alias = ?2, models = ?3, max_budget_micros = ?4, \
                     budget_duration = ?5, budget_reset_at = ?6, rpm = ?7, tpm = ?8, \
                     metadata = ?9, blocked = ?10 WHERE {} = ?1 AND deleted = 0",
                    kind.table(),
                    kind.id_field()
                ),
                params![
                    a.id,
                    a.alias,
                    a.models,
                    a.limits.max_budget,
                    a.limits.budget_duration,
                    a.limits.budget_reset_at,
                    a.limits.rpm,
                    a.limits.tpm,
                    a.metadata,
                    a.blocked
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_account(&self, kind: AccountKind, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let n = c.execute(
                &format!(
                    "UPDATE {} SET deleted = 1 WHERE {} = ?1 AND deleted = 0",
                    kind.table(),
                    kind.id_field()
                ),
                params![id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_account(
        &self,
        kind: AccountKind,
        id: &str,
    ) -> Result<Option<Account>, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let r = c
                .query_row(
                    &format!(
                        "SELECT {}, {ACCOUNT_COLUMNS} FROM {} WHERE {} = ?1",
                        kind.id_field(),
                        kind.table(),
                        kind.id_field()
                    ),
                    params![id],
                    account_row,
                )
                .optional()?;
            Ok(r.map(RawAccount::into_account))
        })
        .await
    }

    async fn load_accounts(&self, kind: AccountKind) -> Result<Vec<Account>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {}, {ACCOUNT_COLUMNS} FROM {}",
                kind.id_field(),
                kind.table()
            ))?;
            let rows = st.query_map([], account_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?.into_account());
            }
            Ok(out)
        })
        .await
    }

    async fn add_spend(&self, batch: &[SpendIncrement]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let a = aggregate(batch);
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "UPDATE keys SET spend_micros = spend_micros + ?1 WHERE hash = ?2",
                )?;
                for (hash, v) in &a.keys {
                    up.execute(params![v, hash])?;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT INTO spend (key_hash, model, spend_micros) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key_hash, model) DO UPDATE \
                     SET spend_micros = spend_micros + excluded.spend_micros",
                )?;
                for (hash, model, v) in &a.key_models {
                    ins.execute(params![hash, model, v])?;
                }
                for (kind, list) in [
                    (AccountKind::Team, &a.teams),
                    (AccountKind::EndUser, &a.users),
                ] {
                    let mut up = tx.prepare_cached(&format!(
                        "UPDATE {} SET spend_micros = spend_micros + ?1, \
                         total_spend_micros = total_spend_micros + ?1 WHERE {} = ?2",
                        kind.table(),
                        kind.id_field()
                    ))?;
                    for (id, v) in list {
                        up.execute(params![v, id])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn model_spend(&self, hash: &str) -> Result<HashMap<String, Micros>, StoreError> {
        let hash = hash.to_string();
        self.run(move |c| {
            let mut st =
                c.prepare_cached("SELECT model, spend_micros FROM spend WHERE key_hash = ?1")?;
            let rows = st.query_map(params![hash], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut out = HashMap::new();
            for r in rows {
                let (m, v) = r?;
                out.insert(m, micros(v));
            }
            Ok(out)
        })
        .await
    }

    async fn reset_budgets(&self, now: i64) -> Result<u64, StoreError> {
        self.run(move |c| {
            let mut n = 0;
            for table in ["keys", AccountKind::Team.table(), AccountKind::EndUser.table()] {
                n += c.execute(
                    &format!(
                        "UPDATE {table} SET spend_micros = 0, budget_reset_at = ?1 + budget_duration \
                         WHERE budget_duration IS NOT NULL AND budget_reset_at IS NOT NULL \
                         AND budget_reset_at <= ?1 AND deleted = 0"
                    ),
                    params![now],
                )?;
            }
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn insert_spend_logs(&self, rows: Arc<[SpendLogRow]>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                // Full chunks in one statement each (a statement's fixed cost, ~1.6k instructions
                // in SQLite, paid once per chunk rather than per row), the rest row by row.
                let mut chunk = tx.prepare_cached(&insert_rows_sql(ROWS_PER_INSERT))?;
                let mut one = tx.prepare_cached(&insert_rows_sql(1))?;
                let chunks = rows.len() / ROWS_PER_INSERT;
                let mut rows = rows.iter();
                let mut values = Vec::with_capacity(ROWS_PER_INSERT * SPEND_LOG_FIELDS);
                for _ in 0..chunks {
                    values.extend(
                        rows.by_ref()
                            .take(ROWS_PER_INSERT)
                            .flat_map(spend_log_values),
                    );
                    chunk.execute(rusqlite::params_from_iter(values.drain(..)))?;
                }
                for r in rows {
                    one.execute(rusqlite::params_from_iter(spend_log_values(r)))?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn spend_logs(&self, q: &SpendLogQuery) -> Result<(Vec<SpendLogRow>, u64), StoreError> {
        let q = q.clone();
        self.run(move |c| {
            let f = q.filter();
            let w = f.sql(1, placeholder);
            let params: Vec<&Param> = f.params().collect();
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM spend_logs{w}"),
                rusqlite::params_from_iter(params.iter()),
                |r| r.get(0),
            )?;
            let n = f.len();
            let mut st = c.prepare(&format!(
                "SELECT {SPEND_LOG_COLUMNS} FROM spend_logs{w} ORDER BY start_ms DESC, id DESC \
                 LIMIT ?{} OFFSET ?{}",
                n + 1,
                n + 2
            ))?;
            let mut all: Vec<Param> = f.params().cloned().collect();
            all.push(Param::Int(to_i64(q.limit)));
            all.push(Param::Int(to_i64(q.offset)));
            let rows = st.query_map(rusqlite::params_from_iter(all.iter()), log_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?);
            }
            Ok((out, to_u64(total)))
        })
        .await
    }

    async fn spend_report(&self, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError> {
        let q = q.clone();
        self.run(move |c| {
            let f = q.filter();
            let col = q.group.column();
            let mut st = c.prepare(&format!(
                "SELECT start_ms / 86400000 AS day, {col}, SUM(cost_micros), COUNT(*), \
                 SUM(prompt_tokens), SUM(completion_tokens) FROM spend_logs{} \
                 GROUP BY day, {col} ORDER BY day, SUM(cost_micros) DESC",
                f.sql(1, placeholder)
            ))?;
            let rows = st.query_map(rusqlite::params_from_iter(f.params()), |r| {
                Ok(ReportRow {
                    day: r.get(0)?,
                    group: r.get(1)?,
                    spend: micros(r.get(2)?),
                    requests: to_u64(r.get(3)?),
                    prompt_tokens: to_u64(r.get(4)?),
                    completion_tokens: to_u64(r.get(5)?),
                })
            })?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?);
            }
            Ok(out)
        })
        .await
    }

    async fn prune_spend_logs(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.run(move |c| {
            let n = c.execute(
                "DELETE FROM spend_logs WHERE start_ms < ?1",
                params![before_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO audit_log (updated_at_ms, changed_by, action, table_name, object_id, \
                 before_value, updated_values) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    e.at_ms,
                    e.changed_by,
                    e.action,
                    e.table_name,
                    e.object_id,
                    e.before_value.to_string(),
                    e.updated_values.to_string()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn audit_logs(&self, q: &AuditQuery) -> Result<(Vec<AuditEntry>, u64), StoreError> {
        let q = q.clone();
        self.run(move |c| {
            let f = q.filter();
            let w = f.sql(1, placeholder);
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM audit_log{w}"),
                rusqlite::params_from_iter(f.params()),
                |r| r.get(0),
            )?;
            let n = f.len();
            let mut st = c.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log{w} ORDER BY id DESC LIMIT ?{} OFFSET ?{}",
                n + 1,
                n + 2
            ))?;
            let mut all: Vec<Param> = f.params().cloned().collect();
            all.push(Param::Int(to_i64(q.limit)));
            all.push(Param::Int(to_i64(q.offset)));
            let rows = st.query_map(rusqlite::params_from_iter(all.iter()), audit_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?);
            }
            Ok((out, to_u64(total)))
        })
        .await
    }
}

/// Spend-log rows per multi-row `INSERT` (18 values each: well under SQLite's 32,766 variables).
const ROWS_PER_INSERT: usize = 32;

/// `INSERT INTO spend_logs (...) VALUES (?, ...), ...` for `rows` rows.
fn insert_rows_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; SPEND_LOG_FIELDS].join(", "));
    format!(
        "INSERT INTO spend_logs ({SPEND_LOG_COLUMNS}) VALUES {}",
        vec![one; rows].join(", ")
    )
}

/// Columns of [`SPEND_LOG_COLUMNS`], in order.
const SPEND_LOG_FIELDS: usize = 18;

/// One row's values, in [`SPEND_LOG_COLUMNS`]' order: its text bound where it is (SQLite copies
/// it into the statement), not copied out of the row first.
fn spend_log_values(r: &SpendLogRow) -> [ToSqlOutput<'_>; SPEND_LOG_FIELDS] {
    use rusqlite::types::{Value, ValueRef};
    fn text(s: &str) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
    }
    fn opt(s: Option<&str>) -> ToSqlOutput<'_> {
        s.map_or(ToSqlOutput::Owned(Value::Null), text)
    }
    let int = |i: i64| ToSqlOutput::Owned(Value::Integer(i));
    [
        text(&r.request_id),
        opt(r.key_id.as_deref()),
        opt(r.team_id.as_deref()),
        opt(r.end_user.as_deref()),
        text(&r.model),
        opt(r.deployment.as_deref()),
        int(to_i64(r.prompt_tokens)),
        int(to_i64(r.cached_tokens)),
        int(to_i64(r.cache_write_tokens)),
        int(to_i64(r.completion_tokens)),
        int(to_i64(r.reasoning_tokens)),
        int(to_i64(r.cost.0)),
        int(i64::from(r.priced)),
        int(i64::from(r.cache_hit)),
        opt(r.batch_id.as_deref()),
        int(i64::from(r.status)),
        int(r.start_ms),
        int(r.end_ms),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written in full multi-row chunks and one by one read back as they were, every field.
    #[tokio::test]
    async fn spend_logs_round_trip_in_chunks_and_singly() {
        let store = SqliteStore::open(":memory:").await.unwrap();
        let n = 2 * ROWS_PER_INSERT + 5;
        let rows: Vec<SpendLogRow> = (0..n)
            .map(|i| SpendLogRow {
                request_id: format!("r{i}"),
                key_id: (i % 2 == 0).then(|| format!("k{i}").into()),
                team_id: (i % 3 == 0).then(|| "team".into()),
                end_user: (i % 5 == 0).then(|| format!("u{i}").into()),
                model: "m".into(),
                deployment: Some("d".into()),
                prompt_tokens: i as u64,
                cached_tokens: 1,
                cache_write_tokens: 2,
                completion_tokens: 3 + i as u64,
                reasoning_tokens: 4,
                cost: Micros(10 * i as u64),
                priced: i % 7 != 0,
                cache_hit: i % 4 == 0,
                batch_id: (i % 6 == 0).then(|| "batch_1".into()),
                status: 200,
                start_ms: 1_000 + i as i64,
                end_ms: 2_000 + i as i64,
            })
            .collect();
        store.insert_spend_logs(rows.clone().into()).await.unwrap();
        let q = SpendLogQuery {
            limit: 1000,
            ..Default::default()
        };
        let (mut back, total) = store.spend_logs(&q).await.unwrap();
        assert_eq!(total, n as u64);
        back.sort_by_key(|r| r.start_ms);
        assert_eq!(back, rows);
    }

    /// A database written by the release that kept dollars as REAL is converted in place.
    #[tokio::test]
    async fn dollar_columns_become_micro_dollars() {
        let dir = std::env::temp_dir().join(format!("llmproxy-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE keys (hash TEXT PRIMARY KEY, key_id TEXT NOT NULL, alias TEXT,
                   models TEXT NOT NULL DEFAULT '[]', aliases TEXT NOT NULL DEFAULT '{}',
                   expires INTEGER, max_budget REAL, budget_duration INTEGER,
                   budget_reset_at INTEGER, spend REAL NOT NULL DEFAULT 0, rpm INTEGER,
                   tpm INTEGER, metadata TEXT NOT NULL DEFAULT 'null', created INTEGER NOT NULL,
                   deleted INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE spend (key_hash TEXT NOT NULL, model TEXT NOT NULL,
                   spend REAL NOT NULL DEFAULT 0, PRIMARY KEY (key_hash, model));
                 INSERT INTO keys (hash, key_id, max_budget, spend, created)
                   VALUES ('aa', 'kaa', 12.5, 0.0000125, 1), ('bb', 'kbb', NULL, 3.0000004, 2);
                 INSERT INTO spend VALUES ('aa', 'gpt-4o', 0.0000125), ('bb', 'm', 3.0000004);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let a = store.get("aa").await.unwrap().unwrap();
        assert_eq!(a.spend, Micros(13)); // 12.5 micro-dollars, rounded half away from zero
        assert_eq!(a.limits.max_budget, Some(Micros(12_500_000)));
        assert_eq!(a.routes, Vec::<String>::new());
        let b = store.get("bb").await.unwrap().unwrap();
        assert_eq!((b.spend, b.limits.max_budget), (Micros(3_000_000), None));
        assert_eq!(
            store.model_spend("aa").await.unwrap().get("gpt-4o"),
            Some(&Micros(13))
        );
        // Opening again is a no-op.
        drop(store);
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        assert_eq!(store.get("aa").await.unwrap().unwrap().spend, Micros(13));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
