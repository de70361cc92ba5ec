//! Converse answers and Bedrock errors → OpenAI's shapes.

use crate::providers::usage::Usage;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::fmt::Write as _;

/// What the client asked for: chat completions or (legacy) completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Completion,
}

impl Shape {
    /// The `object` of a whole answer and of a stream's chunks.
    pub(super) fn objects(self) -> (&'static str, &'static str) {
        match self {
            Shape::Chat => ("chat.completion", "chat.completion.chunk"),
            Shape::Completion => ("text_completion", "text_completion"),
        }
    }
}

/// OpenAI `finish_reason` for a Converse `stopReason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("content_filtered") | Some("guardrail_intervened") => "content_filter",
        _ => "stop",
    }
}

/// Converse `usage` (`TokenUsage`): `inputTokens` excludes the cache reads and writes.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_write_input_tokens: Option<u64>,
}

impl TokenUsage {
    /// OpenAI's prompt tokens include the cached ones.
    pub fn prompt(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
            + self.cache_write_input_tokens.unwrap_or(0)
    }

    pub fn to_usage(self) -> Usage {
        Usage {
            cached_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: self.cache_write_input_tokens.unwrap_or(0),
            ..Usage::new(self.prompt(), self.output_tokens.unwrap_or(0))
        }
    }

    /// `{"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
    /// {"cached_tokens"}}`.
    pub fn write_openai(&self, out: &mut BytesMut) {
        let (p, c) = (self.prompt(), self.output_tokens.unwrap_or(0));
        let _ = write!(
            out,
            "{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}}}}",
            p + c,
            self.cache_read_input_tokens.unwrap_or(0)
        );
    }
}

#[derive(Deserialize)]
struct ConverseOut<'a> {
    #[serde(borrow, default)]
    output: Option<Output<'a>>,
    #[serde(rename = "stopReason", borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: TokenUsage,
}

#[derive(Deserialize)]
struct Output<'a> {
    #[serde(borrow, default)]
    message: Option<MessageOut<'a>>,
}

#[derive(Deserialize)]
struct MessageOut<'a> {
    #[serde(borrow, default)]
    content: Vec<BlockOut<'a>>,
}

#[derive(Deserialize)]
struct BlockOut<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(rename = "toolUse", borrow, default)]
    tool_use: Option<ToolUseOut<'a>>,
}

#[derive(Deserialize)]
struct ToolUseOut<'a> {
    #[serde(rename = "toolUseId", borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
}

pub(super) use crate::providers::json_out::{now_secs, put_json_str};

