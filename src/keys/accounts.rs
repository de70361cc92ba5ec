//! Teams and end users: holders of a budget and rate limits that are not keys themselves.
//!
//! A **team** (LiteLLM's `/team/*`) binds every key generated with its `team_id`: its `models` narrow
//! what those keys may use, and its budget and limits are shared by all of them. An **end user**
//! (LiteLLM's `/customer/*`) is named by the request's `user` field; its budget and limits apply to
//! every request that names it, whichever key sends it. Both are stored alike (tables `teams` and
//! `end_users`, the same columns), so one type and one code path serve both.

use super::limits::{Limits, RateBudgets, SharedPending};
use crate::pricing::Micros;
use std::sync::Arc;

/// Which kind of account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    Team,
    EndUser,
}

impl AccountKind {
    /// The database table.
    pub fn table(self) -> &'static str {
        match self {
            AccountKind::Team => "teams",
            AccountKind::EndUser => "end_users",
        }
    }

    /// The rate-budget id prefix (shared by instances through Redis).
    pub fn scope(self) -> &'static str {
        match self {
            AccountKind::Team => "team",
            AccountKind::EndUser => "user",
        }
    }

    /// How messages name it.
    pub fn label(self) -> &'static str {
        match self {
            AccountKind::Team => "team",
            AccountKind::EndUser => "end user",
        }
    }

    /// The id field in the JSON API (LiteLLM's names).
    pub fn id_field(self) -> &'static str {
        match self {
            AccountKind::Team => "team_id",
            AccountKind::EndUser => "user_id",
        }
    }

    /// The audit log's `table_name`.
    pub fn audit_table(self) -> &'static str {
        match self {
            AccountKind::Team => "teams",
            AccountKind::EndUser => "customers",
        }
    }
}

/// The longest id accepted for a team or an end user (the request's `user` is cut to this for the
/// spend log).
pub const MAX_ID_LEN: usize = 256;

/// A team or an end user as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    /// `team_alias` / `alias`.
    pub alias: Option<String>,
    /// Models its requests may use; empty = every model.
    pub models: Vec<String>,
    pub limits: Limits,
    /// Spend in the current budget period (as of the last load).
    pub spend: Micros,
    /// Spend since creation (as of the last load): the metrics' "spend by team".
    pub total_spend: Micros,
    pub metadata: serde_json::Value,
    /// Every request refused while set.
    pub blocked: bool,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Deleted accounts stay as rows so every instance learns of the deletion.
    pub deleted: bool,
}

impl Account {
    pub fn new(id: String, created: i64) -> Account {
        Account {
            id,
            alias: None,
            models: Vec::new(),
            limits: Limits::default(),
            spend: Micros::ZERO,
            total_spend: Micros::ZERO,
            metadata: serde_json::Value::Null,
            blocked: false,
            created,
            deleted: false,
        }
    }
}

/// An account in the in-memory view.
#[derive(Debug)]
pub struct AccountEntry {
    pub kind: AccountKind,
    pub account: Account,
    pub(crate) pending: SharedPending,
    pub(crate) rates: RateBudgets,
}

impl AccountEntry {
    pub(crate) fn new(kind: AccountKind, account: Account, pending: SharedPending) -> AccountEntry {
        let rates = RateBudgets::new(kind.scope(), &account.id, &account.limits);
        AccountEntry {
            kind,
            account,
            pending,
            rates,
        }
    }

    pub fn id(&self) -> &str {
        &self.account.id
    }

    /// Spend in the current budget period: the loaded spend plus what this instance recorded since.
    pub fn spend(&self) -> Micros {
        self.account.spend + self.pending.total()
    }

    /// Lifetime spend, with this instance's unwritten part.
    pub fn total_spend(&self) -> Micros {
        self.account.total_spend + self.pending.total()
    }

    /// Whether its requests may use `model` (an empty list allows every model).
    pub fn allows_model(&self, model: &str) -> bool {
        self.account.models.is_empty() || self.account.models.iter().any(|m| m == model)
    }

    pub fn rates(&self) -> &RateBudgets {
        &self.rates
    }
}

/// An account's pending spend outlives snapshots: shared handle.
pub(crate) fn new_pending() -> SharedPending {
    Arc::default()
}
