//! One conformance suite run against every provider adapter (`openai`, `openai_compatible`, `azure`,
//! `anthropic`), each in front of the mock upstream speaking that provider's dialect. The client
//! side is always OpenAI's format; the suite prints the provider × feature matrix and asserts it,
//! including what a provider does not support (answered with a clear 400, never a wrong answer).
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
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Result {
    Pass,
    /// Not offered by the provider: the gateway answered 400 saying so.
    Unsupported,
}

const PROVIDERS: &[&str] = &["openai", "openai_compatible", "azure", "anthropic"];

fn upstream_entry(provider: &str, mock: &Mock) -> String {
    let hc = "health_check: {interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}";
    match provider {
        "azure" => format!(
            "  - {{name: up, provider: azure, url: \"{}\", api_version: \"2024-10-21\", auth: {{type: header, name: api-key, value: k}}, {hc}}}\n",
            mock.base()
        ),
        "anthropic" => format!(
            "  - {{name: up, provider: anthropic, url: \"{}/v1\", auth: {{type: header, name: x-api-key, value: k}}, {hc}}}\n",
            mock.base()
        ),
        p => format!(
            "  - {{name: up, provider: {p}, url: \"{}\", auth: {{type: bearer, token: k}}, {hc}}}\n",
            mock.url()
        ),
    }
}

/// A 400 from the gateway saying the provider lacks the endpoint.
async fn unsupported(r: reqwest::Response) -> Result {
    let v = assert_openai_error(r, 400, "invalid_request").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("provider"),
        "{v}"
    );
    Result::Unsupported
}

async fn run(provider: &str) -> BTreeMap<&'static str, Result> {
    let mock = Mock::start(provider);
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, retry: {{attempts: 1}}, deployments: [{{upstream: up, model: model-x}}]}}\n",
        upstream_entry(provider, &mock)
    )))
    .await;
    let c = client();
    let post = |path: &str, body: Value, headers: &[(&str, &str)]| {
        let mut req = c.post(gw.url(path)).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    let mut out = BTreeMap::new();

    // chat
    let r = post(
        "/v1/chat/completions",
        json!({"model": "m", "messages": hi}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{provider}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{provider}: {v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    out.insert("chat", Result::Pass);

    // stream, with usage
    let r = post(
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": hi}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "{provider}: {text}"
    );
    let events = sse_data(&text);
    assert!(events
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk"));
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4 ", "{provider}");
    out.insert("stream", Result::Pass);
    let usage = events.iter().rev().find(|e| e["usage"].is_object());
    assert_eq!(
        usage.map(|u| u["usage"]["completion_tokens"].clone()),
        Some(json!(5)),
        "{provider}: {text}"
    );
    out.insert("stream usage", Result::Pass);

    // tools
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = post(
        "/v1/chat/completions",
        json!({"model": "m", "tools": tools, "messages": [{"role": "user", "content": "Paris?"}]}),
        &[("x-mock-tool-call", "get_weather")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["finish_reason"], "tool_calls",
        "{provider}: {v}"
    );
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{provider}: {v}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.is_object(), "{provider}: {v}");
    // ...and the tool result sent back.
    let r = post(
        "/v1/chat/completions",
        json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{provider}");
    out.insert("tools", Result::Pass);

    // images (base64 and URL)
    let r = post(
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{provider}");
    out.insert("images", Result::Pass);

    // embeddings
    let r = post(
        "/v1/embeddings",
        json!({"model": "m", "input": ["a", "b"]}),
        &[],
    )
    .await
    .unwrap();
    let res = if provider == "anthropic" {
        unsupported(r).await
    } else {
        assert_eq!(r.status(), 200, "{provider}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        Result::Pass
    };
    out.insert("embeddings", res);

    // responses
    let r = post("/v1/responses", json!({"model": "m", "input": "hi"}), &[])
        .await
        .unwrap();
    let res = if provider == "anthropic" {
        unsupported(r).await
    } else {
        assert_eq!(r.status(), 200, "{provider}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "response");
        assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
        Result::Pass
    };
    out.insert("responses", res);

    // errors: the upstream's status, in OpenAI's shape
    for status in [400u16, 401, 429, 500] {
        let r = post(
            "/v1/chat/completions",
            json!({"model": "m", "messages": hi}),
            &[("x-mock-status", &status.to_string())],
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), status, "{provider}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{provider}: {v}");
    }
    out.insert("errors", Result::Pass);

    // usage counted (metrics are updated as each request is logged: poll, bounded)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        let get = |kind: &str| {
            metric(
                &m,
                "llmproxy_tokens_total",
                &[("model", "m"), ("kind", kind)],
            )
            .unwrap_or(0.0)
        };
        // chat (1+) + stream (5) + tool call + tool result + images completions at least.
        if get("prompt") > 0.0 && get("completion") >= 6.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{provider}: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.insert("usage", Result::Pass);
    out
}

#[tokio::test]
async fn every_provider_adapter_passes_the_same_suite() {
    let mut matrix = BTreeMap::new();
    for p in PROVIDERS {
        matrix.insert(*p, run(p).await);
    }
    let features: Vec<&str> = matrix["openai"].keys().copied().collect();
    eprintln!("provider × feature (ok = pass, n/a = 400 unsupported)");
    eprintln!("{:<18} {}", "", features.join(" | "));
    for (p, row) in &matrix {
        let cells: Vec<String> = features
            .iter()
            .map(|f| match row[f] {
                Result::Pass => "ok".to_string(),
                Result::Unsupported => "n/a".to_string(),
            })
            .collect();
        eprintln!("{p:<18} {}", cells.join(" | "));
    }
    for (p, row) in &matrix {
        for (f, r) in row {
            let expected = if *p == "anthropic" && matches!(*f, "embeddings" | "responses") {
                Result::Unsupported
            } else {
                Result::Pass
            };
            assert_eq!(*r, expected, "{p} {f}");
        }
    }
}
