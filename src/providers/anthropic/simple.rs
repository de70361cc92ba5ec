//! The Messages body of the most common chat request ([`crate::providers::simple_chat`]), written
//! directly instead of through [`super::request::chat_to_messages_with`]'s `serde_json::Value`
//! trees. A test translates generated requests both ways and requires the same JSON.

use crate::providers::json_out::put_json_str;
use crate::providers::simple_chat::{self, put_texts};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

/// Anthropic's text block, before its text.
const TEXT: &[u8] = b"\"type\":\"text\",";

/// The Messages request body for `raw` on `model`, or `None` when it is not of the simple shape.
pub fn chat(raw: &[u8], model: &str, default_max_tokens: u64) -> Option<Bytes> {
    let req = simple_chat::parse(raw)?;
    // Empty texts are left out; a prefill must not end with whitespace.
    let t = simple_chat::turns(&req, |t| !t.is_empty(), "assistant", true)?;
    let mut out = BytesMut::with_capacity(raw.len() + 160);
    out.put_slice(b"{\"model\":");
    put_json_str(&mut out, model);
    let _ = write!(
        out,
        ",\"max_tokens\":{}",
        req.max_tokens.unwrap_or(default_max_tokens)
    );
    if !t.system.is_empty() {
        out.put_slice(b",\"system\":");
        put_texts(&mut out, &t.system, TEXT);
    }
    out.put_slice(b",\"messages\":[");
    for (i, (role, texts)) in t.turns.iter().enumerate() {
        out.put_slice(if i == 0 {
            b"{\"role\":\""
        } else {
            b",{\"role\":\""
        });
        out.put_slice(role.as_bytes());
        out.put_slice(b"\",\"content\":");
        put_texts(&mut out, texts, TEXT);
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

#[cfg(test)]
mod tests {
    #[test]
    fn writes_what_the_general_translation_writes() {
        crate::providers::simple_chat::tests::direct_writes_what_general_writes(
            |raw| super::chat(raw, "claude-x", 1024),
            |b| super::super::request::chat_to_messages_with(b, "claude-x", 1024, false),
        );
    }
}
