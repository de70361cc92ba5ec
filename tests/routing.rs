//! Routing by model and alias, listener scoping, `/v1/models`, paths without `/v1`, quick start.
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

#[tokio::test]
async fn routes_by_model_and_alias_and_rewrites_model() {
    let a = Mock::start("A");
    let b = Mock::start("B");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: gpt-4o, aliases: [gpt-4], deployments: [{{upstream: a, model: real-4o}}]}}\n  - {{name: small, deployments: [{{upstream: b, model: real-small}}]}}\n",
        upstream("a", &a),
        upstream("b", &b)
    )))
    .await;

    let r = gw.chat("gpt-4o").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "A");
    assert_eq!(r.headers()["x-llmproxy-deployment"], "a");
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["model"], "real-4o",
        "the mock saw the deployment's model name"
    );

    let r = gw.chat("gpt-4").await;
    assert_eq!(served_by(&r), "A", "alias routes to its model");
    let r = gw.chat("small").await;
    assert_eq!(served_by(&r), "B");

    // Every path also answers without /v1.
    let r = client()
        .post(gw.url("/chat/completions"))
        .json(&json!({"model": "small", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&r), "B");
    let recorded = b.requests_to("/v1/chat/completions").await;
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r["model"] == "real-small"));

    // Other endpoints route the same way.
    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": "small", "input": ["a", "b"]}),
        ),
        ("/v1/completions", json!({"model": "small", "prompt": "x"})),
        ("/v1/responses", json!({"model": "small", "input": "x"})),
    ] {
        let r = client()
            .post(gw.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(served_by(&r), "B");
        assert_eq!(b.requests_to(path).await.len(), 1, "{path}");
    }

    // /v1/models lists names and aliases in OpenAI list format.
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o", "gpt-4", "small"]);
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));
    let r = client().get(gw.url("/models/gpt-4")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(gw.url("/v1/models/nope"))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 404, "model_not_found").await;
}

#[tokio::test]
async fn listener_models_scope() {
    let a = Mock::start("A");
    let open = free_port();
    let template = format!(
        "server:\n  listeners:\n    - {{name: main, listen: \"127.0.0.1:{{PORT}}\", models: [small]}}\n    - {{name: open, listen: \"127.0.0.1:{open}\"}}\nadmin: {{listen: \"127.0.0.1:{{ADMIN}}\"}}\nupstreams:\n{}models:\n  - {{name: big, deployments: [{{upstream: a, model: big}}]}}\n  - {{name: small, deployments: [{{upstream: a, model: small}}]}}\n",
        upstream("a", &a)
    );
    let gw = gateway(&template).await;
    assert_eq!(gw.chat("small").await.status(), 200);
    let v = assert_openai_error(gw.chat("big").await, 403, "model_not_allowed").await;
    assert_eq!(v["error"]["param"], "model");
    let v = assert_openai_error(gw.chat("nope").await, 404, "model_not_found").await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("small") && !msg.contains("big"),
        "lists only what this listener may use: {msg}"
    );
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);

    // The other listener serves everything, and is counted under its own name.
    let r = client()
        .post(format!("http://127.0.0.1:{open}/v1/chat/completions"))
        .json(&json!({"model": "big", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_requests_total",
            &[("forward", "open"), ("method", "POST")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_requests_total",
            &[("forward", "main"), ("method", "POST")]
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn quick_start_serves_one_model_without_config() {
    let a = Mock::start("A");
    let port = free_port();
    let admin = free_port();
    let gw = Gateway::spawn(
        &[
            "--model",
            "llama",
            "--api-base",
            &a.url(),
            "--port",
            &port.to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ],
        port,
        admin,
        Default::default(),
    )
    .await;
    let r = gw.chat("llama").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "A");
}

#[tokio::test]
async fn deployment_params_fill_in_what_the_client_left_out() {
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m, params: {{temperature: 0.2, max_tokens: 7, response_format: {{type: json_object}}}}, headers: {{OpenAI-Organization: org-dep, x-extra: one}}}}]}}\n",
        upstream("a", &a)
    )))
    .await;
    for body in [
        serde_json::json!({"model": "m", "messages": []}),
        serde_json::json!({"model": "m", "messages": [], "temperature": 0.9}),
    ] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-extra", "client")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let sent = a.requests_to("/v1/chat/completions").await;
    let b0: serde_json::Value =
        serde_json::from_str(sent[0]["body_prefix"].as_str().unwrap()).unwrap();
    let b1: serde_json::Value =
        serde_json::from_str(sent[1]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(b0["temperature"], 0.2);
    assert_eq!(b0["max_tokens"], 7);
    assert_eq!(b0["response_format"]["type"], "json_object");
    // The client's own value wins.
    assert_eq!(b1["temperature"], 0.9);
    assert_eq!(b1["max_tokens"], 7);
    // The deployment's headers are added; a header the client sent itself is kept.
    assert_eq!(sent[0]["headers"]["openai-organization"], "org-dep");
    assert_eq!(sent[0]["headers"]["x-extra"], "client");
}

#[test]
fn deployment_headers_cannot_carry_credentials() {
    let yaml = "server:\n  listeners: [{name: main, listen: \"127.0.0.1:1\"}]\nupstreams:\n  - {name: a, url: \"http://127.0.0.1:1/v1\"}\nmodels:\n  - {name: m, deployments: [{upstream: a, model: m, headers: {Authorization: Bearer x, \"bad name\": v}}]}\n";
    let path = tmp_path("deployment-headers.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(LLMPROXY)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("models[0].deployments[0].headers.Authorization"),
        "{text}"
    );
    assert!(text.contains("not a valid header name"), "{text}");
}
