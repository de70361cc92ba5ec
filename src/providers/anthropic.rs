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
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
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

// ---------------------------------------------------------------------------------------------
// Request: OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------

/// OpenAI Chat Completions request → Anthropic Messages request for `model` (the deployment's
/// upstream model name). Unsupported fields are an error; see the module documentation.
pub fn chat_to_messages(
    body: &Value,
    model: &str,
    default_max_tokens: u64,
) -> Result<Value, TranslateError> {
    chat_to_messages_with(body, model, default_max_tokens, false)
}

/// The upstream body for an OpenAI chat request `raw` sent to an Anthropic deployment `model`:
/// `params` (the deployment's defaults, raw JSON values) are merged where the client did not set
/// them, then [`chat_to_messages_with`] translates.
pub fn request_body(
    raw: &[u8],
    model: &str,
    params: &[(String, String)],
    default_max_tokens: u64,
    drop_unsupported: bool,
) -> Result<Bytes, TranslateError> {
    let mut body: Value = serde_json::from_slice(raw)
        .map_err(|e| TranslateError::invalid("body", format!("not JSON: {e}")))?;
    if let Value::Object(map) = &mut body {
        for (k, v) in params {
            if !map.contains_key(k) {
                if let Ok(v) = serde_json::from_str::<Value>(v) {
                    map.insert(k.clone(), v);
                }
            }
        }
    }
    let out = chat_to_messages_with(&body, model, default_max_tokens, drop_unsupported)?;
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| TranslateError::invalid("body", e.to_string()))
}

