//! Anthropic's Messages API: its header checks, request validation, answers (whole and
//! streamed), errors and `anthropic-ratelimit-*` headers.
//!
//! # Anthropic Messages dialect (`POST /v1/messages`, also `/messages`)
//!
//! `POST /v1/messages/count_tokens` (same header checks, no rate limit, `x-mock-status` honoured):
//! `{"input_tokens": N}`, N = one per 4 body bytes; 400 without `model` and `messages`.
//!
//! As Anthropic's Messages API reference documents it:
//!
//! * Checked in this order, each answered with Anthropic's error shape
//!   `{"type":"error","error":{"type":T,"message":M},"request_id":"req_..."}`
//!   (and a `request-id` header): not `POST` → 405; no `x-api-key` → 401
//!   `authentication_error`; no `anthropic-version` → 400
//!   `invalid_request_error`; the rate limits (see `limits`; the estimate counts
//!   `system` and `messages`; a 429 here is `rate_limit_error`); latency; the
//!   failure controls (`x-mock-status`, `--fail-status`, `/__mock/fail`: T by
//!   status — 400 `invalid_request_error`, 401 `authentication_error`, 403
//!   `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429
//!   `rate_limit_error` (with `retry-after`: `x-mock-retry-after`,
//!   `--retry-after`, default 1), 529 `overloaded_error`,
//!   others `api_error`; `--fail-message` sets M, and `--fail-code
//!   context_length_exceeded` gives "prompt is too long: ..."); then body
//!   validation → 400 `invalid_request_error`: malformed JSON, unknown top-level
//!   fields ("Extra inputs are not permitted"), missing `model`, missing or
//!   non-positive `max_tokens`, `temperature` / `top_p` outside 0..1, roles
//!   other than user/assistant (`system` in `messages` too), roles not
//!   alternating, empty content or empty text blocks, bad image sources,
//!   `tool_use` outside assistant turns, `tool_result` without a matching
//!   `tool_use` in the previous turn, unanswered `tool_use` ids, tools without
//!   `input_schema`, `tool_choice` naming an unknown tool.
//! * Non-stream: a `message` object with one `text` block (the content rules of
//!   chat), `stop_reason: end_turn`, usage `input_tokens` / `output_tokens` (P
//!   and C as in `content`). With `x-mock-tool-call: NAME` and a non-empty `tools`,
//!   one `tool_use` block (`id: toolu_mock_N`, input = `x-mock-tool-input` (a
//!   JSON object) or `"mock"` for each property of the tool's schema) and
//!   `stop_reason: tool_use`.
//! * `"stream": true`: `event:`/`data:` pairs `message_start`,
//!   `content_block_start`, `ping`, N × `content_block_delta` (`text_delta`, or
//!   `input_json_delta` pieces of the tool input; N, pacing, TTFT and
//!   `x-mock-drop-after-chunks` as for chat), `content_block_stop`,
//!   `message_delta` (`stop_reason`, `usage.output_tokens`), `message_stop`.
//!   `x-mock-stream-error-after: K`: after K deltas an `event: error`
//!   (`x-mock-stream-error-type`, default `overloaded_error`) ends the stream.
//! * Every answer to a request that passed the header checks carries
//!   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
//!   remaining,reset}` (reset = RFC 3339 time): from `--rpm` / `--tpm` when set,
//!   else fixed (4000 requests, 400000 tokens); `x-mock-anthropic-remaining-
//!   requests: N` / `x-mock-anthropic-remaining-tokens: N` override `remaining`
//!   (to test the scheduler's feedback); a 429 has them at 0.
//! * Recorded like every endpoint (headers included) for `GET /__mock/requests`.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::Value;

use crate::body::{event_frame, fail_code, hdr_u64, json_response, sse_response, MockBody};
use crate::content::{split_pieces, Gen};
use crate::control;
use crate::limits::{self, RateHeaders};
use crate::openai::ReqBody;
use crate::server::State;
use crate::tokens::Api;

/// Whether a path is Anthropic's.
pub(crate) fn is_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/messages" | "/messages" | "/v1/messages/count_tokens" | "/messages/count_tokens"
    )
}

/// Top-level fields of a Messages request (anything else: "Extra inputs are not permitted").
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
];

