//! Response cache (seeds 002, 003): exact-match on the canonical request ([`key`]), successful
//! answers only, deterministic requests by default; streams are recorded chunk by chunk as they
//! pass to the client and replayed with the same chunks; identical concurrent misses wait for the
//! first one's answer (single-flight). Kept in process (moka, bounded by entries and bytes, TTL per
//! model) or in Redis (`cache.backend: redis`, shared by instances). A hit is answered in
//! `request_filter` and costs no rate budget.

pub mod convert;
pub mod key;

use crate::config::cache::{Backend, CacheConfig, ModelCache, Scope};
use crate::redis_conn::{timed, RedisConn};
use bytes::Bytes;
use key::Key;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A cached answer: the body as the client received it, chunk by chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `text/event-stream` (replayed chunk by chunk) or a JSON body.
    pub sse: bool,
    pub chunks: Vec<Bytes>,
    pub ttl: Duration,
}

impl Entry {
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// `LPC1`, kind, chunk count, then each chunk length-prefixed (for Redis).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes() + 9 + 4 * self.chunks.len());
        out.extend_from_slice(b"LPC1");
        out.push(u8::from(self.sse));
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    fn decode(b: &[u8], ttl: Duration) -> Option<Entry> {
        let rest = b.strip_prefix(b"LPC1")?;
        let (&kind, mut rest) = rest.split_first()?;
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        rest = &rest[4..];
        let mut chunks = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            chunks.push(Bytes::copy_from_slice(rest.get(4..4 + len)?));
            rest = &rest[4 + len..];
        }
        Some(Entry {
            sse: kind == 1,
            chunks,
            ttl,
        })
    }
}

/// Records what a cacheable request's answer sends to the client; gives up past the size limit.
#[derive(Debug, Default)]
pub struct Recorder {
    pub sse: bool,
    chunks: Vec<Bytes>,
    bytes: usize,
    limit: usize,
    overflow: bool,
    /// Where and how long the answer is stored.
    key: Key,
    ttl: Duration,
}

impl Recorder {
    pub fn new(limit: usize, key: Key, ttl: Duration) -> Recorder {
        Recorder {
            limit,
            key,
            ttl,
            ..Default::default()
        }
    }

    /// Store the recorded answer (complete and within the size limit), before its last byte is
    /// written: a client that has the whole answer finds it in the cache on any instance.
    pub async fn store(self, cache: &Cache) {
        let (key, ttl) = (self.key, self.ttl);
        if let Some(entry) = self.finish(ttl) {
            cache.put(key, entry).await;
        }
    }

    /// Keep a reference to the chunk (no copy).
    pub fn push(&mut self, chunk: &Bytes) {
        if self.overflow {
            return;
        }
        self.bytes += chunk.len();
        if self.bytes > self.limit {
            self.overflow = true;
            self.chunks = Vec::new();
            return;
        }
        self.chunks.push(chunk.clone());
    }

    /// A recorded OpenAI stream keeps its usage event, whether or not the client it was recorded
    /// for asked for it ([`convert::with_usage_event`]).
    pub fn keep_usage(&mut self, usage: &crate::providers::usage::Usage) {
        if self.sse && !self.overflow {
            convert::with_usage_event(&mut self.chunks, &usage.to_openai());
        }
    }

    pub fn finish(self, ttl: Duration) -> Option<Entry> {
        (!self.overflow && !self.chunks.is_empty()).then_some(Entry {
            sse: self.sse,
            chunks: self.chunks,
            ttl,
        })
    }
}

/// What to do with the cache for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub key: Key,
    /// Look for a stored answer (false: `no-cache`).
    pub read: bool,
    /// Store this answer (false: `no-store`).
    pub store: bool,
    pub ttl: Duration,
}

/// The per-request controls (spec: `caching: false`, `cache: {"no-cache"|"no-store": true}`,
/// `Cache-Control: no-cache|no-store`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Controls {
    pub off: bool,
    pub no_cache: bool,
    pub no_store: bool,
}

impl Controls {
    pub fn read(body: &crate::body::JsonBody, headers: &http::HeaderMap) -> Controls {
        let mut c = Controls::default();
        if body.get("caching").map(str::trim) == Some("false") {
            c.off = true;
        }
        if let Some(raw) = body.get("cache") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) {
                c.no_cache |= v["no-cache"] == true;
                c.no_store |= v["no-store"] == true;
            }
        }
        for v in headers.get_all(http::header::CACHE_CONTROL) {
            for token in v.to_str().unwrap_or("").split(',') {
                match token.trim().to_ascii_lowercase().as_str() {
                    "no-cache" => c.no_cache = true,
                    "no-store" => c.no_store = true,
                    _ => {}
                }
            }
        }
        c
    }
}

