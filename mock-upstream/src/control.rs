//! The test-control endpoints under `/__mock/` and what they report: the recorded requests, the
//! counters, the admissions of the rate limiter.
//!
//! # Test-control endpoints (never counted, recorded, delayed or failed)
//!
//! * `GET /__mock/requests`: JSON array of the last 10,000 recorded requests:
//!   `{"method","path","query","headers":{name: value (repeats joined with ", ")},
//!   "body_len","model","stream","body_prefix"}` (`body_prefix` = first 4,096
//!   body bytes, lossy UTF-8; `model` = the body's, or the path's for Bedrock, Gemini and Vertex
//!   AI). Dialects that check credentials add `"auth"`, their verdict (Bedrock's SigV4, Gemini's
//!   API key, Vertex's bearer token, the token endpoint's JWT; see those modules); a
//!   text-generation server's requests add `"inputs"`, the prompt whole.
//! * `GET /__mock/stats`: `{"requests","in_flight","by_path":{path: count},
//!   "rate_limited","admitted","admitted_tokens","token_grants","files_uploaded",
//!   "batches_created","batches_cancelled","batch_polls"}`. `token_grants` counts the access
//!   tokens issued by the OAuth2 token endpoint and the metadata server (see `vertex`). `in_flight` counts requests
//!   whose response body has not finished yet (so open streams count).
//!   `rate_limited` counts 429s from the rate limits; `admitted` and
//!   `admitted_tokens` count the requests that passed them and the sum of their
//!   token estimates (both only while a limit is set).
//! * `GET /__mock/admissions`: JSON array (oldest first, the last 100,000) of
//!   the requests admitted while a limit was set:
//!   `{"t_ms","priority","seq","tokens"}` — `t_ms` = ms since the mock started
//!   at the admission check, `priority` / `seq` = the `x-llmproxy-priority` /
//!   `x-test-seq` request header as a string (`null` when absent), `tokens` =
//!   the token estimate charged.
//! * `POST /__mock/reset`: clear recorded requests, admissions and counters,
//!   and every file, batch and batch setting (does not change the fail
//!   status, latency, limits, bucket levels or echo mode).
//! * `POST /__mock/batch`, `GET /__mock/batch`, `GET /__mock/batches`: the simulated Batch API's
//!   settings and state (see `batch`).
//! * `POST /__mock/echo?on=true|false`: echo mode (see `--echo`).
//! * `POST /__mock/fail?status=CODE`: every subsequent non-`/__mock` request
//!   answers CODE (>= 400) with an OpenAI error body; `status=0` restores normal
//!   behaviour.
//! * `POST /__mock/latency?ms=N`: set the default latency at runtime.
//! * `POST /__mock/limits?rpm=N&tpm=N&mode=bucket|sliding`: set the rate limits (0 =
//!   unlimited) and how they are enforced (see `limits`; a parameter left out keeps its value),
//!   refilling both buckets / emptying both windows; answers
//!   `{"ok":true,"rpm":N,"tpm":N,"mode":"bucket"|"sliding"}`, 400 on a malformed value.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::batch;
use crate::body::{error_response, fail_code, json_response, query_param, MockBody};
use crate::limits;
use crate::openai::ReqBody;
use crate::server::State;
use crate::LimitMode;

/// `GET /__mock/requests` keeps the last this many.
const MAX_RECORDS: usize = 10_000;
/// `by_path` counts this many distinct unknown paths, the rest as `<other>`.
const MAX_OTHER_PATHS: usize = 10_000;
/// Bytes of each recorded body kept in `body_prefix`.
const BODY_PREFIX_LEN: usize = 4096;

/// Paths counted without a lock (an index into `State::path_counts`).
pub(crate) const KNOWN_PATHS: [&str; 10] = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/completions",
    "/v1/embeddings",
    "/embeddings",
    "/v1/responses",
    "/responses",
    "/v1/models",
    "/models",
];

/// One request as `GET /__mock/requests` shows it.
#[derive(Serialize)]
pub(crate) struct Recorded {
    method: String,
    path: String,
    query: Option<String>,
    headers: BTreeMap<String, String>,
    body_len: usize,
    model: Value,
    stream: bool,
    body_prefix: String,
    /// The dialect's verdict on the request's credentials (Bedrock's SigV4, Vertex's bearer
    /// token, the OAuth token endpoint's JWT).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Value>,
    /// A text-generation server's `inputs`, whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<String>,
}

