//! Where keys and spend are kept: the [`Store`] trait and its two backends, SQLite (embedded, the
//! default) and PostgreSQL (shared by instances). Neither is ever called on the request path: the
//! in-memory view ([`super::Keys`]) reads them in the background and on management calls.
//!
//! Schema (created on open, idempotently, in both backends):
//! - `keys`: one row per virtual key, by SHA-256 hex `hash`; `spend` is the current budget period's
//!   spend; deleted keys stay as rows with `deleted` set so that every instance learns of the deletion.
//! - `spend`: lifetime spend per key and model, `(key_hash, model)` primary key.

use super::VirtualKey;
use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A storage failure (connection, SQL, or a URL that names no supported database).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(format!("sqlite: {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The cause (refused connection, SQL error text) is in the source, not in Display.
        match std::error::Error::source(&e) {
            Some(cause) => StoreError(format!("postgres: {e}: {cause}")),
            None => StoreError(format!("postgres: {e}")),
        }
    }
}

/// Spend to add to one key for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendIncrement {
    pub hash: String,
    pub model: String,
    pub usd: f64,
}

/// The operations the view and the management API need.
#[async_trait]
pub trait Store: Send + Sync {
    /// Adds a new key (its hash must be new).
    async fn insert(&self, key: &VirtualKey) -> Result<(), StoreError>;
    /// Writes every field of an existing, non-deleted key except `spend`, `hash`, `key_id`, `created`
    /// and `deleted` (spend is only ever incremented, so that instances never overwrite each other's).
    /// `false` when there is no such key.
    async fn update(&self, key: &VirtualKey) -> Result<bool, StoreError>;
    /// Marks a key deleted; `false` when there is no such (non-deleted) key.
    async fn delete(&self, hash: &str) -> Result<bool, StoreError>;
    /// One key by hash, deleted or not.
    async fn get(&self, hash: &str) -> Result<Option<VirtualKey>, StoreError>;
    /// Every key, deleted ones included (the view must know they are deleted).
    async fn load_all(&self) -> Result<Vec<VirtualKey>, StoreError>;
    /// Adds a batch of increments in one transaction: `keys.spend` and the per-model `spend` rows.
    async fn add_spend(&self, batch: &[SpendIncrement]) -> Result<(), StoreError>;
    /// A key's lifetime spend per model.
    async fn model_spend(&self, hash: &str) -> Result<HashMap<String, f64>, StoreError>;
    /// Starts a new budget period (spend 0, next reset one `budget_duration` from `now`) for every key
    /// whose `budget_reset_at` is at or before `now`; returns how many. Safe to run on several
    /// instances at once: a key already reset no longer matches.
    async fn reset_budgets(&self, now: i64) -> Result<u64, StoreError>;
}

/// Opens (creating and migrating) the database named by `url`: `sqlite://PATH` (the parent directory
/// and the file are created) or `postgres://...` / `postgresql://...`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError(format!(
            "unsupported database URL (expected sqlite://PATH or postgres://...): {}",
            redact_url(url)
        )))
    }
}

/// A database URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The columns of `keys` in the order both backends select them.
const COLUMNS: &str =
    "hash, key_id, alias, models, aliases, expires, max_budget, budget_duration, \
                       budget_reset_at, spend, rpm, tpm, metadata, created, deleted, routes";

/// A `keys` row as stored (JSON columns as text, integers as i64), shared by both backends.
struct RawRow {
    hash: String,
    key_id: String,
    alias: Option<String>,
    models: String,
    aliases: String,
    expires: Option<i64>,
    max_budget: Option<f64>,
    budget_duration: Option<i64>,
    budget_reset_at: Option<i64>,
    spend: f64,
    rpm: Option<i64>,
    tpm: Option<i64>,
    metadata: String,
    created: i64,
    deleted: bool,
    routes: String,
}

impl RawRow {
    fn into_key(self) -> VirtualKey {
        // A column written by another tool with bad JSON degrades to "none" rather than failing the load.
        VirtualKey {
            hash: self.hash,
            key_id: self.key_id,
            alias: self.alias,
            models: serde_json::from_str(&self.models).unwrap_or_default(),
            aliases: serde_json::from_str(&self.aliases).unwrap_or_default(),
            expires: self.expires,
            max_budget: self.max_budget,
            budget_duration: self
                .budget_duration
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
            budget_reset_at: self.budget_reset_at,
            spend: self.spend,
            rpm: self.rpm.map(|v| v.max(0) as u64),
            tpm: self.tpm.map(|v| v.max(0) as u64),
            metadata: serde_json::from_str(&self.metadata).unwrap_or(serde_json::Value::Null),
            created: self.created,
            deleted: self.deleted,
            routes: serde_json::from_str(&self.routes).unwrap_or_default(),
        }
    }
}

