//! Serving a cached answer in the other mode (chat completions only):
//! - a cached JSON answer serves a streaming request as synthesised chunks: one chunk with the role
//!   and the whole content (or tool calls), one with the `finish_reason` (and `usage` when the
//!   client asked for it), then `data: [DONE]`;
//! - a cached stream serves a non-streaming request as one assembled `chat.completion` object: the
//!   content deltas concatenated, the last `finish_reason`, the usage event if it was recorded.
//!
//! Anything else (other endpoints, tool-call streams, several choices) is a miss in the other mode
//! and goes upstream.
//!
//! A recorded chat or completions stream always holds its usage event ([`with_usage_event`]) and
//! a client that did not ask for it (`stream_options.include_usage`) gets the stream without it
//! ([`without_usage_events`]), whichever client the stream was recorded for.

use bytes::Bytes;
use serde_json::{json, Value};

/// SSE chunks for a cached `chat.completion` JSON answer.
pub fn json_to_sse(body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v["object"] != "chat.completion" {
        return None;
    }
    let choices = v["choices"].as_array()?;
    if choices.len() != 1 {
        return None;
    }
    let c = &choices[0];
    let msg = &c["message"];
    let mut delta = json!({"role": msg["role"].as_str().unwrap_or("assistant")});
    if let Some(content) = msg.get("content").filter(|x| !x.is_null()) {
        delta["content"] = content.clone();
    }
    if let Some(tc) = msg.get("tool_calls").and_then(Value::as_array) {
        let calls: Vec<Value> = tc
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut t = t.clone();
                t["index"] = json!(i);
                t
            })
            .collect();
        delta["tool_calls"] = Value::Array(calls);
    }
    let head = json!({"id": v["id"], "object": "chat.completion.chunk", "created": v["created"],
        "model": v["model"], "system_fingerprint": v.get("system_fingerprint").cloned().unwrap_or(Value::Null)});
    let mut first = head.clone();
    first["choices"] =
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]);
    let mut last = head.clone();
    last["choices"] =
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": c["finish_reason"]}]);
    let mut out = vec![event(&first), event(&last)];
    if include_usage {
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            let mut usage = head;
            usage["choices"] = json!([]);
            usage["usage"] = u.clone();
            out.push(event(&usage));
        }
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Some(out)
}

/// Puts the usage event (`"choices": []` and `usage`) into a recorded OpenAI chat or completions
/// stream that has none, just before its `data: [DONE]`, where the upstream sends it: the gateway
/// took it out of the stream of a client that did not ask for it, and a later client that asks
/// must find it in the replay. The event takes its `id`, `object`, `created`, `model` (and
/// `system_fingerprint`) from the stream's first chunk. Leaves `chunks` as they are when they
/// already hold one, are not that kind of stream, or have no `[DONE]` in one piece.
pub fn with_usage_event(chunks: &mut [Bytes], usage: &Value) {
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let mut first: Option<Value> = None;
    for ev in all
        .split(|&b| b == b'\n')
        .filter_map(|l| l.strip_prefix(b"data:"))
    {
        let ev = ev.trim_ascii();
        if ev.first() != Some(&b'{') {
            continue;
        }
        if crate::providers::usage::is_usage_event(ev) {
            return;
        }
        if first.is_none() {
            first = serde_json::from_slice(ev).ok();
        }
    }
    let Some(head) = first else {
        return;
    };
    if !matches!(
        head["object"].as_str(),
        Some("chat.completion.chunk" | "text_completion")
    ) {
        return;
    }
    let Some((i, at)) = chunks.iter().enumerate().rev().find_map(|(i, c)| {
        memchr::memmem::rfind(c, b"data: [DONE]")
            .filter(|&at| at == 0 || c[..at].ends_with(b"\n"))
            .map(|at| (i, at))
    }) else {
        return;
    };
    let mut ev = json!({"id": head["id"], "object": head["object"], "created": head["created"],
        "model": head["model"], "choices": [], "usage": usage});
    if let Some(f) = head.get("system_fingerprint") {
        ev["system_fingerprint"] = f.clone();
    }
    let event = event(&ev);
    let c = &chunks[i];
    let mut out = Vec::with_capacity(c.len() + event.len());
    out.extend_from_slice(&c[..at]);
    out.extend_from_slice(&event);
    out.extend_from_slice(&c[at..]);
    chunks[i] = Bytes::from(out);
}

