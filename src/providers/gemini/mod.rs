//! Google's Gemini API (`provider: gemini`) and Vertex AI (`provider: vertex`): OpenAI chat and
//! embeddings requests translated to Gemini's wire format, answers and streams translated back.
//!
//! | provider | URL (`upstreams[].url`) | auth | paths below the URL |
//! | --- | --- | --- | --- |
//! | `gemini` | `https://generativelanguage.googleapis.com/v1beta` | `x-goog-api-key` (`auth: {type: header, ...}`) | `/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`, `:embedContent` (one input), `:batchEmbedContents` (several) |
//! | `vertex` | `https://{location}-aiplatform.googleapis.com/v1/projects/{p}/locations/{location}/publishers/google` | OAuth2 access token (`auth: {type: gcp}`, `balance::gcp`) | the same generation paths; `/models/{m}:predict` for embeddings |
//!
//! # Chat request mapping
//!
//! | OpenAI | Gemini |
//! | --- | --- |
//! | `system` / `developer` messages (all, in order) | `systemInstruction.parts` (text) |
//! | `user` messages | `contents[]` with `role: user` |
//! | `assistant` messages | `role: model`; `tool_calls` → `functionCall` parts (`args` = the parsed `arguments`) |
//! | `tool` messages | `functionResponse` parts in a user turn (`name` from the assistant's call with that `tool_call_id`; `response` = the content when it is a JSON object, else `{"content": text}`) |
//! | consecutive messages of one role | one turn (empty texts dropped: Gemini refuses them) |
//! | `text` / `refusal` parts | `text` parts |
//! | `image_url` `data:<type>;base64,` | `inlineData {mimeType, data}` |
//! | `image_url` `http(s)://` / `gs://` | `fileData {mimeType (from the extension; image/jpeg without one), fileUri}` |
//! | `input_audio {data, format}` | `inlineData {mimeType: audio/<format>}` |
//! | `file {file_data: data: URL}` | `inlineData` |
//! | `tools` (function tools) | `tools: [{functionDeclarations: [{name, description, parametersJsonSchema}]}]` (a function without properties declares no parameters: Gemini refuses an empty object schema) |
//! | `tool_choice` `auto` / `none` / `required` / `{function}` | `toolConfig.functionCallingConfig.mode` `AUTO` / `NONE` / `ANY` / `ANY` + `allowedFunctionNames` |
//! | `max_completion_tokens`, else `max_tokens` | `generationConfig.maxOutputTokens` |
//! | `temperature`, `top_p`, `top_k`, `seed` | `temperature`, `topP`, `topK`, `seed` |
//! | `presence_penalty`, `frequency_penalty` (non-zero) | `presencePenalty`, `frequencyPenalty` |
//! | `n` (1–8) | `candidateCount` |
//! | `stop` (at most 5) | `stopSequences` |
//! | `response_format` `json_object` / `json_schema` | `responseMimeType: application/json` (+ `responseJsonSchema`) |
//! | `reasoning_effort` `none`/`minimal` / `low` / `medium` / `high` | `thinkingConfig.thinkingBudget` 0 / 1024 / 8192 / 24576 |
//! | `safety_settings` (an extension, e.g. in a deployment's `params`) | `safetySettings`, as given |
//! | `stream` | `:streamGenerateContent?alt=sse` instead of `:generateContent` |
//!
//! **Dropped**: `user`, `metadata`, `store`, `service_tier`, `stream_options` (the translator's
//! flag), `parallel_tool_calls: true`, `logprobs: false`, empty `logit_bias`, zero penalties,
//! `name` on messages, and fields this module does not know. **Refused** with a 400 naming the field
//! (dropped instead with `drop_params`): `logprobs: true`, `top_logprobs`, a non-empty
//! `logit_bias`, `modalities` other than text, `audio`, `prediction`, `web_search_options`,
//! `parallel_tool_calls: false`, legacy `functions` / `function_call` / `role: function`,
//! non-function tools, content parts other than the ones above (in system messages: anything but
//! text), uploaded `file_id`s, `response_format` types other than the three.
//!
//! # Answer mapping
//!
//! Each candidate is a choice: its text parts (without thought summaries) are `message.content`
//! (`null` when there is none), its `functionCall` parts `tool_calls` (the call's `id`, or a
//! generated `call_...`; `arguments` = `args` as a JSON string). `finishReason`: `STOP` → `stop`
//! (`tool_calls` when the candidate called functions), `MAX_TOKENS` → `length`, `SAFETY`,
//! `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY`, ... → `content_filter`,
//! others → `stop`. A blocked prompt (`promptFeedback.blockReason`, no candidates) is one choice
//! with `content: null` and `finish_reason: content_filter`; an answer with neither candidates nor
//! a block is an upstream failure (502; in a stream, the error event). Usage: `prompt_tokens` =
//! `promptTokenCount` (which includes `cachedContentTokenCount`), `completion_tokens` =
//! `candidatesTokenCount` + `thoughtsTokenCount`, `prompt_tokens_details.cached_tokens` =
//! `cachedContentTokenCount`, `completion_tokens_details.reasoning_tokens` = `thoughtsTokenCount`.
//! Streams: see [`StreamTranslator`].
//!
//! # Embeddings
//!
//! `input` (a string or strings; token arrays are refused) → Gemini `embedContent` /
//! `batchEmbedContents` or Vertex `:predict` instances; `dimensions` → `outputDimensionality`;
//! the `task_type` extension → `taskType` / `task_type`; `encoding_format: base64` is honoured
//! (little-endian f32, as OpenAI encodes). Vertex reports each input's tokens; Gemini reports none,
//! so its usage is estimated as a token per 4 bytes of input.
//!
//! # Errors
//!
//! Google's `{"error": {"code", "message", "status", "details"}}` → OpenAI's shape with the same
//! HTTP status: `INVALID_ARGUMENT` → `invalid_request_error` (`context_length_exceeded` when the
//! input token count exceeds the model's maximum, which also switches to the model's
//! `context_window_fallbacks`), `API_KEY_INVALID` / `UNAUTHENTICATED` → `authentication_error`,
//! `PERMISSION_DENIED` → `permission_error`, `NOT_FOUND`, `RESOURCE_EXHAUSTED` →
//! `rate_limit_error` (its `RetryInfo.retryDelay` is the retry's and the cooldown's
//! `Retry-After`), `UNAVAILABLE` / `DEADLINE_EXCEEDED` / `INTERNAL` → `server_error`.

