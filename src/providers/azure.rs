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
//! - `api_version: v1` (or `preview` / `latest`) selects the v1 surface for every endpoint:
//!   `{endpoint}/openai/v1/chat/completions` etc., deployment as the body's `model`, `api-version`
//!   only for `preview` / `latest`, health check on `/openai/v1/models`;
//! - auth is `api-key: KEY` or `Authorization: Bearer <Entra token>` — the upstream's configured
//!   `auth`, the client's own key never goes there;
//! - bodies, SSE streams, errors and rate-limit headers (`x-ratelimit-remaining-*`, `retry-after`)
//!   are OpenAI's, so they are relayed unchanged and the scheduler reads them as it reads OpenAI's.

use super::openai::StreamUsage;
use super::{Attempt, Outbound, Provider};
use crate::config::Upstream;
use crate::error::GatewayError;
use crate::route::Endpoint;

/// `provider: azure`.
pub struct Azure;

impl Provider for Azure {
    fn supports(&self, endpoint: Endpoint) -> bool {
        matches!(
            endpoint,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Embeddings
                | Endpoint::Responses
        )
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
        // The wire format is OpenAI's: the same relay (Azure reports usage like OpenAI).
        let path = upstream_path(a.upstream, a.endpoint, &a.deployment.model);
        let version = a.upstream.api_version.as_deref().unwrap_or_default();
        Ok(super::openai::relayed(a, stream_usage(version), path))
    }

    fn wants_max_completion_tokens(&self, model: &str) -> bool {
        super::openai::is_reasoning_model(model)
    }

    fn health_path(&self, u: &Upstream) -> String {
        health_path(u)
    }
}

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

/// Whether `api_version` selects the v1 surface (`v1`, or its `preview` / `latest` channels);
/// dated versions (`2024-10-21`) use the deployment paths.
fn is_v1_version(v: &str) -> bool {
    matches!(v, "v1" | "preview" | "latest")
}

/// Azure takes `stream_options.include_usage` from `api-version` 2024-08-01(-preview) on (and on
/// the v1 surface); earlier versions refuse the unknown option.
fn stream_usage(version: &str) -> StreamUsage {
    if is_v1_version(version) || version >= "2024-08-01" {
        StreamUsage::Reported
    } else {
        StreamUsage::Refused
    }
}

/// The `api-version` query the v1 surface takes: none for `v1`, else the channel.
fn v1_query(v: &str) -> Option<&str> {
    matches!(v, "preview" | "latest").then_some(v)
}

/// The request target (path and query) for a model endpoint on deployment `deployment`.
pub fn upstream_path(upstream: &Upstream, endpoint: Endpoint, deployment: &str) -> String {
    let version = upstream.api_version.as_deref().unwrap_or_default();
    let mut p = String::with_capacity(upstream.url.base_path.len() + deployment.len() + 72);
    p.push_str(&upstream.url.base_path);
    if is_v1_version(version) || endpoint == Endpoint::Responses {
        // The v1 surface (the only one with the Responses API): the deployment is the body's model.
        p.push_str("/openai/v1");
        p.push_str(endpoint.upstream_path());
        if let Some(q) = v1_query(version) {
            p.push_str("?api-version=");
            p.push_str(q);
        }
        return p;
    }
    match endpoint {
        // Never sent to Azure (`providers::supports`).
        Endpoint::Responses | Endpoint::Messages | Endpoint::CountTokens => {}
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
    let version = upstream.api_version.as_deref().unwrap_or_default();
    let v1 = is_v1_version(version);
    let configured = upstream.health_check.path.as_str();
    let default = crate::config::upstreams::default_health_path(crate::config::Provider::Azure);
    // The default probe follows the surface: `/openai/v1/models` there.
    let path = if v1 && configured == default {
        "/openai/v1/models"
    } else {
        configured
    };
    let mut p = format!("{}{path}", upstream.url.base_path);
    let query = if v1 || path.starts_with("/openai/v1/") {
        v1_query(version)
    } else {
        Some(version).filter(|v| !v.is_empty())
    };
    if let Some(q) = query.filter(|_| !path.contains("api-version=")) {
        p.push(if path.contains('?') { '&' } else { '?' });
        p.push_str("api-version=");
        p.push_str(q);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::ProcessEnv;

    #[test]
    fn stream_usage_is_asked_from_the_versions_that_take_it() {
        for v in [
            "2024-08-01-preview",
            "2024-10-21",
            "2025-04-01-preview",
            "v1",
            "preview",
            "latest",
        ] {
            assert_eq!(stream_usage(v), StreamUsage::Reported, "{v}");
        }
        for v in [
            "2023-05-15",
            "2024-02-01",
            "2024-06-01",
            "2024-07-01-preview",
        ] {
            assert_eq!(stream_usage(v), StreamUsage::Refused, "{v}");
        }
    }

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

    #[test]
    fn v1_surface() {
        let u = upstream("");
        let with = |v: &str| Upstream {
            api_version: Some(v.to_string()),
            ..u.clone()
        };
        let v1 = with("v1");
        assert_eq!(
            upstream_path(&v1, Endpoint::ChatCompletions, "d"),
            "/openai/v1/chat/completions"
        );
        assert_eq!(
            upstream_path(&v1, Endpoint::Embeddings, "d"),
            "/openai/v1/embeddings"
        );
        assert_eq!(health_path(&v1), "/openai/v1/models");
        let preview = with("preview");
        assert_eq!(
            upstream_path(&preview, Endpoint::Responses, "d"),
            "/openai/v1/responses?api-version=preview"
        );
        assert_eq!(
            upstream_path(&preview, Endpoint::Completions, "d"),
            "/openai/v1/completions?api-version=preview"
        );
        assert_eq!(
            health_path(&preview),
            "/openai/v1/models?api-version=preview"
        );
    }
}
