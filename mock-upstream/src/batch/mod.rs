//! The Files and Batch API, with its Azure surfaces: routing, the handlers, and the
//! `/__mock/batch` settings. A batch's answers are made when it is created (by the synchronous
//! endpoints' own code) and revealed as its timeline runs (`store`); uploads and input
//! validation are in `files`.
//!
//! # Files and Batch API (`/v1/files`, `/v1/batches`, also without `/v1`)
//!
//! OpenAI's shapes (API reference: Files, Batch). No auth check, as on the
//! chat endpoint; latency, `/__mock/fail` and `x-mock-status` apply, the rate
//! limits do not. Errors are `{"error":{"message","type":
//! "invalid_request_error","param","code"}}`.
//!
//! The same API (same store, behaviour and shapes) is reached on Azure's
//! surfaces, with Azure's own refusals first (see the Azure dialect: no key →
//! 401): `/openai/files`, `/openai/files/{id}`, `/openai/files/{id}/content`,
//! `/openai/batches`, `/openai/batches/{id}`, `/openai/batches/{id}/cancel`
//! need `?api-version=V` (else 404 `Resource not found`), and there lines and
//! the batch's `endpoint` are written as Azure's docs write them:
//! `/chat/completions`, `/embeddings`, `/completions`, `/responses` (the `/v1`
//! form is refused, `invalid_url` / `invalid_value`); each line's
//! `body.model` is the (Global Batch) deployment. On the v1 surface,
//! `/openai/v1/files`, `/openai/v1/batches`, ... (`api-version` optional),
//! both forms are accepted. A batch's `endpoint` must still equal its lines'
//! `url`.
//!
//! * `POST /v1/files` (multipart/form-data: `purpose` = `batch`, `file` =
//!   JSONL): each non-blank line must be a JSON object with a unique non-empty
//!   `custom_id`, `method: "POST"`, `url` one of `/v1/chat/completions`,
//!   `/v1/embeddings`, `/v1/completions`, `/v1/responses` (the same on every
//!   line) and an object `body` with a `model` (the same on every line); at
//!   most 50,000 lines. Otherwise 400 with `param` `file` and `code`
//!   `invalid_json_line`, `missing_custom_id`, `duplicate_custom_id`,
//!   `invalid_method`, `invalid_url`, `url_mismatch`, `invalid_body`,
//!   `missing_model`, `model_mismatch`, `too_many_tasks` or `empty_file`
//!   (messages name the line); a bad or missing `purpose` / `file`: 400
//!   `invalid_value` / `missing_required_parameter`; not multipart: 400
//!   `invalid_content_type`. Answers the File object `{"id":"file-...",
//!   "object":"file","bytes","created_at","filename","purpose":"batch",
//!   "status":"processed","expires_at":null,"status_details":null}`.
//! * `GET /v1/files[?purpose=P]` (list), `GET /v1/files/{id}`,
//!   `GET /v1/files/{id}/content` (the raw bytes), `DELETE /v1/files/{id}`
//!   (`{"id","object":"file","deleted":true}`); unknown id: 404
//!   `file_not_found`. Output and error files have purpose `batch_output`.
//! * `POST /v1/batches` `{"input_file_id","endpoint","completion_window":"24h",
//!   "metadata"?}` (`output_expires_after` accepted, other fields 400
//!   `unknown_parameter`): missing field 400 `missing_required_parameter`;
//!   bad `endpoint` / `completion_window` / `metadata` 400 `invalid_value`;
//!   unknown file 404 `file_not_found`; `endpoint` other than the lines' `url`
//!   400 `url_mismatch`. Answers the Batch object (status `validating`):
//!   `id` (`batch_...`), `object: "batch"`, `endpoint`, `model`, `errors`,
//!   `input_file_id`, `completion_window`, `status`, `output_file_id`,
//!   `error_file_id`, `created_at`, `in_progress_at`, `expires_at` (created +
//!   24 h), `finalizing_at`, `completed_at`, `failed_at`, `expired_at`,
//!   `cancelling_at`, `cancelled_at` (Unix seconds or null),
//!   `request_counts: {total, completed, failed}`, `metadata`.
//! * `GET /v1/batches/{id}` (counted as a poll), `GET /v1/batches?limit=N&
//!   after=ID` (N 1..=100, default 20; newest first, each Batch object with
//!   its `metadata`; `{"object":"list","data","first_id","last_id",
//!   "has_more"}`), `POST /v1/batches/{id}/cancel` (`cancelling`, then
//!   `cancelled` after `cancel_after_ms`; an ended batch: 400 `invalid_state`;
//!   again: unchanged); unknown id: 404 `batch_not_found`.
//! * Timeline (T = `complete_after_ms`, fixed at creation): `validating` until
//!   T/10, `in_progress` until 9T/10 with the lines finishing one by one in
//!   file order evenly over that span, `finalizing` until T, then `completed`.
//!   `request_counts.total` is 0 while validating. Each line is answered at
//!   creation exactly as the synchronous endpoint answers its `body` (no
//!   override headers; prompt tokens from the compact JSON of the body): a
//!   line of the output file is `{"id":"batch_req_...","custom_id",
//!   "response":{"status_code":200,"request_id","body"},"error":null}`. Lines
//!   with a non-2xx answer (`fail_custom_ids`, or `"stream": true` → 400
//!   `unsupported_value`) go to the error file in the same shape (counted in
//!   `failed`). Lines that never ran (expired or cancelled batch) go to the
//!   error file as `{"id","custom_id","response":null,"error":{"code":
//!   "batch_expired"|"batch_cancelled","message"}}` and are in neither count.
//!   `output_file_id` / `error_file_id` stay null when that file would be
//!   empty. Outcome `failed`: `validating` until T, then `failed` with
//!   `errors: {"object":"list","data":[{"code":"mock_failed","message",
//!   "param":null,"line":null}]}` and no files. Outcome `expired`: the first
//!   half of the lines (n/2, rounded down) finish, `expired` at T.
//!

