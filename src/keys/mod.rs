//! Governance: virtual keys, teams and end users, their budgets and spend, the spend log and the
//! audit log — with no database round trip on the request path.
//!
//! - [`material`]: `sk-` secrets (≈190 random bits), stored only as SHA-256; the short `key_id`.
//! - [`accounts`]: teams and end users (one type, [`Account`]); [`limits`]: what keys and accounts
//!   share (a budget in exact micro-dollars, rpm/tpm, pending spend).
//! - [`store`]: the [`Store`] trait, SQLite (`sqlite://PATH`, default) and PostgreSQL (`postgres://`).
//! - [`Keys`]: the in-memory view the request path reads ([`Keys::authenticate`], [`Keys::admit`],
//!   [`Keys::record_spend`]); a background task ([`Keys::run`]) writes spend in batches and refreshes
//!   the view from the database ([`sync`]).
//! - [`spendlog`]: one row per request, queued off the request path and written in batches.
//! - [`audit`]: who changed which key, team or end user, and every config reload.
//! - [`api`]: the LiteLLM-shaped `/key/*`, `/team/*`, `/customer/*`, `/spend/*` and `/audit/*`
//!   handlers ([`handle`]).
//!
//! Money is integer micro-dollars ([`Micros`]) in memory and in the database; the JSON APIs speak
//! USD numbers, as LiteLLM does.
//!
//! ## Bounds
//! - **Memory**: the view holds one entry per key, team and end user in the database; pending
//!   (unwritten) spend is at most one amount per (holder, model) — at most
//!   [`limits::MAX_PENDING_MODELS`] models per holder — so it is O(holders × models), never
//!   O(requests), also while the database is unreachable (failed batches are merged back, not
//!   queued). The spend-log queue is bounded (`keys.spend_log_queue`); rows beyond it are dropped and
//!   counted.
//! - **Revocation**: a key, team or end user deleted or changed through another instance is seen
//!   here within one `refresh` interval (`state.key_refresh`, default 5 s) plus the time of one load;
//!   through this instance, at once.
//! - **Budget overshoot**: the budget checks read the view's spend plus this instance's pending spend,
//!   which [`Keys::record_spend`] updates at once (before any database write). A budget (key, team or
//!   end user) can therefore be exceeded by at most (a) the cost of its requests already admitted (in
//!   flight) when it was reached — their cost is only known when they finish — plus (b) with several
//!   instances on one database, what the other instances spent on it during the last `flush` +
//!   `refresh` interval (their spend reaches the database within one flush, and this instance within
//!   one refresh).

pub mod accounts;
pub mod admit;
pub mod api;
pub mod audit;
pub mod limits;
pub mod material;
pub mod spendlog;
pub mod store;
pub mod sync;
pub mod units;

pub use accounts::{Account, AccountEntry, AccountKind};
pub use admit::{Governed, Level, Refusal};
pub use api::{handle, handle_as};
pub use audit::{Actor, AuditEntry};
pub use limits::{Limits, RateBudgets, MAX_PENDING_MODELS, OTHER_MODEL};
pub use spendlog::{SpendLog, SpendLogRow};
pub use store::{SpendIncrement, SpendTarget, Store, StoreError};
pub use units::{format_duration, parse_duration};

use crate::pricing::Micros;
use arc_swap::ArcSwap;
use limits::SharedPending;
use material::Digest32;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One virtual key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualKey {
    /// SHA-256 of the secret, lowercase hex (the secret itself is never stored).
    pub hash: String,
    /// Short non-secret id for logs, metrics and listings.
    pub key_id: String,
    /// Optional human name (`key_alias` in LiteLLM).
    pub alias: Option<String>,
    /// Models the key may use; empty = all (within its team's models).
    pub models: Vec<String>,
    /// Passthrough routes (`routes[].prefix`) the key may use; empty = none. A route reaches every
    /// model of its upstream, so it is never granted implicitly.
    pub routes: Vec<String>,
    /// Per-key model aliases: requested name → model name.
    pub aliases: HashMap<String, String>,
    /// Expiry, unix seconds.
    pub expires: Option<i64>,
    /// The team whose models, budget and limits also bind this key.
    pub team_id: Option<String>,
    /// Budget (USD micro-dollars per period) and rate limits.
    pub limits: Limits,
    /// Spend in the current budget period (as of the last load).
    pub spend: Micros,
    pub metadata: serde_json::Value,
    /// Creation time, unix seconds.
    pub created: i64,
    pub deleted: bool,
}

