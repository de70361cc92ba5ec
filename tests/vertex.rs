//! `provider: vertex` through the real binary, against the mock's Vertex AI: the publisher paths
//! with Gemini's wire format, and OAuth2 access tokens from a service-account key (the JWT grant
//! at the key file's `token_uri`), `GOOGLE_APPLICATION_CREDENTIALS` or the metadata server —
//! one grant for many requests, refreshed before expiry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use mock_upstream::gcp_test_key;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const EMAIL: &str = "llmproxy-test@mock-project.iam.gserviceaccount.com";
const PUBLISHER: &str = "/v1/projects/mock-project/locations/us-central1/publishers/google";

/// A mock that verifies the test key's signatures and accepts only its own tokens.
fn mock(ttl: &str) -> Mock {
    Mock::start_with(
        "V",
        &[
            "--gcp-sa-public-key",
            gcp_test_key::PUBLIC_KEY_PATH,
            "--gcp-sa-email",
            EMAIL,
            "--gcp-token-ttl",
            ttl,
        ],
    )
}

/// A service-account key file whose `token_uri` is the mock's.
fn key_file(mock: &Mock) -> String {
    let path = tmp_path("gcp-sa.json");
    std::fs::write(
        &path,
        gcp_test_key::service_account_json(EMAIL, &format!("{}/token", mock.base())),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn vertex_config(mock: &Mock, auth: &str) -> String {
    config(&format!(
        "upstreams:\n  - {{name: v, provider: vertex, url: \"{}{PUBLISHER}\", auth: {auth}}}\nmodels:\n  - {{name: gem, deployments: [{{upstream: v, model: gemini-2.5-flash}}]}}\n  - {{name: emb, deployments: [{{upstream: v, model: text-embedding-005}}]}}\n",
        mock.base()
    ))
}

async fn grants(mock: &Mock) -> u64 {
    mock.stats().await["token_grants"].as_u64().unwrap()
}

async fn chat(gw: &Gateway, stream: bool) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gem", "messages": [{"role": "user", "content": "Say hi"}], "stream": stream}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_grant_serves_many_requests() {
    let mock = mock("3600");
    let auth = format!("{{type: gcp, credentials_file: \"{}\"}}", key_file(&mock));
    let gw = gateway(&vertex_config(&mock, &auth)).await;
    // Concurrent first requests share one grant.
    let first: Vec<_> = (0..8).map(|_| chat(&gw, false)).collect();
    for r in futures_util::future::join_all(first).await {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    }
    for _ in 0..10 {
        let r = chat(&gw, true).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("tok4") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
    }
    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "emb", "input": ["one", "two words"], "dimensions": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], 3, "Vertex's own token counts");
    assert_eq!(grants(&mock).await, 1);
    let reqs = mock.requests().await;
    let token = reqs.iter().find(|r| r["path"] == "/token").unwrap();
    assert_eq!(token["auth"]["ok"], true);
    assert_eq!(token["auth"]["signature_verified"], true);
    let calls: Vec<&Value> = reqs.iter().filter(|r| r["path"] != "/token").collect();
    assert_eq!(calls.len(), 19);
    for r in &calls {
        assert_eq!(r["auth"]["ok"], true, "{r}");
        assert_eq!(r["auth"]["issued_by_mock"], true, "{r}");
    }
    let paths: Vec<&str> = calls.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&format!("{PUBLISHER}/models/gemini-2.5-flash:generateContent").as_str())
    );
    assert!(paths
        .contains(&format!("{PUBLISHER}/models/gemini-2.5-flash:streamGenerateContent").as_str()));
    assert!(paths.contains(&format!("{PUBLISHER}/models/text-embedding-005:predict").as_str()));
}

