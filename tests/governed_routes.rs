//! Passthrough routes are governed like models: with keys on, a virtual key needs the route in its
//! `routes` scope; a listener serves only the routes its scope admits; only `allow_paths` reach the
//! upstream; `max_request_body` and the key's own rpm apply. And a scoped key's 404 lists only the
//! models it may use.
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
use std::io::{Read, Write};

const MASTER: &str = "sk-master-routes-0123456789";

/// (listener port, path, key, status, error code).
type Case<'a> = (u16, &'a str, Option<&'a str>, u16, Option<&'a str>);

async fn generate(gw: &Gateway, body: Value) -> String {
    let r = client()
        .post(gw.url("/key/generate"))
        .header("authorization", format!("Bearer {MASTER}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["key"].as_str().unwrap().to_string()
}

async fn get(port: u16, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut b = client().get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.send().await.unwrap()
}

fn raw(port: u16, req: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn routes_need_scope_and_obey_limits() {
    let a = Mock::start("A");
    let narrow = free_port();
    let listed = free_port();
    let db = tmp_path("routes.db");
    let yaml = config(&format!(
        "state: {{database: \"sqlite://{}\", key_refresh: 200ms}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n  - {{name: other, deployments: [{{upstream: a, model: o}}]}}\nroutes:\n  - {{prefix: /openai, upstream: a}}\n  - {{prefix: /raw, upstream: a, allow_paths: [/v1/models]}}\n",
        db.display(),
        upstream("a", &a)
    ))
    .replace(
        "  threads: 2\n",
        &format!("  threads: 2\n  master_key: \"{MASTER}\"\n  max_request_body: 1KiB\n"),
    )
    .replace(
        "listeners: [{name: main, listen: \"127.0.0.1:{PORT}\"}]",
        &format!(
            "listeners: [{{name: main, listen: \"127.0.0.1:{{PORT}}\"}}, {{name: narrow, listen: \"127.0.0.1:{narrow}\", models: [m]}}, {{name: listed, listen: \"127.0.0.1:{listed}\", models: [m], routes: [/raw]}}]"
        ),
    );
    let gw = gateway(&yaml).await;
    let p = gw.port;

    let model_only = generate(&gw, json!({"models": ["m"]})).await;
    let openai_only = generate(&gw, json!({"routes": ["/openai"]})).await;
    let both = generate(
        &gw,
        json!({"allowed_routes": ["/openai", "/raw/"], "rpm": 1}),
    )
    .await;

    a.reset().await;
    let cases: Vec<Case> = vec![
        (p, "/openai/v1/models", None, 401, Some("invalid_api_key")),
        (
            p,
            "/openai/v1/models",
            Some("sk-nope-00000000000000"),
            401,
            Some("invalid_api_key"),
        ),
        (p, "/openai/v1/models", Some(MASTER), 200, None),
        (
            p,
            "/openai/v1/models",
            Some(&model_only),
            403,
            Some("route_not_allowed"),
        ),
        (p, "/openai/v1/models", Some(&openai_only), 200, None),
        (
            p,
            "/raw/v1/models",
            Some(&openai_only),
            403,
            Some("route_not_allowed"),
        ),
        (p, "/raw/v1/models", Some(&both), 200, None),
        // Paths the route does not allow never reach the upstream, whoever asks.
        (
            p,
            "/raw/v1/chat/completions",
            Some(&both),
            403,
            Some("route_not_allowed"),
        ),
        (
            p,
            "/openai/v1/fine_tuning/jobs",
            Some(MASTER),
            403,
            Some("route_not_allowed"),
        ),
        (
            p,
            "/openai/admin",
            Some(MASTER),
            403,
            Some("route_not_allowed"),
        ),
        // A listener scoped to models serves no route unless it lists it.
        (
            narrow,
            "/openai/v1/models",
            Some(MASTER),
            403,
            Some("route_not_allowed"),
        ),
        (
            narrow,
            "/raw/v1/models",
            Some(MASTER),
            403,
            Some("route_not_allowed"),
        ),
        (listed, "/raw/v1/models", Some(MASTER), 200, None),
        (
            listed,
            "/openai/v1/models",
            Some(MASTER),
            403,
            Some("route_not_allowed"),
        ),
    ];
    let mut allowed = 0;
    for (port, path, key, status, code) in &cases {
        let r = get(*port, path, *key).await;
        match code {
            Some(c) => {
                let v = assert_openai_error(r, *status, c).await;
                assert!(
                    !v.to_string().contains("sk-up-a"),
                    "no upstream secret in errors"
                );
            }
            None => {
                assert_eq!(r.status().as_u16(), *status, "{port} {path} {key:?}");
                allowed += 1;
            }
        }
    }
    // Health probes (no request id) reach the upstream too; count the clients' requests.
    let seen: Vec<_> = a
        .requests()
        .await
        .into_iter()
        .filter(|r| r["headers"]["x-request-id"].is_string())
        .collect();
    assert_eq!(
        seen.len(),
        allowed,
        "only the admitted requests reached the upstream: {seen:?}"
    );

    // The key's rpm (1) holds on routes: it used its request above.
    let r = get(p, "/openai/v1/models", Some(&both)).await;
    assert_openai_error(r, 429, "rate_limited").await;

    // max_request_body: a declared length over it, and a chunked body growing past it.
    let big = "x".repeat(2048);
    let r = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("authorization", format!("Bearer {MASTER}"))
        .header("content-type", "application/json")
        .body(format!("{{\"model\":\"m\",\"pad\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 413, "request_too_large").await;
    let mut chunked = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..8 {
        chunked.extend_from_slice(format!("100\r\n{}\r\n", "y".repeat(256)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(p, &chunked);
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 413"),
        "chunked body over the limit: {resp:.300}"
    );
    let posts = a.requests_to("/v1/chat/completions").await;
    // The chunked one may have opened an upstream request, but its body was cut off at the limit.
    assert!(
        posts
            .iter()
            .all(|r| r["body_len"].as_u64().unwrap() <= 1024),
        "no oversized body reached the upstream: {posts:?}"
    );

    // A key scoped to one model learns only that model from a 404.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {model_only}"))
        .json(&json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    let v = assert_openai_error(r, 404, "model_not_found").await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.ends_with("Available models: m"), "{msg}");
}
