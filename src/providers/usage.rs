//! Token usage from response bodies, without buffering them.
//!
//! OpenAI-style APIs put `"usage": {...}` near the end of a JSON body, and in the last data event of
//! an SSE stream (`stream_options.include_usage`). [`UsageScanner`] keeps only the last
//! [`WINDOW`] bytes of the body in a fixed buffer (no allocation per chunk) and parses the last
//! `"usage": {` object found there when the body ends. A `"usage"` inside message text is escaped
//! (`\"usage\"`), so the unescaped key can only be a real JSON key.

/// Bytes of the body tail kept for the usage search (a usage object and what may follow it).
pub const WINDOW: usize = 4 * 1024;

/// One request's token counts in OpenAI's convention: totals include their parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every input token: uncached, read from the provider's prompt cache, and written to it.
    pub prompt_tokens: u64,
    /// Every output token, reasoning included.
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` read from the provider's prompt cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`).
    pub cached_tokens: u64,
    /// The part of `prompt_tokens` written to the prompt cache (Anthropic's
    /// `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
    /// The part of `completion_tokens` that was reasoning (`completion_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Prompt and completion counts only (estimates, providers that report no details).
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            ..Usage::default()
        }
    }

    /// OpenAI's `usage` object for these counts: `prompt_tokens`, `completion_tokens`,
    /// `total_tokens`, and the cached part in `prompt_tokens_details` / the reasoning part in
    /// `completion_tokens_details` when there is one.
    pub fn to_openai(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
        });
        if self.cached_tokens > 0 {
            v["prompt_tokens_details"] = serde_json::json!({"cached_tokens": self.cached_tokens});
        }
        if self.reasoning_tokens > 0 {
            v["completion_tokens_details"] =
                serde_json::json!({"reasoning_tokens": self.reasoning_tokens});
        }
        v
    }

    /// The same counts as the price arithmetic reads them ([`crate::pricing::cost`]): the one place
    /// the request path's usage becomes [`crate::pricing::TokenUsage`].
    pub fn tokens(&self) -> crate::pricing::TokenUsage {
        crate::pricing::TokenUsage {
            prompt: self.prompt_tokens,
            cached_prompt: self.cached_tokens,
            cache_write: self.cache_write_tokens,
            completion: self.completion_tokens,
            reasoning: self.reasoning_tokens,
        }
    }
}

/// Keeps (at least) the last [`WINDOW`] bytes of a body. The buffer is allocated once, on the first
/// chunk, never zero-filled, and compacted only when it reaches twice the window, so each body byte is
/// copied about twice in all however small the chunks are.
///
/// An event stream ([`UsageScanner::read_events`]) is read event by event instead: the usage is taken
/// from each complete event as it passes, and nothing is kept but an event split between chunks —
/// a long-lived stream holds no window.
#[derive(Default)]
pub struct UsageScanner {
    tail: Vec<u8>,
    /// Bytes fed in all.
    fed: usize,
    events: Option<EventScan>,
}

/// The event-stream reading of [`UsageScanner`].
#[derive(Default)]
struct EventScan {
    /// The events after the last complete one (at most 2 × [`WINDOW`]: their tail), empty while the
    /// chunks end on event boundaries.
    carry: Vec<u8>,
    /// The last usage object of the complete events.
    found: Option<Usage>,
}

impl EventScan {
    fn feed(&mut self, chunk: &[u8]) {
        let Some(end) = memchr::memmem::rfind(chunk, b"\n\n") else {
            return self.hold(chunk);
        };
        let (complete, rest) = chunk.split_at(end + 2);
        if self.carry.is_empty() {
            self.scan(complete);
        } else {
            let mut events = std::mem::take(&mut self.carry);
            events.extend_from_slice(complete);
            self.scan(&events);
            events.clear();
            self.carry = events;
        }
        self.hold(rest);
    }

    fn scan(&mut self, events: &[u8]) {
        if memchr::memmem::find(events, b"\"usage\"").is_some() {
            if let Some(u) = find_usage(events) {
                self.found = Some(u);
            }
        }
    }

