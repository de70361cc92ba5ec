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

use super::anthropic::{non_null, put_json_str, Cx, TranslateError};
use super::usage::Usage;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

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

// ---------------------------------------------------------------------------------------------
// Request: Anthropic → OpenAI
// ---------------------------------------------------------------------------------------------

/// Anthropic Messages request → OpenAI Chat Completions request for `model` (the deployment's
/// upstream model name), with the default [`Options`]. See the module documentation.
pub fn messages_to_chat_request(body: &Value, model: &str) -> Result<Value, TranslateError> {
    messages_to_chat_request_with(body, model, Options::default())
}

/// The upstream body for an Anthropic request `raw` sent to an OpenAI-style deployment `model`:
/// [`messages_to_chat_request_with`] translates, then `params` (the deployment's defaults, raw
/// JSON values of OpenAI fields) are added where the translation did not set them (`max_tokens`
/// and `max_completion_tokens` count as one field).
pub fn request_body(
    raw: &[u8],
    model: &str,
    params: &[(String, String)],
    opts: Options,
) -> Result<Bytes, TranslateError> {
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| TranslateError::invalid("body", format!("not JSON: {e}")))?;
    let mut out = messages_to_chat_request_with(&body, model, opts)?;
    if let Value::Object(map) = &mut out {
        for (k, v) in params {
            let limit = k == "max_tokens" || k == "max_completion_tokens";
            let set = map.contains_key(k)
                || (limit
                    && (map.contains_key("max_tokens")
                        || map.contains_key("max_completion_tokens")));
            if !set {
                if let Ok(v) = serde_json::from_str::<Value>(v) {
                    map.insert(k.clone(), v);
                }
            }
        }
    }
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| TranslateError::invalid("body", e.to_string()))
}

