//! `provider: gemini` through the real binary, against the mock's Gemini API: chat (whole and
//! SSE), tools and images round trips, embeddings, safety blocks, Google's errors and rate limits,
//! Anthropic clients, and broken streams.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "gk-test-gemini-key";
const HC: &str = "{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}";

fn upstream(name: &str, mock: &Mock) -> String {
    format!(
        "  - {{name: {name}, provider: gemini, url: \"{}/v1beta\", auth: {{type: header, name: x-goog-api-key, value: {KEY}}}, health_check: {HC}}}\n",
        mock.base()
    )
}

fn gemini_config(mock: &Mock, extra: &str) -> String {
    config(&format!(
        "upstreams:\n{}models:\n  - {{name: gem, deployments: [{{upstream: g, model: gemini-2.5-flash}}]}}\n  - {{name: emb, deployments: [{{upstream: g, model: text-embedding-004, params: {{dimensions: 8}}}}]}}\n{extra}",
        upstream("g", mock)
    ))
}

async fn start() -> (Mock, Gateway) {
    let mock = Mock::start_with("G", &["--gemini-api-key", KEY]);
    let gw = gateway(&gemini_config(&mock, "")).await;
    (mock, gw)
}

async fn post(
    gw: &Gateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = client().post(gw.url(path)).json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` as a string.
fn sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
        .collect()
}

/// The JSON body a recorded request carried.
fn sent_body(rec: &Value) -> Value {
    serde_json::from_str(rec["body_prefix"].as_str().unwrap()).unwrap()
}

async fn last_post(mock: &Mock) -> Value {
    mock.requests()
        .await
        .into_iter()
        .rev()
        .find(|r| r["method"] == "POST")
        .unwrap()
}

#[tokio::test]
async fn chat_whole_and_streamed() {
    let (mock, gw) = start().await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"}
        ], "max_tokens": 40, "temperature": 0.2}),
        &[
            ("x-mock-cache-read-tokens", "3"),
            ("x-mock-thoughts-tokens", "4"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(u["completion_tokens"], 5 + 4, "candidates + thoughts");
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 3);
    let rec = last_post(&mock).await;
    assert_eq!(
        rec["path"],
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(rec["headers"]["x-goog-api-key"], KEY);
    assert!(rec["headers"].get("authorization").is_none());
    assert_eq!(rec["auth"]["ok"], true);
    let sent = sent_body(&rec);
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [{"text": "Say hi"}]}])
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"maxOutputTokens": 40, "temperature": 0.2})
    );

    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [{"role": "user", "content": "Say hi"}], "stream": true, "stream_options": {"include_usage": true}}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = sse(&r.text().await.unwrap());
    let text: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> = ev
        .iter()
        .filter(|e| !e["choices"][0]["finish_reason"].is_null() && e["choices"][0].is_object())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = &ev[ev.len() - 2]["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let rec = last_post(&mock).await;
    assert_eq!(
        rec["path"],
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(rec["query"], "alt=sse");
}

#[tokio::test]
async fn tools_and_images_round_trip() {
    let (mock, gw) = start().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Weather where this was taken?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ]}], "tools": tools, "tool_choice": "required"}),
        &[
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-tool-input", "{\"city\":\"Paris\"}"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    let call = c["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let sent = sent_body(&last_post(&mock).await);
    assert_eq!(
        sent["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    // The second half: the call and its result go back (the mock checks Gemini's turn rules).
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "18C, sunny"}
        ], "tools": tools}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = sent_body(&last_post(&mock).await);
    assert_eq!(
        sent["contents"][1]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris"}})
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"content": "18C, sunny"}})
    );
    // A streamed call.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools, "stream": true}),
        &[("x-mock-tool-call", "get_weather")],
    )
    .await;
    let ev = sse(&r.text().await.unwrap());
    let call = ev
        .iter()
        .find_map(|e| {
            e["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
        })
        .unwrap();
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(ev
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
    // Unsupported parameters: a 400 naming them, or dropped with drop_params.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
        &[],
    )
    .await;
    let v = assert_openai_error(r, 400, "unsupported_parameter").await;
    assert_eq!(v["error"]["param"], "logprobs");
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let (mock, gw) = start().await;
    let r = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "emb", "input": ["one", "two"], "encoding_format": "float"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let rec = last_post(&mock).await;
    assert_eq!(
        rec["path"],
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(sent_body(&rec)["requests"][0]["outputDimensionality"], 8);
    let r = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "emb", "input": "one"}),
        &[],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert!(v["data"][0]["embedding"].is_array());
    assert_eq!(
        last_post(&mock).await["path"],
        "/v1beta/models/text-embedding-004:embedContent"
    );
    let r = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "emb", "input": "one", "encoding_format": "base64"}),
        &[],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        v["data"][0]["embedding"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(raw.len(), 8 * 4);
}

#[tokio::test]
async fn safety_blocks_are_content_filter() {
    let (_mock, gw) = start().await;
    let chat = json!({"model": "gem", "messages": [{"role": "user", "content": "x"}]});
    for block in ["prompt", "response"] {
        let r = post(
            &gw,
            "/v1/chat/completions",
            chat.clone(),
            &[("x-mock-gemini-block", block)],
        )
        .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["finish_reason"], "content_filter",
            "{block}: {v}"
        );
        let mut stream = chat.clone();
        stream["stream"] = json!(true);
        let r = post(
            &gw,
            "/v1/chat/completions",
            stream,
            &[("x-mock-gemini-block", block)],
        )
        .await;
        let ev = sse(&r.text().await.unwrap());
        assert!(
            ev.iter()
                .any(|e| e["choices"][0]["finish_reason"] == "content_filter"),
            "{block}: {ev:?}"
        );
        assert_eq!(ev.last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn google_errors_in_openai_shape() {
    let mock = Mock::start_with("G", &["--gemini-api-key", KEY, "--max-input-tokens", "50"]);
    let other = Mock::start("O");
    let extra = "  - {name: gem-long, deployments: [{upstream: o, model: gpt-4o}]}\n";
    let cfg = gemini_config(&mock, extra)
        .replace(
            "  - {name: gem, deployments: [{upstream: g, model: gemini-2.5-flash}]}",
            "  - {name: gem, deployments: [{upstream: g, model: gemini-2.5-flash}], context_window_fallbacks: [gem-long], retry: {attempts: 1}}",
        )
        .replace("models:\n", &format!("{}models:\n", openai_upstream("o", &other)));
    let gw = gateway(&cfg).await;
    let chat = json!({"model": "gem", "messages": [{"role": "user", "content": "x"}]});
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat.clone(),
        &[("x-mock-status", "429"), ("x-mock-retry-after", "2")],
    )
    .await;
    assert_eq!(r.headers()["retry-after"], "2");
    let v = assert_openai_error(r, 429, "rate_limit_exceeded").await;
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat.clone(),
        &[("x-mock-status", "403")],
    )
    .await;
    assert_openai_error(r, 403, "permission_denied").await;
    // Over the context window: the fallback model answers.
    let long = "word ".repeat(400);
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gem", "messages": [{"role": "user", "content": long}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "O");
}

#[tokio::test]
async fn wrong_key_is_an_authentication_error() {
    let mock = Mock::start_with("G", &["--gemini-api-key", "another-key"]);
    let gw = gateway(&gemini_config(&mock, "").replace(HC, "{interval: 0s}")).await;
    let r = gw.chat("gem").await;
    let v = assert_openai_error(r, 400, "invalid_api_key").await;
    assert_eq!(v["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn rate_limited_deployment_cools_down() {
    let a = Mock::start_with("A", &["--gemini-api-key", KEY, "--retry-after", "30"]);
    let b = Mock::start_with("B", &["--gemini-api-key", KEY]);
    let cfg = config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: gem, strategy: round_robin, deployments: [{{upstream: a, model: gemini-2.5-flash}}, {{upstream: b, model: gemini-2.5-flash}}], retry: {{attempts: 2, backoff: 10ms, on: [429]}}}}\n",
        upstream("a", &a),
        upstream("b", &b)
    ));
    let gw = gateway(&cfg).await;
    a.fail(429).await;
    for _ in 0..6 {
        let r = gw.chat("gem").await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "B");
    }
    let generate = |reqs: Vec<Value>| reqs.iter().filter(|r| r["method"] == "POST").count();
    assert_eq!(
        generate(a.requests().await),
        1,
        "A is cooling down for its RetryInfo delay"
    );
    assert_eq!(generate(b.requests().await), 6);
}

#[tokio::test]
async fn anthropic_clients_reach_gemini() {
    let (mock, gw) = start().await;
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(
            &json!({"model": "gem", "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello from mock");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let sent = sent_body(&last_post(&mock).await);
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 64);
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "gem", "max_tokens": 64, "stream": true,
            "messages": [{"role": "user", "content": "Say hi"}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(text.contains("tok4"), "{text}");
}

#[tokio::test]
async fn broken_streams_end_with_an_error_event() {
    let (_mock, gw) = start().await;
    let stream =
        json!({"model": "gem", "messages": [{"role": "user", "content": "x"}], "stream": true});
    // The upstream dies after two events.
    let r = post(
        &gw,
        "/v1/chat/completions",
        stream.clone(),
        &[("x-mock-drop-after-chunks", "2")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let ev = sse(&r.text().await.unwrap());
    assert!(ev[ev.len() - 2]["error"].is_object(), "{ev:?}");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    // One event over the translator's limit (4 MiB): an error event, not a hang.
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        post(
            &gw,
            "/v1/chat/completions",
            stream,
            &[("x-mock-chunks", "1"), ("x-mock-response-bytes", "5000000")],
        ),
    )
    .await
    .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .unwrap()
        .unwrap();
    let ev = sse(&text);
    assert!(ev[ev.len() - 2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeds"));
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

/// Seed 002's quick start: `--model gemini/<id>` with the key from `GEMINI_API_KEY`.
#[tokio::test]
async fn quick_start_model_flag() {
    let mock = Mock::start_with("G", &["--gemini-api-key", KEY]);
    let (port, admin) = (free_port(), free_port());
    let (port_s, admin_s, base) = (
        port.to_string(),
        format!("127.0.0.1:{admin}"),
        format!("{}/v1beta", mock.base()),
    );
    let args = [
        "--model",
        "gemini/gemini-2.5-flash",
        "--api_base",
        &base,
        "--host",
        "127.0.0.1",
        "--port",
        &port_s,
        "--admin_listen",
        &admin_s,
    ];
    let gw = Gateway::spawn_with_env(
        &args,
        &[("GEMINI_API_KEY", KEY)],
        port,
        admin,
        std::path::PathBuf::new(),
    )
    .await;
    let r = gw.chat("gemini-2.5-flash").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    let rec = last_post(&mock).await;
    assert_eq!(
        rec["path"],
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(rec["headers"]["x-goog-api-key"], KEY);
}
