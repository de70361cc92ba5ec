use super::*;
use serde_json::{json, Value};

fn tr(body: Value) -> Value {
    chat_to_messages(&body, "claude-x", DEFAULT_MAX_TOKENS).unwrap()
}

fn tr_err(body: Value) -> TranslateError {
    chat_to_messages(&body, "claude-x", DEFAULT_MAX_TOKENS).unwrap_err()
}

#[test]
fn minimal_request_gets_default_max_tokens_and_model() {
    let out = tr(json!({"model": "alias", "messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        })
    );
}

#[test]
fn max_tokens_sources() {
    let m = json!([{"role": "user", "content": "Hi"}]);
    let out = tr(json!({"messages": m, "max_tokens": 10}));
    assert_eq!(out["max_tokens"], 10);
    let out = tr(json!({"messages": m, "max_tokens": 10, "max_completion_tokens": 20}));
    assert_eq!(out["max_tokens"], 20);
    let out = chat_to_messages(&json!({"messages": m}), "c", 123).unwrap();
    assert_eq!(out["max_tokens"], 123);
    assert_eq!(
        tr_err(json!({"messages": m, "max_tokens": 0})).field(),
        "max_tokens"
    );
    assert_eq!(
        tr_err(json!({"messages": m, "max_completion_tokens": "9"})).field(),
        "max_completion_tokens"
    );
}

#[test]
fn system_messages_all_in_order_and_consecutive_roles_merged() {
    let out = tr(json!({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Are you there?"}]},
        {"role": "system", "content": "Late instruction."},
        {"role": "assistant", "content": "Oui."},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": "Merci"},
    ]}));
    assert_eq!(
        out["system"],
        json!([
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in French."},
            {"type": "text", "text": "Late instruction."},
        ])
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": "Are you there?"},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Oui."},
                {"type": "text", "text": "Bonjour."},
            ]},
            {"role": "user", "content": [{"type": "text", "text": "Merci"}]},
        ])
    );
}

#[test]
fn only_system_messages_is_an_error() {
    let e = tr_err(json!({"messages": [{"role": "system", "content": "x"}]}));
    assert_eq!(e.field(), "messages");
    assert!(matches!(e, TranslateError::Invalid { .. }));
}

#[test]
fn final_assistant_prefill_is_trimmed() {
    let out = tr(json!({"messages": [
        {"role": "user", "content": "Say a JSON object"},
        {"role": "assistant", "content": "{  \n"},
    ]}));
    assert_eq!(
        out["messages"][1],
        json!({"role": "assistant", "content": [{"type": "text", "text": "{"}]})
    );
}

#[test]
fn images_base64_and_url() {
    let out = tr(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in these images?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
        ])
    );
    let e = tr_err(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
    ]}]}));
    assert_eq!(e.field(), "messages[0].content[0].image_url");
    assert!(matches!(e, TranslateError::Unsupported { .. }));
    let e = tr_err(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
    ]}]}));
    assert!(matches!(e, TranslateError::Invalid { .. }));
    let e = tr_err(json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
    ]}]}));
    assert_eq!(e.field(), "messages[0].content[0].type");
}

#[test]
fn tools_tool_calls_and_results() {
    let out = tr(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and London?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"London\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12C"}]},
            {"role": "user", "content": "Thanks, which is warmer?"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}, {"type": "function", "function": {"name": "noop"}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        out["tools"],
        json!([
            {"name": "get_weather", "description": "Current weather",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and London?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "London"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "12C"},
                {"type": "text", "text": "Thanks, which is warmer?"},
            ]},
        ])
    );
}

#[test]
fn tool_choice_variants() {
    let base = |c: Value| {
        tr(json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": c,
        }))["tool_choice"]
            .clone()
    };
    assert_eq!(base(json!("auto")), json!({"type": "auto"}));
    assert_eq!(base(json!("none")), json!({"type": "none"}));
    assert_eq!(base(json!("required")), json!({"type": "any"}));
    assert_eq!(
        base(json!({"type": "function", "function": {"name": "f"}})),
        json!({"type": "tool", "name": "f"})
    );
    // No tools: tool_choice is not sent.
    let out = tr(json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}));
    assert!(out.get("tool_choice").is_none());
}

