//! `provider: bedrock` through the real binary against the mock's Bedrock dialect, which verifies
//! every SigV4 signature: chat (stream and not), tools both ways, images, completions,
//! embeddings (Titan, Cohere), Anthropic clients, errors, throttling, the context-window fallback,
//! broken event streams, the credential chain (environment, shared files + profile, cached and
//! refreshed before expiry through `credential_process`), the health
//! probe, `check` and `--model bedrock/...`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const KEY_ID: &str = "AKIDLLMPROXYTEST01";
const SECRET: &str = "bedrock-secret-key-0123456789abcdef";
const TOKEN: &str = "bedrock-session-token-0123456789";
const REGION: &str = "us-west-2";
const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const HAIKU_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0";
/// A 1x1 PNG's first bytes, base64 (the mock checks the format's magic bytes).
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// A mock that verifies SigV4 for [`KEY_ID`] / [`SECRET`] (and [`TOKEN`] when `token`).
fn signing_mock(name: &str, token: bool, extra: &[&str]) -> Mock {
    let mut args = vec![
        "--aws-access-key-id",
        KEY_ID,
        "--aws-secret-access-key",
        SECRET,
        "--aws-region",
        REGION,
    ];
    if token {
        args.extend(["--aws-session-token", TOKEN]);
    }
    args.extend_from_slice(extra);
    Mock::start_with(name, &args)
}

/// An upstream entry on `mock` with `auth` (the inside of `{type: aws_sigv4, ...}`).
fn upstream_with(name: &str, mock: &Mock, auth: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, provider: bedrock, url: \"{}\", auth: {{type: aws_sigv4, region: {REGION}{auth}}}{extra}}}\n",
        mock.base()
    )
}

/// The upstream with static keys (and the session token when `token`).
fn keyed(name: &str, mock: &Mock, token: bool) -> String {
    let t = if token {
        format!(", session_token: \"{TOKEN}\"")
    } else {
        String::new()
    };
    upstream_with(
        name,
        mock,
        &format!(", access_key_id: {KEY_ID}, secret_access_key: \"{SECRET}\"{t}"),
        "",
    )
}

/// Chat, embedding and fallback models on upstream `br`.
const MODELS: &str = "models:
  - {name: claude, deployments: [{upstream: br, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}]}
  - {name: titan, deployments: [{upstream: br, model: \"amazon.titan-embed-text-v2:0\"}]}
  - {name: cohere, deployments: [{upstream: br, model: \"us.cohere.embed-english-v3\"}]}
";

fn cfg(upstreams: &str, models: &str) -> String {
    config(&format!("upstreams:\n{upstreams}{models}"))
}

async fn post(
    gw: &Gateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(gw.url(path)).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn chat(extra: Value) -> Value {
    let mut b = json!({"model": "claude", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// The recorded requests to `path`, each checked to be signed and verified by the mock.
async fn signed_requests(mock: &Mock, path: &str) -> Vec<Value> {
    let recs = mock.requests_to(path).await;
    for r in &recs {
        assert_eq!(r["auth"]["scheme"], "sigv4", "{r}");
        assert_eq!(r["auth"]["ok"], true, "{r}");
    }
    recs
}

/// The SSE `data:` payloads of a stream body (`[DONE]` as a string).
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())))
        .collect()
}

/// The stream's text (chat deltas or completion texts) and its error event, if any.
fn stream_text(evs: &[Value]) -> (String, Option<Value>) {
    let text = evs
        .iter()
        .filter_map(|e| {
            let c = &e["choices"][0];
            c["delta"]["content"].as_str().or(c["text"].as_str())
        })
        .collect();
    let err = evs.iter().find_map(|e| e.get("error").cloned());
    (text, err)
}

#[tokio::test]
async fn chat_is_signed_and_verified() {
    let mock = signing_mock("bedrock", true, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, true), MODELS)).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 50, "temperature": 0.2, "stop": "END"})),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmproxy-deployment"], "br");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(u["completion_tokens"], 5);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 5
    );

    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse")).await;
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec["model"], HAIKU);
    let h = &rec["headers"];
    let auth = h["authorization"].as_str().unwrap();
    let date = &h["x-amz-date"].as_str().unwrap()[..8];
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/{date}/{REGION}/bedrock/aws4_request, SignedHeaders="
        )),
        "{auth}"
    );
    assert_eq!(h["x-amz-security-token"], TOKEN);
    // The model id's `:` is encoded once on the wire and twice in the signature.
    assert!(rec["auth"]["canonical_request"]
        .as_str()
        .unwrap()
        .starts_with("POST\n/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n"));
    let sent: Value = serde_json::from_str(rec["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"messages": [{"role": "user", "content": [{"text": "Say hi"}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "stopSequences": ["END"]}})
    );

    // Wrong keys: the mock refuses the signature; the client gets Bedrock's 403, OpenAI-shaped.
    let mock2 = signing_mock("bedrock", false, &[]);
    let bad = upstream_with(
        "br",
        &mock2,
        &format!(", access_key_id: {KEY_ID}, secret_access_key: not-the-secret"),
        "",
    );
    let gw2 = gateway(&cfg(&bad, MODELS)).await;
    let r = post(&gw2, "/v1/chat/completions", chat(json!({})), &[]).await;
    let v = assert_openai_error(r, 403, "permission_denied").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{v}"
    );
    let recs = mock2.requests_to(&format!("{HAIKU_PATH}/converse")).await;
    assert_eq!(recs[0]["auth"]["ok"], false);
    assert_eq!(recs[0]["auth"]["error_type"], "InvalidSignatureException");
}

