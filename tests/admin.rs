//! Admin listener: health, upstream health, metrics with the exact seed-001 names, redacted config;
//! and `llmproxy check`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use serde_json::Value;
use std::process::Command;

#[tokio::test]
async fn metrics_health_and_config() {
    let a = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", auth: {{type: bearer, token: sk-very-secret}}, headers: [{{op: insert, key: x-api-key, value: also-secret}}]}}\nmodels:\n  - {{name: m, deployments: [{{upstream: a, model: real}}]}}\n",
        a.url()
    )))
    .await;
    for _ in 0..3 {
        assert_eq!(gw.chat("m").await.status(), 200);
    }
    assert_eq!(gw.chat("unknown").await.status(), 404);

    let v: Value = client()
        .get(gw.admin("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ok");

    let m = gw.metrics().await;
    let chat = [
        ("forward", "main"),
        ("method", "POST"),
        ("path", "/v1/chat/completions"),
    ];
    assert_eq!(metric(&m, "llmproxy_http_requests_total", &chat), Some(4.0));
    assert_eq!(
        metric(&m, "llmproxy_http_request_duration_seconds_count", &chat),
        Some(4.0)
    );
    let up = [("group", "m"), ("upstream", "a")];
    assert_eq!(
        metric(&m, "llmproxy_upstream_requests_total", &up),
        Some(3.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_upstream_duration_seconds_count", &up),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            "llmproxy_http_request_errors_total",
            &[
                ("forward", "main"),
                ("error", "model_not_found"),
                ("status", "404")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_ratelimit_total", &[("forward", "main")]),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_upstream_healthy", &[("upstream", "a")]),
        Some(1.0)
    );
    assert!(metric(
        &m,
        "llmproxy_tokens_total",
        &[("model", "m"), ("kind", "prompt")]
    )
    .is_some());
    assert!(metric(
        &m,
        "llmproxy_time_to_first_token_seconds_count",
        &[("model", "m")]
    )
    .is_some());
    // OpenTelemetry's GenAI client metrics: three chats, each with its input and output tokens.
    let genai = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_request_model", "m"),
    ];
    assert_eq!(
        metric(&m, "gen_ai_client_operation_duration_seconds_count", &genai),
        Some(3.0)
    );
    for kind in ["input", "output"] {
        let labels = [genai[0], genai[1], ("gen_ai_token_type", kind)];
        assert_eq!(
            metric(&m, "gen_ai_client_token_usage_count", &labels),
            Some(3.0),
            "{kind}"
        );
        assert!(metric(&m, "gen_ai_client_token_usage_sum", &labels).unwrap() > 0.0);
    }
    for (name, kind) in [
        ("llmproxy_upstream_requests_total", "counter"),
        ("llmproxy_upstream_duration_seconds", "histogram"),
        ("llmproxy_http_requests_total", "counter"),
        ("llmproxy_http_request_duration_seconds", "histogram"),
        ("llmproxy_http_request_errors_total", "counter"),
        ("llmproxy_ratelimit_total", "counter"),
        ("llmproxy_tokens_total", "counter"),
        ("llmproxy_time_to_first_token_seconds", "histogram"),
        ("llmproxy_upstream_healthy", "gauge"),
        ("gen_ai_client_token_usage", "histogram"),
        ("gen_ai_client_operation_duration_seconds", "histogram"),
    ] {
        assert!(
            m.contains(&format!("# TYPE {name} {kind}")),
            "{name} {kind} missing"
        );
    }

    let v = gw.upstreams().await;
    let e = &v["healthy_endpoints"][0];
    assert_eq!(e["model"], "m");
    assert_eq!(e["upstream"], "a");
    assert_eq!(e["api_base"], a.url());
    assert!(v["unhealthy_endpoints"].as_array().unwrap().is_empty());

    let cfg = client()
        .get(gw.admin("/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cfg.contains("\"***\"") && cfg.contains(&a.url()));
    assert!(
        !cfg.contains("sk-very-secret") && !cfg.contains("also-secret"),
        "{cfg}"
    );
}

