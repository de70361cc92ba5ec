//! LiteLLM-format configs, read as they are.
//!
//! A document whose top level has `model_list` is a LiteLLM proxy config. It is translated into the
//! native document (a `serde_yaml::Value`), which the native reader then validates like any other
//! file: both formats mean the same thing at run time, reload the same way, and `llmproxy convert`
//! prints the translation. While translating, the LiteLLM key each native key came from is
//! remembered, so an error the native reader finds is reported at the key the user wrote
//! (`model_list[3].litellm_params.api_key`, not `upstreams[2].auth.value`). Keys llmproxy does not
//! support are warnings, one per key with its path, never silently ignored.
//!
//! Values: `os.environ/NAME` becomes `${NAME}` (expanded by the native reader, so a missing variable
//! is an error naming it, and `convert` keeps the reference instead of the secret);
//! `environment_variables` are laid over the process environment ([`Overlay`]) before expansion.
//! Provider prefixes (`azure/`, `bedrock/`, `together_ai/`, ...) map to native providers through one
//! table, [`PROVIDERS`].

use super::reader::{join, nearest, ConfigErrors, Env};
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeSet, HashMap};

/// How a provider authenticates, in native `auth` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key in this header (`api-key`, `x-api-key`, `x-goog-api-key`).
    Header(&'static str),
    /// AWS Signature V4 (`auth.type: aws_sigv4`): region and credentials.
    AwsSigV4,
    /// Google OAuth2 from a service account (`auth.type: gcp`).
    Gcp,
    /// Nothing unless `api_key` is given (then a bearer token): local servers.
    Optional,
}

/// One LiteLLM provider prefix and the native upstream it becomes.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSpec {
    /// What LiteLLM writes before the first `/` of `model`.
    pub prefix: &'static str,
    /// The native `upstreams[].provider`.
    pub native: &'static str,
    /// The base URL when `api_base` is not given; `None`: `base_env`, derived, or `api_base` required.
    pub base_url: Option<&'static str>,
    /// The environment variable LiteLLM reads for the base URL when `api_base` is not given.
    pub base_env: Option<&'static str>,
    /// The environment variable LiteLLM reads for the key when `api_key` is not given.
    pub key_env: Option<&'static str>,
    pub auth: AuthStyle,
    /// LiteLLM's `api_base` is the server root and the OpenAI-compatible API lives under `/v1`
    /// (Ollama): `/v1` is appended to an `api_base` without a path.
    pub v1_under_root: bool,
}

const fn hosted(prefix: &'static str, base: &'static str, key_env: &'static str) -> ProviderSpec {
    ProviderSpec {
        prefix,
        native: "openai_compatible",
        base_url: Some(base),
        base_env: None,
        key_env: Some(key_env),
        auth: AuthStyle::Bearer,
        v1_under_root: false,
    }
}

const fn local(prefix: &'static str, base: &'static str, v1_under_root: bool) -> ProviderSpec {
    ProviderSpec {
        prefix,
        native: "openai_compatible",
        base_url: Some(base),
        base_env: None,
        key_env: None,
        auth: AuthStyle::Optional,
        v1_under_root,
    }
}

