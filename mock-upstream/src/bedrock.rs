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

fn constraint(value: &Value, at: &str, constraint: &str) -> String {
    format!("1 validation error detected: Value '{value}' at '{at}' failed to satisfy constraint: {constraint}")
}

/// Validate a Converse request as Bedrock does (the subset a gateway's translation could get
/// wrong). `Err` is the `ValidationException` message.
pub(crate) fn validate_converse(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or_else(|| {
        "Malformed input request: the request body must be a JSON object.".to_owned()
    })?;
    if let Some(k) = o.keys().find(|k| !CONVERSE_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: #: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    if let Some(system) = o.get("system") {
        let blocks = system.as_array().ok_or_else(|| {
            "Malformed input request: #/system: expected type: JSONArray".to_owned()
        })?;
        for (j, b) in blocks.iter().enumerate() {
            let kind = one_member(
                b,
                &["text", "guardContent", "cachePoint"],
                &format!("system.{j}"),
            )?;
            if kind == "text" && b["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
                return Err(format!(
                    "The text field in the SystemContentBlock object at system.{j} is blank. Add text to the text field, and try again."
                ));
            }
        }
    }
    if let Some(ic) = o.get("inferenceConfig") {
        validate_inference_config(ic)?;
    }
    if let Some(tc) = o.get("toolConfig") {
        validate_tool_config(tc)?;
    }
    let messages = match o.get("messages") {
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) => {
            return Err("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null".to_owned())
        }
        Some(_) => return Err("Malformed input request: #/messages: expected type: JSONArray".to_owned()),
    };
    if messages.is_empty() {
        return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned());
    }
    let mut prev: Option<&str> = None;
    let mut pending: Vec<String> = Vec::new();
    let mut uses_tools = false;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(constraint(
                m.get("role").unwrap_or(&Value::Null),
                &format!("messages.{}.member.role", i + 1),
                "Member must satisfy enum value set: [user, assistant]",
            ));
        }
        if i == 0 && role != "user" {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned());
        }
        if prev == Some(role) {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".to_owned());
        }
        prev = Some(role);
        let content = match m.get("content") {
            Some(Value::Array(c)) if !c.is_empty() => c,
            Some(Value::Array(_)) => {
                return Err(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ))
            }
            _ => {
                return Err(format!(
                    "1 validation error detected: Value null at 'messages.{}.member.content' failed to satisfy constraint: Member must not be null",
                    i + 1
                ))
            }
        };
        let mut uses = Vec::new();
        let mut results = Vec::new();
        for (j, b) in content.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match one_member(b, BLOCK_KINDS, &at)? {
                "text" if b["text"].as_str().is_none_or(|t| t.trim().is_empty()) => {
                    return Err(format!(
                        "The text field in the ContentBlock object at {at} is blank. Add text to the text field, and try again."
                    ));
                }
                "image" => validate_image(&b["image"], &at)?,
                "toolUse" => {
                    uses_tools = true;
                    if role != "assistant" {
                        return Err(format!(
                            "The toolUse block at {at} must be in an assistant message."
                        ));
                    }
                    let tu = &b["toolUse"];
                    let id = tu.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    if id.is_empty()
                        || tu
                            .get("name")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                    {
                        return Err(format!(
                            "The toolUse block at {at} requires a toolUseId and a name."
                        ));
                    }
                    if !tu.get("input").is_some_and(Value::is_object) {
                        return Err(format!(
                            "The toolUse block at {at} requires an input object."
                        ));
                    }
                    uses.push(id.to_owned());
                }
                "toolResult" => {
                    uses_tools = true;
                    if role != "user" {
                        return Err(format!(
                            "The toolResult block at {at} must be in a user message."
                        ));
                    }
                    let tr = &b["toolResult"];
                    let id = tr.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    validate_tool_result(tr, &at)?;
                    results.push(id.to_owned());
                }
                _ => {}
            }
        }
        if role == "user" {
            if results.len() > pending.len() {
                return Err(format!(
                    "The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of previous turn."
                ));
            }
            let missing: Vec<&str> = pending
                .iter()
                .filter(|id| !results.contains(id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "Expected toolResult blocks at messages.{i}.content for the following Ids: {}",
                    missing.join(", ")
                ));
            }
            pending.clear();
        } else {
            pending = uses;
        }
    }
    if uses_tools && o.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".to_owned());
    }
    Ok(())
}

