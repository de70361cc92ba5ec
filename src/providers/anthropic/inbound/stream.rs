//! OpenAI chat completion chunks → Anthropic SSE events, chunk by chunk.

use super::*;
use crate::providers::anthropic::put_json_str;
use crate::providers::usage::Usage;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

// ---------------------------------------------------------------------------------------------
// Streaming: OpenAI SSE → Anthropic SSE
// ---------------------------------------------------------------------------------------------

/// The first element of a JSON array (the rest skipped without allocating); `null` → none.
pub(super) struct First<T>(Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or null")
            }
            fn visit_unit<E>(self) -> Result<First<T>, E> {
                Ok(First(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON array whose first element is kept inline: the usual single tool-call delta costs no
/// allocation; further ones go to `rest`.
pub(super) struct Few<T> {
    pub(super) first: Option<T>,
    pub(super) rest: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Few<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Few<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or null")
            }
            fn visit_unit<E>(self) -> Result<Few<T>, E> {
                Ok(Few::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Few<T>, A::Error> {
                let mut few = Few {
                    first: seq.next_element()?,
                    rest: Vec::new(),
                };
                while let Some(x) = seq.next_element()? {
                    few.rest.push(x);
                }
                Ok(few)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Deserialize)]
pub(super) struct Chunk<'a> {
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) choices: First<Choice<'a>>,
    #[serde(default)]
    pub(super) usage: Option<OaUsage>,
    /// OpenAI's `{"error": {...}}` (or a string); allocated only when present.
    #[serde(default)]
    pub(super) error: Option<Value>,
    /// vLLM's `{"object": "error", "message": ...}`.
    #[serde(default, borrow)]
    pub(super) message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    #[serde(default, borrow)]
    pub(super) delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
    /// vLLM: the matched stop string (or token id).
    #[serde(default)]
    pub(super) stop_reason: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    pub(super) content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) tool_calls: Option<Few<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ToolDelta<'a> {
    #[serde(default)]
    pub(super) index: Option<u32>,
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) function: Option<FnDelta<'a>>,
}

#[derive(Deserialize)]
pub(super) struct FnDelta<'a> {
    #[serde(default, borrow)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) arguments: Option<Cow<'a, str>>,
}

/// A tool call seen in the stream: its OpenAI index and id, and its Anthropic block.
pub(super) struct ToolSlot {
    pub(super) key: u32,
    pub(super) id: String,
    pub(super) block: usize,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Open {
    Text(usize),
    Tool(usize),
}

/// OpenAI `chat.completion.chunk` SSE → Anthropic Messages SSE, one upstream event at a time.
///
/// Feed the upstream body as it arrives ([`feed`](Self::feed); chunks may split anywhere, `\n`
/// and `\r\n` line ends both work) and send on what comes back; call [`finish`](Self::finish)
/// when the upstream body ends. Every event is `event: <type>\ndata: <json>\n\n`.
///
/// * The first chunk with a choice (or usage) → `message_start` (`id` as in
///   [`chat_to_messages_response`], empty `content`, `usage.input_tokens` the
///   [`with_input_estimate`](ChatStreamToMessages::with_input_estimate) estimate (0 without one)
///   until the usage chunk gives the real count, `output_tokens` 0). Chunks before it without choices
///   (Azure's prompt-filter results) only lend their id.
/// * `delta.content` (and `delta.refusal`) → `content_block_start` of a `text` block when the
///   open block is not one, then `text_delta`s.
/// * A `tool_calls` delta for a new tool call (a new `index`, or a new `id` on a known index) →
///   `content_block_stop` of the open block, `content_block_start` of a `tool_use` block (`id`
///   and `name`, `input: {}`), then `function.arguments` fragments → `input_json_delta`s.
///   Text after a tool call opens a new text block. A fragment for a tool whose block was already
///   stopped (no server interleaves so) still goes to that block's index.
/// * `finish_reason` is kept; at `data: [DONE]` (or at the end of the body when a finish reason
///   was seen) → `content_block_stop`, `message_delta` (`stop_reason` as in the response
///   mapping, `usage` with `output_tokens` and, from the usage chunk, `input_tokens` and the
///   cache counts; Anthropic's SDKs take both from `message_delta`) and `message_stop`.
/// * An upstream error event (`data: {"error": ...}`), malformed data, or an end of the body
///   with neither `[DONE]` nor a finish reason → `event: error` with
///   `{"type":"error","error":{"type":"api_error","message":...}}`, and nothing after it.
///
/// `reasoning_content` deltas are not relayed. Buffers are reused: apart from the output,
/// allocation happens only per new tool call, for strings with JSON escapes (serde unescapes
/// them), and for the rare chunk with several tool-call deltas.
pub struct ChatStreamToMessages {
    pub(super) reader: crate::providers::sse::SseReader,
    /// `data:` payload of the event being translated.
    pub(super) data: Vec<u8>,
    pub(super) out: BytesMut,
    pub(super) model: String,
    /// The upstream completion id, until `message_start`.
    pub(super) upstream_id: String,
    pub(super) started: bool,
    pub(super) open: Option<Open>,
    pub(super) next_block: usize,
    pub(super) tools: Vec<ToolSlot>,
    pub(super) finish: Option<&'static str>,
    pub(super) stop_sequence: Option<String>,
    pub(super) usage: Option<OaUsage>,
    /// `message_start`'s `input_tokens` before the upstream's usage chunk arrives (the gateway's
    /// estimate; Anthropic clients read it there, `message_delta` carries the real count).
    pub(super) input_estimate: u64,
    pub(super) done: bool,
}

impl ChatStreamToMessages {
    /// Announce `n` input tokens in `message_start` until the real count is known.
    pub fn with_input_estimate(mut self, n: u64) -> Self {
        self.input_estimate = n;
        self
    }

