use super::*;
use serde_json::json;

fn llama2() -> PromptTemplate {
    PromptTemplate {
        initial_prompt_value: String::new(),
        system: RoleTemplate {
            pre_message: "[INST] <<SYS>>\n".into(),
            post_message: "\n<</SYS>>\n [/INST]\n".into(),
        },
        user: RoleTemplate {
            pre_message: "[INST] ".into(),
            post_message: " [/INST]".into(),
        },
        assistant: RoleTemplate {
            pre_message: " ".into(),
            post_message: " ".into(),
        },
        final_prompt_value: String::new(),
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
    }
}

#[test]
fn renders_templates() {
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Again"}, {"type": "text", "text": "?"}]}
    ]);
    let m = messages.as_array().unwrap();
    assert_eq!(
        render(&llama2(), m, false).unwrap(),
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n [/INST]\n[INST] Hi [/INST] Hello! </s><s>[INST] Again? [/INST]"
    );
    // ChatML: the eos token already ends the assistant's turn.
    let mut chatml = PromptTemplate::chatml();
    chatml.eos_token = "<|im_end|>".into();
    assert_eq!(
        render(&chatml, m, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAgain?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Images and tool messages are refused, or dropped with drop_params.
    let m = json!([
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "https://a/b.png"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}
    ]);
    let e = render(&chatml, m.as_array().unwrap(), false).unwrap_err();
    assert_eq!(e.field(), "messages[0].content[1].type");
    assert_eq!(
        render(&chatml, m.as_array().unwrap(), true).unwrap(),
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn maps_parameters() {
    let cx = Cx {
        drop_unsupported: false,
    };
    let req = json!({"max_tokens": 20, "temperature": 0.7, "top_p": 1.0, "stop": ["\n", "###"], "seed": 3, "frequency_penalty": 0.2, "presence_penalty": 0, "user": "x", "n": 1});
    let (p, stops) = parameters(req.as_object().unwrap(), &cx).unwrap();
    assert_eq!(
        p,
        json!({"details": true, "max_new_tokens": 20, "temperature": 0.7, "do_sample": true, "seed": 3, "frequency_penalty": 0.2, "stop": ["\n", "###"]})
    );
    assert_eq!(stops, ["\n", "###"]);
    let (p, _) = parameters(json!({"temperature": 0}).as_object().unwrap(), &cx).unwrap();
    assert_eq!(p, json!({"details": true}));
    for (k, v) in [
        ("n", json!(2)),
        ("tools", json!([])),
        ("logprobs", json!(true)),
        ("presence_penalty", json!(0.5)),
    ] {
        let mut req = serde_json::Map::new();
        req.insert(k.into(), v);
        assert_eq!(parameters(&req, &cx).unwrap_err().field(), k);
        assert!(parameters(
            &req,
            &Cx {
                drop_unsupported: true
            }
        )
        .is_ok());
    }
    let many = json!({"stop": ["a", "b", "c", "d", "e"]});
    assert!(parameters(many.as_object().unwrap(), &cx).is_err());
    let (p, _) = parameters(
        json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}})
            .as_object()
            .unwrap(),
        &cx,
    )
    .unwrap();
    assert_eq!(
        p["grammar"],
        json!({"type": "json", "value": {"type": "object"}})
    );
}

fn answer(kind: Kind, stops: &[&str]) -> Generation {
    let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
    Generation {
        kind,
        tx: StreamTranslator::new(kind, "tgi", true, stops.clone(), 5),
        model: "tgi".into(),
        stops,
        prompt_estimate: 5,
        prompt_header: None,
        whole_usage: None,
    }
}

#[test]
fn whole_answers() {
    let mut a = answer(Kind::Chat, &["###"]);
    let mut h = http::HeaderMap::new();
    h.insert("x-prompt-tokens", http::HeaderValue::from_static("11"));
    assert_eq!(a.begin(200, &h), Mode::Whole);
    let b = a
        .whole(br#"{"generated_text":"tok0 tok1 ###","details":{"finish_reason":"stop_sequence","generated_tokens":3,"seed":null,"prefill":[],"tokens":[]}}"#)
        .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14})
    );
    let mut a = answer(Kind::Completion, &[]);
    a.begin(200, &http::HeaderMap::new());
    let b = a
        .whole(br#"[{"generated_text":"abc","details":{"finish_reason":"length","generated_tokens":2}}]"#)
        .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "abc");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert!(a.whole(b"{}").is_none());
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

