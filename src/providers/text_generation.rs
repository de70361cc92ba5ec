//! Text-generation servers (`provider: text_generation`): Hugging Face TGI's native API, `POST
//! {url}/generate` and `/generate_stream`, which take one prompt (`inputs`) and its `parameters`.
//!
//! **Chat completions** are rendered to one prompt with the upstream's `prompt_template` ([`render`],
//! LiteLLM's rules): `bos_token` + `initial_prompt_value`, then each message as
//! `roles.{role}.pre_message` + its text + `roles.{role}.post_message` (`developer` messages use the
//! `system` role's; a role the template does not name gets nothing around its text), an assistant
//! message followed by `eos_token` (unless its `post_message` already ends with it), a system or
//! user message after an assistant message preceded by `bos_token` again, and `final_prompt_value`
//! at the end. Text parts of a message are joined. Without a `prompt_template` the upstream uses
//! ChatML (`config::template::PromptTemplate::chatml`). **Completions** send their `prompt` as
//! `inputs`, untouched.
//!
//! | OpenAI | TGI `parameters` |
//! | --- | --- |
//! | `max_completion_tokens`, else `max_tokens` | `max_new_tokens` |
//! | `temperature` > 0 | `temperature` and `do_sample: true` (0, or none: greedy decoding, TGI's default) |
//! | `top_p` in (0, 1) | `top_p` and `do_sample: true` (1 is TGI's default: not sent) |
//! | `top_k`, `seed`, `repetition_penalty` (an extension) | the same |
//! | `frequency_penalty` (non-zero) | `frequency_penalty` |
//! | `stop` (at most 4) | `stop` |
//! | `response_format` `json_object` / `json_schema` | `grammar: {type: json, value: <schema>}` |
//! | — | `details: true` (the usage comes from it) |
//!
//! **Dropped**: `n: 1`, `logprobs: false`, `user`, `metadata`, `store`, `stream_options` (the
//! translator's flag), zero penalties, `tool_choice: none`, and fields this module does not know.
//! **Refused** with a 400 naming the field (dropped instead with `drop_params`): `n` > 1,
//! `logprobs`, `top_logprobs`, a non-zero `presence_penalty`, a non-empty `logit_bias`, `tools`,
//! `tool_choice`, legacy `functions`, assistant `tool_calls` and `tool` / `function` messages,
//! content parts other than text, completions' `echo`, `suffix`, `best_of` and several prompts.
//! With the model's `add_function_to_prompt` (LiteLLM's flag), a chat request's `tools` / `functions`
//! are described in the system prompt instead ([`functions_to_prompt`]) and the server answers in
//! text (the JSON the prompt asks for, in the message content: not parsed into `tool_calls`).
//!
//! **Answers**: `generated_text` is the message content (chat) or the choice's `text`
//! (completions); `details.finish_reason` `eos_token` and `stop_sequence` → `stop` (a stop sequence
//! TGI leaves at the end of the text is cut, as OpenAI does), `length` → `length`. A stream's
//! tokens become deltas (special tokens, such as the end-of-sequence token, are not text), its last
//! event the finish; an `error` event (or a stream that ends without its last event) ends the
//! client's stream with OpenAI's error event. Usage: `prompt_tokens` from TGI's `x-prompt-tokens`
//! header or the stream's `details.input_length` (a token per 4 bytes of the prompt when neither
//! came), `completion_tokens` = `details.generated_tokens`.
//!
//! **Errors**: TGI's `{"error", "error_type"}` → OpenAI's shape with the same status: `validation`
//! → `invalid_request_error` (`context_length_exceeded` when the input is too long, which also
//! switches to `context_window_fallbacks`), `overloaded` (429) → `rate_limit_error`, `generation`,
//! `incomplete_generation` → `server_error`.

use super::anthropic::TranslateError;
use super::gemini::{refusal, usage};
use super::sse::SseReader;
use super::usage::Usage;
use super::{Answer, Attempt, Mode, Outbound, Provider};
use crate::config::template::{PromptTemplate, RoleTemplate};
use crate::error::GatewayError;
use crate::route::Endpoint;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// The longest server-sent event accepted from the upstream.
const EVENT_LIMIT: usize = 1024 * 1024;

/// `provider: text_generation`.
pub struct TextGeneration;

