//! Conformance: the official OpenAI Python SDK does chat (stream and non-stream), embeddings, model
//! listing and error handling through llmproxy. `scripts/test` installs the SDK in a venv and sets
//! LLMPROXY_SDK_PYTHON; without it this test fails (set LLMPROXY_SKIP_SDK=1 to skip knowingly).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use common::*;

#[tokio::test]
async fn official_openai_python_sdk() {
    if std::env::var("LLMPROXY_SKIP_SDK").is_ok() {
        eprintln!("LLMPROXY_SKIP_SDK set: skipping the OpenAI SDK conformance test");
        return;
    }
    let python = std::env::var("LLMPROXY_SDK_PYTHON").expect(
        "LLMPROXY_SDK_PYTHON must name a python with the openai package (scripts/test sets it)",
    );
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: gpt-4o-mini, deployments: [{{upstream: a, model: real-mini}}]}}\n  - {{name: text-embedding-3-small, deployments: [{{upstream: a, model: emb}}]}}\n",
        upstream("a", &a)
    )))
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let base = gw.url("/v1");
    let out = tokio::process::Command::new(python)
        .args([
            script,
            base.as_str(),
            "gpt-4o-mini",
            "text-embedding-3-small",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "sdk script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chat_content"], "Hello from mock");
    assert!(v["chat_usage"].as_u64().unwrap() > 0);
    assert_eq!(v["stream_content"], "tok0 tok1 tok2 tok3 tok4 ");
    assert!(v["stream_usage"].as_u64().unwrap() > 0);
    assert_eq!(v["embeddings"], serde_json::json!([8, 8]));
    assert_eq!(
        v["models"],
        serde_json::json!(["gpt-4o-mini", "text-embedding-3-small"])
    );
    assert_eq!(v["not_found"], "NotFoundError");
    // The SDK's api_key never reached the upstream.
    assert!(!serde_json::to_string(&a.requests().await)
        .unwrap()
        .contains("sk-client-side-anything"));
}
