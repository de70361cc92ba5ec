//! `mock_upstream` — a fast, controllable fake OpenAI-compatible upstream.
//!
//! Used by the gateway's integration tests and as the baseline in load tests.
//! It is a plain hyper 1 HTTP/1.1 server (keep-alive, TCP_NODELAY, one task per
//! connection) on a tokio multi-thread runtime, with no per-request logging.
//!
//! # CLI
//!
//! ```text
//! mock_upstream [--listen 127.0.0.1:0] [--name NAME] [--threads N]
//!               [--latency-ms N] [--ttft-ms N] [--chunks N]
//!               [--chunk-interval-ms N] [--tokens-per-sec N]
//!               [--response-bytes N] [--fail-status CODE]
//!               [--embedding-dim N] [--no-record]
//!               [--rpm N] [--tpm N] [--default-max-tokens N] [--echo]
//! ```
//!
//! * `--listen` (default `127.0.0.1:0`): after binding, exactly one line
//!   `listening on <addr>` (the real bound address) is printed to stdout.
//! * `--name` (default `mock`): sent back in the `x-mock-name` header of every
//!   response.
//! * `--threads` (default 1): tokio worker threads.
//! * `--latency-ms` (default 0): delay before the response headers are sent
//!   (applies to every non-`/__mock` response, streaming or not, errors too).
//!   Can be changed at runtime with `POST /__mock/latency?ms=N`.
//! * `--ttft-ms` (default 0): streaming only; delay between the response
//!   headers and the first content event.
//! * `--chunks` (default 5): number of content events in a stream; also the
//!   completion token count reported in usage (see below).
//! * `--chunk-interval-ms` (default 0): delay between consecutive content
//!   events.
//! * `--tokens-per-sec` (default 0 = unlimited): when set and no chunk interval
//!   is given (CLI or header), the interval is `1/tps` seconds
//!   (microsecond resolution, so tps > 1000 works).
//! * `--response-bytes` (default 0): 0 = the fixed content `Hello from mock`
//!   (non-stream) or `tok<i> ` per event (stream); N = exactly N bytes of ASCII
//!   filler content, spread across the content events of a stream.
//! * `--fail-status` (default 0 = never): initial value of the global failure
//!   status (see `POST /__mock/fail`).
//! * `--fail-code`, `--fail-message`: the `error.code` / `error.message` of every
//!   failure answer (e.g. `--fail-status 400 --fail-code context_length_exceeded`);
//!   `--retry-after N` adds `Retry-After: N` to failure answers.
//! * `--embedding-dim` (default 8): length of every embedding vector.
//! * `--no-record`: do not record requests for `GET /__mock/requests`
//!   (recording is on by default; turn it off for load tests).
//! * `--rpm N`, `--tpm N` (default 0 = unlimited): requests / tokens per minute,
//!   enforced as OpenAI documents it ("a per-minute limit may be enforced over
//!   shorter periods"); see *Rate limits* below. Changeable at runtime with
//!   `POST /__mock/limits`.
//! * `--default-max-tokens N` (default 1024): the output allowance charged
//!   against `--tpm` when a request sets no `max_tokens` /
//!   `max_completion_tokens` / `max_output_tokens`.
//! * `--echo` (default off; runtime `POST /__mock/echo?on=true|false`): chat
//!   completions answer with the last `user` message as their content (its
//!   string, or its `text` parts joined; spread over the chunks of a stream)
//!   instead of `Hello from mock` / filler, so each answer can be matched to
//!   its request. Batch lines follow the same setting.
//!
//! # Per-request override headers (win over the CLI / runtime defaults)
//!
//! * `x-mock-latency-ms`, `x-mock-ttft-ms`, `x-mock-chunks`,
//!   `x-mock-chunk-interval-ms`, `x-mock-tokens-per-sec`,
//!   `x-mock-response-bytes`: as the CLI options above.
//! * `x-mock-status: CODE`: respond with CODE (only codes >= 400 are honoured)
//!   and the OpenAI-shaped body
//!   `{"error":{"message":"mock error","type":"mock_error","param":null,"code":"mock_<CODE>"}}`.
//! * `x-mock-drop-after-chunks: K`: streaming only; send the leading events and
//!   K content events (at most all of them) and then abort the connection (the
//!   chunked body is truncated: no terminating chunk, no finish event, no
//!   `[DONE]`). Ignored for non-stream requests.
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
//!
//! # Azure OpenAI dialect (paths under `/openai/`)
//!
//! As Azure's data-plane REST reference documents it:
//!
//! * `POST /openai/deployments/{deployment}/chat/completions|completions|embeddings?api-version=V`:
//!   the same answers as the OpenAI endpoints above, with `model` = the
//!   deployment name (Azure ignores the body's `model`).
//! * `POST /openai/v1/responses` (also `/openai/v1/chat/completions`, ...): the
//!   v1 surface, `api-version` optional, `model` from the body.
//! * `GET /openai/models?api-version=V`: the model list (Azure's health probe).
//! * Missing or empty `api-version` on a dated path, or an unknown `/openai/...`
//!   path: 404 `{"error":{"code":"404","message":"Resource not found"}}`. Neither
//!   `api-key` nor `Authorization`: 401 `{"error":{"code":"401","message":"Access
//!   denied due to invalid subscription key or wrong API endpoint. ..."}}`.
//! * A 429 (`x-mock-status`, `/__mock/fail`) is Azure-shaped:
//!   `{"error":{"code":"429","message":"Requests to the ... Operation under Azure
//!   OpenAI API version V have exceeded ... Please retry after N seconds. ..."}}`
//!   with `retry-after` (`--retry-after`, or `x-mock-retry-after: N` per request,
//!   default 1) and `x-ratelimit-remaining-requests: 0` /
//!   `x-ratelimit-remaining-tokens: 0`. Other failures keep the OpenAI shape
//!   (Azure relays the model's own errors in it).
//! * Successful Azure answers carry `x-ratelimit-remaining-requests` and
//!   `x-ratelimit-remaining-tokens` (fixed values unless `--rpm`/`--tpm` are
//!   set, whose OpenAI-style headers then win), as Azure sends on every answer.
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
//!   `invalid_request_error`; the rate limits (below; a 429 here is
//!   `rate_limit_error`); latency; the failure controls (`x-mock-status`,
//!   `--fail-status`, `/__mock/fail`: T by status — 400 `invalid_request_error`,
//!   401 `authentication_error`, 403 `permission_error`, 404 `not_found_error`,
//!   413 `request_too_large`, 429 `rate_limit_error` (with `retry-after`:
//!   `x-mock-retry-after`, `--retry-after`, default 1), 529 `overloaded_error`,
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
//!   and C as below). With `x-mock-tool-call: NAME` and a non-empty `tools`,
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
//! # Rate limits (`--rpm`, `--tpm`, `POST /__mock/limits`)
//!
//! Two token buckets per process, shared by `POST` to the chat, completions,
//! embeddings and responses endpoints (with or without `/v1`). Each refills
//! continuously at `limit / 60` per second up to a capacity of `limit / 60`
//! (one second's worth; the request bucket holds at least 1). A request costs
//! 1 request and its token estimate (`llmproxy::sched::tokens::estimate_raw`:
//! prompt tokens by the body's `model` plus its max output, or
//! `--default-max-tokens`; an unparsable body costs 0 tokens). It is admitted
//! when each limited bucket holds at least its cost or is completely full (a
//! full bucket may go negative, so a request larger than one second's budget
//! passes only from a full bucket). The check happens when the request has
//! been read, before any latency, fail status or `x-mock-status`; a rejected
//! request consumes nothing and is answered at once (no latency) with 429
//! `{"error":{"message":"Rate limit reached for requests|tokens per min ...",
//! "type":"requests"|"tokens","param":null,"code":"rate_limit_exceeded"}}`
//! plus `retry-after` (whole seconds, rounded up, at least 1) and
//! `retry-after-ms` (rounded up, at least 1): the time until both buckets
//! would admit it. When both buckets refuse, `type` names the one with the
//! longer wait.
//!
//! While a limit is set, every non-`/__mock` response carries, per limited
//! bucket (an unlimited bucket sends none), `x-ratelimit-limit-requests` (the
//! per-minute limit), `x-ratelimit-remaining-requests` (whole requests in the
//! bucket now, i.e. what could be sent right away; 0 when negative) and
//! `x-ratelimit-reset-requests` (time until the bucket is full again, in
//! OpenAI's format: `250ms`, `1s`, `1.5s`, `6m0s`), and the same three
//! `-tokens` headers. The values are taken at the admission check (after this
//! request's charge). With no limit set the mock computes no estimate and takes
//! no lock.
//!
//! Usage accounting: `P = max(1, request body length / 4)` prompt tokens;
//! completion tokens `C = max(1, chunks)`, or `max(1, response_bytes / 4)` when
//! response-bytes is set; `total = P + C`. Embeddings report `P` for both.
//!
//! # Test-control endpoints (never counted, recorded, delayed or failed)
//!
//! * `GET /__mock/requests`: JSON array of the last 10,000 recorded requests:
//!   `{"method","path","query","headers":{name: value (repeats joined with ", ")},
//!   "body_len","model","stream","body_prefix"}` (`body_prefix` = first 200
//!   body bytes, lossy UTF-8).
//! * `GET /__mock/stats`: `{"requests","in_flight","by_path":{path: count},
//!   "rate_limited","admitted","admitted_tokens","files_uploaded",
//!   "batches_created","batches_cancelled","batch_polls"}`. `in_flight` counts requests
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
//! * `POST /__mock/batch` (JSON object, every field optional, kept until
//!   changed or reset, `null` restores a default; each batch keeps the values
//!   in force at its creation): `complete_after_ms` (300), `outcome`
//!   (`completed` | `failed` | `expired`), `omit_custom_ids` (`[]`: lines left
//!   out of both files, still counted), `fail_custom_ids` (`{}`: custom_id →
//!   status 400..=599, answered with the mock error body of that status),
//!   `cancel_after_ms` (50: how long `cancelling` lasts), `reverse_output`
//!   (false: write both files in reverse file order), `create_delay_ms` (0:
//!   `POST /batches` creates the batch at once and sends its answer this much
//!   later — a creator that dies meanwhile never learns the batch id),
//!   `create_hang` (false: `POST /batches` never creates anything and never
//!   answers, until the client goes away; the request is recorded),
//!   `create_then_fail` (null: a status 500..=599 — `POST /batches` creates
//!   the batch, then answers that status with the mock error body). Unknown
//!   fields or bad values: 400 `bad_batch_config`, nothing changed.
//!   `GET /__mock/batch` and `POST` answer `{"ok":true,"config":{...}}`.
//! * `GET /__mock/batches`: every batch, oldest first: `{"id","status",
//!   "endpoint","model","input_file_id","lines","custom_ids","finished",
//!   "polls","cancel_called","cancel_calls","output_file_id","error_file_id",
//!   "metadata","config"}`.
//! * `POST /__mock/echo?on=true|false`: echo mode (see `--echo`).
//! * `POST /__mock/fail?status=CODE`: every subsequent non-`/__mock` request
//!   answers CODE (>= 400) with an OpenAI error body; `status=0` restores normal
//!   behaviour.
//! * `POST /__mock/latency?ms=N`: set the default latency at runtime.
//! * `POST /__mock/limits?rpm=N&tpm=N`: set the rate limits (0 = unlimited; a
//!   parameter left out keeps its value) and refill both buckets; answers
//!   `{"ok":true,"rpm":N,"tpm":N}`, 400 on a malformed value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio::time::{Instant, Sleep};

