//! Every bad input and upstream failure answers OpenAI-shaped JSON with the spec's status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn bad_requests() {
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, aliases: [m-alias], deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &a)
    )))
    .await;
    let post = |body: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let v = assert_openai_error(post("{not json").await.unwrap(), 400, "invalid_request").await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_openai_error(post("").await.unwrap(), 400, "invalid_request").await;
    assert_openai_error(post("[1,2]").await.unwrap(), 400, "invalid_request").await;
    let v = assert_openai_error(
        post(r#"{"messages":[]}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["param"], "model");
    let v = assert_openai_error(
        post(r#"{"model":7,"messages":[]}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["param"], "model");
    assert!(v["error"]["message"].as_str().unwrap().contains("string"));
    let v = assert_openai_error(
        post(r#"{"model":"m","stream":"yes"}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["param"], "stream");
    let v = assert_openai_error(
        post(r#"{"model":"gpt-5"}"#).await.unwrap(),
        404,
        "model_not_found",
    )
    .await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("gpt-5") && msg.contains("m, m-alias"), "{msg}");
    assert_openai_error(
        client().get(gw.url("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_openai_error(
        client()
            .get(gw.url("/v1/chat/completions"))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    // None of these reached the upstream, and the connection stays usable (keep-alive).
    assert!(a.requests_to("/v1/chat/completions").await.is_empty());
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_request_errors_total",
            &[("error", "invalid_request"), ("status", "400")]
        ),
        Some(6.0)
    );
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_request_errors_total",
            &[("error", "model_not_found"), ("status", "404")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn upstream_failures() {
    let slow = Mock::start_with("S", &["--latency-ms", "3000"]);
    let sick = Mock::start("X");
    let dead = free_port();
    let gw = gateway(&config(&format!(
        r#"upstreams:
  - {{name: slow, url: "{}", client: {{request_timeout: 300ms}}, health_check: {{interval: 0s}}}}
  - {{name: sick, url: "{}", health_check: {{interval: 100ms, unhealthy_after: 1}}}}
  - {{name: dead, url: "http://127.0.0.1:{dead}/v1", health_check: {{interval: 0s}}}}
models:
  - {{name: slow, deployments: [{{upstream: slow, model: m}}]}}
  - {{name: sick, deployments: [{{upstream: sick, model: m}}]}}
  - {{name: dead, deployments: [{{upstream: dead, model: m}}, {{upstream: dead, model: m2}}]}}
"#,
        slow.url(),
        sick.url()
    )))
    .await;

    let started = std::time::Instant::now();
    let v = assert_openai_error(gw.chat("slow").await, 504, "upstream_timeout").await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "timed out at the configured 300ms, not the mock's 3s"
    );
    assert_eq!(v["error"]["type"], "api_error");

    sick.fail(500).await;
    gw.wait_upstreams(std::time::Duration::from_secs(5), |v| {
        v["unhealthy_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["upstream"] == "sick")
    })
    .await;
    let v = assert_openai_error(gw.chat("sick").await, 503, "no_healthy_upstream").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("sick"));

    let v = assert_openai_error(gw.chat("dead").await, 502, "upstream_error").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("connect"));

    // An upstream's own error status and body are relayed as they are.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-status", "429")
        .json(&json!({"model": "slow", "messages": []}))
        .header("x-mock-latency-ms", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "mock_429");
}
