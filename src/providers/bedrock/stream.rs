//! ConverseStream's AWS event stream → OpenAI SSE chunks, message by message.

use super::response::{exception_status, finish_reason, put_json_str, Shape, TokenUsage};
use crate::providers::usage::Usage;
use aws_smithy_types::event_stream::Message;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt::Write as _;

/// The largest event-stream message accepted (Bedrock's events are a few hundred bytes; the AWS
/// SDKs refuse messages over 16 MiB). A length beyond it is a malformed stream, and bounds what is
/// held while a message arrives.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The smallest possible message: prelude (12 bytes) and message CRC (4).
const MIN_MESSAGE: usize = 16;
/// Content block indexes tracked for tool calls (a larger index is ignored).
const MAX_BLOCKS: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(default)]
    content_block_index: Option<usize>,
    #[serde(borrow, default)]
    start: Option<Start<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<TokenUsage>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start<'a> {
    #[serde(borrow, default)]
    tool_use: Option<ToolStart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolStart<'a> {
    #[serde(borrow, default)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_use: Option<ToolDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
}

/// ConverseStream bytes (split anywhere) → OpenAI `chat.completion.chunk` (or `text_completion`)
/// SSE bytes.
///
/// Each complete event-stream message is checked (both CRCs, by `aws-smithy-eventstream`) and
/// translated: `messageStart` → the role chunk; `contentBlockStart` with a `toolUse` → a
/// `tool_calls` delta with `id`, `type`, `name` and empty `arguments`; `contentBlockDelta` `text` →
/// a `content` delta, `toolUse.input` → an `arguments` delta (reasoning deltas are not relayed);
/// `messageStop` → the chunk with the `finish_reason`; `metadata` → the usage chunk (`choices: []`,
/// when the client asked for `stream_options.include_usage`) and `data: [DONE]`. An exception
/// message (`:message-type: exception`, e.g. `throttlingException`), an error message, a malformed
/// or over-long message, a CRC mismatch, or an upstream end before `messageStop` → an OpenAI-shaped
/// `data: {"error": {...}}` event and `data: [DONE]`. At most [`MAX_MESSAGE`] bytes are held;
/// nothing is produced after `[DONE]`.
pub struct StreamTranslator {
    buf: BytesMut,
    out: BytesMut,
    /// `{"id":...,"object":...,"created":...,"model":...,"choices":[`.
    prefix: String,
    model: String,
    pub(super) created: u64,
    shape: Shape,
    include_usage: bool,
    /// Content block index → OpenAI tool call index.
    tools: Vec<Option<u32>>,
    next_tool: u32,
    usage: Option<TokenUsage>,
    started: bool,
    stopped: bool,
    done: bool,
}

impl StreamTranslator {
    /// A translator answering as `model`; `include_usage`: the client's
    /// `stream_options.include_usage`.
    pub fn new(model: &str, shape: Shape, include_usage: bool) -> StreamTranslator {
        let mut t = StreamTranslator {
            buf: BytesMut::new(),
            out: BytesMut::with_capacity(512),
            prefix: String::new(),
            model: model.to_owned(),
            created: super::response::now_secs(),
            shape,
            include_usage,
            tools: Vec::new(),
            next_tool: 0,
            usage: None,
            started: false,
            stopped: false,
            done: false,
        };
        t.set_id(match shape {
            Shape::Chat => "chatcmpl-bedrock",
            Shape::Completion => "cmpl-bedrock",
        });
        t
    }

    /// The id every chunk carries.
    pub fn set_id(&mut self, id: &str) {
        self.prefix.clear();
        self.prefix.push_str("{\"id\":");
        self.prefix
            .push_str(&serde_json::to_string(id).unwrap_or_default());
        let _ = write!(
            self.prefix,
            ",\"object\":\"{}\",\"created\":{},\"model\":{},\"choices\":[",
            self.shape.objects().1,
            self.created,
            serde_json::to_string(&self.model).unwrap_or_default()
        );
    }

