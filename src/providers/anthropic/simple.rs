//! The Messages body of the most common chat request ([`crate::providers::simple_chat`]), written
//! directly instead of through [`super::request::chat_to_messages_with`]'s `serde_json::Value`
//! trees. A test translates generated requests both ways and requires the same JSON.

use crate::providers::json_out::put_json_str;
use crate::providers::simple_chat::{self, Role};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

/// The Messages request body for `raw` on `model`, or `None` when it is not of the simple shape.
pub fn chat(raw: &[u8], model: &str, default_max_tokens: u64) -> Option<Bytes> {
    let req = simple_chat::parse(raw)?;
    let mut system: Vec<&str> = Vec::new();
    // Consecutive messages of one role are one turn.
    let mut turns: Vec<(&'static str, Vec<&str>)> = Vec::with_capacity(req.messages.len());
    for (role, content) in &req.messages {
        let text = content.as_deref().filter(|t| !t.is_empty());
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
    // A prefill (final assistant turn) must not end with whitespace.
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
    let mut out = BytesMut::with_capacity(raw.len() + 160);
    out.put_slice(b"{\"model\":");
    put_json_str(&mut out, model);
    let _ = write!(
        out,
        ",\"max_tokens\":{}",
        req.max_tokens.unwrap_or(default_max_tokens)
    );
    if !system.is_empty() {
        out.put_slice(b",\"system\":");
        text_blocks(&mut out, &system);
    }
    out.put_slice(b",\"messages\":[");
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
    if let Some(t) = &req.temperature {
        // Anthropic takes temperature in 0..1.
        out.put_slice(b",\"temperature\":");
        let _ = serde_json::to_writer((&mut out).writer(), &t.as_f64()?.clamp(0.0, 1.0));
    }
    if let Some(p) = &req.top_p {
        out.put_slice(b",\"top_p\":");
        let _ = serde_json::to_writer((&mut out).writer(), p);
    }
    if let Some(s) = req.stream {
        out.put_slice(if s {
            b",\"stream\":true"
        } else {
            b",\"stream\":false"
        });
    }
    if let Some(u) = &req.user {
        out.put_slice(b",\"metadata\":{\"user_id\":");
        put_json_str(&mut out, u);
        out.put_slice(b"}");
    }
    out.put_slice(b"}");
    Some(out.freeze())
}

/// `[{"type": "text", "text": ...}, ...]`
fn text_blocks(out: &mut BytesMut, texts: &[&str]) {
    out.put_slice(b"[");
    for (i, t) in texts.iter().enumerate() {
        out.put_slice(if i == 0 {
            b"{\"type\":\"text\",\"text\":"
        } else {
            b",{\"type\":\"text\",\"text\":"
        });
        put_json_str(out, t);
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
}

#[cfg(test)]
mod tests {
    use super::super::request::chat_to_messages_with;
    use crate::providers::simple_chat::tests::generated;
    use serde_json::Value;

    #[test]
    fn writes_what_the_general_translation_writes() {
        let (mut simple, mut total) = (0, 0);
        for body in generated(4000) {
            let raw = serde_json::to_vec(&body).unwrap();
            total += 1;
            let Some(direct) = super::chat(&raw, "claude-x", 1024) else {
                continue;
            };
            simple += 1;
            let direct: Value = serde_json::from_slice(&direct).unwrap();
            let general =
                chat_to_messages_with(&body, "claude-x", 1024, false).unwrap_or_else(|e| {
                    panic!("{body}: the direct writer answered, the general path refused: {e:?}")
                });
            assert_eq!(direct, general, "{body}");
        }
        assert!(simple > total / 5 && simple < total, "{simple} of {total}");
    }
}
