use super::*;
use crate::providers::anthropic;
use serde_json::{json, Value};

fn tr(body: Value) -> Value {
    messages_to_chat_request(&body, "gpt-x").unwrap()
}

fn tr_err(body: Value) -> TranslateError {
    messages_to_chat_request(&body, "gpt-x").unwrap_err()
}

fn dropping(body: Value) -> Value {
    let opts = Options {
        drop_unsupported: true,
        ..Options::default()
    };
    messages_to_chat_request_with(&body, "gpt-x", opts).unwrap()
}

fn user(content: Value) -> Value {
    json!({"model": "alias", "max_tokens": 100, "messages": [{"role": "user", "content": content}]})
}

fn is_unsupported(e: &TranslateError, field: &str) -> bool {
    matches!(e, TranslateError::Unsupported { .. }) && e.field() == field
}

fn is_invalid(e: &TranslateError, field: &str) -> bool {
    matches!(e, TranslateError::Invalid { .. }) && e.field() == field
}

// ---- request ----

#[test]
fn minimal_request() {
    // The Messages API reference example.
    let out = tr(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-x",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Hello, world"}],
        })
    );
}

#[test]
fn max_tokens_field_choice() {
    let body = user(json!("x"));
    let opts = Options {
        limit_field: LimitField::MaxCompletionTokens,
        ..Options::default()
    };
    let out = messages_to_chat_request_with(&body, "o3", opts).unwrap();
    assert_eq!(out["max_completion_tokens"], 100);
    assert!(out.get("max_tokens").is_none());
    // Absent: the upstream's default.
    let out = tr(json!({"messages": [{"role": "user", "content": "x"}]}));
    assert!(out.get("max_tokens").is_none());
    for bad in [json!(0), json!(-1), json!("10"), json!(1.5)] {
        let mut body = user(json!("x"));
        body["max_tokens"] = bad;
        assert!(is_invalid(&tr_err(body), "max_tokens"));
    }
}

#[test]
fn system_string_and_blocks() {
    let mut body = user(json!("Hi"));
    body["system"] = json!("You are terse.");
    let out = tr(body.clone());
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
        ])
    );
    // One block (cache_control dropped): a string.
    body["system"] =
        json!([{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}]);
    assert_eq!(
        tr(body.clone())["messages"][0],
        json!({"role": "system", "content": "Be kind."})
    );
    // Several blocks: text parts, empty ones skipped.
    body["system"] = json!([
        {"type": "text", "text": "Part one."},
        {"type": "text", "text": ""},
        {"type": "text", "text": "Part two.", "cache_control": {"type": "ephemeral"}},
    ]);
    assert_eq!(
        tr(body.clone())["messages"][0],
        json!({"role": "system", "content": [
            {"type": "text", "text": "Part one."},
            {"type": "text", "text": "Part two."},
        ]})
    );
    // Empty: no system message.
    for empty in [json!(""), json!([]), Value::Null] {
        body["system"] = empty;
        assert_eq!(tr(body.clone())["messages"].as_array().unwrap().len(), 1);
    }
    body["system"] = json!([{"type": "image", "source": {}}]);
    assert!(is_unsupported(&tr_err(body.clone()), "system[0].type"));
    body["system"] = json!(42);
    assert!(is_invalid(&tr_err(body), "system"));
}

#[test]
fn user_text_and_images() {
    // A lone text block is a plain string.
    let out = tr(user(json!([{"type": "text", "text": "What is this?"}])));
    assert_eq!(out["messages"][0]["content"], "What is this?");
    let out = tr(user(json!([
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
        {"type": "text", "text": "Describe these images.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Briefly."},
    ])));
    assert_eq!(
        out["messages"][0],
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
            {"type": "text", "text": "Describe these images."},
            {"type": "text", "text": "Briefly."},
        ]})
    );
    // Files API sources have no OpenAI equivalent.
    let body = user(json!([
        {"type": "text", "text": "x"},
        {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
    ]));
    assert!(is_unsupported(
        &tr_err(body.clone()),
        "messages[0].content[1].source.type"
    ));
    assert_eq!(dropping(body)["messages"][0]["content"], "x");
    let e = tr_err(user(
        json!([{"type": "image", "source": {"type": "base64", "data": "AAAA"}}]),
    ));
    assert!(is_invalid(&e, "messages[0].content[0].source.media_type"));
    let e = tr_err(user(json!([{"type": "image"}])));
    assert!(is_invalid(&e, "messages[0].content[0].source"));
}

