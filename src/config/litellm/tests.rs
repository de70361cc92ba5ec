use super::*;
use crate::config::{parse, Auth};
use std::time::Duration;

struct MapEnv(Vec<(&'static str, &'static str)>);
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}
fn no_env() -> MapEnv {
    MapEnv(Vec::new())
}

fn errors(text: &str, env: &dyn Env) -> String {
    parse(text, env).unwrap_err().to_string()
}

fn warnings(text: &str, env: &dyn Env) -> String {
    let doc: Value = serde_yaml::from_str(text).unwrap();
    crate::config::from_value(&doc, env, &Default::default())
        .warnings
        .to_string()
}

fn header(auth: &Auth) -> (String, String) {
    match auth {
        Auth::Header { name, value } => (name.to_string(), value.expose().to_string()),
        Auth::None | Auth::Gcp { .. } | Auth::AwsSigV4(_) => (String::new(), String::new()),
    }
}

/// LiteLLM's load-balancing example, as written (`llm_params`, empty `api_key`).
const SEED_MULTI: &str = r#"
model_list:
  - model_name: gpt-3.5-turbo
    llm_params:
      model: azure/gpt-turbo-small-eu
      api_base: https://my-endpoint-europe-berri-992.openai.azure.com/
      api_key:
      rpm: 6      # Rate limit for this deployment: in requests per minute (rpm)
  - model_name: gpt-3.5-turbo
    llm_params:
      model: azure/gpt-turbo-small-ca
      api_base: https://my-endpoint-canada-berri992.openai.azure.com/
      api_key:
      rpm: 6
  - model_name: gpt-3.5-turbo
    llm_params:
      model: azure/gpt-turbo-large
      api_base: https://openai-france-1234.openai.azure.com/
      api_key:
      rpm: 1440
"#;