impl Provider for TextGeneration {
    fn supports(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
        let refuse = |e: TranslateError| refusal(&e, "a text-generation server");
        let mut req =
            super::gemini::parse_with_params(a.raw, &a.deployment.params).map_err(refuse)?;
        if a.add_function_to_prompt && a.endpoint == Endpoint::ChatCompletions {
            functions_to_prompt(&mut req);
        }
        let cx = Cx {
            drop_unsupported: a.drop_params,
        };
        let chat = a.endpoint == Endpoint::ChatCompletions;
        let inputs = if chat {
            let chatml;
            let template = match &a.upstream.prompt_template {
                Some(t) => t,
                None => {
                    chatml = PromptTemplate::chatml();
                    &chatml
                }
            };
            let messages = non_null(&req, "messages")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    refuse(TranslateError::invalid(
                        "messages",
                        "expected an array of messages",
                    ))
                })?;
            render(template, messages, a.drop_params).map_err(refuse)?
        } else {
            completion_prompt(&req, &cx).map_err(refuse)?
        };
        let (parameters, stops) = parameters(&req, &cx).map_err(refuse)?;
        let body = json!({"inputs": inputs, "parameters": parameters});
        let base = &a.upstream.url.base_path;
        let path = if a.req.stream {
            format!("{base}/generate_stream")
        } else {
            format!("{base}/generate")
        };
        let include_usage = a.req.stream && super::client_asked_usage(&a.req.body);
        let kind = if chat { Kind::Chat } else { Kind::Completion };
        Ok(Outbound {
            path,
            body: Bytes::from(body.to_string()),
            answer: Box::new(Generation {
                kind,
                tx: StreamTranslator::new(
                    kind,
                    &a.deployment.model,
                    include_usage,
                    stops.clone(),
                    estimate(&inputs),
                ),
                model: a.deployment.model.clone(),
                stops,
                prompt_estimate: estimate(&inputs),
                prompt_header: None,
                whole_usage: None,
            }),
        })
    }

    fn is_context_window(&self, status: u16, body: &[u8]) -> bool {
        super::is_context_window_error(status, body)
            || (matches!(status, 400 | 413 | 422) && is_context_message(body))
    }

    fn reconciles_tokens(&self) -> bool {
        true
    }
}

/// TGI's words for an input over the model's limit.
fn is_context_message(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    text.contains("`inputs` tokens + `max_new_tokens` must be")
        || text.contains("`inputs` must have less than")
}

/// A token per 4 bytes of text: the prompt's tokens when the server does not say.
fn estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

struct Cx {
    drop_unsupported: bool,
}

impl Cx {
    fn unsupported(&self, field: impl Into<String>, reason: &str) -> Result<(), TranslateError> {
        if self.drop_unsupported {
            Ok(())
        } else {
            Err(TranslateError::unsupported(field, reason))
        }
    }
}

fn non_null<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// A message's text: the string, or its text parts joined.
fn message_text(content: &Value, field: &str, cx: &Cx) -> Result<String, TranslateError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => cx.unsupported(
                        format!("{field}[{j}].type"),
                        "a text-generation server takes text only",
                    )?,
                }
            }
            Ok(out)
        }
        _ => Err(TranslateError::invalid(
            field,
            "expected a string or an array",
        )),
    }
}

/// What the system prompt says before the request's tools (`add_function_to_prompt`), as LiteLLM's
/// proxy words it, so prompts written for it keep working.
pub const FUNCTIONS_PROMPT: &str = "Produce JSON OUTPUT ONLY! Adhere to this format {\"name\": \"function_name\", \"arguments\":{\"argument_name\": \"argument_value\"}} The following functions are available to you:";

/// `add_function_to_prompt`: the request's `tools` (their `function` objects) or legacy `functions`
/// are described in the system prompt — appended to the first system message, or as a system message
/// of their own before the others — and removed with `tool_choice` / `function_call`, so a server
/// without tools gets a request it can serve. A request without tools is left as it is.
pub fn functions_to_prompt(req: &mut Map<String, Value>) {
    let listed: Vec<Value> = ["tools", "functions"]
        .iter()
        .filter_map(|k| non_null(req, k).and_then(Value::as_array))
        .flatten()
        .map(|t| t.get("function").cloned().unwrap_or_else(|| t.clone()))
        .collect();
    if listed.is_empty() {
        return;
    }
    let mut prompt = String::from(FUNCTIONS_PROMPT);
    for f in &listed {
        prompt.push('\n');
        prompt.push_str(&f.to_string());
        prompt.push('\n');
    }
    for key in ["tools", "functions", "tool_choice", "function_call"] {
        req.remove(key);
    }
    let Some(Value::Array(messages)) = req.get_mut("messages") else {
        return;
    };
    let system = messages.iter_mut().find(|m| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer")
        ) && m.get("content").is_some_and(Value::is_string)
    });
    match system.and_then(|m| m.get_mut("content")) {
        Some(Value::String(s)) => {
            s.push(' ');
            s.push_str(&prompt);
        }
        _ => messages.insert(0, json!({"role": "system", "content": prompt})),
    }
}