/// Lookup results counted in `llmproxy_cache_requests_total{result}` and `/stats`.
#[derive(Default)]
pub struct Counters {
    pub hit: AtomicU64,
    pub miss: AtomicU64,
    pub bypass: AtomicU64,
    pub error: AtomicU64,
    pub stored: AtomicU64,
}

/// One in-flight miss that identical requests wait for.
#[derive(Default)]
pub struct Flight {
    done: tokio::sync::Notify,
    finished: AtomicBool,
}

impl Flight {
    /// Wait (at most `limit`) for the leader to finish.
    pub async fn wait(&self, limit: Duration) {
        let wait = async {
            loop {
                let n = self.done.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.finished.load(Ordering::Acquire) {
                    return;
                }
                n.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// Held by the request that went upstream for a key; followers are released when it drops
/// (after the answer was stored, or when the request failed).
pub struct FlightGuard {
    cache: Arc<Cache>,
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.cache
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        self.flight.finished.store(true, Ordering::Release);
        self.flight.done.notify_waiters();
    }
}

pub enum Join {
    Leader(FlightGuard),
    Follower(Arc<Flight>),
}

struct EntryExpiry;

impl moka::Expiry<Key, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct Cache {
    pub cfg: CacheConfig,
    memory: Option<moka::sync::Cache<Key, Arc<Entry>>>,
    redis: Option<RedisConn>,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    pub counters: Counters,
    requests: Option<prometheus::IntCounterVec>,
    errors: Option<prometheus::IntCounter>,
}

impl Cache {
    pub fn new(
        cfg: &CacheConfig,
        redis_url: Option<&str>,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Result<Cache, String> {
        let (memory, redis) = match cfg.backend {
            Backend::Memory => {
                // Each entry weighs at least max_bytes / max_entries, so both bounds hold.
                let floor = (cfg.max_bytes / cfg.max_entries).max(1);
                let c = moka::sync::Cache::builder()
                    .max_capacity(cfg.max_bytes)
                    .weigher(move |_k: &Key, e: &Arc<Entry>| {
                        (e.bytes() as u64).max(floor).min(u32::MAX as u64) as u32
                    })
                    .expire_after(EntryExpiry)
                    .build();
                (Some(c), None)
            }
            Backend::Redis => {
                let url = redis_url.ok_or("cache.backend redis needs state.redis")?;
                (None, Some(RedisConn::new(url)?))
            }
        };
        Ok(Cache {
            cfg: cfg.clone(),
            memory,
            redis,
            flights: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            requests: metrics.map(|m| m.cache_requests.clone()),
            errors: metrics.map(|m| m.state_errors.with_label_values(&["redis"])),
        })
    }

    /// Whether this cache serves the given settings (then a reload keeps it and its entries).
    pub fn matches(&self, cfg: &CacheConfig, redis_url: Option<&str>) -> bool {
        self.cfg == *cfg
            && match (&self.redis, redis_url) {
                (None, _) => true,
                (Some(r), Some(u)) => r.url == u,
                (Some(_), None) => false,
            }
    }

    /// Count one lookup result.
    pub fn count(&self, result: &'static str) {
        let c = match result {
            "hit" => &self.counters.hit,
            "miss" => &self.counters.miss,
            "bypass" => &self.counters.bypass,
            _ => &self.counters.error,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.requests {
            m.with_label_values(&[result]).inc();
        }
    }

    fn redis_failed(&self, what: &str, e: &redis::RedisError) {
        self.count("error");
        if let Some(c) = &self.errors {
            c.inc();
        }
        log::warn!("cache: redis {what} failed ({e}); the request proceeds uncached");
    }

    /// The cache plan for a request to `model`, or `None` when it is not cached.
    pub fn plan(
        &self,
        model_name: &str,
        model: &ModelCache,
        endpoint: crate::route::Endpoint,
        body: &crate::body::JsonBody,
        controls: Controls,
        caller: Option<&str>,
    ) -> Option<Plan> {
        if !model.enabled || controls.off {
            return None;
        }
        if model.only_deterministic && !key::deterministic(endpoint, body) {
            return None;
        }
        let scope = match self.cfg.scope {
            Scope::Global => None,
            // Without a key, callers share the anonymous scope.
            Scope::Key => Some(caller.unwrap_or("-")),
        };
        let key = key::key(endpoint, model_name, body, scope)?;
        Some(Plan {
            key,
            read: !controls.no_cache,
            store: !controls.no_store,
            ttl: model.ttl,
        })
    }

    pub async fn get(&self, key: &Key, ttl: Duration) -> Option<Arc<Entry>> {
        if let Some(m) = &self.memory {
            return m.get(key);
        }
        let r = self.redis.as_ref()?;
        let res = async {
            let mut conn = r.get().await?;
            let v: Option<Vec<u8>> =
                timed(redis::cmd("GET").arg(redis_key(key)).query_async(&mut conn)).await?;
            Ok::<_, redis::RedisError>(v)
        }
        .await;
        match res {
            Ok(v) => v.and_then(|b| Entry::decode(&b, ttl)).map(Arc::new),
            Err(e) => {
                self.redis_failed("GET", &e);
                None
            }
        }
    }

    pub async fn put(&self, key: Key, entry: Entry) {
        if entry.bytes() > self.cfg.max_entry_bytes {
            return;
        }
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.memory {
            m.insert(key, Arc::new(entry));
            return;
        }
        let Some(r) = &self.redis else {
            return;
        };
        let res = async {
            let mut conn = r.get().await?;
            let _: () = timed(
                redis::cmd("SET")
                    .arg(redis_key(&key))
                    .arg(entry.encode())
                    .arg("PX")
                    .arg(entry.ttl.as_millis().max(1) as u64)
                    .query_async(&mut conn),
            )
            .await?;
            Ok::<_, redis::RedisError>(())
        }
        .await;
        if let Err(e) = res {
            self.redis_failed("SET", &e);
        }
    }

    /// Become the leader for `key`, or a follower of the request already fetching it.
    pub fn join(self: &Arc<Self>, key: Key) -> Join {
        let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = f.get(&key) {
            return Join::Follower(flight.clone());
        }
        let flight = Arc::new(Flight::default());
        f.insert(key, flight.clone());
        Join::Leader(FlightGuard {
            cache: self.clone(),
            key,
            flight,
        })
    }

    /// `/stats` cache section.
    pub fn stats(&self) -> serde_json::Value {
        let (entries, bytes) = match &self.memory {
            Some(m) => {
                m.run_pending_tasks();
                (Some(m.entry_count()), Some(m.weighted_size()))
            }
            None => (None, None),
        };
        let c = &self.counters;
        serde_json::json!({
            "backend": match self.cfg.backend { Backend::Memory => "memory", Backend::Redis => "redis" },
            "hits": c.hit.load(Ordering::Relaxed),
            "misses": c.miss.load(Ordering::Relaxed),
            "bypass": c.bypass.load(Ordering::Relaxed),
            "errors": c.error.load(Ordering::Relaxed),
            "stored": c.stored.load(Ordering::Relaxed),
            "entries": entries,
            "bytes": bytes,
            "max_bytes": self.cfg.max_bytes,
        })
    }
}

fn redis_key(k: &Key) -> String {
    let mut s = String::with_capacity(15 + 64);
    s.push_str("llmproxy:cache:");
    for b in k {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = Entry {
            sse: true,
            chunks: vec![
                Bytes::from_static(b"data: a\n\n"),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
            ttl: Duration::from_secs(5),
        };
        assert_eq!(Entry::decode(&e.encode(), e.ttl), Some(e));
        assert_eq!(
            Entry::decode(b"LPC1\x01\x00\x00\x00\x02\x00", Duration::ZERO),
            None
        );
    }

    #[test]
    fn recorder_gives_up_past_the_limit() {
        let mut r = Recorder::new(10, [0; 32], Duration::from_secs(1));
        r.push(&Bytes::from_static(b"12345"));
        r.push(&Bytes::from_static(b"12345"));
        assert!(r.finish(Duration::from_secs(1)).is_some());
        let mut r = Recorder::new(10, [0; 32], Duration::from_secs(1));
        r.push(&Bytes::from_static(b"123456"));
        r.push(&Bytes::from_static(b"123456"));
        assert!(r.finish(Duration::from_secs(1)).is_none());
    }

    #[test]
    fn memory_is_bounded_by_bytes_and_entries() {
        let cfg = CacheConfig {
            max_entries: 10,
            max_bytes: 10_000,
            ..Default::default()
        };
        let c = Cache::new(&cfg, None, None).unwrap();
        for i in 0..200u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            c.memory.as_ref().unwrap().insert(
                k,
                Arc::new(Entry {
                    sse: false,
                    chunks: vec![Bytes::from(vec![b'x'; 500])],
                    ttl: Duration::from_secs(60),
                }),
            );
        }
        let m = c.memory.as_ref().unwrap();
        m.run_pending_tasks();
        assert!(m.weighted_size() <= 10_000, "{}", m.weighted_size());
        assert!(m.entry_count() <= 10, "{}", m.entry_count());
    }
}