/// [`chat_to_messages`], dropping the unsupported fields instead of failing when
/// `drop_unsupported` (`drop_params`). Malformed fields are an error either way.
pub fn chat_to_messages_with(
    body: &Value,
    model: &str,
    default_max_tokens: u64,
    drop_unsupported: bool,
) -> Result<Value, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx { drop_unsupported };
    check_unsupported(req, &mut cx)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));

    let max_tokens = match non_null(req, "max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| non_null(req, "max_tokens").map(|v| ("max_tokens", v)))
    {
        Some((field, v)) => match v.as_u64() {
            Some(n) if n > 0 => n,
            _ => {
                return Err(TranslateError::invalid(
                    field,
                    "expected a positive integer",
                ))
            }
        },
        None => default_max_tokens,
    };
    out.insert("max_tokens".into(), max_tokens.into());

    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "expected an array of messages"))?;
    let (system, turns) = convert_messages(messages, &mut cx)?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one user or assistant message is required",
        ));
    }
    out.insert("messages".into(), Value::Array(turns));

    if let Some(stop) = non_null(req, "stop") {
        let seqs: Vec<Value> = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
            _ => {
                return Err(TranslateError::invalid(
                    "stop",
                    "expected a string or strings",
                ))
            }
        };
        if !seqs.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(seqs));
        }
    }
    if let Some(t) = non_null(req, "temperature") {
        let t = t
            .as_f64()
            .ok_or_else(|| TranslateError::invalid("temperature", "expected a number"))?;
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    for key in ["top_p", "top_k"] {
        if let Some(v) = non_null(req, key) {
            if !v.is_number() {
                return Err(TranslateError::invalid(key, "expected a number"));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(s) = non_null(req, "stream") {
        let s = s
            .as_bool()
            .ok_or_else(|| TranslateError::invalid("stream", "expected a boolean"))?;
        out.insert("stream".into(), Value::Bool(s));
    }
    if let Some(u) = non_null(req, "user") {
        let u = u
            .as_str()
            .ok_or_else(|| TranslateError::invalid("user", "expected a string"))?;
        out.insert("metadata".into(), json!({ "user_id": u }));
    }

    let has_tools = if let Some(tools) = non_null(req, "tools") {
        let tools = convert_tools(tools, &mut cx)?;
        let any = !tools.is_empty();
        if any {
            out.insert("tools".into(), Value::Array(tools));
        }
        any
    } else {
        false
    };
    let parallel = non_null(req, "parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match non_null(req, "tool_choice") {
        Some(c) => Some(convert_tool_choice(c)?),
        None => None,
    };
    if parallel == Some(false) && has_tools {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(c) = choice {
        // Without tools only `none` is meaningful, and Anthropic would reject the others.
        if has_tools {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}

/// What a translation (either direction) does with what has no equivalent: `drop_params`.
pub(super) struct Cx {
    pub(super) drop_unsupported: bool,
}

impl Cx {
    /// `Ok(())` when the unsupported thing may be dropped, the error otherwise.
    pub(super) fn unsupported(
        &mut self,
        field: impl Into<String>,
        reason: &str,
    ) -> Result<(), TranslateError> {
        if self.drop_unsupported {
            Ok(())
        } else {
            Err(TranslateError::unsupported(field, reason))
        }
    }
}

pub(super) fn non_null<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

/// Fields OpenAI has and Anthropic cannot honour (unless trivially droppable).
fn check_unsupported(req: &Map<String, Value>, cx: &mut Cx) -> Result<(), TranslateError> {
    if let Some(n) = non_null(req, "n") {
        if n.as_u64() != Some(1) {
            cx.unsupported("n", "only one choice (n = 1) can be generated")?;
        }
    }
    if non_null(req, "logprobs").is_some_and(|v| v.as_bool() != Some(false)) {
        cx.unsupported("logprobs", "log probabilities are not available")?;
    }
    if non_null(req, "top_logprobs").is_some() {
        cx.unsupported("top_logprobs", "log probabilities are not available")?;
    }
    if let Some(rf) = non_null(req, "response_format") {
        if rf.get("type").and_then(Value::as_str) != Some("text") {
            cx.unsupported(
                "response_format",
                "only {\"type\": \"text\"}; use tools for structured output",
            )?;
        }
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if non_null(req, key).is_some_and(|v| !is_zero(v)) {
            cx.unsupported(key, "penalties are not available (only 0)")?;
        }
    }
    if non_null(req, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        cx.unsupported("logit_bias", "token biases are not available")?;
    }
    if let Some(m) = non_null(req, "modalities") {
        let text_only = m
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            cx.unsupported("modalities", "only text output")?;
        }
    }
    for (key, reason) in [
        ("audio", "audio output is not available"),
        ("prediction", "predicted outputs are not available"),
        ("reasoning_effort", "reasoning effort is not mapped"),
        ("web_search_options", "web search is not mapped"),
        ("functions", "legacy functions: use `tools`"),
        ("function_call", "legacy function_call: use `tool_choice`"),
    ] {
        if non_null(req, key).is_some() {
            cx.unsupported(key, reason)?;
        }
    }
    Ok(())
}

/// Text of a message content (string or parts) as Anthropic text blocks (system messages, tool
/// results).
fn text_blocks(content: &Value, field: &str, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    match content {
        Value::Null => {}
        Value::String(s) => push_text(&mut blocks, s),
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => push_text(
                        &mut blocks,
                        part.get("text").and_then(Value::as_str).unwrap_or(""),
                    ),
                    _ => cx.unsupported(format!("{field}[{j}].type"), "only text parts here")?,
                }
            }
        }
        _ => {
            return Err(TranslateError::invalid(
                field,
                "expected a string or an array",
            ))
        }
    }
    Ok(blocks)
}

fn push_text(blocks: &mut Vec<Value>, s: &str) {
    if !s.is_empty() {
        blocks.push(json!({"type": "text", "text": s}));
    }
}

/// User / assistant content → Anthropic blocks.
fn content_blocks(content: &Value, field: &str, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::Array(parts) => parts,
        _ => return text_blocks(content, field, cx),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => push_text(
                &mut blocks,
                part.get("text").and_then(Value::as_str).unwrap_or(""),
            ),
            Some("refusal") => push_text(
                &mut blocks,
                part.get("refusal").and_then(Value::as_str).unwrap_or(""),
            ),
            Some("image_url") => {
                let f = format!("{field}[{j}].image_url");
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => u.as_str(),
                    Some(o) => o.get("url").and_then(Value::as_str).unwrap_or(""),
                    None => "",
                };
                if let Some(b) = image_block(url, &f, cx)? {
                    blocks.push(b);
                }
            }
            Some(other) => cx.unsupported(
                format!("{field}[{j}].type"),
                &format!("content part `{other}` (only text and image_url)"),
            )?,
            None => {
                return Err(TranslateError::invalid(
                    format!("{field}[{j}].type"),
                    "missing",
                ))
            }
        }
    }
    Ok(blocks)
}

