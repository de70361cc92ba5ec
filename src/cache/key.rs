//! The cache key: SHA-256 of the canonical request — endpoint, resolved model, and every body field
//! that can change the answer, with object keys sorted and whitespace gone — so JSON key order and
//! formatting do not matter, and fields that do not change the answer (`stream`, `stream_options`,
//! `user`, the gateway's own controls) are left out. A streaming and a non-streaming request for the
//! same thing share a key: the entry can serve both (see [`super::convert`]).

use crate::body::JsonBody;
use crate::route::Endpoint;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Body fields that never change what the model answers.
const IGNORED: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "caching",
    "cache",
    "num_retries",
    "request_timeout",
    "fallbacks",
    "context_window_fallbacks",
];

pub type Key = [u8; 32];

/// The key of a request for `model` (the resolved name, after aliases), optionally per caller
/// (`scope: key`). `None` when the body is not canonicalisable (it then is not cached).
pub fn key(endpoint: Endpoint, model: &str, body: &JsonBody, scope: Option<&str>) -> Option<Key> {
    let mut h = Sha256::new();
    h.update(b"llmproxy-cache-v1\0");
    h.update(endpoint.upstream_path().as_bytes());
    h.update(b"\0");
    h.update(model.as_bytes());
    h.update(b"\0");
    if let Some(s) = scope {
        h.update(b"scope\0");
        h.update(s.as_bytes());
        h.update(b"\0");
    }
    let mut fields: Vec<(&str, &str)> = body
        .fields()
        .filter(|(k, _)| !IGNORED.contains(k))
        .collect();
    // A repeated key counts as its last occurrence (as JSON parsers read it).
    fields.reverse();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields.dedup_by(|a, b| a.0 == b.0);
    let mut buf = Vec::with_capacity(256);
    for (k, raw) in fields {
        let v: Value = serde_json::from_str(raw).ok()?;
        buf.clear();
        canonical(&v, &mut buf);
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(&buf);
        h.update(b"\0");
    }
    Some(h.finalize().into())
}

/// Compact JSON with object keys sorted, recursively.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        // 0 and 0.0 (or 1e2 and 100) ask the same thing.
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.extend_from_slice((f as i64).to_string().as_bytes())
            }
            _ => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        },
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// Whether the answer is determined by the request: `temperature: 0` or a `seed` (embeddings
/// always are).
pub fn deterministic(endpoint: Endpoint, body: &JsonBody) -> bool {
    if endpoint == Endpoint::Embeddings {
        return true;
    }
    let seeded = body.get("seed").is_some_and(|s| s.trim() != "null");
    let cold = body
        .get("temperature")
        .and_then(|t| t.trim().parse::<f64>().ok())
        .is_some_and(|t| t == 0.0);
    seeded || cold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(body: &str) -> Key {
        let b = JsonBody::parse(body.as_bytes()).unwrap();
        key(Endpoint::ChatCompletions, "m", &b, None).unwrap()
    }

    #[test]
    fn order_and_whitespace_do_not_matter() {
        assert_eq!(
            k(r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0}"#),
            k(
                r#"{ "temperature" : 0, "messages" : [ { "content" : "hi", "role" : "user" } ], "model": "y" }"#
            )
        );
    }

    #[test]
    fn output_changing_fields_do() {
        let base = k(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
        assert_ne!(
            base,
            k(r#"{"messages":[{"role":"user","content":"hi!"}],"temperature":0}"#)
        );
        assert_eq!(
            base,
            k(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.0}"#)
        );
        assert_ne!(
            base,
            k(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#)
        );
        assert_ne!(
            base,
            k(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"max_tokens":5}"#)
        );
        assert_eq!(
            base,
            k(
                r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"stream":true,"stream_options":{"include_usage":true},"user":"u1","caching":true}"#
            )
        );
    }

    #[test]
    fn scope_and_model_separate_entries() {
        let b = JsonBody::parse(br#"{"messages":[]}"#).unwrap();
        let a = key(Endpoint::ChatCompletions, "m", &b, None);
        assert_ne!(a, key(Endpoint::ChatCompletions, "n", &b, None));
        assert_ne!(a, key(Endpoint::ChatCompletions, "m", &b, Some("k1")));
        assert_ne!(a, key(Endpoint::Completions, "m", &b, None));
    }

    #[test]
    fn determinism() {
        let d = |s: &str| {
            deterministic(
                Endpoint::ChatCompletions,
                &JsonBody::parse(s.as_bytes()).unwrap(),
            )
        };
        assert!(d(r#"{"temperature":0}"#));
        assert!(d(r#"{"temperature":0.0}"#));
        assert!(d(r#"{"seed":7,"temperature":1}"#));
        assert!(!d(r#"{"temperature":0.7}"#));
        assert!(!d(r#"{}"#));
        assert!(!d(r#"{"seed":null}"#));
    }
}