#[test]
fn seed_multi_deployment_is_one_model_with_three_deployments() {
    let env = MapEnv(vec![("AZURE_API_KEY", "az-key")]);
    let cfg = parse(SEED_MULTI, &env).unwrap();
    assert_eq!(cfg.models.len(), 1);
    let m = &cfg.models[0];
    assert_eq!(m.name, "gpt-3.5-turbo");
    let deps: Vec<(&str, Option<u64>, usize)> = m
        .deployments
        .iter()
        .map(|d| (d.model.as_str(), d.rpm, d.weight))
        .collect();
    // simple-shuffle weighs by rpm when no deployment has a weight
    assert_eq!(
        deps,
        vec![
            ("gpt-turbo-small-eu", Some(6), 1),
            ("gpt-turbo-small-ca", Some(6), 1),
            ("gpt-turbo-large", Some(1440), 240)
        ]
    );
    assert_eq!(cfg.upstreams.len(), 3);
    for u in &cfg.upstreams {
        assert_eq!(u.provider.as_str(), "azure");
        assert_eq!(u.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(header(&u.auth), ("api-key".into(), "az-key".into()));
    }
    assert_eq!(
        cfg.upstreams[0].url.host,
        "my-endpoint-europe-berri-992.openai.azure.com"
    );
    assert_eq!(cfg.upstreams[0].name, "azure-my-endpoint-europe-berri-992");
    // LiteLLM's port and an admin listener on loopback
    assert_eq!(cfg.server.listeners[0].listen.to_string(), "0.0.0.0:4000");
    assert_eq!(cfg.admin.listen.to_string(), "127.0.0.1:9000");
    assert!(cfg.warnings.is_empty(), "{}", cfg.warnings);
}

#[test]
fn rpm_weights_are_small_and_bounded() {
    assert_eq!(rpm_weights(&[6000, 6000, 12000]), [1, 1, 2]);
    assert_eq!(rpm_weights(&[7, 3]), [7, 3]);
    assert_eq!(rpm_weights(&[1, 5000]), [1, 1000]);
}

#[test]
fn equal_upstreams_are_shared_and_different_keys_are_not() {
    let text = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:8001/v1", api_key: k1}}
  - {model_name: a, litellm_params: {model: openai/y, api_base: "http://127.0.0.1:8001/v1", api_key: k1}}
  - {model_name: b, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:8001/v1", api_key: k2}}
"#;
    let cfg = parse(text, &no_env()).unwrap();
    let names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["openai-127.0.0.1-8001", "openai-127.0.0.1-8001-2"]);
    assert_eq!(cfg.upstreams[0].provider.as_str(), "openai_compatible");
    assert_eq!(cfg.models[0].deployments.len(), 2);
    assert_eq!(cfg.models[0].deployments[0].upstream_id.index(), 0);
    assert_eq!(cfg.models[0].deployments[1].upstream_id.index(), 0);
    assert_eq!(cfg.models[1].deployments[0].upstream_id.index(), 1);
    assert_eq!(header(&cfg.upstreams[1].auth).1, "Bearer k2");
}

#[test]
fn os_environ_values_and_environment_variables() {
    let text = r#"
model_list:
  - model_name: gpt-4-team1
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: https://openai-gpt-4-test-v-1.openai.azure.com/
      api_version: "2023-05-15"
      api_key: os.environ/AZURE_NORTH_AMERICA_API_KEY
"#;
    let all = errors(text, &no_env());
    assert_eq!(
            all,
            "model_list[0].litellm_params.api_key: environment variable `AZURE_NORTH_AMERICA_API_KEY` is not set (read by `os.environ/AZURE_NORTH_AMERICA_API_KEY`)"
        );
    let env = MapEnv(vec![("AZURE_NORTH_AMERICA_API_KEY", "from-env")]);
    let cfg = parse(text, &env).unwrap();
    assert_eq!(header(&cfg.upstreams[0].auth).1, "from-env");
    assert_eq!(cfg.upstreams[0].api_version.as_deref(), Some("2023-05-15"));
    // environment_variables are laid over the environment
    let with_vars =
        format!("{text}environment_variables:\n  AZURE_NORTH_AMERICA_API_KEY: from-file\n");
    let cfg = parse(&with_vars, &env).unwrap();
    assert_eq!(header(&cfg.upstreams[0].auth).1, "from-file");
    assert_eq!(cfg.environment[0].0, "AZURE_NORTH_AMERICA_API_KEY");
}

#[test]
fn bad_entries_are_all_reported_at_their_litellm_paths() {
    let text = r#"
model_list:
  - model_name: a
    litellm_params: {model: cohere/command-r}
  - model_name: b
    litellm_params: {api_base: "http://127.0.0.1:1/v1"}
  - model_name: c
  - model_name: d
    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1", rpm: 0}
  - model_name: e
    litellm_params: {model: mystery-model}
  - model_name: f
    litellm_params: {model: azure/dep, api_base: "https://x.openai.azure.com/openai"}
litellm_settings:
  fallbacks: [{"a": ["d"]}, {"gpt-5": ["d"]}, {"d": ["nope"]}]
"#;
    let all = errors(text, &no_env());
    for needle in [
            "model_list[0].litellm_params.model: unknown or unsupported provider `cohere` in `cohere/command-r`",
            "model_list[1].litellm_params.model: required key is missing",
            "model_list[2].litellm_params: required key is missing",
            "model_list[3].litellm_params.rpm: must be a positive number per minute",
            "model_list[4].litellm_params.model: cannot tell the provider of `mystery-model`",
            "model_list[5].litellm_params.api_base: for provider `azure` the URL is the resource endpoint",
            "litellm_settings.fallbacks[1].gpt-5: unknown model `gpt-5`",
            "litellm_settings.fallbacks[2].d[0]: unknown model `nope`",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    // `a` failed: its fallback rule is not reported again
    assert!(!all.contains("fallbacks[0]"), "{all}");
    assert_eq!(all.lines().count(), 8, "{all}");
}

#[test]
fn providers_this_build_lacks_are_named_at_the_model_key() {
    let text = r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
      aws_region_name: us-east-1
  - model_name: gem
    litellm_params: {model: gemini/gemini-1.5-pro, api_key: g}
  - model_name: zephyr
    litellm_params: {model: huggingface/HuggingFaceH4/zephyr-7b-beta, api_base: "http://127.0.0.1:8080"}
  - model_name: vx
    litellm_params: {model: vertex_ai/gemini-1.5-pro, vertex_project: p, vertex_location: europe-west4}
"#;
    let doc: Value = serde_yaml::from_str(text).unwrap();
    let t = translate(&doc, &no_env());
    let native = serde_yaml::to_string(&t.native).unwrap();
    for needle in [
            "provider: bedrock",
            "type: aws_sigv4",
            "region: us-east-1",
            "provider: gemini",
            "name: x-goog-api-key",
            "provider: text_generation",
            "provider: vertex",
            "url: https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/publishers/google",
            "type: gcp",
        ] {
            assert!(native.contains(needle), "missing `{needle}` in:\n{native}");
        }
    // Until the native reader knows a provider, its error names it at the LiteLLM key, once.
    match parse(text, &no_env()) {
        Ok(_) => {}
        Err(e) => {
            for err in &e.0 {
                assert!(err.path.ends_with(".litellm_params.model"), "{e}");
                assert!(
                    err.message
                        .contains("provider, which this build does not have"),
                    "{e}"
                );
            }
            for (i, provider) in [
                (0, "bedrock"),
                (1, "gemini"),
                (2, "text_generation"),
                (3, "vertex"),
            ] {
                let found = e.0.iter().any(|x| {
                    x.path == format!("model_list[{i}].litellm_params.model")
                        && x.message.contains(&format!("`{provider}`"))
                });
                let known =
                    !e.0.iter()
                        .any(|x| x.path.starts_with(&format!("model_list[{i}]")));
                assert!(found || known, "model_list[{i}] ({provider}): {e}");
            }
        }
    }
}

#[test]
fn unsupported_keys_are_warned_once_each_with_their_path() {
    let text = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1", stream_timeout: 5, tempurature: 1}
    model_info: {id: "1"}
litellm_settings:
  json_logs: true
  num_retries: 2
general_settings:
  alerting: ["slack"]
router_settings:
  routing_strategy: latency-based-routing
something_else: 1
"#;
    let w = warnings(text, &no_env());
    for needle in [
            "model_list[0].litellm_params.stream_timeout: not supported by llmproxy: ignored",
            "model_list[0].litellm_params.tempurature: not supported by llmproxy: ignored (did you mean `temperature`?)",
            "model_list[0].model_info: informational metadata",
            "litellm_settings.json_logs: not supported",
            "general_settings.alerting: not supported",
            "router_settings.routing_strategy: `latency-based-routing` is not supported",
            "something_else: not supported",
        ] {
            assert!(w.contains(needle), "missing `{needle}` in:\n{w}");
        }
    assert_eq!(w.lines().count(), 7, "{w}");
    // a file with warnings is still valid
    assert!(parse(text, &no_env()).is_ok());
}

#[test]
fn settings_become_model_policies() {
    let text = r#"
model_list:
  - model_name: zephyr-beta
    litellm_params: {model: openai/z, api_base: "http://127.0.0.1:8001/v1"}
  - model_name: zephyr-beta
    litellm_params: {model: openai/z, api_base: "http://127.0.0.1:8002/v1", timeout: 3}
  - model_name: gpt-3.5-turbo
    litellm_params: {model: gpt-3.5-turbo, api_key: sk-openai}
  - model_name: gpt-3.5-turbo-16k
    litellm_params: {model: gpt-3.5-turbo-16k, api_key: sk-openai}
litellm_settings:
  num_retries: 3
  request_timeout: 10
  fallbacks: [{"zephyr-beta": ["gpt-3.5-turbo"]}]
  context_window_fallbacks: [{"zephyr-beta": ["gpt-3.5-turbo-16k"]}, {"gpt-3.5-turbo": ["gpt-3.5-turbo-16k"]}]
  allowed_fails: 3
  cooldown_time: 30
  drop_params: true
  add_function_to_prompt: true
"#;
    let cfg = parse(text, &no_env()).unwrap();
    let z = &cfg.models[0];
    assert_eq!(z.retry.attempts, 4);
    assert_eq!(z.timeout, Some(Duration::from_secs(10)));
    let c = z.cooldown.unwrap();
    assert_eq!((c.allowed_fails, c.duration), (4, Duration::from_secs(30)));
    assert_eq!(z.fallbacks, ["gpt-3.5-turbo"]);
    assert_eq!(z.context_window_fallbacks, ["gpt-3.5-turbo-16k"]);
    assert_eq!(
        cfg.models[1].context_window_fallbacks,
        ["gpt-3.5-turbo-16k"]
    );
    assert!(cfg
        .models
        .iter()
        .all(|m| m.drop_params && m.add_function_to_prompt));
    // the deployment's own timeout, else the global one
    let timeouts: Vec<u64> = cfg
        .upstreams
        .iter()
        .map(|u| u.client.request_timeout.as_secs())
        .collect();
    assert_eq!(timeouts, [10, 3, 10]);
    assert_eq!(cfg.upstreams[2].provider.as_str(), "openai");
    assert_eq!(cfg.upstreams[2].url.raw, "https://api.openai.com/v1");
    // LiteLLM's OpenTelemetry switch, with no OTEL_* variable: a collector on this host
    let otel = format!("{text}general_settings: {{otel: True}}\n");
    let cfg = parse(&otel, &no_env()).unwrap();
    assert_eq!(
        cfg.tracing.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
}

#[test]
fn cache_master_key_database_and_callbacks() {
    let text = r#"
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params: {model: gpt-3.5-turbo, temperature: 0.2, max_tokens: 100}
litellm_settings:
  cache: true
  cache_params: {type: redis, host: cache.internal, port: 6380, password: os.environ/REDIS_PW, ttl: 600}
  success_callback: ["langfuse", "otel", "s3"]
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: "sqlite://./data/keys.db"
"#;
    let env = MapEnv(vec![
        ("REDIS_PW", "pw"),
        ("LITELLM_MASTER_KEY", "sk-master-0123"),
        ("LANGFUSE_PUBLIC_KEY", "pk-lf"),
        ("LANGFUSE_SECRET_KEY", "sk-lf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
    ]);
    let cfg = parse(text, &env).unwrap();
    assert_eq!(
        cfg.state.redis.as_ref().unwrap().expose(),
        "redis://:pw@cache.internal:6380/0"
    );
    assert_eq!(cfg.cache.backend, crate::config::cache::Backend::Redis);
    let mc = &cfg.models[0].cache;
    assert!(mc.enabled && !mc.only_deterministic);
    assert_eq!(mc.ttl, Duration::from_secs(600));
    assert_eq!(
        cfg.server.master_key.as_ref().unwrap().expose(),
        "sk-master-0123"
    );
    assert_eq!(cfg.state.database.expose(), "sqlite://./data/keys.db");
    assert_eq!(
        cfg.tracing.otlp_endpoint.as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    let lf = cfg.tracing.langfuse.as_ref().unwrap();
    assert_eq!(
        (lf.host.as_str(), lf.public_key.expose()),
        ("https://cloud.langfuse.com", "pk-lf")
    );
    let params: Vec<(&str, &str)> = cfg.models[0].deployments[0]
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(params, [("max_tokens", "100"), ("temperature", "0.2")]);
    let w = cfg.warnings.to_string();
    assert!(
        w.contains("litellm_settings.success_callback[2]: callback `s3` is not supported"),
        "{w}"
    );
    // Langfuse is exported to now: no "not exported" warning.
    assert!(!w.contains("does not export to Langfuse"), "{w}");
    // LiteLLM's older form: `cache: {type: redis}` with REDIS_* in the environment
    let text = "model_list: [{model_name: m, litellm_params: {model: gpt-4o}}]\nlitellm_settings: {cache: {type: redis}}\nenvironment_variables: {REDIS_HOST: localhost, REDIS_PORT: \"6390\", REDIS_PASSWORD: }\n";
    let cfg = parse(text, &no_env()).unwrap();
    assert_eq!(
        cfg.state.redis.as_ref().unwrap().expose(),
        "redis://localhost:6390/0"
    );
    // no Redis anywhere: in memory, said so
    let text = "model_list: [{model_name: m, litellm_params: {model: gpt-4o}}]\nlitellm_settings: {cache: true}\n";
    let cfg = parse(text, &no_env()).unwrap();
    assert_eq!(cfg.cache.backend, crate::config::cache::Backend::Memory);
    assert!(cfg.models[0].cache.enabled);
    assert!(cfg
        .warnings
        .to_string()
        .contains("litellm_settings.cache: no Redis is configured"));
}

#[test]
fn local_servers_and_hosted_compatible_providers() {
    let text = r#"
model_list:
  - {model_name: a, litellm_params: {model: ollama/llama2}}
  - {model_name: b, litellm_params: {model: ollama/mistral, api_base: "http://gpu:11434"}}
  - {model_name: c, litellm_params: {model: together_ai/lmsys/vicuna-13b-v1.5-16k}}
  - {model_name: d, litellm_params: {model: groq/llama3-70b-8192, api_key: gk}}
  - {model_name: e, litellm_params: {model: openrouter/meta/llama, api_base: "https://proxy.example/api/v1"}}
"#;
    let cfg = parse(text, &MapEnv(vec![("TOGETHERAI_API_KEY", "tk")])).unwrap();
    let urls: Vec<&str> = cfg.upstreams.iter().map(|u| u.url.raw.as_str()).collect();
    assert_eq!(
        urls,
        [
            "http://localhost:11434/v1",
            "http://gpu:11434/v1",
            "https://api.together.xyz/v1",
            "https://api.groq.com/openai/v1",
            "https://proxy.example/api/v1"
        ]
    );
    assert!(cfg
        .upstreams
        .iter()
        .all(|u| u.provider.as_str() == "openai_compatible"));
    assert_eq!(
        cfg.models[2].deployments[0].model,
        "lmsys/vicuna-13b-v1.5-16k"
    );
    assert_eq!(header(&cfg.upstreams[0].auth).0, "");
    assert_eq!(header(&cfg.upstreams[2].auth).1, "Bearer tk");
    assert_eq!(header(&cfg.upstreams[3].auth).1, "Bearer gk");
}

#[test]
fn convert_keeps_references_and_check_accepts_the_result() {
    let text = r#"
model_list:
  - model_name: gpt-4-team1
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: https://openai-gpt-4-test-v-1.openai.azure.com/
      api_version: "2023-05-15"
      api_key: os.environ/AZURE_NORTH_AMERICA_API_KEY
  - model_name: gpt-4
    litellm_params: {model: gpt-4, api_key: os.environ/OPENAI_API_KEY, rpm: 60}
litellm_settings:
  set_verbose: true
  cache: {type: redis}
  json_logs: true
general_settings:
  master_key: os.environ/MASTER
environment_variables:
  OPENAI_API_KEY: sk-from-file
  REDIS_HOST: localhost
"#;
    let env = MapEnv(vec![
        ("AZURE_NORTH_AMERICA_API_KEY", "secret-from-env"),
        ("MASTER", "sk-master-secret"),
    ]);
    let doc: Value = serde_yaml::from_str(text).unwrap();
    let yaml = convert(&doc, &env, "litellm.yaml").unwrap();
    assert!(yaml.starts_with("# llmproxy configuration converted by `llmproxy convert`"));
    assert!(
        yaml.contains("#   litellm_settings.json_logs: not supported"),
        "{yaml}"
    );
    assert!(yaml.contains("${AZURE_NORTH_AMERICA_API_KEY}"), "{yaml}");
    assert!(yaml.contains("${MASTER}"), "{yaml}");
    assert!(yaml.contains("${OPENAI_API_KEY:-sk-from-file}"), "{yaml}");
    assert!(yaml.contains("${REDIS_HOST:-localhost}"), "{yaml}");
    assert!(
        !yaml.contains("secret-from-env") && !yaml.contains("sk-master-secret"),
        "{yaml}"
    );
    let native = parse(&yaml, &env).unwrap();
    let direct = parse(text, &env).unwrap();
    assert_eq!(native.upstreams, direct.upstreams);
    assert_eq!(
        native.state.redis.as_ref().unwrap().expose(),
        "redis://localhost:6379/0"
    );
    assert_eq!(native.logging.level, log::LevelFilter::Debug);
    assert!(native.warnings.is_empty());
}

#[test]
fn quick_start_documents() {
    let qs = QuickStart {
        model: "llama".into(),
        api_base: Some("http://127.0.0.1:8000/v1".into()),
        ..Default::default()
    };
    let cfg = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap();
    assert_eq!(cfg.models[0].name, "llama");
    assert_eq!(cfg.models[0].deployments[0].model, "llama");
    assert_eq!(cfg.upstreams[0].provider.as_str(), "openai_compatible");
    assert_eq!(cfg.upstreams[0].url.raw, "http://127.0.0.1:8000/v1");

    let qs = QuickStart {
        model: "ollama/llama3".into(),
        ..Default::default()
    };
    let cfg = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap();
    assert_eq!(cfg.models[0].name, "ollama/llama3");
    assert_eq!(cfg.models[0].aliases, ["llama3"]);
    assert_eq!(cfg.upstreams[0].url.raw, "http://localhost:11434/v1");

    let qs = QuickStart {
        model: "azure/my-deployment".into(),
        api_base: Some("https://x.openai.azure.com".into()),
        api_version: Some("2023-08-01".into()),
        alias: Some("my-gpt-model".into()),
    };
    let cfg = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap();
    assert_eq!(cfg.models[0].name, "my-gpt-model");
    assert_eq!(
        cfg.models[0].aliases,
        ["azure/my-deployment", "my-deployment"]
    );
    assert_eq!(cfg.upstreams[0].api_version.as_deref(), Some("2023-08-01"));

    let qs = QuickStart {
        model: "mystery".into(),
        ..Default::default()
    };
    let e = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--model: cannot tell the provider of `mystery`"),
        "{e}"
    );

    let qs = QuickStart {
        model: "huggingface/bigcode/starcoder".into(),
        ..Default::default()
    };
    let e = crate::config::quick_start(&qs, &no_env(), &Default::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--api_base: required for `huggingface/` models"),
        "{e}"
    );
}
