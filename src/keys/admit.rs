//! Admission of a request by key, team and end user: each must be within scope (models), budget and
//! rate limits; a refusal names the level that refused.
//!
//! Scope and budgets are read from the view ([`Keys::admit`]: map lookups, no I/O). Rate limits are
//! charged against the scheduler's budget store ([`Governed::charge_rates`]): in process, or in Redis
//! when `state.redis` is set, so that every instance draws from one limit per key, team and end user.

use super::accounts::{AccountEntry, AccountKind, MAX_ID_LEN};
use super::{KeyEntry, Keys};
use crate::error::GatewayError;
use crate::pricing::Micros;
use crate::sched::store::{Budget, Charge, Store as BudgetStore, Verdict};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Duration;

/// Who a request is governed as.
#[derive(Debug, Clone, Default)]
pub struct Governed {
    /// The virtual key (none for the master key or without auth).
    pub key: Option<Arc<KeyEntry>>,
    /// The key's team.
    pub team: Option<Arc<AccountEntry>>,
    /// The end user named by the request, when it is a known one.
    pub user: Option<Arc<AccountEntry>>,
    /// The request's `user` as sent (cut to [`MAX_ID_LEN`]), known or not: for the spend log.
    pub user_id: Option<Arc<str>>,
}

impl Governed {
    pub fn team_id(&self) -> Option<&str> {
        self.key.as_ref().and_then(|k| k.key.team_id.as_deref())
    }

    /// Whether any rate limit applies.
    pub fn has_rates(&self) -> bool {
        self.key.as_ref().is_some_and(|k| !k.rates().is_empty())
            || self.team.as_ref().is_some_and(|t| !t.rates().is_empty())
            || self.user.as_ref().is_some_and(|u| !u.rates().is_empty())
    }