    /// The usage reported so far (`None` before the `metadata` event).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(TokenUsage::to_usage)
    }

    /// Whether `data: [DONE]` was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translate the next upstream bytes; returns the complete OpenAI events they finished.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if !self.done {
            self.buf.extend_from_slice(chunk);
            while !self.done && self.buf.len() >= 4 {
                let total = (&self.buf[..4]).get_u32() as usize;
                if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&total) {
                    self.fail(
                        502,
                        "malformed event stream from the upstream (message length)",
                    );
                    break;
                }
                if self.buf.len() < total {
                    break;
                }
                let frame = self.buf.split_to(total).freeze();
                match aws_smithy_eventstream::frame::read_message_from(frame) {
                    Ok(m) => self.on_message(&m),
                    Err(e) => self.fail(
                        502,
                        &format!("malformed event stream from the upstream: {e}"),
                    ),
                }
            }
            if self.done {
                self.buf = BytesMut::new();
            }
        }
        self.out.split().freeze()
    }

    /// The upstream body ended: completes the stream if it was not (an unfinished answer is an
    /// error event, never a silent truncation).
    pub fn finish(&mut self) -> Bytes {
        if !self.done {
            if !self.buf.is_empty() {
                self.fail(502, "upstream stream ended inside an event");
            } else if self.stopped {
                // messageStop seen, metadata missing: the answer is complete, its usage unknown.
                self.end();
            } else {
                self.fail(502, "upstream stream ended before the message was complete");
            }
        }
        self.out.split().freeze()
    }

    fn on_message(&mut self, m: &Message) {
        let (mut kind, mut event, mut exception, mut code, mut text) = ("", "", "", "", "");
        for h in m.headers() {
            let Ok(v) = h.value().as_string() else {
                continue;
            };
            match h.name().as_str() {
                ":message-type" => kind = v.as_str(),
                ":event-type" => event = v.as_str(),
                ":exception-type" => exception = v.as_str(),
                ":error-code" => code = v.as_str(),
                ":error-message" => text = v.as_str(),
                _ => {}
            }
        }
        match kind {
            "event" => match serde_json::from_slice::<Event>(m.payload()) {
                Ok(ev) => self.on_event(event, ev),
                Err(_) => self.fail(502, "malformed event from the upstream stream"),
            },
            "exception" => {
                let message = serde_json::from_slice::<Event>(m.payload())
                    .ok()
                    .and_then(|e| e.message.map(Cow::into_owned))
                    .unwrap_or_else(|| format!("upstream {exception}"));
                self.fail(exception_status(exception), &message);
            }
            "error" => {
                let message = if text.is_empty() { code } else { text };
                self.fail(
                    exception_status(code),
                    &format!("upstream error: {message}"),
                );
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: &str, ev: Event) {
        match event {
            "messageStart" => self.start(),
            "contentBlockStart" => {
                self.start();
                let (Some(i), Some(t)) =
                    (ev.content_block_index, ev.start.and_then(|s| s.tool_use))
                else {
                    return;
                };
                if self.shape == Shape::Completion || i >= MAX_BLOCKS {
                    return;
                }
                let n = self.next_tool;
                self.next_tool += 1;
                if self.tools.len() <= i {
                    self.tools.resize(i + 1, None);
                }
                self.tools[i] = Some(n);
                self.tool_start(
                    n,
                    t.tool_use_id.as_deref().unwrap_or(""),
                    t.name.as_deref().unwrap_or(""),
                );
            }
            "contentBlockDelta" => {
                self.start();
                let Some(d) = ev.delta else {
                    return;
                };
                if let Some(t) = d.text.as_deref().filter(|t| !t.is_empty()) {
                    self.content_delta(t);
                } else if let Some(input) =
                    d.tool_use.and_then(|t| t.input).filter(|i| !i.is_empty())
                {
                    let tool = ev
                        .content_block_index
                        .and_then(|i| self.tools.get(i).copied().flatten());
                    if let Some(n) = tool {
                        self.args_delta(n, &input);
                    }
                }
            }
            "messageStop" => {
                self.start();
                let reason = finish_reason(ev.stop_reason.as_deref());
                self.chunk_begin();
                match self.shape {
                    Shape::Chat => self.out.put_slice(
                        b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"",
                    ),
                    Shape::Completion => self.out.put_slice(
                        b"{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"",
                    ),
                }
                self.out.put_slice(reason.as_bytes());
                self.out.put_slice(b"\"}]");
                self.chunk_end();
                self.stopped = true;
            }
            "metadata" => {
                if let Some(u) = ev.usage {
                    self.usage = Some(u);
                }
                if self.stopped {
                    self.end();
                }
            }
            // contentBlockStop, and event types added later.
            _ => {}
        }
    }

    /// The role chunk, once (chat only).
    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        if self.shape == Shape::Chat {
            self.chunk_begin();
            self.out.put_slice(
                b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
            );
            self.chunk_end();
        }
    }

    fn content_delta(&mut self, text: &str) {
        self.chunk_begin();
        match self.shape {
            Shape::Chat => self.out.put_slice(b"{\"index\":0,\"delta\":{\"content\":"),
            Shape::Completion => self.out.put_slice(b"{\"index\":0,\"text\":"),
        }
        put_json_str(&mut self.out, text);
        if self.shape == Shape::Chat {
            self.out.put_slice(b"}");
        }
        self.out
            .put_slice(b",\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn tool_start(&mut self, n: u32, id: &str, name: &str) {
        self.chunk_begin();
        let _ = write!(
            self.out,
            "{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{n},\"id\":"
        );
        put_json_str(&mut self.out, id);
        self.out
            .put_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        put_json_str(&mut self.out, name);
        self.out
            .put_slice(b",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn args_delta(&mut self, n: u32, partial: &str) {
        self.chunk_begin();
        let _ = write!(
            self.out,
            "{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{n},\"function\":{{\"arguments\":"
        );
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

    /// The usage chunk (when asked) and `[DONE]`.
    fn end(&mut self) {
        if self.done {
            return;
        }
        if self.include_usage {
            self.out.put_slice(b"data: ");
            self.out.put_slice(self.prefix.as_bytes());
            self.out.put_slice(b"],\"usage\":");
            self.usage.unwrap_or_default().write_openai(&mut self.out);
            self.out.put_slice(b"}\n\n");
        }
        self.out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn fail(&mut self, status: u16, message: &str) {
        if self.done {
            return;
        }
        let v = super::response::openai_error_value(status, message);
        self.out.put_slice(b"data: ");
        self.out.put_slice(v.to_string().as_bytes());
        self.out.put_slice(b"\n\ndata: [DONE]\n\n");
        self.done = true;
    }
}
