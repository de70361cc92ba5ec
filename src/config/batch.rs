//! `models[].batch`: coalescing a model's requests into the provider's Batch API.
//!
//! The runtime that uses it is [`crate::batch`]; this file only reads and validates the section.

use super::reader::{Node, Reader};
use super::{Model, Provider, Upstream};
use std::time::Duration;

/// Which requests of a batch-enabled model are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only requests with the header `x-llmproxy-batch: 1`.
    OptIn,
    /// Every non-streaming chat completion and embedding request of the model.
    Always,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::OptIn => "opt_in",
            Mode::Always => "always",
        }
    }
}

/// `models[].batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBatch {
    pub enabled: bool,
    pub mode: Mode,
    /// Requests per batch job: a queue that reaches it is submitted at once.
    pub max_size: usize,
    /// How long the first request of a queue waits for others before the job is submitted.
    pub max_wait: Duration,
    /// How often a submitted batch's status is asked for.
    pub poll_interval: Duration,
    /// The Batch API's `completion_window`, sent as written (OpenAI accepts `24h`).
    pub completion_window: String,
    /// A batch not finished this long after it was created is cancelled: its finished lines are
    /// delivered, the other requests go through the synchronous API.
    pub grace: Duration,
    /// `(upstream name, deployment)`: on that upstream, batch lines name this deployment instead
    /// of the deployment's own `model` (Azure serves batches only on Global Batch deployments, and
    /// synchronous requests, fallbacks included, only on the others).
    pub deployments: Vec<(String, String)>,
}

impl ModelBatch {
    /// The deployment batch lines name on `upstream`, for a deployment whose model is `model`.
    pub fn deployment_on<'a>(&'a self, upstream: &str, model: &'a str) -> &'a str {
        self.deployments
            .iter()
            .find(|(u, _)| u == upstream)
            .map_or(model, |(_, d)| d.as_str())
    }
}

/// OpenAI's limit of requests in one batch input file.
pub const MAX_BATCH_SIZE: u64 = 50_000;

impl Default for ModelBatch {
    fn default() -> Self {
        ModelBatch {
            enabled: false,
            mode: Mode::OptIn,
            max_size: 1000,
            max_wait: Duration::from_secs(30),
            poll_interval: Duration::from_secs(10),
            completion_window: "24h".to_string(),
            grace: Duration::from_secs(30 * 60),
            deployments: Vec::new(),
        }
    }
}

const KEYS: &[&str] = &[
    "enabled",
    "mode",
    "max_size",
    "max_wait",
    "poll_interval",
    "completion_window",
    "grace",
    "deployments",
];

pub fn read_model(r: &mut Reader, node: Node) -> Option<ModelBatch> {
    let m = node.map(r, KEYS)?;
    let d = ModelBatch::default();
    let path = m.path().to_string();
    // A `batch:` section means batching is wanted unless it says otherwise (as `cache:` does).
    let enabled = m.with(r, "enabled", |r, n| n.bool(r)).unwrap_or(true);
    let mode = m
        .with(r, "mode", |r, n| {
            n.choice(r, &[("opt_in", Mode::OptIn), ("always", Mode::Always)])
        })
        .unwrap_or(d.mode);
    let max_size = m
        .with(r, "max_size", |r, n| n.u64(r))
        .unwrap_or(d.max_size as u64);
    if !(1..=MAX_BATCH_SIZE).contains(&max_size) {
        r.error(
            &format!("{path}.max_size"),
            format!("must be between 1 and {MAX_BATCH_SIZE} (the Batch API's limit per file)"),
        );
    }
    let positive = |r: &mut Reader, key: &str, default: Duration, min: Duration| -> Duration {
        let v = m.with(r, key, |r, n| n.duration(r)).unwrap_or(default);
        if v < min {
            r.error(
                &format!("{path}.{key}"),
                format!("must be at least {}ms", min.as_millis()),
            );
            return default;
        }
        v
    };
    let max_wait = positive(r, "max_wait", d.max_wait, Duration::from_millis(1));
    let poll_interval = positive(
        r,
        "poll_interval",
        d.poll_interval,
        Duration::from_millis(10),
    );
    let grace = positive(r, "grace", d.grace, Duration::from_millis(1));
    let completion_window = m
        .with(r, "completion_window", |r, n| {
            let s = n.string(r)?;
            if super::reader::parse_duration(&s).is_none_or(|w| w.is_zero()) {
                r.error(
                    n.path,
                    "must be a duration such as `24h` (what the provider accepts)",
                );
                return None;
            }
            Some(s)
        })
        .unwrap_or(d.completion_window);
    let deployments = m
        .with(r, "deployments", |r, n| {
            let Some(map) = n.value.as_mapping() else {
                r.error(
                    n.path,
                    "expected a mapping of upstream name to the deployment batch lines use there",
                );
                return None;
            };
            let mut out = Vec::new();
            for (k, v) in map {
                let Some(upstream) = k.as_str() else {
                    r.error(n.path, "keys must be upstream names");
                    continue;
                };
                let p = super::reader::join(n.path, upstream);
                if let Some(d) = super::reader::Node::new(v, &p).string(r) {
                    if d.is_empty() {
                        r.error(&p, "must not be empty");
                    } else {
                        out.push((upstream.to_string(), d));
                    }
                }
            }
            Some(out)
        })
        .unwrap_or_default();
    Some(ModelBatch {
        enabled,
        mode,
        max_size: max_size.clamp(1, MAX_BATCH_SIZE) as usize,
        max_wait,
        poll_interval,
        completion_window,
        grace,
        deployments,
    })
}

