//! Providers: one module per upstream API, each behind the one [`Provider`] interface.
//!
//! For one attempt a provider says where the request goes (path and query), what body it sends (the
//! client's with the deployment's model, or a translation) and which headers it needs, and hands back
//! the [`Answer`] that reads the response: relayed chunk by chunk, translated as a stream, or read
//! whole and converted; with the usage for accounting, the client's view of upstream errors and of
//! rate-limit headers, and the event that ends a stream that broke. Beside that: whether an error is
//! a context-window overflow, what its rate-limit headers tell the scheduler, its health check, and
//! which endpoints it serves. The upstream exchange ([`crate::exchange`]) calls only this interface
//! and never names a provider; auth is the upstream's (`balance::upstream::apply_upstream_headers`),
//! applied to whatever request the provider built.
//!
//! | module | `provider:` | speaks |
//! | --- | --- | --- |
//! | [`openai`] | `openai`, `openai_compatible` | OpenAI's API, relayed |
//! | [`azure`] | `azure` | OpenAI's API on Azure's paths |
//! | [`anthropic`] | `anthropic` | Anthropic Messages; OpenAI chat translated to it |
//! | [`gemini`] | `gemini`, `vertex` | Gemini's `generateContent` (Gemini API, Vertex AI); OpenAI chat and embeddings translated to it |
//! | [`text_generation`] | `text_generation` | a text-generation server's `/generate` (HF TGI); chat rendered with a prompt template |
//! | [`bedrock`] | `bedrock` | AWS Bedrock Converse / InvokeModel, SigV4; OpenAI chat, completions and embeddings translated |
//!
//! **Clients of the other API.** A client speaks OpenAI's API or Anthropic's Messages API
//! ([`ClientApi`]). Every provider serves OpenAI chat (natively or translated); an Anthropic client on
//! a provider that does not speak Messages goes through [`anthropic::inbound`]: its request becomes a
//! chat request for the provider, and the provider's (OpenAI-shaped) answer becomes a Messages answer.
//! [`plan`] composes the two, so a new provider that serves chat serves Anthropic clients too.
//!
//! **Trait objects, not an enum.** A provider is a `&'static dyn Provider` from [`of`] (adding one is
//! a module and a line there) and an answer is a `Box<dyn Answer>` made once per attempt. The cost is
//! one allocation per attempt and an indirect call per relayed chunk, which is noise beside the
//! syscalls each chunk costs; `loadtest/callgrind-providers` counts instructions per request for the
//! relayed and the translated path (results in `loadtest/results/`).

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod gemini;
pub mod json_out;
pub mod openai;
pub mod simple_chat;
pub mod sse;
pub mod text_generation;
pub mod usage;

use crate::body::ModelRequest;
use crate::config::{Deployment, Provider as Kind, Upstream};
use crate::error::GatewayError;
use crate::route::Endpoint;
use bytes::Bytes;
use pingora::http::RequestHeader;
use usage::Usage;

/// The API a client speaks on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    /// Chat completions, completions, embeddings, the Responses API.
    OpenAi,
    /// The Messages API (`/v1/messages`, `/v1/messages/count_tokens`).
    Anthropic,
}

impl ClientApi {
    pub fn of(endpoint: Endpoint) -> ClientApi {
        match endpoint {
            Endpoint::Messages | Endpoint::CountTokens => ClientApi::Anthropic,
            _ => ClientApi::OpenAi,
        }
    }
}

/// Everything a provider needs to shape one attempt.
pub struct Attempt<'a> {
    /// The endpoint as the provider sees it (an Anthropic client on an OpenAI-style provider has
    /// been adapted to `ChatCompletions` by then).
    pub endpoint: Endpoint,
    pub upstream: &'a Upstream,
    pub deployment: &'a Deployment,
    /// Drop what the provider cannot take instead of refusing it (`drop_params`).
    pub drop_params: bool,
    /// A provider without tools describes the request's tools in the system prompt instead of
    /// refusing them (`add_function_to_prompt`).
    pub add_function_to_prompt: bool,
    /// The request's top-level fields.
    pub req: &'a ModelRequest<'a>,
    /// The request body as received (sent untouched when nothing in it has to change).
    pub raw: &'a Bytes,
    /// The request's prompt tokens as the gateway estimated them (announced by translated streams
    /// that must state input tokens before the upstream reports them).
    pub prompt_estimate: u64,
}