mod files;
mod store;

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::Value;

pub(crate) use self::store::BatchStore;

use self::files::{upload_file, StoredFile};
use self::store::{Batch, BatchConfig, BatchLine};
use crate::body::{
    error_response, fail_code, full_body, hdr_u64, json_response, mock_error, query_param, MockBody,
};
use crate::content::{echo_text, Gen};
use crate::openai::{self, ReqBody};
use crate::server::State;

/// Endpoints a batch may target (each line's `url` and the batch's `endpoint`).
const BATCH_ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
];
/// The same as Azure's dated API writes them (no `/v1`).
const AZURE_BATCH_ENDPOINTS: [&str; 4] = [
    "/chat/completions",
    "/embeddings",
    "/completions",
    "/responses",
];

/// Which Files and Batch API a request reached: it decides the accepted line `url`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/v1/files`, `/v1/batches` (also without `/v1`): lines `/v1/...`.
    OpenAi,
    /// Azure's dated API, `/openai/files?api-version=V`: lines `/chat/completions`, ...
    AzureDated,
    /// Azure's v1 API, `/openai/v1/files`: either form.
    AzureV1,
}

impl Dialect {
    fn accepts(self, url: &str) -> bool {
        match self {
            Dialect::OpenAi => BATCH_ENDPOINTS.contains(&url),
            Dialect::AzureDated => AZURE_BATCH_ENDPOINTS.contains(&url),
            Dialect::AzureV1 => {
                BATCH_ENDPOINTS.contains(&url) || AZURE_BATCH_ENDPOINTS.contains(&url)
            }
        }
    }

    fn accepted(self) -> String {
        match self {
            Dialect::OpenAi => BATCH_ENDPOINTS.join(", "),
            Dialect::AzureDated => AZURE_BATCH_ENDPOINTS.join(", "),
            Dialect::AzureV1 => {
                format!(
                    "{}, {}",
                    BATCH_ENDPOINTS.join(", "),
                    AZURE_BATCH_ENDPOINTS.join(", ")
                )
            }
        }
    }
}

/// A batch's `metadata`: at most this many pairs.
const MAX_METADATA_PAIRS: usize = 16;

