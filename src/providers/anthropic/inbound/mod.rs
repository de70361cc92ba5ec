//! Anthropic Messages API served by any chat model: Anthropic Messages ⇄ OpenAI Chat Completions.
//!
//! The reverse of [`super::anthropic`]: lets Anthropic SDK callers (`POST /v1/messages`) use a
//! model whose deployments speak OpenAI's Chat Completions (`openai`, `azure`,
//! `openai_compatible`: vLLM, Ollama, ...). Pure translation functions; the request path wires
//! them in.
//!
//! * [`messages_to_chat_request`] (and [`messages_to_chat_request_with`] for [`Options`],
//!   [`request_body`] for raw bytes plus the deployment's `params`): an Anthropic
//!   `POST /v1/messages` body → an OpenAI `POST /v1/chat/completions` body.
//! * [`chat_to_messages_response`]: an OpenAI `chat.completion` → an Anthropic `message`.
//! * [`ChatStreamToMessages`]: OpenAI `chat.completion.chunk` SSE bytes (split anywhere) →
//!   Anthropic SSE events (`event:` + `data:`), with the usage for accounting.
//! * [`error_to_anthropic`]: an upstream (OpenAI-shaped or not) error body → Anthropic's error
//!   shape, typed by status; [`request_error_to_anthropic`]: a refused request's 400 body.
//!
//! Refusals reuse [`TranslateError`] (the field is an Anthropic request path such as
//! `messages[2].content[0].type`); send them with [`request_error_to_anthropic`], not
//! `to_openai_json`, since the client speaks Anthropic.
//!
//! # Request mapping
//!
//! | Anthropic | OpenAI |
//! | --- | --- |
//! | `model` | the deployment's model |
//! | `system` (string, or text blocks) | a leading `system` message: a string, or text parts when there are several blocks |
//! | `messages[]` with string content | the same role, the same string |
//! | `text` blocks (user) | `text` parts; a lone text block becomes a plain string |
//! | `text` blocks (assistant) | one content string, the blocks concatenated (they are one stretch of model output; `null` when there is none and tool calls exist) |
//! | `image` block, `source: {type: base64, media_type, data}` | `image_url` part, `url: data:<media_type>;base64,<data>` |
//! | `image` block, `source: {type: url, url}` | `image_url` part, `url` |
//! | `tool_use` blocks (assistant) | `tool_calls` (`id`, `function.name`, `function.arguments` = `input` as a JSON string) |
//! | `tool_result` blocks (user) | one `role: tool` message each (`tool_call_id`), in order, **before** the rest of that user turn (which follows as a `user` message if anything is left); content: the string, or the text blocks joined with `\n`; `is_error: true` prefixes `Error: ` unless the text already starts with "error" (OpenAI has no error flag) |
//! | `thinking` / `redacted_thinking` blocks | dropped (no OpenAI equivalent; they cannot be replayed to another model) |
//! | `tools[]` (`name`, `description`, `input_schema`, `strict`) | function tools (`parameters` = `input_schema`, `{"type":"object","properties":{}}` when absent) |
//! | `tool_choice` `auto` / `any` / `tool {name}` / `none` | `"auto"` / `"required"` / `{type: function, function: {name}}` / `"none"`; not sent without tools (OpenAI rejects it) |
//! | `tool_choice.disable_parallel_tool_use: true` | `parallel_tool_calls: false` (with tools, and not with `none`) |
//! | `max_tokens` | `max_tokens` by default: every OpenAI-compatible server (vLLM, Ollama, llama.cpp, TGI) and Azure know it, while `max_completion_tokens` is newer; OpenAI's reasoning models (o-series, gpt-5) reject `max_tokens`, so [`Options::limit_field`] = [`LimitField::MaxCompletionTokens`] sends that instead. Absent: not sent (the upstream's default) |
//! | `stop_sequences` | `stop` (an empty list is not sent) |
//! | `temperature` (0..1), `top_p` | the same (OpenAI's range 0..2 contains Anthropic's) |
//! | `metadata.user_id` | `user` |
//! | `stream: true` | `stream: true` + `stream_options: {include_usage: true}` (the usage chunk gives the Anthropic `usage`) |
//!
//! A final assistant turn (Anthropic's "prefill") is sent as an ordinary assistant message: OpenAI
//! models answer after it rather than continue it. A turn left empty by the drops (say, only
//! thinking blocks) is not sent. `cache_control` (on blocks, tools, or top level) and `citations`
//! are dropped: OpenAI caches prompt prefixes on its own.
//!
//! **Dropped** (no effect on the shape of the answer): `top_k` (OpenAI has no top-k sampling and
//! rejects the unknown argument), `thinking` (the upstream model reasons, or not, on its own; no
//! thinking blocks are returned), `service_tier`, top-level `cache_control`, metadata other than
//! `user_id`, and fields set to `null`.
//!
//! **Refused** with [`TranslateError::Unsupported`] naming the field: `document`,
//! `search_result`, server-tool blocks (`server_tool_use`, `web_search_tool_result`, ...) and any
//! other block type; images in assistant turns or inside `tool_result` (OpenAI tool messages carry
//! text only); `image` sources of type `file` (Files API); tools with a `type` other than `custom`
//! (Anthropic's server and client tools: web search, bash, text editor, computer use, ...);
//! `container`, `mcp_servers`, `context_management`, and any top-level field this module does not
//! know (the Anthropic API rejects unknown fields too, so an unknown field is a feature the caller
//! expects to take effect). With [`Options::drop_unsupported`] (`drop_params`) they are dropped
//! instead. Malformed fields are [`TranslateError::Invalid`] either way.
//!
//! # Response mapping
//!
//! `id`: `msg_` + the completion id without its `chatcmpl-` prefix (a random one when there is
//! none); `model`: the alias the client asked for; `content`: a `text` block for the message text
//! (and for a `refusal`), then one `tool_use` block per tool call (`input` = the parsed
//! `arguments`, `{}` when they are not a JSON object; a legacy `function_call` counts as one).
//! `stop_reason`: `stop` → `end_turn`, `length` → `max_tokens`, `tool_calls` / `function_call` →
//! `tool_use`, `content_filter` → `refusal`; `stop` (or none) with tool calls → `tool_use`
//! (OpenAI says `stop` when `tool_choice` forced a function, and Anthropic clients loop on
//! `tool_use`); `stop` with vLLM's `stop_reason` string (the matched stop string) →
//! `stop_sequence` with that `stop_sequence`. Reasoning text some servers add
//! (`reasoning_content`) is not returned. Usage: `input_tokens` = `prompt_tokens` −
//! `prompt_tokens_details.cached_tokens`, `cache_read_input_tokens` = the cached tokens (Anthropic
//! counts them apart, OpenAI includes them), `cache_creation_input_tokens` = 0 (OpenAI reports no
//! cache writes), `output_tokens` = `completion_tokens`.
//!
//! Errors: see [`error_to_anthropic`]; the streaming mapping is on [`ChatStreamToMessages`].

