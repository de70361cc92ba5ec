//! Anthropic Messages request → OpenAI chat request.

use super::*;
use crate::providers::anthropic::{non_null, Cx, TranslateError};
use bytes::Bytes;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Request: Anthropic → OpenAI
// ---------------------------------------------------------------------------------------------

/// Anthropic Messages request → OpenAI Chat Completions request for `model` (the deployment's
/// upstream model name), with the default [`Options`]. See the module documentation.
pub fn messages_to_chat_request(body: &Value, model: &str) -> Result<Value, TranslateError> {
    messages_to_chat_request_with(body, model, Options::default())
}

/// The upstream body for an Anthropic request `raw` sent to an OpenAI-style deployment `model`:
/// [`messages_to_chat_request_with`] translates, then `params` (the deployment's defaults, raw
/// JSON values of OpenAI fields) are added where the translation did not set them (`max_tokens`
/// and `max_completion_tokens` count as one field).
pub fn request_body(
    raw: &[u8],
    model: &str,
    params: &[(String, String)],
    opts: Options,
) -> Result<Bytes, TranslateError> {
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| TranslateError::invalid("body", format!("not JSON: {e}")))?;
    let mut out = messages_to_chat_request_with(&body, model, opts)?;
    if let Value::Object(map) = &mut out {
        for (k, v) in params {
            let limit = k == "max_tokens" || k == "max_completion_tokens";
            let set = map.contains_key(k)
                || (limit
                    && (map.contains_key("max_tokens")
                        || map.contains_key("max_completion_tokens")));
            if !set {
                if let Ok(v) = serde_json::from_str::<Value>(v) {
                    map.insert(k.clone(), v);
                }
            }
        }
    }
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| TranslateError::invalid("body", e.to_string()))
}

/// [`messages_to_chat_request`] with explicit [`Options`].
pub fn messages_to_chat_request_with(
    body: &Value,
    model: &str,
    opts: Options,
) -> Result<Value, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx {
        drop_unsupported: opts.drop_unsupported,
    };
    check_fields(req, &mut cx)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));

    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "expected an array of messages"))?;
    if messages.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one message is required",
        ));
    }
    let mut chat = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = non_null(req, "system") {
        if let Some(content) = system_content(system, &mut cx)? {
            chat.push(json!({"role": "system", "content": content}));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        convert_message(m, i, &mut chat, &mut cx)?;
    }
    out.insert("messages".into(), Value::Array(chat));

    if let Some(v) = non_null(req, "max_tokens") {
        match v.as_u64() {
            Some(n) if n > 0 => {
                out.insert(opts.limit_field.key().into(), n.into());
            }
            _ => {
                return Err(TranslateError::invalid(
                    "max_tokens",
                    "expected a positive integer",
                ))
            }
        }
    }
    if let Some(v) = non_null(req, "stop_sequences") {
        let seqs = v
            .as_array()
            .filter(|a| a.iter().all(Value::is_string))
            .ok_or_else(|| {
                TranslateError::invalid("stop_sequences", "expected an array of strings")
            })?;
        if !seqs.is_empty() {
            out.insert("stop".into(), Value::Array(seqs.clone()));
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = non_null(req, key) {
            if !v.is_number() {
                return Err(TranslateError::invalid(key, "expected a number"));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = non_null(req, "top_k") {
        // Dropped (see the module documentation), but still a number.
        if !v.is_number() {
            return Err(TranslateError::invalid("top_k", "expected a number"));
        }
    }
    if let Some(m) = non_null(req, "metadata") {
        let m = m
            .as_object()
            .ok_or_else(|| TranslateError::invalid("metadata", "expected an object"))?;
        match m.get("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) => {
                out.insert("user".into(), Value::String(u.clone()));
            }
            Some(_) => {
                return Err(TranslateError::invalid(
                    "metadata.user_id",
                    "expected a string",
                ))
            }
        }
    }
    if let Some(s) = non_null(req, "stream") {
        let s = s
            .as_bool()
            .ok_or_else(|| TranslateError::invalid("stream", "expected a boolean"))?;
        if s {
            out.insert("stream".into(), Value::Bool(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }

    let has_tools = match non_null(req, "tools") {
        Some(tools) => {
            let tools = convert_tools(tools, &mut cx)?;
            let any = !tools.is_empty();
            if any {
                out.insert("tools".into(), Value::Array(tools));
            }
            any
        }
        None => false,
    };
    if let Some(c) = non_null(req, "tool_choice") {
        let (choice, parallel) = convert_tool_choice(c)?;
        // Without tools OpenAI rejects `tool_choice`; Anthropic's `none` means the same anyway.
        if has_tools {
            if parallel == Some(false) && choice != "none" {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(Value::Object(out))
}

/// Top-level fields: translated, dropped, or refused.
pub(super) fn check_fields(req: &Map<String, Value>, cx: &mut Cx) -> Result<(), TranslateError> {
    for (k, v) in req {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" | "messages" | "system" | "max_tokens" | "stop_sequences" | "temperature"
            | "top_p" | "metadata" | "stream" | "tools" | "tool_choice" => {}
            "top_k" | "thinking" | "service_tier" | "cache_control" => {}
            "container" => cx.unsupported(
                k.as_str(),
                "code execution containers are Anthropic server features",
            )?,
            "mcp_servers" => cx.unsupported(
                k.as_str(),
                "the MCP connector is an Anthropic server feature",
            )?,
            "context_management" => {
                cx.unsupported(k.as_str(), "context editing is an Anthropic server feature")?
            }
            _ => cx.unsupported(k.as_str(), "unknown field, not translated for this model")?,
        }
    }
    Ok(())
}

/// `system` → the system message content (`None` when empty).
pub(super) fn system_content(system: &Value, cx: &mut Cx) -> Result<Option<Value>, TranslateError> {
    match system {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(Value::String(s.clone()))),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = text_of(b, &format!("system[{j}]"))?;
                        if !t.is_empty() {
                            texts.push(t);
                        }
                    }
                    Some(other) => cx.unsupported(
                        format!("system[{j}].type"),
                        &format!("`{other}` blocks in the system prompt (only text)"),
                    )?,
                    None => {
                        return Err(TranslateError::invalid(
                            format!("system[{j}].type"),
                            "missing",
                        ))
                    }
                }
            }
            Ok(match texts.as_slice() {
                [] => None,
                [one] => Some(Value::String((*one).to_owned())),
                _ => Some(Value::Array(texts.iter().map(|t| text_part(t)).collect())),
            })
        }
        _ => Err(TranslateError::invalid(
            "system",
            "expected a string or an array of text blocks",
        )),
    }
}

pub(super) fn text_of<'a>(block: &'a Value, field: &str) -> Result<&'a str, TranslateError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.text"), "expected a string"))
}

pub(super) fn text_part(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

/// One Anthropic turn → OpenAI messages, appended to `out`.
pub(super) fn convert_message(
    m: &Value,
    i: usize,
    out: &mut Vec<Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    let field = format!("messages[{i}]");
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some(other) => {
            return Err(TranslateError::invalid(
                format!("{field}.role"),
                format!("`{other}` (expected user or assistant; the system prompt is `system`)"),
            ))
        }
        None => return Err(TranslateError::invalid(format!("{field}.role"), "missing")),
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string or an array of content blocks",
            ))
        }
    };
    if role == "user" {
        user_blocks(blocks, &field, out, cx)
    } else {
        assistant_blocks(blocks, &field, out, cx)
    }
}

