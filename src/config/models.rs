//! `models:` — what clients ask for (names and aliases) and the deployments that serve it.

use super::reader::{Node, Reader};
use super::UpstreamId;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastBusy,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::Random => "random",
            Strategy::LeastBusy => "least_busy",
        }
    }
}

/// One deployment of a model: an upstream and the model name that upstream knows it by.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub upstream: String,
    /// The upstream named by `upstream` (resolved when the config is read).
    pub upstream_id: UpstreamId,
    pub model: String,
    pub weight: usize,
    /// Requests per minute this deployment may be sent; `None`: unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute, counted the way the provider counts (prompt + max output at admission).
    pub tpm: Option<u64>,
    /// Body fields added when the client omits them (field, raw JSON), e.g. `temperature`.
    pub params: Vec<(String, String)>,
    /// Request headers added for this deployment when the client did not send them (e.g.
    /// `OpenAI-Organization`, `anthropic-beta`); the upstream's own `headers` operations apply after.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// `models[].queue`: how requests wait for budget.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    /// Waiting requests beyond this get 429 at once.
    pub max_size: usize,
    /// A request that cannot start within this gets 429 with `Retry-After`.
    pub max_wait: Duration,
    pub scheduling: Scheduling,
    /// Output tokens charged at admission when the client sets no maximum.
    pub default_max_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// Strict arrival order.
    Fifo,
    /// `x-llmproxy-priority` 9 first; round robin across keys within a priority.
    Priority,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            max_size: 100,
            max_wait: Duration::from_secs(30),
            scheduling: Scheduling::Fifo,
            default_max_tokens: 1024,
        }
    }
}

/// Which failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    pub connect: bool,
    pub timeout: bool,
    pub rate_limited: bool,
    pub server_error: bool,
}

/// `models[].retry`: attempts in all (the first included), exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub on: RetryOn,
}

/// `models[].cooldown`: `allowed_fails` failures within `window` take a deployment out for `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CooldownPolicy {
    pub allowed_fails: usize,
    pub window: Duration,
    pub duration: Duration,
}