/// A Converse answer → an OpenAI `chat.completion` (or `text_completion`) answering as `model`,
/// with id `id`; and its usage. `None` when the body is not a Converse answer.
pub fn converse_to_openai(
    body: &[u8],
    model: &str,
    id: &str,
    shape: Shape,
) -> Option<(Bytes, Usage)> {
    let m: ConverseOut = serde_json::from_slice(body).ok()?;
    let blocks: &[BlockOut] = m
        .output
        .as_ref()
        .and_then(|o| o.message.as_ref())
        .map_or(&[], |msg| msg.content.as_slice());
    let mut texts = blocks.iter().filter_map(|b| b.text.as_deref()).peekable();
    let any_text = texts.peek().is_some();
    let text: String = texts.collect();
    let mut out = BytesMut::with_capacity(body.len() + 256);
    out.put_slice(b"{\"id\":");
    put_json_str(&mut out, id);
    let _ = write!(
        out,
        ",\"object\":\"{}\",\"created\":{},\"model\":",
        shape.objects().0,
        now_secs()
    );
    put_json_str(&mut out, model);
    let reason = finish_reason(m.stop_reason.as_deref());
    match shape {
        Shape::Completion => {
            out.put_slice(b",\"choices\":[{\"index\":0,\"text\":");
            put_json_str(&mut out, &text);
            let _ = write!(
                out,
                ",\"logprobs\":null,\"finish_reason\":\"{reason}\"}}],\"usage\":"
            );
        }
        Shape::Chat => {
            out.put_slice(
                b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
            );
            if any_text {
                put_json_str(&mut out, &text);
            } else {
                out.put_slice(b"null");
            }
            out.put_slice(b",\"refusal\":null");
            let mut calls = blocks.iter().filter_map(|b| b.tool_use.as_ref()).peekable();
            if calls.peek().is_some() {
                out.put_slice(b",\"tool_calls\":[");
                for (i, c) in calls.enumerate() {
                    if i > 0 {
                        out.put_slice(b",");
                    }
                    out.put_slice(b"{\"id\":");
                    put_json_str(&mut out, c.id.as_deref().unwrap_or(""));
                    out.put_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    put_json_str(&mut out, c.name.as_deref().unwrap_or(""));
                    out.put_slice(b",\"arguments\":");
                    let args = c
                        .input
                        .as_ref()
                        .map_or_else(|| "{}".to_owned(), Value::to_string);
                    put_json_str(&mut out, &args);
                    out.put_slice(b"}}");
                }
                out.put_slice(b"]");
            }
            let _ = write!(
                out,
                "}},\"logprobs\":null,\"finish_reason\":\"{reason}\"}}],\"usage\":"
            );
        }
    }
    m.usage.write_openai(&mut out);
    out.put_slice(b",\"system_fingerprint\":null}");
    Some((out.freeze(), m.usage.to_usage()))
}

/// Whether a Bedrock message says the input does not fit the model's context window.
pub fn says_too_long(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "input is too long",
        "too many input tokens",
        "prompt is too long",
        "context window",
        "context length",
        "maximum context",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

/// OpenAI (`type`, `code`) for a Bedrock error, by status (Bedrock's type, `x-amzn-ErrorType`,
/// follows from it: 400 `ValidationException`, 403 `AccessDeniedException` and the signature
/// errors, 404 `ResourceNotFoundException`, 408 `ModelTimeoutException`, 424
/// `ModelErrorException`, 429 `ThrottlingException`, 500 `InternalServerException`, 503
/// `ServiceUnavailableException`) and by message for the context window.
pub fn map_error(status: u16, message: &str) -> (&'static str, &'static str) {
    if matches!(status, 400 | 413) && says_too_long(message) {
        return ("invalid_request_error", "context_length_exceeded");
    }
    match status {
        400 | 413 | 422 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        408 => ("server_error", "timeout"),
        424 => ("server_error", "model_error"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "service_unavailable"),
        _ => ("server_error", "upstream_error"),
    }
}

/// The status of a stream's exception type (`throttlingException`, ...), as the HTTP error would
/// have had it.
pub fn exception_status(exception_type: &str) -> u16 {
    match exception_type.to_ascii_lowercase().as_str() {
        "throttlingexception" => 429,
        "validationexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "modeltimeoutexception" => 408,
        "modelerrorexception" | "modelstreamerrorexception" => 424,
        "serviceunavailableexception" => 503,
        _ => 500,
    }
}

/// The OpenAI error object for a Bedrock error.
pub fn openai_error_value(status: u16, message: &str) -> Value {
    let (ty, code) = map_error(status, message);
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

/// A Bedrock error body (`{"message": ...}`, or `Message`) → an OpenAI-shaped error body; the
/// status stays. A body of another shape is reported by its text (first 500 bytes).
pub fn error_to_openai(status: u16, body: &[u8]) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(Cow::Borrowed)
        .unwrap_or_else(|| {
            let s = String::from_utf8_lossy(&body[..body.len().min(500)]);
            if s.trim().is_empty() {
                Cow::Owned(format!("Bedrock answered {status}"))
            } else {
                Cow::Owned(s.into_owned())
            }
        });
    Bytes::from(openai_error_value(status, &message).to_string())
}
