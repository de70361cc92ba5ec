//! Google's Gemini API (`generativelanguage.googleapis.com`) and the same wire format on Vertex
//! AI (`{location}-aiplatform.googleapis.com`): generation (whole, SSE-streamed, JSON-array
//! streamed), token counting, embeddings, the model list, Google's errors and safety blocks.
//!
//! Written from Google's documentation: the Gemini API reference (`models.generateContent`,
//! `models.streamGenerateContent`, `models.countTokens`, `models.embedContent`,
//! `models.batchEmbedContents`, `models.list` / `models.get`, and the `Content`, `Part`,
//! `GenerationConfig`, `SafetySetting`, `Tool`, `ToolConfig`, `GenerateContentResponse`,
//! `Candidate`, `FinishReason`, `PromptFeedback`, `UsageMetadata` types), its "Function calling"
//! and "Troubleshooting" (error codes) guides, the REST streaming quickstart (`?alt=sse`), the
//! Vertex AI reference for `publishers.models.generateContent` / `streamGenerateContent` and the
//! Text embeddings API (`:predict`), and Google's API error model (AIP-193: `{"error": {"code",
//! "message", "status", "details"}}`). As Google's JSON mapping of protobuf does, request fields
//! are accepted in lowerCamelCase and in snake_case (`systemInstruction` or
//! `system_instruction`).
//!
//! # Gemini API (API key in `x-goog-api-key`, or `?key=`)
//!
//! * `POST /v1beta/models/{model}:generateContent` (also `/v1/models/{model}:...`; `/v1/models`
//!   itself stays OpenAI's model list). Validated as Gemini does (400 `INVALID_ARGUMENT`):
//!   unknown fields (`Invalid JSON payload received. Unknown name "x": Cannot find field.`),
//!   `contents` required and non-empty, roles `user` / `model` (absent = `user`), non-empty
//!   `parts`, each part exactly one of `text`, `inlineData` {`mimeType`, base64 `data`},
//!   `fileData`, `functionCall` {`name`, `args`}, `functionResponse` {`name`, `response`},
//!   `executableCode`, `codeExecutionResult` (with `thought`, `thoughtSignature`,
//!   `videoMetadata` beside it); a `functionCall` turn (role `model`) followed by a turn of as
//!   many `functionResponse` parts; `generationConfig` fields (`maxOutputTokens`, `temperature`
//!   0..2, `topP`, `topK`, `stopSequences` (at most 5), `candidateCount`, `responseMimeType`,
//!   `responseSchema`, `thinkingConfig`, ...); `tools[].functionDeclarations`;
//!   `toolConfig.functionCallingConfig` {`mode`: AUTO | ANY | NONE | VALIDATED,
//!   `allowedFunctionNames` naming declared functions}; `safetySettings` [{`category`:
//!   HARM_CATEGORY_*, `threshold`}].
//!
//!   Answer: `{"candidates":[{"content":{"role":"model","parts":[{"text":...}]},
//!   "finishReason":"STOP","index":0,"safetyRatings":[...]}],"usageMetadata":
//!   {"promptTokenCount":P,"candidatesTokenCount":C,"totalTokenCount":T,
//!   "promptTokensDetails":[...]},"modelVersion":MODEL,"responseId":ID}` — P, C and the content as
//!   in `content`; `candidateCount` candidates; `maxOutputTokens` below the chunk count cuts the
//!   answer (`MAX_TOKENS`); echo mode answers with the last user turn's text parts;
//!   `x-mock-tool-call: NAME` (a declared function) answers one `functionCall` part (`args` =
//!   `x-mock-tool-input` or `"mock"` per parameter) with `STOP`; `x-mock-finish-reason: R` sets
//!   the finish reason; `x-mock-cache-read-tokens: N` adds `cachedContentTokenCount: N` (part of
//!   P, as Gemini counts it) and `x-mock-thoughts-tokens: N` adds `thoughtsTokenCount: N` (in
//!   T = P + C + thoughts).
//! * `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`: `text/event-stream` of
//!   `data: <GenerateContentResponse>` events separated by `\r\n\r\n` (as Google's servers send
//!   them), one per chunk (pacing, TTFT, `x-mock-drop-after-chunks` as for chat), each with the
//!   usage so far (cumulative), the last with `finishReason` and the final usage; a function call
//!   comes whole in one event. Without `alt=sse` the same responses as one JSON array
//!   (`[{...},\r\n{...}]`), streamed piece by piece.
//! * `POST /v1beta/models/{model}:countTokens` → `{"totalTokens": P}`.
//! * `POST /v1beta/models/{model}:embedContent` (`{content: {parts: [{text}]}, taskType, title,
//!   outputDimensionality}`) → `{"embedding": {"values": [...]}}`;
//!   `:batchEmbedContents` (`{requests: [{model: "models/{model}", content, ...}]}`, each
//!   request's model must be the path's) → `{"embeddings": [{"values": [...]}]}`. 768 values
//!   (3072 for `gemini-embedding-*`) unless `outputDimensionality`.
//! * `GET /v1beta/models` (health checks) → `{"models": [{name: "models/...", version,
//!   displayName, inputTokenLimit, outputTokenLimit, supportedGenerationMethods, ...}]}`;
//!   `GET /v1beta/models/{model}` → one model.
//! * The API key: missing → 403 `PERMISSION_DENIED` "Method doesn't allow unregistered callers
//!   ..."; with `--gemini-api-key K`, another key → 400 `INVALID_ARGUMENT` "API key not valid.
//!   Please pass a valid API key." (reason `API_KEY_INVALID`), as Gemini answers a wrong key.
//!   Recorded as `auth: {"scheme": "api_key", "ok", "source": "header" | "query"}`.
//!
//! # Vertex AI (see `vertex` for its OAuth2 token endpoint)
//!
//! `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:` +
//! `generateContent`, `streamGenerateContent` (`?alt=sse` or JSON array), `countTokens`
//! (`{"totalTokens", "totalBillableCharacters"}`) — the Gemini wire format above, answers with a
//! `createTime` besides —, and `:predict` for text embedding models (`{"instances":
//! [{"content", "task_type", "title"}], "parameters": {"autoTruncate", "outputDimensionality"}}`
//! → `{"predictions": [{"embeddings": {"statistics": {"truncated": false, "token_count": N},
//! "values": [...]}}], "metadata": {"billableCharacterCount": N}}`). Also under `/v1beta1/`.
//! Authenticated with `Authorization: Bearer <token>`, see `vertex`.
//!
//! # Faults and errors
//!
//! * `x-mock-gemini-block: prompt`: 200 `{"promptFeedback": {"blockReason": "SAFETY",
//!   "safetyRatings": [...]}, "usageMetadata": {...}}` with no candidates (streamed: one event).
//!   `x-mock-gemini-block: response`: the candidate ends with `finishReason: SAFETY` and a
//!   blocked rating, without content (streamed: half the chunks, then that).
//! * Failures (`x-mock-status`, `/__mock/fail`, `--fail-status`) in Google's shape `{"error":
//!   {"code", "message", "status"}}`: 400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403
//!   `PERMISSION_DENIED`, 404 `NOT_FOUND`, 429 `RESOURCE_EXHAUSTED` (with a
//!   `google.rpc.RetryInfo` detail, `retryDelay` from `x-mock-retry-after` / `--retry-after`,
//!   default 1 s), 500 `INTERNAL`, 503 `UNAVAILABLE` ("The model is overloaded. ..."), 504
//!   `DEADLINE_EXCEEDED`; `--fail-message` sets the message; `--fail-code
//!   context_length_exceeded` (and, with `--max-input-tokens N`, a prompt over N) answers 400
//!   `INVALID_ARGUMENT` "The input token count (P) exceeds the maximum number of tokens allowed
//!   (N)." The rate limits answer 429 `RESOURCE_EXHAUSTED`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::{
    apply_latency, failure_status, hdr_string, hdr_u64, json_response, query_param,
    stream_response, MockBody, SseFrame,
};
use crate::content::{tool_input, Gen};
use crate::control::{self, Extra};
use crate::limits;
use crate::server::State;
use crate::tokens::Api;
use crate::vertex;

