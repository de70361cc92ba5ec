//! Anthropic Messages API (`provider: anthropic`): OpenAI Chat Completions ⇄ Anthropic Messages.
//!
//! Pure translation functions; the request path wires them in.
//!
//! * [`chat_to_messages`]: an OpenAI `POST /v1/chat/completions` body → an Anthropic
//!   `POST /v1/messages` body.
//! * [`messages_to_chat`]: an Anthropic `message` response → an OpenAI `chat.completion`.
//! * [`StreamTranslator`]: Anthropic SSE bytes (split anywhere) → OpenAI `chat.completion.chunk`
//!   SSE bytes, event by event, with the usage for accounting.
//! * [`error_to_openai`]: an Anthropic error body → an OpenAI-shaped error body (same status).
//!
//! Requests to Anthropic carry `x-api-key: <key>` and `anthropic-version: `[`ANTHROPIC_VERSION`].
//!
//! # Request mapping
//!
//! | OpenAI | Anthropic |
//! | --- | --- |
//! | `system` / `developer` messages (anywhere, all of them, in order) | `system`: one text block per text part |
//! | `user` / `assistant` messages | `messages`, content as blocks; consecutive messages of the same role merged into one turn (Anthropic requires alternation) |
//! | text parts, `refusal` parts | `text` blocks (empty texts dropped: Anthropic rejects them) |
//! | `image_url` with a `data:<type>;base64,` URL | `image` block, `source: {type: base64, media_type, data}` (jpeg, png, gif, webp) |
//! | `image_url` with an `http(s)` URL | `image` block, `source: {type: url, url}` |
//! | assistant `tool_calls` | `tool_use` blocks (`arguments` parsed as JSON; empty = `{}`) |
//! | `role: tool` messages | `tool_result` blocks in a user turn (consecutive ones merged; tool results are put first in the turn, as Anthropic requires) |
//! | `tools` (function tools) | `tools` with `input_schema` (`{"type":"object"}` when `parameters` is absent) |
//! | `tool_choice` `auto` / `none` / `required` / `{function}` | `{type: auto}` / `{type: none}` / `{type: any}` / `{type: tool, name}` |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
//! | `stop` (string or list) | `stop_sequences` |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens`; required by Anthropic, so `default_max_tokens` (the caller's documented default, e.g. [`DEFAULT_MAX_TOKENS`]) when both are absent |
//! | `temperature` (OpenAI 0..2) | `temperature` **clamped** to Anthropic's 0..1 (not rescaled: 0.7 stays 0.7, 1.5 becomes 1) |
//! | `top_p`, `top_k` (an extension some clients send) | the same |
//! | `stream` | `stream` (`stream_options.include_usage` is the [`StreamTranslator`]'s flag) |
//! | `user` | `metadata.user_id` |
//!
//! Trailing whitespace of a final assistant message (a prefill) is trimmed: Anthropic rejects it.
//!
//! **Dropped** (no effect on the shape of the answer, or OpenAI-only bookkeeping): `n: 1`,
//! `logprobs: false`, `top_logprobs: null`, `response_format: {type: text}`, zero
//! `presence_penalty` / `frequency_penalty`, empty `logit_bias`, `modalities: ["text"]`, `seed`,
//! `service_tier`, `store`, `metadata`, `stream_options`, `name` on messages, and any field this
//! module does not know (Anthropic rejects unknown fields, so the body is built from the fields
//! above only).
//!
//! **Refused** with a [`TranslateError::Unsupported`] naming the field: `n > 1`, `logprobs: true`,
//! `top_logprobs`, `response_format` `json_object` / `json_schema`, non-zero penalties, a non-empty
//! `logit_bias`, `audio` / `modalities` with audio, `prediction`, `reasoning_effort`,
//! `web_search_options`, legacy `functions` / `function_call` and `role: function`, non-function
//! tools, content parts other than text / image (audio, files), images of other media types.
//! With [`chat_to_messages_with`]`(.., drop_unsupported: true)` (`drop_params`) they are dropped
//! instead.
//!
//! # Response mapping
//!
//! Text blocks are concatenated into `message.content` (`null` when there is none); `tool_use`
//! blocks become `tool_calls` (`arguments` = the input as a JSON string); thinking blocks are not
//! returned. `finish_reason`: `end_turn` / `stop_sequence` / `pause_turn` → `stop`, `max_tokens` /
//! `model_context_window_exceeded` → `length`, `tool_use` → `tool_calls`, `refusal` →
//! `content_filter`. Usage: `prompt_tokens` = `input_tokens` + `cache_creation_input_tokens` +
//! `cache_read_input_tokens` (Anthropic counts cached tokens apart; OpenAI includes them, and
//! reports the cache reads in `prompt_tokens_details.cached_tokens`), `completion_tokens` =
//! `output_tokens`.

