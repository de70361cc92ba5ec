//! AWS Bedrock: the runtime's Converse, ConverseStream and InvokeModel (for embedding models), the
//! control plane's ListFoundationModels / GetFoundationModel, Bedrock's errors, and SigV4.
//!
//! Written from AWS's documentation: the Amazon Bedrock API Reference (`Converse`,
//! `ConverseStream`, `ConverseStreamOutput` and the types it names — `MessageStartEvent`,
//! `ContentBlockStartEvent`, `ContentBlockDeltaEvent`, `ContentBlockStopEvent`,
//! `MessageStopEvent`, `ConverseStreamMetadataEvent`, `TokenUsage`, `ConverseMetrics` —,
//! `InvokeModel`, `ListFoundationModels`, `GetFoundationModel`), the Bedrock user guide ("Using
//! the Converse API", "Tool use", "Prompt caching", the Amazon Titan Text Embeddings and Cohere
//! Embed model-parameter pages, "Troubleshooting Amazon Bedrock API error codes"), and the event
//! stream encoding (see `eventstream`) and SigV4 (see `sigv4`) pages.
//!
//! # Endpoints (the runtime's and the control plane's, on one mock)
//!
//! * `POST /model/{modelId}/converse`: the Converse API. The model id is the path segment,
//!   percent-decoded (`anthropic.claude-3-haiku-20240307-v1%3A0` names
//!   `anthropic.claude-3-haiku-20240307-v1:0`). The request is validated as Bedrock does (each
//!   failure a 400 `ValidationException`): no fields but Converse's (`messages`, `system`,
//!   `inferenceConfig`, `toolConfig`, `guardrailConfig`, `additionalModelRequestFields`,
//!   `additionalModelResponseFieldPaths`, `promptVariables`, `requestMetadata`,
//!   `performanceConfig`, `serviceTier`, `outputConfig`); roles `user` / `assistant`, starting
//!   with `user` and alternating; no empty `content` or blank `text`; each content block exactly
//!   one of Converse's block kinds; `image` = `{format: png|jpeg|gif|webp, source: {bytes:
//!   base64}}` (or `s3Location`) whose bytes decode and start as the format says; `toolUse`
//!   (`toolUseId`, `name`, object `input`) only in assistant turns, answered by `toolResult`
//!   blocks (`toolUseId`, `content` of `{text}` / `{json}` / `{image}` / `{document}`, `status`
//!   `success` | `error`) for exactly those ids in the next user turn, with a `toolConfig` present;
//!   `system` blocks `{text}` / `{guardContent}` / `{cachePoint}`; `inferenceConfig` only
//!   `maxTokens` (>= 1), `temperature` and `topP` (0..1), `stopSequences` (strings, at most 4);
//!   `toolConfig.tools` non-empty `{toolSpec: {name, description?, inputSchema: {json}}}` (or
//!   `cachePoint`), `toolChoice` one of `{auto: {}}`, `{any: {}}`, `{tool: {name}}` naming a tool.
//!
//!   Answer: `{"output":{"message":{"role":"assistant","content":[{"text":...}]}},
//!   "stopReason":"end_turn","usage":{"inputTokens":P,"outputTokens":C,"totalTokens":T},
//!   "metrics":{"latencyMs":L}}` — content, chunks and usage as in `content` (P = body / 4, C =
//!   chunks); `inferenceConfig.maxTokens` below the chunk count cuts the answer to that many
//!   chunks with `stopReason: max_tokens`. Echo mode answers with the last user message's text
//!   blocks. `x-mock-tool-call: NAME` (a tool of `toolConfig`): one `toolUse` block (`toolUseId:
//!   tooluse_mock_N`, `input` = `x-mock-tool-input` or `"mock"` for each property of its schema)
//!   and `stopReason: tool_use`. `x-mock-finish-reason: R` sets `stopReason` (e.g.
//!   `stop_sequence`, `content_filtered`, `guardrail_intervened`). Cached-token pricing:
//!   `x-mock-cache-read-tokens: N` / `x-mock-cache-write-tokens: N` add `cacheReadInputTokens` /
//!   `cacheWriteInputTokens` to `usage` (Bedrock's `inputTokens` excludes them; `totalTokens` is
//!   the sum of all four). `L` = the latency the mock applied, in ms.
//! * `POST /model/{modelId}/converse-stream`: the same checks, then `200` with
//!   `content-type: application/vnd.amazon.eventstream`, one event-stream message per event (each
//!   payload the event's JSON object plus a `p` padding string, as Bedrock pads them):
//!   `messageStart {role}`, for a tool call `contentBlockStart {contentBlockIndex, start:
//!   {toolUse: {toolUseId, name}}}`, N × `contentBlockDelta {contentBlockIndex, delta: {text}}`
//!   (or `delta: {toolUse: {input: <piece of the JSON input>}}`), `contentBlockStop
//!   {contentBlockIndex}`, `messageStop {stopReason}`, `metadata {usage, metrics}`. Pacing,
//!   TTFT, chunks and `x-mock-drop-after-chunks` as for chat. Faults
//!   (`x-mock-eventstream-fault`, at the content delta `x-mock-eventstream-fault-after: K`,
//!   default 1, counted from 0): `bad-crc` (that message's CRC is wrong), `truncated` (half of
//!   that message, then the body ends cleanly), `exception` (instead of it an exception message,
//!   `:message-type: exception`, `:exception-type: x-mock-eventstream-exception` (default
//!   `throttlingException`; also `modelStreamErrorException`, `internalServerException`,
//!   `serviceUnavailableException`, `validationException`), payload `{"message": ...}`; then the
//!   body ends).
//! * `POST /model/{modelId}/invoke` for embedding models, chosen by the model id (a
//!   cross-region prefix such as `us.` ignored): `amazon.titan-embed-text-v2*` — `{"inputText",
//!   "dimensions" (256 | 512 | 1024, default 1024), "normalize" (default true),
//!   "embeddingTypes"}` → `{"embedding":[...], "inputTextTokenCount": N}` (plus
//!   `embeddingsByType` when `embeddingTypes` is given); `amazon.titan-embed-text-v1` /
//!   `amazon.titan-embed-g1-text-02` — `{"inputText"}` → 1536 values; `cohere.embed-*` —
//!   `{"texts", "input_type" (required: search_document | search_query | classification |
//!   clustering), "truncate" (NONE | START | END), "embedding_types"}` → `{"embeddings":
//!   [[...]], "id", "response_type": "embeddings_floats", "texts"}` (with `embedding_types`:
//!   `"embeddings": {"float": [[...]], ...}`, `"response_type": "embeddings_by_type"`), 1024
//!   values each. Unknown or missing fields: 400 `ValidationException` "Malformed input request:
//!   ...". Answers carry `X-Amzn-Bedrock-Input-Token-Count` and
//!   `X-Amzn-Bedrock-Invocation-Latency`. N = the o200k_base tokens of the input. Any other model:
//!   400 `ValidationException`.
//! * `GET /foundation-models` (ListFoundationModels; `byOutputModality=TEXT|EMBEDDING` filters)
//!   → `{"modelSummaries":[{modelArn, modelId, modelName, providerName, inputModalities,
//!   outputModalities, responseStreamingSupported, customizationsSupported,
//!   inferenceTypesSupported, modelLifecycle}]}`; `GET /foundation-models/{modelId}` → `{"modelDetails":
//!   {...}}`. A signed, token-free request for health checks (signing name `bedrock`, like the
//!   runtime's).
//! * `GET /async-invoke` (the runtime's ListAsyncInvokes, the one cheap GET on the runtime
//!   endpoint itself) → `{"asyncInvokeSummaries": []}` (the mock runs no asynchronous
//!   invocations).
//! * Any other `/model/...` path or method: 404 `UnknownOperationException`.
//!
//! # Errors
//!
//! As Bedrock sends them: status, JSON `{"message": "..."}`, and `x-amzn-ErrorType: <Type>:
//! http://internal.amazon.com/coral/com.amazon.bedrock/` (the type before the first `:`, as AWS's
//! JSON protocols put it); every answer carries `x-amzn-RequestId`. The failure controls
//! (`x-mock-status`, `/__mock/fail`, `--fail-status`) map to Bedrock's types by status: 400
//! `ValidationException`, 401 `UnrecognizedClientException`, 403 `AccessDeniedException`, 404
//! `ResourceNotFoundException`, 408 `ModelTimeoutException`, 424 `ModelErrorException`, 429
//! `ThrottlingException`, 500 `InternalServerException`, 503 `ServiceUnavailableException`
//! (others: `InternalServerException` / `ValidationException` by class), each with Bedrock's
//! message; `--fail-code` names another type (e.g. `ModelNotReadyException`), and `--fail-code
//! context_length_exceeded` is the over-long input Bedrock reports: 400 `ValidationException`
//! "Input is too long for requested model." (`--fail-message` overrides any message). With
//! `--max-input-tokens N`, a Converse request whose P exceeds N gets that answer too. The rate
//! limits (`--rpm` / `--tpm`) answer 429 `ThrottlingException` "Too many requests, please wait
//! before trying again.".
//!
//! # Authentication
//!
//! With `--aws-access-key-id` (and `--aws-secret-access-key`, optionally `--aws-session-token`,
//! `--aws-region`, default `us-east-1`), every Bedrock request must carry a valid SigV4
//! signature for signing name `bedrock` (see `sigv4`), else 403 / 400 with AWS's type and
//! message: `MissingAuthenticationTokenException`, `IncompleteSignatureException`,
//! `UnrecognizedClientException` (unknown key, wrong or missing session token),
//! `InvalidSignatureException` (mismatch — the message gives the canonical request and string to
//! sign the mock computed —, clock skew over 5 minutes, wrong scope). With `--bedrock-api-key K`,
//! `Authorization: Bearer K` (a Bedrock API key) is accepted too. Either way the verdict is
//! recorded in the request's `auth` (`GET /__mock/requests`): `{"scheme": "sigv4" | "bearer" |
//! "unchecked", "ok", "error_type", "message", "access_key_id", "scope", "signed_headers",
//! "canonical_request", "string_to_sign"}`. Without either option nothing is checked.

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::{
    apply_latency, failure_status, hdr_string, hdr_u64, json_response, query_param,
    stream_response, uuid_like, MockBody, SseFrame,
};
use crate::content::{split_pieces, tool_input, Gen};
use crate::control::{self, Extra};
use crate::eventstream;
use crate::limits;
use crate::server::State;
use crate::sigv4::{self, Signed};
use crate::tokens::{self, Api};

