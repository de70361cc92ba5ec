//! The `generateContent` body of the most common chat request
//! ([`crate::providers::simple_chat`]), written directly instead of through
//! [`super::request::chat_to_gemini`]'s `serde_json::Value` trees. A test translates generated
//! requests both ways and requires the same JSON.

use crate::providers::json_out::put_json_str;
use crate::providers::simple_chat::{self, Role};
use bytes::{BufMut, Bytes, BytesMut};

/// The `GenerateContentRequest` body for `raw`, or `None` when it is not of the simple shape.
pub fn chat(raw: &[u8]) -> Option<Bytes> {
    let req = simple_chat::parse(raw)?;
    let mut system: Vec<&str> = Vec::new();
    // Consecutive messages of one role are one content.
    let mut contents: Vec<(&'static str, Vec<&str>)> = Vec::with_capacity(req.messages.len());
    for (role, content) in &req.messages {
        // Gemini refuses empty text parts.
        let text = content.as_deref().filter(|t| !t.is_empty());
        let role = match role {
            Role::System => {
                system.extend(text);
                continue;
            }
            Role::User => "user",
            Role::Assistant => "model",
        };
        let Some(text) = text else { continue };
        match contents.last_mut() {
            Some((r, parts)) if *r == role => parts.push(text),
            _ => contents.push((role, vec![text])),
        }
    }
    if contents.is_empty() {
        return None;
    }
    let mut out = BytesMut::with_capacity(raw.len() + 128);
    out.put_slice(b"{\"contents\":[");
    for (i, (role, parts)) in contents.iter().enumerate() {
        if i > 0 {
            out.put_slice(b",");
        }
        out.put_slice(b"{\"role\":\"");
        out.put_slice(role.as_bytes());
        out.put_slice(b"\",\"parts\":");
        text_parts(&mut out, parts);
        out.put_slice(b"}");
    }
    out.put_slice(b"]");
    if !system.is_empty() {
        out.put_slice(b",\"systemInstruction\":{\"parts\":");
        text_parts(&mut out, &system);
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

/// `[{"text": ...}, ...]`
fn text_parts(out: &mut BytesMut, texts: &[&str]) {
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
    use super::super::request::chat_to_gemini;
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
            let general = chat_to_gemini(body.as_object().unwrap(), false).unwrap_or_else(|e| {
                panic!("{body}: the direct writer answered, the general path refused: {e:?}")
            });
            assert_eq!(direct, general, "{body}");
        }
        assert!(simple > total / 5 && simple < total, "{simple} of {total}");
    }
}