pub(super) fn block_type<'a>(b: &'a Value, field: &str) -> Result<&'a str, TranslateError> {
    b.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.type"), "missing"))
}

pub(super) fn user_blocks(
    blocks: &[Value],
    field: &str,
    out: &mut Vec<Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, b) in blocks.iter().enumerate() {
        let f = format!("{field}.content[{j}]");
        match block_type(b, &f)? {
            "text" => parts.push(text_part(text_of(b, &f)?)),
            "image" => {
                if let Some(p) = image_part(b, &f, cx)? {
                    parts.push(p);
                }
            }
            // Tool results answer the previous assistant turn: they come first.
            "tool_result" => {
                out.push(tool_message(b, &f, cx)?);
            }
            "thinking" | "redacted_thinking" => {}
            "tool_use" => {
                return Err(TranslateError::invalid(
                    format!("{f}.type"),
                    "tool_use blocks belong in assistant turns",
                ))
            }
            other => cx.unsupported(format!("{f}.type"), &block_reason(other))?,
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [one] if one.get("type").and_then(Value::as_str) == Some("text") => {
                one.get("text").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Array(parts),
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

pub(super) fn block_reason(ty: &str) -> String {
    match ty {
        "document" => {
            "`document` blocks (PDF, text files) are not translated for this model".into()
        }
        _ => format!("`{ty}` blocks have no OpenAI equivalent"),
    }
}

pub(super) fn assistant_blocks(
    blocks: &[Value],
    field: &str,
    out: &mut Vec<Value>,
    cx: &mut Cx,
) -> Result<(), TranslateError> {
    let mut text = String::new();
    let mut any_text = false;
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let f = format!("{field}.content[{j}]");
        match block_type(b, &f)? {
            "text" => {
                text.push_str(text_of(b, &f)?);
                any_text = true;
            }
            "tool_use" => calls.push(tool_call(b, &f)?),
            "thinking" | "redacted_thinking" => {}
            "tool_result" => {
                return Err(TranslateError::invalid(
                    format!("{f}.type"),
                    "tool_result blocks belong in user turns",
                ))
            }
            "image" => cx.unsupported(
                format!("{f}.type"),
                "images in assistant turns (OpenAI assistant messages carry text only)",
            )?,
            other => cx.unsupported(format!("{f}.type"), &block_reason(other))?,
        }
    }
    if !any_text && calls.is_empty() {
        return Ok(());
    }
    let mut msg = Map::new();
    msg.insert("role".into(), Value::String("assistant".into()));
    let content = if !any_text || (text.is_empty() && !calls.is_empty()) {
        Value::Null
    } else {
        Value::String(text)
    };
    msg.insert("content".into(), content);
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

pub(super) fn tool_call(b: &Value, field: &str) -> Result<Value, TranslateError> {
    let id = b
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.id"), "missing"))?;
    let name = b
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.name"), "missing"))?;
    let arguments = match b.get("input") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    };
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }))
}

