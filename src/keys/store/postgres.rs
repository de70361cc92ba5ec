//! The PostgreSQL backend (no TLS). The connection is driven by a task on a small runtime of its
//! own, on a dedicated thread, so the store works from any runtime (Pingora gives each service its
//! own) and outlives none of them by accident. Calls are serialised on one connection: they come
//! from the background refresher, the spend-log writer (which opens a store of its own) and
//! management calls, never from the request path. A closed connection is reopened on the next call.

use super::logs::{Param, AUDIT_COLUMNS, SPEND_LOG_COLUMNS};
use super::*;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Mutex};
use tokio_postgres::types::ToSql;
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
        max_budget_micros BIGINT,
        budget_duration BIGINT,
        budget_reset_at BIGINT,
        spend_micros BIGINT NOT NULL DEFAULT 0,
        rpm BIGINT,
        tpm BIGINT,
        metadata TEXT NOT NULL DEFAULT 'null',
        created BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        routes TEXT NOT NULL DEFAULT '[]',
        team_id TEXT
    );
    CREATE TABLE IF NOT EXISTS spend (
        key_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        spend_micros BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_hash, model)
    );
    ALTER TABLE keys ADD COLUMN IF NOT EXISTS routes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE keys ADD COLUMN IF NOT EXISTS team_id TEXT;
    ALTER TABLE keys ADD COLUMN IF NOT EXISTS spend_micros BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE keys ADD COLUMN IF NOT EXISTS max_budget_micros BIGINT;
    ALTER TABLE spend ADD COLUMN IF NOT EXISTS spend_micros BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS spend_logs (
        id BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL,
        key_id TEXT,
        team_id TEXT,
        end_user TEXT,
        model TEXT NOT NULL,
        deployment TEXT,
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        cached_tokens BIGINT NOT NULL DEFAULT 0,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        reasoning_tokens BIGINT NOT NULL DEFAULT 0,
        cost_micros BIGINT NOT NULL DEFAULT 0,
        priced BOOLEAN NOT NULL DEFAULT TRUE,
        cache_hit BOOLEAN NOT NULL DEFAULT FALSE,
        batch_id TEXT,
        status INTEGER NOT NULL DEFAULT 0,
        start_ms BIGINT NOT NULL,
        end_ms BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS spend_logs_start ON spend_logs (start_ms);
    CREATE INDEX IF NOT EXISTS spend_logs_key ON spend_logs (key_id, start_ms);
    CREATE INDEX IF NOT EXISTS spend_logs_team ON spend_logs (team_id, start_ms);
    CREATE TABLE IF NOT EXISTS audit_log (
        id BIGSERIAL PRIMARY KEY,
        updated_at_ms BIGINT NOT NULL,
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
            max_budget_micros BIGINT,
            budget_duration BIGINT,
            budget_reset_at BIGINT,
            spend_micros BIGINT NOT NULL DEFAULT 0,
            total_spend_micros BIGINT NOT NULL DEFAULT 0,
            rpm BIGINT,
            tpm BIGINT,
            metadata TEXT NOT NULL DEFAULT 'null',
            blocked BOOLEAN NOT NULL DEFAULT FALSE,
            created BIGINT NOT NULL,
            deleted BOOLEAN NOT NULL DEFAULT FALSE
        );",
        kind.table(),
        kind.id_field()
    )
}

/// Serialises concurrent migrations of several instances starting at once (CREATE TABLE IF NOT
/// EXISTS alone can race on the catalog, and the money conversion must run once).
const MIGRATION_LOCK: i64 = 0x6c6c_6d70_6b65_7973; // "llmpkeys"

fn key_row(r: &tokio_postgres::Row) -> Result<RawKey, StoreError> {
    Ok(RawKey {
        hash: r.try_get(0)?,
        key_id: r.try_get(1)?,
        alias: r.try_get(2)?,
        models: r.try_get(3)?,
        aliases: r.try_get(4)?,
        expires: r.try_get(5)?,
        limits: RawLimits {
            max_budget: r.try_get(6)?,
            budget_duration: r.try_get(7)?,
            budget_reset_at: r.try_get(8)?,
            rpm: r.try_get(10)?,
            tpm: r.try_get(11)?,
        },
        spend: r.try_get(9)?,
        metadata: r.try_get(12)?,
        created: r.try_get(13)?,
        deleted: r.try_get(14)?,
        routes: r.try_get(15)?,
        team_id: r.try_get(16)?,
    })
}

