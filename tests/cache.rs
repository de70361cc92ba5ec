//! Issue: response cache. Exact-match hits, key stability, determinism, TTL, controls, chunk-exact
//! stream replay, cross-serving, size and memory bounds, Redis shared by two instances,
//! single-flight.
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
use std::time::{Duration, Instant};

fn cfg(mock: &Mock, model_cache: &str, top: &str) -> String {
    config(&format!(
        "{top}upstreams:\n{}models:\n  - {{name: m, cache: {model_cache}, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        upstream("a", mock)
    ))
}

async fn post(gw: &Gateway, body: &Value) -> (String, Option<String>, String) {
    post_h(gw, body, &[]).await
}

async fn post_h(
    gw: &Gateway,
    body: &Value,
    headers: &[(&str, &str)],
) -> (String, Option<String>, String) {
    let mut r = client().post(gw.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cache = r
        .headers()
        .get("x-llmproxy-cache")
        .map(|v| v.to_str().unwrap().to_string());
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (r.text().await.unwrap(), cache, ct)
}

async fn upstream_calls(mock: &Mock) -> usize {
    mock.requests_to("/v1/chat/completions").await.len()
}

#[tokio::test]
async fn hit_after_miss_whatever_the_key_order() {
    let mock = Mock::start("A");
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let (a, c1, _) = post(
        &gw,
        &json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(c1.as_deref(), Some("miss"));
    // Same request, keys in another order, and a field that does not change the answer.
    let (b, c2, ct) = post(&gw, &json!({"messages": [{"content": "hi", "role": "user"}], "user": "u2", "temperature": 0.0, "model": "m"})).await;
    assert_eq!(c2.as_deref(), Some("hit"));
    assert_eq!(a, b);
    assert!(ct.starts_with("application/json"));
    assert_eq!(upstream_calls(&mock).await, 1);
    // Another prompt is another entry.
    let (_, c3, _) = post(&gw, &json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hello"}]})).await;
    assert_eq!(c3.as_deref(), Some("miss"));
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "llmproxy_cache_requests_total", &[("result", "hit")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_cache_requests_total", &[("result", "miss")]),
        Some(2.0)
    );
    let st: Value = gw.stats().await;
    assert_eq!(st["cache"]["hits"], 1, "{st}");
    assert!(st["cache"]["bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn only_deterministic_requests_are_cached_by_default() {
    let mock = Mock::start("A");
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let body = json!({"model": "m", "temperature": 0.7, "messages": []});
    for _ in 0..2 {
        let (_, c, _) = post(&gw, &body).await;
        assert_eq!(c.as_deref(), Some("bypass"));
    }
    assert_eq!(upstream_calls(&mock).await, 2);
    // A seed makes it deterministic.
    let body = json!({"model": "m", "temperature": 0.7, "seed": 42, "messages": []});
    post(&gw, &body).await;
    assert_eq!(post(&gw, &body).await.1.as_deref(), Some("hit"));
    // only_deterministic: false caches everything.
    let gw2 = gateway(&cfg(&mock, "{only_deterministic: false}", "")).await;
    let body = json!({"model": "m", "temperature": 0.9, "messages": []});
    post(&gw2, &body).await;
    assert_eq!(post(&gw2, &body).await.1.as_deref(), Some("hit"));
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let mock = Mock::start("A");
    let gw = gateway(&cfg(&mock, "{ttl: 300ms}", "")).await;
    let body = json!({"model": "m", "temperature": 0, "messages": []});
    post(&gw, &body).await;
    assert_eq!(post(&gw, &body).await.1.as_deref(), Some("hit"));
    let t = Instant::now();
    loop {
        let (_, c, _) = post(&gw, &body).await;
        if c.as_deref() == Some("miss") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn every_control_is_honoured() {
    let mock = Mock::start("A");
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let base =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "x"}]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    // caching: false — not read, not stored.
    assert_eq!(
        post(&gw, &with("caching", json!(false))).await.1.as_deref(),
        Some("bypass")
    );
    assert_eq!(post(&gw, &base).await.1.as_deref(), Some("miss"));
    assert_eq!(post(&gw, &base).await.1.as_deref(), Some("hit"));
    // no-cache: not read (goes upstream), the fresh answer is stored.
    assert_eq!(
        post(&gw, &with("cache", json!({"no-cache": true})))
            .await
            .1
            .as_deref(),
        Some("bypass")
    );
    assert_eq!(
        post_h(&gw, &base, &[("cache-control", "no-cache")])
            .await
            .1
            .as_deref(),
        Some("bypass")
    );
    // no-store: a miss is not stored.
    let other =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "y"}]});
    let mut ns = other.clone();
    ns["cache"] = json!({"no-store": true});
    assert_eq!(post(&gw, &ns).await.1.as_deref(), Some("miss"));
    assert_eq!(
        post_h(&gw, &other, &[("cache-control", "no-store")])
            .await
            .1
            .as_deref(),
        Some("miss")
    );
    assert_eq!(post(&gw, &other).await.1.as_deref(), Some("miss"));
    assert_eq!(post(&gw, &other).await.1.as_deref(), Some("hit"));
    // The controls never reach the upstream.
    for r in mock.requests_to("/v1/chat/completions").await {
        let p = r["body_prefix"].as_str().unwrap();
        assert!(
            !p.contains("caching") && !p.contains("no-store") && !p.contains("no-cache"),
            "{p}"
        );
    }
    // A model without cache says nothing.
    let gw2 = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &mock)
    )))
    .await;
    assert_eq!(post(&gw2, &base).await.1, None);
}

