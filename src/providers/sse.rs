//! Server-sent events read from a byte stream cut anywhere (`\n` or `\r\n` line ends), for the
//! stream translators: each event is its `data:` lines joined by `\n`; `event:`, `id:` and comment
//! lines are skipped (the translated formats carry the type in the JSON). Buffers are reused, so
//! reading allocates nothing once they have grown to the stream's event size.

#[derive(Debug, Default)]
pub struct SseReader {
    /// Received bytes; those before `pos` are read.
    buf: Vec<u8>,
    pos: usize,
    /// The `data:` of the event being read.
    data: Vec<u8>,
}

impl SseReader {
    pub fn with_capacity(n: usize) -> SseReader {
        SseReader {
            buf: Vec::with_capacity(n),
            pos: 0,
            data: Vec::with_capacity(n),
        }
    }

    /// Append the next bytes of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event's data, swapped into `out` (whose old buffer is kept for reuse);
    /// `false` when no further event is complete yet.
    pub fn next_event(&mut self, out: &mut Vec<u8>) -> bool {
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
            let start = self.pos;
            let end = start + nl;
            self.pos = end + 1;
            let line_end = if end > start && self.buf[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            if line_end == start {
                if !self.data.is_empty() {
                    out.clear();
                    std::mem::swap(&mut self.data, out);
                    return true;
                }
            } else if let Some(d) = self.buf[start..line_end].strip_prefix(b"data:") {
                let d = d.strip_prefix(b" ").unwrap_or(d);
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(d);
            }
        }
        false
    }

    /// Whether part of an event (a line without its end, or data without its blank line) is left.
    pub fn pending(&self) -> bool {
        self.pos < self.buf.len() || !self.data.is_empty()
    }

    /// Bytes held for the event being read (its data so far and the unfinished line), which a
    /// translator bounds.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.pos + self.data.len()
    }

    /// The larger of its two buffers' capacities (they are reused, not regrown).
    pub fn capacity(&self) -> usize {
        self.buf.capacity().max(self.data.capacity())
    }

    /// Forget everything (the stream is over).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.data.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8], split: usize) -> Vec<String> {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        let mut got = Vec::new();
        for c in input.chunks(split) {
            r.push(c);
            while r.next_event(&mut out) {
                got.push(String::from_utf8(out.clone()).unwrap());
            }
        }
        got
    }

    #[test]
    fn events_whatever_the_cuts() {
        let input = b"event: a\ndata: {\"x\":1}\n\n: comment\r\ndata: one\r\ndata: two\r\n\r\n\ndata: [DONE]\n\ndata: tail";
        for split in [1, 2, 3, 7, 100] {
            assert_eq!(
                events(input, split),
                ["{\"x\":1}", "one\ntwo", "[DONE]"],
                "split {split}"
            );
        }
        let mut r = SseReader::default();
        r.push(b"data: tail");
        assert!(!r.next_event(&mut Vec::new()));
        assert!(r.pending());
        r.push(b"\n\n");
        let mut out = Vec::new();
        assert!(r.next_event(&mut out));
        assert_eq!(out, b"tail");
        assert!(!r.pending());
    }
}