/// A Files or Batch API path (with or without `/v1`).
#[derive(Clone, Copy)]
pub(crate) enum Route<'a> {
    Files,
    File(&'a str),
    FileContent(&'a str),
    Batches,
    Batch(&'a str),
    BatchCancel(&'a str),
}

/// A Files or Batch API path on OpenAI's surface.
pub(crate) fn route(path: &str) -> Option<Route<'_>> {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    let seg = |s: &str| !s.is_empty() && !s.contains('/');
    if p == "/files" {
        return Some(Route::Files);
    }
    if p == "/batches" {
        return Some(Route::Batches);
    }
    if let Some(rest) = p.strip_prefix("/files/") {
        return match rest.strip_suffix("/content") {
            Some(id) if seg(id) => Some(Route::FileContent(id)),
            _ if seg(rest) => Some(Route::File(rest)),
            _ => None,
        };
    }
    if let Some(rest) = p.strip_prefix("/batches/") {
        return match rest.strip_suffix("/cancel") {
            Some(id) if seg(id) => Some(Route::BatchCancel(id)),
            _ if seg(rest) => Some(Route::Batch(rest)),
            _ => None,
        };
    }
    None
}

/// A Files or Batch API path on Azure's surfaces: `/openai/v1/...` (v1) or `/openai/...`
/// (dated, `api-version` required).
pub(crate) fn azure_route(path: &str) -> Option<(Route<'_>, Dialect)> {
    let is_batch = |rest: &str| {
        ["/files", "/batches"]
            .iter()
            .any(|p| rest == *p || rest.starts_with(&format!("{p}/")))
    };
    if let Some(rest) = path.strip_prefix("/openai/v1") {
        return is_batch(rest)
            .then(|| route(rest))
            .flatten()
            .map(|r| (r, Dialect::AzureV1));
    }
    let rest = path.strip_prefix("/openai")?;
    is_batch(rest)
        .then(|| route(rest))
        .flatten()
        .map(|r| (r, Dialect::AzureDated))
}

/// An `invalid_request_error` with an optional `param` and `code`.
fn invalid(
    state: &State,
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<MockBody> {
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }});
    json_response(state, status, body.to_string())
}

/// The answer the synchronous endpoint gives to `body` (no override headers), or the line's
/// configured failure.
fn line_answer(
    state: &State,
    endpoint: &str,
    custom_id: &str,
    body: &Value,
    cfg: &BatchConfig,
) -> (u16, Bytes) {
    if let Some(code) = cfg
        .fail_custom_ids
        .get(custom_id)
        .and_then(|c| StatusCode::from_u16(*c).ok())
    {
        return full_body(mock_error(state, code));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return full_body(invalid(
            state,
            StatusCode::BAD_REQUEST,
            "Streaming is not supported in the Batch API.",
            Some("stream"),
            Some("unsupported_value"),
        ));
    }
    let raw = serde_json::to_vec(body).unwrap_or_default();
    let req: ReqBody = serde_json::from_value(body.clone()).unwrap_or_default();
    let mut g = Gen::new(state, &HeaderMap::new(), raw.len());
    let resp = match endpoint.strip_prefix("/v1").unwrap_or(endpoint) {
        "/chat/completions" => {
            if state.echo.load(Ordering::Relaxed) {
                g.echo = echo_text(&raw);
            }
            openai::chat(state, &g, &req)
        }
        "/embeddings" => openai::embeddings(state, &g, &req),
        "/completions" => openai::completions(state, &g, &req),
        _ => openai::responses(state, &g, &req),
    };
    full_body(resp)
}

