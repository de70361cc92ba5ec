use super::*;
use serde_json::{json, Value};

fn translate(v: Value) -> Result<Value, TranslateError> {
    chat_to_gemini(v.as_object().unwrap(), false)
}

#[test]
fn chat_request_mapping() {
    let g = translate(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}}
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"deep\":true}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"seen\":\"a cat\"}"},
            {"role": "tool", "tool_call_id": "call_1", "content": "plain"},
            {"role": "user", "content": "and?"}
        ],
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "n": 2,
        "seed": 7,
        "presence_penalty": 0,
        "frequency_penalty": 0.5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "tools": [
            {"type": "function", "function": {"name": "look", "description": "Look", "parameters": {"type": "object", "properties": {"deep": {"type": "boolean"}}}}},
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "user": "u-1",
        "stream_options": {"include_usage": true},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    }))
    .unwrap();
    assert_eq!(
        g["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}, {"text": "No emojis."}]})
    );
    assert_eq!(
        g["contents"],
        json!([
            {"role": "user", "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}}
            ]},
            {"role": "model", "parts": [{"functionCall": {"name": "look", "args": {"deep": true}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "look", "response": {"seen": "a cat"}}},
                {"functionResponse": {"name": "look", "response": {"content": "plain"}}},
                {"text": "and?"}
            ]}
        ])
    );
    assert_eq!(
        g["generationConfig"],
        json!({
            "maxOutputTokens": 50, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"],
            "candidateCount": 2, "seed": 7, "frequencyPenalty": 0.5,
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}}
        })
    );
    assert_eq!(
        g["tools"],
        json!([{"functionDeclarations": [
            {"name": "look", "description": "Look", "parametersJsonSchema": {"type": "object", "properties": {"deep": {"type": "boolean"}}}},
            {"name": "noop"}
        ]}])
    );
    assert_eq!(
        g["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}})
    );
    assert_eq!(g["safetySettings"][0]["threshold"], "BLOCK_NONE");
    let keys: Vec<&String> = g.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
}

#[test]
fn refusals_and_drops() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (k, v) in [
        ("logprobs", json!(true)),
        ("logit_bias", json!({"1": 2})),
        ("parallel_tool_calls", json!(false)),
        ("audio", json!({"voice": "x"})),
        ("functions", json!([])),
    ] {
        let e = translate(with(k, v.clone())).unwrap_err();
        assert_eq!(e.field(), k);
        let dropped = chat_to_gemini(with(k, v).as_object().unwrap(), true).unwrap();
        assert_eq!(dropped["contents"][0]["parts"][0]["text"], "hi");
    }
    let e = translate(with("stop", json!(["a", "b", "c", "d", "e", "f"]))).unwrap_err();
    assert_eq!(e.field(), "stop");
    let e = translate(json!({"messages": [{"role": "system", "content": "only"}]})).unwrap_err();
    assert_eq!(e.field(), "messages");
    let e = translate(json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "nope", "content": "y"}
    ]}))
    .unwrap_err();
    assert_eq!(e.field(), "messages[1].tool_call_id");
    let g = translate(with("reasoning_effort", json!("low"))).unwrap();
    assert_eq!(
        g["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        1024
    );
    let g = translate(with("tool_choice", json!("none"))).unwrap();
    assert!(g.get("toolConfig").is_none(), "no tools, no tool config");
}

