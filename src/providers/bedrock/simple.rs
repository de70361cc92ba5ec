//! The Converse body of the most common chat request ([`crate::providers::simple_chat`]), written
//! directly instead of through [`super::request::chat_to_converse`]'s `serde_json::Value` trees. A
//! test translates generated requests both ways and requires the same JSON.

use crate::providers::json_out::put_json_str;
use crate::providers::simple_chat::{self, Role};
use bytes::{BufMut, Bytes, BytesMut};

/// The Converse body for `raw`, or `None` when it is not of the simple shape.
pub fn chat(raw: &[u8]) -> Option<Bytes> {
    let req = simple_chat::parse(raw)?;
    let mut system: Vec<&str> = Vec::new();
    // Alternating turns: consecutive messages of one role are one turn.
    let mut turns: Vec<(&'static str, Vec<&str>)> = Vec::with_capacity(req.messages.len());
    for (role, content) in &req.messages {
        // Converse refuses blank text.
        let text = content.as_deref().filter(|t| !t.trim().is_empty());
        let role = match role {
            Role::System => {
                system.extend(text);
                continue;
            }
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let Some(text) = text else { continue };
        match turns.last_mut() {
            Some((r, blocks)) if *r == role => blocks.push(text),
            _ => turns.push((role, vec![text])),
        }
    }
    // A final assistant turn (a prefill) must not end with whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(last) = blocks.last_mut() {
            *last = last.trim_end();
        }
        blocks.retain(|t| !t.is_empty());
        if blocks.is_empty() {
            turns.pop();
        }
    }
    if turns.is_empty() {
        return None;
    }

    let mut out = BytesMut::with_capacity(raw.len() + 128);
    out.put_slice(b"{\"messages\":[");
    for (i, (role, blocks)) in turns.iter().enumerate() {
        if i > 0 {
            out.put_slice(b",");
        }
        out.put_slice(b"{\"role\":\"");
        out.put_slice(role.as_bytes());
        out.put_slice(b"\",\"content\":");
        text_blocks(&mut out, blocks);
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
    if !system.is_empty() {
        out.put_slice(b",\"system\":");
        text_blocks(&mut out, &system);
    }
    // Converse takes temperature and topP in 0..1.
    let unit = |n: &serde_json::Number| n.as_f64().map(|f| f.clamp(0.0, 1.0));
    let config: [(&[u8], Option<Number>); 3] = [
        (b"maxTokens", req.max_tokens.map(Number::Int)),
        (
            b"temperature",
            req.temperature.as_ref().and_then(unit).map(Number::Float),
        ),
        (
            b"topP",
            req.top_p.as_ref().and_then(unit).map(Number::Float),
        ),
    ];
    let mut first = true;
    for (name, value) in config {
        let Some(value) = value else { continue };
        out.put_slice(if first {
            b",\"inferenceConfig\":{\""
        } else {
            b",\""
        });
        first = false;
        out.put_slice(name);
        out.put_slice(b"\":");
        let mut w = (&mut out).writer();
        let _ = match value {
            Number::Int(n) => serde_json::to_writer(&mut w, &n),
            Number::Float(f) => serde_json::to_writer(&mut w, &f),
        };
    }
    if !first {
        out.put_slice(b"}");
    }
    out.put_slice(b"}");
    Some(out.freeze())
}

enum Number {
    Int(u64),
    Float(f64),
}

/// `[{"text": ...}, ...]`
fn text_blocks(out: &mut BytesMut, texts: &[&str]) {
    out.put_slice(b"[");
    for (i, t) in texts.iter().enumerate() {
        out.put_slice(if i == 0 {
            b"{\"text\":"
        } else {
            b",{\"text\":"
        });
        put_json_str(out, t);
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
}

#[cfg(test)]
mod tests {
    use super::super::request::chat_to_converse;
    use crate::providers::simple_chat::tests::generated;
    use serde_json::Value;

    #[test]
    fn writes_what_the_general_translation_writes() {
        let (mut simple, mut total) = (0, 0);
        for body in generated(4000) {
            let raw = serde_json::to_vec(&body).unwrap();
            total += 1;
            let Some(direct) = super::chat(&raw) else {
                continue;
            };
            simple += 1;
            let direct: Value = serde_json::from_slice(&direct).unwrap();
            let general = chat_to_converse(&body, false).unwrap_or_else(|e| {
                panic!("{body}: the direct writer answered, the general path refused: {e:?}")
            });
            assert_eq!(direct, general, "{body}");
        }
        assert!(simple > total / 5 && simple < total, "{simple} of {total}");
    }
}
