//! Retries, failover, cooldowns, fallbacks, per-request overrides, timeouts, client aborts.
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
use std::time::{Duration, Instant};

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn killed_deployment_mid_load_loses_no_request() {
    let a = Mock::start_with("A", &["--no-record"]);
    let mut b = Some(Mock::start_with("B", &["--no-record"]));
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - name: m\n    strategy: round_robin\n    retry: {{attempts: 3, backoff: 10ms, max_backoff: 50ms, on: [connect, timeout, 5xx]}}\n    deployments: [{{upstream: a, model: m}}, {{upstream: b, model: m}}]\n",
        upstream("a", &a),
        upstream("b", b.as_ref().unwrap())
    )))
    .await;
    let url = gw.url("/v1/chat/completions");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u16>(1000);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    // The sender runs beside the loop below, so B is killed while most requests are still to come
    // (sending them inline finished ~984 before the loop started: B died with nothing left to retry).
    tokio::spawn(async move {
        for _ in 0..1000 {
            let (tx, url, sem) = (tx.clone(), url.clone(), sem.clone());
            let permit = sem.acquire_owned().await.unwrap();
            tokio::spawn(async move {
                let s = client()
                    .post(url)
                    .json(&chat_body("m"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                drop(permit);
                let _ = tx.send(s).await;
            });
        }
    });
    let mut done = 0;
    let mut failed = Vec::new();
    while let Some(s) = rx.recv().await {
        done += 1;
        if s != 200 {
            failed.push(s);
        }
        if done == 300 {
            b.take(); // kill deployment B while requests are in flight
        }
    }
    assert_eq!(done, 1000);
    assert!(
        failed.is_empty(),
        "requests failed at the client: {failed:?}"
    );
    let m = gw.metrics().await;
    // B died mid-load: it served part of its round-robin share, and its death was seen either by
    // a request (retried on A) or first by the 200 ms health check (then no request went to it:
    // nothing to retry). Which one comes first is a race; both lose nothing.
    let served_b = metric(
        &m,
        "llmproxy_upstream_requests_total",
        &[("group", "m"), ("upstream", "b")],
    )
    .unwrap_or(0.0);
    assert!(
        (1.0..=450.0).contains(&served_b),
        "B served {served_b} of 1000"
    );
    let retries = metric(&m, "llmproxy_retries_total", &[("group", "m")]).unwrap_or(0.0);
    let b_healthy = metric(&m, "llmproxy_upstream_healthy", &[("upstream", "b")]).unwrap_or(1.0);
    assert!(
        retries >= 1.0 || b_healthy == 0.0,
        "B's death went unseen: {retries} retries, llmproxy_upstream_healthy{{upstream=\"b\"}} {b_healthy}"
    );
}

#[tokio::test]
async fn failing_deployment_cools_down_and_returns() {
    let a = Mock::start("A");
    let b = Mock::start_with("B", &["--fail-status", "503"]);
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", health_check: {{interval: 0s}}}}\n  - {{name: b, url: \"{}\", health_check: {{interval: 0s}}}}\nmodels:\n  - name: m\n    strategy: round_robin\n    retry: {{attempts: 2, backoff: 1ms, max_backoff: 1ms, on: [429, 5xx]}}\n    cooldown: {{allowed_fails: 2, window: 10s, duration: 1s}}\n    deployments: [{{upstream: a, model: m}}, {{upstream: b, model: m}}]\n",
        a.url(),
        b.url()
    )))
    .await;
    // Traffic shifts to A: every client request succeeds.
    for _ in 0..10 {
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "A");
    }
    // After 2 failures B cooled down: it saw exactly 2 requests, and is shown cooling.
    assert_eq!(b.requests_to("/v1/chat/completions").await.len(), 2);
    let up = gw.upstreams().await;
    let cooling = up["unhealthy_endpoints"].as_array().unwrap();
    assert_eq!(cooling.len(), 1);
    assert_eq!(cooling[0]["upstream"], "b");
    assert!(cooling[0]["cooldown_remaining_ms"].as_u64().unwrap() > 0);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "llmproxy_upstream_healthy", &[("upstream", "b")]),
        Some(0.0)
    );
    // B recovers; after its cooldown it returns to rotation.
    b.fail(0).await;
    gw.wait_upstreams(Duration::from_secs(5), |v| {
        v["unhealthy_endpoints"].as_array().unwrap().is_empty()
    })
    .await;
    let mut seen_b = 0;
    for _ in 0..10 {
        if served_by(&gw.chat("m").await) == "B" {
            seen_b += 1;
        }
    }
    assert_eq!(seen_b, 5);
}

