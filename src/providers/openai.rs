//! OpenAI (`provider: openai`) and OpenAI-compatible servers (`provider: openai_compatible`: vLLM,
//! Ollama, llama.cpp, TGI's OpenAI endpoint, ...): `POST {url}{endpoint}`, bodies relayed with the
//! deployment's model, answers relayed chunk by chunk ([`Relay`]).
//!
//! Usage comes from the answer (`usage`, the last event of a stream: the gateway asks for it when
//! the client did not, and removes it from what that client receives). Two differences between the
//! two: self-hosted servers may report none, so their chat and completions answers keep enough text
//! to estimate it (a stream keeps its text until its chunks show the server took `include_usage`; a
//! JSON answer is estimated from the scanner's window); and their token budgets are reconciled with
//! the real usage after each answer, while OpenAI's stay as charged at admission (OpenAI counts
//! prompt + `max_tokens` against its limits).

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
        let usage = if self.compatible {
            StreamUsage::Unsure
        } else {
            StreamUsage::Reported
        };
        Ok(relayed(a, usage, path))
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

/// What a relayed upstream does when asked for a stream's usage (`stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Reports it (OpenAI; Azure from `api-version` 2024-08-01).
    Reported,
    /// A self-hosted server: usually reports it, but may report no usage for any answer (those
    /// are estimated).
    Unsure,
    /// Refuses the option (Azure before 2024-08-01): a stream's usage is estimated.
    Refused,
}

/// An OpenAI-format request to `path`, relayed back as it comes.
pub fn relayed(a: &Attempt<'_>, usage: StreamUsage, path: String) -> Outbound {
    let relay = Relay::for_attempt(a, usage);
    let options = relay.strip.then(|| stream_options_with_usage(&a.req.body));
    let set = options.as_deref().map(|o| ("stream_options", o));
    Outbound {
        path,
        body: super::openai_body(a, set),
        answer: Box::new(relay),
    }
}

/// The request's `stream_options` with `include_usage: true` added: the client's other options
/// (`include_obfuscation`, ...) are kept.
fn stream_options_with_usage(body: &crate::body::JsonBody) -> std::borrow::Cow<'static, str> {
    const ONLY_USAGE: &str = r#"{"include_usage":true}"#;
    let client = body.get("stream_options").and_then(|raw| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw).ok()
    });
    match client {
        Some(mut o) if !o.is_empty() => {
            o.insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_string(&o).map_or(ONLY_USAGE.into(), Into::into)
        }
        _ => ONLY_USAGE.into(),
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
    /// event from what the client receives. Every generating stream is asked, whoever needs the
    /// count: a key's spend, a team's budget, the spend log and `llmproxy_tokens_total` all do.
    strip: bool,
    stripper: Option<UsageEventStrip>,
    /// Estimate the usage when the upstream reports none.
    estimate: bool,
    /// Keep a stream's text for that estimate (until the upstream shows it will report usage).
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

    /// The relay for an attempt: asks for (and strips) a stream's usage when the client did not
    /// ask and the upstream takes the option, and prepares the estimate where usage may be missing.
    pub fn for_attempt(a: &Attempt<'_>, usage: StreamUsage) -> Relay {
        let generates = matches!(
            a.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions
        );
        let stream = generates && a.req.stream;
        let client_usage = stream && super::client_asked_usage(&a.req.body);
        let estimate = match usage {
            StreamUsage::Reported => false,
            StreamUsage::Unsure => generates,
            StreamUsage::Refused => stream,
        };
        Relay {
            strip: stream && !client_usage && usage != StreamUsage::Refused,
            estimate,
            // A stream whose client asked for usage gets it (or the client would see it missing).
            keep_stream_text: estimate && stream && !client_usage,
            ..Relay::plain()
        }
    }
}

impl Answer for Relay {
    fn begin(&mut self, _status: u16, headers: &http::HeaderMap) -> Mode {
        self.sse = super::is_event_stream(headers);
        if self.sse {
            self.scanner.read_events();
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
            if self.strip && memchr::memmem::find(&chunk, b"\"usage\"").is_some() {
                // The server took `include_usage` (its chunks carry `"usage": null` until the
                // count): no estimate will be needed, the text is let go.
                self.kept = None;
            } else {
                let room = ESTIMATE_BODY_LIMIT.saturating_sub(k.len());
                k.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
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

    fn asking_relay() -> Relay {
        let mut r = Relay {
            strip: true,
            estimate: true,
            keep_stream_text: true,
            ..Relay::plain()
        };
        let mut h = http::HeaderMap::new();
        h.insert("content-type", "text/event-stream".parse().unwrap());
        r.begin(200, &h);
        r
    }

    #[test]
    fn a_server_that_takes_include_usage_lets_the_kept_text_go() {
        let mut r = asking_relay();
        let chunk = |s: &'static str| Bytes::from_static(s.as_bytes());
        r.chunk(chunk(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        ));
        assert!(r.kept.is_none(), "the count will come: nothing kept");
        r.chunk(chunk("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"));
        assert_eq!(r.usage(), Some(Usage::new(3, 1)));
        assert_eq!(r.unreported(), None);

        // A server that ignores the option: the text is kept and estimated.
        let mut r = asking_relay();
        r.chunk(chunk(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi there\"}}]}\n\n",
        ));
        r.chunk(chunk("data: [DONE]\n\n"));
        assert!(r.kept.is_some());
        assert_eq!(r.unreported().as_deref(), Some("hi there"));
    }

    #[test]
    fn the_clients_stream_options_are_kept() {
        let opts = |body: &str| {
            let b = crate::body::JsonBody::parse(body.as_bytes()).unwrap();
            stream_options_with_usage(&b).into_owned()
        };
        assert_eq!(opts(r#"{"stream":true}"#), r#"{"include_usage":true}"#);
        assert_eq!(
            opts(r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#),
            r#"{"include_obfuscation":false,"include_usage":true}"#
        );
        assert_eq!(
            opts(r#"{"stream":true,"stream_options":{"include_usage":false}}"#),
            r#"{"include_usage":true}"#
        );
        assert_eq!(
            opts(r#"{"stream":true,"stream_options":null}"#),
            r#"{"include_usage":true}"#
        );
    }

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