    /// A translator answering as `model` (the alias the client asked for).
    pub fn new(model: &str) -> Self {
        ChatStreamToMessages {
            reader: crate::providers::sse::SseReader::with_capacity(1024),
            data: Vec::with_capacity(1024),
            out: BytesMut::with_capacity(1024),
            model: model.to_owned(),
            upstream_id: String::new(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: None,
            input_estimate: 0,
            done: false,
        }
    }

    /// The usage from the upstream's usage chunk (`None` before it): prompt tokens as OpenAI
    /// counts them (cached included), completion tokens.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.to_usage())
    }

    /// Whether the stream is complete (`message_stop` or `error` produced).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translate the next upstream chunk; returns the complete Anthropic events it finished
    /// (possibly empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.consume(chunk);
        self.out.split().freeze()
    }

    /// Parse `chunk`, writing the events it completes into `out`.
    pub(super) fn consume(&mut self, chunk: &[u8]) {
        if !self.done {
            // `event:`, `id:` and comment lines (`: keep-alive`) carry nothing here.
            self.reader.push(chunk);
            while !self.done && self.reader.next_event(&mut self.data) {
                self.dispatch();
            }
            if self.done {
                self.reader.clear();
            }
        }
    }

    /// The upstream body ended: completes the stream if it was not (a message without its end is
    /// an error event, never a silent truncation). Returns what is left to send.
    pub fn finish(&mut self) -> Bytes {
        if !self.done {
            // A last event without its blank line (or its line end).
            if self.reader.pending() {
                self.consume(b"\n\n");
            }
            if !self.done {
                if self.finish.is_some() {
                    self.end();
                } else {
                    self.fail("upstream stream ended before the message was complete");
                }
            }
        }
        self.out.split().freeze()
    }