/// Chat messages → one prompt with `t` (the rules are in the module documentation).
pub fn render(
    t: &PromptTemplate,
    messages: &[Value],
    drop_unsupported: bool,
) -> Result<String, TranslateError> {
    let cx = Cx { drop_unsupported };
    let mut out = String::with_capacity(256);
    out.push_str(&t.bos_token);
    out.push_str(&t.initial_prompt_value);
    let mut bos_open = true;
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{field}.role"), "missing"))?;
        let tpl: &RoleTemplate = match role {
            "system" | "developer" => &t.system,
            "user" => &t.user,
            "assistant" => &t.assistant,
            "tool" | "function" => {
                cx.unsupported(
                    format!("{field}.role"),
                    "tool results need tools, which a text-generation server does not have",
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
        if m.get("tool_calls").is_some_and(|c| !c.is_null()) {
            cx.unsupported(
                format!("{field}.tool_calls"),
                "a text-generation server has no tools",
            )?;
        }
        let text = message_text(
            m.get("content").unwrap_or(&Value::Null),
            &format!("{field}.content"),
            &cx,
        )?;
        if role != "assistant" && !bos_open {
            out.push_str(&t.bos_token);
            bos_open = true;
        }
        out.push_str(&tpl.pre_message);
        out.push_str(&text);
        out.push_str(&tpl.post_message);
        if role == "assistant" {
            if !t.eos_token.is_empty() && !tpl.post_message.trim_end().ends_with(&t.eos_token) {
                out.push_str(&t.eos_token);
            }
            bos_open = false;
        }
    }
    out.push_str(&t.final_prompt_value);
    Ok(out)
}

/// A completions request's prompt, sent as `inputs` untouched.
fn completion_prompt(req: &Map<String, Value>, cx: &Cx) -> Result<String, TranslateError> {
    for (key, reason) in [
        ("suffix", "insertion (suffix) is not available"),
        ("best_of", "best_of is not mapped"),
    ] {
        if non_null(req, key).is_some() {
            cx.unsupported(key, reason)?;
        }
    }
    if non_null(req, "echo").and_then(Value::as_bool) == Some(true) {
        cx.unsupported("echo", "the prompt is not echoed")?;
    }
    match non_null(req, "prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            _ => Err(TranslateError::unsupported(
                "prompt",
                "one text prompt per request (a text-generation server takes one input)",
            )),
        },
        _ => Err(TranslateError::invalid("prompt", "expected a string")),
    }
}