mod validate;
use validate::validate_converse;

/// What follows the type in `x-amzn-ErrorType`.
const ERROR_TYPE_SUFFIX: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";
/// Bedrock's answer to an input longer than the model's context.
pub(crate) const INPUT_TOO_LONG: &str = "Input is too long for requested model.";
/// The event-stream padding Bedrock adds to every event payload.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const CONVERSE_FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
];
const BLOCK_KINDS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
];
const IMAGE_FORMATS: &[&str] = &["png", "jpeg", "gif", "webp"];

/// A Bedrock operation.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Converse(String),
    ConverseStream(String),
    Invoke(String),
    ListModels,
    GetModel(String),
    ListAsyncInvokes,
    Unknown,
}

/// Whether a path is Bedrock's (runtime or control plane).
pub(crate) fn is_path(path: &str) -> bool {
    path.starts_with("/model/")
        || path == "/async-invoke"
        || path == "/foundation-models"
        || path.starts_with("/foundation-models/")
}

fn route(method: &Method, path: &str) -> Route {
    let decode = |s: &str| String::from_utf8_lossy(&sigv4::percent_decode(s)).into_owned();
    if let Some(rest) = path.strip_prefix("/model/") {
        let Some((model, op)) = rest.rsplit_once('/') else {
            return Route::Unknown;
        };
        if model.is_empty() || *method != Method::POST {
            return Route::Unknown;
        }
        let model = decode(model);
        return match op {
            "converse" => Route::Converse(model),
            "converse-stream" => Route::ConverseStream(model),
            "invoke" => Route::Invoke(model),
            _ => Route::Unknown,
        };
    }
    if *method != Method::GET {
        return Route::Unknown;
    }
    if path == "/async-invoke" {
        return Route::ListAsyncInvokes;
    }
    match path.strip_prefix("/foundation-models") {
        Some("") | Some("/") => Route::ListModels,
        Some(id) => Route::GetModel(decode(id.trim_start_matches('/'))),
        None => Route::Unknown,
    }
}

