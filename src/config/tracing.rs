//! `tracing:` — optional OpenTelemetry export (OTLP over HTTP), one span per request; and the
//! Langfuse destination (`tracing.langfuse`, from LiteLLM's `success_callback: ["langfuse"]`).

use super::reader::{Node, Reader};
use super::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// `http://collector:4318/v1/traces`; `None` (and no Langfuse): tracing off.
    pub otlp_endpoint: Option<String>,
    /// Fraction of requests traced, 0.0–1.0.
    pub sample_ratio: f64,
    /// Add the request's messages and a small non-streamed answer's output (each truncated) to
    /// spans. Off by default: prompts are user data.
    pub include_content: bool,
    /// Langfuse as a second OTLP destination: `{host}/api/public/otel/v1/traces` with Basic auth.
    pub langfuse: Option<Langfuse>,
}

/// `tracing.langfuse`: a Langfuse project (cloud or self-hosted).
#[derive(Debug, Clone, PartialEq)]
pub struct Langfuse {
    /// `https://cloud.langfuse.com` or a self-hosted URL.
    pub host: String,
    pub public_key: Secret,
    pub secret_key: Secret,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            include_content: false,
            langfuse: None,
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<TracingConfig> {
    let m = node.map(
        r,
        &[
            "otlp_endpoint",
            "sample_ratio",
            "include_content",
            "langfuse",
        ],
    )?;
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
    let langfuse = m.with(r, "langfuse", read_langfuse);
    Some(TracingConfig {
        otlp_endpoint,
        sample_ratio: sample_ratio.clamp(0.0, 1.0),
        include_content: m
            .with(r, "include_content", |r, n| n.bool(r))
            .unwrap_or(false),
        langfuse,
    })
}

fn read_langfuse(r: &mut Reader, node: Node) -> Option<Langfuse> {
    let m = node.map(r, &["host", "public_key", "secret_key"])?;
    let host = m
        .with(r, "host", |r, n| {
            let s = n.string(r)?;
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                r.error(
                    n.path,
                    "must be an http(s):// URL, e.g. https://cloud.langfuse.com",
                );
                return None;
            }
            Some(s.trim_end_matches('/').to_string())
        })
        .unwrap_or_else(|| "https://cloud.langfuse.com".to_string());
    let key = |r: &mut Reader, name: &str| {
        m.required(r, name, |r, n| {
            let s = n.string(r)?;
            if s.is_empty() {
                r.error(n.path, "must not be empty");
                return None;
            }
            Some(Secret::new(s))
        })
    };
    let public_key = key(r, "public_key");
    let secret_key = key(r, "secret_key");
    Some(Langfuse {
        host,
        public_key: public_key?,
        secret_key: secret_key?,
    })
}