/// TGI's `parameters`, and the stop sequences (cut from the answer's end).
fn parameters(req: &Map<String, Value>, cx: &Cx) -> Result<(Value, Vec<String>), TranslateError> {
    let mut p = Map::new();
    p.insert("details".into(), Value::Bool(true));
    if let Some(n) = non_null(req, "n") {
        if n.as_u64() != Some(1) {
            cx.unsupported("n", "only one choice (n = 1) can be generated")?;
        }
    }
    if non_null(req, "logprobs").is_some_and(|v| v.as_bool() != Some(false)) {
        cx.unsupported("logprobs", "log probabilities are not mapped")?;
    }
    if non_null(req, "top_logprobs").is_some() {
        cx.unsupported("top_logprobs", "log probabilities are not mapped")?;
    }
    if non_null(req, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        cx.unsupported("logit_bias", "token biases are not available")?;
    }
    if non_null(req, "presence_penalty").is_some_and(|v| v.as_f64() != Some(0.0)) {
        cx.unsupported(
            "presence_penalty",
            "a text-generation server has no presence penalty",
        )?;
    }
    for key in ["tools", "functions", "function_call"] {
        if non_null(req, key).is_some() {
            cx.unsupported(key, "a text-generation server has no tools")?;
        }
    }
    if let Some(c) = non_null(req, "tool_choice") {
        if c.as_str() != Some("none") {
            cx.unsupported("tool_choice", "a text-generation server has no tools")?;
        }
    }
    let limit = non_null(req, "max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| non_null(req, "max_tokens").map(|v| ("max_tokens", v)));
    if let Some((field, v)) = limit {
        match v.as_u64() {
            Some(n) if n > 0 => {
                p.insert("max_new_tokens".into(), n.into());
            }
            _ => {
                return Err(TranslateError::invalid(
                    field,
                    "expected a positive integer",
                ))
            }
        }
    }
    let number = |key: &str| -> Result<Option<f64>, TranslateError> {
        match non_null(req, key) {
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| TranslateError::invalid(key, "expected a number")),
            None => Ok(None),
        }
    };
    if let Some(t) = number("temperature")? {
        if t > 0.0 {
            p.insert("temperature".into(), json!(t));
            p.insert("do_sample".into(), Value::Bool(true));
        }
    }
    if let Some(tp) = number("top_p")? {
        if tp > 0.0 && tp < 1.0 {
            p.insert("top_p".into(), json!(tp));
            p.insert("do_sample".into(), Value::Bool(true));
        }
    }
    for key in ["top_k", "seed", "repetition_penalty"] {
        if let Some(v) = non_null(req, key) {
            if !v.is_number() {
                return Err(TranslateError::invalid(key, "expected a number"));
            }
            p.insert(key.into(), v.clone());
        }
    }
    if let Some(f) = number("frequency_penalty")? {
        if f != 0.0 {
            p.insert("frequency_penalty".into(), json!(f));
        }
    }
    let stops: Vec<String> = match non_null(req, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "expected a string or strings",
            ))
        }
    };
    if stops.len() > 4 {
        return Err(TranslateError::invalid(
            "stop",
            "a text-generation server takes at most 4 stop sequences",
        ));
    }
    if !stops.is_empty() {
        p.insert("stop".into(), json!(stops));
    }
    if let Some(rf) = non_null(req, "response_format") {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                p.insert(
                    "grammar".into(),
                    json!({"type": "json", "value": {"type": "object"}}),
                );
            }
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        TranslateError::invalid("response_format.json_schema.schema", "missing")
                    })?;
                p.insert("grammar".into(), json!({"type": "json", "value": schema}));
            }
            _ => cx.unsupported("response_format", "only text, json_object and json_schema")?,
        }
    }
    Ok((Value::Object(p), stops))
}

/// The OpenAI `finish_reason` for TGI's.
fn finish_reason(tgi: &str) -> &'static str {
    match tgi {
        "length" => "length",
        _ => "stop",
    }
}

/// `text` without a stop sequence it ends with (TGI keeps the sequence; OpenAI does not).
fn cut_stop<'t>(text: &'t str, stops: &[String]) -> &'t str {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .find_map(|s| text.strip_suffix(s.as_str()))
        .unwrap_or(text)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

#[derive(Deserialize)]
struct Whole<'a> {
    #[serde(borrow)]
    generated_text: Cow<'a, str>,
    #[serde(default, borrow)]
    details: Option<Details<'a>>,
}

#[derive(Deserialize, Default)]
struct Details<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    generated_tokens: Option<u64>,
    #[serde(default)]
    input_length: Option<u64>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, borrow)]
    token: Option<Token<'a>>,
    #[serde(default, borrow)]
    generated_text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    details: Option<Details<'a>>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Token<'a> {
    #[serde(default, borrow)]
    text: Cow<'a, str>,
    #[serde(default)]
    special: bool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(kind: Kind) -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    match kind {
        Kind::Chat => format!("chatcmpl-tgi-{n:016x}"),
        Kind::Completion => format!("cmpl-tgi-{n:016x}"),
    }
}

/// A TGI answer to an OpenAI chat or completions client.
struct Generation {
    kind: Kind,
    tx: StreamTranslator,
    model: String,
    stops: Vec<String>,
    prompt_estimate: u64,
    /// `x-prompt-tokens` of the answer.
    prompt_header: Option<u64>,
    whole_usage: Option<Usage>,
}