const MAX_RECORDS: usize = 10_000;
const MAX_OTHER_PATHS: usize = 10_000;
const MAX_ADMISSIONS: usize = 100_000;
const BODY_PREFIX_LEN: usize = 4096;
const DEFAULT_CONTENT: &str = "Hello from mock";
const FILLER: &[u8] = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod ";

/// Known (counted) paths; index into `State::path_counts`.
const KNOWN_PATHS: [&str; 10] = [
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

#[derive(Parser, Debug)]
#[command(name = "mock_upstream", about = "Fast fake OpenAI-compatible upstream")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Returned in the `x-mock-name` response header.
    #[arg(long, default_value = "mock")]
    name: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Delay before response headers (ms).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Streaming: delay before the first content event (ms).
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Number of content chunks.
    #[arg(long, default_value_t = 5)]
    chunks: u64,
    /// Delay between content chunks (ms).
    #[arg(long)]
    chunk_interval_ms: Option<u64>,
    /// Stream pacing in tokens (chunks) per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    tokens_per_sec: u64,
    /// Content size in bytes; 0 = short fixed content.
    #[arg(long, default_value_t = 0)]
    response_bytes: u64,
    /// Fail every request with this status; 0 = never.
    #[arg(long, default_value_t = 0)]
    fail_status: u16,
    /// `error.code` of the failure answers (default `mock_<status>`), e.g. `context_length_exceeded`.
    #[arg(long)]
    fail_code: Option<String>,
    /// `error.message` of the failure answers (default "mock error").
    #[arg(long)]
    fail_message: Option<String>,
    /// Send `Retry-After: N` (seconds) with failure answers.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Embedding vector length.
    #[arg(long, default_value_t = 8)]
    embedding_dim: usize,
    /// Do not record requests (for load tests).
    #[arg(long)]
    no_record: bool,
    /// Requests per minute, enforced per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    rpm: u64,
    /// Tokens per minute (estimated), enforced per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    tpm: u64,
    /// Output tokens charged against --tpm when a request sets no maximum.
    #[arg(long, default_value_t = 1024)]
    default_max_tokens: u64,
    /// Chat answers echo the last user message as their content.
    #[arg(long)]
    echo: bool,
}

#[derive(Serialize)]
struct Recorded {
    method: String,
    path: String,
    query: Option<String>,
    headers: BTreeMap<String, String>,
    body_len: usize,
    model: Value,
    stream: bool,
    body_prefix: String,
}

struct State {
    name: HeaderValue,
    fail_code: Option<String>,
    fail_message: Option<String>,
    retry_after: Option<u64>,
    ttft_ms: u64,
    chunks: u64,
    chunk_interval_ms: Option<u64>,
    tokens_per_sec: u64,
    response_bytes: u64,
    embedding_dim: usize,
    record: bool,
    latency_ms: AtomicU64,
    fail_status: AtomicU16,
    ids: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicI64,
    path_counts: [AtomicU64; KNOWN_PATHS.len()],
    other_paths: Mutex<HashMap<String, u64>>,
    records: Mutex<VecDeque<Recorded>>,
    /// Rate limits: `start` is time zero of the buckets and of `Admission::t_ms`.
    start: std::time::Instant,
    default_max_tokens: u64,
    /// Whether a limit is set (read without the lock on the hot path).
    limits_on: AtomicBool,
    limiter: Mutex<Limiter>,
    rate_limited: AtomicU64,
    admitted: AtomicU64,
    admitted_tokens: AtomicU64,
    /// Echo mode: chat answers carry the last user message as their content.
    echo: AtomicBool,
    /// Files and Batch API state, with its `/__mock/batch` settings.
    batch: Mutex<BatchStore>,
}

