//! The web console's recent history (`GET /ui`, also `GET /stats/timeline` and `/stats/requests`): the
//! last hour in per-interval aggregates, spend per day, and the most recent requests' access-log
//! fields ([`super::recent`]) — in process and in fixed memory. Prometheus (and Grafana on it) stays
//! the long-term store; this is what the console draws without one.
//!
//! One call per finished request ([`Timeline::record`], from `proxy::observe`) updates an interval
//! aggregate (overall and the model's), the day's spend and the recent-request ring under one short
//! lock each; nothing runs in the background. Slots are addressed by time (`unix seconds / interval`
//! modulo the ring's length), so an old slot is recognised by its index and reset when reused.
//!
//! ## Bounds
//! - **Intervals**: [`SLOTS`] × [`INTERVAL_S`] s (one hour). A slot holds the overall aggregate and at
//!   most [`MODELS_PER_SLOT`] models' (further models are pooled under [`OTHER`]); an aggregate is two
//!   latency histograms of [`BUCKETS`] `u32` counters and a few totals (~0.6 KiB), so the ring is at
//!   most ~4 MiB (one model: ~0.45 MiB).
//! - **Days**: [`DAYS`] days of spend, each with at most [`MODELS_PER_DAY`] models and
//!   [`KEYS_PER_DAY`] keys (further ones pooled under [`OTHER`]): under 1 MiB.
//! - **Recent requests**: [`super::recent::CAPACITY`] entries, each string cut to
//!   [`super::recent::MAX_FIELD`] bytes.
//!
//! Percentiles come from log-spaced histogram buckets ([`RATIO`] apart): a reported p50/p99 is the
//! geometric middle of its bucket, within ±12% of the true value.

use super::recent::{Recent, RecentFilter};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds per interval.
pub const INTERVAL_S: u64 = 10;
/// Intervals kept: one hour.
pub const SLOTS: usize = 360;
/// Models kept apart in one interval; further ones are pooled under [`OTHER`].
pub const MODELS_PER_SLOT: usize = 16;
/// Days of spend kept.
pub const DAYS: usize = 32;
/// Models and keys kept apart in one day; further ones are pooled under [`OTHER`].
pub const MODELS_PER_DAY: usize = 64;
pub const KEYS_PER_DAY: usize = 256;
/// The pooled name past a bound.
pub const OTHER: &str = "(other)";
/// Histogram buckets and their geometry: bucket `i` holds `[BASE_MS·RATIO^i, BASE_MS·RATIO^(i+1))`,
/// from 0.1 ms to ~950 s (the last bucket takes everything above).
pub const BUCKETS: usize = 72;
const BASE_MS: f64 = 0.1;
const RATIO: f64 = 1.25;

/// One finished request, as the console sees it (access-log fields; never content, never a secret).
#[derive(Debug, Clone, Default)]
pub struct Finished<'a> {
    pub request_id: &'a str,
    pub listener: &'a str,
    pub method: &'a str,
    /// The route template, never a raw URL.
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub upstream: Option<&'a str>,
    /// The virtual key's id (or the hash identity of the key presented).
    pub key_id: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub queue: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What the request cost (0 when unpriced, a cache hit or priced later by the batcher).
    pub spend_usd: f64,
    /// `hit`, `miss` or `bypass`.
    pub cache: Option<&'static str>,
    /// The error label of `llmproxy_http_request_errors_total`, when it failed.
    pub error: Option<&'static str>,
}

impl Finished<'_> {
    /// An error for the console's error rate: any 4xx or 5xx (as `/stats` counts `failed`).
    fn failed(&self) -> bool {
        self.status >= 400
    }
}

/// A latency histogram over log-spaced buckets.
#[derive(Clone)]
struct Hist([u32; BUCKETS]);

impl Default for Hist {
    fn default() -> Self {
        Hist([0; BUCKETS])
    }
}

impl Hist {
    fn bucket(ms: f64) -> usize {
        if ms.is_nan() || ms <= BASE_MS {
            return 0;
        }
        ((ms / BASE_MS).ln() / RATIO.ln())
            .floor()
            .min((BUCKETS - 1) as f64) as usize
    }

