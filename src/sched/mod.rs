//! Rate scheduling: per-deployment, per-upstream and per-key rpm/tpm budgets, and the
//! per-model admission queue that makes requests wait their turn instead of meeting a provider's 429.
//!
//! A request costs 1 request and its token estimate ([`tokens`]) against every budget on its way:
//! the deployment's `rpm`/`tpm`, its upstream's account `limits`, and the caller's key limits. With
//! budget on some deployment it goes at once (trying the balancer's pick first); otherwise it waits
//! in the model's queue ([`queue`]), served in arrival order (`fifo`) or by `x-llmproxy-priority`
//! with round robin across keys (`priority`). A dispatcher task per busy model admits the queue's
//! next request as soon as a budget allows; it exists only while requests wait.
//!
//! Deployment and upstream budgets are quantisation-safe ([`window`]): at most `rpm / 60` requests
//! and `tpm / 60` estimated tokens start within any window of a second plus a small margin, so an
//! upstream that enforces its per-minute limit per second never sees more than it allows.
//!
//! Budgets live in the process or, with `state.redis`, in Redis ([`store`]): admission is global,
//! queues stay local.

pub mod bucket;
pub mod queue;
pub mod store;
pub mod tokens;
pub mod window;

use crate::config::models::{Model, QueuePolicy};
use crate::config::upstreams::Upstream;
use crate::config::Config;
use prometheus::{Histogram, IntCounterVec, IntGauge};
use queue::{Queue, Waiter};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Budget, Charge, StateUnavailable, Store, Verdict};
use tokens::Counter;

/// The budgets one deployment's requests are charged against.
#[derive(Debug, Clone, Default)]
pub struct DeploymentBudgets {
    /// Charged 1 per request.
    pub requests: Vec<Budget>,
    /// Charged the token estimate.
    pub tokens: Vec<Budget>,
    /// Whether the provider counts real usage (then the estimate is corrected after the answer).
    pub reconcile: bool,
}

/// What one request asks of the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub tokens: f64,
    /// 0..=9, 9 first (`priority` scheduling only).
    pub priority: u8,
    /// The caller's key identity (fairness within a priority; never the key itself).
    pub key: Option<Arc<str>>,
    /// The caller's own limits (the keys feature fills these in).
    pub key_requests: Option<Budget>,
    pub key_tokens: Option<Budget>,
}

/// An admitted request: where it goes and what it was charged.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub deployment: usize,
    pub waited: Duration,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    QueueFull { retry_after: Duration },
    Timeout { retry_after: Duration },
    StateUnavailable,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::Timeout { .. } => "max_wait",
            Refusal::StateUnavailable => "state_unavailable",
        }
    }
}

/// Metric handles of one model.
#[derive(Clone)]
pub struct QueueMetrics {
    pub depth: IntGauge,
    pub wait: Histogram,
    pub rejections: IntCounterVec,
}

/// One model's scheduler: its deployments' budgets and its queue.
pub struct ModelSched {
    pub name: String,
    pub policy: QueuePolicy,
    pub deployments: Vec<DeploymentBudgets>,
    pub counter: Counter,
    store: Arc<Store>,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    metrics: Option<QueueMetrics>,
    /// Requests per second the deployments allow together (for Retry-After estimates).
    drain_rate: f64,
}

impl ModelSched {
    /// Whether any budget applies (a model without one skips the scheduler entirely).
    pub fn active(&self) -> bool {
        self.deployments
            .iter()
            .any(|d| !d.requests.is_empty() || !d.tokens.is_empty())
    }