/// A Bedrock error answer.
fn bedrock_error(
    state: &State,
    status: u16,
    error_type: &str,
    message: &str,
) -> Response<MockBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(state, status, json!({ "message": message }).to_string());
    if let Ok(v) = HeaderValue::from_str(&format!("{error_type}{ERROR_TYPE_SUFFIX}")) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

fn validation(state: &State, message: &str) -> Response<MockBody> {
    bedrock_error(state, 400, "ValidationException", message)
}

/// Bedrock's error type and message for a failure status (`--fail-code` / `--fail-message`
/// override them).
fn failure(state: &State, status: StatusCode) -> Response<MockBody> {
    let code = status.as_u16();
    let (mut typ, mut message) = match code {
        400 => (
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        ),
        401 => (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        403 => (
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404 => (
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        408 => (
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        424 => (
            "ModelErrorException",
            "The model returned an error. Try your request again.",
        ),
        429 => (
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 => (
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        c if c >= 500 => (
            "InternalServerException",
            "The server encountered an internal error while processing the request.",
        ),
        _ => (
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        ),
    };
    let fail_code = state.fail_code.clone();
    match fail_code.as_deref() {
        Some("context_length_exceeded") => {
            typ = "ValidationException";
            message = INPUT_TOO_LONG;
        }
        Some(t) if !t.is_empty() => {
            let mut resp = bedrock_error(
                state,
                code,
                t,
                state.fail_message.as_deref().unwrap_or(message),
            );
            retry_after(state, &mut resp);
            return resp;
        }
        _ => {}
    }
    let mut resp = bedrock_error(
        state,
        code,
        typ,
        state.fail_message.as_deref().unwrap_or(message),
    );
    retry_after(state, &mut resp);
    resp
}

fn retry_after(state: &State, resp: &mut Response<MockBody>) {
    if let Some(secs) = state.retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
}

/// Check the request's credentials (when the mock is configured to); the verdict, and the refusal
/// to answer with.
fn authenticate(state: &State, parts: &Parts, body: &[u8]) -> (Value, Option<sigv4::Refusal>) {
    if state.aws.is_none() && state.bedrock_api_key.is_none() {
        return (json!({"scheme": "unchecked", "ok": true}), None);
    }
    let auth = parts
        .headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let (Some(key), Some(bearer)) = (
        &state.bedrock_api_key,
        auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")),
    ) {
        if bearer.trim() == key {
            return (json!({"scheme": "bearer", "ok": true}), None);
        }
        let refusal = sigv4::Refusal {
            error_type: "UnrecognizedClientException",
            status: 403,
            message: "The security token included in the request is invalid.".to_owned(),
        };
        return (
            json!({"scheme": "bearer", "ok": false, "error_type": refusal.error_type, "message": refusal.message}),
            Some(refusal),
        );
    }
    let Some(creds) = &state.aws else {
        let refusal = sigv4::Refusal {
            error_type: "MissingAuthenticationTokenException",
            status: 403,
            message: "Missing Authentication Token".to_owned(),
        };
        return (
            json!({"scheme": "bearer", "ok": false, "error_type": refusal.error_type, "message": refusal.message}),
            Some(refusal),
        );
    };
    let req = Signed {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    let verdict = sigv4::verify(creds, &req, SystemTime::now());
    (verdict.to_json(), verdict.refusal)
}

/// A Bedrock request: recorded (with the credentials' verdict), authenticated, rate limited,
/// delayed, failed on demand, validated, answered.
pub(crate) async fn handle(state: &State, parts: &Parts, body: Bytes) -> Response<MockBody> {
    let route = route(&parts.method, parts.uri.path());
    let (verdict, refusal) = authenticate(state, parts, &body);
    if state.record {
        let model = match &route {
            Route::Converse(m)
            | Route::ConverseStream(m)
            | Route::Invoke(m)
            | Route::GetModel(m) => Some(m.clone()),
            _ => None,
        };
        let extra = Extra {
            model,
            stream: matches!(route, Route::ConverseStream(_)),
            auth: Some(verdict),
            inputs: None,
        };
        control::record_extra(state, parts, &body, extra);
    }
    let mut resp = answer(state, parts, &route, refusal, &body).await;
    if let Ok(v) = HeaderValue::from_str(&uuid_like(state)) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

async fn answer(
    state: &State,
    parts: &Parts,
    route: &Route,
    refusal: Option<sigv4::Refusal>,
    body: &[u8],
) -> Response<MockBody> {
    let headers = &parts.headers;
    if let Some(r) = refusal {
        return bedrock_error(state, r.status, r.error_type, &r.message);
    }
    let api = match route {
        Route::Converse(_) | Route::ConverseStream(_) => Some(Api::Converse),
        Route::Invoke(_) => Some(Api::AllText),
        _ => None,
    };
    if let Route::Unknown = route {
        return bedrock_error(state, 404, "UnknownOperationException", "Unknown operation");
    }
    if limits::rate_limit(state, headers, api, body).is_err() {
        return bedrock_error(
            state,
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        );
    }
    let latency = apply_latency(state, headers).await;
    if let Some(code) = failure_status(state, headers) {
        return failure(state, code);
    }
    match route {
        Route::Converse(_) | Route::ConverseStream(_) => {
            let stream = matches!(route, Route::ConverseStream(_));
            converse(state, headers, body, stream, latency)
        }
        Route::Invoke(model) => invoke(state, model, body, latency),
        Route::ListModels => list_models(state, parts.uri.query()),
        Route::ListAsyncInvokes => json_response(
            state,
            StatusCode::OK,
            json!({ "asyncInvokeSummaries": [] }).to_string(),
        ),
        Route::GetModel(id) => match MODELS.iter().find(|m| m.0 == id) {
            Some(m) => json_response(
                state,
                StatusCode::OK,
                json!({ "modelDetails": model_summary(state, m) }).to_string(),
            ),
            None => bedrock_error(
                state,
                404,
                "ResourceNotFoundException",
                "The specified model could not be found.",
            ),
        },
        Route::Unknown => {
            bedrock_error(state, 404, "UnknownOperationException", "Unknown operation")
        }
    }
}

// ---------------------------------------------------------------------------
// Converse
// ---------------------------------------------------------------------------

/// The text of the last user message's text blocks (echo mode).
fn echo_text(req: &Value) -> Option<String> {
    let last = req
        .get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")?;
    Some(
        last.get("content")?
            .as_array()?
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
    )
}

fn usage(g: &Gen, headers: &HeaderMap) -> Value {
    let (p, c) = (g.prompt_tokens, g.completion_tokens);
    let read = hdr_u64(headers, "x-mock-cache-read-tokens");
    let write = hdr_u64(headers, "x-mock-cache-write-tokens");
    let mut u = json!({
        "inputTokens": p,
        "outputTokens": c,
        "totalTokens": p + c + read.unwrap_or(0) + write.unwrap_or(0),
    });
    if read.is_some() || write.is_some() {
        u["cacheReadInputTokens"] = json!(read.unwrap_or(0));
        u["cacheWriteInputTokens"] = json!(write.unwrap_or(0));
    }
    u
}

/// An event's payload: its JSON members plus Bedrock's `p` padding.
fn payload(mut event: Value, n: usize) -> Vec<u8> {
    if let Some(o) = event.as_object_mut() {
        o.insert(
            "p".to_owned(),
            Value::String(PADDING[..n % PADDING.len() + 1].to_owned()),
        );
    }
    event.to_string().into_bytes()
}

fn converse(
    state: &State,
    headers: &HeaderMap,
    body: &[u8],
    stream: bool,
    latency: u64,
) -> Response<MockBody> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return bedrock_error(
                state,
                400,
                "SerializationException",
                "Unable to parse request body: it is not valid JSON.",
            )
        }
    };
    if let Err(m) = validate_converse(&req) {
        return validation(state, &m);
    }
    let mut g = Gen::new(state, headers, body.len());
    if state.max_input_tokens > 0 && g.prompt_tokens > state.max_input_tokens {
        return validation(state, INPUT_TOO_LONG);
    }
    if state.echo.load(std::sync::atomic::Ordering::Relaxed) {
        g.echo = echo_text(&req);
    }
    let tool = hdr_string(headers, "x-mock-tool-call").and_then(|name| {
        let tools = req.pointer("/toolConfig/tools")?.as_array()?;
        let spec = tools
            .iter()
            .find(|t| t.pointer("/toolSpec/name").and_then(Value::as_str) == Some(name.as_str()))?;
        let input = tool_input(
            headers,
            spec.pointer("/toolSpec/inputSchema/json/properties"),
        );
        Some((name, input))
    });
    let cut = g.cap(
        req.pointer("/inferenceConfig/maxTokens")
            .and_then(Value::as_u64),
    );
    let mut stop = match (&tool, cut) {
        (Some(_), _) => "tool_use",
        (None, true) => "max_tokens",
        (None, false) => "end_turn",
    }
    .to_owned();
    if let Some(r) = hdr_string(headers, "x-mock-finish-reason") {
        stop = r;
    }
    let n = state.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tool_use_id = format!("tooluse_mock_{n}");
    if !stream {
        let content = match &tool {
            Some((name, input)) => {
                json!([{"toolUse": {"toolUseId": tool_use_id, "name": name, "input": input}}])
            }
            None => json!([{"text": g.content()}]),
        };
        let body = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": usage(&g, headers),
            "metrics": {"latencyMs": latency},
        });
        return json_response(state, StatusCode::OK, body.to_string());
    }
    let mut events: Vec<(Duration, &str, Value)> = Vec::new();
    events.push((Duration::ZERO, "messageStart", json!({"role": "assistant"})));
    let deltas: Vec<Value> = match &tool {
        Some((name, input)) => {
            events.push((
                Duration::ZERO,
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}),
            ));
            let json = input.to_string();
            split_pieces(&json, g.sent())
                .into_iter()
                .map(|p| json!({"toolUse": {"input": p}}))
                .collect()
        }
        None => (0..g.sent()).map(|i| json!({"text": g.chunk(i)})).collect(),
    };
    let lead = events.len();
    let n_deltas = deltas.len();
    for (i, d) in deltas.into_iter().enumerate() {
        events.push((
            g.delay(i),
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": d}),
        ));
    }
    events.push((
        Duration::ZERO,
        "contentBlockStop",
        json!({"contentBlockIndex": 0}),
    ));
    events.push((Duration::ZERO, "messageStop", json!({"stopReason": stop})));
    events.push((
        Duration::ZERO,
        "metadata",
        json!({"usage": usage(&g, headers), "metrics": {"latencyMs": latency}}),
    ));
    let mut frames: Vec<SseFrame> = Vec::with_capacity(events.len());
    let fault = hdr_string(headers, "x-mock-eventstream-fault");
    let fault_at = lead
        + (hdr_u64(headers, "x-mock-eventstream-fault-after").unwrap_or(1) as usize).min(n_deltas);
    for (i, (delay, kind, event)) in events.into_iter().enumerate() {
        let msg = eventstream::event(kind, &payload(event, i));
        if i == fault_at {
            match fault.as_deref() {
                Some("bad-crc") => {
                    let mut bad = msg;
                    if let Some(last) = bad.last_mut() {
                        *last ^= 0xFF;
                    }
                    frames.push(SseFrame::raw(delay, bad));
                    continue;
                }
                Some("truncated") => {
                    frames.push(SseFrame::raw(delay, msg[..msg.len() / 2].to_vec()));
                    break;
                }
                Some("exception") => {
                    let typ = hdr_string(headers, "x-mock-eventstream-exception")
                        .unwrap_or_else(|| "throttlingException".to_owned());
                    let message = match typ.as_str() {
                        "throttlingException" => {
                            "Too many requests, please wait before trying again."
                        }
                        "modelStreamErrorException" => {
                            "The model stream encountered an error. Try your request again."
                        }
                        "serviceUnavailableException" => {
                            "Bedrock is unable to process your request."
                        }
                        "validationException" => INPUT_TOO_LONG,
                        _ => {
                            "The server encountered an internal error while processing the request."
                        }
                    };
                    let body = json!({"message": message}).to_string();
                    frames.push(SseFrame::raw(
                        delay,
                        eventstream::exception(&typ, body.as_bytes()),
                    ));
                    break;
                }
                _ => {}
            }
        }
        frames.push(SseFrame::raw(delay, msg));
    }
    stream_response(
        state,
        frames,
        g.drop_index(lead),
        "application/vnd.amazon.eventstream",
    )
}

// ---------------------------------------------------------------------------
// InvokeModel (embedding models)
// ---------------------------------------------------------------------------

/// The model id without a cross-region inference-profile prefix (`us.`, `eu.`, ...).
fn base_model(model: &str) -> &str {
    for prefix in [
        "us.", "eu.", "apac.", "us-gov.", "global.", "ca.", "jp.", "au.",
    ] {
        if let Some(m) = model.strip_prefix(prefix) {
            return m;
        }
    }
    model
}

/// Deterministic embedding values in [-1, 0.99], unit length when `normalize`.
fn vector(i: usize, dim: usize, normalize: bool) -> Vec<f64> {
    let mut v: Vec<f64> = (0..dim)
        .map(|j| (((i * 31 + j * 7) % 200) as f64 - 100.0) / 100.0)
        .collect();
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    v
}

fn malformed(state: &State, what: &str) -> Response<MockBody> {
    validation(
        state,
        &format!("Malformed input request: {what}, please reformat your input and try again."),
    )
}

fn extraneous(o: &Map<String, Value>, allowed: &[&str]) -> Option<String> {
    o.keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("#: extraneous key [{k}] is not permitted"))
}