const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

fn image_block(url: &str, field: &str, cx: &mut Cx) -> Result<Option<Value>, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::invalid(field, "malformed data: URL"))?;
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(TranslateError::invalid(field, "data: URLs must be base64"));
        };
        let media_type = media_type.to_ascii_lowercase();
        let media_type = if media_type == "image/jpg" {
            "image/jpeg".to_owned()
        } else {
            media_type
        };
        if !IMAGE_TYPES.contains(&media_type.as_str()) {
            cx.unsupported(
                field,
                "images must be image/jpeg, image/png, image/gif or image/webp",
            )?;
            return Ok(None);
        }
        return Ok(Some(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        })));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Some(json!({
            "type": "image",
            "source": {"type": "url", "url": url},
        })));
    }
    Err(TranslateError::invalid(
        field,
        "expected an http(s) URL or a base64 data: URL",
    ))
}

/// OpenAI messages → (system blocks, alternating Anthropic turns).
fn convert_messages(
    messages: &[Value],
    cx: &mut Cx,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    // (role, blocks) with consecutive roles merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{field}.role"), "missing"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let cfield = format!("{field}.content");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, &cfield, cx)?);
                continue;
            }
            "user" => ("user", content_blocks(content, &cfield, cx)?),
            "assistant" => {
                let mut blocks = content_blocks(content, &cfield, cx)?;
                if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
                    let calls = calls.as_array().ok_or_else(|| {
                        TranslateError::invalid(format!("{field}.tool_calls"), "expected an array")
                    })?;
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(call, &format!("{field}.tool_calls[{j}]"))?);
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::invalid(format!("{field}.tool_call_id"), "missing")
                    })?;
                let inner = text_blocks(content, &cfield, cx)?;
                let content = match inner.as_slice() {
                    [] => Value::String(String::new()),
                    [one] => one.get("text").cloned().unwrap_or(Value::Null),
                    _ => Value::Array(inner),
                };
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                )
            }
            "function" => {
                cx.unsupported(
                    format!("{field}.role"),
                    "legacy `function` messages: use `tool`",
                )?;
                continue;
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{field}.role"),
                    format!("unknown role `{other}`"),
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // A prefill (final assistant turn) must not end with whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(Value::String(t)) = blocks.last_mut().and_then(|b| b.get_mut("text")) {
            let trimmed = t.trim_end().len();
            t.truncate(trimmed);
        }
        blocks.retain(|b| b.get("text").and_then(Value::as_str) != Some(""));
        if blocks.is_empty() {
            turns.pop();
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == "user" {
                // Tool results first in a user turn (stable).
                blocks
                    .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            }
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, turns))
}

fn tool_use_block(call: &Value, field: &str) -> Result<Value, TranslateError> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.id"), "missing"))?;
    let function = call
        .get("function")
        .ok_or_else(|| TranslateError::invalid(format!("{field}.function"), "missing"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.function.name"), "missing"))?;
    let input = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
            TranslateError::invalid(
                format!("{field}.function.arguments"),
                format!("not JSON: {e}"),
            )
        })?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.function.arguments"),
                "expected a JSON string",
            ))
        }
    };
    if !input.is_object() {
        return Err(TranslateError::invalid(
            format!("{field}.function.arguments"),
            "must encode a JSON object",
        ));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn convert_tools(tools: &Value, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "expected an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            cx.unsupported(format!("tools[{i}].type"), "only function tools")?;
            continue;
        }
        let f = t
            .get("function")
            .ok_or_else(|| TranslateError::invalid(format!("tools[{i}].function"), "missing"))?;
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
            TranslateError::invalid(format!("tools[{i}].function.name"), "missing")
        })?;
        let mut tool = Map::new();
        tool.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            tool.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        tool.insert("input_schema".into(), schema);
        out.push(Value::Object(tool));
    }
    Ok(out)
}

fn convert_tool_choice(c: &Value) -> Result<Value, TranslateError> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => Err(TranslateError::invalid(
                "tool_choice",
                format!("unknown value `{other}`"),
            )),
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "missing"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "expected a string or an object",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Response: Anthropic → OpenAI
// ---------------------------------------------------------------------------------------------