    pub fn needs_tokens(&self) -> bool {
        self.deployments.iter().any(|d| !d.tokens.is_empty())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    fn charges<'a>(&'a self, d: usize, ask: &'a Ask) -> Vec<Charge<'a>> {
        let mut out = Vec::with_capacity(6);
        if let Some(b) = self.deployments.get(d) {
            out.extend(b.requests.iter().map(|budget| Charge { budget, cost: 1.0 }));
            out.extend(b.tokens.iter().map(|budget| Charge {
                budget,
                cost: ask.tokens,
            }));
        }
        if let Some(budget) = &ask.key_requests {
            out.push(Charge { budget, cost: 1.0 });
        }
        if let Some(budget) = &ask.key_tokens {
            out.push(Charge {
                budget,
                cost: ask.tokens,
            });
        }
        out
    }

    /// Try each candidate deployment in order; the first with budget is charged.
    async fn try_now(
        &self,
        candidates: &[usize],
        ask: &Ask,
    ) -> Result<Result<usize, f64>, StateUnavailable> {
        let mut wait = f64::MAX;
        for &d in candidates {
            let charges = self.charges(d, ask);
            match self.store.try_admit(&charges).await? {
                Verdict::Admitted => return Ok(Ok(d)),
                Verdict::Wait(w) => wait = wait.min(w),
            }
        }
        Ok(Err(wait))
    }

    /// Give back what an admitted request was charged (it never went upstream).
    async fn refund(&self, d: usize, ask: &Ask) {
        for c in self.charges(d, ask) {
            self.store.adjust(c.budget, -c.cost).await;
        }
    }

    fn retry_after(&self, queued: usize) -> Duration {
        let secs = if self.drain_rate > 0.0 {
            (queued as f64 + 1.0) / self.drain_rate
        } else {
            1.0
        };
        Duration::from_secs(secs.ceil().clamp(1.0, 3600.0) as u64)
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        if let Some(m) = &self.metrics {
            m.rejections
                .with_label_values(&[self.name.as_str(), r.reason()])
                .inc();
        }
        r
    }

    /// Admit a request to one of `candidates` (deployment indexes, preferred first), waiting in the
    /// queue for budget if needed. Dropping the future leaves the queue (a client that went away).
    pub async fn acquire(
        self: &Arc<Self>,
        candidates: Vec<usize>,
        ask: Ask,
    ) -> Result<Ticket, Refusal> {
        let start = Instant::now();
        if candidates.is_empty() {
            return Err(self.refuse(Refusal::Timeout {
                retry_after: Duration::from_secs(1),
            }));
        }
        // Fast path: nobody waiting, budget available.
        if self.lock().is_empty() {
            match self.try_now(&candidates, &ask).await {
                Ok(Ok(d)) => {
                    return Ok(Ticket {
                        deployment: d,
                        waited: Duration::ZERO,
                    })
                }
                Ok(Err(_)) => {}
                Err(StateUnavailable) => return Err(self.refuse(Refusal::StateUnavailable)),
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ask = Arc::new(ask);
        let (seq, spawn, wake) = {
            let mut q = self.lock();
            if q.len() >= self.policy.max_size {
                let retry_after = self.retry_after(q.len());
                drop(q);
                return Err(self.refuse(Refusal::QueueFull { retry_after }));
            }
            let priority = match self.policy.scheduling {
                crate::config::models::Scheduling::Fifo => 0,
                crate::config::models::Scheduling::Priority => ask.priority.min(9),
            };
            let key = match self.policy.scheduling {
                crate::config::models::Scheduling::Fifo => None,
                crate::config::models::Scheduling::Priority => ask.key.clone(),
            };
            let seq = q.push(Waiter {
                seq: 0,
                priority,
                key,
                candidates,
                ask: ask.clone(),
                tx,
            });
            let spawn = !q.dispatching;
            q.dispatching = true;
            let wake = q.peek().map(|w| w.seq) == Some(seq);
            (seq, spawn, wake)
        };
        self.gauge();
        let _leave = Leave { sched: self, seq };
        if spawn {
            let me = self.clone();
            tokio::spawn(async move { me.dispatch().await });
        } else if wake {
            self.wake.notify_one();
        }
        let result = tokio::time::timeout(self.policy.max_wait, rx).await;
        let waited = start.elapsed();
        if let Some(m) = &self.metrics {
            m.wait.observe(waited.as_secs_f64());
        }
        match result {
            Ok(Ok(Ok(d))) => Ok(Ticket {
                deployment: d,
                waited,
            }),
            Ok(Ok(Err(StateUnavailable))) => Err(self.refuse(Refusal::StateUnavailable)),
            // Timed out, or the dispatcher went away with the runtime (shutdown).
            Ok(Err(_)) | Err(_) => {
                let queued = self.depth();
                Err(self.refuse(Refusal::Timeout {
                    retry_after: self.retry_after(queued),
                }))
            }
        }
    }

    fn gauge(&self) {
        if let Some(m) = &self.metrics {
            m.depth.set(self.depth() as i64);
        }
    }

    /// Admit the queue's next request whenever a budget allows; exit when the queue is empty.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let next = {
                let mut q = self.lock();
                match q.peek() {
                    Some(w) => Some((w.seq, w.candidates.clone(), w.ask.clone())),
                    None => {
                        q.dispatching = false;
                        None
                    }
                }
            };
            let Some((seq, candidates, ask)) = next else {
                self.gauge();
                return;
            };
            match self.try_now(&candidates, &ask).await {
                Ok(Ok(d)) => {
                    let waiter = self.lock().admit(seq);
                    let delivered = waiter.is_some_and(|w| w.tx.send(Ok(d)).is_ok());
                    if !delivered {
                        // It left (timeout, client gone) while we charged for it.
                        self.refund(d, &ask).await;
                    }
                    self.gauge();
                }
                Ok(Err(wait)) => {
                    let wait = Duration::from_secs_f64(wait.clamp(0.000_5, 60.0));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Err(StateUnavailable) => {
                    if let Some(w) = self.lock().remove(seq) {
                        let _ = w.tx.send(Err(StateUnavailable));
                    }
                    self.gauge();
                }
            }
        }
    }

    /// The upstream said how much budget is left: trust it when it is tighter than ours. A 429
    /// empties the budgets for its `Retry-After`; a `remaining: 0` on an answer fills what room the
    /// windows still have until the reset (none when they are full already, as they usually are
    /// when the gateway alone uses the upstream: the window then frees its units as they leave it,
    /// not all at the reset).
    pub fn feedback(self: &Arc<Self>, d: usize, status: u16, headers: &http::HeaderMap) {
        let Some(b) = self.deployments.get(d) else {
            return;
        };
        let fb = Feedback::read(status, headers);
        let mut blocks: Vec<(Budget, f64)> = Vec::new();
        if let Some(secs) = fb.requests_blocked {
            blocks.extend(b.requests.iter().map(|x| (x.clone(), secs)));
        }
        if let Some(secs) = fb.tokens_blocked {
            blocks.extend(b.tokens.iter().map(|x| (x.clone(), secs)));
        }
        if blocks.is_empty() {
            return;
        }
        let refused = status == 429;
        if refused {
            log::info!(
                "model {}: upstream answered 429; holding deployment {d} back for {:.1}s",
                self.name,
                blocks.iter().map(|b| b.1).fold(0.0, f64::max)
            );
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            for (budget, secs) in blocks {
                if refused {
                    store.block(&budget, secs).await;
                } else {
                    store.fill(&budget, secs).await;
                }
            }
        });
    }