const ANTHROPIC_IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Anthropic's error `type` for a status.
fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
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
    }
}

/// `{"type":"error","error":{"type":T,"message":M},"request_id":...}` plus a `request-id` header.
fn anthropic_error(
    state: &State,
    status: StatusCode,
    typ: &str,
    message: &str,
) -> Response<MockBody> {
    let id = format!("req_mock_{}", state.ids.fetch_add(1, Ordering::Relaxed));
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": typ, "message": message},
        "request_id": id,
    });
    let mut resp = json_response(state, status, body.to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

fn anthropic_invalid(state: &State, message: &str) -> Response<MockBody> {
    anthropic_error(
        state,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
    )
}

/// An RFC 3339 UTC timestamp (`anthropic-ratelimit-*-reset`), whole seconds.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`:
/// from the mock's limiter where a limit is set, fixed values otherwise;
/// `x-mock-anthropic-remaining-requests` / `-tokens` override `remaining` (and `retry_secs`, on a
/// 429, moves `reset`).
fn anthropic_rate_headers(
    h: &mut HeaderMap,
    rh: Option<&RateHeaders>,
    req: &HeaderMap,
    retry_secs: Option<u64>,
) {
    let now = SystemTime::now();
    let requests = rh.and_then(|r| r.requests);
    let tokens = rh.and_then(|r| r.tokens);
    for (kind, rate, default_limit, names) in [
        ("requests", requests, 4_000u64, &["requests"][..]),
        (
            "tokens",
            tokens,
            400_000,
            &["tokens", "input-tokens", "output-tokens"][..],
        ),
    ] {
        let (limit, mut remaining, mut reset) = match rate {
            Some(r) => (r.limit, r.remaining, r.reset),
            None => (default_limit, default_limit - 1, Duration::ZERO),
        };
        if let Some(r) = hdr_u64(req, &format!("x-mock-anthropic-remaining-{kind}")) {
            remaining = r;
        }
        if let Some(s) = retry_secs {
            remaining = 0;
            reset = reset.max(Duration::from_secs(s));
        }
        let reset = rfc3339(now + reset);
        for name in names {
            for (what, v) in [
                ("limit", limit.to_string()),
                ("remaining", remaining.to_string()),
                ("reset", reset.clone()),
            ] {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::try_from(format!("anthropic-ratelimit-{name}-{what}")),
                    HeaderValue::from_str(&v),
                ) {
                    h.insert(n, v);
                }
            }
        }
    }
}

