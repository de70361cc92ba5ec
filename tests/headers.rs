//! Upstream auth and header operations; the client's key never reaches an upstream; request ids.
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
async fn header_ops_auth_and_client_keys() {
    let a = Mock::start("A");
    let b = Mock::start("B");
    let c = Mock::start("C");
    let gw = gateway(&config(&format!(
        r#"upstreams:
  - name: a
    url: "{}"
    auth: {{type: bearer, token: sk-upstream-a}}
    client: {{user_agent: llmproxy-test}}
    headers:
      - {{op: insert, key: X-Team, value: research}}
      - {{op: insert, key: X-Absent, value: added}}
      - {{op: replace, key: X-Env, value: prod}}
      - {{op: remove, key: X-Internal}}
  - {{name: b, url: "{}", auth: {{type: basic, username: user, password: pw}}}}
  - {{name: c, url: "{}", auth: {{type: header, name: api-key, value: azure-like}}}}
models:
  - {{name: ma, deployments: [{{upstream: a, model: ma}}]}}
  - {{name: mb, deployments: [{{upstream: b, model: mb}}]}}
  - {{name: mc, deployments: [{{upstream: c, model: mc}}]}}
"#,
        a.url(),
        b.url(),
        c.url()
    )))
    .await;
    for model in ["ma", "mb", "mc"] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-client-secret")
            .header("x-api-key", "sk-client-secret")
            .header("api-key", "sk-client-secret")
            .header("x-team", "mine")
            .header("x-env", "dev")
            .header("x-internal", "secret-route")
            .header("x-request-id", "req-123")
            .json(&json!({"model": model, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-request-id"], "req-123");
    }
    let ra = &a.requests_to("/v1/chat/completions").await[0]["headers"];
    assert_eq!(ra["authorization"], "Bearer sk-upstream-a");
    assert_eq!(ra["x-team"], "mine", "insert keeps the client's value");
    assert_eq!(ra["x-absent"], "added", "insert adds when absent");
    assert_eq!(ra["x-env"], "prod", "replace overwrites");
    assert!(ra.get("x-internal").is_none(), "remove removes");
    assert_eq!(ra["user-agent"], "llmproxy-test");
    assert_eq!(ra["x-request-id"], "req-123", "request id forwarded");
    let rb = &b.requests_to("/v1/chat/completions").await[0]["headers"];
    assert_eq!(rb["authorization"], "Basic dXNlcjpwdw==");
    let rc = &c.requests_to("/v1/chat/completions").await[0]["headers"];
    assert_eq!(rc["api-key"], "azure-like");
    assert!(rc.get("authorization").is_none());
    // The client's key is nowhere in what any upstream received, health checks included.
    for m in [&a, &b, &c] {
        let all = serde_json::to_string(&m.requests().await).unwrap();
        assert!(
            !all.contains("sk-client-secret"),
            "client key leaked to {}",
            m.name
        );
    }
    // A generated request id when the client sends none, forwarded upstream too.
    let r = gw.chat("ma").await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let last = a.requests_to("/v1/chat/completions").await;
    assert_eq!(last.last().unwrap()["headers"]["x-request-id"], id.as_str());
}