#[tokio::test]
async fn stream_translates_event_stream() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat(json!({"stream": true, "stream_options": {"include_usage": true}})),
        &[("x-mock-chunks", "4")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let evs = events(&r.text().await.unwrap());
    assert_eq!(evs.last().unwrap(), "[DONE]");
    assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
    let (text, err) = stream_text(&evs);
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert!(err.is_none());
    let finish: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = &evs[evs.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse-stream")).await;
    assert_eq!(recs.len(), 1);
    assert!(recs[0]["headers"].get("x-amz-security-token").is_none());
    // Without include_usage the client sees no usage chunk.
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat(json!({"stream": true})),
        &[],
    )
    .await;
    let body = r.text().await.unwrap();
    assert!(!body.contains("\"usage\""), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn tools_round_trip() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!({"model": "claude", "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools, "tool_choice": "auto"});
    let hdrs = [
        ("x-mock-tool-call", "get_weather"),
        ("x-mock-tool-input", "{\"city\":\"Paris\"}"),
    ];
    // The tool call, whole.
    let r = post(&gw, "/v1/chat/completions", ask.clone(), &hdrs).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let id = call["id"].as_str().unwrap().to_string();
    // The tool call, streamed.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = post(&gw, "/v1/chat/completions", streamed, &hdrs).await;
    let evs = events(&r.text().await.unwrap());
    let deltas: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let args: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(evs
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
    // The result goes back: the mock validates toolUse / toolResult pairing and the toolConfig.
    let mut answer = ask.clone();
    answer["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "18C, sunny"},
    ]);
    let r = post(&gw, "/v1/chat/completions", answer, &[]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse")).await;
    let sent: Value =
        serde_json::from_str(recs.last().unwrap()["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"],
        json!({"toolUseId": id, "content": [{"text": "18C, sunny"}], "status": "success"})
    );
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"auto": {}}));
}

#[tokio::test]
async fn images_and_refusals() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    let with_image = |url: &str| {
        json!({"model": "claude", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let r = post(
        &gw,
        "/v1/chat/completions",
        with_image(&format!("data:image/png;base64,{PNG}")),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse")).await;
    let sent: Value = serde_json::from_str(recs[0]["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": PNG}}})
    );
    // Declared as JPEG, bytes of a PNG: Bedrock's ValidationException, as OpenAI's 400.
    let r = post(
        &gw,
        "/v1/chat/completions",
        with_image(&format!("data:image/jpeg;base64,{PNG}")),
        &[],
    )
    .await;
    let v = assert_openai_error(r, 400, "invalid_request").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("jpeg"),
        "{v}"
    );
    // An http URL cannot be sent: refused by the gateway, naming the field; nothing reaches Bedrock.
    mock.reset().await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        with_image("https://example.com/cat.png"),
        &[],
    )
    .await;
    let v = assert_openai_error(r, 400, "unsupported_parameter").await;
    assert_eq!(v["error"]["param"], "messages[0].content[1].image_url");
    let r = post(&gw, "/v1/chat/completions", chat(json!({"n": 2})), &[]).await;
    assert_openai_error(r, 400, "unsupported_parameter").await;
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn completions_and_anthropic_clients() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    let r = post(
        &gw,
        "/v1/completions",
        json!({"model": "claude", "prompt": "Once upon", "max_tokens": 3}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "tok0 tok1 tok2 ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let r = post(
        &gw,
        "/v1/completions",
        json!({"model": "claude", "prompt": "Once upon", "stream": true}),
        &[],
    )
    .await;
    let evs = events(&r.text().await.unwrap());
    assert_eq!(evs[0]["object"], "text_completion");
    assert_eq!(stream_text(&evs).0, "tok0 tok1 tok2 tok3 tok4 ");
    // Anthropic SDK callers on /v1/messages, translated to chat and on to Converse.
    let msg = json!({"model": "claude", "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hi"}]});
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello from mock");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let mut streamed = msg.clone();
    streamed["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains("event: message_start"), "{body}");
    assert!(body.contains("event: message_stop"), "{body}");
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse-stream")).await;
    assert_eq!(recs.len(), 2);
}