/// A failure answer (`x-mock-status`, `--fail-status`) in Anthropic's shape. `--fail-message`
/// sets the message; `--fail-code context_length_exceeded` (without a message) answers
/// Anthropic's "prompt is too long" message. 429s carry `retry-after` and spent rate-limit headers.
fn anthropic_mock_error(state: &State, status: StatusCode, req: &HeaderMap) -> Response<MockBody> {
    let typ = anthropic_error_type(status);
    let message = match (state.fail_message.as_deref(), state.fail_code.as_deref()) {
        (Some(m), _) => m,
        (None, Some("context_length_exceeded")) => {
            "prompt is too long: 250000 tokens > 200000 maximum"
        }
        _ => match typ {
            "overloaded_error" => "Overloaded",
            "rate_limit_error" => "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
            "authentication_error" => "invalid x-api-key",
            _ => "mock error",
        },
    };
    let mut resp = anthropic_error(state, status, typ, message);
    let retry = hdr_u64(req, "x-mock-retry-after").or(state.retry_after);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = retry.unwrap_or(1);
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        anthropic_rate_headers(resp.headers_mut(), None, req, Some(secs));
    } else if let Some(secs) = retry {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

/// Validate a Messages request as Anthropic does (the subset the gateway's translation could get
/// wrong). `Err` is the `invalid_request_error` message.
fn validate_messages_request(v: &Value) -> Result<(), String> {
    let o = v
        .as_object()
        .ok_or_else(|| "body: Input should be a valid dictionary".to_owned())?;
    if let Some(k) = o.keys().find(|k| !ANTHROPIC_FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: Extra inputs are not permitted"));
    }
    if o.get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("model: Field required".to_owned());
    }
    match o.get("max_tokens") {
        None | Some(Value::Null) => return Err("max_tokens: Field required".to_owned()),
        Some(m) if m.as_u64().is_some_and(|n| n >= 1) => {}
        Some(_) => {
            return Err(
                "max_tokens: Input should be a valid integer greater than or equal to 1".to_owned(),
            )
        }
    }
    for (key, max) in [("temperature", 1.0), ("top_p", 1.0)] {
        if let Some(t) = o.get(key).filter(|t| !t.is_null()) {
            match t.as_f64() {
                Some(x) if (0.0..=max).contains(&x) => {}
                Some(_) => {
                    return Err(format!(
                        "{key}: Input should be less than or equal to {max}"
                    ))
                }
                None => return Err(format!("{key}: Input should be a valid number")),
            }
        }
    }
    match o.get("system") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!("system.{j}.type: Input should be 'text'"));
                }
                if b.get("text")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!(
                        "system.{j}.text: text content blocks must be non-empty"
                    ));
                }
            }
        }
        Some(_) => return Err("system: Input should be a valid string or list".to_owned()),
    }
    if let Some(s) = o.get("stop_sequences").filter(|s| !s.is_null()) {
        if !s.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            return Err("stop_sequences: Input should be a valid list of strings".to_owned());
        }
    }
    let mut tool_names = Vec::new();
    if let Some(tools) = o.get("tools").filter(|t| !t.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| "tools: Input should be a valid list".to_owned())?;
        for (i, t) in tools.iter().enumerate() {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tools.{i}.name: Field required"))?;
            // Server tools (`type: web_search_...`) have no input_schema.
            if t.get("type").is_none() && !t.get("input_schema").is_some_and(Value::is_object) {
                return Err(format!("tools.{i}.custom.input_schema: Field required"));
            }
            tool_names.push(name);
        }
    }
    if let Some(tc) = o.get("tool_choice").filter(|t| !t.is_null()) {
        match tc.get("type").and_then(Value::as_str) {
            Some("auto" | "any" | "none") => {}
            Some("tool") => {
                let name = tc.get("name").and_then(Value::as_str).unwrap_or("");
                if !tool_names.contains(&name) {
                    return Err(format!(
                        "tool_choice: tool `{name}` is not among the request's tools"
                    ));
                }
            }
            _ => {
                return Err(
                    "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
                        .to_owned(),
                )
            }
        }
    }
    let messages = match o.get("messages") {
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) => return Err("messages: Field required".to_owned()),
        Some(_) => return Err("messages: Input should be a valid list".to_owned()),
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    let mut prev_role: Option<&str> = None;
    let mut pending_tool_uses: Vec<&str> = Vec::new();
    let last = messages.len() - 1;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "user" | "assistant" => {}
            "system" => {
                return Err(format!(
                    "messages.{i}.role: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                ))
            }
            _ => return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'")),
        }
        if prev_role == Some(role) {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        prev_role = Some(role);
        let mut results: Vec<&str> = Vec::new();
        let mut uses: Vec<&str> = Vec::new();
        match m.get("content") {
            Some(Value::String(s)) => {
                if s.is_empty() && !(role == "assistant" && i == last) {
                    return Err(format!(
                        "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                    ));
                }
            }
            Some(Value::Array(blocks)) => {
                if blocks.is_empty() && !(role == "assistant" && i == last) {
                    return Err(format!(
                        "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                    ));
                }
                for (j, b) in blocks.iter().enumerate() {
                    let at = format!("messages.{i}.content.{j}");
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if b.get("text")
                                .and_then(Value::as_str)
                                .is_none_or(str::is_empty)
                            {
                                return Err(format!(
                                    "{at}.text: text content blocks must be non-empty"
                                ));
                            }
                        }
                        Some("image") => {
                            let src = b.get("source").unwrap_or(&Value::Null);
                            match src.get("type").and_then(Value::as_str) {
                                Some("base64") => {
                                    let mt = src.get("media_type").and_then(Value::as_str);
                                    if !mt.is_some_and(|t| ANTHROPIC_IMAGE_TYPES.contains(&t)) {
                                        return Err(format!(
                                            "{at}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                                        ));
                                    }
                                    if !src.get("data").is_some_and(Value::is_string) {
                                        return Err(format!(
                                            "{at}.image.source.base64.data: Field required"
                                        ));
                                    }
                                }
                                Some("url") => {
                                    if !src.get("url").is_some_and(Value::is_string) {
                                        return Err(format!("{at}.image.source.url.url: Field required"));
                                    }
                                }
                                _ => {
                                    return Err(format!(
                                        "{at}.image.source: Input tag does not match any of the expected tags: 'base64', 'url', 'file'"
                                    ))
                                }
                            }
                        }
                        Some("tool_use") => {
                            if role != "assistant" {
                                return Err(format!(
                                    "{at}: `tool_use` blocks can only be in `assistant` messages"
                                ));
                            }
                            let id = b.get("id").and_then(Value::as_str);
                            let name = b.get("name").and_then(Value::as_str);
                            let (Some(id), Some(_)) = (id, name) else {
                                return Err(format!("{at}.tool_use: `id` and `name` are required"));
                            };
                            if !b.get("input").is_some_and(Value::is_object) {
                                return Err(format!(
                                    "{at}.tool_use.input: Input should be a valid dictionary"
                                ));
                            }
                            uses.push(id);
                        }
                        Some("tool_result") => {
                            if role != "user" {
                                return Err(format!(
                                    "{at}: `tool_result` blocks can only be in `user` messages"
                                ));
                            }
                            let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                            if !pending_tool_uses.contains(&id) {
                                return Err(format!(
                                    "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                                ));
                            }
                            results.push(id);
                        }
                        Some(_) => {}
                        None => return Err(format!("{at}.type: Field required")),
                    }
                }
            }
            _ => return Err(format!("messages.{i}.content: Field required")),
        }
        if role == "user" {
            let missing: Vec<&str> = pending_tool_uses
                .iter()
                .filter(|id| !results.contains(id))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                ));
            }
            pending_tool_uses.clear();
        } else {
            pending_tool_uses = uses;
        }
    }
    Ok(())
}

/// The mock's tool input: `x-mock-tool-input` (a JSON object), else `"mock"` for every property
/// of the tool's `input_schema`.
fn anthropic_tool_input(req: &Value, name: &str, headers: &HeaderMap) -> Value {
    if let Some(v) = headers
        .get("x-mock-tool-input")
        .and_then(|v| serde_json::from_slice::<Value>(v.as_bytes()).ok())
        .filter(Value::is_object)
    {
        return v;
    }
    let mut input = serde_json::Map::new();
    let props = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|ts| {
            ts.iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
        })
        .and_then(|t| t.pointer("/input_schema/properties"))
        .and_then(Value::as_object);
    for k in props.into_iter().flat_map(|p| p.keys()) {
        input.insert(k.clone(), Value::String("mock".to_owned()));
    }
    Value::Object(input)
}

/// A successful Messages answer (non-stream `message`, or the SSE event sequence).
fn anthropic_answer(
    state: &State,
    headers: &HeaderMap,
    req: &Value,
    body_len: usize,
) -> Response<MockBody> {
    let g = Gen::new(state, headers, body_len);
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let id = format!("msg_mock_{n}");
    let model = req.get("model").cloned().unwrap_or(Value::Null);
    let has_tools = req
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let tool = headers
        .get("x-mock-tool-call")
        .and_then(|v| v.to_str().ok())
        .filter(|name| has_tools && !name.is_empty());
    let (p, c) = (g.prompt_tokens, g.completion_tokens);
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let tool_id = format!("toolu_mock_{n}");
    let input = tool.map(|name| anthropic_tool_input(req, name, headers));
    if !stream {
        let content = match (tool, &input) {
            (Some(name), Some(input)) => serde_json::json!([
                {"type": "tool_use", "id": tool_id, "name": name, "input": input}
            ]),
            _ => serde_json::json!([{"type": "text", "text": g.content()}]),
        };
        let body = serde_json::json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": p, "output_tokens": c,
                      "cache_creation_input_tokens": g.cache_write,
                      "cache_read_input_tokens": g.cache_read},
        });
        return json_response(state, StatusCode::OK, body.to_string());
    }
    let mut frames = Vec::with_capacity(g.chunks + 7);
    let start = serde_json::json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": p, "output_tokens": 1,
                  "cache_creation_input_tokens": g.cache_write,
                  "cache_read_input_tokens": g.cache_read},
    }});
    frames.push(event_frame(
        Duration::ZERO,
        "message_start",
        &start.to_string(),
    ));
    let block = match (tool, &input) {
        (Some(name), Some(_)) => {
            serde_json::json!({"type": "tool_use", "id": tool_id, "name": name, "input": {}})
        }
        _ => serde_json::json!({"type": "text", "text": ""}),
    };
    frames.push(event_frame(
        Duration::ZERO,
        "content_block_start",
        &serde_json::json!({"type": "content_block_start", "index": 0, "content_block": block})
            .to_string(),
    ));
    frames.push(event_frame(Duration::ZERO, "ping", r#"{"type": "ping"}"#));
    let lead = frames.len();
    let deltas: Vec<Value> = match &input {
        Some(input) => {
            let json = input.to_string();
            split_pieces(&json, g.chunks)
                .into_iter()
                .map(|p| serde_json::json!({"type": "input_json_delta", "partial_json": p}))
                .collect()
        }
        None => (0..g.chunks)
            .map(|i| serde_json::json!({"type": "text_delta", "text": g.chunk(i)}))
            .collect(),
    };
    let error_after = hdr_u64(headers, "x-mock-stream-error-after").map(|k| k as usize);
    for (i, d) in deltas.into_iter().enumerate() {
        if error_after == Some(i) {
            break;
        }
        let ev = serde_json::json!({"type": "content_block_delta", "index": 0, "delta": d});
        frames.push(event_frame(
            g.delay(i),
            "content_block_delta",
            &ev.to_string(),
        ));
    }
    if error_after.is_some() {
        let typ = headers
            .get("x-mock-stream-error-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("overloaded_error");
        let ev =
            serde_json::json!({"type": "error", "error": {"type": typ, "message": "Overloaded"}});
        frames.push(event_frame(Duration::ZERO, "error", &ev.to_string()));
        return sse_response(state, frames, g.drop_index(lead));
    }
    frames.push(event_frame(
        Duration::ZERO,
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ));
    frames.push(event_frame(
        Duration::ZERO,
        "message_delta",
        &format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop_reason}","stop_sequence":null}},"usage":{{"output_tokens":{c}}}}}"#
        ),
    ));
    frames.push(event_frame(
        Duration::ZERO,
        "message_stop",
        r#"{"type":"message_stop"}"#,
    ));
    sse_response(state, frames, g.drop_index(lead))
}

