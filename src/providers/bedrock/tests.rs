//! Unit tests of the Bedrock translation: requests, answers, the event-stream translator fed at
//! every byte offset, faults, errors, embeddings.

use super::*;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use serde_json::{json, Value};

fn converse(body: Value) -> Value {
    chat_to_converse(&body, false).unwrap()
}

fn refused(body: Value) -> TranslateError {
    chat_to_converse(&body, false).unwrap_err()
}

#[test]
fn chat_request_maps_to_converse() {
    let png = "iVBORw0KGgo=";
    let c = converse(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "user", "content": [
                {"type": "text", "text": "And this:"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                {"type": "image_url", "image_url": {"url": "s3://bucket/cat.JPG"}},
                {"type": "text", "text": "   "},
            ]},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome \n"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "max_completion_tokens": 100,
        "max_tokens": 7,
        "temperature": 1.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END", ""],
        "seed": 3,
        "user": "u1",
        "parallel_tool_calls": false,
        "stream_options": {"include_usage": true},
        "caching": false,
    }));
    assert_eq!(
        c["system"],
        json!([{"text": "Be brief."}, {"text": "Use tools."}])
    );
    assert_eq!(
        c["messages"],
        json!([
            {"role": "user", "content": [
                {"text": "Weather?"},
                {"text": "And this:"},
                {"image": {"format": "png", "source": {"bytes": png}}},
                {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/cat.JPG"}}}},
            ]},
            {"role": "assistant", "content": [
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_time", "input": {}}},
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}], "status": "success"}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "noon"}], "status": "success"}},
                {"text": "Thanks"},
            ]},
            {"role": "assistant", "content": [{"text": "You're welcome"}]},
        ])
    );
    assert_eq!(
        c["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 1.0, "topP": 0.9, "stopSequences": ["END"]})
    );
    assert_eq!(c["additionalModelRequestFields"], json!({"top_k": 40}));
    // The declared tool, and the one the history uses without declaring it.
    assert_eq!(
        c["toolConfig"],
        json!({"tools": [
            {"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}},
            {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
        ], "toolChoice": {"any": {}}})
    );
    // Only Converse's fields.
    let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "additionalModelRequestFields",
            "inferenceConfig",
            "messages",
            "system",
            "toolConfig"
        ]
    );
}

#[test]
fn tool_choice_variants() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let with = |choice: Value| {
        converse(
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice}),
        )
    };
    assert_eq!(
        with(json!("auto"))["toolConfig"]["toolChoice"],
        json!({"auto": {}})
    );
    assert_eq!(
        with(json!({"type": "function", "function": {"name": "f"}}))["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
    // `none`: no tools at all, unless the history needs them.
    assert!(with(json!("none")).get("toolConfig").is_none());
    let c = converse(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": ""},
    ], "tools": tools, "tool_choice": "none"}));
    assert!(c["toolConfig"].get("toolChoice").is_none());
    assert_eq!(
        c["messages"][2]["content"][0]["toolResult"]["content"],
        json!([])
    );
    // No tools, no toolConfig.
    assert!(
        converse(json!({"messages": [{"role": "user", "content": "hi"}]}))
            .get("toolConfig")
            .is_none()
    );
}

