//! Where budgets live: in this process, or in Redis so that every instance behind a load balancer
//! draws from the same budget. A request's charges against several budgets (deployment rpm and
//! tpm, upstream account limits) are admitted all together or not at all.
//!
//! Two kinds of budget ([`Limit`]): the rpm / tpm an upstream enforces are quantisation-safe
//! windows ([`super::window`]: at most `limit / 60` units start within any window of
//! [`window::WINDOW_SECS`]), kept in process as a [`window::Log`] and in Redis as a sorted set per
//! budget, admitted by one Lua script with Redis's clock; the gateway's own limits on its callers
//! (a listener's per-client limit, a key's rpm / tpm) are token buckets ([`super::bucket`]), in
//! process.

use super::bucket::{self, Rate};
use super::window::{self, Log};
use crate::config::state::RedisFailure;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How a budget limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// A token bucket: the gateway's own limits on its callers.
    Bucket(Rate),
    /// At most this many units start within any window of [`window::WINDOW_SECS`]: an upstream's
    /// per-minute limit, which it may enforce per second.
    Window(f64),
}

/// A budget: its identity (stable across reloads, shared by instances) and limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub id: Arc<str>,
    pub limit: Limit,
    /// `id` hashed once, when the budget is made: a governed request's half-dozen admissions and
    /// reconciliations look budgets up without hashing their ids again (see [`Table`]).
    hash: u64,
}

/// The hasher of budget ids: aHash keyed at random once per process, so ids a client names (an
/// end user's) cannot be chosen to collide.
fn id_hash(id: &str) -> u64 {
    static KEYS: OnceLock<ahash::RandomState> = OnceLock::new();
    KEYS.get_or_init(ahash::RandomState::new).hash_one(id)
}

impl Budget {
    fn new(id: Arc<str>, limit: Limit) -> Budget {
        Budget {
            hash: id_hash(&id),
            id,
            limit,
        }
    }

    pub fn bucket(id: Arc<str>, rate: Rate) -> Budget {
        Budget::new(id, Limit::Bucket(rate))
    }

    /// An upstream's per-minute limit, admitted quantisation-safe.
    pub fn per_minute_window(id: Arc<str>, per_minute: u64) -> Budget {
        Budget::new(id, Limit::Window(window::per_window(per_minute)))
    }

    /// Units that may start at once into an empty budget.
    pub fn capacity(&self) -> f64 {
        match self.limit {
            Limit::Bucket(r) => r.capacity(),
            Limit::Window(l) => l,
        }
    }

    /// Units per second at saturation.
    pub fn per_second(&self) -> f64 {
        match self.limit {
            Limit::Bucket(r) => 1.0 / r.unit_secs,
            Limit::Window(l) => l / window::WINDOW_SECS,
        }
    }
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

#[derive(Default)]
struct Maps {
    /// Token buckets: theoretical arrival times.
    tats: Table<f64>,
    /// Windows: the admissions still in them.
    logs: Table<Log>,
    /// The window limits of the running config, by budget (see [`LocalStore::configure`]).
    limits: Table<f64>,
}

impl Maps {
    /// The limit a window budget is admitted against: the running config's, whichever config
    /// the request was queued under.
    fn window_limit(&self, b: &Budget, configured: f64) -> f64 {
        self.limits.get(b).copied().unwrap_or(configured)
    }
}

/// A value per budget, found by the hash the budget carries ([`Budget::hash`]) and its id (the
/// same `Arc` as a rule, so the comparison is a pointer's): a lookup hashes nothing. A map keyed
/// by id hashed each id on every lookup, half of a governed admission's cost (callgrind).
struct Table<V>(hashbrown::HashTable<Slot<V>>);

struct Slot<V> {
    hash: u64,
    id: Arc<str>,
    value: V,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table(hashbrown::HashTable::new())
    }
}