use super::TranslateError;
use crate::body::ModelRequest;
use crate::config::Deployment;
use crate::error::GatewayError;
use crate::providers::usage::Usage;
use crate::providers::{Answer, Attempt, HeaderFate, Mode, Outbound, Provider};
use crate::route::Endpoint;
use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// Which OpenAI field carries Anthropic's `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitField {
    /// `max_tokens`: understood by every OpenAI-compatible server and Azure (the default).
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's current name, required by its reasoning models.
    MaxCompletionTokens,
}

impl LimitField {
    fn key(self) -> &'static str {
        match self {
            LimitField::MaxTokens => "max_tokens",
            LimitField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// How [`messages_to_chat_request_with`] translates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The field `max_tokens` is sent as.
    pub limit_field: LimitField,
    /// Drop what has no OpenAI equivalent instead of refusing the request (`drop_params`).
    pub drop_unsupported: bool,
}

mod request;
mod response;
mod stream;

pub use request::*;
pub use response::*;
pub use stream::*;

#[cfg(test)]
mod tests;

/// Whether an Anthropic client's `endpoint` can be served by provider `p` through this adapter:
/// the Messages API, by a provider with chat completions (token counting is answered by the
/// gateway itself).
pub fn serves(p: &dyn Provider, endpoint: Endpoint) -> bool {
    endpoint == Endpoint::Messages && p.supports(Endpoint::ChatCompletions)
}

/// An Anthropic client's attempt on a provider that speaks OpenAI: the Messages request becomes
/// a chat request for the deployment (its `params` applied here), the provider shapes that, and
/// its answer is turned back into a Messages answer.
pub fn plan(p: &dyn Provider, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
    let opts = Options {
        limit_field: if p.wants_max_completion_tokens(&a.deployment.model) {
            LimitField::MaxCompletionTokens
        } else {
            LimitField::MaxTokens
        },
        drop_unsupported: a.drop_params,
    };
    let chat = request_body(a.raw, &a.deployment.model, &a.deployment.params, opts)
        .map_err(|e| translate_error(&e))?;
    let req = ModelRequest::parse(&chat)?;
    // The params are in the chat body already (with the limit field chosen above).
    let deployment = Deployment {
        params: Vec::new(),
        ..a.deployment.clone()
    };
    let inner = Attempt {
        endpoint: Endpoint::ChatCompletions,
        upstream: a.upstream,
        deployment: &deployment,
        drop_params: a.drop_params,
        add_function_to_prompt: a.add_function_to_prompt,
        req: &req,
        raw: &chat,
        prompt_estimate: a.prompt_estimate,
    };
    let out = p.request(&inner)?;
    Ok(Outbound {
        path: out.path,
        body: out.body,
        answer: Box::new(ToMessages {
            inner: out.answer,
            inner_whole: false,
            tx: ChatStreamToMessages::new(&a.deployment.model)
                .with_input_estimate(a.prompt_estimate),
            model: a.deployment.model.clone(),
            stream: false,
            whole_usage: None,
        }),
    })
}

/// An Anthropic request the translation to chat completions refused, as the client's 400.
fn translate_error(e: &TranslateError) -> GatewayError {
    match e {
        TranslateError::Unsupported { field, reason } => GatewayError::UnsupportedParameter {
            message: format!(
                "`{field}` is not supported for this model (its provider speaks the OpenAI API): {reason}; set `drop_params: true` on the model to drop it instead"
            ),
            param: field.clone(),
        },
        TranslateError::Invalid { .. } => GatewayError::invalid(e.to_string(), None),
    }
}

/// A provider's OpenAI-shaped answer (as its own [`Answer`] produces it) turned into Anthropic's.
struct ToMessages {
    inner: Box<dyn Answer>,
    /// The inner answer converts its body whole (so does this one, from the inner's output).
    inner_whole: bool,
    tx: ChatStreamToMessages,
    model: String,
    stream: bool,
    whole_usage: Option<Usage>,
}

impl Answer for ToMessages {
    fn begin(&mut self, status: u16, headers: &http::HeaderMap) -> Mode {
        match self.inner.begin(status, headers) {
            Mode::Relay { sse: true } | Mode::Stream => {
                self.stream = true;
                Mode::Stream
            }
            Mode::Whole => {
                self.inner_whole = true;
                Mode::Whole
            }
            Mode::Relay { sse: false } => Mode::Whole,
        }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        let converted;
        let chat: &[u8] = if self.inner_whole {
            converted = self.inner.whole(body)?;
            &converted
        } else {
            body
        };
        let message: Value = serde_json::from_slice(chat).ok()?;
        // Usage from the OpenAI answer (its prompt count includes cached tokens).
        self.whole_usage = crate::providers::usage::find_usage(chat);
        Some(Bytes::from(
            chat_to_messages_response(&message, &self.model).to_string(),
        ))
    }

    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        let chat = self.inner.chunk(chunk)?;
        Some(self.tx.feed(&chat)).filter(|b| !b.is_empty())
    }

    fn finish(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        if let Some(rest) = self.inner.finish() {
            out.extend_from_slice(&self.tx.feed(&rest));
        }
        out.extend_from_slice(&self.tx.finish());
        (!out.is_empty()).then(|| out.freeze())
    }

    fn usage(&self) -> Option<Usage> {
        if self.stream {
            self.tx.usage()
        } else {
            self.whole_usage
        }
    }

    fn error_body(&self, status: u16, body: &[u8]) -> Option<Bytes> {
        let openai = self.inner.error_body(status, body);
        Some(error_to_anthropic(
            status,
            openai.as_deref().unwrap_or(body),
        ))
    }

    fn client_header(&self, name: &http::HeaderName, value: &http::HeaderValue) -> HeaderFate {
        self.inner.client_header(name, value)
    }

    fn client_api(&self) -> crate::providers::ClientApi {
        crate::providers::ClientApi::Anthropic
    }
}
