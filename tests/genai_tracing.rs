//! Issue 16 (seed 002 "Logging Proxy Input/Output" and `/health`): spans in the OpenTelemetry GenAI
//! semantic conventions, received by an OTLP/HTTP collector stand-in (a small HTTP server in the
//! test recording every POSTed payload with its path and headers); content only with
//! `tracing.include_content`; Langfuse as an OTLP destination with Basic auth (natively and from a
//! LiteLLM `success_callback: ["langfuse"]`); a dead collector counted; and the client listener's
//! `/health` in seed 002's shape, behind the master key when one is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One POST the collector received.
#[derive(Clone)]
struct Post {
    path: String,
    /// Lower-cased header names.
    headers: Vec<(String, String)>,
    body: Value,
}

/// A minimal OTLP/HTTP (JSON) collector on an ephemeral loopback port.
struct Collector {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    fn start() -> Collector {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let p = posts.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        let mut headers = Vec::new();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                                if k == "content-length" {
                                    len = v.parse().unwrap();
                                }
                                headers.push((k, v));
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        p.lock().unwrap().push(Post {
                            path,
                            headers,
                            body,
                        });
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
                    }
                });
            }
        });
        Collector { port, posts }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for p in self.posts() {
            for rs in p.body["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        out
    }

    /// The span of the request with this `x-request-id`, waiting for it (bounded).
    async fn span_of(&self, request_id: &str) -> Value {
        let t = Instant::now();
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| {
                attr(s, "llmproxy.request_id").and_then(|v| v["stringValue"].as_str())
                    == Some(request_id)
            }) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no span for request {request_id}: {:?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything received, as text (for "this never appears" checks).
    fn all_text(&self) -> String {
        self.posts()
            .iter()
            .map(|p| p.body.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn str_attr<'a>(span: &'a Value, key: &str) -> &'a str {
    attr(span, key)
        .and_then(|v| v["stringValue"].as_str())
        .unwrap_or_else(|| panic!("no string attribute {key} in {span}"))
}

fn int_attr(span: &Value, key: &str) -> i64 {
    // OTLP/JSON writes 64-bit integers as strings.
    let v = &attr(span, key).unwrap_or_else(|| panic!("no attribute {key} in {span}"))["intValue"];
    v.as_str()
        .map(|s| s.parse().unwrap())
        .or_else(|| v.as_i64())
        .unwrap()
}

fn tracing_config(collector: &Collector, extra: &str, mock: &Mock) -> String {
    config(&format!(
        "tracing: {{otlp_endpoint: \"{}/v1/traces\"{extra}}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n  - {{name: e, deployments: [{{upstream: a, model: text-embedding-3-small}}]}}\n",
        collector.base(),
        openai_upstream("a", mock)
    ))
}

async fn post(gw: &Gateway, path: &str, body: Value) -> (String, Value) {
    let r = client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    (rid, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn genai_attributes_and_no_content_by_default() {
    let col = Collector::start();
    let mock = Mock::start("A");
    let gw = gateway(&tracing_config(&col, "", &mock)).await;

    // A chat completion, answered whole.
    let (rid, _) = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "SECRET-PROMPT-TEXT"}]}),
    )
    .await;
    let span = col.span_of(&rid).await;
    assert_eq!(str_attr(&span, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(&span, "gen_ai.provider.name"), "openai");
    assert_eq!(str_attr(&span, "gen_ai.request.model"), "m");
    assert_eq!(str_attr(&span, "gen_ai.response.model"), "gpt-4o-mini");
    assert!(int_attr(&span, "gen_ai.usage.input_tokens") > 0, "{span}");
    assert!(int_attr(&span, "gen_ai.usage.output_tokens") > 0, "{span}");
    assert_eq!(
        attr(&span, "gen_ai.response.finish_reasons").unwrap()["arrayValue"]["values"],
        json!([{"stringValue": "stop"}])
    );
    let ttft = attr(&span, "gen_ai.server.time_to_first_token").unwrap()["doubleValue"]
        .as_f64()
        .unwrap();
    assert!(ttft > 0.0 && ttft < 15.0, "{ttft}");
    assert_eq!(str_attr(&span, "server.address"), "127.0.0.1");

    // A stream: the model and finish reason come from its last events.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "SECRET-PROMPT-TEXT"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.contains("[DONE]"));
    let span = col.span_of(&rid).await;
    assert_eq!(str_attr(&span, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(&span, "gen_ai.response.model"), "gpt-4o-mini");
    assert_eq!(
        attr(&span, "gen_ai.response.finish_reasons").unwrap()["arrayValue"]["values"],
        json!([{"stringValue": "stop"}])
    );
    assert!(attr(&span, "gen_ai.server.time_to_first_token").is_some());

    // Embeddings.
    let (rid, _) = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "e", "input": "SECRET-PROMPT-TEXT"}),
    )
    .await;
    let span = col.span_of(&rid).await;
    assert_eq!(str_attr(&span, "gen_ai.operation.name"), "embeddings");
    assert_eq!(str_attr(&span, "gen_ai.request.model"), "e");

    // No content, no upstream credential, anywhere.
    let all = col.all_text();
    assert!(!all.contains("SECRET-PROMPT-TEXT"), "{all}");
    assert!(!all.contains("gen_ai.input.messages"));
    assert!(!all.contains("gen_ai.output.messages"));
    assert!(!all.contains("sk-up-a"));
    // The OTLP collector got plain OTLP/HTTP JSON on its path, without Langfuse's auth.
    let p = &col.posts()[0];
    assert_eq!(p.path, "/v1/traces");
    assert!(p
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/json")));
    assert!(!p.headers.iter().any(|(k, _)| k == "authorization"));
}

