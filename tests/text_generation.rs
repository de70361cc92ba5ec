//! `provider: text_generation` through the real binary, against the mock's TGI server: chat
//! rendered with the upstream's prompt template (the prompt the server received asserted exactly),
//! completions sent as they are, parameters, streams, usage from `details`, errors, Anthropic
//! clients, and `check`.
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
use std::process::Command;

const HC: &str = "{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}";

/// Llama 2's chat format.
const LLAMA2: &str = r#"{initial_prompt_value: "", roles: {system: {pre_message: "[INST] <<SYS>>\n", post_message: "\n<</SYS>>\n [/INST]\n"}, user: {pre_message: "[INST] ", post_message: " [/INST]"}, assistant: {pre_message: " ", post_message: " "}}, final_prompt_value: "", bos_token: "<s>", eos_token: "</s>"}"#;

fn tgi_config(mock: &Mock, template: Option<&str>) -> String {
    let template = template
        .map(|t| format!(", prompt_template: {t}"))
        .unwrap_or_default();
    config(&format!(
        "upstreams:\n  - {{name: t, provider: text_generation, url: \"{}\", auth: {{type: bearer, token: hf-test-token}}, health_check: {HC}{template}}}\nmodels:\n  - {{name: llama, deployments: [{{upstream: t, model: meta-llama/Llama-2-7b-chat-hf}}]}}\n",
        mock.base()
    ))
}

async fn post(
    gw: &Gateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = client().post(gw.url(path)).json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
        .collect()
}

async fn last_generate(mock: &Mock) -> Value {
    mock.requests()
        .await
        .into_iter()
        .rev()
        .find(|r| r["method"] == "POST")
        .unwrap()
}

fn sent_body(rec: &Value) -> Value {
    serde_json::from_str(rec["body_prefix"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn chat_is_rendered_with_the_template() {
    let mock = Mock::start("T");
    let gw = gateway(&tgi_config(&mock, Some(LLAMA2))).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "Again?"}]}
        ], "max_tokens": 100, "temperature": 0.7, "stop": ["###"], "seed": 5}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let rec = last_generate(&mock).await;
    assert_eq!(rec["path"], "/generate");
    assert_eq!(rec["headers"]["authorization"], "Bearer hf-test-token");
    assert_eq!(
        rec["inputs"],
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n [/INST]\n[INST] Hi [/INST] Hello! </s><s>[INST] Again? [/INST]"
    );
    assert_eq!(
        sent_body(&rec)["parameters"],
        json!({"details": true, "max_new_tokens": 100, "temperature": 0.7, "do_sample": true, "seed": 5, "stop": ["###"]})
    );
    // Usage: the server's prompt token count, the generated tokens (5 and the end token).
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 10, "{u}");
    assert_eq!(u["completion_tokens"], 6);
    // max_tokens cuts the answer.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        &[],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // A stop sequence TGI keeps is cut, as OpenAI does.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}], "stop": "###"}),
        &[("x-mock-finish-reason", "stop_sequence")],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streams_and_completions() {
    let mock = Mock::start("T");
    let gw = gateway(&tgi_config(&mock, None)).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}], "stream": true, "stream_options": {"include_usage": true}}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let ev = sse(&r.text().await.unwrap());
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert!(ev
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "stop"));
    let usage = &ev[ev.len() - 2]["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let rec = last_generate(&mock).await;
    assert_eq!(rec["path"], "/generate_stream");
    // No template configured: ChatML.
    assert_eq!(
        rec["inputs"],
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // Completions: the prompt goes straight to `inputs`.
    let r = post(
        &gw,
        "/v1/completions",
        json!({"model": "llama", "prompt": "Once upon a time", "max_tokens": 3}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "tok0 tok1 tok2 ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(last_generate(&mock).await["inputs"], "Once upon a time");
    let r = post(
        &gw,
        "/v1/completions",
        json!({"model": "llama", "prompt": "Once", "stream": true}),
        &[],
    )
    .await;
    let ev = sse(&r.text().await.unwrap());
    let text: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(ev[0]["object"], "text_completion");
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn errors_and_refusals() {
    let mock = Mock::start_with("T", &["--max-input-tokens", "30"]);
    let gw = gateway(&tgi_config(&mock, Some(LLAMA2))).await;
    let chat = json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}]});
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat.clone(),
        &[("x-mock-status", "429")],
    )
    .await;
    assert_openai_error(r, 429, "rate_limit_exceeded").await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat.clone(),
        &[("x-mock-status", "422")],
    )
    .await;
    assert_openai_error(r, 422, "invalid_request").await;
    let long = "many words here ".repeat(20);
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": long}]}),
        &[],
    )
    .await;
    assert_openai_error(r, 422, "context_length_exceeded").await;
    // A failure in the middle of a stream.
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let r = post(
        &gw,
        "/v1/chat/completions",
        stream,
        &[("x-mock-tgi-stream-error", "2")],
    )
    .await;
    let ev = sse(&r.text().await.unwrap());
    let text: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 ");
    assert!(ev[ev.len() - 2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CUDA out of memory"));
    assert_eq!(ev.last().unwrap(), "[DONE]");
    // Tools cannot be expressed.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        &[],
    )
    .await;
    let v = assert_openai_error(r, 400, "unsupported_parameter").await;
    assert_eq!(v["error"]["param"], "tools");
}