impl VirtualKey {
    /// A new key for the secret's hash with no limits, created now.
    pub fn new(hash_hex: String) -> VirtualKey {
        VirtualKey {
            key_id: material::key_id(&hash_hex),
            hash: hash_hex,
            alias: None,
            models: Vec::new(),
            routes: Vec::new(),
            aliases: HashMap::new(),
            expires: None,
            team_id: None,
            limits: Limits::default(),
            spend: Micros::ZERO,
            metadata: serde_json::Value::Null,
            created: units::now(),
            deleted: false,
        }
    }
}

/// A key in the in-memory view, as the request path sees it.
#[derive(Debug)]
pub struct KeyEntry {
    /// The key as of the view's last load (or this instance's last change).
    pub key: VirtualKey,
    /// Carried over from snapshot to snapshot, so spend recorded on an old snapshot's entry counts.
    pending: SharedPending,
    rates: RateBudgets,
    /// `key.key_id` and `key.team_id` shared, for what a request keeps of them (its context, its
    /// spend-log row) without a copy per request.
    id: Arc<str>,
    team: Option<Arc<str>>,
}

impl KeyEntry {
    fn new(key: VirtualKey, pending: SharedPending) -> KeyEntry {
        let rates = RateBudgets::new("key", &key.key_id, &key.limits);
        KeyEntry {
            id: Arc::from(key.key_id.as_str()),
            team: key.team_id.as_deref().map(Arc::from),
            key,
            pending,
            rates,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// [`Self::key_id`], shared.
    pub fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    /// The key's team id, shared.
    pub fn shared_team_id(&self) -> Option<&Arc<str>> {
        self.team.as_ref()
    }

    /// Spend in the current budget period: the loaded spend plus what this instance recorded since.
    pub fn spend(&self) -> Micros {
        self.key.spend + self.pending.total()
    }

    /// The model name a request for `requested` means for this key (its per-key aliases).
    pub fn resolve_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.key
            .aliases
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested)
    }

    /// Whether the key may use `model` (an empty list allows every model).
    pub fn allows_model(&self, model: &str) -> bool {
        self.key.models.is_empty() || self.key.models.iter().any(|m| m == model)
    }

    /// Whether the key may use the passthrough route with `prefix` (only when granted by name).
    pub fn allows_route(&self, prefix: &str) -> bool {
        self.key.routes.iter().any(|r| r == prefix)
    }

    pub fn rpm(&self) -> Option<u64> {
        self.key.limits.rpm
    }

    pub fn tpm(&self) -> Option<u64> {
        self.key.limits.tpm
    }

    /// The key's rate limits as scheduler budgets.
    pub fn rates(&self) -> &RateBudgets {
        &self.rates
    }

    fn check(&self, now: i64) -> Result<(), KeyError> {
        if self.key.deleted {
            return Err(KeyError::Deleted);
        }
        if self.key.expires.is_some_and(|e| e <= now) {
            return Err(KeyError::Expired);
        }
        if self.key.limits.over_budget(self.spend(), now) {
            return Err(KeyError::BudgetExceeded);
        }
        Ok(())
    }
}

/// Why a key was refused on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Unknown,
    Expired,
    /// Deleted keys answer exactly like unknown ones.
    Deleted,
    BudgetExceeded,
}

impl KeyError {
    pub fn status(self) -> u16 {
        match self {
            KeyError::BudgetExceeded => 429,
            _ => 401,
        }
    }

    /// The OpenAI-shaped error `code`.
    pub fn code(self) -> &'static str {
        match self {
            KeyError::BudgetExceeded => "budget_exceeded",
            _ => "invalid_api_key",
        }
    }

    /// The error `type`.
    pub fn kind(self) -> &'static str {
        match self {
            KeyError::BudgetExceeded => "rate_limit_error",
            _ => "authentication_error",
        }
    }

    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            KeyError::Unknown | KeyError::Deleted => "unknown_key",
            KeyError::Expired => "expired_key",
            KeyError::BudgetExceeded => "budget_exceeded",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            KeyError::Unknown | KeyError::Deleted => "Invalid API key.",
            KeyError::Expired => "This API key has expired.",
            KeyError::BudgetExceeded => {
                "Budget exceeded for this API key (level: key): it has spent its max_budget."
            }
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for KeyError {}

