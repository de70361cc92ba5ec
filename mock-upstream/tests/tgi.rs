//! A text-generation server over HTTP: the prompt recorded verbatim, `details`, the stream's
//! `data:` events, health and info, errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

mod common;

use common::{get, post_json, recorded, request};
use mock_upstream::MockServer;
use serde_json::{json, Value};

#[test]
fn generate_records_the_prompt_verbatim() {
    let mock = MockServer::start(&[
        "--chunks",
        "3",
        "--tgi-model-id",
        "meta-llama/Llama-3.1-8B-Instruct",
    ])
    .unwrap();
    // A rendered chat prompt longer than the recording's body prefix.
    let prompt = format!(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi \"there\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "Be brief. ".repeat(600)
    );
    let body = json!({"inputs": prompt, "parameters": {"max_new_tokens": 64, "details": true}})
        .to_string();
    let a = post_json(mock.addr(), "/generate", &[], &body);
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["generated_text"], "tok0 tok1 tok2 ");
    assert_eq!(v["details"]["finish_reason"], "eos_token");
    assert_eq!(v["details"]["generated_tokens"], 4);
    let prompt_tokens: u64 = a.header("x-prompt-tokens").unwrap().parse().unwrap();
    assert!(prompt_tokens > 600, "{prompt_tokens}");
    let rec = recorded(mock.addr());
    assert_eq!(rec[0]["inputs"], prompt.as_str());
    assert_eq!(rec[0]["path"], "/generate");
    // The stream: data: events, the last with the text and details.
    let a = post_json(mock.addr(), "/generate_stream", &[], &body);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    let text = a.text();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data:").unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["token"]["text"], "tok0 ");
    assert_eq!(events[3]["generated_text"], "tok0 tok1 tok2 ");
    assert_eq!(events[3]["details"]["input_length"], prompt_tokens);
    assert_eq!(recorded(mock.addr())[1]["stream"], true);
    // Health and info.
    let h = get(mock.addr(), "/health");
    assert_eq!((h.status, h.body.len()), (200, 0));
    assert_eq!(
        get(mock.addr(), "/info").json()["model_id"],
        "meta-llama/Llama-3.1-8B-Instruct"
    );
    assert_eq!(
        request(mock.addr(), "POST", "/__mock/fail?status=500", &[], b"").status,
        200
    );
    assert_eq!(get(mock.addr(), "/health").status, 503);
    let a = post_json(mock.addr(), "/generate", &[], &body);
    assert_eq!(
        (a.status, a.json()["error_type"].as_str()),
        (500, Some("incomplete_generation"))
    );
}

#[test]
fn validation_errors_and_limits() {
    let mock = MockServer::start(&["--max-input-tokens", "5"]).unwrap();
    let a = post_json(
        mock.addr(),
        "/generate",
        &[],
        r#"{"inputs":"one two three four five six seven"}"#,
    );
    assert_eq!(a.status, 422);
    assert_eq!(a.json()["error_type"], "validation");
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("must have less than 5 tokens"));
    let a = post_json(
        mock.addr(),
        "/generate",
        &[],
        r#"{"inputs":"x","parameters":{"temperature":0}}"#,
    );
    assert_eq!(a.status, 422);
    // In a stream, the validation error is an event of a 200 stream.
    let a = post_json(
        mock.addr(),
        "/generate_stream",
        &[],
        r#"{"inputs":"x","parameters":{"temperature":0}}"#,
    );
    assert_eq!(a.status, 200);
    assert!(a
        .text()
        .starts_with("data:{\"error\":\"Input validation error"));
    let a = post_json(mock.addr(), "/generate", &[], r#"{"prompt":"x"}"#);
    assert_eq!(a.status, 422);
    assert!(a.text().contains("missing field `inputs`"));
    let a = post_json(
        mock.addr(),
        "/generate",
        &[("x-mock-status", "429")],
        r#"{"inputs":"x"}"#,
    );
    assert_eq!(
        a.json(),
        json!({"error": "Model is overloaded", "error_type": "overloaded"})
    );
}
