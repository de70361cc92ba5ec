//! The most common chat request, read into borrowed typed fields for the translators' direct
//! writers: text messages (roles `system`, `developer`, `user`, `assistant`; content a string or
//! null), `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `stream`, `user`, and
//! the fields every translation ignores (`model`, `stream_options`, a message's `name`).
//!
//! The general translations parse the body into a `serde_json::Value`, build the provider's request
//! as another and format it: 6–8% of the gateway's CPU on a translated chat request (`perf`).
//! Anything outside the shape — another field (`deny_unknown_fields`), a content array, a tool
//! call, a value of another type, a value the general path refuses with its own message (a zero
//! `max_tokens`) — is `None`, and the request takes the general path. Each provider's writer has a
//! test that translates generated requests both ways and requires the same JSON.

use bytes::{BufMut, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Number;
use std::borrow::Cow;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<Number>,
    #[serde(default)]
    top_p: Option<Number>,
    #[serde(default, rename = "model")]
    _model: Option<IgnoredAny>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, rename = "stream_options")]
    _stream_options: Option<IgnoredAny>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, rename = "name")]
    _name: Option<IgnoredAny>,
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system` or `developer`.
    System,
    User,
    Assistant,
}

/// A chat request of the simple shape.
pub struct SimpleChat<'a> {
    /// In order; `None`: null content.
    pub messages: Vec<(Role, Option<Cow<'a, str>>)>,
    /// `max_completion_tokens`, else `max_tokens`; never 0.
    pub max_tokens: Option<u64>,
    pub temperature: Option<Number>,
    pub top_p: Option<Number>,
    pub stream: Option<bool>,
    /// The end user (`user`).
    pub user: Option<Cow<'a, str>>,
}

/// `raw` as a [`SimpleChat`], or `None` when it is not of the simple shape.
pub fn parse(raw: &[u8]) -> Option<SimpleChat<'_>> {
    let body: Body<'_> = serde_json::from_slice(raw).ok()?;
    let max_tokens = match body.max_completion_tokens.or(body.max_tokens) {
        Some(0) => return None,
        m => m,
    };
    let mut messages = Vec::with_capacity(body.messages.len());
    for m in body.messages {
        let role = match m.role.as_ref() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => return None,
        };
        messages.push((role, m.content));
    }
    Some(SimpleChat {
        messages,
        max_tokens,
        temperature: body.temperature,
        top_p: body.top_p,
        stream: body.stream,
        user: body.user,
    })
}

/// A conversation as the providers want it: the system texts, and alternating turns (consecutive
/// messages of one role are one turn).
pub struct Turns<'t> {
    pub system: Vec<&'t str>,
    /// `(role, texts)`; the roles `user` and the provider's name for the assistant.
    pub turns: Vec<(&'static str, Vec<&'t str>)>,
}

/// `req`'s messages as [`Turns`]: texts `keep` refuses (and null contents) left out, the assistant's
/// role named `assistant`; with `trim_prefill`, a final assistant turn (a prefill) loses its trailing
/// whitespace, and the turn goes if nothing is left. `None` when no turn is left (the general path
/// refuses that with its message).
pub fn turns<'t>(
    req: &'t SimpleChat<'_>,
    keep: fn(&str) -> bool,
    assistant: &'static str,
    trim_prefill: bool,
) -> Option<Turns<'t>> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<&'t str>)> = Vec::with_capacity(req.messages.len());
    for (role, content) in &req.messages {
        let text = content.as_deref().filter(|t| keep(t));
        let role = match role {
            Role::System => {
                system.extend(text);
                continue;
            }
            Role::User => "user",
            Role::Assistant => assistant,
        };
        let Some(text) = text else { continue };
        match turns.last_mut() {
            Some((r, texts)) if *r == role => texts.push(text),
            _ => turns.push((role, vec![text])),
        }
    }
    if trim_prefill {
        if let Some((role, texts)) = turns.last_mut() {
            if *role == assistant {
                if let Some(last) = texts.last_mut() {
                    *last = last.trim_end();
                }
                texts.retain(|t| !t.is_empty());
                if texts.is_empty() {
                    turns.pop();
                }
            }
        }
    }
    (!turns.is_empty()).then_some(Turns { system, turns })
}

/// `[{<prefix>"text": ...}, ...]`: `prefix` is what each object holds before its text (`""`, or
/// Anthropic's `"type":"text",`).
pub fn put_texts(out: &mut BytesMut, texts: &[&str], prefix: &[u8]) {
    out.put_slice(b"[");
    for (i, t) in texts.iter().enumerate() {
        out.put_slice(if i == 0 { b"{" } else { b",{" });
        out.put_slice(prefix);
        out.put_slice(b"\"text\":");
        crate::providers::json_out::put_json_str(out, t);
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use serde_json::{json, Value};

    /// Over [`generated`] requests: where `direct` answers, its body is `general`'s (and `general`
    /// does not refuse it); both paths are taken.
    pub(crate) fn direct_writes_what_general_writes<E: std::fmt::Debug>(
        direct: impl Fn(&[u8]) -> Option<bytes::Bytes>,
        general: impl Fn(&Value) -> Result<Value, E>,
    ) {
        let (mut simple, mut total) = (0, 0);
        for body in generated(4000) {
            let raw = serde_json::to_vec(&body).unwrap();
            total += 1;
            let Some(d) = direct(&raw) else {
                continue;
            };
            simple += 1;
            let d: Value = serde_json::from_slice(&d).unwrap();
            let g = general(&body).unwrap_or_else(|e| {
                panic!("{body}: the direct writer answered, the general path refused: {e:?}")
            });
            assert_eq!(d, g, "{body}");
        }
        assert!(simple > total / 5 && simple < total, "{simple} of {total}");
    }

    /// `n` chat requests, mostly of the simple shape, some not (other roles, content arrays, tool
    /// calls, values of other types or out of range, fields the shape does not take), for the
    /// writers' tests against the general translations.
    pub(crate) fn generated(n: usize) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(20_261_203);
        let roles = [
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
            "bot",
        ];
        let contents = [
            json!("Hello there"),
            json!("  "),
            json!(""),
            json!("ends with space  "),
            json!("quote \" and \\ and \n newline and é"),
            Value::Null,
            json!([{"type": "text", "text": "a part"}]),
            json!(7),
        ];
        let scalars: [(&str, [Value; 4]); 6] = [
            ("max_tokens", [json!(16), json!(0), json!(2.5), Value::Null]),
            (
                "max_completion_tokens",
                [json!(32), json!(-1), json!("8"), Value::Null],
            ),
            (
                "temperature",
                [json!(0.7), json!(1.5), json!(1), json!("hot")],
            ),
            ("top_p", [json!(0.9), json!(-0.5), json!(0), Value::Null]),
            (
                "stream",
                [json!(true), json!(false), Value::Null, json!("yes")],
            ),
            (
                "user",
                [json!("u1"), Value::Null, json!(3), json!({"a": 1})],
            ),
        ];
        // Mostly the simple shape's values (the first ones), sometimes anything.
        let pick = |rng: &mut StdRng, len: usize, simple: usize| {
            if rng.gen_bool(0.85) {
                rng.gen_range(0..simple)
            } else {
                rng.gen_range(0..len)
            }
        };
        (0..n)
            .map(|_| {
                let mut body = serde_json::Map::new();
                body.insert("model".into(), json!("m"));
                let messages: Vec<Value> = (0..rng.gen_range(0..6))
                    .map(|_| {
                        let mut m = json!({
                            "role": roles[pick(&mut rng, roles.len(), 4)],
                            "content": contents[pick(&mut rng, contents.len(), 6)].clone(),
                        });
                        if rng.gen_bool(0.1) {
                            m["name"] = json!("n");
                        }
                        if rng.gen_bool(0.05) {
                            m["tool_calls"] = json!([]);
                        }
                        m
                    })
                    .collect();
                body.insert("messages".into(), Value::Array(messages));
                for (k, vs) in &scalars {
                    if rng.gen_bool(0.3) {
                        body.insert((*k).into(), vs[pick(&mut rng, vs.len(), 1)].clone());
                    }
                }
                if rng.gen_bool(0.05) {
                    body.insert("top_k".into(), json!(5));
                }
                Value::Object(body)
            })
            .collect()
    }
}
