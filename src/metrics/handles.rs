//! Metric handles resolved once per config: a request's counters and histograms are found by index
//! (listener × model endpoint, model, model × deployment) instead of hashing label values under the
//! metric family's lock on every request. Built with the state on every (re)load; a label set not
//! covered here (a management call, a passthrough route, an error) goes through `with_label_values`.

use super::Metrics;
use crate::config::Config;
use crate::route::Endpoint;
use prometheus::{Histogram, IntCounter};

/// `llmproxy_http_requests_total` and `llmproxy_http_request_duration_seconds` of one label set.
pub struct Http {
    pub requests: IntCounter,
    pub duration: Histogram,
}

/// A model's answer metrics.
pub struct ModelHandles {
    pub ttft: Histogram,
    pub prompt_tokens: IntCounter,
    pub completion_tokens: IntCounter,
    /// One per deployment: `llmproxy_upstream_requests_total` and `..._duration_seconds`.
    pub deployments: Vec<Upstream>,
}

/// An upstream exchange's metrics for one model's deployment.
pub struct Upstream {
    pub requests: IntCounter,
    pub duration: Histogram,
    /// The GenAI client metrics per endpoint, made on first use (most deployments serve one or two
    /// of the endpoints).
    genai: [std::sync::OnceLock<GenAi>; Endpoint::ALL.len()],
    provider: &'static str,
    model: String,
}

/// `gen_ai_client_token_usage` (input, output) and `gen_ai_client_operation_duration_seconds` of one
/// model, deployment and endpoint.
pub struct GenAi {
    pub input_tokens: Histogram,
    pub output_tokens: Histogram,
    pub duration: Histogram,
}

impl Upstream {
    pub fn genai(&self, m: &Metrics, endpoint: Endpoint) -> &GenAi {
        self.genai[endpoint.index()].get_or_init(|| {
            let op = crate::otel::operation(endpoint);
            let labels = [op, self.provider, self.model.as_str()];
            let tokens = |kind| {
                m.genai_tokens
                    .with_label_values(&[op, self.provider, self.model.as_str(), kind])
            };
            GenAi {
                input_tokens: tokens("input"),
                output_tokens: tokens("output"),
                duration: m.genai_duration.with_label_values(&labels),
            }
        })
    }
}

#[derive(Default)]
pub struct Handles {
    /// `[listener][endpoint]` for `POST` to a model endpoint.
    endpoints: Vec<Vec<Http>>,
    /// One per `config.models` entry.
    models: Vec<ModelHandles>,
}

impl Handles {
    pub fn new(config: &Config, m: &Metrics) -> Handles {
        let endpoints = config
            .server
            .listeners
            .iter()
            .map(|l| {
                Endpoint::ALL
                    .iter()
                    .map(|e| {
                        let labels = [l.name.as_str(), "POST", e.template()];
                        Http {
                            requests: m.http_requests.with_label_values(&labels),
                            duration: m.http_duration.with_label_values(&labels),
                        }
                    })
                    .collect()
            })
            .collect();
        let models = config
            .models
            .iter()
            .map(|model| {
                let name = model.name.as_str();
                ModelHandles {
                    ttft: m.ttft.with_label_values(&[name]),
                    prompt_tokens: m.tokens.with_label_values(&[name, "prompt"]),
                    completion_tokens: m.tokens.with_label_values(&[name, "completion"]),
                    deployments: model
                        .deployments
                        .iter()
                        .map(|d| {
                            let up = config.upstreams.get(d.upstream_id.index());
                            let upstream = up.map_or("", |u| u.name.as_str());
                            let labels = [name, upstream];
                            Upstream {
                                requests: m.upstream_requests.with_label_values(&labels),
                                duration: m.upstream_duration.with_label_values(&labels),
                                genai: Default::default(),
                                provider: up.map_or("", |u| {
                                    crate::otel::provider_name(u.provider, &u.url.host)
                                }),
                                model: name.to_string(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Handles { endpoints, models }
    }

    /// The HTTP metrics of a `POST` to `endpoint` on `listener`.
    pub fn http(&self, listener: usize, endpoint: Endpoint) -> Option<&Http> {
        self.endpoints.get(listener)?.get(endpoint.index())
    }

    pub fn model(&self, model: usize) -> Option<&ModelHandles> {
        self.models.get(model)
    }

    pub fn upstream(&self, model: usize, deployment: usize) -> Option<&Upstream> {
        self.models.get(model)?.deployments.get(deployment)
    }
}