#[test]
fn unsupported_blocks_are_named_or_dropped() {
    for (block, what) in [
        (
            json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}),
            "document",
        ),
        (
            json!({"type": "search_result", "source": "https://x", "title": "t", "content": []}),
            "search_result",
        ),
        (
            json!({"type": "container_upload", "file_id": "f"}),
            "container_upload",
        ),
    ] {
        let body = user(json!([{"type": "text", "text": "Summarize"}, block]));
        let e = tr_err(body.clone());
        assert!(
            is_unsupported(&e, "messages[0].content[1].type"),
            "{what}: {e}"
        );
        assert!(e.to_string().contains(what), "{e}");
        assert_eq!(dropping(body)["messages"][0]["content"], "Summarize");
    }
    let e = tr_err(user(json!([{"text": "no type"}])));
    assert!(is_invalid(&e, "messages[0].content[0].type"));
}

/// A tool-use conversation in the shape of Anthropic's tool use documentation.
fn tool_conversation() -> Value {
    json!({
        "model": "claude-opus-4-1",
        "max_tokens": 1024,
        "tools": [
            {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": {
                    "type": "object",
                    "properties": {"location": {"type": "string", "description": "The city and state"}},
                    "required": ["location"],
                },
            },
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "What's the weather and time in San Francisco?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two tools.", "signature": "EqQB"},
                {"type": "text", "text": "I'll check both."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                 "input": {"location": "San Francisco, CA"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_02",
                 "content": [{"type": "text", "text": "14:02"}, {"type": "text", "text": "PST"}]},
                {"type": "text", "text": "Which is it, warm or not?"},
            ]},
        ],
    })
}

#[test]
fn tools_tool_use_and_tool_results() {
    let out = tr(tool_conversation());
    assert_eq!(
        out["tools"],
        json!([
            {"type": "function", "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string", "description": "The city and state"}},
                    "required": ["location"],
                },
            }},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
        ])
    );
    assert_eq!(out["tool_choice"], "auto");
    assert_eq!(out["parallel_tool_calls"], false);
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "What's the weather and time in San Francisco?"},
            {"role": "assistant", "content": "I'll check both.", "tool_calls": [
                {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}},
                {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": "14:02\nPST"},
            {"role": "user", "content": "Which is it, warm or not?"},
        ])
    );
}

#[test]
fn tool_results_come_first_and_errors_are_marked() {
    let out = tr(user(json!([
        {"type": "text", "text": "Here you go."},
        {"type": "tool_result", "tool_use_id": "t1", "content": "Missing location", "is_error": true},
        {"type": "tool_result", "tool_use_id": "t2", "content": "Error: timeout", "is_error": true},
        {"type": "tool_result", "tool_use_id": "t3", "is_error": false},
        {"type": "tool_result", "tool_use_id": "t4", "content": [], "cache_control": {"type": "ephemeral"}},
    ])));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "tool", "tool_call_id": "t1", "content": "Error: Missing location"},
            {"role": "tool", "tool_call_id": "t2", "content": "Error: timeout"},
            {"role": "tool", "tool_call_id": "t3", "content": ""},
            {"role": "tool", "tool_call_id": "t4", "content": ""},
            {"role": "user", "content": "Here you go."},
        ])
    );
    // Only tool results: no user message.
    let out = tr(user(
        json!([{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]),
    ));
    assert_eq!(
        out["messages"],
        json!([{"role": "tool", "tool_call_id": "t1", "content": "ok"}])
    );
    // Images in tool results: OpenAI tool messages carry text only.
    let body = user(
        json!([{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "screenshot:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        ]}]),
    );
    assert!(is_unsupported(
        &tr_err(body.clone()),
        "messages[0].content[0].content[1].type"
    ));
    assert_eq!(dropping(body)["messages"][0]["content"], "screenshot:");
    assert!(is_invalid(
        &tr_err(user(json!([{"type": "tool_result", "content": "x"}]))),
        "messages[0].content[0].tool_use_id"
    ));
    assert!(is_invalid(
        &tr_err(user(
            json!([{"type": "tool_result", "tool_use_id": "t", "content": 3}])
        )),
        "messages[0].content[0].content"
    ));
}

#[test]
fn assistant_turns() {
    let conv = |assistant: Value| {
        tr(json!({"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": "And?"},
        ]}))["messages"]
            .clone()
    };
    // Text blocks are one stretch of output: concatenated.
    assert_eq!(
        conv(json!([{"type": "text", "text": "The answer "}, {"type": "text", "text": "is 42."}]))
            [1],
        json!({"role": "assistant", "content": "The answer is 42."})
    );
    // Tool calls only: content null.
    assert_eq!(
        conv(json!([{"type": "tool_use", "id": "t", "name": "f", "input": {"a": [1, 2]}}]))[1],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1,2]}"}},
        ]})
    );
    // Only thinking: the turn is not sent.
    let m = conv(json!([
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "redacted_thinking", "data": "EmwK"},
    ]));
    assert_eq!(
        m,
        json!([{"role": "user", "content": "Hi"}, {"role": "user", "content": "And?"}])
    );
    // A string content, and a final assistant turn (prefill), go as they are.
    let out = tr(json!({"messages": [
        {"role": "user", "content": "JSON please"},
        {"role": "assistant", "content": "{"},
    ]}));
    assert_eq!(
        out["messages"][1],
        json!({"role": "assistant", "content": "{"})
    );
    let e = tr_err(json!({"messages": [{"role": "assistant", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ]}]}));
    assert!(is_unsupported(&e, "messages[0].content[0].type"));
    let e = tr_err(json!({"messages": [{"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
    ]}]}));
    assert!(is_unsupported(&e, "messages[0].content[0].type"));
    let e = tr_err(json!({"messages": [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "x"},
    ]}]}));
    assert!(is_invalid(&e, "messages[0].content[0].type"));
    let e = tr_err(user(
        json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
    ));
    assert!(is_invalid(&e, "messages[0].content[0].type"));
    let e = tr_err(json!({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "name": "f", "input": {}},
    ]}]}));
    assert!(is_invalid(&e, "messages[0].content[0].id"));
}