/// `POST /v1/batches`.
fn create_batch(
    state: &State,
    store: &mut BatchStore,
    body: &[u8],
    now: u64,
    dialect: Dialect,
) -> Response<MockBody> {
    let bad = |status: StatusCode, m: &str, param: &str, code: &str| {
        invalid(state, status, m, Some(param), Some(code))
    };
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return invalid(
                state,
                StatusCode::BAD_REQUEST,
                "The body must be a JSON object.",
                None,
                Some("invalid_json"),
            )
        }
        Err(e) => {
            return invalid(
                state,
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON body: {e}"),
                None,
                Some("invalid_json"),
            )
        }
    };
    if let Some(k) = v.as_object().and_then(|o| {
        o.keys().find(|k| {
            !matches!(
                k.as_str(),
                "input_file_id"
                    | "endpoint"
                    | "completion_window"
                    | "metadata"
                    | "output_expires_after"
            )
        })
    }) {
        return bad(
            StatusCode::BAD_REQUEST,
            &format!("Unrecognized request argument supplied: {k}"),
            k,
            "unknown_parameter",
        );
    }
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let missing = |k: &str| {
        bad(
            StatusCode::BAD_REQUEST,
            &format!("Missing required parameter: '{k}'."),
            k,
            "missing_required_parameter",
        )
    };
    let Some(file_id) = field("input_file_id") else {
        return missing("input_file_id");
    };
    let Some(endpoint) = field("endpoint") else {
        return missing("endpoint");
    };
    let Some(window) = field("completion_window") else {
        return missing("completion_window");
    };
    if !dialect.accepts(endpoint) {
        return bad(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid value for 'endpoint': '{endpoint}'. Supported: {}.",
                dialect.accepted()
            ),
            "endpoint",
            "invalid_value",
        );
    }
    if window != "24h" {
        return bad(
            StatusCode::BAD_REQUEST,
            &format!("Invalid value for 'completion_window': '{window}'. Supported: '24h'."),
            "completion_window",
            "invalid_value",
        );
    }
    let metadata = v.get("metadata").cloned().unwrap_or(Value::Null);
    let metadata_ok = match &metadata {
        Value::Null => true,
        Value::Object(m) => {
            m.len() <= MAX_METADATA_PAIRS
                && m.iter().all(|(k, v)| {
                    k.chars().count() <= 64 && v.as_str().is_some_and(|s| s.chars().count() <= 512)
                })
        }
        _ => false,
    };
    if !metadata_ok {
        return bad(
            StatusCode::BAD_REQUEST,
            "Invalid 'metadata': at most 16 pairs, string keys of up to 64 and string values of up to 512 characters.",
            "metadata",
            "invalid_value",
        );
    }
    let Some(file) = store.file(file_id) else {
        return bad(
            StatusCode::NOT_FOUND,
            &format!("No such File object: {file_id}"),
            "input_file_id",
            "file_not_found",
        );
    };
    let Some(input) = file.input.clone().filter(|_| file.purpose == "batch") else {
        return bad(
            StatusCode::BAD_REQUEST,
            &format!(
                "File {file_id} has purpose '{}'; a batch input file must be uploaded with purpose 'batch'.",
                file.purpose
            ),
            "input_file_id",
            "invalid_input_file",
        );
    };
    if input.url != endpoint {
        return bad(
            StatusCode::BAD_REQUEST,
            &format!(
                "The batch endpoint '{endpoint}' does not match the url of the requests in the input file ('{}').",
                input.url
            ),
            "endpoint",
            "url_mismatch",
        );
    }
    let cfg = store.config.clone();
    let seq = store.next();
    let lines = input
        .lines
        .iter()
        .enumerate()
        .map(|(i, (custom_id, body))| {
            let (status, body) = line_answer(state, endpoint, custom_id, body, &cfg);
            BatchLine {
                custom_id: custom_id.clone(),
                status,
                body,
                line_id: format!("batch_req_mock{seq}_{i}"),
                request_id: format!("req_mock{seq}_{i}"),
            }
        })
        .collect();
    let created_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let batch = Batch {
        id: format!("batch_mock{seq}"),
        endpoint: endpoint.to_owned(),
        input_file_id: file_id.to_owned(),
        model: input.model.clone(),
        metadata,
        t0_ms: now,
        created_unix_ms,
        cfg,
        lines,
        cancel_ms: None,
        cancel_calls: 0,
        polls: 0,
        settled: false,
        output_file_id: None,
        error_file_id: None,
    };
    let obj = batch.object(0);
    store.batches.push(batch);
    store.batches_created += 1;
    store.settle(now);
    json_response(state, StatusCode::OK, obj.to_string())
}