/// Whether the gateway can send Batch API jobs to this provider: OpenAI's Files and Batches
/// endpoints below the upstream's URL (`openai`, and `openai_compatible` servers that implement
/// them), and Azure OpenAI's (`/openai/files`, `/openai/batches` with its `api-version`, or its v1
/// surface; see [`crate::batch::api::Surface`]). Anthropic's Message Batches API is another
/// format: such deployments are served synchronously.
pub fn supports(provider: Provider) -> bool {
    matches!(
        provider,
        Provider::OpenAi | Provider::OpenAiCompatible | Provider::Azure
    )
}

/// A batch-enabled model needs at least one deployment the gateway can batch on; its other
/// deployments keep serving synchronous traffic (and fallbacks) only. `batch.deployments` names
/// upstreams of the model's deployments.
pub fn check(r: &mut Reader, models: &[Model], upstreams: &[Upstream]) {
    for (i, m) in models.iter().enumerate() {
        for (up, _) in &m.batch.deployments {
            if !m.deployments.iter().any(|d| &d.upstream == up) {
                r.error(
                    &format!("models[{i}].batch.deployments.{up}"),
                    "not the upstream of one of this model's deployments",
                );
            }
        }
        if !m.batch.enabled {
            continue;
        }
        let batchable = m.deployments.iter().any(|d| {
            upstreams
                .get(d.upstream_id.index())
                .is_some_and(|u| supports(u.provider))
        });
        if !batchable
            && m.deployments
                .iter()
                .all(|d| d.upstream_id.index() < upstreams.len())
        {
            r.error(
                &format!("models[{i}].batch"),
                "no deployment of this model is on a provider with the Batch API the gateway \
                 speaks (`openai`, `openai_compatible` or `azure`)",
            );
        }
    }
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

    fn with_models(upstreams: &str, models: &str) -> String {
        format!(
            "server:\n  listeners: [{{name: main, listen: \"127.0.0.1:4000\"}}]\nupstreams:\n{upstreams}models:\n{models}"
        )
    }

    const OPENAI: &str = "  - {name: a, provider: openai, url: \"http://127.0.0.1:1/v1\"}\n";

    #[test]
    fn defaults_and_values() {
        let cfg = parse(
            &with_models(
                OPENAI,
                "  - {name: m, deployments: [{upstream: a, model: x}], batch: {mode: always, max_size: 200, max_wait: 5s, poll_interval: 1s, grace: 10m}}\n  - {name: n, deployments: [{upstream: a, model: x}]}\n  - {name: o, deployments: [{upstream: a, model: x}], batch: {}}\n",
            ),
            &NoEnv,
        )
        .unwrap();
        let b = &cfg.models[0].batch;
        assert!(b.enabled);
        assert_eq!(b.mode, super::Mode::Always);
        assert_eq!(b.max_size, 200);
        assert_eq!(b.max_wait, std::time::Duration::from_secs(5));
        assert_eq!(b.grace, std::time::Duration::from_secs(600));
        assert_eq!(b.completion_window, "24h");
        assert!(!cfg.models[1].batch.enabled);
        assert_eq!(
            cfg.models[2].batch,
            super::ModelBatch {
                enabled: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn errors_name_their_keys() {
        let anthropic =
            "  - {name: an, provider: anthropic, url: \"https://api.anthropic.com/v1\"}\n";
        let errs = parse(
            &with_models(
                &format!("{OPENAI}{anthropic}"),
                "  - {name: m, deployments: [{upstream: a, model: x}], batch: {mode: sometimes, max_size: 0, poll_interval: 0s, completion_window: soon, grce: 1m, deployments: {a: \"\", zz: y}}}\n  - {name: z, deployments: [{upstream: an, model: x}], batch: {enabled: true}}\n  - {name: y, deployments: [{upstream: an, model: x}], batch: {enabled: false, deployments: [x]}}\n",
            ),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "models[0].batch.mode: `sometimes` is not one of",
            "models[0].batch.max_size: must be between 1 and 50000",
            "models[0].batch.poll_interval: must be at least 10ms",
            "models[0].batch.completion_window: must be a duration",
            "models[0].batch.grce: unknown key (did you mean `grace`?)",
            "models[0].batch.deployments.a: must not be empty",
            "models[0].batch.deployments.zz: not the upstream of one of this model's deployments",
            "models[1].batch: no deployment of this model is on a provider with the Batch API",
            "models[2].batch.deployments: expected a mapping",
        ] {
            assert!(errs.contains(needle), "missing `{needle}` in:\n{errs}");
        }
    }

    #[test]
    fn azure_models_batch_on_their_batch_deployment() {
        let azure = "  - {name: az, provider: azure, api_version: \"2024-10-21\", url: \"https://x.openai.azure.com\"}\n";
        let cfg = parse(
            &with_models(
                &format!("{OPENAI}{azure}"),
                "  - {name: m, deployments: [{upstream: az, model: gpt4o-std}, {upstream: a, model: gpt-4o}], batch: {deployments: {az: gpt4o-batch}}}\n",
            ),
            &NoEnv,
        )
        .unwrap();
        let b = &cfg.models[0].batch;
        assert!(b.enabled);
        assert_eq!(b.deployment_on("az", "gpt4o-std"), "gpt4o-batch");
        assert_eq!(b.deployment_on("a", "gpt-4o"), "gpt-4o");
    }
}