    /// After the answer: correct the token charge where the provider counts real usage. An
    /// over-estimate is given back only while the admission (at `admitted`) is still held — a
    /// window, or longer for an estimate above the window's limit ([`window::hold`]): once it has
    /// left, the window no longer counts it and there is nothing to give back. A refund wakes the
    /// dispatcher, whose next request may fit now.
    pub fn reconcile(self: &Arc<Self>, d: usize, estimated: f64, actual: f64, admitted: Instant) {
        let Some(b) = self.deployments.get(d) else {
            return;
        };
        if !b.reconcile || b.tokens.is_empty() || (actual - estimated).abs() < 1.0 {
            return;
        }
        let refund = actual < estimated;
        let elapsed = admitted.elapsed().as_secs_f64();
        let budgets: Vec<Budget> = b
            .tokens
            .iter()
            .filter(|x| {
                let held = match x.limit {
                    store::Limit::Window(limit) => window::hold(limit, estimated),
                    store::Limit::Bucket(_) => window::WINDOW_SECS,
                };
                // Half a window: room for the spawn and the Redis round trip below (one call for all).
                !refund || elapsed < held - window::WINDOW_SECS / 2.0
            })
            .cloned()
            .collect();
        if budgets.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.store.adjust_all(&budgets, actual - estimated).await;
            if refund {
                me.wake.notify_one();
            }
        });
    }

    /// Queue and budget state for `/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let deployments: Vec<serde_json::Value> = self
            .deployments
            .iter()
            .map(|b| {
                let levels = |v: &[Budget]| -> Vec<serde_json::Value> {
                    v.iter()
                        .map(|x| {
                            let mut v = serde_json::json!({
                                "budget": &*x.id,
                                "available_now": (self.store.local.level(x) * 10.0).round() / 10.0,
                                "capacity": (x.capacity() * 10.0).round() / 10.0,
                            });
                            if matches!(x.limit, store::Limit::Window(_)) {
                                v["window_secs"] = serde_json::json!(window::WINDOW_SECS);
                            }
                            v
                        })
                        .collect()
                };
                serde_json::json!({"requests": levels(&b.requests), "tokens": levels(&b.tokens)})
            })
            .collect();
        serde_json::json!({
            "queue_depth": self.depth(),
            "max_size": self.policy.max_size,
            "max_wait_ms": self.policy.max_wait.as_millis() as u64,
            "budgets_shared": self.store.shared(),
            "deployments": deployments,
        })
    }
}