/// Every provider prefix llmproxy understands. A prefix whose native provider this build lacks
/// would be refused by the native reader, and that error reported at the LiteLLM `model` key
/// naming the provider.
pub const PROVIDERS: &[ProviderSpec] = &[
    ProviderSpec {
        prefix: "openai",
        native: "openai",
        base_url: Some("https://api.openai.com/v1"),
        base_env: None,
        key_env: Some("OPENAI_API_KEY"),
        auth: AuthStyle::Bearer,
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "text-completion-openai",
        native: "openai",
        base_url: Some("https://api.openai.com/v1"),
        base_env: None,
        key_env: Some("OPENAI_API_KEY"),
        auth: AuthStyle::Bearer,
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "azure",
        native: "azure",
        base_url: None,
        base_env: Some("AZURE_API_BASE"),
        key_env: Some("AZURE_API_KEY"),
        auth: AuthStyle::Header("api-key"),
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "anthropic",
        native: "anthropic",
        base_url: Some("https://api.anthropic.com/v1"),
        base_env: None,
        key_env: Some("ANTHROPIC_API_KEY"),
        auth: AuthStyle::Header("x-api-key"),
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "bedrock",
        native: "bedrock",
        base_url: None,
        base_env: None,
        key_env: None,
        auth: AuthStyle::AwsSigV4,
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "gemini",
        native: "gemini",
        base_url: Some("https://generativelanguage.googleapis.com/v1beta"),
        base_env: None,
        key_env: Some("GEMINI_API_KEY"),
        auth: AuthStyle::Header("x-goog-api-key"),
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "vertex_ai",
        native: "vertex",
        base_url: None,
        base_env: None,
        key_env: None,
        auth: AuthStyle::Gcp,
        v1_under_root: false,
    },
    ProviderSpec {
        prefix: "huggingface",
        native: "text_generation",
        base_url: None,
        base_env: None,
        key_env: Some("HUGGINGFACE_API_KEY"),
        auth: AuthStyle::Bearer,
        v1_under_root: false,
    },
    local("ollama", "http://localhost:11434/v1", true),
    local("ollama_chat", "http://localhost:11434/v1", true),
    local("hosted_vllm", "http://localhost:8000/v1", false),
    local("vllm", "http://localhost:8000/v1", false),
    local("lm_studio", "http://localhost:1234/v1", false),
    ProviderSpec {
        prefix: "custom_openai",
        native: "openai_compatible",
        base_url: None,
        base_env: None,
        key_env: None,
        auth: AuthStyle::Optional,
        v1_under_root: false,
    },
    hosted(
        "together_ai",
        "https://api.together.xyz/v1",
        "TOGETHERAI_API_KEY",
    ),
    hosted("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    hosted("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    hosted(
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
    ),
    hosted(
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
    ),
    hosted(
        "fireworks_ai",
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_AI_API_KEY",
    ),
    hosted(
        "perplexity",
        "https://api.perplexity.ai",
        "PERPLEXITYAI_API_KEY",
    ),
    hosted("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
    hosted(
        "deepinfra",
        "https://api.deepinfra.com/v1/openai",
        "DEEPINFRA_API_KEY",
    ),
    hosted(
        "anyscale",
        "https://api.endpoints.anyscale.com/v1",
        "ANYSCALE_API_KEY",
    ),
    hosted("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    hosted(
        "nvidia_nim",
        "https://integrate.api.nvidia.com/v1",
        "NVIDIA_NIM_API_KEY",
    ),
];

/// The provider of a LiteLLM prefix.
pub fn provider(prefix: &str) -> Option<&'static ProviderSpec> {
    PROVIDERS.iter().find(|p| p.prefix == prefix)
}

/// `model` without a prefix: the providers LiteLLM infers from well-known model names.
fn infer_provider(model: &str) -> Option<&'static ProviderSpec> {
    const OPENAI: &[&str] = &[
        "gpt-",
        "gpt4",
        "o1",
        "o3",
        "o4",
        "chatgpt-",
        "text-embedding-",
        "text-davinci-",
        "davinci",
        "babbage",
        "ft:gpt",
        "omni-moderation",
        "text-moderation",
    ];
    if OPENAI.iter().any(|p| model.starts_with(p)) {
        return provider("openai");
    }
    if model.starts_with("claude-") {
        return provider("anthropic");
    }
    None
}

fn prefixes() -> String {
    PROVIDERS
        .iter()
        .map(|p| format!("{}/", p.prefix))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a parsed document is a LiteLLM config: it has a top-level `model_list`.
pub fn is_litellm(doc: &Value) -> bool {
    doc.as_mapping()
        .is_some_and(|m| m.contains_key("model_list"))
}

/// `environment_variables` laid over another environment (LiteLLM sets them in `os.environ`, so
/// they win over the process environment).
pub struct Overlay<'a> {
    vars: &'a [(String, String)],
    base: &'a dyn Env,
}

impl Env for Overlay<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.base.var(name))
    }
}

/// A LiteLLM document translated into the native one.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The native document, for the native reader (and `llmproxy convert`).
    pub native: Value,
    /// Problems found while translating, at LiteLLM paths.
    pub errors: ConfigErrors,
    /// Keys that are not supported (ignored), at LiteLLM paths.
    pub warnings: ConfigErrors,
    /// `environment_variables`, in file order.
    pub environment: Vec<(String, String)>,
    /// Native key path → the LiteLLM key path it came from.
    paths: Vec<(String, String)>,
    /// Variables read with `os.environ/NAME`.
    env_refs: BTreeSet<String>,
    /// Per native upstream: its provider, the LiteLLM `model` it was made for, and its name.
    upstream_sources: Vec<(&'static str, String, String)>,
}

