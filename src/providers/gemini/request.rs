//! OpenAI requests → Gemini `generateContent`, `embedContent` / `batchEmbedContents` and Vertex AI
//! `:predict` bodies (the mapping tables are in the module documentation).

use crate::providers::anthropic::TranslateError;
use serde_json::{json, Map, Value};

/// What a translation does with what has no Gemini equivalent: `drop_params`.
pub(crate) struct Cx {
    pub(crate) drop_unsupported: bool,
}

impl Cx {
    /// `Ok(())` when the unsupported thing may be dropped, the error otherwise.
    pub(crate) fn unsupported(
        &self,
        field: impl Into<String>,
        reason: &str,
    ) -> Result<(), TranslateError> {
        if self.drop_unsupported {
            Ok(())
        } else {
            Err(TranslateError::unsupported(field, reason))
        }
    }
}

pub(crate) fn non_null<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// The request body as an object, with the deployment's `params` (raw JSON values) merged where the
/// client did not set them.
pub(crate) fn parse_with_params(
    raw: &[u8],
    params: &[(String, String)],
) -> Result<Map<String, Value>, TranslateError> {
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| TranslateError::invalid("body", format!("not JSON: {e}")))?;
    let Value::Object(mut map) = body else {
        return Err(TranslateError::invalid("body", "expected a JSON object"));
    };
    for (k, v) in params {
        if !map.contains_key(k) {
            if let Ok(v) = serde_json::from_str::<Value>(v) {
                map.insert(k.clone(), v);
            }
        }
    }
    Ok(map)
}

/// Gemini's thinking budget for OpenAI's `reasoning_effort`.
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "none" | "minimal" => Some(0),
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

/// An OpenAI chat request → a Gemini `GenerateContentRequest`.
pub fn chat_to_gemini(
    req: &Map<String, Value>,
    drop_unsupported: bool,
) -> Result<Value, TranslateError> {
    let cx = Cx { drop_unsupported };
    check_unsupported(req, &cx)?;
    let mut out = Map::new();
    let messages = non_null(req, "messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "expected an array of messages"))?;
    let (system, contents) = convert_messages(messages, &cx)?;
    if contents.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one user or assistant message with content is required",
        ));
    }
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let config = generation_config(req, &cx)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = non_null(req, "tools") {
        let decls = convert_tools(tools, &cx)?;
        if !decls.is_empty() {
            out.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
            if let Some(c) = non_null(req, "tool_choice") {
                out.insert("toolConfig".into(), convert_tool_choice(c)?);
            }
        }
    }
    // Gemini's own safety thresholds, passed through (an extension clients and `params` may set).
    if let Some(s) = non_null(req, "safety_settings").or_else(|| non_null(req, "safetySettings")) {
        if !s.is_array() {
            return Err(TranslateError::invalid(
                "safety_settings",
                "expected a list of {category, threshold}",
            ));
        }
        out.insert("safetySettings".into(), s.clone());
    }
    Ok(Value::Object(out))
}

/// Fields OpenAI has and Gemini cannot honour.
fn check_unsupported(req: &Map<String, Value>, cx: &Cx) -> Result<(), TranslateError> {
    if non_null(req, "logprobs").is_some_and(|v| v.as_bool() != Some(false)) {
        cx.unsupported("logprobs", "log probabilities are not mapped")?;
    }
    if non_null(req, "top_logprobs").is_some() {
        cx.unsupported("top_logprobs", "log probabilities are not mapped")?;
    }
    if non_null(req, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        cx.unsupported("logit_bias", "token biases are not available")?;
    }
    if let Some(m) = non_null(req, "modalities") {
        let text_only = m
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            cx.unsupported("modalities", "only text output")?;
        }
    }
    if non_null(req, "parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        cx.unsupported(
            "parallel_tool_calls",
            "Gemini cannot be told to call one function at a time",
        )?;
    }
    for (key, reason) in [
        ("audio", "audio output is not available"),
        ("prediction", "predicted outputs are not available"),
        ("web_search_options", "web search is not mapped"),
        ("functions", "legacy functions: use `tools`"),
        ("function_call", "legacy function_call: use `tool_choice`"),
    ] {
        if non_null(req, key).is_some() {
            cx.unsupported(key, reason)?;
        }
    }
    Ok(())
}

