//! The mock upstream's OpenAI Files and Batch API (`/v1/files`, `/v1/batches`), the same on
//! Azure's paths (`/openai/files?api-version=`, `/openai/v1/batches`, ...), and its `/__mock/batch`
//! controls, driven directly (the gateway's batch coalescer is tested against it elsewhere):
//! upload, create, poll, download; embeddings; failed, expired and cancelled batches; omitted and
//! failing lines; validation errors; the list's paging and metadata; creates answered late, never,
//! or with a 5xx after the batch was created.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::{assert_openai_error, client, get_json, Mock};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOUNDARY: &str = "----llmproxy-test-boundary-7d1c";

/// A `multipart/form-data` body of `(name, filename, data)` parts and its content type.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

fn jsonl(lines: &[Value]) -> Vec<u8> {
    lines
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

fn chat_body(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": text},
    ]})
}

fn chat_line(custom_id: &str, text: &str) -> Value {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
           "body": chat_body(text)})
}

/// `POST /v1/files` with these multipart parts.
async fn upload_parts(mock: &Mock, parts: &[(&str, Option<&str>, &[u8])]) -> reqwest::Response {
    let (ct, body) = multipart(parts);
    client()
        .post(format!("{}/files", mock.url()))
        .header("content-type", ct)
        .header("authorization", "Bearer sk-test")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn upload(mock: &Mock, content: &[u8]) -> reqwest::Response {
    upload_parts(
        mock,
        &[
            ("purpose", None, b"batch"),
            ("file", Some("in.jsonl"), content),
        ],
    )
    .await
}

/// Upload these lines; returns the File object.
async fn upload_ok(mock: &Mock, lines: &[Value]) -> Value {
    let r = upload(mock, &jsonl(lines)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn create(mock: &Mock, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/batches", mock.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Create a batch over `file_id`; returns the Batch object.
async fn create_ok(mock: &Mock, file_id: &Value, endpoint: &str) -> Value {
    let r = create(
        mock,
        json!({"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn get_batch(mock: &Mock, id: &Value) -> Value {
    get_json(format!("{}/batches/{}", mock.url(), id.as_str().unwrap())).await
}

/// Poll the batch (bounded) until `cond` holds.
async fn wait_batch(mock: &Mock, id: &Value, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let b = get_batch(mock, id).await;
        if cond(&b) {
            return b;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "batch stuck: {b}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_status(mock: &Mock, id: &Value, status: &str) -> Value {
    wait_batch(mock, id, |b| b["status"] == status).await
}

/// The lines of a file's content.
async fn content(mock: &Mock, file_id: &Value) -> Vec<Value> {
    let r = client()
        .get(format!(
            "{}/files/{}/content",
            mock.url(),
            file_id.as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn custom_ids(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect()
}

/// The synchronous answer to `body` on `path`, without the fields that differ per call.
async fn sync_answer(mock: &Mock, path: &str, body: &Value) -> Value {
    let r = client()
        .post(format!("{}{path}", mock.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    strip_ids(r.json().await.unwrap())
}

fn strip_ids(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
    }
    v
}

#[tokio::test]
async fn chat_batch_runs_to_completion_and_each_line_answers_its_request() {
    let mock = Mock::start("batch");
    mock.echo(true).await;
    let cfg = mock.batch_config(json!({"complete_after_ms": 200})).await;
    assert_eq!(cfg["complete_after_ms"], 200);
    assert_eq!(cfg["outcome"], "completed");

    let lines: Vec<Value> = (0..5)
        .map(|i| chat_line(&format!("req-{i}"), &format!("marker {i} ü \"q\"")))
        .collect();
    let input = jsonl(&lines);
    let file = upload_ok(&mock, &lines).await;
    assert!(file["id"].as_str().unwrap().starts_with("file-"), "{file}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], input.len());
    assert_eq!(file["filename"], "in.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["status"], "processed");
    assert!(file["created_at"].as_u64().unwrap() > 1_600_000_000);

    // The file can be read back as it was uploaded.
    let r = client()
        .get(format!(
            "{}/files/{}/content",
            mock.url(),
            file["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), input.as_slice());
    let again: Value = get_json(format!(
        "{}/files/{}",
        mock.url(),
        file["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(again, file);

    let r = create(
        &mock,
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
               "completion_window": "24h", "metadata": {"owner": "llmproxy"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert!(b["id"].as_str().unwrap().starts_with("batch_"), "{b}");
    assert_eq!(b["object"], "batch");
    assert_eq!(b["endpoint"], "/v1/chat/completions");
    assert_eq!(b["input_file_id"], file["id"]);
    assert_eq!(b["completion_window"], "24h");
    assert_eq!(b["status"], "validating");
    assert_eq!(b["metadata"], json!({"owner": "llmproxy"}));
    assert_eq!(b["model"], "gpt-4o-mini");
    assert!(b["output_file_id"].is_null() && b["error_file_id"].is_null());
    assert!(b["errors"].is_null());
    for k in [
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
    ] {
        assert!(b[k].is_null(), "{k}: {b}");
    }
    assert_eq!(
        b["expires_at"].as_u64().unwrap(),
        b["created_at"].as_u64().unwrap() + 86_400
    );

    let done = wait_status(&mock, &b["id"], "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 5, "completed": 5, "failed": 0})
    );
    for k in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(
            done[k].as_u64().unwrap() >= done["created_at"].as_u64().unwrap(),
            "{k}"
        );
    }
    assert!(done["error_file_id"].is_null(), "{done}");
    let out_id = &done["output_file_id"];
    let out_file: Value =
        get_json(format!("{}/files/{}", mock.url(), out_id.as_str().unwrap())).await;
    assert_eq!(out_file["purpose"], "batch_output");

    let out = content(&mock, out_id).await;
    assert_eq!(
        custom_ids(&out),
        ["req-0", "req-1", "req-2", "req-3", "req-4"]
    );
    let mut line_ids = std::collections::HashSet::new();
    for (i, l) in out.iter().enumerate() {
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"), "{l}");
        assert!(line_ids.insert(l["id"].as_str().unwrap().to_owned()));
        assert!(l["error"].is_null());
        assert_eq!(l["response"]["status_code"], 200);
        assert!(l["response"]["request_id"].is_string());
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("marker {i} ü \"q\"")
        );
        // Exactly what the synchronous endpoint answers to the same body.
        let sync = sync_answer(&mock, "/chat/completions", &lines[i]["body"]).await;
        assert_eq!(strip_ids(body.clone()), sync);
    }

    // The control view and the figures.
    let views = mock.batches().await;
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!(v["id"], b["id"]);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["lines"], 5);
    assert_eq!(
        v["custom_ids"],
        json!(["req-0", "req-1", "req-2", "req-3", "req-4"])
    );
    assert_eq!(v["cancel_called"], false);
    let polls = v["polls"].as_u64().unwrap();
    assert!(polls >= 1);
    let stats = mock.stats().await;
    assert_eq!(stats["files_uploaded"], 1);
    assert_eq!(stats["batches_created"], 1);
    assert_eq!(stats["batches_cancelled"], 0);
    assert_eq!(stats["batch_polls"], polls);

    // Recorded like every request (the upload as its body length and prefix).
    let rec = mock.requests_to("/v1/files").await;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0]["method"], "POST");
    assert_eq!(rec[0]["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(mock.requests_to("/v1/batches").await.len(), 1);

    // Listing, newest first.
    let list: Value = get_json(format!("{}/batches?limit=1", mock.url())).await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], b["id"]);
    assert_eq!(list["has_more"], false);

    // Deleting a file; it is gone afterwards.
    let r = client()
        .delete(format!("{}/files/{}", mock.url(), out_id.as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"id": out_id, "object": "file", "deleted": true}));
    let r = client()
        .get(format!(
            "{}/files/{}/content",
            mock.url(),
            out_id.as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 404, "file_not_found").await;

    // Reset clears batches, files, figures and settings.
    mock.reset().await;
    assert!(mock.batches().await.is_empty());
    assert_eq!(mock.stats().await["batches_created"], 0);
    let cfg = mock.batch_config(json!({})).await;
    assert_eq!(cfg["complete_after_ms"], 300);
    let r = client()
        .get(format!(
            "{}/files/{}",
            mock.url(),
            file["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sync_chat_keeps_its_default_content_unless_echo_is_on() {
    let mock = Mock::start("batch");
    let body = chat_body("hello there");
    let v = sync_answer(&mock, "/chat/completions", &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    mock.echo(true).await;
    let v = sync_answer(&mock, "/chat/completions", &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], "hello there");
    // Text parts are joined; a stream spreads the echo over its chunks.
    let parts = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a\"b "}, {"type": "text", "text": "c"}]}], "stream": true});
    let text = client()
        .post(format!("{}/chat/completions", mock.url()))
        .json(&parts)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let joined: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(joined, "a\"b c");
    mock.echo(false).await;
    let v = sync_answer(&mock, "/chat/completions", &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
}

#[tokio::test]
async fn embeddings_batch_answers_as_the_sync_endpoint() {
    let mock = Mock::start("batch");
    mock.batch_config(json!({"complete_after_ms": 50})).await;
    let bodies = [
        json!({"model": "text-embedding-3-small", "input": "one"}),
        json!({"model": "text-embedding-3-small", "input": ["two", "three"]}),
    ];
    let lines: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"custom_id": format!("e{i}"), "method": "POST", "url": "/v1/embeddings", "body": b}))
        .collect();
    let file = upload_ok(&mock, &lines).await;
    let b = create_ok(&mock, &file["id"], "/v1/embeddings").await;
    let done = wait_status(&mock, &b["id"], "completed").await;
    let out = content(&mock, &done["output_file_id"]).await;
    assert_eq!(custom_ids(&out), ["e0", "e1"]);
    for (l, body) in out.iter().zip(&bodies) {
        assert_eq!(l["response"]["status_code"], 200);
        assert_eq!(
            l["response"]["body"],
            sync_answer(&mock, "/embeddings", body).await
        );
    }
    assert_eq!(
        out[1]["response"]["body"]["data"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn failed_outcome_has_errors_and_no_output() {
    let mock = Mock::start("batch");
    mock.batch_config(json!({"complete_after_ms": 60, "outcome": "failed"}))
        .await;
    let file = upload_ok(&mock, &[chat_line("a", "x"), chat_line("b", "y")]).await;
    let b = create_ok(&mock, &file["id"], "/v1/chat/completions").await;
    let done = wait_batch(&mock, &b["id"], |b| b["status"] != "validating").await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["failed_at"].is_u64());
    assert!(done["in_progress_at"].is_null() && done["completed_at"].is_null());
    assert!(done["output_file_id"].is_null() && done["error_file_id"].is_null());
    assert_eq!(done["errors"]["object"], "list");
    let e = &done["errors"]["data"][0];
    assert!(e["code"].is_string() && e["message"].is_string(), "{done}");
    assert_eq!(done["request_counts"]["completed"], 0);
    // An ended batch cannot be cancelled.
    let r = client()
        .post(format!(
            "{}/batches/{}/cancel",
            mock.url(),
            b["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 400, "invalid_state").await;
}

#[tokio::test]
async fn expired_outcome_keeps_the_finished_half() {
    let mock = Mock::start("batch");
    mock.batch_config(json!({"complete_after_ms": 120, "outcome": "expired"}))
        .await;
    let ids = ["a", "b", "c", "d"];
    let lines: Vec<Value> = ids.iter().map(|i| chat_line(i, i)).collect();
    let file = upload_ok(&mock, &lines).await;
    let b = create_ok(&mock, &file["id"], "/v1/chat/completions").await;
    let done = wait_batch(&mock, &b["id"], |b| {
        !matches!(b["status"].as_str(), Some("validating" | "in_progress"))
    })
    .await;
    assert_eq!(done["status"], "expired", "{done}");
    assert!(done["expired_at"].is_u64() && done["completed_at"].is_null());
    assert_eq!(
        done["request_counts"],
        json!({"total": 4, "completed": 2, "failed": 0})
    );
    let out = content(&mock, &done["output_file_id"]).await;
    assert_eq!(custom_ids(&out), ["a", "b"]);
    let err = content(&mock, &done["error_file_id"]).await;
    assert_eq!(custom_ids(&err), ["c", "d"]);
    for l in &err {
        assert!(l["response"].is_null(), "{l}");
        assert_eq!(l["error"]["code"], "batch_expired");
        assert!(l["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn cancel_midway_keeps_the_finished_lines() {
    let mock = Mock::start("batch");
    mock.batch_config(json!({"complete_after_ms": 3000, "cancel_after_ms": 40}))
        .await;
    let lines: Vec<Value> = (0..10).map(|i| chat_line(&format!("c{i}"), "x")).collect();
    let file = upload_ok(&mock, &lines).await;
    let b = create_ok(&mock, &file["id"], "/v1/chat/completions").await;
    let running = wait_batch(&mock, &b["id"], |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 3
    })
    .await;
    assert_eq!(running["status"], "in_progress");
    assert!(running["in_progress_at"].is_u64());

    let r = client()
        .post(format!(
            "{}/batches/{}/cancel",
            mock.url(),
            b["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["status"], "cancelling");
    assert!(c["cancelling_at"].is_u64() && c["cancelled_at"].is_null());
    let finished = c["request_counts"]["completed"].as_u64().unwrap();
    assert!((3..10).contains(&finished), "{c}");

    let done = wait_status(&mock, &b["id"], "cancelled").await;
    assert!(done["cancelled_at"].is_u64() && done["completed_at"].is_null());
    assert!(done["finalizing_at"].is_null());
    assert_eq!(done["request_counts"]["completed"], finished);
    let out = content(&mock, &done["output_file_id"]).await;
    let expected: Vec<String> = (0..finished).map(|i| format!("c{i}")).collect();
    assert_eq!(custom_ids(&out), expected);
    let err = content(&mock, &done["error_file_id"]).await;
    assert_eq!(err.len() as u64, 10 - finished);
    assert!(err.iter().all(|l| l["error"]["code"] == "batch_cancelled"));

    // A second cancel changes nothing.
    let r = client()
        .post(format!(
            "{}/batches/{}/cancel",
            mock.url(),
            b["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["cancelled_at"], done["cancelled_at"]);

    let v = &mock.batches().await[0];
    assert_eq!(v["cancel_called"], true);
    assert_eq!(v["status"], "cancelled");
    assert_eq!(mock.stats().await["batches_cancelled"], 1);
}

#[tokio::test]
async fn omitted_and_failing_lines() {
    let mock = Mock::start("batch");
    let cfg = mock
        .batch_config(json!({"complete_after_ms": 40, "omit_custom_ids": ["b"],
                             "fail_custom_ids": {"c": 400}, "reverse_output": true}))
        .await;
    assert_eq!(cfg["omit_custom_ids"], json!(["b"]));
    let lines: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|i| chat_line(i, i))
        .collect();
    let mut lines = lines;
    // A line the Batch API refuses to run: streaming.
    lines.push(
        json!({"custom_id": "s", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "gpt-4o-mini", "messages": [], "stream": true}}),
    );
    let file = upload_ok(&mock, &lines).await;
    let b = create_ok(&mock, &file["id"], "/v1/chat/completions").await;
    let done = wait_status(&mock, &b["id"], "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 5, "completed": 3, "failed": 2})
    );
    let out = content(&mock, &done["output_file_id"]).await;
    assert_eq!(custom_ids(&out), ["d", "a"], "reversed, without b");
    let err = content(&mock, &done["error_file_id"]).await;
    assert_eq!(custom_ids(&err), ["s", "c"]);
    let c = &err[1];
    assert!(c["error"].is_null());
    assert_eq!(c["response"]["status_code"], 400);
    assert_eq!(c["response"]["body"]["error"]["code"], "mock_400");
    assert_eq!(err[0]["response"]["status_code"], 400);
    assert_eq!(err[0]["response"]["body"]["error"]["param"], "stream");

    // `null` restores a default; bad settings are refused and change nothing.
    let cfg = mock.batch_config(json!({"omit_custom_ids": null})).await;
    assert_eq!(cfg["omit_custom_ids"], json!([]));
    for bad in [
        json!({"outcome": "exploded"}),
        json!({"complete_after": 5}),
        json!({"complete_after_ms": -1}),
        json!({"fail_custom_ids": {"x": 200}}),
    ] {
        let r = client()
            .post(format!("{}/__mock/batch", mock.base()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_openai_error(r, 400, "bad_batch_config").await;
    }
    let cfg: Value = get_json(format!("{}/__mock/batch", mock.base())).await;
    assert_eq!(cfg["config"]["complete_after_ms"], 40);
    assert_eq!(cfg["config"]["outcome"], "completed");
}

#[tokio::test]
async fn invalid_uploads_and_batches_are_refused() {
    let mock = Mock::start("batch");
    let good = jsonl(&[chat_line("a", "x")]);

    // Upload: purpose, file, content type.
    let r = upload_parts(
        &mock,
        &[
            ("purpose", None, b"fine-tune"),
            ("file", Some("f.jsonl"), &good),
        ],
    )
    .await;
    let v = assert_openai_error(r, 400, "invalid_value").await;
    assert_eq!(v["error"]["param"], "purpose");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = upload_parts(&mock, &[("file", Some("f.jsonl"), &good)]).await;
    assert_openai_error(r, 400, "missing_required_parameter").await;
    let r = upload_parts(&mock, &[("purpose", None, b"batch")]).await;
    assert_openai_error(r, 400, "missing_required_parameter").await;
    let r = client()
        .post(format!("{}/files", mock.url()))
        .json(&json!({"purpose": "batch"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 400, "invalid_content_type").await;

    // Upload: the lines.
    let line = |v: Value| v.to_string().into_bytes();
    let other_url = json!({"custom_id": "b", "method": "POST", "url": "/v1/embeddings",
                           "body": {"model": "gpt-4o-mini", "input": "x"}});
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"custom_id\": \"a\", oops}\n".to_vec(), "invalid_json_line"),
        ([good.clone(), good.clone()].concat(), "duplicate_custom_id"),
        ([good.clone(), line(other_url)].concat(), "url_mismatch"),
        (
            line(json!({"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m"}})),
            "invalid_method",
        ),
        (
            line(json!({"custom_id": "a", "method": "POST", "url": "/v1/images", "body": {"model": "m"}})),
            "invalid_url",
        ),
        (
            line(json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}})),
            "missing_model",
        ),
        (
            line(json!({"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}})),
            "missing_custom_id",
        ),
        (
            [good.clone(), line(json!({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "other"}}))].concat(),
            "model_mismatch",
        ),
        (b"\n\n".to_vec(), "empty_file"),
    ];
    for (content, code) in cases {
        let r = upload(&mock, &content).await;
        let v = assert_openai_error(r, 400, code).await;
        assert_eq!(v["error"]["param"], "file");
    }
    assert_eq!(mock.stats().await["files_uploaded"], 0);

    // Create: endpoint mismatch, unknown file, bad window, unknown argument.
    let file = upload_ok(&mock, &[chat_line("a", "x")]).await;
    let r = create(
        &mock,
        json!({"input_file_id": file["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}),
    )
    .await;
    let v = assert_openai_error(r, 400, "url_mismatch").await;
    assert_eq!(v["error"]["param"], "endpoint");
    let r = create(
        &mock,
        json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    )
    .await;
    assert_openai_error(r, 404, "file_not_found").await;
    let r = create(
        &mock,
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"}),
    )
    .await;
    assert_openai_error(r, 400, "invalid_value").await;
    let r = create(
        &mock,
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}),
    )
    .await;
    assert_openai_error(r, 400, "missing_required_parameter").await;
    let r = create(
        &mock,
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", "priority": 1}),
    )
    .await;
    assert_openai_error(r, 400, "unknown_parameter").await;
    assert_eq!(mock.stats().await["batches_created"], 0);

    // Unknown ids and wrong methods.
    for path in ["/files/file-nope", "/files/file-nope/content"] {
        let r = client()
            .get(format!("{}{path}", mock.url()))
            .send()
            .await
            .unwrap();
        assert_openai_error(r, 404, "file_not_found").await;
    }
    let r = client()
        .get(format!("{}/batches/batch_nope", mock.url()))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 404, "batch_not_found").await;
    let r = client()
        .post(format!("{}/batches/batch_nope/cancel", mock.url()))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 404, "batch_not_found").await;
    let r = client()
        .put(format!("{}/batches", mock.url()))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 405, "method_not_allowed").await;

    // The failure controls apply to these endpoints as to every other.
    mock.fail(503).await;
    let r = upload(&mock, &good).await;
    assert_openai_error(r, 503, "mock_503").await;
}

/// `path` on the mock's root (Azure's paths are not below `/v1`).
fn at(mock: &Mock, path: &str) -> String {
    format!("{}{path}", mock.base())
}

const AZ_VERSION: &str = "api-version=2024-10-21";

async fn azure_upload(mock: &Mock, path: &str, lines: &[Value]) -> reqwest::Response {
    let (ct, body) = multipart(&[
        ("purpose", None, b"batch"),
        ("file", Some("az.jsonl"), &jsonl(lines)),
    ]);
    client()
        .post(at(mock, path))
        .header("content-type", ct)
        .header("api-key", "az-key")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn azure_line(custom_id: &str, url: &str, text: &str) -> Value {
    json!({"custom_id": custom_id, "method": "POST", "url": url,
           "body": {"model": "gpt4o-batch", "messages": [{"role": "user", "content": text}]}})
}

#[tokio::test]
async fn azure_batch_paths_take_the_api_version_the_key_and_azure_lines() {
    let mock = Mock::start("az-batch");
    mock.echo(true).await;
    mock.batch_config(json!({"complete_after_ms": 60})).await;
    let lines: Vec<Value> = (0..3)
        .map(|i| azure_line(&format!("a{i}"), "/chat/completions", &format!("az {i}")))
        .collect();

    // Azure's refusals come first: no api-version on the dated surface, no key.
    let azure_error = |r: reqwest::Response, status: u16| async move {
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], status.to_string(), "{v}");
        v
    };
    let r = azure_upload(&mock, "/openai/files", &lines).await;
    let v = azure_error(r, 404).await;
    assert_eq!(v["error"]["message"], "Resource not found");
    let r = client()
        .get(at(&mock, &format!("/openai/batches?{AZ_VERSION}")))
        .send()
        .await
        .unwrap();
    azure_error(r, 401).await;
    // The dated surface takes Azure's line form only.
    let v1_lines = [azure_line("x", "/v1/chat/completions", "x")];
    let r = azure_upload(&mock, &format!("/openai/files?{AZ_VERSION}"), &v1_lines).await;
    assert_openai_error(r, 400, "invalid_url").await;

    let r = azure_upload(&mock, &format!("/openai/files?{AZ_VERSION}"), &lines).await;
    assert_eq!(r.status(), 200);
    let file: Value = r.json().await.unwrap();
    let create = |endpoint: &str| {
        client()
            .post(at(&mock, &format!("/openai/batches?{AZ_VERSION}")))
            .header("api-key", "az-key")
            .json(&json!({"input_file_id": file["id"], "endpoint": endpoint,
                          "completion_window": "24h", "metadata": {"llmproxy_job": "j-az"}}))
            .send()
    };
    let r = create("/v1/chat/completions").await.unwrap();
    assert_openai_error(r, 400, "invalid_value").await;
    let r = create("/chat/completions").await.unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["endpoint"], "/chat/completions");
    assert_eq!(b["model"], "gpt4o-batch");
    assert_eq!(b["metadata"]["llmproxy_job"], "j-az");
    let id = b["id"].as_str().unwrap();

    // Poll, read the output, cancel and delete through the Azure paths.
    let start = Instant::now();
    let done = loop {
        let r = client()
            .get(at(&mock, &format!("/openai/batches/{id}?{AZ_VERSION}")))
            .header("api-key", "az-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        if v["status"] == "completed" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let out_id = done["output_file_id"].as_str().unwrap();
    let text = client()
        .get(at(
            &mock,
            &format!("/openai/files/{out_id}/content?{AZ_VERSION}"),
        ))
        .header("authorization", "Bearer entra-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(custom_ids(&out), ["a0", "a1", "a2"]);
    for (i, l) in out.iter().enumerate() {
        assert_eq!(l["response"]["status_code"], 200);
        assert_eq!(
            l["response"]["body"]["choices"][0]["message"]["content"],
            format!("az {i}")
        );
        assert_eq!(l["response"]["body"]["model"], "gpt4o-batch");
    }
    let r = client()
        .post(at(
            &mock,
            &format!("/openai/batches/{id}/cancel?{AZ_VERSION}"),
        ))
        .header("api-key", "az-key")
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 400, "invalid_state").await;
    let r = client()
        .delete(at(&mock, &format!("/openai/files/{out_id}?{AZ_VERSION}")))
        .header("api-key", "az-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The v1 surface: no api-version needed, either line form; the same store.
    for (path, url) in [
        ("/openai/v1/files", "/v1/embeddings"),
        ("/openai/v1/files?api-version=preview", "/embeddings"),
    ] {
        let line = json!({"custom_id": "e", "method": "POST", "url": url,
                          "body": {"model": "emb-batch", "input": "x"}});
        let r = azure_upload(&mock, path, &[line]).await;
        assert_eq!(r.status(), 200, "{path}");
        let f: Value = r.json().await.unwrap();
        let r = client()
            .post(at(&mock, "/openai/v1/batches"))
            .header("api-key", "az-key")
            .json(&json!({"input_file_id": f["id"], "endpoint": url, "completion_window": "24h"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
    }
    let views = mock.batches().await;
    assert_eq!(views.len(), 3);
    assert_eq!(views[2]["endpoint"], "/embeddings");
    // Recorded with their query and headers.
    let rec = mock.requests_to("/openai/files").await;
    assert!(rec
        .iter()
        .any(|r| r["query"] == AZ_VERSION && r["headers"]["api-key"] == "az-key"));
}

#[tokio::test]
async fn the_batch_list_pages_with_after_and_shows_metadata() {
    let mock = Mock::start("batch");
    for i in 0..5 {
        let file = upload_ok(&mock, &[chat_line("a", "x")]).await;
        let r = create(
            &mock,
            json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                   "completion_window": "24h", "metadata": {"llmproxy_job": format!("job-{i}")}}),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &after {
            Some(a) => format!("limit=2&after={a}"),
            None => "limit=2".to_string(),
        };
        let page: Value = get_json(format!("{}/batches?{q}", mock.url())).await;
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        assert_eq!(page["first_id"], data[0]["id"]);
        assert_eq!(page["last_id"], data[data.len() - 1]["id"]);
        for b in data {
            seen.push(b["metadata"]["llmproxy_job"].as_str().unwrap().to_string());
        }
        if page["has_more"] == false {
            break;
        }
        after = page["last_id"].as_str().map(str::to_string);
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["job-4", "job-3", "job-2", "job-1", "job-0"],
        "newest first"
    );
    let r = client()
        .get(format!("{}/batches?limit=101", mock.url()))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 400, "invalid_value").await;
}

#[tokio::test]
async fn create_delay_hang_and_then_fail() {
    let mock = Mock::start("batch");
    let cfg = mock
        .batch_config(json!({"create_delay_ms": 1500, "complete_after_ms": 100}))
        .await;
    assert_eq!(cfg["create_delay_ms"], 1500);
    assert_eq!(cfg["create_hang"], false);
    let file = upload_ok(&mock, &[chat_line("a", "x")]).await;
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"});
    // The batch exists (and runs) while its creator still waits for the answer.
    let url = format!("{}/batches", mock.url());
    let started = Instant::now();
    let pending = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { client().post(url).json(&body).send().await.unwrap() }
    });
    let start = Instant::now();
    while mock.batches().await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!pending.is_finished());
    let r = pending.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["id"], mock.batches().await[0]["id"]);

    // Hang: nothing is created, nothing answers.
    mock.batch_config(json!({"create_delay_ms": null, "create_hang": true}))
        .await;
    let r = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .post(&url)
        .json(&body)
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(mock.batches().await.len(), 1);
    assert_eq!(mock.requests_to("/v1/batches").await.len(), 2);
    for bad in [json!({"create_hang": 1}), json!({"create_delay_ms": "x"})] {
        let r = client()
            .post(format!("{}/__mock/batch", mock.base()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_openai_error(r, 400, "bad_batch_config").await;
    }
    mock.batch_config(json!({"create_hang": null})).await;
    let r = create(&mock, body.clone()).await;
    assert_eq!(r.status(), 200);

    // Created, then the answer is lost: a 5xx, yet the batch runs (and lists).
    mock.batch_config(json!({"create_then_fail": 502})).await;
    let r = create(&mock, body.clone()).await;
    assert_openai_error(r, 502, "mock_502").await;
    assert_eq!(mock.batches().await.len(), 3);
    let list: Value = get_json(format!("{}/batches?limit=1", mock.url())).await;
    assert_eq!(list["data"][0]["id"], mock.batches().await[2]["id"]);
    for bad in [
        json!({"create_then_fail": 404}),
        json!({"create_then_fail": "x"}),
    ] {
        let r = client()
            .post(format!("{}/__mock/batch", mock.base()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_openai_error(r, 400, "bad_batch_config").await;
    }
    mock.batch_config(json!({"create_then_fail": null})).await;
    assert_eq!(create(&mock, body).await.status(), 200);
}
