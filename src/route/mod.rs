//! Request routing: which endpoint a path is, which model a name or alias means, which passthrough
//! route a prefix selects, and what a listener may serve.

use crate::config::{Config, Listener};
use crate::error::GatewayError;
use std::collections::HashMap;

/// The OpenAI endpoints the gateway routes by `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    /// Anthropic's `POST /v1/messages`, relayed to Anthropic deployments in their own format.
    Messages,
    /// Anthropic's `POST /v1/messages/count_tokens` (not billed, not rate-scheduled).
    CountTokens,
}

impl Endpoint {
    /// Every endpoint, in [`Endpoint::index`] order.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ];

    /// This endpoint's place in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The path below the upstream's base URL (which carries the `/v1`); Azure puts it below
    /// `/openai/deployments/{deployment}` instead (`providers::azure`).
    pub fn upstream_path(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
        }
    }
    /// The metric `path` label.
    pub fn template(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }
}

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Model(Endpoint),
    ListModels,
    GetModel(String),
    /// `GET /health`: the LiteLLM's upstream health report.
    Health,
    /// Index into `Config::routes`, and the path to send upstream.
    Passthrough(usize, String),
    Unknown,
}

/// Classify a path (without query). Every OpenAI path also answers without `/v1`.
pub fn classify(cfg: &Config, path: &str) -> Target {
    for (i, r) in cfg.routes.iter().enumerate() {
        if let Some(rest) = path.strip_prefix(r.prefix.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                let rest = if rest.is_empty() { "/" } else { rest };
                return Target::Passthrough(i, rest.to_string());
            }
        }
    }
    let p = path
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    let p = if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    };
    match p {
        "/chat/completions" => Target::Model(Endpoint::ChatCompletions),
        "/completions" => Target::Model(Endpoint::Completions),
        "/embeddings" => Target::Model(Endpoint::Embeddings),
        "/responses" => Target::Model(Endpoint::Responses),
        "/messages" => Target::Model(Endpoint::Messages),
        "/messages/count_tokens" => Target::Model(Endpoint::CountTokens),
        "/models" => Target::ListModels,
        "/health" => Target::Health,
        _ => match p.strip_prefix("/models/") {
            Some(id) if !id.is_empty() => Target::GetModel(id.to_string()),
            _ => Target::Unknown,
        },
    }
}

/// A passthrough path must stay under the upstream: no `..` segments (also percent-encoded), no
/// absolute URL, no backslashes.
pub fn check_passthrough_path(rest: &str, raw_target: &str) -> Result<(), GatewayError> {
    let bad = || GatewayError::invalid("invalid passthrough path", None);
    if !raw_target.starts_with('/') || rest.starts_with("//") || rest.contains('\\') {
        return Err(bad());
    }
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("://")
    {
        return Err(bad());
    }
    if rest.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(bad());
    }
    Ok(())
}

/// Model names and aliases → model index.
pub struct Router {
    by_name: HashMap<String, usize>,
}

impl Router {
    pub fn new(cfg: &Config) -> Router {
        let mut by_name = HashMap::new();
        for (i, m) in cfg.models.iter().enumerate() {
            by_name.insert(m.name.clone(), i);
            for a in &m.aliases {
                by_name.insert(a.clone(), i);
            }
        }
        Router { by_name }
    }

    pub fn lookup(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Resolve `name` for a listener: unknown → 404 listing what it may use; outside the listener's
    /// scope → 403.
    pub fn resolve(
        &self,
        cfg: &Config,
        listener: &Listener,
        name: &str,
    ) -> Result<usize, GatewayError> {
        let idx = self
            .lookup(name)
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: name.to_string(),
                available: visible_models(cfg, listener),
            })?;
        if !allowed(cfg, listener, idx) {
            return Err(GatewayError::ModelNotAllowed(format!(
                "This endpoint is not allowed to use the model `{name}`"
            )));
        }
        Ok(idx)
    }
}

/// Whether a listener's `models` scope admits model `idx` (listed by its name or one of its aliases).
pub fn allowed(cfg: &Config, listener: &Listener, idx: usize) -> bool {
    if listener.models.is_empty() {
        return true;
    }
    let Some(m) = cfg.models.get(idx) else {
        return false;
    };
    listener
        .models
        .iter()
        .any(|s| *s == m.name || m.aliases.contains(s))
}

/// The model ids a listener's callers may use (names and aliases).
pub fn visible_models(cfg: &Config, listener: &Listener) -> Vec<String> {
    cfg.models
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed(cfg, listener, *i))
        .flat_map(|(_, m)| std::iter::once(m.name.clone()).chain(m.aliases.iter().cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_index_is_its_place_in_all() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
    }

    #[test]
    fn path_checks() {
        assert!(check_passthrough_path("/v1/models", "/openai/v1/models").is_ok());
        assert!(check_passthrough_path("/v1/../x", "/openai/v1/../x").is_err());
        assert!(check_passthrough_path("/v1/%2e%2e/x", "/openai/v1/%2e%2e/x").is_err());
        assert!(check_passthrough_path("/x", "http://evil/openai/x").is_err());
        assert!(check_passthrough_path("//evil.com/x", "/openai//evil.com/x").is_err());
    }
}