/// [`messages_to_chat_request`] with explicit [`Options`].
pub fn messages_to_chat_request_with(
    body: &Value,
    model: &str,
    opts: Options,
) -> Result<Value, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx {
        drop_unsupported: opts.drop_unsupported,
    };
    check_fields(req, &mut cx)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));

    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "expected an array of messages"))?;
    if messages.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one message is required",
        ));
    }
    let mut chat = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = non_null(req, "system") {
        if let Some(content) = system_content(system, &mut cx)? {
            chat.push(json!({"role": "system", "content": content}));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        convert_message(m, i, &mut chat, &mut cx)?;
    }
    out.insert("messages".into(), Value::Array(chat));

    if let Some(v) = non_null(req, "max_tokens") {
        match v.as_u64() {
            Some(n) if n > 0 => {
                out.insert(opts.limit_field.key().into(), n.into());
            }
            _ => {
                return Err(TranslateError::invalid(
                    "max_tokens",
                    "expected a positive integer",
                ))
            }
        }
    }
    if let Some(v) = non_null(req, "stop_sequences") {
        let seqs = v
            .as_array()
            .filter(|a| a.iter().all(Value::is_string))
            .ok_or_else(|| {
                TranslateError::invalid("stop_sequences", "expected an array of strings")
            })?;
        if !seqs.is_empty() {
            out.insert("stop".into(), Value::Array(seqs.clone()));
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = non_null(req, key) {
            if !v.is_number() {
                return Err(TranslateError::invalid(key, "expected a number"));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = non_null(req, "top_k") {
        // Dropped (see the module documentation), but still a number.
        if !v.is_number() {
            return Err(TranslateError::invalid("top_k", "expected a number"));
        }
    }
    if let Some(m) = non_null(req, "metadata") {
        let m = m
            .as_object()
            .ok_or_else(|| TranslateError::invalid("metadata", "expected an object"))?;
        match m.get("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) => {
                out.insert("user".into(), Value::String(u.clone()));
            }
            Some(_) => {
                return Err(TranslateError::invalid(
                    "metadata.user_id",
                    "expected a string",
                ))
            }
        }
    }
    if let Some(s) = non_null(req, "stream") {
        let s = s
            .as_bool()
            .ok_or_else(|| TranslateError::invalid("stream", "expected a boolean"))?;
        if s {
            out.insert("stream".into(), Value::Bool(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }

    let has_tools = match non_null(req, "tools") {
        Some(tools) => {
            let tools = convert_tools(tools, &mut cx)?;
            let any = !tools.is_empty();
            if any {
                out.insert("tools".into(), Value::Array(tools));
            }
            any
        }
        None => false,
    };
    if let Some(c) = non_null(req, "tool_choice") {
        let (choice, parallel) = convert_tool_choice(c)?;
        // Without tools OpenAI rejects `tool_choice`; Anthropic's `none` means the same anyway.
        if has_tools {
            if parallel == Some(false) && choice != "none" {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(Value::Object(out))
}

/// Top-level fields: translated, dropped, or refused.
fn check_fields(req: &Map<String, Value>, cx: &mut Cx) -> Result<(), TranslateError> {
    for (k, v) in req {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" | "messages" | "system" | "max_tokens" | "stop_sequences" | "temperature"
            | "top_p" | "metadata" | "stream" | "tools" | "tool_choice" => {}
            "top_k" | "thinking" | "service_tier" | "cache_control" => {}
            "container" => cx.unsupported(
                k.as_str(),
                "code execution containers are Anthropic server features",
            )?,
            "mcp_servers" => cx.unsupported(
                k.as_str(),
                "the MCP connector is an Anthropic server feature",
            )?,
            "context_management" => {
                cx.unsupported(k.as_str(), "context editing is an Anthropic server feature")?
            }
            _ => cx.unsupported(k.as_str(), "unknown field, not translated for this model")?,
        }
    }
    Ok(())
}

/// `system` → the system message content (`None` when empty).
fn system_content(system: &Value, cx: &mut Cx) -> Result<Option<Value>, TranslateError> {
    match system {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(Value::String(s.clone()))),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = text_of(b, &format!("system[{j}]"))?;
                        if !t.is_empty() {
                            texts.push(t);
                        }
                    }
                    Some(other) => cx.unsupported(
                        format!("system[{j}].type"),
                        &format!("`{other}` blocks in the system prompt (only text)"),
                    )?,
                    None => {
                        return Err(TranslateError::invalid(
                            format!("system[{j}].type"),
                            "missing",
                        ))
                    }
                }
            }
            Ok(match texts.as_slice() {
                [] => None,
                [one] => Some(Value::String((*one).to_owned())),
                _ => Some(Value::Array(texts.iter().map(|t| text_part(t)).collect())),
            })
        }
        _ => Err(TranslateError::invalid(
            "system",
            "expected a string or an array of text blocks",
        )),
    }
}

fn text_of<'a>(block: &'a Value, field: &str) -> Result<&'a str, TranslateError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.text"), "expected a string"))
}

fn text_part(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

/// One Anthropic turn → OpenAI messages, appended to `out`.
fn convert_message(
    m: &Value,
    i: usize,
    out: &mut Vec<Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    let field = format!("messages[{i}]");
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some(other) => {
            return Err(TranslateError::invalid(
                format!("{field}.role"),
                format!("`{other}` (expected user or assistant; the system prompt is `system`)"),
            ))
        }
        None => return Err(TranslateError::invalid(format!("{field}.role"), "missing")),
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string or an array of content blocks",
            ))
        }
    };
    if role == "user" {
        user_blocks(blocks, &field, out, cx)
    } else {
        assistant_blocks(blocks, &field, out, cx)
    }
}

fn block_type<'a>(b: &'a Value, field: &str) -> Result<&'a str, TranslateError> {
    b.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.type"), "missing"))
}