mod validate;
use validate::{field, unknown_key, unknown_name, validate_content, validate_generate};

/// Gemini's default context, for `--fail-code context_length_exceeded`.
const GEMINI_MAX_INPUT: u64 = 1_048_576;

/// Which of Google's surfaces a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    Gemini,
    Vertex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Generate,
    Stream,
    CountTokens,
    Embed,
    BatchEmbed,
    Predict,
    ListModels,
    GetModel,
    Unknown,
}

/// A request on one of Google's generation surfaces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    surface: Surface,
    model: String,
    op: Op,
}

/// The route of a Gemini or Vertex AI path (`None`: not one of theirs).
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    let op_of = |op: &str| match op {
        "generateContent" => Op::Generate,
        "streamGenerateContent" => Op::Stream,
        "countTokens" => Op::CountTokens,
        "embedContent" => Op::Embed,
        "batchEmbedContents" => Op::BatchEmbed,
        "predict" => Op::Predict,
        _ => Op::Unknown,
    };
    let post = |surface, rest: &str| {
        let (model, op) = rest.rsplit_once(':')?;
        let op = if *method == Method::POST {
            op_of(op)
        } else {
            Op::Unknown
        };
        Some(Route {
            surface,
            model: model.to_owned(),
            op,
        })
    };
    for version in ["/v1/", "/v1beta1/"] {
        if let Some(rest) = path
            .strip_prefix(version)
            .and_then(|r| r.strip_prefix("projects/"))
        {
            let segs: Vec<&str> = rest.splitn(6, '/').collect();
            if let [_, "locations", _, "publishers", "google", tail] = segs[..] {
                return tail
                    .strip_prefix("models/")
                    .and_then(|m| post(Surface::Vertex, m))
                    .or(Some(Route {
                        surface: Surface::Vertex,
                        model: String::new(),
                        op: Op::Unknown,
                    }));
            }
            return None;
        }
    }
    if let Some(rest) = path.strip_prefix("/v1beta/models") {
        let get = *method == Method::GET;
        return match rest {
            "" | "/" => Some(Route {
                surface: Surface::Gemini,
                model: String::new(),
                op: if get { Op::ListModels } else { Op::Unknown },
            }),
            r => {
                let r = r.strip_prefix('/')?;
                if r.contains(':') {
                    post(Surface::Gemini, r)
                } else {
                    Some(Route {
                        surface: Surface::Gemini,
                        model: r.to_owned(),
                        op: if get { Op::GetModel } else { Op::Unknown },
                    })
                }
            }
        };
    }
    // Gemini's v1: only `models/{model}:{method}` (`/v1/models` is OpenAI's list).
    path.strip_prefix("/v1/models/")
        .filter(|r| r.contains(':'))
        .and_then(|r| post(Surface::Gemini, r))
}

