//! The OpenAI surface: chat completions, legacy completions, embeddings, the Responses API and
//! the model list, as OpenAI's API reference documents their shapes.
//!
//! # Endpoints (each also served without the `/v1` prefix)
//!
//! * `POST /v1/chat/completions`: `chat.completion` object, or with
//!   `"stream": true` an SSE stream of `chat.completion.chunk` events (one body
//!   frame per event): the first delta carries `role: assistant`; then a finish
//!   chunk (empty delta, `finish_reason: "stop"`); then, if
//!   `stream_options.include_usage` is true, a `choices: []` usage chunk (and
//!   every other chunk carries `"usage":null`, as OpenAI does); then
//!   `data: [DONE]`.
//!   With `x-mock-tool-call: NAME` and a non-empty `tools` naming it: one tool
//!   call (`id: call_mock_N`, arguments = `x-mock-tool-input` (a JSON object) or
//!   `"mock"` for each property of the function's `parameters`),
//!   `content: null`, `finish_reason: "tool_calls"`; streamed as OpenAI does
//!   (id, type and name first, then `arguments` pieces).
//! * `POST /v1/completions`: legacy `text_completion` object / stream, same
//!   shape rules as chat.
//! * `POST /v1/embeddings`: one embedding per element when `input` is an array
//!   of strings / token arrays (an array of numbers is a single tokenized
//!   input), otherwise one. Values are deterministic; `encoding_format: base64`
//!   sends each as base64 of little-endian float32s (the SDKs' default).
//! * `POST /v1/responses`: Responses API object, or with `"stream": true` SSE
//!   `event:`/`data:` pairs: `response.created`, `response.output_item.added`,
//!   `response.content_part.added`, N × `response.output_text.delta`,
//!   `response.output_text.done`, `response.content_part.done`,
//!   `response.output_item.done`, `response.completed` (full object with
//!   usage). No `[DONE]` (as OpenAI).
//! * `GET /v1/models`: a single `mock-model` (also the health-check path).
//! * Unknown path: 404; known path with the wrong method: 405; malformed JSON
//!   body on a POST endpoint: 400 — all with OpenAI-shaped error bodies.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::azure;
use crate::body::{
    data_frame, error_response, event_frame, fail_code, hdr_string, hdr_u64, json_response,
    mock_error, now_secs, sse_response, MockBody,
};
use crate::content::{echo_text, split_pieces, Gen};
use crate::server::State;

/// The JSON fields of a request body that the mock looks at.
#[derive(Deserialize, Default)]
pub(crate) struct ReqBody {
    #[serde(default)]
    pub(crate) model: Value,
    #[serde(default)]
    stream: Value,
    #[serde(default)]
    stream_options: Value,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    encoding_format: Value,
}