fn user_blocks(
    blocks: &[Value],
    field: &str,
    out: &mut Vec<Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, b) in blocks.iter().enumerate() {
        let f = format!("{field}.content[{j}]");
        match block_type(b, &f)? {
            "text" => parts.push(text_part(text_of(b, &f)?)),
            "image" => {
                if let Some(p) = image_part(b, &f, cx)? {
                    parts.push(p);
                }
            }
            // Tool results answer the previous assistant turn: they come first.
            "tool_result" => {
                out.push(tool_message(b, &f, cx)?);
            }
            "thinking" | "redacted_thinking" => {}
            "tool_use" => {
                return Err(TranslateError::invalid(
                    format!("{f}.type"),
                    "tool_use blocks belong in assistant turns",
                ))
            }
            other => cx.unsupported(format!("{f}.type"), &block_reason(other))?,
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [one] if one.get("type").and_then(Value::as_str) == Some("text") => {
                one.get("text").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Array(parts),
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn block_reason(ty: &str) -> String {
    match ty {
        "document" => {
            "`document` blocks (PDF, text files) are not translated for this model".into()
        }
        _ => format!("`{ty}` blocks have no OpenAI equivalent"),
    }
}

fn assistant_blocks(
    blocks: &[Value],
    field: &str,
    out: &mut Vec<Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    let mut text = String::new();
    let mut any_text = false;
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let f = format!("{field}.content[{j}]");
        match block_type(b, &f)? {
            "text" => {
                text.push_str(text_of(b, &f)?);
                any_text = true;
            }
            "tool_use" => calls.push(tool_call(b, &f)?),
            "thinking" | "redacted_thinking" => {}
            "tool_result" => {
                return Err(TranslateError::invalid(
                    format!("{f}.type"),
                    "tool_result blocks belong in user turns",
                ))
            }
            "image" => cx.unsupported(
                format!("{f}.type"),
                "images in assistant turns (OpenAI assistant messages carry text only)",
            )?,
            other => cx.unsupported(format!("{f}.type"), &block_reason(other))?,
        }
    }
    if !any_text && calls.is_empty() {
        return Ok(());
    }
    let mut msg = Map::new();
    msg.insert("role".into(), Value::String("assistant".into()));
    let content = if !any_text || (text.is_empty() && !calls.is_empty()) {
        Value::Null
    } else {
        Value::String(text)
    };
    msg.insert("content".into(), content);
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

fn tool_call(b: &Value, field: &str) -> Result<Value, TranslateError> {
    let id = b
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.id"), "missing"))?;
    let name = b
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.name"), "missing"))?;
    let arguments = match b.get("input") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    };
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }))
}

fn tool_message(b: &Value, field: &str, cx: &mut Cx) -> Result<Value, TranslateError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.tool_use_id"), "missing"))?;
    let mut text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut text = String::new();
            let mut first = true;
            for (k, item) in items.iter().enumerate() {
                let f = format!("{field}.content[{k}]");
                match block_type(item, &f)? {
                    "text" => {
                        if !first {
                            text.push('\n');
                        }
                        text.push_str(text_of(item, &f)?);
                        first = false;
                    }
                    "image" => cx.unsupported(
                        format!("{f}.type"),
                        "images in tool results (OpenAI tool messages carry text only)",
                    )?,
                    other => cx.unsupported(format!("{f}.type"), &block_reason(other))?,
                }
            }
            text
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string or an array of content blocks",
            ))
        }
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true)
        && !text
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("error"))
    {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn image_part(b: &Value, field: &str, cx: &mut Cx) -> Result<Option<Value>, TranslateError> {
    let source = b
        .get("source")
        .ok_or_else(|| TranslateError::invalid(format!("{field}.source"), "missing"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::invalid(format!("{field}.source.media_type"), "missing")
                })?;
            let data = source.get("data").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid(format!("{field}.source.data"), "missing")
            })?;
            let mut url = String::with_capacity(13 + media_type.len() + data.len());
            url.push_str("data:");
            url.push_str(media_type);
            url.push_str(";base64,");
            url.push_str(data);
            url
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{field}.source.url"), "missing"))?
            .to_owned(),
        Some(other) => {
            cx.unsupported(
                format!("{field}.source.type"),
                &format!("image sources of type `{other}` (only base64 and url)"),
            )?;
            return Ok(None);
        }
        None => {
            return Err(TranslateError::invalid(
                format!("{field}.source.type"),
                "missing",
            ))
        }
    };
    Ok(Some(
        json!({"type": "image_url", "image_url": {"url": url}}),
    ))
}