/// Removes a waiter from the queue when its request stops waiting (admitted, timed out, gone).
struct Leave<'a> {
    sched: &'a ModelSched,
    seq: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let removed = self.sched.lock().remove(self.seq).is_some();
        if removed {
            self.sched.gauge();
        }
    }
}

/// What an upstream's answer says about its budget.
#[derive(Debug, Default, PartialEq)]
pub struct Feedback {
    pub requests_blocked: Option<f64>,
    pub tokens_blocked: Option<f64>,
}

impl Feedback {
    /// A 429 empties both budgets for `Retry-After` (1 s when absent); `x-ratelimit-remaining-*: 0`
    /// (OpenAI, Azure) or `anthropic-ratelimit-*-remaining: 0` empties that budget until its reset.
    pub fn read(status: u16, h: &http::HeaderMap) -> Feedback {
        let num = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let dur = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).and_then(parse_reset);
        let mut fb = Feedback::default();
        if status == 429 {
            let after = num("retry-after-ms")
                .map(|ms| ms / 1000.0)
                .or_else(|| num("retry-after"))
                .unwrap_or(1.0)
                .clamp(0.0, 300.0);
            fb.requests_blocked = Some(after);
            fb.tokens_blocked = Some(after);
            return fb;
        }
        let spent = |remaining: Option<f64>| remaining.is_some_and(|r| r < 1.0);
        if spent(num("x-ratelimit-remaining-requests")) {
            fb.requests_blocked = Some(dur("x-ratelimit-reset-requests").unwrap_or(1.0));
        }
        if spent(num("x-ratelimit-remaining-tokens")) {
            fb.tokens_blocked = Some(dur("x-ratelimit-reset-tokens").unwrap_or(1.0));
        }
        // Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`,
        // each with a `-reset` instant in RFC 3339.
        let until = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| seconds_until_rfc3339(v, unix_now()))
        };
        if spent(num("anthropic-ratelimit-requests-remaining")) {
            fb.requests_blocked = Some(until("anthropic-ratelimit-requests-reset").unwrap_or(1.0));
        }
        for kind in ["tokens", "input-tokens", "output-tokens"] {
            if spent(num(&format!("anthropic-ratelimit-{kind}-remaining"))) {
                let after = until(&format!("anthropic-ratelimit-{kind}-reset")).unwrap_or(1.0);
                fb.tokens_blocked = Some(fb.tokens_blocked.map_or(after, |b: f64| b.max(after)));
            }
        }
        fb
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds from `now` (Unix seconds) until an RFC 3339 instant such as `2026-11-22T10:31:05Z` or
/// `2026-11-22T10:31:05.250+01:00` (Anthropic's reset headers), clamped to 0..=3600.
pub fn seconds_until_rfc3339(s: &str, now: f64) -> Option<f64> {
    let s = s.trim().as_bytes();
    let num = |a: usize, b: usize| -> Option<i64> {
        std::str::from_utf8(s.get(a..b)?).ok()?.parse::<i64>().ok()
    };
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if s.get(i) == Some(&b'.') {
        let start = i;
        i += 1;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        frac = std::str::from_utf8(&s[start..i])
            .ok()?
            .parse::<f64>()
            .ok()?;
    }
    let offset = match s.get(i)? {
        b'Z' | b'z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == s.len() => {
            let m = num(i + 1, i + 3)? * 3600 + num(i + 4, i + 6)? * 60;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let at = (days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac;
    Some((at - now).clamp(0.0, 3600.0))
}

/// OpenAI's reset durations: `1s`, `6m0s`, `250ms`, `1h2m3.5s`; plain seconds too.
pub fn parse_reset(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return Some(v.clamp(0.0, 3600.0));
    }
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += v * unit;
        any = true;
    }
    (any && num.is_empty()).then_some(total.clamp(0.0, 3600.0))
}