/// Google's status name for an HTTP status.
fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// `{"error": {"code", "message", "status", "details"?}}`.
pub(crate) fn google_error(
    state: &State,
    code: u16,
    message: &str,
    details: Option<Value>,
) -> Response<MockBody> {
    let mut error = json!({"code": code, "message": message, "status": status_name(code)});
    if let Some(d) = details {
        error["details"] = d;
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(state, status, json!({ "error": error }).to_string())
}

fn invalid(state: &State, message: &str) -> Response<MockBody> {
    google_error(state, 400, message, None)
}

fn too_long(state: &State, prompt: u64, max: u64) -> Response<MockBody> {
    invalid(
        state,
        &format!("The input token count ({prompt}) exceeds the maximum number of tokens allowed ({max})."),
    )
}

fn retry_info(secs: u64) -> Value {
    json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{secs}s")}])
}

/// A failure answer in Google's shape.
fn failure(
    state: &State,
    code: StatusCode,
    headers: &HeaderMap,
    prompt: u64,
) -> Response<MockBody> {
    let code = code.as_u16();
    if state.fail_code.as_deref() == Some("context_length_exceeded") && state.fail_message.is_none()
    {
        return too_long(state, prompt.max(GEMINI_MAX_INPUT + 1), GEMINI_MAX_INPUT);
    }
    let default = match code {
        400 => "Request contains an invalid argument.",
        401 => "Request had invalid authentication credentials.",
        403 => "The caller does not have permission",
        404 => "Requested entity was not found.",
        429 => "Resource has been exhausted (e.g. check quota).",
        500 => "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        503 => "The model is overloaded. Please try again later.",
        504 => "Deadline expired before operation could complete.",
        _ => "mock error",
    };
    let message = state.fail_message.as_deref().unwrap_or(default);
    let details = (code == 429).then(|| {
        retry_info(
            hdr_u64(headers, "x-mock-retry-after")
                .or(state.retry_after)
                .unwrap_or(1),
        )
    });
    google_error(state, code, message, details)
}

/// Check the Gemini API key; the verdict, and the refusal.
fn api_key(state: &State, parts: &Parts) -> (Value, Option<Response<MockBody>>) {
    let (key, source) = match hdr_string(&parts.headers, "x-goog-api-key") {
        Some(k) => (Some(k), "header"),
        None => (
            query_param(parts.uri.query(), "key").map(str::to_owned),
            "query",
        ),
    };
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        let refusal = google_error(
            state,
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            None,
        );
        return (
            json!({"scheme": "api_key", "ok": false, "source": null}),
            Some(refusal),
        );
    };
    if state.gemini_api_key.as_ref().is_some_and(|k| *k != key) {
        let details = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }]);
        let refusal = google_error(
            state,
            400,
            "API key not valid. Please pass a valid API key.",
            Some(details),
        );
        return (
            json!({"scheme": "api_key", "ok": false, "source": source}),
            Some(refusal),
        );
    }
    (
        json!({"scheme": "api_key", "ok": true, "source": source}),
        None,
    )
}

