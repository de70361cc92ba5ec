//! Azure OpenAI (`provider: azure`): deployment paths with `api-version`, `api-key` (or Entra bearer)
//! auth, the v1 Responses path, Azure's 429s retried and cooled like OpenAI's, health checks on
//! `/openai/models`, passthrough untouched, and `check` errors with their key paths.
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
use std::process::Command;
use std::time::{Duration, Instant};

const API_VERSION: &str = "2024-10-21";

/// An Azure upstream on a mock: the mock's root is the "resource endpoint".
fn azure_upstream(name: &str, mock: &Mock, auth: &str) -> String {
    azure_upstream_with(
        name,
        mock,
        auth,
        "{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}",
    )
}

fn azure_upstream_with(name: &str, mock: &Mock, auth: &str, health_check: &str) -> String {
    format!(
        "  - {{name: {name}, provider: azure, url: \"{}\", api_version: \"{API_VERSION}\", auth: {auth}, health_check: {health_check}}}\n",
        mock.base()
    )
}

const KEY_AUTH: &str = "{type: header, name: api-key, value: az-secret-key}";

/// The recorded requests whose path is `path` and whose method is POST.
async fn posts_to(mock: &Mock, path: &str) -> Vec<Value> {
    mock.requests_to(path)
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect()
}

/// The upstream saw the configured key and none of the client's credentials.
fn assert_upstream_auth(rec: &Value) {
    let h = &rec["headers"];
    assert_eq!(h["api-key"], "az-secret-key", "{rec}");
    assert!(h.get("authorization").is_none(), "{rec}");
    assert!(!rec.to_string().contains("client-secret"), "{rec}");
}

#[tokio::test]
async fn chat_stream_embeddings_completions_and_responses_through_an_azure_deployment() {
    let az = Mock::start("AZ");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: gpt-4o, deployments: [{{upstream: az, model: gpt4o-eu}}]}}\n",
        azure_upstream("az", &az, KEY_AUTH)
    )))
    .await;
    let c = client();
    let post = |path: &str, body: Value| {
        c.post(gw.url(path))
            .header("authorization", "Bearer client-secret-1")
            .header("api-key", "client-secret-2")
            .json(&body)
            .send()
    };
    let chat_path = "/openai/deployments/gpt4o-eu/chat/completions";

    // Chat, non-stream.
    let r = post(
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "AZ");
    assert_eq!(r.headers()["x-llmproxy-deployment"], "az");
    // Azure's rate-limit headers reach the client unchanged.
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "99");
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "99000");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt4o-eu", "Azure answers with the deployment");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    let seen = posts_to(&az, chat_path).await;
    assert_eq!(seen.len(), 1, "the exact Azure deployment path");
    assert_eq!(seen[0]["query"], format!("api-version={API_VERSION}"));
    assert_eq!(seen[0]["model"], "gpt4o-eu");
    assert_upstream_auth(&seen[0]);

    // Chat, stream: SSE relayed as it is, ending with [DONE].
    let r = post(
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let content: String = events
        .iter()
        .filter(|e| **e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .inspect(|v| assert_eq!(v["model"], "gpt4o-eu"))
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4 ");
    assert!(text.contains("\"usage\":{\"prompt_tokens\""), "{text}");
    let seen = posts_to(&az, chat_path).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1]["stream"], true);
    assert_upstream_auth(&seen[1]);

    // Embeddings.
    let r = post(
        "/v1/embeddings",
        json!({"model": "gpt-4o", "input": ["a", "b"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "gpt4o-eu");
    let seen = posts_to(&az, "/openai/deployments/gpt4o-eu/embeddings").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["query"], format!("api-version={API_VERSION}"));
    assert_upstream_auth(&seen[0]);

    // Legacy completions (also without the /v1 prefix on the client side).
    let r = post("/completions", json!({"model": "gpt-4o", "prompt": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    let seen = posts_to(&az, "/openai/deployments/gpt4o-eu/completions").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["query"], format!("api-version={API_VERSION}"));
    assert_upstream_auth(&seen[0]);

    // Responses: Azure's v1 surface, deployment as the body's model, no dated api-version.
    let r = post("/v1/responses", json!({"model": "gpt-4o", "input": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "gpt4o-eu");
    let seen = posts_to(&az, "/openai/v1/responses").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["query"], Value::Null);
    assert_eq!(seen[0]["model"], "gpt4o-eu");
    assert_upstream_auth(&seen[0]);

    // Nothing went to an OpenAI-style path, and the health check probed Azure's model list.
    let all = az.requests().await;
    assert!(
        all.iter()
            .all(|r| r["path"].as_str().unwrap().starts_with("/openai/")),
        "{all:?}"
    );
    let probe = all
        .iter()
        .find(|r| r["method"] == "GET")
        .expect("a health check");
    assert_eq!(probe["path"], "/openai/models");
    assert_eq!(probe["query"], format!("api-version={API_VERSION}"));
    assert_eq!(probe["headers"]["api-key"], "az-secret-key");
    let up = gw.upstreams().await;
    assert_eq!(up["healthy_endpoints"][0]["upstream"], "az", "{up}");
}

#[tokio::test]
async fn entra_bearer_auth_and_passthrough_routes_stay_as_they_are() {
    let az = Mock::start("AZ");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: az, model: dep-1}}]}}\nroutes:\n  - {{prefix: /azure, upstream: az}}\n",
        azure_upstream("az", &az, "{type: bearer, token: entra-token}")
    )))
    .await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("api-key", "client-secret")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = posts_to(&az, "/openai/deployments/dep-1/chat/completions").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["headers"]["authorization"], "Bearer entra-token");
    assert!(seen[0]["headers"].get("api-key").is_none(), "{}", seen[0]);

    // A passthrough route sends the client's path and query as they are, with the upstream's auth.
    let r =
        client()
            .post(gw.url(
                "/azure/openai/deployments/other/chat/completions?api-version=2025-01-01-preview",
            ))
            .header("api-key", "client-secret")
            .json(&json!({"model": "whatever", "messages": []}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let seen = posts_to(&az, "/openai/deployments/other/chat/completions").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["query"], "api-version=2025-01-01-preview");
    assert_eq!(
        seen[0]["model"], "whatever",
        "no model rewriting on passthrough"
    );
    assert_eq!(seen[0]["headers"]["authorization"], "Bearer entra-token");
    assert!(!seen[0].to_string().contains("client-secret"));
}

