//! Provider adapters: how a request is shaped for an upstream, and how usage is read back.
//!
//! `openai` serves both `provider: openai` and `provider: openai_compatible` (vLLM, Ollama, ...);
//! `azure` gives Azure OpenAI its paths and `api-version` (the wire format is OpenAI's);
//! `anthropic` translates chat requests to the Messages API and back, and relays `/v1/messages`.

pub mod anthropic;
pub mod anthropic_inbound;
pub mod azure;
pub mod openai;
pub mod pins;
pub mod sse;
pub mod usage;

use crate::config::{Provider, Upstream};
use crate::route::Endpoint;

/// The upstream request target (path and query) for a model endpoint on deployment `deployment`
/// (the deployment's `model`).
pub fn upstream_path(upstream: &Upstream, endpoint: Endpoint, deployment: &str) -> String {
    match upstream.provider {
        Provider::Azure => azure::upstream_path(upstream, endpoint, deployment),
        // Chat requests are translated into Messages requests.
        Provider::Anthropic if endpoint == Endpoint::CountTokens => {
            format!("{}/messages/count_tokens", upstream.url.base_path)
        }
        Provider::Anthropic => format!("{}/messages", upstream.url.base_path),
        Provider::OpenAi | Provider::OpenAiCompatible => {
            format!("{}{}", upstream.url.base_path, endpoint.upstream_path())
        }
    }
}

/// Whether a deployment on `provider` can serve `endpoint`. Anthropic has chat (translated) and its
/// own Messages API; the OpenAI family has every endpoint, Anthropic's Messages API included
/// (translated to chat completions, `anthropic_inbound`).
pub fn supports(provider: Provider, endpoint: Endpoint) -> bool {
    match provider {
        Provider::Anthropic => matches!(
            endpoint,
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens
        ),
        // Token counting for these is answered by the gateway itself (`proxy::count_tokens`).
        Provider::OpenAi | Provider::OpenAiCompatible | Provider::Azure => {
            endpoint != Endpoint::CountTokens
        }
    }
}

/// The active health check's request target.
pub fn health_path(upstream: &Upstream) -> String {
    match upstream.provider {
        Provider::Azure => azure::health_path(upstream),
        Provider::OpenAi | Provider::OpenAiCompatible | Provider::Anthropic => {
            format!("{}{}", upstream.url.base_path, upstream.health_check.path)
        }
    }
}

/// Client request headers never forwarded upstream: credentials (the upstream's own auth replaces
/// them), hop-by-hop headers, framing (recomputed), gateway controls, and `accept-encoding` (usage is
/// read from the response body, so it must arrive uncompressed).
pub fn forwardable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "x-api-key"
            | "api-key"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "accept-encoding"
            | "http2-settings"
    ) && !name.as_str().starts_with("x-llmproxy-")
}

/// Upstream response headers not relayed to the client (hop-by-hop and framing).
pub fn relayable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}