pub(super) fn tool_message(b: &Value, field: &str, cx: &mut Cx) -> Result<Value, TranslateError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.tool_use_id"), "missing"))?;
    let mut text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut text = String::new();
            let mut first = true;
            for (k, item) in items.iter().enumerate() {
                let f = format!("{field}.content[{k}]");
                match block_type(item, &f)? {
                    "text" => {
                        if !first {
                            text.push('\n');
                        }
                        text.push_str(text_of(item, &f)?);
                        first = false;
                    }
                    "image" => cx.unsupported(
                        format!("{f}.type"),
                        "images in tool results (OpenAI tool messages carry text only)",
                    )?,
                    other => cx.unsupported(format!("{f}.type"), &block_reason(other))?,
                }
            }
            text
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string or an array of content blocks",
            ))
        }
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true)
        && !text
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("error"))
    {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

pub(super) fn image_part(
    b: &Value,
    field: &str,
    cx: &mut Cx,
) -> Result<Option<Value>, TranslateError> {
    let source = b
        .get("source")
        .ok_or_else(|| TranslateError::invalid(format!("{field}.source"), "missing"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::invalid(format!("{field}.source.media_type"), "missing")
                })?;
            let data = source.get("data").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid(format!("{field}.source.data"), "missing")
            })?;
            let mut url = String::with_capacity(13 + media_type.len() + data.len());
            url.push_str("data:");
            url.push_str(media_type);
            url.push_str(";base64,");
            url.push_str(data);
            url
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{field}.source.url"), "missing"))?
            .to_owned(),
        Some(other) => {
            cx.unsupported(
                format!("{field}.source.type"),
                &format!("image sources of type `{other}` (only base64 and url)"),
            )?;
            return Ok(None);
        }
        None => {
            return Err(TranslateError::invalid(
                format!("{field}.source.type"),
                "missing",
            ))
        }
    };
    Ok(Some(
        json!({"type": "image_url", "image_url": {"url": url}}),
    ))
}

pub(super) fn convert_tools(tools: &Value, cx: &mut Cx) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "expected an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        match t.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "custom" => {}
            Some(ty) => {
                let ty = ty.as_str().unwrap_or("?");
                cx.unsupported(
                    format!("tools[{i}].type"),
                    &format!("`{ty}` is an Anthropic-defined tool; only custom tools (name, input_schema) are translated"),
                )?;
                continue;
            }
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("tools[{i}].name"), "missing"))?;
        let mut f = Map::new();
        f.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = match t.get("input_schema") {
            Some(s @ Value::Object(_)) => s.clone(),
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(_) => {
                return Err(TranslateError::invalid(
                    format!("tools[{i}].input_schema"),
                    "expected an object",
                ))
            }
        };
        f.insert("parameters".into(), schema);
        if let Some(s) = t.get("strict").and_then(Value::as_bool) {
            f.insert("strict".into(), Value::Bool(s));
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(out)
}

/// Anthropic `tool_choice` → (OpenAI `tool_choice`, `parallel_tool_calls` when set).
pub(super) fn convert_tool_choice(c: &Value) -> Result<(Value, Option<bool>), TranslateError> {
    let o = c.as_object().ok_or_else(|| {
        TranslateError::invalid("tool_choice", "expected an object with a `type`")
    })?;
    let choice = match o.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        Some(other) => {
            return Err(TranslateError::invalid(
                "tool_choice.type",
                format!("unknown value `{other}`"),
            ))
        }
        None => return Err(TranslateError::invalid("tool_choice.type", "missing")),
    };
    let parallel = match o.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(d)) => Some(!d),
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice.disable_parallel_tool_use",
                "expected a boolean",
            ))
        }
    };
    Ok((choice, parallel))
}
