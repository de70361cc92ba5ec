//! Issue: LiteLLM-format configs and seed 002's proxy CLI, through the real gateway: seed 002's
//! example configs (adapted to loopback mock upstreams) served as they are, `check` on bad LiteLLM
//! files (every error at its LiteLLM key path, exit 1), the `convert` round trip, reload of a
//! LiteLLM file, and the `--test` / `--health` flags against a running and a stopped gateway.
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
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Start the gateway on a LiteLLM file the way seed 002 does (`--config FILE`), on loopback ports
/// given with `--host`/`--port`/`--admin-listen`; stderr goes to a log file.
async fn litellm_gateway(yaml: &str, extra: &[&str]) -> (Gateway, PathBuf) {
    let port = free_port();
    let admin = free_port();
    let path = tmp_path("litellm.yaml");
    std::fs::write(&path, yaml).unwrap();
    let log = tmp_path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let (p, port_s, admin_s) = (
        path.to_str().unwrap().to_string(),
        port.to_string(),
        format!("127.0.0.1:{admin}"),
    );
    let mut args = vec![
        "--config",
        p.as_str(),
        "--host",
        "127.0.0.1",
        "--port",
        port_s.as_str(),
        "--admin-listen",
        admin_s.as_str(),
    ];
    args.extend_from_slice(extra);
    let gw = Gateway::spawn_with_stderr(&args, port, admin, path, file.into()).await;
    (gw, log)
}

fn llmproxy(args: &[&str]) -> Output {
    Command::new(LLMPROXY)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run llmproxy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn chat_body(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Seed 002 "Load Balancing - Multiple Instances of 1 model", on three mocks: both `llm_params`
/// and `litellm_params`, traffic shared by rpm, and the paths without `/v1`.
#[tokio::test]
async fn seed_load_balancing_between_deployments_of_one_model() {
    let (a, b, c) = (Mock::start("A"), Mock::start("B"), Mock::start("C"));
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-3.5-turbo
    llm_params:
      model: openai/gpt-turbo-small-eu
      api_base: {}
      api_key:
      rpm: 6000      # Rate limit for this deployment: in requests per minute (rpm)
  - model_name: gpt-3.5-turbo
    llm_params:
      model: openai/gpt-turbo-small-ca
      api_base: {}
      api_key:
      rpm: 6000
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-turbo-large
      api_base: {}
      rpm: 12000
llm_settings:
  drop_params: True
  set_verbose: False
"#,
        a.url(),
        b.url(),
        c.url()
    );
    let (gw, _log) = litellm_gateway(&yaml, &[]).await;
    let models: Value = get_json(gw.url("/v1/models")).await;
    assert_eq!(models["data"][0]["id"], "gpt-3.5-turbo");
    let mut served = std::collections::HashMap::new();
    for i in 0..40 {
        // seed 002's curl: POST /chat/completions (no /v1)
        let path = if i % 2 == 0 {
            "/chat/completions"
        } else {
            "/v1/chat/completions"
        };
        let r = chat_body(
            &gw,
            path,
            json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "what llm are you"}]}),
        )
        .await;
        assert_eq!(r.status(), 200);
        *served.entry(served_by(&r)).or_insert(0) += 1;
    }
    for name in ["A", "B", "C"] {
        assert!(served.get(name).copied().unwrap_or(0) > 0, "{served:?}");
    }
    // C has twice the rpm of A and B: it gets the largest share.
    assert!(
        served["C"] > served["A"] && served["C"] > served["B"],
        "{served:?}"
    );
    let sent = a.requests_to("/v1/chat/completions").await;
    assert_eq!(sent[0]["model"], "gpt-turbo-small-eu");
}

