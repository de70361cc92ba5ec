//! `provider: anthropic` through the gateway: OpenAI chat requests translated to Anthropic's
//! Messages API and back (non-stream, stream, tools, errors, usage), Anthropic SDK callers served
//! on `POST /v1/messages` as they are, and what Anthropic cannot do refused with a clear 400.
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

const ANTHROPIC_AUTH: &str = "{type: header, name: x-api-key, value: sk-ant-upstream}";

/// An Anthropic upstream on a mock; its URL carries `/v1` as `https://api.anthropic.com/v1` does.
fn anthropic_upstream(name: &str, mock: &Mock) -> String {
    format!(
        "  - {{name: {name}, provider: anthropic, url: \"{}/v1\", auth: {ANTHROPIC_AUTH}, health_check: {{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}}}}\n",
        mock.base()
    )
}

async fn messages_seen(mock: &Mock) -> Vec<Value> {
    mock.requests_to("/v1/messages")
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect()
}

#[tokio::test]
async fn openai_chat_is_translated_to_anthropic_and_back() {
    let an = Mock::start("AN");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: claude, aliases: [claude-alias], deployments: [{{upstream: an, model: claude-sonnet-4-5, params: {{temperature: 0.3}}}}]}}\n",
        anthropic_upstream("an", &an)
    )))
    .await;
    let c = client();
    let post = |body: Value| {
        c.post(gw.url("/v1/chat/completions"))
            .header("authorization", "Bearer client-secret")
            .json(&body)
            .send()
    };

    // Non-stream: system prompt apart, max_tokens defaulted, the answer an OpenAI completion.
    let r = post(json!({"model": "claude-alias", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "AN");
    assert_eq!(r.headers()["content-type"], "application/json");
    // Anthropic's rate-limit headers reach the OpenAI client under OpenAI's names.
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "4000");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "3999");
    assert!(r.headers()["x-ratelimit-reset-tokens"]
        .to_str()
        .unwrap()
        .ends_with('s'));
    assert!(r
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("anthropic-ratelimit-")));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let seen = messages_seen(&an).await;
    assert_eq!(seen.len(), 1);
    let h = &seen[0]["headers"];
    assert_eq!(h["x-api-key"], "sk-ant-upstream");
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(!seen[0].to_string().contains("client-secret"));
    let sent: Value = serde_json::from_str(seen[0]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 4096, "the documented default");
    assert_eq!(sent["temperature"], 0.3, "the deployment's params default");
    assert_eq!(sent["system"][0]["text"], "Be brief.");
    assert_eq!(
        sent["messages"].as_array().unwrap().len(),
        1,
        "consecutive user turns merged: {sent}"
    );

    // Stream with usage: OpenAI chunks, the same text, a usage chunk, [DONE].
    let r = post(
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(r.headers().get("content-length").is_none());
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let events = sse_data(&text);
    assert!(events
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk"));
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4 ");
    let finish: Vec<&str> = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5, "{last}");

    // Tools, both ways: a tool call comes back as OpenAI tool_calls.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-tool-call", "get_weather")
        .json(
            &json!({"model": "claude", "tools": tools, "tool_choice": "required",
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "mock");
    let sent: Value =
        serde_json::from_str(messages_seen(&an).await[2]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");

    // The tool result goes back as a tool_result block; images as image blocks.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude", "tools": tools, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent: Value =
        serde_json::from_str(messages_seen(&an).await[3]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(sent["messages"][0]["content"][1]["type"], "image");
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");

    // Streamed tool call: arguments arrive as deltas.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-tool-call", "get_weather")
        .json(&json!({"model": "claude", "stream": true, "tools": tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .send()
        .await
        .unwrap();
    let events = sse_data(&r.text().await.unwrap());
    let args: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap()["city"],
        "mock"
    );
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));

    // Usage of both kinds of answers is counted (when each request is logged: poll, bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = gw.metrics().await;
        let completion = metric(
            &metrics,
            "llmproxy_tokens_total",
            &[("model", "claude"), ("kind", "completion")],
        )
        .unwrap_or(0.0);
        if completion >= 5.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{completion}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn anthropic_errors_become_openai_errors_and_unsupported_parameters_are_named() {
    let an = Mock::start("AN");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: claude, retry: {{attempts: 1}}, deployments: [{{upstream: an, model: claude-sonnet-4-5}}]}}\n  - {{name: claude-lenient, drop_params: true, deployments: [{{upstream: an, model: claude-sonnet-4-5}}]}}\n",
        anthropic_upstream("an", &an)
    )))
    .await;
    let c = client();
    let hi = json!([{"role": "user", "content": "hi"}]);

    // Anthropic's error shape, with its status, reaches an OpenAI SDK in OpenAI's shape.
    for (status, kind) in [
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
    ] {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .header("x-mock-status", status.to_string())
            .json(&json!({"model": "claude", "messages": hi}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(
            v.get("type").is_none(),
            "OpenAI shape, not Anthropic's: {v}"
        );
        let _ = kind;
    }

    // Parameters Anthropic has no equivalent for: a 400 naming them, or dropped with drop_params.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude", "n": 2, "messages": hi}))
        .send()
        .await
        .unwrap();
    let v = assert_openai_error(r, 400, "unsupported_parameter").await;
    assert_eq!(v["error"]["param"], "n");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("drop_params"));
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude-lenient", "n": 2, "logprobs": true, "messages": hi}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Endpoints Anthropic does not have.
    let r = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "claude", "input": "x"}))
        .send()
        .await
        .unwrap();
    let v = assert_openai_error(r, 400, "invalid_request").await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("chat completions only"));

    // A stream that fails midway ends with an OpenAI error event and [DONE].
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-stream-error-after", "2")
        .json(&json!({"model": "claude", "stream": true, "messages": hi}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(
        messages_seen(&an).await.len(),
        6,
        "nothing retried after a client error"
    );
}

#[tokio::test]
async fn overloaded_anthropic_answers_are_retried_on_another_deployment() {
    let one = Mock::start("ONE");
    let two = Mock::start("TWO");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: claude, strategy: round_robin, retry: {{attempts: 2, backoff: 1ms}}, cooldown: {{allowed_fails: 0}}, deployments: [{{upstream: one, model: claude-sonnet-4-5}}, {{upstream: two, model: claude-sonnet-4-5}}]}}\n",
        anthropic_upstream("one", &one),
        anthropic_upstream("two", &two)
    )))
    .await;
    // Anthropic's 529 `overloaded_error` is a server error: retried on the other deployment, and
    // when both are overloaded the client gets the 529 in OpenAI's shape.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-status", "529")
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 529);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(messages_seen(&one).await.len(), 1);
    assert_eq!(messages_seen(&two).await.len(), 1);
    let metrics = gw.metrics().await;
    for up in ["one", "two"] {
        assert_eq!(
            metric(
                &metrics,
                "llmproxy_upstream_errors_total",
                &[
                    ("error", "server_error"),
                    ("group", "claude"),
                    ("upstream", up)
                ]
            ),
            Some(1.0),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn anthropic_sdk_callers_use_v1_messages_as_it_is() {
    let an = Mock::start("AN");
    let oa = Mock::start("OA");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: claude, deployments: [{{upstream: an, model: claude-sonnet-4-5}}]}}\n  - {{name: gpt, deployments: [{{upstream: oa, model: gpt-4o}}]}}\n",
        anthropic_upstream("an", &an),
        openai_upstream("oa", &oa)
    )))
    .await;
    let c = client();
    let post = |body: Value| {
        c.post(gw.url("/v1/messages"))
            .header("x-api-key", "client-key")
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "tools-2024-04-04")
            .json(&body)
            .send()
    };
    let r = post(
        json!({"model": "claude", "max_tokens": 64, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "Anthropic's own shape: {v}");
    assert_eq!(v["content"][0]["text"], "Hello from mock");
    let seen = messages_seen(&an).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["headers"]["x-api-key"], "sk-ant-upstream");
    assert_eq!(seen[0]["headers"]["anthropic-beta"], "tools-2024-04-04");
    let sent: Value = serde_json::from_str(seen[0]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");

    // Stream, relayed event by event, usage read from message_start + message_delta.
    let r = post(json!({"model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    // Counted when the request is logged, just after its last byte: poll (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = gw.metrics().await;
        let get = |kind: &str| {
            metric(
                &metrics,
                "llmproxy_tokens_total",
                &[("model", "claude"), ("kind", kind)],
            )
            .unwrap_or(0.0)
        };
        let (prompt, completion) = (get("prompt"), get("completion"));
        // Non-stream and stream answers: input tokens from message_start, output from message_delta.
        if prompt >= 2.0 && completion >= 6.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{prompt} {completion}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Errors in Anthropic's shape: unknown model, a model not on Anthropic, the upstream's own.
    let r = post(json!({"model": "nope", "max_tokens": 8, "messages": []}))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    let r = post(json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "Anthropic's own validation (max_tokens)");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(messages_seen(&oa).await.len(), 0);
}

#[tokio::test]
async fn anthropic_sdk_callers_reach_openai_models_through_translation() {
    let oa = Mock::start("OA");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: gpt, retry: {{attempts: 1}}, deployments: [{{upstream: oa, model: gpt-4o}}]}}\n  - {{name: strict, deployments: [{{upstream: oa, model: gpt-4o}}]}}\n  - {{name: lenient, drop_params: true, deployments: [{{upstream: oa, model: gpt-4o}}]}}\n",
        openai_upstream("oa", &oa)
    )))
    .await;
    let c = client();
    let post = |body: Value, headers: &[(&str, &str)]| {
        let mut req = c
            .post(gw.url("/v1/messages"))
            .header("x-api-key", "client-key")
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let hi = json!([{"role": "user", "content": "hi"}]);

    // Non-stream: an Anthropic message built from the chat completion.
    let r = post(
        json!({"model": "gpt", "max_tokens": 64, "system": "Be brief.", "messages": hi}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], "Hello from mock");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["usage"]["output_tokens"], 5);
    let seen = oa.requests_to("/v1/chat/completions").await;
    assert_eq!(seen.len(), 1, "sent as a chat completion");
    assert!(!seen[0].to_string().contains("client-key"));
    let sent: Value = serde_json::from_str(seen[0]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["max_completion_tokens"], 64, "OpenAI's current field");

    // Stream: Anthropic's event sequence, the text, the usage in message_delta.
    let r = post(
        json!({"model": "gpt", "max_tokens": 64, "stream": true, "messages": hi}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"message_start"), "{text}");
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["delta"]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(deltas, "tok0 tok1 tok2 tok3 tok4 ");
    assert!(text.contains("\"output_tokens\":5"), "{text}");

    // An upstream that breaks off mid-stream: the Anthropic client gets an `error` event, never a
    // silently shortened message.
    let r = post(
        json!({"model": "gpt", "max_tokens": 64, "stream": true, "messages": hi}),
        &[("x-mock-drop-after-chunks", "2")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("event: message_stop"), "{text}");

    // Tool use, both ways.
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object",
        "properties": {"city": {"type": "string"}}}}]);
    let r = post(
        json!({"model": "gpt", "max_tokens": 64, "tools": tools, "messages": hi}),
        &[("x-mock-tool-call", "get_weather")],
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let block = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"]["city"], "mock");
    let r = post(
        json!({"model": "gpt", "max_tokens": 64, "tools": tools, "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": block["id"], "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "18C"}]}]}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let seen = oa.requests_to("/v1/chat/completions").await;
    let sent: Value =
        serde_json::from_str(seen.last().unwrap()["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(sent["messages"][2]["role"], "tool");

    // The upstream's errors, and the gateway's, in Anthropic's shape.
    let r = post(
        json!({"model": "gpt", "max_tokens": 8, "messages": hi}),
        &[("x-mock-status", "429")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // What OpenAI has no equivalent for: refused naming it, or dropped with drop_params.
    let doc = json!([{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]);
    let r = post(
        json!({"model": "strict", "max_tokens": 8, "messages": doc}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("document")
            || v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("content[0]"),
        "{v}"
    );
    let r = post(json!({"model": "lenient", "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "read"}, {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}), &[])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn count_tokens_is_relayed_to_anthropic_or_answered_by_the_gateway() {
    let an = Mock::start("AN");
    let oa = Mock::start("OA");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: claude, deployments: [{{upstream: an, model: claude-sonnet-4-5, rpm: 1}}]}}\n  - {{name: gpt, deployments: [{{upstream: oa, model: gpt-4o}}]}}\n",
        anthropic_upstream("an", &an),
        openai_upstream("oa", &oa)
    )))
    .await;
    let c = client();
    let count = |model: &str| {
        c.post(gw.url("/v1/messages/count_tokens"))
            .header("x-api-key", "client-key")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "system": "Be brief.",
                "messages": [{"role": "user", "content": "How many tokens is this sentence?"}]}))
            .send()
    };
    // On Anthropic: relayed (the mock counts one per 4 bytes), outside the model's rpm budget.
    for _ in 0..3 {
        let r = count("claude").await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v["input_tokens"].as_u64().unwrap() > 10, "{v}");
    }
    let seen = an.requests_to("/v1/messages/count_tokens").await;
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0]["headers"]["x-api-key"], "sk-ant-upstream");
    assert!(seen[0]["body_prefix"]
        .as_str()
        .unwrap()
        .contains("claude-sonnet-4-5"));
    // Elsewhere: the gateway's own count (tiktoken for gpt-4o), nothing sent upstream.
    let r = count("gpt").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    assert!((8..40).contains(&n), "{v}");
    assert!(oa.requests().await.iter().all(|r| r["method"] != "POST"));
    // Errors in Anthropic's shape.
    let r = count("nope").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
}
