//! SSE passthrough: bytes identical, pacing preserved, usage counted, honest errors mid-stream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

async fn setup() -> (Mock, Gateway) {
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: gpt-4o, deployments: [{{upstream: a, model: real-4o}}]}}\n",
        upstream("a", &a)
    )))
    .await;
    (a, gw)
}

/// Replace the per-call parts of the mock's output (ids, timestamps) so two calls compare equal.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
        let before = &rest[..i];
        out.push_str(before);
        let end = rest[i..]
            .find(|c: char| !c.is_ascii_digit())
            .map(|e| i + e)
            .unwrap_or(rest.len());
        if before.ends_with("chatcmpl-mock-") || before.ends_with("\"created\":") {
            out.push('N');
        } else {
            out.push_str(&rest[i..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn stream_bytes_identical_and_paced() {
    let (a, gw) = setup().await;
    let body = |model: &str| json!({"model": model, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let send = |url: String, model: &str| {
        client()
            .post(url)
            .header("x-mock-chunks", "6")
            .header("x-mock-chunk-interval-ms", "50")
            .json(&body(model))
            .send()
    };
    let r = send(gw.url("/v1/chat/completions"), "gpt-4o")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let start = Instant::now();
    let mut arrivals = Vec::new();
    let mut via_gateway = Vec::new();
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let events = chunk.windows(6).filter(|w| w == b"data: ").count();
        for _ in 0..events {
            arrivals.push(start.elapsed());
        }
        via_gateway.extend_from_slice(&chunk);
    }
    let direct = send(format!("{}/chat/completions", a.url()), "real-4o")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let g = String::from_utf8(via_gateway).unwrap();
    assert_eq!(
        normalize(&g),
        normalize(std::str::from_utf8(&direct).unwrap()),
        "same bytes as the upstream sent"
    );
    assert!(g.ends_with("data: [DONE]\n\n"));

    // 6 content events, 50 ms apart at the mock, must arrive at least 40 ms apart (not buffered).
    assert!(arrivals.len() >= 7, "{arrivals:?}");
    for pair in arrivals[..6].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(40),
            "events arrived {gap:?} apart: {arrivals:?}"
        );
    }

    // Usage from the SSE usage chunk is counted, and time to first token observed.
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_tokens_total",
            &[("model", "gpt-4o"), ("kind", "completion")]
        ),
        Some(6.0)
    );
    assert!(
        metric(
            &m,
            "llmproxy_tokens_total",
            &[("model", "gpt-4o"), ("kind", "prompt")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric(
            &m,
            "llmproxy_time_to_first_token_seconds_count",
            &[("model", "gpt-4o")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn upstream_failure_mid_stream_ends_with_an_error_event() {
    let (_a, gw) = setup().await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-drop-after-chunks", "2")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r
        .text()
        .await
        .expect("the stream ends cleanly, not truncated");
    assert_eq!(text.matches("tok").count(), 2, "{text}");
    assert!(text.contains("data: {\"error\":"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "llmproxy_stream_errors_total", &[("group", "gpt-4o")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn non_stream_usage_is_counted() {
    let (_a, gw) = setup().await;
    for _ in 0..3 {
        assert_eq!(gw.chat("gpt-4o").await.status(), 200);
    }
    let m = gw.metrics().await;
    // The mock reports 5 completion tokens per non-stream answer.
    assert_eq!(
        metric(
            &m,
            "llmproxy_tokens_total",
            &[("model", "gpt-4o"), ("kind", "completion")]
        ),
        Some(15.0)
    );
}

/// A stream whose client asks no usage: the gateway asks the upstream for it, keeping the client's
/// other `stream_options`, and the client's stream carries no usage event.
#[tokio::test]
async fn the_gateway_asks_for_stream_usage_keeping_the_clients_options() {
    let (a, gw) = setup().await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true,
            "stream_options": {"include_obfuscation": false},
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"choices\":[]"),
        "the usage event reached the client: {text}"
    );
    let seen = a.requests_to("/v1/chat/completions").await;
    let sent: serde_json::Value =
        serde_json::from_str(seen.last().unwrap()["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["stream_options"],
        json!({"include_obfuscation": false, "include_usage": true})
    );
}
