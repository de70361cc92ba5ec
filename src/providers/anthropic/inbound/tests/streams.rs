//! Chat streams translated to Messages events, at every split of the input.

use super::*;

/// Upstream chunk lines in the shape of OpenAI's streaming reference (with `include_usage`).
fn chunk(delta: Value, finish: Value) -> String {
    let v = json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null,
    });
    format!("data: {v}\n\n")
}

fn usage_chunk(prompt: u64, completion: u64, cached: u64) -> String {
    let v = json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    });
    format!("data: {v}\n\n")
}

fn text_stream() -> String {
    [
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": "! \"café\" \u{1F600}\n"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk(25, 15, 5),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat()
}

fn tool_call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut f = json!({"arguments": args});
    if let Some(n) = name {
        f["name"] = json!(n);
    }
    let mut tc = json!({"index": index, "function": f});
    if let Some(id) = id {
        tc["id"] = json!(id);
        tc["type"] = json!("function");
    }
    tc
}

/// Text, two parallel tool calls (arguments in fragments), finish `tool_calls`.
fn tool_stream() -> String {
    [
        chunk(json!({"role": "assistant", "content": null}), Value::Null),
        chunk(json!({"content": "Let me check "}), Value::Null),
        chunk(json!({"content": "both."}), Value::Null),
        chunk(
            json!({"tool_calls": [tool_call(0, Some("call_DdmO9pD3xa9XTPNJ32zg2hcA"), Some("get_weather"), "")]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [tool_call(0, None, None, "{\"location\"")]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [tool_call(0, None, None, ": \"Paris, France\"}")]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [tool_call(1, Some("call_2"), Some("get_time"), "{\"tz\":")]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [tool_call(1, None, None, "\"CET\"}")]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(480, 89, 0),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat()
}

/// (event name, data) pairs of an Anthropic SSE output; each event name equals its `type`.
fn events(out: &[u8]) -> Vec<(String, Value)> {
    let s = std::str::from_utf8(out).unwrap();
    assert!(
        s.is_empty() || s.ends_with("\n\n"),
        "incomplete event in {s:?}"
    );
    s.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (ev, data) = e.split_once('\n').unwrap();
            let name = ev.strip_prefix("event: ").unwrap().to_owned();
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["type"], name.as_str());
            (name, v)
        })
        .collect()
}

fn run(input: &[u8], split: usize) -> (Vec<u8>, ChatStreamToMessages) {
    let mut t = ChatStreamToMessages::new("claude-alias");
    let mut out = Vec::new();
    for c in input.chunks(split) {
        let b = t.feed(c);
        // Every output is whole events.
        events(&b);
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(&t.finish());
    (out, t)
}

/// What an Anthropic SDK would accumulate, checking the event protocol on the way.
#[derive(Debug, Default)]
struct Accumulated {
    id: String,
    /// (type, text or tool id, tool name, tool input JSON text)
    blocks: Vec<(String, String, String, String)>,
    stop_reason: Option<String>,
    stop_sequence: Value,
    usage: Value,
    error: Option<Value>,
    stopped: bool,
}

fn accumulate(evs: &[(String, Value)]) -> Accumulated {
    let mut a = Accumulated::default();
    let mut open: Option<usize> = None;
    for (i, (name, v)) in evs.iter().enumerate() {
        assert!(
            !a.stopped && a.error.is_none(),
            "event after the end: {name}"
        );
        if i == 0 && name != "error" {
            assert_eq!(name, "message_start");
        }
        match name.as_str() {
            "message_start" => {
                assert_eq!(i, 0);
                let m = &v["message"];
                assert_eq!(m["type"], "message");
                assert_eq!(m["role"], "assistant");
                assert_eq!(m["model"], "claude-alias");
                assert_eq!(m["content"], json!([]));
                assert_eq!(m["stop_reason"], Value::Null);
                assert_eq!(m["usage"]["output_tokens"], 0);
                a.id = m["id"].as_str().unwrap().to_owned();
                a.usage = m["usage"].clone();
            }
            "content_block_start" => {
                assert_eq!(open, None, "a block starts before the previous one stopped");
                let idx = v["index"].as_u64().unwrap() as usize;
                assert_eq!(idx, a.blocks.len(), "block indexes are sequential");
                let b = &v["content_block"];
                match b["type"].as_str().unwrap() {
                    "text" => {
                        assert_eq!(b["text"], "");
                        a.blocks
                            .push(("text".into(), String::new(), String::new(), String::new()));
                    }
                    "tool_use" => {
                        assert_eq!(b["input"], json!({}));
                        a.blocks.push((
                            "tool_use".into(),
                            b["id"].as_str().unwrap().into(),
                            b["name"].as_str().unwrap().into(),
                            String::new(),
                        ));
                    }
                    other => panic!("block type {other}"),
                }
                open = Some(idx);
            }
            "content_block_delta" => {
                let idx = v["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(idx), "delta to a block that is not open");
                let d = &v["delta"];
                match (a.blocks[idx].0.as_str(), d["type"].as_str().unwrap()) {
                    ("text", "text_delta") => a.blocks[idx].1 += d["text"].as_str().unwrap(),
                    ("tool_use", "input_json_delta") => {
                        a.blocks[idx].3 += d["partial_json"].as_str().unwrap()
                    }
                    (b, d) => panic!("{d} in a {b} block"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open, v["index"].as_u64().map(|i| i as usize));
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None, "message_delta with an open block");
                a.stop_reason = v["delta"]["stop_reason"].as_str().map(str::to_owned);
                a.stop_sequence = v["delta"]["stop_sequence"].clone();
                for (k, n) in v["usage"].as_object().unwrap() {
                    a.usage[k] = n.clone();
                }
            }
            "message_stop" => {
                assert!(a.stop_reason.is_some(), "message_stop before message_delta");
                a.stopped = true;
            }
            "error" => {
                assert_eq!(v["error"]["type"], "api_error");
                a.error = Some(v["error"].clone());
            }
            other => panic!("unexpected event {other}"),
        }
    }
    a
}

#[test]
fn text_stream_at_every_split() {
    let input = text_stream();
    let (whole, _) = run(input.as_bytes(), input.len());
    for split in [1, 2, 3, 5, 7, 13, 64, 4096] {
        let (out, t) = run(input.as_bytes(), split);
        assert_eq!(out, whole, "split {split}");
        assert!(t.is_done());
        assert_eq!(
            t.usage(),
            Some(Usage {
                cached_tokens: 5,
                ..Usage::new(25, 15)
            })
        );
    }
    let evs = events(&whole);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        evs[0].1,
        json!({"type": "message_start", "message": {
            "id": "msg_123", "type": "message", "role": "assistant", "model": "claude-alias",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0},
        }})
    );
    assert_eq!(
        evs[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        evs[2].1,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}})
    );
    assert_eq!(
        evs[5].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5, "output_tokens": 15}})
    );
    let a = accumulate(&evs);
    assert_eq!(a.blocks[0].1, "Hello! \"café\" \u{1F600}\n");
    assert_eq!(a.stop_reason.as_deref(), Some("end_turn"));
    assert!(a.stopped && a.error.is_none());
}