/// What a dialect that reads its own requests adds to their recording.
#[derive(Default)]
pub(crate) struct Extra {
    /// The model (from the path, for the dialects that name it there).
    pub(crate) model: Option<String>,
    pub(crate) stream: bool,
    pub(crate) auth: Option<Value>,
    pub(crate) inputs: Option<String>,
}

/// A `/__mock/*` request.
pub(crate) fn control(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Response<MockBody> {
    match path {
        "/__mock/requests" => {
            let body = match state.records.lock() {
                Ok(r) => serde_json::to_string(&*r).unwrap_or_else(|_| "[]".to_owned()),
                Err(_) => "[]".to_owned(),
            };
            json_response(state, StatusCode::OK, body)
        }
        "/__mock/stats" => {
            let mut by_path = serde_json::Map::new();
            for (i, p) in KNOWN_PATHS.iter().enumerate() {
                let c = state.path_counts[i].load(Ordering::Relaxed);
                if c > 0 {
                    by_path.insert((*p).to_owned(), c.into());
                }
            }
            if let Ok(o) = state.other_paths.lock() {
                for (p, c) in o.iter() {
                    by_path.insert(p.clone(), (*c).into());
                }
            }
            let mut body = serde_json::json!({
                "requests": state.requests.load(Ordering::Relaxed),
                "in_flight": state.in_flight.load(Ordering::Relaxed),
                "by_path": by_path,
                "rate_limited": state.rate_limited.load(Ordering::Relaxed),
                "admitted": state.admitted.load(Ordering::Relaxed),
                "admitted_tokens": state.admitted_tokens.load(Ordering::Relaxed),
                "token_grants": state.token_grants.load(Ordering::Relaxed),
            });
            if let (Ok(b), Some(o)) = (state.batch.lock(), body.as_object_mut()) {
                o.extend(b.stats());
            }
            json_response(state, StatusCode::OK, body.to_string())
        }
        "/__mock/reset" => {
            if let Ok(mut r) = state.records.lock() {
                r.clear();
            }
            if let Ok(mut o) = state.other_paths.lock() {
                o.clear();
            }
            for c in &state.path_counts {
                c.store(0, Ordering::Relaxed);
            }
            state.requests.store(0, Ordering::Relaxed);
            if let Ok(mut l) = state.limiter.lock() {
                l.clear_admissions();
            }
            state.rate_limited.store(0, Ordering::Relaxed);
            state.admitted.store(0, Ordering::Relaxed);
            state.admitted_tokens.store(0, Ordering::Relaxed);
            state.token_grants.store(0, Ordering::Relaxed);
            if let Ok(mut b) = state.batch.lock() {
                b.reset();
            }
            json_response(state, StatusCode::OK, r#"{"ok":true}"#)
        }
        "/__mock/batch" => batch::control(state, method, body),
        "/__mock/batches" => {
            let list = batch::mock_views(state);
            json_response(state, StatusCode::OK, Value::Array(list).to_string())
        }
        "/__mock/echo" => match query_param(query, "on") {
            Some(v @ ("1" | "true" | "0" | "false")) => {
                let on = matches!(v, "1" | "true");
                state.echo.store(on, Ordering::Relaxed);
                json_response(
                    state,
                    StatusCode::OK,
                    format!(r#"{{"ok":true,"echo":{on}}}"#),
                )
            }
            _ => error_response(
                state,
                StatusCode::BAD_REQUEST,
                "on must be true or false",
                "invalid_request_error",
                "bad_on",
            ),
        },
        "/__mock/admissions" => {
            let body = match state.limiter.lock() {
                Ok(l) => serde_json::to_string(l.admissions()).unwrap_or_else(|_| "[]".to_owned()),
                Err(_) => "[]".to_owned(),
            };
            json_response(state, StatusCode::OK, body)
        }
        "/__mock/limits" => {
            let param = |key: &str| match query_param(query, key) {
                None => Ok(None),
                Some(v) => v.parse::<u64>().map(Some).map_err(|_| key.to_owned()),
            };
            let (rpm, tpm) = match (param("rpm"), param("tpm")) {
                (Ok(r), Ok(t)) => (r, t),
                (Err(k), _) | (_, Err(k)) => {
                    return error_response(
                        state,
                        StatusCode::BAD_REQUEST,
                        &format!("{k} must be a non-negative integer"),
                        "invalid_request_error",
                        &format!("bad_{k}"),
                    )
                }
            };
            let mode = match query_param(query, "mode") {
                None => None,
                Some(m) => match LimitMode::parse(m) {
                    Some(m) => Some(m),
                    None => {
                        return error_response(
                            state,
                            StatusCode::BAD_REQUEST,
                            "mode must be bucket or sliding",
                            "invalid_request_error",
                            "bad_mode",
                        )
                    }
                },
            };
            let Some((rpm, tpm, mode)) = limits::set_limits(state, rpm, tpm, mode) else {
                return error_response(
                    state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "limiter lock poisoned",
                    "server_error",
                    "poisoned",
                );
            };
            json_response(
                state,
                StatusCode::OK,
                format!(
                    r#"{{"ok":true,"rpm":{rpm},"tpm":{tpm},"mode":"{}"}}"#,
                    mode.as_str()
                ),
            )
        }
        "/__mock/fail" => match query_param(query, "status").and_then(|s| s.parse::<u16>().ok()) {
            Some(code) if code == 0 || fail_code(u64::from(code)).is_some() => {
                state.fail_status.store(code, Ordering::Relaxed);
                json_response(
                    state,
                    StatusCode::OK,
                    format!(r#"{{"ok":true,"status":{code}}}"#),
                )
            }
            _ => error_response(
                state,
                StatusCode::BAD_REQUEST,
                "status must be 0 or a code in 400..=999",
                "invalid_request_error",
                "bad_status",
            ),
        },
        "/__mock/latency" => match query_param(query, "ms").and_then(|s| s.parse::<u64>().ok()) {
            Some(ms) => {
                state.latency_ms.store(ms, Ordering::Relaxed);
                json_response(state, StatusCode::OK, format!(r#"{{"ok":true,"ms":{ms}}}"#))
            }
            None => error_response(
                state,
                StatusCode::BAD_REQUEST,
                "ms must be a non-negative integer",
                "invalid_request_error",
                "bad_ms",
            ),
        },
        _ => error_response(
            state,
            StatusCode::NOT_FOUND,
            "unknown mock control path",
            "invalid_request_error",
            "not_found",
        ),
    }
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

/// Count a request in `/__mock/stats`' `by_path`.
pub(crate) fn count_path(state: &State, path: &str) {
    if let Some(i) = KNOWN_PATHS.iter().position(|p| *p == path) {
        state.path_counts[i].fetch_add(1, Ordering::Relaxed);
    } else if let Ok(mut o) = state.other_paths.lock() {
        if let Some(c) = o.get_mut(path) {
            *c += 1;
        } else if o.len() < MAX_OTHER_PATHS {
            o.insert(path.to_owned(), 1);
        } else {
            *o.entry("<other>".to_owned()).or_insert(0) += 1;
        }
    }
}

/// Record a request for `GET /__mock/requests`.
pub(crate) fn record(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    parsed: Option<&ReqBody>,
) {
    let extra = Extra {
        model: None,
        stream: parsed.is_some_and(ReqBody::is_stream),
        auth: None,
        inputs: None,
    };
    let model = parsed.map(|p| p.model.clone()).unwrap_or(Value::Null);
    push(
        state,
        recorded(method, path, query, headers, body, model, extra),
    );
}

/// Record a request of a dialect that reads its own requests, with what it adds.
pub(crate) fn record_extra(state: &State, parts: &Parts, body: &[u8], extra: Extra) {
    let (uri, headers) = (&parts.uri, &parts.headers);
    let rec = recorded(
        &parts.method,
        uri.path(),
        uri.query(),
        headers,
        body,
        Value::Null,
        extra,
    );
    push(state, rec);
}

/// A request as recorded (`model` is the body's unless `extra` names one).
fn recorded(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    model: Value,
    extra: Extra,
) -> Recorded {
    let mut hmap: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        match hmap.get_mut(k.as_str()) {
            Some(existing) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            None => {
                hmap.insert(k.as_str().to_owned(), v.into_owned());
            }
        }
    }
    Recorded {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        headers: hmap,
        body_len: body.len(),
        model: extra.model.map(Value::String).unwrap_or(model),
        stream: extra.stream,
        body_prefix: String::from_utf8_lossy(&body[..body.len().min(BODY_PREFIX_LEN)]).into_owned(),
        auth: extra.auth,
        inputs: extra.inputs,
    }
}

fn push(state: &State, rec: Recorded) {
    if let Ok(mut r) = state.records.lock() {
        if r.len() >= MAX_RECORDS {
            r.pop_front();
        }
        r.push_back(rec);
    }
}