#[tokio::test]
async fn a_short_lived_token_is_replaced() {
    let mock = mock("3");
    let auth = format!("{{type: gcp, credentials_file: \"{}\"}}", key_file(&mock));
    let gw = gateway(&vertex_config(&mock, &auth)).await;
    for _ in 0..5 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    assert_eq!(grants(&mock).await, 1);
    tokio::time::sleep(Duration::from_millis(3300)).await;
    // The old token has expired (the mock refuses it): a new grant first.
    for _ in 0..5 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    assert_eq!(grants(&mock).await, 2);
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    let mock = mock("10");
    let auth = format!("{{type: gcp, credentials_file: \"{}\"}}", key_file(&mock));
    let gw = gateway(&vertex_config(&mock, &auth)).await;
    let t0 = Instant::now();
    assert_eq!(chat(&gw, false).await.status(), 200);
    assert_eq!(grants(&mock).await, 1);
    // In the token's last fifth: answered with the current token, a refresh starts meanwhile.
    tokio::time::sleep(Duration::from_millis(8300).saturating_sub(t0.elapsed())).await;
    assert_eq!(chat(&gw, false).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while grants(&mock).await < 2 {
        assert!(Instant::now() < deadline, "no refresh before expiry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "refreshed before the old token expired"
    );
    for _ in 0..5 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    assert_eq!(grants(&mock).await, 2);
}

#[tokio::test]
async fn application_default_credentials_and_metadata_server() {
    let mock = mock("3600");
    // GOOGLE_APPLICATION_CREDENTIALS when the upstream names no file.
    let gw = gateway_with_env(
        &vertex_config(&mock, "{type: gcp}"),
        &[("GOOGLE_APPLICATION_CREDENTIALS", &key_file(&mock))],
    )
    .await;
    assert_eq!(chat(&gw, false).await.status(), 200);
    assert_eq!(grants(&mock).await, 1);
    drop(gw);
    // Else the metadata server (GCE_METADATA_HOST points at the mock).
    let host = format!("127.0.0.1:{}", mock.port);
    let gw = gateway_with_env(
        &vertex_config(&mock, "{type: gcp, credentials_file: \"\"}"),
        &[("GCE_METADATA_HOST", &host)],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    assert_eq!(grants(&mock).await, 2);
    let md: Vec<Value> = mock
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap()
                .ends_with("/service-accounts/default/token")
        })
        .collect();
    assert_eq!(md.len(), 1);
    assert_eq!(md[0]["headers"]["metadata-flavor"], "Google");
}

#[tokio::test]
async fn a_failing_grant_is_a_clear_error() {
    let mock = mock("3600");
    let path = tmp_path("gcp-sa-other.json");
    // A key for another account: the token endpoint refuses the grant.
    std::fs::write(
        &path,
        gcp_test_key::service_account_json(
            "someone-else@x.iam.gserviceaccount.com",
            &format!("{}/token", mock.base()),
        ),
    )
    .unwrap();
    let auth = format!("{{type: gcp, credentials_file: \"{}\"}}", path.display());
    let gw = gateway(&vertex_config(&mock, &auth)).await;
    let r = chat(&gw, false).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access token"),
        "{v}"
    );
}

fn check(yaml: &str) -> (bool, String) {
    let path = tmp_path("vertex-check.yaml");
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
fn check_reports_google_settings_with_key_paths() {
    let head = "server: {listeners: [{name: main, listen: \"127.0.0.1:4000\"}]}\n";
    let models = "models: [{name: m, deployments: [{upstream: v, model: gemini-2.5-flash}]}]\n";
    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: v, provider: vertex, url: \"https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google\", auth: {{type: gcp, credentials_file: /nonexistent/sa.json}}}}\n{models}"
    ));
    assert!(!ok);
    assert!(
        out.contains("upstreams[0].auth.credentials_file: cannot read the credentials file `/nonexistent/sa.json`"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: v, provider: vertex, url: \"https://us-central1-aiplatform.googleapis.com/v1\"}}\n  - {{name: g, provider: gemini, url: \"https://generativelanguage.googleapis.com/v1beta\"}}\n{models}"
    ));
    assert!(!ok);
    for needle in [
        "upstreams[0].url: for provider `vertex` the URL is the publisher path",
        "upstreams[0].auth: required for provider `vertex`",
        "upstreams[1].auth: required for provider `gemini`",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }
    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: v, provider: vertex, url: \"https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google\", auth: {{type: gcp}}}}\n{models}"
    ));
    assert!(ok, "{out}");
}

/// Seed 002's quick start: `--model vertex_ai/<id>`, credentials from
/// `GOOGLE_APPLICATION_CREDENTIALS`.
#[tokio::test]
async fn quick_start_model_flag() {
    let mock = mock("3600");
    let (port, admin) = (free_port(), free_port());
    let (port_s, admin_s, base) = (
        port.to_string(),
        format!("127.0.0.1:{admin}"),
        format!("{}{PUBLISHER}", mock.base()),
    );
    let key = key_file(&mock);
    let args = [
        "--model",
        "vertex_ai/gemini-2.5-flash",
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
        &[("GOOGLE_APPLICATION_CREDENTIALS", &key)],
        port,
        admin,
        std::path::PathBuf::new(),
    )
    .await;
    let r = gw.chat("gemini-2.5-flash").await;
    assert_eq!(r.status(), 200);
    assert_eq!(grants(&mock).await, 1);
}