/// OpenAI `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage counts (message_start / message_delta / response).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct AnthUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl AnthUsage {
    fn merge(&mut self, o: &AnthUsage) {
        self.input_tokens = o.input_tokens.or(self.input_tokens);
        self.output_tokens = o.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = o
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = o.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    fn prompt(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }

    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt(),
            completion_tokens: self.output_tokens.unwrap_or(0),
        }
    }

    fn to_openai(self) -> Value {
        let (p, c) = (self.prompt(), self.output_tokens.unwrap_or(0));
        json!({
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_input_tokens.unwrap_or(0)},
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Anthropic `message` response → OpenAI `chat.completion`, answering as `model_alias`.
pub fn messages_to_chat(resp: &Value, model_alias: &str) -> Value {
    let mut text = String::new();
    let mut any_text = false;
    let mut tool_calls = Vec::new();
    for block in resp
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                any_text = true;
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string(),
                    },
                }));
            }
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if any_text { Value::String(text) } else { Value::Null },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let usage = resp
        .get("usage")
        .and_then(|u| AnthUsage::deserialize(u).ok())
        .unwrap_or_default();
    json!({
        "id": resp.get("id").cloned().unwrap_or_else(|| json!("chatcmpl-anthropic")),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model_alias,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(resp.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage.to_openai(),
        "system_fingerprint": null,
    })
}

/// A response `message` as [`messages_to_chat_bytes`] reads it (borrowed where it can be).
#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Vec<BlockIn<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: AnthUsage,
}

#[derive(Deserialize)]
struct BlockIn<'a> {
    #[serde(borrow, rename = "type")]
    ty: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
}