use super::usage::Usage;
use super::{Answer, Attempt, ClientApi, HeaderFate, Mode, Outbound, Provider};
use crate::error::GatewayError;
use crate::route::Endpoint;
use bytes::Bytes;
use pingora::http::RequestHeader;
use serde_json::json;
use std::fmt;

/// The `anthropic-version` header value sent upstream.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The documented `max_tokens` default when a client sets neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Why an OpenAI request cannot be sent to Anthropic. Both variants are a client error (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// A field (path such as `messages[2].content[0].type`) that Anthropic has no equivalent for.
    Unsupported { field: String, reason: String },
    /// A malformed field.
    Invalid { field: String, reason: String },
}

impl TranslateError {
    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TranslateError::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TranslateError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The offending field.
    pub fn field(&self) -> &str {
        match self {
            TranslateError::Unsupported { field, .. } | TranslateError::Invalid { field, .. } => {
                field
            }
        }
    }

    /// The OpenAI-shaped 400 body: `code` is `unsupported_parameter` or `invalid_request`, `param`
    /// the field.
    pub fn to_openai_json(&self) -> Bytes {
        let code = match self {
            TranslateError::Unsupported { .. } => "unsupported_parameter",
            TranslateError::Invalid { .. } => "invalid_request",
        };
        let body = json!({"error": {
            "message": self.to_string(),
            "type": "invalid_request_error",
            "param": self.field(),
            "code": code,
        }});
        Bytes::from(body.to_string())
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::Unsupported { field, reason } => {
                write!(
                    f,
                    "`{field}` is not supported by this model's provider (Anthropic): {reason}"
                )
            }
            TranslateError::Invalid { field, reason } => write!(f, "invalid `{field}`: {reason}"),
        }
    }
}

impl std::error::Error for TranslateError {}

pub mod inbound;
mod request;
mod response;
mod simple;
mod stream;

pub use request::*;
pub use response::*;
pub use stream::*;

#[cfg(test)]
mod tests;

/// `provider: anthropic`: OpenAI chat requests translated to the Messages API and back; Anthropic
/// clients (`/v1/messages`, `count_tokens`) relayed as they are.
pub struct Anthropic;

impl Provider for Anthropic {
    fn speaks(&self) -> ClientApi {
        ClientApi::Anthropic
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        matches!(
            endpoint,
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens
        )
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
        let base = &a.upstream.url.base_path;
        let model = &a.deployment.model;
        match a.endpoint {
            Endpoint::ChatCompletions => {
                let body = request_body(
                    a.raw,
                    model,
                    &a.deployment.params,
                    DEFAULT_MAX_TOKENS,
                    a.drop_params,
                )
                .map_err(|e| translate_error(&e))?;
                let include_usage = crate::providers::client_asked_usage(&a.req.body);
                Ok(Outbound {
                    path: format!("{base}/messages"),
                    body,
                    answer: Box::new(ToOpenAi::new(model, include_usage)),
                })
            }
            Endpoint::CountTokens => Ok(Outbound {
                path: format!("{base}/messages/count_tokens"),
                body: crate::providers::openai_body(a, None),
                answer: Box::new(Native::new(model)),
            }),
            _ => Ok(Outbound {
                path: format!("{base}/messages"),
                body: crate::providers::openai_body(a, None),
                answer: Box::new(Native::new(model)),
            }),
        }
    }

    fn request_headers(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        // Anthropic refuses requests without an API version; a client's own (Anthropic SDK) is kept.
        if !req.headers.contains_key("anthropic-version") {
            req.insert_header("anthropic-version", ANTHROPIC_VERSION)?;
        }
        Ok(())
    }

    fn reconciles_tokens(&self) -> bool {
        true
    }
}

/// An OpenAI chat request the translation refused, as the client's 400.
pub fn translate_error(e: &TranslateError) -> GatewayError {
    match e {
        TranslateError::Unsupported { .. } => GatewayError::UnsupportedParameter {
            message: format!("{e}; set `drop_params: true` on the model to drop it instead"),
            param: e.field().to_string(),
        },
        TranslateError::Invalid { .. } => GatewayError::invalid(e.to_string(), None),
    }
}

/// An Anthropic answer to an OpenAI chat client: a stream translated event by event, a JSON answer
/// converted whole, errors in OpenAI's shape, rate-limit headers in OpenAI's names.
struct ToOpenAi {
    model: String,
    include_usage: bool,
    /// Made when the answer turns out to be a stream (its buffers are not needed otherwise).
    tx: Option<StreamTranslator>,
    whole_usage: Option<Usage>,
}