#[test]
fn messages_shape_errors() {
    assert!(is_invalid(&tr_err(json!([])), "body"));
    assert!(is_invalid(&tr_err(json!({"max_tokens": 5})), "messages"));
    assert!(is_invalid(&tr_err(json!({"messages": []})), "messages"));
    let e = tr_err(json!({"messages": [{"role": "system", "content": "x"}]}));
    assert!(is_invalid(&e, "messages[0].role"));
    let e = tr_err(json!({"messages": [{"content": "x"}]}));
    assert!(is_invalid(&e, "messages[0].role"));
    let e = tr_err(json!({"messages": [{"role": "user", "content": 7}]}));
    assert!(is_invalid(&e, "messages[0].content"));
    let e = tr_err(json!({"messages": [{"role": "user"}]}));
    assert!(is_invalid(&e, "messages[0].content"));
    let e = tr_err(user(json!([{"type": "text", "text": 5}])));
    assert!(is_invalid(&e, "messages[0].content[0].text"));
}

#[test]
fn tool_choice_variants() {
    let choice = |c: Value| {
        let mut body = user(json!("x"));
        body["tools"] = json!([{"name": "f", "input_schema": {"type": "object"}}]);
        body["tool_choice"] = c;
        let out = tr(body);
        (
            out["tool_choice"].clone(),
            out.get("parallel_tool_calls").cloned(),
        )
    };
    assert_eq!(choice(json!({"type": "auto"})), (json!("auto"), None));
    assert_eq!(choice(json!({"type": "any"})), (json!("required"), None));
    assert_eq!(choice(json!({"type": "none"})), (json!("none"), None));
    assert_eq!(
        choice(json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            Some(json!(false))
        )
    );
    assert_eq!(
        choice(json!({"type": "any", "disable_parallel_tool_use": false})),
        (json!("required"), None)
    );
    assert_eq!(
        choice(json!({"type": "none", "disable_parallel_tool_use": true})),
        (json!("none"), None)
    );
    // No tools: neither is sent (OpenAI rejects tool_choice without tools).
    let mut body = user(json!("x"));
    body["tool_choice"] = json!({"type": "any", "disable_parallel_tool_use": true});
    body["tools"] = json!([]);
    let out = tr(body);
    assert!(out.get("tool_choice").is_none());
    assert!(out.get("tools").is_none());
    assert!(out.get("parallel_tool_calls").is_none());
    for (c, field) in [
        (json!("auto"), "tool_choice"),
        (json!({"type": "sometimes"}), "tool_choice.type"),
        (json!({"type": "tool"}), "tool_choice.name"),
        (
            json!({"type": "auto", "disable_parallel_tool_use": "yes"}),
            "tool_choice.disable_parallel_tool_use",
        ),
    ] {
        let mut body = user(json!("x"));
        body["tool_choice"] = c;
        assert!(is_invalid(&tr_err(body), field), "{field}");
    }
}