impl Answer for Generation {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        self.prompt_header = headers
            .get("x-prompt-tokens")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        if super::is_event_stream(headers) {
            Mode::Stream
        } else {
            Mode::Whole
        }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        // TGI's compatibility route answers a one-element array.
        let w: Whole = match serde_json::from_slice::<Whole>(body) {
            Ok(w) => w,
            Err(_) => serde_json::from_slice::<[Whole; 1]>(body)
                .ok()?
                .into_iter()
                .next()?,
        };
        let details = w.details.unwrap_or_default();
        let reason = details.finish_reason.as_deref().unwrap_or("eos_token");
        let text = if reason == "stop_sequence" {
            cut_stop(&w.generated_text, &self.stops)
        } else {
            &w.generated_text
        };
        let u = usage(
            self.prompt_header.unwrap_or(self.prompt_estimate),
            details.generated_tokens.unwrap_or(0),
        );
        self.whole_usage = Some(u);
        let finish = finish_reason(reason);
        let out = match self.kind {
            Kind::Chat => json!({
                "id": new_id(Kind::Chat),
                "object": "chat.completion",
                "created": now_secs(),
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": finish,
                }],
                "usage": u.to_openai(),
                "system_fingerprint": null,
            }),
            Kind::Completion => json!({
                "id": new_id(Kind::Completion),
                "object": "text_completion",
                "created": now_secs(),
                "model": self.model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
                "usage": u.to_openai(),
            }),
        };
        Some(Bytes::from(out.to_string()))
    }

    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        Some(self.tx.feed(&chunk)).filter(|b| !b.is_empty())
    }

    fn finish(&mut self) -> Option<Bytes> {
        Some(self.tx.finish()).filter(|b| !b.is_empty())
    }

    fn usage(&self) -> Option<Usage> {
        self.whole_usage.or_else(|| self.tx.usage())
    }

    fn error_body(&self, status: u16, body: &[u8]) -> Option<Bytes> {
        Some(error_to_openai(status, body))
    }
}

/// OpenAI (`type`, `code`) for TGI's `error_type` (or the status).
fn map_error(error_type: Option<&str>, status: u16, message: &str) -> (&'static str, &'static str) {
    if is_context_message(message.as_bytes()) {
        return ("invalid_request_error", "context_length_exceeded");
    }
    match (error_type, status) {
        (Some("validation"), _) | (None, 400 | 413 | 422) => {
            ("invalid_request_error", "invalid_request")
        }
        (Some("overloaded"), _) | (None, 429) => ("rate_limit_error", "rate_limit_exceeded"),
        (Some("healthcheck"), _) | (None, 503) => ("server_error", "overloaded"),
        _ => ("server_error", "upstream_error"),
    }
}

fn openai_error(error_type: Option<&str>, status: u16, message: &str) -> Value {
    let (ty, code) = map_error(error_type, status, message);
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

/// A TGI error body (`{"error", "error_type"}`, or the web framework's text) → OpenAI's shape.
pub fn error_to_openai(status: u16, body: &[u8]) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let s = String::from_utf8_lossy(&body[..body.len().min(500)])
                .trim()
                .to_string();
            if s.is_empty() {
                format!("upstream answered {status}")
            } else {
                s
            }
        });
    let ty = parsed
        .as_ref()
        .and_then(|v| v.get("error_type"))
        .and_then(Value::as_str);
    Bytes::from(openai_error(ty, status, &message).to_string())
}

/// TGI's `/generate_stream` events → OpenAI chunks (`chat.completion.chunk` or `text_completion`).
struct StreamTranslator {
    kind: Kind,
    reader: SseReader,
    data: Vec<u8>,
    out: BytesMut,
    /// Everything of a chunk before its choice's delta.
    prefix: String,
    include_usage: bool,
    stops: Vec<String>,
    prompt_estimate: u64,
    usage: Option<Usage>,
    started: bool,
    finished: bool,
    done: bool,
}