#[tokio::test]
async fn rate_limited_deployment_with_retry_after_is_skipped() {
    let a = Mock::start("A");
    let b = Mock::start_with("B", &["--fail-status", "429", "--retry-after", "30"]);
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", health_check: {{interval: 0s}}}}\n  - {{name: b, url: \"{}\", health_check: {{interval: 0s}}}}\nmodels:\n  - name: m\n    strategy: round_robin\n    retry: {{attempts: 2, backoff: 1ms, max_backoff: 1s, on: [429]}}\n    deployments: [{{upstream: b, model: m}}, {{upstream: a, model: m}}]\n",
        a.url(),
        b.url()
    )))
    .await;
    let started = Instant::now();
    for _ in 0..6 {
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
    }
    // Retry-After: 30 is beyond max_backoff: nobody waited for it, B was taken out instead.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(b.requests_to("/v1/chat/completions").await.len(), 1);
}

#[tokio::test]
async fn last_upstream_error_is_relayed_after_retries() {
    let b = Mock::start_with("B", &["--fail-status", "500"]);
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: b, url: \"{}\", health_check: {{interval: 0s}}}}\nmodels:\n  - name: m\n    retry: {{attempts: 3, backoff: 1ms, max_backoff: 2ms}}\n    cooldown: {{allowed_fails: 0}}\n    deployments: [{{upstream: b, model: m}}]\n",
        b.url()
    )))
    .await;
    let r = gw.chat("m").await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "mock_500", "the upstream's own answer");
    assert_eq!(
        b.requests_to("/v1/chat/completions").await.len(),
        3,
        "attempts: 3"
    );
    // num_retries lowers it for one request (never raises it above the configured attempts).
    b.reset().await;
    let mut body = chat_body("m");
    body["num_retries"] = json!(0);
    assert_eq!(post(&gw, &body).await.status(), 500);
    assert_eq!(b.requests_to("/v1/chat/completions").await.len(), 1);
    body["num_retries"] = json!(50);
    b.reset().await;
    assert_eq!(post(&gw, &body).await.status(), 500);
    assert_eq!(b.requests_to("/v1/chat/completions").await.len(), 3);
    // Control fields never reach the upstream.
    let seen = &b.requests_to("/v1/chat/completions").await[0];
    assert!(!seen["body_prefix"]
        .as_str()
        .unwrap()
        .contains("num_retries"));
}

#[tokio::test]
async fn fallbacks_and_context_window_fallbacks() {
    let broken = Mock::start_with("broken", &["--fail-status", "503"]);
    let small = Mock::start_with(
        "small",
        &[
            "--fail-status",
            "400",
            "--fail-code",
            "context_length_exceeded",
            "--fail-message",
            "This model's maximum context length is 8192 tokens",
        ],
    );
    let backup = Mock::start("backup");
    let long = Mock::start("long");
    let hc = "health_check: {interval: 0s}";
    let gw = gateway(&config(&format!(
        r#"upstreams:
  - {{name: broken, url: "{}", {hc}}}
  - {{name: small, url: "{}", {hc}}}
  - {{name: backup, url: "{}", {hc}}}
  - {{name: long, url: "{}", {hc}}}
models:
  - name: primary
    retry: {{attempts: 2, backoff: 1ms, max_backoff: 1ms}}
    fallbacks: [backup-model]
    deployments: [{{upstream: broken, model: p}}]
  - name: short-context
    fallbacks: [backup-model]
    context_window_fallbacks: [long-context]
    deployments: [{{upstream: small, model: s}}]
  - {{name: backup-model, deployments: [{{upstream: backup, model: b}}]}}
  - {{name: long-context, deployments: [{{upstream: long, model: l}}]}}
  - {{name: plain, retry: {{attempts: 1}}, deployments: [{{upstream: broken, model: p}}]}}
"#,
        broken.url(),
        small.url(),
        backup.url(),
        long.url()
    )))
    .await;
    // Every deployment of `primary` fails: the fallback answers, and the response says which model.
    let r = gw.chat("primary").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "backup");
    assert_eq!(r.headers()["x-llmproxy-model"], "backup-model");
    assert_eq!(broken.requests_to("/v1/chat/completions").await.len(), 2);

    // Context too long: straight to the context-window fallback, not the ordinary one, no retries.
    let r = gw.chat("short-context").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "long");
    assert_eq!(r.headers()["x-llmproxy-model"], "long-context");
    assert_eq!(
        backup.requests_to("/v1/chat/completions").await.len(),
        1,
        "only the first test's fallback"
    );

    // Per-request fallbacks on a model without configured ones.
    let mut body = chat_body("plain");
    body["fallbacks"] = json!(["backup-model"]);
    let r = post(&gw, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "backup");
    // ...an unknown one is refused up front.
    body["fallbacks"] = json!(["nope"]);
    let v = assert_openai_error(post(&gw, &body).await, 400, "invalid_request").await;
    assert_eq!(v["error"]["param"], "fallbacks");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_fallbacks_total",
            &[("group", "primary"), ("fallback", "backup-model")]
        ),
        Some(1.0)
    );
}

/// Fired at the configured time: never early (−20%), and late by at most 20% plus scheduling slack on a
/// shared 2-core machine that runs other tests at the same time.
fn within(elapsed: Duration, expected: Duration) -> bool {
    let lo = expected.mul_f64(0.8);
    let hi = expected.mul_f64(1.2) + Duration::from_millis(300);
    elapsed >= lo && elapsed <= hi
}