#[test]
fn bad_tool_arguments_name_the_field() {
    let e = tr_err(json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
    ]}));
    assert_eq!(e.field(), "messages[1].tool_calls[0].function.arguments");
}

#[test]
fn sampling_stop_stream_user() {
    let out = tr(json!({
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 1.6, "top_p": 0.9, "stop": "END", "stream": true,
        "stream_options": {"include_usage": true}, "user": "user-42",
        "n": 1, "seed": 7, "presence_penalty": 0, "logprobs": false, "response_format": {"type": "text"},
        "some_future_field": 1, "store": false,
    }));
    assert_eq!(out["temperature"], json!(1.0));
    assert_eq!(out["top_p"], json!(0.9));
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["stream"], json!(true));
    assert_eq!(out["metadata"], json!({"user_id": "user-42"}));
    for dropped in [
        "n",
        "seed",
        "stream_options",
        "user",
        "some_future_field",
        "store",
        "stop",
    ] {
        assert!(out.get(dropped).is_none(), "{dropped}");
    }
    let out = tr(
        json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"], "temperature": 0.3}),
    );
    assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    assert_eq!(out["temperature"], json!(0.3));
}

#[test]
fn unsupported_fields_are_named_or_dropped() {
    let m = json!([{"role": "user", "content": "x"}]);
    for (field, v) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {}}),
        ),
        ("frequency_penalty", json!(0.5)),
        ("logit_bias", json!({"50256": -100})),
        ("functions", json!([])),
        ("audio", json!({"voice": "alloy"})),
    ] {
        let mut body = json!({"messages": m});
        body[field] = v;
        let e = tr_err(body.clone());
        assert_eq!(e.field(), field);
        assert!(matches!(e, TranslateError::Unsupported { .. }));
        let err_json: Value = serde_json::from_slice(&e.to_openai_json()).unwrap();
        assert_eq!(err_json["error"]["param"], field);
        assert_eq!(err_json["error"]["code"], "unsupported_parameter");
        // drop_params
        let out = chat_to_messages_with(&body, "c", 5, true).unwrap();
        assert!(out.get(field).is_none());
    }
}

#[test]
fn response_text() {
    // The Messages API reference example.
    let resp = json!({
        "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "model": "claude-sonnet-4-5",
        "role": "assistant",
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "type": "message",
        "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
    });
    let out = messages_to_chat(&resp, "my-alias");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["id"], "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(out["model"], "my-alias");
    assert!(out["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        out["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null})
    );
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 2200, "completion_tokens": 503, "total_tokens": 2703,
               "prompt_tokens_details": {"cached_tokens": 100}})
    );
}