    fn add(&mut self, ms: f64) {
        let b = &mut self.0[Hist::bucket(ms)];
        *b = b.saturating_add(1);
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The `p` quantile (0..=1): the geometric middle of the bucket holding it; `None` when empty.
    fn quantile(&self, p: f64) -> Option<f64> {
        let total: u64 = self.0.iter().map(|c| u64::from(*c)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * p).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, c) in self.0.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(BASE_MS * RATIO.powf(i as f64 + 0.5));
            }
        }
        None
    }
}

/// What one interval (or one model within it) saw.
#[derive(Clone, Default)]
struct Agg {
    requests: u32,
    errors: u32,
    cache_hits: u32,
    cache_misses: u32,
    prompt_tokens: u64,
    completion_tokens: u64,
    spend_usd: f64,
    latency: Hist,
    ttft: Hist,
}

impl Agg {
    fn add(&mut self, f: &Finished<'_>) {
        self.requests = self.requests.saturating_add(1);
        if f.failed() {
            self.errors = self.errors.saturating_add(1);
        }
        match f.cache {
            Some("hit") => self.cache_hits = self.cache_hits.saturating_add(1),
            Some("miss") => self.cache_misses = self.cache_misses.saturating_add(1),
            _ => {}
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(f.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(f.completion_tokens);
        if f.spend_usd.is_finite() && f.spend_usd > 0.0 {
            self.spend_usd += f.spend_usd;
        }
        self.latency.add(f.duration.as_secs_f64() * 1000.0);
        if let Some(t) = f.ttft {
            self.ttft.add(t.as_secs_f64() * 1000.0);
        }
    }

    fn merge(&mut self, o: &Agg) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.cache_hits = self.cache_hits.saturating_add(o.cache_hits);
        self.cache_misses = self.cache_misses.saturating_add(o.cache_misses);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.spend_usd += o.spend_usd;
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
    }

    /// The summary of `seconds` of traffic.
    fn summary(&self, seconds: f64) -> Value {
        let secs = seconds.max(1.0);
        let lookups = self.cache_hits + self.cache_misses;
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(f64::from(self.requests) / secs),
            "error_rate": (self.requests > 0).then(|| round(f64::from(self.errors) / f64::from(self.requests))),
            "p50_ms": self.latency.quantile(0.5).map(round),
            "p99_ms": self.latency.quantile(0.99).map(round),
            "ttft_p50_ms": self.ttft.quantile(0.5).map(round),
            "ttft_p99_ms": self.ttft.quantile(0.99).map(round),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": round((self.prompt_tokens + self.completion_tokens) as f64 / secs),
            "spend_usd": round6(self.spend_usd),
            "spend_per_hour": round6(self.spend_usd * 3600.0 / secs),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_ratio": (lookups > 0).then(|| round(f64::from(self.cache_hits) / f64::from(lookups))),
        })
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// One interval of the ring.
#[derive(Default)]
struct Slot {
    /// `unix seconds / INTERVAL_S`; 0: never used.
    index: u64,
    total: Agg,
    models: Vec<(Box<str>, Agg)>,
}

impl Slot {
    fn model(&self, name: &str) -> Option<&Agg> {
        self.models
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, a)| a)
    }
}

/// Spend and tokens of one model or key in one day.
#[derive(Clone, Default)]
struct DayAgg {
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    spend_usd: f64,
}

impl DayAgg {
    fn add(&mut self, f: &Finished<'_>) {
        self.requests += 1;
        if f.failed() {
            self.errors += 1;
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(f.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(f.completion_tokens);
        if f.spend_usd.is_finite() && f.spend_usd > 0.0 {
            self.spend_usd += f.spend_usd;
        }
    }

    fn json(&self, name_field: &str, name: &str) -> Value {
        json!({
            name_field: name,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "spend_usd": round6(self.spend_usd),
        })
    }
}

#[derive(Default)]
struct Day {
    /// `unix seconds / 86400`; 0: never used.
    index: u64,
    models: DayMap,
    keys: DayMap,
}

/// Names are the operator's (models) and the gateway's (key ids): aHash, not SipHash.
type DayMap = HashMap<Box<str>, DayAgg, ahash::RandomState>;

/// Add to `name`'s entry, or to [`OTHER`]'s once `cap` names are kept.
fn day_entry<'m>(map: &'m mut DayMap, name: &str, cap: usize) -> Option<&'m mut DayAgg> {
    // A name seen before (every request but a day's first of each name): two lookups, no
    // allocation.
    if !map.contains_key(name) {
        let name = if map.len() < cap { name } else { OTHER };
        return Some(map.entry(name.into()).or_default());
    }
    map.get_mut(name)
}

