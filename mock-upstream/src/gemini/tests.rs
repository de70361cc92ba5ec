use super::*;
use crate::body::collect;
use crate::server::test_state;
use http::header::HeaderValue;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_bytes(v.as_bytes()).unwrap());
    }
    h
}

fn r(surface: Surface, model: &str, op: Op) -> Option<Route> {
    Some(Route {
        surface,
        model: model.to_owned(),
        op,
    })
}

#[test]
fn routes() {
    let (post, get) = (Method::POST, Method::GET);
    assert_eq!(
        route(&post, "/v1beta/models/gemini-2.5-flash:generateContent"),
        r(Surface::Gemini, "gemini-2.5-flash", Op::Generate)
    );
    assert_eq!(
        route(
            &post,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        ),
        r(Surface::Gemini, "gemini-2.5-flash", Op::Stream)
    );
    assert_eq!(
        route(&post, "/v1/models/gemini-2.0-flash:embedContent"),
        r(Surface::Gemini, "gemini-2.0-flash", Op::Embed)
    );
    assert_eq!(
        route(&get, "/v1beta/models"),
        r(Surface::Gemini, "", Op::ListModels)
    );
    assert_eq!(
        route(&get, "/v1beta/models/gemini-2.5-pro"),
        r(Surface::Gemini, "gemini-2.5-pro", Op::GetModel)
    );
    assert_eq!(route(&get, "/v1/models"), None);
    assert_eq!(route(&post, "/v1/chat/completions"), None);
    assert_eq!(
        route(&post, "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent"),
        r(Surface::Vertex, "gemini-2.5-flash", Op::Stream)
    );
    assert_eq!(
        route(&post, "/v1beta1/projects/p/locations/global/publishers/google/models/text-embedding-005:predict"),
        r(Surface::Vertex, "text-embedding-005", Op::Predict)
    );
    assert_eq!(
        route(&get, "/v1beta/models/gemini-2.5-flash:generateContent"),
        r(Surface::Gemini, "gemini-2.5-flash", Op::Unknown)
    );
}

fn ok(v: Value) {
    assert_eq!(validate_generate(&v), Ok(()), "{v}");
}

fn bad(v: Value, needle: &str) {
    let e = validate_generate(&v).unwrap_err();
    assert!(e.contains(needle), "{e:?} does not contain {needle:?}");
}