/// Timing and sizes of the background work.
#[derive(Debug, Clone, Copy)]
pub struct KeysOptions {
    /// How often the view is reloaded from the database (the revocation bound). Default 5 s.
    pub refresh: Duration,
    /// How often pending spend is written. Default 1 s.
    pub flush: Duration,
    /// Spend-log rows waiting to be written at most; further rows are dropped (and counted).
    pub spend_log_queue: usize,
    /// Spend-log rows older than this are deleted; `None` keeps them.
    pub spend_log_retention: Option<Duration>,
}

impl Default for KeysOptions {
    fn default() -> Self {
        KeysOptions {
            refresh: Duration::from_secs(5),
            flush: Duration::from_secs(1),
            spend_log_queue: spendlog::DEFAULT_QUEUE,
            spend_log_retention: Some(spendlog::DEFAULT_RETENTION),
        }
    }
}

/// One snapshot of everything the request path reads.
#[derive(Default, Clone)]
pub(crate) struct View {
    pub(crate) keys: HashMap<Digest32, Arc<KeyEntry>, ahash::RandomState>,
    pub(crate) teams: Accounts,
    pub(crate) users: Accounts,
}

/// Teams or end users by id. Every governed request looks its key, team and end user up: aHash
/// (randomly keyed), not SipHash.
pub(crate) type Accounts = HashMap<String, Arc<AccountEntry>, ahash::RandomState>;

impl View {
    pub(crate) fn accounts(&self, kind: AccountKind) -> &Accounts {
        match kind {
            AccountKind::Team => &self.teams,
            AccountKind::EndUser => &self.users,
        }
    }

    pub(crate) fn accounts_mut(&mut self, kind: AccountKind) -> &mut Accounts {
        match kind {
            AccountKind::Team => &mut self.teams,
            AccountKind::EndUser => &mut self.users,
        }
    }
}