/// One raw HTTP/1.1 request; returns the response's chunked-encoding payloads in order.
fn raw_chunks(port: u16, body: &str) -> Vec<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..head_end]).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut rest = &all[head_end..];
    let mut chunks = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        chunks.push(rest[..size].to_vec());
        rest = &rest[size + 2..];
    }
    chunks
}

#[tokio::test]
async fn streams_replay_byte_identical_with_the_same_chunks() {
    let mock = Mock::start_with("A", &["--chunks", "6", "--chunk-interval-ms", "15"]);
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let body = json!({"model": "m", "temperature": 0, "stream": true, "messages": [{"role": "user", "content": "s"}]}).to_string();
    let port = gw.port;
    let b = body.clone();
    let first = tokio::task::spawn_blocking(move || raw_chunks(port, &b))
        .await
        .unwrap();
    let b = body.clone();
    let second = tokio::task::spawn_blocking(move || raw_chunks(port, &b))
        .await
        .unwrap();
    assert!(first.len() >= 7, "{} chunks", first.len());
    assert_eq!(first, second, "replay differs");
    assert_eq!(upstream_calls(&mock).await, 1);
    let text: Vec<u8> = second.concat();
    assert!(text.ends_with(b"data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_stream_serves_a_json_request_and_json_serves_a_stream() {
    let mock = Mock::start_with("A", &["--chunks", "3"]);
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    // Recorded as a stream, asked as JSON: one assembled chat.completion.
    let q = json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "a"}]});
    let mut s = q.clone();
    s["stream"] = json!(true);
    let (streamed, c, _) = post(&gw, &s).await;
    assert_eq!(c.as_deref(), Some("miss"));
    let (json_text, c, ct) = post(&gw, &q).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert!(ct.starts_with("application/json"));
    let v: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(v["object"], "chat.completion");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("tok0") && content.contains("tok2"), "{v}");
    assert!(streamed.contains("tok2"));
    // Recorded as JSON, asked as a stream: synthesised chunks.
    let q2 =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "b"}]});
    let (j, _, _) = post(&gw, &q2).await;
    let mut s2 = q2.clone();
    s2["stream"] = json!(true);
    let (sse, c, ct) = post(&gw, &s2).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert!(ct.starts_with("text/event-stream"));
    let orig: Value = serde_json::from_str(&j).unwrap();
    let want = orig["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(sse.contains(&serde_json::to_string(want).unwrap()), "{sse}");
    assert!(sse.ends_with("data: [DONE]\n\n"));
    assert_eq!(upstream_calls(&mock).await, 2);
}