#[test]
fn response_tool_use_and_finish_reasons() {
    let resp = json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-1",
        "content": [
            {"type": "text", "text": "I'll check the weather. "},
            {"type": "thinking", "thinking": "...", "signature": "x"},
            {"type": "text", "text": "One moment."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 20}
    });
    let out = messages_to_chat(&resp, "a");
    let msg = &out["choices"][0]["message"];
    assert_eq!(msg["content"], "I'll check the weather. One moment.");
    assert_eq!(msg["tool_calls"][0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(msg["tool_calls"][0]["type"], "function");
    assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        msg["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["usage"]["total_tokens"], 30);

    let only_tool = json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"});
    assert_eq!(
        messages_to_chat(&only_tool, "a")["choices"][0]["message"]["content"],
        Value::Null
    );
    for (stop, fin) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(finish_reason(Some(stop)), fin);
    }
}

#[test]
fn errors_map_type_and_code() {
    let cases = [
        (
            400,
            "invalid_request_error",
            "max_tokens: Field required",
            "invalid_request_error",
            "invalid_request",
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            "authentication_error",
            "invalid_api_key",
        ),
        (
            403,
            "permission_error",
            "no",
            "permission_error",
            "permission_denied",
        ),
        (
            404,
            "not_found_error",
            "model: claude-9",
            "invalid_request_error",
            "not_found",
        ),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (
            500,
            "api_error",
            "Internal server error",
            "server_error",
            "upstream_error",
        ),
        (
            529,
            "overloaded_error",
            "Overloaded",
            "server_error",
            "overloaded",
        ),
    ];
    for (status, at, msg, ot, code) in cases {
        let body =
            json!({"type": "error", "error": {"type": at, "message": msg}, "request_id": "req_1"});
        let out: Value =
            serde_json::from_slice(&error_to_openai(status, body.to_string().as_bytes())).unwrap();
        assert_eq!(
            out,
            json!({"error": {"message": msg, "type": ot, "param": null, "code": code}}),
            "{at}"
        );
    }
    let out: Value =
        serde_json::from_slice(&error_to_openai(502, b"<html>bad gateway</html>")).unwrap();
    assert_eq!(out["error"]["message"], "<html>bad gateway</html>");
    assert_eq!(out["error"]["code"], "upstream_error");
    let out: Value = serde_json::from_slice(&error_to_openai(429, b"")).unwrap();
    assert_eq!(out["error"]["code"], "rate_limit_exceeded");
}

// ---- streaming ----

/// The text streaming example of Anthropic's streaming documentation.
const TEXT_STREAM: &str = "event: message_start
data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-opus-4-6\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}

event: content_block_start
data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}

event: content_block_delta
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"! \\\"caf\\u00e9\\\" \u{1F600}\\n\"}}

event: content_block_stop
data: {\"type\": \"content_block_stop\", \"index\": 0}

event: message_delta
data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}