impl Default for CooldownPolicy {
    /// LiteLLM's defaults: 3 fails; a short cooldown so a flapping deployment returns quickly.
    fn default() -> Self {
        CooldownPolicy {
            allowed_fails: 3,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub aliases: Vec<String>,
    pub strategy: Strategy,
    pub deployments: Vec<Deployment>,
    pub retry: RetryPolicy,
    /// `None`: cooldown disabled (`cooldown: {allowed_fails: 0}`).
    pub cooldown: Option<CooldownPolicy>,
    /// Model names tried in order when every deployment failed, as written (names or aliases).
    pub fallbacks: Vec<String>,
    pub context_window_fallbacks: Vec<String>,
    /// The same, resolved when the config is read: indices into `Config::models`.
    pub fallback_models: Vec<usize>,
    pub context_window_fallback_models: Vec<usize>,
    /// Whole-request limit for this model; per-request `request_timeout` may lower it.
    pub timeout: Option<Duration>,
    pub queue: QueuePolicy,
    pub cache: super::cache::ModelCache,
    /// USD per million tokens, for spend; `None`: requests of this model cost nothing.
    pub pricing: Option<Pricing>,
    /// `batch`: coalescing into the provider's Batch API; off unless configured.
    pub batch: super::batch::ModelBatch,
    /// `drop_params`: parameters the provider does not support are dropped instead of refused. Set
    /// per model, else the top-level `drop_params` (resolved when the config is read).
    pub drop_params: bool,
    /// `add_function_to_prompt` (LiteLLM's `--add_function_to_prompt`): for deployments whose provider
    /// has no tool support, the request's `tools` / `functions` are to be described in the system
    /// prompt instead of refused. The setting is read and validated here; the request path applies it.
    pub add_function_to_prompt: bool,
}

/// `models[].pricing`: USD per million tokens, replacing the built-in price table for this model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// The fraction taken off requests served through the Batch API (0.5 = half price, OpenAI's).
    pub batch_discount: f64,
    /// `cached_input_per_mtok`: prompt tokens read from the provider's cache (absent: the input price).
    pub cached_input_per_mtok: Option<f64>,
    /// `cache_write_per_mtok`: prompt tokens written to the provider's cache (absent: the input price).
    pub cache_write_per_mtok: Option<f64>,
    /// The same prices as exact integers, converted from the YAML text at load (no float rounding):
    /// what spend is computed with ([`crate::pricing::cost`]).
    pub price: crate::pricing::Price,
}

/// Keys of the reference that later features implement.
const NOT_YET: &[&str] = &[];

/// A `models[]` entry; `drop_params` is the top-level default for an entry that does not set it.
pub fn read(r: &mut Reader, node: Node, drop_params: bool) -> Option<Model> {
    let mut allowed = vec![
        "name",
        "aliases",
        "strategy",
        "deployments",
        "retry",
        "cooldown",
        "fallbacks",
        "context_window_fallbacks",
        "timeout",
        "queue",
        "cache",
        "pricing",
        "batch",
        "drop_params",
        "add_function_to_prompt",
    ];
    allowed.extend_from_slice(NOT_YET);
    let m = node.map(r, &allowed)?;
    m.not_yet(r, NOT_YET);
    let name = m.required(r, "name", |r, n| n.string(r));
    let aliases = m
        .with(r, "aliases", |r, n| Some(n.list_of_strings(r)))
        .unwrap_or_default();
    let strategy = m
        .with(r, "strategy", |r, n| {
            n.choice(
                r,
                &[
                    ("round_robin", Strategy::RoundRobin),
                    ("weighted_round_robin", Strategy::WeightedRoundRobin),
                    ("random", Strategy::Random),
                    ("least_busy", Strategy::LeastBusy),
                ],
            )
        })
        .unwrap_or(Strategy::WeightedRoundRobin);
    let deployments = m
        .required(r, "deployments", |r, n| {
            Some(n.non_empty_list(r, read_deployment))
        })
        .unwrap_or_default();
    let n_deployments = deployments.len().max(1);
    let retry = m
        .with(r, "retry", read_retry)
        .unwrap_or_else(|| default_retry(n_deployments));
    let cooldown = match m.with(r, "cooldown", read_cooldown) {
        Some(c) if c.allowed_fails == 0 => None,
        Some(c) => Some(c),
        None => Some(CooldownPolicy::default()),
    };
    let fallbacks = m
        .with(r, "fallbacks", |r, n| Some(n.list_of_strings(r)))
        .unwrap_or_default();
    let context_window_fallbacks = m
        .with(r, "context_window_fallbacks", |r, n| {
            Some(n.list_of_strings(r))
        })
        .unwrap_or_default();
    let timeout = m.with(r, "timeout", |r, n| n.duration(r));
    let queue = m.with(r, "queue", read_queue).unwrap_or_default();
    let cache = m
        .with(r, "cache", super::cache::read_model)
        .unwrap_or_default();
    let pricing = m.with(r, "pricing", read_pricing);
    let batch = m
        .with(r, "batch", super::batch::read_model)
        .unwrap_or_default();
    let drop_params = m
        .with(r, "drop_params", |r, n| n.bool(r))
        .unwrap_or(drop_params);
    let add_function_to_prompt = m
        .with(r, "add_function_to_prompt", |r, n| n.bool(r))
        .unwrap_or(false);
    Some(Model {
        name: name?,
        aliases,
        strategy,
        deployments,
        retry,
        cooldown,
        fallbacks,
        context_window_fallbacks,
        fallback_models: Vec::new(),
        context_window_fallback_models: Vec::new(),
        timeout,
        queue,
        cache,
        pricing,
        batch,
        drop_params,
        add_function_to_prompt,
    })
}

fn read_pricing(r: &mut Reader, n: Node) -> Option<Pricing> {
    use crate::pricing::{PerMtok, Ppm, Price};
    let m = n.map(
        r,
        &[
            "input_per_mtok",
            "cached_input_per_mtok",
            "cache_write_per_mtok",
            "output_per_mtok",
            "batch_discount",
        ],
    )?;
    let input = m.required(r, "input_per_mtok", read_decimal);
    let output = m.required(r, "output_per_mtok", read_decimal);
    let cached = m.with(r, "cached_input_per_mtok", read_decimal);
    let write = m.with(r, "cache_write_per_mtok", read_decimal);
    let discount = m.with(r, "batch_discount", read_decimal);
    let (discount_f, discount_ppm) = match discount {
        Some((f, ppm)) if ppm > u64::from(Ppm::ONE.0) => {
            r.error(
                &format!("{}.batch_discount", m.path()),
                "the fraction taken off Batch API requests, between 0 and 1 (0.5 = half price)",
            );
            (f, u64::from(Ppm::ONE.0))
        }
        Some(d) => d,
        None => (0.5, 500_000),
    };
    let batch_discount = Ppm(u32::try_from(discount_ppm).unwrap_or(Ppm::ONE.0));
    let (input, output) = (input?, output?);
    let cached_or_input = |v: Option<(f64, u64)>| PerMtok(v.map_or(input.1, |(_, exact)| exact));
    Some(Pricing {
        input_per_mtok: input.0,
        output_per_mtok: output.0,
        batch_discount: discount_f.min(1.0),
        cached_input_per_mtok: cached.map(|(f, _)| f),
        cache_write_per_mtok: write.map(|(f, _)| f),
        price: Price {
            input: PerMtok(input.1),
            cached_input: cached_or_input(cached),
            cache_write: cached_or_input(write),
            output: PerMtok(output.1),
            batch_discount,
        },
    })
}

/// A non-negative decimal price or fraction, as a float (for the fields older code reads) and as
/// exact millionths, parsed from the number's text rather than from the float: YAML's `0.0375` is
/// 37,500 micro-dollars per million tokens, exactly. At most 6 decimal places.
fn read_decimal(r: &mut Reader, n: Node) -> Option<(f64, u64)> {
    let text = match n.value {
        serde_yaml::Value::Number(num) => num.to_string(),
        serde_yaml::Value::String(_) => n.string(r)?,
        _ => {
            // The reader's own message for a value that is not a number.
            n.f64(r)?;
            return None;
        }
    };
    match crate::pricing::money::parse_decimal(&text) {
        Ok(exact) => Some((exact as f64 / 1e6, exact)),
        Err(e) => {
            r.error(n.path, e.to_string());
            None
        }
    }
}

fn read_queue(r: &mut Reader, n: Node) -> Option<QueuePolicy> {
    let m = n.map(
        r,
        &["max_size", "max_wait", "scheduling", "default_max_tokens"],
    )?;
    let d = QueuePolicy::default();
    let max_size = m.with(r, "max_size", |r, n| n.u64(r)).unwrap_or(100);
    if max_size > 1_000_000 {
        r.error(
            &format!("{}.max_size", m.path()),
            "max_size must be at most 1000000",
        );
    }
    Some(QueuePolicy {
        max_size: max_size.min(1_000_000) as usize,
        max_wait: m
            .with(r, "max_wait", |r, n| n.duration(r))
            .unwrap_or(d.max_wait),
        scheduling: m
            .with(r, "scheduling", |r, n| {
                n.choice(
                    r,
                    &[
                        ("fifo", Scheduling::Fifo),
                        ("priority", Scheduling::Priority),
                    ],
                )
            })
            .unwrap_or(d.scheduling),
        default_max_tokens: m
            .with(r, "default_max_tokens", |r, n| n.u64(r))
            .unwrap_or(d.default_max_tokens),
    })
}

/// An optional positive per-minute limit at `key` (0 is an error: leave the key out for none).
pub fn per_minute(r: &mut Reader, m: &super::reader::Map, key: &str) -> Option<u64> {
    let v = m.with(r, key, |r, n| n.u64(r))?;
    if v == 0 {
        r.error(
            &format!("{}.{key}", m.path()),
            "must be a positive number per minute (leave the key out for no limit)",
        );
        return None;
    }
    Some(v)
}

/// Without a `retry` section: each deployment is tried once when connects fail (nothing was sent, so
/// that is always safe); upstream answers are relayed as they are.
pub fn default_retry(deployments: usize) -> RetryPolicy {
    RetryPolicy {
        attempts: deployments,
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        on: RetryOn {
            connect: true,
            ..RetryOn::default()
        },
    }
}

fn read_retry(r: &mut Reader, n: Node) -> Option<RetryPolicy> {
    let m = n.map(r, &["attempts", "backoff", "max_backoff", "on"])?;
    let attempts = m.with(r, "attempts", |r, n| n.u64(r)).unwrap_or(3);
    if !(1..=20).contains(&attempts) {
        r.error(
            &format!("{}.attempts", m.path()),
            "attempts must be between 1 and 20",
        );
    }
    let backoff = m
        .with(r, "backoff", |r, n| n.duration(r))
        .unwrap_or(Duration::from_millis(500));
    let max_backoff = m
        .with(r, "max_backoff", |r, n| n.duration(r))
        .unwrap_or(Duration::from_secs(8));
    if max_backoff < backoff {
        r.error(
            &format!("{}.max_backoff", m.path()),
            "max_backoff must not be below backoff",
        );
    }
    let on = match m.with(r, "on", |r, n| {
        Some(n.list(r, |r, n| {
            n.choice(
                r,
                &[("connect", 0u8), ("timeout", 1), ("429", 2), ("5xx", 3)],
            )
        }))
    }) {
        Some(kinds) => RetryOn {
            connect: kinds.contains(&0),
            timeout: kinds.contains(&1),
            rate_limited: kinds.contains(&2),
            server_error: kinds.contains(&3),
        },
        None => RetryOn {
            connect: true,
            timeout: true,
            rate_limited: true,
            server_error: true,
        },
    };
    Some(RetryPolicy {
        attempts: attempts.clamp(1, 20) as usize,
        backoff,
        max_backoff: max_backoff.max(backoff),
        on,
    })
}

fn read_cooldown(r: &mut Reader, n: Node) -> Option<CooldownPolicy> {
    let m = n.map(r, &["allowed_fails", "window", "duration"])?;
    let d = CooldownPolicy::default();
    Some(CooldownPolicy {
        allowed_fails: m
            .with(r, "allowed_fails", |r, n| n.u64(r))
            .map(|v| v as usize)
            .unwrap_or(d.allowed_fails),
        window: m
            .with(r, "window", |r, n| n.duration(r))
            .unwrap_or(d.window),
        duration: m
            .with(r, "duration", |r, n| n.duration(r))
            .unwrap_or(d.duration),
    })
}

/// `deployments[].params`: a map of body fields (any JSON value) merged in when the client omits
/// them. `model`, `stream` and the gateway's controls cannot be set this way.
fn read_params(r: &mut Reader, n: Node) -> Option<Vec<(String, String)>> {
    let serde_yaml::Value::Mapping(map) = n.value else {
        r.error(
            n.path,
            "expected a map of request fields, e.g. {temperature: 0.2}",
        );
        return None;
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            r.error(n.path, "field names must be strings");
            continue;
        };
        if matches!(key, "model" | "stream" | "messages" | "input" | "prompt")
            || crate::body::CONTROL_FIELDS.contains(&key)
        {
            r.error(
                &format!("{}.{key}", n.path),
                "this field cannot be a deployment default",
            );
            continue;
        }
        match serde_json::to_string(v) {
            Ok(raw) => out.push((key.to_string(), raw)),
            Err(e) => r.error(&format!("{}.{key}", n.path), format!("not valid JSON: {e}")),
        }
    }
    Some(out)
}