#[tokio::test]
async fn large_answers_are_not_stored_and_memory_stays_bounded() {
    let mock = Mock::start_with("A", &["--no-record", "--response-bytes", "3000"]);
    let gw = gateway(&cfg(
        &mock,
        "{ttl: 1h}",
        "cache: {max_entry_bytes: 2KiB, max_bytes: 64KiB, max_entries: 1000}\n",
    ))
    .await;
    let body =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "big"}]});
    post(&gw, &body).await;
    assert_eq!(post(&gw, &body).await.1.as_deref(), Some("miss"));
    // 10× max_bytes of distinct answers that fit.
    let gw = gateway(&cfg(
        &mock,
        "{ttl: 1h}",
        "cache: {max_entry_bytes: 8KiB, max_bytes: 64KiB, max_entries: 1000}\n",
    ))
    .await;
    for i in 0..220 {
        let b = json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": format!("q{i}")}]});
        post(&gw, &b).await;
    }
    let st: Value = gw.stats().await;
    let bytes = st["cache"]["bytes"].as_u64().unwrap();
    eprintln!("cache after 10x max_bytes: {}", st["cache"]);
    assert!(bytes <= 64 * 1024, "{bytes}");
    assert!(st["cache"]["stored"].as_u64().unwrap() >= 200);
    assert!(st["cache"]["entries"].as_u64().unwrap() >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_identical_misses_make_one_upstream_call() {
    let mock = Mock::start_with("A", &["--latency-ms", "300"]);
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let body = json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "popular"}]});
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (url, body) = (gw.url("/v1/chat/completions"), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let c = r.headers()["x-llmproxy-cache"]
                .to_str()
                .unwrap()
                .to_string();
            (c, r.text().await.unwrap())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(upstream_calls(&mock).await, 1);
    assert_eq!(results.iter().filter(|r| r.0 == "miss").count(), 1);
    assert_eq!(results.iter().filter(|r| r.0 == "hit").count(), 19);
    assert!(results.iter().all(|r| r.1 == results[0].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_is_shared_by_two_instances() {
    let mut redis = Redis::start();
    let mock = Mock::start("A");
    let top = format!(
        "state: {{redis: \"{}\"}}\ncache: {{backend: redis}}\n",
        redis.url()
    );
    let g1 = gateway(&cfg(&mock, "{ttl: 1h}", &top)).await;
    let g2 = gateway(&cfg(&mock, "{ttl: 1h}", &top)).await;
    let body = json!({"model": "m", "temperature": 0, "stream": true, "messages": [{"role": "user", "content": "shared"}]});
    let (a, c, _) = post(&g1, &body).await;
    assert_eq!(c.as_deref(), Some("miss"));
    let (b, c, _) = post(&g2, &body).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert_eq!(a, b);
    assert_eq!(upstream_calls(&mock).await, 1);
    // Redis gone: requests proceed uncached, the failure is counted.
    redis.kill();
    let other =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "after"}]});
    let (_, c, _) = post(&g1, &other).await;
    assert_eq!(c.as_deref(), Some("miss"));
    let m = g1.metrics().await;
    assert!(metric(&m, "llmproxy_cache_requests_total", &[("result", "error")]).unwrap() >= 1.0);
}

#[tokio::test]
async fn key_scope_isolates_tenants() {
    let mock = Mock::start("A");
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "cache: {scope: key}\n")).await;
    let body =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "t"}]});
    let a = [("authorization", "Bearer sk-tenant-a")];
    let b = [("authorization", "Bearer sk-tenant-b")];
    assert_eq!(post_h(&gw, &body, &a).await.1.as_deref(), Some("miss"));
    assert_eq!(post_h(&gw, &body, &b).await.1.as_deref(), Some("miss"));
    assert_eq!(post_h(&gw, &body, &a).await.1.as_deref(), Some("hit"));
    assert_eq!(upstream_calls(&mock).await, 2);
}

fn usage_events(sse: &str) -> Vec<Value> {
    sse_data(sse)
        .into_iter()
        .filter(|e| e["choices"].as_array().is_some_and(|c| c.is_empty()))
        .collect()
}

