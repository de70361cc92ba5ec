//! Azure OpenAI (`provider: azure`): the OpenAI wire format on Azure's paths.
//!
//! What Azure documents (REST reference, data plane, `api-version` 2024-10-21 and the v1 API):
//! - chat, completions, embeddings go to the deployment:
//!   `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version={v}` (also
//!   `/completions`, `/embeddings`); a missing `api-version` is answered 404 `Resource not found`;
//! - the Responses API lives only on the v1 surface, `POST {endpoint}/openai/v1/responses`, with the
//!   deployment name as the body's `model` (which the gateway already writes there) and no dated
//!   `api-version` (v1 accepts none, or `preview` / `latest`: those are passed when configured);
//! - `GET {endpoint}/openai/models?api-version={v}` lists the resource's models (the health check);
//! - auth is `api-key: KEY` or `Authorization: Bearer <Entra token>` — the upstream's configured
//!   `auth`, the client's own key never goes there;
//! - bodies, SSE streams, errors and rate-limit headers (`x-ratelimit-remaining-*`, `retry-after`)
//!   are OpenAI's, so they are relayed unchanged and the scheduler reads them as it reads OpenAI's.

use crate::config::Upstream;
use crate::route::Endpoint;

/// Bytes kept as they are in a path segment (RFC 3986 unreserved); everything else is
/// percent-encoded, so a deployment name can never change the path's shape.
fn push_segment(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Whether `api_version` is one the v1 surface takes (`preview`, `latest`); dated versions are not.
fn is_v1_version(v: &str) -> bool {
    matches!(v, "preview" | "latest")
}

/// The request target (path and query) for a model endpoint on deployment `deployment`.
pub fn upstream_path(upstream: &Upstream, endpoint: Endpoint, deployment: &str) -> String {
    let version = upstream.api_version.as_deref().unwrap_or_default();
    let mut p = String::with_capacity(upstream.url.base_path.len() + deployment.len() + 72);
    p.push_str(&upstream.url.base_path);
    match endpoint {
        Endpoint::Responses => {
            p.push_str("/openai/v1/responses");
            if is_v1_version(version) {
                p.push_str("?api-version=");
                p.push_str(version);
            }
        }
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
            p.push_str("/openai/deployments/");
            push_segment(&mut p, deployment);
            p.push_str(endpoint.upstream_path());
            p.push_str("?api-version=");
            p.push_str(version);
        }
    }
    p
}

/// The health-check target: `health_check.path` below the URL, with `api-version` added when the
/// path does not carry one (Azure answers 404 without it).
pub fn health_path(upstream: &Upstream) -> String {
    let path = &upstream.health_check.path;
    let mut p = format!("{}{path}", upstream.url.base_path);
    let version = upstream.api_version.as_deref().unwrap_or_default();
    if !version.is_empty() && !path.contains("api-version=") && !path.starts_with("/openai/v1/") {
        p.push(if path.contains('?') { '&' } else { '?' });
        p.push_str("api-version=");
        p.push_str(version);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::ProcessEnv;

    fn upstream(extra: &str) -> Upstream {
        let yaml = format!(
            "server: {{listeners: [{{name: m, listen: \"127.0.0.1:1\"}}]}}\nupstreams: [{{name: az, provider: azure, url: \"https://ex.openai.azure.com\", api_version: 2024-10-21{extra}}}]\nmodels: [{{name: m, deployments: [{{upstream: az, model: gpt4o-eu}}]}}]\n"
        );
        let cfg = crate::config::parse(&yaml, &ProcessEnv).unwrap();
        cfg.upstreams[0].clone()
    }

    #[test]
    fn builds_azure_paths() {
        let u = upstream("");
        assert_eq!(
            upstream_path(&u, Endpoint::ChatCompletions, "gpt4o-eu"),
            "/openai/deployments/gpt4o-eu/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            upstream_path(&u, Endpoint::Embeddings, "emb 3/x"),
            "/openai/deployments/emb%203%2Fx/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            upstream_path(&u, Endpoint::Completions, "d"),
            "/openai/deployments/d/completions?api-version=2024-10-21"
        );
        assert_eq!(
            upstream_path(&u, Endpoint::Responses, "d"),
            "/openai/v1/responses"
        );
        assert_eq!(health_path(&u), "/openai/models?api-version=2024-10-21");
        let u = upstream(", health_check: {path: \"/openai/models?x=1\"}");
        assert_eq!(health_path(&u), "/openai/models?x=1&api-version=2024-10-21");
    }
}
