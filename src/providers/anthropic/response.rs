//! Anthropic answers and errors → OpenAI's shapes.

use super::*;
use crate::providers::usage::Usage;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

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
pub(super) struct AnthUsage {
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    pub(super) cache_creation_input_tokens: Option<u64>,
    pub(super) cache_read_input_tokens: Option<u64>,
}

impl AnthUsage {
    pub(super) fn merge(&mut self, o: &AnthUsage) {
        self.input_tokens = o.input_tokens.or(self.input_tokens);
        self.output_tokens = o.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = o
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = o.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    pub(super) fn prompt(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }

    pub(super) fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt(),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: self.cache_creation_input_tokens.unwrap_or(0),
            reasoning_tokens: 0,
        }
    }

    pub(super) fn to_openai(self) -> Value {
        let (p, c) = (self.prompt(), self.output_tokens.unwrap_or(0));
        json!({
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_input_tokens.unwrap_or(0)},
        })
    }
}

pub(super) fn now_secs() -> u64 {
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
pub(super) struct MessageIn<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) content: Vec<BlockIn<'a>>,
    #[serde(borrow, default)]
    pub(super) stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) usage: AnthUsage,
}

#[derive(Deserialize)]
pub(super) struct BlockIn<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) ty: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) input: Option<Value>,
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
pub(super) fn map_error(
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

pub(super) fn openai_error_value(anth_type: Option<&str>, status: u16, message: &str) -> Value {
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