fn account_row(r: &tokio_postgres::Row) -> Result<RawAccount, StoreError> {
    Ok(RawAccount {
        id: r.try_get(0)?,
        alias: r.try_get(1)?,
        models: r.try_get(2)?,
        limits: RawLimits {
            max_budget: r.try_get(3)?,
            budget_duration: r.try_get(4)?,
            budget_reset_at: r.try_get(5)?,
            rpm: r.try_get(8)?,
            tpm: r.try_get(9)?,
        },
        spend: r.try_get(6)?,
        total_spend: r.try_get(7)?,
        metadata: r.try_get(10)?,
        blocked: r.try_get(11)?,
        created: r.try_get(12)?,
        deleted: r.try_get(13)?,
    })
}

fn log_row(r: &tokio_postgres::Row) -> Result<SpendLogRow, StoreError> {
    let n = |i: usize| -> Result<u64, StoreError> { Ok(to_u64(r.try_get::<_, i64>(i)?)) };
    Ok(SpendLogRow {
        request_id: r.try_get(0)?,
        key_id: r.try_get::<_, Option<String>>(1)?.map(Arc::from),
        team_id: r.try_get::<_, Option<String>>(2)?.map(Arc::from),
        end_user: r.try_get::<_, Option<String>>(3)?.map(Arc::from),
        model: r.try_get(4)?,
        deployment: r.try_get(5)?,
        prompt_tokens: n(6)?,
        cached_tokens: n(7)?,
        cache_write_tokens: n(8)?,
        completion_tokens: n(9)?,
        reasoning_tokens: n(10)?,
        cost: Micros(n(11)?),
        priced: r.try_get(12)?,
        cache_hit: r.try_get(13)?,
        batch_id: r.try_get(14)?,
        status: u16::try_from(r.try_get::<_, i32>(15)?).unwrap_or(0),
        start_ms: r.try_get(16)?,
        end_ms: r.try_get(17)?,
    })
}

fn audit_row(r: &tokio_postgres::Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: r.try_get(0)?,
        at_ms: r.try_get(1)?,
        changed_by: r.try_get(2)?,
        action: r.try_get(3)?,
        table_name: r.try_get(4)?,
        object_id: r.try_get(5)?,
        before_value: json_value(&r.try_get::<_, String>(6)?),
        updated_values: json_value(&r.try_get::<_, String>(7)?),
    })
}

fn placeholder(i: usize) -> String {
    format!("${i}")
}

/// Bound parameters as trait objects.
fn boxed<'a>(params: impl Iterator<Item = &'a Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(s) => Box::new(s.clone()),
                Param::Int(i) => Box::new(*i),
            }
        })
        .collect()
}

