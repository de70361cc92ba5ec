//! AWS Bedrock Runtime (`provider: bedrock`): OpenAI chat and completions through the Converse API,
//! embeddings through InvokeModel, every request signed with SigV4 (`balance::sigv4`).
//!
//! | client calls | upstream | answer |
//! | --- | --- | --- |
//! | `POST /v1/chat/completions` | `POST /model/{modelId}/converse` | `chat.completion` |
//! | the same, `stream: true` | `POST /model/{modelId}/converse-stream` (AWS event stream) | `chat.completion.chunk` SSE, translated message by message ([`StreamTranslator`]) |
//! | `POST /v1/completions` | the same, the prompt as one user message | `text_completion` (chunks when streamed) |
//! | `POST /v1/embeddings` | `POST /model/{modelId}/invoke` (Titan Text Embeddings, Cohere Embed) | embeddings list |
//! | `POST /v1/messages` (Anthropic SDKs) | chat, through [`super::anthropic::inbound`] | Anthropic `message` / events |
//!
//! The model id (the deployment's `model`: a foundation model id, an inference profile id such as
//! `us.anthropic.claude-3-5-sonnet-20240620-v1:0`, or an ARN) is percent-encoded into the path.
//!
//! # Request mapping (chat → Converse)
//!
//! | OpenAI | Converse |
//! | --- | --- |
//! | `system` / `developer` messages (anywhere, in order) | `system`: one `{text}` block per text part |
//! | `user` / `assistant` messages | `messages`, content as blocks; consecutive messages of one role merged (Converse wants alternation) |
//! | text parts, `refusal` parts | `{text}` blocks; blank ones dropped (Converse refuses them) |
//! | `image_url` with a `data:image/{jpeg,png,gif,webp};base64,` URL | `{image: {format, source: {bytes}}}` |
//! | `image_url` with an `s3://bucket/key.{jpg,png,gif,webp}` URI | `{image: {format, source: {s3Location: {uri}}}}` |
//! | assistant `tool_calls` | `{toolUse: {toolUseId, name, input}}` (`arguments` parsed; empty = `{}`) |
//! | `role: tool` messages | `{toolResult: {toolUseId, content: [{text}], status: success}}` in a user turn, results first |
//! | `tools` (function tools) | `toolConfig.tools[].toolSpec {name, description, inputSchema: {json}}`; tools the history uses but `tools` lacks are declared with an open schema (Converse refuses tool blocks without a `toolConfig`) |
//! | `tool_choice` `auto` / `required` / `{function: {name}}` | `toolChoice` `{auto: {}}` / `{any: {}}` / `{tool: {name}}` |
//! | `tool_choice: none` | no `toolConfig` (Converse has no `none`); when the history holds tool blocks the tools stay, without a choice |
//! | `max_completion_tokens`, else `max_tokens` | `inferenceConfig.maxTokens` (absent: the model's default) |
//! | `temperature` (OpenAI 0..2) | `inferenceConfig.temperature` **clamped** to 0..1 |
//! | `top_p` | `inferenceConfig.topP` |
//! | `stop` (string or list) | `inferenceConfig.stopSequences` |
//! | `top_k` (an extension) | `additionalModelRequestFields.top_k` |
//! | `stream`, `stream_options.include_usage` | the `converse-stream` path; the translator's usage chunk |
//!
//! A final assistant message (a prefill) is trimmed of trailing whitespace.
//!
//! **Dropped**: `n: 1`, `logprobs: false`, `response_format: {type: text}`, zero penalties, empty
//! `logit_bias`, `modalities: ["text"]`, `parallel_tool_calls` (Converse has no switch), `seed`,
//! `user`, `service_tier`, `store`, `metadata`, `name` on messages, and fields this module does not
//! know (the body is built from the fields above only).
//!
//! **Refused** with a 400 naming the field (dropped instead with `drop_params`): `n > 1`,
//! `logprobs: true`, `top_logprobs`, `response_format` `json_object` / `json_schema`, non-zero
//! penalties, a non-empty `logit_bias`, audio, `prediction`, `reasoning_effort`,
//! `web_search_options`, legacy `functions` / `function_call` / `role: function`, non-function
//! tools, content parts other than text and images, `http(s)` image URLs (Converse cannot fetch
//! them) and images of other types. Completions: `echo`, `best_of > 1`, `suffix`; several prompts
//! or token arrays are refused either way.
//!
//! # Response mapping
//!
//! `id`: `chatcmpl-` + Bedrock's `x-amzn-RequestId`. Text blocks → `message.content`; `toolUse`
//! blocks → `tool_calls` (`arguments` = the input as a JSON string); reasoning blocks are not
//! returned. `finish_reason`: `end_turn` / `stop_sequence` → `stop`, `max_tokens` /
//! `model_context_window_exceeded` → `length`, `tool_use` → `tool_calls`, `content_filtered` /
//! `guardrail_intervened` → `content_filter`. Usage: `prompt_tokens` = `inputTokens` +
//! `cacheReadInputTokens` + `cacheWriteInputTokens` (Bedrock counts cached tokens apart; OpenAI
//! includes them), `prompt_tokens_details.cached_tokens` = the cache reads, `completion_tokens` =
//! `outputTokens`.
//!
//! # Embeddings (InvokeModel)
//!
//! Titan Text Embeddings V2 (`amazon.titan-embed-text-v2*`): `{inputText, dimensions}` (OpenAI's
//! `dimensions`: 256, 512 or 1024), one input per request. Titan V1 / G1: `{inputText}`. Cohere
//! Embed (`cohere.embed-*`): `{texts, input_type}` (up to 96 texts; `input_type` the client's
//! extension field, default `search_document`; `truncate` passed on). `encoding_format: base64`
//! is answered with little-endian float32 vectors, as OpenAI does. Usage: `inputTextTokenCount`, or
//! the `x-amzn-bedrock-input-token-count` header.
//!
//! # Errors
//!
//! Bedrock's errors (`{"message"}`, the type in `x-amzn-ErrorType`) keep their status and become
//! OpenAI-shaped ([`error_to_openai`]): `ThrottlingException` (429) → `rate_limit_exceeded`, which
//! the exchange treats as any 429 (the scheduler holds the deployment back, a `Retry-After` cools
//! it for that long, retries go to another deployment); `ValidationException` (400) →
//! `invalid_request`, or `context_length_exceeded` when the input is too long, which takes the
//! model's `context_window_fallbacks`; 5xx → retried. Mid-stream exceptions end the client's stream
//! with an error event.
//!
//! # Health check
//!
//! Passive by default: no probe (a Bedrock upstream that fails is cooled down by its models'
//! `cooldown`), because a model request would spend tokens. With `health_check.interval` set the
//! probe is a signed `GET /async-invoke?maxResults=1` (ListAsyncInvokes on the runtime endpoint:
//! no tokens, one result; the credentials need `bedrock:ListAsyncInvokes`), or any `path` given.