/// `GET /v1/batches?limit=N&after=ID`: newest first.
fn list_batches(
    state: &State,
    store: &BatchStore,
    query: Option<&str>,
    now: u64,
) -> Response<MockBody> {
    let limit = match query_param(query, "limit").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return invalid(
                state,
                StatusCode::BAD_REQUEST,
                "Invalid 'limit': an integer from 1 to 100.",
                Some("limit"),
                Some("invalid_value"),
            )
        }
    };
    let newest_first: Vec<&Batch> = store.batches.iter().rev().collect();
    let start = match query_param(query, "after") {
        Some(after) => newest_first
            .iter()
            .position(|b| b.id == after)
            .map_or(newest_first.len(), |i| i + 1),
        None => 0,
    };
    let page = &newest_first[start..(start + limit).min(newest_first.len())];
    let body = serde_json::json!({
        "object": "list",
        "data": page.iter().map(|b| b.object(now.saturating_sub(b.t0_ms))).collect::<Vec<_>>(),
        "first_id": page.first().map(|b| b.id.as_str()),
        "last_id": page.last().map(|b| b.id.as_str()),
        "has_more": start + page.len() < newest_first.len(),
    });
    json_response(state, StatusCode::OK, body.to_string())
}

/// `POST /v1/batches/{id}/cancel`: `cancelling` now, `cancelled` `cancel_after_ms` later; the
/// lines finished so far are the batch's output. A batch that has already ended cannot be
/// cancelled (400); cancelling one that is cancelling or cancelled changes nothing.
fn cancel_batch(state: &State, store: &mut BatchStore, i: usize, now: u64) -> Response<MockBody> {
    let b = &mut store.batches[i];
    let e = now.saturating_sub(b.t0_ms);
    b.cancel_calls += 1;
    if b.cancel_ms.is_none() {
        let status = b.status(e);
        if status.is_terminal() {
            return invalid(
                state,
                StatusCode::BAD_REQUEST,
                &format!("Cannot cancel a batch with status '{}'.", status.as_str()),
                None,
                Some("invalid_state"),
            );
        }
        b.cancel_ms = Some(e);
        store.batches_cancelled += 1;
    }
    store.settle(now);
    let b = &store.batches[i];
    json_response(
        state,
        StatusCode::OK,
        b.object(now.saturating_sub(b.t0_ms)).to_string(),
    )
}