struct Rings {
    slots: Vec<Slot>,
    days: Vec<Day>,
}

/// The console's history; see the module docs for what it keeps and its bounds.
pub struct Timeline {
    rings: Mutex<Rings>,
    recent: Recent,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            rings: Mutex::new(Rings {
                slots: (0..SLOTS).map(|_| Slot::default()).collect(),
                days: (0..DAYS).map(|_| Day::default()).collect(),
            }),
            recent: Recent::default(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Timeline {
    fn lock(&self) -> MutexGuard<'_, Rings> {
        // Aggregates a panic left half-updated are still worth showing: keep going.
        self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record one finished request, now.
    pub fn record(&self, f: &Finished<'_>) {
        self.record_at(f, now_ms());
    }

    /// Record one finished request that ended at `at_ms` (unix ms).
    pub fn record_at(&self, f: &Finished<'_>, at_ms: u64) {
        let secs = at_ms / 1000;
        {
            let mut g = self.lock();
            let index = secs / INTERVAL_S;
            let slot = &mut g.slots[(index % SLOTS as u64) as usize];
            if slot.index != index {
                slot.index = index;
                slot.total = Agg::default();
                slot.models.clear();
            }
            slot.total.add(f);
            if let Some(model) = f.model {
                let at = match slot.models.iter().position(|(n, _)| &**n == model) {
                    Some(i) => Some(i),
                    None if slot.models.len() < MODELS_PER_SLOT => {
                        slot.models.push((model.into(), Agg::default()));
                        Some(slot.models.len() - 1)
                    }
                    None => match slot.models.iter().position(|(n, _)| &**n == OTHER) {
                        Some(i) => Some(i),
                        None => {
                            slot.models.push((OTHER.into(), Agg::default()));
                            Some(slot.models.len() - 1)
                        }
                    },
                };
                if let Some(i) = at {
                    slot.models[i].1.add(f);
                }
            }
            let day_index = secs / 86400;
            let day = &mut g.days[(day_index % DAYS as u64) as usize];
            if day.index != day_index {
                day.index = day_index;
                day.models.clear();
                day.keys.clear();
            }
            if let Some(model) = f.model {
                if let Some(e) = day_entry(&mut day.models, model, MODELS_PER_DAY) {
                    e.add(f);
                }
            }
            if let Some(key) = f.key_id {
                if let Some(e) = day_entry(&mut day.keys, key, KEYS_PER_DAY) {
                    e.add(f);
                }
            }
        }
        self.recent.push(f, at_ms);
    }

    /// The last hour (`GET /stats/timeline`): per interval, oldest first, as columns, for all
    /// traffic or one model; a summary of the last `window_s` seconds; the models seen.
    pub fn json(&self, model: Option<&str>, window_s: u64, now_ms: u64) -> Value {
        let window_s = window_s.clamp(INTERVAL_S, SLOTS as u64 * INTERVAL_S);
        let now_s = now_ms / 1000;
        let current = now_s / INTERVAL_S;
        let first = current.saturating_sub(SLOTS as u64 - 1);
        let window_first = current.saturating_sub(window_s / INTERVAL_S - 1);
        let g = self.lock();
        let mut cols: Vec<(&str, Vec<Value>)> = [
            "requests",
            "rps",
            "error_rate",
            "p50_ms",
            "p99_ms",
            "ttft_p50_ms",
            "ttft_p99_ms",
            "tokens_per_s",
            "spend_per_hour",
            "cache_hit_ratio",
        ]
        .iter()
        .map(|n| (*n, Vec::with_capacity(SLOTS)))
        .collect();
        let mut models: Vec<String> = Vec::new();
        let mut window = Agg::default();
        let empty = Agg::default();
        for index in first..=current {
            let slot = &g.slots[(index % SLOTS as u64) as usize];
            let live = slot.index == index;
            if live {
                for (n, _) in &slot.models {
                    if !models.iter().any(|m| **m == **n) {
                        models.push(n.to_string());
                    }
                }
            }
            let agg = match (live, model) {
                (false, _) => &empty,
                (true, None) => &slot.total,
                (true, Some(m)) => slot.model(m).unwrap_or(&empty),
            };
            if index >= window_first {
                window.merge(agg);
            }
            // The interval in progress counts only the seconds it has had.
            let secs = if index == current {
                (now_ms as f64 / 1000.0 - (index * INTERVAL_S) as f64).clamp(1.0, INTERVAL_S as f64)
            } else {
                INTERVAL_S as f64
            };
            let s = agg.summary(secs);
            for (name, col) in cols.iter_mut() {
                col.push(s.get(*name).cloned().unwrap_or(Value::Null));
            }
        }
        drop(g);
        models.sort_unstable();
        let window_secs = ((current - window_first) * INTERVAL_S) as f64
            + (now_ms as f64 / 1000.0 - (current * INTERVAL_S) as f64).max(0.0);
        let mut series = Map::new();
        for (name, col) in cols {
            series.insert(name.to_string(), Value::Array(col));
        }
        json!({
            "interval_s": INTERVAL_S,
            "start": first * INTERVAL_S,
            "now_ms": now_ms,
            "model": model,
            "models": models,
            "series": series,
            "window_s": window_s,
            "summary": window.summary(window_secs),
        })
    }

    /// Spend per day (`start_day..=end_day`, as `unix seconds / 86400`), newest first, by model and by
    /// key, since this process started (at most [`DAYS`] days).
    pub fn spend_json(&self, start_day: u64, end_day: u64) -> Value {
        let g = self.lock();
        let mut days: Vec<&Day> = g
            .days
            .iter()
            .filter(|d| d.index != 0 && d.index >= start_day && d.index <= end_day)
            .collect();
        days.sort_by_key(|d| std::cmp::Reverse(d.index));
        let list = |m: &DayMap, field: &str| -> Vec<Value> {
            let mut v: Vec<(&Box<str>, &DayAgg)> = m.iter().collect();
            v.sort_by(|a, b| b.1.spend_usd.total_cmp(&a.1.spend_usd).then(a.0.cmp(b.0)));
            v.into_iter().map(|(n, a)| a.json(field, n)).collect()
        };
        let out: Vec<Value> = days
            .into_iter()
            .map(|d| {
                let date = crate::keys::units::iso8601((d.index * 86400) as i64);
                json!({
                    "date": date.get(..10).unwrap_or(&date),
                    "models": list(&d.models, "model"),
                    "keys": list(&d.keys, "key_id"),
                })
            })
            .collect();
        json!({"days": out, "kept_days": DAYS})
    }

    /// The most recent requests, newest first, that pass `filter`.
    pub fn requests_json(&self, filter: &RecentFilter) -> Value {
        self.recent.json(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(model: &str, status: u16, ms: u64) -> Finished<'static> {
        Finished {
            request_id: "r",
            listener: "main",
            method: "POST",
            path: "/v1/chat/completions",
            model: Some(Box::leak(model.to_string().into_boxed_str())),
            key_id: Some("k1"),
            status,
            duration: Duration::from_millis(ms),
            ttft: Some(Duration::from_millis(ms / 2)),
            prompt_tokens: 10,
            completion_tokens: 5,
            spend_usd: 0.001,
            cache: Some("miss"),
            ..Default::default()
        }
    }

    #[test]
    fn histogram_quantiles_are_within_the_bucket_error() {
        let mut h = Hist::default();
        for ms in 1..=1000 {
            h.add(f64::from(ms));
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.12, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.12, "{p99}");
        assert_eq!(Hist::default().quantile(0.5), None);
        // Out of range values land in the end buckets.
        assert_eq!(Hist::bucket(0.0), 0);
        assert_eq!(Hist::bucket(f64::NAN), 0);
        assert_eq!(Hist::bucket(1e12), BUCKETS - 1);
    }

    #[test]
    fn intervals_aggregate_and_expire() {
        let t = Timeline::default();
        let base = 1_700_000_000_000u64;
        for i in 0..20 {
            t.record_at(&req("a", if i == 0 { 500 } else { 200 }, 100), base);
        }
        t.record_at(&req("b", 200, 10), base + 10_000);
        let v = t.json(None, 60, base + 15_000);
        let rq = v["series"]["requests"].as_array().unwrap();
        assert_eq!(rq.len(), SLOTS);
        assert_eq!(rq[SLOTS - 2], 20);
        assert_eq!(rq[SLOTS - 1], 1);
        assert_eq!(v["series"]["rps"][SLOTS - 2], 2.0);
        assert_eq!(v["series"]["error_rate"][SLOTS - 2], 0.05);
        assert_eq!(v["series"]["p50_ms"][SLOTS - 3], Value::Null);
        assert_eq!(v["models"], json!(["a", "b"]));
        assert_eq!(v["summary"]["requests"], 21);
        assert_eq!(v["summary"]["cache_hit_ratio"], 0.0);
        let p50 = v["series"]["p50_ms"][SLOTS - 2].as_f64().unwrap();
        assert!((p50 - 100.0).abs() < 12.0, "{p50}");
        let only_b = t.json(Some("b"), 60, base + 15_000);
        assert_eq!(only_b["series"]["requests"][SLOTS - 2], 0);
        assert_eq!(only_b["series"]["requests"][SLOTS - 1], 1);
        // An hour later the ring has moved on: the old slots read as empty.
        let later = t.json(None, 60, base + 3_700_000);
        assert!(later["series"]["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v == 0));
        // A reused slot (an hour after `a`'s) starts afresh; `b`'s, 10 s later, is still in the hour.
        t.record_at(&req("c", 200, 5), base + 3_600_000);
        let v = t.json(None, 60, base + 3_600_000);
        assert_eq!(v["series"]["requests"][SLOTS - 1], 1);
        assert_eq!(v["series"]["requests"][0], 1);
        assert_eq!(v["models"], json!(["b", "c"]));
    }

    #[test]
    fn models_past_the_bound_are_pooled() {
        let t = Timeline::default();
        let base = 1_700_000_000_000u64;
        for i in 0..(MODELS_PER_SLOT + 5) {
            t.record_at(&req(&format!("m{i}"), 200, 1), base);
        }
        let g = t.lock();
        let slot = g.slots.iter().find(|s| s.index != 0).unwrap();
        assert_eq!(slot.models.len(), MODELS_PER_SLOT + 1);
        assert_eq!(slot.model(OTHER).unwrap().requests, 5);
        assert_eq!(slot.total.requests as usize, MODELS_PER_SLOT + 5);
    }

    /// What one `record` costs with both cores recording at once (run in release:
    /// `cargo test --release --lib timeline::tests::record_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a micro-benchmark, run by hand in release"]
    #[allow(
        clippy::print_stdout,
        reason = "a micro-benchmark run by hand reports its figure"
    )]
    fn record_cost_under_contention() {
        const N: u32 = 500_000;
        let t = std::sync::Arc::new(Timeline::default());
        let start = std::time::Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let models = ["gpt-4o-mini", "gpt-4o", "claude"];
                    let mut f = req("gpt-4o-mini", 200, 1);
                    f.key_id = Some(if i == 0 { "k1" } else { "k2" });
                    for n in 0..N {
                        f.model = Some(models[(n % 3) as usize]);
                        f.duration = Duration::from_micros(u64::from(n % 5000) * 100);
                        t.record(&f);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let per = start.elapsed().as_nanos() as f64 / f64::from(2 * N);
        println!("timeline: {per:.0} ns per record, 2 threads recording at once");
    }

    #[test]
    fn spend_by_day_and_key() {
        let t = Timeline::default();
        let day = 19_700u64;
        let at = day * 86_400_000 + 1000;
        t.record_at(&req("a", 200, 1), at);
        t.record_at(&req("a", 200, 1), at);
        t.record_at(&req("b", 200, 1), at + 86_400_000);
        let v = t.spend_json(day, day + 1);
        let days = v["days"].as_array().unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(days[0]["models"][0]["model"], "b");
        assert_eq!(days[1]["models"][0]["spend_usd"], 0.002);
        assert_eq!(days[1]["keys"][0]["key_id"], "k1");
        assert_eq!(days[1]["keys"][0]["requests"], 2);
        assert_eq!(t.spend_json(day + 5, day + 9)["days"], json!([]));
    }
}
