//! Issue: operations — OpenTelemetry export. An OTLP/HTTP receiver started by the test gets one span
//! per request with model, deployment, status, tokens and timings, and no message content unless
//! `include_content` is set.
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
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A minimal OTLP/HTTP (JSON) receiver: keeps every POSTed body.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let b = bodies.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            if h == "\r\n" || h.is_empty() {
                                break;
                            }
                            let lower = h.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        if let Ok(v) = serde_json::from_slice(&body) {
                            b.lock().unwrap().push(v);
                        }
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
                    }
                });
            }
        });
        Receiver { port, bodies }
    }

    /// Every span received so far, flattened.
    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for b in self.bodies.lock().unwrap().iter() {
            for rs in b["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        out
    }

    async fn wait_spans(&self, n: usize) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let s = self.spans();
            if s.len() >= n {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "only {} spans",
                s.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test]
async fn one_span_per_request_without_content() {
    let rx = Receiver::start();
    let mock = Mock::start("A");
    let gw = gateway(&config(&format!(
        "tracing: {{otlp_endpoint: \"http://127.0.0.1:{}/v1/traces\"}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        rx.port,
        upstream("a", &mock)
    )))
    .await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "m", "messages": [{"role": "user", "content": "SECRET-PROMPT-TEXT"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let spans = rx.wait_spans(1).await;
    let span = spans
        .iter()
        .find(|s| {
            attr(s, "llmproxy.request_id").and_then(|v| v["stringValue"].as_str())
                == Some(rid.as_str())
        })
        .expect("the request's span");
    assert_eq!(span["name"], "POST /v1/chat/completions");
    assert_eq!(
        attr(span, "gen_ai.request.model").unwrap()["stringValue"],
        "m"
    );
    assert_eq!(
        attr(span, "llmproxy.deployment").unwrap()["stringValue"],
        "a"
    );
    assert_eq!(
        attr(span, "http.response.status_code").unwrap()["intValue"],
        json!("200")
    );
    assert!(attr(span, "gen_ai.usage.input_tokens").is_some(), "{span}");
    assert!(attr(span, "llmproxy.ttft_ms").is_some());
    assert!(attr(span, "llmproxy.queue_ms").is_some());
    let all = serde_json::to_string(&*rx.bodies.lock().unwrap()).unwrap();
    assert!(!all.contains("SECRET-PROMPT-TEXT"));
    assert!(!all.contains("sk-up-a"));
}

#[tokio::test]
async fn content_only_when_enabled_and_errors_marked() {
    let rx = Receiver::start();
    let mock = Mock::start("A");
    let gw = gateway(&config(&format!(
        "tracing: {{otlp_endpoint: \"http://127.0.0.1:{}/v1/traces\", include_content: true}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        rx.port,
        upstream("a", &mock)
    )))
    .await;
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "VISIBLE-PROMPT"}]}))
        .send()
        .await
        .unwrap();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let spans = rx.wait_spans(2).await;
    // Both requests' spans carry their messages; they may be exported in either order.
    let bodies: Vec<&str> = spans
        .iter()
        .filter_map(|s| attr(s, "gen_ai.input.messages")?["stringValue"].as_str())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("VISIBLE-PROMPT")),
        "{bodies:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s["status"]["code"] == json!(2) || s["status"]["code"] == "STATUS_CODE_ERROR"),
        "{spans:?}"
    );
}