/// Seed 002 "Fallbacks + Cooldowns + Retries + Timeouts".
#[tokio::test]
async fn seed_fallbacks_cooldowns_retries_and_timeouts() {
    let (a, b) = (Mock::start("A"), Mock::start("B"));
    let turbo = Mock::start("turbo");
    let turbo16k = Mock::start("turbo16k");
    let small = Mock::start_with(
        "small",
        &[
            "--fail-code",
            "context_length_exceeded",
            "--fail-message",
            "This model's maximum context length is 4096 tokens",
        ],
    );
    let slow = Mock::start("slow");
    let yaml = format!(
        r#"
model_list:
  - model_name: zephyr-beta
    litellm_params:
        model: openai/HuggingFaceH4/zephyr-7b-beta
        api_base: {a}
        extra_headers: {{x-mock-status: 500}}
  - model_name: zephyr-beta
    litellm_params:
        model: openai/HuggingFaceH4/zephyr-7b-beta
        api_base: {b}
        extra_headers: {{x-mock-status: 500}}
  - model_name: gpt-3.5-turbo
    litellm_params:
        model: openai/gpt-3.5-turbo
        api_base: {turbo}
        api_key: sk-my-openai-key
  - model_name: gpt-3.5-turbo-16k
    litellm_params:
        model: openai/gpt-3.5-turbo-16k
        api_base: {turbo16k}
        api_key: sk-my-openai-key
  - model_name: short-context
    litellm_params:
        model: openai/small
        api_base: {small}
        extra_headers: {{x-mock-status: 400}}
  - model_name: slow
    litellm_params:
        model: openai/slow
        api_base: {slow}
        timeout: 1
        extra_headers: {{x-mock-latency-ms: 5000}}

litellm_settings:
  num_retries: 1 # retry call once on each model_name
  request_timeout: 10 # raise Timeout error if call takes longer than 10s
  fallbacks: [{{"zephyr-beta": ["gpt-3.5-turbo"]}}] # fallback to gpt-3.5-turbo if call fails num_retries
  context_window_fallbacks: [{{"short-context": ["gpt-3.5-turbo-16k"]}}, {{"gpt-3.5-turbo": ["gpt-3.5-turbo-16k"]}}]
  allowed_fails: 0 # cooldown model if it fails > 0 calls in a minute.
  cooldown_time: 30
"#,
        a = a.url(),
        b = b.url(),
        turbo = turbo.url(),
        turbo16k = turbo16k.url(),
        small = small.url(),
        slow = slow.url(),
    );
    let (gw, log) = litellm_gateway(&yaml, &[]).await;
    // Both zephyr deployments fail (one attempt + one retry): gpt-3.5-turbo answers.
    let r = gw.chat("zephyr-beta").await;
    assert_eq!(
        r.status(),
        200,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(served_by(&r), "turbo");
    assert_eq!(r.headers()["x-llmproxy-model"], "gpt-3.5-turbo");
    assert_eq!(a.requests_to("/v1/chat/completions").await.len(), 1);
    assert_eq!(b.requests_to("/v1/chat/completions").await.len(), 1);
    let sent = turbo.requests_to("/v1/chat/completions").await;
    assert_eq!(
        sent[0]["headers"]["authorization"],
        "Bearer sk-my-openai-key"
    );
    // allowed_fails: 0 → one failure cools a deployment down, for cooldown_time.
    let health = gw.upstreams().await;
    let cooling: Vec<&Value> = health["unhealthy_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["model"] == "zephyr-beta")
        .collect();
    assert_eq!(cooling.len(), 2, "{health}");
    for e in cooling {
        let left = e["cooldown_remaining_ms"].as_u64().unwrap();
        assert!(left > 25_000 && left <= 30_000, "{e}");
    }
    // Context window exceeded: straight to the context-window fallback.
    let r = gw.chat("short-context").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "turbo16k");
    // The deployment's `timeout` (1 s) ends a call the mock answers after 5 s.
    let t = Instant::now();
    let r = gw.chat("slow").await;
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

/// Seed 002 "Config for Embedding Models": `openai/` + api_base is any OpenAI-compatible server.
#[tokio::test]
async fn seed_embeddings_on_openai_compatible_servers() {
    let (a, b) = (Mock::start("A"), Mock::start("B"));
    let yaml = format!(
        r#"
model_list:
  - model_name: custom_embedding_model
    litellm_params:
      model: openai/custom_embedding  # the `openai/` prefix tells llm it's openai compatible
      api_base: {}/
  - model_name: custom_embedding_model
    litellm_params:
      model: openai/custom_embedding  # the `openai/` prefix tells llm it's openai compatible
      api_base: {}/
"#,
        a.url(),
        b.url()
    );
    let (gw, _log) = litellm_gateway(&yaml, &[]).await;
    let mut served = std::collections::HashSet::new();
    for path in [
        "/v1/embeddings",
        "/embeddings",
        "/v1/embeddings",
        "/embeddings",
    ] {
        let r = chat_body(
            &gw,
            path,
            json!({"model": "custom_embedding_model", "input": ["hello", "world"]}),
        )
        .await;
        assert_eq!(r.status(), 200);
        served.insert(served_by(&r));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
    }
    assert_eq!(served.len(), 2, "{served:?}");
    let sent = a.requests_to("/v1/embeddings").await;
    assert_eq!(sent[0]["model"], "custom_embedding");
}

/// Seed 002 "Managing Auth - Virtual Keys": `master_key` and `database_url` (SQLite here).
#[tokio::test]
async fn seed_virtual_keys_with_database_url() {
    let mock = Mock::start("ollama");
    let db = tmp_path("keys.db");
    const MASTER: &str = "sk-1234-master";
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-4
    litellm_params:
        model: ollama/llama2
        api_base: {}
  - model_name: gpt-3.5-turbo
    litellm_params:
        model: ollama/llama2
        api_base: {}

general_settings:
  master_key: {MASTER} # [OPTIONAL] if set all calls to proxy will require either this key or a valid generated token
  database_url: "sqlite://{}"
"#,
        mock.base(),
        mock.base(),
        db.display()
    );
    let (gw, _log) = litellm_gateway(&yaml, &[]).await;
    let c = client();
    let r = c
        .post(gw.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"models": ["gpt-3.5-turbo"], "duration": "20m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let key = v["key"].as_str().unwrap().to_string();
    assert!(v["expires"].is_string(), "{v}");
    let call = |model: &'static str, key: Option<String>| {
        let c = c.clone();
        let url = gw.url("/chat/completions");
        async move {
            let mut req = c
                .post(url)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            req.send().await.unwrap()
        }
    };
    let r = call("gpt-3.5-turbo", Some(key.clone())).await;
    assert_eq!(r.status(), 200);
    // ollama's api_base is the server root: the OpenAI-compatible API under /v1
    assert_eq!(
        mock.requests_to("/v1/chat/completions").await[0]["model"],
        "llama2"
    );
    assert_openai_error(
        call("gpt-4", Some(key.clone())).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert_openai_error(call("gpt-3.5-turbo", None).await, 401, "invalid_api_key").await;
    assert_eq!(call("gpt-4", Some(MASTER.into())).await.status(), 200);
    let info: Value = c
        .get(gw.url(&format!("/key/info?key={key}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["info"]["models"], json!(["gpt-3.5-turbo"]), "{info}");
    assert!(db.exists());
}

/// Seed 002 "Save Model-specific params" and "Load API Keys from Vault": api_base, api_version,
/// `os.environ/` keys (from environment_variables), and temperature / max_tokens defaults.
#[tokio::test]
async fn seed_model_specific_params() {
    let mock = Mock::start("azure");
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-4-team1
    litellm_params: # params for llm.completion()
      model: azure/chatgpt-v-2
      api_base: {base}/
      api_version: "2023-05-15"
      api_key: os.environ/AZURE_NORTH_AMERICA_API_KEY
  - model_name: mistral-7b
    litellm_params:
      model: ollama/mistral
      api_base: {base}
      temperature: 0.2
      max_tokens: 100
environment_variables:
  AZURE_NORTH_AMERICA_API_KEY: your-azure-api-key
"#,
        base = mock.base()
    );
    let (gw, _log) = litellm_gateway(&yaml, &[]).await;
    assert_eq!(gw.chat("gpt-4-team1").await.status(), 200);
    let sent = mock.requests().await;
    let az = sent
        .iter()
        .find(|r| r["path"] == "/openai/deployments/chatgpt-v-2/chat/completions")
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(az["query"], "api-version=2023-05-15");
    assert_eq!(az["headers"]["api-key"], "your-azure-api-key");
    for (body, temperature) in [
        (json!({"model": "mistral-7b", "messages": []}), 0.2),
        (
            json!({"model": "mistral-7b", "messages": [], "temperature": 0.9}),
            0.9,
        ),
    ] {
        mock.reset().await;
        assert_eq!(
            chat_body(&gw, "/v1/chat/completions", body).await.status(),
            200
        );
        let sent = mock.requests_to("/v1/chat/completions").await;
        let b: Value = serde_json::from_str(sent[0]["body_prefix"].as_str().unwrap()).unwrap();
        assert_eq!(b["temperature"], temperature);
        assert_eq!(b["max_tokens"], 100);
        assert_eq!(b["model"], "mistral");
    }
}

/// Seed 002 "Caching Responses": `cache: {type: redis}` with REDIS_HOST/REDIS_PORT set in
/// environment_variables; the second identical request (temperature 0.7) is a hit.
#[tokio::test]
async fn seed_caching_with_redis_from_the_environment() {
    let redis = Redis::start();
    let mock = Mock::start("A");
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: {}
litellm_settings:
  set_verbose: False
  cache:          # init cache
    type: redis   # tell llm to use redis caching
environment_variables:
  REDIS_HOST: 127.0.0.1
  REDIS_PORT: "{}"
  REDIS_PASSWORD:
"#,
        mock.url(),
        redis.port
    );
    let (gw, _log) = litellm_gateway(&yaml, &[]).await;
    let body = json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "write a poem about llm!"}], "temperature": 0.7});
    let first = chat_body(&gw, "/v1/chat/completions", body.clone()).await;
    assert_eq!(first.headers()["x-llmproxy-cache"], "miss");
    let second = chat_body(&gw, "/v1/chat/completions", body.clone()).await;
    assert_eq!(second.headers()["x-llmproxy-cache"], "hit");
    let mut off = body.clone();
    off["caching"] = json!(false);
    let third = chat_body(&gw, "/v1/chat/completions", off).await;
    assert_eq!(third.headers()["x-llmproxy-cache"], "bypass");
    assert_eq!(mock.requests_to("/v1/chat/completions").await.len(), 2);
    // The entry is in Redis, shared by every instance.
    let stats = gw.stats().await;
    assert!(stats["cache"].is_object(), "{stats}");
}