impl<V> Table<V> {
    fn matches(b: &Budget) -> impl Fn(&Slot<V>) -> bool + '_ {
        move |s| Arc::ptr_eq(&s.id, &b.id) || *s.id == *b.id
    }

    fn get(&self, b: &Budget) -> Option<&V> {
        self.0.find(b.hash, Self::matches(b)).map(|s| &s.value)
    }

    fn get_mut(&mut self, b: &Budget) -> Option<&mut V> {
        self.0
            .find_mut(b.hash, Self::matches(b))
            .map(|s| &mut s.value)
    }

    /// The budget's value, made by `new` when it has none.
    fn get_or_insert_with(&mut self, b: &Budget, new: impl FnOnce() -> V) -> &mut V {
        let slot = self
            .0
            .entry(b.hash, Self::matches(b), |s| s.hash)
            .or_insert_with(|| Slot {
                hash: b.hash,
                id: b.id.clone(),
                value: new(),
            });
        &mut slot.into_mut().value
    }

    fn insert(&mut self, b: &Budget, value: V) {
        match self.0.entry(b.hash, Self::matches(b), |s| s.hash) {
            hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().value = value,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Slot {
                    hash: b.hash,
                    id: b.id.clone(),
                    value,
                });
            }
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        self.0.retain(|s| keep(&mut s.value));
    }
}

/// Budgets in this process.
pub struct LocalStore {
    epoch: Instant,
    maps: Mutex<Maps>,
    ops: AtomicU64,
}

/// Every this many admissions, entries equivalent to none are dropped (bounded memory for
/// per-key and per-client budgets).
const SWEEP_EVERY: u64 = 16_384;

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            epoch: Instant::now(),
            maps: Mutex::new(Maps::default()),
            ops: AtomicU64::new(0),
        }
    }
}

impl LocalStore {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // The maps hold plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The window limits of a config that now runs: they bind at once, also for requests that
    /// were queued under the previous config (whose budgets carry the old limits).
    pub fn configure(&self, budgets: &[&Budget]) {
        let mut m = self.lock();
        for b in budgets {
            if let Limit::Window(l) = b.limit {
                m.limits.insert(b, l);
            }
        }
    }

    /// The limit `b` is admitted against now (for the Redis script).
    pub fn window_limit(&self, b: &Budget) -> Option<f64> {
        match b.limit {
            Limit::Window(l) => Some(self.lock().window_limit(b, l)),
            Limit::Bucket(_) => None,
        }
    }