impl ReqBody {
    pub(crate) fn is_stream(&self) -> bool {
        self.stream.as_bool().unwrap_or(false)
    }
    fn include_usage(&self) -> bool {
        self.stream_options
            .get("include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    /// The model, JSON-encoded (a JSON string, or `null`).
    fn model_json(&self) -> String {
        serde_json::to_string(&self.model).unwrap_or_else(|_| "null".to_owned())
    }
}

pub(crate) fn chat(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let created = now_secs();
    let model = req.model_json();
    if let Some((name, args)) = &g.tool_call {
        return chat_tool_call(state, g, req, n, name, args);
    }
    if !req.is_stream() {
        let content = serde_json::to_string(&g.content()).unwrap_or_default();
        let body = format!(
            r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion","created":{created},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}],"usage":{usage}}}"#,
            usage = g.openai_usage()
        );
        return json_response(state, StatusCode::OK, body);
    }
    let usage = req.include_usage() && !state.no_stream_usage;
    let usage_null = if usage { r#","usage":null"# } else { "" };
    let mut frames = Vec::with_capacity(g.chunks + 3);
    for i in 0..g.chunks {
        let role = if i == 0 { r#""role":"assistant","# } else { "" };
        let json = format!(
            r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion.chunk","created":{created},"model":{model},"choices":[{{"index":0,"delta":{{{role}"content":{content}}},"finish_reason":null}}]{usage_null}}}"#,
            content = serde_json::to_string(&g.chunk(i)).unwrap_or_default()
        );
        frames.push(data_frame(g.delay(i), &json));
    }
    let json = format!(
        r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion.chunk","created":{created},"model":{model},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]{usage_null}}}"#
    );
    frames.push(data_frame(Duration::ZERO, &json));
    if usage {
        let json = format!(
            r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion.chunk","created":{created},"model":{model},"choices":[],"usage":{usage}}}"#,
            usage = g.openai_usage()
        );
        frames.push(data_frame(Duration::ZERO, &json));
    }
    frames.push(data_frame(Duration::ZERO, "[DONE]"));
    sse_response(state, frames, g.drop_index(0))
}

/// A chat answer that is one tool call (`finish_reason: tool_calls`, `content: null`); streamed as
/// OpenAI does: the first delta carries the call's id, type and name, the next ones pieces of
/// `arguments`.
fn chat_tool_call(
    state: &State,
    g: &Gen,
    req: &ReqBody,
    n: u64,
    name: &str,
    args: &str,
) -> Response<MockBody> {
    let created = now_secs();
    let model = req.model_json();
    let (p, c) = (g.prompt_tokens, g.completion_tokens);
    let id = format!("call_mock_{n}");
    let head = format!(
        r#"{{"id":"chatcmpl-mock-{n}","object":"{{OBJ}}","created":{created},"model":{model},"choices":["#
    );
    if !req.is_stream() {
        let call = serde_json::json!([{"id": id, "type": "function",
            "function": {"name": name, "arguments": args}}]);
        let body = format!(
            r#"{}{{"index":0,"message":{{"role":"assistant","content":null,"tool_calls":{call}}},"finish_reason":"tool_calls"}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
            head.replace("{OBJ}", "chat.completion"),
            t = p + c
        );
        return json_response(state, StatusCode::OK, body);
    }
    let head = head.replace("{OBJ}", "chat.completion.chunk");
    let usage = req.include_usage() && !state.no_stream_usage;
    let usage_null = if usage { r#","usage":null"# } else { "" };
    let mut frames = Vec::with_capacity(g.chunks + 4);
    let first = serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
        {"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]});
    frames.push(data_frame(
        g.delay(0),
        &format!(r#"{head}{{"index":0,"delta":{first},"finish_reason":null}}]{usage_null}}}"#),
    ));
    for piece in split_pieces(args, g.chunks.max(1)) {
        let delta =
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
        frames.push(data_frame(
            g.interval,
            &format!(r#"{head}{{"index":0,"delta":{delta},"finish_reason":null}}]{usage_null}}}"#),
        ));
    }
    frames.push(data_frame(
        Duration::ZERO,
        &format!(r#"{head}{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}]{usage_null}}}"#),
    ));
    if usage {
        frames.push(data_frame(
            Duration::ZERO,
            &format!(
                r#"{head}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
                t = p + c
            ),
        ));
    }
    frames.push(data_frame(Duration::ZERO, "[DONE]"));
    sse_response(state, frames, g.drop_index(1))
}

pub(crate) fn completions(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let created = now_secs();
    let model = req.model_json();
    let (p, c) = (g.prompt_tokens, g.completion_tokens);
    if !req.is_stream() {
        let content = serde_json::to_string(&g.content()).unwrap_or_default();
        let body = format!(
            r#"{{"id":"cmpl-mock-{n}","object":"text_completion","created":{created},"model":{model},"choices":[{{"text":{content},"index":0,"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
            t = p + c
        );
        return json_response(state, StatusCode::OK, body);
    }
    let usage = req.include_usage() && !state.no_stream_usage;
    let usage_null = if usage { r#","usage":null"# } else { "" };
    let mut frames = Vec::with_capacity(g.chunks + 3);
    for i in 0..g.chunks {
        let json = format!(
            r#"{{"id":"cmpl-mock-{n}","object":"text_completion","created":{created},"model":{model},"choices":[{{"text":"{content}","index":0,"logprobs":null,"finish_reason":null}}]{usage_null}}}"#,
            content = g.chunk(i)
        );
        frames.push(data_frame(g.delay(i), &json));
    }
    let json = format!(
        r#"{{"id":"cmpl-mock-{n}","object":"text_completion","created":{created},"model":{model},"choices":[{{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}}]{usage_null}}}"#
    );
    frames.push(data_frame(Duration::ZERO, &json));
    if usage {
        let json = format!(
            r#"{{"id":"cmpl-mock-{n}","object":"text_completion","created":{created},"model":{model},"choices":[],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
            t = p + c
        );
        frames.push(data_frame(Duration::ZERO, &json));
    }
    frames.push(data_frame(Duration::ZERO, "[DONE]"));
    sse_response(state, frames, g.drop_index(0))
}

pub(crate) fn embeddings(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
    let count = match &req.input {
        Value::Array(a) if a.first().is_some_and(Value::is_number) => 1,
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let dim = state.embedding_dim;
    let model = req.model_json();
    let p = g.prompt_tokens;
    let mut body = String::with_capacity(96 + count * (48 + dim * 6));
    body.push_str(r#"{"object":"list","data":["#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        // Deterministic values in [-1.00, 0.99].
        let value = |j: usize| ((i * 31 + j * 7) % 200) as i64 - 100;
        if req.encoding_format.as_str() == Some("base64") {
            // As OpenAI sends it (the SDKs' default): little-endian float32s, base64.
            use base64::Engine;
            let bytes: Vec<u8> = (0..dim)
                .flat_map(|j| (value(j) as f32 / 100.0).to_le_bytes())
                .collect();
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            let _ = write!(
                body,
                r#"{{"object":"embedding","index":{i},"embedding":"{b64}"}}"#
            );
            continue;
        }
        let _ = write!(body, r#"{{"object":"embedding","index":{i},"embedding":["#);
        for j in 0..dim {
            if j > 0 {
                body.push(',');
            }
            // Printed exactly.
            let v = value(j);
            let sign = if v < 0 { "-" } else { "" };
            let _ = write!(body, "{sign}{}.{:02}", v.abs() / 100, v.abs() % 100);
        }
        body.push_str("]}");
    }
    let _ = write!(
        body,
        r#"],"model":{model},"usage":{{"prompt_tokens":{p},"total_tokens":{p}}}}}"#
    );
    json_response(state, StatusCode::OK, body)
}

fn response_object(
    n: u64,
    created: u64,
    model: &str,
    status: &str,
    text: Option<&str>,
    usage: Option<(u64, u64)>,
) -> String {
    let output = match text {
        Some(t) => format!(
            r#"[{{"type":"message","id":"msg_mock","status":"completed","role":"assistant","content":[{{"type":"output_text","text":{t},"annotations":[]}}]}}]"#
        ),
        None => "[]".to_owned(),
    };
    let usage = match usage {
        Some((p, c)) => format!(
            r#"{{"input_tokens":{p},"output_tokens":{c},"total_tokens":{t}}}"#,
            t = p + c
        ),
        None => "null".to_owned(),
    };
    format!(
        r#"{{"id":"resp_mock_{n}","object":"response","created_at":{created},"status":"{status}","model":{model},"output":{output},"usage":{usage}}}"#
    )
}

pub(crate) fn responses(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let created = now_secs();
    let model = req.model_json();
    let usage = Some((g.prompt_tokens, g.completion_tokens));
    if !req.is_stream() {
        let text = serde_json::to_string(&g.content()).unwrap_or_default();
        let body = response_object(n, created, &model, "completed", Some(&text), usage);
        return json_response(state, StatusCode::OK, body);
    }
    let mut frames = Vec::with_capacity(g.chunks + 7);
    let mut seq = 0u64;
    let mut next_seq = || {
        seq += 1;
        seq - 1
    };
    let created_obj = response_object(n, created, &model, "in_progress", None, None);
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.created",
        &format!(r#"{{"type":"response.created","sequence_number":{s},"response":{created_obj}}}"#),
    ));
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.output_item.added",
        &format!(
            r#"{{"type":"response.output_item.added","sequence_number":{s},"output_index":0,"item":{{"type":"message","id":"msg_mock","status":"in_progress","role":"assistant","content":[]}}}}"#
        ),
    ));
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.content_part.added",
        &format!(
            r#"{{"type":"response.content_part.added","sequence_number":{s},"item_id":"msg_mock","output_index":0,"content_index":0,"part":{{"type":"output_text","text":"","annotations":[]}}}}"#
        ),
    ));
    let lead = frames.len();
    let mut full = String::new();
    for i in 0..g.chunks {
        let delta = g.chunk(i);
        full.push_str(&delta);
        let s = next_seq();
        frames.push(event_frame(
            g.delay(i),
            "response.output_text.delta",
            &format!(
                r#"{{"type":"response.output_text.delta","sequence_number":{s},"item_id":"msg_mock","output_index":0,"content_index":0,"delta":"{delta}","logprobs":[]}}"#
            ),
        ));
    }
    let text = serde_json::to_string(&full).unwrap_or_default();
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.output_text.done",
        &format!(
            r#"{{"type":"response.output_text.done","sequence_number":{s},"item_id":"msg_mock","output_index":0,"content_index":0,"text":{text},"logprobs":[]}}"#
        ),
    ));
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.content_part.done",
        &format!(
            r#"{{"type":"response.content_part.done","sequence_number":{s},"item_id":"msg_mock","output_index":0,"content_index":0,"part":{{"type":"output_text","text":{text},"annotations":[]}}}}"#
        ),
    ));
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.output_item.done",
        &format!(
            r#"{{"type":"response.output_item.done","sequence_number":{s},"output_index":0,"item":{{"type":"message","id":"msg_mock","status":"completed","role":"assistant","content":[{{"type":"output_text","text":{text},"annotations":[]}}]}}}}"#
        ),
    ));
    let final_obj = response_object(n, created, &model, "completed", Some(&text), usage);
    let s = next_seq();
    frames.push(event_frame(
        Duration::ZERO,
        "response.completed",
        &format!(r#"{{"type":"response.completed","sequence_number":{s},"response":{final_obj}}}"#),
    ));
    sse_response(state, frames, g.drop_index(lead))
}

/// `GET /v1/models`.
const MODELS_BODY: &str = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"mock"}]}"#;