#[test]
fn generate_validation() {
    let base = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    ok(base.clone());
    ok(
        json!({"contents": [{"parts": [{"text": "hi"}]}], "system_instruction": {"parts": [{"text": "be brief"}]}, "generation_config": {"max_output_tokens": 5}}),
    );
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    bad(
        with("messages", json!([])),
        "Unknown name \"messages\": Cannot find field.",
    );
    bad(json!({"contents": []}), "contents is not specified");
    bad(
        json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
        "Please use a valid role: user, model.",
    );
    bad(
        json!({"contents": [{"role": "user", "parts": []}]}),
        "contents.parts must not be empty",
    );
    bad(
        json!({"contents": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}),
        "Unknown name \"type\" at 'contents[0].parts[0]'",
    );
    bad(
        json!({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "***"}}]}]}),
        "Base64 decoding failed",
    );
    ok(
        json!({"contents": [{"role": "user", "parts": [{"text": "what"}, {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}]}]}),
    );
    bad(
        with("generationConfig", json!({"temperature": 3})),
        "temperature must be in the range",
    );
    bad(
        with("generationConfig", json!({"max_tokens": 3})),
        "Unknown name \"max_tokens\" at 'generation_config'",
    );
    bad(
        with(
            "safetySettings",
            json!([{"category": "HATE", "threshold": "BLOCK_NONE"}]),
        ),
        "HarmCategory",
    );
    // Function calling turns.
    let call = json!({"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]});
    let resp = json!({"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": true}}}]});
    let user = json!({"role": "user", "parts": [{"text": "go"}]});
    let tools =
        json!([{"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}}]}]);
    ok(json!({"contents": [user, call, resp], "tools": tools}));
    bad(
        json!({"contents": [user, resp]}),
        "function response turn comes immediately after a function call turn",
    );
    bad(
        json!({"contents": [user, call, {"role": "user", "parts": [resp["parts"][0], resp["parts"][0]]}]}),
        "number of function response parts",
    );
    bad(
        json!({"contents": [user], "tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}}}),
        "only allowed when mode is ANY",
    );
    bad(
        json!({"contents": [user], "tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}}),
        "function g is not declared",
    );
    bad(
        json!({"contents": [user], "tools": [{"functionDeclarations": [{"name": "1bad"}]}]}),
        "Invalid function name",
    );
}

const REQ: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}"#;

fn run(
    state: &State,
    h: &[(&'static str, &'static str)],
    route: &Route,
    req: &str,
    stream: bool,
    sse: bool,
) -> (u16, HeaderMap, Vec<u8>) {
    let v: Value = serde_json::from_str(req).unwrap();
    collect(generate(
        state,
        &headers(h),
        route,
        &v,
        req.len(),
        stream,
        sse,
    ))
}

fn gemini() -> Route {
    Route {
        surface: Surface::Gemini,
        model: "gemini-2.5-flash".to_owned(),
        op: Op::Generate,
    }
}

#[test]
fn generate_answer() {
    let state = test_state(&["--chunks", "3"]);
    let (s, _, body) = run(&state, &[], &gemini(), REQ, false, false);
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(cand["content"]["parts"][0]["text"], "Hello from mock");
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(cand["index"], 0);
    let p = (REQ.len() / 4) as u64;
    assert_eq!(v["usageMetadata"]["promptTokenCount"], p);
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], p + 3);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert!(v["responseId"].is_string());
    assert!(v.get("createTime").is_none());
    // Cached and thought tokens.
    let (_, _, body) = run(
        &state,
        &[
            ("x-mock-cache-read-tokens", "4"),
            ("x-mock-thoughts-tokens", "10"),
        ],
        &gemini(),
        REQ,
        false,
        false,
    );
    let u = serde_json::from_slice::<Value>(&body).unwrap()["usageMetadata"].clone();
    assert_eq!(u["cachedContentTokenCount"], 4);
    assert_eq!(u["thoughtsTokenCount"], 10);
    assert_eq!(u["totalTokenCount"], p + 3 + 10);
    // maxOutputTokens cuts; candidateCount multiplies.
    let capped = r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1,"candidateCount":2}}"#;
    let (_, _, body) = run(&state, &[], &gemini(), capped, false, false);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(v["candidates"][1]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["candidates"][1]["content"]["parts"][0]["text"], "tok0 ");
    // Vertex adds createTime.
    let vertex = Route {
        surface: Surface::Vertex,
        ..gemini()
    };
    let (_, _, body) = run(&state, &[], &vertex, REQ, false, false);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["createTime"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn function_call_and_blocks() {
    let state = test_state(&[]);
    let req = r#"{"contents":[{"role":"user","parts":[{"text":"weather?"}]}],"tools":[{"functionDeclarations":[{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}]}"#;
    let (_, _, body) = run(
        &state,
        &[("x-mock-tool-call", "get_weather")],
        &gemini(),
        req,
        false,
        false,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "mock"}})
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let (_, _, body) = run(
        &state,
        &[("x-mock-gemini-block", "prompt")],
        &gemini(),
        REQ,
        false,
        false,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v.get("candidates").is_none());
    let (_, _, body) = run(
        &state,
        &[("x-mock-gemini-block", "response")],
        &gemini(),
        REQ,
        false,
        false,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
    assert!(v["candidates"][0].get("content").is_none());
    assert!(v["candidates"][0]["safetyRatings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["blocked"] == true));
}

/// The `data:` payloads of an SSE body separated by CRLF pairs.
fn events(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("\r\n\r\n"));
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn streaming() {
    let state = test_state(&["--chunks", "4"]);
    let (s, h, body) = run(&state, &[], &gemini(), REQ, true, true);
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/event-stream");
    let ev = events(&body);
    assert_eq!(ev.len(), 4);
    let text: String = ev
        .iter()
        .map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert!(ev[..3]
        .iter()
        .all(|e| e["candidates"][0].get("finishReason").is_none()));
    assert_eq!(ev[3]["candidates"][0]["finishReason"], "STOP");
    let counts: Vec<u64> = ev
        .iter()
        .map(|e| e["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3, 4]);
    // Without alt=sse: one JSON array.
    let (_, h, body) = run(&state, &[], &gemini(), REQ, true, false);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let arr: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 4);
    // A blocked response streams half the chunks, then SAFETY without content.
    let (_, _, body) = run(
        &state,
        &[("x-mock-gemini-block", "response")],
        &gemini(),
        REQ,
        true,
        true,
    );
    let ev = events(&body);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[2]["candidates"][0]["finishReason"], "SAFETY");
    // Dropped after 2 events: no finish.
    let (_, _, body) = run(
        &state,
        &[("x-mock-drop-after-chunks", "2")],
        &gemini(),
        REQ,
        true,
        true,
    );
    assert_eq!(events(&body).len(), 2);
}

#[test]
fn errors_and_embeddings() {
    let state = test_state(&[]);
    let (s, _, body) = collect(failure(
        &state,
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        10,
    ));
    assert_eq!(s, 429);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(v["error"]["code"], 429);
    assert_eq!(v["error"]["details"][0]["retryDelay"], "1s");
    let (s, _, body) = collect(failure(
        &state,
        StatusCode::SERVICE_UNAVAILABLE,
        &HeaderMap::new(),
        10,
    ));
    assert_eq!(s, 503);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["status"],
        "UNAVAILABLE"
    );
    let state = test_state(&["--fail-code", "context_length_exceeded"]);
    let (s, _, body) = collect(failure(
        &state,
        StatusCode::BAD_REQUEST,
        &HeaderMap::new(),
        10,
    ));
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["error"]["message"],
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    );
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    // Embeddings.
    let route = |op| Route {
        surface: Surface::Gemini,
        model: "text-embedding-004".to_owned(),
        op,
    };
    let run = |op, body: Value| {
        let (s, _, b) = collect(embeddings(&state, &route(op), &body));
        (s, serde_json::from_slice::<Value>(&b).unwrap())
    };
    let (s, v) = run(
        Op::Embed,
        json!({"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 16}),
    );
    assert_eq!(s, 200);
    assert_eq!(v["embedding"]["values"].as_array().unwrap().len(), 16);
    let (_, v) = run(Op::Embed, json!({"content": {"parts": [{"text": "hi"}]}}));
    assert_eq!(v["embedding"]["values"].as_array().unwrap().len(), 768);
    let (s, v) = run(
        Op::BatchEmbed,
        json!({"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "taskType": "RETRIEVAL_DOCUMENT"}]}),
    );
    assert_eq!(s, 200);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    let (s, _) = run(
        Op::BatchEmbed,
        json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}),
    );
    assert_eq!(s, 400);
    let (s, v) = run(
        Op::Predict,
        json!({"instances": [{"content": "hello world", "task_type": "RETRIEVAL_QUERY"}], "parameters": {"outputDimensionality": 8}}),
    );
    assert_eq!(s, 200);
    let p = &v["predictions"][0]["embeddings"];
    assert_eq!(p["values"].as_array().unwrap().len(), 8);
    assert_eq!(p["statistics"]["token_count"], 2);
    assert_eq!(p["statistics"]["truncated"], false);
    assert_eq!(v["metadata"]["billableCharacterCount"], 10);
}
