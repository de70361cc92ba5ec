//! `/stats` (seeds 003 and 004): request counts and latency percentiles, overall and per model.
//! Percentiles come from a bounded ring of the most recent latencies, so memory stays fixed.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Latencies kept for the percentiles (overall, and per model).
const RECENT: usize = 4096;

/// Counts of successes and failures, and the latency percentiles of the most recent ones (a ring of
/// fixed size). Also used for the batch jobs' `/stats` section.
pub struct Counts {
    total: u64,
    successful: u64,
    failed: u64,
    sum_ms: f64,
    recent: Vec<f32>,
    next: usize,
    capacity: usize,
}

impl Default for Counts {
    fn default() -> Self {
        Counts::with_capacity(RECENT)
    }
}

impl Counts {
    /// Percentiles over the last `capacity` latencies.
    pub fn with_capacity(capacity: usize) -> Counts {
        Counts {
            total: 0,
            successful: 0,
            failed: 0,
            sum_ms: 0.0,
            recent: Vec::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn add(&mut self, ok: bool, ms: f64) {
        self.total += 1;
        if ok {
            self.successful += 1;
        } else {
            self.failed += 1;
        }
        self.sum_ms += ms;
        if self.recent.len() < self.capacity {
            self.recent.push(ms as f32);
        } else {
            self.recent[self.next] = ms as f32;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// `{total, successful, failed, avg_time_ms, p50_time_ms, p95_time_ms, p99_time_ms}`.
    pub fn json(&self) -> Value {
        let mut sorted = self.recent.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            (f64::from(sorted[i]) * 1000.0).round() / 1000.0
        };
        let avg = if self.total == 0 {
            0.0
        } else {
            self.sum_ms / self.total as f64
        };
        json!({
            "total": self.total,
            "successful": self.successful,
            "failed": self.failed,
            "avg_time_ms": (avg * 1000.0).round() / 1000.0,
            "p50_time_ms": pct(0.50),
            "p95_time_ms": pct(0.95),
            "p99_time_ms": pct(0.99),
        })
    }
}

#[derive(Default)]
struct Inner {
    all: Counts,
    models: HashMap<String, Counts>,
}

/// Request statistics since the process started.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

impl Stats {
    /// Count one finished request (`ok`: a 2xx/3xx answer).
    pub fn record(&self, model: Option<&str>, ok: bool, ms: f64) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        g.all.add(ok, ms);
        if let Some(m) = model {
            match g.models.get_mut(m) {
                Some(c) => c.add(ok, ms),
                None => {
                    let mut c = Counts::default();
                    c.add(ok, ms);
                    g.models.insert(m.to_string(), c);
                }
            }
        }
    }

    pub fn json(&self) -> Value {
        let Ok(g) = self.inner.lock() else {
            return json!({});
        };
        let models: serde_json::Map<String, Value> = g
            .models
            .iter()
            .map(|(k, v)| (k.clone(), v.json()))
            .collect();
        json!({"requests": g.all.json(), "models": models})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_counts() {
        let s = Stats::default();
        for i in 1..=100 {
            s.record(Some("m"), i != 100, f64::from(i));
        }
        s.record(None, true, 1.0);
        let v = s.json();
        assert_eq!(v["requests"]["total"], 101);
        assert_eq!(v["requests"]["failed"], 1);
        assert_eq!(v["models"]["m"]["total"], 100);
        assert_eq!(v["models"]["m"]["p50_time_ms"], 51.0);
        assert_eq!(v["models"]["m"]["p99_time_ms"], 99.0);
    }
}
