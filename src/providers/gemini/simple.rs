//! The `generateContent` body of the most common chat request
//! ([`crate::providers::simple_chat`]), written directly instead of through
//! [`super::request::chat_to_gemini`]'s `serde_json::Value` trees. A test translates generated
//! requests both ways and requires the same JSON.

use crate::providers::simple_chat::{self, put_texts};
use bytes::{BufMut, Bytes, BytesMut};

/// The `GenerateContentRequest` body for `raw`, or `None` when it is not of the simple shape.
pub fn chat(raw: &[u8]) -> Option<Bytes> {
    let req = simple_chat::parse(raw)?;
    // Gemini refuses empty text parts; the assistant is `model`.
    let t = simple_chat::turns(&req, |t| !t.is_empty(), "model", false)?;
    let mut out = BytesMut::with_capacity(raw.len() + 128);
    out.put_slice(b"{\"contents\":[");
    for (i, (role, texts)) in t.turns.iter().enumerate() {
        out.put_slice(if i == 0 {
            b"{\"role\":\""
        } else {
            b",{\"role\":\""
        });
        out.put_slice(role.as_bytes());
        out.put_slice(b"\",\"parts\":");
        put_texts(&mut out, texts, b"");
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
    if !t.system.is_empty() {
        out.put_slice(b",\"systemInstruction\":{\"parts\":");
        put_texts(&mut out, &t.system, b"");
        out.put_slice(b"}");
    }
    let max = req.max_tokens.map(serde_json::Number::from);
    let config = [
        (&b"maxOutputTokens"[..], max.as_ref()),
        (b"temperature", req.temperature.as_ref()),
        (b"topP", req.top_p.as_ref()),
    ];
    let mut first = true;
    for (name, value) in config {
        let Some(value) = value else { continue };
        out.put_slice(if first {
            b",\"generationConfig\":{\""
        } else {
            b",\""
        });
        first = false;
        out.put_slice(name);
        out.put_slice(b"\":");
        let _ = serde_json::to_writer((&mut out).writer(), value);
    }
    if !first {
        out.put_slice(b"}");
    }
    out.put_slice(b"}");
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_what_the_general_translation_writes() {
        crate::providers::simple_chat::tests::direct_writes_what_general_writes(super::chat, |b| {
            super::super::request::chat_to_gemini(b.as_object().unwrap(), false)
        });
    }
}
