//! Conformance: the official OpenAI Python SDK does chat (stream and non-stream), embeddings, model
//! listing and error handling through llmproxy, over plain HTTP and over HTTPS (a TLS listener with
//! a self-signed certificate the SDK's client trusts). `scripts/test` installs the SDK in a venv and sets
//! LLMPROXY_SDK_PYTHON; without it this test fails (set LLMPROXY_SKIP_SDK=1 to skip knowingly).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use common::*;

/// The SDK's python, or `None` when the test is knowingly skipped.
fn sdk_python() -> Option<String> {
    if std::env::var("LLMPROXY_SKIP_SDK").is_ok() {
        eprintln!("LLMPROXY_SKIP_SDK set: skipping the OpenAI SDK conformance test");
        return None;
    }
    Some(std::env::var("LLMPROXY_SDK_PYTHON").expect(
        "LLMPROXY_SDK_PYTHON must name a python with the openai package (scripts/test sets it)",
    ))
}

fn sdk_config(a: &Mock) -> String {
    config(&format!(
        "upstreams:\n{}models:\n  - {{name: gpt-4o-mini, deployments: [{{upstream: a, model: real-mini}}]}}\n  - {{name: text-embedding-3-small, deployments: [{{upstream: a, model: emb}}]}}\n",
        upstream("a", a)
    ))
}

#[tokio::test]
async fn official_openai_python_sdk() {
    let Some(python) = sdk_python() else {
        return;
    };
    let a = Mock::start("A");
    let gw = gateway(&sdk_config(&a)).await;
    run_sdk(&python, &gw.url("/v1"), None, &a).await;
}

/// Issue 10: the SDK over HTTPS to a TLS listener, trusting the test's self-signed certificate.
#[tokio::test]
async fn official_openai_python_sdk_over_tls() {
    let Some(python) = sdk_python() else {
        return;
    };
    let a = Mock::start("A");
    let (cert, key) = self_signed_cert("sdk");
    let template = sdk_config(&a).replace(
        "listen: \"127.0.0.1:{PORT}\"}",
        &format!(
            "listen: \"127.0.0.1:{{PORT}}\", tls: {{cert: \"{}\", key: \"{}\"}}}}",
            cert.display(),
            key.display()
        ),
    );
    let (gw, _log) = gateway_with_log_admin_ready(&template, &[]).await;
    let base = format!("https://localhost:{}/v1", gw.port);
    run_sdk(&python, &base, Some(cert.to_str().unwrap()), &a).await;
}

async fn run_sdk(python: &str, base: &str, ca_file: Option<&str>, a: &Mock) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let mut args = vec![script, base, "gpt-4o-mini", "text-embedding-3-small"];
    args.extend(ca_file);
    let out = tokio::process::Command::new(python)
        .args(&args)
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