    fn hold(&mut self, partial: &[u8]) {
        if partial.is_empty() {
            return;
        }
        if self.carry.len() + partial.len() > 2 * WINDOW {
            // An event this long keeps only its tail, where its usage would be (as the window does).
            let keep = WINDOW.min(self.carry.len() + partial.len());
            let from_partial = keep.min(partial.len());
            let from_carry = keep - from_partial;
            self.carry.drain(..self.carry.len() - from_carry);
            self.carry
                .extend_from_slice(&partial[partial.len() - from_partial..]);
            return;
        }
        self.carry.extend_from_slice(partial);
    }

    fn usage(&self) -> Option<Usage> {
        // An unfinished last event (a stream cut short, or CRLF line ends) may still hold one.
        find_usage(&self.carry).or(self.found)
    }
}

impl UsageScanner {
    /// A scanner for an event stream (SSE): usage read event by event, no window kept.
    pub fn read_events(&mut self) {
        self.events = Some(EventScan::default());
    }

    /// Feed the next body chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.fed += chunk.len();
        if let Some(e) = self.events.as_mut() {
            return e.feed(chunk);
        }
        if self.tail.capacity() == 0 {
            self.tail.reserve_exact(2 * WINDOW);
        }
        if chunk.len() >= WINDOW {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - WINDOW..]);
            return;
        }
        if self.tail.len() + chunk.len() > 2 * WINDOW {
            let keep_from = self.tail.len() - (WINDOW - chunk.len());
            self.tail.drain(..keep_from);
        }
        self.tail.extend_from_slice(chunk);
    }

    /// The whole body, when it fitted in the window (small answers; never for an event stream).
    pub fn whole(&self) -> Option<&[u8]> {
        (self.events.is_none() && self.fed == self.tail.len()).then_some(self.tail.as_slice())
    }

    /// The last bytes of the body (at least [`WINDOW`] of them, when there were that many).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// The usage in the body seen so far, if any.
    pub fn usage(&self) -> Option<Usage> {
        if let Some(e) = &self.events {
            return e.usage();
        }
        let start = self.tail.len().saturating_sub(WINDOW);
        find_usage(&self.tail[start..])
    }
}

