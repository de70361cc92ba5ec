//! `tracing:` — optional OpenTelemetry export (OTLP over HTTP), one span per request.

use super::reader::{Node, Reader};

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// `http://collector:4318/v1/traces`; `None`: tracing off.
    pub otlp_endpoint: Option<String>,
    /// Fraction of requests traced, 0.0–1.0.
    pub sample_ratio: f64,
    /// Add the request body (truncated) to spans. Off by default: prompts are user data.
    pub include_content: bool,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            include_content: false,
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<TracingConfig> {
    let m = node.map(r, &["otlp_endpoint", "sample_ratio", "include_content"])?;
    let otlp_endpoint = m.with(r, "otlp_endpoint", |r, n| {
        let s = n.string(r)?;
        if s.is_empty() {
            return None;
        }
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            r.error(
                n.path,
                "must be an http(s):// URL of an OTLP/HTTP traces endpoint, or empty",
            );
            return None;
        }
        Some(s)
    });
    let sample_ratio = m.with(r, "sample_ratio", |r, n| n.f64(r)).unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        r.error(
            &format!("{}.sample_ratio", m.path()),
            "must be between 0.0 and 1.0",
        );
    }
    Some(TracingConfig {
        otlp_endpoint,
        sample_ratio: sample_ratio.clamp(0.0, 1.0),
        include_content: m
            .with(r, "include_content", |r, n| n.bool(r))
            .unwrap_or(false),
    })
}
