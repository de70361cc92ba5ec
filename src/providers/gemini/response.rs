//! Gemini answers, embeddings and errors → OpenAI's shapes.

use crate::providers::json_out::{CallOut, ChatOut};
use crate::providers::usage::Usage;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// Gemini's `usageMetadata` (cumulative in a stream).
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GeminiUsage {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
}

impl GeminiUsage {
    /// `completion_tokens`: the candidates' tokens and the thinking tokens (billed as output).
    pub fn completion(&self) -> u64 {
        self.candidates_token_count + self.thoughts_token_count
    }

    /// The gateway's accounting view: prompt tokens include the cached ones, as Gemini counts them.
    pub fn to_usage(self) -> Usage {
        Usage {
            cached_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
            ..super::usage(self.prompt_token_count, self.completion())
        }
    }

    /// OpenAI's `usage` object, written into `out` (as [`GeminiUsage::to_openai`]).
    pub fn write_openai(self, out: &mut bytes::BytesMut) {
        use std::fmt::Write as _;
        let (p, c) = (self.prompt_token_count, self.completion());
        let _ = write!(
            out,
            "{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}},\"completion_tokens_details\":{{\"reasoning_tokens\":{}}}}}",
            p + c,
            self.cached_content_token_count,
            self.thoughts_token_count
        );
    }

    /// OpenAI's `usage` object.
    pub fn to_openai(self) -> Value {
        let (p, c) = (self.prompt_token_count, self.completion());
        json!({
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": self.cached_content_token_count},
            "completion_tokens_details": {"reasoning_tokens": self.thoughts_token_count},
        })
    }
}

/// OpenAI `finish_reason` for a Gemini `finishReason`; `calls`: the candidate called functions.
pub fn finish_reason(reason: &str, calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if calls => "tool_calls",
        _ => "stop",
    }
}

pub(super) use crate::providers::json_out::now_secs;

/// A tool call id for a `functionCall` that carries none (Gemini's rarely do).
pub(super) fn call_id(response_id: &str, n: usize) -> String {
    use rand::Rng;
    let salt: u32 = rand::thread_rng().gen();
    format!("call_{response_id}{salt:08x}{n}")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Response<'a> {
    #[serde(default, borrow)]
    pub(super) candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    pub(super) usage_metadata: Option<GeminiUsage>,
    #[serde(default, borrow)]
    pub(super) prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default, borrow)]
    pub(super) response_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback<'a> {
    #[serde(default, borrow)]
    pub(super) block_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate<'a> {
    #[serde(default, borrow)]
    pub(super) content: Option<Content<'a>>,
    #[serde(default, borrow)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) index: Option<usize>,
}

#[derive(Deserialize)]
pub(super) struct Content<'a> {
    #[serde(default, borrow)]
    pub(super) parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Part<'a> {
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) thought: Option<bool>,
    #[serde(default, borrow)]
    pub(super) function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
pub(super) struct FunctionCall<'a> {
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    #[serde(default)]
    pub(super) args: Option<Value>,
}

impl Part<'_> {
    /// Answer text (thought summaries are not part of the answer).
    pub(super) fn answer_text(&self) -> Option<&str> {
        match (&self.text, self.thought) {
            (Some(t), None | Some(false)) => Some(t),
            _ => None,
        }
    }
}

/// A whole `GenerateContentResponse` → an OpenAI `chat.completion` answering as `model`, with its
/// usage. `None`: not a Gemini answer, or one with neither candidates nor a prompt block.
pub fn to_chat(body: &[u8], model: &str) -> Option<(Bytes, Usage)> {
    let r: Response = serde_json::from_slice(body).ok()?;
    let usage = r.usage_metadata.unwrap_or_default();
    let rid = r.response_id.as_deref().unwrap_or("gemini");
    let mut out = ChatOut::new(&format!("chatcmpl-{rid}"), model, body.len());
    if r.candidates.is_empty() {
        // The prompt was blocked: no candidate, only the reason.
        r.prompt_feedback.as_ref()?.block_reason.as_ref()?;
        out.choice(0, None, [], "content_filter");
    }
    let mut calls_made = 0;
    for (i, c) in r.candidates.iter().enumerate() {
        let parts = c
            .content
            .as_ref()
            .map(|c| c.parts.as_slice())
            .unwrap_or(&[]);
        let mut texts = parts.iter().filter_map(Part::answer_text);
        let content: Option<Cow<'_, str>> = match (texts.next(), texts.next()) {
            (None, _) => None,
            (Some(t), None) => Some(Cow::Borrowed(t)),
            (Some(a), Some(b)) => {
                let mut s = String::with_capacity(a.len() + b.len());
                s.push_str(a);
                s.push_str(b);
                texts.for_each(|t| s.push_str(t));
                Some(Cow::Owned(s))
            }
        };
        let calls: Vec<(Cow<'_, str>, &str, Cow<'_, str>)> = parts
            .iter()
            .filter_map(|p| p.function_call.as_ref())
            .map(|f| {
                calls_made += 1;
                let id =
                    f.id.as_deref()
                        .map_or_else(|| Cow::Owned(call_id(rid, calls_made)), Cow::Borrowed);
                let args = f
                    .args
                    .as_ref()
                    .map_or(Cow::Borrowed("{}"), |a| Cow::Owned(a.to_string()));
                (id, f.name.as_ref(), args)
            })
            .collect();
        let reason = finish_reason(
            c.finish_reason.as_deref().unwrap_or("STOP"),
            !calls.is_empty(),
        );
        out.choice(
            c.index.unwrap_or(i),
            content.as_deref(),
            calls.iter().map(|(id, name, args)| CallOut {
                id,
                name,
                arguments: args,
            }),
            reason,
        );
    }
    let body = out.finish(|o| usage.write_openai(o));
    Some((body, usage.to_usage()))
}