/// The schedulers of one config, by model index.
pub struct Scheduler {
    pub store: Arc<Store>,
    pub models: Vec<Arc<ModelSched>>,
}

impl Scheduler {
    /// Build for `config`, keeping the previous store (and with it every budget's state) when the
    /// state settings did not change.
    pub fn build(
        config: &Config,
        previous: Option<&Scheduler>,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Result<Scheduler, String> {
        let redis = config.state.redis.as_ref().map(|s| s.expose().to_string());
        let store = match previous {
            Some(p) if p.store_matches(redis.as_deref(), config.state.redis_failure) => {
                p.store.clone()
            }
            _ => Arc::new(Store::new(redis.as_deref(), config.state.redis_failure)?),
        };
        let models = config
            .models
            .iter()
            .map(|m| Arc::new(model_sched(m, &config.upstreams, store.clone(), metrics)))
            .collect::<Vec<_>>();
        if let Some(mx) = metrics {
            let _ = store
                .error_counter
                .set(mx.state_errors.with_label_values(&["redis"]));
        }
        if !store.shared() && models.iter().any(|m| m.active()) {
            store::note_local_only();
        }
        // The scheduled models' vocabularies are loaded now, off the request path: their admission
        // estimates count every prompt. The answers of servers that may not report usage (the
        // exchange's `estimate_usage`) load theirs only when one first comes without usage — in
        // the counting lane, off the workers: every provider this gateway asks for usage reports
        // it, and a vocabulary costs ~40 MiB of memory (o200k) for as long as the process runs.
        let mut counters: Vec<Counter> = Vec::new();
        for c in models
            .iter()
            .filter(|m| m.needs_tokens())
            .map(|m| m.counter)
        {
            if c != Counter::Bytes && !counters.contains(&c) {
                counters.push(c);
            }
        }
        if !counters.is_empty() {
            std::thread::spawn(move || Counter::warm_up(&counters));
        }
        Ok(Scheduler { store, models })
    }

    /// This config now runs: its window limits bind at once, also for the requests still queued
    /// under the previous config (call once the new state is built and about to serve).
    pub fn activate(&self) {
        let budgets: Vec<&Budget> = self
            .models
            .iter()
            .flat_map(|m| m.deployments.iter())
            .flat_map(|d| d.requests.iter().chain(d.tokens.iter()))
            .collect();
        self.store.local.configure(&budgets);
    }

    fn store_matches(
        &self,
        redis: Option<&str>,
        failure: crate::config::state::RedisFailure,
    ) -> bool {
        self.store.matches(redis, failure)
    }

    pub fn stats(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for m in self.models.iter().filter(|m| m.active()) {
            map.insert(m.name.clone(), m.stats());
        }
        serde_json::json!({
            "models": map,
            "state_errors": self.store.errors.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

fn model_sched(
    m: &Model,
    upstreams: &[Upstream],
    store: Arc<Store>,
    metrics: Option<&crate::metrics::Metrics>,
) -> ModelSched {
    let mut drain_rate = 0.0;
    let deployments = m
        .deployments
        .iter()
        .map(|d| {
            let id = |kind: &str| -> Arc<str> {
                format!("dep:{}:{}:{}:{kind}", m.name, d.upstream, d.model).into()
            };
            let up = upstreams.get(d.upstream_id.index());
            let mut requests = Vec::new();
            let mut tokens = Vec::new();
            if let Some(rpm) = d.rpm {
                requests.push(Budget::per_minute_window(id("rpm"), rpm));
            }
            if let Some(tpm) = d.tpm {
                tokens.push(Budget::per_minute_window(id("tpm"), tpm));
            }
            if let Some(u) = up {
                if let Some(rpm) = u.limits.rpm {
                    requests.push(Budget::per_minute_window(
                        format!("upstream:{}:rpm", u.name).into(),
                        rpm,
                    ));
                }
                if let Some(tpm) = u.limits.tpm {
                    tokens.push(Budget::per_minute_window(
                        format!("upstream:{}:tpm", u.name).into(),
                        tpm,
                    ));
                }
            }
            let rpm = requests
                .iter()
                .map(Budget::per_second)
                .fold(f64::MAX, f64::min);
            if rpm < f64::MAX {
                drain_rate += rpm;
            }
            DeploymentBudgets {
                requests,
                tokens,
                // OpenAI and Azure count prompt + max_tokens at admission and keep it; self-hosted
                // budgets are the operator's own and count what was really used.
                reconcile: up.is_some_and(|u| crate::providers::of(u.provider).reconciles_tokens()),
            }
        })
        .collect();
    let counter = m
        .deployments
        .first()
        .map(|d| Counter::for_model(&d.model))
        .unwrap_or(Counter::Bytes);
    let metrics = metrics.map(|mx| QueueMetrics {
        depth: mx.queue_depth.with_label_values(&[m.name.as_str()]),
        wait: mx.queue_wait.with_label_values(&[m.name.as_str()]),
        rejections: mx.queue_rejections.clone(),
    });
    ModelSched {
        name: m.name.clone(),
        policy: m.queue.clone(),
        deployments,
        counter,
        store,
        queue: Mutex::new(Queue::new(m.queue.scheduling)),
        wake: tokio::sync::Notify::new(),
        metrics,
        drain_rate,
    }
}

/// A stable, non-reversible identity for a client's API key (fairness, logs): never the key.
pub fn key_identity(secret: &[u8]) -> Arc<str> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut h);
    format!("k{:016x}", h.finish()).into()
}

#[allow(
    dead_code,
    reason = "compiled only to check that the admission future is Send"
)]
fn _assert_send(s: Arc<ModelSched>) -> impl Send {
    async move {
        let _ = s.acquire(vec![0], Ask::default()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_resets() {
        // 2026-11-22T10:31:05Z = 1795343465.
        let now = 1_795_343_460.0;
        let at = |s: &str| seconds_until_rfc3339(s, now);
        assert_eq!(at("2026-11-22T10:31:05Z"), Some(5.0));
        assert_eq!(at("2026-11-22T11:31:05.5+01:00"), Some(5.5));
        assert_eq!(at("2026-11-22T10:30:00Z"), Some(0.0));
        assert_eq!(at("2026-11-22T10:31:05"), None);
        assert_eq!(at("soon"), None);
        let mut h = http::HeaderMap::new();
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            "0".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-requests-reset",
            "2000-01-01T00:00:00Z".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-input-tokens-remaining",
            "0".parse().unwrap(),
        );
        let fb = Feedback::read(200, &h);
        assert_eq!(fb.requests_blocked, Some(0.0));
        assert_eq!(fb.tokens_blocked, Some(1.0));
    }

    #[test]
    fn reset_formats() {
        let near = |s: &str, v: f64| {
            let got = parse_reset(s).unwrap();
            assert!((got - v).abs() < 1e-9, "{s}: {got}");
        };
        near("1s", 1.0);
        near("6m0s", 360.0);
        near("250ms", 0.25);
        near("1h2m3.5s", 3600.0);
        near("2", 2.0);
        assert_eq!(parse_reset("x"), None);
    }

    #[test]
    fn feedback_from_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "120ms".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "5000".parse().unwrap());
        let fb = Feedback::read(200, &h);
        assert!((fb.requests_blocked.unwrap() - 0.12).abs() < 1e-9);
        assert_eq!(fb.tokens_blocked, None);
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(Feedback::read(429, &h).tokens_blocked, Some(3.0));
    }

    #[tokio::test]
    async fn fifo_queue_admits_in_order_and_refuses_when_full() {
        let yaml = "server: {listeners: [{name: m, listen: \"127.0.0.1:1\"}]}\nupstreams: [{name: u, url: \"http://127.0.0.1:1/v1\"}]\nmodels: [{name: m, queue: {max_size: 3, max_wait: 5s}, deployments: [{upstream: u, model: m, rpm: 600}]}]\n";
        let cfg = crate::config::parse(yaml, &crate::config::reader::ProcessEnv).unwrap();
        let s = Scheduler::build(&cfg, None, None).unwrap();
        let m = s.models[0].clone();
        // Empty the budget for a moment: everything queues.
        m.store.local.block(&m.deployments[0].requests[0], 0.3);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (mm, order) = (m.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                mm.acquire(vec![0], Ask::default()).await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // Arrival order.
            for _ in 0..1000 {
                if m.depth() > i {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(m.depth(), i + 1);
        }
        assert!(matches!(
            m.acquire(vec![0], Ask::default()).await,
            Err(Refusal::QueueFull { .. })
        ));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
