//! Where keys, teams, end users, spend, the spend log and the audit log are kept: the [`Store`] trait
//! and its two backends, SQLite (embedded, the default) and PostgreSQL (shared by instances). Neither
//! is ever called on the request path: the in-memory view ([`super::Keys`]) reads them in the
//! background and on management calls, and the spend log is written by its own task.
//!
//! Schema (created and migrated on open, idempotently, in both backends; money is integer
//! micro-dollars, columns `*_micros`):
//! - `keys`: one row per virtual key, by SHA-256 hex `hash`; `spend_micros` is the current budget
//!   period's spend; `team_id` the key's team; deleted keys stay as rows with `deleted` set so that
//!   every instance learns of the deletion.
//! - `spend`: lifetime spend per key and model, `(key_hash, model)` primary key.
//! - `teams` (by `team_id`) and `end_users` (by `user_id`): the same columns — alias, models, budget,
//!   limits, current-period and lifetime spend, metadata, blocked, created, deleted.
//! - `spend_logs`: one row per request (see [`super::SpendLogRow`]), indexed by start time, key and
//!   team.
//! - `audit_log`: one row per administrative change (see [`super::AuditEntry`]).
//!
//! Databases created before money was exact had `REAL`/`DOUBLE PRECISION` dollar columns
//! (`keys.spend`, `keys.max_budget`, `spend.spend`); opening one converts them in place to the
//! `*_micros` integer columns (dollars × 10⁶, rounded) in one transaction, keeping every row.

pub mod postgres;
pub mod sqlite;

mod logs;

pub use logs::{AuditQuery, ReportGroup, ReportQuery, ReportRow, SpendLogQuery};

use super::accounts::{Account, AccountKind};
use super::audit::AuditEntry;
use super::limits::Limits;
use super::spendlog::SpendLogRow;
use super::VirtualKey;
use crate::pricing::Micros;
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

/// Whose spend an increment adds to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpendTarget {
    /// A key, by hash.
    Key(String),
    Team(String),
    EndUser(String),
}

/// Spend to add to one holder for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendIncrement {
    pub target: SpendTarget,
    pub model: String,
    pub micros: Micros,
}

/// The operations the view and the management API need.
#[async_trait]
pub trait Store: LogStore + Send + Sync {
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

    /// Adds a team or end user; a deleted one with the same id is replaced (with no spend). `false`
    /// when a live one exists.
    async fn insert_account(&self, kind: AccountKind, a: &Account) -> Result<bool, StoreError>;
    /// Writes every field of a live team or end user except its id, spend, `created` and `deleted`;
    /// `false` when there is none.
    async fn update_account(&self, kind: AccountKind, a: &Account) -> Result<bool, StoreError>;
    /// Marks a team or end user deleted; `false` when there is no live one.
    async fn delete_account(&self, kind: AccountKind, id: &str) -> Result<bool, StoreError>;
    /// One team or end user, deleted or not.
    async fn get_account(&self, kind: AccountKind, id: &str)
        -> Result<Option<Account>, StoreError>;
    /// Every team or every end user, deleted ones included.
    async fn load_accounts(&self, kind: AccountKind) -> Result<Vec<Account>, StoreError>;

    /// Adds a batch of increments in one transaction: keys' `spend_micros` and per-model `spend` rows,
    /// teams' and end users' `spend_micros` and `total_spend_micros`.
    async fn add_spend(&self, batch: &[SpendIncrement]) -> Result<(), StoreError>;
    /// A key's lifetime spend per model.
    async fn model_spend(&self, hash: &str) -> Result<HashMap<String, Micros>, StoreError>;
    /// Starts a new budget period (spend 0, next reset one `budget_duration` from `now`) for every
    /// key, team and end user whose `budget_reset_at` is at or before `now`; returns how many. Safe to
    /// run on several instances at once: a holder already reset no longer matches.
    async fn reset_budgets(&self, now: i64) -> Result<u64, StoreError>;
}

