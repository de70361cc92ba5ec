//! Helpers for the governance tests (teams, end users, spend logs, the audit log): a keyed gateway's
//! config, management calls with the master key, and model calls as a key and an end user.

use super::*;
use serde_json::{json, Value};

pub const MASTER: &str = "sk-master-governance-0123456789";

/// A config with the master key, `state.database`, 200 ms refresh and spend flush, `rest`'s
/// upstreams and models, and `extra` top-level settings (e.g. `keys:` or `state.redis`).
pub fn keyed(database: &str, rest: &str, extra_state: &str, extra: &str) -> String {
    config(&format!(
        "state: {{database: \"{database}\", key_refresh: 200ms{extra_state}}}\n{extra}{rest}"
    ))
    .replace(
        "  threads: 2\n",
        &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
    )
}

/// A management call with the master key: `(status, body)`.
pub async fn manage(gw: &Gateway, method: &str, path: &str, body: Value) -> (u16, Value) {
    manage_as(gw, MASTER, method, path, body).await
}

/// A management call with `key`.
pub async fn manage_as(
    gw: &Gateway,
    key: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let c = client();
    let url = gw.url(path);
    let r = match method {
        "GET" => c.get(url),
        _ => c.post(url).json(&body),
    }
    .header("authorization", format!("Bearer {key}"))
    .send()
    .await
    .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST /key/generate` (must succeed); the secret.
pub async fn new_key(gw: &Gateway, body: Value) -> String {
    let (s, v) = manage(gw, "POST", "/key/generate", body).await;
    assert_eq!(s, 200, "{v}");
    v["key"].as_str().unwrap().to_string()
}

/// The key_id of a secret (as the gateway derives it).
pub async fn key_id_of(gw: &Gateway, secret: &str) -> String {
    let (s, v) = manage(gw, "GET", &format!("/key/info?key={secret}"), Value::Null).await;
    assert_eq!(s, 200, "{v}");
    v["info"]["key_id"].as_str().unwrap().to_string()
}

/// A chat request as `key`, naming `user` when given, with extra headers (the mock's `x-mock-*`).
pub async fn chat_as(
    gw: &Gateway,
    key: &str,
    model: &str,
    user: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let mut r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// Polls `GET /spend/logs?{query}` until it reports `total` rows (within 20 s); the last answer.
pub async fn wait_spend_logs(gw: &Gateway, query: &str, total: u64) -> Value {
    let t = Instant::now();
    loop {
        let (s, v) = manage(gw, "GET", &format!("/spend/logs?{query}"), Value::Null).await;
        assert_eq!(s, 200, "{v}");
        if v["total"].as_u64() == Some(total) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "spend logs ?{query}: {} rows, expected {total}",
            v["total"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An OpenAI-shaped error's message after checking status and code.
pub async fn refused(r: reqwest::Response, status: u16, code: &str) -> String {
    let v = assert_openai_error(r, status, code).await;
    v["error"]["message"].as_str().unwrap().to_string()
}
