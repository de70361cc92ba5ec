//! Large bodies: 1 MiB routed with its model rewritten, also after a failed connect; 413 above the limit.
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

fn big_body(model: &str, bytes: usize) -> Vec<u8> {
    // The model field last, after the megabyte: routing must find it anywhere.
    serde_json::to_vec(
        &json!({"messages": [{"role": "user", "content": "x".repeat(bytes)}], "model": model}),
    )
    .unwrap()
}

#[tokio::test]
async fn one_mib_body_is_routed_rewritten_and_resent_after_a_failed_connect() {
    let a = Mock::start("A");
    let dead = free_port();
    let gw = gateway(
        &config(&format!(
            "upstreams:\n  - {{name: dead, url: \"http://127.0.0.1:{dead}/v1\", health_check: {{interval: 0s}}}}\n{}models:\n  - name: gpt-4o\n    strategy: round_robin\n    deployments: [{{upstream: dead, model: x}}, {{upstream: a, model: real-model-name}}]\n",
            upstream("a", &a)
        ))
        .replace("  threads: 2\n", "  threads: 2\n  max_request_body: 2MiB\n"),
    )
    .await;
    let body = big_body("gpt-4o", 1 << 20);
    for _ in 0..2 {
        // Round robin puts the dead deployment first on one of these two requests.
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "A");
    }
    let seen = a.requests_to("/v1/chat/completions").await;
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r["model"], "real-model-name");
        let expected = body.len() - "gpt-4o".len() + "real-model-name".len();
        assert_eq!(r["body_len"], expected);
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let a = Mock::start("A");
    let gw = gateway(
        &config(&format!(
            "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
            upstream("a", &a)
        ))
        .replace(
            "  threads: 2\n",
            "  threads: 2\n  max_request_body: 64KiB\n",
        ),
    )
    .await;
    // With a Content-Length: refused before reading.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(big_body("m", 100_000))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 413, "request_too_large").await;
    // Chunked, no Content-Length: refused while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big_body("m", 100_000)
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 413, "request_too_large").await;
    // Just under the limit is fine, and nothing was sent upstream for the refused ones.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(big_body("m", 60_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.requests_to("/v1/chat/completions").await.len(), 1);
}
