//! Strategies, health checks taking a dead deployment out and back, connect failure fall-through.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

async fn two_mock_gateway(strategy: &str, weights: (u32, u32)) -> (Mock, Mock, Gateway) {
    let a = Mock::start_with("A", &["--no-record"]);
    let b = Mock::start_with("B", &["--no-record"]);
    let gw = gateway(&config(&format!(
        "upstreams:\n{}{}models:\n  - name: m\n    strategy: {strategy}\n    deployments:\n      - {{upstream: a, model: m, weight: {}}}\n      - {{upstream: b, model: m, weight: {}}}\n",
        upstream("a", &a),
        upstream("b", &b),
        weights.0,
        weights.1
    )))
    .await;
    (a, b, gw)
}

async fn count(gw: &Gateway, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
        *seen.entry(served_by(&r)).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn weighted_round_robin_8_to_2() {
    let (_a, _b, gw) = two_mock_gateway("weighted_round_robin", (8, 2)).await;
    let seen = count(&gw, 2000).await;
    let share = seen["A"] as f64 / 2000.0;
    assert!((share - 0.8).abs() <= 0.03, "A share {share}: {seen:?}");
}

#[tokio::test]
async fn round_robin_is_exact() {
    let (_a, _b, gw) = two_mock_gateway("round_robin", (8, 2)).await;
    let seen = count(&gw, 200).await;
    assert_eq!(seen["A"], 100, "{seen:?}");
    assert_eq!(seen["B"], 100, "{seen:?}");
}

#[tokio::test]
async fn random_follows_weights() {
    let (_a, _b, gw) = two_mock_gateway("random", (1, 1)).await;
    let seen = count(&gw, 2000).await;
    let share = seen["A"] as f64 / 2000.0;
    assert!((share - 0.5).abs() <= 0.05, "A share {share}: {seen:?}");
}

#[tokio::test]
async fn least_busy_prefers_the_idle_deployment() {
    let (_a, _b, gw) = two_mock_gateway("least_busy", (1, 1)).await;
    // Occupy one deployment with a slow request...
    let url = gw.url("/v1/chat/completions");
    let slow = tokio::spawn(async move {
        let r = client()
            .post(url)
            .header("x-mock-latency-ms", "3000")
            .json(&serde_json::json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        served_by(&r)
    });
    // ...wait until the gateway counts it in flight (bounded poll on the gauge-free signal: the mock).
    let busy = wait_busy(&gw).await;
    // ...then every quick request goes to the other one.
    for _ in 0..10 {
        let r = gw.chat("m").await;
        assert_ne!(
            served_by(&r),
            busy,
            "least_busy sent a request to the busy deployment"
        );
    }
    assert_eq!(slow.await.unwrap(), busy);
}

/// Which mock holds an in-flight request (polls both mocks' stats, bounded).
async fn wait_busy(gw: &Gateway) -> String {
    let up = gw.upstreams().await;
    let bases: Vec<(String, String)> = up["healthy_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let base = e["api_base"]
                .as_str()
                .unwrap()
                .trim_end_matches("/v1")
                .to_string();
            (e["upstream"].as_str().unwrap().to_uppercase(), base)
        })
        .collect();
    for _ in 0..500 {
        for (name, base) in &bases {
            let s: serde_json::Value = client()
                .get(format!("{base}/__mock/stats"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["in_flight"].as_u64().unwrap_or(0) > 0 {
                return name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the slow request never reached a mock");
}

#[tokio::test]
async fn dead_deployment_leaves_rotation_and_returns() {
    let (_a, b, gw) = two_mock_gateway("round_robin", (1, 1)).await;
    let interval = Duration::from_millis(200);
    b.fail(503).await;
    // Out of rotation within two health intervals (plus the probe's own time).
    gw.wait_upstreams(2 * interval + Duration::from_millis(500), |v| {
        v["unhealthy_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["upstream"] == "b")
    })
    .await;
    let seen = count(&gw, 20).await;
    assert_eq!(seen.get("A"), Some(&20), "{seen:?}");
    let up = gw.upstreams().await;
    let last = up["unhealthy_endpoints"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("503"), "last error names the status: {last}");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "llmproxy_upstream_healthy", &[("upstream", "b")]),
        Some(0.0)
    );

    b.fail(0).await;
    gw.wait_upstreams(2 * interval + Duration::from_millis(500), |v| {
        v["unhealthy_endpoints"].as_array().unwrap().is_empty()
    })
    .await;
    let seen = count(&gw, 20).await;
    assert_eq!(seen.get("B"), Some(&10), "back in rotation: {seen:?}");
}

#[tokio::test]
async fn connect_failure_falls_through_to_the_next_deployment() {
    let a = Mock::start("A");
    let dead = free_port(); // nothing listens here
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: dead, url: \"http://127.0.0.1:{dead}/v1\", health_check: {{interval: 0s}}}}\n{}models:\n  - name: m\n    strategy: round_robin\n    deployments: [{{upstream: dead, model: m}}, {{upstream: a, model: m}}]\n",
        upstream("a", &a)
    )))
    .await;
    for _ in 0..10 {
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "A");
    }
    let m = gw.metrics().await;
    let refused = metric(
        &m,
        "llmproxy_upstream_errors_total",
        &[("error", "connect"), ("upstream", "dead")],
    )
    .unwrap();
    // The dead deployment cools down after 3 failures (the default cooldown), so it is tried 3 times.
    assert!(refused >= 3.0, "connect errors counted: {refused}");
}
