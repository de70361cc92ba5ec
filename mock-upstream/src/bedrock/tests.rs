use super::*;
use serde_json::json;

fn ok(body: Value) {
    assert_eq!(validate_converse(&body), Ok(()), "{body}");
}

fn bad(body: Value, needle: &str) {
    let e = validate_converse(&body).unwrap_err();
    assert!(e.contains(needle), "{e:?} does not contain {needle:?}");
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

#[test]
fn routes() {
    let post = Method::POST;
    assert_eq!(
        route(
            &post,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        ),
        Route::Converse("anthropic.claude-3-haiku-20240307-v1:0".to_owned())
    );
    assert_eq!(
        route(
            &post,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse-stream"
        ),
        Route::ConverseStream("arn:aws:bedrock:us-east-1:1:inference-profile/us.x".to_owned())
    );
    assert_eq!(
        route(&post, "/model/amazon.titan-embed-text-v2:0/invoke"),
        Route::Invoke("amazon.titan-embed-text-v2:0".to_owned())
    );
    assert_eq!(route(&post, "/model/x/other"), Route::Unknown);
    assert_eq!(route(&Method::GET, "/model/x/converse"), Route::Unknown);
    assert_eq!(route(&Method::GET, "/foundation-models"), Route::ListModels);
    assert_eq!(
        route(&Method::GET, "/foundation-models/cohere.embed-english-v3"),
        Route::GetModel("cohere.embed-english-v3".to_owned())
    );
    assert!(
        is_path("/model/x/converse") && is_path("/foundation-models") && !is_path("/v1/models")
    );
}

#[test]
fn converse_validation() {
    let base = json!({"messages": [user("hi")]});
    ok(base.clone());
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    bad(with("max_tokens", json!(5)), "extraneous key [max_tokens]");
    bad(json!({}), "Value null at 'messages'");
    bad(json!({"messages": []}), "must start with a user message");
    bad(
        json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
        "must start with a user message",
    );
    bad(
        json!({"messages": [user("a"), user("b")]}),
        "must alternate between user and assistant",
    );
    bad(
        json!({"messages": [{"role": "system", "content": [{"text": "x"}]}]}),
        "enum value set: [user, assistant]",
    );
    bad(
        json!({"messages": [{"role": "user", "content": []}]}),
        "content field in the Message object at messages.0 is empty",
    );
    bad(
        json!({"messages": [{"role": "user", "content": [{"text": "  "}]}]}),
        "at messages.0.content.0 is blank",
    );
    bad(
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}),
        "extraneous key [type]",
    );
    bad(
        json!({"messages": [{"role": "user", "content": [{"text": "x", "image": {}}]}]}),
        "exactly one field",
    );
    bad(
        with("system", json!([{"text": ""}])),
        "SystemContentBlock object at system.0 is blank",
    );
    ok(with(
        "system",
        json!([{"text": "be brief"}, {"cachePoint": {"type": "default"}}]),
    ));
    bad(
        with("inferenceConfig", json!({"temperature": 1.5})),
        "less than or equal to 1",
    );
    bad(
        with("inferenceConfig", json!({"maxTokens": 0})),
        "greater than or equal to 1",
    );
    bad(
        with("inferenceConfig", json!({"max_tokens": 5})),
        "extraneous key [max_tokens]",
    );
    ok(with(
        "inferenceConfig",
        json!({"maxTokens": 5, "temperature": 0.2, "topP": 0.9, "stopSequences": ["\n"]}),
    ));
    // Images: base64 bytes of the declared format.
    let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nrest");
    let img = |format: &str, bytes: &str| {
        json!({"messages": [{"role": "user", "content": [
        {"text": "what is this"}, {"image": {"format": format, "source": {"bytes": bytes}}}]}]})
    };
    ok(img("png", &png));
    bad(img("jpeg", &png), "not a valid jpeg image");
    bad(img("tiff", &png), "enum value set: [png, jpeg, gif, webp]");
    bad(img("png", "***"), "not valid base64");
    // Tools.
    let tools = json!({"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]});
    let turn = json!({"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]});
    let result = |id: &str| json!({"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"json": {"t": 20}}], "status": "success"}}]});
    let convo = |third: Value| json!({"messages": [user("weather?"), turn.clone(), third], "toolConfig": tools.clone()});
    ok(convo(result("t1")));
    bad(
        convo(user("no result")),
        "Expected toolResult blocks at messages.2.content for the following Ids: t1",
    );
    bad(
        convo(
            json!({"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "a"}]}}, {"toolResult": {"toolUseId": "t2", "content": [{"text": "b"}]}}]}),
        ),
        "exceeds the number of toolUse blocks",
    );
    let mut no_config = convo(result("t1"));
    no_config.as_object_mut().unwrap().remove("toolConfig");
    bad(no_config, "toolConfig field must be defined");
    bad(
        with("toolConfig", json!({"tools": []})),
        "length greater than or equal to 1",
    );
    bad(
        with(
            "toolConfig",
            json!({"tools": [{"toolSpec": {"name": "f"}}]}),
        ),
        "inputSchema",
    );
    bad(
        with(
            "toolConfig",
            json!({"tools": tools["tools"], "toolChoice": {"tool": {"name": "nope"}}}),
        ),
        "toolChoice",
    );
    ok(with(
        "toolConfig",
        json!({"tools": tools["tools"], "toolChoice": {"any": {}}}),
    ));
}

#[test]
fn embedding_vectors() {
    let v = vector(0, 256, true);
    let norm: f64 = v.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-9);
    assert_eq!(
        base_model("us.cohere.embed-english-v3"),
        "cohere.embed-english-v3"
    );
    assert_eq!(
        base_model("amazon.titan-embed-text-v2:0"),
        "amazon.titan-embed-text-v2:0"
    );
}
use crate::body::collect;
use crate::eventstream::decode_all;
use crate::server::test_state;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_bytes(v.as_bytes()).unwrap());
    }
    h
}

const HELLO: &str = r#"{"messages":[{"role":"user","content":[{"text":"hello there"}]}]}"#;

#[test]
fn converse_answer_and_usage() {
    let state = test_state(&["--chunks", "3"]);
    let (status, _, body) = collect(converse(
        &state,
        &HeaderMap::new(),
        HELLO.as_bytes(),
        false,
        7,
    ));
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "Hello from mock"
    );
    assert_eq!(v["stopReason"], "end_turn");
    let p = (HELLO.len() / 4) as u64;
    assert_eq!(
        v["usage"],
        json!({"inputTokens": p, "outputTokens": 3, "totalTokens": p + 3})
    );
    assert_eq!(v["metrics"]["latencyMs"], 7);
    // Cached tokens, as cost tests need them.
    let h = headers(&[
        ("x-mock-cache-read-tokens", "100"),
        ("x-mock-cache-write-tokens", "20"),
    ]);
    let (_, _, body) = collect(converse(&state, &h, HELLO.as_bytes(), false, 0));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"]["cacheReadInputTokens"], 100);
    assert_eq!(v["usage"]["cacheWriteInputTokens"], 20);
    assert_eq!(v["usage"]["totalTokens"], p + 3 + 120);
    // maxTokens below the chunks cuts the answer.
    let capped = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":2}}"#;
    let (_, _, body) = collect(converse(
        &state,
        &HeaderMap::new(),
        capped.as_bytes(),
        false,
        0,
    ));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["output"]["message"]["content"][0]["text"], "tok0 tok1 ");
    assert_eq!(v["usage"]["outputTokens"], 2);
    // Validation errors in Bedrock's shape.
    let (status, h, body) = collect(converse(
        &state,
        &HeaderMap::new(),
        br#"{"messages":[]}"#,
        false,
        0,
    ));
    assert_eq!(status, 400);
    assert!(h["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ValidationException:"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("start with a user message"));
}

#[test]
fn converse_tool_call() {
    let state = test_state(&[]);
    let req = r#"{"messages":[{"role":"user","content":[{"text":"weather?"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"get_weather","inputSchema":{"json":{"type":"object","properties":{"city":{"type":"string"}}}}}}]}}"#;
    let h = headers(&[("x-mock-tool-call", "get_weather")]);
    let (_, _, body) = collect(converse(&state, &h, req.as_bytes(), false, 0));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["stopReason"], "tool_use");
    let tu = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(tu["name"], "get_weather");
    assert_eq!(tu["input"], json!({"city": "mock"}));
    assert!(tu["toolUseId"]
        .as_str()
        .unwrap()
        .starts_with("tooluse_mock_"));
    // Streamed: contentBlockStart names the tool; the deltas' input pieces make the JSON.
    let h = headers(&[
        ("x-mock-tool-call", "get_weather"),
        ("x-mock-tool-input", r#"{"city":"Zürich"}"#),
    ]);
    let (_, _, body) = collect(converse(&state, &h, req.as_bytes(), true, 0));
    let msgs = decode_all(&body).unwrap();
    let kinds: Vec<&str> = msgs
        .iter()
        .map(|m| m.header(":event-type").unwrap())
        .collect();
    assert_eq!(kinds[..2], ["messageStart", "contentBlockStart"]);
    assert_eq!(msgs[1].json()["start"]["toolUse"]["name"], "get_weather");
    let input: String = msgs
        .iter()
        .filter(|m| m.header(":event-type") == Some("contentBlockDelta"))
        .map(|m| {
            m.json()["delta"]["toolUse"]["input"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "Zürich"})
    );
    let stop = msgs
        .iter()
        .find(|m| m.header(":event-type") == Some("messageStop"))
        .unwrap();
    assert_eq!(stop.json()["stopReason"], "tool_use");
}

#[test]
fn converse_stream_framing() {
    let state = test_state(&["--chunks", "4"]);
    let (status, h, body) = collect(converse(
        &state,
        &HeaderMap::new(),
        HELLO.as_bytes(),
        true,
        3,
    ));
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "application/vnd.amazon.eventstream");
    let msgs = decode_all(&body).unwrap();
    let kinds: Vec<&str> = msgs
        .iter()
        .map(|m| m.header(":event-type").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    for m in &msgs {
        assert_eq!(m.header(":message-type"), Some("event"));
        assert_eq!(m.header(":content-type"), Some("application/json"));
        assert!(m.json()["p"].is_string(), "padding");
    }
    assert_eq!(msgs[0].json()["role"], "assistant");
    let text: String = msgs[1..5]
        .iter()
        .map(|m| m.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert_eq!(msgs[1].json()["contentBlockIndex"], 0);
    assert_eq!(msgs[6].json()["stopReason"], "end_turn");
    let meta = msgs[7].json();
    assert_eq!(meta["usage"]["outputTokens"], 4);
    assert_eq!(meta["metrics"]["latencyMs"], 3);
    // Drop after 2 deltas: the start and two deltas, then nothing.
    let h = headers(&[("x-mock-drop-after-chunks", "2")]);
    let (_, _, body) = collect(converse(&state, &h, HELLO.as_bytes(), true, 0));
    assert_eq!(decode_all(&body).unwrap().len(), 3);
}

#[test]
fn converse_stream_faults() {
    let state = test_state(&["--chunks", "4"]);
    let run = |pairs: &[(&'static str, &'static str)]| {
        collect(converse(&state, &headers(pairs), HELLO.as_bytes(), true, 0)).2
    };
    // A bad CRC on the second delta (K = 1): the start and the first delta decode, then not.
    let body = run(&[
        ("x-mock-eventstream-fault", "bad-crc"),
        ("x-mock-eventstream-fault-after", "1"),
    ]);
    assert_eq!(decode_all(&body).unwrap_err(), "bad message CRC");
    let first: usize = (0..2).fold(0, |at, _| {
        at + u32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize
    });
    assert_eq!(decode_all(&body[..first]).unwrap().len(), 2);
    // Truncated: a partial message, then the end.
    let body = run(&[("x-mock-eventstream-fault", "truncated")]);
    assert!(decode_all(&body).unwrap_err().starts_with("truncated"));
    // An exception message ends the stream.
    let body = run(&[
        ("x-mock-eventstream-fault", "exception"),
        ("x-mock-eventstream-fault-after", "2"),
        ("x-mock-eventstream-exception", "modelStreamErrorException"),
    ]);
    let msgs = decode_all(&body).unwrap();
    assert_eq!(msgs.len(), 4);
    let last = msgs.last().unwrap();
    assert_eq!(last.header(":message-type"), Some("exception"));
    assert_eq!(
        last.header(":exception-type"),
        Some("modelStreamErrorException")
    );
    assert!(last.json()["message"].is_string());
    let body = run(&[("x-mock-eventstream-fault", "exception")]);
    assert_eq!(
        decode_all(&body)
            .unwrap()
            .last()
            .unwrap()
            .header(":exception-type"),
        Some("throttlingException")
    );
}

#[test]
fn failures_in_bedrock_shapes() {
    let state = test_state(&[]);
    let check = |state: &State, status: u16, typ: &str, needle: &str| {
        let (s, h, body) = collect(failure(state, StatusCode::from_u16(status).unwrap()));
        assert_eq!(s, status);
        assert_eq!(
            h["x-amzn-errortype"].to_str().unwrap(),
            format!("{typ}{ERROR_TYPE_SUFFIX}")
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    };
    check(&state, 429, "ThrottlingException", "Too many requests");
    check(
        &state,
        503,
        "ServiceUnavailableException",
        "unable to process",
    );
    check(&state, 408, "ModelTimeoutException", "timed out");
    check(&state, 500, "InternalServerException", "internal error");
    check(&state, 403, "AccessDeniedException", "access");
    let state = test_state(&["--fail-code", "context_length_exceeded"]);
    check(&state, 400, "ValidationException", INPUT_TOO_LONG);
    let state = test_state(&[
        "--fail-code",
        "ModelNotReadyException",
        "--fail-message",
        "warming up",
    ]);
    check(&state, 429, "ModelNotReadyException", "warming up");
}

#[test]
fn embeddings() {
    let state = test_state(&[]);
    let run = |model: &str, body: &str| {
        let (s, h, b) = collect(invoke(&state, model, body.as_bytes(), 5));
        (s, h, serde_json::from_slice::<Value>(&b).unwrap())
    };
    let (s, h, v) = run(
        "amazon.titan-embed-text-v2:0",
        r#"{"inputText":"hello world","dimensions":256}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(v["inputTextTokenCount"], 2);
    assert_eq!(h["x-amzn-bedrock-input-token-count"], "2");
    let (_, _, v) = run("us.amazon.titan-embed-text-v2:0", r#"{"inputText":"x"}"#);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 1024);
    let (s, _, v) = run(
        "amazon.titan-embed-text-v2:0",
        r#"{"inputText":"x","dimensions":300}"#,
    );
    assert_eq!(s, 400);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("#/dimensions: 300 is not a valid enum value"));
    let (s, _, v) = run("amazon.titan-embed-text-v2:0", r#"{"input":"x"}"#);
    assert_eq!(s, 400);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("extraneous key [input]"));
    let (s, _, v) = run(
        "cohere.embed-english-v3",
        r#"{"texts":["a","b"],"input_type":"search_document"}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "embeddings_floats");
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][1].as_array().unwrap().len(), 1024);
    assert_eq!(v["texts"], json!(["a", "b"]));
    let (_, _, v) = run(
        "cohere.embed-english-v3",
        r#"{"texts":["a"],"input_type":"search_query","embedding_types":["float","int8"]}"#,
    );
    assert_eq!(v["response_type"], "embeddings_by_type");
    assert_eq!(v["embeddings"]["float"].as_array().unwrap().len(), 1);
    let (s, _, v) = run("cohere.embed-english-v3", r#"{"texts":["a"]}"#);
    assert_eq!(s, 400);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("required key [input_type] not found"));
    let (s, _, _) = run("anthropic.claude-v2", r#"{"prompt":"x"}"#);
    assert_eq!(s, 400);
}
