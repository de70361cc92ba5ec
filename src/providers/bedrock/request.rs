//! OpenAI chat and completions requests → Bedrock Converse requests.

use crate::providers::anthropic::{check_unsupported, non_null, Cx, TranslateError};
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Image formats Converse takes, by media type.
const IMAGE_FORMATS: [(&str, &str); 5] = [
    ("image/jpeg", "jpeg"),
    ("image/jpg", "jpeg"),
    ("image/png", "png"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
];

/// The client's body with the deployment's `params` (raw JSON values) merged where it did not set
/// them.
pub fn with_params(raw: &[u8], params: &[(String, String)]) -> Result<Value, TranslateError> {
    let mut body: Value = serde_json::from_slice(raw)
        .map_err(|e| TranslateError::invalid("body", format!("not JSON: {e}")))?;
    if let Value::Object(map) = &mut body {
        for (k, v) in params {
            if !map.contains_key(k) {
                if let Ok(v) = serde_json::from_str::<Value>(v) {
                    map.insert(k.clone(), v);
                }
            }
        }
    }
    Ok(body)
}

/// The Converse body for an OpenAI chat (`completion: false`) or completions request.
pub fn request_body(
    raw: &[u8],
    params: &[(String, String)],
    completion: bool,
    drop_unsupported: bool,
) -> Result<Bytes, TranslateError> {
    if !completion && params.is_empty() {
        if let Some(b) = super::simple::chat(raw) {
            return Ok(b);
        }
    }
    let body = with_params(raw, params)?;
    let out = if completion {
        completion_to_converse(&body, drop_unsupported)?
    } else {
        chat_to_converse(&body, drop_unsupported)?
    };
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| TranslateError::invalid("body", e.to_string()))
}

/// OpenAI Chat Completions request → Converse request (see the module documentation of
/// [`super`] for the mapping).
pub fn chat_to_converse(body: &Value, drop_unsupported: bool) -> Result<Value, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx { drop_unsupported };
    check_unsupported(req, &mut cx)?;
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "expected an array of messages"))?;
    let (system, turns) = convert_messages(messages, &mut cx)?;
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one user or assistant message is required",
        ));
    }
    let mut out = Map::new();
    // Tool names the conversation uses (Converse wants a toolConfig naming them).
    let used: Vec<String> = turns
        .iter()
        .flat_map(|t| t["content"].as_array().into_iter().flatten())
        .filter_map(|b| b.pointer("/toolUse/name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let has_tool_blocks = turns.iter().any(|t| {
        t["content"].as_array().is_some_and(|c| {
            c.iter()
                .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some())
        })
    });
    out.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let config = inference_config(req, "max_completion_tokens")?;
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(k) = non_null(req, "top_k") {
        if !k.is_number() {
            return Err(TranslateError::invalid("top_k", "expected a number"));
        }
        out.insert(
            "additionalModelRequestFields".into(),
            json!({ "top_k": k.clone() }),
        );
    }
    if let Some(tc) = tool_config(req, &used, has_tool_blocks, &mut cx)? {
        out.insert("toolConfig".into(), tc);
    }
    Ok(Value::Object(out))
}

/// OpenAI completions request → Converse request: the prompt is one user message.
pub fn completion_to_converse(
    body: &Value,
    drop_unsupported: bool,
) -> Result<Value, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx { drop_unsupported };
    check_unsupported(req, &mut cx)?;
    if non_null(req, "echo").is_some_and(|v| v.as_bool() != Some(false)) {
        cx.unsupported("echo", "the prompt is not echoed")?;
    }
    if non_null(req, "best_of").is_some_and(|v| v.as_u64() != Some(1)) {
        cx.unsupported("best_of", "only one completion (best_of = 1) is generated")?;
    }
    if non_null(req, "suffix").is_some() {
        cx.unsupported("suffix", "insertion (a suffix) is not available")?;
    }
    let prompt = match non_null(req, "prompt") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or(""),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            return Err(TranslateError::unsupported(
                "prompt",
                "one prompt per request (Bedrock's Converse answers one conversation)",
            ))
        }
        Some(Value::Array(_)) => {
            return Err(TranslateError::unsupported(
                "prompt",
                "token arrays (send the prompt as text)",
            ))
        }
        _ => return Err(TranslateError::invalid("prompt", "expected a string")),
    };
    if prompt.trim().is_empty() {
        return Err(TranslateError::invalid(
            "prompt",
            "the prompt is empty (Bedrock refuses blank text)",
        ));
    }
    let mut out = Map::new();
    out.insert(
        "messages".into(),
        json!([{"role": "user", "content": [{"text": prompt}]}]),
    );
    let config = inference_config(req, "max_tokens")?;
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