impl Translation {
    /// The environment the native reader must see: `environment_variables` over `base`.
    pub fn env<'a>(&'a self, base: &'a dyn Env) -> Overlay<'a> {
        Overlay {
            vars: &self.environment,
            base,
        }
    }

    /// The LiteLLM key path a native key path came from (the longest registered prefix).
    pub fn litellm_path(&self, native: &str) -> String {
        let best = self
            .paths
            .iter()
            .filter(|(n, _)| {
                native == n
                    || (native.starts_with(n.as_str())
                        && matches!(native.as_bytes().get(n.len()), Some(b'.' | b'[')))
            })
            .max_by_key(|(n, _)| n.len());
        match best {
            Some((_, l)) => l.clone(),
            None if native.is_empty() => String::new(),
            None => format!("{native} (in the translated config)"),
        }
    }

    /// Errors (or warnings) of the native reader on the translated document, at LiteLLM paths.
    /// An upstream whose provider is refused reports that once; its other errors are consequences.
    pub fn map_errors(&self, native: ConfigErrors) -> ConfigErrors {
        let refused: BTreeSet<usize> = native
            .0
            .iter()
            .filter_map(|e| provider_index(&e.path))
            .collect();
        let refused_names: Vec<String> = refused
            .iter()
            .filter_map(|k| self.upstream_sources.get(*k))
            .map(|(_, _, name)| format!("unknown upstream `{name}`"))
            .collect();
        let mut out = ConfigErrors::default();
        let mut seen = BTreeSet::new();
        for e in native.0 {
            if refused_names
                .iter()
                .any(|n| e.message.starts_with(n.as_str()))
            {
                continue;
            }
            let message = if let Some(k) = provider_index(&e.path) {
                match self.upstream_sources.get(k) {
                    Some((native_provider, model, _)) => format!(
                        "`{model}` needs llmproxy's `{native_provider}` provider, which this build does not have: {}",
                        e.message
                    ),
                    None => e.message,
                }
            } else if upstream_index(&e.path).is_some_and(|k| refused.contains(&k)) {
                continue;
            } else {
                self.env_message(e.message)
            };
            let path = self.litellm_path(&e.path);
            if seen.insert((path.clone(), message.clone())) {
                out.push(&path, message);
            }
        }
        out
    }

    /// The native reader's "environment variable `X` is not set (use `${X:-fallback}` ...)" in
    /// LiteLLM's terms: the `${...}` syntax is the translation's, not the user's.
    fn env_message(&self, message: String) -> String {
        let Some(rest) = message.strip_prefix("environment variable `") else {
            return message;
        };
        let Some((name, tail)) = rest.split_once('`') else {
            return message;
        };
        if !tail.starts_with(" is not set") {
            return message;
        }
        if self.env_refs.contains(name) {
            format!("environment variable `{name}` is not set (read by `os.environ/{name}`)")
        } else {
            format!("environment variable `{name}` is not set")
        }
    }
}

/// `upstreams[K].provider` → K.
fn provider_index(path: &str) -> Option<usize> {
    let k = upstream_index(path)?;
    (path == format!("upstreams[{k}].provider")).then_some(k)
}

/// `upstreams[K]...` → K.
fn upstream_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("upstreams[")?;
    let (k, _) = rest.split_once(']')?;
    k.parse().ok()
}

