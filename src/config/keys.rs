//! `keys:` — governance settings for virtual keys, teams and end users (used when
//! `server.master_key` is set, with `state.database`).

use super::reader::{Node, Reader};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct KeysConfig {
    /// Refuse requests whose `user` is not an end user created with `/customer/new` (the master key
    /// is exempt). Off: unknown users pass (their spend is still logged). Reloadable.
    pub require_known_user: bool,
    /// Write one spend-log row per request.
    pub spend_logs: bool,
    /// Spend-log rows older than this are deleted (hourly); `None` (`0s`) keeps them.
    pub spend_log_retention: Option<Duration>,
    /// Spend-log rows waiting to be written at most; beyond, rows are dropped and counted.
    pub spend_log_queue: usize,
    /// How often pending spend (budgets) is written to the database.
    pub spend_flush: Duration,
    /// `/metrics` exports spend by team for this many teams (the top spenders), the rest as `other`.
    pub metrics_top_teams: usize,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            require_known_user: false,
            spend_logs: true,
            spend_log_retention: Some(crate::keys::spendlog::DEFAULT_RETENTION),
            spend_log_queue: crate::keys::spendlog::DEFAULT_QUEUE,
            spend_flush: Duration::from_secs(1),
            metrics_top_teams: 20,
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<KeysConfig> {
    let m = node.map(
        r,
        &[
            "require_known_user",
            "spend_logs",
            "spend_log_retention",
            "spend_log_queue",
            "spend_flush",
            "metrics_top_teams",
        ],
    )?;
    let d = KeysConfig::default();
    let require_known_user = m
        .with(r, "require_known_user", |r, n| n.bool(r))
        .unwrap_or(d.require_known_user);
    let spend_logs = m
        .with(r, "spend_logs", |r, n| n.bool(r))
        .unwrap_or(d.spend_logs);
    let spend_log_retention = m
        .with(r, "spend_log_retention", |r, n| n.duration(r))
        .map(|t| (!t.is_zero()).then_some(t))
        .unwrap_or(d.spend_log_retention);
    let spend_log_queue = m
        .with(r, "spend_log_queue", |r, n| n.u64(r))
        .map(|q| q as usize)
        .unwrap_or(d.spend_log_queue);
    if spend_log_queue == 0 {
        r.error(&format!("{}.spend_log_queue", m.path()), "must be positive");
    }
    let spend_flush = m
        .with(r, "spend_flush", |r, n| n.duration(r))
        .unwrap_or(d.spend_flush);
    if spend_flush < Duration::from_millis(10) {
        r.error(
            &format!("{}.spend_flush", m.path()),
            "must be at least 10ms",
        );
    }
    let metrics_top_teams = m
        .with(r, "metrics_top_teams", |r, n| n.u64(r))
        .map(|v| v as usize)
        .unwrap_or(d.metrics_top_teams);
    if metrics_top_teams > 1000 {
        r.error(
            &format!("{}.metrics_top_teams", m.path()),
            "at most 1000 (each team is a metric series)",
        );
    }
    Some(KeysConfig {
        require_known_user,
        spend_logs,
        spend_log_retention,
        spend_log_queue: spend_log_queue.max(1),
        spend_flush,
        metrics_top_teams,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Env};

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    const BASE: &str = "server:\n  listeners: [{name: main, listen: \"127.0.0.1:4000\"}]\n";

    #[test]
    fn defaults_and_settings() {
        let cfg = parse(BASE, &NoEnv).unwrap();
        assert!(!cfg.keys.require_known_user);
        assert_eq!(
            cfg.keys.spend_log_retention,
            Some(std::time::Duration::from_secs(30 * 86400))
        );
        let cfg = parse(
            &format!("{BASE}keys: {{require_known_user: true, spend_log_retention: 0s, spend_log_queue: 10, spend_flush: 200ms}}\n"),
            &NoEnv,
        )
        .unwrap();
        assert!(cfg.keys.require_known_user);
        assert_eq!(cfg.keys.spend_log_retention, None);
        assert_eq!(cfg.keys.spend_log_queue, 10);
        let errs = parse(
            &format!("{BASE}keys: {{spend_log_queue: 0, require_known_usr: true}}\n"),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("keys.spend_log_queue: must be positive"),
            "{errs}"
        );
        assert!(errs.contains("did you mean `require_known_user`"), "{errs}");
    }
}