fn read_deployment(r: &mut Reader, n: Node) -> Option<Deployment> {
    let m = n.map(
        r,
        &[
            "upstream", "model", "weight", "rpm", "tpm", "params", "headers",
        ],
    )?;
    let upstream = m.required(r, "upstream", |r, n| n.string(r));
    let model = m.required(r, "model", |r, n| n.string(r));
    let weight = m.with(r, "weight", |r, n| n.u64(r)).unwrap_or(1);
    if weight == 0 || weight > 1000 {
        r.error(
            &format!("{}.weight", m.path()),
            "weight must be between 1 and 1000",
        );
    }
    Some(Deployment {
        upstream: upstream?,
        upstream_id: UpstreamId::UNRESOLVED,
        model: model?,
        weight: weight.clamp(1, 1000) as usize,
        rpm: per_minute(r, &m, "rpm"),
        tpm: per_minute(r, &m, "tpm"),
        params: m.with(r, "params", read_params).unwrap_or_default(),
        headers: m.with(r, "headers", read_headers).unwrap_or_default(),
    })
}

/// `deployments[].headers`: `{name: value}`; values may use `${ENV}`. Credentials and framing
/// headers are the gateway's to set, so they are refused here.
fn read_headers(r: &mut Reader, n: Node) -> Option<Vec<(http::HeaderName, http::HeaderValue)>> {
    let serde_yaml::Value::Mapping(map) = n.value else {
        r.error(
            n.path,
            "expected a map of header names to values, e.g. {OpenAI-Organization: org-123}",
        );
        return None;
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            r.error(n.path, "header names must be strings");
            continue;
        };
        let path = format!("{}.{key}", n.path);
        let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) else {
            r.error(&path, format!("`{key}` is not a valid header name"));
            continue;
        };
        if !crate::providers::forwardable(&name) {
            r.error(
                &path,
                "this header is set by the gateway (credentials go in the upstream's `auth`)",
            );
            continue;
        }
        let Some(value) = Node::new(v, &path).string(r) else {
            continue;
        };
        match http::HeaderValue::from_str(&value) {
            Ok(v) => out.push((name, v)),
            Err(_) => r.error(&path, "not a valid header value"),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Env};
    use crate::pricing::{PerMtok, Ppm};

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn with_pricing(pricing: &str) -> String {
        format!(
            r#"
server:
  listeners: [{{name: main, listen: "127.0.0.1:4000"}}]
upstreams:
  - {{name: a, provider: openai, url: "http://127.0.0.1:1/v1"}}
models:
  - {{name: m, pricing: {pricing}, deployments: [{{upstream: a, model: x}}]}}
"#
        )
    }

    #[test]
    fn pricing_is_converted_exactly_at_load() {
        let text = with_pricing(
            "{input_per_mtok: 0.0375, cached_input_per_mtok: \"0.00375\", cache_write_per_mtok: 0.046875, output_per_mtok: 10, batch_discount: 0.25}",
        );
        let cfg = parse(&text, &NoEnv).unwrap();
        let p = cfg.models[0].pricing.unwrap();
        assert_eq!(p.price.input, PerMtok(37_500));
        assert_eq!(p.price.cached_input, PerMtok(3_750));
        assert_eq!(p.price.cache_write, PerMtok(46_875));
        assert_eq!(p.price.output, PerMtok(10_000_000));
        assert_eq!(p.price.batch_discount, Ppm(250_000));
        assert_eq!(
            (p.input_per_mtok, p.output_per_mtok, p.batch_discount),
            (0.0375, 10.0, 0.25)
        );
        assert_eq!(p.cached_input_per_mtok, Some(0.00375));
        assert_eq!(p.cache_write_per_mtok, Some(0.046875));
    }

    #[test]
    fn omitted_cache_prices_are_the_input_price() {
        let cfg = parse(
            &with_pricing("{input_per_mtok: 2.5, output_per_mtok: 10}"),
            &NoEnv,
        )
        .unwrap();
        let p = cfg.models[0].pricing.unwrap();
        assert_eq!(p.price.cached_input, PerMtok(2_500_000));
        assert_eq!(p.price.cache_write, PerMtok(2_500_000));
        assert_eq!(p.price.batch_discount, Ppm(500_000));
        assert_eq!((p.cached_input_per_mtok, p.batch_discount), (None, 0.5));
    }

    #[test]
    fn bad_pricing_is_reported_with_key_paths() {
        let cases = [
            (
                "{input_per_mtok: -1, output_per_mtok: 1}",
                "models[0].pricing.input_per_mtok",
                "must not be negative",
            ),
            (
                "{input_per_mtok: 1, output_per_mtok: 1, cached_input_per_mtok: 0.0000001}",
                "models[0].pricing.cached_input_per_mtok",
                "at most 6 decimal places",
            ),
            (
                "{input_per_mtok: 1, output_per_mtok: 1, cache_write_per_mtok: lots}",
                "models[0].pricing.cache_write_per_mtok",
                "expected a decimal number",
            ),
            (
                "{input_per_mtok: 1, output_per_mtok: [1]}",
                "models[0].pricing.output_per_mtok",
                "expected a number",
            ),
            (
                "{input_per_mtok: 1, output_per_mtok: 1, batch_discount: 1.5}",
                "models[0].pricing.batch_discount",
                "between 0 and 1",
            ),
            (
                "{output_per_mtok: 1}",
                "models[0].pricing.input_per_mtok",
                "required key is missing",
            ),
            (
                "{input_per_mtok: 1, output_per_mtok: 1, cache_read_per_mtok: 1}",
                "models[0].pricing.cache_read_per_mtok",
                "cached_input_per_mtok",
            ),
        ];
        for (pricing, path, message) in cases {
            let all = parse(&with_pricing(pricing), &NoEnv)
                .unwrap_err()
                .to_string();
            let line = all.lines().find(|l| l.contains(path));
            assert!(
                line.is_some_and(|l| l.contains(message)),
                "{pricing}: {all}"
            );
        }
    }
}