/// Find and parse the last `"usage": {...}` object in `buf`.
pub fn find_usage(buf: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let mut end = buf.len();
    while let Some(pos) = rfind(&buf[..end], KEY) {
        let mut i = pos + KEY.len();
        while i < buf.len() && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < buf.len() && buf[i] == b':' {
            i += 1;
            while i < buf.len() && buf[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < buf.len() && buf[i] == b'{' {
                let mut de =
                    serde_json::Deserializer::from_slice(&buf[i..]).into_iter::<RawUsage>();
                if let Some(Ok(u)) = de.next() {
                    return Some(u.into());
                }
            }
        }
        end = pos;
    }
    None
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

/// Chat/completions/embeddings use `prompt_tokens`/`completion_tokens` (details in
/// `prompt_tokens_details` / `completion_tokens_details`); the Responses API uses
/// `input_tokens`/`output_tokens` (`input_tokens_details` / `output_tokens_details`). An Anthropic
/// Messages usage (a passthrough route) counts cache reads and writes apart from `input_tokens`.
#[derive(serde::Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<RawDetails>,
    input_tokens_details: Option<RawDetails>,
    completion_tokens_details: Option<RawDetails>,
    output_tokens_details: Option<RawDetails>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(serde::Deserialize, Clone, Copy)]
struct RawDetails {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Usage {
        let detail = |d: Option<RawDetails>, f: fn(RawDetails) -> Option<u64>| d.and_then(f);
        let cache_read = r.cache_read_input_tokens.unwrap_or(0);
        let cache_write = r.cache_creation_input_tokens.unwrap_or(0);
        // Anthropic's `input_tokens` excludes the cache parts; OpenAI's totals include them.
        let anthropic = r.prompt_tokens.is_none()
            && (r.cache_read_input_tokens.is_some() || r.cache_creation_input_tokens.is_some());
        let prompt = match r.prompt_tokens.or(r.input_tokens) {
            Some(p) if anthropic => p.saturating_add(cache_read).saturating_add(cache_write),
            Some(p) => p,
            None => 0,
        };
        let cached = detail(r.prompt_tokens_details, |d| d.cached_tokens)
            .or(detail(r.input_tokens_details, |d| d.cached_tokens))
            .unwrap_or(if anthropic { cache_read } else { 0 });
        Usage {
            prompt_tokens: prompt,
            completion_tokens: r.completion_tokens.or(r.output_tokens).unwrap_or(0),
            cached_tokens: cached,
            cache_write_tokens: if anthropic { cache_write } else { 0 },
            reasoning_tokens: detail(r.completion_tokens_details, |d| d.reasoning_tokens)
                .or(detail(r.output_tokens_details, |d| d.reasoning_tokens))
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_scanner() -> UsageScanner {
        let mut s = UsageScanner::default();
        s.read_events();
        s
    }

    #[test]
    fn an_event_stream_is_read_event_by_event() {
        let parts = [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"a \\\"usage\\\": {\"}}],\"usage\":null}\n\n"[..],
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            b"data: [DONE]\n\n",
        ];
        let events = parts.concat();
        // Every split of the stream into two or three chunks gives the same usage.
        for i in 0..events.len() {
            for j in i..events.len() {
                let mut s = event_scanner();
                s.feed(&events[..i]);
                s.feed(&events[i..j]);
                s.feed(&events[j..]);
                assert_eq!(s.usage(), Some(Usage::new(3, 2)), "split at {i}, {j}");
                assert_eq!(s.whole(), None);
            }
        }
        // Chunks on event boundaries keep nothing.
        let mut s = event_scanner();
        for p in parts {
            s.feed(p);
        }
        assert_eq!(s.events.as_ref().unwrap().carry.capacity(), 0);
        assert_eq!(s.usage(), Some(Usage::new(3, 2)));
    }

    #[test]
    fn an_event_longer_than_the_window_keeps_its_tail() {
        let big = format!(
            "event: response.completed\ndata: {{\"response\":{{\"output\":\"{}\",\"usage\":{{\"input_tokens\":7,\"output_tokens\":5}}}}}}\n\n",
            "x".repeat(6 * WINDOW)
        );
        let mut s = event_scanner();
        for c in big.as_bytes().chunks(1000) {
            s.feed(c);
            assert!(s.events.as_ref().unwrap().carry.len() <= 2 * WINDOW);
        }
        assert_eq!(s.usage(), Some(Usage::new(7, 5)));
        // Cut short before its end: the unfinished event is still read.
        let mut s = event_scanner();
        s.feed(&big.as_bytes()[..big.len() - 2]);
        assert_eq!(s.usage(), Some(Usage::new(7, 5)));
    }

    #[test]
    fn whole_body_only_when_it_fitted() {
        let mut s = UsageScanner::default();
        s.feed(b"{\"choices\":[");
        s.feed(b"]}");
        assert_eq!(s.whole(), Some(&b"{\"choices\":[]}"[..]));
        let mut s = UsageScanner::default();
        for _ in 0..3 {
            s.feed(&[b' '; WINDOW]);
        }
        assert_eq!(s.whole(), None);
    }

    #[test]
    fn finds_json_usage() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {1}"}}],"usage": {"prompt_tokens":12,"completion_tokens":5,"total_tokens":17},"system_fingerprint":null}"#;
        let mut s = UsageScanner::default();
        for c in body.chunks(7) {
            s.feed(c);
        }
        assert_eq!(s.usage(), Some(Usage::new(12, 5)));
    }

    #[test]
    fn finds_sse_usage_and_skips_null() {
        let mut s = UsageScanner::default();
        s.feed(b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n");
        assert_eq!(s.usage(), None);
        s.feed(&vec![b'x'; WINDOW * 2]);
        s.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n");
        assert_eq!(s.usage(), Some(Usage::new(3, 4)));
    }

    #[test]
    fn small_chunks_across_compactions() {
        let mut s = UsageScanner::default();
        for _ in 0..5000 {
            s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        }
        let tail = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5000}}\n\ndata: [DONE]\n\n";
        for c in tail.chunks(3) {
            s.feed(c);
        }
        assert_eq!(s.usage(), Some(Usage::new(9, 5000)));
        assert!(s.tail.capacity() <= 2 * WINDOW);
    }

    #[test]
    fn cached_and_reasoning_details() {
        let b = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":400,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":200}}}"#;
        let u = find_usage(b).unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (1000, 400, 300, 200)
        );
        let r = br#"{"usage":{"input_tokens":50,"output_tokens":9,"input_tokens_details":{"cached_tokens":10},"output_tokens_details":{"reasoning_tokens":4}}}"#;
        let u = find_usage(r).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens, u.reasoning_tokens),
            (50, 10, 4)
        );
        // Anthropic Messages usage: input_tokens excludes the cache parts.
        let a = br#"{"usage":{"input_tokens":10,"cache_read_input_tokens":2000,"cache_creation_input_tokens":500,"output_tokens":30}}"#;
        let u = find_usage(a).unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.completion_tokens
            ),
            (2510, 2000, 500, 30)
        );
        assert_eq!(u.tokens().uncached_prompt(), 10);
    }

    #[test]
    fn openai_usage_object_round_trips() {
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 300,
            cached_tokens: 400,
            cache_write_tokens: 0,
            reasoning_tokens: 200,
        };
        let body = serde_json::json!({"usage": u.to_openai()}).to_string();
        assert_eq!(find_usage(body.as_bytes()), Some(u));
        let plain = Usage::new(3, 1).to_openai();
        assert_eq!(
            plain,
            serde_json::json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
        );
    }

    #[test]
    fn responses_api_usage() {
        let b = br#"event: response.completed
data: {"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9}}}"#;
        assert_eq!(find_usage(b), Some(Usage::new(7, 2)));
    }
}