/// `POST /v1/messages`: recorded, then (in Anthropic's order) method, `x-api-key`,
/// `anthropic-version`, rate limits, latency, failure controls, body validation, answer.
pub(crate) async fn handle(state: &State, parts: &Parts, body: Bytes) -> Response<MockBody> {
    let path = parts.uri.path();
    let headers = &parts.headers;
    let parsed = serde_json::from_slice::<ReqBody>(&body).ok();
    if state.record {
        control::record(
            state,
            &parts.method,
            path,
            parts.uri.query(),
            headers,
            &body,
            parsed.as_ref(),
        );
    }
    if parts.method != Method::POST {
        return anthropic_error(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            &format!("Method {} not allowed for {path}", parts.method),
        );
    }
    if headers.get("x-api-key").is_none_or(|v| v.is_empty()) {
        return anthropic_error(
            state,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        );
    }
    if headers
        .get("anthropic-version")
        .is_none_or(|v| v.is_empty())
    {
        return anthropic_invalid(state, "anthropic-version: header is required");
    }
    if path.ends_with("/count_tokens") {
        // Token counting: no rate limit, no `max_tokens`; one token per 4 body bytes.
        if let Some(code) = hdr_u64(headers, "x-mock-status").and_then(fail_code) {
            return anthropic_mock_error(state, code, headers);
        }
        let ok = serde_json::from_slice::<Value>(&body)
            .ok()
            .is_some_and(|v| v["model"].is_string() && v["messages"].is_array());
        if !ok {
            return anthropic_invalid(state, "model and messages are required");
        }
        let n = (body.len() / 4).max(1);
        return json_response(state, StatusCode::OK, format!("{{\"input_tokens\":{n}}}"));
    }
    let rate = match limits::rate_limit(state, headers, Some(Api::Messages), &body) {
        Ok(rh) => rh,
        Err(rejected) => {
            let secs = hdr_u64(rejected.headers(), "retry-after").unwrap_or(1);
            let rh = state.limiter.lock().ok().map(|l| l.headers());
            let mut resp = anthropic_error(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "This request would exceed your organization's rate limit. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
            );
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            anthropic_rate_headers(resp.headers_mut(), rh.as_ref(), headers, Some(secs));
            return resp;
        }
    };
    let latency = hdr_u64(headers, "x-mock-latency-ms")
        .unwrap_or_else(|| state.latency_ms.load(Ordering::Relaxed));
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let fail = fail_code(u64::from(state.fail_status.load(Ordering::Relaxed)))
        .or_else(|| hdr_u64(headers, "x-mock-status").and_then(fail_code));
    if let Some(code) = fail {
        return anthropic_mock_error(state, code, headers);
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return anthropic_invalid(state, &format!("Invalid JSON body: {e}")),
    };
    if let Err(message) = validate_messages_request(&req) {
        return anthropic_invalid(state, &message);
    }
    let mut resp = anthropic_answer(state, headers, &req, body.len());
    let id = format!("req_mock_{}", state.ids.fetch_add(1, Ordering::Relaxed));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("request-id", v);
    }
    anthropic_rate_headers(resp.headers_mut(), rate.as_ref(), headers, None);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    fn ok(body: Value) {
        assert_eq!(validate_messages_request(&body), Ok(()), "{body}");
    }

    fn bad(body: Value, needle: &str) {
        let e = validate_messages_request(&body).unwrap_err();
        assert!(e.contains(needle), "{e} does not contain {needle}");
    }

    #[test]
    fn validation() {
        let base = json!({"model": "claude", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hi"}]});
        ok(base.clone());
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        let mut no_max = base.clone();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        bad(no_max, "max_tokens: Field required");
        bad(with("max_tokens", json!(0)), "max_tokens");
        bad(with("n", json!(1)), "n: Extra inputs are not permitted");
        bad(with("temperature", json!(1.5)), "temperature");
        bad(
            with(
                "messages",
                json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
            ),
            "roles must alternate",
        );
        bad(
            with("messages", json!([{"role": "system", "content": "a"}])),
            "Unexpected role \"system\"",
        );
        bad(
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "text", "text": ""}]}]),
            ),
            "non-empty",
        );
        bad(
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}]}]),
            ),
            "media_type",
        );
        // Tool round trip.
        let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
        let turn = json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]});
        let mut b = with("tools", tools.clone());
        b["messages"] = json!([
            {"role": "user", "content": "go"}, turn,
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ]);
        ok(b.clone());
        b["messages"][2] = json!({"role": "user", "content": "no result"});
        bad(b.clone(), "without `tool_result`");
        b["messages"][2] = json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "zz", "content": "ok"}]});
        bad(b.clone(), "unexpected `tool_use_id`");
        bad(
            with("tools", json!([{"name": "f"}])),
            "input_schema: Field required",
        );
        let mut b = with("tools", tools);
        b["tool_choice"] = json!({"type": "tool", "name": "g"});
        bad(b, "tool_choice");
    }

    #[test]
    fn rate_headers_defaults_and_overrides() {
        let mut h = HeaderMap::new();
        let mut req = HeaderMap::new();
        req.insert(
            "x-mock-anthropic-remaining-requests",
            HeaderValue::from_static("0"),
        );
        anthropic_rate_headers(&mut h, None, &req, None);
        assert_eq!(h["anthropic-ratelimit-requests-limit"], "4000");
        assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
        assert_eq!(h["anthropic-ratelimit-tokens-remaining"], "399999");
        assert_eq!(h["anthropic-ratelimit-output-tokens-limit"], "400000");
        assert!(h["anthropic-ratelimit-tokens-reset"]
            .to_str()
            .unwrap()
            .ends_with('Z'));
    }
}
