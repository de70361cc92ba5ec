//! Provider adapters: how a request is shaped for an upstream, and how usage is read back.
//!
//! `openai` serves both `provider: openai` and `provider: openai_compatible` (vLLM, Ollama, ...).

pub mod openai;
pub mod usage;

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
