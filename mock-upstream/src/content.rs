//! What an answer says, whatever its dialect: the per-request generation parameters (CLI
//! defaults, runtime settings and `x-mock-*` overrides), the content of a full answer and of each
//! stream chunk, the pacing, and the usage it reports.
//!
//! # Usage accounting
//!
//! `P = max(1, request body length / 4)` prompt tokens; completion tokens `C = max(1, chunks)`, or
//! `max(1, response_bytes / 4)` when response-bytes is set; `total = P + C`. Embeddings report `P`
//! for both. (The rate limits charge a different figure, the estimate of `tokens`.)

use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::body::hdr_u64;
use crate::server::State;

/// The content of a non-stream answer when no size is asked for.
const DEFAULT_CONTENT: &str = "Hello from mock";
const FILLER: &[u8] = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod ";

/// Effective per-request generation parameters.
pub(crate) struct Gen {
    ttft: Duration,
    pub(crate) interval: Duration,
    pub(crate) chunks: usize,
    response_bytes: usize,
    drop_after: Option<usize>,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    /// `x-mock-cache-read-tokens`: prompt tokens reported as read from the prompt cache.
    pub(crate) cache_read: u64,
    /// `x-mock-cache-write-tokens`: prompt tokens reported as written to the prompt cache.
    pub(crate) cache_write: u64,
    /// `x-mock-reasoning-tokens`: output tokens reported as reasoning (OpenAI dialect).
    pub(crate) reasoning: u64,
    /// Echo mode (chat only): the content is this text instead of the default or filler.
    pub(crate) echo: Option<String>,
    /// Chat only (`x-mock-tool-call: NAME` with a non-empty `tools`): answer with one tool call,
    /// `(name, arguments as a JSON string)`.
    pub(crate) tool_call: Option<(String, String)>,
    /// Set by [`Gen::cap`]: the answer stops after this many chunks (fewer than `chunks`).
    cap: Option<usize>,
}

impl Gen {
    /// OpenAI's `usage` object: `prompt_tokens` includes the cached part and `completion_tokens`
    /// the reasoning part; the details are present when a cache read or reasoning is asked for.
    pub(crate) fn openai_usage(&self) -> String {
        let p = self.prompt_tokens + self.cache_read;
        let c = self.completion_tokens + self.reasoning;
        let details = if self.cache_read > 0 || self.reasoning > 0 {
            format!(
                r#","prompt_tokens_details":{{"cached_tokens":{}}},"completion_tokens_details":{{"reasoning_tokens":{}}}"#,
                self.cache_read, self.reasoning
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}{details}}}"#,
            t = p + c
        )
    }

    pub(crate) fn new(state: &State, h: &HeaderMap, body_len: usize) -> Self {
        let ttft = hdr_u64(h, "x-mock-ttft-ms").unwrap_or(state.ttft_ms);
        let chunks = hdr_u64(h, "x-mock-chunks").unwrap_or(state.chunks) as usize;
        let response_bytes =
            hdr_u64(h, "x-mock-response-bytes").unwrap_or(state.response_bytes) as usize;
        let tps = hdr_u64(h, "x-mock-tokens-per-sec").unwrap_or(state.tokens_per_sec);
        let interval = match hdr_u64(h, "x-mock-chunk-interval-ms").or(state.chunk_interval_ms) {
            Some(ms) => Duration::from_millis(ms),
            None if tps > 0 => Duration::from_micros(1_000_000 / tps),
            None => Duration::ZERO,
        };
        let completion_tokens = if response_bytes > 0 {
            (response_bytes as u64 / 4).max(1)
        } else {
            (chunks as u64).max(1)
        };
        Gen {
            ttft: Duration::from_millis(ttft),
            interval,
            chunks,
            response_bytes,
            drop_after: hdr_u64(h, "x-mock-drop-after-chunks").map(|k| k as usize),
            prompt_tokens: hdr_u64(h, "x-mock-prompt-tokens")
                .unwrap_or((body_len as u64 / 4).max(1)),
            completion_tokens,
            cache_read: hdr_u64(h, "x-mock-cache-read-tokens").unwrap_or(0),
            cache_write: hdr_u64(h, "x-mock-cache-write-tokens").unwrap_or(0),
            reasoning: hdr_u64(h, "x-mock-reasoning-tokens").unwrap_or(0),
            echo: None,
            tool_call: None,
            cap: None,
        }
    }

    /// Apply a request's output maximum (Bedrock's `maxTokens`, Gemini's `maxOutputTokens`, a
    /// text-generation server's `max_new_tokens`): with fewer tokens allowed than chunks, the
    /// answer is its first `max` chunks (and that many completion tokens at most). Returns whether
    /// the answer was cut.
    pub(crate) fn cap(&mut self, max: Option<u64>) -> bool {
        match max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)) {
            Some(m) if m < self.chunks => {
                self.cap = Some(m);
                self.completion_tokens = self.completion_tokens.min(m as u64);
                true
            }
            _ => false,
        }
    }

    /// The number of content chunks sent.
    pub(crate) fn sent(&self) -> usize {
        self.cap.unwrap_or(self.chunks)
    }

    /// Full (non-stream) content.
    pub(crate) fn content(&self) -> String {
        if let Some(c) = self.cap {
            (0..c).map(|i| self.chunk(i)).collect()
        } else if let Some(e) = &self.echo {
            e.clone()
        } else if self.response_bytes > 0 {
            filler(self.response_bytes)
        } else {
            DEFAULT_CONTENT.to_owned()
        }
    }

    /// Content of stream chunk `i`.
    pub(crate) fn chunk(&self, i: usize) -> String {
        if let Some(e) = &self.echo {
            // The echo spread over the chunks (trailing chunks empty when it is short).
            split_pieces(e, self.chunks)
                .get(i)
                .map(|p| (*p).to_owned())
                .unwrap_or_default()
        } else if self.response_bytes > 0 {
            let base = self.response_bytes / self.chunks;
            let extra = usize::from(i < self.response_bytes % self.chunks);
            filler(base + extra)
        } else {
            format!("tok{i} ")
        }
    }

    /// Delay before content chunk `i`.
    pub(crate) fn delay(&self, i: usize) -> Duration {
        if i == 0 {
            self.ttft
        } else {
            self.interval
        }
    }

    /// Frame index at which to abort, given `lead` leading frames.
    pub(crate) fn drop_index(&self, lead: usize) -> Option<usize> {
        self.drop_after.map(|k| lead + k.min(self.sent()))
    }
}