/// A Gemini / Vertex AI request: recorded (with the credentials' verdict), authenticated, rate
/// limited, delayed, failed on demand, validated, answered.
pub(crate) async fn handle(
    state: &State,
    parts: &Parts,
    body: Bytes,
    route: Route,
) -> Response<MockBody> {
    let headers = &parts.headers;
    let (verdict, refusal) = match route.surface {
        Surface::Gemini => api_key(state, parts),
        Surface::Vertex => vertex::check_bearer(state, headers, &route.model),
    };
    if state.record {
        let extra = Extra {
            model: (!route.model.is_empty()).then(|| route.model.clone()),
            stream: route.op == Op::Stream,
            auth: Some(verdict),
            inputs: None,
        };
        control::record_extra(state, parts, &body, extra);
    }
    if let Some(r) = refusal {
        return r;
    }
    if route.op == Op::Unknown {
        return google_error(
            state,
            404,
            &format!("Method not found: {} {}", parts.method, parts.uri.path()),
            None,
        );
    }
    let api = match route.op {
        Op::Generate | Op::Stream => Some(Api::Gemini),
        Op::Embed | Op::BatchEmbed | Op::Predict => Some(Api::AllText),
        _ => None,
    };
    if limits::rate_limit(state, headers, api, &body).is_err() {
        let secs = hdr_u64(headers, "x-mock-retry-after")
            .or(state.retry_after)
            .unwrap_or(1);
        return google_error(
            state,
            429,
            "Resource has been exhausted (e.g. check quota).",
            Some(retry_info(secs)),
        );
    }
    apply_latency(state, headers).await;
    let prompt = (body.len() as u64 / 4).max(1);
    if let Some(code) = failure_status(state, headers) {
        return failure(state, code, headers, prompt);
    }
    if route.op == Op::ListModels {
        let models: Vec<Value> = MODELS.iter().map(model_json).collect();
        return json_response(
            state,
            StatusCode::OK,
            json!({ "models": models }).to_string(),
        );
    }
    if route.op == Op::GetModel {
        return match MODELS.iter().find(|m| m.0 == route.model.trim_start_matches("models/")) {
            Some(m) => json_response(state, StatusCode::OK, model_json(m).to_string()),
            None => google_error(state, 404, &format!("models/{} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.", route.model), None),
        };
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return invalid(state, "Invalid JSON payload received. Expected an object."),
    };
    match route.op {
        Op::Generate | Op::Stream => {
            if let Err(m) = validate_generate(&req) {
                return invalid(state, &m);
            }
            if state.max_input_tokens > 0 && prompt > state.max_input_tokens {
                return too_long(state, prompt, state.max_input_tokens);
            }
            let sse = query_param(parts.uri.query(), "alt") == Some("sse");
            generate(
                state,
                headers,
                &route,
                &req,
                body.len(),
                route.op == Op::Stream,
                sse,
            )
        }
        Op::CountTokens => {
            let mut out = json!({"totalTokens": prompt});
            if route.surface == Surface::Vertex {
                out["totalBillableCharacters"] = json!(body.len());
            }
            json_response(state, StatusCode::OK, out.to_string())
        }
        Op::Embed | Op::BatchEmbed | Op::Predict => embeddings(state, &route, &req),
        _ => google_error(state, 404, "Method not found.", None),
    }
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

const CATEGORIES: [&str; 4] = [
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
];

fn ratings(blocked: bool) -> Value {
    CATEGORIES
        .iter()
        .map(|c| {
            if blocked && *c == "HARM_CATEGORY_HARASSMENT" {
                json!({"category": c, "probability": "HIGH", "blocked": true})
            } else {
                json!({"category": c, "probability": "NEGLIGIBLE"})
            }
        })
        .collect()
}

/// The last user turn's text parts (echo mode).
fn echo_text(req: &Value) -> Option<String> {
    let contents = req.get("contents")?.as_array()?;
    let last = contents.iter().rev().find(|c| {
        c.get("role")
            .and_then(Value::as_str)
            .is_none_or(|r| r == "user")
    })?;
    Some(
        last.get("parts")?
            .as_array()?
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
    )
}

/// An RFC 3339 UTC timestamp with microseconds (Vertex's `createTime`).
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let date = crate::sigv4::format_amz_date(secs);
    format!(
        "{}-{}-{}T{}:{}:{}.{:06}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15],
        now.subsec_micros()
    )
}