mod embed;
mod request;
mod response;
mod simple;
mod stream;
#[cfg(test)]
mod tests;

pub use embed::{family, Family};
pub use request::{chat_to_converse, completion_to_converse};
pub use response::{converse_to_openai, error_to_openai, finish_reason, Shape, TokenUsage};
pub use stream::{StreamTranslator, MAX_MESSAGE};

use super::anthropic::TranslateError;
use super::usage::Usage;
use super::{Answer, Attempt, Mode, Outbound, Provider};
use crate::error::GatewayError;
use crate::route::Endpoint;
use bytes::Bytes;
use pingora::http::RequestHeader;

/// `provider: bedrock`.
pub struct Bedrock;

impl Provider for Bedrock {
    fn supports(&self, endpoint: Endpoint) -> bool {
        matches!(
            endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings
        )
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
        let model = &a.deployment.model;
        let mut path = String::with_capacity(a.upstream.url.base_path.len() + model.len() + 32);
        path.push_str(&a.upstream.url.base_path);
        path.push_str("/model/");
        push_segment(&mut path, model);
        match a.endpoint {
            Endpoint::Embeddings => {
                let body = request::with_params(a.raw, &a.deployment.params)
                    .map_err(|e| translate_error(&e))?;
                let r =
                    embed::request(&body, model, a.drop_params).map_err(|e| translate_error(&e))?;
                path.push_str("/invoke");
                Ok(Outbound {
                    path,
                    body: r.body,
                    answer: Box::new(Embeddings {
                        model: model.clone(),
                        family: r.family,
                        base64: r.base64,
                        header_tokens: None,
                        usage: None,
                    }),
                })
            }
            Endpoint::ChatCompletions | Endpoint::Completions => {
                let shape = if a.endpoint == Endpoint::Completions {
                    Shape::Completion
                } else {
                    Shape::Chat
                };
                let body = request::request_body(
                    a.raw,
                    &a.deployment.params,
                    shape == Shape::Completion,
                    a.drop_params,
                )
                .map_err(|e| translate_error(&e))?;
                path.push_str(if a.req.stream {
                    "/converse-stream"
                } else {
                    "/converse"
                });
                let include_usage = super::client_asked_usage(&a.req.body);
                Ok(Outbound {
                    path,
                    body,
                    answer: Box::new(ToOpenAi {
                        model: model.clone(),
                        shape,
                        include_usage,
                        tx: None,
                        whole_usage: None,
                        id: None,
                    }),
                })
            }
            other => Err(GatewayError::invalid(
                format!("{} is not served by provider `bedrock`", other.template()),
                None,
            )),
        }
    }