#[tokio::test]
async fn azure_429_with_retry_after_is_retried_elsewhere_and_cools_the_deployment() {
    let busy = Mock::start_with("BUSY", &["--fail-status", "429", "--retry-after", "30"]);
    let ok = Mock::start("OK");
    // The busy mock answers its health checks with 429 too: no active checks on it, so the 429s
    // on requests are what the gateway reacts to.
    let busy2 = azure_upstream_with("busy2", &busy, KEY_AUTH, "{interval: 0s}");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}{busy2}models:\n  - name: m\n    strategy: round_robin\n    retry: {{attempts: 2, backoff: 1ms, max_backoff: 1s, on: [429]}}\n    deployments: [{{upstream: busy, model: dep-busy}}, {{upstream: ok, model: dep-ok}}]\n  - name: only-busy\n    retry: {{attempts: 2, backoff: 1ms, max_backoff: 2ms, on: [429]}}\n    cooldown: {{allowed_fails: 0}}\n    deployments: [{{upstream: busy2, model: dep-busy}}]\n",
        azure_upstream_with("busy", &busy, KEY_AUTH, "{interval: 0s}"),
        azure_upstream("ok", &ok, KEY_AUTH),
    )))
    .await;
    gw.wait_upstreams(Duration::from_secs(10), |v| {
        v["healthy_endpoints"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["upstream"] == "ok"))
    })
    .await;

    // The one-deployment model gets Azure's 429 relayed as it is, after its retries.
    let r = gw.chat("only-busy").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(r.headers()["x-llmproxy-deployment"], "busy2");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "429", "Azure's own error body: {v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Please retry after 30 seconds"));
    let seen = posts_to(&busy, "/openai/deployments/dep-busy/chat/completions").await;
    assert_eq!(seen.len(), 2, "retry.attempts: 2");
    assert!(seen
        .iter()
        .all(|r| r["query"] == format!("api-version={API_VERSION}")));
    busy.reset().await;

    // With two deployments: answered by the other one, at once (Retry-After 30 s is beyond
    // max_backoff, so nobody waits for it), and the busy one is taken out for its Retry-After.
    let started = Instant::now();
    for _ in 0..6 {
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "OK");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let busy_posts = posts_to(&busy, "/openai/deployments/dep-busy/chat/completions").await;
    assert!(
        busy_posts.len() <= 1,
        "cooled after its 429: {}",
        busy_posts.len()
    );
    assert_eq!(
        posts_to(&ok, "/openai/deployments/dep-ok/chat/completions")
            .await
            .len(),
        6
    );
}

