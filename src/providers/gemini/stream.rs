//! Gemini's `streamGenerateContent?alt=sse` events → OpenAI `chat.completion.chunk` events.

use super::response::{
    call_id, finish_reason, now_secs, openai_error_value, GeminiUsage, Response,
};
use crate::providers::sse::SseReader;
use crate::providers::usage::Usage;
use bytes::{BufMut, Bytes, BytesMut};

/// The longest server-sent event accepted from the upstream (a longer one ends the stream with an
/// error event: the reader's memory stays bounded).
pub const EVENT_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Default)]
struct CandidateState {
    started: bool,
    calls: u32,
    finished: bool,
}

/// Gemini SSE (each event a whole `GenerateContentResponse` holding the new part of each candidate
/// and the usage so far) → OpenAI chunks, event by event.
///
/// Mapping: the first event of a candidate → a chunk with `role: assistant`; text parts → `content`
/// deltas (thought summaries are left out); a `functionCall` part → one `tool_calls` delta with its
/// id, name and whole `arguments`; `finishReason` → a chunk with the `finish_reason`
/// ([`finish_reason`]); a prompt blocked (`promptFeedback.blockReason`, no candidates) → a
/// `content_filter` finish. Gemini does not mark the end of a stream: when the upstream body ends
/// after every candidate finished, the usage chunk (`choices: []`, with `include_usage`) and
/// `data: [DONE]` follow; a stream that ends before that, an `error` event, malformed data, or an
/// event over [`EVENT_LIMIT`] bytes end it with an OpenAI error event and `[DONE]`.
pub struct StreamTranslator {
    reader: SseReader,
    data: Vec<u8>,
    out: BytesMut,
    /// `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[`.
    prefix: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<GeminiUsage>,
    response_id: String,
    candidates: Vec<CandidateState>,
    calls: usize,
    done: bool,
    limit: usize,
}

impl StreamTranslator {
    pub fn new(model: &str, include_usage: bool) -> StreamTranslator {
        let mut t = StreamTranslator {
            reader: SseReader::with_capacity(1024),
            data: Vec::with_capacity(1024),
            out: BytesMut::with_capacity(1024),
            prefix: String::new(),
            model: model.to_owned(),
            created: now_secs(),
            include_usage,
            usage: None,
            response_id: String::new(),
            candidates: Vec::new(),
            calls: 0,
            done: false,
            limit: EVENT_LIMIT,
        };
        t.set_id("gemini");
        t
    }

    /// The same with another event size limit (tests).
    pub fn with_limit(mut self, limit: usize) -> StreamTranslator {
        self.limit = limit;
        self
    }

    fn set_id(&mut self, id: &str) {
        self.response_id = id.to_owned();
        self.prefix.clear();
        self.prefix.push_str("{\"id\":");
        push_json_str(&mut self.prefix, &format!("chatcmpl-{id}"));
        self.prefix
            .push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        self.prefix.push_str(&self.created.to_string());
        self.prefix.push_str(",\"model\":");
        push_json_str(&mut self.prefix, &self.model);
        self.prefix.push_str(",\"choices\":[");
    }