#[tokio::test]
async fn a_replayed_stream_has_the_usage_event_only_for_a_client_that_asked() {
    let mock = Mock::start_with("A", &["--chunks", "3"]);
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let plain = json!({"model": "m", "temperature": 0, "stream": true, "messages": [{"role": "user", "content": "usage please"}]});
    let mut asking = plain.clone();
    asking["stream_options"] = json!({"include_usage": true});
    // What the upstream reports, through the gateway, for a client that asks (not stored).
    let (reference, c, _) = post_h(&gw, &asking, &[("cache-control", "no-store")]).await;
    assert_eq!(c.as_deref(), Some("miss"));
    let want = usage_events(&reference);
    assert_eq!(want.len(), 1, "{reference}");
    let want = want[0]["usage"].clone();
    assert!(want["prompt_tokens"].as_u64().unwrap() > 0, "{want}");

    // Recorded for a client that did not ask: it gets no usage event...
    let (live, c, _) = post(&gw, &plain).await;
    assert_eq!(c.as_deref(), Some("miss"));
    assert!(usage_events(&live).is_empty(), "{live}");
    // ...a client that asks gets the upstream's usage from the replay, before [DONE]...
    let (replayed, c, _) = post(&gw, &asking).await;
    assert_eq!(c.as_deref(), Some("hit"));
    let got = usage_events(&replayed);
    assert_eq!(got.len(), 1, "{replayed}");
    assert_eq!(got[0]["usage"], want);
    assert_eq!(got[0]["object"], "chat.completion.chunk");
    assert_eq!(got[0]["id"], sse_data(&replayed)[0]["id"]);
    assert!(replayed.ends_with("data: [DONE]\n\n"), "{replayed}");
    // ...one that does not ask gets what the first one got, and a JSON request gets the usage.
    let (again, c, _) = post(&gw, &plain).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert_eq!(again, live);
    let mut json_req = plain.clone();
    json_req["stream"] = json!(false);
    let (j, c, _) = post(&gw, &json_req).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert_eq!(serde_json::from_str::<Value>(&j).unwrap()["usage"], want);

    // Recorded for a client that asked: one that does not ask gets no usage event from it.
    let mut plain2 = plain.clone();
    plain2["messages"][0]["content"] = json!("other prompt");
    let mut asking2 = plain2.clone();
    asking2["stream_options"] = json!({"include_usage": true});
    let (first, c, _) = post(&gw, &asking2).await;
    assert_eq!(c.as_deref(), Some("miss"));
    assert_eq!(usage_events(&first).len(), 1, "{first}");
    let (replayed, c, _) = post(&gw, &plain2).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert!(usage_events(&replayed).is_empty(), "{replayed}");
    assert!(replayed.ends_with("data: [DONE]\n\n"), "{replayed}");
    assert_eq!(upstream_calls(&mock).await, 3);
}

/// The same for a text completions stream (`/v1/completions`, `text_completion` chunks): recorded for
/// a client that did not ask for usage, replayed with the usage event to one that asks, and without
/// it to one that does not.
#[tokio::test]
async fn a_replayed_completions_stream_has_the_usage_event_only_for_a_client_that_asked() {
    let mock = Mock::start_with("A", &["--chunks", "3"]);
    let gw = gateway(&cfg(&mock, "{ttl: 1h}", "")).await;
    let send = |body: Value| {
        let url = gw.url("/v1/completions");
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let cache = r
                .headers()
                .get("x-llmproxy-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (r.text().await.unwrap(), cache)
        }
    };
    let plain = json!({"model": "m", "temperature": 0, "stream": true, "prompt": "usage please"});
    let mut asking = plain.clone();
    asking["stream_options"] = json!({"include_usage": true});
    let (live, c) = send(plain.clone()).await;
    assert_eq!(c.as_deref(), Some("miss"));
    assert!(usage_events(&live).is_empty(), "{live}");
    let (replayed, c) = send(asking).await;
    assert_eq!(c.as_deref(), Some("hit"));
    let got = usage_events(&replayed);
    assert_eq!(got.len(), 1, "{replayed}");
    assert_eq!(got[0]["object"], "text_completion");
    assert!(
        got[0]["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{replayed}"
    );
    assert!(replayed.ends_with("data: [DONE]\n\n"), "{replayed}");
    let (again, c) = send(plain).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert_eq!(again, live);
    assert_eq!(mock.requests_to("/v1/completions").await.len(), 1);
}
