//! Anthropic SSE events → OpenAI chat completion chunks, event by event.

use super::*;
use crate::providers::usage::Usage;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use std::borrow::Cow;

// ---------------------------------------------------------------------------------------------
// Streaming: Anthropic SSE → OpenAI SSE
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct Event<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) ty: Cow<'a, str>,
    #[serde(default)]
    pub(super) index: Option<usize>,
    #[serde(default, borrow)]
    pub(super) message: Option<StartMessage<'a>>,
    #[serde(default, borrow)]
    pub(super) content_block: Option<Block<'a>>,
    #[serde(default, borrow)]
    pub(super) delta: Option<Delta<'a>>,
    #[serde(default)]
    pub(super) usage: Option<AnthUsage>,
    #[serde(default, borrow)]
    pub(super) error: Option<ErrBody<'a>>,
}

#[derive(Deserialize)]
pub(super) struct StartMessage<'a> {
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) usage: Option<AnthUsage>,
}

#[derive(Deserialize)]
pub(super) struct Block<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) ty: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Delta<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(super) ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct ErrBody<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(super) ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) message: Option<Cow<'a, str>>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum BlockKind {
    Text,
    /// A tool_use block and its OpenAI `tool_calls[].index`.
    Tool(u32),
    /// thinking, server tools, ...: not relayed.
    Other,
}

/// Anthropic SSE → OpenAI `chat.completion.chunk` SSE, one Anthropic event at a time.
///
/// Feed the upstream body as it arrives ([`feed`](Self::feed); chunks may split anywhere, `\n` and
/// `\r\n` line ends both work) and send on what comes back; call [`finish`](Self::finish) when the
/// upstream body ends. Mapping: `message_start` → a first chunk with `role: assistant`;
/// text deltas → `content` deltas; a `tool_use` block start → a `tool_calls` delta with `id`,
/// `type`, `name` and empty `arguments`; `input_json_delta` → `arguments` deltas; `message_delta`
/// → a chunk with the `finish_reason`; `message_stop` → the usage chunk (`choices: []`, only when
/// `include_usage`) and `data: [DONE]`; `ping`, thinking blocks and unknown events are skipped;
/// an `error` event (or malformed data, or an upstream end before `message_stop`) → an
/// OpenAI-shaped `data: {"error": {...}}` event and `data: [DONE]`. Nothing is produced after
/// `[DONE]`.
pub struct StreamTranslator {
    pub(super) reader: crate::providers::sse::SseReader,
    /// `data:` payload of the event being translated.
    pub(super) data: Vec<u8>,
    pub(super) out: BytesMut,
    /// `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[` once the
    /// message id is known.
    prefix: String,
    model: String,
    created: u64,
    include_usage: bool,
    blocks: Vec<BlockKind>,
    next_tool: u32,
    usage: Option<AnthUsage>,
    started: bool,
    finished: bool,
    done: bool,
}

impl StreamTranslator {
    /// A translator answering as `model_alias`; `include_usage` = the client's
    /// `stream_options.include_usage`.
    pub fn new(model_alias: &str, include_usage: bool) -> Self {
        let mut t = StreamTranslator {
            reader: crate::providers::sse::SseReader::with_capacity(1024),
            data: Vec::with_capacity(1024),
            out: BytesMut::with_capacity(1024),
            prefix: String::new(),
            model: model_alias.to_owned(),
            created: now_secs(),
            include_usage,
            blocks: Vec::new(),
            next_tool: 0,
            usage: None,
            started: false,
            finished: false,
            done: false,
        };
        t.set_id("chatcmpl-anthropic");
        t
    }

    fn set_id(&mut self, id: &str) {
        self.prefix.clear();
        self.prefix.push_str("{\"id\":");
        push_json_str(&mut self.prefix, id);
        self.prefix
            .push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        self.prefix.push_str(&self.created.to_string());
        self.prefix.push_str(",\"model\":");
        push_json_str(&mut self.prefix, &self.model);
        self.prefix.push_str(",\"choices\":[");
    }