/// The Files and Batch API (after the mock's latency; the failure controls apply first, as on
/// every endpoint).
pub(crate) fn api(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    (route, dialect): (Route<'_>, Dialect),
    query: Option<&str>,
    body: &Bytes,
) -> Response<MockBody> {
    let fail = fail_code(u64::from(state.fail_status.load(Ordering::Relaxed)))
        .or_else(|| hdr_u64(headers, "x-mock-status").and_then(fail_code));
    if let Some(code) = fail {
        return mock_error(state, code);
    }
    let Ok(mut store) = state.batch.lock() else {
        return error_response(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "batch store lock poisoned",
            "server_error",
            "poisoned",
        );
    };
    let now = mock_ms(state);
    store.settle(now);
    let no_file = |id: &str| {
        invalid(
            state,
            StatusCode::NOT_FOUND,
            &format!("No such File object: {id}"),
            Some("id"),
            Some("file_not_found"),
        )
    };
    let no_batch = |id: &str| {
        invalid(
            state,
            StatusCode::NOT_FOUND,
            &format!("No such Batch object: {id}"),
            Some("id"),
            Some("batch_not_found"),
        )
    };
    let not_allowed = || {
        error_response(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method {method} not allowed for this path"),
            "invalid_request_error",
            "method_not_allowed",
        )
    };
    match (route, method) {
        (Route::Files, &Method::POST) => upload_file(state, &mut store, headers, body, dialect),
        (Route::Files, &Method::GET) => {
            let purpose = query_param(query, "purpose");
            let data: Vec<Value> = store
                .files
                .iter()
                .rev()
                .filter(|f| purpose.is_none_or(|p| p == f.purpose))
                .map(StoredFile::object)
                .collect();
            let body = serde_json::json!({
                "object": "list",
                "data": data,
                "first_id": data.first().map(|f| f["id"].clone()),
                "last_id": data.last().map(|f| f["id"].clone()),
                "has_more": false,
            });
            json_response(state, StatusCode::OK, body.to_string())
        }
        (Route::File(id), &Method::GET) => match store.file(id) {
            Some(f) => json_response(state, StatusCode::OK, f.object().to_string()),
            None => no_file(id),
        },
        (Route::File(id), &Method::DELETE) => match store.files.iter().position(|f| f.id == id) {
            Some(i) => {
                store.files.remove(i);
                let body = serde_json::json!({"id": id, "object": "file", "deleted": true});
                json_response(state, StatusCode::OK, body.to_string())
            }
            None => no_file(id),
        },
        (Route::FileContent(id), &Method::GET) => match store.file(id) {
            Some(f) => {
                let mut resp = json_response(state, StatusCode::OK, f.content.clone());
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            None => no_file(id),
        },
        (Route::Batches, &Method::POST) => create_batch(state, &mut store, body, now, dialect),
        (Route::Batches, &Method::GET) => list_batches(state, &store, query, now),
        (Route::Batch(id), &Method::GET) => match store.batch_index(id) {
            Some(i) => {
                store.batch_polls += 1;
                let b = &mut store.batches[i];
                b.polls += 1;
                let obj = b.object(now.saturating_sub(b.t0_ms));
                json_response(state, StatusCode::OK, obj.to_string())
            }
            None => no_batch(id),
        },
        (Route::BatchCancel(id), &Method::POST) => match store.batch_index(id) {
            Some(i) => cancel_batch(state, &mut store, i, now),
            None => no_batch(id),
        },
        _ => not_allowed(),
    }
}

/// Milliseconds on the mock's clock (since it started).
fn mock_ms(state: &State) -> u64 {
    u64::try_from(state.start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `POST /__mock/batch` (a JSON object of settings to change) and `GET /__mock/batch`: both
/// answer `{"ok":true,"config":{...}}` with the settings now in force.
pub(crate) fn control(state: &State, method: &Method, body: &[u8]) -> Response<MockBody> {
    let bad = |m: &str| {
        error_response(
            state,
            StatusCode::BAD_REQUEST,
            m,
            "invalid_request_error",
            "bad_batch_config",
        )
    };
    let Ok(mut store) = state.batch.lock() else {
        return bad("batch store lock poisoned");
    };
    if *method == Method::POST && !body.is_empty() {
        let patch = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return bad("the body must be a JSON object"),
            Err(e) => return bad(&format!("invalid JSON: {e}")),
        };
        match store.config.patched(&patch) {
            Ok(c) => store.config = c,
            Err(m) => return bad(&m),
        }
    }
    let body = serde_json::json!({"ok": true, "config": store.config});
    json_response(state, StatusCode::OK, body.to_string())
}

/// The `POST /__mock/batch` settings that act on `POST /batches` itself, before and after the
/// handler runs.
#[derive(Default)]
pub(crate) struct CreateControls {
    /// Answer this much later (the batch exists already).
    pub(crate) delay_ms: u64,
    /// Never create, never answer.
    pub(crate) hang: bool,
    /// Create, then answer this 5xx.
    pub(crate) then_fail: Option<u16>,
}

/// The settings for a `POST /batches` arriving now.
pub(crate) fn create_controls(state: &State) -> CreateControls {
    match state.batch.lock() {
        Ok(b) => CreateControls {
            delay_ms: b.config.create_delay_ms,
            hang: b.config.create_hang,
            then_fail: b.config.create_then_fail,
        },
        Err(_) => CreateControls::default(),
    }
}

/// `GET /__mock/batches`: every batch, oldest first, as the mock sees it.
pub(crate) fn mock_views(state: &State) -> Vec<Value> {
    let now = mock_ms(state);
    match state.batch.lock() {
        Ok(mut b) => {
            b.settle(now);
            b.batches.iter().map(|x| x.mock_view(now)).collect()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("/v1/files"), Some(Route::Files)));
        assert!(matches!(route("/files/f-1"), Some(Route::File("f-1"))));
        assert!(matches!(
            route("/v1/files/f-1/content"),
            Some(Route::FileContent("f-1"))
        ));
        assert!(matches!(
            route("/v1/batches/b1/cancel"),
            Some(Route::BatchCancel("b1"))
        ));
        assert!(route("/v1/files/a/b").is_none());
        assert!(route("/v1/chat/completions").is_none());
    }
}
