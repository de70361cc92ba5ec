//! `routes:` — path-prefix passthrough to an upstream: `/openai/...` goes to the upstream
//! as-is, with its auth and header operations, but without model routing or body rewriting.
//!
//! A route lends the upstream's credentials to whoever may use it, so it is governed like a model:
//! with `server.master_key` set only the master key and virtual keys whose `routes` scope names the
//! prefix may use it; a listener serves it only when its scope admits it (`listeners[].routes`);
//! `max_request_body` and per-key limits apply; and only the paths in `allow_paths` (default: the
//! provider's API paths under the upstream's base path) reach the upstream.

use super::reader::{Node, Reader};
use super::{Provider, Upstream, UpstreamId};

#[derive(Debug, Clone)]
pub struct Route {
    /// Starts with `/`, no trailing slash.
    pub prefix: String,
    pub upstream: String,
    /// The upstream named by `upstream` (resolved when the config is read).
    pub upstream_id: UpstreamId,
    /// Upstream paths (below the route prefix, as sent upstream) that may be requested: each matches
    /// itself and anything below it (`/v1/models` admits `/v1/models/x`, not `/v1/modelsx`).
    /// Resolved at load: the configured list, or the provider's API paths ([`default_allow_paths`]).
    pub allow_paths: Vec<String>,
}

impl Route {
    /// Whether `path` (the part after the prefix, without query) is in [`Route::allow_paths`].
    pub fn allows_path(&self, path: &str) -> bool {
        self.allow_paths.iter().any(|p| {
            p == "/"
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// The OpenAI API's resource paths, below an OpenAI-style base URL (`https://api.openai.com/v1`).
const OPENAI_PATHS: &[&str] = &[
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
    "/models",
    "/moderations",
    "/images",
    "/audio",
    "/files",
    "/uploads",
    "/batches",
];

/// The Anthropic API's resource paths, below `https://api.anthropic.com/v1`.
const ANTHROPIC_PATHS: &[&str] = &["/messages", "/models", "/complete"];

/// A text-generation server's API (Hugging Face TGI).
const TGI_PATHS: &[&str] = &["/generate", "/generate_stream", "/info", "/health"];

/// A route's paths when it names none: the provider's API below the upstream's base path (Azure:
/// everything under `/openai`, where its data-plane API lives).
pub fn default_allow_paths(upstream: &Upstream) -> Vec<String> {
    let base = upstream.url.base_path.as_str();
    let paths: &[&str] = match upstream.provider {
        Provider::OpenAi | Provider::OpenAiCompatible => OPENAI_PATHS,
        Provider::Anthropic => ANTHROPIC_PATHS,
        Provider::Azure => &["/openai"],
        // Gemini's and Vertex AI's model methods (`/models/{m}:generateContent`, ...).
        Provider::Gemini | Provider::Vertex => &["/models"],
        Provider::TextGeneration => TGI_PATHS,
        // The runtime API (a route works with a Bedrock API key; SigV4 upstreams refuse routes).
        Provider::Bedrock => &["/model", "/async-invoke", "/guardrail"],
    };
    paths.iter().map(|p| format!("{base}{p}")).collect()
}

pub fn read(r: &mut Reader, node: Node) -> Option<Route> {
    let m = node.map(r, &["prefix", "upstream", "allow_paths"])?;
    let prefix = m.required(r, "prefix", |r, n| {
        let p = n.string(r)?;
        let trimmed = p.trim_end_matches('/').to_string();
        if !p.starts_with('/') || trimmed.is_empty() || p.contains("..") {
            r.error(n.path, format!("`{p}` must be a path like `/openai`"));
            return None;
        }
        Some(trimmed)
    });
    let upstream = m.required(r, "upstream", |r, n| n.string(r));
    let allow_paths = m
        .with(r, "allow_paths", |r, n| {
            let list = n.list_of_strings(r);
            for (i, p) in list.iter().enumerate() {
                if !p.starts_with('/') || p.contains("..") || p.contains('?') {
                    r.error(
                        &format!("{}[{i}]", n.path),
                        format!("`{p}` must be an upstream path like `/v1/chat/completions`"),
                    );
                }
            }
            if list.is_empty() {
                r.error(
                    n.path,
                    "must name at least one path (leave it out for the provider's API paths)",
                );
            }
            Some(
                list.into_iter()
                    .map(|p| {
                        if p.len() > 1 {
                            p.trim_end_matches('/').to_string()
                        } else {
                            p
                        }
                    })
                    .collect(),
            )
        })
        .unwrap_or_default();
    Some(Route {
        prefix: prefix?,
        upstream: upstream?,
        upstream_id: UpstreamId::UNRESOLVED,
        allow_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(paths: &[&str]) -> Route {
        Route {
            prefix: "/openai".into(),
            upstream: "u".into(),
            upstream_id: UpstreamId::new(0),
            allow_paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn allow_paths_match_by_segment() {
        let r = route(&["/v1/models", "/v1/chat/completions"]);
        assert!(r.allows_path("/v1/models"));
        assert!(r.allows_path("/v1/models/gpt-4o"));
        assert!(!r.allows_path("/v1/modelsx"));
        assert!(!r.allows_path("/v1/fine_tuning/jobs"));
        assert!(!r.allows_path("/v2/models"));
        assert!(route(&["/"]).allows_path("/anything/at/all"));
    }
}