    pub(super) fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        if data.as_slice() == b"[DONE]" {
            self.end();
        } else {
            match serde_json::from_slice::<Chunk>(&data) {
                Ok(c) => self.on_chunk(c),
                Err(_) => self.fail("malformed event from the upstream stream"),
            }
        }
        self.data = data;
        self.data.clear();
    }

    pub(super) fn on_chunk(&mut self, c: Chunk) {
        if let Some(e) = &c.error {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
                .unwrap_or("upstream error");
            self.fail(msg);
            return;
        }
        if c.object.as_deref() == Some("error") {
            self.fail(c.message.as_deref().unwrap_or("upstream error"));
            return;
        }
        if !self.started && self.upstream_id.is_empty() {
            if let Some(id) = c.id.as_deref() {
                self.upstream_id.push_str(id);
            }
        }
        if let Some(u) = c.usage {
            self.usage = Some(u);
        }
        let Some(choice) = c.choices.0 else {
            if self.usage.is_some() {
                self.start();
            }
            return;
        };
        self.start();
        if let Some(d) = choice.delta {
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.text(t);
            }
            if let Some(t) = d.refusal.as_deref().filter(|t| !t.is_empty()) {
                self.text(t);
            }
            if let Some(calls) = d.tool_calls {
                for tc in calls.first.iter().chain(calls.rest.iter()) {
                    self.tool_delta(tc);
                }
            }
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(match f {
                "length" => "max_tokens",
                "tool_calls" | "function_call" => "tool_use",
                "content_filter" => "refusal",
                _ => "end_turn",
            });
            if f == "stop" {
                if let Some(s) = matched_stop(choice.stop_reason.as_ref()) {
                    self.stop_sequence = Some(s.to_owned());
                }
            }
        }
    }

    /// `message_start`, once.
    pub(super) fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let id = message_id(Some(self.upstream_id.as_str()));
        self.upstream_id.clear();
        self.out.put_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        put_json_str(&mut self.out, &id);
        self.out
            .put_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        put_json_str(&mut self.out, &self.model);
        self.out
            .put_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
        let mut u = self.usage.unwrap_or_default();
        if u.prompt_tokens.is_none() {
            u.prompt_tokens = Some(self.input_estimate);
        }
        // Nothing is generated yet.
        u.completion_tokens = Some(0);
        u.write_anthropic(&mut self.out);
        self.out.put_slice(b"}}\n\n");
    }

    pub(super) fn close(&mut self) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            self.out.put_slice(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
            );
            let _ = write!(self.out, "{i}}}\n\n");
        }
    }

    fn text(&mut self, t: &str) {
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                self.close();
                let i = self.next_block;
                self.next_block += 1;
                self.out.put_slice(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
                );
                let _ = write!(
                    self.out,
                    "{i},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
                );
                self.open = Some(Open::Text(i));
                i
            }
        };
        self.out.put_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        let _ = write!(
            self.out,
            "{index},\"delta\":{{\"type\":\"text_delta\",\"text\":"
        );
        put_json_str(&mut self.out, t);
        self.out.put_slice(b"}}\n\n");
    }

    fn tool_delta(&mut self, tc: &ToolDelta) {
        let id = tc.id.as_deref().filter(|s| !s.is_empty());
        // Which tool call this fragment continues: by index, unless it names another id; a
        // fragment without index continues the last tool call unless it brings a new id.
        let last = self.tools.last();
        let found = match tc.index {
            Some(k) => self
                .tools
                .iter()
                .rposition(|t| t.key == k && id.is_none_or(|id| id == t.id)),
            None => match (last, id) {
                (Some(t), Some(id)) if t.id != id => None,
                (Some(_), _) => Some(self.tools.len() - 1),
                (None, _) => None,
            },
        };
        let block = match found {
            Some(s) => self.tools[s].block,
            None => {
                let key = tc
                    .index
                    .unwrap_or_else(|| self.tools.last().map_or(0, |t| t.key.saturating_add(1)));
                let id = match id {
                    Some(id) => id.to_owned(),
                    None => random_id("toolu_"),
                };
                let name = tc
                    .function
                    .as_ref()
                    .and_then(|f| f.name.as_deref())
                    .unwrap_or("");
                self.close();
                let block = self.next_block;
                self.next_block += 1;
                self.out.put_slice(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
                );
                let _ = write!(
                    self.out,
                    "{block},\"content_block\":{{\"type\":\"tool_use\",\"id\":"
                );
                put_json_str(&mut self.out, &id);
                self.out.put_slice(b",\"name\":");
                put_json_str(&mut self.out, name);
                self.out.put_slice(b",\"input\":{}}}\n\n");
                self.open = Some(Open::Tool(block));
                self.tools.push(ToolSlot { key, id, block });
                block
            }
        };
        if let Some(args) = tc
            .function
            .as_ref()
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            self.out.put_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
            );
            let _ = write!(
                self.out,
                "{block},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":"
            );
            put_json_str(&mut self.out, args);
            self.out.put_slice(b"}}\n\n");
        }
    }

    /// The end of the message: block stop, `message_delta`, `message_stop`.
    fn end(&mut self) {
        if self.done {
            return;
        }
        self.start();
        self.close();
        let has_tools = !self.tools.is_empty();
        let reason = match self.finish {
            Some("end_turn") | None if has_tools => "tool_use",
            Some("end_turn") if self.stop_sequence.is_some() => "stop_sequence",
            Some(r) => r,
            None => "end_turn",
        };
        self.out.put_slice(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"",
        );
        self.out.put_slice(reason.as_bytes());
        self.out.put_slice(b"\",\"stop_sequence\":");
        match (&self.stop_sequence, reason) {
            (Some(s), "stop_sequence") => put_json_str(&mut self.out, s),
            _ => self.out.put_slice(b"null"),
        }
        self.out.put_slice(b"},\"usage\":");
        match self.usage {
            Some(u) => u.write_anthropic(&mut self.out),
            None => self.out.put_slice(b"{\"output_tokens\":0}"),
        }
        self.out
            .put_slice(b"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.done = true;
    }

    fn fail(&mut self, message: &str) {
        if self.done {
            return;
        }
        self.out.put_slice(b"event: error\ndata: ");
        write_error(&mut self.out, "api_error", message);
        self.out.put_slice(b"\n\n");
        self.done = true;
    }
}
