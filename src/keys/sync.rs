//! Keeping the view and the database in step: spend flushes, refreshes (with budget resets), and the
//! management writes that install their result in the view at once.

use super::accounts::{new_pending, Account, AccountEntry, AccountKind};
use super::limits::SharedPending;
use super::store::{SpendIncrement, SpendTarget, StoreError};
use super::{material, units, KeyEntry, Keys, View, VirtualKey};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

impl Keys {
    /// Writes pending spend to the database in one batch. On failure the amounts stay pending (merged
    /// back per holder and model, so memory stays bounded) and are retried by the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<(), StoreError> {
        let view = self.view.load_full();
        let mut taken: Vec<(SharedPending, super::limits::ByModel)> = Vec::new();
        let mut batch = Vec::new();
        let mut take = |pending: &SharedPending, target: &dyn Fn() -> SpendTarget| {
            let by_model = pending.take();
            if by_model.is_empty() {
                return;
            }
            for (model, micros) in &by_model {
                batch.push(SpendIncrement {
                    target: target(),
                    model: model.clone(),
                    micros: crate::pricing::Micros(*micros),
                });
            }
            taken.push((pending.clone(), by_model));
        };
        for e in view.keys.values() {
            take(&e.pending, &|| SpendTarget::Key(e.key.hash.clone()));
        }
        for e in view.teams.values() {
            take(&e.pending, &|| SpendTarget::Team(e.account.id.clone()));
        }
        for e in view.users.values() {
            take(&e.pending, &|| SpendTarget::EndUser(e.account.id.clone()));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.store.add_spend(&batch).await;
        for (pending, by_model) in taken {
            pending.settle(by_model, result.is_ok());
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
        let due = {
            let v = self.view.load();
            v.keys
                .values()
                .any(|e| !e.key.deleted && e.key.limits.period_over(now))
                || v.teams
                    .values()
                    .chain(v.users.values())
                    .any(|e| !e.account.deleted && e.account.limits.period_over(now))
        };
        if due {
            self.store.reset_budgets(now).await?;
        }
        // Accounts first: a key created after its team is then never seen without it.
        let teams = self.store.load_accounts(AccountKind::Team).await?;
        let users = self.store.load_accounts(AccountKind::EndUser).await?;
        let keys = self.store.load_all().await?;
        let old = self.view.load_full();
        let mut next = View {
            keys: HashMap::with_capacity_and_hasher(keys.len(), Default::default()),
            teams: HashMap::with_capacity_and_hasher(teams.len(), Default::default()),
            users: HashMap::with_capacity_and_hasher(users.len(), Default::default()),
        };
        for key in keys {
            let Some(d) = material::from_hex(&key.hash) else {
                continue;
            };
            let pending = old
                .keys
                .get(&d)
                .map(|e| e.pending.clone())
                .unwrap_or_default();
            next.keys.insert(d, Arc::new(KeyEntry::new(key, pending)));
        }
        for (kind, list) in [(AccountKind::Team, teams), (AccountKind::EndUser, users)] {
            let before = old.accounts(kind);
            let into = next.accounts_mut(kind);
            for a in list {
                let pending = before
                    .get(&a.id)
                    .map(|e| e.pending.clone())
                    .unwrap_or_else(new_pending);
                into.insert(a.id.clone(), Arc::new(AccountEntry::new(kind, a, pending)));
            }
        }
        self.view.store(Arc::new(next));
        // Everything flushed before this load is now in the loaded spend. Flushes are serialised
        // with loads, so all of `flushed` is. (Clearing after the swap can count it twice for a
        // moment, never zero times.)
        let v = self.view.load();
        for e in v.keys.values() {
            e.pending.loaded();
        }
        for e in v.teams.values().chain(v.users.values()) {
            e.pending.loaded();
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
            let pending = cur
                .keys
                .get(&d)
                .map(|e| e.pending.clone())
                .unwrap_or_default();
            next.keys
                .insert(d, Arc::new(KeyEntry::new(key.clone(), pending)));
            next
        });
    }

    /// Replaces one team or end user in the view, keeping its pending spend.
    fn install_account(&self, kind: AccountKind, account: Account) {
        self.view.rcu(|cur| {
            let mut next = (**cur).clone();
            let pending = cur
                .accounts(kind)
                .get(&account.id)
                .map(|e| e.pending.clone())
                .unwrap_or_else(new_pending);
            next.accounts_mut(kind).insert(
                account.id.clone(),
                Arc::new(AccountEntry::new(kind, account.clone(), pending)),
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

    /// Writes a key's changed fields (see [`super::Store::update`]); `false` when it does not exist.
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

    /// Creates a team or end user; `false` when a live one with that id exists. (A deleted one is
    /// replaced: its id becomes usable again, with no spend.)
    pub async fn create_account(
        &self,
        kind: AccountKind,
        account: Account,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        if !self.store.insert_account(kind, &account).await? {
            return Ok(false);
        }
        let fresh = self
            .store
            .get_account(kind, &account.id)
            .await?
            .unwrap_or(account);
        self.install_account(kind, fresh);
        Ok(true)
    }

    /// Writes a team's or end user's settings (never its spend); `false` when it does not exist.
    pub async fn update_account(
        &self,
        kind: AccountKind,
        account: Account,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        if !self.store.update_account(kind, &account).await? {
            return Ok(false);
        }
        let fresh = self
            .store
            .get_account(kind, &account.id)
            .await?
            .unwrap_or(account);
        self.install_account(kind, fresh);
        Ok(true)
    }

    /// Soft-deletes a team or end user; `false` when there is no live one.
    pub async fn delete_account(&self, kind: AccountKind, id: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        if !self.store.delete_account(kind, id).await? {
            return Ok(false);
        }
        if let Some(mut a) = self.store.get_account(kind, id).await? {
            a.deleted = true;
            self.install_account(kind, a);
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

    /// The background task: flushes every `flush` interval and refreshes every `refresh` interval,
    /// and writes the spend log, until `shutdown` turns true (Pingora's `ShutdownWatch` is this
    /// type); then flushes spend and the spend-log queue once more. Run it on any tokio runtime,
    /// e.g. from a Pingora `BackgroundService::start`.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let retention = self.options.spend_log_retention;
        tokio::join!(
            self.run_spend(shutdown.clone()),
            self.spend_log.run(retention, shutdown)
        );
    }

    async fn run_spend(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
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

    /// Spawns the spend and refresh task on the current tokio runtime (not the spend-log writer:
    /// see [`super::SpendLog::run`]). It holds only a weak reference and ends when the last
    /// `Arc<Keys>` is dropped (without a final flush: call [`Keys::flush`] first, or use
    /// [`Keys::run`] with a shutdown signal).
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
