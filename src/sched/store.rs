//! Where budgets live: in this process, or in Redis so that every instance behind a load balancer
//! draws from the same budget. Both run the same GCRA arithmetic ([`super::bucket`]); a request's
//! charges against several budgets (deployment rpm and tpm, upstream account limits, key limits)
//! are admitted all together or not at all.

use super::bucket::{self, Rate};
use crate::config::state::RedisFailure;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A budget: its identity (stable across reloads, shared by instances) and rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub id: Arc<str>,
    pub rate: Rate,
}

/// One charge of a request: `cost` units from `budget`.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub budget: &'a Budget,
    pub cost: f64,
}

/// The answer to an admission attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Admitted,
    /// Not before this many seconds.
    Wait(f64),
}

/// Budgets in this process.
pub struct LocalStore {
    epoch: Instant,
    tats: Mutex<HashMap<Arc<str>, f64>>,
    ops: AtomicU64,
}

/// Entries full for this long are dropped from the map (bounded memory for per-key budgets).
const SWEEP_EVERY: u64 = 16_384;

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
            ops: AtomicU64::new(0),
        }
    }
}

impl LocalStore {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, f64>> {
        // The map holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.tats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn try_admit(&self, charges: &[Charge]) -> Verdict {
        let now = self.now();
        let mut tats = self.lock();
        let mut wait: f64 = 0.0;
        for c in charges {
            let tat = tats.get(&c.budget.id).copied().unwrap_or(0.0);
            wait = wait.max(bucket::wait(c.budget.rate, tat, now, c.cost));
        }
        if wait > 0.0 {
            return Verdict::Wait(wait);
        }
        for c in charges {
            let tat = tats.get(&c.budget.id).copied().unwrap_or(0.0);
            let new = bucket::take(c.budget.rate, tat, now, c.cost);
            tats.insert(c.budget.id.clone(), new);
        }
        if self.ops.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // A tat in the past means a full bucket: the same as no entry.
            tats.retain(|_, tat| *tat > now);
        }
        Verdict::Admitted
    }

    /// Charge (`units` > 0) or refund (< 0) a budget after the fact (usage reconciliation).
    pub fn adjust(&self, budget: &Budget, units: f64) {
        let now = self.now();
        let mut tats = self.lock();
        let tat = tats.get(&budget.id).copied().unwrap_or(0.0).max(now);
        tats.insert(
            budget.id.clone(),
            (tat + units * budget.rate.unit_secs).max(now),
        );
    }

    /// Empty the budget and keep it empty for `secs` (an upstream 429 or a `remaining: 0`).
    pub fn block(&self, budget: &Budget, secs: f64) {
        let now = self.now();
        let mut tats = self.lock();
        let tat = tats.get(&budget.id).copied().unwrap_or(0.0);
        tats.insert(
            budget.id.clone(),
            tat.max(now + secs + budget.rate.tolerance_secs),
        );
    }

    /// Units available now.
    pub fn level(&self, budget: &Budget) -> f64 {
        let now = self.now();
        let tat = self.lock().get(&budget.id).copied().unwrap_or(0.0);
        bucket::level(budget.rate, tat, now)
    }
}