/// The one member of a union object (`Err` when it has none, several, or an unknown one).
fn one_member<'a>(b: &'a Value, kinds: &[&str], at: &str) -> Result<&'a str, String> {
    let o = b
        .as_object()
        .ok_or_else(|| format!("Malformed input request: #/{at}: expected type: JSONObject"))?;
    if let Some(k) = o.keys().find(|k| !kinds.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: #/{at}: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    match o.keys().next() {
        Some(k) if o.len() == 1 => Ok(k.as_str()),
        _ => Err(format!(
            "1 validation error detected: Value at '{at}' failed to satisfy constraint: Member must have exactly one field set"
        )),
    }
}

fn validate_image(img: &Value, at: &str) -> Result<(), String> {
    let format = img.get("format").and_then(Value::as_str).unwrap_or("");
    if !IMAGE_FORMATS.contains(&format) {
        return Err(constraint(
            img.get("format").unwrap_or(&Value::Null),
            &format!("{at}.member.image.format"),
            "Member must satisfy enum value set: [png, jpeg, gif, webp]",
        ));
    }
    let source = img.get("source").and_then(Value::as_object);
    if source.is_some_and(|s| s.contains_key("s3Location")) {
        return Ok(());
    }
    let Some(data) = source.and_then(|s| s.get("bytes")).and_then(Value::as_str) else {
        return Err(format!(
            "The image source at {at} must have bytes or an s3Location."
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| format!("The image bytes at {at} are not valid base64."))?;
    let matches = match format {
        "png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "jpeg" => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
        "gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        _ => bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP",
    };
    if !matches {
        return Err(format!(
            "Could not process image at {at}: its bytes are not a valid {format} image."
        ));
    }
    Ok(())
}

fn validate_tool_result(tr: &Value, at: &str) -> Result<(), String> {
    if tr
        .get("toolUseId")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!(
            "The toolResult block at {at} requires a toolUseId."
        ));
    }
    let content = tr
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("The toolResult block at {at} requires a content list."))?;
    for (k, c) in content.iter().enumerate() {
        one_member(
            c,
            &["text", "json", "image", "document", "video", "searchResult"],
            &format!("{at}.toolResult.content.{k}"),
        )?;
    }
    match tr.get("status") {
        None => Ok(()),
        Some(Value::String(s)) if s == "success" || s == "error" => Ok(()),
        Some(s) => Err(constraint(
            s,
            &format!("{at}.member.toolResult.status"),
            "Member must satisfy enum value set: [success, error]",
        )),
    }
}

fn validate_inference_config(ic: &Value) -> Result<(), String> {
    let o = ic.as_object().ok_or_else(|| {
        "Malformed input request: #/inferenceConfig: expected type: JSONObject".to_owned()
    })?;
    for (k, v) in o {
        match k.as_str() {
            "maxTokens" => {
                if v.as_u64().is_none_or(|n| n < 1) {
                    return Err(constraint(v, "inferenceConfig.maxTokens", "Member must have value greater than or equal to 1"));
                }
            }
            "temperature" | "topP" => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => {}
                Some(x) if x < 0.0 => {
                    return Err(constraint(v, &format!("inferenceConfig.{k}"), "Member must have value greater than or equal to 0"))
                }
                _ => {
                    return Err(constraint(v, &format!("inferenceConfig.{k}"), "Member must have value less than or equal to 1"))
                }
            },
            "stopSequences" => {
                let ok = v.as_array().is_some_and(|a| a.len() <= 4 && a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())));
                if !ok {
                    return Err(constraint(v, "inferenceConfig.stopSequences", "Member must have length less than or equal to 4, of non-empty strings"));
                }
            }
            other => {
                return Err(format!(
                    "Malformed input request: #/inferenceConfig: extraneous key [{other}] is not permitted, please reformat your input and try again."
                ))
            }
        }
    }
    Ok(())
}