    /// The usage so far (`None` before `message_start`): prompt = input + cache tokens, completion =
    /// output tokens (final after `message_delta`).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthUsage::to_usage)
    }

    /// Whether `data: [DONE]` was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translate the next upstream chunk; returns the complete OpenAI events it finished (possibly
    /// empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if !self.done {
            // `event:` lines are redundant with the JSON `type`.
            self.reader.push(chunk);
            while !self.done && self.reader.next_event(&mut self.data) {
                self.dispatch();
            }
            if self.done {
                self.reader.clear();
            }
        }
        self.out.split().freeze()
    }

    /// The upstream body ended: completes the stream if it was not (an unfinished message is an
    /// error event, never a silent truncation). Returns what is left to send.
    pub fn finish(&mut self) -> Bytes {
        // What a last event without its blank line completes (`feed` hands it out).
        let mut head = Bytes::new();
        if !self.done {
            if self.reader.pending() {
                head = self.feed(b"\n\n");
            }
            if !self.done {
                if self.finished {
                    // message_delta seen, message_stop missing: the answer is complete.
                    self.end();
                } else {
                    self.fail(
                        None,
                        502,
                        "upstream stream ended before the message was complete",
                    );
                }
            }
        }
        if head.is_empty() {
            return self.out.split().freeze();
        }
        let mut all = BytesMut::with_capacity(head.len() + self.out.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&self.out.split());
        all.freeze()
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        match serde_json::from_slice::<Event>(&data) {
            Ok(ev) => self.on_event(ev),
            Err(_) => self.fail(None, 502, "malformed event from the upstream stream"),
        }
        self.data = data;
        self.data.clear();
    }

    fn on_event(&mut self, ev: Event) {
        match ev.ty.as_ref() {
            "message_start" => {
                if let Some(m) = ev.message {
                    if let Some(id) = m.id.as_deref() {
                        self.set_id(id);
                    }
                    let mut u = self.usage.unwrap_or_default();
                    if let Some(mu) = m.usage {
                        u.merge(&mu);
                    }
                    self.usage = Some(u);
                }
                self.start();
            }
            "content_block_start" => {
                self.start();
                let (Some(index), Some(block)) = (ev.index, ev.content_block) else {
                    return;
                };
                let kind = match block.ty.as_ref() {
                    "text" => {
                        if let Some(t) = block.text.as_deref().filter(|t| !t.is_empty()) {
                            self.content_delta(t);
                        }
                        BlockKind::Text
                    }
                    "tool_use" => {
                        let t = self.next_tool;
                        self.next_tool += 1;
                        self.tool_start(
                            t,
                            block.id.as_deref().unwrap_or(""),
                            block.name.as_deref().unwrap_or(""),
                        );
                        BlockKind::Tool(t)
                    }
                    _ => BlockKind::Other,
                };
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, BlockKind::Other);
                }
                self.blocks[index] = kind;
            }
            "content_block_delta" => {
                let (Some(index), Some(delta)) = (ev.index, ev.delta) else {
                    return;
                };
                let kind = self.blocks.get(index).copied().unwrap_or(BlockKind::Other);
                match (kind, delta.ty.as_deref()) {
                    (BlockKind::Text, Some("text_delta")) => {
                        if let Some(t) = delta.text.as_deref().filter(|t| !t.is_empty()) {
                            self.content_delta(t);
                        }
                    }
                    (BlockKind::Tool(t), Some("input_json_delta")) => {
                        if let Some(p) = delta.partial_json.as_deref().filter(|p| !p.is_empty()) {
                            self.args_delta(t, p);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    self.usage.get_or_insert_with(AnthUsage::default).merge(&u);
                }
                let reason =
                    finish_reason(ev.delta.as_ref().and_then(|d| d.stop_reason.as_deref()));
                self.start();
                self.chunk_begin();
                self.out
                    .put_slice(b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
                self.out.put_slice(reason.as_bytes());
                self.out.put_slice(b"\"}]");
                self.chunk_end();
                self.finished = true;
            }
            "message_stop" => self.end(),
            "error" => {
                let (ty, msg) = match &ev.error {
                    Some(e) => (
                        e.ty.as_deref(),
                        e.message.as_deref().unwrap_or("upstream error"),
                    ),
                    None => (None, "upstream error"),
                };
                self.fail(ty, 500, msg);
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }

    /// The role chunk, once.
    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        self.chunk_begin();
        self.out.put_slice(
            b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
        );
        self.chunk_end();
    }

    fn content_delta(&mut self, text: &str) {
        self.chunk_begin();
        self.out.put_slice(b"{\"index\":0,\"delta\":{\"content\":");
        put_json_str(&mut self.out, text);
        self.out
            .put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn tool_start(&mut self, t: u32, id: &str, name: &str) {
        self.chunk_begin();
        self.out
            .put_slice(b"{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":");
        self.out.put_slice(t.to_string().as_bytes());
        self.out.put_slice(b",\"id\":");
        put_json_str(&mut self.out, id);
        self.out
            .put_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        put_json_str(&mut self.out, name);
        self.out
            .put_slice(b",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn args_delta(&mut self, t: u32, partial: &str) {
        self.chunk_begin();
        self.out
            .put_slice(b"{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":");
        self.out.put_slice(t.to_string().as_bytes());
        self.out.put_slice(b",\"function\":{\"arguments\":");
        put_json_str(&mut self.out, partial);
        self.out
            .put_slice(b"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn chunk_begin(&mut self) {
        self.out.put_slice(b"data: ");
        self.out.put_slice(self.prefix.as_bytes());
    }

    /// Closes a chunk opened by `chunk_begin` whose choices array was written and closed.
    fn chunk_end(&mut self) {
        if self.include_usage {
            self.out.put_slice(b",\"usage\":null");
        }
        self.out.put_slice(b"}\n\n");
    }

    /// message_stop: the usage chunk (when asked) and `[DONE]`.
    fn end(&mut self) {
        if self.done {
            return;
        }
        if self.include_usage {
            let u = self.usage.unwrap_or_default().to_openai();
            self.out.put_slice(b"data: ");
            self.out.put_slice(self.prefix.as_bytes());
            self.out.put_slice(b"],\"usage\":");
            self.out.put_slice(u.to_string().as_bytes());
            self.out.put_slice(b"}\n\n");
        }
        self.out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn fail(&mut self, anth_type: Option<&str>, status: u16, message: &str) {
        if self.done {
            return;
        }
        let v = openai_error_value(anth_type, status, message);
        self.out.put_slice(b"data: ");
        self.out.put_slice(v.to_string().as_bytes());
        self.out.put_slice(b"\n\ndata: [DONE]\n\n");
        self.done = true;
    }
}

pub(super) fn push_json_str(s: &mut String, v: &str) {
    // Serializing a &str cannot fail.
    s.push_str(&serde_json::to_string(v).unwrap_or_default());
}

pub(super) fn put_json_str(out: &mut BytesMut, v: &str) {
    let mut w = (&mut *out).writer();
    let _ = serde_json::to_writer(&mut w, v);
}