/// The admission script: all budgets or none, with Redis's clock (instances' clocks may differ).
/// Numbers are returned as strings: Redis truncates Lua numbers to integers.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tats = {}
local wait = 0
for i = 1, #KEYS do
  local unit = tonumber(ARGV[3*i-2])
  local tol = tonumber(ARGV[3*i-1])
  local cost = tonumber(ARGV[3*i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local w = (tat - now) - (tol - math.min(cost * unit, tol))
  if w > wait then wait = w end
  tats[i] = tat
end
if wait > 0 then return tostring(wait) end
for i = 1, #KEYS do
  local unit = tonumber(ARGV[3*i-2])
  local tol = tonumber(ARGV[3*i-1])
  local new = tats[i] + tonumber(ARGV[3*i]) * unit
  redis.call('SET', KEYS[i], string.format('%.6f', new), 'PX', math.ceil((new - now + tol) * 1000) + 1000)
end
return '0'
"#;

/// Adjust or block one budget: ARGV = unit, tolerance, units to add (may be negative), block secs.
const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local unit = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + tonumber(ARGV[3]) * unit
local floor = now + tonumber(ARGV[4])
if tonumber(ARGV[4]) > 0 then floor = floor + tol end
if new < floor then new = floor end
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil((new - now + tol) * 1000) + 1000)
return '0'
"#;

/// Budgets in Redis, shared by every instance.
pub struct RedisStore {
    conn: crate::redis_conn::RedisConn,
    admit: redis::Script,
    adjust: redis::Script,
    prefix: String,
}

impl RedisStore {
    pub fn new(url: &str) -> Result<RedisStore, String> {
        Ok(RedisStore {
            conn: crate::redis_conn::RedisConn::new(url)?,
            admit: redis::Script::new(ADMIT),
            adjust: redis::Script::new(ADJUST),
            prefix: "llmproxy:budget:".to_string(),
        })
    }

    fn key(&self, b: &Budget) -> String {
        format!("{}{}", self.prefix, b.id)
    }

    pub async fn try_admit(&self, charges: &[Charge<'_>]) -> redis::RedisResult<Verdict> {
        let mut conn = self.conn.get().await?;
        let mut inv = self.admit.prepare_invoke();
        for c in charges {
            inv.key(self.key(c.budget));
        }
        for c in charges {
            inv.arg(c.budget.rate.unit_secs)
                .arg(c.budget.rate.tolerance_secs)
                .arg(c.cost);
        }
        let reply: String = crate::redis_conn::timed(inv.invoke_async(&mut conn)).await?;
        let wait: f64 = reply.parse().unwrap_or(0.0);
        Ok(if wait > 0.0 {
            Verdict::Wait(wait)
        } else {
            Verdict::Admitted
        })
    }

    pub async fn adjust(&self, b: &Budget, units: f64, block_secs: f64) -> redis::RedisResult<()> {
        let mut conn = self.conn.get().await?;
        let _: String = crate::redis_conn::timed(
            self.adjust
                .key(self.key(b))
                .arg(b.rate.unit_secs)
                .arg(b.rate.tolerance_secs)
                .arg(units)
                .arg(block_secs)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }
}

/// Admission failed because the shared state is unreachable and the failure mode is `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateUnavailable;

/// The budget store of a running config: local, or Redis with a local fallback.
pub struct Store {
    pub local: LocalStore,
    redis: Option<RedisStore>,
    failure: RedisFailure,
    /// Counts Redis failures (exported as `llmproxy_state_errors_total`).
    pub errors: AtomicU64,
    pub error_counter: OnceLock<prometheus::IntCounter>,
    last_error_log: Mutex<Option<Instant>>,
    /// Budget this instance took from Redis ahead of need, per budget (see [`Lease`]).
    leases: Mutex<HashMap<Arc<str>, Lease>>,
}

/// Units of a shared budget already charged in Redis and held by this instance, so that a busy
/// instance calls Redis once per lease instead of once per request. A lease is a tenth of the
/// budget's one-second capacity (none below 2 units: tight budgets are admitted one by one, exactly)
/// and lapses after [`LEASE_TTL`]. Safe for 429 avoidance: leased units were charged in the global
/// budget before they are used, so the provider's counter only gains from the delay.
#[derive(Debug, Clone, Copy)]
struct Lease {
    units: f64,
    until: Instant,
}

/// How long leased units stay usable.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// A lease is this fraction of a budget's capacity.
const LEASE_FRACTION: f64 = 0.1;

fn lease_size(b: &Budget) -> f64 {
    let n = (b.rate.capacity() * LEASE_FRACTION).floor();
    if n >= 2.0 {
        n
    } else {
        0.0
    }
}

impl Store {
    pub fn new(redis_url: Option<&str>, failure: RedisFailure) -> Result<Store, String> {
        Ok(Store {
            local: LocalStore::default(),
            redis: redis_url.map(RedisStore::new).transpose()?,
            failure,
            errors: AtomicU64::new(0),
            error_counter: OnceLock::new(),
            last_error_log: Mutex::new(None),
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this store serves the given state settings (then a reload keeps it).
    pub fn matches(&self, redis_url: Option<&str>, failure: RedisFailure) -> bool {
        self.failure == failure
            && match (&self.redis, redis_url) {
                (None, None) => true,
                (Some(r), Some(u)) => r.conn.url == u,
                _ => false,
            }
    }

    pub fn shared(&self) -> bool {
        self.redis.is_some()
    }

    fn failed(&self, what: &str, e: &redis::RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.error_counter.get() {
            c.inc();
        }
        let mut last = self
            .last_error_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            log::error!(
                "state.redis unreachable ({what}: {e}); admission is {} meanwhile",
                match self.failure {
                    RedisFailure::Open => "open, on this instance's own budgets",
                    RedisFailure::Closed => "closed (503)",
                }
            );
        }
    }

    pub async fn try_admit(&self, charges: &[Charge<'_>]) -> Result<Verdict, StateUnavailable> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.try_admit(charges));
        };
        match self.admit_leased(redis, charges).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.failed("admission", &e);
                match self.failure {
                    RedisFailure::Open => Ok(self.local.try_admit(charges)),
                    RedisFailure::Closed => Err(StateUnavailable),
                }
            }
        }
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Lease>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admission against Redis, from this instance's leases when they cover the request.
    async fn admit_leased(
        &self,
        redis: &RedisStore,
        charges: &[Charge<'_>],
    ) -> redis::RedisResult<Verdict> {
        let now = Instant::now();
        // Take what the leases hold for these budgets (a concurrent request then refills its own).
        let held: Vec<f64> = {
            let mut leases = self.lock_leases();
            let covered = charges.iter().all(|c| {
                leases
                    .get(&c.budget.id)
                    .is_some_and(|l| l.until > now && l.units >= c.cost)
            });
            if covered {
                for c in charges {
                    if let Some(l) = leases.get_mut(&c.budget.id) {
                        l.units -= c.cost;
                    }
                }
                return Ok(Verdict::Admitted);
            }
            charges
                .iter()
                .map(|c| match leases.get_mut(&c.budget.id) {
                    Some(l) if l.until > now => std::mem::take(&mut l.units),
                    // A lapsed lease may still carry a debt (a reconciliation charge).
                    Some(l) => std::mem::take(&mut l.units).min(0.0),
                    None => 0.0,
                })
                .collect()
        };
        let ask = |extra: bool| -> Vec<Charge<'_>> {
            charges
                .iter()
                .zip(&held)
                .map(|(c, h)| Charge {
                    budget: c.budget,
                    cost: (c.cost - h).max(0.0) + if extra { lease_size(c.budget) } else { 0.0 },
                })
                .filter(|c| c.cost > 0.0)
                .collect()
        };
        let put_back = |asked: &[Charge<'_>]| {
            let mut leases = self.lock_leases();
            for (c, h) in charges.iter().zip(&held) {
                let got = asked
                    .iter()
                    .find(|a| a.budget.id == c.budget.id)
                    .map_or(0.0, |a| a.cost);
                let l = leases.entry(c.budget.id.clone()).or_insert(Lease {
                    units: 0.0,
                    until: now,
                });
                l.units += h + got - c.cost;
                l.until = now + LEASE_TTL;
            }
        };
        let with_lease = ask(true);
        let first = if with_lease.is_empty() {
            Verdict::Admitted
        } else {
            redis.try_admit(&with_lease).await?
        };
        if first == Verdict::Admitted {
            put_back(&with_lease);
            return Ok(Verdict::Admitted);
        }
        // Not enough for a lease: is there enough for this request alone?
        let exact = ask(false);
        let second = if exact.len() == with_lease.len()
            && exact.iter().zip(&with_lease).all(|(a, b)| a.cost == b.cost)
        {
            first
        } else if exact.is_empty() {
            Verdict::Admitted
        } else {
            redis.try_admit(&exact).await?
        };
        if second == Verdict::Admitted {
            put_back(&exact);
        } else {
            // Refused: the held units go back to their leases.
            let mut leases = self.lock_leases();
            for (c, h) in charges.iter().zip(&held) {
                if let Some(l) = leases.get_mut(&c.budget.id) {
                    l.units += h;
                }
            }
        }
        Ok(second)
    }

    /// Charge (`units` > 0) or refund (< 0) after the fact. With Redis this settles against this
    /// instance's lease — a refund adds to it, an extra charge is a debt the next refill pays — so
    /// reconciliation costs no Redis call.
    pub async fn adjust(&self, budget: &Budget, units: f64) {
        if self.redis.is_none() {
            self.local.adjust(budget, units);
            return;
        }
        let mut leases = self.lock_leases();
        let l = leases.entry(budget.id.clone()).or_insert(Lease {
            units: 0.0,
            until: Instant::now() + LEASE_TTL,
        });
        l.units -= units;
    }

    pub async fn block(&self, budget: &Budget, secs: f64) {
        match &self.redis {
            None => self.local.block(budget, secs),
            Some(r) => {
                self.lock_leases().remove(&budget.id);
                if let Err(e) = r.adjust(budget, 0.0, secs).await {
                    self.failed("block", &e);
                }
                self.local.block(budget, secs);
            }
        }
    }
}

static WARNED: OnceLock<()> = OnceLock::new();

/// Log once per process that budgets are per instance.
pub fn note_local_only() {
    if WARNED.set(()).is_ok() {
        log::info!("rate budgets are kept in this process (set state.redis to share them between instances)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(id: &str, per_minute: u64) -> Budget {
        Budget {
            id: id.into(),
            rate: Rate::per_minute(per_minute),
        }
    }

    #[test]
    fn all_or_nothing() {
        let s = LocalStore::default();
        let rpm = budget("d:rpm", 6000); // 80 at once
        let tpm = budget("d:tpm", 600); // 8 at once
        let c = |cost| {
            [
                Charge {
                    budget: &rpm,
                    cost: 1.0,
                },
                Charge { budget: &tpm, cost },
            ]
        };
        assert_eq!(s.try_admit(&c(5.0)), Verdict::Admitted);
        assert!(matches!(s.try_admit(&c(5.0)), Verdict::Wait(_)));
        // The refused request took nothing from the request budget.
        assert!((s.level(&rpm) - 79.0).abs() < 0.01);
        s.adjust(&tpm, -5.0);
        assert_eq!(s.try_admit(&c(5.0)), Verdict::Admitted);
    }

    #[test]
    fn block_empties_for_a_while() {
        let s = LocalStore::default();
        let rpm = budget("d:rpm", 6000);
        s.block(&rpm, 2.0);
        match s.try_admit(&[Charge {
            budget: &rpm,
            cost: 1.0,
        }]) {
            Verdict::Wait(w) => assert!(w > 1.9 && w < 2.1, "{w}"),
            v => panic!("{v:?}"),
        }
    }
}