fn invoke(state: &State, model: &str, body: &[u8], latency: u64) -> Response<MockBody> {
    let base = base_model(model);
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return malformed(state, "#: expected type: JSONObject");
    };
    let (body, input_tokens) = if base.starts_with("amazon.titan-embed-text-v2") {
        if let Some(e) = extraneous(
            &req,
            &["inputText", "dimensions", "normalize", "embeddingTypes"],
        ) {
            return malformed(state, &e);
        }
        let Some(text) = req.get("inputText").and_then(Value::as_str) else {
            return malformed(state, "#: required key [inputText] not found");
        };
        let dim = match req.get("dimensions") {
            None => 1024,
            Some(d) => match d.as_u64() {
                Some(n @ (256 | 512 | 1024)) => n as usize,
                _ => {
                    return malformed(
                        state,
                        &format!("#/dimensions: {d} is not a valid enum value"),
                    )
                }
            },
        };
        let normalize = req
            .get("normalize")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let n = tokens::count(text);
        let embedding = vector(0, dim, normalize);
        let mut out = json!({"embedding": embedding, "inputTextTokenCount": n});
        if let Some(types) = req.get("embeddingTypes").and_then(Value::as_array) {
            let mut by = Map::new();
            for t in types.iter().filter_map(Value::as_str) {
                let v = match t {
                    "float" => json!(embedding),
                    "binary" => json!(embedding
                        .iter()
                        .map(|x| u8::from(*x > 0.0))
                        .collect::<Vec<_>>()),
                    other => {
                        return malformed(
                            state,
                            &format!("#/embeddingTypes: {other} is not a valid enum value"),
                        )
                    }
                };
                by.insert(t.to_owned(), v);
            }
            out["embeddingsByType"] = Value::Object(by);
        }
        (out, n)
    } else if base.starts_with("amazon.titan-embed-text-v1")
        || base.starts_with("amazon.titan-embed-g1-text")
    {
        if let Some(e) = extraneous(&req, &["inputText"]) {
            return malformed(state, &e);
        }
        let Some(text) = req.get("inputText").and_then(Value::as_str) else {
            return malformed(state, "#: required key [inputText] not found");
        };
        let n = tokens::count(text);
        (
            json!({"embedding": vector(0, 1536, false), "inputTextTokenCount": n}),
            n,
        )
    } else if base.starts_with("cohere.embed") {
        if let Some(e) = extraneous(
            &req,
            &[
                "texts",
                "images",
                "input_type",
                "truncate",
                "embedding_types",
            ],
        ) {
            return malformed(state, &e);
        }
        let Some(texts) = req.get("texts").and_then(Value::as_array) else {
            return malformed(state, "#: required key [texts] not found");
        };
        if texts.is_empty() || texts.len() > 96 || !texts.iter().all(Value::is_string) {
            return malformed(state, "#/texts: expected 1 to 96 strings");
        }
        match req.get("input_type").and_then(Value::as_str) {
            Some(
                "search_document" | "search_query" | "classification" | "clustering" | "image",
            ) => {}
            Some(other) => {
                return malformed(
                    state,
                    &format!("#/input_type: {other} is not a valid enum value"),
                )
            }
            None => return malformed(state, "#: required key [input_type] not found"),
        }
        if let Some(t) = req.get("truncate") {
            if !matches!(t.as_str(), Some("NONE" | "START" | "END")) {
                return malformed(state, &format!("#/truncate: {t} is not a valid enum value"));
            }
        }
        let n: u64 = texts
            .iter()
            .filter_map(Value::as_str)
            .map(tokens::count)
            .sum();
        let floats: Vec<Vec<f64>> = (0..texts.len()).map(|i| vector(i, 1024, false)).collect();
        let id = uuid_like(state);
        let out = match req.get("embedding_types").and_then(Value::as_array) {
            None => {
                json!({"embeddings": floats, "id": id, "response_type": "embeddings_floats", "texts": texts})
            }
            Some(types) => {
                let mut by = Map::new();
                for t in types.iter().filter_map(Value::as_str) {
                    let v = match t {
                        "float" => json!(floats),
                        "int8" | "uint8" | "binary" | "ubinary" => json!(floats
                            .iter()
                            .map(|v| v
                                .iter()
                                .map(|x| (x * 100.0).round() as i64)
                                .collect::<Vec<_>>())
                            .collect::<Vec<_>>()),
                        other => {
                            return malformed(
                                state,
                                &format!("#/embedding_types: {other} is not a valid enum value"),
                            )
                        }
                    };
                    by.insert(t.to_owned(), v);
                }
                json!({"embeddings": by, "id": id, "response_type": "embeddings_by_type", "texts": texts})
            }
        };
        (out, n)
    } else {
        return validation(
            state,
            &format!("The mock serves InvokeModel only for embedding models (amazon.titan-embed-*, cohere.embed-*), not {model}."),
        );
    };
    let mut resp = json_response(state, StatusCode::OK, body.to_string());
    let h = resp.headers_mut();
    h.insert(
        "x-amzn-bedrock-input-token-count",
        HeaderValue::from(input_tokens),
    );
    h.insert(
        "x-amzn-bedrock-invocation-latency",
        HeaderValue::from(latency),
    );
    resp
}