fn validate_tool_config(tc: &Value) -> Result<(), String> {
    let o = tc.as_object().ok_or_else(|| {
        "Malformed input request: #/toolConfig: expected type: JSONObject".to_owned()
    })?;
    if let Some(k) = o.keys().find(|k| *k != "tools" && *k != "toolChoice") {
        return Err(format!(
            "Malformed input request: #/toolConfig: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    let tools = match o.get("tools") {
        Some(Value::Array(t)) if !t.is_empty() => t,
        other => {
            return Err(constraint(
                other.unwrap_or(&Value::Null),
                "toolConfig.tools",
                "Member must have length greater than or equal to 1",
            ))
        }
    };
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let at = format!("toolConfig.tools.{i}");
        if one_member(t, &["toolSpec", "cachePoint", "systemTool"], &at)? != "toolSpec" {
            continue;
        }
        let spec = &t["toolSpec"];
        let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(constraint(
                spec.get("name").unwrap_or(&Value::Null),
                &format!("{at}.member.toolSpec.name"),
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+",
            ));
        }
        if !spec
            .pointer("/inputSchema/json")
            .is_some_and(Value::is_object)
        {
            return Err(format!(
                "The toolSpec at {at} requires an inputSchema with a json schema object."
            ));
        }
        names.push(name.to_owned());
    }
    if let Some(choice) = o.get("toolChoice") {
        if one_member(choice, &["auto", "any", "tool"], "toolConfig.toolChoice")? == "tool" {
            let name = choice
                .pointer("/tool/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !names.iter().any(|n| n == name) {
                return Err(format!(
                    "The tool {name} in toolChoice is not defined in toolConfig.tools."
                ));
            }
        }
    }
    Ok(())
}

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
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(body: Value) {
        assert_eq!(validate_converse(&body), Ok(()), "{body}");
    }

    fn bad(body: Value, needle: &str) {
        let e = validate_converse(&body).unwrap_err();
        assert!(e.contains(needle), "{e:?} does not contain {needle:?}");
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": [{"text": text}]})
    }

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            route(
                &post,
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
            ),
            Route::Converse("anthropic.claude-3-haiku-20240307-v1:0".to_owned())
        );
        assert_eq!(
            route(&post, "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse-stream"),
            Route::ConverseStream("arn:aws:bedrock:us-east-1:1:inference-profile/us.x".to_owned())
        );
        assert_eq!(
            route(&post, "/model/amazon.titan-embed-text-v2:0/invoke"),
            Route::Invoke("amazon.titan-embed-text-v2:0".to_owned())
        );
        assert_eq!(route(&post, "/model/x/other"), Route::Unknown);
        assert_eq!(route(&Method::GET, "/model/x/converse"), Route::Unknown);
        assert_eq!(route(&Method::GET, "/foundation-models"), Route::ListModels);
        assert_eq!(
            route(&Method::GET, "/foundation-models/cohere.embed-english-v3"),
            Route::GetModel("cohere.embed-english-v3".to_owned())
        );
        assert!(
            is_path("/model/x/converse") && is_path("/foundation-models") && !is_path("/v1/models")
        );
    }

    #[test]
    fn converse_validation() {
        let base = json!({"messages": [user("hi")]});
        ok(base.clone());
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        bad(with("max_tokens", json!(5)), "extraneous key [max_tokens]");
        bad(json!({}), "Value null at 'messages'");
        bad(json!({"messages": []}), "must start with a user message");
        bad(
            json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
            "must start with a user message",
        );
        bad(
            json!({"messages": [user("a"), user("b")]}),
            "must alternate between user and assistant",
        );
        bad(
            json!({"messages": [{"role": "system", "content": [{"text": "x"}]}]}),
            "enum value set: [user, assistant]",
        );
        bad(
            json!({"messages": [{"role": "user", "content": []}]}),
            "content field in the Message object at messages.0 is empty",
        );
        bad(
            json!({"messages": [{"role": "user", "content": [{"text": "  "}]}]}),
            "at messages.0.content.0 is blank",
        );
        bad(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}),
            "extraneous key [type]",
        );
        bad(
            json!({"messages": [{"role": "user", "content": [{"text": "x", "image": {}}]}]}),
            "exactly one field",
        );
        bad(
            with("system", json!([{"text": ""}])),
            "SystemContentBlock object at system.0 is blank",
        );
        ok(with(
            "system",
            json!([{"text": "be brief"}, {"cachePoint": {"type": "default"}}]),
        ));
        bad(
            with("inferenceConfig", json!({"temperature": 1.5})),
            "less than or equal to 1",
        );
        bad(
            with("inferenceConfig", json!({"maxTokens": 0})),
            "greater than or equal to 1",
        );
        bad(
            with("inferenceConfig", json!({"max_tokens": 5})),
            "extraneous key [max_tokens]",
        );
        ok(with(
            "inferenceConfig",
            json!({"maxTokens": 5, "temperature": 0.2, "topP": 0.9, "stopSequences": ["\n"]}),
        ));
        // Images: base64 bytes of the declared format.
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nrest");
        let img = |format: &str, bytes: &str| {
            json!({"messages": [{"role": "user", "content": [
            {"text": "what is this"}, {"image": {"format": format, "source": {"bytes": bytes}}}]}]})
        };
        ok(img("png", &png));
        bad(img("jpeg", &png), "not a valid jpeg image");
        bad(img("tiff", &png), "enum value set: [png, jpeg, gif, webp]");
        bad(img("png", "***"), "not valid base64");
        // Tools.
        let tools = json!({"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]});
        let turn = json!({"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]});
        let result = |id: &str| json!({"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"json": {"t": 20}}], "status": "success"}}]});
        let convo = |third: Value| json!({"messages": [user("weather?"), turn.clone(), third], "toolConfig": tools.clone()});
        ok(convo(result("t1")));
        bad(
            convo(user("no result")),
            "Expected toolResult blocks at messages.2.content for the following Ids: t1",
        );
        bad(
            convo(
                json!({"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "a"}]}}, {"toolResult": {"toolUseId": "t2", "content": [{"text": "b"}]}}]}),
            ),
            "exceeds the number of toolUse blocks",
        );
        let mut no_config = convo(result("t1"));
        no_config.as_object_mut().unwrap().remove("toolConfig");
        bad(no_config, "toolConfig field must be defined");
        bad(
            with("toolConfig", json!({"tools": []})),
            "length greater than or equal to 1",
        );
        bad(
            with(
                "toolConfig",
                json!({"tools": [{"toolSpec": {"name": "f"}}]}),
            ),
            "inputSchema",
        );
        bad(
            with(
                "toolConfig",
                json!({"tools": tools["tools"], "toolChoice": {"tool": {"name": "nope"}}}),
            ),
            "toolChoice",
        );
        ok(with(
            "toolConfig",
            json!({"tools": tools["tools"], "toolChoice": {"any": {}}}),
        ));
    }

    #[test]
    fn embedding_vectors() {
        let v = vector(0, 256, true);
        let norm: f64 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-9);
        assert_eq!(
            base_model("us.cohere.embed-english-v3"),
            "cohere.embed-english-v3"
        );
        assert_eq!(
            base_model("amazon.titan-embed-text-v2:0"),
            "amazon.titan-embed-text-v2:0"
        );
    }
    use crate::body::collect;
    use crate::eventstream::decode_all;
    use crate::server::test_state;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        h
    }

    const HELLO: &str = r#"{"messages":[{"role":"user","content":[{"text":"hello there"}]}]}"#;

    #[test]
    fn converse_answer_and_usage() {
        let state = test_state(&["--chunks", "3"]);
        let (status, _, body) = collect(converse(
            &state,
            &HeaderMap::new(),
            HELLO.as_bytes(),
            false,
            7,
        ));
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["output"]["message"]["role"], "assistant");
        assert_eq!(
            v["output"]["message"]["content"][0]["text"],
            "Hello from mock"
        );
        assert_eq!(v["stopReason"], "end_turn");
        let p = (HELLO.len() / 4) as u64;
        assert_eq!(
            v["usage"],
            json!({"inputTokens": p, "outputTokens": 3, "totalTokens": p + 3})
        );
        assert_eq!(v["metrics"]["latencyMs"], 7);
        // Cached tokens, as cost tests need them.
        let h = headers(&[
            ("x-mock-cache-read-tokens", "100"),
            ("x-mock-cache-write-tokens", "20"),
        ]);
        let (_, _, body) = collect(converse(&state, &h, HELLO.as_bytes(), false, 0));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["usage"]["cacheReadInputTokens"], 100);
        assert_eq!(v["usage"]["cacheWriteInputTokens"], 20);
        assert_eq!(v["usage"]["totalTokens"], p + 3 + 120);
        // maxTokens below the chunks cuts the answer.
        let capped = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":2}}"#;
        let (_, _, body) = collect(converse(
            &state,
            &HeaderMap::new(),
            capped.as_bytes(),
            false,
            0,
        ));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["stopReason"], "max_tokens");
        assert_eq!(v["output"]["message"]["content"][0]["text"], "tok0 tok1 ");
        assert_eq!(v["usage"]["outputTokens"], 2);
        // Validation errors in Bedrock's shape.
        let (status, h, body) = collect(converse(
            &state,
            &HeaderMap::new(),
            br#"{"messages":[]}"#,
            false,
            0,
        ));
        assert_eq!(status, 400);
        assert!(h["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with("ValidationException:"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("start with a user message"));
    }

    #[test]
    fn converse_tool_call() {
        let state = test_state(&[]);
        let req = r#"{"messages":[{"role":"user","content":[{"text":"weather?"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"get_weather","inputSchema":{"json":{"type":"object","properties":{"city":{"type":"string"}}}}}}]}}"#;
        let h = headers(&[("x-mock-tool-call", "get_weather")]);
        let (_, _, body) = collect(converse(&state, &h, req.as_bytes(), false, 0));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["stopReason"], "tool_use");
        let tu = &v["output"]["message"]["content"][0]["toolUse"];
        assert_eq!(tu["name"], "get_weather");
        assert_eq!(tu["input"], json!({"city": "mock"}));
        assert!(tu["toolUseId"]
            .as_str()
            .unwrap()
            .starts_with("tooluse_mock_"));
        // Streamed: contentBlockStart names the tool; the deltas' input pieces make the JSON.
        let h = headers(&[
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-tool-input", r#"{"city":"Zürich"}"#),
        ]);
        let (_, _, body) = collect(converse(&state, &h, req.as_bytes(), true, 0));
        let msgs = decode_all(&body).unwrap();
        let kinds: Vec<&str> = msgs
            .iter()
            .map(|m| m.header(":event-type").unwrap())
            .collect();
        assert_eq!(kinds[..2], ["messageStart", "contentBlockStart"]);
        assert_eq!(msgs[1].json()["start"]["toolUse"]["name"], "get_weather");
        let input: String = msgs
            .iter()
            .filter(|m| m.header(":event-type") == Some("contentBlockDelta"))
            .map(|m| {
                m.json()["delta"]["toolUse"]["input"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&input).unwrap(),
            json!({"city": "Zürich"})
        );
        let stop = msgs
            .iter()
            .find(|m| m.header(":event-type") == Some("messageStop"))
            .unwrap();
        assert_eq!(stop.json()["stopReason"], "tool_use");
    }

    #[test]
    fn converse_stream_framing() {
        let state = test_state(&["--chunks", "4"]);
        let (status, h, body) = collect(converse(
            &state,
            &HeaderMap::new(),
            HELLO.as_bytes(),
            true,
            3,
        ));
        assert_eq!(status, 200);
        assert_eq!(h["content-type"], "application/vnd.amazon.eventstream");
        let msgs = decode_all(&body).unwrap();
        let kinds: Vec<&str> = msgs
            .iter()
            .map(|m| m.header(":event-type").unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        for m in &msgs {
            assert_eq!(m.header(":message-type"), Some("event"));
            assert_eq!(m.header(":content-type"), Some("application/json"));
            assert!(m.json()["p"].is_string(), "padding");
        }
        assert_eq!(msgs[0].json()["role"], "assistant");
        let text: String = msgs[1..5]
            .iter()
            .map(|m| m.json()["delta"]["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 tok3 ");
        assert_eq!(msgs[1].json()["contentBlockIndex"], 0);
        assert_eq!(msgs[6].json()["stopReason"], "end_turn");
        let meta = msgs[7].json();
        assert_eq!(meta["usage"]["outputTokens"], 4);
        assert_eq!(meta["metrics"]["latencyMs"], 3);
        // Drop after 2 deltas: the start and two deltas, then nothing.
        let h = headers(&[("x-mock-drop-after-chunks", "2")]);
        let (_, _, body) = collect(converse(&state, &h, HELLO.as_bytes(), true, 0));
        assert_eq!(decode_all(&body).unwrap().len(), 3);
    }

    #[test]
    fn converse_stream_faults() {
        let state = test_state(&["--chunks", "4"]);
        let run = |pairs: &[(&'static str, &'static str)]| {
            collect(converse(&state, &headers(pairs), HELLO.as_bytes(), true, 0)).2
        };
        // A bad CRC on the second delta (K = 1): the start and the first delta decode, then not.
        let body = run(&[
            ("x-mock-eventstream-fault", "bad-crc"),
            ("x-mock-eventstream-fault-after", "1"),
        ]);
        assert_eq!(decode_all(&body).unwrap_err(), "bad message CRC");
        let first: usize = (0..2).fold(0, |at, _| {
            at + u32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize
        });
        assert_eq!(decode_all(&body[..first]).unwrap().len(), 2);
        // Truncated: a partial message, then the end.
        let body = run(&[("x-mock-eventstream-fault", "truncated")]);
        assert!(decode_all(&body).unwrap_err().starts_with("truncated"));
        // An exception message ends the stream.
        let body = run(&[
            ("x-mock-eventstream-fault", "exception"),
            ("x-mock-eventstream-fault-after", "2"),
            ("x-mock-eventstream-exception", "modelStreamErrorException"),
        ]);
        let msgs = decode_all(&body).unwrap();
        assert_eq!(msgs.len(), 4);
        let last = msgs.last().unwrap();
        assert_eq!(last.header(":message-type"), Some("exception"));
        assert_eq!(
            last.header(":exception-type"),
            Some("modelStreamErrorException")
        );
        assert!(last.json()["message"].is_string());
        let body = run(&[("x-mock-eventstream-fault", "exception")]);
        assert_eq!(
            decode_all(&body)
                .unwrap()
                .last()
                .unwrap()
                .header(":exception-type"),
            Some("throttlingException")
        );
    }

    #[test]
    fn failures_in_bedrock_shapes() {
        let state = test_state(&[]);
        let check = |state: &State, status: u16, typ: &str, needle: &str| {
            let (s, h, body) = collect(failure(state, StatusCode::from_u16(status).unwrap()));
            assert_eq!(s, status);
            assert_eq!(
                h["x-amzn-errortype"].to_str().unwrap(),
                format!("{typ}{ERROR_TYPE_SUFFIX}")
            );
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
        };
        check(&state, 429, "ThrottlingException", "Too many requests");
        check(
            &state,
            503,
            "ServiceUnavailableException",
            "unable to process",
        );
        check(&state, 408, "ModelTimeoutException", "timed out");
        check(&state, 500, "InternalServerException", "internal error");
        check(&state, 403, "AccessDeniedException", "access");
        let state = test_state(&["--fail-code", "context_length_exceeded"]);
        check(&state, 400, "ValidationException", INPUT_TOO_LONG);
        let state = test_state(&[
            "--fail-code",
            "ModelNotReadyException",
            "--fail-message",
            "warming up",
        ]);
        check(&state, 429, "ModelNotReadyException", "warming up");
    }

    #[test]
    fn embeddings() {
        let state = test_state(&[]);
        let run = |model: &str, body: &str| {
            let (s, h, b) = collect(invoke(&state, model, body.as_bytes(), 5));
            (s, h, serde_json::from_slice::<Value>(&b).unwrap())
        };
        let (s, h, v) = run(
            "amazon.titan-embed-text-v2:0",
            r#"{"inputText":"hello world","dimensions":256}"#,
        );
        assert_eq!(s, 200);
        assert_eq!(v["embedding"].as_array().unwrap().len(), 256);
        assert_eq!(v["inputTextTokenCount"], 2);
        assert_eq!(h["x-amzn-bedrock-input-token-count"], "2");
        let (_, _, v) = run("us.amazon.titan-embed-text-v2:0", r#"{"inputText":"x"}"#);
        assert_eq!(v["embedding"].as_array().unwrap().len(), 1024);
        let (s, _, v) = run(
            "amazon.titan-embed-text-v2:0",
            r#"{"inputText":"x","dimensions":300}"#,
        );
        assert_eq!(s, 400);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("#/dimensions: 300 is not a valid enum value"));
        let (s, _, v) = run("amazon.titan-embed-text-v2:0", r#"{"input":"x"}"#);
        assert_eq!(s, 400);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("extraneous key [input]"));
        let (s, _, v) = run(
            "cohere.embed-english-v3",
            r#"{"texts":["a","b"],"input_type":"search_document"}"#,
        );
        assert_eq!(s, 200);
        assert_eq!(v["response_type"], "embeddings_floats");
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(v["embeddings"][1].as_array().unwrap().len(), 1024);
        assert_eq!(v["texts"], json!(["a", "b"]));
        let (_, _, v) = run(
            "cohere.embed-english-v3",
            r#"{"texts":["a"],"input_type":"search_query","embedding_types":["float","int8"]}"#,
        );
        assert_eq!(v["response_type"], "embeddings_by_type");
        assert_eq!(v["embeddings"]["float"].as_array().unwrap().len(), 1);
        let (s, _, v) = run("cohere.embed-english-v3", r#"{"texts":["a"]}"#);
        assert_eq!(s, 400);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("required key [input_type] not found"));
        let (s, _, _) = run("anthropic.claude-v2", r#"{"prompt":"x"}"#);
        assert_eq!(s, 400);
    }
}
