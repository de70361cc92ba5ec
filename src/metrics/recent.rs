//! The most recent requests for the console's Requests page (`GET /stats/requests`): access-log
//! fields only — never message content, never a secret — in a ring of [`CAPACITY`] entries whose
//! strings are cut to [`MAX_FIELD`] bytes, so its memory is fixed (under 1 MiB).

use super::timeline::Finished;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Requests kept.
pub const CAPACITY: usize = 1000;
/// Longest string kept per field (a client-chosen `x-request-id` could be longer).
pub const MAX_FIELD: usize = 128;

struct Entry {
    at_ms: u64,
    request_id: Box<str>,
    listener: Box<str>,
    method: Box<str>,
    path: Box<str>,
    model: Option<Box<str>>,
    upstream: Option<Box<str>>,
    key_id: Option<Box<str>>,
    status: u16,
    duration_ms: f64,
    ttft_ms: Option<f64>,
    queue_ms: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    spend_usd: f64,
    cache: Option<&'static str>,
    error: Option<&'static str>,
}

fn cut(s: &str) -> Box<str> {
    if s.len() <= MAX_FIELD {
        return s.into();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// Which requests to list.
#[derive(Debug, Default)]
pub struct RecentFilter {
    /// Exact model name.
    pub model: Option<String>,
    /// Exact key id.
    pub key: Option<String>,
    /// `2xx`, `3xx`, `4xx`, `5xx`, `error` (4xx and 5xx) or one status (`429`).
    pub status: Option<String>,
    /// At most this many (default and maximum [`CAPACITY`]).
    pub limit: Option<usize>,
}

impl RecentFilter {
    fn status_matches(&self, status: u16) -> bool {
        let Some(s) = self.status.as_deref().filter(|s| !s.is_empty()) else {
            return true;
        };
        match s {
            "error" => status >= 400,
            _ if s.len() == 3 && s.ends_with("xx") => {
                s.as_bytes()[0].is_ascii_digit()
                    && u16::from(s.as_bytes()[0] - b'0') == status / 100
            }
            _ => s.parse::<u16>().is_ok_and(|v| v == status),
        }
    }

    fn matches(&self, e: &Entry) -> bool {
        let same = |want: &Option<String>, have: &Option<Box<str>>| match want
            .as_deref()
            .filter(|w| !w.is_empty())
        {
            None => true,
            Some(w) => have.as_deref() == Some(w),
        };
        same(&self.model, &e.model) && same(&self.key, &e.key_id) && self.status_matches(e.status)
    }
}

#[derive(Default)]
pub struct Recent {
    ring: Mutex<VecDeque<Entry>>,
}

impl Recent {
    pub fn push(&self, f: &Finished<'_>, at_ms: u64) {
        let e = Entry {
            at_ms,
            request_id: cut(f.request_id),
            listener: cut(f.listener),
            method: cut(f.method),
            path: cut(f.path),
            model: f.model.map(cut),
            upstream: f.upstream.map(cut),
            key_id: f.key_id.map(cut),
            status: f.status,
            duration_ms: f.duration.as_secs_f64() * 1000.0,
            ttft_ms: f.ttft.map(|t| t.as_secs_f64() * 1000.0),
            queue_ms: f.queue.as_millis() as u64,
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            spend_usd: f.spend_usd,
            cache: f.cache,
            error: f.error,
        };
        let mut g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() == CAPACITY {
            g.pop_front();
        }
        g.push_back(e);
    }

    /// `{"requests": [...], "capacity": N}`, newest first.
    pub fn json(&self, filter: &RecentFilter) -> Value {
        let limit = filter.limit.unwrap_or(CAPACITY).clamp(1, CAPACITY);
        let g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let out: Vec<Value> = g
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .map(|e| {
                json!({
                    "at_ms": e.at_ms,
                    "request_id": &*e.request_id,
                    "listener": &*e.listener,
                    "method": &*e.method,
                    "path": &*e.path,
                    "model": e.model.as_deref(),
                    "upstream": e.upstream.as_deref(),
                    "key_id": e.key_id.as_deref(),
                    "status": e.status,
                    "duration_ms": (e.duration_ms * 1000.0).round() / 1000.0,
                    "ttft_ms": e.ttft_ms.map(|t| (t * 1000.0).round() / 1000.0),
                    "queue_ms": e.queue_ms,
                    "prompt_tokens": e.prompt_tokens,
                    "completion_tokens": e.completion_tokens,
                    "spend_usd": (e.spend_usd * 1e6).round() / 1e6,
                    "cache": e.cache,
                    "error": e.error,
                })
            })
            .collect();
        json!({"requests": out, "capacity": CAPACITY})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(model: &'static str, key: &'static str, status: u16) -> Finished<'static> {
        Finished {
            request_id: "r",
            model: Some(model),
            key_id: Some(key),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn bounded_newest_first_and_filtered() {
        let r = Recent::default();
        for i in 0..(CAPACITY + 10) {
            r.push(&f("a", "k1", 200), i as u64);
        }
        r.push(&f("b", "k2", 429), 5000);
        r.push(&f("a", "k2", 503), 5001);
        let all = r.json(&RecentFilter::default());
        let list = all["requests"].as_array().unwrap();
        assert_eq!(list.len(), CAPACITY);
        assert_eq!(list[0]["at_ms"], 5001);
        let q = |model: Option<&str>, key: Option<&str>, status: Option<&str>| {
            r.json(&RecentFilter {
                model: model.map(Into::into),
                key: key.map(Into::into),
                status: status.map(Into::into),
                limit: None,
            })["requests"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(q(Some("b"), None, None), 1);
        assert_eq!(q(None, Some("k2"), None), 2);
        assert_eq!(q(None, None, Some("5xx")), 1);
        assert_eq!(q(None, None, Some("error")), 2);
        assert_eq!(q(None, None, Some("429")), 1);
        assert_eq!(q(Some("a"), None, Some("2xx")), CAPACITY - 2);
        assert_eq!(q(None, None, Some("nonsense")), 0);
    }

    #[test]
    fn long_fields_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        assert!(cut(&long).len() <= MAX_FIELD);
        assert!(cut(&long).chars().all(|c| c == 'é'));
    }
}