/// The columns as they are written.
struct RawFields {
    alias: Option<String>,
    models: String,
    aliases: String,
    expires: Option<i64>,
    max_budget: Option<f64>,
    budget_duration: Option<i64>,
    budget_reset_at: Option<i64>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    metadata: String,
    routes: String,
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RawFields {
    fn of(k: &VirtualKey) -> RawFields {
        RawFields {
            alias: k.alias.clone(),
            models: serde_json::Value::from(k.models.clone()).to_string(),
            aliases: serde_json::to_string(&k.aliases).unwrap_or_else(|_| "{}".into()),
            expires: k.expires,
            max_budget: k.max_budget,
            budget_duration: k.budget_duration.map(|d| clamp_i64(d.as_secs())),
            budget_reset_at: k.budget_reset_at,
            rpm: k.rpm.map(clamp_i64),
            tpm: k.tpm.map(clamp_i64),
            metadata: k.metadata.to_string(),
            routes: serde_json::Value::from(k.routes.clone()).to_string(),
        }
    }
}

/// Sums a batch per key (one `UPDATE keys` per key) and per (key, model).
/// Per-key sums and per-(key, model) sums of a batch.
type Aggregated = (Vec<(String, f64)>, Vec<(String, String, f64)>);

fn aggregate(batch: &[SpendIncrement]) -> Aggregated {
    let mut per_key: HashMap<&str, f64> = HashMap::new();
    let mut per_model: HashMap<(&str, &str), f64> = HashMap::new();
    for inc in batch {
        *per_key.entry(&inc.hash).or_default() += inc.usd;
        *per_model.entry((&inc.hash, &inc.model)).or_default() += inc.usd;
    }
    (
        per_key
            .into_iter()
            .map(|(h, v)| (h.to_string(), v))
            .collect(),
        per_model
            .into_iter()
            .map(|((h, m), v)| (h.to_string(), m.to_string(), v))
            .collect(),
    )
}

pub mod sqlite {
    //! The embedded SQLite backend. rusqlite is blocking: every call runs on tokio's blocking pool
    //! (`spawn_blocking`), never on an async worker, with the connection behind a mutex.

    use super::*;
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
            max_budget REAL,
            budget_duration INTEGER,
            budget_reset_at INTEGER,
            spend REAL NOT NULL DEFAULT 0,
            rpm INTEGER,
            tpm INTEGER,
            metadata TEXT NOT NULL DEFAULT 'null',
            created INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS spend (
            key_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            spend REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (key_hash, model)
        );";

    /// Columns added after the first release, each with its default for existing rows.
    const ADDED_COLUMNS: &[(&str, &str)] = &[("routes", "TEXT NOT NULL DEFAULT '[]'")];

