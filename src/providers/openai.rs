//! OpenAI (`provider: openai`) and OpenAI-compatible servers (`provider: openai_compatible`: vLLM,
//! Ollama, llama.cpp, TGI's OpenAI endpoint, ...): `POST {url}{endpoint}`, bodies relayed with the
//! deployment's model, answers relayed chunk by chunk ([`Relay`]).
//!
//! Usage comes from the answer (`usage`, the last event of a stream). Two differences between the
//! two: self-hosted servers may report none, so their chat and completions answers keep enough text
//! to estimate it (a stream keeps its text only when nobody asked for usage; a JSON answer is
//! estimated from the scanner's window); and their token budgets are reconciled with the real usage
//! after each answer, while OpenAI's stay as charged at admission (OpenAI counts prompt +
//! `max_tokens` against its limits).

use super::usage::{find_usage, Usage, UsageEventStrip, UsageScanner};
use super::{Answer, Attempt, HeaderFate, Mode, Outbound, Provider};
use crate::error::GatewayError;
use crate::route::Endpoint;
use bytes::{Bytes, BytesMut};

/// `provider: openai` / `provider: openai_compatible`.
pub struct OpenAi {
    /// A self-hosted server: usage may be missing (estimated), budgets are reconciled.
    compatible: bool,
}

pub static OPENAI: OpenAi = OpenAi { compatible: false };
pub static COMPATIBLE: OpenAi = OpenAi { compatible: true };

/// At most this much of an answer is kept to estimate its tokens.
const ESTIMATE_BODY_LIMIT: usize = 256 * 1024;

impl Provider for OpenAi {
    fn supports(&self, endpoint: Endpoint) -> bool {
        // Token counting is answered by the gateway itself.
        endpoint != Endpoint::CountTokens && endpoint != Endpoint::Messages
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Outbound, GatewayError> {
        let path = format!("{}{}", a.upstream.url.base_path, a.endpoint.upstream_path());
        Ok(relayed(a, self.compatible, path))
    }

    fn wants_max_completion_tokens(&self, model: &str) -> bool {
        // OpenAI's current name; its reasoning models refuse `max_tokens`. Other servers know the
        // old one (and reasoning models served elsewhere still want the new one).
        !self.compatible || is_reasoning_model(model)
    }

    fn reconciles_tokens(&self) -> bool {
        self.compatible
    }
}

/// An OpenAI-format request to `path`, relayed back as it comes.
pub fn relayed(a: &Attempt<'_>, compatible: bool, path: String) -> Outbound {
    let relay = Relay::for_attempt(a, compatible);
    let set = relay
        .strip
        .then_some(("stream_options", r#"{"include_usage":true}"#));
    Outbound {
        path,
        body: super::openai_body(a, set),
        answer: Box::new(relay),
    }
}

/// OpenAI's reasoning models, which accept only `max_completion_tokens`.
pub fn is_reasoning_model(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// An OpenAI-shaped answer relayed as it arrives: usage read from a bounded tail, the usage event
/// removed when the gateway asked for it on its own behalf, text kept (bounded) when the usage may
/// have to be estimated.
pub struct Relay {
    scanner: UsageScanner,
    /// The gateway added `stream_options.include_usage` (the client did not ask): remove the usage
    /// event from what the client receives.
    strip: bool,
    stripper: Option<UsageEventStrip>,
    /// Estimate the usage when the upstream reports none.
    estimate: bool,
    /// Keep a stream's text for that estimate.
    keep_stream_text: bool,
    kept: Option<BytesMut>,
    sse: bool,
}

impl Relay {
    /// A relay that only reads usage (Azure, and answers translated by an outer adapter).
    pub fn plain() -> Relay {
        Relay {
            scanner: UsageScanner::default(),
            strip: false,
            stripper: None,
            estimate: false,
            keep_stream_text: false,
            kept: None,
            sse: false,
        }
    }

    /// The relay for an attempt: asks for (and strips) stream usage when the gateway needs it and
    /// the client did not ask, and prepares the estimate for self-hosted servers.
    pub fn for_attempt(a: &Attempt<'_>, compatible: bool) -> Relay {
        let generates = matches!(
            a.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions
        );
        let client_usage = a.req.stream && super::client_asked_usage(&a.req.body);
        let strip = generates && a.req.stream && a.need_usage && !client_usage;
        Relay {
            strip,
            estimate: compatible && generates,
            // Only a stream nobody asked usage for is likely to end without it.
            keep_stream_text: compatible && generates && a.req.stream && !strip && !client_usage,
            ..Relay::plain()
        }
    }
}

impl Answer for Relay {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        self.sse = super::is_event_stream(headers);
        if self.sse {
            if self.strip {
                self.stripper = Some(UsageEventStrip::default());
            }
            if self.keep_stream_text {
                self.kept = Some(BytesMut::new());
            }
        }
        Mode::Relay { sse: self.sse }
    }

    fn whole(&mut self, body: &[u8]) -> Option<Bytes> {
        self.scanner.feed(body);
        Some(Bytes::copy_from_slice(body))
    }

    fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        if let Some(k) = self.kept.as_mut() {
            let room = ESTIMATE_BODY_LIMIT.saturating_sub(k.len());
            k.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        self.scanner.feed(&chunk);
        match self.stripper.as_mut() {
            Some(s) => s.filter(chunk),
            None => Some(chunk),
        }
    }

    fn finish(&mut self) -> Option<Bytes> {
        self.stripper.as_mut().and_then(|s| s.finish())
    }

    fn usage(&self) -> Option<Usage> {
        self.scanner.usage()
    }

    fn unreported(&mut self) -> Option<String> {
        if !self.estimate || self.usage().is_some() {
            return None;
        }
        // A stream's kept text, or a JSON answer that fitted in the scanner's window.
        let body = match &self.kept {
            Some(k) => Some(&k[..]),
            None => self.scanner.whole(),
        };
        body.map(|b| answer_text(b, self.sse))
    }

    fn error_body(&self, _status: u16, _body: &[u8]) -> Option<Bytes> {
        None
    }

    fn client_header(&self, _: &http::HeaderName, _: &http::HeaderValue) -> HeaderFate {
        HeaderFate::Keep
    }
}

/// The usage of a whole OpenAI-shaped JSON answer.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    find_usage(body)
}

/// The generated text of an OpenAI chat or completions answer (JSON, or SSE chunks).
fn answer_text(body: &[u8], is_sse: bool) -> String {
    fn push_choices(v: &serde_json::Value, out: &mut String) {
        for c in v["choices"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            for s in [
                &c["delta"]["content"],
                &c["message"]["content"],
                &c["text"],
                &c["delta"]["reasoning_content"],
            ] {
                if let Some(s) = s.as_str() {
                    out.push_str(s);
                }
            }
        }
    }
    let mut out = String::new();
    if is_sse {
        for line in body.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
                push_choices(&v, &mut out);
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        push_choices(&v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_text_of_json_and_sse() {
        assert_eq!(
            answer_text(
                br#"{"choices":[{"message":{"content":"hi there"}}]}"#,
                false
            ),
            "hi there"
        );
        assert_eq!(
            answer_text(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n",
                true
            ),
            "ab"
        );
    }
}