fn generation_config(
    req: &Map<String, Value>,
    cx: &Cx,
) -> Result<Map<String, Value>, TranslateError> {
    let mut g = Map::new();
    let limit = non_null(req, "max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| non_null(req, "max_tokens").map(|v| ("max_tokens", v)));
    if let Some((field, v)) = limit {
        match v.as_u64() {
            Some(n) if n > 0 => {
                g.insert("maxOutputTokens".into(), n.into());
            }
            _ => {
                return Err(TranslateError::invalid(
                    field,
                    "expected a positive integer",
                ))
            }
        }
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(v) = non_null(req, from) {
            if !v.is_number() {
                return Err(TranslateError::invalid(from, "expected a number"));
            }
            // Zero penalties are OpenAI's defaults; not every Gemini model takes penalties at all.
            if from.ends_with("_penalty") && v.as_f64() == Some(0.0) {
                continue;
            }
            g.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = non_null(req, "n") {
        match n.as_u64() {
            Some(1) => {}
            Some(n @ 2..=8) => {
                g.insert("candidateCount".into(), n.into());
            }
            _ => {
                return Err(TranslateError::invalid(
                    "n",
                    "expected 1 to 8 (Gemini's candidateCount)",
                ))
            }
        }
    }
    if let Some(stop) = non_null(req, "stop") {
        let seqs: Vec<Value> = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
            _ => {
                return Err(TranslateError::invalid(
                    "stop",
                    "expected a string or strings",
                ))
            }
        };
        if seqs.len() > 5 {
            return Err(TranslateError::invalid(
                "stop",
                "Gemini takes at most 5 stop sequences",
            ));
        }
        if !seqs.is_empty() {
            g.insert("stopSequences".into(), Value::Array(seqs));
        }
    }
    if let Some(rf) = non_null(req, "response_format") {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        TranslateError::invalid("response_format.json_schema.schema", "missing")
                    })?;
                g.insert("responseMimeType".into(), json!("application/json"));
                g.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => cx.unsupported("response_format", "only text, json_object and json_schema")?,
        }
    }
    if let Some(e) = non_null(req, "reasoning_effort") {
        match e.as_str().and_then(thinking_budget) {
            Some(budget) => {
                g.insert("thinkingConfig".into(), json!({ "thinkingBudget": budget }));
            }
            None => {
                return Err(TranslateError::invalid(
                    "reasoning_effort",
                    "expected none, minimal, low, medium or high",
                ))
            }
        }
    }
    Ok(g)
}

/// A text part (empty texts are left out: Gemini refuses them).
fn push_text(parts: &mut Vec<Value>, s: &str) {
    if !s.is_empty() {
        parts.push(json!({ "text": s }));
    }
}

/// The MIME type of a file named by a URL, from its extension.
fn mime_of_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        _ => "image/jpeg",
    }
}

/// A `data:<type>;base64,<data>` URL → `inlineData`; an `http(s)` or `gs://` URL → `fileData`.
fn media_part(url: &str, field: &str) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::invalid(field, "malformed data: URL"))?;
        let Some(mime) = meta.strip_suffix(";base64") else {
            return Err(TranslateError::invalid(field, "data: URLs must be base64"));
        };
        let mime = match mime.to_ascii_lowercase().as_str() {
            "image/jpg" => "image/jpeg".to_string(),
            m => m.to_string(),
        };
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        return Ok(json!({ "fileData": { "mimeType": mime_of_url(url), "fileUri": url } }));
    }
    Err(TranslateError::invalid(
        field,
        "expected an http(s) or gs:// URL, or a base64 data: URL",
    ))
}