#[tokio::test]
async fn embeddings_titan_and_cohere() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    let r = post(&gw, "/v1/embeddings", json!({"model": "titan", "input": "hello world", "dimensions": 256, "encoding_format": "float"}), &[]).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 256);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let recs = signed_requests(&mock, "/model/amazon.titan-embed-text-v2%3A0/invoke").await;
    assert_eq!(
        serde_json::from_str::<Value>(recs[0]["body_prefix"].as_str().unwrap()).unwrap(),
        json!({"inputText": "hello world", "dimensions": 256})
    );
    // Titan embeds one input per request.
    let r = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "titan", "input": ["a", "b"]}),
        &[],
    )
    .await;
    assert_openai_error(r, 400, "unsupported_parameter").await;
    // Cohere: a list, as floats and as base64 (the OpenAI SDKs' default).
    let r = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "cohere", "input": ["one", "two"]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let floats: Vec<f64> = data[1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(floats.len(), 1024);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let r = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "cohere", "input": ["one", "two"], "encoding_format": "base64"}),
        &[],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    assert_eq!(decoded.len(), 1024);
    assert!(decoded
        .iter()
        .zip(&floats)
        .all(|(a, b)| (a - b).abs() < 1e-6));
    let recs = signed_requests(&mock, "/model/us.cohere.embed-english-v3/invoke").await;
    assert_eq!(
        serde_json::from_str::<Value>(recs[0]["body_prefix"].as_str().unwrap()).unwrap(),
        json!({"texts": ["one", "two"], "input_type": "search_document"})
    );
}

