//! A text-generation server: Hugging Face Text Generation Inference's native API (`/generate`,
//! `/generate_stream`, `/health`, `/info`), which takes one prompt (`inputs`) the client has
//! rendered from its chat messages with the model's template.
//!
//! Written from TGI's OpenAPI document (`docs/openapi.json` of text-generation-inference: the
//! `GenerateRequest`, `GenerateParameters`, `GenerateResponse`, `Details`, `StreamResponse`,
//! `StreamDetails`, `Token`, `PrefillToken`, `Info` and `ErrorResponse` schemas), its streaming
//! guide ("Streaming" in the TGI docs: `data:`-prefixed server-sent events), and its router's
//! documented behaviour (validation errors are 422 `{"error": "Input validation error: ...",
//! "error_type": "validation"}`; `details` is off unless asked for).
//!
//! # Endpoints
//!
//! * `POST /generate`: `{"inputs": "...", "parameters": {max_new_tokens, temperature, top_p,
//!   top_k, stop, repetition_penalty, details, return_full_text, seed, do_sample,
//!   decoder_input_details, truncate, typical_p, best_of, watermark, ...}}`. Validated as TGI's
//!   router does (422 `validation`): `inputs` not empty; `temperature`, `repetition_penalty`,
//!   `top_k`, `max_new_tokens` strictly positive; `top_p` and `typical_p` in (0, 1]; at most 4
//!   `stop` sequences; with `--max-input-tokens N`, at most N input tokens ("`inputs` must have
//!   less than N tokens. Given: M"). A body that is not JSON is 400, JSON without `inputs` 422
//!   (text, as TGI's web framework answers them).
//!
//!   Answer: `{"generated_text": "..."}` — plus, with `details` (or `decoder_input_details`)
//!   true, `"details": {"finish_reason": "length" | "eos_token" | "stop_sequence",
//!   "generated_tokens": N, "seed": S | null, "prefill": [...], "tokens": [{id, text, logprob,
//!   special}]}`. The generated tokens are the content chunks (`content`; echo mode: the whole
//!   `inputs`), then an end-of-sequence token (`{"id": 2, "text": "</s>", "special": true}`, not
//!   part of `generated_text`); `max_new_tokens` below that count cuts the answer (`length`);
//!   `x-mock-finish-reason: stop_sequence` ends it with the first `stop` sequence instead (part of
//!   `generated_text`, as TGI keeps it) and `length` with neither. `return_full_text` prepends
//!   `inputs`. `seed` is the request's, or a fixed one when `do_sample` is true, else null.
//!   `prefill` (only with `decoder_input_details`) lists the input's tokens. Headers as TGI sends
//!   them: `x-compute-type`, `x-compute-time`, `x-compute-characters`, `x-total-time`,
//!   `x-validation-time`, `x-queue-time`, `x-inference-time`, `x-time-per-token`,
//!   `x-prompt-tokens`, `x-generated-tokens`.
//! * `POST /generate_stream`: the same request; `text/event-stream` of `data:{"index": i,
//!   "token": {id, text, logprob, special}, "generated_text": null, "details": null}` events
//!   (`data:` without a space, events separated by a blank line, as TGI sends them), one per
//!   token, paced as chat chunks; the last carries `generated_text` and, with `details` true,
//!   `{"finish_reason", "generated_tokens", "seed", "input_length"}`. Validation errors come as
//!   a `200` stream of one event `data:{"error": "Input validation error: ...", "error_type":
//!   "validation"}`, as TGI reports them once its stream has begun; `best_of` != 1 and
//!   `decoder_input_details` are refused that way. `x-mock-tgi-stream-error: K`: after K tokens an
//!   event `{"error": "Request failed during generation: ...", "error_type": "generation"}` ends
//!   the stream. `x-mock-drop-after-chunks` as for chat.
//! * `POST /` (TGI's compatibility route): `{"inputs", "parameters", "stream": bool}` —
//!   `/generate_stream`'s answer when streaming, else `/generate`'s as a one-element array.
//! * `GET /health`: 200, empty (503 `{"error": "unhealthy", "error_type": "healthcheck"}` while a
//!   global failure status is set). `GET /info`: `{"model_id": --tgi-model-id, "max_input_tokens",
//!   "max_total_tokens", "max_concurrent_requests", ..., "router": "text-generation-router",
//!   "version"}`.
//! * Prompt tokens: the input's o200k_base tokens (`input_length`, `x-prompt-tokens`, the
//!   `prefill`); the request is recorded with `inputs` whole (`GET /__mock/requests`), for tests
//!   of the client's prompt rendering.
//!
//! # Errors
//!
//! `{"error": "...", "error_type": "..."}`: the failure controls (`x-mock-status`,
//! `/__mock/fail`, `--fail-status`) answer 422 `validation` ("Input validation error"), 424
//! `generation` ("Request failed during generation"), 429 `overloaded` ("Model is overloaded"),
//! 500 `incomplete_generation` ("Incomplete generation"), others `mock`; `--fail-message` sets
//! the message; `--fail-code context_length_exceeded` answers 422 `validation` "Input validation
//! error: `inputs` tokens + `max_new_tokens` must be <= ...". The rate limits answer 429
//! `overloaded`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{
    apply_latency, failure_status, hdr_string, hdr_u64, json_response, stream_response, MockBody,
    SseFrame,
};
use crate::content::Gen;
use crate::control::{self, Extra};
use crate::limits;
use crate::server::State;
use crate::tokens::{self, Api};