/// The mock's tool input: `x-mock-tool-input` (a JSON object), else `"mock"` for every property
/// of the tool's JSON schema `properties`.
pub(crate) fn tool_input(h: &HeaderMap, properties: Option<&Value>) -> Value {
    if let Some(v) = h
        .get("x-mock-tool-input")
        .and_then(|v| serde_json::from_slice::<Value>(v.as_bytes()).ok())
        .filter(Value::is_object)
    {
        return v;
    }
    let mut input = serde_json::Map::new();
    for k in properties
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.keys())
    {
        input.insert(k.clone(), Value::String("mock".to_owned()));
    }
    Value::Object(input)
}

/// `n` bytes of ASCII filler text.
pub(crate) fn filler(n: usize) -> String {
    let mut s = String::with_capacity(n);
    while s.len() < n {
        let take = (n - s.len()).min(FILLER.len());
        // FILLER is ASCII, so any prefix is valid UTF-8.
        s.push_str(std::str::from_utf8(&FILLER[..take]).unwrap_or(""));
    }
    s
}

/// `s` cut into `n` pieces (at char boundaries; fewer when `s` is short).
pub(crate) fn split_pieces(s: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let size = s.len().div_ceil(n).max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + size).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
}

/// The text of the last `user` message of a chat body: its string content, or its `text` parts
/// joined. `None` when there is none (the answer keeps its default content).
pub(crate) fn echo_text(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Messages {
        #[serde(default)]
        messages: Vec<Value>,
    }
    let m: Messages = serde_json::from_slice(body).ok()?;
    let last = m.messages.iter().rev().find(|m| m["role"] == "user")?;
    match &last["content"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_takes_the_last_user_message() {
        let body = br#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}]}"#;
        assert_eq!(echo_text(body).as_deref(), Some("ab"));
        assert_eq!(echo_text(br#"{"messages":[]}"#), None);
        assert_eq!(echo_text(b"nope"), None);
    }

    #[test]
    fn split_pieces_covers_the_string() {
        let s = r#"{"city":"Zürich"}"#;
        for n in 0..25 {
            let p = split_pieces(s, n);
            assert_eq!(p.concat(), s);
            assert!(p.len() <= n.max(1));
        }
        assert!(split_pieces("", 3).is_empty());
    }

    #[test]
    fn filler_has_the_exact_length() {
        for n in [0, 1, 70, 71, 1000] {
            let f = filler(n);
            assert_eq!(f.len(), n);
            assert!(f.is_ascii());
        }
    }
}