#[tokio::test]
async fn errors_throttling_and_context_window() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat(json!({})),
        &[("x-mock-status", "400")],
    )
    .await;
    assert_openai_error(r, 400, "invalid_request").await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat(json!({})),
        &[("x-mock-status", "429")],
    )
    .await;
    let v = assert_openai_error(r, 429, "rate_limit_exceeded").await;
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let metrics = gw.metrics().await;
    assert!(
        metric(
            &metrics,
            "llmproxy_upstream_errors_total",
            &[("error", "rate_limited"), ("upstream", "br")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );

    // Throttled with a Retry-After: that deployment cools for as long, the other answers.
    let hot = signing_mock(
        "hot",
        false,
        &["--fail-status", "429", "--retry-after", "30"],
    );
    let cool = signing_mock("cool", false, &[]);
    let two = format!(
        "{}{}",
        keyed("hot", &hot, false),
        keyed("cool", &cool, false)
    );
    let gw = gateway(&cfg(
        &two,
        "models:
  - name: claude
    strategy: round_robin
    retry: {attempts: 2, backoff: 1ms, on: [429]}
    deployments:
      - {upstream: hot, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}
      - {upstream: cool, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}
",
    ))
    .await;
    for _ in 0..4 {
        let r = post(&gw, "/v1/chat/completions", chat(json!({})), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "cool");
    }
    assert!(
        hot.requests().await.len() <= 1,
        "a cooling deployment got more requests"
    );

    // Input too long (Bedrock's ValidationException): the context-window fallback answers.
    let short = signing_mock("short", false, &["--max-input-tokens", "5"]);
    let long = signing_mock("long", false, &[]);
    let two = format!(
        "{}{}",
        keyed("short", &short, false),
        keyed("long", &long, false)
    );
    let gw = gateway(&cfg(&two, "models:
  - {name: claude, context_window_fallbacks: [claude-long], deployments: [{upstream: short, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}]}
  - {name: claude-long, deployments: [{upstream: long, model: \"anthropic.claude-3-5-sonnet-20240620-v1:0\"}]}
")).await;
    let r = post(&gw, "/v1/chat/completions", chat(json!({})), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "long");
    assert_eq!(short.requests().await.len(), 1);
    // Without a fallback the client sees OpenAI's context_length_exceeded.
    let gw = gateway(&cfg(&keyed("br", &short, false), MODELS)).await;
    let r = post(&gw, "/v1/chat/completions", chat(json!({})), &[]).await;
    assert_openai_error(r, 400, "context_length_exceeded").await;
}

#[tokio::test]
async fn broken_event_streams_end_with_an_error_event() {
    let mock = signing_mock("bedrock", false, &[]);
    let gw = gateway(&cfg(&keyed("br", &mock, false), MODELS)).await;
    for (fault, exception, code) in [
        ("bad-crc", None, "upstream_error"),
        ("truncated", None, "upstream_error"),
        ("exception", None, "rate_limit_exceeded"),
        (
            "exception",
            Some("modelStreamErrorException"),
            "model_error",
        ),
        (
            "exception",
            Some("validationException"),
            "context_length_exceeded",
        ),
    ] {
        let mut hdrs = vec![
            ("x-mock-eventstream-fault", fault),
            ("x-mock-eventstream-fault-after", "2"),
        ];
        if let Some(e) = exception {
            hdrs.push(("x-mock-eventstream-exception", e));
        }
        let r = post(
            &gw,
            "/v1/chat/completions",
            chat(json!({"stream": true})),
            &hdrs,
        )
        .await;
        assert_eq!(r.status(), 200, "{fault}");
        // Read with a deadline: the stream must end, not hang.
        let mut body = Vec::new();
        let mut s = r.bytes_stream();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(c) = s.next().await {
                body.extend_from_slice(&c.unwrap());
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{fault}: the stream did not end"));
        let evs = events(std::str::from_utf8(&body).unwrap());
        assert_eq!(evs.last().unwrap(), "[DONE]", "{fault}");
        let (text, err) = stream_text(&evs);
        assert_eq!(
            text, "tok0 tok1 ",
            "{fault}: what came before the fault is relayed"
        );
        assert_eq!(err.unwrap()["code"], code, "{fault} {exception:?}");
    }
}

/// What the gateway process must not inherit from the machine running the tests: AWS settings,
/// a home directory with `~/.aws`, instance metadata.
fn clean_aws_env(set: &[(&'static str, String)]) -> Vec<(&'static str, Option<String>)> {
    let mut env: Vec<(&str, Option<String>)> = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_REGION_NAME",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .map(|k| (*k, None))
    .collect();
    let home = tmp_path("home");
    std::fs::create_dir_all(&home).unwrap();
    env.push(("HOME", Some(home.display().to_string())));
    env.push(("AWS_EC2_METADATA_DISABLED", Some("true".into())));
    for (k, v) in set {
        env.push((k, Some(v.clone())));
    }
    env
}

fn env_refs<'a>(env: &'a [(&'static str, Option<String>)]) -> Vec<(&'a str, Option<&'a str>)> {
    env.iter().map(|(k, v)| (*k, v.as_deref())).collect()
}

#[tokio::test]
async fn credential_chain_from_the_environment() {
    let mock = signing_mock("bedrock", true, &[]);
    // No keys in the config: the standard chain finds them in the gateway's environment.
    let env = clean_aws_env(&[
        ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ("AWS_SESSION_TOKEN", TOKEN.into()),
    ]);
    let (gw, log) = gateway_with_env_log(
        &cfg(&upstream_with("br", &mock, "", ""), MODELS),
        &["--debug"],
        &env_refs(&env),
    )
    .await;
    for stream in [false, true] {
        let r = post(
            &gw,
            "/v1/chat/completions",
            chat(json!({"stream": stream})),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("Hello") || stream);
    }
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse")).await;
    assert_eq!(recs[0]["headers"]["x-amz-security-token"], TOKEN);
    assert_eq!(
        signed_requests(&mock, &format!("{HAIKU_PATH}/converse-stream"))
            .await
            .len(),
        1
    );
    // The debug log shows the upstream requests, never the credentials the chain loaded.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("/converse"), "{text}");
    assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn credential_chain_from_shared_files_and_profile() {
    let mock = signing_mock("bedrock", true, &[]);
    let dir = tmp_path("aws");
    std::fs::create_dir_all(&dir).unwrap();
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = AKIDWRONGDEFAULT\naws_secret_access_key = wrong\n\n[llmproxy-test]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\naws_session_token = {TOKEN}\n"),
    )
    .unwrap();
    let config_file = dir.join("config");
    std::fs::write(
        &config_file,
        "[profile llmproxy-test]\nregion = us-west-2\n",
    )
    .unwrap();
    let env = clean_aws_env(&[
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials.display().to_string(),
        ),
        ("AWS_CONFIG_FILE", config_file.display().to_string()),
    ]);
    let up = upstream_with("br", &mock, ", profile: llmproxy-test", "");
    let (gw, _log) = gateway_with_env_log(&cfg(&up, MODELS), &[], &env_refs(&env)).await;
    let r = post(&gw, "/v1/chat/completions", chat(json!({})), &[]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse")).await;
    assert_eq!(recs[0]["auth"]["access_key_id"], KEY_ID);

    // No credentials anywhere: a clear 502, not a hang.
    let env = clean_aws_env(&[]);
    let (gw, _log) = gateway_with_env_log(
        &cfg(&upstream_with("br", &mock, "", ""), MODELS),
        &[],
        &env_refs(&env),
    )
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        chat(json!({"num_retries": 0})),
        &[],
    )
    .await;
    let v = assert_openai_error(r, 502, "upstream_error").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials"),
        "{v}"
    );
}

/// Credentials from the chain are cached (one `credential_process` run for many requests) and
/// fetched again when less than five minutes of their lifetime are left.
#[tokio::test]
async fn credential_chain_caches_and_refreshes_before_expiry() {
    let mock = signing_mock("bedrock", true, &[]);
    for (lifetime, requests, runs) in [("+1 hour", 4, 1), ("+2 minutes", 3, 3)] {
        let dir = tmp_path("aws");
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("runs");
        let script = dir.join("creds.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> '{}'\nprintf '{{\"Version\":1,\"AccessKeyId\":\"{KEY_ID}\",\"SecretAccessKey\":\"{SECRET}\",\"SessionToken\":\"{TOKEN}\",\"Expiration\":\"%s\"}}' \"$(date -u -d '{lifetime}' +%Y-%m-%dT%H:%M:%SZ)\"\n",
                count.display()
            ),
        )
        .unwrap();
        let config_file = dir.join("config");
        std::fs::write(
            &config_file,
            format!(
                "[profile proc]\ncredential_process = sh {}\n",
                script.display()
            ),
        )
        .unwrap();
        let env = clean_aws_env(&[
            ("AWS_CONFIG_FILE", config_file.display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("none").display().to_string(),
            ),
        ]);
        let up = upstream_with("br", &mock, ", profile: proc", "");
        let (gw, _log) = gateway_with_env_log(&cfg(&up, MODELS), &[], &env_refs(&env)).await;
        for _ in 0..requests {
            let r = post(&gw, "/v1/chat/completions", chat(json!({})), &[]).await;
            assert_eq!(r.status(), 200, "{lifetime}: {}", r.text().await.unwrap());
        }
        let ran = std::fs::read_to_string(&count).unwrap().lines().count();
        assert_eq!(ran, runs, "{lifetime}: credential_process ran {ran} times");
    }
    let recs = signed_requests(&mock, &format!("{HAIKU_PATH}/converse")).await;
    assert_eq!(recs.len(), 7);
    assert!(recs
        .iter()
        .all(|r| r["headers"]["x-amz-security-token"] == TOKEN));
}

#[tokio::test]
async fn health_probe_is_signed_and_spends_no_tokens() {
    let mock = signing_mock("bedrock", false, &[]);
    let hc = ", health_check: {interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}";
    let keys = format!(", access_key_id: {KEY_ID}, secret_access_key: \"{SECRET}\"");
    let wrong = signing_mock("wrong", false, &[]);
    let ups = format!(
        "{}{}",
        upstream_with("br", &mock, &keys, hc),
        upstream_with(
            "bad",
            &wrong,
            &format!(", access_key_id: {KEY_ID}, secret_access_key: nope"),
            hc
        )
    );
    let gw = gateway(&cfg(
        &ups,
        "models:
  - {name: claude, deployments: [{upstream: br, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}]}
  - {name: other, deployments: [{upstream: bad, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}]}
",
    ))
    .await;
    gw.wait_upstreams(Duration::from_secs(10), |v| {
        v["healthy_endpoints"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["upstream"] == "br"))
            && v["unhealthy_endpoints"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["upstream"] == "bad"))
    })
    .await;
    let probes = signed_requests(&mock, "/async-invoke").await;
    assert!(!probes.is_empty());
    assert_eq!(probes[0]["method"], "GET");
    assert_eq!(probes[0]["query"], "maxResults=1");
    assert!(
        mock.requests()
            .await
            .iter()
            .all(|r| r["path"] == "/async-invoke"),
        "probes only"
    );
    let r = post(&gw, "/v1/chat/completions", chat(json!({})), &[]).await;
    assert_eq!(r.status(), 200);
}

fn check(yaml: &str, env: &[(&'static str, String)]) -> (bool, String) {
    let path = tmp_path("check.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = std::process::Command::new(LLMPROXY);
    cmd.args(["check", "-c", path.to_str().unwrap()]);
    for (k, v) in clean_aws_env(env) {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn check_reports_bedrock_settings_with_key_paths() {
    // The example config passes with no AWS variables set.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/bedrock.yaml")).unwrap();
    let (ok, out) = check(&example, &[]);
    assert!(ok, "{out}");
    let head = "server: {listeners: [{name: m, listen: \"127.0.0.1:1\"}]}\nmodels: [{name: c, deployments: [{upstream: b, model: x}]}]\nupstreams:\n";
    for (upstream, needle) in [
        ("  - {name: b, provider: bedrock, auth: {type: aws_sigv4}}", "upstreams[0].auth.region: required key is missing"),
        ("  - {name: b, provider: bedrock, auth: {type: aws_sigv4, region: \"${NOPE_REGION:-}\"}}", "upstreams[0].auth.region: the region is empty"),
        ("  - {name: b, provider: bedrock, auth: {type: aws_sigv4, region: us-east-1, access_key_id: AKID}}", "upstreams[0].auth.secret_access_key: access_key_id and secret_access_key go together"),
        ("  - {name: b, provider: bedrock, auth: {type: aws_sigv4, region: us-east-1, session_token: t}}", "upstreams[0].auth.session_token: a session token goes with"),
        ("  - {name: b, provider: bedrock, auth: {type: header, name: x-api-key, value: k}}", "upstreams[0].auth.type: provider `bedrock` signs its requests"),
        ("  - {name: b, provider: bedrock}", "upstreams[0].auth: required for provider `bedrock`"),
        ("  - {name: b, provider: bedrock, auth: {type: bearer, token: k}}", "upstreams[0].url: required for provider `bedrock`"),
        ("  - {name: b, provider: openai, url: \"http://x\", auth: {type: aws_sigv4, region: us-east-1}}", "upstreams[0].auth.type: `aws_sigv4` signs requests for provider `bedrock` only"),
        ("  - {name: b, provider: bedrock, auth: {type: aws_sigv4, region: us-east-1}}\nroutes: [{prefix: /aws, upstream: b}]", "routes[0].upstream: upstream `b` signs every request with aws_sigv4"),
    ] {
        let (ok, out) = check(&format!("{head}{upstream}\n"), &[]);
        assert!(!ok, "{upstream}: {out}");
        assert!(out.contains(needle), "{upstream}: missing `{needle}` in\n{out}");
    }
    // The derived URL, and no error with the region from the environment.
    let (ok, out) = check(
        &format!("{head}  - {{name: b, provider: bedrock, auth: {{type: aws_sigv4, region: \"${{AWS_REGION}}\"}}}}\n"),
        &[("AWS_REGION", "eu-central-1".into())],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("bedrock-runtime.eu-central-1.amazonaws.com"),
        "{out}"
    );
}

/// Seed 002's quick start: `--model bedrock/<id>`, credentials and region from the environment.
#[tokio::test]
async fn quick_start_model_flag() {
    let mock = signing_mock("bedrock", false, &[]);
    let port = free_port();
    let admin = free_port();
    let (port_s, admin_s, base) = (port.to_string(), format!("127.0.0.1:{admin}"), mock.base());
    let model = format!("bedrock/{HAIKU}");
    let env = clean_aws_env(&[
        ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ("AWS_REGION_NAME", REGION.into()),
    ]);
    let (gw, _log) = Gateway::spawn_with_env_log(
        &[
            "--model",
            &model,
            "--api_base",
            &base,
            "--port",
            &port_s,
            "--host",
            "127.0.0.1",
            "--admin_listen",
            &admin_s,
        ],
        port,
        admin,
        std::path::PathBuf::new(),
        &env_refs(&env),
    )
    .await;
    for name in [model.as_str(), HAIKU] {
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": name, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{name}");
    }
    assert_eq!(
        signed_requests(&mock, &format!("{HAIKU_PATH}/converse"))
            .await
            .len(),
        2
    );
}