fn convert_tools(tools: &Value, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "expected an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        match t.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "custom" => {}
            Some(ty) => {
                let ty = ty.as_str().unwrap_or("?");
                cx.unsupported(
                    format!("tools[{i}].type"),
                    &format!("`{ty}` is an Anthropic-defined tool; only custom tools (name, input_schema) are translated"),
                )?;
                continue;
            }
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("tools[{i}].name"), "missing"))?;
        let mut f = Map::new();
        f.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = match t.get("input_schema") {
            Some(s @ Value::Object(_)) => s.clone(),
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(_) => {
                return Err(TranslateError::invalid(
                    format!("tools[{i}].input_schema"),
                    "expected an object",
                ))
            }
        };
        f.insert("parameters".into(), schema);
        if let Some(s) = t.get("strict").and_then(Value::as_bool) {
            f.insert("strict".into(), Value::Bool(s));
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(out)
}

/// Anthropic `tool_choice` → (OpenAI `tool_choice`, `parallel_tool_calls` when set).
fn convert_tool_choice(c: &Value) -> Result<(Value, Option<bool>), TranslateError> {
    let o = c.as_object().ok_or_else(|| {
        TranslateError::invalid("tool_choice", "expected an object with a `type`")
    })?;
    let choice = match o.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        Some(other) => {
            return Err(TranslateError::invalid(
                "tool_choice.type",
                format!("unknown value `{other}`"),
            ))
        }
        None => return Err(TranslateError::invalid("tool_choice.type", "missing")),
    };
    let parallel = match o.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(d)) => Some(!d),
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice.disable_parallel_tool_use",
                "expected a boolean",
            ))
        }
    };
    Ok((choice, parallel))
}

// ---------------------------------------------------------------------------------------------
// Response: OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------

/// Anthropic `stop_reason` for an OpenAI `finish_reason`; `has_tool_use` when the answer has
/// tool calls (a `stop` with tool calls is a tool use: OpenAI says `stop` when `tool_choice`
/// forced the function).
pub fn stop_reason(finish_reason: Option<&str>, has_tool_use: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if has_tool_use => "tool_use",
        _ => "end_turn",
    }
}

/// OpenAI usage (response body or final stream chunk).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct OaUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl OaUsage {
    fn prompt(&self) -> u64 {
        self.prompt_tokens.unwrap_or(0)
    }

    fn cached(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(self.prompt())
    }

    fn output(&self) -> u64 {
        self.completion_tokens.unwrap_or(0)
    }

    /// Anthropic's usage counts: input without the cache reads, which are counted apart.
    fn write_anthropic(&self, out: &mut BytesMut) {
        let _ = write!(
            out,
            "{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":{}}}",
            self.prompt() - self.cached(),
            self.cached(),
            self.output()
        );
    }
}

/// An Anthropic message id for an upstream completion id.
fn message_id(upstream: Option<&str>) -> String {
    match upstream.filter(|s| !s.is_empty()) {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => random_id("msg_"),
    }
}

fn random_id(prefix: &str) -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let mut s = String::with_capacity(prefix.len() + 24);
    s.push_str(prefix);
    s.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from),
    );
    s
}

