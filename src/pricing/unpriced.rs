//! Requests whose model has no price: counted, and warned about once per model, never silently free.

use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct `(provider, model)` pairs remembered; requests for further pairs are counted under
/// [`OTHER`], so a flood of made-up model names cannot grow memory or a metric's label set.
pub const MAX_TRACKED: usize = 1000;

/// The model label that stands for the pairs beyond [`MAX_TRACKED`].
pub const OTHER: &str = "(other)";

/// Requests for one unpriced model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpricedCount {
    pub provider: String,
    pub model: String,
    pub requests: u64,
}

/// Counts requests that could not be priced, per `(provider, model)`, and logs a warning the first
/// time each pair is seen. One instance lives in the shared service state (the request path calls
/// [`Unpriced::record`] only for unpriced requests, so the lock is off the common path); its
/// [`Unpriced::counts`] are what a `llmproxy_unpriced_requests_total{model}` counter exports.
#[derive(Debug, Default)]
pub struct Unpriced {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pairs: HashMap<(String, String), u64>,
    /// Requests for pairs beyond [`MAX_TRACKED`].
    other: u64,
    total: u64,
}

impl Unpriced {
    pub fn new() -> Unpriced {
        Unpriced::default()
    }

    /// Count one unpriced request; the first for a pair logs a warning (and the first beyond
    /// [`MAX_TRACKED`] pairs logs that further models are counted together). Returns whether this was
    /// the pair's first request.
    pub fn record(&self, provider: &str, model: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.total = inner.total.saturating_add(1);
        let key = (provider.to_string(), model.to_string());
        if let Some(n) = inner.pairs.get_mut(&key) {
            *n = n.saturating_add(1);
            return false;
        }
        if inner.pairs.len() >= MAX_TRACKED {
            inner.other = inner.other.saturating_add(1);
            if inner.other == 1 {
                log::warn!(
                    "more than {MAX_TRACKED} distinct models had no price; further ones are counted as `{OTHER}` without a warning each"
                );
            }
            return false;
        }
        inner.pairs.insert(key, 1);
        drop(inner);
        log::warn!(
            "no price for model `{model}` at provider `{provider}`: its requests are counted as unpriced and not added to spend; set models[].pricing for it (`llmproxy prices` lists the built-in prices)"
        );
        true
    }

    /// Unpriced requests in all.
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Requests per unpriced model, sorted by provider and model, with the pairs beyond
    /// [`MAX_TRACKED`] last as one [`OTHER`] row.
    pub fn counts(&self) -> Vec<UnpricedCount> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<UnpricedCount> = inner
            .pairs
            .iter()
            .map(|((provider, model), &requests)| UnpricedCount {
                provider: provider.clone(),
                model: model.clone(),
                requests,
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        if inner.other > 0 {
            out.push(UnpricedCount {
                provider: String::new(),
                model: OTHER.to_string(),
                requests: inner.other,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_pair_and_warns_once() {
        let u = Unpriced::new();
        assert!(u.record("openai", "my-model"));
        assert!(!u.record("openai", "my-model"));
        assert!(u.record("azure", "my-model"));
        assert_eq!(u.total(), 3);
        assert_eq!(
            u.counts(),
            vec![
                UnpricedCount {
                    provider: "azure".into(),
                    model: "my-model".into(),
                    requests: 1
                },
                UnpricedCount {
                    provider: "openai".into(),
                    model: "my-model".into(),
                    requests: 2
                },
            ]
        );
    }

    #[test]
    fn pairs_beyond_the_bound_are_counted_together() {
        let u = Unpriced::new();
        for i in 0..MAX_TRACKED + 5 {
            u.record("openai", &format!("m{i}"));
        }
        u.record("openai", "m0");
        let counts = u.counts();
        assert_eq!(counts.len(), MAX_TRACKED + 1);
        let other = counts.last().map(|c| (c.model.as_str(), c.requests));
        assert_eq!(other, Some((OTHER, 5)));
        assert_eq!(u.total(), MAX_TRACKED as u64 + 6);
    }
}