/// An endpoint of the OpenAI surface.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
}

/// An OpenAI path (with or without `/v1`).
pub(crate) fn openai_endpoint(path: &str) -> Option<Endpoint> {
    match path.strip_prefix("/v1").unwrap_or(path) {
        "/chat/completions" => Some(Endpoint::Chat),
        "/completions" => Some(Endpoint::Completions),
        "/embeddings" => Some(Endpoint::Embeddings),
        "/responses" => Some(Endpoint::Responses),
        "/models" => Some(Endpoint::Models),
        _ => None,
    }
}

/// Answer a request on the OpenAI surface (also Azure's, `azure` set): failure controls first,
/// then path, method and body checks, then the endpoint's answer. `parsed` is the body as
/// [`ReqBody`] when the request had one to parse.
pub(crate) fn respond(
    state: &State,
    parts: &Parts,
    endpoint: Option<Endpoint>,
    azure: Option<&azure::Route>,
    body: &[u8],
    parsed: Option<Result<ReqBody, serde_json::Error>>,
) -> Response<MockBody> {
    let (method, headers, path) = (&parts.method, &parts.headers, parts.uri.path());
    let fail = fail_code(u64::from(state.fail_status.load(Ordering::Relaxed)))
        .or_else(|| hdr_u64(headers, "x-mock-status").and_then(fail_code));
    if let Some(code) = fail {
        return match azure {
            Some(az) => azure::failure(state, code, headers, az),
            None => mock_error(state, code),
        };
    }
    let Some(endpoint) = endpoint else {
        return error_response(
            state,
            StatusCode::NOT_FOUND,
            &format!("Unknown request URL: {method} {path}"),
            "invalid_request_error",
            "unknown_url",
        );
    };
    let expected = if endpoint == Endpoint::Models {
        Method::GET
    } else {
        Method::POST
    };
    if *method != expected {
        return error_response(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method {method} not allowed for {path}"),
            "invalid_request_error",
            "method_not_allowed",
        );
    }
    if endpoint == Endpoint::Models {
        return json_response(state, StatusCode::OK, MODELS_BODY);
    }
    let mut req = match parsed {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return error_response(
                state,
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON body: {e}"),
                "invalid_request_error",
                "invalid_json",
            )
        }
        None => ReqBody::default(),
    };
    if let Some(d) = azure.and_then(|az| az.deployment.as_ref()) {
        // Azure answers with the deployment's model whatever the body says.
        req.model = Value::String(d.clone());
    }
    let mut g = Gen::new(state, headers, body.len());
    if endpoint == Endpoint::Chat && state.echo.load(Ordering::Relaxed) {
        g.echo = echo_text(body);
    }
    if endpoint == Endpoint::Chat {
        g.tool_call = openai_tool_call(body, headers);
    }
    match endpoint {
        Endpoint::Chat => chat(state, &g, &req),
        Endpoint::Completions => completions(state, &g, &req),
        Endpoint::Embeddings => embeddings(state, &g, &req),
        Endpoint::Responses => responses(state, &g, &req),
        Endpoint::Models => json_response(state, StatusCode::OK, MODELS_BODY),
    }
}

/// `x-mock-tool-call: NAME` on a chat request with a non-empty `tools`: the call to answer with,
/// its arguments `x-mock-tool-input` (a JSON object) or `"mock"` for every property of the
/// function's `parameters`.
fn openai_tool_call(body: &[u8], headers: &HeaderMap) -> Option<(String, String)> {
    let name = hdr_string(headers, "x-mock-tool-call")?;
    let req: Value = serde_json::from_slice(body).ok()?;
    let tools = req.get("tools").and_then(Value::as_array)?;
    let tool = tools
        .iter()
        .find(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name.as_str()))?;
    let args = headers
        .get("x-mock-tool-input")
        .and_then(|v| serde_json::from_slice::<Value>(v.as_bytes()).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| {
            let mut input = serde_json::Map::new();
            if let Some(props) = tool
                .pointer("/function/parameters/properties")
                .and_then(Value::as_object)
            {
                for k in props.keys() {
                    input.insert(k.clone(), Value::String("mock".to_owned()));
                }
            }
            Value::Object(input)
        });
    Some((name, args.to_string()))
}