/// Request fields a deployment may carry as defaults for requests that omit them.
const DEFAULT_PARAMS: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
];
/// huggingface/: the prompt template of a raw text-generation server.
const TEMPLATE_KEYS: &[&str] = &[
    "initial_prompt_value",
    "roles",
    "final_prompt_value",
    "bos_token",
    "eos_token",
];
const AWS_KEYS: &[(&str, &str)] = &[
    ("aws_access_key_id", "access_key_id"),
    ("aws_secret_access_key", "secret_access_key"),
    ("aws_session_token", "session_token"),
    ("aws_profile_name", "profile"),
];
const PARAM_KEYS: &[&str] = &[
    "model",
    "custom_llm_provider",
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "rpm",
    "tpm",
    "timeout",
    "weight",
    "drop_params",
    "organization",
    "extra_headers",
    "azure_ad_token",
    "input_cost_per_token",
    "output_cost_per_token",
    "aws_region_name",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
];
const TOP_KEYS: &[&str] = &[
    "model_list",
    "litellm_settings",
    "llm_settings",
    "router_settings",
    "general_settings",
    "environment_variables",
];
const SETTINGS_KEYS: &[&str] = &[
    "drop_params",
    "set_verbose",
    "num_retries",
    "request_timeout",
    "fallbacks",
    "context_window_fallbacks",
    "default_fallbacks",
    "allowed_fails",
    "cooldown_time",
    "cache",
    "cache_params",
    "success_callback",
    "failure_callback",
    "callbacks",
    "telemetry",
    "add_function_to_prompt",
];
const ROUTER_KEYS: &[&str] = &[
    "routing_strategy",
    "num_retries",
    "timeout",
    "fallbacks",
    "context_window_fallbacks",
    "default_fallbacks",
    "allowed_fails",
    "cooldown_time",
    "redis_host",
    "redis_port",
    "redis_password",
    "redis_url",
];
const GENERAL_KEYS: &[&str] = &[
    "master_key",
    "database_url",
    "otel",
    "health_check_interval",
    "background_health_checks",
];

/// A native upstream being built.
struct UpstreamOut {
    name: String,
    /// The upstream without its name: two deployments with equal ones share one upstream.
    body: Mapping,
    /// Native sub-key → LiteLLM path.
    fields: Vec<(&'static str, String)>,
    /// The `litellm_params` path of the first entry that uses it.
    source: String,
    native_provider: &'static str,
    model: String,
}

/// One translated `litellm_params`: the deployment and the settings llmproxy keeps per model.
struct EntryOut {
    deployment: DeploymentOut,
    drop_params: Option<(bool, String)>,
    pricing: Option<(Mapping, String)>,
}

struct DeploymentOut {
    body: Mapping,
    fields: Vec<(String, String)>,
    source: String,
    rpm: Option<u64>,
    weighted: bool,
}

#[derive(Default)]
struct ModelOut {
    name: String,
    name_path: String,
    deployments: Vec<DeploymentOut>,
    drop_params: Option<(bool, String)>,
    pricing: Option<(Mapping, String)>,
    fallbacks: Vec<(String, String)>,
    context_window_fallbacks: Vec<(String, String)>,
}

/// Settings that apply to every model.
#[derive(Default)]
struct ModelSettings {
    attempts: Option<(u64, String)>,
    timeout: Option<(String, String)>,
    allowed_fails: Option<(u64, String)>,
    cooldown: Option<(String, String)>,
    add_function_to_prompt: Option<(bool, String)>,
    strategy: Option<(&'static str, String)>,
    default_fallbacks: Vec<(String, String)>,
}

struct CacheOut {
    redis: bool,
    ttl: Option<String>,
    path: String,
}

/// The native document, its native → LiteLLM path map, and each upstream's source.
struct Assembled {
    native: Value,
    paths: Vec<(String, String)>,
    sources: Vec<(&'static str, String, String)>,
}

/// The translation under way.
struct Tx<'e> {
    env: &'e dyn Env,
    errors: ConfigErrors,
    warnings: ConfigErrors,
    env_refs: BTreeSet<String>,
    upstreams: Vec<UpstreamOut>,
    models: Vec<ModelOut>,
    /// Model names with an entry that could not be translated (already reported).
    broken: BTreeSet<String>,
    settings: ModelSettings,
    drop_params: Option<(bool, String)>,
    debug: Option<String>,
    master_key: Option<(Value, String)>,
    database: Option<(Value, String)>,
    redis: Option<(String, String)>,
    cache: Option<CacheOut>,
    otel: Option<String>,
    langfuse: Option<String>,
    health_interval: Option<(String, String)>,
    /// Per-deployment `timeout`s are per upstream; the global one fills in the rest.
    upstream_timeout: Option<(String, String)>,
}

/// Translate a LiteLLM document. `env` is the process environment (or a test's); the
/// translation reads it (with `environment_variables` laid over it) only to make choices (which
/// Redis variables are set, where OpenTelemetry goes); values stay `${NAME}` references.
pub fn translate(doc: &Value, env: &dyn Env) -> Translation {
    let mut errors = ConfigErrors::default();
    let environment = match doc.get("environment_variables") {
        Some(v) => environment_variables(v, &mut errors),
        None => Vec::new(),
    };
    let overlay = Overlay {
        vars: &environment,
        base: env,
    };
    let mut tx = Tx {
        env: &overlay,
        errors,
        warnings: ConfigErrors::default(),
        env_refs: BTreeSet::new(),
        upstreams: Vec::new(),
        models: Vec::new(),
        broken: BTreeSet::new(),
        settings: ModelSettings::default(),
        drop_params: None,
        debug: None,
        master_key: None,
        database: None,
        redis: None,
        cache: None,
        otel: None,
        langfuse: None,
        health_interval: None,
        upstream_timeout: None,
    };
    tx.document(doc);
    let Assembled {
        native,
        paths,
        sources,
    } = tx.assemble();
    Translation {
        native,
        errors: tx.errors,
        warnings: tx.warnings,
        environment: environment.clone(),
        paths,
        env_refs: tx.env_refs,
        upstream_sources: sources,
    }
}

fn environment_variables(v: &Value, errors: &mut ConfigErrors) -> Vec<(String, String)> {
    let path = "environment_variables";
    let Some(m) = v.as_mapping() else {
        if !v.is_null() {
            errors.push(path, "expected a mapping of variable names to values");
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let Some(name) = k.as_str() else {
            errors.push(path, "variable names must be strings");
            continue;
        };
        let p = join(path, name);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            errors.push(&p, "not a valid variable name (letters, digits, `_`)");
            continue;
        }
        let value = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                errors.push(&p, "expected a string, a number or nothing");
                continue;
            }
        };
        out.push((name.to_string(), value));
    }
    out
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Seconds (LiteLLM's unit for timeouts) as a native duration.
pub fn duration(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{}ms", (secs * 1000.0).round() as u64)
    }
}

mod entries;
mod settings;

fn unknown_provider(prefix: &str, model: &str) -> String {
    let names: Vec<&str> = PROVIDERS.iter().map(|p| p.prefix).collect();
    let hint = nearest(prefix, &names)
        .map(|s| format!(" (did you mean `{s}/`?)"))
        .unwrap_or_default();
    format!(
        "unknown or unsupported provider `{prefix}` in `{model}`{hint}; llmproxy supports: {}",
        prefixes()
    )
}

/// Weights in proportion to rpm limits, as small as they can be (the weighted round robin walks a
/// list with each deployment repeated `weight` times: 1:1:2 interleaves, 500:500:1000 would send
/// runs of 500), at most 1000.
fn rpm_weights(rpms: &[u64]) -> Vec<u64> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = rpms.iter().fold(0, |g, r| gcd(g, *r)).max(1);
    let reduced: Vec<u64> = rpms.iter().map(|r| (r / g).max(1)).collect();
    let max = reduced.iter().copied().max().unwrap_or(1);
    if max <= 1000 {
        return reduced;
    }
    reduced
        .iter()
        .map(|w| ((*w as f64 * 1000.0 / max as f64).round() as u64).clamp(1, 1000))
        .collect()
}