fn refs(b: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    b.iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
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
            for kind in [AccountKind::Team, AccountKind::EndUser] {
                tx.batch_execute(&account_table(kind)).await?;
            }
            // Dollar columns of older databases become micro-dollars (× 10⁶, rounded half away
            // from zero), in the same transaction.
            for (table, old, new) in MONEY_COLUMNS {
                let present = tx
                    .query_opt(
                        "SELECT 1 FROM information_schema.columns WHERE table_schema = \
                         current_schema() AND table_name = $1 AND column_name = $2",
                        &[table, old],
                    )
                    .await?
                    .is_some();
                if present {
                    let n = tx
                        .execute(
                            &format!(
                                "UPDATE {table} SET {new} = ROUND(({old} * 1000000)::numeric)::BIGINT \
                                 WHERE {old} IS NOT NULL"
                            ),
                            &[],
                        )
                        .await?;
                    tx.batch_execute(&format!("ALTER TABLE {table} DROP COLUMN {old}"))
                        .await?;
                    log::info!("key store: converted {table}.{old} (USD) to {table}.{new} (micro-dollars) in {n} rows");
                }
            }
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
        let f = KeyFields::of(key);
        let spend = to_i64(key.spend.0);
        with_client!(self, c, {
            c.execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
                ),
                &[
                    &key.hash,
                    &key.key_id,
                    &f.alias,
                    &f.models,
                    &f.aliases,
                    &f.expires,
                    &f.limits.max_budget,
                    &f.limits.budget_duration,
                    &f.limits.budget_reset_at,
                    &spend,
                    &f.limits.rpm,
                    &f.limits.tpm,
                    &f.metadata,
                    &key.created,
                    &key.deleted,
                    &f.routes,
                    &f.team_id,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn update(&self, key: &VirtualKey) -> Result<bool, StoreError> {
        let f = KeyFields::of(key);
        with_client!(self, c, {
            let n = c
                .execute(
                    "UPDATE keys SET alias = $2, models = $3, aliases = $4, expires = $5, \
                     max_budget_micros = $6, budget_duration = $7, budget_reset_at = $8, rpm = $9, \
                     tpm = $10, metadata = $11, routes = $12, team_id = $13 \
                     WHERE hash = $1 AND NOT deleted",
                    &[
                        &key.hash,
                        &f.alias,
                        &f.models,
                        &f.aliases,
                        &f.expires,
                        &f.limits.max_budget,
                        &f.limits.budget_duration,
                        &f.limits.budget_reset_at,
                        &f.limits.rpm,
                        &f.limits.tpm,
                        &f.metadata,
                        &f.routes,
                        &f.team_id,
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
                    &format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = $1"),
                    &[&hash],
                )
                .await?;
            match r {
                Some(r) => Ok(Some(key_row(&r)?.into_key())),
                None => Ok(None),
            }
        })
    }

    async fn load_all(&self) -> Result<Vec<VirtualKey>, StoreError> {
        with_client!(self, c, {
            let rows = c
                .query(&format!("SELECT {KEY_COLUMNS} FROM keys"), &[])
                .await?;
            rows.iter()
                .map(|r| key_row(r).map(RawKey::into_key))
                .collect::<Result<Vec<_>, _>>()
        })
    }

    async fn insert_account(&self, kind: AccountKind, a: &Account) -> Result<bool, StoreError> {
        let a = RawAccount::of(a);
        let (table, id) = (kind.table(), kind.id_field());
        with_client!(self, c, {
            let n = c
                .execute(
                    &format!(
                        "INSERT INTO {table} ({id}, {ACCOUNT_COLUMNS}) VALUES \
                         ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $9, $10, $11, FALSE) \
                         ON CONFLICT ({id}) DO UPDATE SET alias = EXCLUDED.alias, \
                         models = EXCLUDED.models, max_budget_micros = EXCLUDED.max_budget_micros, \
                         budget_duration = EXCLUDED.budget_duration, \
                         budget_reset_at = EXCLUDED.budget_reset_at, spend_micros = 0, \
                         total_spend_micros = 0, rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, \
                         metadata = EXCLUDED.metadata, blocked = EXCLUDED.blocked, \
                         created = EXCLUDED.created, deleted = FALSE WHERE {table}.deleted"
                    ),
                    &[
                        &a.id,
                        &a.alias,
                        &a.models,
                        &a.limits.max_budget,
                        &a.limits.budget_duration,
                        &a.limits.budget_reset_at,
                        &a.limits.rpm,
                        &a.limits.tpm,
                        &a.metadata,
                        &a.blocked,
                        &a.created,
                    ],
                )
                .await?;
            Ok(n > 0)
        })
    }

    async fn update_account(&self, kind: AccountKind, a: &Account) -> Result<bool, StoreError> {
        let a = RawAccount::of(a);
        with_client!(self, c, {
            let n = c
                .execute(
                    &format!(
                        "UPDATE {} SET alias = $2, models = $3, max_budget_micros = $4, \
                         budget_duration = $5, budget_reset_at = $6, rpm = $7, tpm = $8, \
                         metadata = $9, blocked = $10 WHERE {} = $1 AND NOT deleted",
                        kind.table(),
                        kind.id_field()
                    ),
                    &[
                        &a.id,
                        &a.alias,
                        &a.models,
                        &a.limits.max_budget,
                        &a.limits.budget_duration,
                        &a.limits.budget_reset_at,
                        &a.limits.rpm,
                        &a.limits.tpm,
                        &a.metadata,
                        &a.blocked,
                    ],
                )
                .await?;
            Ok(n > 0)
        })
    }

    async fn delete_account(&self, kind: AccountKind, id: &str) -> Result<bool, StoreError> {
        with_client!(self, c, {
            let n = c
                .execute(
                    &format!(
                        "UPDATE {} SET deleted = TRUE WHERE {} = $1 AND NOT deleted",
                        kind.table(),
                        kind.id_field()
                    ),
                    &[&id],
                )
                .await?;
            Ok(n > 0)
        })
    }

    async fn get_account(
        &self,
        kind: AccountKind,
        id: &str,
    ) -> Result<Option<Account>, StoreError> {
        with_client!(self, c, {
            let r = c
                .query_opt(
                    &format!(
                        "SELECT {}, {ACCOUNT_COLUMNS} FROM {} WHERE {} = $1",
                        kind.id_field(),
                        kind.table(),
                        kind.id_field()
                    ),
                    &[&id],
                )
                .await?;
            match r {
                Some(r) => Ok(Some(account_row(&r)?.into_account())),
                None => Ok(None),
            }
        })
    }

    async fn load_accounts(&self, kind: AccountKind) -> Result<Vec<Account>, StoreError> {
        with_client!(self, c, {
            let rows = c
                .query(
                    &format!(
                        "SELECT {}, {ACCOUNT_COLUMNS} FROM {}",
                        kind.id_field(),
                        kind.table()
                    ),
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| account_row(r).map(RawAccount::into_account))
                .collect::<Result<Vec<_>, _>>()
        })
    }

    async fn add_spend(&self, batch: &[SpendIncrement]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let a = aggregate(batch);
        with_client!(self, c, {
            let tx = c.transaction().await?;
            let up = tx
                .prepare("UPDATE keys SET spend_micros = spend_micros + $1 WHERE hash = $2")
                .await?;
            for (hash, v) in &a.keys {
                tx.execute(&up, &[v, hash]).await?;
            }
            let ins = tx
                .prepare(
                    "INSERT INTO spend (key_hash, model, spend_micros) VALUES ($1, $2, $3) \
                     ON CONFLICT (key_hash, model) DO UPDATE \
                     SET spend_micros = spend.spend_micros + EXCLUDED.spend_micros",
                )
                .await?;
            for (hash, model, v) in &a.key_models {
                tx.execute(&ins, &[hash, model, v]).await?;
            }
            for (kind, list) in [
                (AccountKind::Team, &a.teams),
                (AccountKind::EndUser, &a.users),
            ] {
                if list.is_empty() {
                    continue;
                }
                let up = tx
                    .prepare(&format!(
                        "UPDATE {} SET spend_micros = spend_micros + $1, \
                         total_spend_micros = total_spend_micros + $1 WHERE {} = $2",
                        kind.table(),
                        kind.id_field()
                    ))
                    .await?;
                for (id, v) in list {
                    tx.execute(&up, &[v, id]).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn model_spend(&self, hash: &str) -> Result<HashMap<String, Micros>, StoreError> {
        with_client!(self, c, {
            let rows = c
                .query(
                    "SELECT model, spend_micros FROM spend WHERE key_hash = $1",
                    &[&hash],
                )
                .await?;
            let mut out = HashMap::new();
            for r in rows {
                out.insert(r.try_get::<_, String>(0)?, micros(r.try_get::<_, i64>(1)?));
            }
            Ok(out)
        })
    }

    async fn reset_budgets(&self, now: i64) -> Result<u64, StoreError> {
        with_client!(self, c, {
            let mut n = 0;
            for table in [
                "keys",
                AccountKind::Team.table(),
                AccountKind::EndUser.table(),
            ] {
                n += c
                    .execute(
                        &format!(
                            "UPDATE {table} SET spend_micros = 0, \
                             budget_reset_at = $1 + budget_duration \
                             WHERE budget_duration IS NOT NULL AND budget_reset_at IS NOT NULL \
                             AND budget_reset_at <= $1 AND NOT deleted"
                        ),
                        &[&now],
                    )
                    .await?;
            }
            Ok(n)
        })
    }
}

#[async_trait]
impl LogStore for PgStore {
    async fn insert_spend_logs(&self, rows: Arc<[SpendLogRow]>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement per batch: each column as an array, unnested into rows.
        let text = |f: fn(&SpendLogRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let opt =
            |f: fn(&SpendLogRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<Option<&str>>>();
        let int =
            |f: fn(&SpendLogRow) -> u64| rows.iter().map(|r| to_i64(f(r))).collect::<Vec<i64>>();
        let request_id = text(|r| &r.request_id);
        let key_id = opt(|r| r.key_id.as_deref());
        let team_id = opt(|r| r.team_id.as_deref());
        let end_user = opt(|r| r.end_user.as_deref());
        let model = text(|r| &r.model);
        let deployment = opt(|r| r.deployment.as_deref());
        let prompt = int(|r| r.prompt_tokens);
        let cached = int(|r| r.cached_tokens);
        let write = int(|r| r.cache_write_tokens);
        let completion = int(|r| r.completion_tokens);
        let reasoning = int(|r| r.reasoning_tokens);
        let cost = int(|r| r.cost.0);
        let priced: Vec<bool> = rows.iter().map(|r| r.priced).collect();
        let cache_hit: Vec<bool> = rows.iter().map(|r| r.cache_hit).collect();
        let batch_id = opt(|r| r.batch_id.as_deref());
        let status: Vec<i32> = rows.iter().map(|r| i32::from(r.status)).collect();
        let start: Vec<i64> = rows.iter().map(|r| r.start_ms).collect();
        let end: Vec<i64> = rows.iter().map(|r| r.end_ms).collect();
        with_client!(self, c, {
            c.execute(
                &format!(
                    "INSERT INTO spend_logs ({SPEND_LOG_COLUMNS}) SELECT * FROM UNNEST(\
                     $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
                     $12::bigint[], $13::boolean[], $14::boolean[], $15::text[], $16::integer[], \
                     $17::bigint[], $18::bigint[])"
                ),
                &[
                    &request_id,
                    &key_id,
                    &team_id,
                    &end_user,
                    &model,
                    &deployment,
                    &prompt,
                    &cached,
                    &write,
                    &completion,
                    &reasoning,
                    &cost,
                    &priced,
                    &cache_hit,
                    &batch_id,
                    &status,
                    &start,
                    &end,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn spend_logs(&self, q: &SpendLogQuery) -> Result<(Vec<SpendLogRow>, u64), StoreError> {
        let f = q.filter();
        let w = f.sql(1, placeholder);
        let n = f.len();
        let mut params = boxed(f.params());
        let total_params = refs(&params);
        with_client!(self, c, {
            let total: i64 = c
                .query_one(
                    &format!("SELECT COUNT(*) FROM spend_logs{w}"),
                    &total_params,
                )
                .await?
                .try_get(0)?;
            drop(total_params);
            params.push(Box::new(to_i64(q.limit)));
            params.push(Box::new(to_i64(q.offset)));
            let rows = c
                .query(
                    &format!(
                        "SELECT {SPEND_LOG_COLUMNS} FROM spend_logs{w} \
                         ORDER BY start_ms DESC, id DESC LIMIT ${} OFFSET ${}",
                        n + 1,
                        n + 2
                    ),
                    &refs(&params),
                )
                .await?;
            let out = rows.iter().map(log_row).collect::<Result<Vec<_>, _>>()?;
            Ok((out, to_u64(total)))
        })
    }

    async fn spend_report(&self, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError> {
        let f = q.filter();
        let col = q.group.column();
        let params = boxed(f.params());
        with_client!(self, c, {
            let rows = c
                .query(
                    &format!(
                        "SELECT start_ms / 86400000 AS day, {col}, SUM(cost_micros)::BIGINT, \
                         COUNT(*), SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT \
                         FROM spend_logs{} GROUP BY day, {col} ORDER BY day, 3 DESC",
                        f.sql(1, placeholder)
                    ),
                    &refs(&params),
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ReportRow {
                        day: r.try_get(0)?,
                        group: r.try_get(1)?,
                        spend: micros(r.try_get(2)?),
                        requests: to_u64(r.try_get(3)?),
                        prompt_tokens: to_u64(r.try_get(4)?),
                        completion_tokens: to_u64(r.try_get(5)?),
                    })
                })
                .collect()
        })
    }

    async fn prune_spend_logs(&self, before_ms: i64) -> Result<u64, StoreError> {
        with_client!(self, c, {
            Ok(
                c.execute("DELETE FROM spend_logs WHERE start_ms < $1", &[&before_ms])
                    .await?,
            )
        })
    }

    async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let (before, after) = (e.before_value.to_string(), e.updated_values.to_string());
        with_client!(self, c, {
            c.execute(
                "INSERT INTO audit_log (updated_at_ms, changed_by, action, table_name, object_id, \
                 before_value, updated_values) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &e.at_ms,
                    &e.changed_by,
                    &e.action,
                    &e.table_name,
                    &e.object_id,
                    &before,
                    &after,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn audit_logs(&self, q: &AuditQuery) -> Result<(Vec<AuditEntry>, u64), StoreError> {
        let f = q.filter();
        let w = f.sql(1, placeholder);
        let n = f.len();
        let mut params = boxed(f.params());
        with_client!(self, c, {
            let total: i64 = c
                .query_one(
                    &format!("SELECT COUNT(*) FROM audit_log{w}"),
                    &refs(&params),
                )
                .await?
                .try_get(0)?;
            params.push(Box::new(to_i64(q.limit)));
            params.push(Box::new(to_i64(q.offset)));
            let rows = c
                .query(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_log{w} ORDER BY id DESC \
                         LIMIT ${} OFFSET ${}",
                        n + 1,
                        n + 2
                    ),
                    &refs(&params),
                )
                .await?;
            let out = rows.iter().map(audit_row).collect::<Result<Vec<_>, _>>()?;
            Ok((out, to_u64(total)))
        })
    }
}