#[test]
fn unsupported_fields_are_refused_or_dropped() {
    let base = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (extra, field) in [
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"presence_penalty": 0.5}), "presence_penalty"),
        (json!({"reasoning_effort": "high"}), "reasoning_effort"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]}),
            "messages[0].content[1].image_url",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}, {"type": "text", "text": "hear"}]}]}),
            "messages[0].content[0].type",
        ),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
    ] {
        let body = base(extra.clone());
        match refused(body.clone()) {
            TranslateError::Unsupported { field: f, .. } => assert_eq!(f, field, "{extra}"),
            e => panic!("{extra}: {e:?}"),
        }
        // drop_params: dropped instead.
        assert!(chat_to_converse(&body, true).is_ok(), "{extra}");
    }
    // Trivially droppable values pass.
    converse(base(
        json!({"n": 1, "logprobs": false, "response_format": {"type": "text"}, "presence_penalty": 0, "logit_bias": {}}),
    ));
    // Malformed fields are errors either way.
    for bad in [
        json!({"max_tokens": 0}),
        json!({"temperature": "hot"}),
        json!({"stop": 3}),
        json!({"messages": [{"role": "robot", "content": "x"}]}),
        json!({"messages": [{"role": "system", "content": "only a system prompt"}]}),
    ] {
        assert!(
            matches!(
                chat_to_converse(&base(bad.clone()), true),
                Err(TranslateError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    let e = translate_error(&refused(base(json!({"n": 3}))));
    assert!(
        matches!(&e, GatewayError::UnsupportedParameter { param, message } if param == "n" && message.contains("Bedrock") && message.contains("drop_params")),
        "{e:?}"
    );
}

#[test]
fn completions_request() {
    let c = completion_to_converse(
        &json!({"prompt": ["Once upon"], "max_tokens": 5, "temperature": 0.2, "stop": "\n"}),
        false,
    )
    .unwrap();
    assert_eq!(
        c,
        json!({"messages": [{"role": "user", "content": [{"text": "Once upon"}]}],
            "inferenceConfig": {"maxTokens": 5, "temperature": 0.2, "stopSequences": ["\n"]}})
    );
    for bad in [
        json!({"prompt": ["a", "b"]}),
        json!({"prompt": [1, 2]}),
        json!({"prompt": "x", "echo": true}),
        json!({"prompt": "x", "suffix": "y"}),
    ] {
        assert!(
            matches!(
                completion_to_converse(&bad, false),
                Err(TranslateError::Unsupported { .. })
            ),
            "{bad}"
        );
    }
    assert!(completion_to_converse(&json!({"prompt": " "}), true).is_err());
}

#[test]
fn answers_convert_to_openai() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello "},{"reasoningContent":{"reasoningText":{"text":"hm"}}},{"text":"there"},{"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},"stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":4,"totalTokens":134,"cacheReadInputTokens":100,"cacheWriteInputTokens":20},"metrics":{"latencyMs":5}}"#;
    let (b, usage) = converse_to_openai(body, "m", "chatcmpl-r1", Shape::Chat).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["id"], "chatcmpl-r1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m");
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], "Hello there");
    assert_eq!(m["tool_calls"][0]["id"], "tooluse_1");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(
            m["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 130, "completion_tokens": 4, "total_tokens": 134,
            "prompt_tokens_details": {"cached_tokens": 100}})
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (130, 4));
    // No text: content null. Completions shape.
    let body = br#"{"output":{"message":{"role":"assistant","content":[]}},"stopReason":"max_tokens","usage":{"inputTokens":3,"outputTokens":2}}"#;
    let (b, _) = converse_to_openai(body, "m", "x", Shape::Chat).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"once"}]}},"stopReason":"end_turn","usage":{"inputTokens":3,"outputTokens":1}}"#;
    let (b, _) = converse_to_openai(body, "m", "cmpl-x", Shape::Completion).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "once");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(converse_to_openai(b"not json", "m", "x", Shape::Chat).is_none());
    for (r, f) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ] {
        assert_eq!(finish_reason(Some(r)), f);
    }
}