    /// Adds the columns a database created by an older release lacks (SQLite has no
    /// `ADD COLUMN IF NOT EXISTS`).
    fn add_columns(conn: &Connection) -> Result<(), StoreError> {
        let mut have = Vec::new();
        {
            let mut st = conn.prepare("PRAGMA table_info(keys)")?;
            let names = st.query_map([], |r| r.get::<_, String>(1))?;
            for n in names {
                have.push(n?);
            }
        }
        for (name, decl) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == name) {
                conn.execute_batch(&format!("ALTER TABLE keys ADD COLUMN {name} {decl}"))?;
            }
        }
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            hash: r.get(0)?,
            key_id: r.get(1)?,
            alias: r.get(2)?,
            models: r.get(3)?,
            aliases: r.get(4)?,
            expires: r.get(5)?,
            max_budget: r.get(6)?,
            budget_duration: r.get(7)?,
            budget_reset_at: r.get(8)?,
            spend: r.get(9)?,
            rpm: r.get(10)?,
            tpm: r.get(11)?,
            metadata: r.get(12)?,
            created: r.get(13)?,
            deleted: r.get(14)?,
            routes: r.get(15)?,
        })
    }

    impl SqliteStore {
        /// Opens `path` (`:memory:` for a private in-memory database), creating its directory, the
        /// file and the tables.
        pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
            let path = path.to_string();
            let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
                let conn = if path == ":memory:" {
                    Connection::open_in_memory()?
                } else {
                    if let Some(dir) = std::path::Path::new(&path).parent() {
                        if !dir.as_os_str().is_empty() {
                            std::fs::create_dir_all(dir).map_err(|e| {
                                StoreError(format!("creating {}: {e}", dir.display()))
                            })?;
                        }
                    }
                    Connection::open(&path)?
                };
                // WAL lets readers (another instance's refresh, the CLI) work beside the writer;
                // the busy timeout waits out a concurrent writer instead of failing.
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
                conn.execute_batch(MIGRATION)?;
                add_columns(&conn)?;
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
            let f = RawFields::of(key);
            let (hash, key_id, spend, created, deleted) = (
                key.hash.clone(),
                key.key_id.clone(),
                key.spend,
                key.created,
                key.deleted,
            );
            self.run(move |c| {
                c.execute(
                    &format!(
                        "INSERT INTO keys ({COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
                    ),
                    params![
                        hash,
                        key_id,
                        f.alias,
                        f.models,
                        f.aliases,
                        f.expires,
                        f.max_budget,
                        f.budget_duration,
                        f.budget_reset_at,
                        spend,
                        f.rpm,
                        f.tpm,
                        f.metadata,
                        created,
                        deleted,
                        f.routes
                    ],
                )?;
                Ok(())
            })
            .await
        }

        async fn update(&self, key: &VirtualKey) -> Result<bool, StoreError> {
            let f = RawFields::of(key);
            let hash = key.hash.clone();
            self.run(move |c| {
                let n = c.execute(
                    "UPDATE keys SET alias = ?2, models = ?3, aliases = ?4, expires = ?5, \
                     max_budget = ?6, budget_duration = ?7, budget_reset_at = ?8, rpm = ?9, \
                     tpm = ?10, metadata = ?11, routes = ?12 WHERE hash = ?1 AND deleted = 0",
                    params![
                        hash,
                        f.alias,
                        f.models,
                        f.aliases,
                        f.expires,
                        f.max_budget,
                        f.budget_duration,
                        f.budget_reset_at,
                        f.rpm,
                        f.tpm,
                        f.metadata,
                        f.routes
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
                        &format!("SELECT {COLUMNS} FROM keys WHERE hash = ?1"),
                        params![hash],
                        row,
                    )
                    .optional()?;
                Ok(r.map(RawRow::into_key))
            })
            .await
        }

        async fn load_all(&self) -> Result<Vec<VirtualKey>, StoreError> {
            self.run(|c| {
                let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM keys"))?;
                let rows = st.query_map([], row)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r?.into_key());
                }
                Ok(out)
            })
            .await
        }

        async fn add_spend(&self, batch: &[SpendIncrement]) -> Result<(), StoreError> {
            if batch.is_empty() {
                return Ok(());
            }
            let (per_key, per_model) = aggregate(batch);
            self.run(move |c| {
                let tx = c.transaction()?;
                {
                    let mut up =
                        tx.prepare_cached("UPDATE keys SET spend = spend + ?1 WHERE hash = ?2")?;
                    for (hash, usd) in &per_key {
                        up.execute(params![usd, hash])?;
                    }
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO spend (key_hash, model, spend) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key_hash, model) DO UPDATE SET spend = spend + excluded.spend",
                    )?;
                    for (hash, model, usd) in &per_model {
                        ins.execute(params![hash, model, usd])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
        }

        async fn model_spend(&self, hash: &str) -> Result<HashMap<String, f64>, StoreError> {
            let hash = hash.to_string();
            self.run(move |c| {
                let mut st =
                    c.prepare_cached("SELECT model, spend FROM spend WHERE key_hash = ?1")?;
                let rows = st.query_map(params![hash], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let mut out = HashMap::new();
                for r in rows {
                    let (m, v): (String, f64) = r?;
                    out.insert(m, v);
                }
                Ok(out)
            })
            .await
        }

        async fn reset_budgets(&self, now: i64) -> Result<u64, StoreError> {
            self.run(move |c| {
                let n = c.execute(
                    "UPDATE keys SET spend = 0, budget_reset_at = ?1 + budget_duration \
                     WHERE budget_duration IS NOT NULL AND budget_reset_at IS NOT NULL \
                     AND budget_reset_at <= ?1 AND deleted = 0",
                    params![now],
                )?;
                Ok(n as u64)
            })
            .await
        }
    }
}

pub mod postgres {
    //! The PostgreSQL backend (no TLS). The connection is driven by a task on a small runtime of its
    //! own, on a dedicated thread, so the store works from any runtime (Pingora gives each service
    //! its own) and outlives none of them by accident. Calls are serialised on one connection: they
    //! come from the background refresher and management calls, never from the request path. A
    //! closed connection is reopened on the next call.

    use super::*;
    use tokio::runtime::Handle;
    use tokio::sync::{oneshot, Mutex};
    use tokio_postgres::{Client, NoTls};

    pub struct PgStore {
        url: String,
        client: Mutex<Option<Client>>,
        runtime: Handle,
        /// Dropping this stops the connection thread.
        _stop: oneshot::Sender<()>,
    }

    const MIGRATION: &str = "
        CREATE TABLE IF NOT EXISTS keys (
            hash TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            alias TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            aliases TEXT NOT NULL DEFAULT '{}',
            expires BIGINT,
            max_budget DOUBLE PRECISION,
            budget_duration BIGINT,
            budget_reset_at BIGINT,
            spend DOUBLE PRECISION NOT NULL DEFAULT 0,
            rpm BIGINT,
            tpm BIGINT,
            metadata TEXT NOT NULL DEFAULT 'null',
            created BIGINT NOT NULL,
            deleted BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE TABLE IF NOT EXISTS spend (
            key_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            spend DOUBLE PRECISION NOT NULL DEFAULT 0,
            PRIMARY KEY (key_hash, model)
        );
        ALTER TABLE keys ADD COLUMN IF NOT EXISTS routes TEXT NOT NULL DEFAULT '[]';";

    /// Serialises concurrent migrations of several instances starting at once (CREATE TABLE IF NOT
    /// EXISTS alone can race on the catalog).
    const MIGRATION_LOCK: i64 = 0x6c6c_6d70_6b65_7973; // "llmpkeys"

    fn row(r: &tokio_postgres::Row) -> Result<RawRow, StoreError> {
        Ok(RawRow {
            hash: r.try_get(0)?,
            key_id: r.try_get(1)?,
            alias: r.try_get(2)?,
            models: r.try_get(3)?,
            aliases: r.try_get(4)?,
            expires: r.try_get(5)?,
            max_budget: r.try_get(6)?,
            budget_duration: r.try_get(7)?,
            budget_reset_at: r.try_get(8)?,
            spend: r.try_get(9)?,
            rpm: r.try_get(10)?,
            tpm: r.try_get(11)?,
            metadata: r.try_get(12)?,
            created: r.try_get(13)?,
            deleted: r.try_get(14)?,
            routes: r.try_get(15)?,
        })
    }

    impl PgStore {
        /// Connects and migrates.
        pub async fn open(url: &str) -> Result<PgStore, StoreError> {
            let (handle_tx, handle_rx) = oneshot::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name("llmproxy-keys-pg".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(StoreError(format!("runtime: {e}"))));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    // Drives the connection tasks until the store is dropped.
                    let _ = rt.block_on(stop_rx);
                })
                .map_err(|e| StoreError(format!("spawning the postgres thread: {e}")))?;
            let runtime = handle_rx
                .await
                .map_err(|_| StoreError("postgres thread exited".into()))??;
            let store = PgStore {
                url: url.to_string(),
                client: Mutex::new(None),
                runtime,
                _stop: stop_tx,
            };
            {
                let mut guard = store.client().await?;
                let c = guard
                    .as_mut()
                    .ok_or_else(|| StoreError("not connected".into()))?;
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await?;
                tx.batch_execute(MIGRATION).await?;
                tx.commit().await?;
            }
            Ok(store)
        }

        /// The connection, reconnecting when it was closed.
        async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, StoreError> {
            let mut guard = self.client.lock().await;
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = None;
                let url = self.url.clone();
                // Connect on the store's own runtime, so the socket belongs to the reactor that
                // drives it.
                let client = self
                    .runtime
                    .spawn(async move {
                        let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                log::warn!("key store: postgres connection closed: {e}");
                            }
                        });
                        Ok::<_, StoreError>(client)
                    })
                    .await
                    .map_err(|e| StoreError(format!("postgres connect task: {e}")))??;
                *guard = Some(client);
            }
            Ok(guard)
        }
    }

    macro_rules! with_client {
        ($self:ident, $c:ident, $body:expr) => {{
            let mut guard = $self.client().await?;
            let $c = guard
                .as_mut()
                .ok_or_else(|| StoreError("not connected".into()))?;
            $body
        }};
    }

    #[async_trait]
    impl Store for PgStore {
        async fn insert(&self, key: &VirtualKey) -> Result<(), StoreError> {
            let f = RawFields::of(key);
            with_client!(self, c, {
                c.execute(
                    &format!(
                        "INSERT INTO keys ({COLUMNS}) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                    ),
                    &[
                        &key.hash,
                        &key.key_id,
                        &f.alias,
                        &f.models,
                        &f.aliases,
                        &f.expires,
                        &f.max_budget,
                        &f.budget_duration,
                        &f.budget_reset_at,
                        &key.spend,
                        &f.rpm,
                        &f.tpm,
                        &f.metadata,
                        &key.created,
                        &key.deleted,
                        &f.routes,
                    ],
                )
                .await?;
                Ok(())
            })
        }

        async fn update(&self, key: &VirtualKey) -> Result<bool, StoreError> {
            let f = RawFields::of(key);
            with_client!(self, c, {
                let n = c
                    .execute(
                        "UPDATE keys SET alias = $2, models = $3, aliases = $4, expires = $5, \
                         max_budget = $6, budget_duration = $7, budget_reset_at = $8, rpm = $9, \
                         tpm = $10, metadata = $11, routes = $12 WHERE hash = $1 AND NOT deleted",
                        &[
                            &key.hash,
                            &f.alias,
                            &f.models,
                            &f.aliases,
                            &f.expires,
                            &f.max_budget,
                            &f.budget_duration,
                            &f.budget_reset_at,
                            &f.rpm,
                            &f.tpm,
                            &f.metadata,
                            &f.routes,
                        ],
                    )
                    .await?;
                Ok(n > 0)
            })
        }

        async fn delete(&self, hash: &str) -> Result<bool, StoreError> {
            with_client!(self, c, {
                let n = c
                    .execute(
                        "UPDATE keys SET deleted = TRUE WHERE hash = $1 AND NOT deleted",
                        &[&hash],
                    )
                    .await?;
                Ok(n > 0)
            })
        }

        async fn get(&self, hash: &str) -> Result<Option<VirtualKey>, StoreError> {
            with_client!(self, c, {
                let r = c
                    .query_opt(
                        &format!("SELECT {COLUMNS} FROM keys WHERE hash = $1"),
                        &[&hash],
                    )
                    .await?;
                match r {
                    Some(r) => Ok(Some(row(&r)?.into_key())),
                    None => Ok(None),
                }
            })
        }

        async fn load_all(&self) -> Result<Vec<VirtualKey>, StoreError> {
            with_client!(self, c, {
                let rows = c.query(&format!("SELECT {COLUMNS} FROM keys"), &[]).await?;
                rows.iter()
                    .map(|r| row(r).map(RawRow::into_key))
                    .collect::<Result<Vec<_>, _>>()
            })
        }

        async fn add_spend(&self, batch: &[SpendIncrement]) -> Result<(), StoreError> {
            if batch.is_empty() {
                return Ok(());
            }
            let (per_key, per_model) = aggregate(batch);
            with_client!(self, c, {
                let tx = c.transaction().await?;
                let up = tx
                    .prepare("UPDATE keys SET spend = spend + $1 WHERE hash = $2")
                    .await?;
                for (hash, usd) in &per_key {
                    tx.execute(&up, &[usd, hash]).await?;
                }
                let ins = tx
                    .prepare(
                        "INSERT INTO spend (key_hash, model, spend) VALUES ($1, $2, $3) \
                         ON CONFLICT (key_hash, model) DO UPDATE SET spend = spend.spend + EXCLUDED.spend",
                    )
                    .await?;
                for (hash, model, usd) in &per_model {
                    tx.execute(&ins, &[hash, model, usd]).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        }

        async fn model_spend(&self, hash: &str) -> Result<HashMap<String, f64>, StoreError> {
            with_client!(self, c, {
                let rows = c
                    .query(
                        "SELECT model, spend FROM spend WHERE key_hash = $1",
                        &[&hash],
                    )
                    .await?;
                let mut out = HashMap::new();
                for r in rows {
                    out.insert(r.try_get::<_, String>(0)?, r.try_get::<_, f64>(1)?);
                }
                Ok(out)
            })
        }

        async fn reset_budgets(&self, now: i64) -> Result<u64, StoreError> {
            with_client!(self, c, {
                let n = c
                    .execute(
                        "UPDATE keys SET spend = 0, budget_reset_at = $1 + budget_duration \
                         WHERE budget_duration IS NOT NULL AND budget_reset_at IS NOT NULL \
                         AND budget_reset_at <= $1 AND NOT deleted",
                        &[&now],
                    )
                    .await?;
                Ok(n)
            })
        }
    }
}