/// What one attempt sends upstream, and how its answer is read.
pub struct Outbound {
    /// Path and query below the upstream's host.
    pub path: String,
    pub body: Bytes,
    pub answer: Box<dyn Answer>,
}

/// How a successful answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As it arrives, chunk by chunk, the upstream's framing kept; `sse`: it is an event stream.
    Relay { sse: bool },
    /// Translated chunk by chunk into a server-sent event stream.
    Stream,
    /// Read whole (bounded) and converted into one JSON body.
    Whole,
}

impl Mode {
    /// Whether the client receives an event stream.
    pub fn is_sse(self) -> bool {
        matches!(self, Mode::Relay { sse: true } | Mode::Stream)
    }

    /// Whether the client's body differs from the upstream's (its length and framing are not the
    /// upstream's).
    pub fn translated(self) -> bool {
        !matches!(self, Mode::Relay { .. })
    }
}

/// What becomes of an upstream response header when the answer is translated.
pub enum HeaderFate {
    Keep,
    Drop,
    /// Sent under another name and value (e.g. Anthropic's rate-limit headers in OpenAI's names).
    Rename(&'static str, String),
}

/// Reads one attempt's answer. Made by the provider with the request, so it knows what was asked.
pub trait Answer: Send {
    /// A successful answer's header arrived: how it is relayed.
    fn begin(&mut self, status: u16, headers: &http::HeaderMap) -> Mode;
    /// [`Mode::Whole`]: the whole body converted, or `None` when it is not what was expected.
    fn whole(&mut self, body: &[u8]) -> Option<Bytes>;
    /// The next chunk; what to send the client now (`None`: nothing yet).
    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes>;
    /// The upstream ended the body: whatever is still held back.
    fn finish(&mut self) -> Option<Bytes>;
    /// The answer's usage, when it reported one.
    fn usage(&self) -> Option<Usage>;
    /// The answer's text, when the upstream reported no usage and the gateway should estimate it
    /// (self-hosted servers). Called once, after a complete successful answer.
    fn unreported(&mut self) -> Option<String> {
        None
    }
    /// An upstream error body as the client's API shapes it (`None`: relayed as it is).
    fn error_body(&self, status: u16, body: &[u8]) -> Option<Bytes>;
    /// A response header of a translated answer, as the client's API names it.
    fn client_header(&self, _name: &http::HeaderName, _value: &http::HeaderValue) -> HeaderFate {
        HeaderFate::Keep
    }
    /// The API the client speaks (it shapes the event that ends a stream that broke).
    fn client_api(&self) -> ClientApi {
        ClientApi::OpenAi
    }
}

/// One provider: its paths, bodies, answers, errors and checks.
pub trait Provider: Send + Sync {
    /// The client API it answers natively (its clients are relayed, the others translated).
    fn speaks(&self) -> ClientApi {
        ClientApi::OpenAi
    }
    /// Whether a deployment on it can serve `endpoint` (as [`Attempt::endpoint`] names it).
    fn supports(&self, endpoint: Endpoint) -> bool;
    /// Shape one attempt: path, body, answer. `Err`: the request cannot be expressed for this
    /// provider (a 400 naming the field).
    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError>;
    /// Headers the provider needs on every request (its API version), beside the upstream's auth.
    fn request_headers(&self, _req: &mut RequestHeader) -> pingora::Result<()> {
        Ok(())
    }
    /// Whether an error answer says the prompt does not fit the model's context window.
    fn is_context_window(&self, status: u16, body: &[u8]) -> bool {
        is_context_window_error(status, body)
    }
    /// Whether `max_tokens` must be sent as `max_completion_tokens` (OpenAI's reasoning models
    /// refuse the old name) when another API's request is translated for this deployment.
    fn wants_max_completion_tokens(&self, _model: &str) -> bool {
        false
    }
    /// The health check's request target.
    fn health_path(&self, u: &Upstream) -> String {
        format!("{}{}", u.url.base_path, u.health_check.path)
    }
    /// Whether token budgets are corrected with the real usage after the answer (self-hosted
    /// servers and Anthropic) rather than kept as charged at admission (OpenAI, Azure).
    fn reconciles_tokens(&self) -> bool {
        false
    }
    /// How long to wait before retrying, from an error answer's body (Google's
    /// `RetryInfo.retryDelay`), when the upstream sent no `Retry-After` header.
    fn retry_after(&self, _status: u16, _body: &[u8]) -> Option<std::time::Duration> {
        None
    }
}

/// The provider behind `provider:` in the config.
pub fn of(kind: Kind) -> &'static dyn Provider {
    match kind {
        Kind::OpenAi => &openai::OPENAI,
        Kind::OpenAiCompatible => &openai::COMPATIBLE,
        Kind::Azure => &azure::Azure,
        Kind::Anthropic => &anthropic::Anthropic,
        Kind::Gemini => &gemini::GEMINI,
        Kind::Vertex => &gemini::VERTEX,
        Kind::TextGeneration => &text_generation::TextGeneration,
        Kind::Bedrock => &bedrock::Bedrock,
    }
}