/// `check` on bad LiteLLM files: every error at its LiteLLM key path, exit 1; warnings listed.
#[tokio::test]
async fn check_reports_bad_litellm_files_at_their_keys() {
    let bad = tmp_path("bad-litellm.yaml");
    std::fs::write(
        &bad,
        r#"
model_list:
  - model_name: command
    litellm_params:
      model: cohere/command-nightly
  - model_name: gpt-4-team1
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: https://openai-gpt-4-test-v-1.openai.azure.com/
      api_version: "2023-05-15"
      api_key: os.environ/LLMPROXY_TEST_SURELY_UNSET_KEY
  - model_name: no-model
    litellm_params:
      api_base: http://127.0.0.1:8001
litellm_settings:
  set_verbose: True
  json_logs: true
"#,
    )
    .unwrap();
    let out = llmproxy(&["check", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "(LiteLLM format): 3 error(s)",
        "model_list[0].litellm_params.model: unknown or unsupported provider `cohere` in `cohere/command-nightly`",
        "model_list[1].litellm_params.api_key: environment variable `LLMPROXY_TEST_SURELY_UNSET_KEY` is not set (read by `os.environ/LLMPROXY_TEST_SURELY_UNSET_KEY`)",
        "model_list[2].litellm_params.model: required key is missing",
        "warning: litellm_settings.json_logs: not supported by llmproxy: ignored",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }

    // A valid file with an unsupported key: ok, the warning listed once.
    let good = tmp_path("good-litellm.yaml");
    std::fs::write(
        &good,
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: \"http://127.0.0.1:8001/v1\", stream_timeout: 5}\n",
    )
    .unwrap();
    let out = llmproxy(&["check", "-c", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("ok: {} (LiteLLM format)", good.display())));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim(),
        "warning: model_list[0].litellm_params.stream_timeout: not supported by llmproxy: ignored"
    );
}