fn check(yaml: &str) -> (bool, String, String) {
    let path = tmp_path("check.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(LLMPROXY)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_good_and_bad_configs() {
    let (ok, out, _) = check(
        "server: {listeners: [{name: main, listen: \"127.0.0.1:4000\"}]}\nupstreams: [{name: u, url: \"http://127.0.0.1:8000/v1\"}]\nmodels: [{name: m, deployments: [{upstream: u, model: m}]}]\n",
    );
    assert!(ok);
    assert!(out.starts_with("ok"), "{out}");
    assert!(out.contains("model     m"), "{out}");

    let (ok, _, err) = check(
        "server: {listeners: [{name: main, listen: \"nowhere\"}]}\nupstreams: [{name: u, url: \"http://127.0.0.1:8000/v1\", helth_check: {}}]\nmodels:\n  - {name: m, strategy: fastest, deployments: [{upstream: v, model: m}]}\n",
    );
    assert!(!ok);
    for needle in [
        "server.listeners[0].listen: `nowhere` is not an IP:port address",
        "upstreams[0].helth_check: unknown key (did you mean `health_check`?)",
        "models[0].strategy: `fastest` is not one of",
        "models[0].deployments[0].upstream: unknown upstream `v` (did you mean `u`?)",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    assert!(err.contains("4 error(s)"), "{err}");

    let (ok, _, err) = check("server: [\n");
    assert!(!ok);
    assert!(err.contains("invalid YAML"), "{err}");

    // A duration too large to represent is an error at its key (it crashed `check` and reloads).
    let (ok, _, err) = check(
        "server: {listeners: [{name: main, listen: \"127.0.0.1:4000\"}]}\nupstreams: [{name: u, url: \"http://127.0.0.1:8000/v1\", health_check: {interval: 66666666666666666666666666666666666666615s}}]\nmodels: [{name: m, deployments: [{upstream: u, model: m}]}]\n",
    );
    assert!(!ok);
    assert!(
        err.contains("upstreams[0].health_check.interval: invalid duration"),
        "{err}"
    );
}

#[test]
fn every_conf_example_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(LLMPROXY)
                .args(["check", "-c", p.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[tokio::test]
async fn an_upstream_that_never_answered_is_unhealthy_from_the_start() {
    let dead = free_port();
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: dead, url: \"http://127.0.0.1:{dead}/v1\", health_check: {{interval: 10s, unhealthy_after: 3}}}}\nmodels:\n  - {{name: m, deployments: [{{upstream: dead, model: m}}]}}\n"
    )))
    .await;
    // No waiting: the first probe ran before the listeners opened, and Pingora's "healthy until
    // `unhealthy_after` failures" does not apply to an upstream that never answered.
    let v = gw.upstreams().await;
    assert_eq!(v["unhealthy_endpoints"][0]["upstream"], "dead", "{v}");
    assert!(v["unhealthy_endpoints"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("ConnectRefused"));
    assert_openai_error(gw.chat("m").await, 503, "no_healthy_upstream").await;
}

#[test]
fn grafana_dashboard_uses_exported_metric_names() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/grafana/llmproxy.json"
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["panels"].as_array().unwrap().len() >= 8);
    let known = [
        "llmproxy_http_requests_total",
        "llmproxy_http_request_errors_total",
        "llmproxy_http_request_duration_seconds",
        "llmproxy_time_to_first_token_seconds",
        "llmproxy_upstream_requests_total",
        "llmproxy_upstream_errors_total",
        "llmproxy_upstream_duration_seconds",
        "llmproxy_upstream_healthy",
        "llmproxy_tokens_total",
        "llmproxy_retries_total",
        "llmproxy_fallbacks_total",
        "llmproxy_stream_errors_total",
        "llmproxy_config_reloads_total",
        "llmproxy_ratelimit_total",
        "llmproxy_queue_depth",
        "llmproxy_queue_wait_seconds",
        "llmproxy_queue_rejections_total",
        "llmproxy_state_errors_total",
        "llmproxy_cache_requests_total",
        "llmproxy_spend_usd_total",
        "llmproxy_token_estimate_error_ratio",
        "llmproxy_team_spend_usd",
        "llmproxy_unpriced_requests_total",
        "llmproxy_spend_log_rows_total",
        "llmproxy_spend_log_queue_depth",
    ];
    // Every metric a panel queries is one the gateway exports.
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("llmproxy_") {
            let base = name.trim_end_matches("_bucket");
            assert!(
                known.contains(&format!("llmproxy_{base}").as_str()),
                "unknown metric llmproxy_{name}"
            );
        }
    }
}

fn logged_upstream(a: &Mock) -> String {
    config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", auth: {{type: bearer, token: sk-upstream-secret}}}}\nmodels:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        a.url()
    ))
}

/// A chat request carrying a client key, a prompt and a request id.
async fn chat_with_secrets(gw: &Gateway, request_id: &str, stream: bool) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-client-secret")
        .header("x-request-id", request_id)
        .json(&serde_json::json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "PRIVATE-PROMPT-TEXT"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
}

fn assert_no_secrets(log: &std::path::Path) {
    let all = std::fs::read_to_string(log).unwrap();
    for secret in [
        "PRIVATE-PROMPT-TEXT",
        "sk-client-secret",
        "sk-upstream-secret",
    ] {
        assert!(!all.contains(secret), "`{secret}` in the log");
    }
}

#[tokio::test]
async fn access_log_has_the_request_but_no_content_or_secret() {
    let a = Mock::start("A");
    let template = logged_upstream(&a)
        .replace("access_log: off", "access_log: json")
        .replace("level: warn", "level: info");
    let (gw, log) = gateway_with_log(&template, &[]).await;
    chat_with_secrets(&gw, "req-log-1", true).await;
    // The line is written when the request ends.
    let line = wait_for_line(&log, "req-log-1").await;
    let json: Value =
        serde_json::from_str(line.split_once("] ").map(|x| x.1).unwrap_or(&line)).unwrap();
    assert_eq!(json["model"], "m");
    assert_eq!(json["upstream"], "a");
    assert_eq!(json["status"], 200);
    assert!(json["ttft_ms"].as_f64().is_some());
    // Every field the operations issue asks for is there (null when it does not apply).
    for field in [
        "request_id",
        "client",
        "listener",
        "model",
        "upstream",
        "status",
        "duration_ms",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "queue_ms",
        "key_id",
        "cache",
    ] {
        assert!(json.get(field).is_some(), "no `{field}` in {line}");
    }
    assert_no_secrets(&log);
}

#[tokio::test]
async fn debug_logs_upstream_requests_with_credentials_masked() {
    let a = Mock::start("A");
    let (gw, log) = gateway_with_log(&logged_upstream(&a), &["--debug"]).await;
    chat_with_secrets(&gw, "req-debug-1", false).await;
    let line = wait_for_line(&log, "req-debug-1: upstream a").await;
    assert!(
        line.contains("POST /v1/chat/completions") && line.contains("authorization: ***"),
        "{line}"
    );
    assert_no_secrets(&log);
}
