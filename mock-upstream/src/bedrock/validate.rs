//! Converse request validation: what Bedrock refuses with a `ValidationException` (its
//! "1 validation error detected" messages for member constraints, unknown fields, content blocks,
//! images, tool results, `inferenceConfig` and `toolConfig`).

use super::*;

fn constraint(value: &Value, at: &str, constraint: &str) -> String {
    format!("1 validation error detected: Value '{value}' at '{at}' failed to satisfy constraint: {constraint}")
}

/// Validate a Converse request as Bedrock does (the subset a gateway's translation could get
/// wrong). `Err` is the `ValidationException` message.
pub(super) fn validate_converse(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or_else(|| {
        "Malformed input request: the request body must be a JSON object.".to_owned()
    })?;
    if let Some(k) = o.keys().find(|k| !CONVERSE_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: #: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    if let Some(system) = o.get("system") {
        let blocks = system.as_array().ok_or_else(|| {
            "Malformed input request: #/system: expected type: JSONArray".to_owned()
        })?;
        for (j, b) in blocks.iter().enumerate() {
            let kind = one_member(
                b,
                &["text", "guardContent", "cachePoint"],
                &format!("system.{j}"),
            )?;
            if kind == "text" && b["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
                return Err(format!(
                    "The text field in the SystemContentBlock object at system.{j} is blank. Add text to the text field, and try again."
                ));
            }
        }
    }
    if let Some(ic) = o.get("inferenceConfig") {
        validate_inference_config(ic)?;
    }
    if let Some(tc) = o.get("toolConfig") {
        validate_tool_config(tc)?;
    }
    let messages = match o.get("messages") {
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) => {
            return Err("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null".to_owned())
        }
        Some(_) => return Err("Malformed input request: #/messages: expected type: JSONArray".to_owned()),
    };
    if messages.is_empty() {
        return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned());
    }
    let mut prev: Option<&str> = None;
    let mut pending: Vec<String> = Vec::new();
    let mut uses_tools = false;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(constraint(
                m.get("role").unwrap_or(&Value::Null),
                &format!("messages.{}.member.role", i + 1),
                "Member must satisfy enum value set: [user, assistant]",
            ));
        }
        if i == 0 && role != "user" {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned());
        }
        if prev == Some(role) {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".to_owned());
        }
        prev = Some(role);
        let content = match m.get("content") {
            Some(Value::Array(c)) if !c.is_empty() => c,
            Some(Value::Array(_)) => {
                return Err(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ))
            }
            _ => {
                return Err(format!(
                    "1 validation error detected: Value null at 'messages.{}.member.content' failed to satisfy constraint: Member must not be null",
                    i + 1
                ))
            }
        };
        let mut uses = Vec::new();
        let mut results = Vec::new();
        for (j, b) in content.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match one_member(b, BLOCK_KINDS, &at)? {
                "text" if b["text"].as_str().is_none_or(|t| t.trim().is_empty()) => {
                    return Err(format!(
                        "The text field in the ContentBlock object at {at} is blank. Add text to the text field, and try again."
                    ));
                }
                "image" => validate_image(&b["image"], &at)?,
                "toolUse" => {
                    uses_tools = true;
                    if role != "assistant" {
                        return Err(format!(
                            "The toolUse block at {at} must be in an assistant message."
                        ));
                    }
                    let tu = &b["toolUse"];
                    let id = tu.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    if id.is_empty()
                        || tu
                            .get("name")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                    {
                        return Err(format!(
                            "The toolUse block at {at} requires a toolUseId and a name."
                        ));
                    }
                    if !tu.get("input").is_some_and(Value::is_object) {
                        return Err(format!(
                            "The toolUse block at {at} requires an input object."
                        ));
                    }
                    uses.push(id.to_owned());
                }
                "toolResult" => {
                    uses_tools = true;
                    if role != "user" {
                        return Err(format!(
                            "The toolResult block at {at} must be in a user message."
                        ));
                    }
                    let tr = &b["toolResult"];
                    let id = tr.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    validate_tool_result(tr, &at)?;
                    results.push(id.to_owned());
                }
                _ => {}
            }
        }
        if role == "user" {
            if results.len() > pending.len() {
                return Err(format!(
                    "The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of previous turn."
                ));
            }
            let missing: Vec<&str> = pending
                .iter()
                .filter(|id| !results.contains(id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "Expected toolResult blocks at messages.{i}.content for the following Ids: {}",
                    missing.join(", ")
                ));
            }
            pending.clear();
        } else {
            pending = uses;
        }
    }
    if uses_tools && o.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".to_owned());
    }
    Ok(())
}

/// The one member of a union object (`Err` when it has none, several, or an unknown one).
fn one_member<'a>(b: &'a Value, kinds: &[&str], at: &str) -> Result<&'a str, String> {
    let o = b
        .as_object()
        .ok_or_else(|| format!("Malformed input request: #/{at}: expected type: JSONObject"))?;
    if let Some(k) = o.keys().find(|k| !kinds.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: #/{at}: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    match o.keys().next() {
        Some(k) if o.len() == 1 => Ok(k.as_str()),
        _ => Err(format!(
            "1 validation error detected: Value at '{at}' failed to satisfy constraint: Member must have exactly one field set"
        )),
    }
}

