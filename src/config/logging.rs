//! `logging:` — log level and access log format.

use super::reader::{Node, Reader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: log::LevelFilter,
    pub access_log: AccessLog,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: log::LevelFilter::Info,
            access_log: AccessLog::Json,
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<LoggingConfig> {
    use log::LevelFilter as L;
    let m = node.map(r, &["level", "access_log"])?;
    let d = LoggingConfig::default();
    let level = m
        .with(r, "level", |r, n| {
            n.choice(
                r,
                &[
                    ("off", L::Off),
                    ("error", L::Error),
                    ("warn", L::Warn),
                    ("info", L::Info),
                    ("debug", L::Debug),
                    ("trace", L::Trace),
                ],
            )
        })
        .unwrap_or(d.level);
    let access_log = m
        .with(r, "access_log", |r, n| {
            n.choice(
                r,
                &[
                    ("off", AccessLog::Off),
                    ("json", AccessLog::Json),
                    ("text", AccessLog::Text),
                ],
            )
        })
        .unwrap_or(d.access_log);
    Some(LoggingConfig { level, access_log })
}