impl ToOpenAi {
    fn new(model: &str, include_usage: bool) -> ToOpenAi {
        ToOpenAi {
            model: model.to_string(),
            include_usage,
            tx: None,
            whole_usage: None,
        }
    }
}

impl Answer for ToOpenAi {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        if crate::providers::is_event_stream(headers) {
            self.tx = Some(StreamTranslator::new(&self.model, self.include_usage));
            Mode::Stream
        } else {
            Mode::Whole
        }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        let (b, usage) = messages_to_chat_bytes(body, &self.model)?;
        self.whole_usage = Some(usage);
        Some(b)
    }

    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        let tx = self.tx.as_mut()?;
        Some(tx.feed(&chunk)).filter(|b| !b.is_empty())
    }

    fn finish(&mut self) -> Option<Bytes> {
        let tx = self.tx.as_mut()?;
        Some(tx.finish()).filter(|b| !b.is_empty())
    }

    fn usage(&self) -> Option<Usage> {
        self.whole_usage
            .or_else(|| self.tx.as_ref().and_then(StreamTranslator::usage))
    }

    fn error_body(&self, status: u16, body: &[u8]) -> Option<Bytes> {
        Some(error_to_openai(status, body))
    }

    fn client_header(&self, name: &http::HeaderName, value: &http::HeaderValue) -> HeaderFate {
        if !name.as_str().starts_with("anthropic-ratelimit-") {
            return HeaderFate::Keep;
        }
        // The client speaks OpenAI's API: its rate-limit headers, in its names and formats.
        match openai_ratelimit_header(name.as_str(), value) {
            Some((n, v)) => HeaderFate::Rename(n, v),
            None => HeaderFate::Drop,
        }
    }
}

/// Anthropic's own answer to an Anthropic client, relayed as it is; the usage read on the way
/// (split across two events in a stream).
struct Native {
    model: String,
    tx: Option<StreamTranslator>,
    scanner: crate::providers::usage::UsageScanner,
}

impl Native {
    fn new(model: &str) -> Native {
        Native {
            model: model.to_string(),
            tx: None,
            scanner: Default::default(),
        }
    }
}

impl Answer for Native {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        let sse = crate::providers::is_event_stream(headers);
        if sse {
            self.tx = Some(StreamTranslator::new(&self.model, false));
        }
        Mode::Relay { sse }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        self.scanner.feed(body);
        Some(Bytes::copy_from_slice(body))
    }

    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        match self.tx.as_mut() {
            Some(tx) => {
                let _ = tx.feed(&chunk);
            }
            None => self.scanner.feed(&chunk),
        }
        Some(chunk)
    }

    fn finish(&mut self) -> Option<Bytes> {
        None
    }

    fn usage(&self) -> Option<Usage> {
        match &self.tx {
            Some(tx) => tx.usage(),
            None => self.scanner.usage(),
        }
    }

    fn error_body(&self, _status: u16, _body: &[u8]) -> Option<Bytes> {
        None
    }

    fn client_api(&self) -> crate::providers::ClientApi {
        crate::providers::ClientApi::Anthropic
    }
}

/// Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` as OpenAI's
/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (a reset instant becomes OpenAI's
/// duration, e.g. `12s` or `250ms`); Anthropic's separate input/output token limits have no OpenAI
/// counterpart and are left out.
pub fn openai_ratelimit_header(
    name: &str,
    value: &http::HeaderValue,
) -> Option<(&'static str, String)> {
    let rest = name.strip_prefix("anthropic-ratelimit-")?;
    let v = value.to_str().ok()?;
    let out = match rest {
        "requests-limit" => ("x-ratelimit-limit-requests", v.to_string()),
        "requests-remaining" => ("x-ratelimit-remaining-requests", v.to_string()),
        "tokens-limit" => ("x-ratelimit-limit-tokens", v.to_string()),
        "tokens-remaining" => ("x-ratelimit-remaining-tokens", v.to_string()),
        "requests-reset" | "tokens-reset" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let secs = crate::sched::seconds_until_rfc3339(v, now)?;
            let name = if rest == "requests-reset" {
                "x-ratelimit-reset-requests"
            } else {
                "x-ratelimit-reset-tokens"
            };
            let d = if secs < 1.0 {
                format!("{}ms", (secs * 1000.0).round() as u64)
            } else {
                format!("{}s", secs.ceil() as u64)
            };
            (name, d)
        }
        _ => return None,
    };
    Some(out)
}