#[test]
fn whole_answers() {
    let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"thinking...","thought":true},{"text":"Hello "},{"text":"there"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":4,"thoughtsTokenCount":6,"cachedContentTokenCount":3,"totalTokenCount":20},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
    let (b, u) = to_chat(body, "gem").unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["id"], "chatcmpl-r1");
    assert_eq!(v["model"], "gem");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 6}})
    );
    assert_eq!((u.prompt_tokens, u.completion_tokens), (10, 10));
    // Function calls.
    let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2}}"#;
    let v: Value = serde_json::from_slice(&to_chat(body, "gem").unwrap().0).unwrap();
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["content"], Value::Null);
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    // Safety blocks.
    let body = br#"{"candidates":[{"finishReason":"SAFETY","index":0,"safetyRatings":[]}],"usageMetadata":{"promptTokenCount":5}}"#;
    let v: Value = serde_json::from_slice(&to_chat(body, "gem").unwrap().0).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    let body = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5}}"#;
    let v: Value = serde_json::from_slice(&to_chat(body, "gem").unwrap().0).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    // Neither candidates nor a block: not an answer.
    assert!(to_chat(br#"{"usageMetadata":{"promptTokenCount":5}}"#, "gem").is_none());
    assert!(to_chat(b"not json", "gem").is_none());
    assert_eq!(finish_reason("MAX_TOKENS", false), "length");
    assert_eq!(finish_reason("RECITATION", false), "content_filter");
    assert_eq!(finish_reason("MALFORMED_FUNCTION_CALL", false), "stop");
}

fn events(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| {
            if d == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

const STREAM: &str = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"tok0 \"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1},\"responseId\":\"abc\"}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"tok1 \"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":2,\"cachedContentTokenCount\":4}}\r\n\r\n";

#[test]
fn stream_translation_whatever_the_cuts() {
    for split in [1, 3, 17, 1000] {
        let mut t = StreamTranslator::new("gem", true);
        let mut out = Vec::new();
        for c in STREAM.as_bytes().chunks(split) {
            out.extend_from_slice(&t.feed(c));
        }
        out.extend_from_slice(&t.finish());
        let ev = events(&out);
        assert_eq!(ev.len(), 6, "split {split}: {ev:?}");
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["id"], "chatcmpl-abc");
        assert_eq!(ev[0]["object"], "chat.completion.chunk");
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "tok0 ");
        assert_eq!(ev[2]["choices"][0]["delta"]["content"], "tok1 ");
        assert_eq!(ev[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[4]["choices"], json!([]));
        assert_eq!(ev[4]["usage"]["prompt_tokens"], 9);
        assert_eq!(ev[4]["usage"]["completion_tokens"], 2);
        assert_eq!(ev[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(ev[5], "[DONE]");
        let u = t.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (9, 2));
    }
}

#[test]
fn stream_tool_calls_and_blocks() {
    let mut t = StreamTranslator::new("gem", false);
    let mut out = t
        .feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}]},\"finishReason\":\"STOP\"}]}\r\n\r\n")
        .to_vec();
    out.extend_from_slice(&t.finish());
    let ev = events(&out);
    let call = &ev[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "f");
    assert_eq!(call["function"]["arguments"], "{\"a\":1}");
    assert_eq!(ev[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert!(ev.iter().all(|e| e.get("usage").is_none()));
    // A blocked prompt.
    let mut t = StreamTranslator::new("gem", false);
    let mut out = t
        .feed(b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":3}}\r\n\r\n")
        .to_vec();
    out.extend_from_slice(&t.finish());
    let ev = events(&out);
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

#[test]
fn broken_streams_end_with_an_error_event() {
    let error_end = |out: &[u8]| {
        let ev = events(out);
        assert!(ev[ev.len() - 2]["error"]["message"].is_string(), "{ev:?}");
        assert_eq!(ev.last().unwrap(), "[DONE]");
    };
    // No candidates at all.
    let mut t = StreamTranslator::new("gem", false);
    let mut out = t
        .feed(b"data: {\"usageMetadata\":{\"promptTokenCount\":3}}\r\n\r\n")
        .to_vec();
    out.extend_from_slice(&t.finish());
    error_end(&out);
    // Cut before the finish.
    let mut t = StreamTranslator::new("gem", false);
    let mut out = t.feed(&STREAM.as_bytes()[..150]).to_vec();
    out.extend_from_slice(&t.finish());
    error_end(&out);
    // Malformed data.
    let mut t = StreamTranslator::new("gem", false);
    let out = t.feed(b"data: {nope\r\n\r\n");
    error_end(&out);
    assert!(t.is_done());
    // An event over the limit: the translator stops reading, memory stays bounded.
    let mut t = StreamTranslator::new("gem", false).with_limit(1024);
    let mut out = Vec::new();
    out.extend_from_slice(&t.feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\""));
    for _ in 0..100 {
        out.extend_from_slice(&t.feed(&[b'x'; 100]));
    }
    out.extend_from_slice(&t.finish());
    error_end(&out);
    // An error event from Google.
    let mut t = StreamTranslator::new("gem", false);
    let out = t.feed(b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n");
    let ev = events(&out);
    assert_eq!(ev[0]["error"]["code"], "overloaded");
}

#[test]
fn errors_in_openai_shape() {
    let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}"#;
    let v: Value = serde_json::from_slice(&error_to_openai(429, body)).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(retry_delay(body), Some(Duration::from_secs(7)));
    let body = br#"{"error":{"code":400,"message":"The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
    let v: Value = serde_json::from_slice(&error_to_openai(400, body)).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(GEMINI.is_context_window(400, body));
    let body = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let v: Value = serde_json::from_slice(&error_to_openai(400, body)).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let v: Value =
        serde_json::from_slice(&error_to_openai(502, b"<html>bad gateway</html>")).unwrap();
    assert_eq!(v["error"]["message"], "<html>bad gateway</html>");
    assert_eq!(retry_delay(b"{}"), None);
}

#[test]
fn embeddings() {
    let req = json!({"input": ["a", "b"], "dimensions": 4, "task_type": "RETRIEVAL_QUERY"});
    let req = req.as_object().unwrap();
    let texts = embedding_inputs(req).unwrap();
    let opts = request::embed_options(req).unwrap();
    let (b, batch) = gemini_embed_body(&texts, "text-embedding-004", &opts);
    assert!(batch);
    assert_eq!(b["requests"][1]["model"], "models/text-embedding-004");
    assert_eq!(b["requests"][1]["outputDimensionality"], 4);
    assert_eq!(b["requests"][1]["taskType"], "RETRIEVAL_QUERY");
    let (b, batch) = gemini_embed_body(&texts[..1], "m", &opts);
    assert!(!batch);
    assert_eq!(b["content"]["parts"][0]["text"], "a");
    let p = vertex_predict_body(&texts, &opts);
    assert_eq!(
        p["instances"][0],
        json!({"content": "a", "task_type": "RETRIEVAL_QUERY"})
    );
    assert_eq!(p["parameters"]["outputDimensionality"], 4);
    assert!(embedding_inputs(json!({"input": [[1, 2]]}).as_object().unwrap()).is_err());
    // Answers.
    let (b, u) = to_embeddings(
        br#"{"embeddings":[{"values":[0.5,-1]},{"values":[1,2]}]}"#,
        "m",
        false,
        3,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["data"][1]["embedding"], json!([1, 2]));
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(u.prompt_tokens, 3);
    let (b, _) = to_embeddings(br#"{"embedding":{"values":[0.5,-1]}}"#, "m", true, 1).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        v["data"][0]["embedding"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(raw, [0.5f32.to_le_bytes(), (-1f32).to_le_bytes()].concat());
    let (_, u) = to_embeddings(br#"{"predictions":[{"embeddings":{"statistics":{"token_count":2},"values":[1]}},{"embeddings":{"statistics":{"token_count":5},"values":[2]}}]}"#, "m", false, 1).unwrap();
    assert_eq!(u.prompt_tokens, 7);
}

#[test]
fn method_paths() {
    assert_eq!(
        method_path("/v1beta", "models/gemini-2.5-flash", "generateContent"),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        method_path("", "a/b c", "predict"),
        "/models/a%2Fb%20c:predict"
    );
}