#[test]
fn crlf_gives_the_same_events() {
    let input = text_stream();
    let (lf, _) = run(input.as_bytes(), input.len());
    let crlf = input.replace('\n', "\r\n");
    for split in [1, 9, 100_000] {
        assert_eq!(run(crlf.as_bytes(), split).0, lf, "split {split}");
    }
    // Comments, `event:` and `id:` lines are ignored.
    let noisy = format!(
        ": OPENROUTER PROCESSING\n\nevent: message\nid: 1\n{}",
        input
    );
    assert_eq!(run(noisy.as_bytes(), 3).0, lf);
}

#[test]
fn tool_call_stream() {
    let input = tool_stream();
    let (whole, _) = run(input.as_bytes(), input.len());
    for split in [1, 4, 11, 100_000] {
        let (out, t) = run(input.as_bytes(), split);
        assert_eq!(out, whole, "split {split}");
        assert_eq!(t.usage().map(|u| u.prompt_tokens), Some(480));
    }
    let evs = events(&whole);
    let a = accumulate(&evs);
    assert_eq!(a.id, "msg_123");
    assert_eq!(a.blocks.len(), 3);
    assert_eq!(a.blocks[0].1, "Let me check both.");
    assert_eq!(
        (a.blocks[1].1.as_str(), a.blocks[1].2.as_str()),
        ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather")
    );
    let input0: Value = serde_json::from_str(&a.blocks[1].3).unwrap();
    assert_eq!(input0, json!({"location": "Paris, France"}));
    assert_eq!(
        (
            a.blocks[2].1.as_str(),
            a.blocks[2].2.as_str(),
            a.blocks[2].3.as_str()
        ),
        ("call_2", "get_time", "{\"tz\":\"CET\"}")
    );
    assert_eq!(a.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(a.usage["input_tokens"], 480);
    assert_eq!(a.usage["output_tokens"], 89);
    // The tool block start has Anthropic's shape.
    let start = evs
        .iter()
        .find(|(n, v)| n == "content_block_start" && v["index"] == 1)
        .unwrap();
    assert_eq!(
        start.1,
        json!({"type": "content_block_start", "index": 1, "content_block":
               {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "input": {}}})
    );
    let delta = evs
        .iter()
        .find(|(n, v)| n == "content_block_delta" && v["index"] == 1)
        .unwrap();
    assert_eq!(
        delta.1,
        json!({"type": "content_block_delta", "index": 1, "delta":
               {"type": "input_json_delta", "partial_json": "{\"location\""}})
    );
}

#[test]
fn text_between_and_after_tool_calls_opens_new_blocks() {
    let input = [
        chunk(json!({"role": "assistant", "content": "A"}), Value::Null),
        chunk(
            json!({"tool_calls": [tool_call(0, Some("c1"), Some("f"), "{}")]}),
            Value::Null,
        ),
        chunk(json!({"content": "B"}), Value::Null),
        chunk(
            json!({"tool_calls": [tool_call(1, Some("c2"), Some("g"), "{\"x\":")]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [tool_call(1, None, None, "1}")]}),
            Value::Null,
        ),
        chunk(
            json!({"content": "C", "tool_calls": null}),
            json!("tool_calls"),
        ),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let (out, t) = run(input.as_bytes(), 1);
    assert_eq!(out, run(input.as_bytes(), input.len()).0);
    assert_eq!(t.usage(), None);
    let evs = events(&out);
    let a = accumulate(&evs);
    let kinds: Vec<(&str, &str)> = a
        .blocks
        .iter()
        .map(|b| {
            (
                b.0.as_str(),
                if b.0 == "text" {
                    b.1.as_str()
                } else {
                    b.3.as_str()
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("text", "A"),
            ("tool_use", "{}"),
            ("text", "B"),
            ("tool_use", "{\"x\":1}"),
            ("text", "C")
        ]
    );
    assert_eq!(a.stop_reason.as_deref(), Some("tool_use"));
    // Without a usage chunk: only output_tokens, 0.
    let (_, md) = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(md["usage"], json!({"output_tokens": 0}));
}

#[test]
fn several_tool_calls_in_one_chunk_and_missing_indexes() {
    // Whole tool calls in one chunk (as some Gemini- and vLLM-style servers send them).
    let input = [
        chunk(
            json!({"role": "assistant", "tool_calls": [
                tool_call(0, Some("a"), Some("f"), "{\"n\":1}"),
                tool_call(1, Some("b"), Some("f"), "{\"n\":2}"),
            ]}),
            Value::Null,
        ),
        // Same index, another id: another call.
        chunk(json!({"tool_calls": [tool_call(1, Some("c"), Some("g"), "{}")]}), Value::Null),
        // No index: continues the last call, or starts one when it brings a new id.
        chunk(json!({"tool_calls": [{"function": {"arguments": ""}}]}), Value::Null),
        chunk(
            json!({"tool_calls": [{"id": "d", "type": "function", "function": {"name": "h", "arguments": "{\"k\""}}]}),
            Value::Null,
        ),
        chunk(json!({"tool_calls": [{"function": {"arguments": ":true}"}}]}), Value::Null),
        // Forced tool: OpenAI says `stop`.
        chunk(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let (out, _) = run(input.as_bytes(), 5);
    let a = accumulate(&events(&out));
    let tools: Vec<(&str, &str, &str)> = a
        .blocks
        .iter()
        .map(|b| (b.1.as_str(), b.2.as_str(), b.3.as_str()))
        .collect();
    assert_eq!(
        tools,
        [
            ("a", "f", "{\"n\":1}"),
            ("b", "f", "{\"n\":2}"),
            ("c", "g", "{}"),
            ("d", "h", "{\"k\":true}")
        ]
    );
    assert_eq!(a.stop_reason.as_deref(), Some("tool_use"));
}

#[test]
fn stop_reasons_in_streams() {
    let with_finish = |finish: &str, extra: Value| {
        let mut last = json!({
            "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                last["choices"][0][k] = v;
            }
        }
        let input = format!(
            "{}data: {last}\n\ndata: [DONE]\n\n",
            chunk(json!({"role": "assistant", "content": "x"}), Value::Null)
        );
        let a = accumulate(&events(&run(input.as_bytes(), 7).0));
        (a.stop_reason.unwrap(), a.stop_sequence)
    };
    for (finish, reason) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
    ] {
        assert_eq!(with_finish(finish, json!({})).0, reason, "{finish}");
    }
    assert_eq!(
        with_finish("stop", json!({"stop_reason": "END"})),
        ("stop_sequence".to_owned(), json!("END"))
    );
    assert_eq!(
        with_finish("stop", json!({"stop_reason": 2})),
        ("end_turn".to_owned(), Value::Null)
    );
}

#[test]
fn upstream_error_event_mid_stream() {
    let input = [
        chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
        "data: {\"error\": {\"message\": \"The server had an error while processing your request.\", \"type\": \"server_error\", \"param\": null, \"code\": null}}\n\n".to_owned(),
        chunk(json!({"content": "ignored"}), Value::Null),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    for split in [1, 10, 100_000] {
        let (out, t) = run(input.as_bytes(), split);
        assert!(t.is_done());
        let evs = events(&out);
        let a = accumulate(&evs);
        assert_eq!(a.blocks[0].1, "Hi");
        assert_eq!(
            a.error,
            Some(
                json!({"type": "api_error", "message": "The server had an error while processing your request."})
            )
        );
        assert!(!out.windows(7).any(|w| w == b"ignored"));
        assert_eq!(evs.last().unwrap().0, "error");
    }
    // vLLM's shape, and a string error.
    for body in [
        r#"{"object":"error","message":"boom","type":"InternalServerError","param":null,"code":500}"#,
        r#"{"error":"boom"}"#,
    ] {
        let (out, _) = run(format!("data: {body}\n\n").as_bytes(), 3);
        let evs = events(&out);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].1["error"]["message"], "boom");
    }
}

#[test]
fn truncated_and_unterminated_streams() {
    let input = text_stream();
    // Cut before the finish chunk: an error after what was relayed.
    let cut = input.find("\"finish_reason\":\"stop\"").unwrap();
    let cut = input[..cut].rfind("data:").unwrap();
    let (out, t) = run(&input.as_bytes()[..cut], 17);
    let a = accumulate(&events(&out));
    assert_eq!(a.blocks[0].1, "Hello! \"café\" \u{1F600}\n");
    assert_eq!(
        a.error.unwrap()["message"],
        "upstream stream ended before the message was complete"
    );
    assert!(t.is_done());
    // Finish (and usage) seen, [DONE] missing: a normal end.
    let cut = input.find("data: [DONE]").unwrap();
    let (out, _) = run(&input.as_bytes()[..cut], 17);
    assert_eq!(out, run(input.as_bytes(), 17).0);
    // The last event without its blank line, or without any line end.
    assert_eq!(
        run(input.trim_end().as_bytes(), 5).0,
        run(input.as_bytes(), 5).0
    );
    let no_done = &input[..cut];
    assert_eq!(
        run(no_done.trim_end().as_bytes(), 5).0,
        run(input.as_bytes(), 5).0
    );
    // Nothing at all: an error event alone.
    let (out, _) = run(b"", 1);
    let evs = events(&out);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].0, "error");
    // [DONE] without a finish reason: an (empty) complete message.
    let (out, _) = run(b"data: [DONE]\n\n", 2);
    let a = accumulate(&events(&out));
    assert!(a.stopped && a.blocks.is_empty());
    assert_eq!(a.stop_reason.as_deref(), Some("end_turn"));
    assert!(a.id.starts_with("msg_") && a.id.len() > 20);
}

#[test]
fn malformed_event_is_an_error_and_nothing_follows() {
    let mut t = ChatStreamToMessages::new("claude-alias");
    let out = t.feed(b"data: {not json\n\n");
    let evs = events(&out);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0].1["error"]["message"],
        "malformed event from the upstream stream"
    );
    assert!(t.feed(text_stream().as_bytes()).is_empty());
    assert!(t.finish().is_empty());
    // After a complete message, nothing either.
    let mut t = ChatStreamToMessages::new("claude-alias");
    let out = t.feed(text_stream().as_bytes());
    assert!(!out.is_empty());
    assert!(t.feed(text_stream().as_bytes()).is_empty());
    assert!(t.finish().is_empty());
}