/// Whether a deployment on `kind` serves `endpoint` as a client calls it.
pub fn serves(kind: Kind, endpoint: Endpoint) -> bool {
    let p = of(kind);
    match (ClientApi::of(endpoint), p.speaks()) {
        (ClientApi::Anthropic, ClientApi::OpenAi) => anthropic::inbound::serves(p, endpoint),
        _ => p.supports(endpoint),
    }
}

/// The OpenAI endpoints a provider serves, in words ("chat completions only", "chat completions,
/// completions and embeddings"), for error messages.
pub fn offers(kind: Kind) -> String {
    let names: Vec<&str> = [
        (Endpoint::ChatCompletions, "chat completions"),
        (Endpoint::Completions, "completions"),
        (Endpoint::Embeddings, "embeddings"),
        (Endpoint::Responses, "the Responses API"),
    ]
    .iter()
    .filter(|(e, _)| serves(kind, *e))
    .map(|(_, n)| *n)
    .collect();
    match names.as_slice() {
        [] => "none of the OpenAI endpoints".to_string(),
        [one] => format!("{one} only"),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// One attempt as the client's API and the provider's meet: the provider's own request, or, for an
/// Anthropic client on a provider that speaks OpenAI, the request through [`anthropic::inbound`].
pub fn plan(p: &dyn Provider, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
    match (ClientApi::of(a.endpoint), p.speaks()) {
        (ClientApi::Anthropic, ClientApi::OpenAi) => anthropic::inbound::plan(p, a),
        _ => p.request(a),
    }
}

/// The body an OpenAI-shaped request is sent with: untouched when the deployment knows the model by
/// the requested name and nothing else changes, else re-serialised with the deployment's model, its
/// `params` defaults, `set` (a field forced to a raw JSON value) and without the gateway's controls.
pub fn openai_body(a: &Attempt<'_>, set: Option<(&str, &str)>) -> Bytes {
    let dep = a.deployment;
    if set.is_some() || !dep.params.is_empty() {
        a.req
            .body
            .with_model_and(&dep.model, a.raw.len(), set, &dep.params)
    } else if dep.model == a.req.model && !a.req.has_controls {
        a.raw.clone()
    } else {
        a.req.body.with_model(&dep.model, a.raw.len())
    }
}

/// Whether the request asks for `stream_options.include_usage: true` itself.
pub fn client_asked_usage(body: &crate::body::JsonBody) -> bool {
    body.get("stream_options")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .is_some_and(|v| v["include_usage"] == serde_json::Value::Bool(true))
}

/// Whether a response's `Content-Type` is an event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// `context_length_exceeded` and its kin, from OpenAI, Azure, Anthropic, vLLM and llama.cpp.
pub fn is_context_window_error(status: u16, body: &[u8]) -> bool {
    if !matches!(status, 400 | 413 | 422) {
        return false;
    }
    const MARKERS: &[&[u8]] = &[
        b"context_length_exceeded",
        b"maximum context length",
        b"prompt is too long",
        b"context window",
        b"exceeds the context",
        b"input is too long",
    ];
    let lower = body.to_ascii_lowercase();
    MARKERS
        .iter()
        .any(|m| lower.windows(m.len()).any(|w| w == *m))
}

/// Why a stream ended before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFailure {
    /// The request's time limit passed.
    Timeout,
    /// The upstream connection broke, or its answer could not be read.
    Broken,
}

/// The event that ends a client's stream after its first byte when the upstream failed: never a
/// silent truncation. OpenAI clients get an error chunk and `[DONE]`, Anthropic clients an `error`
/// event.
pub fn stream_error_event(api: ClientApi, why: StreamFailure) -> &'static [u8] {
    match (api, why) {
        (ClientApi::OpenAi, StreamFailure::Broken) => b"data: {\"error\":{\"message\":\"The upstream connection failed during the stream\",\"type\":\"api_error\",\"param\":null,\"code\":\"upstream_error\"}}\n\ndata: [DONE]\n\n",
        (ClientApi::OpenAi, StreamFailure::Timeout) => b"data: {\"error\":{\"message\":\"The request timed out during the stream (its time limit passed)\",\"type\":\"api_error\",\"param\":null,\"code\":\"upstream_timeout\"}}\n\ndata: [DONE]\n\n",
        (ClientApi::Anthropic, StreamFailure::Broken) => b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream connection failed during the stream\"}}\n\n",
        (ClientApi::Anthropic, StreamFailure::Timeout) => b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"The request timed out during the stream (its time limit passed)\"}}\n\n",
    }
}