/// A recorded stream without its usage events, for a client that did not ask for usage.
pub fn without_usage_events(chunks: &[Bytes]) -> Vec<Bytes> {
    let mut strip = crate::providers::usage::UsageEventStrip::default();
    let mut out: Vec<Bytes> = chunks
        .iter()
        .filter_map(|c| strip.filter(c.clone()))
        .collect();
    out.extend(strip.finish());
    out
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// One `chat.completion` JSON object from a cached stream of chunks.
pub fn sse_to_json(chunks: &[Bytes]) -> Option<Bytes> {
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let text = std::str::from_utf8(&all).ok()?;
    let mut content = String::new();
    let mut role = "assistant".to_string();
    let mut finish: Value = Value::Null;
    let mut usage: Value = Value::Null;
    let mut head: Option<Value> = None;
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).ok()?;
        if v["object"] != "chat.completion.chunk" {
            return None;
        }
        if head.is_none() {
            head = Some(v.clone());
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        let Some(choices) = v["choices"].as_array() else {
            continue;
        };
        for c in choices {
            if c["index"].as_u64().unwrap_or(0) != 0 || c["delta"].get("tool_calls").is_some() {
                return None;
            }
            if let Some(r) = c["delta"]["role"].as_str() {
                role = r.to_string();
            }
            if let Some(t) = c["delta"]["content"].as_str() {
                content.push_str(t);
            }
            if !c["finish_reason"].is_null() {
                finish = c["finish_reason"].clone();
            }
        }
    }
    let head = head?;
    if !done {
        return None;
    }
    let out = json!({
        "id": head["id"], "object": "chat.completion", "created": head["created"], "model": head["model"],
        "system_fingerprint": head.get("system_fingerprint").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": {"role": role, "content": content}, "logprobs": null, "finish_reason": finish}],
        "usage": usage,
    });
    Some(Bytes::from(out.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let body = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let sse = json_to_sse(body, true).unwrap();
        assert_eq!(sse.len(), 4);
        assert!(std::str::from_utf8(&sse[2]).unwrap().contains("\"usage\""));
        let back: Value = serde_json::from_slice(&sse_to_json(&sse).unwrap()).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(back["choices"][0]["finish_reason"], "stop");
        assert_eq!(back["usage"]["total_tokens"], 5);
        assert_eq!(json_to_sse(body, false).unwrap().len(), 3);
    }

    #[test]
    fn other_shapes_are_not_converted() {
        assert!(json_to_sse(br#"{"object":"list","data":[]}"#, false).is_none());
        let unfinished = [Bytes::from_static(
            b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        )];
        assert!(sse_to_json(&unfinished).is_none());
    }

    const FIRST: &[u8] = b"data: {\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n";
    const LAST: &[u8] = b"data: {\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

    #[test]
    fn a_recorded_stream_gets_its_usage_event_back_before_done() {
        let mut chunks = vec![Bytes::from_static(FIRST), Bytes::from_static(LAST)];
        let usage = json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4});
        with_usage_event(&mut chunks, &usage);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0], FIRST);
        let last = std::str::from_utf8(&chunks[1]).unwrap();
        assert!(last.starts_with(std::str::from_utf8(&LAST[..LAST.len() - 14]).unwrap()));
        assert!(last.ends_with("\n\ndata: [DONE]\n\n"), "{last}");
        let ev: Value = serde_json::from_str(
            last.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .nth(1)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ev["choices"], json!([]));
        assert_eq!(ev["usage"], usage);
        assert_eq!(
            (ev["id"].as_str(), ev["created"].as_u64()),
            (Some("c9"), Some(7))
        );
        assert_eq!(ev["system_fingerprint"], "fp");
        // Once in is enough; a client that did not ask gets the stream as it was.
        let with = chunks.clone();
        with_usage_event(&mut chunks, &usage);
        assert_eq!(chunks, with);
        assert_eq!(
            without_usage_events(&chunks),
            vec![Bytes::from_static(FIRST), Bytes::from_static(LAST)]
        );
        let back: Value = serde_json::from_slice(&sse_to_json(&chunks).unwrap()).unwrap();
        assert_eq!(back["usage"], usage);
    }

    #[test]
    fn other_streams_are_left_as_they_are() {
        let usage = json!({"prompt_tokens": 1});
        // No [DONE] (a Responses API or Anthropic stream), or [DONE] split between chunks.
        let anthropic = vec![Bytes::from_static(
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        )];
        let mut c = anthropic.clone();
        with_usage_event(&mut c, &usage);
        assert_eq!(c, anthropic);
        let split = vec![
            Bytes::from_static(FIRST),
            Bytes::from_static(b"data: [DO"),
            Bytes::from_static(b"NE]\n\n"),
        ];
        let mut c = split.clone();
        with_usage_event(&mut c, &usage);
        assert_eq!(c, split);
    }
}