/// The vectors of an embeddings answer: Gemini's `embedContent` (`embedding.values`),
/// `batchEmbedContents` (`embeddings[].values`) or Vertex AI's `:predict`
/// (`predictions[].embeddings.values`, with each input's `statistics.token_count`).
pub(super) fn vectors(v: &Value) -> Option<(Vec<&Vec<Value>>, Option<u64>)> {
    if let Some(e) = v.get("embedding") {
        return Some((vec![e.get("values")?.as_array()?], None));
    }
    if let Some(list) = v.get("embeddings").and_then(Value::as_array) {
        let vs = list
            .iter()
            .map(|e| e.get("values").and_then(Value::as_array))
            .collect::<Option<Vec<_>>>()?;
        return Some((vs, None));
    }
    let preds = v.get("predictions")?.as_array()?;
    let mut tokens = 0;
    let mut vs = Vec::with_capacity(preds.len());
    for p in preds {
        let e = p.get("embeddings")?;
        tokens += e
            .pointer("/statistics/token_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        vs.push(e.get("values")?.as_array()?);
    }
    Some((vs, Some(tokens)))
}

/// An embeddings answer in OpenAI's shape (`base64`: little-endian f32s, base64-encoded, as
/// OpenAI sends them when asked). `estimated`: the prompt tokens when the answer reports none.
pub fn to_embeddings(
    body: &[u8],
    model: &str,
    base64: bool,
    estimated: u64,
) -> Option<(Bytes, Usage)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let (vectors, reported) = vectors(&v)?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, values)| {
            let embedding = if base64 {
                let mut raw = Vec::with_capacity(values.len() * 4);
                for x in values.iter() {
                    raw.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
            } else {
                Value::Array(values.to_vec())
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let prompt = reported.filter(|t| *t > 0).unwrap_or(estimated);
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    });
    Some((Bytes::from(out.to_string()), super::usage(prompt, 0)))
}

/// OpenAI (`type`, `code`) for a Google error (`status` name, HTTP status, message, reason).
fn map_error(
    status_name: Option<&str>,
    status: u16,
    message: &str,
    reason: Option<&str>,
) -> (&'static str, &'static str) {
    if is_context_message(message) {
        return ("invalid_request_error", "context_length_exceeded");
    }
    if reason == Some("API_KEY_INVALID") {
        return ("authentication_error", "invalid_api_key");
    }
    let name = status_name.unwrap_or(match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    });
    match name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
            ("invalid_request_error", "invalid_request")
        }
        "UNAUTHENTICATED" => ("authentication_error", "invalid_api_key"),
        "PERMISSION_DENIED" => ("permission_error", "permission_denied"),
        "NOT_FOUND" => ("invalid_request_error", "not_found"),
        "RESOURCE_EXHAUSTED" => ("rate_limit_error", "rate_limit_exceeded"),
        "UNAVAILABLE" => ("server_error", "overloaded"),
        "DEADLINE_EXCEEDED" => ("server_error", "timeout"),
        _ => ("server_error", "upstream_error"),
    }
}

/// Gemini's and Vertex AI's words for a prompt over the context window.
pub fn is_context_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("input token count") && lower.contains("exceeds the maximum")
}

/// An OpenAI error object for a Google error (`{"error": {"code", "message", "status", "details"}}`).
pub(super) fn openai_error_value(err: Option<&Value>, status: u16, fallback: &str) -> Value {
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(fallback);
    let name = err.and_then(|e| e.get("status")).and_then(Value::as_str);
    let reason = err
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .and_then(|d| {
            d.iter()
                .find_map(|x| x.get("reason").and_then(Value::as_str))
        });
    let (ty, code) = map_error(name, status, message, reason);
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

/// A Google error body → an OpenAI-shaped error body (the status stays). A body that is not
/// Google's shape is reported by its status, its text (first 500 bytes) as the message.
pub fn error_to_openai(status: u16, body: &[u8]) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    // Google sometimes wraps the error in a one-element array.
    let err = parsed.as_ref().and_then(|v| match v {
        Value::Array(a) => a.first().and_then(|x| x.get("error")),
        _ => v.get("error"),
    });
    let fallback = {
        let end = body.len().min(500);
        let s = String::from_utf8_lossy(&body[..end]).trim().to_string();
        if s.is_empty() {
            format!("upstream answered {status}")
        } else {
            s
        }
    };
    Bytes::from(openai_error_value(err, status, &fallback).to_string())
}

/// `google.rpc.RetryInfo.retryDelay` (`"1s"`, `"0.5s"`, `"30s"`) of an error body.
pub fn retry_delay(body: &[u8]) -> Option<std::time::Duration> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let details = v.get("error")?.get("details")?.as_array()?;
    let delay = details.iter().find_map(|d| {
        let ty = d.get("@type")?.as_str()?;
        ty.ends_with("google.rpc.RetryInfo")
            .then(|| d.get("retryDelay")?.as_str())
            .flatten()
    })?;
    let secs: f64 = delay.strip_suffix('s')?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs.min(3600.0)))
}