/// The in-memory view of keys, teams and end users, shared (`Arc<Keys>`) by the request path, the
/// management API and the background task.
pub struct Keys {
    store: Arc<dyn Store>,
    view: ArcSwap<View>,
    options: KeysOptions,
    /// Serialises everything that replaces the view from the database or changes the database
    /// (refresh, flush, management writes), so that a slow load never reinstalls something this
    /// instance has just changed or deleted, and flushed spend is never counted twice.
    writer: tokio::sync::Mutex<()>,
    spend_log: SpendLog,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.view.load();
        f.debug_struct("Keys")
            .field("keys", &v.keys.len())
            .field("teams", &v.teams.len())
            .field("end_users", &v.users.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Keys {
    /// Opens the database at `url` (see [`store::open`]) and loads the view. The spend log writes
    /// through a connection of its own, so that its batches never wait behind a refresh.
    pub async fn open(url: &str, options: KeysOptions) -> Result<Arc<Keys>, StoreError> {
        let store = store::open(url).await?;
        let log_store = if url.contains(":memory:") {
            store.clone()
        } else {
            store::open(url).await?
        };
        Keys::with_stores(store, log_store, options).await
    }

    /// [`Keys::open`] for synchronous callers (startup code, the CLI): runs on a temporary runtime
    /// on its own thread, so it works inside or outside a tokio runtime.
    pub fn open_blocking(url: &str, options: KeysOptions) -> Result<Arc<Keys>, StoreError> {
        let url = url.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError(format!("runtime: {e}")))?;
            rt.block_on(Keys::open(&url, options))
        })
        .join()
        .map_err(|_| StoreError("opening the key store panicked".into()))?
    }

    /// A view over an already opened store (the spend log writes through the same one).
    pub async fn with_store(
        store: Arc<dyn Store>,
        options: KeysOptions,
    ) -> Result<Arc<Keys>, StoreError> {
        Keys::with_stores(store.clone(), store, options).await
    }

    async fn with_stores(
        store: Arc<dyn Store>,
        log_store: Arc<dyn Store>,
        options: KeysOptions,
    ) -> Result<Arc<Keys>, StoreError> {
        let keys = Arc::new(Keys {
            store,
            view: ArcSwap::from_pointee(View::default()),
            options,
            writer: tokio::sync::Mutex::new(()),
            spend_log: SpendLog::new(log_store, options.spend_log_queue)
                .map_err(|e| StoreError(format!("spend log metrics: {e}")))?,
        });
        keys.refresh().await?;
        Ok(keys)
    }

    pub fn options(&self) -> KeysOptions {
        self.options
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The spend-log queue and its writer.
    pub fn spend_log(&self) -> &SpendLog {
        &self.spend_log
    }

    /// The key for a client's secret, if it may be used now (not deleted, not expired, budget not
    /// spent). One SHA-256 and one map lookup: no database access. The map is keyed by the hash, so
    /// no secret is compared byte by byte.
    pub fn authenticate(&self, secret: &str) -> Result<Arc<KeyEntry>, KeyError> {
        self.authenticate_digest(&material::digest(secret))
    }

    /// [`Keys::authenticate`] for a caller that already hashed the secret.
    pub fn authenticate_digest(&self, d: &Digest32) -> Result<Arc<KeyEntry>, KeyError> {
        let entry = self
            .view
            .load()
            .keys
            .get(d)
            .cloned()
            .ok_or(KeyError::Unknown)?;
        entry.check(units::now())?;
        Ok(entry)
    }

    /// Adds `cost` to the spend of everyone the request is governed as — the key (per model), its
    /// team, the end user — visible to the budget checks at once, written by the next flush.
    /// `model` should be a configured model name (it bounds the buffers).
    pub fn record_spend(&self, who: &Governed, model: &str, cost: Micros) {
        if cost == Micros::ZERO {
            return;
        }
        if let Some(k) = &who.key {
            k.pending.add(model, cost);
        }
        if let Some(t) = &who.team {
            t.pending.add(model, cost);
        }
        if let Some(u) = &who.user {
            u.pending.add(model, cost);
        }
    }

    /// Records spend by the key's hash (hex), with the key's team and the end user `user` when they
    /// are known (the batcher settles spend after its requests ended); `false` when the view has no
    /// such key.
    pub fn record_spend_by_hash(
        &self,
        hash_hex: &str,
        user: Option<&str>,
        model: &str,
        cost: Micros,
    ) -> bool {
        let Some(d) = material::from_hex(hash_hex) else {
            return false;
        };
        let view = self.view.load();
        let Some(key) = view.keys.get(&d).cloned() else {
            return false;
        };
        let team = key
            .key
            .team_id
            .as_ref()
            .and_then(|t| view.teams.get(t))
            .cloned();
        let user = user.and_then(|u| view.users.get(u)).cloned();
        self.record_spend(
            &Governed {
                key: Some(key),
                team,
                user,
                user_id: None,
            },
            model,
            cost,
        );
        true
    }

    /// Every key in the view, deleted ones included.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        self.view.load().keys.values().cloned().collect()
    }

    /// The view's entry for a hash (hex), deleted or not.
    pub fn entry_by_hash(&self, hash_hex: &str) -> Option<Arc<KeyEntry>> {
        let d = material::from_hex(hash_hex)?;
        self.view.load().keys.get(&d).cloned()
    }

    /// Every team or end user in the view, deleted ones included.
    pub fn accounts(&self, kind: AccountKind) -> Vec<Arc<AccountEntry>> {
        self.view.load().accounts(kind).values().cloned().collect()
    }

    /// One team or end user from the view, deleted or not.
    pub fn account(&self, kind: AccountKind, id: &str) -> Option<Arc<AccountEntry>> {
        self.view.load().accounts(kind).get(id).cloned()
    }

    /// Lifetime spend (USD) of the `n` live teams that spent most, then `("other", the rest)` when
    /// there are more: the bounded label set of the spend-by-team metric.
    pub fn team_spend_top(&self, n: usize) -> Vec<(String, f64)> {
        let view = self.view.load();
        let mut all: Vec<(&str, Micros)> = view
            .teams
            .values()
            .filter(|t| !t.account.deleted)
            .map(|t| (t.id(), t.total_spend()))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut out: Vec<(String, f64)> = all
            .iter()
            .take(n)
            .map(|(id, m)| (id.to_string(), m.as_usd_f64()))
            .collect();
        if all.len() > n {
            let rest: Micros = all[n..].iter().map(|(_, m)| *m).sum();
            out.push(("other".to_string(), rest.as_usd_f64()));
        }
        out
    }

    /// Records an audit entry (a failure is logged, not returned: the change it describes is done).
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.store.insert_audit(&entry).await {
            log::error!(
                "audit log: could not record {} {} {}: {e}",
                entry.action,
                entry.table_name,
                entry.object_id.as_deref().unwrap_or("")
            );
        }
    }
}