/// User or assistant content (a string or parts) → Gemini parts.
fn content_parts(
    content: &Value,
    field: &str,
    media: bool,
    cx: &Cx,
) -> Result<Vec<Value>, TranslateError> {
    let mut parts = Vec::new();
    match content {
        Value::Null => {}
        Value::String(s) => push_text(&mut parts, s),
        Value::Array(items) => {
            for (j, part) in items.iter().enumerate() {
                let f = format!("{field}[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => push_text(
                        &mut parts,
                        part.get("text").and_then(Value::as_str).unwrap_or(""),
                    ),
                    Some("refusal") => push_text(
                        &mut parts,
                        part.get("refusal").and_then(Value::as_str).unwrap_or(""),
                    ),
                    Some("image_url") if media => {
                        let url = match part.get("image_url") {
                            Some(Value::String(u)) => u.as_str(),
                            Some(o) => o.get("url").and_then(Value::as_str).unwrap_or(""),
                            None => "",
                        };
                        parts.push(media_part(url, &format!("{f}.image_url"))?);
                    }
                    Some("input_audio") if media => {
                        let a = part.get("input_audio");
                        let data = a.and_then(|a| a.get("data")).and_then(Value::as_str);
                        let format = a.and_then(|a| a.get("format")).and_then(Value::as_str);
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(TranslateError::invalid(
                                format!("{f}.input_audio"),
                                "expected {data, format}",
                            ));
                        };
                        parts.push(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }));
                    }
                    Some("file") if media => {
                        match part
                            .get("file")
                            .and_then(|x| x.get("file_data"))
                            .and_then(Value::as_str)
                        {
                            Some(url) => parts.push(media_part(url, &format!("{f}.file"))?),
                            None => cx.unsupported(
                                format!("{f}.file"),
                                "only inline files (file_data), not uploaded file ids",
                            )?,
                        }
                    }
                    Some(other) => cx.unsupported(
                        format!("{f}.type"),
                        &format!("content part `{other}` is not supported here"),
                    )?,
                    None => return Err(TranslateError::invalid(format!("{f}.type"), "missing")),
                }
            }
        }
        _ => {
            return Err(TranslateError::invalid(
                field,
                "expected a string or an array",
            ))
        }
    }
    Ok(parts)
}

/// `arguments` (a JSON string) → the `args` object.
fn call_args(function: &Value, field: &str) -> Result<Value, TranslateError> {
    let args = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
            TranslateError::invalid(format!("{field}.arguments"), format!("not JSON: {e}"))
        })?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.arguments"),
                "expected a JSON string",
            ))
        }
    };
    if !args.is_object() {
        return Err(TranslateError::invalid(
            format!("{field}.arguments"),
            "must encode a JSON object",
        ));
    }
    Ok(args)
}

/// OpenAI messages → (system instruction parts, Gemini contents with consecutive roles merged).
fn convert_messages(
    messages: &[Value],
    cx: &Cx,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(messages.len());
    // Tool call id → function name (a tool result names only the call).
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{field}.role"), "missing"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let cfield = format!("{field}.content");
        let (role, parts) = match role {
            "system" | "developer" => {
                system.extend(content_parts(content, &cfield, false, cx)?);
                continue;
            }
            "user" => ("user", content_parts(content, &cfield, true, cx)?),
            "assistant" => {
                let mut parts = content_parts(content, &cfield, false, cx)?;
                if let Some(tc) = m.get("tool_calls").filter(|v| !v.is_null()) {
                    let tc = tc.as_array().ok_or_else(|| {
                        TranslateError::invalid(format!("{field}.tool_calls"), "expected an array")
                    })?;
                    for (j, call) in tc.iter().enumerate() {
                        let f = format!("{field}.tool_calls[{j}]");
                        let function = call.get("function").ok_or_else(|| {
                            TranslateError::invalid(format!("{f}.function"), "missing")
                        })?;
                        let name =
                            function
                                .get("name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| {
                                    TranslateError::invalid(format!("{f}.function.name"), "missing")
                                })?;
                        if let Some(id) = call.get("id").and_then(Value::as_str) {
                            calls.push((id.to_string(), name.to_string()));
                        }
                        let args = call_args(function, &format!("{f}.function"))?;
                        parts.push(json!({ "functionCall": { "name": name, "args": args } }));
                    }
                }
                ("model", parts)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str);
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .or_else(|| {
                        id.and_then(|id| {
                            calls
                                .iter()
                                .rev()
                                .find(|(c, _)| c == id)
                                .map(|(_, n)| n.as_str())
                        })
                    })
                    .ok_or_else(|| {
                        TranslateError::invalid(
                            format!("{field}.tool_call_id"),
                            "does not name a tool call of an earlier assistant message",
                        )
                    })?
                    .to_string();
                let text: String = content_parts(content, &cfield, false, cx)?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                // A JSON object answer is given as it is; anything else as `{"content": text}`.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                )
            }
            "function" => {
                cx.unsupported(
                    format!("{field}.role"),
                    "legacy `function` messages: use `tool`",
                )?;
                continue;
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{field}.role"),
                    format!("unknown role `{other}`"),
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, p)) if *r == role => p.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    Ok((system, contents))
}

