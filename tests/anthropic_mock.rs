//! The Anthropic translation library (`llmproxy::providers::anthropic`) against the mock's Anthropic
//! dialect: translated requests are accepted as Anthropic validates them, answers and streams
//! translate back to OpenAI shapes, errors map. (The gateway's request path is wired separately.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::{client, Mock};
use futures_util::StreamExt;
use llmproxy::providers::anthropic::{
    chat_to_messages, error_to_openai, messages_to_chat, StreamTranslator, ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
};
use llmproxy::providers::usage::Usage;
use serde_json::{json, Value};

fn messages_url(mock: &Mock) -> String {
    format!("{}/v1/messages", mock.base())
}

async fn post(mock: &Mock, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(messages_url(mock))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", ANTHROPIC_VERSION)
        .json(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn openai_request() -> Value {
    json!({
        "model": "claude-alias",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "user", "content": [
                {"type": "text", "text": "And look at this:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "temperature": 1.4,
        "stop": "END",
        "user": "u1",
        "seed": 3,
    })
}

#[tokio::test]
async fn auth_and_version_headers_are_required() {
    let mock = Mock::start("anthropic");
    let body =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = client()
        .post(messages_url(&mock))
        .header("anthropic-version", ANTHROPIC_VERSION)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let r = client()
        .post(messages_url(&mock))
        .header("x-api-key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));
}

#[tokio::test]
async fn raw_invalid_requests_are_rejected_and_translation_fixes_them() {
    let mock = Mock::start("anthropic");
    // Consecutive user turns and no max_tokens, sent raw: Anthropic refuses.
    let raw = json!({"model": "c", "max_tokens": 5, "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
    let r = post(&mock, &raw, &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("alternate"));
    let r = post(
        &mock,
        &json!({"model": "c", "messages": [{"role": "user", "content": "a"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);

    let translated =
        chat_to_messages(&openai_request(), "claude-sonnet-4-5", DEFAULT_MAX_TOKENS).unwrap();
    let r = post(&mock, &translated, &[]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(r
        .headers()
        .contains_key("anthropic-ratelimit-requests-remaining"));
    assert!(r.headers().contains_key("request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    let chat = messages_to_chat(&v, "claude-alias");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["model"], "claude-alias");
    assert_eq!(chat["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    let u = &chat["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );

    // What was sent, as recorded by the mock.
    let recs = mock.requests_to("/v1/messages").await;
    let last = recs.last().unwrap();
    assert_eq!(last["headers"]["anthropic-version"], ANTHROPIC_VERSION);
    assert_eq!(last["headers"]["x-api-key"], "sk-ant-test");
    assert_eq!(last["model"], "claude-sonnet-4-5");
}

#[tokio::test]
async fn non_stream_tool_call() {
    let mock = Mock::start("anthropic");
    let translated =
        chat_to_messages(&openai_request(), "claude-sonnet-4-5", DEFAULT_MAX_TOKENS).unwrap();
    let r = post(&mock, &translated, &[("x-mock-tool-call", "get_weather")]).await;
    assert_eq!(r.status(), 200);
    let chat = messages_to_chat(&r.json().await.unwrap(), "a");
    let call = &chat["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "mock"}));
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
}

/// Streams `resp` through a translator; returns the OpenAI SSE text and the translator.
async fn translate_stream(
    resp: reqwest::Response,
    include_usage: bool,
) -> (String, StreamTranslator) {
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut t = StreamTranslator::new("alias", include_usage);
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        // Feed in odd pieces, too.
        for piece in chunk.chunks(7) {
            out.extend_from_slice(&t.feed(piece));
        }
    }
    out.extend_from_slice(&t.finish());
    (String::from_utf8(out).unwrap(), t)
}

fn data_events(sse: &str) -> Vec<&str> {
    sse.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect()
}

#[tokio::test]
async fn text_stream_translates_with_usage() {
    let mock = Mock::start("anthropic");
    let mut req =
        chat_to_messages(&openai_request(), "claude-sonnet-4-5", DEFAULT_MAX_TOKENS).unwrap();
    req["stream"] = json!(true);
    let r = post(&mock, &req, &[("x-mock-chunks", "4")]).await;
    let (sse, t) = translate_stream(r, true).await;
    let evs = data_events(&sse);
    assert_eq!(*evs.last().unwrap(), "[DONE]");
    let mut content = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in &evs[..evs.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{e}");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
        }
    }
    assert_eq!(content, "tok0 tok1 tok2 tok3 ");
    assert_eq!(finish.as_deref(), Some("stop"));
    let usage = usage.unwrap();
    assert_eq!(usage["completion_tokens"], 4);
    assert_eq!(
        t.usage(),
        Some(Usage::new(usage["prompt_tokens"].as_u64().unwrap(), 4))
    );
}

#[tokio::test]
async fn tool_stream_translates() {
    let mock = Mock::start("anthropic");
    let mut req =
        chat_to_messages(&openai_request(), "claude-sonnet-4-5", DEFAULT_MAX_TOKENS).unwrap();
    req["stream"] = json!(true);
    let r = post(
        &mock,
        &req,
        &[
            ("x-mock-tool-call", "get_weather"),
            (
                "x-mock-tool-input",
                r#"{"city":"San Francisco, CA","unit":"fahrenheit"}"#,
            ),
            ("x-mock-chunks", "5"),
        ],
    )
    .await;
    let (sse, _) = translate_stream(r, false).await;
    let mut args = String::new();
    let mut id = None;
    let mut finish = None;
    for e in data_events(&sse) {
        if e == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(call) = v["choices"][0]["delta"]["tool_calls"].get(0) {
            if let Some(i) = call["id"].as_str() {
                id = Some(i.to_owned());
                assert_eq!(call["function"]["name"], "get_weather");
            }
            args.push_str(call["function"]["arguments"].as_str().unwrap());
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert!(id.unwrap().starts_with("toolu_mock_"));
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(
        args,
        json!({"city": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn stream_error_event_and_truncation() {
    let mock = Mock::start("anthropic");
    let req = json!({"model": "c", "max_tokens": 5, "stream": true,
                     "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&mock, &req, &[("x-mock-stream-error-after", "2")]).await;
    let (sse, t) = translate_stream(r, true).await;
    let evs = data_events(&sse);
    assert_eq!(evs.len(), 5, "{sse}"); // role, 2 deltas, error, DONE
    let err: Value = serde_json::from_str(evs[3]).unwrap();
    assert_eq!(err["error"]["code"], "overloaded");
    assert_eq!(evs[4], "[DONE]");
    assert!(t.is_done());

    // Connection dropped after 1 delta: an error event, never a silent end.
    let r = post(&mock, &req, &[("x-mock-drop-after-chunks", "1")]).await;
    let mut t = StreamTranslator::new("alias", false);
    let mut out = Vec::new();
    let mut body = r.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        out.extend_from_slice(&t.feed(&chunk));
    }
    out.extend_from_slice(&t.finish());
    let sse = String::from_utf8(out).unwrap();
    let evs = data_events(&sse);
    assert!(evs[evs.len() - 2].contains("\"error\""), "{sse}");
    assert_eq!(*evs.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn failure_controls_are_anthropic_shaped_and_map_to_openai() {
    let mock = Mock::start("anthropic");
    let req =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for (status, anth, code) in [
        (529u16, "overloaded_error", "overloaded"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (401, "authentication_error", "invalid_api_key"),
        (500, "api_error", "upstream_error"),
    ] {
        let r = post(&mock, &req, &[("x-mock-status", &status.to_string())]).await;
        assert_eq!(r.status().as_u16(), status);
        if status == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            assert_eq!(r.headers()["anthropic-ratelimit-requests-remaining"], "0");
        }
        let body = r.bytes().await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], anth);
        let o: Value = serde_json::from_slice(&error_to_openai(status, &body)).unwrap();
        assert_eq!(o["error"]["code"], code, "{status}");
    }

    let long = Mock::start_with(
        "anthropic-long",
        &[
            "--fail-status",
            "400",
            "--fail-code",
            "context_length_exceeded",
        ],
    );
    let r = post(&long, &req, &[]).await;
    assert_eq!(r.status(), 400);
    let body = r.bytes().await.unwrap();
    let o: Value = serde_json::from_slice(&error_to_openai(400, &body)).unwrap();
    assert_eq!(o["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn rate_limit_headers_follow_the_limiter_and_overrides() {
    let mock = Mock::start_with("anthropic-limited", &["--rpm", "60"]);
    let req =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&mock, &req, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["anthropic-ratelimit-requests-limit"], "60");
    assert_eq!(r.headers()["anthropic-ratelimit-requests-remaining"], "0");
    // The bucket (one request per second) is empty now.
    let r = post(&mock, &req, &[]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let plain = Mock::start("anthropic");
    let r = post(&plain, &req, &[("x-mock-anthropic-remaining-tokens", "0")]).await;
    assert_eq!(r.headers()["anthropic-ratelimit-tokens-remaining"], "0");
    assert_eq!(
        r.headers()["anthropic-ratelimit-requests-remaining"],
        "3999"
    );
}
