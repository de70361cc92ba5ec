//! Request validation: what Google refuses with `INVALID_ARGUMENT` (unknown fields, in either
//! case convention; the shapes of `contents`, parts and `generationConfig`).

use super::*;

/// `lowerCamelCase` as `snake_case`.
fn snake(camel: &str) -> String {
    let mut s = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// A field by its camelCase or snake_case name.
pub(super) fn field<'a>(o: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    o.get(camel).or_else(|| o.get(&snake(camel)))
}

/// The first key of `o` that is none of `known` (in either spelling).
pub(super) fn unknown_key<'a>(o: &'a Map<String, Value>, known: &[&str]) -> Option<&'a str> {
    o.keys()
        .find(|k| !known.iter().any(|c| *c == k.as_str() || snake(c) == **k))
        .map(String::as_str)
}

pub(super) fn unknown_name(k: &str, at: Option<&str>) -> String {
    match at {
        Some(at) => format!(
            "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
        ),
        None => format!("Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."),
    }
}

const REQUEST_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "generationConfig",
    "cachedContent",
    "labels",
    "model",
];
const PART_DATA: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];
const PART_META: &[&str] = &[
    "thought",
    "thoughtSignature",
    "videoMetadata",
    "partMetadata",
    "mediaResolution",
];
const GENERATION_FIELDS: &[&str] = &[
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
    "enableEnhancedCivicAnswers",
    "audioTimestamp",
    "routingConfig",
    "imageConfig",
];

/// Validate one `Content` (`at` names it in messages); its role and the number of its
/// `functionCall` and `functionResponse` parts.
pub(super) fn validate_content(c: &Value, at: &str) -> Result<(String, usize, usize), String> {
    let o = c
        .as_object()
        .ok_or_else(|| format!("Invalid value at '{at}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), expected an object"))?;
    if let Some(k) = unknown_key(o, &["role", "parts"]) {
        return Err(unknown_name(k, Some(at)));
    }
    let role = o.get("role").and_then(Value::as_str).unwrap_or("user");
    if !matches!(role, "user" | "model" | "function" | "") {
        return Err("Please use a valid role: user, model.".to_owned());
    }
    let parts = match o.get("parts") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        _ => {
            return Err(format!(
                "* GenerateContentRequest.{at}.parts: contents.parts must not be empty.\n"
            ))
        }
    };
    let (mut calls, mut responses) = (0, 0);
    for (j, p) in parts.iter().enumerate() {
        let pat = format!("{at}.parts[{j}]");
        let po = p
            .as_object()
            .ok_or_else(|| format!("Invalid value at '{pat}', expected an object"))?;
        let mut known: Vec<&str> = PART_DATA.to_vec();
        known.extend_from_slice(PART_META);
        if let Some(k) = unknown_key(po, &known) {
            return Err(unknown_name(k, Some(&pat)));
        }
        let data: Vec<&str> = PART_DATA
            .iter()
            .copied()
            .filter(|d| field(po, d).is_some())
            .collect();
        if data.len() != 1 && !(data.is_empty() && field(po, "thoughtSignature").is_some()) {
            return Err(format!(
                "* GenerateContentRequest.{pat}.data: required oneof field 'data' must have one initialized field\n"
            ));
        }
        match data.first().copied() {
            Some("inlineData") => {
                let d = field(po, "inlineData").and_then(Value::as_object);
                let mime = d.and_then(|d| field(d, "mimeType")).and_then(Value::as_str);
                if mime.is_none_or(str::is_empty) {
                    return Err(format!(
                        "* GenerateContentRequest.{pat}.inline_data.mime_type: must not be empty\n"
                    ));
                }
                let b64 = d
                    .and_then(|d| d.get("data"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .is_err()
                    && base64::engine::general_purpose::URL_SAFE
                        .decode(b64)
                        .is_err()
                {
                    return Err(format!(
                        "Invalid value at '{pat}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"{}\"",
                        &b64[..b64.len().min(40)]
                    ));
                }
            }
            Some("functionCall") => {
                if field(po, "functionCall")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!("* GenerateContentRequest.{pat}.function_call.name: Name cannot be empty.\n"));
                }
                calls += 1;
            }
            Some("functionResponse") => {
                let f = field(po, "functionResponse");
                if f.and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!("* GenerateContentRequest.{pat}.function_response.name: Name cannot be empty.\n"));
                }
                if !f
                    .and_then(|f| f.get("response"))
                    .is_some_and(Value::is_object)
                {
                    return Err(format!("* GenerateContentRequest.{pat}.function_response.response: must be an object\n"));
                }
                responses += 1;
            }
            _ => {}
        }
    }
    Ok((role.to_owned(), calls, responses))
}