struct Answer<'a> {
    surface: Surface,
    model: &'a str,
    id: String,
    create_time: String,
    prompt: u64,
    cached: Option<u64>,
    thoughts: Option<u64>,
}

impl Answer<'_> {
    fn usage(&self, candidates: u64) -> Value {
        let thoughts = self.thoughts.unwrap_or(0);
        let mut u = json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": self.prompt + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        });
        if let Some(c) = self.cached {
            u["cachedContentTokenCount"] = json!(c);
        }
        if let Some(t) = self.thoughts {
            u["thoughtsTokenCount"] = json!(t);
        }
        u
    }

    /// A `GenerateContentResponse` around these candidates and usage.
    fn response(&self, candidates: Option<Value>, usage: Value) -> Value {
        let mut r = Map::new();
        if let Some(c) = candidates {
            r.insert("candidates".to_owned(), c);
        }
        r.insert("usageMetadata".to_owned(), usage);
        r.insert("modelVersion".to_owned(), json!(self.model));
        if self.surface == Surface::Vertex {
            r.insert("createTime".to_owned(), json!(self.create_time));
        }
        r.insert("responseId".to_owned(), json!(self.id));
        Value::Object(r)
    }
}

fn generate(
    state: &State,
    headers: &HeaderMap,
    route: &Route,
    req: &Value,
    body_len: usize,
    stream: bool,
    sse: bool,
) -> Response<MockBody> {
    let o = req.as_object().cloned().unwrap_or_default();
    let gen_config = field(&o, "generationConfig")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut g = Gen::new(state, headers, body_len);
    if state.echo.load(Ordering::Relaxed) {
        g.echo = echo_text(req);
    }
    let cut = g.cap(field(&gen_config, "maxOutputTokens").and_then(Value::as_u64));
    let n_candidates = field(&gen_config, "candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let call = hdr_string(headers, "x-mock-tool-call").and_then(|name| {
        let decl = field(&o, "tools")?
            .as_array()?
            .iter()
            .filter_map(|t| t.as_object().and_then(|t| field(t, "functionDeclarations")))
            .filter_map(Value::as_array)
            .flatten()
            .find(|d| d.get("name").and_then(Value::as_str) == Some(name.as_str()))?;
        let props = decl
            .pointer("/parameters/properties")
            .or_else(|| decl.pointer("/parametersJsonSchema/properties"));
        Some(json!({"functionCall": {"name": name, "args": tool_input(headers, props)}}))
    });
    let finish = hdr_string(headers, "x-mock-finish-reason").unwrap_or_else(|| {
        if cut && call.is_none() {
            "MAX_TOKENS"
        } else {
            "STOP"
        }
        .to_owned()
    });
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let a = Answer {
        surface: route.surface,
        model: route.model.trim_start_matches("models/"),
        id: format!("mockResp{n:08}"),
        create_time: rfc3339_now(),
        prompt: g.prompt_tokens,
        cached: hdr_u64(headers, "x-mock-cache-read-tokens"),
        thoughts: hdr_u64(headers, "x-mock-thoughts-tokens"),
    };
    let block = hdr_string(headers, "x-mock-gemini-block");
    let c = g.completion_tokens;
    let candidates = |parts: Option<Value>, finish: Option<&str>| -> Value {
        (0..n_candidates)
            .map(|i| {
                let mut cand = Map::new();
                if let Some(p) = &parts {
                    cand.insert("content".to_owned(), json!({"role": "model", "parts": p}));
                }
                if let Some(f) = finish {
                    cand.insert("finishReason".to_owned(), json!(f));
                    cand.insert("safetyRatings".to_owned(), ratings(f == "SAFETY"));
                }
                cand.insert("index".to_owned(), json!(i));
                Value::Object(cand)
            })
            .collect()
    };
    // The responses of the answer, in order (one for a whole answer).
    let mut responses: Vec<(Duration, Value)> = Vec::new();
    match (block.as_deref(), &call) {
        (Some("prompt"), _) => {
            let mut r = a.response(
                None,
                json!({"promptTokenCount": a.prompt, "totalTokenCount": a.prompt}),
            );
            r["promptFeedback"] = json!({"blockReason": "SAFETY", "safetyRatings": ratings(true)});
            responses.push((Duration::ZERO, r));
        }
        (_, Some(part)) => {
            responses.push((
                g.delay(0),
                a.response(
                    Some(candidates(Some(json!([part])), Some(&finish))),
                    a.usage(c),
                ),
            ));
        }
        (Some("response"), None) => {
            let half = if stream { g.sent() / 2 } else { 0 };
            for i in 0..half {
                let so_far = c * (i as u64 + 1) / g.sent().max(1) as u64;
                responses.push((
                    g.delay(i),
                    a.response(
                        Some(candidates(Some(json!([{"text": g.chunk(i)}])), None)),
                        a.usage(so_far),
                    ),
                ));
            }
            let so_far = c * half as u64 / g.sent().max(1) as u64;
            responses.push((
                g.delay(half),
                a.response(Some(candidates(None, Some("SAFETY"))), a.usage(so_far)),
            ));
        }
        _ if !stream => {
            responses.push((
                Duration::ZERO,
                a.response(
                    Some(candidates(
                        Some(json!([{"text": g.content()}])),
                        Some(&finish),
                    )),
                    a.usage(c),
                ),
            ));
        }
        _ => {
            let sent = g.sent();
            if sent == 0 {
                responses.push((
                    g.delay(0),
                    a.response(
                        Some(candidates(Some(json!([{"text": ""}])), Some(&finish))),
                        a.usage(c),
                    ),
                ));
            }
            for i in 0..sent {
                let last = i + 1 == sent;
                let so_far = if last {
                    c
                } else {
                    c * (i as u64 + 1) / sent as u64
                };
                let parts = Some(json!([{"text": g.chunk(i)}]));
                let f = last.then_some(finish.as_str());
                responses.push((
                    g.delay(i),
                    a.response(Some(candidates(parts, f)), a.usage(so_far)),
                ));
            }
        }
    }
    if !stream {
        let body = responses.pop().map(|(_, r)| r).unwrap_or(Value::Null);
        return json_response(state, StatusCode::OK, body.to_string());
    }
    let count = responses.len();
    let frames: Vec<SseFrame> = if sse {
        responses
            .into_iter()
            .map(|(d, r)| SseFrame::raw(d, format!("data: {r}\r\n\r\n")))
            .collect()
    } else {
        responses
            .into_iter()
            .enumerate()
            .map(|(i, (d, r))| {
                let mut s = String::from(if i == 0 { "[" } else { ",\r\n" });
                let _ = write!(s, "{r}");
                if i + 1 == count {
                    s.push(']');
                }
                SseFrame::raw(d, s)
            })
            .collect()
    };
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json; charset=UTF-8"
    };
    stream_response(state, frames, g.drop_index(0), content_type)
}