#[test]
fn tool_definitions() {
    let mut body = user(json!("x"));
    body["tools"] = json!([
        {"type": "custom", "name": "a", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}},
         "required": ["q"], "additionalProperties": false}, "strict": true, "cache_control": {"type": "ephemeral"}},
        {"name": "b"},
    ]);
    assert_eq!(
        tr(body.clone())["tools"],
        json!([
            {"type": "function", "function": {"name": "a", "strict": true, "parameters":
                {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}}}},
        ])
    );
    // Anthropic-defined tools (server and client tools) are refused, or dropped.
    for tool in [
        json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 5}),
        json!({"type": "bash_20250124", "name": "bash"}),
        json!({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}),
    ] {
        let mut body = user(json!("x"));
        body["tools"] = json!([{"name": "f", "input_schema": {"type": "object"}}, tool]);
        body["tool_choice"] = json!({"type": "auto"});
        let e = tr_err(body.clone());
        assert!(is_unsupported(&e, "tools[1].type"), "{e}");
        let out = dropping(body);
        assert_eq!(out["tools"].as_array().unwrap().len(), 1);
    }
    // Only dropped tools: no tools, no tool_choice.
    let mut body = user(json!("x"));
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    body["tool_choice"] = json!({"type": "any"});
    let out = dropping(body);
    assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());
    let mut body = user(json!("x"));
    body["tools"] = json!([{"input_schema": {}}]);
    assert!(is_invalid(&tr_err(body.clone()), "tools[0].name"));
    body["tools"] = json!([{"name": "f", "input_schema": "x"}]);
    assert!(is_invalid(&tr_err(body.clone()), "tools[0].input_schema"));
    body["tools"] = json!({"name": "f"});
    assert!(is_invalid(&tr_err(body), "tools"));
}

#[test]
fn sampling_stop_metadata_stream() {
    let out = tr(json!({
        "model": "claude-x",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.7, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["\n\nHuman:", "END"],
        "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "service_tier": "auto",
        "cache_control": {"type": "ephemeral"},
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-x",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.7,
            "top_p": 0.9,
            "stop": ["\n\nHuman:", "END"],
            "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    let out = tr(json!({
        "messages": [{"role": "user", "content": "x"}],
        "stream": false, "stop_sequences": [], "metadata": {}, "temperature": null,
    }));
    for absent in ["stream", "stream_options", "stop", "user", "temperature"] {
        assert!(out.get(absent).is_none(), "{absent}");
    }
    for (field, v, path) in [
        ("temperature", json!("hot"), "temperature"),
        ("top_p", json!([]), "top_p"),
        ("top_k", json!("5"), "top_k"),
        ("stop_sequences", json!("END"), "stop_sequences"),
        ("stop_sequences", json!([1]), "stop_sequences"),
        ("stream", json!("yes"), "stream"),
        ("metadata", json!("u"), "metadata"),
        ("metadata", json!({"user_id": 5}), "metadata.user_id"),
    ] {
        let mut body = user(json!("x"));
        body[field] = v;
        assert!(is_invalid(&tr_err(body), path), "{path}");
    }
}

#[test]
fn unknown_and_server_fields_are_refused_or_dropped() {
    for field in [
        "container",
        "mcp_servers",
        "context_management",
        "output_format",
        "some_future_field",
    ] {
        let mut body = user(json!("x"));
        body[field] = json!({"x": 1});
        let e = tr_err(body.clone());
        assert!(is_unsupported(&e, field), "{field}: {e}");
        let out = dropping(body);
        assert!(out.get(field).is_none());
        assert_eq!(out["messages"][0]["content"], "x");
    }
}

#[test]
fn request_body_merges_deployment_params() {
    let raw = br#"{"model":"alias","max_tokens":64,"temperature":0.2,"messages":[{"role":"user","content":"Hi"}]}"#;
    let params = vec![
        ("temperature".to_owned(), "0.9".to_owned()),
        ("max_completion_tokens".to_owned(), "999".to_owned()),
        ("reasoning_effort".to_owned(), "\"low\"".to_owned()),
        ("seed".to_owned(), "not json".to_owned()),
    ];
    let out: Value =
        serde_json::from_slice(&request_body(raw, "gpt-x", &params, Options::default()).unwrap())
            .unwrap();
    assert_eq!(out["model"], "gpt-x");
    assert_eq!(out["temperature"], 0.2);
    assert_eq!(out["max_tokens"], 64);
    assert!(out.get("max_completion_tokens").is_none());
    assert_eq!(out["reasoning_effort"], "low");
    assert!(out.get("seed").is_none());
    let e = request_body(b"{nope", "m", &[], Options::default()).unwrap_err();
    assert!(is_invalid(&e, "body"));
}