fn per_million(per_token: f64) -> f64 {
    // Round away float noise (0.000003 × 1e6 = 2.9999999999999996).
    (per_token * 1e6 * 1e6).round() / 1e6
}

/// Whether `http://host:port` has no path (or only `/`).
fn url_path_is_empty(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].trim_matches('/').is_empty(),
        None => true,
    }
}

/// A short label for an upstream name: the first DNS label of the host (or the IP), and the port
/// when one is written: `my-endpoint-eu`, `127.0.0.1-8001`.
fn host_label(url: &str) -> Option<String> {
    if url.contains("${") {
        return None;
    }
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let label = if is_ip {
        host.to_string()
    } else {
        host.split('.').next().unwrap_or(host).to_string()
    };
    Some(match port {
        Some(p) if !p.is_empty() => format!("{label}-{p}"),
        _ => label,
    })
}

/// `llmproxy --model provider/id` without a config: a one-entry `model_list` (LiteLLM's quick
/// start).
#[derive(Debug, Clone, Default)]
pub struct QuickStart {
    pub model: String,
    pub api_base: Option<String>,
    pub api_version: Option<String>,
    pub alias: Option<String>,
}

impl QuickStart {
    /// The name clients use: `--alias`, else `--model` as written.
    pub fn served_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.model)
    }

    /// The LiteLLM document `--model` stands for. A model without a known provider prefix and with
    /// an `--api_base` is served by that OpenAI-compatible server (the first quick start's
    /// `--model NAME --api-base URL`).
    pub fn document(&self) -> Value {
        let mut params = Mapping::new();
        params.insert(s("model"), s(&self.model));
        let known_prefix = self
            .model
            .split_once('/')
            .is_some_and(|(p, _)| provider(p).is_some());
        if self.api_base.is_some() && !known_prefix {
            params.insert(s("custom_llm_provider"), s("openai"));
        }
        if let Some(b) = &self.api_base {
            params.insert(s("api_base"), s(b));
        }
        if let Some(v) = &self.api_version {
            params.insert(s("api_version"), s(v));
        }
        let mut entry = Mapping::new();
        entry.insert(s("model_name"), s(self.served_name()));
        entry.insert(s("litellm_params"), Value::Mapping(params));
        let mut doc = Mapping::new();
        doc.insert(
            s("model_list"),
            Value::Sequence(vec![Value::Mapping(entry)]),
        );
        Value::Mapping(doc)
    }

    /// Other names the model answers to: `--model` as written and the bare id
    /// (`ollama/llama3` → `llama3`), besides the served name.
    pub fn aliases(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |n: &str| {
            if n != self.served_name() && !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        };
        add(&self.model);
        if let Some((p, id)) = self.model.split_once('/') {
            if provider(p).is_some() && !id.is_empty() {
                add(id);
            }
        }
        out
    }

    /// A LiteLLM path of the quick start's document in terms of the command line.
    pub fn flag_for(path: &str) -> String {
        let p = path.strip_prefix("model_list[0]").unwrap_or(path);
        match p {
            ".litellm_params.model" | ".litellm_params.custom_llm_provider" => "--model".into(),
            ".litellm_params.api_base" => "--api_base".into(),
            ".litellm_params.api_version" => "--api_version".into(),
            ".litellm_params.api_key" => "the provider's API key variable".into(),
            ".model_name" => "--alias".into(),
            _ if path.contains(".add_function_to_prompt") => "--add_function_to_prompt".into(),
            _ => path.to_string(),
        }
    }
}

