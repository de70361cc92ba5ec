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
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            redis: None,
            redis_failure: RedisFailure::Open,
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<StateConfig> {
    let m = node.map(r, &["redis", "redis_failure", "database"])?;
    m.not_yet(r, &["database"]);
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
    Some(StateConfig {
        redis,
        redis_failure,
    })
}