/// Decrements `in_flight` when the response body is dropped.
struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The JSON fields of a request body that the mock looks at.
#[derive(Deserialize, Default)]
struct ReqBody {
    #[serde(default)]
    model: Value,
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
    fn is_stream(&self) -> bool {
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

// ---------------------------------------------------------------------------
// Response body
// ---------------------------------------------------------------------------

/// One pre-rendered SSE frame and the delay before it is emitted.
struct SseFrame {
    delay: Duration,
    data: Bytes,
}

struct SseBody {
    frames: std::vec::IntoIter<SseFrame>,
    pending: Option<SseFrame>,
    /// Number of frames to emit before aborting the connection.
    drop_after: Option<usize>,
    emitted: usize,
    drop_flushed: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    done: bool,
}

enum Kind {
    Full(Option<Bytes>),
    Sse(SseBody),
}

struct MockBody {
    kind: Kind,
    _guard: Option<InFlight>,
}

impl MockBody {
    fn full(data: impl Into<Bytes>) -> Self {
        MockBody {
            kind: Kind::Full(Some(data.into())),
            _guard: None,
        }
    }

    fn sse(frames: Vec<SseFrame>, drop_after: Option<usize>) -> Self {
        MockBody {
            kind: Kind::Sse(SseBody {
                frames: frames.into_iter(),
                pending: None,
                drop_after,
                emitted: 0,
                drop_flushed: false,
                sleep: None,
                armed: false,
                done: false,
            }),
            _guard: None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Sse(s) => {
                if s.done {
                    return Poll::Ready(None);
                }
                if s.drop_after == Some(s.emitted) {
                    if !s.drop_flushed {
                        // Yield once so hyper flushes the frames written so
                        // far; an error frame discards its write buffer.
                        s.drop_flushed = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    s.done = true;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "mock: x-mock-drop-after-chunks",
                    ))));
                }
                if s.pending.is_none() {
                    match s.frames.next() {
                        Some(f) => s.pending = Some(f),
                        None => {
                            s.done = true;
                            return Poll::Ready(None);
                        }
                    }
                }
                let delay = s.pending.as_ref().map(|f| f.delay).unwrap_or_default();
                if !delay.is_zero() {
                    if !s.armed {
                        let deadline = Instant::now() + delay;
                        match &mut s.sleep {
                            Some(sl) => sl.as_mut().reset(deadline),
                            None => s.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        s.armed = true;
                    }
                    if let Some(sl) = &mut s.sleep {
                        if sl.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    s.armed = false;
                }
                match s.pending.take() {
                    Some(f) => {
                        s.emitted += 1;
                        Poll::Ready(Some(Ok(Frame::data(f.data))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.is_none(),
            Kind::Sse(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hdr_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn json_response(state: &State, status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("x-mock-name", state.name.clone());
    resp
}

fn error_response(
    state: &State,
    status: StatusCode,
    message: &str,
    typ: &str,
    code: &str,
) -> Response<MockBody> {
    let message = serde_json::to_string(message).unwrap_or_default();
    let body = format!(
        r#"{{"error":{{"message":{message},"type":"{typ}","param":null,"code":"{code}"}}}}"#
    );
    json_response(state, status, body)
}

/// An Azure service-level error: `{"error":{"code":"<status>","message":...}}`.
fn azure_error(state: &State, status: StatusCode, message: &str) -> Response<MockBody> {
    let message = serde_json::to_string(message).unwrap_or_default();
    let body = format!(
        r#"{{"error":{{"code":"{}","message":{message}}}}}"#,
        status.as_u16()
    );
    json_response(state, status, body)
}

/// A failure answer on an Azure path: 429 in Azure's own shape and headers, anything else as
/// `mock_error`.
fn azure_mock_error(
    state: &State,
    status: StatusCode,
    headers: &HeaderMap,
    az: &AzureRoute,
) -> Response<MockBody> {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return mock_error(state, status);
    }
    let secs = hdr_u64(headers, "x-mock-retry-after")
        .or(state.retry_after)
        .unwrap_or(1);
    let op = match az.endpoint {
        Some(Endpoint::Chat) => "ChatCompletions_Create",
        Some(Endpoint::Completions) => "Completions_Create",
        Some(Endpoint::Embeddings) => "Embeddings_Create",
        _ => "Responses_Create",
    };
    let message = format!(
        "Requests to the {op} Operation under Azure OpenAI API version {} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {secs} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
        az.api_version.as_deref().unwrap_or("v1")
    );
    let mut resp = azure_error(state, status, &message);
    let h = resp.headers_mut();
    h.insert("retry-after", HeaderValue::from(secs));
    h.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("0"),
    );
    h.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("0"),
    );
    resp
}

fn mock_error(state: &State, status: StatusCode) -> Response<MockBody> {
    let code = state
        .fail_code
        .clone()
        .unwrap_or_else(|| format!("mock_{}", status.as_u16()));
    let message = state.fail_message.as_deref().unwrap_or("mock error");
    let mut resp = error_response(state, status, message, "mock_error", &code);
    if let Some(secs) = state.retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

/// A failure status worth honouring (>= 400, valid).
fn fail_code(code: u64) -> Option<StatusCode> {
    if (400..=999).contains(&code) {
        StatusCode::from_u16(code as u16).ok()
    } else {
        None
    }
}

fn filler(n: usize) -> String {
    let mut s = String::with_capacity(n);
    while s.len() < n {
        let take = (n - s.len()).min(FILLER.len());
        // FILLER is ASCII, so any prefix is valid UTF-8.
        s.push_str(std::str::from_utf8(&FILLER[..take]).unwrap_or(""));
    }
    s
}

/// Effective per-request generation parameters.
struct Gen {
    ttft: Duration,
    interval: Duration,
    chunks: usize,
    response_bytes: usize,
    drop_after: Option<usize>,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Echo mode (chat only): the content is this text instead of the default or filler.
    echo: Option<String>,
    /// Chat only (`x-mock-tool-call: NAME` with a non-empty `tools`): answer with one tool call,
    /// `(name, arguments as a JSON string)`.
    tool_call: Option<(String, String)>,
}

impl Gen {
    fn new(state: &State, h: &HeaderMap, body_len: usize) -> Self {
        let ttft = hdr_u64(h, "x-mock-ttft-ms").unwrap_or(state.ttft_ms);
        let chunks = hdr_u64(h, "x-mock-chunks").unwrap_or(state.chunks) as usize;
        let response_bytes =
            hdr_u64(h, "x-mock-response-bytes").unwrap_or(state.response_bytes) as usize;
        let tps = hdr_u64(h, "x-mock-tokens-per-sec").unwrap_or(state.tokens_per_sec);
        let interval = match hdr_u64(h, "x-mock-chunk-interval-ms").or(state.chunk_interval_ms) {
            Some(ms) => Duration::from_millis(ms),
            None if tps > 0 => Duration::from_micros(1_000_000 / tps),
            None => Duration::ZERO,
        };
        let completion_tokens = if response_bytes > 0 {
            (response_bytes as u64 / 4).max(1)
        } else {
            (chunks as u64).max(1)
        };
        Gen {
            ttft: Duration::from_millis(ttft),
            interval,
            chunks,
            response_bytes,
            drop_after: hdr_u64(h, "x-mock-drop-after-chunks").map(|k| k as usize),
            prompt_tokens: (body_len as u64 / 4).max(1),
            completion_tokens,
            echo: None,
            tool_call: None,
        }
    }

    /// Full (non-stream) content.
    fn content(&self) -> String {
        if let Some(e) = &self.echo {
            e.clone()
        } else if self.response_bytes > 0 {
            filler(self.response_bytes)
        } else {
            DEFAULT_CONTENT.to_owned()
        }
    }

    /// Content of stream chunk `i`.
    fn chunk(&self, i: usize) -> String {
        if let Some(e) = &self.echo {
            // The echo spread over the chunks (trailing chunks empty when it is short).
            split_pieces(e, self.chunks)
                .get(i)
                .map(|p| (*p).to_owned())
                .unwrap_or_default()
        } else if self.response_bytes > 0 {
            let base = self.response_bytes / self.chunks;
            let extra = usize::from(i < self.response_bytes % self.chunks);
            filler(base + extra)
        } else {
            format!("tok{i} ")
        }
    }

    /// Delay before content chunk `i`.
    fn delay(&self, i: usize) -> Duration {
        if i == 0 {
            self.ttft
        } else {
            self.interval
        }
    }

    /// Frame index at which to abort, given `lead` leading frames.
    fn drop_index(&self, lead: usize) -> Option<usize> {
        self.drop_after.map(|k| lead + k.min(self.chunks))
    }
}

fn sse_response(
    state: &State,
    frames: Vec<SseFrame>,
    drop_after: Option<usize>,
) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::sse(frames, drop_after));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-mock-name", state.name.clone());
    resp
}

fn data_frame(delay: Duration, json: &str) -> SseFrame {
    let mut s = String::with_capacity(json.len() + 8);
    s.push_str("data: ");
    s.push_str(json);
    s.push_str("\n\n");
    SseFrame {
        delay,
        data: Bytes::from(s),
    }
}

fn event_frame(delay: Duration, event: &str, json: &str) -> SseFrame {
    let mut s = String::with_capacity(json.len() + event.len() + 16);
    s.push_str("event: ");
    s.push_str(event);
    s.push_str("\ndata: ");
    s.push_str(json);
    s.push_str("\n\n");
    SseFrame {
        delay,
        data: Bytes::from(s),
    }
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

fn chat(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let created = now_secs();
    let model = req.model_json();
    let (p, c) = (g.prompt_tokens, g.completion_tokens);
    if let Some((name, args)) = &g.tool_call {
        return chat_tool_call(state, g, req, n, name, args);
    }
    if !req.is_stream() {
        let content = serde_json::to_string(&g.content()).unwrap_or_default();
        let body = format!(
            r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion","created":{created},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
            t = p + c
        );
        return json_response(state, StatusCode::OK, body);
    }
    let usage = req.include_usage();
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
            r#"{{"id":"chatcmpl-mock-{n}","object":"chat.completion.chunk","created":{created},"model":{model},"choices":[],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
            t = p + c
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
    let usage = req.include_usage();
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

fn completions(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
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
    let usage = req.include_usage();
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

fn embeddings(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
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

fn responses(state: &State, g: &Gen, req: &ReqBody) -> Response<MockBody> {
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

const MODELS_BODY: &str = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"mock"}]}"#;

// ---------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------

const NS_PER_SEC: i128 = 1_000_000_000;
/// Fixed-point units per request / token: refilling `limit` per minute is then
/// exactly `limit` units per nanosecond, so the arithmetic is exact.
const UNIT: i128 = 60 * NS_PER_SEC;

/// A token bucket refilling continuously at `limit / 60` per second up to
/// `limit / 60` (at least `min_capacity`). Time is passed in (`now` = time
/// since an arbitrary origin), so the logic is deterministic.
#[derive(Debug, Clone)]
struct Bucket {
    /// Per minute; 0 = unlimited.
    limit: u64,
    capacity: i128,
    /// May go negative (a request larger than the capacity, from a full bucket).
    level: i128,
    last: Duration,
}

impl Bucket {
    fn new(limit: u64, min_capacity: u64, now: Duration) -> Self {
        let capacity = (i128::from(limit) * NS_PER_SEC).max(i128::from(min_capacity) * UNIT);
        Bucket {
            limit,
            capacity,
            level: capacity,
            last: now,
        }
    }

    fn unlimited(&self) -> bool {
        self.limit == 0
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let dt = i128::try_from((now - self.last).as_nanos()).unwrap_or(i128::MAX);
            self.level = self
                .level
                .saturating_add(dt.saturating_mul(i128::from(self.limit)))
                .min(self.capacity);
            self.last = now;
        }
    }

    fn is_full(&self) -> bool {
        self.level >= self.capacity
    }

    fn cost(n: u64) -> i128 {
        i128::from(n) * UNIT
    }

    /// Whether a request costing `n` may pass now.
    fn admits(&self, n: u64) -> bool {
        self.unlimited() || self.is_full() || self.level >= Self::cost(n)
    }

    fn take(&mut self, n: u64) {
        if !self.unlimited() {
            self.level -= Self::cost(n);
        }
    }

    /// Time until a request costing `n` would pass (zero if it passes now).
    fn wait(&self, n: u64) -> Duration {
        if self.admits(n) {
            return Duration::ZERO;
        }
        let target = Self::cost(n).min(self.capacity);
        ns_duration(ceil_div(target - self.level, i128::from(self.limit)))
    }

    /// Whole units in the bucket now (0 when empty or negative).
    fn remaining(&self) -> u64 {
        u64::try_from(self.level.max(0) / UNIT).unwrap_or(u64::MAX)
    }

    /// Time until the bucket is full again.
    fn reset_in(&self) -> Duration {
        if self.unlimited() || self.is_full() {
            return Duration::ZERO;
        }
        ns_duration(ceil_div(self.capacity - self.level, i128::from(self.limit)))
    }

    fn header(&self) -> Option<RateHeader> {
        (!self.unlimited()).then(|| RateHeader {
            limit: self.limit,
            remaining: self.remaining(),
            reset: self.reset_in(),
        })
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if b <= 0 {
        return 0;
    }
    (a + b - 1).div_euclid(b)
}

fn ns_duration(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

/// One `x-ratelimit-*-{requests,tokens}` triple.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RateHeader {
    limit: u64,
    remaining: u64,
    reset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct RateHeaders {
    requests: Option<RateHeader>,
    tokens: Option<RateHeader>,
}

impl RateHeaders {
    fn apply(&self, h: &mut HeaderMap) {
        for (kind, rh) in [("requests", &self.requests), ("tokens", &self.tokens)] {
            if let Some(rh) = rh {
                let name = |what: &str| format!("x-ratelimit-{what}-{kind}");
                if let Ok(n) = http::header::HeaderName::try_from(name("limit")) {
                    h.insert(n, HeaderValue::from(rh.limit));
                }
                if let Ok(n) = http::header::HeaderName::try_from(name("remaining")) {
                    h.insert(n, HeaderValue::from(rh.remaining));
                }
                if let (Ok(n), Ok(v)) = (
                    http::header::HeaderName::try_from(name("reset")),
                    HeaderValue::from_str(&openai_duration(rh.reset)),
                ) {
                    h.insert(n, v);
                }
            }
        }
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*` (Go style, ms
/// resolution, rounded up): `0s`, `250ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
fn openai_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        let f = format!("{frac:03}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitKind {
    Requests,
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rejection {
    kind: LimitKind,
    /// Time until both buckets would admit the request.
    wait: Duration,
    /// The refusing bucket's per-minute limit, level and the cost asked.
    limit: u64,
    remaining: u64,
    requested: u64,
}

/// An admitted request, for `GET /__mock/admissions`.
#[derive(Serialize, Debug, Clone, PartialEq)]
struct Admission {
    t_ms: u64,
    priority: Option<String>,
    seq: Option<String>,
    tokens: u64,
}

#[derive(Debug)]
struct Limiter {
    requests: Bucket,
    tokens: Bucket,
    admissions: VecDeque<Admission>,
}

impl Limiter {
    fn new(rpm: u64, tpm: u64, now: Duration) -> Self {
        Limiter {
            requests: Bucket::new(rpm, 1, now),
            tokens: Bucket::new(tpm, 0, now),
            admissions: VecDeque::new(),
        }
    }

    fn enabled(&self) -> bool {
        !self.requests.unlimited() || !self.tokens.unlimited()
    }

    /// Replace the limits, with both buckets full.
    fn set(&mut self, rpm: u64, tpm: u64, now: Duration) {
        self.requests = Bucket::new(rpm, 1, now);
        self.tokens = Bucket::new(tpm, 0, now);
    }

    fn refill(&mut self, now: Duration) {
        self.requests.refill(now);
        self.tokens.refill(now);
    }

    /// Charge one request costing `tokens` at `now`, or say why not (then
    /// nothing is charged).
    fn check(&mut self, tokens: u64, now: Duration) -> Result<(), Rejection> {
        self.refill(now);
        let r_ok = self.requests.admits(1);
        let t_ok = self.tokens.admits(tokens);
        if r_ok && t_ok {
            self.requests.take(1);
            self.tokens.take(tokens);
            return Ok(());
        }
        let (rw, tw) = (self.requests.wait(1), self.tokens.wait(tokens));
        let (kind, bucket, requested) = if !r_ok && (t_ok || rw >= tw) {
            (LimitKind::Requests, &self.requests, 1)
        } else {
            (LimitKind::Tokens, &self.tokens, tokens)
        };
        Err(Rejection {
            kind,
            wait: rw.max(tw),
            limit: bucket.limit,
            remaining: bucket.remaining(),
            requested,
        })
    }

    fn headers(&self) -> RateHeaders {
        RateHeaders {
            requests: self.requests.header(),
            tokens: self.tokens.header(),
        }
    }

    fn record(&mut self, a: Admission) {
        if self.admissions.len() >= MAX_ADMISSIONS {
            self.admissions.pop_front();
        }
        self.admissions.push_back(a);
    }
}

fn hdr_string(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Load the tokenizer vocabularies so the first limited request does not pay
/// for it (a few hundred ms).
fn warm_up_estimator() {
    use llmproxy::sched::tokens::Counter;
    Counter::warm_up(&[Counter::O200k, Counter::Cl100k]);
}

/// The 429 answer for a rejected request.
fn rate_limited_response(state: &State, r: &Rejection, rh: &RateHeaders) -> Response<MockBody> {
    let (what, unit) = match r.kind {
        LimitKind::Requests => ("requests", "RPM"),
        LimitKind::Tokens => ("tokens", "TPM"),
    };
    let message = format!(
        "Rate limit reached for {what} per min ({unit}): Limit {}, Remaining {}, Requested {}. Please try again in {}.",
        r.limit,
        r.remaining,
        r.requested,
        openai_duration(r.wait)
    );
    let mut resp = error_response(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        &message,
        what,
        "rate_limit_exceeded",
    );
    let ms = r.wait.as_nanos().div_ceil(1_000_000).max(1);
    let secs = ms.div_ceil(1000).max(1);
    let h = resp.headers_mut();
    h.insert(
        "retry-after",
        HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
    );
    h.insert(
        "retry-after-ms",
        HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
    );
    rh.apply(h);
    resp
}

/// Apply the rate limits to a request that has just been read. `Ok(None)`:
/// no limit set (no lock taken, nothing estimated); `Ok(Some(headers))`: go
/// on, sending these headers; `Err(resp)`: answer 429 now.
fn rate_limit(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    endpoint: Option<Endpoint>,
    body: &[u8],
    parsed: Option<&ReqBody>,
) -> Result<Option<RateHeaders>, Box<Response<MockBody>>> {
    if !state.limits_on.load(Ordering::Relaxed) {
        return Ok(None);
    }
    use llmproxy::route::Endpoint as Ep;
    let ep = match endpoint {
        _ if *method != Method::POST => None,
        Some(Endpoint::Chat) => Some(Ep::ChatCompletions),
        Some(Endpoint::Completions) => Some(Ep::Completions),
        Some(Endpoint::Embeddings) => Some(Ep::Embeddings),
        Some(Endpoint::Responses) => Some(Ep::Responses),
        Some(Endpoint::Models) | None => None,
    };
    let Some(ep) = ep else {
        // Not a limited request: only report the buckets.
        let Ok(mut l) = state.limiter.lock() else {
            return Ok(None);
        };
        l.refill(state.start.elapsed());
        return Ok(Some(l.headers()));
    };
    let model = parsed.and_then(|p| p.model.as_str()).unwrap_or("");
    let tokens =
        llmproxy::sched::tokens::estimate_raw(ep, body, model, state.default_max_tokens).total();
    let Ok(mut l) = state.limiter.lock() else {
        return Ok(None);
    };
    let now = state.start.elapsed();
    match l.check(tokens, now) {
        Ok(()) => {
            let rh = l.headers();
            if l.enabled() {
                l.record(Admission {
                    t_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
                    priority: hdr_string(headers, "x-llmproxy-priority"),
                    seq: hdr_string(headers, "x-test-seq"),
                    tokens,
                });
                drop(l);
                state.admitted.fetch_add(1, Ordering::Relaxed);
                state.admitted_tokens.fetch_add(tokens, Ordering::Relaxed);
            }
            Ok(Some(rh))
        }
        Err(r) => {
            let rh = l.headers();
            drop(l);
            state.rate_limited.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(rate_limited_response(state, &r, &rh)))
        }
    }
}

// ---------------------------------------------------------------------------
// Control endpoints
// ---------------------------------------------------------------------------

fn control(
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
            });
            if let (Ok(b), Some(o)) = (state.batch.lock(), body.as_object_mut()) {
                o.insert("files_uploaded".to_owned(), b.files_uploaded.into());
                o.insert("batches_created".to_owned(), b.batches_created.into());
                o.insert("batches_cancelled".to_owned(), b.batches_cancelled.into());
                o.insert("batch_polls".to_owned(), b.batch_polls.into());
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
                l.admissions.clear();
            }
            state.rate_limited.store(0, Ordering::Relaxed);
            state.admitted.store(0, Ordering::Relaxed);
            state.admitted_tokens.store(0, Ordering::Relaxed);
            if let Ok(mut b) = state.batch.lock() {
                // Ids stay unique across resets: a stale id held by a client never names a new
                // object.
                let next_id = b.next_id;
                *b = BatchStore::default();
                b.next_id = next_id;
            }
            json_response(state, StatusCode::OK, r#"{"ok":true}"#)
        }
        "/__mock/batch" => batch_control(state, method, body),
        "/__mock/batches" => {
            let now = mock_ms(state);
            let list = match state.batch.lock() {
                Ok(mut b) => {
                    b.settle(now);
                    b.batches.iter().map(|x| x.mock_view(now)).collect()
                }
                Err(_) => Vec::new(),
            };
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
                Ok(l) => serde_json::to_string(&l.admissions).unwrap_or_else(|_| "[]".to_owned()),
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
            if rpm.is_some_and(|n| n > 0)
                || tpm.is_some_and(|n| n > 0)
                || state.limits_on.load(Ordering::Relaxed)
            {
                warm_up_estimator();
            }
            let Ok(mut l) = state.limiter.lock() else {
                return error_response(
                    state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "limiter lock poisoned",
                    "server_error",
                    "poisoned",
                );
            };
            let rpm = rpm.unwrap_or(l.requests.limit);
            let tpm = tpm.unwrap_or(l.tokens.limit);
            l.set(rpm, tpm, state.start.elapsed());
            state.limits_on.store(l.enabled(), Ordering::Relaxed);
            drop(l);
            json_response(
                state,
                StatusCode::OK,
                format!(r#"{{"ok":true,"rpm":{rpm},"tpm":{tpm}}}"#),
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

fn count_path(state: &State, path: &str) {
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

fn record(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    parsed: Option<&ReqBody>,
) {
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
    let rec = Recorded {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        headers: hmap,
        body_len: body.len(),
        model: parsed.map(|p| p.model.clone()).unwrap_or(Value::Null),
        stream: parsed.is_some_and(ReqBody::is_stream),
        body_prefix: String::from_utf8_lossy(&body[..body.len().min(BODY_PREFIX_LEN)]).into_owned(),
    };
    if let Ok(mut r) = state.records.lock() {
        if r.len() >= MAX_RECORDS {
            r.pop_front();
        }
        r.push_back(rec);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
}

/// An OpenAI path (with or without `/v1`).
fn openai_endpoint(path: &str) -> Option<Endpoint> {
    match path.strip_prefix("/v1").unwrap_or(path) {
        "/chat/completions" => Some(Endpoint::Chat),
        "/completions" => Some(Endpoint::Completions),
        "/embeddings" => Some(Endpoint::Embeddings),
        "/responses" => Some(Endpoint::Responses),
        "/models" => Some(Endpoint::Models),
        _ => None,
    }
}

/// A request on Azure's paths (`/openai/...`).
struct AzureRoute {
    endpoint: Option<Endpoint>,
    /// The deployment segment, percent-decoded.
    deployment: Option<String>,
    /// Dated paths need `?api-version=`; the v1 surface does not.
    needs_version: bool,
    api_version: Option<String>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn azure_route(path: &str, query: Option<&str>) -> Option<AzureRoute> {
    if path != "/openai" && !path.starts_with("/openai/") {
        return None;
    }
    let api_version = query_param(query, "api-version")
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let (endpoint, deployment, needs_version) =
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            match rest.split_once('/') {
                Some((d, op)) if !d.is_empty() => {
                    let ep = match op {
                        "chat/completions" => Some(Endpoint::Chat),
                        "completions" => Some(Endpoint::Completions),
                        "embeddings" => Some(Endpoint::Embeddings),
                        _ => None,
                    };
                    (ep, Some(percent_decode(d)), true)
                }
                _ => (None, None, true),
            }
        } else if path == "/openai/models" {
            (Some(Endpoint::Models), None, true)
        } else if let Some(rest) = path.strip_prefix("/openai/v1") {
            (openai_endpoint(rest), None, false)
        } else {
            (None, None, true)
        };
    Some(AzureRoute {
        endpoint,
        deployment,
        needs_version,
        api_version,
    })
}

/// Azure's own refusals, before anything else: no `api-version` or an unknown path (404), no key
/// (401).
fn azure_reject(
    state: &State,
    az: &AzureRoute,
    batch_api: bool,
    headers: &HeaderMap,
) -> Option<Response<MockBody>> {
    if (az.endpoint.is_none() && !batch_api) || (az.needs_version && az.api_version.is_none()) {
        return Some(azure_error(
            state,
            StatusCode::NOT_FOUND,
            "Resource not found",
        ));
    }
    let has_key = headers.get("api-key").is_some_and(|v| !v.is_empty())
        || headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    if !has_key {
        return Some(azure_error(
            state,
            StatusCode::UNAUTHORIZED,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        ));
    }
    None
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();

    if path.starts_with("/__mock/") {
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        return Ok(control(
            &state,
            &parts.method,
            path,
            parts.uri.query(),
            &body,
        ));
    }

    state.requests.fetch_add(1, Ordering::Relaxed);
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(state.clone());
    count_path(&state, path);

    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };

    if is_anthropic_path(path) {
        let mut resp = anthropic_handle(&state, &parts, body).await;
        resp.body_mut()._guard = Some(guard);
        return Ok(resp);
    }

    let azure = azure_route(path, parts.uri.query());
    let endpoint = match &azure {
        Some(az) => az.endpoint,
        None => openai_endpoint(path),
    };
    let batch_route = match &azure {
        Some(_) => azure_batch_route(path),
        None => batch_api_route(path).map(|r| (r, BatchDialect::OpenAi)),
    };
    let parsed: Option<Result<ReqBody, serde_json::Error>> = (parts.method == Method::POST
        && (endpoint.is_some_and(|e| e != Endpoint::Models) || !body.is_empty()))
    .then(|| serde_json::from_slice::<ReqBody>(&body));

    if state.record {
        record(
            &state,
            &parts.method,
            path,
            parts.uri.query(),
            &parts.headers,
            &body,
            parsed.as_ref().and_then(|r| r.as_ref().ok()),
        );
    }

    if let Some(mut resp) = azure
        .as_ref()
        .and_then(|az| azure_reject(&state, az, batch_route.is_some(), &parts.headers))
    {
        resp.body_mut()._guard = Some(guard);
        return Ok(resp);
    }

    let rate_headers = match rate_limit(
        &state,
        &parts.method,
        &parts.headers,
        endpoint,
        &body,
        parsed.as_ref().and_then(|r| r.as_ref().ok()),
    ) {
        Ok(rh) => rh,
        Err(mut resp) => {
            resp.body_mut()._guard = Some(guard);
            return Ok(*resp);
        }
    };

    let latency = hdr_u64(&parts.headers, "x-mock-latency-ms")
        .unwrap_or_else(|| state.latency_ms.load(Ordering::Relaxed));
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let creating = parts.method == Method::POST
        && matches!(batch_route, Some((BatchRoute::Batches, _)))
        && fail_code(u64::from(state.fail_status.load(Ordering::Relaxed))).is_none();
    let (create_delay_ms, create_hang, create_then_fail) = match state.batch.lock() {
        Ok(b) if creating => (
            b.config.create_delay_ms,
            b.config.create_hang,
            b.config.create_then_fail,
        ),
        _ => (0, false, None),
    };
    if create_hang {
        // Never created, never answered (until the client goes away).
        std::future::pending::<()>().await;
    }
    let mut resp = match batch_route {
        Some(route) => batch_api(
            &state,
            &parts.method,
            &parts.headers,
            route,
            parts.uri.query(),
            &body,
        ),
        None => respond(
            &state,
            &parts.method,
            &parts.headers,
            endpoint,
            azure.as_ref(),
            path,
            &body,
            parsed,
        ),
    };
    if azure.is_some() && resp.status().is_success() {
        // Azure sends these on every answer (no reset headers); the limiter's own, if any, win.
        let h = resp.headers_mut();
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("99"),
        );
        h.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("99000"),
        );
    }
    if let Some(rh) = rate_headers {
        rh.apply(resp.headers_mut());
    }
    if let Some(code) = create_then_fail.and_then(|c| StatusCode::from_u16(c).ok()) {
        if resp.status().is_success() {
            // Created; the answer is lost on the way.
            resp = mock_error(&state, code);
        }
    }
    if create_delay_ms > 0 {
        // The batch exists already; its creator hears of it this much later.
        tokio::time::sleep(Duration::from_millis(create_delay_ms)).await;
    }
    resp.body_mut()._guard = Some(guard);
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
fn respond(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    endpoint: Option<Endpoint>,
    azure: Option<&AzureRoute>,
    path: &str,
    body: &[u8],
    parsed: Option<Result<ReqBody, serde_json::Error>>,
) -> Response<MockBody> {
    let fail = fail_code(u64::from(state.fail_status.load(Ordering::Relaxed)))
        .or_else(|| hdr_u64(headers, "x-mock-status").and_then(fail_code));
    if let Some(code) = fail {
        return match azure {
            Some(az) => azure_mock_error(state, code, headers, az),
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

// ---------------------------------------------------------------------------
// Echo mode
// ---------------------------------------------------------------------------

/// The text of the last `user` message of a chat body: its string content, or its `text` parts
/// joined. `None` when there is none (the answer keeps its default content).
fn echo_text(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Messages {
        #[serde(default)]
        messages: Vec<Value>,
    }
    let m: Messages = serde_json::from_slice(body).ok()?;
    let last = m.messages.iter().rev().find(|m| m["role"] == "user")?;
    match &last["content"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect(),
        ),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Files and Batch API (`/v1/files`, `/v1/batches`)
// ---------------------------------------------------------------------------

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
enum BatchDialect {
    /// `/v1/files`, `/v1/batches` (also without `/v1`): lines `/v1/...`.
    OpenAi,
    /// Azure's dated API, `/openai/files?api-version=V`: lines `/chat/completions`, ...
    AzureDated,
    /// Azure's v1 API, `/openai/v1/files`: either form.
    AzureV1,
}

impl BatchDialect {
    fn accepts(self, url: &str) -> bool {
        match self {
            BatchDialect::OpenAi => BATCH_ENDPOINTS.contains(&url),
            BatchDialect::AzureDated => AZURE_BATCH_ENDPOINTS.contains(&url),
            BatchDialect::AzureV1 => {
                BATCH_ENDPOINTS.contains(&url) || AZURE_BATCH_ENDPOINTS.contains(&url)
            }
        }
    }

    fn accepted(self) -> String {
        match self {
            BatchDialect::OpenAi => BATCH_ENDPOINTS.join(", "),
            BatchDialect::AzureDated => AZURE_BATCH_ENDPOINTS.join(", "),
            BatchDialect::AzureV1 => {
                format!(
                    "{}, {}",
                    BATCH_ENDPOINTS.join(", "),
                    AZURE_BATCH_ENDPOINTS.join(", ")
                )
            }
        }
    }
}
/// OpenAI's limit of requests in one batch input file.
const MAX_BATCH_LINES: usize = 50_000;
const MAX_METADATA_PAIRS: usize = 16;
/// `expires_at` of a batch: creation + its 24 h completion window.
const COMPLETION_WINDOW_SECS: u64 = 24 * 3600;

/// How a batch ends when nobody cancels it (`POST /__mock/batch` `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum BatchOutcome {
    Completed,
    Failed,
    Expired,
}

/// `POST /__mock/batch` settings; each batch keeps the values current at its creation.
#[derive(Clone, Debug, Serialize)]
struct BatchConfig {
    complete_after_ms: u64,
    outcome: BatchOutcome,
    omit_custom_ids: Vec<String>,
    fail_custom_ids: BTreeMap<String, u16>,
    cancel_after_ms: u64,
    reverse_output: bool,
    /// `POST /batches` creates the batch at once and answers this much later.
    create_delay_ms: u64,
    /// `POST /batches` never creates anything and never answers.
    create_hang: bool,
    /// `POST /batches` creates the batch, then answers this 5xx instead of the Batch object.
    create_then_fail: Option<u16>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            complete_after_ms: 300,
            outcome: BatchOutcome::Completed,
            omit_custom_ids: Vec::new(),
            fail_custom_ids: BTreeMap::new(),
            cancel_after_ms: 50,
            reverse_output: false,
            create_delay_ms: 0,
            create_hang: false,
            create_then_fail: None,
        }
    }
}

impl BatchConfig {
    /// Apply the fields of `patch` (`null` restores a field's default); nothing changes on error.
    fn patched(&self, patch: &serde_json::Map<String, Value>) -> Result<BatchConfig, String> {
        let d = BatchConfig::default();
        let mut c = self.clone();
        let ms = |k: &str, v: &Value| {
            v.as_u64()
                .ok_or_else(|| format!("{k} must be a non-negative integer (ms) or null"))
        };
        for (k, v) in patch {
            let null = v.is_null();
            match k.as_str() {
                "complete_after_ms" if null => c.complete_after_ms = d.complete_after_ms,
                "complete_after_ms" => c.complete_after_ms = ms(k, v)?,
                "cancel_after_ms" if null => c.cancel_after_ms = d.cancel_after_ms,
                "cancel_after_ms" => c.cancel_after_ms = ms(k, v)?,
                "outcome" => {
                    c.outcome = match v.as_str() {
                        _ if null => d.outcome,
                        Some("completed") => BatchOutcome::Completed,
                        Some("failed") => BatchOutcome::Failed,
                        Some("expired") => BatchOutcome::Expired,
                        _ => return Err("outcome must be completed, failed or expired".into()),
                    }
                }
                "omit_custom_ids" if null => c.omit_custom_ids = Vec::new(),
                "omit_custom_ids" => {
                    c.omit_custom_ids = serde_json::from_value(v.clone())
                        .map_err(|_| "omit_custom_ids must be an array of strings".to_owned())?
                }
                "fail_custom_ids" if null => c.fail_custom_ids = BTreeMap::new(),
                "fail_custom_ids" => {
                    let m: BTreeMap<String, u16> = serde_json::from_value(v.clone())
                        .map_err(|_| "fail_custom_ids must map custom_id to a status".to_owned())?;
                    if let Some((id, s)) = m.iter().find(|(_, s)| !(400..=599).contains(*s)) {
                        return Err(format!("fail_custom_ids[{id}]: {s} is not in 400..=599"));
                    }
                    c.fail_custom_ids = m;
                }
                "reverse_output" => c.reverse_output = v.as_bool().unwrap_or(d.reverse_output),
                "create_delay_ms" if null => c.create_delay_ms = d.create_delay_ms,
                "create_delay_ms" => c.create_delay_ms = ms(k, v)?,
                "create_then_fail" if null => c.create_then_fail = None,
                "create_then_fail" => match v.as_u64() {
                    Some(st @ 500..=599) => c.create_then_fail = Some(st as u16),
                    _ => return Err("create_then_fail must be a status 500..=599 or null".into()),
                },
                "create_hang" if null => c.create_hang = d.create_hang,
                "create_hang" => {
                    c.create_hang = v
                        .as_bool()
                        .ok_or_else(|| "create_hang must be a boolean or null".to_owned())?
                }
                other => {
                    return Err(format!(
                        "unknown field {other} (complete_after_ms, outcome, omit_custom_ids, fail_custom_ids, cancel_after_ms, reverse_output, create_delay_ms, create_hang, create_then_fail)"
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// A stored file: an uploaded batch input, or a batch's output / error file.
struct StoredFile {
    id: String,
    filename: String,
    purpose: &'static str,
    created_at: u64,
    content: Bytes,
    /// The validated requests of a `batch` input file.
    input: Option<Arc<BatchInput>>,
}

impl StoredFile {
    fn object(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": "file",
            "bytes": self.content.len(),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": null,
            "status_details": null,
        })
    }
}

/// The requests of a validated batch input file.
struct BatchInput {
    url: String,
    model: String,
    /// `(custom_id, body)` in file order.
    lines: Vec<(String, Value)>,
}

/// One request of a batch, answered when the batch is created and revealed as it "runs".
struct BatchLine {
    custom_id: String,
    status: u16,
    /// The answer's JSON, exactly as the synchronous endpoint would send it.
    body: Bytes,
    line_id: String,
    request_id: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

/// A batch. Its progress is a pure function of the time since creation (ms on the mock's clock)
/// and of the cancel time, so every observer sees the same consistent state; the output and error
/// files are written on the first look after it ends (`BatchStore::settle`).
struct Batch {
    id: String,
    endpoint: String,
    input_file_id: String,
    model: String,
    metadata: Value,
    /// Creation, in ms on the mock's clock and as Unix ms.
    t0_ms: u64,
    created_unix_ms: u64,
    cfg: BatchConfig,
    lines: Vec<BatchLine>,
    /// When cancel was accepted, in ms since creation.
    cancel_ms: Option<u64>,
    cancel_calls: u64,
    polls: u64,
    settled: bool,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
}

impl Batch {
    fn validated_ms(&self) -> u64 {
        self.cfg.complete_after_ms / 10
    }

    fn finalizing_ms(&self) -> u64 {
        self.cfg.complete_after_ms * 9 / 10
    }

    /// Lines that run if nothing stops the batch: all, the first half when it expires, none when
    /// it fails.
    fn runnable(&self) -> usize {
        match self.cfg.outcome {
            BatchOutcome::Completed => self.lines.len(),
            BatchOutcome::Expired => self.lines.len() / 2,
            BatchOutcome::Failed => 0,
        }
    }

    /// When runnable line `i` finishes: evenly spread, in file order, over the in-progress phase.
    fn line_done_ms(&self, i: usize, runnable: usize) -> u64 {
        let (v, f) = (self.validated_ms(), self.finalizing_ms());
        v + (f - v) * (i as u64 + 1) / (runnable.max(1) as u64)
    }

    /// Lines finished at `e` ms after creation (a prefix of the file; frozen by a cancel).
    fn finished(&self, e: u64) -> usize {
        let stop = self.cancel_ms.map_or(e, |c| e.min(c));
        let k = self.runnable();
        (0..k)
            .take_while(|&i| self.line_done_ms(i, k) <= stop)
            .count()
    }

    /// The status nobody cancelled.
    fn natural_status(&self, e: u64) -> BatchStatus {
        let t = self.cfg.complete_after_ms;
        match self.cfg.outcome {
            _ if e >= t => match self.cfg.outcome {
                BatchOutcome::Completed => BatchStatus::Completed,
                BatchOutcome::Failed => BatchStatus::Failed,
                BatchOutcome::Expired => BatchStatus::Expired,
            },
            BatchOutcome::Failed => BatchStatus::Validating,
            _ if e < self.validated_ms() => BatchStatus::Validating,
            BatchOutcome::Completed if e >= self.finalizing_ms() => BatchStatus::Finalizing,
            _ => BatchStatus::InProgress,
        }
    }

    fn status(&self, e: u64) -> BatchStatus {
        match self.cancel_ms {
            Some(c) if e >= c + self.cfg.cancel_after_ms => BatchStatus::Cancelled,
            Some(c) if e >= c => BatchStatus::Cancelling,
            _ => self.natural_status(e),
        }
    }

    /// When the batch reaches its terminal status (ms since creation).
    fn end_ms(&self) -> u64 {
        match self.cancel_ms {
            Some(c) => c + self.cfg.cancel_after_ms,
            None => self.cfg.complete_after_ms,
        }
    }

    /// `(completed, failed)` among the lines finished at `e`.
    fn counts(&self, e: u64) -> (usize, usize) {
        let done = &self.lines[..self.finished(e)];
        let ok = done.iter().filter(|l| l.status < 300).count();
        (ok, done.len() - ok)
    }

    /// The Batch object at `e` ms after creation.
    fn object(&self, e: u64) -> Value {
        let status = self.status(e);
        let unix = |off: u64| Value::from((self.created_unix_ms + off) / 1000);
        // A phase's time is set once it has been reached (and not cut off by a cancel).
        let reached = |off: u64| off <= e && self.cancel_ms.is_none_or(|c| off <= c);
        let stamp = |cond: bool, off: u64| {
            if cond && reached(off) {
                unix(off)
            } else {
                Value::Null
            }
        };
        let t = self.cfg.complete_after_ms;
        let outcome = self.cfg.outcome;
        let (completed, failed) = self.counts(e);
        let total = if matches!(status, BatchStatus::Validating | BatchStatus::Failed) {
            0
        } else {
            self.lines.len()
        };
        let (completed, failed) = if total == 0 {
            (0, 0)
        } else {
            (completed, failed)
        };
        let errors = if status == BatchStatus::Failed {
            serde_json::json!({"object": "list", "data": [{
                "code": "mock_failed",
                "message": "The batch failed (mock outcome \"failed\").",
                "param": null,
                "line": null,
            }]})
        } else {
            Value::Null
        };
        serde_json::json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_unix_ms / 1000,
            "in_progress_at": stamp(outcome != BatchOutcome::Failed, self.validated_ms()),
            "expires_at": self.created_unix_ms / 1000 + COMPLETION_WINDOW_SECS,
            "finalizing_at": stamp(outcome == BatchOutcome::Completed, self.finalizing_ms()),
            "completed_at": stamp(outcome == BatchOutcome::Completed, t),
            "failed_at": stamp(outcome == BatchOutcome::Failed, t),
            "expired_at": stamp(outcome == BatchOutcome::Expired, t),
            "cancelling_at": self.cancel_ms.map_or(Value::Null, unix),
            "cancelled_at": match self.cancel_ms {
                Some(c) if status == BatchStatus::Cancelled => unix(c + self.cfg.cancel_after_ms),
                _ => Value::Null,
            },
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": self.metadata,
        })
    }

    /// What `GET /__mock/batches` shows of the batch at `e`.
    fn mock_view(&self, now: u64) -> Value {
        let e = now.saturating_sub(self.t0_ms);
        let (completed, failed) = self.counts(e);
        serde_json::json!({
            "id": self.id,
            "status": self.status(e).as_str(),
            "endpoint": self.endpoint,
            "model": self.model,
            "input_file_id": self.input_file_id,
            "lines": self.lines.len(),
            "custom_ids": self.lines.iter().map(|l| l.custom_id.as_str()).collect::<Vec<_>>(),
            "finished": completed + failed,
            "polls": self.polls,
            "cancel_called": self.cancel_calls > 0,
            "cancel_calls": self.cancel_calls,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "metadata": self.metadata,
            "config": self.cfg,
        })
    }

    /// The output and error files' contents once the batch has ended: lines that ran go to the
    /// output file (2xx) or the error file (with their status and error body); lines that never
    /// ran (expired or cancelled batch) go to the error file with `response: null`.
    fn result_files(&self) -> (String, String) {
        let done = self.finished(self.end_ms());
        let never_ran = match self.status(self.end_ms()) {
            BatchStatus::Expired => Some((
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )),
            BatchStatus::Cancelled => Some((
                "batch_cancelled",
                "This request was not executed because the batch was cancelled.",
            )),
            _ => None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for (i, l) in self.lines.iter().enumerate() {
            if self.cfg.omit_custom_ids.contains(&l.custom_id) {
                continue;
            }
            let id = serde_json::to_string(&l.custom_id).unwrap_or_default();
            if i < done {
                let body = String::from_utf8_lossy(&l.body);
                let line = format!(
                    r#"{{"id":"{}","custom_id":{id},"response":{{"status_code":{},"request_id":"{}","body":{body}}},"error":null}}"#,
                    l.line_id, l.status, l.request_id
                );
                if l.status < 300 {
                    out.push(line);
                } else {
                    err.push(line);
                }
            } else if let Some((code, message)) = never_ran {
                err.push(format!(
                    r#"{{"id":"{}","custom_id":{id},"response":null,"error":{{"code":"{code}","message":"{message}"}}}}"#,
                    l.line_id
                ));
            }
        }
        if self.cfg.reverse_output {
            out.reverse();
            err.reverse();
        }
        let jsonl = |v: Vec<String>| {
            v.into_iter().fold(String::new(), |mut s, l| {
                s.push_str(&l);
                s.push('\n');
                s
            })
        };
        (jsonl(out), jsonl(err))
    }
}

/// Every file and batch, the `/__mock/batch` settings and the batch figures of `/__mock/stats`.
#[derive(Default)]
struct BatchStore {
    config: BatchConfig,
    files: Vec<StoredFile>,
    batches: Vec<Batch>,
    next_id: u64,
    files_uploaded: u64,
    batches_created: u64,
    batches_cancelled: u64,
    batch_polls: u64,
}

impl BatchStore {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn file(&self, id: &str) -> Option<&StoredFile> {
        self.files.iter().find(|f| f.id == id)
    }

    fn batch_index(&self, id: &str) -> Option<usize> {
        self.batches.iter().position(|b| b.id == id)
    }

    /// Write the output / error files of the batches that have ended by `now`.
    fn settle(&mut self, now: u64) {
        let mut new_files = Vec::new();
        for b in self.batches.iter_mut().filter(|b| !b.settled) {
            let e = now.saturating_sub(b.t0_ms);
            if !b.status(e).is_terminal() {
                continue;
            }
            b.settled = true;
            let (out, err) = b.result_files();
            let created_at = (b.created_unix_ms + b.end_ms()) / 1000;
            for (content, kind) in [(out, "output"), (err, "error")] {
                if content.is_empty() {
                    continue;
                }
                self.next_id += 1;
                let id = format!("file-mock{}", self.next_id);
                if kind == "output" {
                    b.output_file_id = Some(id.clone());
                } else {
                    b.error_file_id = Some(id.clone());
                }
                new_files.push(StoredFile {
                    id,
                    filename: format!("{}_{kind}.jsonl", b.id),
                    purpose: "batch_output",
                    created_at,
                    content: Bytes::from(content),
                    input: None,
                });
            }
        }
        self.files.extend(new_files);
    }
}

/// A Files or Batch API path (with or without `/v1`).
#[derive(Clone, Copy)]
enum BatchRoute<'a> {
    Files,
    File(&'a str),
    FileContent(&'a str),
    Batches,
    Batch(&'a str),
    BatchCancel(&'a str),
}

fn batch_api_route(path: &str) -> Option<BatchRoute<'_>> {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    let seg = |s: &str| !s.is_empty() && !s.contains('/');
    if p == "/files" {
        return Some(BatchRoute::Files);
    }
    if p == "/batches" {
        return Some(BatchRoute::Batches);
    }
    if let Some(rest) = p.strip_prefix("/files/") {
        return match rest.strip_suffix("/content") {
            Some(id) if seg(id) => Some(BatchRoute::FileContent(id)),
            _ if seg(rest) => Some(BatchRoute::File(rest)),
            _ => None,
        };
    }
    if let Some(rest) = p.strip_prefix("/batches/") {
        return match rest.strip_suffix("/cancel") {
            Some(id) if seg(id) => Some(BatchRoute::BatchCancel(id)),
            _ if seg(rest) => Some(BatchRoute::Batch(rest)),
            _ => None,
        };
    }
    None
}

/// A Files or Batch API path on Azure's surfaces: `/openai/v1/...` (v1) or `/openai/...`
/// (dated, `api-version` required).
fn azure_batch_route(path: &str) -> Option<(BatchRoute<'_>, BatchDialect)> {
    let is_batch = |rest: &str| {
        ["/files", "/batches"]
            .iter()
            .any(|p| rest == *p || rest.starts_with(&format!("{p}/")))
    };
    if let Some(rest) = path.strip_prefix("/openai/v1") {
        return is_batch(rest)
            .then(|| batch_api_route(rest))
            .flatten()
            .map(|r| (r, BatchDialect::AzureV1));
    }
    let rest = path.strip_prefix("/openai")?;
    is_batch(rest)
        .then(|| batch_api_route(rest))
        .flatten()
        .map(|r| (r, BatchDialect::AzureDated))
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

/// The status and body of a fully built answer.
fn full_body(resp: Response<MockBody>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    match resp.into_body().kind {
        Kind::Full(Some(b)) => (status, b),
        _ => (status, Bytes::new()),
    }
}

/// A part of a `multipart/form-data` body.
struct FormPart {
    name: String,
    filename: Option<String>,
    data: Bytes,
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<&str> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .split(';')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"'))
        })
        .filter(|b| !b.is_empty())
}

/// `name` and `filename` of a part's `Content-Disposition: form-data; ...` header.
fn form_disposition(head: &str) -> Option<(String, Option<String>)> {
    let value = head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    let (mut name, mut filename) = (None, None);
    for param in value.split(';').skip(1) {
        if let Some((k, v)) = param.split_once('=') {
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim() {
                "name" => name = Some(v),
                "filename" => filename = Some(v),
                _ => {}
            }
        }
    }
    Some((name?, filename))
}

/// Split a `multipart/form-data` body (RFC 7578) into its parts.
fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<FormPart>, String> {
    use memchr::memmem;
    let open = format!("--{boundary}");
    let close = format!("\r\n--{boundary}");
    let malformed = |what: &str| format!("Malformed multipart/form-data body: {what}.");
    let mut pos =
        memmem::find(body, open.as_bytes()).ok_or_else(|| malformed("no boundary"))? + open.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(malformed("a boundary is not followed by CRLF"));
        }
        let head_end = memmem::find(rest, b"\r\n\r\n").ok_or_else(|| malformed("part headers"))?;
        let head = std::str::from_utf8(&rest[2.min(head_end)..head_end])
            .map_err(|_| malformed("part headers are not UTF-8"))?;
        let data_start = pos + head_end + 4;
        let data_len = memmem::find(&body[data_start..], close.as_bytes())
            .ok_or_else(|| malformed("no closing boundary"))?;
        let (name, filename) =
            form_disposition(head).ok_or_else(|| malformed("a part has no form-data name"))?;
        parts.push(FormPart {
            name,
            filename,
            data: body.slice(data_start..data_start + data_len),
        });
        pos = data_start + data_len + close.len();
    }
}

/// A rejected batch input file: message and code (`param` is `file`).
type InputError = (String, &'static str);

/// Validate a batch input file (JSONL) as OpenAI describes it: one JSON object a line with a
/// unique `custom_id`, `method: POST`, a supported `url` (the same on every line) and a `body`
/// with a `model` (the same on every line). Blank lines are skipped.
fn validate_batch_input(content: &[u8], dialect: BatchDialect) -> Result<BatchInput, InputError> {
    let text = std::str::from_utf8(content)
        .map_err(|_| ("The file is not valid UTF-8.".to_owned(), "invalid_file"))?;
    let mut seen = std::collections::HashSet::new();
    let mut lines = Vec::new();
    let mut first: Option<(String, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |m: String, code: &'static str| Err((format!("Line {n}: {m}"), code));
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            return err(
                "this line is not parseable as valid JSON.".into(),
                "invalid_json_line",
            );
        };
        if !v.is_object() {
            return err(
                "each line must be a JSON object.".into(),
                "invalid_json_line",
            );
        }
        let custom_id = match v.get("custom_id").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => c.to_owned(),
            _ => {
                return err(
                    "'custom_id' is required and must be a non-empty string.".into(),
                    "missing_custom_id",
                )
            }
        };
        if !seen.insert(custom_id.clone()) {
            return err(
                format!("the custom_id '{custom_id}' is not unique in the file."),
                "duplicate_custom_id",
            );
        }
        if v.get("method").and_then(Value::as_str) != Some("POST") {
            return err("'method' must be 'POST'.".into(), "invalid_method");
        }
        let url = v.get("url").and_then(Value::as_str).unwrap_or("");
        if !dialect.accepts(url) {
            return err(
                format!("'url' must be one of {}.", dialect.accepted()),
                "invalid_url",
            );
        }
        let Some(body) = v.get("body").filter(|b| b.is_object()) else {
            return err("'body' must be a JSON object.".into(), "invalid_body");
        };
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m,
            _ => return err("'body.model' is required.".into(), "missing_model"),
        };
        match &first {
            None => first = Some((url.to_owned(), model.to_owned())),
            Some((u, _)) if u != url => {
                return err(
                    format!("every line must have the same 'url' (the first line has '{u}')."),
                    "url_mismatch",
                )
            }
            Some((_, m)) if m != model => {
                return err(
                    format!(
                        "every line must have the same 'body.model' (the first line has '{m}')."
                    ),
                    "model_mismatch",
                )
            }
            Some(_) => {}
        }
        lines.push((custom_id, body.clone()));
        if lines.len() > MAX_BATCH_LINES {
            return Err((
                format!("The file has more than {MAX_BATCH_LINES} requests."),
                "too_many_tasks",
            ));
        }
    }
    let Some((url, model)) = first else {
        return Err(("The file contains no requests.".into(), "empty_file"));
    };
    Ok(BatchInput { url, model, lines })
}

/// The answer the synchronous endpoint gives to `body` (no override headers), or the line's
/// configured failure.
fn batch_line_answer(
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
            chat(state, &g, &req)
        }
        "/embeddings" => embeddings(state, &g, &req),
        "/completions" => completions(state, &g, &req),
        _ => responses(state, &g, &req),
    };
    full_body(resp)
}

/// `POST /v1/files`.
fn upload_file(
    state: &State,
    store: &mut BatchStore,
    headers: &HeaderMap,
    body: &Bytes,
    dialect: BatchDialect,
) -> Response<MockBody> {
    let bad = |m: &str, param: &str, code: &str| {
        invalid(state, StatusCode::BAD_REQUEST, m, Some(param), Some(code))
    };
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = multipart_boundary(ct) else {
        return invalid(
            state,
            StatusCode::BAD_REQUEST,
            "Expected a multipart/form-data body (with a boundary).",
            None,
            Some("invalid_content_type"),
        );
    };
    let parts = match parse_multipart(body, boundary) {
        Ok(p) => p,
        Err(m) => {
            return invalid(
                state,
                StatusCode::BAD_REQUEST,
                &m,
                None,
                Some("invalid_multipart"),
            )
        }
    };
    let Some(purpose) = parts.iter().find(|p| p.name == "purpose") else {
        return bad(
            "Missing required parameter: 'purpose'.",
            "purpose",
            "missing_required_parameter",
        );
    };
    let purpose = String::from_utf8_lossy(&purpose.data);
    if purpose.trim() != "batch" {
        return bad(
            &format!(
                "Invalid value for 'purpose': '{}'. This mock supports only 'batch'.",
                purpose.trim()
            ),
            "purpose",
            "invalid_value",
        );
    }
    let Some(file) = parts.iter().find(|p| p.name == "file") else {
        return bad(
            "Missing required parameter: 'file'.",
            "file",
            "missing_required_parameter",
        );
    };
    let input = match validate_batch_input(&file.data, dialect) {
        Ok(i) => i,
        Err((m, code)) => return bad(&m, "file", code),
    };
    let id = format!("file-mock{}", store.next());
    let f = StoredFile {
        id,
        filename: file
            .filename
            .clone()
            .unwrap_or_else(|| "upload.jsonl".into()),
        purpose: "batch",
        created_at: now_secs(),
        content: file.data.clone(),
        input: Some(Arc::new(input)),
    };
    let obj = f.object();
    store.files.push(f);
    store.files_uploaded += 1;
    json_response(state, StatusCode::OK, obj.to_string())
}

/// `POST /v1/batches`.
fn create_batch(
    state: &State,
    store: &mut BatchStore,
    body: &[u8],
    now: u64,
    dialect: BatchDialect,
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
            let (status, body) = batch_line_answer(state, endpoint, custom_id, body, &cfg);
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
fn batch_api(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    (route, dialect): (BatchRoute<'_>, BatchDialect),
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
        (BatchRoute::Files, &Method::POST) => {
            upload_file(state, &mut store, headers, body, dialect)
        }
        (BatchRoute::Files, &Method::GET) => {
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
        (BatchRoute::File(id), &Method::GET) => match store.file(id) {
            Some(f) => json_response(state, StatusCode::OK, f.object().to_string()),
            None => no_file(id),
        },
        (BatchRoute::File(id), &Method::DELETE) => {
            match store.files.iter().position(|f| f.id == id) {
                Some(i) => {
                    store.files.remove(i);
                    let body = serde_json::json!({"id": id, "object": "file", "deleted": true});
                    json_response(state, StatusCode::OK, body.to_string())
                }
                None => no_file(id),
            }
        }
        (BatchRoute::FileContent(id), &Method::GET) => match store.file(id) {
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
        (BatchRoute::Batches, &Method::POST) => create_batch(state, &mut store, body, now, dialect),
        (BatchRoute::Batches, &Method::GET) => list_batches(state, &store, query, now),
        (BatchRoute::Batch(id), &Method::GET) => match store.batch_index(id) {
            Some(i) => {
                store.batch_polls += 1;
                let b = &mut store.batches[i];
                b.polls += 1;
                let obj = b.object(now.saturating_sub(b.t0_ms));
                json_response(state, StatusCode::OK, obj.to_string())
            }
            None => no_batch(id),
        },
        (BatchRoute::BatchCancel(id), &Method::POST) => match store.batch_index(id) {
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
fn batch_control(state: &State, method: &Method, body: &[u8]) -> Response<MockBody> {
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

// ---------------------------------------------------------------------------
// Anthropic Messages dialect (`POST /v1/messages`)
// ---------------------------------------------------------------------------

fn is_anthropic_path(path: &str) -> bool {
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
                    http::header::HeaderName::try_from(format!(
                        "anthropic-ratelimit-{name}-{what}"
                    )),
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

/// `s` cut into `n` pieces (at char boundaries; fewer when `s` is short).
fn split_pieces(s: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let size = s.len().div_ceil(n).max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + size).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
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
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        });
        return json_response(state, StatusCode::OK, body.to_string());
    }
    let mut frames = Vec::with_capacity(g.chunks + 7);
    let start = serde_json::json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": p, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
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
async fn anthropic_handle(
    state: &State,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<MockBody> {
    let path = parts.uri.path();
    let headers = &parts.headers;
    let parsed = serde_json::from_slice::<ReqBody>(&body).ok();
    if state.record {
        record(
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
    let rate = match rate_limit(
        state,
        &parts.method,
        headers,
        Some(Endpoint::Chat),
        &body,
        parsed.as_ref(),
    ) {
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
mod batch_api_tests {
    use super::*;

    #[test]
    fn multipart_parts_are_split() {
        let body = Bytes::from_static(
            b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{}\r\n--x\n{}\r\n--XyZ--\r\n",
        );
        let b = multipart_boundary("multipart/form-data; boundary=\"XyZ\"").unwrap();
        let parts = parse_multipart(&body, b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "purpose");
        assert_eq!(&parts[0].data[..], b"batch");
        assert_eq!(parts[1].filename.as_deref(), Some("a.jsonl"));
        assert_eq!(&parts[1].data[..], b"{}\r\n--x\n{}");
        assert!(multipart_boundary("application/json").is_none());
        assert!(parse_multipart(&Bytes::from_static(b"--XyZ\r\nno end"), "XyZ").is_err());
    }

    #[test]
    fn routes() {
        assert!(matches!(
            batch_api_route("/v1/files"),
            Some(BatchRoute::Files)
        ));
        assert!(matches!(
            batch_api_route("/files/f-1"),
            Some(BatchRoute::File("f-1"))
        ));
        assert!(matches!(
            batch_api_route("/v1/files/f-1/content"),
            Some(BatchRoute::FileContent("f-1"))
        ));
        assert!(matches!(
            batch_api_route("/v1/batches/b1/cancel"),
            Some(BatchRoute::BatchCancel("b1"))
        ));
        assert!(batch_api_route("/v1/files/a/b").is_none());
        assert!(batch_api_route("/v1/chat/completions").is_none());
    }

    fn batch(n: usize, cfg: BatchConfig) -> Batch {
        Batch {
            id: "batch_t".into(),
            endpoint: "/v1/chat/completions".into(),
            input_file_id: "file-t".into(),
            model: "m".into(),
            metadata: Value::Null,
            t0_ms: 0,
            created_unix_ms: 1_700_000_000_000,
            cfg,
            lines: (0..n)
                .map(|i| BatchLine {
                    custom_id: format!("c{i}"),
                    status: 200,
                    body: Bytes::from_static(b"{}"),
                    line_id: format!("l{i}"),
                    request_id: format!("r{i}"),
                })
                .collect(),
            cancel_ms: None,
            cancel_calls: 0,
            polls: 0,
            settled: false,
            output_file_id: None,
            error_file_id: None,
        }
    }

    #[test]
    fn timeline() {
        let cfg = BatchConfig {
            complete_after_ms: 1000,
            ..BatchConfig::default()
        };
        let mut b = batch(10, cfg.clone());
        let st = |b: &Batch, e| b.status(e);
        assert_eq!(st(&b, 0), BatchStatus::Validating);
        assert_eq!(st(&b, 100), BatchStatus::InProgress);
        assert_eq!(b.finished(100), 0);
        assert_eq!(b.finished(500), 5);
        assert_eq!(b.finished(900), 10);
        assert_eq!(st(&b, 900), BatchStatus::Finalizing);
        assert_eq!(st(&b, 1000), BatchStatus::Completed);
        b.cancel_ms = Some(500);
        assert_eq!(st(&b, 520), BatchStatus::Cancelling);
        assert_eq!(st(&b, 550), BatchStatus::Cancelled);
        assert_eq!(b.finished(5000), 5);
        let (out, err) = b.result_files();
        assert_eq!(out.lines().count(), 5);
        assert_eq!(err.lines().count(), 5);
        assert!(err.contains("batch_cancelled"));

        let b = batch(
            5,
            BatchConfig {
                outcome: BatchOutcome::Expired,
                ..cfg.clone()
            },
        );
        assert_eq!(st(&b, 1000), BatchStatus::Expired);
        assert_eq!(b.finished(1000), 2);
        let b = batch(
            5,
            BatchConfig {
                outcome: BatchOutcome::Failed,
                ..cfg.clone()
            },
        );
        assert_eq!(st(&b, 999), BatchStatus::Validating);
        assert_eq!(st(&b, 1000), BatchStatus::Failed);
        assert_eq!(b.object(1000)["request_counts"]["total"], 0);
        // No delay at all: done at once.
        let b = batch(
            3,
            BatchConfig {
                complete_after_ms: 0,
                ..cfg
            },
        );
        assert_eq!(st(&b, 0), BatchStatus::Completed);
        assert_eq!(b.finished(0), 3);
    }

    #[test]
    fn echo_takes_the_last_user_message() {
        let body = br#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}]}"#;
        assert_eq!(echo_text(body).as_deref(), Some("ab"));
        assert_eq!(echo_text(br#"{"messages":[]}"#), None);
        assert_eq!(echo_text(b"nope"), None);
    }
}

#[cfg(test)]
mod anthropic_dialect_tests {
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

    #[test]
    fn split_pieces_covers_the_string() {
        let s = r#"{"city":"Zürich"}"#;
        for n in 0..25 {
            let p = split_pieces(s, n);
            assert_eq!(p.concat(), s);
            assert!(p.len() <= n.max(1));
        }
        assert!(split_pieces("", 3).is_empty());
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

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

async fn serve(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let socket = if cli.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(cli.listen)?;
    let listener = socket.listen(65_535)?;
    let addr = listener.local_addr()?;

    let state = Arc::new(State {
        name: HeaderValue::from_str(&cli.name)?,
        ttft_ms: cli.ttft_ms,
        chunks: cli.chunks,
        chunk_interval_ms: cli.chunk_interval_ms,
        tokens_per_sec: cli.tokens_per_sec,
        response_bytes: cli.response_bytes,
        embedding_dim: cli.embedding_dim,
        record: !cli.no_record,
        latency_ms: AtomicU64::new(cli.latency_ms),
        fail_status: AtomicU16::new(cli.fail_status),
        fail_code: cli.fail_code.clone(),
        fail_message: cli.fail_message.clone(),
        retry_after: cli.retry_after,
        ids: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        in_flight: AtomicI64::new(0),
        path_counts: Default::default(),
        other_paths: Mutex::new(HashMap::new()),
        records: Mutex::new(VecDeque::new()),
        start: std::time::Instant::now(),
        default_max_tokens: cli.default_max_tokens,
        limits_on: AtomicBool::new(cli.rpm > 0 || cli.tpm > 0),
        limiter: Mutex::new(Limiter::new(cli.rpm, cli.tpm, Duration::ZERO)),
        rate_limited: AtomicU64::new(0),
        admitted: AtomicU64::new(0),
        admitted_tokens: AtomicU64::new(0),
        echo: AtomicBool::new(cli.echo),
        batch: Mutex::new(BatchStore::default()),
    });
    if cli.rpm > 0 || cli.tpm > 0 {
        warm_up_estimator();
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }

    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // e.g. EMFILE under extreme load: back off briefly.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(serve(cli))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_capacity_is_one_second_worth() {
        let b = Bucket::new(60_000, 1, ms(0));
        assert_eq!(b.remaining(), 1000);
        assert!(b.is_full());
        // rpm below 60: the request bucket still holds one request.
        let b = Bucket::new(6, 1, ms(0));
        assert_eq!(b.remaining(), 1);
        // tpm below 60: capacity is a fraction of a token.
        let b = Bucket::new(30, 0, ms(0));
        assert_eq!(b.remaining(), 0);
        assert!(b.is_full());
    }

    #[test]
    fn bucket_drains_and_refills_continuously() {
        let mut b = Bucket::new(60_000, 1, ms(0)); // 1000/s, capacity 1000
        for _ in 0..1000 {
            assert!(b.admits(1));
            b.take(1);
        }
        assert_eq!(b.remaining(), 0);
        assert!(!b.admits(1));
        assert_eq!(b.wait(1), ms(1));
        assert_eq!(b.reset_in(), ms(1000));
        b.refill(ms(1));
        assert_eq!(b.remaining(), 1);
        assert!(b.admits(1));
        b.refill(ms(250));
        assert_eq!(b.remaining(), 250);
        assert_eq!(b.reset_in(), ms(750));
        // Never above capacity.
        b.refill(ms(10_000));
        assert_eq!(b.remaining(), 1000);
        assert!(b.is_full());
        assert_eq!(b.reset_in(), Duration::ZERO);
        // Time going backwards changes nothing.
        b.take(500);
        b.refill(ms(5_000));
        assert_eq!(b.remaining(), 500);
    }

    #[test]
    fn bucket_fractional_refill_is_exact() {
        // 6 rpm: 0.1 request per second, capacity 1.
        let mut b = Bucket::new(6, 1, ms(0));
        b.take(1);
        assert!(!b.admits(1));
        assert_eq!(b.wait(1), ms(10_000));
        b.refill(ms(9_999));
        assert!(!b.admits(1));
        b.refill(ms(10_000));
        assert!(b.admits(1));
        assert!(b.is_full());
    }

    #[test]
    fn oversized_request_passes_only_from_full_bucket() {
        // 6000 tpm: 100 tokens/s, capacity 100.
        let mut b = Bucket::new(6_000, 0, ms(0));
        assert!(b.admits(250));
        b.take(250);
        assert_eq!(b.remaining(), 0);
        assert!(!b.admits(1));
        // From -150 back to 1 token takes 1.51 s; to full 2.5 s.
        assert_eq!(b.wait(1), ms(1_510));
        assert_eq!(b.wait(250), ms(2_500));
        assert_eq!(b.reset_in(), ms(2_500));
        b.refill(ms(2_499));
        assert!(b.admits(50));
        assert!(!b.admits(250));
        b.refill(ms(2_500));
        assert!(b.admits(250));
    }

    #[test]
    fn unlimited_bucket_admits_everything() {
        let mut b = Bucket::new(0, 1, ms(0));
        assert!(b.unlimited());
        b.take(u64::MAX);
        assert!(b.admits(u64::MAX));
        assert_eq!(b.wait(1), Duration::ZERO);
        assert_eq!(b.header(), None);
    }

    #[test]
    fn limiter_rejection_consumes_nothing() {
        // 120 rpm (2/s, capacity 2), 600 tpm (10/s, capacity 10).
        let mut l = Limiter::new(120, 600, ms(0));
        assert!(l.enabled());
        assert_eq!(l.check(4, ms(0)), Ok(()));
        // Tokens: 6 left; a 7-token request is refused on tokens.
        let r = l.check(7, ms(0)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Tokens);
        assert_eq!(r.wait, ms(100));
        assert_eq!((r.limit, r.remaining, r.requested), (600, 6, 7));
        let h = l.headers();
        assert_eq!(
            h.requests,
            Some(RateHeader {
                limit: 120,
                remaining: 1,
                reset: ms(500)
            })
        );
        assert_eq!(
            h.tokens,
            Some(RateHeader {
                limit: 600,
                remaining: 6,
                reset: ms(400)
            })
        );
        assert_eq!(l.check(6, ms(0)), Ok(()));
        // Requests now empty: refused on requests (wait 500 ms > tokens' 100 ms).
        let r = l.check(1, ms(0)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Requests);
        assert_eq!(r.wait, ms(500));
        assert_eq!(l.check(1, ms(500)), Ok(()));
    }

    #[test]
    fn limiter_both_refusing_reports_longer_wait() {
        let mut l = Limiter::new(60, 60, ms(0)); // 1 req/s, 1 token/s
        assert_eq!(l.check(1, ms(0)), Ok(()));
        // Requests wait 1 s, tokens (needs 1 from 0) 1 s, ties go to requests.
        assert_eq!(l.check(1, ms(0)).unwrap_err().kind, LimitKind::Requests);
        let mut l = Limiter::new(60, 60, ms(0));
        assert_eq!(l.check(5, ms(0)), Ok(())); // full token bucket: goes to -4
        let r = l.check(1, ms(0)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Tokens);
        assert_eq!(r.wait, ms(5_000));
    }

    #[test]
    fn limiter_single_limit() {
        let mut l = Limiter::new(0, 6_000, ms(0));
        assert_eq!(l.headers().requests, None);
        for _ in 0..10 {
            assert_eq!(l.check(10, ms(0)), Ok(()));
        }
        assert!(l.check(10, ms(0)).is_err());
        l.set(0, 0, ms(0));
        assert!(!l.enabled());
        assert_eq!(l.check(1_000_000, ms(0)), Ok(()));
        l.set(60, 0, ms(0));
        assert_eq!(l.check(1_000_000, ms(0)), Ok(()));
        assert_eq!(l.check(0, ms(999)).unwrap_err().kind, LimitKind::Requests);
        assert_eq!(l.check(0, ms(1_000)), Ok(()));
    }

    #[test]
    fn admissions_are_bounded() {
        let mut l = Limiter::new(1, 0, ms(0));
        for i in 0..(MAX_ADMISSIONS as u64 + 5) {
            l.record(Admission {
                t_ms: i,
                priority: None,
                seq: None,
                tokens: 0,
            });
        }
        assert_eq!(l.admissions.len(), MAX_ADMISSIONS);
        assert_eq!(l.admissions.front().map(|a| a.t_ms), Some(5));
    }

    #[test]
    fn reset_durations_in_openai_format() {
        assert_eq!(openai_duration(Duration::ZERO), "0s");
        assert_eq!(openai_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(openai_duration(ms(250)), "250ms");
        assert_eq!(openai_duration(ms(1_000)), "1s");
        assert_eq!(openai_duration(ms(1_500)), "1.5s");
        assert_eq!(openai_duration(ms(17_565)), "17.565s");
        assert_eq!(openai_duration(ms(360_000)), "6m0s");
        assert_eq!(openai_duration(ms(90_250)), "1m30.25s");
        assert_eq!(openai_duration(ms(3_723_000)), "1h2m3s");
    }

    #[test]
    fn headers_are_written() {
        let mut h = HeaderMap::new();
        Limiter::new(0, 600, ms(0)).headers().apply(&mut h);
        assert_eq!(h.get("x-ratelimit-limit-tokens").unwrap(), "600");
        assert_eq!(h.get("x-ratelimit-remaining-tokens").unwrap(), "10");
        assert_eq!(h.get("x-ratelimit-reset-tokens").unwrap(), "0s");
        assert!(h.get("x-ratelimit-limit-requests").is_none());
    }
}