/// The end-of-sequence token the mock ends a generation with.
const EOS: (u32, &str) = (2, "</s>");
/// The seed reported for a sampled generation that named none.
const SAMPLED_SEED: u64 = 16_180_339;
/// `max_input_tokens` reported by `/info` when `--max-input-tokens` is not set.
const DEFAULT_MAX_INPUT: u64 = 3072;

const PARAMETERS: &[&str] = &[
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "repetition_penalty",
    "frequency_penalty",
    "details",
    "decoder_input_details",
    "return_full_text",
    "seed",
    "do_sample",
    "truncate",
    "typical_p",
    "best_of",
    "watermark",
    "top_n_tokens",
    "grammar",
    "adapter_id",
];

/// Whether a path is the text-generation server's.
pub(crate) fn is_path(method: &Method, path: &str) -> bool {
    matches!(path, "/generate" | "/generate_stream" | "/health" | "/info")
        || (path == "/" && *method == Method::POST)
}

fn tgi_error(state: &State, status: u16, error: &str, error_type: &str) -> Response<MockBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        state,
        status,
        json!({"error": error, "error_type": error_type}).to_string(),
    )
}

fn text(state: &State, status: StatusCode, body: String) -> Response<MockBody> {
    let mut resp = json_response(state, status, body);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A failure answer in TGI's shape.
fn failure(state: &State, code: StatusCode, input_length: u64) -> Response<MockBody> {
    let code = code.as_u16();
    if state.fail_code.as_deref() == Some("context_length_exceeded") && state.fail_message.is_none()
    {
        let max_total = max_input(state) + 1024;
        return tgi_error(
            state,
            422,
            &format!("Input validation error: `inputs` tokens + `max_new_tokens` must be <= {max_total}. Given: {} `inputs` tokens and 1024 `max_new_tokens`", input_length.max(max_total)),
            "validation",
        );
    }
    let (message, typ) = match code {
        422 => ("Input validation error", "validation"),
        424 => ("Request failed during generation", "generation"),
        429 => ("Model is overloaded", "overloaded"),
        500 => ("Incomplete generation", "incomplete_generation"),
        503 => ("unhealthy", "healthcheck"),
        _ => ("mock error", "mock"),
    };
    tgi_error(
        state,
        code,
        state.fail_message.as_deref().unwrap_or(message),
        typ,
    )
}

fn max_input(state: &State) -> u64 {
    if state.max_input_tokens > 0 {
        state.max_input_tokens
    } else {
        DEFAULT_MAX_INPUT
    }
}

/// Validate a generate request as TGI's router does; `Err` is the 422 `validation` message.
pub(crate) fn validate(
    req: &Value,
    input_length: u64,
    max_input_tokens: u64,
    stream: bool,
) -> Result<(), String> {
    let inputs = req.get("inputs").and_then(Value::as_str).unwrap_or("");
    let e = |m: String| Err(format!("Input validation error: {m}"));
    if inputs.is_empty() {
        return e("`inputs` cannot be empty".to_owned());
    }
    let empty = serde_json::Map::new();
    let p = match req.get("parameters") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return e("`parameters` must be an object".to_owned()),
    };
    if let Some(k) = p.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return e(format!("unknown parameter `{k}`"));
    }
    let num = |k: &str| p.get(k).filter(|v| !v.is_null()).map(|v| v.as_f64());
    for k in ["temperature", "repetition_penalty"] {
        if let Some(v) = num(k) {
            if v.is_none_or(|v| v <= 0.0) {
                return e(format!("`{k}` must be strictly positive"));
            }
        }
    }
    for k in ["top_p", "typical_p"] {
        if let Some(v) = num(k) {
            if v.is_none_or(|v| v <= 0.0 || v > 1.0) {
                return e(format!("`{k}` must be > 0.0 and < 1.0"));
            }
        }
    }
    for k in ["top_k", "max_new_tokens"] {
        if let Some(v) = num(k) {
            if v.is_none_or(|v| v < 1.0) {
                return e(format!("`{k}` must be strictly positive"));
            }
        }
    }
    if let Some(stop) = p.get("stop").filter(|v| !v.is_null()) {
        let n = stop.as_array().map_or(usize::MAX, Vec::len);
        if n > 4 {
            return e(format!(
                "`stop` supports up to 4 stop sequences. Given: {n}"
            ));
        }
    }
    if stream
        && p.get("best_of")
            .and_then(Value::as_u64)
            .is_some_and(|b| b != 1)
    {
        return e("`best_of` != 1 is not supported when streaming tokens".to_owned());
    }
    if stream && p.get("decoder_input_details").and_then(Value::as_bool) == Some(true) {
        return e(
            "`decoder_input_details` == true is not supported when streaming tokens".to_owned(),
        );
    }
    if max_input_tokens > 0 && input_length > max_input_tokens {
        return e(format!(
            "`inputs` must have less than {max_input_tokens} tokens. Given: {input_length}"
        ));
    }
    Ok(())
}