/// [`messages_to_chat`] straight from and to bytes, for the request path: the answer is read into
/// typed, borrowed fields and the completion written directly, without building `Value` trees.
/// `None` when the body is not a JSON object of that shape. Also returns the usage.
pub fn messages_to_chat_bytes(body: &[u8], model_alias: &str) -> Option<(Bytes, Usage)> {
    use std::fmt::Write as _;
    let m: MessageIn = serde_json::from_slice(body).ok()?;
    let mut out = BytesMut::with_capacity(body.len() + 256);
    out.put_slice(b"{\"id\":");
    put_json_str(&mut out, m.id.as_deref().unwrap_or("chatcmpl-anthropic"));
    let _ = write!(
        out,
        ",\"object\":\"chat.completion\",\"created\":{},\"model\":",
        now_secs()
    );
    put_json_str(&mut out, model_alias);
    out.put_slice(b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    let mut texts = m.content.iter().filter(|b| b.ty == "text").peekable();
    if texts.peek().is_none() {
        out.put_slice(b"null");
    } else {
        let text: String = texts.filter_map(|b| b.text.as_deref()).collect();
        put_json_str(&mut out, &text);
    }
    out.put_slice(b",\"refusal\":null");
    let mut calls = m.content.iter().filter(|b| b.ty == "tool_use").peekable();
    if calls.peek().is_some() {
        out.put_slice(b",\"tool_calls\":[");
        for (i, b) in calls.enumerate() {
            if i > 0 {
                out.put_slice(b",");
            }
            out.put_slice(b"{\"id\":");
            match b.id.as_deref() {
                Some(id) => put_json_str(&mut out, id),
                None => out.put_slice(b"null"),
            }
            out.put_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            match b.name.as_deref() {
                Some(n) => put_json_str(&mut out, n),
                None => out.put_slice(b"null"),
            }
            out.put_slice(b",\"arguments\":");
            let args = match &b.input {
                Some(v) => v.to_string(),
                None => "{}".to_owned(),
            };
            put_json_str(&mut out, &args);
            out.put_slice(b"}}");
        }
        out.put_slice(b"]");
    }
    let u = m.usage;
    let (p, c) = (u.prompt(), u.output_tokens.unwrap_or(0));
    let _ = write!(
        out,
        "}},\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}}}},\"system_fingerprint\":null}}",
        finish_reason(m.stop_reason.as_deref()),
        p + c,
        u.cache_read_input_tokens.unwrap_or(0)
    );
    Some((out.freeze(), u.to_usage()))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// OpenAI (`type`, `code`) for an Anthropic error type (or, when it is unknown, the status).
fn map_error(
    anth_type: Option<&str>,
    status: u16,
    message: &str,
) -> (&'static str, Cow<'static, str>) {
    let ty = anth_type.unwrap_or(match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    });
    let lower = message.to_ascii_lowercase();
    if lower.contains("prompt is too long")
        || lower.contains("exceed context limit")
        || lower.contains("context window")
    {
        return (
            "invalid_request_error",
            Cow::Borrowed("context_length_exceeded"),
        );
    }
    match ty {
        "invalid_request_error" => ("invalid_request_error", Cow::Borrowed("invalid_request")),
        "authentication_error" => ("authentication_error", Cow::Borrowed("invalid_api_key")),
        "permission_error" => ("permission_error", Cow::Borrowed("permission_denied")),
        "not_found_error" => ("invalid_request_error", Cow::Borrowed("not_found")),
        "request_too_large" => ("invalid_request_error", Cow::Borrowed("request_too_large")),
        "rate_limit_error" => ("rate_limit_error", Cow::Borrowed("rate_limit_exceeded")),
        "billing_error" => ("insufficient_quota", Cow::Borrowed("insufficient_quota")),
        "overloaded_error" => ("server_error", Cow::Borrowed("overloaded")),
        "timeout_error" => ("server_error", Cow::Borrowed("timeout")),
        "api_error" => ("server_error", Cow::Borrowed("upstream_error")),
        other => ("upstream_error", Cow::Owned(other.to_owned())),
    }
}

fn openai_error_value(anth_type: Option<&str>, status: u16, message: &str) -> Value {
    let (ty, code) = map_error(anth_type, status, message);
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

/// Anthropic error body (`{"type":"error","error":{"type":...,"message":...}}`) → OpenAI-shaped
/// error body; the status stays as it is (the caller keeps it). A body that is not Anthropic's
/// error shape is reported by its status, its text (first 500 bytes) as the message.
/// Messages saying the prompt is too long get `code: context_length_exceeded`.
pub fn error_to_openai(status: u16, body: &[u8]) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let anth_type = err.and_then(|e| e.get("type")).and_then(Value::as_str);
    let message = match err.and_then(|e| e.get("message")).and_then(Value::as_str) {
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
    Bytes::from(openai_error_value(anth_type, status, &message).to_string())
}

// ---------------------------------------------------------------------------------------------
// Streaming: Anthropic SSE → OpenAI SSE
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    message: Option<StartMessage<'a>>,
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<AnthUsage>,
    #[serde(default, borrow)]
    error: Option<ErrBody<'a>>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<AnthUsage>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", default, borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrBody<'a> {
    #[serde(rename = "type", default, borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Clone, Copy, PartialEq)]
enum BlockKind {
    Text,
    /// A tool_use block and its OpenAI `tool_calls[].index`.
    Tool(u32),
    /// thinking, server tools, ...: not relayed.
    Other,
}

/// Anthropic SSE → OpenAI `chat.completion.chunk` SSE, one Anthropic event at a time.
///
/// Feed the upstream body as it arrives ([`feed`](Self::feed); chunks may split anywhere, `\n` and
/// `\r\n` line ends both work) and send on what comes back; call [`finish`](Self::finish) when the
/// upstream body ends. Mapping: `message_start` → a first chunk with `role: assistant`;
/// text deltas → `content` deltas; a `tool_use` block start → a `tool_calls` delta with `id`,
/// `type`, `name` and empty `arguments`; `input_json_delta` → `arguments` deltas; `message_delta`
/// → a chunk with the `finish_reason`; `message_stop` → the usage chunk (`choices: []`, only when
/// `include_usage`) and `data: [DONE]`; `ping`, thinking blocks and unknown events are skipped;
/// an `error` event (or malformed data, or an upstream end before `message_stop`) → an
/// OpenAI-shaped `data: {"error": {...}}` event and `data: [DONE]`. Nothing is produced after
/// `[DONE]`.
pub struct StreamTranslator {
    reader: super::sse::SseReader,
    /// `data:` payload of the event being translated.
    data: Vec<u8>,
    out: BytesMut,
    /// `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[` once the
    /// message id is known.
    prefix: String,
    model: String,
    created: u64,
    include_usage: bool,
    blocks: Vec<BlockKind>,
    next_tool: u32,
    usage: Option<AnthUsage>,
    started: bool,
    finished: bool,
    done: bool,
}

impl StreamTranslator {
    /// A translator answering as `model_alias`; `include_usage` = the client's
    /// `stream_options.include_usage`.
    pub fn new(model_alias: &str, include_usage: bool) -> Self {
        let mut t = StreamTranslator {
            reader: super::sse::SseReader::with_capacity(1024),
            data: Vec::with_capacity(1024),
            out: BytesMut::with_capacity(1024),
            prefix: String::new(),
            model: model_alias.to_owned(),
            created: now_secs(),
            include_usage,
            blocks: Vec::new(),
            next_tool: 0,
            usage: None,
            started: false,
            finished: false,
            done: false,
        };
        t.set_id("chatcmpl-anthropic");
        t
    }

    fn set_id(&mut self, id: &str) {
        self.prefix.clear();
        self.prefix.push_str("{\"id\":");
        push_json_str(&mut self.prefix, id);
        self.prefix
            .push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        self.prefix.push_str(&self.created.to_string());
        self.prefix.push_str(",\"model\":");
        push_json_str(&mut self.prefix, &self.model);
        self.prefix.push_str(",\"choices\":[");
    }

    /// The usage so far (`None` before `message_start`): prompt = input + cache tokens, completion =
    /// output tokens (final after `message_delta`).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthUsage::to_usage)
    }

    /// Whether `data: [DONE]` was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translate the next upstream chunk; returns the complete OpenAI events it finished (possibly
    /// empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if !self.done {
            // `event:` lines are redundant with the JSON `type`.
            self.reader.push(chunk);
            while !self.done && self.reader.next_event(&mut self.data) {
                self.dispatch();
            }
            if self.done {
                self.reader.clear();
            }
        }
        self.out.split().freeze()
    }

    /// The upstream body ended: completes the stream if it was not (an unfinished message is an
    /// error event, never a silent truncation). Returns what is left to send.
    pub fn finish(&mut self) -> Bytes {
        // What a last event without its blank line completes (`feed` hands it out).
        let mut head = Bytes::new();
        if !self.done {
            if self.reader.pending() {
                head = self.feed(b"\n\n");
            }
            if !self.done {
                if self.finished {
                    // message_delta seen, message_stop missing: the answer is complete.
                    self.end();
                } else {
                    self.fail(
                        None,
                        502,
                        "upstream stream ended before the message was complete",
                    );
                }
            }
        }
        if head.is_empty() {
            return self.out.split().freeze();
        }
        let mut all = BytesMut::with_capacity(head.len() + self.out.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&self.out.split());
        all.freeze()
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        match serde_json::from_slice::<Event>(&data) {
            Ok(ev) => self.on_event(ev),
            Err(_) => self.fail(None, 502, "malformed event from the upstream stream"),
        }
        self.data = data;
        self.data.clear();
    }

    fn on_event(&mut self, ev: Event) {
        match ev.ty.as_ref() {
            "message_start" => {
                if let Some(m) = ev.message {
                    if let Some(id) = m.id.as_deref() {
                        self.set_id(id);
                    }
                    let mut u = self.usage.unwrap_or_default();
                    if let Some(mu) = m.usage {
                        u.merge(&mu);
                    }
                    self.usage = Some(u);
                }
                self.start();
            }
            "content_block_start" => {
                self.start();
                let (Some(index), Some(block)) = (ev.index, ev.content_block) else {
                    return;
                };
                let kind = match block.ty.as_ref() {
                    "text" => {
                        if let Some(t) = block.text.as_deref().filter(|t| !t.is_empty()) {
                            self.content_delta(t);
                        }
                        BlockKind::Text
                    }
                    "tool_use" => {
                        let t = self.next_tool;
                        self.next_tool += 1;
                        self.tool_start(
                            t,
                            block.id.as_deref().unwrap_or(""),
                            block.name.as_deref().unwrap_or(""),
                        );
                        BlockKind::Tool(t)
                    }
                    _ => BlockKind::Other,
                };
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, BlockKind::Other);
                }
                self.blocks[index] = kind;
            }
            "content_block_delta" => {
                let (Some(index), Some(delta)) = (ev.index, ev.delta) else {
                    return;
                };
                let kind = self.blocks.get(index).copied().unwrap_or(BlockKind::Other);
                match (kind, delta.ty.as_deref()) {
                    (BlockKind::Text, Some("text_delta")) => {
                        if let Some(t) = delta.text.as_deref().filter(|t| !t.is_empty()) {
                            self.content_delta(t);
                        }
                    }
                    (BlockKind::Tool(t), Some("input_json_delta")) => {
                        if let Some(p) = delta.partial_json.as_deref().filter(|p| !p.is_empty()) {
                            self.args_delta(t, p);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    self.usage.get_or_insert_with(AnthUsage::default).merge(&u);
                }
                let reason =
                    finish_reason(ev.delta.as_ref().and_then(|d| d.stop_reason.as_deref()));
                self.start();
                self.chunk_begin();
                self.out
                    .put_slice(b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
                self.out.put_slice(reason.as_bytes());
                self.out.put_slice(b"\"}]");
                self.chunk_end();
                self.finished = true;
            }
            "message_stop" => self.end(),
            "error" => {
                let (ty, msg) = match &ev.error {
                    Some(e) => (
                        e.ty.as_deref(),
                        e.message.as_deref().unwrap_or("upstream error"),
                    ),
                    None => (None, "upstream error"),
                };
                self.fail(ty, 500, msg);
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }

    /// The role chunk, once.
    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        self.chunk_begin();
        self.out.put_slice(
            b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
        );
        self.chunk_end();
    }

    fn content_delta(&mut self, text: &str) {
        self.chunk_begin();
        self.out.put_slice(b"{\"index\":0,\"delta\":{\"content\":");
        put_json_str(&mut self.out, text);
        self.out
            .put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn tool_start(&mut self, t: u32, id: &str, name: &str) {
        self.chunk_begin();
        self.out
            .put_slice(b"{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":");
        self.out.put_slice(t.to_string().as_bytes());
        self.out.put_slice(b",\"id\":");
        put_json_str(&mut self.out, id);
        self.out
            .put_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        put_json_str(&mut self.out, name);
        self.out
            .put_slice(b",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn args_delta(&mut self, t: u32, partial: &str) {
        self.chunk_begin();
        self.out
            .put_slice(b"{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":");
        self.out.put_slice(t.to_string().as_bytes());
        self.out.put_slice(b",\"function\":{\"arguments\":");
        put_json_str(&mut self.out, partial);
        self.out
            .put_slice(b"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn chunk_begin(&mut self) {
        self.out.put_slice(b"data: ");
        self.out.put_slice(self.prefix.as_bytes());
    }

    /// Closes a chunk opened by `chunk_begin` whose choices array was written and closed.
    fn chunk_end(&mut self) {
        if self.include_usage {
            self.out.put_slice(b",\"usage\":null");
        }
        self.out.put_slice(b"}\n\n");
    }

    /// message_stop: the usage chunk (when asked) and `[DONE]`.
    fn end(&mut self) {
        if self.done {
            return;
        }
        if self.include_usage {
            let u = self.usage.unwrap_or_default().to_openai();
            self.out.put_slice(b"data: ");
            self.out.put_slice(self.prefix.as_bytes());
            self.out.put_slice(b"],\"usage\":");
            self.out.put_slice(u.to_string().as_bytes());
            self.out.put_slice(b"}\n\n");
        }
        self.out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn fail(&mut self, anth_type: Option<&str>, status: u16, message: &str) {
        if self.done {
            return;
        }
        let v = openai_error_value(anth_type, status, message);
        self.out.put_slice(b"data: ");
        self.out.put_slice(v.to_string().as_bytes());
        self.out.put_slice(b"\n\ndata: [DONE]\n\n");
        self.done = true;
    }
}

fn push_json_str(s: &mut String, v: &str) {
    // Serializing a &str cannot fail.
    s.push_str(&serde_json::to_string(v).unwrap_or_default());
}

pub(super) fn put_json_str(out: &mut BytesMut, v: &str) {
    let mut w = (&mut *out).writer();
    let _ = serde_json::to_writer(&mut w, v);
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