impl StreamTranslator {
    fn new(
        kind: Kind,
        model: &str,
        include_usage: bool,
        stops: Vec<String>,
        prompt_estimate: u64,
    ) -> StreamTranslator {
        let object = match kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let prefix = format!(
            "{{\"id\":{},\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":[",
            Value::String(new_id(kind)),
            now_secs(),
            Value::String(model.to_owned())
        );
        StreamTranslator {
            kind,
            reader: SseReader::with_capacity(512),
            data: Vec::with_capacity(512),
            out: BytesMut::with_capacity(1024),
            prefix,
            include_usage,
            stops,
            prompt_estimate,
            usage: None,
            started: false,
            finished: false,
            done: false,
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if !self.done {
            self.reader.push(chunk);
            while !self.done && self.reader.next_event(&mut self.data) {
                self.dispatch();
            }
            if !self.done && self.reader.pending_len() > EVENT_LIMIT {
                self.fail(None, 502, "an event of the upstream stream is too large");
            }
            if self.done {
                self.reader.clear();
            }
        }
        self.out.split().freeze()
    }

    fn finish(&mut self) -> Bytes {
        if !self.done {
            if self.reader.pending() {
                self.reader.push(b"\n\n");
                while !self.done && self.reader.next_event(&mut self.data) {
                    self.dispatch();
                }
            }
            if !self.done {
                if self.finished {
                    self.end();
                } else {
                    self.fail(
                        None,
                        502,
                        "upstream stream ended before the answer was complete",
                    );
                }
            }
            self.reader.clear();
        }
        self.out.split().freeze()
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        match serde_json::from_slice::<Event>(&data) {
            Ok(ev) => self.on_event(ev),
            Err(_) => self.fail(None, 502, "malformed event from the upstream stream"),
        }
        self.data = data;
        self.data.clear();
    }

    fn on_event(&mut self, ev: Event) {
        if let Some(e) = ev.error.as_deref() {
            let v = openai_error(ev.error_type.as_deref(), 500, e);
            self.put_error(&v);
            return;
        }
        if self.finished {
            return;
        }
        self.start();
        let last = ev.generated_text.is_some();
        let details = ev.details.unwrap_or_default();
        let reason = details.finish_reason.as_deref().unwrap_or("eos_token");
        if let Some(t) = ev
            .token
            .as_ref()
            .filter(|t| !t.special && !t.text.is_empty())
        {
            let stop_token = last
                && reason == "stop_sequence"
                && self
                    .stops
                    .iter()
                    .any(|s| !s.is_empty() && s.ends_with(t.text.as_ref()));
            if !stop_token {
                self.text_delta(&t.text);
            }
        }
        if last {
            if let Some(g) = details.generated_tokens {
                self.usage = Some(usage(
                    details.input_length.unwrap_or(self.prompt_estimate),
                    g,
                ));
            }
            self.finished = true;
            self.chunk_begin();
            match self.kind {
                Kind::Chat => self.out.put_slice(b"\"delta\":{},"),
                Kind::Completion => self.out.put_slice(b"\"text\":\"\","),
            }
            self.out
                .put_slice(b"\"logprobs\":null,\"finish_reason\":\"");
            self.out.put_slice(finish_reason(reason).as_bytes());
            self.out.put_slice(b"\"}]");
            self.chunk_end();
        }
    }

    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        if self.kind == Kind::Chat {
            self.chunk_begin();
            self.out.put_slice(
                b"\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
            );
            self.chunk_end();
        }
    }

    fn text_delta(&mut self, text: &str) {
        self.chunk_begin();
        match self.kind {
            Kind::Chat => self.out.put_slice(b"\"delta\":{\"content\":"),
            Kind::Completion => self.out.put_slice(b"\"text\":"),
        }
        let mut w = (&mut self.out).writer();
        let _ = serde_json::to_writer(&mut w, text);
        if self.kind == Kind::Chat {
            self.out.put_slice(b"}");
        }
        self.out
            .put_slice(b",\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    /// Opens a chunk and its only choice, `{"index":0,` (the caller writes the rest).
    fn chunk_begin(&mut self) {
        self.out.put_slice(b"data: ");
        self.out.put_slice(self.prefix.as_bytes());
        self.out.put_slice(b"{\"index\":0,");
    }

    fn chunk_end(&mut self) {
        if self.include_usage {
            self.out.put_slice(b",\"usage\":null");
        }
        self.out.put_slice(b"}\n\n");
    }

    fn end(&mut self) {
        if self.include_usage {
            let u = self.usage.unwrap_or_else(|| usage(self.prompt_estimate, 0));
            self.out.put_slice(b"data: ");
            self.out.put_slice(self.prefix.as_bytes());
            self.out.put_slice(b"],\"usage\":");
            self.out.put_slice(u.to_openai().to_string().as_bytes());
            self.out.put_slice(b"}\n\n");
        }
        self.out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn fail(&mut self, error_type: Option<&str>, status: u16, message: &str) {
        let v = openai_error(error_type, status, message);
        self.put_error(&v);
    }

    fn put_error(&mut self, v: &Value) {
        if self.done {
            return;
        }
        self.out.put_slice(b"data: ");
        self.out.put_slice(v.to_string().as_bytes());
        self.out.put_slice(b"\n\ndata: [DONE]\n\n");
        self.done = true;
    }
}

#[cfg(test)]
#[path = "text_generation_tests.rs"]
mod tests;