#[test]
fn azure_prompt_filter_chunk_and_usage_in_start() {
    // Azure's first chunk has no choices and an empty id; a server may send usage early.
    let input = [
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n".to_owned(),
        "data: {\"id\":\"chatcmpl-az\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n".to_owned(),
        "data: {\"id\":\"chatcmpl-az\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"content_filter_results\":{}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n".to_owned(),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let (out, t) = run(input.as_bytes(), 6);
    let evs = events(&out);
    let a = accumulate(&evs);
    assert_eq!(a.id, "msg_az");
    assert_eq!(evs[0].1["message"]["usage"]["input_tokens"], 9);
    assert_eq!(a.usage["output_tokens"], 2);
    assert_eq!(a.blocks[0].1, "Hi");
    assert_eq!(t.usage(), Some(Usage::new(9, 2)));
}

/// The whole loop: OpenAI SSE → Anthropic SSE here → OpenAI SSE by the outbound translator; what
/// an OpenAI client would read is what the upstream said.
#[test]
fn stream_round_trip_through_the_outbound_translator() {
    for input in [text_stream(), tool_stream()] {
        let (anthropic_sse, _) = run(input.as_bytes(), 3);
        let mut back = anthropic::StreamTranslator::new("alias", true);
        let mut openai_sse = Vec::new();
        for c in anthropic_sse.chunks(5) {
            openai_sse.extend_from_slice(&back.feed(c));
        }
        openai_sse.extend_from_slice(&back.finish());
        let (content, tools, finish, usage) = collect_openai(&openai_sse);
        let (content0, tools0, finish0, usage0) = collect_openai(input.as_bytes());
        assert_eq!(content, content0);
        assert_eq!(tools, tools0);
        assert_eq!(finish, finish0);
        assert_eq!(usage["prompt_tokens"], usage0["prompt_tokens"]);
        assert_eq!(usage["completion_tokens"], usage0["completion_tokens"]);
        assert_eq!(
            usage["prompt_tokens_details"]["cached_tokens"],
            usage0["prompt_tokens_details"]["cached_tokens"]
        );
    }
}

/// (content, tool calls (id, name, arguments), finish_reason, usage) of an OpenAI SSE stream.
fn collect_openai(sse: &[u8]) -> (String, Vec<(String, String, String)>, String, Value) {
    let s = std::str::from_utf8(sse).unwrap();
    let (mut content, mut tools, mut finish, mut usage) = (
        String::new(),
        Vec::<(String, String, String)>::new(),
        String::new(),
        Value::Null,
    );
    for e in s.split("\n\n").filter(|e| !e.is_empty()) {
        let d = e.strip_prefix("data: ").unwrap();
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        let Some(ch) = v["choices"].get(0) else {
            continue;
        };
        content += ch["delta"]["content"].as_str().unwrap_or("");
        for call in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap() as usize;
            if let Some(id) = call["id"].as_str() {
                tools.push((
                    id.into(),
                    call["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            tools[i].2 += call["function"]["arguments"].as_str().unwrap_or("");
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.into();
        }
    }
    (content, tools, finish, usage)
}

#[test]
fn buffers_are_reused() {
    let mut t = ChatStreamToMessages::new("claude-alias");
    let input = tool_stream();
    let mut total = 0;
    for c in input.as_bytes().chunks(3) {
        total += t.feed(c).len();
    }
    assert!(total > 0);
    assert!(t.reader.capacity() <= 1024, "{}", t.reader.capacity());
    assert!(t.data.capacity() <= 1024, "{}", t.data.capacity());
    assert!(t.out.capacity() <= 4096, "{}", t.out.capacity());
}
