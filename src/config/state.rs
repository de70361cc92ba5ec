//! `state:` — where shared state lives: rate budgets (and later the cache) in Redis when several
//! instances run behind a load balancer; in process otherwise.

use super::reader::{Node, Reader};
use super::secret::Secret;

/// What admission does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    /// Keep admitting on this instance's own budgets (each instance then enforces the full
    /// limits alone: N instances may send up to N times the limit until Redis is back).
    Open,
    /// Admit nothing that needs a shared budget: such requests get 503 until Redis is back.
    Closed,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `redis://host:port/db`; `None`: in-process state.
    pub redis: Option<Secret>,
    pub redis_failure: RedisFailure,
    /// Keys and spend: `sqlite://PATH` or `postgres://...` (used when `server.master_key` is set).
    pub database: Secret,
    /// How often each instance reloads keys from the database: a key deleted on one instance is
    /// refused by the others within this.
    pub key_refresh: std::time::Duration,
}

/// The reference's default database.
pub const DEFAULT_DATABASE: &str = "sqlite://./data/llmproxy.db";

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            redis: None,
            redis_failure: RedisFailure::Open,
            database: Secret::new(DEFAULT_DATABASE),
            key_refresh: std::time::Duration::from_secs(5),
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<StateConfig> {
    let m = node.map(r, &["redis", "redis_failure", "database", "key_refresh"])?;
    let redis = m.with(r, "redis", |r, n| {
        let s = n.string(r)?;
        if s.is_empty() {
            return None;
        }
        if !(s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("unix://")) {
            r.error(
                n.path,
                "must be a redis://host:port/db URL (or rediss://, unix://), or empty",
            );
            return None;
        }
        Some(Secret::new(s))
    });
    let redis_failure = m
        .with(r, "redis_failure", |r, n| {
            n.choice(
                r,
                &[
                    ("open", RedisFailure::Open),
                    ("closed", RedisFailure::Closed),
                ],
            )
        })
        .unwrap_or(RedisFailure::Open);
    let database = m
        .with(r, "database", |r, n| {
            let s = n.string(r)?;
            if s.is_empty() {
                return Some(DEFAULT_DATABASE.to_string());
            }
            if !(s.starts_with("sqlite://")
                || s.starts_with("postgres://")
                || s.starts_with("postgresql://"))
            {
                r.error(
                    n.path,
                    "must be sqlite://PATH or postgres://user:pass@host/db",
                );
                return None;
            }
            Some(s)
        })
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    let key_refresh = m
        .with(r, "key_refresh", |r, n| n.duration(r))
        .unwrap_or(std::time::Duration::from_secs(5));
    if key_refresh < std::time::Duration::from_millis(100) {
        r.error(
            &format!("{}.key_refresh", m.path()),
            "must be at least 100ms",
        );
    }
    Some(StateConfig {
        redis,
        redis_failure,
        database: Secret::new(database),
        key_refresh,
    })
}