    pub fn try_admit(&self, charges: &[Charge]) -> Verdict {
        let now = self.now();
        let mut m = self.lock();
        let mut wait: f64 = 0.0;
        for c in charges {
            let w = match c.budget.limit {
                Limit::Bucket(rate) => {
                    let tat = m.tats.get(c.budget).copied().unwrap_or(0.0);
                    bucket::wait(rate, tat, now, c.cost)
                }
                Limit::Window(l) => {
                    let limit = m.window_limit(c.budget, l);
                    match m.logs.get_mut(c.budget) {
                        Some(log) => {
                            log.expire(now);
                            log.wait(limit, c.cost, now)
                        }
                        None => 0.0,
                    }
                }
            };
            wait = wait.max(w);
        }
        if wait > 0.0 {
            return Verdict::Wait(wait);
        }
        for c in charges {
            match c.budget.limit {
                Limit::Bucket(rate) => {
                    // In place: one lookup, no id clone for a budget seen before.
                    let tat = m.tats.get_or_insert_with(c.budget, || 0.0);
                    *tat = bucket::take(rate, *tat, now, c.cost);
                }
                Limit::Window(l) => {
                    let limit = m.window_limit(c.budget, l);
                    m.logs
                        .get_or_insert_with(c.budget, Log::default)
                        .take(limit, c.cost, now);
                }
            }
        }
        if self.ops.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // A tat in the past means a full bucket, an empty unblocked log an empty window: the
            // same as no entry.
            m.tats.retain(|tat| *tat > now);
            m.logs.retain(|log| {
                log.expire(now);
                !log.idle(now)
            });
        }
        Verdict::Admitted
    }

    /// Charge (`units` > 0) or refund (< 0) a budget after the fact (usage reconciliation, a
    /// request that never went). A window's refund must concern an admission still in it.
    pub fn adjust(&self, budget: &Budget, units: f64) {
        self.adjust_all(std::slice::from_ref(budget), units);
    }

    /// [`Self::adjust`] for several budgets under one lock (a governed request's key, team and
    /// end user).
    pub fn adjust_all(&self, budgets: &[Budget], units: f64) {
        let now = self.now();
        let mut m = self.lock();
        for budget in budgets {
            match budget.limit {
                Limit::Bucket(rate) => {
                    let at = |tat: f64| (tat.max(now) + units * rate.unit_secs).max(now);
                    let tat = m.tats.get_or_insert_with(budget, || 0.0);
                    *tat = at(*tat);
                }
                Limit::Window(l) => {
                    let limit = m.window_limit(budget, l);
                    let log = m.logs.get_or_insert_with(budget, Log::default);
                    log.expire(now);
                    if units > 0.0 {
                        log.push(now + window::hold(limit, units), units);
                    } else {
                        log.refund(limit, -units);
                    }
                }
            }
        }
    }

    /// Empty the budget and keep it empty for `secs` (an upstream 429 or a `remaining: 0`).
    pub fn block(&self, budget: &Budget, secs: f64) {
        let now = self.now();
        let mut m = self.lock();
        match budget.limit {
            Limit::Bucket(rate) => {
                let tat = m.tats.get_or_insert_with(budget, || 0.0);
                *tat = tat.max(now + secs + rate.tolerance_secs);
            }
            Limit::Window(_) => {
                m.logs
                    .get_or_insert_with(budget, Log::default)
                    .block(now + secs);
            }
        }
    }

    /// The upstream says the budget is spent until `secs` from now: a window's remaining room is
    /// taken until then (a full window is left as it is); a bucket is emptied.
    pub fn fill(&self, budget: &Budget, secs: f64) {
        let now = self.now();
        let mut m = self.lock();
        match budget.limit {
            Limit::Bucket(_) => {
                drop(m);
                self.block(budget, secs);
            }
            Limit::Window(l) => {
                let limit = m.window_limit(budget, l);
                let log = m.logs.get_or_insert_with(budget, Log::default);
                log.expire(now);
                let room = limit - log.live();
                if room > 0.0 {
                    log.push(now + secs, room);
                }
            }
        }
    }

    /// Units that could start now.
    pub fn level(&self, budget: &Budget) -> f64 {
        let now = self.now();
        let mut m = self.lock();
        match budget.limit {
            Limit::Bucket(rate) => {
                let tat = m.tats.get(budget).copied().unwrap_or(0.0);
                bucket::level(rate, tat, now)
            }
            Limit::Window(l) => {
                let limit = m.window_limit(budget, l);
                match m.logs.get_mut(budget) {
                    Some(log) => {
                        log.expire(now);
                        log.available(limit, now)
                    }
                    None => limit,
                }
            }
        }
    }
}

/// What the scripts share: forget the admissions that left a window and return the units still in
/// it. A window is two keys: a sorted set of admissions (member `seq:cost`, score the time it
/// leaves the window) and a hash (`live`: the costs in the set, summed; `seq`; `blocked`: nothing
/// is admitted before this time). All times are Redis's (`TIME`), so instances' clocks do not
/// matter. Numbers are passed and returned as strings: Redis truncates Lua numbers to integers.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local EPS = 1e-9
local function cost_of(member)
  return tonumber(string.match(member, ':(.*)$'))
end
local function expire(z, m)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', string.format('%.6f', now))
  local live = tonumber(redis.call('HGET', m, 'live') or '0')
  if #gone > 0 then
    for _, member in ipairs(gone) do live = live - cost_of(member) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', string.format('%.6f', now))
    if live < EPS or redis.call('ZCARD', z) == 0 then live = 0 end
    redis.call('HSET', m, 'live', string.format('%.17g', live))
  end
  return live
end
local function hold(W, limit, cost)
  if cost > limit + EPS and limit > 0 then return W * cost / limit end
  return W
end
local function push(z, m, live, expiry, cost)
  local seq = redis.call('HINCRBY', m, 'seq', 1)
  redis.call('ZADD', z, string.format('%.6f', expiry), seq .. ':' .. string.format('%.17g', cost))
  redis.call('HSET', m, 'live', string.format('%.17g', live + cost))
end
local function keep(z, m)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  local until_t = now
  if #last == 2 then until_t = tonumber(last[2]) end
  local blocked = tonumber(redis.call('HGET', m, 'blocked') or '0')
  if blocked > until_t then until_t = blocked end
  local ms = math.ceil((until_t - now) * 1000) + 1000
  redis.call('PEXPIRE', z, ms)
  redis.call('PEXPIRE', m, ms)
