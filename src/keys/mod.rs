//! Virtual keys, their budgets and spend, with no database round trip on the request path.
//!
//! - [`material`]: `sk-` secrets (≈190 random bits), stored only as SHA-256; the short `key_id`.
//! - [`store`]: the [`Store`] trait, SQLite (`sqlite://PATH`, default) and PostgreSQL (`postgres://`).
//! - [`Keys`]: the in-memory view the request path reads ([`Keys::authenticate`],
//!   [`Keys::record_spend`]); a background task ([`Keys::run`]) writes spend in batches and refreshes
//!   the view from the database.
//! - [`api`]: the LiteLLM-shaped `/key/*` management handlers ([`handle`]).
//!
//! ## Bounds
//! - **Memory**: the view holds one entry per key in the database; pending (unwritten) spend is at
//!   most one amount per (key, model) — at most [`MAX_PENDING_MODELS`] models per key, beyond which
//!   amounts are pooled under `"(other)"` — so it is O(keys × models), never O(requests), also while
//!   the database is unreachable (failed batches are merged back, not queued).
//! - **Revocation**: a key deleted or changed through another instance is seen here within one
//!   `refresh` interval (default 5 s) plus the time of one load; through this instance, at once.
//! - **Budget overshoot**: the budget check reads the view's spend plus this instance's pending spend,
//!   which [`Keys::record_spend`] updates at once (before any database write). A key's spend can
//!   therefore exceed `max_budget` by at most (a) the cost of the requests already admitted (in
//!   flight) when the budget was reached — their cost is only known when they finish — plus (b) with
//!   several instances on one database, what the other instances spent during the last `refresh`
//!   interval + `flush` interval (their spend reaches the database within one flush, and this
//!   instance within one refresh).

pub mod api;
pub mod material;
pub mod store;
pub mod units;

pub use api::handle;
pub use store::{SpendIncrement, Store, StoreError};
pub use units::{cost, format_duration, parse_duration};

use arc_swap::ArcSwap;
use material::Digest32;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// At most this many distinct models are kept apart in one key's pending spend (see the module
/// docs); further models' amounts are pooled under [`OTHER_MODEL`].
pub const MAX_PENDING_MODELS: usize = 256;
/// The pooled model name past [`MAX_PENDING_MODELS`].
pub const OTHER_MODEL: &str = "(other)";

/// One virtual key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualKey {
    /// SHA-256 of the secret, lowercase hex (the secret itself is never stored).
    pub hash: String,
    /// Short non-secret id for logs, metrics and listings.
    pub key_id: String,
    /// Optional human name (`key_alias` in LiteLLM).
    pub alias: Option<String>,
    /// Models the key may use; empty = all.
    pub models: Vec<String>,
    /// Passthrough routes (`routes[].prefix`) the key may use; empty = none. A route reaches every
    /// model of its upstream, so it is never granted implicitly.
    pub routes: Vec<String>,
    /// Per-key model aliases: requested name → model name.
    pub aliases: HashMap<String, String>,
    /// Expiry, unix seconds.
    pub expires: Option<i64>,
    /// Budget per period in USD.
    pub max_budget: Option<f64>,
    /// Budget period; `None` = the budget never resets.
    pub budget_duration: Option<Duration>,
    /// When the current budget period ends, unix seconds.
    pub budget_reset_at: Option<i64>,
    /// Spend in the current budget period (as of the last load), USD.
    pub spend: f64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
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
            max_budget: None,
            budget_duration: None,
            budget_reset_at: None,
            spend: 0.0,
            rpm: None,
            tpm: None,
            metadata: serde_json::Value::Null,
            created: units::now(),
            deleted: false,
        }
    }
}

/// Spend recorded on this instance and not yet part of the loaded view.
#[derive(Debug, Default)]
struct PendingInner {
    /// Not yet written, per model (bounded by [`MAX_PENDING_MODELS`]).
    by_model: HashMap<String, f64>,
    /// Sum of `by_model` plus amounts taken by a flush in progress.
    unflushed: f64,
    /// Written to the database since the view's last load (so not yet in `VirtualKey::spend`).
    flushed: f64,
}