    /// Charges the key's, the team's and the end user's rpm (1) and tpm (`tokens()`, the request's
    /// estimate), level by level: a level that refuses gets nothing charged, and the levels admitted
    /// before it are refunded, so a refused request costs no budget anywhere. The answer names the
    /// level that refused. Returns the token budgets charged (for reconciliation with the real usage).
    pub async fn charge_rates(
        &self,
        store: &BudgetStore,
        tokens: impl FnOnce() -> u64,
    ) -> Result<Charged, GatewayError> {
        if !self.has_rates() {
            return Ok(Charged::default());
        }
        let mut charged = Charged::default();
        let levels: [(Level, &str, Option<&super::RateBudgets>); 3] = [
            (
                Level::Key,
                self.key.as_ref().map_or("", |k| k.key_id()),
                self.key.as_ref().map(|k| k.rates()),
            ),
            (
                Level::Team,
                self.team.as_ref().map_or("", |t| t.id()),
                self.team.as_ref().map(|t| t.rates()),
            ),
            (
                Level::EndUser,
                self.user.as_ref().map_or("", |u| u.id()),
                self.user.as_ref().map(|u| u.rates()),
            ),
        ];
        let needs_tokens = levels
            .iter()
            .any(|(_, _, r)| r.is_some_and(|r| r.tpm.is_some()));
        let estimate = if needs_tokens { tokens() } else { 0 };
        charged.estimate = estimate;
        // Every level at once first: one admission (one lock in process, one round trip to Redis),
        // all-or-nothing as each level's is. Only when it refuses are the levels tried one by one,
        // to name the one that refused.
        let mut all: SmallVec<[Charge<'_>; 6]> = SmallVec::new();
        for (_, _, rates) in &levels {
            let Some(rates) = rates.filter(|r| !r.is_empty()) else {
                continue;
            };
            if let Some(b) = &rates.rpm {
                all.push(Charge {
                    budget: b,
                    cost: 1.0,
                });
            }
            if let Some(b) = &rates.tpm {
                all.push(Charge {
                    budget: b,
                    cost: estimate as f64,
                });
                charged.tpm.push(b.clone());
            }
        }
        match store.try_admit(&all).await {
            Ok(Verdict::Admitted) => return Ok(charged),
            Ok(Verdict::Wait(_)) => charged.tpm.clear(),
            Err(_) => {
                return Err(GatewayError::StateUnavailable(
                    "The shared rate-limit state is unavailable".into(),
                ))
            }
        }
        let mut admitted: Vec<(Budget, f64)> = Vec::new();
        for (level, id, rates) in levels {
            let Some(rates) = rates.filter(|r| !r.is_empty()) else {
                continue;
            };
            let mut charges: SmallVec<[Charge<'_>; 2]> = SmallVec::new();
            if let Some(b) = &rates.rpm {
                charges.push(Charge {
                    budget: b,
                    cost: 1.0,
                });
            }
            if let Some(b) = &rates.tpm {
                charges.push(Charge {
                    budget: b,
                    cost: estimate as f64,
                });
            }
            let refused = match store.try_admit(&charges).await {
                Ok(Verdict::Admitted) => None,
                Ok(Verdict::Wait(w)) => Some(GatewayError::RateLimited {
                    message: format!(
                        "Rate limit exceeded for {} `{id}` (level: {}): {}; retry after {:.0}s",
                        level.label(),
                        level.as_str(),
                        describe_rates(rates),
                        w.ceil()
                    ),
                    retry_after: Duration::try_from_secs_f64(w.max(1.0))
                        .unwrap_or(Duration::from_secs(86_400)),
                }),
                Err(_) => Some(GatewayError::StateUnavailable(
                    "The shared rate-limit state is unavailable".into(),
                )),
            };
            if let Some(e) = refused {
                for (b, cost) in &admitted {
                    store.adjust(b, -cost).await;
                }
                return Err(e);
            }
            for c in &charges {
                admitted.push((c.budget.clone(), c.cost));
            }
            if let Some(b) = &rates.tpm {
                charged.tpm.push(b.clone());
            }
        }
        Ok(charged)
    }
}

fn describe_rates(r: &super::RateBudgets) -> String {
    let per_minute =
        |b: &Budget| (60.0 * b.per_second() / crate::sched::bucket::RATE_HEADROOM).round();
    match (&r.rpm, &r.tpm) {
        (Some(a), Some(b)) => format!(
            "{} requests / {} tokens per minute",
            per_minute(a),
            per_minute(b)
        ),
        (Some(a), None) => format!("{} requests per minute", per_minute(a)),
        (None, Some(b)) => format!("{} tokens per minute", per_minute(b)),
        (None, None) => String::new(),
    }
}

/// The token budgets a request was charged at admission, with the estimate charged.
#[derive(Debug, Clone, Default)]
pub struct Charged {
    /// Key, team, end user: in place, no allocation per request (the context is boxed once).
    pub tpm: SmallVec<[Budget; 3]>,
    pub estimate: u64,
}

impl Charged {
    /// Settles the token budgets with the real usage (a refund when the estimate was high).
    pub async fn reconcile(&self, store: &BudgetStore, actual: u64) {
        let diff = actual as f64 - self.estimate as f64;
        if diff == 0.0 {
            return;
        }
        store.adjust_all(&self.tpm, diff).await;
    }
}

/// A level of governance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Key,
    Team,
    EndUser,
}

impl Level {
    /// In error messages and metrics: `key`, `team`, `end_user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Key => "key",
            Level::Team => "team",
            Level::EndUser => "end_user",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Key => "key",
            Level::Team => "team",
            Level::EndUser => "end user",
        }
    }

    fn of(kind: AccountKind) -> Level {
        match kind {
            AccountKind::Team => Level::Team,
            AccountKind::EndUser => Level::EndUser,
        }
    }
}

/// Why [`Keys::admit`] refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The key's team was deleted (or never existed).
    TeamGone { team_id: String },
    /// The team or end user is blocked.
    Blocked { level: Level, id: String },
    /// The team or end user may not use the model.
    NotAllowed {
        level: Level,
        id: String,
        model: String,
    },
    /// The team's or end user's budget is spent.
    Budget {
        level: Level,
        id: String,
        spend: Micros,
        max: Micros,
    },
    /// `keys.require_known_user` and the request named no end user, or one that does not exist.
    UnknownUser { user: Option<String> },
}

impl Refusal {
    /// The client's answer.
    pub fn to_error(&self) -> GatewayError {
        match self {
            Refusal::TeamGone { team_id } => GatewayError::InvalidApiKey(format!(
                "This key's team `{team_id}` does not exist (deleted?)"
            )),
            Refusal::Blocked {
                level: Level::Team,
                id,
            } => GatewayError::InvalidApiKey(format!("This key's team `{id}` is blocked")),
            Refusal::Blocked { level, id } => {
                GatewayError::UserNotAllowed(format!("The {} `{id}` is blocked", level.label()))
            }
            Refusal::NotAllowed { level, id, model } => GatewayError::ModelNotAllowed(format!(
                "The {} `{id}` may not use model `{model}` (level: {})",
                level.label(),
                level.as_str()
            )),
            Refusal::Budget {
                level,
                id,
                spend,
                max,
            } => GatewayError::BudgetExceeded(format!(
                "Budget exceeded for {} `{id}` (level: {}): spent {spend} of {max}",
                level.label(),
                level.as_str()
            )),
            Refusal::UnknownUser { user: None } => GatewayError::UserNotAllowed(
                "This gateway requires a known end user: send `user` (keys.require_known_user)"
                    .into(),
            ),
            Refusal::UnknownUser { user: Some(u) } => GatewayError::UserNotAllowed(format!(
                "Unknown end user `{u}` (keys.require_known_user: create it with /customer/new)"
            )),
        }
    }
}