mod request;
mod response;
mod simple;
mod stream;

pub(crate) use request::parse_with_params;
pub use request::{
    chat_to_gemini, embed_options, embedding_inputs, gemini_embed_body, vertex_predict_body,
    EmbedOptions,
};
pub use response::{
    error_to_openai, finish_reason, retry_delay, to_chat, to_embeddings, GeminiUsage,
};
pub use stream::{StreamTranslator, EVENT_LIMIT};

#[cfg(test)]
mod tests;

use super::anthropic::TranslateError;
use super::usage::Usage;
use super::{Answer, Attempt, Mode, Outbound, Provider};
use crate::error::GatewayError;
use crate::route::Endpoint;
use bytes::Bytes;
use std::time::Duration;

/// One place that builds the gateway's [`Usage`] from prompt and completion tokens.
pub(crate) fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage::new(prompt_tokens, completion_tokens)
}

/// A request the translation refused, as the client's 400 (`provider` names the API).
pub(crate) fn refusal(e: &TranslateError, provider: &str) -> GatewayError {
    match e {
        TranslateError::Unsupported { field, reason } => GatewayError::UnsupportedParameter {
            message: format!(
                "`{field}` is not supported by this model's provider ({provider}): {reason}; set `drop_params: true` on the model to drop it instead"
            ),
            param: field.clone(),
        },
        TranslateError::Invalid { .. } => GatewayError::invalid(e.to_string(), None),
    }
}

/// Which of Google's surfaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Gemini,
    Vertex,
}

/// `provider: gemini` / `provider: vertex`.
pub struct Google {
    surface: Surface,
}

pub static GEMINI: Google = Google {
    surface: Surface::Gemini,
};
pub static VERTEX: Google = Google {
    surface: Surface::Vertex,
};

impl Google {
    fn name(&self) -> &'static str {
        match self.surface {
            Surface::Gemini => "Gemini",
            Surface::Vertex => "Vertex AI",
        }
    }
}

/// `{base}/models/{model}:{method}` (a `models/` prefix on the deployment's model is not repeated;
/// the name is percent-encoded so it cannot change the path's shape).
fn method_path(base: &str, model: &str, method: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let mut p = String::with_capacity(base.len() + model.len() + method.len() + 16);
    p.push_str(base);
    p.push_str("/models/");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'@') {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p.push(':');
    p.push_str(method);
    p
}

