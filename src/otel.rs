//! Optional OpenTelemetry export (seed 002): one span per client request, sent as OTLP/HTTP JSON by
//! the SDK's batch processor on its own thread (never on a Pingora worker). A span carries the
//! request id, listener, route, model, deployment, status, tokens, cache result, queue wait, time to
//! first byte and upstream time — no message content unless `tracing.include_content` is set.

use crate::config::tracing::TracingConfig;
use opentelemetry::trace::{Span, SpanKind, Status, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use std::time::{Duration, SystemTime};

/// How often finished spans are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);
/// Bodies added with `include_content` are cut here.
const CONTENT_LIMIT: usize = 4096;

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
    pub content: Option<&'a [u8]>,
}

impl Tracing {
    /// `None` when tracing is off.
    pub fn new(cfg: &TracingConfig) -> Result<Option<Tracing>, String> {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .with_max_queue_size(8192)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
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
        let mut attributes = s.attributes;
        if self.cfg.include_content {
            if let Some(c) = s.content {
                let cut = &c[..c.len().min(CONTENT_LIMIT)];
                attributes.push(KeyValue::new(
                    "llmproxy.request.body",
                    String::from_utf8_lossy(cut).into_owned(),
                ));
            }
        }
        let mut span = self
            .tracer
            .span_builder(s.name.to_string())
            .with_kind(SpanKind::Server)
            .with_start_time(s.start)
            .with_attributes(attributes)
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
