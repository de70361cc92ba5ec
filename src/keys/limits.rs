//! What keys, teams and end users have in common: a budget per period in exact micro-dollars, rate
//! limits, and the spend this instance recorded but has not written yet.

use crate::pricing::Micros;
use crate::sched::bucket::Rate;
use crate::sched::store::Budget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Unflushed micro-dollars by model name (added to on every priced request: aHash, not SipHash).
pub type ByModel = HashMap<String, u64, ahash::RandomState>;

/// At most this many distinct models are kept apart in one holder's pending spend; further models'
/// amounts are pooled under [`OTHER_MODEL`] (memory stays O(holders × models), never O(requests)).
pub const MAX_PENDING_MODELS: usize = 256;
/// The pooled model name past [`MAX_PENDING_MODELS`].
pub const OTHER_MODEL: &str = "(other)";

/// A budget and rate limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Budget per period; `None`: no budget.
    pub max_budget: Option<Micros>,
    /// Budget period; `None` = the budget never resets.
    pub budget_duration: Option<Duration>,
    /// When the current budget period ends, unix seconds.
    pub budget_reset_at: Option<i64>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute (the request's estimate is charged at admission).
    pub tpm: Option<u64>,
}

impl Limits {
    /// Whether `spend` has reached the budget. A period that has ended is over even before the
    /// background task resets it in the database.
    pub fn over_budget(&self, spend: Micros, now: i64) -> bool {
        let Some(max) = self.max_budget else {
            return false;
        };
        !self.period_over(now) && spend >= max
    }

    /// Whether the current budget period has ended (a reset is due).
    pub fn period_over(&self, now: i64) -> bool {
        self.budget_duration.is_some() && self.budget_reset_at.is_some_and(|r| r <= now)
    }
}

/// Spend recorded on this instance and not yet part of the loaded view.
#[derive(Debug, Default)]
struct PendingInner {
    /// Not yet written, per model (bounded by [`MAX_PENDING_MODELS`]).
    by_model: ByModel,
    /// Sum of `by_model` plus amounts taken by a flush in progress.
    unflushed: u64,
    /// Written to the database since the view's last load (so not yet in the loaded spend).
    flushed: u64,
}

/// One holder's pending spend, carried from view snapshot to snapshot so that spend recorded on an
/// old snapshot's entry still counts.
#[derive(Debug, Default)]
pub struct Pending(Mutex<PendingInner>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        // A panic while holding this lock cannot leave the sums inconsistent enough to matter more
        // than losing them: keep going with the data as it is.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unwritten plus written-since-the-load spend.
    pub fn total(&self) -> Micros {
        let p = self.lock();
        Micros(p.unflushed.saturating_add(p.flushed))
    }

    /// Adds `micros` for `model`.
    pub fn add(&self, model: &str, micros: Micros) {
        if micros.0 == 0 {
            return;
        }
        let mut p = self.lock();
        p.unflushed = p.unflushed.saturating_add(micros.0);
        if let Some(v) = p.by_model.get_mut(model) {
            *v = v.saturating_add(micros.0);
        } else if p.by_model.len() < MAX_PENDING_MODELS {
            p.by_model.insert(model.to_string(), micros.0);
        } else {
            let v = p.by_model.entry(OTHER_MODEL.to_string()).or_default();
            *v = v.saturating_add(micros.0);
        }
    }

    /// Takes the unwritten amounts for a flush (they still count in [`Pending::total`]).
    pub fn take(&self) -> ByModel {
        std::mem::take(&mut self.lock().by_model)
    }

    /// After a flush of `taken`: written (now counted as `flushed`), or merged back to be retried.
    pub fn settle(&self, taken: ByModel, written: bool) {
        let mut p = self.lock();
        if written {
            let sum = taken.values().fold(0u64, |a, b| a.saturating_add(*b));
            p.unflushed = p.unflushed.saturating_sub(sum);
            p.flushed = p.flushed.saturating_add(sum);
        } else {
            for (model, v) in taken {
                let e = p.by_model.entry(model).or_default();
                *e = e.saturating_add(v);
            }
        }
    }

    /// After a load that includes everything flushed so far.
    pub fn loaded(&self) {
        self.lock().flushed = 0;
    }
}

/// A holder's rate limits as scheduler budgets, built once per view entry so that the request path
/// formats no budget ids.
#[derive(Debug, Clone, Default)]
pub struct RateBudgets {
    pub rpm: Option<Budget>,
    pub tpm: Option<Budget>,
}

impl RateBudgets {
    /// `scope` is `key`, `team` or `user`; `id` the holder's stable id (shared by instances).
    pub fn new(scope: &str, id: &str, limits: &Limits) -> RateBudgets {
        let budget = |kind: &str, per_minute: u64| {
            Budget::bucket(
                Arc::from(format!("{scope}:{id}:{kind}")),
                Rate::per_minute(per_minute),
            )
        };
        RateBudgets {
            rpm: limits.rpm.map(|r| budget("rpm", r)),
            tpm: limits.tpm.map(|t| budget("tpm", t)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }
}

/// Pending spend shared by entries of one holder across snapshots.
pub(crate) type SharedPending = Arc<Pending>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_period() {
        let l = Limits {
            max_budget: Some(Micros(100)),
            budget_duration: Some(Duration::from_secs(60)),
            budget_reset_at: Some(1000),
            ..Default::default()
        };
        assert!(!l.over_budget(Micros(99), 999));
        assert!(l.over_budget(Micros(100), 999));
        // The period ended: the budget is new even before the reset is written.
        assert!(!l.over_budget(Micros(100), 1000));
        assert!(!Limits::default().over_budget(Micros(u64::MAX), 0));
    }

    #[test]
    fn pending_flush_cycle() {
        let p = Pending::default();
        p.add("m", Micros(5));
        p.add("m", Micros(7));
        p.add("n", Micros(0));
        assert_eq!(p.total(), Micros(12));
        let taken = p.take();
        assert_eq!(taken.get("m"), Some(&12));
        p.add("m", Micros(1));
        p.settle(taken.clone(), false);
        assert_eq!(p.total(), Micros(13));
        let taken = p.take();
        p.settle(taken, true);
        assert_eq!(p.total(), Micros(13));
        p.loaded();
        assert_eq!(p.total(), Micros(0));
    }

    #[test]
    fn models_beyond_the_bound_are_pooled() {
        let p = Pending::default();
        for i in 0..MAX_PENDING_MODELS + 3 {
            p.add(&format!("m{i}"), Micros(1));
        }
        let taken = p.take();
        assert_eq!(taken.len(), MAX_PENDING_MODELS + 1);
        assert_eq!(taken.get(OTHER_MODEL), Some(&3));
    }
}