// ---------------------------------------------------------------------------
// Control plane
// ---------------------------------------------------------------------------

/// `(modelId, modelName, providerName, input modalities, output modality, streaming)`.
type ModelRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    bool,
);

const MODELS: &[ModelRow] = &[
    (
        "anthropic.claude-3-haiku-20240307-v1:0",
        "Claude 3 Haiku",
        "Anthropic",
        &["TEXT", "IMAGE"],
        "TEXT",
        true,
    ),
    (
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "Claude 3.5 Sonnet",
        "Anthropic",
        &["TEXT", "IMAGE"],
        "TEXT",
        true,
    ),
    (
        "amazon.nova-lite-v1:0",
        "Nova Lite",
        "Amazon",
        &["TEXT", "IMAGE", "VIDEO"],
        "TEXT",
        true,
    ),
    (
        "meta.llama3-1-8b-instruct-v1:0",
        "Llama 3.1 8B Instruct",
        "Meta",
        &["TEXT"],
        "TEXT",
        true,
    ),
    (
        "amazon.titan-embed-text-v2:0",
        "Titan Text Embeddings V2",
        "Amazon",
        &["TEXT"],
        "EMBEDDING",
        false,
    ),
    (
        "cohere.embed-english-v3",
        "Embed English",
        "Cohere",
        &["TEXT"],
        "EMBEDDING",
        false,
    ),
];

fn model_summary(state: &State, m: &ModelRow) -> Value {
    let (id, name, provider, input, output, streaming) = *m;
    json!({
        "modelArn": format!("arn:aws:bedrock:{}::foundation-model/{id}", state.aws_region),
        "modelId": id,
        "modelName": name,
        "providerName": provider,
        "inputModalities": input,
        "outputModalities": [output],
        "responseStreamingSupported": streaming,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    })
}

fn list_models(state: &State, query: Option<&str>) -> Response<MockBody> {
    let by_output = query_param(query, "byOutputModality");
    let summaries: Vec<Value> = MODELS
        .iter()
        .filter(|m| by_output.is_none_or(|o| o == m.4))
        .map(|m| model_summary(state, m))
        .collect();
    json_response(
        state,
        StatusCode::OK,
        json!({ "modelSummaries": summaries }).to_string(),
    )
}

#[cfg(test)]
mod tests;