event: message_stop
data: {\"type\": \"message_stop\"}

";

/// A streamed tool use in the shape of Anthropic's documentation example.
const TOOL_STREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-6\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_read_input_tokens\":8},\"content\":[],\"stop_reason\":null}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", let's check the weather for San Francisco, CA:\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Fra\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ncisco, CA\\\", \\\"unit\\\": \\\"fahrenheit\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":2}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

/// The `data:` payloads of an OpenAI SSE output.
fn events(out: &[u8]) -> Vec<String> {
    let s = std::str::from_utf8(out).unwrap();
    assert!(
        s.is_empty() || s.ends_with("\n\n"),
        "incomplete event in {s:?}"
    );
    s.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

fn run(input: &[u8], include_usage: bool, split: usize) -> (Vec<String>, StreamTranslator) {
    let mut t = StreamTranslator::new("alias", include_usage);
    let mut out = Vec::new();
    for c in input.chunks(split) {
        let b = t.feed(c);
        // Every output is whole events.
        events(&b);
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(&t.finish());
    (events(&out).iter().map(|e| same_clock(e)).collect(), t)
}

/// The event with its `created` second set to 0: two runs compared event by event may straddle a
/// second of the clock.
fn same_clock(event: &str) -> String {
    const KEY: &str = "\"created\":";
    let Some(at) = event.find(KEY).map(|i| i + KEY.len()) else {
        return event.to_owned();
    };
    let digits = event[at..].bytes().take_while(u8::is_ascii_digit).count();
    format!("{}0{}", &event[..at], &event[at + digits..])
}

struct Collected {
    content: String,
    tools: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
    errors: Vec<Value>,
    done: usize,
}

fn collect(evs: &[String]) -> Collected {
    let mut c = Collected {
        content: String::new(),
        tools: Vec::new(),
        finish: None,
        usage: None,
        errors: Vec::new(),
        done: 0,
    };
    for (i, e) in evs.iter().enumerate() {
        if e == "[DONE]" {
            assert_eq!(i, evs.len() - 1, "[DONE] is last");
            c.done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(err) = v.get("error") {
            c.errors.push(err.clone());
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], "alias");
        if i == 0 {
            assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            assert_eq!(v["choices"], json!([]));
            c.usage = Some(u.clone());
        }
        let Some(ch) = v["choices"].get(0) else {
            continue;
        };
        if let Some(t) = ch["delta"]["content"].as_str() {
            c.content.push_str(t);
        }
        if let Some(calls) = ch["delta"]["tool_calls"].as_array() {
            for call in calls {
                let idx = call["index"].as_u64().unwrap() as usize;
                if let Some(id) = call["id"].as_str() {
                    assert_eq!(idx, c.tools.len());
                    c.tools.push((
                        id.to_owned(),
                        call["function"]["name"].as_str().unwrap().to_owned(),
                        String::new(),
                    ));
                }
                c.tools[idx].2 += call["function"]["arguments"].as_str().unwrap_or("");
            }
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            c.finish = Some(f.to_owned());
        }
    }
    c
}

#[test]
fn text_stream_at_every_split() {
    let input = TEXT_STREAM.as_bytes();
    let (whole, _) = run(input, true, input.len());
    for split in [1, 2, 3, 5, 7, 13, 64, 4096] {
        let (evs, t) = run(input, true, split);
        assert_eq!(evs, whole, "split {split}");
        let c = collect(&evs);
        assert_eq!(c.content, "Hello! \"café\" \u{1F600}\n");
        assert_eq!(c.finish.as_deref(), Some("stop"));
        assert_eq!(c.done, 1);
        assert!(c.errors.is_empty());
        assert_eq!(
            c.usage,
            Some(
                json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                        "prompt_tokens_details": {"cached_tokens": 0}})
            )
        );
        assert_eq!(t.usage(), Some(Usage::new(25, 15)));
        assert!(t.is_done());
    }
    // The id is the message's; every chunk but the usage one carries usage:null.
    let first: Value = serde_json::from_str(&whole[0]).unwrap();
    assert_eq!(first["id"], "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
    assert_eq!(first["usage"], Value::Null);
    assert!(whole[0].contains("\"usage\":null"));
}

#[test]
fn text_stream_without_usage_and_crlf() {
    let input = TEXT_STREAM.replace('\n', "\r\n");
    let (evs, t) = run(input.as_bytes(), false, 9);
    let c = collect(&evs);
    assert_eq!(c.content, "Hello! \"café\" \u{1F600}\n");
    assert_eq!(c.usage, None);
    assert!(!evs.iter().any(|e| e.contains("usage")));
    // role, 2 content, finish, DONE
    assert_eq!(evs.len(), 5);
    assert_eq!(t.usage().map(|u| u.completion_tokens), Some(15));
}

#[test]
fn tool_use_stream() {
    for split in [1, 11, 100_000] {
        let (evs, t) = run(TOOL_STREAM.as_bytes(), true, split);
        let c = collect(&evs);
        assert_eq!(
            c.content,
            "Okay, let's check the weather for San Francisco, CA:"
        );
        assert_eq!(c.tools.len(), 2);
        assert_eq!(c.tools[0].0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(c.tools[0].1, "get_weather");
        let args: Value = serde_json::from_str(&c.tools[0].2).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );
        assert_eq!(
            c.tools[1],
            ("toolu_02".into(), "get_time".into(), "{}".into())
        );
        assert_eq!(c.finish.as_deref(), Some("tool_calls"));
        assert_eq!(c.usage.as_ref().unwrap()["prompt_tokens"], 480);
        assert_eq!(c.usage.as_ref().unwrap()["completion_tokens"], 89);
        assert_eq!(
            t.usage(),
            Some(Usage {
                cached_tokens: 8,
                ..Usage::new(480, 89)
            })
        );
    }
    // The tool start chunk has OpenAI's shape.
    let (evs, _) = run(TOOL_STREAM.as_bytes(), false, 1_000_000);
    let start: Value = serde_json::from_str(
        evs.iter()
            .find(|e| e.contains("toolu_01T1x1fJ34qAmk2tNTrN7Up6"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        start["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]})
    );
}

#[test]
fn error_event_mid_stream() {
    let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ignored\"}}\n\n";
    let (evs, t) = run(input.as_bytes(), true, 10);
    let c = collect(&evs);
    assert_eq!(c.content, "Hi");
    assert_eq!(
        c.errors,
        vec![
            json!({"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"})
        ]
    );
    assert_eq!(c.done, 1);
    assert!(t.is_done());
}

#[test]
fn truncated_stream_ends_with_error() {
    let cut = TEXT_STREAM.find("event: message_delta").unwrap();
    let (evs, _) = run(&TEXT_STREAM.as_bytes()[..cut], false, 17);
    let c = collect(&evs);
    assert_eq!(c.content, "Hello! \"café\" \u{1F600}\n");
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0]["code"], "upstream_error");
    assert_eq!(c.done, 1);
    // message_delta seen but message_stop missing: completed normally.
    let cut = TEXT_STREAM.find("event: message_stop").unwrap();
    let (evs, _) = run(&TEXT_STREAM.as_bytes()[..cut], true, 17);
    let c = collect(&evs);
    assert!(c.errors.is_empty());
    assert_eq!(c.finish.as_deref(), Some("stop"));
    assert!(c.usage.is_some());
    // Last event without its blank line: what it completes still reaches the client.
    let (evs, _) = run(TEXT_STREAM.trim_end().as_bytes(), false, 5);
    assert!(collect(&evs).errors.is_empty());
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"));
    let mut t = StreamTranslator::new("alias", false);
    let mut out = t.feed(TEXT_STREAM.trim_end().as_bytes()).to_vec();
    out.extend_from_slice(&t.finish());
    let evs = events(&out);
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"), "{evs:?}");
    assert_eq!(collect(&evs).finish.as_deref(), Some("stop"));
}

#[test]
fn malformed_event_is_an_error_and_nothing_follows_done() {
    let mut t = StreamTranslator::new("alias", false);
    let out = t.feed(b"data: {not json\n\n");
    let evs = events(&out);
    assert_eq!(evs.len(), 2);
    assert!(evs[0].contains("\"error\""));
    assert_eq!(evs[1], "[DONE]");
    assert!(t.feed(TEXT_STREAM.as_bytes()).is_empty());
    assert!(t.finish().is_empty());
}

#[test]
fn thinking_blocks_are_skipped() {
    let input = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}}\n\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":3}}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
    let (evs, _) = run(input.as_bytes(), false, 4);
    let c = collect(&evs);
    assert_eq!(c.content, "42");
    assert_eq!(c.finish.as_deref(), Some("length"));
    assert!(!evs.iter().any(|e| e.contains("hmm")));
}

#[test]
fn buffers_are_reused() {
    let mut t = StreamTranslator::new("alias", false);
    let mut total = 0;
    for c in TEXT_STREAM.as_bytes().chunks(3) {
        total += t.feed(c).len();
    }
    assert!(total > 0);
    assert!(t.reader.capacity() <= 1024, "{}", t.reader.capacity());
    assert!(t.data.capacity() <= 1024);
}

#[test]
fn typed_response_translation_matches_the_value_one() {
    for resp in [
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "Hello \"there\"\n"}, {"type": "text", "text": " again"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}}),
        json!({"id": "msg_2", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
                {"type": "tool_use", "id": "toolu_2", "name": "noop", "input": {}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2}}),
        json!({"content": [], "stop_reason": "max_tokens"}),
        json!({"id": "msg_3", "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t", "name": "f"}],
            "stop_reason": "refusal", "usage": {}}),
    ] {
        let want = messages_to_chat(&resp, "alias");
        let (bytes, usage) = messages_to_chat_bytes(resp.to_string().as_bytes(), "alias").unwrap();
        let mut got: Value = serde_json::from_slice(&bytes).unwrap();
        // `created` is the clock's.
        got["created"] = want["created"].clone();
        assert_eq!(got, want, "{resp}");
        assert_eq!(
            usage.prompt_tokens,
            want["usage"]["prompt_tokens"].as_u64().unwrap()
        );
    }
    assert!(messages_to_chat_bytes(b"[1,2]", "alias").is_none());
    assert!(messages_to_chat_bytes(b"not json", "alias").is_none());
}