#[tokio::test]
async fn api_version_v1_uses_the_v1_surface_for_every_endpoint() {
    let az = Mock::start("AZ");
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: az, provider: azure, url: \"{}\", api_version: v1, auth: {KEY_AUTH}, health_check: {{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}}}}\nmodels:\n  - {{name: m, deployments: [{{upstream: az, model: dep-v1}}]}}\n",
        az.base()
    )))
    .await;
    let r = gw.chat("m").await;
    assert_eq!(r.status(), 200);
    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "m", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/openai/v1/chat/completions", "/openai/v1/embeddings"] {
        let seen = posts_to(&az, path).await;
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0]["query"], Value::Null, "no dated api-version on v1");
        assert_eq!(
            seen[0]["model"], "dep-v1",
            "the deployment is the body's model"
        );
        assert_upstream_auth(&seen[0]);
    }
    let probe = az
        .requests()
        .await
        .into_iter()
        .find(|r| r["method"] == "GET")
        .expect("a health check");
    assert_eq!(probe["path"], "/openai/v1/models");
}

#[tokio::test]
async fn the_mock_speaks_azure() {
    let az = Mock::start("AZ");
    let c = client();
    let url = |p: &str| format!("{}{p}", az.base());
    let body = json!({"model": "ignored", "messages": []});
    // No api-version: Azure's 404.
    let r = c
        .post(url("/openai/deployments/d/chat/completions"))
        .header("api-key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
    // No key: 401.
    let r = c
        .post(url(
            "/openai/deployments/d/chat/completions?api-version=2024-10-21",
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "401");
    // Unknown operation: 404.
    let r = c
        .post(url(
            "/openai/deployments/d/images/nope?api-version=2024-10-21",
        ))
        .header("api-key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The right shape: OpenAI's answer, model = deployment.
    let r = c
        .post(url(
            "/openai/deployments/d/chat/completions?api-version=2024-10-21",
        ))
        .header("api-key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "d");
    // The OpenAI paths are unchanged.
    let r = c
        .post(url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "ignored");
}

fn check(yaml: &str) -> (bool, String) {
    let path = tmp_path("azure-check.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(LLMPROXY)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_requires_api_version_for_azure_with_its_key_path() {
    let head = "server: {listeners: [{name: main, listen: \"127.0.0.1:4000\"}]}\n";
    let models = "models: [{name: m, deployments: [{upstream: az, model: d}]}]\n";

    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: az, provider: azure, url: \"https://ex.openai.azure.com\", api_version: 2024-10-21, auth: {{type: header, name: api-key, value: k}}}}\n{models}"
    ));
    assert!(ok, "{out}");
    assert!(out.contains("azure"), "{out}");

    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: az, provider: azure, url: \"https://ex.openai.azure.com\", auth: {{type: header, name: api-key, value: k}}}}\n{models}"
    ));
    assert!(!ok);
    assert!(
        out.contains("upstreams[0].api_version: required for provider `azure`"),
        "{out}"
    );

    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: az, provider: azure, url: \"https://ex.openai.azure.com/openai\", api_version: \"2024 10\"}}\n  - {{name: o, provider: openai, url: \"https://api.openai.com/v1\", api_version: 2024-10-21}}\n{models}"
    ));
    assert!(!ok);
    for needle in [
        "upstreams[0].api_version: `2024 10` is not an API version",
        "upstreams[0].url: for provider `azure` the URL is the resource endpoint",
        "upstreams[1].api_version: only used by provider `azure`",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }
}
