//! LiteLLM-format configs (seed 002), read as they are.
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
/// (`bedrock`, `gemini`, `vertex`, `text_generation` until they land) is refused by the native
/// reader, and that error is reported at the LiteLLM `model` key naming the provider.
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

impl Tx<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(path, message);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(path, message);
    }

    /// A key this section does not support: one warning, with the nearest supported key.
    fn unsupported(&mut self, path: &str, key: &str, known: &[&str]) {
        let hint = nearest(key, known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        self.warn(
            &join(path, key),
            format!("not supported by llmproxy: ignored{hint}"),
        );
    }

    /// A value with `os.environ/NAME` turned into `${NAME}` (recursively).
    fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(text) => match text.strip_prefix("os.environ/") {
                Some(name) => {
                    self.env_refs.insert(name.to_string());
                    Value::String(format!("${{{name}}}"))
                }
                None => v.clone(),
            },
            Value::Sequence(items) => {
                Value::Sequence(items.iter().map(|i| self.value(i)).collect())
            }
            Value::Mapping(m) => {
                let mut out = Mapping::new();
                for (k, v) in m {
                    out.insert(k.clone(), self.value(v));
                }
                Value::Mapping(out)
            }
            other => other.clone(),
        }
    }

    /// A string value (numbers as their text), `os.environ/NAME` as `${NAME}`; `None` when absent
    /// or empty.
    fn text(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::Null => None,
            Value::String(t) if t.is_empty() => None,
            v @ Value::String(_) => match self.value(v) {
                Value::String(t) => Some(t),
                _ => None,
            },
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.error(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    /// A number; `os.environ/NAME` is read now (numbers are not secrets).
    fn number(&mut self, path: &str, v: &Value) -> Option<f64> {
        let parsed = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(t) => {
                let t = match t.strip_prefix("os.environ/") {
                    Some(name) => match self.env.var(name) {
                        Some(val) => val,
                        None => {
                            self.error(
                                path,
                                format!("environment variable `{name}` is not set (read by `os.environ/{name}`)"),
                            );
                            return None;
                        }
                    },
                    None => t.clone(),
                };
                t.trim().parse::<f64>().ok()
            }
            _ => None,
        };
        let shown = match v {
            Value::Number(n) => format!("`{n}`"),
            Value::String(t) => format!("`{t}`"),
            other => kind(other).to_string(),
        };
        match parsed {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            Some(_) => {
                self.error(path, format!("must not be negative, found {shown}"));
                None
            }
            None => {
                self.error(path, format!("expected a number, found {shown}"));
                None
            }
        }
    }

    fn count(&mut self, path: &str, v: &Value) -> Option<u64> {
        let n = self.number(path, v)?;
        if n.fract() != 0.0 {
            self.error(path, "expected a whole number");
            return None;
        }
        Some(n as u64)
    }

    fn seconds(&mut self, path: &str, v: &Value) -> Option<String> {
        let n = self.number(path, v)?;
        if n == 0.0 {
            self.error(path, "must be a positive number of seconds");
            return None;
        }
        Some(duration(n))
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::String(t) if t.eq_ignore_ascii_case("true") => Some(true),
            Value::String(t) if t.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.error(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn document(&mut self, doc: &Value) {
        let Some(root) = doc.as_mapping() else {
            self.error("", "expected a mapping at the top level");
            return;
        };
        for k in root.keys() {
            match k.as_str() {
                Some(key) if TOP_KEYS.contains(&key) => {}
                Some(key) => self.unsupported("", key, TOP_KEYS),
                None => self.error("", "keys must be strings"),
            }
        }
        match root.get("model_list") {
            Some(Value::Sequence(entries)) => {
                if entries.is_empty() {
                    self.error("model_list", "the list must not be empty");
                }
                for (i, e) in entries.iter().enumerate() {
                    self.entry(i, e);
                }
            }
            Some(other) => self.error(
                "model_list",
                format!("expected a list of models, found {}", kind(other)),
            ),
            None => {}
        }
        for section in ["litellm_settings", "llm_settings"] {
            if let Some(v) = root.get(section) {
                self.settings(section, v, SETTINGS_KEYS);
            }
        }
        if let Some(v) = root.get("router_settings") {
            self.settings("router_settings", v, ROUTER_KEYS);
        }
        if let Some(v) = root.get("general_settings") {
            self.general(v);
        }
    }

    /// One `model_list` entry: a deployment of `model_name`.
    fn entry(&mut self, i: usize, entry: &Value) {
        let path = format!("model_list[{i}]");
        let Some(m) = entry.as_mapping() else {
            self.error(
                &path,
                format!(
                    "expected a mapping with model_name and litellm_params, found {}",
                    kind(entry)
                ),
            );
            return;
        };
        const ENTRY_KEYS: &[&str] = &[
            "model_name",
            "litellm_params",
            "llm_params",
            "model_info",
            "rpm",
            "tpm",
        ];
        for k in m.keys() {
            match k.as_str() {
                Some("model_info") => self.warn(
                    &join(&path, "model_info"),
                    "informational metadata in LiteLLM; not used by llmproxy: ignored",
                ),
                Some(key) if ENTRY_KEYS.contains(&key) => {}
                Some(key) => self.unsupported(&path, key, ENTRY_KEYS),
                None => self.error(&path, "keys must be strings"),
            }
        }
        let name_path = join(&path, "model_name");
        let name = match m.get("model_name") {
            Some(Value::String(n)) if !n.is_empty() => Some(n.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            None | Some(Value::Null) => {
                self.error(
                    &name_path,
                    "required key is missing: the name clients ask for",
                );
                None
            }
            Some(other) => {
                self.error(
                    &name_path,
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        };
        let (key, params) = match (m.get("litellm_params"), m.get("llm_params")) {
            (Some(p), None) => ("litellm_params", p),
            (None, Some(p)) => ("llm_params", p),
            (Some(_), Some(_)) => {
                self.error(&path, "both `litellm_params` and `llm_params`: use one");
                self.mark_broken(name);
                return;
            }
            (None, None) => {
                self.error(
                    &join(&path, "litellm_params"),
                    "required key is missing: the deployment, e.g. {model: openai/gpt-4o}",
                );
                self.mark_broken(name);
                return;
            }
        };
        let params_path = join(&path, key);
        let Some(p) = params.as_mapping() else {
            self.error(
                &params_path,
                format!("expected a mapping, found {}", kind(params)),
            );
            self.mark_broken(name);
            return;
        };
        // Entry-level rpm/tpm (LiteLLM accepts both places); litellm_params wins.
        let mut p = p.clone();
        let mut entry_fields = Vec::new();
        for limit in ["rpm", "tpm"] {
            if let Some(v) = m.get(limit) {
                if !p.contains_key(limit) {
                    p.insert(s(limit), v.clone());
                    entry_fields.push((limit, join(&path, limit)));
                }
            }
        }
        let Some(d) = self.deployment(&params_path, &p, &entry_fields) else {
            self.mark_broken(name);
            return;
        };
        let Some(name) = name else { return };
        let EntryOut {
            deployment,
            drop_params,
            pricing,
        } = d;
        let idx = match self.models.iter().position(|x| x.name == name) {
            Some(idx) => idx,
            None => {
                self.models.push(ModelOut {
                    name: name.clone(),
                    name_path,
                    ..ModelOut::default()
                });
                self.models.len() - 1
            }
        };
        if let Some((dp, dp_path)) = drop_params {
            let prev = self.models[idx].drop_params.clone();
            if prev.as_ref().is_some_and(|(v, _)| *v != dp) {
                self.warn(
                    &dp_path,
                    format!("deployments of `{name}` disagree on drop_params: llmproxy sets it per model, `{dp}` is used"),
                );
            }
            self.models[idx].drop_params = Some((dp, dp_path));
        }
        if let Some((price, price_path)) = pricing {
            match &self.models[idx].pricing {
                Some((first, _)) if *first != price => self.warn(
                    &price_path,
                    format!(
                        "llmproxy prices per model: `{name}` uses the first deployment's costs"
                    ),
                ),
                Some(_) => {}
                None => self.models[idx].pricing = Some((price, price_path)),
            }
        }
        self.models[idx].deployments.push(deployment);
    }

    fn mark_broken(&mut self, name: Option<String>) {
        if let Some(n) = name {
            self.broken.insert(n);
        }
    }

    /// `litellm_params` → a native deployment (and its upstream, shared with equal ones).
    fn deployment(
        &mut self,
        pp: &str,
        p: &Mapping,
        entry_fields: &[(&str, String)],
    ) -> Option<EntryOut> {
        let model_path = join(pp, "model");
        let model = match p.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) => {
                self.error(
                    &model_path,
                    format!(
                        "required key is missing: the provider and model, e.g. `openai/gpt-4o` or `azure/<deployment>` (providers: {})",
                        prefixes()
                    ),
                );
                return None;
            }
            Some(other) => {
                self.error(
                    &model_path,
                    format!("expected a string, found {}", kind(other)),
                );
                return None;
            }
        };
        for k in p.keys() {
            let Some(key) = k.as_str() else {
                self.error(pp, "keys must be strings");
                continue;
            };
            let known = PARAM_KEYS.contains(&key)
                || DEFAULT_PARAMS.contains(&key)
                || TEMPLATE_KEYS.contains(&key)
                || AWS_KEYS.iter().any(|(a, _)| *a == key);
            if !known {
                let mut all: Vec<&str> = PARAM_KEYS.to_vec();
                all.extend_from_slice(DEFAULT_PARAMS);
                self.unsupported(pp, key, &all);
            }
        }
        // `base_url` is a newer LiteLLM spelling of `api_base`.
        let api_base_key = if p.contains_key("base_url") && !p.contains_key("api_base") {
            "base_url"
        } else {
            "api_base"
        };
        let api_base_path = join(pp, api_base_key);
        let api_base = self.text(&api_base_path, p.get(api_base_key));
        let custom = self.text(
            &join(pp, "custom_llm_provider"),
            p.get("custom_llm_provider"),
        );
        let (spec, id) = match self.resolve(&model, custom.as_deref(), api_base.is_some()) {
            Ok(x) => x,
            Err(msg) => {
                let at = if custom.is_some() {
                    join(pp, "custom_llm_provider")
                } else {
                    model_path
                };
                self.error(&at, msg);
                return None;
            }
        };
        let mut up = Mapping::new();
        let mut fields: Vec<(&'static str, String)> = vec![("provider", model_path.clone())];
        // `openai/` with an api_base is any OpenAI-compatible server.
        let native = match (spec.native, &api_base) {
            ("openai", Some(b)) if !b.contains("api.openai.com") => "openai_compatible",
            (n, _) => n,
        };
        up.insert(s("provider"), s(native));
        // url
        let url = match (&api_base, spec) {
            (Some(b), _) => {
                fields.push(("url", api_base_path.clone()));
                Some(
                    if spec.v1_under_root && !b.contains("${") && url_path_is_empty(b) {
                        format!("{}/v1", b.trim_end_matches('/'))
                    } else {
                        b.clone()
                    },
                )
            }
            (
                None,
                ProviderSpec {
                    base_url: Some(u), ..
                },
            ) => Some(u.to_string()),
            (
                None,
                ProviderSpec {
                    base_env: Some(e), ..
                },
            ) => {
                fields.push(("url", api_base_path.clone()));
                Some(format!("${{{e}}}"))
            }
            (None, _) if spec.auth == AuthStyle::Gcp => {
                let project = self
                    .text(&join(pp, "vertex_project"), p.get("vertex_project"))
                    .unwrap_or_else(|| "${VERTEXAI_PROJECT}".into());
                let location = self
                    .text(&join(pp, "vertex_location"), p.get("vertex_location"))
                    .unwrap_or_else(|| "${VERTEXAI_LOCATION:-us-central1}".into());
                fields.push(("url", join(pp, "vertex_project")));
                Some(format!("https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google"))
            }
            // bedrock: derived from the region.
            (None, _) if spec.auth == AuthStyle::AwsSigV4 => None,
            (None, _) => {
                self.error(
                    &api_base_path,
                    format!(
                        "required for `{}/` models: the server's base URL",
                        spec.prefix
                    ),
                );
                return None;
            }
        };
        if let Some(u) = url {
            up.insert(s("url"), s(&u));
        }
        // api_version (Azure only)
        let version_path = join(pp, "api_version");
        let version = self.text(&version_path, p.get("api_version"));
        if spec.native == "azure" {
            up.insert(
                s("api_version"),
                s(&version.unwrap_or_else(|| "${AZURE_API_VERSION:-2024-10-21}".into())),
            );
            fields.push(("api_version", version_path));
        } else if version.is_some() {
            self.warn(&version_path, "only used by azure/ models: ignored");
        }
        // auth
        let key_path = join(pp, "api_key");
        let key = self.text(&key_path, p.get("api_key"));
        let ad_token = self.text(&join(pp, "azure_ad_token"), p.get("azure_ad_token"));
        let key_or_env = key
            .clone()
            .or_else(|| spec.key_env.map(|e| format!("${{{e}:-}}")));
        let mut auth = Mapping::new();
        let mut auth_path = key_path.clone();
        match spec.auth {
            _ if spec.native == "azure" && ad_token.is_some() => {
                if key.is_some() {
                    self.warn(&key_path, "azure_ad_token is used: api_key ignored");
                }
                auth_path = join(pp, "azure_ad_token");
                auth.insert(s("type"), s("bearer"));
                auth.insert(s("token"), s(&ad_token.clone().unwrap_or_default()));
            }
            AuthStyle::Bearer => {
                if let Some(k) = key_or_env {
                    auth.insert(s("type"), s("bearer"));
                    auth.insert(s("token"), s(&k));
                }
            }
            AuthStyle::Header(h) => {
                if let Some(k) = key_or_env {
                    auth.insert(s("type"), s("header"));
                    auth.insert(s("name"), s(h));
                    auth.insert(s("value"), s(&k));
                }
            }
            AuthStyle::Optional => {
                if let Some(k) = &key {
                    auth.insert(s("type"), s("bearer"));
                    auth.insert(s("token"), s(k));
                }
            }
            AuthStyle::AwsSigV4 => {
                auth_path = pp.to_string();
                auth.insert(s("type"), s("aws_sigv4"));
                let region = self
                    .text(&join(pp, "aws_region_name"), p.get("aws_region_name"))
                    .unwrap_or_else(|| {
                        if self.env.var("AWS_REGION_NAME").is_none()
                            && self.env.var("AWS_REGION").is_some()
                        {
                            "${AWS_REGION}".into()
                        } else {
                            "${AWS_REGION_NAME}".into()
                        }
                    });
                auth.insert(s("region"), s(&region));
                for (from, to) in AWS_KEYS {
                    if let Some(v) = self.text(&join(pp, from), p.get(*from)) {
                        auth.insert(s(to), s(&v));
                    }
                }
            }
            AuthStyle::Gcp => {
                auth_path = join(pp, "vertex_credentials");
                auth.insert(s("type"), s("gcp"));
                if let Some(c) = self.text(&auth_path, p.get("vertex_credentials")) {
                    if c.trim_start().starts_with('{') {
                        self.error(
                            &auth_path,
                            "llmproxy reads Google credentials from a file: give the path of the service account JSON file",
                        );
                    }
                    auth.insert(s("credentials_file"), s(&c));
                }
            }
        }
        if auth.is_empty() {
            auth.insert(s("type"), s("none"));
        }
        if key.is_some() && matches!(spec.auth, AuthStyle::AwsSigV4 | AuthStyle::Gcp) {
            self.warn(
                &key_path,
                format!(
                    "`{}/` models authenticate with their own credentials: api_key ignored",
                    spec.prefix
                ),
            );
        }
        up.insert(s("auth"), Value::Mapping(auth));
        fields.push(("auth", auth_path));
        // provider-specific keys used elsewhere
        if spec.auth != AuthStyle::AwsSigV4 {
            for (k, _) in AWS_KEYS.iter().chain([("aws_region_name", "")].iter()) {
                if p.contains_key(*k) {
                    self.warn(&join(pp, k), "only used by bedrock/ models: ignored");
                }
            }
        }
        if spec.auth != AuthStyle::Gcp {
            for k in ["vertex_project", "vertex_location", "vertex_credentials"] {
                if p.contains_key(k) {
                    self.warn(&join(pp, k), "only used by vertex_ai/ models: ignored");
                }
            }
        }
        if ad_token.is_some() && spec.native != "azure" {
            self.warn(
                &join(pp, "azure_ad_token"),
                "only used by azure/ models: ignored",
            );
        }
        // prompt template (huggingface/ raw text generation)
        let mut template = Mapping::new();
        for k in TEMPLATE_KEYS {
            if let Some(v) = p.get(*k) {
                if spec.native == "text_generation" {
                    let v = self.value(v);
                    template.insert(s(k), v);
                } else {
                    self.warn(
                        &join(pp, k),
                        "a prompt template is only used by huggingface/ models: ignored",
                    );
                }
            }
        }
        if !template.is_empty() {
            up.insert(s("prompt_template"), Value::Mapping(template));
            fields.push(("prompt_template", pp.to_string()));
        }
        // per-deployment timeout: the upstream's request timeout
        let timeout_path = join(pp, "timeout");
        if let Some(t) = p
            .get("timeout")
            .and_then(|v| self.seconds(&timeout_path, v))
        {
            let mut client = Mapping::new();
            client.insert(s("request_timeout"), s(&t));
            up.insert(s("client"), Value::Mapping(client));
            fields.push(("client", timeout_path));
        }
        let upstream = self.upstream(spec, up, fields, pp, &model, api_base.as_deref());

        // the deployment
        let mut d = Mapping::new();
        let mut dfields = Vec::new();
        d.insert(s("upstream"), s(&upstream));
        d.insert(s("model"), s(&id));
        let weight = p
            .get("weight")
            .and_then(|v| self.count(&join(pp, "weight"), v));
        if let Some(w) = weight {
            d.insert(s("weight"), Value::from(w));
            dfields.push(("weight".to_string(), join(pp, "weight")));
        }
        let mut rpm = None;
        for limit in ["rpm", "tpm"] {
            let lp = entry_fields
                .iter()
                .find(|(k, _)| *k == limit)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| join(pp, limit));
            if let Some(n) = p.get(limit).and_then(|v| self.count(&lp, v)) {
                d.insert(s(limit), Value::from(n));
                dfields.push((limit.to_string(), lp));
                if limit == "rpm" {
                    rpm = Some(n);
                }
            }
        }
        let mut params = Mapping::new();
        for k in DEFAULT_PARAMS {
            if let Some(v) = p.get(*k) {
                if !v.is_null() {
                    let v = self.value(v);
                    params.insert(s(k), v);
                    dfields.push((format!("params.{k}"), join(pp, k)));
                }
            }
        }
        if !params.is_empty() {
            d.insert(s("params"), Value::Mapping(params));
        }
        let mut headers = Mapping::new();
        if let Some(org) = self.text(&join(pp, "organization"), p.get("organization")) {
            headers.insert(s("OpenAI-Organization"), s(&org));
            dfields.push((
                "headers.OpenAI-Organization".into(),
                join(pp, "organization"),
            ));
        }
        match p.get("extra_headers") {
            Some(Value::Mapping(h)) => {
                for (k, v) in h {
                    let name = k.as_str().unwrap_or_default().to_string();
                    let v = match v {
                        Value::Number(n) => s(&n.to_string()),
                        other => self.value(other),
                    };
                    dfields.push((
                        format!("headers.{name}"),
                        join(&join(pp, "extra_headers"), &name),
                    ));
                    headers.insert(k.clone(), v);
                }
            }
            Some(Value::Null) | None => {}
            Some(other) => self.error(
                &join(pp, "extra_headers"),
                format!(
                    "expected a mapping of header names to values, found {}",
                    kind(other)
                ),
            ),
        }
        if !headers.is_empty() {
            d.insert(s("headers"), Value::Mapping(headers));
        }
        let dp_path = join(pp, "drop_params");
        let drop_params = p
            .get("drop_params")
            .and_then(|v| self.boolean(&dp_path, v))
            .map(|b| (b, dp_path));
        let pricing = self.pricing(pp, p);
        Some(EntryOut {
            deployment: DeploymentOut {
                body: d,
                fields: dfields,
                source: pp.to_string(),
                rpm,
                weighted: weight.is_some(),
            },
            drop_params,
            pricing,
        })
    }

    /// `input_cost_per_token` / `output_cost_per_token` (USD per token) → native pricing (per
    /// million tokens).
    fn pricing(&mut self, pp: &str, p: &Mapping) -> Option<(Mapping, String)> {
        let input = p.get("input_cost_per_token");
        let output = p.get("output_cost_per_token");
        if input.is_none() && output.is_none() {
            return None;
        }
        let ip = join(pp, "input_cost_per_token");
        let op = join(pp, "output_cost_per_token");
        let i = match input {
            Some(v) => self.number(&ip, v)?,
            None => 0.0,
        };
        let o = match output {
            Some(v) => self.number(&op, v)?,
            None => 0.0,
        };
        let mut m = Mapping::new();
        m.insert(s("input_per_mtok"), Value::from(per_million(i)));
        m.insert(s("output_per_mtok"), Value::from(per_million(o)));
        Some((m, if input.is_some() { ip } else { op }))
    }

    /// Which provider a LiteLLM `model` names, and the model id the provider knows.
    fn resolve(
        &self,
        model: &str,
        custom: Option<&str>,
        has_base: bool,
    ) -> Result<(&'static ProviderSpec, String), String> {
        if let Some(c) = custom {
            let spec = provider(c).ok_or_else(|| unknown_provider(c, model))?;
            let id = model
                .strip_prefix(c)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(model);
            return Ok((spec, id.to_string()));
        }
        if let Some((prefix, id)) = model.split_once('/') {
            if let Some(spec) = provider(prefix) {
                if id.is_empty() {
                    return Err(format!("`{model}` names no model after `{prefix}/`"));
                }
                return Ok((spec, id.to_string()));
            }
            if infer_provider(model).is_none() {
                return Err(unknown_provider(prefix, model));
            }
        }
        match infer_provider(model) {
            Some(spec) => Ok((spec, model.to_string())),
            None => Err(format!(
                "cannot tell the provider of `{model}`: write it as `<provider>/{model}`{} (providers: {})",
                if has_base {
                    format!(", e.g. `openai/{model}` for an OpenAI-compatible server")
                } else {
                    String::new()
                },
                prefixes()
            )),
        }
    }

    /// The name of the upstream for these settings: an equal one already made, or a new one.
    fn upstream(
        &mut self,
        spec: &ProviderSpec,
        body: Mapping,
        fields: Vec<(&'static str, String)>,
        source: &str,
        model: &str,
        api_base: Option<&str>,
    ) -> String {
        if let Some(u) = self.upstreams.iter().find(|u| u.body == body) {
            return u.name.clone();
        }
        let base = match api_base.and_then(host_label) {
            Some(h) => format!("{}-{h}", spec.prefix),
            None => spec.prefix.to_string(),
        };
        let mut name = base.clone();
        let mut n = 2;
        while self.upstreams.iter().any(|u| u.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let native_provider = match body.get("provider").and_then(Value::as_str) {
            Some("openai_compatible") => "openai_compatible",
            _ => spec.native,
        };
        self.upstreams.push(UpstreamOut {
            name: name.clone(),
            body,
            fields,
            source: source.to_string(),
            native_provider,
            model: model.to_string(),
        });
        name
    }

    /// `litellm_settings` / `llm_settings` / `router_settings`.
    fn settings(&mut self, path: &str, v: &Value, known: &[&str]) {
        let Some(m) = v.as_mapping() else {
            if !v.is_null() {
                self.error(path, format!("expected a mapping, found {}", kind(v)));
            }
            return;
        };
        for (k, v) in m {
            let Some(key) = k.as_str() else {
                self.error(path, "keys must be strings");
                continue;
            };
            let p = join(path, key);
            if !known.contains(&key) {
                self.unsupported(path, key, known);
                continue;
            }
            match key {
                "drop_params" => {
                    if let Some(b) = self.boolean(&p, v) {
                        self.drop_params = Some((b, p));
                    }
                }
                "set_verbose" => {
                    let on = self.boolean(&p, v) == Some(true);
                    if on {
                        self.debug = Some(p);
                    }
                }
                "num_retries" => {
                    if let Some(n) = self.count(&p, v) {
                        if n > 19 {
                            self.error(&p, "at most 19 retries (20 attempts)");
                        } else {
                            self.settings.attempts = Some((n + 1, p));
                        }
                    }
                }
                "request_timeout" | "timeout" => {
                    if let Some(t) = self.seconds(&p, v) {
                        self.settings.timeout = Some((t.clone(), p.clone()));
                        self.upstream_timeout = Some((t, p));
                    }
                }
                "allowed_fails" => {
                    if let Some(n) = self.count(&p, v) {
                        self.settings.allowed_fails = Some((n, p));
                    }
                }
                "cooldown_time" => {
                    if let Some(t) = self.seconds(&p, v) {
                        self.settings.cooldown = Some((t, p));
                    }
                }
                "fallbacks" | "context_window_fallbacks" => self.fallbacks(&p, key, v),
                "default_fallbacks" => {
                    let targets = self.targets(&p, v);
                    self.settings.default_fallbacks.extend(targets);
                }
                "cache" => self.cache(path, &p, v, m.get("cache_params")),
                "cache_params" if !m.contains_key("cache") => {
                    self.warn(&p, "without `cache: true` no response is cached: ignored");
                }
                "success_callback" | "failure_callback" | "callbacks" => self.callbacks(&p, v),
                // llmproxy never sends telemetry anywhere: `telemetry: false` is what it does.
                "telemetry" => {}
                "add_function_to_prompt" => {
                    if let Some(b) = self.boolean(&p, v) {
                        self.settings.add_function_to_prompt = Some((b, p));
                    }
                }
                "routing_strategy" => {
                    let strategy = match v.as_str() {
                        Some("simple-shuffle") => Some("random"),
                        Some("least-busy") => Some("least_busy"),
                        Some(other) => {
                            self.warn(&p, format!("`{other}` is not supported by llmproxy (simple-shuffle, least-busy): the default weighted round robin is used"));
                            None
                        }
                        None => {
                            self.error(&p, format!("expected a string, found {}", kind(v)));
                            None
                        }
                    };
                    if let Some(st) = strategy {
                        self.settings.strategy = Some((st, p));
                    }
                }
                // redis_port and redis_password are read with redis_host.
                "redis_host" | "redis_url" => {
                    if let Some(u) = self.redis_url(path, Some(m)) {
                        self.redis = Some((u, p));
                    }
                }
                _ => {}
            }
        }
    }

    /// `fallbacks: [{"gpt-4": ["gpt-3.5"]}]`.
    fn fallbacks(&mut self, path: &str, key: &str, v: &Value) {
        let Some(rules) = v.as_sequence() else {
            if !v.is_null() {
                self.error(
                    path,
                    format!(
                        "expected a list like [{{\"gpt-4\": [\"gpt-3.5-turbo\"]}}], found {}",
                        kind(v)
                    ),
                );
            }
            return;
        };
        for (k, rule) in rules.iter().enumerate() {
            let rp = format!("{path}[{k}]");
            let Some(m) = rule.as_mapping() else {
                self.error(
                    &rp,
                    format!(
                        "expected a mapping like {{\"gpt-4\": [\"gpt-3.5-turbo\"]}}, found {}",
                        kind(rule)
                    ),
                );
                continue;
            };
            for (from, to) in m {
                let Some(from) = from.as_str().map(str::to_string) else {
                    self.error(&rp, "model names must be strings");
                    continue;
                };
                let fp = join(&rp, &from);
                let targets = self.targets(&fp, to);
                if self.broken.contains(&from) {
                    continue;
                }
                let Some(model) = self.models.iter_mut().find(|m| m.name == from) else {
                    let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
                    let hint = nearest(&from, &names)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.error(
                        &fp,
                        format!("unknown model `{from}`{hint}: not a model_name of model_list"),
                    );
                    continue;
                };
                if key == "fallbacks" {
                    model.fallbacks.extend(targets);
                } else {
                    model.context_window_fallbacks.extend(targets);
                }
            }
        }
    }

    /// A list of model names (or one name), each with its path; models whose entries failed are
    /// left out (their error is already reported).
    fn targets(&mut self, path: &str, v: &Value) -> Vec<(String, String)> {
        let items: Vec<(Value, String)> = match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(j, t)| (t.clone(), format!("{path}[{j}]")))
                .collect(),
            Value::String(_) => vec![(v.clone(), path.to_string())],
            other => {
                self.error(
                    path,
                    format!("expected a list of model names, found {}", kind(other)),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (t, p) in items {
            match t.as_str() {
                Some(name) if self.broken.contains(name) => {}
                Some(name) => out.push((name.to_string(), p)),
                None => self.error(&p, format!("expected a model name, found {}", kind(&t))),
            }
        }
        out
    }

    /// `cache: true` (with `cache_params`), or the older `cache: {type: redis}`.
    fn cache(&mut self, section: &str, path: &str, v: &Value, params: Option<&Value>) {
        let params_path = join(section, "cache_params");
        let (on, params, params_path) = match v {
            Value::Bool(b) => (*b, params, params_path),
            Value::Mapping(_) => (true, Some(v), path.to_string()),
            Value::Null => (false, None, params_path),
            other => {
                self.error(
                    path,
                    format!("expected true, false or a mapping, found {}", kind(other)),
                );
                return;
            }
        };
        if !on {
            return;
        }
        let empty = Mapping::new();
        let pm = match params {
            Some(Value::Mapping(m)) => m,
            Some(Value::Null) | None => &empty,
            Some(other) => {
                self.error(
                    &params_path,
                    format!("expected a mapping, found {}", kind(other)),
                );
                return;
            }
        };
        const KEYS: &[&str] = &["type", "host", "port", "password", "url", "ttl"];
        for k in pm.keys().filter_map(Value::as_str) {
            if !KEYS.contains(&k) {
                self.unsupported(&params_path, k, KEYS);
            }
        }
        let redis_known = pm.contains_key("host")
            || pm.contains_key("url")
            || self.env.var("REDIS_HOST").is_some()
            || self.env.var("REDIS_URL").is_some();
        let kind = match pm.get("type").and_then(Value::as_str) {
            Some("redis") => "redis",
            Some("local") => "local",
            Some(other) => {
                self.warn(
                    &join(&params_path, "type"),
                    format!("cache type `{other}` is not supported by llmproxy (local, redis): responses are not cached"),
                );
                return;
            }
            None if redis_known => "redis",
            None => {
                self.warn(path, "no Redis is configured (REDIS_HOST or cache_params.host): responses are cached in this process's memory");
                "local"
            }
        };
        let ttl_path = join(&params_path, "ttl");
        let ttl = pm.get("ttl").and_then(|v| self.seconds(&ttl_path, v));
        let redis = kind == "redis";
        if redis {
            match self.redis_url(&params_path, Some(pm)) {
                Some(u) => self.redis = Some((u, path.to_string())),
                None => {
                    self.error(path, "a redis cache needs REDIS_HOST (and REDIS_PORT, REDIS_PASSWORD) in the environment or environment_variables, or cache_params.host");
                    return;
                }
            }
        }
        self.cache = Some(CacheOut {
            redis,
            ttl,
            path: path.to_string(),
        });
    }

    /// `redis://[:password@]host:port/0` from `host`/`port`/`password` (or `url`) in `params`,
    /// else `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD` (or `REDIS_URL`) as references.
    fn redis_url(&mut self, path: &str, params: Option<&Mapping>) -> Option<String> {
        let get = |k: &str| {
            params.and_then(|m| m.get(k).or_else(|| m.get(format!("redis_{k}").as_str())))
        };
        let (url_v, host_v, port_v, pw_v) = (get("url"), get("host"), get("port"), get("password"));
        if let Some(u) = self.text(&join(path, "url"), url_v) {
            return Some(u);
        }
        let host = match self.text(&join(path, "host"), host_v) {
            Some(h) => h,
            None if self.env.var("REDIS_HOST").is_some() => "${REDIS_HOST}".into(),
            None if self.env.var("REDIS_URL").is_some() => return Some("${REDIS_URL}".into()),
            None => return None,
        };
        let port = match self.text(&join(path, "port"), port_v) {
            Some(p) => p,
            None if self.env.var("REDIS_PORT").is_some_and(|v| !v.is_empty()) => {
                "${REDIS_PORT}".into()
            }
            None => "6379".into(),
        };
        let password = match self.text(&join(path, "password"), pw_v) {
            Some(p) => Some(p),
            None if self
                .env
                .var("REDIS_PASSWORD")
                .is_some_and(|v| !v.is_empty()) =>
            {
                Some("${REDIS_PASSWORD}".into())
            }
            None => None,
        };
        Some(match password {
            Some(pw) => format!("redis://:{pw}@{host}:{port}/0"),
            None => format!("redis://{host}:{port}/0"),
        })
    }

    /// `success_callback: ["langfuse", "otel"]` → the native `tracing` section.
    fn callbacks(&mut self, path: &str, v: &Value) {
        let items: Vec<(String, String)> = match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(j, i)| i.as_str().map(|s| (s.to_string(), format!("{path}[{j}]"))))
                .collect(),
            Value::String(c) => vec![(c.clone(), path.to_string())],
            Value::Null => Vec::new(),
            other => {
                self.error(
                    path,
                    format!("expected a list of callback names, found {}", kind(other)),
                );
                return;
            }
        };
        for (name, p) in items {
            match name.as_str() {
                "otel" | "opentelemetry" => self.otel = Some(p),
                "langfuse" => self.langfuse = Some(p),
                other => self.warn(
                    &p,
                    format!(
                        "callback `{other}` is not supported by llmproxy (otel, langfuse): ignored"
                    ),
                ),
            }
        }
    }

    /// `general_settings`.
    fn general(&mut self, v: &Value) {
        let path = "general_settings";
        let Some(m) = v.as_mapping() else {
            if !v.is_null() {
                self.error(path, format!("expected a mapping, found {}", kind(v)));
            }
            return;
        };
        for (k, v) in m {
            let Some(key) = k.as_str() else {
                self.error(path, "keys must be strings");
                continue;
            };
            let p = join(path, key);
            match key {
                "master_key" => {
                    if let Some(t) = self.text(&p, Some(v)) {
                        self.master_key = Some((s(&t), p));
                    }
                }
                "database_url" => {
                    if let Some(t) = self.text(&p, Some(v)) {
                        self.database = Some((s(&t), p));
                    }
                }
                "otel" => {
                    if self.boolean(&p, v) == Some(true) {
                        self.otel = Some(p);
                    }
                }
                "health_check_interval" => {
                    if let Some(t) = self.seconds(&p, v) {
                        if self.health_interval.is_none() {
                            self.health_interval = Some((t, p));
                        }
                    }
                }
                "background_health_checks" => {
                    if self.boolean(&p, v) == Some(false) {
                        self.health_interval = Some(("0s".into(), p));
                    }
                }
                other => self.unsupported(path, other, GENERAL_KEYS),
            }
        }
    }

    /// The native document, the native → LiteLLM path map and each upstream's source.
    fn assemble(&mut self) -> Assembled {
        let mut paths: Vec<(String, String)> = Vec::new();
        let mut doc = Mapping::new();

        let mut listener = Mapping::new();
        listener.insert(s("name"), s("main"));
        listener.insert(s("listen"), s("0.0.0.0:4000"));
        let mut server = Mapping::new();
        server.insert(
            s("listeners"),
            Value::Sequence(vec![Value::Mapping(listener)]),
        );
        if let Some((k, p)) = self.master_key.take() {
            server.insert(s("master_key"), k);
            paths.push(("server.master_key".into(), p));
        }
        doc.insert(s("server"), Value::Mapping(server));
        let mut admin = Mapping::new();
        admin.insert(s("listen"), s("127.0.0.1:9000"));
        doc.insert(s("admin"), Value::Mapping(admin));

        let mut state = Mapping::new();
        if let Some((u, p)) = self.redis.take() {
            state.insert(s("redis"), s(&u));
            paths.push(("state.redis".into(), p));
        }
        if let Some((d, p)) = self.database.take() {
            state.insert(s("database"), d);
            paths.push(("state.database".into(), p));
        }
        if !state.is_empty() {
            doc.insert(s("state"), Value::Mapping(state));
        }

        let mut upstreams = Vec::new();
        let mut sources = Vec::new();
        for (k, u) in self.upstreams.iter().enumerate() {
            let mut m = Mapping::new();
            m.insert(s("name"), s(&u.name));
            for (key, v) in &u.body {
                m.insert(key.clone(), v.clone());
            }
            if let Some((t, p)) = &self.upstream_timeout {
                if !m.contains_key("client") {
                    let mut client = Mapping::new();
                    client.insert(s("request_timeout"), s(t));
                    m.insert(s("client"), Value::Mapping(client));
                    paths.push((format!("upstreams[{k}].client"), p.clone()));
                }
            }
            if let Some((t, p)) = &self.health_interval {
                let mut hc = Mapping::new();
                hc.insert(s("interval"), s(t));
                m.insert(s("health_check"), Value::Mapping(hc));
                paths.push((format!("upstreams[{k}].health_check"), p.clone()));
            }
            paths.push((format!("upstreams[{k}]"), u.source.clone()));
            for (field, p) in &u.fields {
                paths.push((format!("upstreams[{k}].{field}"), p.clone()));
            }
            sources.push((u.native_provider, u.model.clone(), u.name.clone()));
            upstreams.push(Value::Mapping(m));
        }
        if !upstreams.is_empty() {
            doc.insert(s("upstreams"), Value::Sequence(upstreams));
        }

        let st = &self.settings;
        let mut models = Vec::new();
        for (i, model) in self.models.iter().enumerate() {
            let mp = format!("models[{i}]");
            let mut m = Mapping::new();
            m.insert(s("name"), s(&model.name));
            paths.push((mp.clone(), model.name_path.clone()));
            if let Some((strategy, p)) = &st.strategy {
                m.insert(s("strategy"), s(strategy));
                paths.push((format!("{mp}.strategy"), p.clone()));
            }
            // LiteLLM's simple-shuffle weighs deployments by rpm when none has a weight.
            let rpm_weights = if model.deployments.len() > 1
                && model
                    .deployments
                    .iter()
                    .all(|d| !d.weighted && d.rpm.is_some())
            {
                rpm_weights(
                    &model
                        .deployments
                        .iter()
                        .filter_map(|d| d.rpm)
                        .collect::<Vec<_>>(),
                )
            } else {
                Vec::new()
            };
            let mut deployments = Vec::new();
            for (j, d) in model.deployments.iter().enumerate() {
                let dp = format!("{mp}.deployments[{j}]");
                let mut body = d.body.clone();
                if let Some(w) = rpm_weights.get(j) {
                    body.insert(s("weight"), Value::from(*w));
                }
                paths.push((dp.clone(), d.source.clone()));
                for (field, p) in &d.fields {
                    paths.push((format!("{dp}.{field}"), p.clone()));
                }
                deployments.push(Value::Mapping(body));
            }
            m.insert(s("deployments"), Value::Sequence(deployments));
            if let Some((n, p)) = &st.attempts {
                let mut retry = Mapping::new();
                retry.insert(s("attempts"), Value::from(*n));
                m.insert(s("retry"), Value::Mapping(retry));
                paths.push((format!("{mp}.retry"), p.clone()));
            }
            if st.allowed_fails.is_some() || st.cooldown.is_some() {
                let mut c = Mapping::new();
                if let Some((n, p)) = &st.allowed_fails {
                    // LiteLLM cools a deployment down when it fails *more than* allowed_fails
                    // times a minute; llmproxy's allowed_fails is the failure that triggers it.
                    c.insert(s("allowed_fails"), Value::from(n + 1));
                    c.insert(s("window"), s("60s"));
                    paths.push((format!("{mp}.cooldown.allowed_fails"), p.clone()));
                    paths.push((format!("{mp}.cooldown.window"), p.clone()));
                }
                if let Some((t, p)) = &st.cooldown {
                    c.insert(s("duration"), s(t));
                    paths.push((format!("{mp}.cooldown.duration"), p.clone()));
                }
                m.insert(s("cooldown"), Value::Mapping(c));
            }
            let mut fallbacks = model.fallbacks.clone();
            for (t, p) in &st.default_fallbacks {
                if *t != model.name && !fallbacks.iter().any(|(f, _)| f == t) {
                    fallbacks.push((t.clone(), p.clone()));
                }
            }
            for (key, list) in [
                ("fallbacks", &fallbacks),
                ("context_window_fallbacks", &model.context_window_fallbacks),
            ] {
                if list.is_empty() {
                    continue;
                }
                let mut seq = Vec::new();
                for (j, (t, p)) in list.iter().enumerate() {
                    seq.push(s(t));
                    paths.push((format!("{mp}.{key}[{j}]"), p.clone()));
                }
                paths.push((format!("{mp}.{key}"), list[0].1.clone()));
                m.insert(s(key), Value::Sequence(seq));
            }
            if let Some((t, p)) = &st.timeout {
                m.insert(s("timeout"), s(t));
                paths.push((format!("{mp}.timeout"), p.clone()));
            }
            if let Some(c) = &self.cache {
                let mut mc = Mapping::new();
                mc.insert(s("enabled"), Value::Bool(true));
                // LiteLLM caches every request (the key includes temperature), not only
                // deterministic ones.
                mc.insert(s("only_deterministic"), Value::Bool(false));
                if let Some(t) = &c.ttl {
                    mc.insert(s("ttl"), s(t));
                }
                m.insert(s("cache"), Value::Mapping(mc));
                paths.push((format!("{mp}.cache"), c.path.clone()));
            }
            if let Some((price, p)) = &model.pricing {
                m.insert(s("pricing"), Value::Mapping(price.clone()));
                paths.push((format!("{mp}.pricing"), p.clone()));
            }
            if let Some((b, p)) = &model.drop_params {
                m.insert(s("drop_params"), Value::Bool(*b));
                paths.push((format!("{mp}.drop_params"), p.clone()));
            }
            if let Some((b, p)) = &st.add_function_to_prompt {
                m.insert(s("add_function_to_prompt"), Value::Bool(*b));
                paths.push((format!("{mp}.add_function_to_prompt"), p.clone()));
            }
            models.push(Value::Mapping(m));
        }
        if !models.is_empty() {
            doc.insert(s("models"), Value::Sequence(models));
        }

        if let Some(c) = &self.cache {
            if c.redis {
                let mut cache = Mapping::new();
                cache.insert(s("backend"), s("redis"));
                doc.insert(s("cache"), Value::Mapping(cache));
                paths.push(("cache".into(), c.path.clone()));
            }
        }
        if let Some(p) = self.debug.take() {
            let mut logging = Mapping::new();
            logging.insert(s("level"), s("debug"));
            doc.insert(s("logging"), Value::Mapping(logging));
            paths.push(("logging".into(), p));
        }
        let mut tracing = Mapping::new();
        if let Some(p) = self.otel.take() {
            tracing.insert(s("otlp_endpoint"), s(&self.otlp_endpoint()));
            paths.push(("tracing.otlp_endpoint".into(), p));
        }
        if let Some(p) = self.langfuse.take() {
            let mut lf = Mapping::new();
            lf.insert(s("host"), s("${LANGFUSE_HOST:-https://cloud.langfuse.com}"));
            lf.insert(s("public_key"), s("${LANGFUSE_PUBLIC_KEY}"));
            lf.insert(s("secret_key"), s("${LANGFUSE_SECRET_KEY}"));
            tracing.insert(s("langfuse"), Value::Mapping(lf));
            paths.push(("tracing.langfuse".into(), p));
        }
        if !tracing.is_empty() {
            doc.insert(s("tracing"), Value::Mapping(tracing));
        }
        if let Some((b, p)) = self.drop_params.take() {
            doc.insert(s("drop_params"), Value::Bool(b));
            paths.push(("drop_params".into(), p));
        }
        Assembled {
            native: Value::Mapping(doc),
            paths,
            sources,
        }
    }

    /// Where OpenTelemetry spans go: the standard OTLP variables (the traces endpoint, or the
    /// base endpoint + `/v1/traces`), LiteLLM's `OTEL_ENDPOINT` when it is an HTTP URL, else a
    /// collector on this host.
    fn otlp_endpoint(&self) -> String {
        if self.env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
            return "${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT}".into();
        }
        for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_ENDPOINT"] {
            if let Some(v) = self.env.var(name).filter(|v| v.starts_with("http")) {
                return if v.trim_end_matches('/').ends_with("/v1/traces") {
                    format!("${{{name}}}")
                } else if v.ends_with('/') {
                    format!("${{{name}}}v1/traces")
                } else {
                    format!("${{{name}}}/v1/traces")
                };
            }
        }
        "http://127.0.0.1:4318/v1/traces".into()
    }
}

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

/// `llmproxy --model provider/id` without a config: a one-entry `model_list` (seed 002's quick
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
mod tests {
    use super::*;
    use crate::config::{parse, Auth};
    use std::time::Duration;

    struct MapEnv(Vec<(&'static str, &'static str)>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }
    fn no_env() -> MapEnv {
        MapEnv(Vec::new())
    }

    fn errors(text: &str, env: &dyn Env) -> String {
        parse(text, env).unwrap_err().to_string()
    }

    fn warnings(text: &str, env: &dyn Env) -> String {
        let doc: Value = serde_yaml::from_str(text).unwrap();
        crate::config::from_value(&doc, env, &Default::default())
            .warnings
            .to_string()
    }

    fn header(auth: &Auth) -> (String, String) {
        match auth {
            Auth::Header { name, value } => (name.to_string(), value.expose().to_string()),
            Auth::None | Auth::Gcp { .. } => (String::new(), String::new()),
        }
    }

    /// Seed 002's load-balancing example, as written (`llm_params`, empty `api_key`).
    const SEED_MULTI: &str = r#"
model_list:
  - model_name: gpt-3.5-turbo
    llm_params:
      model: azure/gpt-turbo-small-eu
      api_base: https://my-endpoint-europe-berri-992.openai.azure.com/
      api_key:
      rpm: 6      # Rate limit for this deployment: in requests per minute (rpm)
  - model_name: gpt-3.5-turbo
    llm_params:
      model: azure/gpt-turbo-small-ca
      api_base: https://my-endpoint-canada-berri992.openai.azure.com/
      api_key:
      rpm: 6
  - model_name: gpt-3.5-turbo
    llm_params:
      model: azure/gpt-turbo-large
      api_base: https://openai-france-1234.openai.azure.com/
      api_key:
      rpm: 1440
"#;

    #[test]
    fn seed_multi_deployment_is_one_model_with_three_deployments() {
        let env = MapEnv(vec![("AZURE_API_KEY", "az-key")]);
        let cfg = parse(SEED_MULTI, &env).unwrap();
        assert_eq!(cfg.models.len(), 1);
        let m = &cfg.models[0];
        assert_eq!(m.name, "gpt-3.5-turbo");
        let deps: Vec<(&str, Option<u64>, usize)> = m
            .deployments
            .iter()
            .map(|d| (d.model.as_str(), d.rpm, d.weight))
            .collect();
        // simple-shuffle weighs by rpm when no deployment has a weight
        assert_eq!(
            deps,
            vec![
                ("gpt-turbo-small-eu", Some(6), 1),
                ("gpt-turbo-small-ca", Some(6), 1),
                ("gpt-turbo-large", Some(1440), 240)
            ]
        );
        assert_eq!(cfg.upstreams.len(), 3);
        for u in &cfg.upstreams {
            assert_eq!(u.provider.as_str(), "azure");
            assert_eq!(u.api_version.as_deref(), Some("2024-10-21"));
            assert_eq!(header(&u.auth), ("api-key".into(), "az-key".into()));
        }
        assert_eq!(
            cfg.upstreams[0].url.host,
            "my-endpoint-europe-berri-992.openai.azure.com"
        );
        assert_eq!(cfg.upstreams[0].name, "azure-my-endpoint-europe-berri-992");
        // LiteLLM's port and an admin listener on loopback
        assert_eq!(cfg.server.listeners[0].listen.to_string(), "0.0.0.0:4000");
        assert_eq!(cfg.admin.listen.to_string(), "127.0.0.1:9000");
        assert!(cfg.warnings.is_empty(), "{}", cfg.warnings);
    }

    #[test]
    fn rpm_weights_are_small_and_bounded() {
        assert_eq!(rpm_weights(&[6000, 6000, 12000]), [1, 1, 2]);
        assert_eq!(rpm_weights(&[7, 3]), [7, 3]);
        assert_eq!(rpm_weights(&[1, 5000]), [1, 1000]);
    }

    #[test]
    fn equal_upstreams_are_shared_and_different_keys_are_not() {
        let text = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:8001/v1", api_key: k1}}
  - {model_name: a, litellm_params: {model: openai/y, api_base: "http://127.0.0.1:8001/v1", api_key: k1}}
  - {model_name: b, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:8001/v1", api_key: k2}}
"#;
        let cfg = parse(text, &no_env()).unwrap();
        let names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["openai-127.0.0.1-8001", "openai-127.0.0.1-8001-2"]);
        assert_eq!(cfg.upstreams[0].provider.as_str(), "openai_compatible");
        assert_eq!(cfg.models[0].deployments.len(), 2);
        assert_eq!(cfg.models[0].deployments[0].upstream_idx, 0);
        assert_eq!(cfg.models[0].deployments[1].upstream_idx, 0);
        assert_eq!(cfg.models[1].deployments[0].upstream_idx, 1);
        assert_eq!(header(&cfg.upstreams[1].auth).1, "Bearer k2");
    }

    #[test]
    fn os_environ_values_and_environment_variables() {
        let text = r#"
model_list:
  - model_name: gpt-4-team1
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: https://openai-gpt-4-test-v-1.openai.azure.com/
      api_version: "2023-05-15"
      api_key: os.environ/AZURE_NORTH_AMERICA_API_KEY
"#;
        let all = errors(text, &no_env());
        assert_eq!(
            all,
            "model_list[0].litellm_params.api_key: environment variable `AZURE_NORTH_AMERICA_API_KEY` is not set (read by `os.environ/AZURE_NORTH_AMERICA_API_KEY`)"
        );
        let env = MapEnv(vec![("AZURE_NORTH_AMERICA_API_KEY", "from-env")]);
        let cfg = parse(text, &env).unwrap();
        assert_eq!(header(&cfg.upstreams[0].auth).1, "from-env");
        assert_eq!(cfg.upstreams[0].api_version.as_deref(), Some("2023-05-15"));
        // environment_variables are laid over the environment
        let with_vars =
            format!("{text}environment_variables:\n  AZURE_NORTH_AMERICA_API_KEY: from-file\n");
        let cfg = parse(&with_vars, &env).unwrap();
        assert_eq!(header(&cfg.upstreams[0].auth).1, "from-file");
        assert_eq!(cfg.environment[0].0, "AZURE_NORTH_AMERICA_API_KEY");
    }

    #[test]
    fn bad_entries_are_all_reported_at_their_litellm_paths() {
        let text = r#"
model_list:
  - model_name: a
    litellm_params: {model: cohere/command-r}
  - model_name: b
    litellm_params: {api_base: "http://127.0.0.1:1/v1"}
  - model_name: c
  - model_name: d
    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1", rpm: 0}
  - model_name: e
    litellm_params: {model: mystery-model}
  - model_name: f
    litellm_params: {model: azure/dep, api_base: "https://x.openai.azure.com/openai"}
litellm_settings:
  fallbacks: [{"a": ["d"]}, {"gpt-5": ["d"]}, {"d": ["nope"]}]
"#;
        let all = errors(text, &no_env());
        for needle in [
            "model_list[0].litellm_params.model: unknown or unsupported provider `cohere` in `cohere/command-r`",
            "model_list[1].litellm_params.model: required key is missing",
            "model_list[2].litellm_params: required key is missing",
            "model_list[3].litellm_params.rpm: must be a positive number per minute",
            "model_list[4].litellm_params.model: cannot tell the provider of `mystery-model`",
            "model_list[5].litellm_params.api_base: for provider `azure` the URL is the resource endpoint",
            "litellm_settings.fallbacks[1].gpt-5: unknown model `gpt-5`",
            "litellm_settings.fallbacks[2].d[0]: unknown model `nope`",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
        // `a` failed: its fallback rule is not reported again
        assert!(!all.contains("fallbacks[0]"), "{all}");
        assert_eq!(all.lines().count(), 8, "{all}");
    }

    #[test]
    fn providers_this_build_lacks_are_named_at_the_model_key() {
        let text = r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
      aws_region_name: us-east-1
  - model_name: gem
    litellm_params: {model: gemini/gemini-1.5-pro, api_key: g}
  - model_name: zephyr
    litellm_params: {model: huggingface/HuggingFaceH4/zephyr-7b-beta, api_base: "http://127.0.0.1:8080"}
  - model_name: vx
    litellm_params: {model: vertex_ai/gemini-1.5-pro, vertex_project: p, vertex_location: europe-west4}
"#;
        let doc: Value = serde_yaml::from_str(text).unwrap();
        let t = translate(&doc, &no_env());
        let native = serde_yaml::to_string(&t.native).unwrap();
        for needle in [
            "provider: bedrock",
            "type: aws_sigv4",
            "region: us-east-1",
            "provider: gemini",
            "name: x-goog-api-key",
            "provider: text_generation",
            "provider: vertex",
            "url: https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/publishers/google",
            "type: gcp",
        ] {
            assert!(native.contains(needle), "missing `{needle}` in:\n{native}");
        }
        // Until the native reader knows a provider, its error names it at the LiteLLM key, once.
        match parse(text, &no_env()) {
            Ok(_) => {}
            Err(e) => {
                for err in &e.0 {
                    assert!(err.path.ends_with(".litellm_params.model"), "{e}");
                    assert!(
                        err.message
                            .contains("provider, which this build does not have"),
                        "{e}"
                    );
                }
                for (i, provider) in [
                    (0, "bedrock"),
                    (1, "gemini"),
                    (2, "text_generation"),
                    (3, "vertex"),
                ] {
                    let found = e.0.iter().any(|x| {
                        x.path == format!("model_list[{i}].litellm_params.model")
                            && x.message.contains(&format!("`{provider}`"))
                    });
                    let known =
                        !e.0.iter()
                            .any(|x| x.path.starts_with(&format!("model_list[{i}]")));
                    assert!(found || known, "model_list[{i}] ({provider}): {e}");
                }
            }
        }
    }

    #[test]
    fn unsupported_keys_are_warned_once_each_with_their_path() {
        let text = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1", stream_timeout: 5, tempurature: 1}
    model_info: {id: "1"}
litellm_settings:
  json_logs: true
  num_retries: 2
general_settings:
  alerting: ["slack"]
router_settings:
  routing_strategy: latency-based-routing
something_else: 1
"#;
        let w = warnings(text, &no_env());
        for needle in [
            "model_list[0].litellm_params.stream_timeout: not supported by llmproxy: ignored",
            "model_list[0].litellm_params.tempurature: not supported by llmproxy: ignored (did you mean `temperature`?)",
            "model_list[0].model_info: informational metadata",
            "litellm_settings.json_logs: not supported",
            "general_settings.alerting: not supported",
            "router_settings.routing_strategy: `latency-based-routing` is not supported",
            "something_else: not supported",
        ] {
            assert!(w.contains(needle), "missing `{needle}` in:\n{w}");
        }
        assert_eq!(w.lines().count(), 7, "{w}");
        // a file with warnings is still valid
        assert!(parse(text, &no_env()).is_ok());
    }

    #[test]
    fn settings_become_model_policies() {
        let text = r#"
model_list:
  - model_name: zephyr-beta
    litellm_params: {model: openai/z, api_base: "http://127.0.0.1:8001/v1"}
  - model_name: zephyr-beta
    litellm_params: {model: openai/z, api_base: "http://127.0.0.1:8002/v1", timeout: 3}
  - model_name: gpt-3.5-turbo
    litellm_params: {model: gpt-3.5-turbo, api_key: sk-openai}
  - model_name: gpt-3.5-turbo-16k
    litellm_params: {model: gpt-3.5-turbo-16k, api_key: sk-openai}
litellm_settings:
  num_retries: 3
  request_timeout: 10
  fallbacks: [{"zephyr-beta": ["gpt-3.5-turbo"]}]
  context_window_fallbacks: [{"zephyr-beta": ["gpt-3.5-turbo-16k"]}, {"gpt-3.5-turbo": ["gpt-3.5-turbo-16k"]}]
  allowed_fails: 3
  cooldown_time: 30
  drop_params: true
  add_function_to_prompt: true
"#;
        let cfg = parse(text, &no_env()).unwrap();
        let z = &cfg.models[0];
        assert_eq!(z.retry.attempts, 4);
        assert_eq!(z.timeout, Some(Duration::from_secs(10)));
        let c = z.cooldown.unwrap();
        assert_eq!((c.allowed_fails, c.duration), (4, Duration::from_secs(30)));
        assert_eq!(z.fallbacks, ["gpt-3.5-turbo"]);
        assert_eq!(z.context_window_fallbacks, ["gpt-3.5-turbo-16k"]);
        assert_eq!(
            cfg.models[1].context_window_fallbacks,
            ["gpt-3.5-turbo-16k"]
        );
        assert!(cfg
            .models
            .iter()
            .all(|m| m.drops_params() && m.add_function_to_prompt));
        // the deployment's own timeout, else the global one
        let timeouts: Vec<u64> = cfg
            .upstreams
            .iter()
            .map(|u| u.client.request_timeout.as_secs())
            .collect();
        assert_eq!(timeouts, [10, 3, 10]);
        assert_eq!(cfg.upstreams[2].provider.as_str(), "openai");
        assert_eq!(cfg.upstreams[2].url.raw, "https://api.openai.com/v1");
        // seed 002's OpenTelemetry switch, with no OTEL_* variable: a collector on this host
        let otel = format!("{text}general_settings: {{otel: True}}\n");
        let cfg = parse(&otel, &no_env()).unwrap();
        assert_eq!(
            cfg.tracing.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
    }

    #[test]
    fn cache_master_key_database_and_callbacks() {
        let text = r#"
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params: {model: gpt-3.5-turbo, temperature: 0.2, max_tokens: 100}
litellm_settings:
  cache: true
  cache_params: {type: redis, host: cache.internal, port: 6380, password: os.environ/REDIS_PW, ttl: 600}
  success_callback: ["langfuse", "otel", "s3"]
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: "sqlite://./data/keys.db"
"#;
        let env = MapEnv(vec![
            ("REDIS_PW", "pw"),
            ("LITELLM_MASTER_KEY", "sk-master-0123"),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf"),
            ("LANGFUSE_SECRET_KEY", "sk-lf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ]);
        let cfg = parse(text, &env).unwrap();
        assert_eq!(
            cfg.state.redis.as_ref().unwrap().expose(),
            "redis://:pw@cache.internal:6380/0"
        );
        assert_eq!(cfg.cache.backend, crate::config::cache::Backend::Redis);
        let mc = &cfg.models[0].cache;
        assert!(mc.enabled && !mc.only_deterministic);
        assert_eq!(mc.ttl, Duration::from_secs(600));
        assert_eq!(
            cfg.server.master_key.as_ref().unwrap().expose(),
            "sk-master-0123"
        );
        assert_eq!(cfg.state.database.expose(), "sqlite://./data/keys.db");
        assert_eq!(
            cfg.tracing.otlp_endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let lf = cfg.tracing.langfuse.as_ref().unwrap();
        assert_eq!(
            (lf.host.as_str(), lf.public_key.expose()),
            ("https://cloud.langfuse.com", "pk-lf")
        );
        let params: Vec<(&str, &str)> = cfg.models[0].deployments[0]
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(params, [("max_tokens", "100"), ("temperature", "0.2")]);
        let w = cfg.warnings.to_string();
        assert!(
            w.contains("litellm_settings.success_callback[2]: callback `s3` is not supported"),
            "{w}"
        );
        // Langfuse is exported to now: no "not exported" warning.
        assert!(!w.contains("does not export to Langfuse"), "{w}");
        // seed 002's older form: `cache: {type: redis}` with REDIS_* in the environment
        let text = "model_list: [{model_name: m, litellm_params: {model: gpt-4o}}]\nlitellm_settings: {cache: {type: redis}}\nenvironment_variables: {REDIS_HOST: localhost, REDIS_PORT: \"6390\", REDIS_PASSWORD: }\n";
        let cfg = parse(text, &no_env()).unwrap();
        assert_eq!(
            cfg.state.redis.as_ref().unwrap().expose(),
            "redis://localhost:6390/0"
        );
        // no Redis anywhere: in memory, said so
        let text = "model_list: [{model_name: m, litellm_params: {model: gpt-4o}}]\nlitellm_settings: {cache: true}\n";
        let cfg = parse(text, &no_env()).unwrap();
        assert_eq!(cfg.cache.backend, crate::config::cache::Backend::Memory);
        assert!(cfg.models[0].cache.enabled);
        assert!(cfg
            .warnings
            .to_string()
            .contains("litellm_settings.cache: no Redis is configured"));
    }

    #[test]
    fn local_servers_and_hosted_compatible_providers() {
        let text = r#"
model_list:
  - {model_name: a, litellm_params: {model: ollama/llama2}}
  - {model_name: b, litellm_params: {model: ollama/mistral, api_base: "http://gpu:11434"}}
  - {model_name: c, litellm_params: {model: together_ai/lmsys/vicuna-13b-v1.5-16k}}
  - {model_name: d, litellm_params: {model: groq/llama3-70b-8192, api_key: gk}}
  - {model_name: e, litellm_params: {model: openrouter/meta/llama, api_base: "https://proxy.example/api/v1"}}
"#;
        let cfg = parse(text, &MapEnv(vec![("TOGETHERAI_API_KEY", "tk")])).unwrap();
        let urls: Vec<&str> = cfg.upstreams.iter().map(|u| u.url.raw.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://localhost:11434/v1",
                "http://gpu:11434/v1",
                "https://api.together.xyz/v1",
                "https://api.groq.com/openai/v1",
                "https://proxy.example/api/v1"
            ]
        );
        assert!(cfg
            .upstreams
            .iter()
            .all(|u| u.provider.as_str() == "openai_compatible"));
        assert_eq!(
            cfg.models[2].deployments[0].model,
            "lmsys/vicuna-13b-v1.5-16k"
        );
        assert_eq!(header(&cfg.upstreams[0].auth).0, "");
        assert_eq!(header(&cfg.upstreams[2].auth).1, "Bearer tk");
        assert_eq!(header(&cfg.upstreams[3].auth).1, "Bearer gk");
    }

    #[test]
    fn convert_keeps_references_and_check_accepts_the_result() {
        let text = r#"
model_list:
  - model_name: gpt-4-team1
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: https://openai-gpt-4-test-v-1.openai.azure.com/
      api_version: "2023-05-15"
      api_key: os.environ/AZURE_NORTH_AMERICA_API_KEY
  - model_name: gpt-4
    litellm_params: {model: gpt-4, api_key: os.environ/OPENAI_API_KEY, rpm: 60}
litellm_settings:
  set_verbose: true
  cache: {type: redis}
  json_logs: true
general_settings:
  master_key: os.environ/MASTER
environment_variables:
  OPENAI_API_KEY: sk-from-file
  REDIS_HOST: localhost
"#;
        let env = MapEnv(vec![
            ("AZURE_NORTH_AMERICA_API_KEY", "secret-from-env"),
            ("MASTER", "sk-master-secret"),
        ]);
        let doc: Value = serde_yaml::from_str(text).unwrap();
        let yaml = convert(&doc, &env, "litellm.yaml").unwrap();
        assert!(yaml.starts_with("# llmproxy configuration converted by `llmproxy convert`"));
        assert!(
            yaml.contains("#   litellm_settings.json_logs: not supported"),
            "{yaml}"
        );
        assert!(yaml.contains("${AZURE_NORTH_AMERICA_API_KEY}"), "{yaml}");
        assert!(yaml.contains("${MASTER}"), "{yaml}");
        assert!(yaml.contains("${OPENAI_API_KEY:-sk-from-file}"), "{yaml}");
        assert!(yaml.contains("${REDIS_HOST:-localhost}"), "{yaml}");
        assert!(
            !yaml.contains("secret-from-env") && !yaml.contains("sk-master-secret"),
            "{yaml}"
        );
        let native = parse(&yaml, &env).unwrap();
        let direct = parse(text, &env).unwrap();
        assert_eq!(native.upstreams, direct.upstreams);
        assert_eq!(
            native.state.redis.as_ref().unwrap().expose(),
            "redis://localhost:6379/0"
        );
        assert_eq!(native.logging.level, log::LevelFilter::Debug);
        assert!(native.warnings.is_empty());
    }

    #[test]
    fn quick_start_documents() {
        let qs = QuickStart {
            model: "llama".into(),
            api_base: Some("http://127.0.0.1:8000/v1".into()),
            ..Default::default()
        };
        let cfg = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap();
        assert_eq!(cfg.models[0].name, "llama");
        assert_eq!(cfg.models[0].deployments[0].model, "llama");
        assert_eq!(cfg.upstreams[0].provider.as_str(), "openai_compatible");
        assert_eq!(cfg.upstreams[0].url.raw, "http://127.0.0.1:8000/v1");

        let qs = QuickStart {
            model: "ollama/llama3".into(),
            ..Default::default()
        };
        let cfg = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap();
        assert_eq!(cfg.models[0].name, "ollama/llama3");
        assert_eq!(cfg.models[0].aliases, ["llama3"]);
        assert_eq!(cfg.upstreams[0].url.raw, "http://localhost:11434/v1");

        let qs = QuickStart {
            model: "azure/my-deployment".into(),
            api_base: Some("https://x.openai.azure.com".into()),
            api_version: Some("2023-08-01".into()),
            alias: Some("my-gpt-model".into()),
        };
        let cfg = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap();
        assert_eq!(cfg.models[0].name, "my-gpt-model");
        assert_eq!(
            cfg.models[0].aliases,
            ["azure/my-deployment", "my-deployment"]
        );
        assert_eq!(cfg.upstreams[0].api_version.as_deref(), Some("2023-08-01"));

        let qs = QuickStart {
            model: "mystery".into(),
            ..Default::default()
        };
        let e = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--model: cannot tell the provider of `mystery`"),
            "{e}"
        );

        let qs = QuickStart {
            model: "huggingface/bigcode/starcoder".into(),
            ..Default::default()
        };
        let e = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--api_base: required for `huggingface/` models"),
            "{e}"
        );
    }
}