/// One generated token.
struct Token {
    id: u32,
    text: String,
    special: bool,
}

impl Token {
    fn json(&self, i: usize) -> Value {
        json!({"id": self.id, "text": self.text, "logprob": -0.25 - (i % 4) as f64 * 0.125, "special": self.special})
    }
}

/// A `/generate` or `/generate_stream` request.
pub(crate) async fn handle(state: &State, parts: &Parts, body: Bytes) -> Response<MockBody> {
    let path = parts.uri.path();
    let headers = &parts.headers;
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let inputs = parsed
        .as_ref()
        .and_then(|v| v.get("inputs"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let stream = path == "/generate_stream"
        || (path == "/"
            && parsed
                .as_ref()
                .and_then(|v| v.get("stream"))
                .and_then(Value::as_bool)
                == Some(true));
    if state.record {
        let extra = Extra {
            model: None,
            stream,
            auth: None,
            inputs: inputs.clone(),
        };
        control::record_extra(state, parts, &body, extra);
    }
    match (path, &parts.method) {
        ("/health", &Method::GET) => {
            apply_latency(state, headers).await;
            if failure_status(state, headers).is_some() {
                return tgi_error(state, 503, "unhealthy", "healthcheck");
            }
            return json_response(state, StatusCode::OK, "");
        }
        ("/info", &Method::GET) => {
            let max_in = max_input(state);
            let info = json!({
                "model_id": state.tgi_model_id,
                "model_sha": null,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": max_in,
                "max_total_tokens": max_in + 1024,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "2.4.1",
                "sha": null,
                "docker_label": null,
            });
            return json_response(state, StatusCode::OK, info.to_string());
        }
        ("/generate" | "/generate_stream" | "/", &Method::POST) => {}
        _ => return json_response(state, StatusCode::METHOD_NOT_ALLOWED, ""),
    }
    let Some(req) = parsed else {
        return text(
            state,
            StatusCode::BAD_REQUEST,
            "Failed to parse the request body as JSON".to_owned(),
        );
    };
    let Some(inputs) = inputs else {
        return text(
            state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize the JSON body into the target type: missing field `inputs`"
                .to_owned(),
        );
    };
    if limits::rate_limit(state, headers, Some(Api::Tgi), &body).is_err() {
        return tgi_error(state, 429, "Model is overloaded", "overloaded");
    }
    let latency = apply_latency(state, headers).await;
    let input_length = tokens::count(&inputs);
    if let Some(code) = failure_status(state, headers) {
        return failure(state, code, input_length);
    }
    if let Err(m) = validate(&req, input_length, state.max_input_tokens, stream) {
        if stream {
            let event = json!({"error": m, "error_type": "validation"});
            let frames = vec![SseFrame::raw(
                std::time::Duration::ZERO,
                format!("data:{event}\n\n"),
            )];
            return stream_response(state, frames, None, "text/event-stream");
        }
        return tgi_error(state, 422, &m, "validation");
    }
    let r = Generate {
        req: &req,
        inputs: &inputs,
        input_length,
        stream,
        array: path == "/",
        latency,
    };
    generate(state, headers, &r)
}

/// A validated generate request.
struct Generate<'a> {
    req: &'a Value,
    inputs: &'a str,
    input_length: u64,
    stream: bool,
    /// The compatibility route's non-stream answer: a one-element array.
    array: bool,
    /// The latency applied, ms.
    latency: u64,
}

fn generate(state: &State, headers: &HeaderMap, r: &Generate<'_>) -> Response<MockBody> {
    let (inputs, input_length, stream, latency) = (r.inputs, r.input_length, r.stream, r.latency);
    let p = r.req.get("parameters").cloned().unwrap_or(Value::Null);
    let flag = |k: &str| p.get(k).and_then(Value::as_bool) == Some(true);
    let mut g = Gen::new(state, headers, inputs.len());
    if state.echo.load(Ordering::Relaxed) {
        g.echo = Some(inputs.to_owned());
    }
    let mut tokens: Vec<Token> = (0..g.chunks)
        .map(|i| Token {
            id: 1000 + i as u32,
            text: g.chunk(i),
            special: false,
        })
        .collect();
    let stop_seq = p
        .get("stop")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .and_then(Value::as_str)
        .unwrap_or("\n")
        .to_owned();
    let mut finish =
        hdr_string(headers, "x-mock-finish-reason").unwrap_or_else(|| "eos_token".to_owned());
    match finish.as_str() {
        "eos_token" => tokens.push(Token {
            id: EOS.0,
            text: EOS.1.to_owned(),
            special: true,
        }),
        "stop_sequence" => tokens.push(Token {
            id: 999,
            text: stop_seq,
            special: false,
        }),
        _ => {}
    }
    if let Some(max) = p.get("max_new_tokens").and_then(Value::as_u64) {
        if (max as usize) < tokens.len() {
            tokens.truncate(max as usize);
            finish = "length".to_owned();
        }
    }
    let mut generated: String = tokens
        .iter()
        .filter(|t| !t.special)
        .map(|t| t.text.as_str())
        .collect();
    if flag("return_full_text") {
        generated = format!("{inputs}{generated}");
    }
    let seed = p
        .get("seed")
        .and_then(Value::as_u64)
        .or_else(|| flag("do_sample").then_some(SAMPLED_SEED));
    let n = tokens.len();
    if stream {
        let mut frames = Vec::with_capacity(n.max(1));
        let error_after = hdr_u64(headers, "x-mock-tgi-stream-error").map(|k| k as usize);
        for (i, t) in tokens.iter().enumerate() {
            if error_after == Some(i) {
                let ev = json!({"error": "Request failed during generation: Server error: CUDA out of memory.", "error_type": "generation"});
                frames.push(SseFrame::raw(g.delay(i), format!("data:{ev}\n\n")));
                return stream_response(state, frames, g.drop_index(0), "text/event-stream");
            }
            let last = i + 1 == n;
            let details = (last && flag("details")).then(|| {
                json!({"finish_reason": finish, "generated_tokens": n, "seed": seed, "input_length": input_length})
            });
            let ev = json!({
                "index": i + 1,
                "token": t.json(i),
                "generated_text": if last { Value::String(generated.clone()) } else { Value::Null },
                "details": details,
            });
            frames.push(SseFrame::raw(g.delay(i), format!("data:{ev}\n\n")));
        }
        let mut resp = stream_response(state, frames, g.drop_index(0), "text/event-stream");
        let h = resp.headers_mut();
        h.insert("x-compute-type", HeaderValue::from_static("gpu+optimized"));
        h.insert(
            "x-compute-characters",
            HeaderValue::from(inputs.chars().count()),
        );
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        return resp;
    }
    let mut out = json!({"generated_text": generated});
    if flag("details") || flag("decoder_input_details") {
        let prefill: Vec<Value> = if flag("decoder_input_details") {
            tokens::tokenize(inputs)
                .into_iter()
                .enumerate()
                .map(|(i, (id, text))| {
                    let logprob = if i == 0 { Value::Null } else { json!(-1.5) };
                    json!({"id": id, "text": text, "logprob": logprob})
                })
                .collect()
        } else {
            Vec::new()
        };
        out["details"] = json!({
            "finish_reason": finish,
            "generated_tokens": n,
            "seed": seed,
            "prefill": prefill,
            "tokens": tokens.iter().enumerate().map(|(i, t)| t.json(i)).collect::<Vec<_>>(),
        });
    }
    let body = if r.array { json!([out]) } else { out };
    let mut resp = json_response(state, StatusCode::OK, body.to_string());
    let h = resp.headers_mut();
    let per_token = latency / (n.max(1) as u64);
    for (name, v) in [
        ("x-compute-time", latency),
        ("x-compute-characters", inputs.chars().count() as u64),
        ("x-total-time", latency),
        ("x-validation-time", 0),
        ("x-queue-time", 0),
        ("x-inference-time", latency),
        ("x-time-per-token", per_token),
        ("x-prompt-tokens", input_length),
        ("x-generated-tokens", n as u64),
    ] {
        h.insert(name, HeaderValue::from(v));
    }
    h.insert("x-compute-type", HeaderValue::from_static("gpu+optimized"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::collect;
    use crate::server::test_state;

    fn run(
        state: &State,
        h: &[(&'static str, &'static str)],
        req: Value,
        stream: bool,
    ) -> (u16, HeaderMap, Vec<u8>) {
        let mut headers = HeaderMap::new();
        for (k, v) in h {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        let inputs = req["inputs"].as_str().unwrap().to_owned();
        let n = tokens::count(&inputs);
        let r = Generate {
            req: &req,
            inputs: &inputs,
            input_length: n,
            stream,
            array: false,
            latency: 4,
        };
        collect(generate(state, &headers, &r))
    }

    fn events(body: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.ends_with("\n\n"));
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data:").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn validation() {
        let ok = |v: Value| validate(&v, 3, 0, false);
        assert_eq!(ok(json!({"inputs": "hi"})), Ok(()));
        assert_eq!(
            ok(
                json!({"inputs": "hi", "parameters": {"max_new_tokens": 5, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop": ["\n"], "repetition_penalty": 1.1, "details": true, "return_full_text": false, "seed": 42, "do_sample": true}})
            ),
            Ok(())
        );
        let bad = |v: Value, needle: &str| {
            let e = validate(&v, 3, 0, true).unwrap_err();
            assert!(
                e.starts_with("Input validation error: ") && e.contains(needle),
                "{e}"
            );
        };
        bad(json!({"inputs": ""}), "`inputs` cannot be empty");
        bad(
            json!({"inputs": "x", "parameters": {"temperature": 0}}),
            "`temperature` must be strictly positive",
        );
        bad(
            json!({"inputs": "x", "parameters": {"top_p": 1.5}}),
            "`top_p` must be > 0.0 and < 1.0",
        );
        bad(
            json!({"inputs": "x", "parameters": {"max_new_tokens": 0}}),
            "`max_new_tokens` must be strictly positive",
        );
        bad(
            json!({"inputs": "x", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}),
            "up to 4 stop sequences. Given: 5",
        );
        bad(
            json!({"inputs": "x", "parameters": {"max_tokens": 5}}),
            "unknown parameter `max_tokens`",
        );
        bad(
            json!({"inputs": "x", "parameters": {"decoder_input_details": true}}),
            "not supported when streaming",
        );
        let e = validate(&json!({"inputs": "x"}), 50, 10, false).unwrap_err();
        assert_eq!(
            e,
            "Input validation error: `inputs` must have less than 10 tokens. Given: 50"
        );
    }

    #[test]
    fn generate_with_details() {
        let state = test_state(&["--chunks", "3"]);
        let (s, h, body) = run(
            &state,
            &[],
            json!({"inputs": "Hello world", "parameters": {"details": true}}),
            false,
        );
        assert_eq!(s, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["generated_text"], "tok0 tok1 tok2 ");
        let d = &v["details"];
        assert_eq!(d["finish_reason"], "eos_token");
        assert_eq!(d["generated_tokens"], 4);
        assert_eq!(d["seed"], Value::Null);
        assert_eq!(d["prefill"], json!([]));
        assert_eq!(
            d["tokens"][3],
            json!({"id": 2, "text": "</s>", "logprob": -0.625, "special": true})
        );
        assert_eq!(h["x-prompt-tokens"], "2");
        assert_eq!(h["x-generated-tokens"], "4");
        // Without details: the text alone.
        let (_, _, body) = run(&state, &[], json!({"inputs": "Hello world"}), false);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"generated_text": "tok0 tok1 tok2 "})
        );
        // max_new_tokens cuts; return_full_text prepends; decoder_input_details lists the prefill.
        let (_, _, body) = run(
            &state,
            &[],
            json!({"inputs": "Hello world", "parameters": {"max_new_tokens": 2, "return_full_text": true, "decoder_input_details": true, "do_sample": true}}),
            false,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["generated_text"], "Hello worldtok0 tok1 ");
        assert_eq!(v["details"]["finish_reason"], "length");
        assert_eq!(v["details"]["generated_tokens"], 2);
        assert_eq!(v["details"]["seed"], SAMPLED_SEED);
        let prefill = v["details"]["prefill"].as_array().unwrap();
        assert_eq!(prefill.len(), 2);
        assert_eq!(prefill[0]["logprob"], Value::Null);
        let text: String = prefill
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Hello world");
        // A stop sequence ends the text.
        let (_, _, body) = run(
            &state,
            &[("x-mock-finish-reason", "stop_sequence")],
            json!({"inputs": "x", "parameters": {"stop": ["###"], "details": true}}),
            false,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["generated_text"], "tok0 tok1 tok2 ###");
        assert_eq!(v["details"]["finish_reason"], "stop_sequence");
    }

    #[test]
    fn stream_events() {
        let state = test_state(&["--chunks", "2"]);
        let (s, h, body) = run(
            &state,
            &[],
            json!({"inputs": "Hello world", "parameters": {"details": true, "seed": 7}}),
            true,
        );
        assert_eq!(s, 200);
        assert_eq!(h["content-type"], "text/event-stream");
        let ev = events(&body);
        assert_eq!(ev.len(), 3);
        assert_eq!(
            ev[0],
            json!({"index": 1, "token": {"id": 1000, "text": "tok0 ", "logprob": -0.25, "special": false}, "generated_text": null, "details": null})
        );
        assert_eq!(ev[2]["token"]["special"], true);
        assert_eq!(ev[2]["generated_text"], "tok0 tok1 ");
        assert_eq!(
            ev[2]["details"],
            json!({"finish_reason": "eos_token", "generated_tokens": 3, "seed": 7, "input_length": 2})
        );
        let (_, _, body) = run(&state, &[], json!({"inputs": "x"}), true);
        assert_eq!(events(&body)[2]["details"], Value::Null);
        let (_, _, body) = run(
            &state,
            &[("x-mock-tgi-stream-error", "1")],
            json!({"inputs": "x"}),
            true,
        );
        let ev = events(&body);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1]["error_type"], "generation");
    }

    #[test]
    fn failures() {
        let state = test_state(&[]);
        for (code, typ) in [
            (422, "validation"),
            (424, "generation"),
            (429, "overloaded"),
            (500, "incomplete_generation"),
        ] {
            let (s, _, body) = collect(failure(&state, StatusCode::from_u16(code).unwrap(), 5));
            assert_eq!(s, code);
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap()["error_type"],
                typ
            );
        }
        let state = test_state(&["--fail-code", "context_length_exceeded"]);
        let (s, _, body) = collect(failure(&state, StatusCode::UNPROCESSABLE_ENTITY, 5));
        assert_eq!(s, 422);
        assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("`inputs` tokens + `max_new_tokens` must be <= 4096"));
    }
}