/// Client request headers never forwarded upstream: credentials (the upstream's own auth replaces
/// them), hop-by-hop headers, framing (recomputed; a body's `content-encoding` was decoded),
/// gateway controls, and `accept-encoding` (usage is read from the response body, so it must
/// arrive uncompressed).
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
            | "content-encoding"
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

/// The upstream request header for a model request: the client's forwardable headers, `Host`, the
/// body's length and type, the request id, the deployment's own headers (when the client did not
/// send them), the provider's, then the upstream's auth and header operations.
pub fn request_header(
    p: &dyn Provider,
    upstream: &Upstream,
    path: &str,
    extra: &[(http::HeaderName, http::HeaderValue)],
    client: &RequestHeader,
    body_len: usize,
    request_id: &str,
) -> pingora::Result<RequestHeader> {
    // No header-case map: HTTP/1.1 names are case-insensitive, and keeping one costs allocations on
    // every request (measured with callgrind: cheaper than building with it, or cloning the client's
    // header the way Pingora's own proxy does).
    let mut req =
        RequestHeader::build_no_case("POST", path.as_bytes(), Some(client.headers.len() + 4))?;
    for (name, value) in client.headers.iter() {
        if forwardable(name) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    req.insert_header(http::header::HOST, upstream.url.authority.as_str())?;
    req.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    // The body was validated as JSON (or built by the gateway), whatever the client labelled it.
    req.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    req.insert_header(crate::proxy::respond::X_REQUEST_ID, request_id)?;
    for (name, value) in extra {
        if !req.headers.contains_key(name) {
            req.insert_header(name.clone(), value.clone())?;
        }
    }
    p.request_headers(&mut req)?;
    crate::balance::upstream::apply_upstream_headers(upstream, &mut req)?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_context_window_errors() {
        assert!(is_context_window_error(
            400,
            br#"{"error":{"code":"context_length_exceeded","message":"This model's maximum context length is 8192 tokens"}}"#
        ));
        assert!(is_context_window_error(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#));
        assert!(!is_context_window_error(
            400,
            br#"{"error":{"message":"bad"}}"#
        ));
        assert!(!is_context_window_error(500, b"maximum context length"));
    }
}