/// `llmproxy convert`: the native YAML of a LiteLLM document, with a comment header. Values the
/// source read from the environment stay `${NAME}` references; `environment_variables` become
/// their fallbacks (`${NAME:-value}`), so the output carries what the source carried and no more.
pub fn convert(doc: &Value, env: &dyn Env, source: &str) -> Result<String, ConfigErrors> {
    let t = translate(doc, env);
    if !t.errors.is_empty() {
        return Err(t.errors);
    }
    let vars: HashMap<&str, &str> = t
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let native = with_fallbacks(&t.native, &vars);
    let body = serde_yaml::to_string(&native).map_err(|e| {
        let mut errs = ConfigErrors::default();
        errs.push("", format!("cannot write YAML: {e}"));
        errs
    })?;
    let mut out = String::new();
    out.push_str(&format!(
        "# llmproxy configuration converted by `llmproxy convert` from the LiteLLM config {source}.\n"
    ));
    out.push_str(
        "# Validate it with `llmproxy check -c FILE`; every key is documented in conf/README.md.\n",
    );
    out.push_str("# Values the source read with os.environ/NAME are ${NAME} references (read at load time);\n");
    out.push_str("# its environment_variables are their fallbacks: ${NAME:-value} (the process environment wins).\n");
    if !t.warnings.is_empty() {
        out.push_str("# Not converted (not supported by llmproxy):\n");
        for w in &t.warnings.0 {
            out.push_str(&format!("#   {w}\n"));
        }
    }
    out.push_str(&body);
    Ok(out)
}

fn with_fallbacks(v: &Value, vars: &HashMap<&str, &str>) -> Value {
    match v {
        Value::String(text) if text.contains("${") => Value::String(rewrite_refs(text, vars)),
        Value::Sequence(items) => {
            Value::Sequence(items.iter().map(|i| with_fallbacks(i, vars)).collect())
        }
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, v) in m {
                out.insert(k.clone(), with_fallbacks(v, vars));
            }
            Value::Mapping(out)
        }
        other => other.clone(),
    }
}

/// `${NAME}` / `${NAME:-x}` with NAME in `vars` → `${NAME:-value}` (the literal value when it
/// cannot be a fallback: it contains `}`).
fn rewrite_refs(text: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = &after[..end];
        let name = expr.split_once(":-").map(|(n, _)| n).unwrap_or(expr);
        match vars.get(name) {
            Some(value) if !value.contains('}') => out.push_str(&format!("${{{name}:-{value}}}")),
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
