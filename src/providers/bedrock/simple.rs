//! The Converse body of the most common chat request ([`crate::providers::simple_chat`]), written
//! directly instead of through [`super::request::chat_to_converse`]'s `serde_json::Value` trees. A
//! test translates generated requests both ways and requires the same JSON.

use crate::providers::simple_chat::{self, put_texts};
use bytes::{BufMut, Bytes, BytesMut};

/// The Converse body for `raw`, or `None` when it is not of the simple shape.
pub fn chat(raw: &[u8]) -> Option<Bytes> {
    let req = simple_chat::parse(raw)?;
    // Converse refuses blank text; a final assistant turn must not end with whitespace.
    let t = simple_chat::turns(&req, |t| !t.trim().is_empty(), "assistant", true)?;
    let mut out = BytesMut::with_capacity(raw.len() + 128);
    out.put_slice(b"{\"messages\":[");
    for (i, (role, texts)) in t.turns.iter().enumerate() {
        out.put_slice(if i == 0 {
            b"{\"role\":\""
        } else {
            b",{\"role\":\""
        });
        out.put_slice(role.as_bytes());
        out.put_slice(b"\",\"content\":");
        put_texts(&mut out, texts, b"");
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
    if !t.system.is_empty() {
        out.put_slice(b",\"system\":");
        put_texts(&mut out, &t.system, b"");
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

#[cfg(test)]
mod tests {
    #[test]
    fn writes_what_the_general_translation_writes() {
        crate::providers::simple_chat::tests::direct_writes_what_general_writes(super::chat, |b| {
            super::super::request::chat_to_converse(b, false)
        });
    }
}