/// vLLM's `stop_reason` (the matched stop string; a token id is not a stop sequence).
fn matched_stop(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Tool arguments (a JSON string) → the `input` object (`{}` when they are not one).
fn parse_input(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        },
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// OpenAI `chat.completion` → Anthropic `message`, answering as `model` (the alias the client
/// asked for). See the module documentation.
pub fn chat_to_messages_response(resp: &Value, model: &str) -> Value {
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    let mut text = String::new();
    match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => text.push_str(s),
        // Some servers answer with parts.
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
        }
        _ => {}
    }
    if let Some(r) = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
    {
        text.push_str(r);
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let mut tools = 0usize;
    for call in message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if call
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "function")
        {
            continue;
        }
        let f = call.get("function");
        content.push(tool_use_block(
            call.get("id").and_then(Value::as_str),
            f.and_then(|f| f.get("name")).and_then(Value::as_str),
            f.and_then(|f| f.get("arguments")),
        ));
        tools += 1;
    }
    if let Some(f) = message
        .and_then(|m| m.get("function_call"))
        .filter(|f| f.is_object())
    {
        content.push(tool_use_block(
            None,
            f.get("name").and_then(Value::as_str),
            f.get("arguments"),
        ));
        tools += 1;
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let mut reason = stop_reason(finish, tools > 0);
    let mut sequence = Value::Null;
    if reason == "end_turn" && finish == Some("stop") {
        if let Some(s) = matched_stop(choice.and_then(|c| c.get("stop_reason"))) {
            reason = "stop_sequence";
            sequence = Value::String(s.to_owned());
        }
    }
    let usage = resp
        .get("usage")
        .and_then(|u| OaUsage::deserialize(u).ok())
        .unwrap_or_default();
    json!({
        "id": message_id(resp.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {
            "input_tokens": usage.prompt() - usage.cached(),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cached(),
            "output_tokens": usage.output(),
        },
    })
}

fn tool_use_block(id: Option<&str>, name: Option<&str>, arguments: Option<&Value>) -> Value {
    let id = match id.filter(|s| !s.is_empty()) {
        Some(id) => id.to_owned(),
        None => random_id("toolu_"),
    };
    json!({
        "type": "tool_use",
        "id": id,
        "name": name.unwrap_or(""),
        "input": parse_input(arguments),
    })
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Anthropic's error `type` for an HTTP status (its documented table; 402 and 504 are in the SDKs'
/// `ErrorType`; other 4xx are `invalid_request_error` as Anthropic documents, other 5xx
/// `api_error`).
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn anthropic_error_body(ty: &str, message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + message.len());
    write_error(&mut out, ty, message);
    out.freeze()
}

fn write_error(out: &mut BytesMut, ty: &str, message: &str) {
    out.put_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
    put_json_str(out, ty);
    out.put_slice(b",\"message\":");
    put_json_str(out, message);
    out.put_slice(b"}}");
}

/// An upstream error body → `{"type":"error","error":{"type","message"}}`, the type chosen by
/// `status` ([`error_type`]; the status itself stays as it is). The message is OpenAI's
/// `error.message`, else an `error` string (Ollama), a top-level `message` (vLLM) or `detail`
/// (FastAPI servers), else the body's text (first 500 bytes), else `upstream answered <status>`.
pub fn error_to_anthropic(status: u16, body: &[u8]) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let err = v.get("error");
        [
            err.and_then(|e| e.get("message")),
            err,
            v.get("message"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|c| c.as_str().filter(|s| !s.is_empty()))
    });
    let message = match from_json {
        Some(m) => Cow::Borrowed(m),
        None => {
            let end = body.len().min(500);
            let s = String::from_utf8_lossy(&body[..end]);
            if s.trim().is_empty() {
                Cow::Owned(format!("upstream answered {status}"))
            } else {
                Cow::Owned(s.into_owned())
            }
        }
    };
    anthropic_error_body(error_type(status), &message)
}

/// The 400 body (`invalid_request_error`) for a request [`messages_to_chat_request`] refused.
pub fn request_error_to_anthropic(e: &TranslateError) -> Bytes {
    let message = match e {
        TranslateError::Unsupported { field, reason } => format!(
            "`{field}` is not supported for this model (its provider speaks the OpenAI API): {reason}; set `drop_params: true` on the model to drop it instead"
        ),
        TranslateError::Invalid { .. } => e.to_string(),
    };
    anthropic_error_body("invalid_request_error", &message)
}

// ---------------------------------------------------------------------------------------------
// Streaming: OpenAI SSE → Anthropic SSE
// ---------------------------------------------------------------------------------------------