impl Google {
    /// A chat request with its translated `body`.
    fn chat_outbound(&self, a: &Attempt<'_>, body: Bytes) -> Outbound {
        let (base, model) = (&a.upstream.url.base_path, &a.deployment.model);
        let include_usage = a.req.stream && super::client_asked_usage(&a.req.body);
        let path = if a.req.stream {
            let mut p = method_path(base, model, "streamGenerateContent");
            p.push_str("?alt=sse");
            p
        } else {
            method_path(base, model, "generateContent")
        };
        Outbound {
            path,
            body,
            answer: Box::new(Chat {
                model: model.clone(),
                include_usage,
                tx: None,
                whole_usage: None,
            }),
        }
    }
}

impl Provider for Google {
    fn supports(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Embeddings)
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
        let base = &a.upstream.url.base_path;
        let model = &a.deployment.model;
        let refuse = |e: TranslateError| refusal(&e, self.name());
        // The common chat request, written directly (no `Value` trees).
        let direct = match a.endpoint {
            Endpoint::ChatCompletions if a.deployment.params.is_empty() => simple::chat(a.raw),
            _ => None,
        };
        if let Some(body) = direct {
            return Ok(self.chat_outbound(a, body));
        }
        let req = request::parse_with_params(a.raw, &a.deployment.params).map_err(refuse)?;
        match a.endpoint {
            Endpoint::Embeddings => {
                let texts = embedding_inputs(&req).map_err(refuse)?;
                let opts = request::embed_options(&req).map_err(refuse)?;
                let (body, method) = match self.surface {
                    Surface::Vertex => (vertex_predict_body(&texts, &opts), "predict"),
                    Surface::Gemini => match gemini_embed_body(&texts, model, &opts) {
                        (b, true) => (b, "batchEmbedContents"),
                        (b, false) => (b, "embedContent"),
                    },
                };
                let estimated = texts
                    .iter()
                    .map(|t| (t.len() as u64).div_ceil(4).max(1))
                    .sum();
                let base64 = request::non_null(&req, "encoding_format")
                    .and_then(serde_json::Value::as_str)
                    == Some("base64");
                Ok(Outbound {
                    path: method_path(base, model, method),
                    body: Bytes::from(body.to_string()),
                    answer: Box::new(Embeddings {
                        model: model.clone(),
                        base64,
                        estimated,
                        usage: None,
                    }),
                })
            }
            _ => {
                let body = chat_to_gemini(&req, a.drop_params).map_err(refuse)?;
                Ok(self.chat_outbound(a, Bytes::from(body.to_string())))
            }
        }
    }

    fn is_context_window(&self, status: u16, body: &[u8]) -> bool {
        super::is_context_window_error(status, body)
            || (status == 400
                && response::is_context_message(&String::from_utf8_lossy(
                    &body[..body.len().min(4096)],
                )))
    }

    fn retry_after(&self, status: u16, body: &[u8]) -> Option<Duration> {
        (status == 429 || status >= 500)
            .then(|| retry_delay(body))
            .flatten()
    }

    fn reconciles_tokens(&self) -> bool {
        true
    }
}

/// A Gemini chat answer to an OpenAI client: a stream translated event by event, a JSON answer
/// converted whole, errors in OpenAI's shape.
struct Chat {
    model: String,
    include_usage: bool,
    /// Made when the answer turns out to be a stream (its buffers are not needed otherwise).
    tx: Option<StreamTranslator>,
    whole_usage: Option<Usage>,
}

impl Answer for Chat {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        if super::is_event_stream(headers) {
            self.tx = Some(StreamTranslator::new(&self.model, self.include_usage));
            Mode::Stream
        } else {
            Mode::Whole
        }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        let (b, u) = to_chat(body, &self.model)?;
        self.whole_usage = Some(u);
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

/// An embeddings answer (Gemini's or Vertex AI's) in OpenAI's shape.
struct Embeddings {
    model: String,
    base64: bool,
    /// Prompt tokens when the answer reports none.
    estimated: u64,
    usage: Option<Usage>,
}

impl Answer for Embeddings {
    fn begin(&mut self, _status: u16, _headers: &http::HeaderMap) -> Mode {
        Mode::Whole
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        let (b, u) = to_embeddings(body, &self.model, self.base64, self.estimated)?;
        self.usage = Some(u);
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