/// `inferenceConfig`: `maxTokens` (`max_completion_tokens` before `max_tokens` for chat),
/// `temperature` clamped to 0..1, `topP`, `stopSequences`.
fn inference_config(
    req: &Map<String, Value>,
    first_limit: &str,
) -> Result<Map<String, Value>, TranslateError> {
    let mut c = Map::new();
    let limit = non_null(req, first_limit)
        .map(|v| (first_limit, v))
        .or_else(|| non_null(req, "max_tokens").map(|v| ("max_tokens", v)));
    if let Some((field, v)) = limit {
        match v.as_u64() {
            Some(n) if n > 0 => {
                c.insert("maxTokens".into(), n.into());
            }
            _ => {
                return Err(TranslateError::invalid(
                    field,
                    "expected a positive integer",
                ))
            }
        }
    }
    if let Some(t) = non_null(req, "temperature") {
        let t = t
            .as_f64()
            .ok_or_else(|| TranslateError::invalid("temperature", "expected a number"))?;
        c.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = non_null(req, "top_p") {
        let p = p
            .as_f64()
            .ok_or_else(|| TranslateError::invalid("top_p", "expected a number"))?;
        c.insert("topP".into(), json!(p.clamp(0.0, 1.0)));
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
        let seqs: Vec<Value> = seqs
            .into_iter()
            .filter(|s| s.as_str().is_some_and(|s| !s.is_empty()))
            .collect();
        if !seqs.is_empty() {
            c.insert("stopSequences".into(), Value::Array(seqs));
        }
    }
    Ok(c)
}

/// `toolConfig` from `tools` and `tool_choice`; the tools the conversation used are declared when
/// the request has none (Converse refuses tool blocks without a toolConfig).
fn tool_config(
    req: &Map<String, Value>,
    used: &[String],
    has_tool_blocks: bool,
    cx: &mut Cx,
) -> Result<Option<Value>, TranslateError> {
    let mut tools = match non_null(req, "tools") {
        Some(t) => convert_tools(t, cx)?,
        None => Vec::new(),
    };
    let choice = match non_null(req, "tool_choice") {
        Some(c) => convert_tool_choice(c)?,
        None => None,
    };
    let none = matches!(non_null(req, "tool_choice"), Some(Value::String(s)) if s == "none");
    if none && !has_tool_blocks {
        // Converse has no `none`: a request that may not call tools is sent without them.
        return Ok(None);
    }
    for name in used {
        let declared = tools
            .iter()
            .any(|t| t.pointer("/toolSpec/name").and_then(Value::as_str) == Some(name));
        if !declared {
            tools.push(json!({"toolSpec": {
                "name": name,
                "inputSchema": {"json": {"type": "object", "properties": {}}},
            }}));
        }
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let mut tc = Map::new();
    tc.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        tc.insert("toolChoice".into(), c);
    }
    Ok(Some(Value::Object(tc)))
}

fn convert_tools(tools: &Value, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
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
        let mut spec = Map::new();
        spec.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = f
            .get("description")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            spec.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        spec.insert("inputSchema".into(), json!({ "json": schema }));
        out.push(json!({ "toolSpec": Value::Object(spec) }));
    }
    Ok(out)
}

/// `auto` / `required` / `{function: {name}}` → `{auto: {}}` / `{any: {}}` / `{tool: {name}}`;
/// `none` → no choice (see [`tool_config`]).
fn convert_tool_choice(c: &Value) -> Result<Option<Value>, TranslateError> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Some(json!({"auto": {}}))),
            "required" => Ok(Some(json!({"any": {}}))),
            "none" => Ok(None),
            other => Err(TranslateError::invalid(
                "tool_choice",
                format!("unknown value `{other}`"),
            )),
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "missing"))?;
            Ok(Some(json!({"tool": {"name": name}})))
        }
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "expected a string or an object",
        )),
    }
}

/// A text block, unless blank (Converse refuses blank text).
fn push_text(blocks: &mut Vec<Value>, s: &str) {
    if !s.trim().is_empty() {
        blocks.push(json!({ "text": s }));
    }
}

/// The text of a content (string, or text parts) as text blocks.
fn text_blocks(content: &Value, field: &str, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    match content {
        Value::Null => {}
        Value::String(s) => push_text(&mut blocks, s),
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => push_text(
                        &mut blocks,
                        part.get("text").and_then(Value::as_str).unwrap_or(""),
                    ),
                    _ => cx.unsupported(format!("{field}[{j}].type"), "only text parts here")?,
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
    Ok(blocks)
}

/// User / assistant content → Converse blocks (text, images).
fn content_blocks(content: &Value, field: &str, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(parts) = content else {
        return text_blocks(content, field, cx);
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => push_text(
                &mut blocks,
                part.get("text").and_then(Value::as_str).unwrap_or(""),
            ),
            Some("refusal") => push_text(
                &mut blocks,
                part.get("refusal").and_then(Value::as_str).unwrap_or(""),
            ),
            Some("image_url") => {
                let f = format!("{field}[{j}].image_url");
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => u.as_str(),
                    Some(o) => o.get("url").and_then(Value::as_str).unwrap_or(""),
                    None => "",
                };
                if let Some(b) = image_block(url, &f, cx)? {
                    blocks.push(b);
                }
            }
            Some(other) => cx.unsupported(
                format!("{field}[{j}].type"),
                &format!("content part `{other}` (only text and image_url)"),
            )?,
            None => {
                return Err(TranslateError::invalid(
                    format!("{field}[{j}].type"),
                    "missing",
                ))
            }
        }
    }
    Ok(blocks)
}

