//! `cache:` (top level: where responses are kept) and `models[].cache` (which are kept, how long).

use super::reader::{Node, Reader};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In this process, bounded by `max_entries` and `max_bytes`.
    Memory,
    /// In `state.redis`, shared by every instance.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One entry per request, whoever asks.
    Global,
    /// Entries are per API key: tenants never see each other's answers.
    Key,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub backend: Backend,
    pub max_entries: u64,
    pub max_bytes: u64,
    /// Larger answers are never stored (a stream being recorded is dropped past it).
    pub max_entry_bytes: usize,
    pub scope: Scope,
    /// How long identical concurrent misses wait for the first one's answer.
    pub single_flight_wait: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            backend: Backend::Memory,
            max_entries: 100_000,
            max_bytes: 256 << 20,
            max_entry_bytes: 1 << 20,
            scope: Scope::Global,
            single_flight_wait: Duration::from_secs(30),
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<CacheConfig> {
    let m = node.map(
        r,
        &[
            "backend",
            "max_entries",
            "max_bytes",
            "max_entry_bytes",
            "scope",
            "single_flight_wait",
        ],
    )?;
    let d = CacheConfig::default();
    let backend = m
        .with(r, "backend", |r, n| {
            n.choice(r, &[("memory", Backend::Memory), ("redis", Backend::Redis)])
        })
        .unwrap_or(d.backend);
    let max_entries = m
        .with(r, "max_entries", |r, n| n.u64(r))
        .unwrap_or(d.max_entries);
    if max_entries == 0 {
        r.error(&format!("{}.max_entries", m.path()), "must be positive");
    }
    let max_bytes = m
        .with(r, "max_bytes", |r, n| n.size(r))
        .map(|b| b as u64)
        .unwrap_or(d.max_bytes);
    if max_bytes == 0 {
        r.error(&format!("{}.max_bytes", m.path()), "must be positive");
    }
    let max_entry_bytes = m
        .with(r, "max_entry_bytes", |r, n| n.size(r))
        .unwrap_or(d.max_entry_bytes);
    let scope = m
        .with(r, "scope", |r, n| {
            n.choice(r, &[("global", Scope::Global), ("key", Scope::Key)])
        })
        .unwrap_or(d.scope);
    let single_flight_wait = m
        .with(r, "single_flight_wait", |r, n| n.duration(r))
        .unwrap_or(d.single_flight_wait);
    Some(CacheConfig {
        backend,
        max_entries: max_entries.max(1),
        max_bytes: max_bytes.max(1),
        max_entry_bytes,
        scope,
        single_flight_wait,
    })
}

/// `models[].cache`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCache {
    pub enabled: bool,
    pub ttl: Duration,
    /// Only requests with `temperature: 0` or a `seed` (embeddings always) are cached.
    pub only_deterministic: bool,
}

impl Default for ModelCache {
    fn default() -> Self {
        ModelCache {
            enabled: false,
            ttl: Duration::from_secs(3600),
            only_deterministic: true,
        }
    }
}

pub fn read_model(r: &mut Reader, node: Node) -> Option<ModelCache> {
    let m = node.map(r, &["enabled", "ttl", "only_deterministic"])?;
    let d = ModelCache::default();
    let ttl = m.with(r, "ttl", |r, n| n.duration(r)).unwrap_or(d.ttl);
    if ttl.is_zero() {
        r.error(&format!("{}.ttl", m.path()), "must be positive");
    }
    Some(ModelCache {
        // A `cache:` section means caching is wanted unless it says otherwise.
        enabled: m.with(r, "enabled", |r, n| n.bool(r)).unwrap_or(true),
        ttl,
        only_deterministic: m
            .with(r, "only_deterministic", |r, n| n.bool(r))
            .unwrap_or(d.only_deterministic),
    })
}