#[derive(Debug, Default)]
struct Pending(Mutex<PendingInner>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        // A panic while holding this lock cannot leave the sums inconsistent enough to matter more
        // than losing them: keep going with the data as it is.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn total(&self) -> f64 {
        let p = self.lock();
        p.unflushed + p.flushed
    }
}

/// A key in the in-memory view, as the request path sees it.
#[derive(Debug)]
pub struct KeyEntry {
    /// The key as of the view's last load (or this instance's last change).
    pub key: VirtualKey,
    /// Carried over from snapshot to snapshot, so spend recorded on an old snapshot's entry counts.
    pending: Arc<Pending>,
}

impl KeyEntry {
    pub fn key_id(&self) -> &str {
        &self.key.key_id
    }

    /// Spend in the current budget period: the loaded spend plus what this instance recorded since.
    pub fn spend(&self) -> f64 {
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
        self.key.rpm
    }

    pub fn tpm(&self) -> Option<u64> {
        self.key.tpm
    }

    fn check(&self, now: i64) -> Result<(), KeyError> {
        if self.key.deleted {
            return Err(KeyError::Deleted);
        }
        if self.key.expires.is_some_and(|e| e <= now) {
            return Err(KeyError::Expired);
        }
        if let Some(max) = self.key.max_budget {
            // A period that has ended is over even before the background task resets it.
            let period_over = self.key.budget_duration.is_some()
                && self.key.budget_reset_at.is_some_and(|r| r <= now);
            if !period_over && self.spend() >= max {
                return Err(KeyError::BudgetExceeded);
            }
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
            KeyError::BudgetExceeded => "This API key has spent its budget.",
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for KeyError {}

/// Timing of the background task.
#[derive(Debug, Clone, Copy)]
pub struct KeysOptions {
    /// How often the view is reloaded from the database (the revocation bound). Default 5 s.
    pub refresh: Duration,
    /// How often pending spend is written. Default 1 s.
    pub flush: Duration,
}

impl Default for KeysOptions {
    fn default() -> Self {
        KeysOptions {
            refresh: Duration::from_secs(5),
            flush: Duration::from_secs(1),
        }
    }
}

type Snapshot = HashMap<Digest32, Arc<KeyEntry>>;

/// The in-memory view of the virtual keys, shared (`Arc<Keys>`) by the request path, the management
/// API and the background task.
pub struct Keys {
    store: Arc<dyn Store>,
    view: ArcSwap<Snapshot>,
    options: KeysOptions,
    /// Serialises everything that replaces the view from the database or changes the database
    /// (refresh, flush, management writes), so that a slow load never reinstalls a key this instance
    /// has just changed or deleted, and flushed spend is never counted twice.
    writer: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.view.load().len())
            .field("options", &self.options)
            .finish()
    }
}

impl Keys {
    /// Opens the database at `url` (see [`store::open`]) and loads the view.
    pub async fn open(url: &str, options: KeysOptions) -> Result<Arc<Keys>, StoreError> {
        let store = store::open(url).await?;
        Keys::with_store(store, options).await
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

    /// A view over an already opened store.
    pub async fn with_store(
        store: Arc<dyn Store>,
        options: KeysOptions,
    ) -> Result<Arc<Keys>, StoreError> {
        let keys = Arc::new(Keys {
            store,
            view: ArcSwap::from_pointee(HashMap::new()),
            options,
            writer: tokio::sync::Mutex::new(()),
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

    /// The key for a client's secret, if it may be used now (not deleted, not expired, budget not
    /// spent). One SHA-256 and one map lookup: no database access. The map is keyed by the hash, so
    /// no secret is compared byte by byte.
    pub fn authenticate(&self, secret: &str) -> Result<Arc<KeyEntry>, KeyError> {
        self.authenticate_digest(&material::digest(secret))
    }

    /// [`Keys::authenticate`] for a caller that already hashed the secret.
    pub fn authenticate_digest(&self, d: &Digest32) -> Result<Arc<KeyEntry>, KeyError> {
        let entry = self.view.load().get(d).cloned().ok_or(KeyError::Unknown)?;
        entry.check(units::now())?;
        Ok(entry)
    }

    /// Adds `usd` to the key's spend for `model`: visible to the budget check at once, written to the
    /// database by the next flush. `model` should be a configured model name (it bounds the buffer).
    pub fn record_spend(&self, key: &KeyEntry, model: &str, usd: f64) {
        if !usd.is_finite() || usd <= 0.0 {
            return;
        }
        let mut p = key.pending.lock();
        p.unflushed += usd;
        if let Some(v) = p.by_model.get_mut(model) {
            *v += usd;
        } else if p.by_model.len() < MAX_PENDING_MODELS {
            p.by_model.insert(model.to_string(), usd);
        } else {
            *p.by_model.entry(OTHER_MODEL.to_string()).or_default() += usd;
        }
    }

    /// [`Keys::record_spend`] by the key's hash (hex); `false` when the view has no such key.
    pub fn record_spend_by_hash(&self, hash_hex: &str, model: &str, usd: f64) -> bool {
        let Some(d) = material::from_hex(hash_hex) else {
            return false;
        };
        let entry = self.view.load().get(&d).cloned();
        match entry {
            Some(e) => {
                self.record_spend(&e, model, usd);
                true
            }
            None => false,
        }
    }

    /// Every key in the view, deleted ones included.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        self.view.load().values().cloned().collect()
    }

    /// The view's entry for a hash (hex), deleted or not.
    pub fn entry_by_hash(&self, hash_hex: &str) -> Option<Arc<KeyEntry>> {
        let d = material::from_hex(hash_hex)?;
        self.view.load().get(&d).cloned()
    }

    /// Writes pending spend to the database in one batch. On failure the amounts stay pending (merged
    /// back per key and model, so memory stays bounded) and are retried by the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<(), StoreError> {
        let view = self.view.load_full();
        let mut taken: Vec<(Arc<KeyEntry>, HashMap<String, f64>)> = Vec::new();
        let mut batch = Vec::new();
        for entry in view.values() {
            let by_model = {
                let mut p = entry.pending.lock();
                if p.by_model.is_empty() {
                    continue;
                }
                std::mem::take(&mut p.by_model)
            };
            for (model, usd) in &by_model {
                batch.push(SpendIncrement {
                    hash: entry.key.hash.clone(),
                    model: model.clone(),
                    usd: *usd,
                });
            }
            taken.push((entry.clone(), by_model));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.store.add_spend(&batch).await;
        for (entry, by_model) in taken {
            let mut p = entry.pending.lock();
            if result.is_ok() {
                let sum: f64 = by_model.values().sum();
                p.unflushed -= sum;
                p.flushed += sum;
            } else {
                for (model, usd) in by_model {
                    *p.by_model.entry(model).or_default() += usd;
                }
            }
        }
        result
    }

    /// Starts new budget periods that are due, then reloads the view from the database.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<(), StoreError> {
        let now = units::now();
        let due = self.view.load().values().any(|e| {
            !e.key.deleted
                && e.key.budget_duration.is_some()
                && e.key.budget_reset_at.is_some_and(|r| r <= now)
        });
        if due {
            self.store.reset_budgets(now).await?;
        }
        let loaded = self.store.load_all().await?;
        let old = self.view.load_full();
        let mut next: Snapshot = HashMap::with_capacity(loaded.len());
        for key in loaded {
            let Some(d) = material::from_hex(&key.hash) else {
                continue;
            };
            let pending = old.get(&d).map(|e| e.pending.clone()).unwrap_or_default();
            next.insert(d, Arc::new(KeyEntry { key, pending }));
        }
        self.view.store(Arc::new(next));
        // Everything flushed before this load is now in the loaded spend. Flushes are serialised
        // with loads, so all of `flushed` is. (Clearing after the swap can count it twice for a
        // moment, never zero times.)
        for e in self.view.load().values() {
            e.pending.lock().flushed = 0.0;
        }
        Ok(())
    }

    /// Replaces one key in the view (after this instance changed it in the database), keeping its
    /// pending spend.
    fn install(&self, key: VirtualKey) {
        let Some(d) = material::from_hex(&key.hash) else {
            return;
        };
        self.view.rcu(|cur| {
            let mut next = (**cur).clone();
            let pending = cur.get(&d).map(|e| e.pending.clone()).unwrap_or_default();
            next.insert(
                d,
                Arc::new(KeyEntry {
                    key: key.clone(),
                    pending,
                }),
            );
            next
        });
    }

    /// Creates a key: returns the secret (shown once) and the stored key.
    pub async fn generate(&self, mut key: VirtualKey) -> Result<(String, VirtualKey), StoreError> {
        let secret = material::generate();
        key.hash = material::to_hex(&material::digest(&secret));
        key.key_id = material::key_id(&key.hash);
        key.deleted = false;
        let _w = self.writer.lock().await;
        self.store.insert(&key).await?;
        self.install(key.clone());
        Ok((secret, key))
    }

    /// Writes a key's changed fields (see [`Store::update`]); `false` when it does not exist.
    pub async fn update(&self, key: VirtualKey) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        if !self.store.update(&key).await? {
            return Ok(false);
        }
        // The database's copy has the current spend (possibly from other instances).
        let fresh = self.store.get(&key.hash).await?.unwrap_or(key);
        self.install(fresh);
        Ok(true)
    }

    /// Soft-deletes a key; refused here at once, on other instances within one refresh.
    pub async fn delete(&self, hash_hex: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        if !self.store.delete(hash_hex).await? {
            return Ok(false);
        }
        if let Some(mut key) = self.store.get(hash_hex).await? {
            key.deleted = true;
            self.install(key);
        }
        Ok(true)
    }

    /// One background step: flush pending spend; when `refresh_due`, reset due budgets and reload.
    async fn tick(&self, refresh_due: bool) {
        let _w = self.writer.lock().await;
        if let Err(e) = self.flush_locked().await {
            log::warn!("{e} (spend stays pending and is retried)");
        }
        if refresh_due {
            if let Err(e) = self.refresh_locked().await {
                log::warn!("{e} (keeping the previous key view)");
            }
        }
    }

    /// The background task: flushes every `flush` interval and refreshes every `refresh` interval
    /// until `shutdown` turns true (Pingora's `ShutdownWatch` is this type), then flushes once more.
    /// Run it on any tokio runtime, e.g. from a Pingora `BackgroundService::start`.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let step = self.options.flush.min(self.options.refresh);
        let mut ticker = tokio::time::interval(step);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            }
            let refresh_due = last_refresh.elapsed() >= self.options.refresh;
            if refresh_due {
                last_refresh = Instant::now();
            }
            self.tick(refresh_due).await;
        }
        if let Err(e) = self.flush().await {
            log::warn!("{e}: pending spend lost at shutdown");
        }
    }

    /// Spawns the background task on the current tokio runtime. It holds only a weak reference and
    /// ends when the last `Arc<Keys>` is dropped (without a final flush: call [`Keys::flush`] first,
    /// or use [`Keys::run`] with a shutdown signal).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Keys> = Arc::downgrade(self);
        let options = self.options;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(options.flush.min(options.refresh));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_refresh = Instant::now();
            loop {
                ticker.tick().await;
                let Some(keys) = weak.upgrade() else { break };
                let refresh_due = last_refresh.elapsed() >= options.refresh;
                if refresh_due {
                    last_refresh = Instant::now();
                }
                keys.tick(refresh_due).await;
            }
        })
    }
}