/// A `data:image/...;base64,` URL → `{image: {format, source: {bytes}}}`; an `s3://` URI →
/// `{image: {format, source: {s3Location: {uri}}}}` (format from the file extension). Converse
/// cannot fetch `http(s)` URLs.
fn image_block(url: &str, field: &str, cx: &mut Cx) -> Result<Option<Value>, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::invalid(field, "malformed data: URL"))?;
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(TranslateError::invalid(field, "data: URLs must be base64"));
        };
        let media_type = media_type.to_ascii_lowercase();
        let Some((_, format)) = IMAGE_FORMATS.iter().find(|(m, _)| *m == media_type) else {
            cx.unsupported(
                field,
                "images must be image/jpeg, image/png, image/gif or image/webp",
            )?;
            return Ok(None);
        };
        return Ok(Some(json!({"image": {
            "format": format,
            "source": {"bytes": data},
        }})));
    }
    if url.starts_with("s3://") {
        let ext = url
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let format = match ext.as_str() {
            "jpg" | "jpeg" => "jpeg",
            "png" | "gif" | "webp" => ext.as_str(),
            _ => {
                cx.unsupported(
                    field,
                    "an s3:// image needs a .jpeg, .jpg, .png, .gif or .webp name (its format)",
                )?;
                return Ok(None);
            }
        };
        return Ok(Some(json!({"image": {
            "format": format,
            "source": {"s3Location": {"uri": url}},
        }})));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        cx.unsupported(
            field,
            "Bedrock takes images as base64 data: URLs or s3:// URIs, not http(s) URLs",
        )?;
        return Ok(None);
    }
    Err(TranslateError::invalid(
        field,
        "expected a base64 data: URL or an s3:// URI",
    ))
}

/// An assistant's `tool_calls[j]` → `{toolUse: {toolUseId, name, input}}`.
fn tool_use_block(call: &Value, field: &str) -> Result<Value, TranslateError> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.id"), "missing"))?;
    let function = call
        .get("function")
        .ok_or_else(|| TranslateError::invalid(format!("{field}.function"), "missing"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.function.name"), "missing"))?;
    let input = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
            TranslateError::invalid(
                format!("{field}.function.arguments"),
                format!("not JSON: {e}"),
            )
        })?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.function.arguments"),
                "expected a JSON string",
            ))
        }
    };
    if !input.is_object() {
        return Err(TranslateError::invalid(
            format!("{field}.function.arguments"),
            "must encode a JSON object",
        ));
    }
    Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
}

/// OpenAI messages → (system blocks, alternating Converse turns).
fn convert_messages(
    messages: &[Value],
    cx: &mut Cx,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{field}.role"), "missing"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let cfield = format!("{field}.content");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, &cfield, cx)?);
                continue;
            }
            "user" => ("user", content_blocks(content, &cfield, cx)?),
            "assistant" => {
                let mut blocks = content_blocks(content, &cfield, cx)?;
                if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
                    let calls = calls.as_array().ok_or_else(|| {
                        TranslateError::invalid(format!("{field}.tool_calls"), "expected an array")
                    })?;
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(call, &format!("{field}.tool_calls[{j}]"))?);
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::invalid(format!("{field}.tool_call_id"), "missing")
                    })?;
                let text: String = text_blocks(content, &cfield, cx)?
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n");
                let content = if text.is_empty() {
                    json!([])
                } else {
                    json!([{ "text": text }])
                };
                (
                    "user",
                    vec![
                        json!({"toolResult": {"toolUseId": id, "content": content, "status": "success"}}),
                    ],
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
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // A final assistant turn (a prefill) must not end with whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(Value::String(t)) = blocks.last_mut().and_then(|b| b.get_mut("text")) {
            let trimmed = t.trim_end().len();
            t.truncate(trimmed);
        }
        blocks.retain(|b| b.get("text").and_then(Value::as_str) != Some(""));
        if blocks.is_empty() {
            turns.pop();
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == "user" {
                // Tool results first in a user turn (stable).
                blocks.sort_by_key(|b| b.get("toolResult").is_none());
            }
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, turns))
}