fn convert_tools(tools: &Value, cx: &Cx) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "expected an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            cx.unsupported(format!("tools[{i}].type"), "only function tools")?;
            continue;
        }
        let f = t
            .get("function")
            .ok_or_else(|| TranslateError::invalid(format!("tools[{i}].function"), "missing"))?;
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
            TranslateError::invalid(format!("tools[{i}].function.name"), "missing")
        })?;
        let mut decl = Map::new();
        decl.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            decl.insert("description".into(), Value::String(d.to_owned()));
        }
        // Gemini refuses an object schema without properties: a function without parameters
        // declares none.
        if let Some(p) = f.get("parameters").filter(|p| has_properties(p)) {
            decl.insert("parametersJsonSchema".into(), p.clone());
        }
        out.push(Value::Object(decl));
    }
    Ok(out)
}

fn has_properties(schema: &Value) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
}

fn convert_tool_choice(c: &Value) -> Result<Value, TranslateError> {
    let config = match c {
        Value::String(s) => match s.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unknown value `{other}`"),
                ))
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "missing"))?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
        _ => {
            return Err(TranslateError::invalid(
                "tool_choice",
                "expected a string or an object",
            ))
        }
    };
    Ok(json!({ "functionCallingConfig": config }))
}

/// An OpenAI embeddings request's texts, in order.
pub fn embedding_inputs(req: &Map<String, Value>) -> Result<Vec<String>, TranslateError> {
    match non_null(req, "input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(a)) if !a.is_empty() => Err(TranslateError::unsupported(
            "input",
            "token arrays cannot be embedded by Google's models: send text",
        )),
        _ => Err(TranslateError::invalid(
            "input",
            "expected a string or a non-empty array of strings",
        )),
    }
}

/// `dimensions` and the `task_type` extension of an embeddings request.
pub struct EmbedOptions {
    pub dimensions: Option<u64>,
    pub task_type: Option<String>,
}

pub fn embed_options(req: &Map<String, Value>) -> Result<EmbedOptions, TranslateError> {
    let dimensions =
        match non_null(req, "dimensions") {
            Some(d) => Some(d.as_u64().filter(|d| *d > 0).ok_or_else(|| {
                TranslateError::invalid("dimensions", "expected a positive integer")
            })?),
            None => None,
        };
    let task_type = non_null(req, "task_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(EmbedOptions {
        dimensions,
        task_type,
    })
}

/// Gemini: one text → `embedContent`'s body; several → `batchEmbedContents`' (each request naming
/// `models/{model}`). Returns the body and whether it is the batch form.
pub fn gemini_embed_body(texts: &[String], model: &str, o: &EmbedOptions) -> (Value, bool) {
    let one = |t: &str| {
        let mut r = Map::new();
        r.insert("content".into(), json!({ "parts": [{ "text": t }] }));
        if let Some(d) = o.dimensions {
            r.insert("outputDimensionality".into(), d.into());
        }
        if let Some(t) = &o.task_type {
            r.insert("taskType".into(), Value::String(t.clone()));
        }
        r
    };
    match texts {
        [t] => (Value::Object(one(t)), false),
        _ => {
            let requests: Vec<Value> = texts
                .iter()
                .map(|t| {
                    let mut r = one(t);
                    r.insert("model".into(), Value::String(format!("models/{model}")));
                    Value::Object(r)
                })
                .collect();
            (json!({ "requests": requests }), true)
        }
    }
}

/// Vertex AI text embeddings: `{instances: [{content, task_type}], parameters}`.
pub fn vertex_predict_body(texts: &[String], o: &EmbedOptions) -> Value {
    let instances: Vec<Value> = texts
        .iter()
        .map(|t| match &o.task_type {
            Some(task) => json!({ "content": t, "task_type": task }),
            None => json!({ "content": t }),
        })
        .collect();
    let mut out = json!({ "instances": instances });
    if let Some(d) = o.dimensions {
        out["parameters"] = json!({ "outputDimensionality": d });
    }
    out
}