/// Validate a `generateContent` request as Gemini does (the subset a gateway's translation could
/// get wrong). `Err` is the `INVALID_ARGUMENT` message.
pub(super) fn validate_generate(v: &Value) -> Result<(), String> {
    let o = v
        .as_object()
        .ok_or_else(|| "Invalid JSON payload received.".to_owned())?;
    if let Some(k) = unknown_key(o, REQUEST_FIELDS) {
        return Err(unknown_name(k, None));
    }
    let contents = match field(o, "contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => {
            return Err("* GenerateContentRequest.contents: contents is not specified\n".to_owned())
        }
    };
    let mut prev_calls = 0;
    for (i, c) in contents.iter().enumerate() {
        let (role, calls, responses) = validate_content(c, &format!("contents[{i}]"))?;
        if calls > 0 && role != "model" {
            return Err("Please ensure that function call turn comes immediately after a user turn or after a function response turn.".to_owned());
        }
        if responses > 0 {
            if prev_calls == 0 {
                return Err("Please ensure that function response turn comes immediately after a function call turn.".to_owned());
            }
            if responses != prev_calls {
                return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".to_owned());
            }
        }
        prev_calls = calls;
    }
    if let Some(s) = field(o, "systemInstruction") {
        validate_content(s, "system_instruction")?;
    }
    if let Some(g) = field(o, "generationConfig") {
        let g = g
            .as_object()
            .ok_or_else(|| "Invalid value at 'generation_config', expected an object".to_owned())?;
        if let Some(k) = unknown_key(g, GENERATION_FIELDS) {
            return Err(unknown_name(k, Some("generation_config")));
        }
        if let Some(t) = field(g, "temperature") {
            if !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) {
                return Err(format!("* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0], got {t}\n"));
            }
        }
        if let Some(s) = field(g, "stopSequences") {
            if !s
                .as_array()
                .is_some_and(|a| a.len() <= 5 && a.iter().all(Value::is_string))
            {
                return Err("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed\n".to_owned());
            }
        }
        if let Some(n) = field(g, "candidateCount") {
            if !n.as_u64().is_some_and(|n| (1..=8).contains(&n)) {
                return Err("* GenerateContentRequest.generation_config.candidate_count: must be between 1 and 8\n".to_owned());
            }
        }
        if let Some(m) = field(g, "maxOutputTokens") {
            if m.as_u64().is_none_or(|m| m < 1) {
                return Err("* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n".to_owned());
            }
        }
    }
    let mut declared: Vec<&str> = Vec::new();
    if let Some(tools) = field(o, "tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| "Invalid value at 'tools', expected a list".to_owned())?;
        for (i, t) in tools.iter().enumerate() {
            let Some(decls) = t.as_object().and_then(|t| field(t, "functionDeclarations")) else {
                continue;
            };
            for (j, d) in decls.as_array().into_iter().flatten().enumerate() {
                let name = d.get("name").and_then(Value::as_str).unwrap_or("");
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c))
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!("* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes (-), with a maximum length of 64.\n"));
                }
                declared.push(name);
            }
        }
    }
    if let Some(tc) = field(o, "toolConfig").and_then(Value::as_object) {
        if let Some(fc) = field(tc, "functionCallingConfig").and_then(Value::as_object) {
            let mode = fc.get("mode").and_then(Value::as_str).unwrap_or("AUTO");
            if !matches!(
                mode,
                "AUTO" | "ANY" | "NONE" | "VALIDATED" | "MODE_UNSPECIFIED"
            ) {
                return Err(format!("Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{mode}\""));
            }
            if let Some(names) = field(fc, "allowedFunctionNames").and_then(Value::as_array) {
                if mode != "ANY" && mode != "VALIDATED" {
                    return Err("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: only allowed when mode is ANY.\n".to_owned());
                }
                if let Some(n) = names
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|n| !declared.contains(n))
                {
                    return Err(format!("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: function {n} is not declared in tools.\n"));
                }
            }
        }
    }
    if let Some(settings) = field(o, "safetySettings") {
        for s in settings.as_array().into_iter().flatten() {
            let category = s.get("category").and_then(Value::as_str).unwrap_or("");
            if !category.starts_with("HARM_CATEGORY_") {
                return Err(format!("Invalid value at 'safety_settings' (type.googleapis.com/google.ai.generativelanguage.v1beta.HarmCategory), \"{category}\""));
            }
            let threshold = s.get("threshold").and_then(Value::as_str).unwrap_or("");
            if !(threshold.starts_with("BLOCK_")
                || threshold == "OFF"
                || threshold == "HARM_BLOCK_THRESHOLD_UNSPECIFIED")
            {
                return Err(format!("Invalid value at 'safety_settings' (type.googleapis.com/google.ai.generativelanguage.v1beta.SafetySetting.HarmBlockThreshold), \"{threshold}\""));
            }
        }
    }
    Ok(())
}