/// The first element of a JSON array (the rest skipped without allocating); `null` → none.
struct First<T>(Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or null")
            }
            fn visit_unit<E>(self) -> Result<First<T>, E> {
                Ok(First(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON array whose first element is kept inline: the usual single tool-call delta costs no
/// allocation; further ones go to `rest`.
struct Few<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Few<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Few<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or null")
            }
            fn visit_unit<E>(self) -> Result<Few<T>, E> {
                Ok(Few::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Few<T>, A::Error> {
                let mut few = Few {
                    first: seq.next_element()?,
                    rest: Vec::new(),
                };
                while let Some(x) = seq.next_element()? {
                    few.rest.push(x);
                }
                Ok(few)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: First<Choice<'a>>,
    #[serde(default)]
    usage: Option<OaUsage>,
    /// OpenAI's `{"error": {...}}` (or a string); allocated only when present.
    #[serde(default)]
    error: Option<Value>,
    /// vLLM's `{"object": "error", "message": ...}`.
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    /// vLLM: the matched stop string (or token id).
    #[serde(default)]
    stop_reason: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Few<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FnDelta<'a>>,
}

#[derive(Deserialize)]
struct FnDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// A tool call seen in the stream: its OpenAI index and id, and its Anthropic block.
struct ToolSlot {
    key: u32,
    id: String,
    block: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Text(usize),
    Tool(usize),
}

/// OpenAI `chat.completion.chunk` SSE → Anthropic Messages SSE, one upstream event at a time.
///
/// Feed the upstream body as it arrives ([`feed`](Self::feed); chunks may split anywhere, `\n`
/// and `\r\n` line ends both work) and send on what comes back; call [`finish`](Self::finish)
/// when the upstream body ends. Every event is `event: <type>\ndata: <json>\n\n`.
///
/// * The first chunk with a choice (or usage) → `message_start` (`id` as in
///   [`chat_to_messages_response`], empty `content`, `usage.input_tokens` the
///   [`with_input_estimate`](ChatStreamToMessages::with_input_estimate) estimate (0 without one)
///   until the usage chunk gives the real count, `output_tokens` 0). Chunks before it without choices
///   (Azure's prompt-filter results) only lend their id.
/// * `delta.content` (and `delta.refusal`) → `content_block_start` of a `text` block when the
///   open block is not one, then `text_delta`s.
/// * A `tool_calls` delta for a new tool call (a new `index`, or a new `id` on a known index) →
///   `content_block_stop` of the open block, `content_block_start` of a `tool_use` block (`id`
///   and `name`, `input: {}`), then `function.arguments` fragments → `input_json_delta`s.
///   Text after a tool call opens a new text block. A fragment for a tool whose block was already
///   stopped (no server interleaves so) still goes to that block's index.
/// * `finish_reason` is kept; at `data: [DONE]` (or at the end of the body when a finish reason
///   was seen) → `content_block_stop`, `message_delta` (`stop_reason` as in the response
///   mapping, `usage` with `output_tokens` and, from the usage chunk, `input_tokens` and the
///   cache counts; Anthropic's SDKs take both from `message_delta`) and `message_stop`.
/// * An upstream error event (`data: {"error": ...}`), malformed data, or an end of the body
///   with neither `[DONE]` nor a finish reason → `event: error` with
///   `{"type":"error","error":{"type":"api_error","message":...}}`, and nothing after it.
///
/// `reasoning_content` deltas are not relayed. Buffers are reused: apart from the output,
/// allocation happens only per new tool call, for strings with JSON escapes (serde unescapes
/// them), and for the rare chunk with several tool-call deltas.
pub struct ChatStreamToMessages {
    reader: super::sse::SseReader,
    /// `data:` payload of the event being translated.
    data: Vec<u8>,
    out: BytesMut,
    model: String,
    /// The upstream completion id, until `message_start`.
    upstream_id: String,
    started: bool,
    open: Option<Open>,
    next_block: usize,
    tools: Vec<ToolSlot>,
    finish: Option<&'static str>,
    stop_sequence: Option<String>,
    usage: Option<OaUsage>,
    /// `message_start`'s `input_tokens` before the upstream's usage chunk arrives (the gateway's
    /// estimate; Anthropic clients read it there, `message_delta` carries the real count).
    input_estimate: u64,
    done: bool,
}

impl ChatStreamToMessages {
    /// Announce `n` input tokens in `message_start` until the real count is known.
    pub fn with_input_estimate(mut self, n: u64) -> Self {
        self.input_estimate = n;
        self
    }

    /// A translator answering as `model` (the alias the client asked for).
    pub fn new(model: &str) -> Self {
        ChatStreamToMessages {
            reader: super::sse::SseReader::with_capacity(1024),
            data: Vec::with_capacity(1024),
            out: BytesMut::with_capacity(1024),
            model: model.to_owned(),
            upstream_id: String::new(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: None,
            input_estimate: 0,
            done: false,
        }
    }

    /// The usage from the upstream's usage chunk (`None` before it): prompt tokens as OpenAI
    /// counts them (cached included), completion tokens.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| Usage {
            prompt_tokens: u.prompt(),
            completion_tokens: u.output(),
        })
    }

    /// Whether the stream is complete (`message_stop` or `error` produced).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translate the next upstream chunk; returns the complete Anthropic events it finished
    /// (possibly empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.consume(chunk);
        self.out.split().freeze()
    }

    /// Parse `chunk`, writing the events it completes into `out`.
    fn consume(&mut self, chunk: &[u8]) {
        if !self.done {
            // `event:`, `id:` and comment lines (`: keep-alive`) carry nothing here.
            self.reader.push(chunk);
            while !self.done && self.reader.next_event(&mut self.data) {
                self.dispatch();
            }
            if self.done {
                self.reader.clear();
            }
        }
    }

    /// The upstream body ended: completes the stream if it was not (a message without its end is
    /// an error event, never a silent truncation). Returns what is left to send.
    pub fn finish(&mut self) -> Bytes {
        if !self.done {
            // A last event without its blank line (or its line end).
            if self.reader.pending() {
                self.consume(b"\n\n");
            }
            if !self.done {
                if self.finish.is_some() {
                    self.end();
                } else {
                    self.fail("upstream stream ended before the message was complete");
                }
            }
        }
        self.out.split().freeze()
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        if data.as_slice() == b"[DONE]" {
            self.end();
        } else {
            match serde_json::from_slice::<Chunk>(&data) {
                Ok(c) => self.on_chunk(c),
                Err(_) => self.fail("malformed event from the upstream stream"),
            }
        }
        self.data = data;
        self.data.clear();
    }

    fn on_chunk(&mut self, c: Chunk) {
        if let Some(e) = &c.error {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
                .unwrap_or("upstream error");
            self.fail(msg);
            return;
        }
        if c.object.as_deref() == Some("error") {
            self.fail(c.message.as_deref().unwrap_or("upstream error"));
            return;
        }
        if !self.started && self.upstream_id.is_empty() {
            if let Some(id) = c.id.as_deref() {
                self.upstream_id.push_str(id);
            }
        }
        if let Some(u) = c.usage {
            self.usage = Some(u);
        }
        let Some(choice) = c.choices.0 else {
            if self.usage.is_some() {
                self.start();
            }
            return;
        };
        self.start();
        if let Some(d) = choice.delta {
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.text(t);
            }
            if let Some(t) = d.refusal.as_deref().filter(|t| !t.is_empty()) {
                self.text(t);
            }
            if let Some(calls) = d.tool_calls {
                for tc in calls.first.iter().chain(calls.rest.iter()) {
                    self.tool_delta(tc);
                }
            }
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(match f {
                "length" => "max_tokens",
                "tool_calls" | "function_call" => "tool_use",
                "content_filter" => "refusal",
                _ => "end_turn",
            });
            if f == "stop" {
                if let Some(s) = matched_stop(choice.stop_reason.as_ref()) {
                    self.stop_sequence = Some(s.to_owned());
                }
            }
        }
    }

    /// `message_start`, once.
    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let id = message_id(Some(self.upstream_id.as_str()));
        self.upstream_id.clear();
        self.out.put_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        put_json_str(&mut self.out, &id);
        self.out
            .put_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        put_json_str(&mut self.out, &self.model);
        self.out
            .put_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
        let mut u = self.usage.unwrap_or_default();
        if u.prompt_tokens.is_none() {
            u.prompt_tokens = Some(self.input_estimate);
        }
        // Nothing is generated yet.
        u.completion_tokens = Some(0);
        u.write_anthropic(&mut self.out);
        self.out.put_slice(b"}}\n\n");
    }

    fn close(&mut self) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            self.out.put_slice(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
            );
            let _ = write!(self.out, "{i}}}\n\n");
        }
    }

    fn text(&mut self, t: &str) {
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                self.close();
                let i = self.next_block;
                self.next_block += 1;
                self.out.put_slice(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
                );
                let _ = write!(
                    self.out,
                    "{i},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
                );
                self.open = Some(Open::Text(i));
                i
            }
        };
        self.out.put_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        let _ = write!(
            self.out,
            "{index},\"delta\":{{\"type\":\"text_delta\",\"text\":"
        );
        put_json_str(&mut self.out, t);
        self.out.put_slice(b"}}\n\n");
    }

    fn tool_delta(&mut self, tc: &ToolDelta) {
        let id = tc.id.as_deref().filter(|s| !s.is_empty());
        // Which tool call this fragment continues: by index, unless it names another id; a
        // fragment without index continues the last tool call unless it brings a new id.
        let last = self.tools.last();
        let found = match tc.index {
            Some(k) => self
                .tools
                .iter()
                .rposition(|t| t.key == k && id.is_none_or(|id| id == t.id)),
            None => match (last, id) {
                (Some(t), Some(id)) if t.id != id => None,
                (Some(_), _) => Some(self.tools.len() - 1),
                (None, _) => None,
            },
        };
        let block = match found {
            Some(s) => self.tools[s].block,
            None => {
                let key = tc
                    .index
                    .unwrap_or_else(|| self.tools.last().map_or(0, |t| t.key.saturating_add(1)));
                let id = match id {
                    Some(id) => id.to_owned(),
                    None => random_id("toolu_"),
                };
                let name = tc
                    .function
                    .as_ref()
                    .and_then(|f| f.name.as_deref())
                    .unwrap_or("");
                self.close();
                let block = self.next_block;
                self.next_block += 1;
                self.out.put_slice(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
                );
                let _ = write!(
                    self.out,
                    "{block},\"content_block\":{{\"type\":\"tool_use\",\"id\":"
                );
                put_json_str(&mut self.out, &id);
                self.out.put_slice(b",\"name\":");
                put_json_str(&mut self.out, name);
                self.out.put_slice(b",\"input\":{}}}\n\n");
                self.open = Some(Open::Tool(block));
                self.tools.push(ToolSlot { key, id, block });
                block
            }
        };
        if let Some(args) = tc
            .function
            .as_ref()
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            self.out.put_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
            );
            let _ = write!(
                self.out,
                "{block},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":"
            );
            put_json_str(&mut self.out, args);
            self.out.put_slice(b"}}\n\n");
        }
    }

    /// The end of the message: block stop, `message_delta`, `message_stop`.
    fn end(&mut self) {
        if self.done {
            return;
        }
        self.start();
        self.close();
        let has_tools = !self.tools.is_empty();
        let reason = match self.finish {
            Some("end_turn") | None if has_tools => "tool_use",
            Some("end_turn") if self.stop_sequence.is_some() => "stop_sequence",
            Some(r) => r,
            None => "end_turn",
        };
        self.out.put_slice(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"",
        );
        self.out.put_slice(reason.as_bytes());
        self.out.put_slice(b"\",\"stop_sequence\":");
        match (&self.stop_sequence, reason) {
            (Some(s), "stop_sequence") => put_json_str(&mut self.out, s),
            _ => self.out.put_slice(b"null"),
        }
        self.out.put_slice(b"},\"usage\":");
        match self.usage {
            Some(u) => u.write_anthropic(&mut self.out),
            None => self.out.put_slice(b"{\"output_tokens\":0}"),
        }
        self.out
            .put_slice(b"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.done = true;
    }

    fn fail(&mut self, message: &str) {
        if self.done {
            return;
        }
        self.out.put_slice(b"event: error\ndata: ");
        write_error(&mut self.out, "api_error", message);
        self.out.put_slice(b"\n\n");
        self.done = true;
    }
}

#[cfg(test)]
#[path = "anthropic_inbound_tests.rs"]
mod tests;