/// `convert` prints native YAML that `check` accepts; secrets read from the environment stay
/// references; `convert` of a native file says it is not a LiteLLM file.
#[tokio::test]
async fn convert_round_trip() {
    let src = tmp_path("convert-litellm.yaml");
    std::fs::write(
        &src,
        r#"
model_list:
  - model_name: gpt-4-team1
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: https://openai-gpt-4-test-v-1.openai.azure.com/
      api_version: "2023-05-15"
      api_key: os.environ/LLMPROXY_TEST_AZURE_KEY
  - model_name: zephyr
    litellm_params: {model: openai/zephyr, api_base: "http://127.0.0.1:8001/v1", rpm: 60}
litellm_settings:
  num_retries: 2
  fallbacks: [{"zephyr": ["gpt-4-team1"]}]
  success_callback: ["otel"]
  json_logs: true
general_settings:
  master_key: os.environ/LLMPROXY_TEST_MASTER
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(LLMPROXY)
            .args(args)
            .env("LLMPROXY_TEST_AZURE_KEY", "azure-secret-value")
            .env("LLMPROXY_TEST_MASTER", "sk-master-secret-value")
            .output()
            .unwrap()
    };
    let out = run(&["convert", "-c", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        yaml.starts_with("# llmproxy configuration converted by `llmproxy convert`"),
        "{yaml}"
    );
    assert!(
        yaml.contains("#   litellm_settings.json_logs: not supported"),
        "{yaml}"
    );
    assert!(
        yaml.contains("${LLMPROXY_TEST_AZURE_KEY}") && yaml.contains("${LLMPROXY_TEST_MASTER}"),
        "{yaml}"
    );
    assert!(!yaml.contains("secret-value"), "{yaml}");
    let native = tmp_path("converted.yaml");
    std::fs::write(&native, &yaml).unwrap();
    let out = run(&["check", "-c", native.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("model     zephyr"), "{summary}");
    assert!(!summary.contains("LiteLLM format"), "{summary}");
    // Without the secrets in the environment the converted file says which are missing.
    let out = llmproxy(&["check", "-c", native.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("LLMPROXY_TEST_AZURE_KEY"));

    // The example in conf/ converts too, and its conversion checks with no keys set.
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/litellm.yaml");
    let out = llmproxy(&["convert", "-c", conf]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let converted = tmp_path("converted-conf.yaml");
    std::fs::write(&converted, &out.stdout).unwrap();
    let out = Command::new(LLMPROXY)
        .args(["check", "-c", converted.to_str().unwrap()])
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AZURE_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = llmproxy(&["convert", "-c", native.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a LiteLLM config"));
}

/// A LiteLLM file reloads on SIGHUP like a native one (a broken edit keeps the running config).
#[tokio::test]
async fn litellm_file_reloads_on_sighup() {
    let (a, b) = (Mock::start("A"), Mock::start("B"));
    let entry = |name: &str, m: &Mock| {
        format!(
            "  - model_name: {name}\n    litellm_params: {{model: openai/x, api_base: \"{}\"}}\n",
            m.url()
        )
    };
    let (gw, _log) = litellm_gateway(&format!("model_list:\n{}", entry("first", &a)), &[]).await;
    assert_eq!(served_by(&gw.chat("first").await), "A");
    std::fs::write(&gw.config, format!("model_list:\n{}", entry("second", &b))).unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    loop {
        let r = gw.chat("second").await;
        if r.status() == 200 {
            assert_eq!(served_by(&r), "B");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.chat("first").await.status(), 404);
    // A LiteLLM error: refused, the running config stays.
    std::fs::write(
        &gw.config,
        "model_list:\n  - model_name: broken\n    litellm_params: {model: cohere/x}\n",
    )
    .unwrap();
    let r = client().post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["errors"][0].as_str().unwrap().starts_with(
            "model_list[0].litellm_params.model: unknown or unsupported provider `cohere`"
        ),
        "{v}"
    );
    assert_eq!(gw.chat("second").await.status(), 200);
}

/// Seed 002's CLI: `--model provider/id` with the flags in both spellings, then `--test` and
/// `--health` against the running gateway and against a stopped one.
#[tokio::test]
async fn cli_flags_test_and_health() {
    let mock = Mock::start("A");
    let port = free_port();
    let admin = free_port();
    let (port_s, admin_s, url) = (port.to_string(), format!("127.0.0.1:{admin}"), mock.url());
    let gw = Gateway::spawn_with_stderr(
        &[
            "--model",
            "openai/mock-model",
            "--api-base",
            &url,
            "--alias",
            "my-model",
            "--host",
            "127.0.0.1",
            "--port",
            &port_s,
            "--admin_listen",
            &admin_s,
            "--num_workers",
            "2",
            "--temperature",
            "0.3",
            "--max-tokens",
            "7",
            "--request_timeout",
            "30",
            "--drop-params",
            "--add_function_to_prompt",
            "--telemetry",
            "False",
            "--detailed_debug",
        ],
        port,
        admin,
        PathBuf::new(),
        Stdio::null(),
    )
    .await;
    // served as the alias, as `--model` written, and as the bare id
    for model in ["my-model", "openai/mock-model", "mock-model"] {
        assert_eq!(gw.chat(model).await.status(), 200, "{model}");
    }
    mock.reset().await;

    let out = llmproxy(&["--test", "--host", "127.0.0.1", "--port", &port_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "Hello from mock");
    let sent = mock.requests_to("/v1/chat/completions").await;
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_str(sent[0]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(body["model"], "mock-model");
    assert_eq!(body["temperature"], 0.3);
    assert_eq!(body["max_tokens"], 7);
    assert_eq!(
        body["messages"][0]["content"],
        "this is a test request, write a short poem"
    );

    let out = llmproxy(&["--test", "--port", &port_s, "--model", "my-model"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = llmproxy(&["--test", "--port", &port_s, "--model", "no-such-model"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let out = llmproxy(&["--health", "--admin-listen", &admin_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy_endpoints"][0]["model"], "my-model");
    assert_eq!(report["healthy_endpoints"][0]["api_base"], url.as_str());
    assert_eq!(report["unhealthy_endpoints"], json!([]));

    drop(gw); // killed and reaped
    let out = llmproxy(&["--test", "--port", &port_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("llmproxy --test: GET http://127.0.0.1:")
            && err.contains("is llmproxy running there?"),
        "{err}"
    );
    let out = llmproxy(&["--health", "--admin_listen", &admin_s, "--port", &port_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/health/upstreams"),
        "{}",
        text(&out.stderr)
    );

    // Flags that describe a model need one; --model and --config exclude each other.
    let out = llmproxy(&["--api_base", "http://127.0.0.1:1/v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--api_base describes the model of --model"));
    let out = llmproxy(&["--model", "gpt-4o", "--config", "conf/litellm.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    // An unknown provider prefix is an error naming it, never a silent fallback.
    let out = llmproxy(&[
        "--model",
        "cohere/command-r",
        "--port",
        &free_port().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--model: unknown or unsupported provider `cohere`"),
        "{}",
        text(&out.stderr)
    );
}

/// `--detailed_debug`: each upstream request is logged as a `curl` command a person can paste, with
/// the upstream key masked; without the flag, no such line.
#[tokio::test]
async fn detailed_debug_logs_upstream_requests_as_curl() {
    let mock = Mock::start("A");
    for detailed in [true, false] {
        let (port, admin) = (free_port(), free_port());
        let (port_s, admin_s, url) = (port.to_string(), format!("127.0.0.1:{admin}"), mock.url());
        let mut args = vec![
            "--model",
            "openai/mock-model",
            "--api_base",
            &url,
            "--port",
            &port_s,
            "--host",
            "127.0.0.1",
            "--admin_listen",
            &admin_s,
        ];
        if detailed {
            args.push("--detailed_debug");
        }
        let (mut gw, log) = Gateway::spawn_with_env_log(
            &args,
            port,
            admin,
            PathBuf::new(),
            &[("OPENAI_API_KEY", Some("sk-curl-secret-0123456789"))],
        )
        .await;
        assert_eq!(gw.chat("mock-model").await.status(), 200);
        gw.signal(libc::SIGTERM);
        assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains("sk-curl-secret-0123456789"),
            "the upstream key reached the log"
        );
        if detailed {
            assert!(
                text.contains("curl -X POST") && text.contains("/chat/completions'"),
                "no curl line in: {text:.3000}"
            );
            assert!(text.contains("Bearer sk-curl****"), "{text:.3000}");
            assert!(text.contains("\"model\":\"mock-model\""), "{text:.3000}");
        } else {
            assert!(!text.contains("curl -X"), "{text:.3000}");
        }
    }
}