/// An account's checks: not blocked, model in scope, budget left.
fn check_account(a: &AccountEntry, model: Option<(&str, &str)>, now: i64) -> Result<(), Refusal> {
    let level = Level::of(a.kind);
    if a.account.blocked {
        return Err(Refusal::Blocked {
            level,
            id: a.account.id.clone(),
        });
    }
    if let Some((model, requested)) = model {
        if !a.allows_model(model) && !a.allows_model(requested) {
            return Err(Refusal::NotAllowed {
                level,
                id: a.account.id.clone(),
                model: requested.to_string(),
            });
        }
    }
    let spend = a.spend();
    if a.account.limits.over_budget(spend, now) {
        return Err(Refusal::Budget {
            level,
            id: a.account.id.clone(),
            spend,
            max: a.account.limits.max_budget.unwrap_or_default(),
        });
    }
    Ok(())
}

/// The request's `user` as kept for governance: at most [`MAX_ID_LEN`] bytes (on a char boundary).
pub fn clip_user(user: &str) -> &str {
    if user.len() <= MAX_ID_LEN {
        return user;
    }
    let mut end = MAX_ID_LEN;
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    &user[..end]
}

impl Keys {
    /// Scope, state and budget checks of the key's team and of the end user `user` for `model`
    /// (`(configured name, name the client sent)`; `None` for a passthrough route, which has no
    /// model scope). The key itself was checked by [`Keys::authenticate`] (and its model scope by the
    /// caller). With `require_known_user`, a request must name an end user that exists. No I/O: map
    /// lookups in the view.
    pub fn admit(
        &self,
        key: Option<&Arc<KeyEntry>>,
        user: Option<&str>,
        model: Option<(&str, &str)>,
        require_known_user: bool,
    ) -> Result<Governed, Refusal> {
        let user_id = user.filter(|u| !u.is_empty()).map(clip_user);
        if user_id.is_none() && !require_known_user && key.is_none_or(|k| k.key.team_id.is_none()) {
            // Nothing but the key (already checked) governs this request.
            return Ok(Governed {
                key: key.cloned(),
                ..Governed::default()
            });
        }
        let now = super::units::now();
        let view = self.view.load();
        let team = match key.and_then(|k| k.key.team_id.as_deref()) {
            None => None,
            Some(team_id) => match view.teams.get(team_id) {
                Some(t) if !t.account.deleted => {
                    check_account(t, model, now)?;
                    Some(t.clone())
                }
                _ => {
                    return Err(Refusal::TeamGone {
                        team_id: team_id.to_string(),
                    })
                }
            },
        };
        let known = user_id
            .and_then(|u| view.users.get(u))
            .filter(|u| !u.account.deleted);
        let user_entry = match known {
            Some(u) => {
                check_account(u, model, now)?;
                Some(u.clone())
            }
            None if require_known_user => {
                return Err(Refusal::UnknownUser {
                    user: user_id.map(str::to_string),
                })
            }
            None => None,
        };
        Ok(Governed {
            key: key.cloned(),
            team,
            user: user_entry,
            user_id: user_id.map(Arc::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_level() {
        let e = Refusal::Budget {
            level: Level::Team,
            id: "research".into(),
            spend: Micros(1_500_000),
            max: Micros(1_000_000),
        }
        .to_error();
        assert_eq!(e.status(), 429);
        assert_eq!(e.code(), "budget_exceeded");
        assert!(e.message().contains("level: team"), "{}", e.message());
        assert!(e.message().contains("$1.500000 of $1.000000"));
        let e = Refusal::UnknownUser {
            user: Some("bob".into()),
        }
        .to_error();
        assert_eq!(e.status(), 403);
        let e = Refusal::NotAllowed {
            level: Level::EndUser,
            id: "u".into(),
            model: "m".into(),
        }
        .to_error();
        assert_eq!(e.code(), "model_not_allowed");
        assert!(e.message().contains("level: end_user"));
    }

    #[test]
    fn long_users_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(200);
        let c = clip_user(&long);
        assert!(c.len() <= MAX_ID_LEN && c.len() >= MAX_ID_LEN - 1);
        assert_eq!(clip_user("bob"), "bob");
    }
}
