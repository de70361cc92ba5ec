//! OpenAI chat answers and errors → Anthropic's shapes.

use crate::providers::anthropic::{put_json_str, TranslateError};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::fmt::Write as _;

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
pub(super) struct OaUsage {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub(super) completion_tokens_details: Option<PromptDetails>,
}

/// `prompt_tokens_details` / `completion_tokens_details`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct PromptDetails {
    #[serde(default)]
    pub(super) cached_tokens: Option<u64>,
    #[serde(default)]
    pub(super) reasoning_tokens: Option<u64>,
}

impl OaUsage {
    pub(super) fn prompt(&self) -> u64 {
        self.prompt_tokens.unwrap_or(0)
    }

    pub(super) fn cached(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(self.prompt())
    }

    pub(super) fn output(&self) -> u64 {
        self.completion_tokens.unwrap_or(0)
    }

    pub(super) fn reasoning(&self) -> u64 {
        self.completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }

    /// The gateway's usage record (OpenAI's convention, with the details).
    pub(super) fn to_usage(self) -> crate::providers::usage::Usage {
        crate::providers::usage::Usage {
            prompt_tokens: self.prompt(),
            completion_tokens: self.output(),
            cached_tokens: self.cached(),
            cache_write_tokens: 0,
            reasoning_tokens: self.reasoning(),
        }
    }

    /// Anthropic's usage counts: input without the cache reads, which are counted apart.
    pub(super) fn write_anthropic(&self, out: &mut BytesMut) {
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
pub(super) fn message_id(upstream: Option<&str>) -> String {
    match upstream.filter(|s| !s.is_empty()) {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => random_id("msg_"),
    }
}

pub(super) fn random_id(prefix: &str) -> String {
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
pub(super) fn matched_stop(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Tool arguments (a JSON string) → the `input` object (`{}` when they are not one).
pub(super) fn parse_input(arguments: Option<&Value>) -> Value {
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

pub(super) fn tool_use_block(
    id: Option<&str>,
    name: Option<&str>,
    arguments: Option<&Value>,
) -> Value {
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

pub(super) fn anthropic_error_body(ty: &str, message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + message.len());
    write_error(&mut out, ty, message);
    out.freeze()
}

pub(super) fn write_error(out: &mut BytesMut, ty: &str, message: &str) {
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