    fn request_headers(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        // `x-amz-*` headers are the signature's (date, session token, content hash): a client's
        // would be signed along and could break or alter it.
        let amz: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-amz-"))
            .cloned()
            .collect();
        for n in amz {
            req.remove_header(&n);
        }
        // InvokeModel answers in the type `Accept` names (a client's `text/event-stream` would be
        // refused); ConverseStream answers in its event stream whatever the client accepts.
        if req.uri.path().ends_with("/converse-stream") {
            req.remove_header(&http::header::ACCEPT);
        } else {
            req.insert_header(http::header::ACCEPT, "application/json")?;
        }
        Ok(())
    }

    fn is_context_window(&self, status: u16, body: &[u8]) -> bool {
        super::is_context_window_error(status, body)
            || (matches!(status, 400 | 413)
                && response::says_too_long(&String::from_utf8_lossy(body)))
    }

    fn reconciles_tokens(&self) -> bool {
        true
    }
}

/// A model id as one path segment: RFC 3986 unreserved bytes kept, everything else
/// percent-encoded (`:` and `/` of versions and ARNs included).
fn push_segment(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// An OpenAI request the translation refused, as the client's 400.
pub fn translate_error(e: &TranslateError) -> GatewayError {
    match e {
        TranslateError::Unsupported { field, reason } => GatewayError::UnsupportedParameter {
            message: format!(
                "`{field}` is not supported by this model's provider (Bedrock): {reason}; set `drop_params: true` on the model to drop it instead"
            ),
            param: field.clone(),
        },
        TranslateError::Invalid { .. } => GatewayError::invalid(e.to_string(), None),
    }
}

/// A Converse answer to an OpenAI chat or completions client: an event stream translated message
/// by message, a JSON answer converted whole, errors in OpenAI's shape.
struct ToOpenAi {
    model: String,
    shape: Shape,
    include_usage: bool,
    /// Made when the answer turns out to be a stream (its buffers are not needed otherwise).
    tx: Option<StreamTranslator>,
    whole_usage: Option<Usage>,
    id: Option<String>,
}

impl Answer for ToOpenAi {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        if let Some(rid) = headers
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
        {
            let prefix = match self.shape {
                Shape::Chat => "chatcmpl-",
                Shape::Completion => "cmpl-",
            };
            self.id = Some(format!("{prefix}{rid}"));
        }
        let stream = headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/vnd.amazon.eventstream")
        });
        if stream {
            let mut tx = StreamTranslator::new(&self.model, self.shape, self.include_usage);
            if let Some(id) = &self.id {
                tx.set_id(id);
            }
            self.tx = Some(tx);
            Mode::Stream
        } else {
            Mode::Whole
        }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        let id = self.id.as_deref().unwrap_or(match self.shape {
            Shape::Chat => "chatcmpl-bedrock",
            Shape::Completion => "cmpl-bedrock",
        });
        let (b, usage) = converse_to_openai(body, &self.model, id, self.shape)?;
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
}

/// An InvokeModel answer of an embedding model, as OpenAI's embeddings list.
struct Embeddings {
    model: String,
    family: Family,
    base64: bool,
    header_tokens: Option<u64>,
    usage: Option<Usage>,
}

impl Answer for Embeddings {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        self.header_tokens = headers
            .get("x-amzn-bedrock-input-token-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Mode::Whole
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        let (b, usage) = embed::to_openai(
            body,
            self.family,
            &self.model,
            self.base64,
            self.header_tokens,
        )?;
        self.usage = Some(usage);
        Some(b)
    }

    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        Some(chunk)
    }

    fn finish(&mut self) -> Option<Bytes> {
        None
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn error_body(&self, status: u16, body: &[u8]) -> Option<Bytes> {
        Some(error_to_openai(status, body))
    }
}