end
"#;

/// Admission: KEYS = (set, hash) per budget; ARGV = window length, then (limit, cost) per budget.
/// All budgets or none; returns the seconds to wait ('0': admitted).
const ADMIT: &str = r#"
local W = tonumber(ARGV[1])
local n = #KEYS / 2
local lives = {}
local wait = 0
for i = 1, n do
  local z, m = KEYS[2*i-1], KEYS[2*i]
  local limit, cost = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  local live = expire(z, m)
  lives[i] = live
  local w = 0
  local blocked = tonumber(redis.call('HGET', m, 'blocked') or '0')
  if blocked > now then w = blocked - now end
  if live > EPS then
    local until_t = nil
    if cost > limit + EPS then
      local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
      until_t = tonumber(last[2])
    elseif live + cost > limit + EPS then
      local all = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local left = live
      for j = 1, #all, 2 do
        left = left - cost_of(all[j])
        until_t = tonumber(all[j+1])
        if left <= EPS or left + cost <= limit + EPS then break end
      end
    end
    if until_t and until_t - now > w then w = until_t - now end
  end
  if w > wait then wait = w end
end
if wait > 0 then return string.format('%.6f', wait) end
for i = 1, n do
  local z, m = KEYS[2*i-1], KEYS[2*i]
  local limit, cost = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  if cost > 0 then push(z, m, lives[i], now + hold(W, limit, cost), cost) end
  keep(z, m)
end
return '0'
"#;

/// After the fact, for one or more budgets: KEYS = (set, hash) per budget; ARGV = window length,
/// units (> 0: charged now; < 0: given back from the oldest admissions), seconds to block (0:
/// none), seconds to fill the window's remaining room for (0: none), then each budget's limit. One
/// call for every budget a request settles (key, team, end user). A refund that leaves part of an
/// admission also shortens the time a cost above the limit was held for to what is left's.
const ADJUST: &str = r#"
local W = tonumber(ARGV[1])
local units, block, fill = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS / 2 do
  local z, m = KEYS[2*i-1], KEYS[2*i]
  local limit = tonumber(ARGV[4+i])
  local live = expire(z, m)
  if fill > 0 and limit - live > EPS then
    push(z, m, live, now + fill, limit - live)
    live = limit
  end
  if units > 0 then
    push(z, m, live, now + hold(W, limit, units), units)
  elseif units < 0 then
    local r = -units
    local all = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #all, 2 do
      if r <= EPS then break end
      local c = cost_of(all[j])
      redis.call('ZREM', z, all[j])
      if c > r + EPS then
        -- A cost above the limit was held longer than the window (hold): what is left is held for
        -- as long as it would have been had it been charged alone.
        local left = c - r
        local e = tonumber(all[j+1]) - hold(W, limit, c) + hold(W, limit, left)
        if e > now then
          local seq = redis.call('HINCRBY', m, 'seq', 1)
          redis.call('ZADD', z, string.format('%.6f', e), seq .. ':' .. string.format('%.17g', left))
          live = live - r
        else
          live = live - c
        end
        r = 0
      else
        live = live - c
        r = r - c
      end
    end
    if live < EPS then live = 0 end
    redis.call('HSET', m, 'live', string.format('%.17g', live))
  end
  if block > 0 then
    local b = tonumber(redis.call('HGET', m, 'blocked') or '0')
    if now + block > b then redis.call('HSET', m, 'blocked', string.format('%.6f', now + block)) end
  end
  keep(z, m)