    /// The usage so far (`None` before the first event that reports one).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(GeminiUsage::to_usage)
    }

    /// Whether `data: [DONE]` was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translate the next upstream chunk; returns the complete OpenAI events it finished.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if !self.done {
            self.reader.push(chunk);
            while !self.done && self.reader.next_event(&mut self.data) {
                self.dispatch();
            }
            if !self.done && self.reader.pending_len() > self.limit {
                self.fail(
                    502,
                    &format!(
                        "an event of the upstream stream exceeds {} bytes",
                        self.limit
                    ),
                );
            }
            if self.done {
                self.reader.clear();
            }
        }
        self.out.split().freeze()
    }

    /// The upstream body ended: the usage chunk and `[DONE]` when every candidate finished, an
    /// error event otherwise.
    pub fn finish(&mut self) -> Bytes {
        if !self.done {
            if self.reader.pending() {
                self.reader.push(b"\n\n");
                while !self.done && self.reader.next_event(&mut self.data) {
                    self.dispatch();
                }
            }
            let complete = !self.candidates.is_empty()
                && self.candidates.iter().all(|c| !c.started || c.finished)
                && self.candidates.iter().any(|c| c.finished);
            if !self.done {
                if complete {
                    self.end();
                } else if self.candidates.is_empty() {
                    self.fail(502, "the upstream answered with no candidates");
                } else {
                    self.fail(502, "upstream stream ended before the answer was complete");
                }
            }
            self.reader.clear();
        }
        self.out.split().freeze()
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        match serde_json::from_slice::<Response>(&data) {
            Ok(r) => self.on_response(r),
            Err(_) => self.fail(502, "malformed event from the upstream stream"),
        }
        self.data = data;
        self.data.clear();
    }

    fn on_response(&mut self, r: Response) {
        if let Some(e) = &r.error {
            let status = e
                .get("code")
                .and_then(serde_json::Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let v = openai_error_value(Some(e), status, "upstream error");
            self.put_error(&v);
            return;
        }
        if self.candidates.is_empty() && self.response_id == "gemini" {
            if let Some(id) = r.response_id.as_deref() {
                self.set_id(id);
            }
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u);
        }
        if r.candidates.is_empty() {
            if r.prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
            {
                self.start(0);
                self.finish_chunk(0, "content_filter");
            }
            return;
        }
        for (pos, c) in r.candidates.iter().enumerate() {
            let i = c.index.unwrap_or(pos);
            if i >= 64 {
                continue;
            }
            self.start(i);
            for p in c.content.iter().flat_map(|c| c.parts.iter()) {
                if let Some(t) = p.answer_text().filter(|t| !t.is_empty()) {
                    self.content_delta(i, t);
                }
                if let Some(f) = &p.function_call {
                    self.calls += 1;
                    let id =
                        f.id.as_deref()
                            .map_or_else(|| call_id(&self.response_id, self.calls), str::to_owned);
                    let args = f
                        .args
                        .as_ref()
                        .map_or_else(|| "{}".to_owned(), serde_json::Value::to_string);
                    self.tool_call(i, &id, &f.name, &args);
                }
            }
            if let Some(reason) = c.finish_reason.as_deref() {
                let calls = self.candidates[i].calls > 0;
                self.finish_chunk(i, finish_reason(reason, calls));
            }
        }
    }

    /// The role chunk, once per candidate.
    fn start(&mut self, i: usize) {
        if self.candidates.len() <= i {
            self.candidates.resize(i + 1, CandidateState::default());
        }
        if self.candidates[i].started {
            return;
        }
        self.candidates[i].started = true;
        self.chunk_begin(i);
        self.out.put_slice(
            b",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
        );
        self.chunk_end();
    }

    fn content_delta(&mut self, i: usize, text: &str) {
        self.chunk_begin(i);
        self.out.put_slice(b",\"delta\":{\"content\":");
        put_json_str(&mut self.out, text);
        self.out
            .put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn tool_call(&mut self, i: usize, id: &str, name: &str, args: &str) {
        let n = self.candidates[i].calls;
        self.candidates[i].calls += 1;
        self.chunk_begin(i);
        self.out
            .put_slice(b",\"delta\":{\"tool_calls\":[{\"index\":");
        self.out.put_slice(n.to_string().as_bytes());
        self.out.put_slice(b",\"id\":");
        put_json_str(&mut self.out, id);
        self.out
            .put_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        put_json_str(&mut self.out, name);
        self.out.put_slice(b",\"arguments\":");
        put_json_str(&mut self.out, args);
        self.out
            .put_slice(b"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        self.chunk_end();
    }

    fn finish_chunk(&mut self, i: usize, reason: &str) {
        if self.candidates[i].finished {
            return;
        }
        self.candidates[i].finished = true;
        self.chunk_begin(i);
        self.out
            .put_slice(b",\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
        self.out.put_slice(reason.as_bytes());
        self.out.put_slice(b"\"}]");
        self.chunk_end();
    }

    /// Opens a chunk and its choice `{"index":i` (the caller writes the rest of the choice).
    fn chunk_begin(&mut self, i: usize) {
        self.out.put_slice(b"data: ");
        self.out.put_slice(self.prefix.as_bytes());
        self.out.put_slice(b"{\"index\":");
        self.out.put_slice(i.to_string().as_bytes());
    }

    fn chunk_end(&mut self) {
        if self.include_usage {
            self.out.put_slice(b",\"usage\":null");
        }
        self.out.put_slice(b"}\n\n");
    }

    fn end(&mut self) {
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

    fn fail(&mut self, status: u16, message: &str) {
        let v = openai_error_value(None, status, message);
        self.put_error(&v);
    }

    fn put_error(&mut self, v: &serde_json::Value) {
        if self.done {
            return;
        }
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

pub(super) use crate::providers::json_out::put_json_str;