#[test]
fn refusals_in_anthropic_shape() {
    let mut body = user(json!("x"));
    body["mcp_servers"] = json!([]);
    let e = tr_err(body);
    let v: Value = serde_json::from_slice(&request_error_to_anthropic(&e)).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`mcp_servers`") && msg.contains("drop_params"),
        "{msg}"
    );
    assert!(!msg.contains("(Anthropic)"), "{msg}");
    let e = tr_err(json!({"messages": 3}));
    let v: Value = serde_json::from_slice(&request_error_to_anthropic(&e)).unwrap();
    assert_eq!(
        v["error"]["message"],
        "invalid `messages`: expected an array of messages"
    );
}

/// The Anthropic request as [`anthropic::chat_to_messages`] would build it: content as blocks,
/// the system prompt as text blocks, `tool_choice` with `disable_parallel_tool_use`.
fn normalized(mut req: Value) -> Value {
    let blocks = |c: &Value| match c {
        Value::String(s) => json!([{"type": "text", "text": s}]),
        other => other.clone(),
    };
    if let Some(s) = req.get("system") {
        req["system"] = blocks(s);
    }
    for m in req["messages"].as_array_mut().unwrap() {
        m["content"] = blocks(&m["content"]);
    }
    req
}

#[test]
fn round_trip_through_the_outbound_translation() {
    let cases = [
        json!({
            "model": "m", "max_tokens": 300,
            "system": [{"type": "text", "text": "You are a weather bot."}, {"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "Thanks."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                ]},
            ],
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.8,
            "metadata": {"user_id": "u-1"}, "stream": true,
        }),
        json!({
            "model": "m", "max_tokens": 10, "system": "Terse.",
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "f"},
        }),
    ];
    for original in cases {
        let chat = messages_to_chat_request(&original, "gpt-x").unwrap();
        let back = anthropic::chat_to_messages(&chat, "m", 1).unwrap();
        assert_eq!(back, normalized(original));
    }
}

// ---- response ----

#[test]
fn response_text() {
    // The Chat Completions reference example, with cached tokens.
    let resp = json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
    });
    assert_eq!(
        chat_to_messages_response(&resp, "claude-alias"),
        json!({
            "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "model": "claude-alias",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 15, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 4, "output_tokens": 10},
        })
    );
}

#[test]
fn response_tool_calls() {
    let resp = json!({
        "id": "chatcmpl-abc",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"Boston, MA\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{\"loc"}},
                {"id": "call_3", "type": "function", "function": {"name": "list", "arguments": "[1]"}},
                {"id": "call_4", "type": "custom", "custom": {"name": "grammar", "input": "x"}},
            ],
        }}],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
    });
    let out = chat_to_messages_response(&resp, "a");
    assert_eq!(
        out["content"],
        json!([
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Boston, MA"}},
            {"type": "tool_use", "id": "call_2", "name": "broken", "input": {}},
            {"type": "tool_use", "id": "call_3", "name": "list", "input": {}},
        ])
    );
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 82, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 17})
    );
    // Forced tool (`finish_reason: stop`), content null: only the tool_use block.
    let resp = json!({"id": "chatcmpl-x", "choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": null,
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }}]});
    let out = chat_to_messages_response(&resp, "a");
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_9", "name": "f", "input": {}}])
    );
    assert_eq!(out["stop_reason"], "tool_use");
    // Legacy function_call, no id: a generated one.
    let resp = json!({"choices": [{"finish_reason": "function_call", "message": {
        "role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{\"a\":1}"},
    }}]});
    let out = chat_to_messages_response(&resp, "a");
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(out["content"][0]["input"], json!({"a": 1}));
    assert!(out["content"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
    assert!(out["id"].as_str().unwrap().starts_with("msg_"));
    assert!(out["id"].as_str().unwrap().len() > 20);
}

#[test]
fn response_stop_reasons() {
    let reason = |finish: Value, extra: Value| {
        let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                choice[k] = v;
            }
        }
        let out = chat_to_messages_response(&json!({"choices": [choice]}), "a");
        (out["stop_reason"].clone(), out["stop_sequence"].clone())
    };
    for (finish, stop) in [
        (json!("stop"), "end_turn"),
        (json!("length"), "max_tokens"),
        (json!("tool_calls"), "tool_use"),
        (json!("function_call"), "tool_use"),
        (json!("content_filter"), "refusal"),
        (Value::Null, "end_turn"),
        (json!("eos"), "end_turn"),
    ] {
        assert_eq!(reason(finish.clone(), json!({})).0, stop, "{finish}");
    }
    // vLLM names the stop string that matched.
    assert_eq!(
        reason(json!("stop"), json!({"stop_reason": "END"})),
        (json!("stop_sequence"), json!("END"))
    );
    // A stop token id is not a stop sequence.
    assert_eq!(
        reason(json!("stop"), json!({"stop_reason": 128009})),
        (json!("end_turn"), Value::Null)
    );
    assert_eq!(stop_reason(Some("length"), true), "max_tokens");
}