const STREAM: &str = "data:{\"index\":1,\"token\":{\"id\":1000,\"text\":\"tok0 \",\"logprob\":-0.25,\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"index\":2,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.5,\"special\":true},\"generated_text\":\"tok0 \",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":2,\"seed\":null,\"input_length\":7}}\n\n";

#[test]
fn streams() {
    for split in [1, 5, 1000] {
        let mut a = answer(Kind::Chat, &[]);
        let mut out = Vec::new();
        for c in STREAM.as_bytes().chunks(split) {
            if let Some(b) = a.chunk(Bytes::copy_from_slice(c)) {
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&a.finish().unwrap_or_default());
        let ev = events(&out);
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "tok0 ");
        assert_eq!(ev[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[3]["usage"]["prompt_tokens"], 7);
        assert_eq!(ev[4], "[DONE]");
        assert_eq!(a.usage().unwrap().completion_tokens, 2);
    }
    // Completions chunks.
    let mut a = answer(Kind::Completion, &[]);
    let mut out = a
        .chunk(Bytes::from_static(STREAM.as_bytes()))
        .unwrap()
        .to_vec();
    out.extend_from_slice(&a.finish().unwrap_or_default());
    let ev = events(&out);
    assert_eq!(ev[0]["object"], "text_completion");
    assert_eq!(ev[0]["choices"][0]["text"], "tok0 ");
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
    // An error event, and a stream cut short.
    let mut a = answer(Kind::Chat, &[]);
    let out = a
        .chunk(Bytes::from_static(b"data:{\"error\":\"Request failed during generation: OOM\",\"error_type\":\"generation\"}\n\n"))
        .unwrap();
    let ev = events(&out);
    assert_eq!(ev[0]["error"]["code"], "upstream_error");
    assert_eq!(ev[1], "[DONE]");
    let mut a = answer(Kind::Chat, &[]);
    let mut out = a
        .chunk(Bytes::copy_from_slice(&STREAM.as_bytes()[..120]))
        .unwrap_or_default()
        .to_vec();
    out.extend_from_slice(&a.finish().unwrap_or_default());
    let ev = events(&out);
    assert!(ev[ev.len() - 2]["error"].is_object());
}

#[test]
fn errors() {
    let v: Value = serde_json::from_slice(&error_to_openai(
        422,
        br#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000 `inputs` tokens and 1024 `max_new_tokens`","error_type":"validation"}"#,
    ))
    .unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(TextGeneration.is_context_window(422, br#"{"error":"Input validation error: `inputs` must have less than 10 tokens. Given: 50","error_type":"validation"}"#));
    let v: Value = serde_json::from_slice(&error_to_openai(
        429,
        br#"{"error":"Model is overloaded","error_type":"overloaded"}"#,
    ))
    .unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let v: Value = serde_json::from_slice(&error_to_openai(422, b"Failed to deserialize")).unwrap();
    assert_eq!(v["error"]["message"], "Failed to deserialize");
}

#[test]
fn functions_go_to_the_system_prompt() {
    let mut req = json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tool_choice": "auto"})
    .as_object()
    .unwrap()
    .clone();
    functions_to_prompt(&mut req);
    assert!(req.get("tools").is_none() && req.get("tool_choice").is_none());
    // Appended to the first system message, wherever it is.
    assert_eq!(
        req["messages"][1]["content"],
        format!("Be brief. {FUNCTIONS_PROMPT}\n{{\"name\":\"f\",\"parameters\":{{}}}}\n")
    );
    assert_eq!(req["messages"][0]["content"], "Hi");
    // A system message with parts, or none at all: one is added first.
    let mut req = json!({"messages": [{"role": "user", "content": "Hi"}], "functions": [{"name": "g"}], "function_call": "auto"})
        .as_object()
        .unwrap()
        .clone();
    functions_to_prompt(&mut req);
    assert!(req.get("functions").is_none() && req.get("function_call").is_none());
    assert_eq!(req["messages"][0]["role"], "system");
    assert_eq!(
        req["messages"][0]["content"],
        format!("{FUNCTIONS_PROMPT}\n{{\"name\":\"g\"}}\n")
    );
    // No tools: nothing changes.
    let before = json!({"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "none"});
    let mut req = before.as_object().unwrap().clone();
    functions_to_prompt(&mut req);
    assert_eq!(Value::Object(req), before);
}