#[test]
fn errors_map_to_openai() {
    let e = |status, body: &[u8]| -> Value {
        serde_json::from_slice(&error_to_openai(status, body)).unwrap()
    };
    let v = e(
        429,
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    );
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        v["error"]["message"],
        "Too many requests, please wait before trying again."
    );
    let v = e(
        400,
        br#"{"message":"Input is too long for requested model."}"#,
    );
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(
        e(400, br#"{"Message":"bad"}"#)["error"]["code"],
        "invalid_request"
    );
    assert_eq!(e(403, b"")["error"]["code"], "permission_denied");
    assert_eq!(e(503, b"oops")["error"]["message"], "oops");
    assert!(Bedrock.is_context_window(
        400,
        br#"{"message":"Input is too long for requested model."}"#
    ));
    assert!(Bedrock.is_context_window(400, br#"{"message":"too many input tokens"}"#));
    assert!(!Bedrock.is_context_window(429, br#"{"message":"Input is too long"}"#));
}

#[test]
fn model_ids_are_one_path_segment() {
    let mut p = String::new();
    push_segment(
        &mut p,
        "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
    );
    assert_eq!(
        p,
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20240620-v1%3A0"
    );
}

// ---------------------------------------------------------------------------------------------
// The event stream
// ---------------------------------------------------------------------------------------------

fn frame(headers: &[(&str, &str)], payload: &str) -> Vec<u8> {
    let headers = headers
        .iter()
        .map(|(k, v)| Header::new(k.to_string(), HeaderValue::String(v.to_string().into())))
        .collect();
    let m = Message::new_from_parts(headers, payload.as_bytes().to_vec());
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
    out
}

fn event(ty: &str, payload: Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", ty),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &payload.to_string(),
    )
}

fn exception(ty: &str, message: &str) -> Vec<u8> {
    frame(
        &[
            (":exception-type", ty),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &json!({ "message": message }).to_string(),
    )
}

/// A text answer and a tool call, as ConverseStream sends them (with Bedrock's `p` padding).
fn text_stream() -> Vec<u8> {
    [
        event("messageStart", json!({"role": "assistant", "p": "abc"})),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": "a"}),
        ),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "lo \"you\""}}),
        ),
        event("contentBlockStop", json!({"contentBlockIndex": 0})),
        event(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "get_weather"}}}),
        ),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}}),
        ),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
        ),
        event("contentBlockStop", json!({"contentBlockIndex": 1})),
        event("messageStop", json!({"stopReason": "tool_use"})),
        event(
            "metadata",
            json!({"usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 19, "cacheReadInputTokens": 5}, "metrics": {"latencyMs": 1}}),
        ),
    ]
    .concat()
}

fn data_events(sse: &str) -> Vec<Value> {
    sse.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let d = e.strip_prefix("data: ").unwrap();
            if d == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

fn translate_in(chunks: &[&[u8]], include_usage: bool) -> (String, Option<Usage>) {
    let mut t = StreamTranslator::new("m", Shape::Chat, include_usage);
    // One `created` for every run, so runs compare byte for byte.
    t.created = 1_700_000_000;
    t.set_id("chatcmpl-r");
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&t.feed(c));
    }
    out.extend_from_slice(&t.finish());
    (String::from_utf8(out).unwrap(), t.usage())
}

#[test]
fn stream_translates_text_and_tools() {
    let s = text_stream();
    let (sse, usage) = translate_in(&[&s], true);
    let evs = data_events(&sse);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(evs[0]["object"], "chat.completion.chunk");
    assert_eq!(evs[0]["id"], "chatcmpl-r");
    assert_eq!(evs[0]["usage"], Value::Null);
    let text: String = evs
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello \"you\"");
    let calls: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "tu_1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let finish: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let u = &evs[evs.len() - 2];
    assert_eq!(u["choices"], json!([]));
    assert_eq!(
        u["usage"],
        json!({"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19, "prompt_tokens_details": {"cached_tokens": 5}})
    );
    assert_eq!(
        usage,
        Some(Usage {
            cached_tokens: 5,
            ..Usage::new(14, 5)
        })
    );
    // Without include_usage: no usage chunk, no usage fields, the usage still known.
    let (sse, usage) = translate_in(&[&s], false);
    assert!(!sse.contains("usage"));
    assert!(usage.is_some());
}

#[test]
fn stream_split_at_every_byte_offset() {
    let s = text_stream();
    let (whole, _) = translate_in(&[&s], true);
    for i in 0..=s.len() {
        let (a, b) = s.split_at(i);
        let (got, _) = translate_in(&[a, b], true);
        assert_eq!(got, whole, "split at {i}");
    }
    // Three pieces around every message boundary and one byte at a time.
    for i in 0..s.len() {
        let j = (i + 7).min(s.len());
        let (got, _) = translate_in(&[&s[..i], &s[i..j], &s[j..]], true);
        assert_eq!(got, whole, "split at {i} and {j}");
    }
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    assert_eq!(translate_in(&bytes, true).0, whole);
}

#[test]
fn completions_stream() {
    let s = [
        event("messageStart", json!({"role": "assistant"})),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "once"}}),
        ),
        event("messageStop", json!({"stopReason": "max_tokens"})),
        event(
            "metadata",
            json!({"usage": {"inputTokens": 2, "outputTokens": 1}}),
        ),
    ]
    .concat();
    let mut t = StreamTranslator::new("m", Shape::Completion, false);
    let mut out = t.feed(&s).to_vec();
    out.extend_from_slice(&t.finish());
    let evs = data_events(std::str::from_utf8(&out).unwrap());
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert_eq!(evs[0]["object"], "text_completion");
    assert_eq!(evs[0]["choices"][0]["text"], "once");
    assert_eq!(evs[1]["choices"][0]["finish_reason"], "length");
    assert_eq!(evs[2], "[DONE]");
}