#[test]
fn response_edge_cases() {
    // A refusal is shown as text; parts content is concatenated; no choices → empty message.
    let out = chat_to_messages_response(
        &json!({"id": "msg_keep", "choices": [{"finish_reason": "stop", "message": {
            "role": "assistant", "content": null, "refusal": "I can't help with that."}}]}),
        "a",
    );
    assert_eq!(out["id"], "msg_keep");
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    let out = chat_to_messages_response(
        &json!({"id": "cmpl-7", "choices": [{"finish_reason": "stop", "message": {
            "role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}),
        "a",
    );
    assert_eq!(out["id"], "msg_cmpl-7");
    assert_eq!(out["content"], json!([{"type": "text", "text": "ab"}]));
    let out = chat_to_messages_response(&json!({"choices": []}), "a");
    assert_eq!(out["content"], json!([]));
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["usage"]["output_tokens"], 0);
    // Cached tokens never exceed the prompt.
    let out = chat_to_messages_response(
        &json!({"usage": {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}}),
        "a",
    );
    assert_eq!(out["usage"]["input_tokens"], 0);
    assert_eq!(out["usage"]["cache_read_input_tokens"], 3);
}

#[test]
fn response_round_trip_through_the_outbound_translation() {
    let resp = json!({
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}],
        }}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                  "prompt_tokens_details": {"cached_tokens": 64}},
    });
    let message = chat_to_messages_response(&resp, "alias");
    let back = anthropic::messages_to_chat(&message, "alias");
    assert_eq!(
        back["choices"][0]["message"],
        json!({"role": "assistant", "content": "Checking.", "refusal": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
        ]})
    );
    assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        back["usage"],
        json!({"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
               "prompt_tokens_details": {"cached_tokens": 64}})
    );
}

// ---- errors ----

#[test]
fn errors_by_status() {
    for (status, ty) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        let body = json!({"error": {"message": "m", "type": "t", "param": null, "code": "c"}});
        let out: Value =
            serde_json::from_slice(&error_to_anthropic(status, body.to_string().as_bytes()))
                .unwrap();
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": ty, "message": "m"}}),
            "{status}"
        );
    }
}

#[test]
fn error_messages_from_any_body() {
    let msg = |status: u16, body: &[u8]| {
        let out: Value = serde_json::from_slice(&error_to_anthropic(status, body)).unwrap();
        out["error"]["message"].as_str().unwrap().to_owned()
    };
    // OpenAI's own.
    assert_eq!(
        msg(429, br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#),
        "Rate limit reached for gpt-4o"
    );
    // Ollama: `error` is a string.
    assert_eq!(
        msg(
            404,
            br#"{"error":"model \"llama9\" not found, try pulling it first"}"#
        ),
        "model \"llama9\" not found, try pulling it first"
    );
    // vLLM: top-level message.
    assert_eq!(
        msg(400, br#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}"#),
        "This model's maximum context length is 4096 tokens."
    );
    assert_eq!(msg(400, br#"{"detail":"Not Found"}"#), "Not Found");
    assert_eq!(
        msg(502, b"<html>bad gateway</html>"),
        "<html>bad gateway</html>"
    );
    assert_eq!(msg(503, b""), "upstream answered 503");
    assert_eq!(msg(500, &[b'x'; 2000]).len(), 500);
}

/// Chat streams translated to Messages events.
mod streams;