end
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
            admit: redis::Script::new(&format!("{PRELUDE}{ADMIT}")),
            adjust: redis::Script::new(&format!("{PRELUDE}{ADJUST}")),
            prefix: "llmproxy:window:".to_string(),
        })
    }

    fn keys(&self, b: &Budget) -> (String, String) {
        let z = format!("{}{}", self.prefix, b.id);
        let m = format!("{z}:meta");
        (z, m)
    }

    /// `charges` with the limits they are admitted against (window budgets only).
    pub async fn try_admit(&self, charges: &[(Charge<'_>, f64)]) -> redis::RedisResult<Verdict> {
        let mut conn = self.conn.get().await?;
        let mut inv = self.admit.prepare_invoke();
        for (c, _) in charges {
            let (z, m) = self.keys(c.budget);
            inv.key(z).key(m);
        }
        inv.arg(window::WINDOW_SECS);
        for (c, limit) in charges {
            inv.arg(*limit).arg(c.cost);
        }
        let reply: String = crate::redis_conn::timed(inv.invoke_async(&mut conn)).await?;
        let wait: f64 = reply.parse().unwrap_or(0.0);
        Ok(if wait > 0.0 {
            Verdict::Wait(wait)
        } else {
            Verdict::Admitted
        })
    }

    /// Charges, refunds, blocks or fills `budgets` (each with its window limit) in one call.
    pub async fn adjust(
        &self,
        budgets: &[(&Budget, f64)],
        units: f64,
        block_secs: f64,
        fill_secs: f64,
    ) -> redis::RedisResult<()> {
        if budgets.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.get().await?;
        let mut inv = self.adjust.prepare_invoke();
        for (b, _) in budgets {
            let (z, m) = self.keys(b);
            inv.key(z).key(m);
        }
        inv.arg(window::WINDOW_SECS)
            .arg(units)
            .arg(block_secs)
            .arg(fill_secs);
        for (_, limit) in budgets {
            inv.arg(*limit);
        }
        let _: String = crate::redis_conn::timed(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }
}

/// Admission failed because the shared state is unreachable and the failure mode is `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateUnavailable;

/// The budget store of a running config: local, or Redis with a local fallback. With Redis every
/// budget is shared as a window: an upstream's limits as configured, a caller's (key, team, end
/// user) at its rate (`limit / 60` per second, no burst beyond it), so that every instance sees one
/// budget.
pub struct Store {
    pub local: LocalStore,
    redis: Option<RedisStore>,
    failure: RedisFailure,
    /// Counts Redis failures (exported as `llmproxy_state_errors_total`).
    pub errors: AtomicU64,
    pub error_counter: OnceLock<prometheus::IntCounter>,
    last_error_log: Mutex<Option<Instant>>,
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

    /// Whether `charges` go to Redis: with shared state, all of them (see [`Store::shared_limit`]).
    fn remote(&self, charges: &[Charge<'_>]) -> Option<&RedisStore> {
        self.redis.as_ref().filter(|_| !charges.is_empty())
    }

    /// The window limit a budget is admitted against in Redis: a window budget's current limit; a
    /// bucket's rate over one window (a cost above it holds the window longer, so the average
    /// stays the rate).
    fn shared_limit(&self, b: &Budget) -> f64 {
        match b.limit {
            Limit::Window(_) => self.local.window_limit(b).unwrap_or(0.0),
            Limit::Bucket(rate) => window::WINDOW_SECS / rate.unit_secs,
        }
    }

    pub async fn try_admit(&self, charges: &[Charge<'_>]) -> Result<Verdict, StateUnavailable> {
        let Some(redis) = self.remote(charges) else {
            return Ok(self.local.try_admit(charges));
        };
        let with_limits: Vec<(Charge<'_>, f64)> = charges
            .iter()
            .map(|c| (*c, self.shared_limit(c.budget)))
            .collect();
        match redis.try_admit(&with_limits).await {
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

    /// Charge (`units` > 0) or refund (< 0) after the fact. A window's refund must concern an
    /// admission still in the window (the refund comes off its oldest admissions).
    pub async fn adjust(&self, budget: &Budget, units: f64) {
        self.adjust_all(std::slice::from_ref(budget), units).await;
    }

    /// [`Self::adjust`] for several budgets (in process: under one lock).
    pub async fn adjust_all(&self, budgets: &[Budget], units: f64) {
        match &self.redis {
            None => self.local.adjust_all(budgets, units),
            Some(r) => {
                let with_limits: SmallVec<[(&Budget, f64); 4]> =
                    budgets.iter().map(|b| (b, self.shared_limit(b))).collect();
                if let Err(e) = r.adjust(&with_limits, units, 0.0, 0.0).await {
                    self.failed("adjust", &e);
                }
            }
        }
    }

    pub async fn block(&self, budget: &Budget, secs: f64) {
        let charge = [Charge { budget, cost: 0.0 }];
        if let Some(r) = self.remote(&charge) {
            let limit = self.shared_limit(budget);
            if let Err(e) = r.adjust(&[(budget, limit)], 0.0, secs, 0.0).await {
                self.failed("block", &e);
            }
        }
        self.local.block(budget, secs);
    }

    /// The upstream says the budget is spent for `secs` (see [`LocalStore::fill`]).
    pub async fn fill(&self, budget: &Budget, secs: f64) {
        let charge = [Charge { budget, cost: 0.0 }];
        match self.remote(&charge) {
            None => self.local.fill(budget, secs),
            Some(r) => {
                let limit = self.shared_limit(budget);
                if let Err(e) = r.adjust(&[(budget, limit)], 0.0, 0.0, secs).await {
                    self.failed("fill", &e);
                }
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

    fn bucket(id: &str, per_minute: u64) -> Budget {
        Budget::bucket(id.into(), Rate::per_minute(per_minute))
    }

    fn win(id: &str, per_minute: u64) -> Budget {
        Budget::per_minute_window(id.into(), per_minute)
    }

    /// A budget made again with the same id (a reload, another request's key entry) is the same
    /// budget: found by its id's text when its `Arc` is another, never by the pointer alone.
    #[test]
    fn budgets_are_their_ids() {
        let s = LocalStore::default();
        let (a, again, other) = (win("k:rpm", 60), win("k:rpm", 60), win("j:rpm", 60));
        assert!(!Arc::ptr_eq(&a.id, &again.id));
        let one = |b| {
            [Charge {
                budget: b,
                cost: 1.0,
            }]
        };
        assert_eq!(s.try_admit(&one(&a)), Verdict::Admitted);
        assert!(matches!(s.try_admit(&one(&again)), Verdict::Wait(_)));
        assert_eq!(s.try_admit(&one(&other)), Verdict::Admitted);
        let (k, k2) = (bucket("k:tpm", 60), bucket("k:tpm", 60));
        s.adjust(&k, 1.0);
        assert!((s.level(&k2) - s.level(&bucket("j:tpm", 60)) + 1.0).abs() < 1e-3);
    }

    #[test]
    fn all_or_nothing() {
        let s = LocalStore::default();
        let rpm = win("d:rpm", 6000); // 100 per window
        let tpm = win("d:tpm", 600); // 10 per window
        let c = |cost| {
            [
                Charge {
                    budget: &rpm,
                    cost: 1.0,
                },
                Charge { budget: &tpm, cost },
            ]
        };
        assert_eq!(s.try_admit(&c(6.0)), Verdict::Admitted);
        assert!(matches!(s.try_admit(&c(6.0)), Verdict::Wait(_)));
        // The refused request took nothing from the request budget.
        assert!((s.level(&rpm) - 99.0).abs() < 1e-9);
        s.adjust(&tpm, -6.0);
        assert_eq!(s.try_admit(&c(6.0)), Verdict::Admitted);
    }

    #[test]
    fn buckets_stay_buckets() {
        let s = LocalStore::default();
        let rpm = bucket("k:rpm", 6000); // 80 at once
        let one = [Charge {
            budget: &rpm,
            cost: 1.0,
        }];
        let n = (0..200)
            .take_while(|_| s.try_admit(&one) == Verdict::Admitted)
            .count();
        assert_eq!(n, 80);
    }

    #[test]
    fn block_empties_for_a_while() {
        let s = LocalStore::default();
        for b in [win("d:rpm", 6000), bucket("k:rpm", 6000)] {
            s.block(&b, 2.0);
            match s.try_admit(&[Charge {
                budget: &b,
                cost: 1.0,
            }]) {
                Verdict::Wait(w) => assert!(w > 1.9 && w < 2.1, "{w}"),
                v => panic!("{v:?}"),
            }
        }
    }

    #[test]
    fn the_running_config_limit_binds_old_budgets() {
        let s = LocalStore::default();
        let old = win("d:rpm", 600); // 10 per window
        let new = win("d:rpm", 300); // 5
        let one = [Charge {
            budget: &old,
            cost: 1.0,
        }];
        s.configure(&[&new]);
        let n = (0..20)
            .take_while(|_| s.try_admit(&one) == Verdict::Admitted)
            .count();
        assert_eq!(n, 5);
    }
}