/// A listener whose accept queue is full: connects to it hang until the client gives up.
fn blackhole() -> (socket2::Socket, Vec<std::net::TcpStream>, u16) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    // Fill the queue (bounded attempts; each either completes at once or would hang, so time-limit it).
    let mut fill = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_millis(200),
        ) {
            Ok(c) => fill.push(c),
            Err(_) => break,
        }
    }
    (s, fill, port)
}

#[tokio::test]
async fn each_timeout_fires_at_its_configured_time() {
    let a = Mock::start("A");
    let (_hole, _fill, hole_port) = blackhole();
    let gw = gateway(&config(&format!(
        r#"upstreams:
  - {{name: a, url: "{a}", client: {{first_byte_timeout: 400ms, stream_idle_timeout: 400ms}}, health_check: {{interval: 0s}}}}
  - {{name: a2, url: "{a}", health_check: {{interval: 0s}}}}
  - {{name: hole, url: "http://127.0.0.1:{hole_port}/v1", client: {{connect_timeout: 400ms}}, health_check: {{interval: 0s}}}}
models:
  - {{name: m, deployments: [{{upstream: a, model: m}}]}}
  - {{name: whole, timeout: 800ms, deployments: [{{upstream: a2, model: m}}]}}
  - {{name: hole, deployments: [{{upstream: hole, model: m}}]}}
"#,
        a = a.url()
    )))
    .await;

    // connect
    let t = Instant::now();
    assert_openai_error(gw.chat("hole").await, 504, "upstream_timeout").await;
    assert!(
        within(t.elapsed(), Duration::from_millis(400)),
        "connect timeout after {:?}",
        t.elapsed()
    );

    // time to first byte
    let t = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-latency-ms", "3000")
        .json(&chat_body("m"))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 504, "upstream_timeout").await;
    assert!(
        within(t.elapsed(), Duration::from_millis(400)),
        "first-byte timeout after {:?}",
        t.elapsed()
    );

    // idle between stream chunks: the first chunk comes at once, the second never in time
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-chunk-interval-ms", "3000")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    let text = r.text().await.unwrap();
    assert!(
        within(t.elapsed(), Duration::from_millis(400)),
        "stream idle timeout after {:?}",
        t.elapsed()
    );
    assert!(
        text.contains("data: {\"error\":") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );

    // whole request (the model's timeout), lowered per request by request_timeout
    let t = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-chunk-interval-ms", "300")
        .header("x-mock-chunks", "20")
        .json(&json!({"model": "whole", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        within(t.elapsed(), Duration::from_millis(800)),
        "request timeout after {:?}",
        t.elapsed()
    );
    assert!(
        text.ends_with("data: [DONE]\n\n") && text.contains("\"error\""),
        "{text}"
    );
    let t = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-latency-ms", "3000")
        .json(&json!({"model": "whole", "request_timeout": 0.3, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 504, "upstream_timeout").await;
    assert!(
        within(t.elapsed(), Duration::from_millis(300)),
        "request_timeout after {:?}",
        t.elapsed()
    );
    // ...and never raised above the model's limit.
    let t = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-latency-ms", "3000")
        .json(&json!({"model": "whole", "request_timeout": 100, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 504, "upstream_timeout").await;
    assert!(
        within(t.elapsed(), Duration::from_millis(800)),
        "capped request_timeout after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn failure_before_the_first_byte_fails_over_even_for_streams() {
    let a = Mock::start("A");
    let b = Mock::start("B");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - name: m\n    strategy: round_robin\n    retry: {{attempts: 2, backoff: 1ms, max_backoff: 1ms, on: [5xx]}}\n    deployments: [{{upstream: a, model: m}}, {{upstream: b, model: m}}]\n",
        upstream("a", &a),
        upstream("b", &b)
    )))
    .await;
    // Every deployment drops the stream before its first chunk (the header goes to both). Nothing had
    // reached the client, so the gateway retried on the other deployment, then answered a clean error.
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-drop-after-chunks", "0")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 502, "upstream_error").await;
    assert_eq!(
        a.requests_to("/v1/chat/completions").await.len()
            + b.requests_to("/v1/chat/completions").await.len(),
        2
    );
}

#[tokio::test]
async fn client_abort_closes_the_upstream_connection() {
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &a)
    )))
    .await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-chunks", "100")
        .header("x-mock-chunk-interval-ms", "2000")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    use futures_util::StreamExt;
    stream.next().await.unwrap().unwrap(); // the first chunk arrived
    let stats = || async {
        let v: Value = client()
            .get(format!("{}/__mock/stats", a.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["in_flight"].as_i64().unwrap()
    };
    assert_eq!(stats().await, 1);
    drop(stream); // the client goes away mid-stream
    let t = Instant::now();
    while stats().await != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the upstream request is still open after 1s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
