//! Optional OpenTelemetry export: one span per client request, sent as OTLP/HTTP JSON by
//! the SDK's batch processor on its own thread (never on a Pingora worker), to an OTLP collector
//! (`tracing.otlp_endpoint`) and/or Langfuse (`tracing.langfuse`: its OTLP endpoint with Basic
//! auth). A span follows the OpenTelemetry GenAI semantic conventions (`gen_ai.operation.name`,
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`, token usage, finish
//! reasons, time to first token) and carries the gateway's own facts (request id, listener,
//! deployment, status, cache result, queue wait) — no message content unless
//! `tracing.include_content` is set. A collector that fails costs a count
//! (`llmproxy_trace_export_failures_total{destination}`) and a warning at most once a minute.

use crate::config::tracing::TracingConfig;
use crate::config::upstreams::Provider;
use crate::route::Endpoint;
use base64::Engine;
use opentelemetry::trace::{Span, SpanKind, Status, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often finished spans are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);
/// Content added with `include_content` is cut here (bytes, at a character boundary).
pub const CONTENT_LIMIT: usize = 4096;
/// At most one export-failure warning per destination this often.
const WARN_EVERY_SECS: u64 = 60;

/// `llmproxy_trace_export_failures_total{destination}`: span batches a collector did not take
/// (registered in [`crate::metrics::Metrics`]).
pub static EXPORT_FAILURES: LazyLock<Option<prometheus::IntCounterVec>> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "llmproxy_trace_export_failures_total",
            "Span batches an OpenTelemetry destination (otlp, langfuse) failed to take",
        ),
        &["destination"],
    )
    .ok()
});

pub struct Tracing {
    pub cfg: TracingConfig,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// What one finished request reports.
pub struct RequestSpan<'a> {
    pub name: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub error: Option<&'static str>,
}

/// The Langfuse OTLP/HTTP traces endpoint of a Langfuse host.
pub fn langfuse_endpoint(host: &str) -> String {
    format!("{}/api/public/otel/v1/traces", host.trim_end_matches('/'))
}

/// `Basic base64(public_key:secret_key)`.
pub fn langfuse_authorization(public_key: &str, secret_key: &str) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{public_key}:{secret_key}"));
    format!("Basic {token}")
}

impl Tracing {
    /// `None` when tracing is off (neither an OTLP endpoint nor Langfuse).
    pub fn new(cfg: &TracingConfig) -> Result<Option<Tracing>, String> {
        let mut destinations = Vec::new();
        if let Some(endpoint) = &cfg.otlp_endpoint {
            destinations.push(("otlp", endpoint.clone(), HashMap::new()));
        }
        if let Some(lf) = &cfg.langfuse {
            let headers = HashMap::from([
                (
                    "Authorization".to_string(),
                    langfuse_authorization(lf.public_key.expose(), lf.secret_key.expose()),
                ),
                // Langfuse's real-time ingestion of OTLP spans.
                ("x-langfuse-ingestion-version".to_string(), "4".to_string()),
            ]);
            destinations.push(("langfuse", langfuse_endpoint(&lf.host), headers));
        }
        if destinations.is_empty() {
            return Ok(None);
        }
        let mut builder = SdkTracerProvider::builder();
        for (name, endpoint, headers) in destinations {
            let what = if name == "otlp" {
                "tracing.otlp_endpoint"
            } else {
                "tracing.langfuse"
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(endpoint)
                .with_headers(headers)
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| format!("{what}: {e}"))?;
            let processor = BatchSpanProcessor::builder(Counted::new(name, exporter))
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(EXPORT_EVERY)
                        .with_max_queue_size(8192)
                        .build(),
                )
                .build();
            builder = builder.with_span_processor(processor);
        }
        let provider = builder
            .with_sampler(Sampler::TraceIdRatioBased(cfg.sample_ratio))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("llmproxy")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("llmproxy");
        Ok(Some(Tracing {
            cfg: cfg.clone(),
            provider,
            tracer,
        }))
    }

    pub fn record(&self, s: RequestSpan<'_>) {
        let mut span = self
            .tracer
            .span_builder(s.name.to_string())
            .with_kind(SpanKind::Server)
            .with_start_time(s.start)
            .with_attributes(s.attributes)
            .start(&self.tracer);
        if let Some(e) = s.error {
            span.set_status(Status::error(e));
        }
        span.end_with_timestamp(s.end);
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        // Send what is pending (an old config's tracer after a reload, or at exit); shutting down
        // waits for the exporter, so never on the thread that dropped the last reference.
        let provider = self.provider.clone();
        std::thread::spawn(move || {
            let _ = provider.shutdown();
        });
    }
}

/// An exporter whose failures are counted and warned about at most once a minute (the batch
/// processor's thread calls it; a dead collector never slows a request).
#[derive(Debug)]
struct Counted<E> {
    destination: &'static str,
    inner: E,
    /// Failures since the last warning, and when that was (seconds since the epoch).
    failed: AtomicU64,
    warned_at: AtomicU64,
}

impl<E> Counted<E> {
    fn new(destination: &'static str, inner: E) -> Self {
        Counted {
            destination,
            inner,
            failed: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
        }
    }

    fn failure(&self, e: &dyn std::fmt::Display) {
        if let Some(c) = EXPORT_FAILURES.as_ref() {
            c.with_label_values(&[self.destination]).inc();
        }
        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.warned_at.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY_SECS)
            && self
                .warned_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.failed.store(0, Ordering::Relaxed);
            log::warn!(
                "tracing: {} spans not exported ({failed} failed batch(es) since the last warning): {e}",
                self.destination
            );
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let r = self.inner.export(batch).await;
        if let Err(e) = &r {
            self.failure(e);
        }
        r
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource)
    }
}

/// `gen_ai.operation.name` of an endpoint (the semantic conventions' well-known values where one
/// fits).
pub fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::CountTokens => "count_tokens",
    }
}

/// `gen_ai.provider.name` of an upstream: the registry's well-known values (`openai`,
/// `azure.ai.openai`, `anthropic`, `aws.bedrock`, `gcp.gemini`, `gcp.vertex_ai`, ...); an OpenAI-compatible
/// server by its host when it is a known service, else `openai_compatible`.
pub fn provider_name(provider: Provider, host: &str) -> &'static str {
    match provider {
        Provider::OpenAi => "openai",
        Provider::Azure => "azure.ai.openai",
        Provider::Anthropic => "anthropic",
        Provider::Bedrock => "aws.bedrock",
        Provider::Gemini => "gcp.gemini",
        Provider::Vertex => "gcp.vertex_ai",
        Provider::TextGeneration => "text_generation",
        Provider::OpenAiCompatible => {
            let h = host.to_ascii_lowercase();
            let known = [
                ("api.openai.com", "openai"),
                ("groq.com", "groq"),
                ("mistral.ai", "mistral_ai"),
                ("deepseek.com", "deepseek"),
                ("x.ai", "x_ai"),
                ("perplexity.ai", "perplexity"),
                ("cohere.com", "cohere"),
                ("cohere.ai", "cohere"),
                ("amazonaws.com", "aws.bedrock"),
            ];
            known
                .iter()
                .find(|(suffix, _)| h == *suffix || h.ends_with(&format!(".{suffix}")))
                .map_or("openai_compatible", |(_, name)| name)
        }
    }
}

/// `s` cut to [`CONTENT_LIMIT`] bytes at a character boundary.
fn bounded(mut s: String) -> String {
    if s.len() > CONTENT_LIMIT {
        let mut cut = CONTENT_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The request's content as span attributes (only with `include_content`): its messages as
/// `gen_ai.input.messages` (chat `messages`, Responses and embeddings `input`, completions
/// `prompt`), an Anthropic `system` as `gen_ai.system_instructions`; a body without either as
/// `llmproxy.request.body`. Each a JSON string cut to [`CONTENT_LIMIT`].
pub fn input_content(body: &[u8]) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let cut = &body[..body.len().min(CONTENT_LIMIT)];
            out.push(KeyValue::new(
                "llmproxy.request.body",
                String::from_utf8_lossy(cut).into_owned(),
            ));
            return out;
        }
    };
    let messages = ["messages", "input", "prompt"]
        .iter()
        .find_map(|k| v.get(*k).filter(|m| !m.is_null()));
    if let Some(m) = messages {
        out.push(KeyValue::new(
            "gen_ai.input.messages",
            bounded(m.to_string()),
        ));
    }
    if let Some(s) = v.get("system").filter(|s| !s.is_null()) {
        out.push(KeyValue::new(
            "gen_ai.system_instructions",
            bounded(s.to_string()),
        ));
    }
    if out.is_empty() {
        out.push(KeyValue::new(
            "llmproxy.request.body",
            bounded(v.to_string()),
        ));
    }
    out
}

/// What the end of an answer tells about it, read from the bytes the gateway kept of the answer
/// sent to the client (a small non-streamed answer whole, else a stream's last events).
#[derive(Debug, Default, PartialEq)]
pub struct AnswerFacts {
    pub model: Option<String>,
    pub finish_reasons: Vec<String>,
    /// A whole non-streamed answer's output (`choices[].message`, Anthropic's `content`, the
    /// Responses API's `output`), as JSON.
    pub output: Option<String>,
}

impl AnswerFacts {
    /// `whole`: the complete answer, when it was small enough to keep; `tail`: its last bytes.
    pub fn read(whole: Option<&[u8]>, tail: &[u8]) -> AnswerFacts {
        let mut f = AnswerFacts::default();
        if let Some(v) = whole.and_then(|w| serde_json::from_slice::<Value>(w).ok()) {
            f.absorb(&v);
            let output = match (v.get("choices"), v.get("content"), v.get("output")) {
                (Some(Value::Array(choices)), _, _) => {
                    let m: Vec<&Value> = choices
                        .iter()
                        .filter_map(|c| c.get("message").or_else(|| c.get("text")))
                        .collect();
                    (!m.is_empty()).then(|| serde_json::to_string(&m).unwrap_or_default())
                }
                (_, Some(c @ Value::Array(_)), _) => Some(
                    serde_json::json!([{"role": v.get("role").cloned()
                        .unwrap_or_else(|| "assistant".into()), "content": c}])
                    .to_string(),
                ),
                (_, _, Some(o @ Value::Array(_))) => Some(o.to_string()),
                _ => None,
            };
            f.output = output.map(bounded);
            return f;
        }
        // A stream: its events' `data:` lines (the first may be cut; it does not parse then).
        for line in tail.split(|b| *b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii()) {
                f.absorb(&v);
            }
        }
        f
    }

    fn absorb(&mut self, v: &Value) {
        let model = v
            .get("model")
            .or_else(|| v.pointer("/message/model"))
            .or_else(|| v.pointer("/response/model"))
            .and_then(Value::as_str);
        if let Some(m) = model {
            self.model = Some(m.to_string());
        }
        let mut reason = |r: Option<&Value>| {
            if let Some(r) = r.and_then(Value::as_str) {
                if !self.finish_reasons.iter().any(|x| x == r) {
                    self.finish_reasons.push(r.to_string());
                }
            }
        };
        if let Some(Value::Array(choices)) = v.get("choices") {
            for c in choices {
                reason(c.get("finish_reason"));
            }
        }
        reason(v.get("stop_reason"));
        reason(v.pointer("/delta/stop_reason"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn langfuse_destination() {
        assert_eq!(
            langfuse_endpoint("https://cloud.langfuse.com/"),
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
        assert_eq!(
            langfuse_authorization("pk-lf-1", "sk-lf-2"),
            "Basic cGstbGYtMTpzay1sZi0y"
        );
    }

    #[test]
    fn provider_names() {
        assert_eq!(provider_name(Provider::Azure, "x"), "azure.ai.openai");
        assert_eq!(
            provider_name(Provider::OpenAiCompatible, "api.groq.com"),
            "groq"
        );
        assert_eq!(
            provider_name(Provider::OpenAiCompatible, "127.0.0.1"),
            "openai_compatible"
        );
    }

    #[test]
    fn facts_of_whole_and_streamed_answers() {
        let whole = br#"{"model":"gpt-4o-2024","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        let f = AnswerFacts::read(Some(whole), whole);
        assert_eq!(f.model.as_deref(), Some("gpt-4o-2024"));
        assert_eq!(f.finish_reasons, ["stop"]);
        assert!(f.output.unwrap().contains("\"hi\""));
        let stream = b"ata: {\"cut\ndata: {\"model\":\"m1\",\"choices\":[{\"delta\":{},\"finish_reason\":null}]}\n\ndata: {\"model\":\"m1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        let f = AnswerFacts::read(None, stream);
        assert_eq!(f.model.as_deref(), Some("m1"));
        assert_eq!(f.finish_reasons, ["length"]);
        assert_eq!(f.output, None);
        let anthropic = br#"{"model":"claude","role":"assistant","content":[{"type":"text","text":"yo"}],"stop_reason":"end_turn"}"#;
        let f = AnswerFacts::read(Some(anthropic), anthropic);
        assert_eq!(f.finish_reasons, ["end_turn"]);
        assert!(f.output.unwrap().contains("yo"));
    }

    #[test]
    fn input_content_bounded() {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "é".repeat(5000)}]});
        let a = input_content(body.to_string().as_bytes());
        assert_eq!(a[0].key.as_str(), "gen_ai.input.messages");
        assert!(a[0].value.as_str().len() <= CONTENT_LIMIT);
    }
}
