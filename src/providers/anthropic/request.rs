//! OpenAI chat request → Anthropic Messages request.

use super::*;
use bytes::Bytes;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Request: OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------

/// OpenAI Chat Completions request → Anthropic Messages request for `model` (the deployment's
/// upstream model name). Unsupported fields are an error; see the module documentation.
pub fn chat_to_messages(
    body: &Value,
    model: &str,
    default_max_tokens: u64,
) -> Result<Value, TranslateError> {
    chat_to_messages_with(body, model, default_max_tokens, false)
}

/// The upstream body for an OpenAI chat request `raw` sent to an Anthropic deployment `model`:
/// `params` (the deployment's defaults, raw JSON values) are merged where the client did not set
/// them, then [`chat_to_messages_with`] translates.
pub fn request_body(
    raw: &[u8],
    model: &str,
    params: &[(String, String)],
    default_max_tokens: u64,
    drop_unsupported: bool,
) -> Result<Bytes, TranslateError> {
    if params.is_empty() {
        if let Some(b) = super::simple::chat(raw, model, default_max_tokens) {
            return Ok(b);
        }
    }
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
    let out = chat_to_messages_with(&body, model, default_max_tokens, drop_unsupported)?;
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| TranslateError::invalid("body", e.to_string()))
}

/// [`chat_to_messages`], dropping the unsupported fields instead of failing when
/// `drop_unsupported` (`drop_params`). Malformed fields are an error either way.
pub fn chat_to_messages_with(
    body: &Value,
    model: &str,
    default_max_tokens: u64,
    drop_unsupported: bool,
) -> Result<Value, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx { drop_unsupported };
    check_unsupported(req, &mut cx)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));

    let max_tokens = match non_null(req, "max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| non_null(req, "max_tokens").map(|v| ("max_tokens", v)))
    {
        Some((field, v)) => match v.as_u64() {
            Some(n) if n > 0 => n,
            _ => {
                return Err(TranslateError::invalid(
                    field,
                    "expected a positive integer",
                ))
            }
        },
        None => default_max_tokens,
    };
    out.insert("max_tokens".into(), max_tokens.into());

    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "expected an array of messages"))?;
    let (system, turns) = convert_messages(messages, &mut cx)?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one user or assistant message is required",
        ));
    }
    out.insert("messages".into(), Value::Array(turns));

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
        if !seqs.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(seqs));
        }
    }
    if let Some(t) = non_null(req, "temperature") {
        let t = t
            .as_f64()
            .ok_or_else(|| TranslateError::invalid("temperature", "expected a number"))?;
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    for key in ["top_p", "top_k"] {
        if let Some(v) = non_null(req, key) {
            if !v.is_number() {
                return Err(TranslateError::invalid(key, "expected a number"));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(s) = non_null(req, "stream") {
        let s = s
            .as_bool()
            .ok_or_else(|| TranslateError::invalid("stream", "expected a boolean"))?;
        out.insert("stream".into(), Value::Bool(s));
    }
    if let Some(u) = non_null(req, "user") {
        let u = u
            .as_str()
            .ok_or_else(|| TranslateError::invalid("user", "expected a string"))?;
        out.insert("metadata".into(), json!({ "user_id": u }));
    }

    let has_tools = if let Some(tools) = non_null(req, "tools") {
        let tools = convert_tools(tools, &mut cx)?;
        let any = !tools.is_empty();
        if any {
            out.insert("tools".into(), Value::Array(tools));
        }
        any
    } else {
        false
    };
    let parallel = non_null(req, "parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match non_null(req, "tool_choice") {
        Some(c) => Some(convert_tool_choice(c)?),
        None => None,
    };
    if parallel == Some(false) && has_tools {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(c) = choice {
        // Without tools only `none` is meaningful, and Anthropic would reject the others.
        if has_tools {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}

/// What a translation (either direction) does with what has no equivalent: `drop_params`.
pub(crate) struct Cx {
    pub(crate) drop_unsupported: bool,
}

impl Cx {
    /// `Ok(())` when the unsupported thing may be dropped, the error otherwise.
    pub(crate) fn unsupported(
        &mut self,
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

pub(crate) fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

/// Fields OpenAI has and Anthropic cannot honour (unless trivially droppable).
pub(crate) fn check_unsupported(
    req: &Map<String, Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    if let Some(n) = non_null(req, "n") {
        if n.as_u64() != Some(1) {
            cx.unsupported("n", "only one choice (n = 1) can be generated")?;
        }
    }
    if non_null(req, "logprobs").is_some_and(|v| v.as_bool() != Some(false)) {
        cx.unsupported("logprobs", "log probabilities are not available")?;
    }
    if non_null(req, "top_logprobs").is_some() {
        cx.unsupported("top_logprobs", "log probabilities are not available")?;
    }
    if let Some(rf) = non_null(req, "response_format") {
        if rf.get("type").and_then(Value::as_str) != Some("text") {
            cx.unsupported(
                "response_format",
                "only {\"type\": \"text\"}; use tools for structured output",
            )?;
        }
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if non_null(req, key).is_some_and(|v| !is_zero(v)) {
            cx.unsupported(key, "penalties are not available (only 0)")?;
        }
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
    for (key, reason) in [
        ("audio", "audio output is not available"),
        ("prediction", "predicted outputs are not available"),
        ("reasoning_effort", "reasoning effort is not mapped"),
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

/// Text of a message content (string or parts) as Anthropic text blocks (system messages, tool
/// results).
pub(super) fn text_blocks(
    content: &Value,
    field: &str,
    cx: &mut Cx,
) -> Result<Vec<Value>, TranslateError> {
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

pub(super) fn push_text(blocks: &mut Vec<Value>, s: &str) {
    if !s.is_empty() {
        blocks.push(json!({"type": "text", "text": s}));
    }
}

/// User / assistant content → Anthropic blocks.
pub(super) fn content_blocks(
    content: &Value,
    field: &str,
    cx: &mut Cx,
) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::Array(parts) => parts,
        _ => return text_blocks(content, field, cx),
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

pub(super) const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

pub(super) fn image_block(
    url: &str,
    field: &str,
    cx: &mut Cx,
) -> Result<Option<Value>, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::invalid(field, "malformed data: URL"))?;
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(TranslateError::invalid(field, "data: URLs must be base64"));
        };
        let media_type = media_type.to_ascii_lowercase();
        let media_type = if media_type == "image/jpg" {
            "image/jpeg".to_owned()
        } else {
            media_type
        };
        if !IMAGE_TYPES.contains(&media_type.as_str()) {
            cx.unsupported(
                field,
                "images must be image/jpeg, image/png, image/gif or image/webp",
            )?;
            return Ok(None);
        }
        return Ok(Some(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        })));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Some(json!({
            "type": "image",
            "source": {"type": "url", "url": url},
        })));
    }
    Err(TranslateError::invalid(
        field,
        "expected an http(s) URL or a base64 data: URL",
    ))
}

/// OpenAI messages → (system blocks, alternating Anthropic turns).
pub(super) fn convert_messages(
    messages: &[Value],
    cx: &mut Cx,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    // (role, blocks) with consecutive roles merged.
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
                let inner = text_blocks(content, &cfield, cx)?;
                let content = match inner.as_slice() {
                    [] => Value::String(String::new()),
                    [one] => one.get("text").cloned().unwrap_or(Value::Null),
                    _ => Value::Array(inner),
                };
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
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
    // A prefill (final assistant turn) must not end with whitespace.
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
                blocks
                    .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            }
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, turns))
}

pub(super) fn tool_use_block(call: &Value, field: &str) -> Result<Value, TranslateError> {
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
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

pub(super) fn convert_tools(tools: &Value, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
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
        let mut tool = Map::new();
        tool.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            tool.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        tool.insert("input_schema".into(), schema);
        out.push(Value::Object(tool));
    }
    Ok(out)
}

pub(super) fn convert_tool_choice(c: &Value) -> Result<Value, TranslateError> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
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
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "expected a string or an object",
        )),
    }
}