/// The spend log and the audit log.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Appends spend-log rows in one statement or transaction.
    async fn insert_spend_logs(&self, rows: Arc<[SpendLogRow]>) -> Result<(), StoreError>;
    /// One page of spend-log rows, newest first, and how many match in all.
    async fn spend_logs(&self, q: &SpendLogQuery) -> Result<(Vec<SpendLogRow>, u64), StoreError>;
    /// Spend per day and group.
    async fn spend_report(&self, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError>;
    /// Deletes rows that started before `before_ms`; returns how many.
    async fn prune_spend_logs(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Appends an audit entry.
    async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError>;
    /// One page of audit entries, newest first, and how many match in all.
    async fn audit_logs(&self, q: &AuditQuery) -> Result<(Vec<AuditEntry>, u64), StoreError>;
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
const KEY_COLUMNS: &str = "hash, key_id, alias, models, aliases, expires, max_budget_micros, \
     budget_duration, budget_reset_at, spend_micros, rpm, tpm, metadata, created, deleted, routes, \
     team_id";

/// The columns of `teams` / `end_users` after the id column, in the order both backends select them.
const ACCOUNT_COLUMNS: &str = "alias, models, max_budget_micros, budget_duration, \
     budget_reset_at, spend_micros, total_spend_micros, rpm, tpm, metadata, blocked, created, deleted";

/// Micro-dollars as stored (`BIGINT`), saturating.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer read back as a count or amount (negatives, which no code writes, read as 0).
fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn micros(v: i64) -> Micros {
    Micros(to_u64(v))
}

/// The budget and limit columns as stored.
#[derive(Debug, Clone, Default)]
struct RawLimits {
    max_budget: Option<i64>,
    budget_duration: Option<i64>,
    budget_reset_at: Option<i64>,
    rpm: Option<i64>,
    tpm: Option<i64>,
}

impl RawLimits {
    fn of(l: &Limits) -> RawLimits {
        RawLimits {
            max_budget: l.max_budget.map(|m| to_i64(m.0)),
            budget_duration: l.budget_duration.map(|d| to_i64(d.as_secs())),
            budget_reset_at: l.budget_reset_at,
            rpm: l.rpm.map(to_i64),
            tpm: l.tpm.map(to_i64),
        }
    }

    fn into_limits(self) -> Limits {
        Limits {
            max_budget: self.max_budget.map(micros),
            budget_duration: self
                .budget_duration
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
            budget_reset_at: self.budget_reset_at,
            rpm: self.rpm.map(to_u64),
            tpm: self.tpm.map(to_u64),
        }
    }
}

/// A `keys` row as stored (JSON columns as text, integers as i64), shared by both backends.
struct RawKey {
    hash: String,
    key_id: String,
    alias: Option<String>,
    models: String,
    aliases: String,
    expires: Option<i64>,
    limits: RawLimits,
    spend: i64,
    metadata: String,
    created: i64,
    deleted: bool,
    routes: String,
    team_id: Option<String>,
}

/// A JSON column written by another tool with bad JSON degrades to "none" rather than failing the load.
fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn json_value(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

impl RawKey {
    fn into_key(self) -> VirtualKey {
        VirtualKey {
            hash: self.hash,
            key_id: self.key_id,
            alias: self.alias,
            models: json_list(&self.models),
            aliases: serde_json::from_str(&self.aliases).unwrap_or_default(),
            expires: self.expires,
            team_id: self.team_id,
            limits: self.limits.into_limits(),
            spend: micros(self.spend),
            metadata: json_value(&self.metadata),
            created: self.created,
            deleted: self.deleted,
            routes: json_list(&self.routes),
        }
    }
}

/// A key's writable columns as they are written.
struct KeyFields {
    alias: Option<String>,
    models: String,
    aliases: String,
    expires: Option<i64>,
    limits: RawLimits,
    metadata: String,
    routes: String,
    team_id: Option<String>,
}

impl KeyFields {
    fn of(k: &VirtualKey) -> KeyFields {
        KeyFields {
            alias: k.alias.clone(),
            models: serde_json::Value::from(k.models.clone()).to_string(),
            aliases: serde_json::to_string(&k.aliases).unwrap_or_else(|_| "{}".into()),
            expires: k.expires,
            limits: RawLimits::of(&k.limits),
            metadata: k.metadata.to_string(),
            routes: serde_json::Value::from(k.routes.clone()).to_string(),
            team_id: k.team_id.clone(),
        }
    }
}

/// A `teams` / `end_users` row as stored.
struct RawAccount {
    id: String,
    alias: Option<String>,
    models: String,
    limits: RawLimits,
    spend: i64,
    total_spend: i64,
    metadata: String,
    blocked: bool,
    created: i64,
    deleted: bool,
}

impl RawAccount {
    fn of(a: &Account) -> RawAccount {
        RawAccount {
            id: a.id.clone(),
            alias: a.alias.clone(),
            models: serde_json::Value::from(a.models.clone()).to_string(),
            limits: RawLimits::of(&a.limits),
            spend: to_i64(a.spend.0),
            total_spend: to_i64(a.total_spend.0),
            metadata: a.metadata.to_string(),
            blocked: a.blocked,
            created: a.created,
            deleted: a.deleted,
        }
    }

    fn into_account(self) -> Account {
        Account {
            id: self.id,
            alias: self.alias,
            models: json_list(&self.models),
            limits: self.limits.into_limits(),
            spend: micros(self.spend),
            total_spend: micros(self.total_spend),
            metadata: json_value(&self.metadata),
            blocked: self.blocked,
            created: self.created,
            deleted: self.deleted,
        }
    }
}

/// Per-holder sums and per-(key, model) sums of a batch.
struct Aggregated {
    keys: Vec<(String, i64)>,
    teams: Vec<(String, i64)>,
    users: Vec<(String, i64)>,
    key_models: Vec<(String, String, i64)>,
}

fn aggregate(batch: &[SpendIncrement]) -> Aggregated {
    let mut per: HashMap<&SpendTarget, u64> = HashMap::new();
    let mut per_model: HashMap<(&str, &str), u64> = HashMap::new();
    for inc in batch {
        let v = per.entry(&inc.target).or_default();
        *v = v.saturating_add(inc.micros.0);
        if let SpendTarget::Key(h) = &inc.target {
            let v = per_model.entry((h, &inc.model)).or_default();
            *v = v.saturating_add(inc.micros.0);
        }
    }
    let mut out = Aggregated {
        keys: Vec::new(),
        teams: Vec::new(),
        users: Vec::new(),
        key_models: per_model
            .into_iter()
            .map(|((h, m), v)| (h.to_string(), m.to_string(), to_i64(v)))
            .collect(),
    };
    for (t, v) in per {
        let v = to_i64(v);
        match t {
            SpendTarget::Key(h) => out.keys.push((h.clone(), v)),
            SpendTarget::Team(id) => out.teams.push((id.clone(), v)),
            SpendTarget::EndUser(id) => out.users.push((id.clone(), v)),
        }
    }
    out
}

/// Columns that older databases held in dollars (`REAL`) and now hold in micro-dollars:
/// `(table, old column, new column)`.
const MONEY_COLUMNS: &[(&str, &str, &str)] = &[
    ("keys", "spend", "spend_micros"),
    ("keys", "max_budget", "max_budget_micros"),
    ("spend", "spend", "spend_micros"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_sums_per_holder_and_key_model() {
        let inc = |t: SpendTarget, m: &str, v: u64| SpendIncrement {
            target: t,
            model: m.into(),
            micros: Micros(v),
        };
        let a = aggregate(&[
            inc(SpendTarget::Key("h".into()), "m1", 5),
            inc(SpendTarget::Key("h".into()), "m2", 7),
            inc(SpendTarget::Team("t".into()), "m1", 12),
            inc(SpendTarget::EndUser("u".into()), "m1", 1),
        ]);
        assert_eq!(a.keys, vec![("h".to_string(), 12)]);
        assert_eq!(a.teams, vec![("t".to_string(), 12)]);
        assert_eq!(a.users, vec![("u".to_string(), 1)]);
        let mut km = a.key_models.clone();
        km.sort();
        assert_eq!(
            km,
            vec![
                ("h".to_string(), "m1".to_string(), 5),
                ("h".to_string(), "m2".to_string(), 7)
            ]
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
    }
}
