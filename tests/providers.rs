//! Provider quirks the gateway absorbs: the Responses API's stored conversations pinned to the
//! deployment that created them, and self-hosted servers that report no usage (estimated, marked).
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

#[tokio::test]
async fn previous_response_id_goes_back_to_the_deployment_that_created_it() {
    let a = Mock::start("A");
    let b = Mock::start("B");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: gpt-4o, strategy: round_robin, deployments: [{{upstream: a, model: gpt-4o}}, {{upstream: b, model: gpt-4o}}]}}\n",
        openai_upstream("a", &a),
        openai_upstream("b", &b)
    )))
    .await;
    let c = client();
    let create = |body: Value| c.post(gw.url("/v1/responses")).json(&body).send();

    // Without a previous response, round robin alternates.
    let mut first_by = Vec::new();
    for _ in 0..2 {
        let r = create(json!({"model": "gpt-4o", "input": "hi"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        first_by.push(served_by(&r));
    }
    assert_ne!(first_by[0], first_by[1]);

    // A stored response on one of them; every continuation goes there.
    let r = create(json!({"model": "gpt-4o", "input": "hi"}))
        .await
        .unwrap();
    let owner = served_by(&r);
    let v: Value = r.json().await.unwrap();
    let mut id = v["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"), "{v}");
    for i in 0..6 {
        let stream = i % 2 == 1;
        let r = create(json!({"model": "gpt-4o", "input": "more", "stream": stream,
            "previous_response_id": id}))
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), owner, "continuation {i} of {id}");
        let text = r.text().await.unwrap();
        // Continue from the newest response (created on the same deployment).
        let next = if stream {
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find_map(|e| e["response"]["id"].as_str().map(String::from))
        } else {
            serde_json::from_str::<Value>(&text).unwrap()["id"]
                .as_str()
                .map(String::from)
        };
        id = next.unwrap_or(id);
    }
    // An id the gateway never saw is routed as usual.
    let r =
        create(json!({"model": "gpt-4o", "input": "x", "previous_response_id": "resp_unknown"}))
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn self_hosted_answers_without_usage_are_estimated_and_marked() {
    // A server that predates `stream_options`: asked for a stream's usage, it sends none.
    let vllm = Mock::start_with("VLLM", &["--no-stream-usage"]);
    let (gw, log) = gateway_with_log(
        &config(&format!(
            "upstreams:\n{}models:\n  - {{name: llama, deployments: [{{upstream: local, model: llama-3.1-8b}}]}}\n",
            upstream("local", &vllm)
        ))
        .replace("level: warn, access_log: off", "level: info, access_log: json"),
        &[],
    )
    .await;
    // A stream without `stream_options`: the gateway asks for the usage, the server sends none.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "llama", "stream": true,
            "messages": [{"role": "user", "content": "Tell me something about the sea"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    let line = wait_for_line(&log, "\"usage_estimated\":true").await;
    let v: Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    // `tok0 tok1 tok2 tok3 tok4 ` counted as bytes/3 (a model tiktoken does not know).
    assert_eq!(v["completion_tokens"], 9, "{v}");
    assert!(v["prompt_tokens"].as_u64().unwrap() > 5, "{v}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if metric(
            &m,
            "llmproxy_tokens_total",
            &[("model", "llama"), ("kind", "completion")],
        ) == Some(9.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An answer with usage is taken as reported, not estimated.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = wait_for_line(&log, "\"usage_estimated\":false").await;
    assert!(line.contains("\"completion_tokens\":"), "{line}");
}

#[tokio::test]
async fn conversation_pins_are_shared_by_instances_through_redis() {
    let redis = Redis::start();
    let a = Mock::start("A");
    let b = Mock::start("B");
    let cfg = config(&format!(
        "state: {{redis: \"{}\"}}\nupstreams:\n{}{}models:\n  - {{name: gpt-4o, strategy: round_robin, deployments: [{{upstream: a, model: gpt-4o}}, {{upstream: b, model: gpt-4o}}]}}\n",
        redis.url(),
        openai_upstream("a", &a),
        openai_upstream("b", &b)
    ));
    let g1 = gateway(&cfg).await;
    let g2 = gateway(&cfg).await;
    let c = client();
    let r = c
        .post(g1.url("/v1/responses"))
        .json(&json!({"model": "gpt-4o", "input": "hi"}))
        .send()
        .await
        .unwrap();
    let owner = served_by(&r);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The other instance never saw the response; it finds the pin in Redis (written in the
    // background just after the answer: poll, bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served = Vec::new();
    while served.len() < 4 {
        let r = c
            .post(g2.url("/v1/responses"))
            .json(&json!({"model": "gpt-4o", "input": "more", "previous_response_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let by = served_by(&r);
        if by != owner && served.is_empty() {
            // The pin was not in Redis yet.
            assert!(Instant::now() < deadline, "never pinned");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        served.push(by);
    }
    assert!(served.iter().all(|s| *s == owner), "{served:?} vs {owner}");
}