// ---------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------

fn default_dim(model: &str) -> usize {
    if model.contains("gemini-embedding") {
        3072
    } else {
        768
    }
}

fn values(i: usize, dim: usize) -> Vec<f64> {
    (0..dim)
        .map(|j| (((i * 31 + j * 7) % 200) as f64 - 100.0) / 100.0)
        .collect()
}

/// An `EmbedContentRequest`'s text and dimension (`Err`: the INVALID_ARGUMENT message).
fn embed_request(r: &Value, model: &str, at: &str) -> Result<(String, usize), String> {
    let o = r
        .as_object()
        .ok_or_else(|| format!("Invalid value at '{at}', expected an object"))?;
    if let Some(k) = unknown_key(
        o,
        &[
            "model",
            "content",
            "taskType",
            "title",
            "outputDimensionality",
        ],
    ) {
        return Err(unknown_name(k, None));
    }
    let Some(content) = field(o, "content") else {
        return Err(format!("* {at}.content: content is not specified\n"));
    };
    validate_content(content, &format!("{at}.content"))?;
    let text: String = content["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let dim = field(o, "outputDimensionality")
        .and_then(Value::as_u64)
        .map_or_else(|| default_dim(model), |d| d as usize);
    Ok((text, dim))
}

fn embeddings(state: &State, route: &Route, req: &Value) -> Response<MockBody> {
    let model = route.model.trim_start_matches("models/");
    match route.op {
        Op::Embed => match embed_request(req, model, "EmbedContentRequest") {
            Ok((_, dim)) => json_response(
                state,
                StatusCode::OK,
                json!({"embedding": {"values": values(0, dim)}}).to_string(),
            ),
            Err(m) => invalid(state, &m),
        },
        Op::BatchEmbed => {
            let Some(requests) = req
                .get("requests")
                .and_then(Value::as_array)
                .filter(|r| !r.is_empty())
            else {
                return invalid(
                    state,
                    "* BatchEmbedContentsRequest.requests: requests is not specified\n",
                );
            };
            let mut out = Vec::with_capacity(requests.len());
            for (i, r) in requests.iter().enumerate() {
                let named = r.get("model").and_then(Value::as_str).unwrap_or("");
                if named != format!("models/{model}") {
                    return invalid(state, &format!("* BatchEmbedContentsRequest.requests[{i}].model: the model of every request must be the model of the URL, models/{model}; got '{named}'.\n"));
                }
                match embed_request(
                    r,
                    model,
                    &format!("BatchEmbedContentsRequest.requests[{i}]"),
                ) {
                    Ok((_, dim)) => out.push(json!({"values": values(i, dim)})),
                    Err(m) => return invalid(state, &m),
                }
            }
            json_response(
                state,
                StatusCode::OK,
                json!({ "embeddings": out }).to_string(),
            )
        }
        _ => {
            let Some(instances) = req
                .get("instances")
                .and_then(Value::as_array)
                .filter(|i| !i.is_empty())
            else {
                return invalid(state, "instances must be a non-empty list");
            };
            let params = req.get("parameters").and_then(Value::as_object);
            let dim = params
                .and_then(|p| field(p, "outputDimensionality"))
                .and_then(Value::as_u64)
                .map_or_else(|| default_dim(model), |d| d as usize);
            let mut predictions = Vec::new();
            let mut chars = 0;
            for (i, inst) in instances.iter().enumerate() {
                let Some(text) = inst.get("content").and_then(Value::as_str) else {
                    return invalid(state, &format!("instances[{i}].content is required"));
                };
                chars += text.chars().filter(|c| !c.is_whitespace()).count();
                predictions.push(json!({"embeddings": {
                    "statistics": {"truncated": false, "token_count": crate::tokens::count(text)},
                    "values": values(i, dim),
                }}));
            }
            json_response(
                state,
                StatusCode::OK,
                json!({"predictions": predictions, "metadata": {"billableCharacterCount": chars}})
                    .to_string(),
            )
        }
    }
}

/// `(name, display name, input limit, output limit, methods)`.
type ModelRow = (
    &'static str,
    &'static str,
    u64,
    u64,
    &'static [&'static str],
);

const GENERATE: &[&str] = &["generateContent", "countTokens", "streamGenerateContent"];
const MODELS: &[ModelRow] = &[
    (
        "gemini-2.5-flash",
        "Gemini 2.5 Flash",
        1_048_576,
        65_536,
        GENERATE,
    ),
    (
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        1_048_576,
        65_536,
        GENERATE,
    ),
    (
        "gemini-2.0-flash",
        "Gemini 2.0 Flash",
        1_048_576,
        8_192,
        GENERATE,
    ),
    (
        "text-embedding-004",
        "Text Embedding 004",
        2_048,
        1,
        &["embedContent"],
    ),
    (
        "gemini-embedding-001",
        "Gemini Embedding 001",
        2_048,
        1,
        &["embedContent", "countTextTokens", "countTokens"],
    ),
];

fn model_json(m: &ModelRow) -> Value {
    let (name, display, input, output, methods) = *m;
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": display,
        "description": format!("{display} (mock)"),
        "inputTokenLimit": input,
        "outputTokenLimit": output,
        "supportedGenerationMethods": methods,
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
    })
}

#[cfg(test)]
mod tests;