fn validate_image(img: &Value, at: &str) -> Result<(), String> {
    let format = img.get("format").and_then(Value::as_str).unwrap_or("");
    if !IMAGE_FORMATS.contains(&format) {
        return Err(constraint(
            img.get("format").unwrap_or(&Value::Null),
            &format!("{at}.member.image.format"),
            "Member must satisfy enum value set: [png, jpeg, gif, webp]",
        ));
    }
    let source = img.get("source").and_then(Value::as_object);
    if source.is_some_and(|s| s.contains_key("s3Location")) {
        return Ok(());
    }
    let Some(data) = source.and_then(|s| s.get("bytes")).and_then(Value::as_str) else {
        return Err(format!(
            "The image source at {at} must have bytes or an s3Location."
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| format!("The image bytes at {at} are not valid base64."))?;
    let matches = match format {
        "png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "jpeg" => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
        "gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        _ => bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP",
    };
    if !matches {
        return Err(format!(
            "Could not process image at {at}: its bytes are not a valid {format} image."
        ));
    }
    Ok(())
}

fn validate_tool_result(tr: &Value, at: &str) -> Result<(), String> {
    if tr
        .get("toolUseId")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!(
            "The toolResult block at {at} requires a toolUseId."
        ));
    }
    let content = tr
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("The toolResult block at {at} requires a content list."))?;
    for (k, c) in content.iter().enumerate() {
        one_member(
            c,
            &["text", "json", "image", "document", "video", "searchResult"],
            &format!("{at}.toolResult.content.{k}"),
        )?;
    }
    match tr.get("status") {
        None => Ok(()),
        Some(Value::String(s)) if s == "success" || s == "error" => Ok(()),
        Some(s) => Err(constraint(
            s,
            &format!("{at}.member.toolResult.status"),
            "Member must satisfy enum value set: [success, error]",
        )),
    }
}

fn validate_inference_config(ic: &Value) -> Result<(), String> {
    let o = ic.as_object().ok_or_else(|| {
        "Malformed input request: #/inferenceConfig: expected type: JSONObject".to_owned()
    })?;
    for (k, v) in o {
        match k.as_str() {
            "maxTokens" => {
                if v.as_u64().is_none_or(|n| n < 1) {
                    return Err(constraint(v, "inferenceConfig.maxTokens", "Member must have value greater than or equal to 1"));
                }
            }
            "temperature" | "topP" => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => {}
                Some(x) if x < 0.0 => {
                    return Err(constraint(v, &format!("inferenceConfig.{k}"), "Member must have value greater than or equal to 0"))
                }
                _ => {
                    return Err(constraint(v, &format!("inferenceConfig.{k}"), "Member must have value less than or equal to 1"))
                }
            },
            "stopSequences" => {
                let ok = v.as_array().is_some_and(|a| a.len() <= 4 && a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())));
                if !ok {
                    return Err(constraint(v, "inferenceConfig.stopSequences", "Member must have length less than or equal to 4, of non-empty strings"));
                }
            }
            other => {
                return Err(format!(
                    "Malformed input request: #/inferenceConfig: extraneous key [{other}] is not permitted, please reformat your input and try again."
                ))
            }
        }
    }
    Ok(())
}

fn validate_tool_config(tc: &Value) -> Result<(), String> {
    let o = tc.as_object().ok_or_else(|| {
        "Malformed input request: #/toolConfig: expected type: JSONObject".to_owned()
    })?;
    if let Some(k) = o.keys().find(|k| *k != "tools" && *k != "toolChoice") {
        return Err(format!(
            "Malformed input request: #/toolConfig: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    let tools = match o.get("tools") {
        Some(Value::Array(t)) if !t.is_empty() => t,
        other => {
            return Err(constraint(
                other.unwrap_or(&Value::Null),
                "toolConfig.tools",
                "Member must have length greater than or equal to 1",
            ))
        }
    };
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let at = format!("toolConfig.tools.{i}");
        if one_member(t, &["toolSpec", "cachePoint", "systemTool"], &at)? != "toolSpec" {
            continue;
        }
        let spec = &t["toolSpec"];
        let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(constraint(
                spec.get("name").unwrap_or(&Value::Null),
                &format!("{at}.member.toolSpec.name"),
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+",
            ));
        }
        if !spec
            .pointer("/inputSchema/json")
            .is_some_and(Value::is_object)
        {
            return Err(format!(
                "The toolSpec at {at} requires an inputSchema with a json schema object."
            ));
        }
        names.push(name.to_owned());
    }
    if let Some(choice) = o.get("toolChoice") {
        if one_member(choice, &["auto", "any", "tool"], "toolConfig.toolChoice")? == "tool" {
            let name = choice
                .pointer("/tool/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !names.iter().any(|n| n == name) {
                return Err(format!(
                    "The tool {name} in toolChoice is not defined in toolConfig.tools."
                ));
            }
        }
    }
    Ok(())
}
