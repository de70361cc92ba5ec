//! Path-prefix passthrough routes: as-is to the upstream with its auth and header ops; unsafe paths 400.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use std::io::{Read, Write};

#[tokio::test]
async fn passthrough_route() {
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", auth: {{type: bearer, token: sk-up}}, headers: [{{op: insert, key: X-Team, value: t}}]}}\nmodels:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\nroutes:\n  - {{prefix: /openai, upstream: a}}\n",
        a.url()
    )))
    .await;
    let r = client()
        .get(gw.url("/openai/v1/models?limit=5"))
        .header("authorization", "Bearer sk-client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "A");
    assert_eq!(r.headers()["x-llmproxy-deployment"], "a");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let seen = a.requests().await;
    let req = seen
        .iter()
        .rev()
        .find(|r| r["query"] == "limit=5")
        .expect("recorded");
    assert_eq!(req["path"], "/v1/models");
    assert_eq!(req["headers"]["authorization"], "Bearer sk-up");
    assert_eq!(req["headers"]["x-team"], "t");

    // A body passes through unchanged (no model rewriting on passthrough).
    let r = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&serde_json::json!({"model": "upstream-name", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = a.requests_to("/v1/chat/completions").await;
    assert_eq!(last.last().unwrap()["model"], "upstream-name");

    for bad in [
        "/openai/v1/../admin",
        "/openai/v1/%2e%2e/admin",
        "/openai//evil.example/x",
    ] {
        let r = raw_request(
            gw.port,
            &format!("GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 400"), "{bad}: {r}");
        assert!(r.contains("\"invalid_request\""), "{bad}: {r}");
    }
    let r = raw_request(gw.port, "GET http://evil.example/openai/v1/models HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "absolute URL: {r}");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_requests_total",
            &[("path", "/openai/*"), ("method", "POST")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_requests_total",
            &[("path", "/openai/*"), ("method", "GET")]
        ),
        Some(5.0)
    );
}

fn raw_request(port: u16, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