#[tokio::test]
async fn anthropic_clients_reach_a_text_generation_server() {
    let mock = Mock::start("T");
    let gw = gateway(&tgi_config(&mock, None)).await;
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(
            &json!({"model": "llama", "max_tokens": 32, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(v["usage"]["output_tokens"], 6);
    assert_eq!(
        last_generate(&mock).await["inputs"],
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

fn check(yaml: &str) -> (bool, String) {
    let path = tmp_path("tgi-check.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(LLMPROXY)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_reports_templates_with_key_paths() {
    let head = "server: {listeners: [{name: main, listen: \"127.0.0.1:4000\"}]}\n";
    let models = "models: [{name: m, deployments: [{upstream: t, model: x}]}]\n";
    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: t, provider: text_generation, url: \"http://127.0.0.1:8080\", prompt_template: {{initial_prompt_value: \"x\", final_prompt_value: \"y\"}}}}\n{models}"
    ));
    assert!(!ok);
    assert!(
        out.contains("upstreams[0].prompt_template.roles: a prompt template needs `roles`"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: t, provider: openai, url: \"http://127.0.0.1:8080\", prompt_template: {LLAMA2}}}\n{models}"
    ));
    assert!(!ok);
    assert!(
        out.contains("upstreams[0].prompt_template: only used by provider `text_generation`"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "{head}upstreams:\n  - {{name: t, provider: text_generation, url: \"http://127.0.0.1:8080\"}}\n{models}"
    ));
    assert!(ok, "{out}");
    assert!(out.contains("rendered as ChatML"), "{out}");
}

/// Seed 002's quick start: `--model huggingface/<id> --api_base <server>`.
#[tokio::test]
async fn quick_start_model_flag() {
    let mock = Mock::start("T");
    let (port, admin) = (free_port(), free_port());
    let (port_s, admin_s, base) = (port.to_string(), format!("127.0.0.1:{admin}"), mock.base());
    let gw = Gateway::spawn(
        &[
            "--model",
            "huggingface/HuggingFaceH4/zephyr-7b-beta",
            "--api_base",
            &base,
            "--host",
            "127.0.0.1",
            "--port",
            &port_s,
            "--admin_listen",
            &admin_s,
        ],
        port,
        admin,
        std::path::PathBuf::new(),
    )
    .await;
    let r = gw.chat("HuggingFaceH4/zephyr-7b-beta").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(
        last_generate(&mock).await["inputs"],
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// `add_function_to_prompt` (LiteLLM's flag): a server without tools gets the request's tools
/// described in the system prompt instead of a 400; without the flag, tools are refused.
#[tokio::test]
async fn add_function_to_prompt_describes_tools_in_the_system_prompt() {
    let mock = Mock::start("T");
    let cfg = tgi_config(&mock, None).replace(
        "deployments: [{upstream: t",
        "add_function_to_prompt: true, deployments: [{upstream: t",
    );
    let gw = gateway(&cfg).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"}
        ], "tools": tools, "tool_choice": "auto"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let rec = last_generate(&mock).await;
    let inputs = rec["inputs"].as_str().unwrap();
    let expected_system = format!(
        "<|im_start|>system\nBe brief. Produce JSON OUTPUT ONLY! Adhere to this format {{\"name\": \"function_name\", \"arguments\":{{\"argument_name\": \"argument_value\"}}}} The following functions are available to you:\n{}\n<|im_end|>",
        tools[0]["function"]
    );
    assert!(inputs.starts_with(&expected_system), "{inputs}");
    assert!(
        inputs.contains("<|im_start|>user\nWeather in Paris?"),
        "{inputs}"
    );
    // No system message: one is added before the others.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}], "functions": [{"name": "f", "parameters": {}}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let inputs = last_generate(&mock).await["inputs"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        inputs.starts_with("<|im_start|>system\nProduce JSON OUTPUT ONLY!")
            && inputs.contains("\n{\"name\":\"f\",\"parameters\":{}}\n"),
        "{inputs}"
    );
    // Without the flag the same request is refused, naming the field.
    let plain = gateway(&tgi_config(&mock, None)).await;
    let r = post(
        &plain,
        "/v1/chat/completions",
        json!({"model": "llama", "messages": [{"role": "user", "content": "Hi"}], "tools": tools}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "tools", "{v}");
}