/// Removes the usage-only event (`"choices":[]` with `"usage"`) from an SSE stream, for streams
/// where the gateway asked the upstream for `stream_options.include_usage` on its own behalf (to
/// reconcile budgets) and the client did not ask for it. Chunks that hold no such event and end on
/// an event boundary pass through untouched; only a chunk that splits an event is held back until
/// the event is complete.
#[derive(Default)]
pub struct UsageEventStrip {
    carry: Vec<u8>,
}

/// Whether one SSE event is OpenAI's usage-only chunk.
pub fn is_usage_event(ev: &[u8]) -> bool {
    (memchr::memmem::find(ev, b"\"choices\":[]").is_some()
        || memchr::memmem::find(ev, b"\"choices\": []").is_some())
        && memchr::memmem::find(ev, b"\"usage\"").is_some()
}

impl UsageEventStrip {
    /// The part of `chunk` to send on (`None`: nothing yet).
    pub fn filter(&mut self, chunk: bytes::Bytes) -> Option<bytes::Bytes> {
        if self.carry.is_empty() && chunk.ends_with(b"\n\n") && !is_usage_event(&chunk) {
            return Some(chunk);
        }
        self.carry.extend_from_slice(&chunk);
        let end = memchr::memmem::rfind(&self.carry, b"\n\n")?;
        let complete: Vec<u8> = self.carry.drain(..end + 2).collect();
        let mut out = Vec::with_capacity(complete.len());
        for ev in complete
            .split_inclusive(|&b| b == b'\n')
            .collect::<Vec<_>>()
            .split(|l| *l == b"\n")
        {
            let event: Vec<u8> = ev.concat();
            if event.is_empty() || is_usage_event(&event) {
                continue;
            }
            out.extend_from_slice(&event);
            out.extend_from_slice(b"\n");
        }
        (!out.is_empty()).then(|| bytes::Bytes::from(out))
    }

    /// What is still held back when the stream ends.
    pub fn finish(&mut self) -> Option<bytes::Bytes> {
        if self.carry.is_empty() || is_usage_event(&self.carry) {
            return None;
        }
        Some(bytes::Bytes::from(std::mem::take(&mut self.carry)))
    }
}

#[cfg(test)]
mod strip_tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn drops_only_the_usage_event() {
        let mut s = UsageEventStrip::default();
        let a = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
        assert_eq!(s.filter(a.clone()), Some(a));
        let tail = Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(s.filter(tail).as_deref(), Some(&b"data: [DONE]\n\n"[..]));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn events_split_across_chunks() {
        let mut s = UsageEventStrip::default();
        assert_eq!(
            s.filter(Bytes::from_static(b"data: {\"choices\":[],\"us")),
            None
        );
        assert_eq!(
            s.filter(Bytes::from_static(b"age\":{}}\n\ndata: [DO")),
            None
        );
        assert_eq!(
            s.filter(Bytes::from_static(b"NE]\n\n")).as_deref(),
            Some(&b"data: [DONE]\n\n"[..])
        );
    }
}