/// The stream's end: an error event and `[DONE]`, nothing after.
fn ends_with_error(sse: &str, code: &str) -> Value {
    let evs = data_events(sse);
    assert_eq!(evs.last().unwrap(), "[DONE]", "{sse}");
    let err = evs[evs.len() - 2]["error"].clone();
    assert_eq!(err["code"], code, "{sse}");
    assert!(err["message"].is_string());
    assert_eq!(
        evs.iter().filter(|e| e.get("error").is_some()).count(),
        1,
        "{sse}"
    );
    err
}

#[test]
fn stream_faults_end_with_an_error_event() {
    let s = text_stream();
    let first = event("messageStart", json!({"role": "assistant"}));
    let n = first.len();
    // A CRC mismatch in the second message.
    let mut bad = s.clone();
    bad[n + 20] ^= 0xFF;
    let (sse, _) = translate_in(&[&bad], false);
    let err = ends_with_error(&sse, "upstream_error");
    assert!(err["message"].as_str().unwrap().contains("malformed"));
    // A corrupt prelude (its own CRC).
    let mut bad = s.clone();
    bad[n + 5] ^= 0x01;
    ends_with_error(&translate_in(&[&bad], false).0, "upstream_error");
    // Truncated: half a message, then the end.
    let (sse, _) = translate_in(&[&s[..n + 10]], false);
    let err = ends_with_error(&sse, "upstream_error");
    assert!(err["message"].as_str().unwrap().contains("ended"));
    // Ended before messageStop.
    let (sse, _) = translate_in(&[&s[..n]], false);
    ends_with_error(&sse, "upstream_error");
    // An over-long message length fails at once, holding nothing.
    let mut t = StreamTranslator::new("m", Shape::Chat, false);
    let mut huge = (MAX_MESSAGE as u32 + 1).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 8]);
    let out = String::from_utf8(t.feed(&huge).to_vec()).unwrap();
    ends_with_error(&out, "upstream_error");
    assert!(t.is_done());
    assert!(t.feed(&s).is_empty(), "nothing after [DONE]");
    assert!(t.finish().is_empty());
    // Garbage that is too short for a message.
    ends_with_error(
        &translate_in(&[&[0, 0, 0, 3, 1, 2]], false).0,
        "upstream_error",
    );
    // Exceptions, mapped by type.
    for (ty, code) in [
        ("throttlingException", "rate_limit_exceeded"),
        ("modelStreamErrorException", "model_error"),
        ("internalServerException", "upstream_error"),
        ("serviceUnavailableException", "service_unavailable"),
    ] {
        let stream = [first.clone(), exception(ty, "boom")].concat();
        let err = ends_with_error(&translate_in(&[&stream], false).0, code);
        assert_eq!(err["message"], "boom");
    }
    let stream = [
        first.clone(),
        exception(
            "validationException",
            "Input is too long for requested model.",
        ),
    ]
    .concat();
    ends_with_error(
        &translate_in(&[&stream], false).0,
        "context_length_exceeded",
    );
    // A JSON payload that is not JSON.
    let stream = [
        first.clone(),
        frame(
            &[
                (":event-type", "contentBlockDelta"),
                (":message-type", "event"),
            ],
            "{nope",
        ),
    ]
    .concat();
    ends_with_error(&translate_in(&[&stream], false).0, "upstream_error");
    // messageStop without metadata: complete, usage unknown.
    let stream = [
        first,
        event("messageStop", json!({"stopReason": "end_turn"})),
    ]
    .concat();
    let (sse, usage) = translate_in(&[&stream], true);
    let evs = data_events(&sse);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    assert!(evs.iter().all(|e| e.get("error").is_none()));
    assert!(usage.is_none());
}