#[tokio::test]
async fn content_only_with_include_content() {
    let col = Collector::start();
    let mock = Mock::start("A");
    let gw = gateway(&tracing_config(&col, ", include_content: true", &mock)).await;
    let (rid, answer) = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "VISIBLE-PROMPT"}]}),
    )
    .await;
    let span = col.span_of(&rid).await;
    let input: Value = serde_json::from_str(str_attr(&span, "gen_ai.input.messages")).unwrap();
    assert_eq!(input[0]["content"], "VISIBLE-PROMPT");
    let output: Value = serde_json::from_str(str_attr(&span, "gen_ai.output.messages")).unwrap();
    let said = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(output[0]["content"], said, "{output}");
    // A long prompt is cut to a bound.
    let long = "x".repeat(20_000);
    let (rid, _) = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    let span = col.span_of(&rid).await;
    let cut = str_attr(&span, "gen_ai.input.messages");
    assert!(cut.len() <= 4096 && cut.len() > 1000, "{}", cut.len());
}

#[tokio::test]
async fn langfuse_gets_basic_auth_on_its_otlp_path() {
    let col = Collector::start();
    let mock = Mock::start("A");
    let gw = gateway_with_env(
        &config(&format!(
            "tracing:\n  langfuse: {{host: \"{}\", public_key: \"${{LF_PK}}\", secret_key: \"${{LF_SK}}\"}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
            col.base(),
            openai_upstream("a", &mock)
        )),
        &[("LF_PK", "pk-lf-public"), ("LF_SK", "sk-lf-VERY-SECRET")],
    )
    .await;
    let (rid, _) = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let span = col.span_of(&rid).await;
    assert_eq!(str_attr(&span, "gen_ai.operation.name"), "chat");
    let p = col
        .posts()
        .into_iter()
        .find(|p| p.body.to_string().contains(&rid))
        .unwrap();
    assert_eq!(p.path, "/api/public/otel/v1/traces");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("pk-lf-public:sk-lf-VERY-SECRET")
    );
    let auth = p
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(auth, Some(expected.as_str()));
    // The keys are redacted in GET /config.
    let cfg = client()
        .get(gw.admin("/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cfg.contains("langfuse"), "{cfg}");
    assert!(!cfg.contains("sk-lf-VERY-SECRET"), "{cfg}");
    assert!(!cfg.contains("pk-lf-public"), "{cfg}");
}

/// A LiteLLM file's `success_callback: ["langfuse"]`, with LANGFUSE_HOST / LANGFUSE_PUBLIC_KEY /
/// LANGFUSE_SECRET_KEY in the environment as seed 002 documents.
#[tokio::test]
async fn litellm_success_callback_langfuse() {
    let col = Collector::start();
    let mock = Mock::start("A");
    let path = tmp_path("litellm.yaml");
    std::fs::write(
        &path,
        format!(
            "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: sk-up}}\nlitellm_settings:\n  success_callback: [\"langfuse\"]\n",
            mock.url()
        ),
    )
    .unwrap();
    let host = col.base();
    let gw = Gateway::spawn_config_file(
        path,
        &[
            ("LANGFUSE_HOST", host.as_str()),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-1"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-2"),
        ],
    )
    .await;
    let (rid, _) = post(
        &gw,
        "/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let span = col.span_of(&rid).await;
    assert_eq!(str_attr(&span, "gen_ai.request.model"), "gpt-4o");
    let p = col.posts().pop().unwrap();
    assert_eq!(p.path, "/api/public/otel/v1/traces");
    assert!(p
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Basic cGstbGYtMTpzay1sZi0y"));
}

/// A collector that is not there: requests are unaffected, the failures are counted.
#[tokio::test]
async fn dead_collector_is_counted_not_felt() {
    let dead = free_port();
    let mock = Mock::start("A");
    let gw = gateway(&config(&format!(
        "tracing: {{otlp_endpoint: \"http://127.0.0.1:{dead}/v1/traces\"}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        openai_upstream("a", &mock)
    )))
    .await;
    for _ in 0..3 {
        let t = Instant::now();
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(3));
    }
    let t = Instant::now();
    loop {
        let m = gw.metrics().await;
        let failed = metric(
            &m,
            "llmproxy_trace_export_failures_total",
            &[("destination", "otlp")],
        );
        if failed.is_some_and(|f| f >= 1.0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no export failure counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn client_health_in_seed_shape_without_master_key() {
    let mock = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        upstream("a", &mock)
    )))
    .await;
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["healthy_count"], 1, "{v}");
    assert_eq!(v["unhealthy_count"], 0, "{v}");
    let e = &v["healthy_endpoints"][0];
    assert_eq!(e["model"], "m");
    assert_eq!(e["upstream"], "a");
    assert_eq!(e["api_base"], mock.url());
    assert!(v["unhealthy_endpoints"].as_array().unwrap().is_empty());
    assert!(!v.to_string().contains("sk-up-a"), "{v}");
    // The same report as the admin listener's.
    assert_eq!(v, gw.upstreams().await);
    // Only GET.
    let r = client().post(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn client_health_behind_the_master_key() {
    let mock = Mock::start("A");
    let db = tmp_path("keys.db");
    const MASTER: &str = "sk-master-health-1";
    let gw = gateway(&config(&format!(
        "state: {{database: \"sqlite://{}\"}}\nupstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        db.display(),
        upstream("a", &mock)
    ))
    .replace(
        "  threads: 2\n",
        &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
    ))
    .await;
    let c = client();
    let r = c.get(gw.url("/health")).send().await.unwrap();
    assert_openai_error(r, 401, "invalid_api_key").await;
    let r = c
        .get(gw.url("/health"))
        .bearer_auth("sk-wrong")
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 401, "invalid_api_key").await;
    // A virtual key is not enough: the report names the deployments.
    let v: Value = c
        .post(gw.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = v["key"].as_str().unwrap().to_string();
    let r = c
        .get(gw.url("/health"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 403, "master_key_required").await;
    let r = c
        .get(gw.url("/health"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["healthy_count"], 1, "{v}");
    assert!(!v.to_string().contains("sk-up-a"));
}