#[test]
fn stream_memory_is_bounded() {
    // A message that claims the maximum length is held until it is complete, never more.
    let mut t = StreamTranslator::new("m", Shape::Chat, false);
    let mut head = (MAX_MESSAGE as u32).to_be_bytes().to_vec();
    head.extend_from_slice(&[0; 8]);
    assert!(t.feed(&head).is_empty());
    let block = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    for _ in 0..(MAX_MESSAGE / block.len() + 1) {
        out.extend_from_slice(&t.feed(&block));
        if t.is_done() {
            break;
        }
    }
    // Complete at MAX_MESSAGE bytes: its CRCs are wrong, so it is an error, not a hang.
    assert!(t.is_done());
    ends_with_error(std::str::from_utf8(&out).unwrap(), "upstream_error");
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

#[test]
fn embedding_requests() {
    let r = embed::request(
        &json!({"input": "hello", "dimensions": 256, "encoding_format": "base64", "user": "u"}),
        "amazon.titan-embed-text-v2:0",
        false,
    )
    .unwrap();
    assert_eq!(r.family, Family::TitanV2);
    assert!(r.base64);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"inputText": "hello", "dimensions": 256})
    );
    // Titan: one input per request.
    assert!(embed::request(
        &json!({"input": ["a", "b"]}),
        "amazon.titan-embed-text-v2:0",
        true
    )
    .is_err());
    assert!(embed::request(
        &json!({"input": "a", "dimensions": 100}),
        "amazon.titan-embed-text-v2:0",
        true
    )
    .is_err());
    assert!(embed::request(
        &json!({"input": "a", "dimensions": 256}),
        "amazon.titan-embed-text-v1",
        false
    )
    .is_err());
    assert!(embed::request(
        &json!({"input": "a", "dimensions": 256}),
        "amazon.titan-embed-text-v1",
        true
    )
    .is_ok());
    let r = embed::request(
        &json!({"input": ["one", "two"], "input_type": "search_query"}),
        "us.cohere.embed-english-v3",
        false,
    )
    .unwrap();
    assert_eq!(r.family, Family::Cohere);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"texts": ["one", "two"], "input_type": "search_query"})
    );
    let r = embed::request(
        &json!({"input": "x"}),
        "cohere.embed-multilingual-v3",
        false,
    )
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["input_type"],
        "search_document"
    );
    assert!(embed::request(&json!({"input": [[1, 2]]}), "cohere.embed-english-v3", true).is_err());
    assert!(embed::request(&json!({"input": "x"}), "anthropic.claude-3-haiku", true).is_err());
    assert_eq!(
        family("global.amazon.titan-embed-text-v2:0"),
        Some(Family::TitanV2)
    );
    assert_eq!(
        family("amazon.titan-embed-g1-text-02"),
        Some(Family::TitanV1)
    );
}

#[test]
fn embedding_answers() {
    let (b, u) = embed::to_openai(
        br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3}"#,
        Family::TitanV2,
        "m",
        false,
        None,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v,
        json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
            "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    );
    assert_eq!(u.prompt_tokens, 3);
    let (b, u) = embed::to_openai(
        br#"{"embeddings":[[1.0],[0.5,2.0]],"id":"x","response_type":"embeddings_floats","texts":["a","b"]}"#,
        Family::Cohere,
        "m",
        true,
        Some(7),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(u.prompt_tokens, 7);
    assert_eq!(v["data"][1]["index"], 1);
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, [0.5f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
    assert!(embed::to_openai(b"{}", Family::Cohere, "m", false, None).is_none());
}
