//! Token estimates for admission, modelled on how OpenAI counts a request against its tokens-per-
//! minute limit: the prompt's tokens plus the most the answer may use (`max_tokens`,
//! `max_completion_tokens`, `max_output_tokens`; a configured default when the client sets none).
//!
//! Prompt tokens come from tiktoken (o200k for the gpt-4o / gpt-4.1 / gpt-5 / o-series family,
//! cl100k for gpt-4 / gpt-3.5 / text-embedding-*), counted the way OpenAI's cookbook counts chat
//! messages: 3 tokens of framing per message, 1 more for a `name`, 3 to prime the reply. Models
//! tiktoken does not know (self-hosted Llama, Qwen, Mistral, ...) use the documented fallback of
//! one token per 3 bytes of text, which over-estimates every common tokenizer, so a budget is never
//! overrun because of the estimate. Images count 765 tokens each (a 1024×1024 high-detail image).

use crate::body::JsonBody;
use crate::route::Endpoint;
use serde_json::Value;
use tiktoken_rs::tokenizer::Tokenizer;
use tiktoken_rs::CoreBPE;

/// Tokens charged for each image part of a message.
pub const IMAGE_TOKENS: u64 = 765;
/// Framing tokens per chat message and for priming the reply (OpenAI's cookbook).
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

/// How prompt text is counted for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Cl100k,
    O200k,
    /// One token per 3 bytes: the fallback for models tiktoken does not know.
    Bytes,
}

impl Counter {
    pub fn for_model(model: &str) -> Counter {
        match tiktoken_rs::tokenizer::get_tokenizer(model) {
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => Counter::O200k,
            Some(Tokenizer::Cl100kBase) => Counter::Cl100k,
            // Older encodings (davinci, gpt2) count close to cl100k; use it rather than a third
            // vocabulary in memory.
            Some(_) => Counter::Cl100k,
            None => Counter::Bytes,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Counter::Cl100k => "cl100k_base",
            Counter::O200k => "o200k_base",
            Counter::Bytes => "bytes/3",
        }
    }

    fn bpe(self) -> Option<&'static CoreBPE> {
        match self {
            Counter::Cl100k => Some(tiktoken_rs::cl100k_base_singleton()),
            Counter::O200k => Some(tiktoken_rs::o200k_base_singleton()),
            Counter::Bytes => None,
        }
    }

    /// Tokens in `text`.
    pub fn count(self, text: &str) -> u64 {
        match self.bpe() {
            Some(bpe) => bpe.count_ordinary(text) as u64,
            None => (text.len() as u64).div_ceil(3),
        }
    }

    /// Load the vocabularies now (a few hundred milliseconds each) so no request waits for it.
    pub fn warm_up(counters: &[Counter]) {
        for c in counters {
            if let Some(bpe) = c.bpe() {
                let _ = bpe.count_ordinary("warm up");
            }
        }
    }
}

/// A request's admission estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    pub prompt: u64,
    /// The most the answer may use (0 for embeddings).
    pub max_output: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.prompt + self.max_output
    }
}

/// Bodies larger than this are estimated at one token per 3 bytes instead of with tiktoken, which
/// counts about 1.5 MB of text per CPU-second: a 4 MiB prompt would hold a request worker for
/// seconds and stall every request on it. The byte estimate over-counts common tokenizers (a budget
/// is never overrun because of it) and costs microseconds; where the provider reports usage, the
/// scheduler reconciles with the real count after the answer.
pub const EXACT_COUNT_LIMIT: usize = 64 * 1024;

/// Run a count off the request workers, one at a time. Counting is CPU work (tiktoken): on a worker
/// it would delay every stream the worker relays, and an unbounded `spawn_blocking` per request
/// turned a burst of streams ending together (each counting its answer) into hundreds of blocking
/// threads that crowded the workers out of the CPU (chunks delayed by tens of ms) and each took a
/// stack and an allocator arena. One lane keeps the workers' share of the CPU; counts wait their
/// turn (they only feed metrics, spend and the scheduler's reconciliation). `None` if the count
/// panicked.
pub async fn off_worker<T: Send + 'static>(
    count: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    static LANE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = LANE.acquire().await.ok()?;
    tokio::task::spawn_blocking(count).await.ok()
}

/// Estimate the tokens a request costs, on the request path. `default_max` is charged when the
/// client sets no maximum. Bodies over [`EXACT_COUNT_LIMIT`] bytes are counted by their size.
pub fn estimate(
    endpoint: Endpoint,
    body: &JsonBody,
    counter: Counter,
    default_max: u64,
) -> Estimate {
    let size: usize = body.fields().map(|(k, v)| k.len() + v.len()).sum();
    let counter = if size > EXACT_COUNT_LIMIT {
        Counter::Bytes
    } else {
        counter
    };
    estimate_with(endpoint, body, counter, default_max)
}

fn estimate_with(
    endpoint: Endpoint,
    body: &JsonBody,
    counter: Counter,
    default_max: u64,
) -> Estimate {
    let field = |k: &str| {
        body.get(k)
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
    };
    let max_of = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| body.get(k).and_then(|raw| raw.trim().parse::<u64>().ok()))
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            let mut prompt = REPLY_PRIMING;
            if let Some(Value::Array(messages)) = field("messages") {
                for m in &messages {
                    prompt += PER_MESSAGE + message_tokens(m, counter);
                }
            }
            if let Some(tools) = body.get("tools").or_else(|| body.get("functions")) {
                prompt += counter.count(tools);
            }
            Estimate {
                prompt,
                max_output: max_of(&["max_completion_tokens", "max_tokens"]).unwrap_or(default_max),
            }
        }
        Endpoint::Completions => Estimate {
            prompt: field("prompt").map_or(0, |p| text_tokens(&p, counter)),
            max_output: max_of(&["max_tokens"]).unwrap_or(default_max),
        },
        Endpoint::Embeddings => Estimate {
            prompt: field("input").map_or(0, |p| text_tokens(&p, counter)),
            max_output: 0,
        },
        Endpoint::Messages | Endpoint::CountTokens => {
            // Anthropic's Messages API: `system` (string or blocks) and `messages`; `max_tokens`
            // is required there.
            let mut prompt =
                REPLY_PRIMING + field("system").map_or(0, |p| text_tokens(&p, counter));
            if let Some(Value::Array(messages)) = field("messages") {
                for m in &messages {
                    prompt += PER_MESSAGE + message_tokens(m, counter);
                }
            }
            if let Some(tools) = body.get("tools") {
                prompt += counter.count(tools);
            }
            Estimate {
                prompt,
                max_output: if endpoint == Endpoint::CountTokens {
                    0
                } else {
                    max_of(&["max_tokens"]).unwrap_or(default_max)
                },
            }
        }
        Endpoint::Responses => {
            let mut prompt = field("instructions").map_or(0, |p| text_tokens(&p, counter));
            match field("input") {
                Some(Value::Array(items)) => {
                    for m in &items {
                        prompt += PER_MESSAGE + message_tokens(m, counter);
                    }
                }
                Some(other) => prompt += text_tokens(&other, counter),
                None => {}
            }
            if let Some(tools) = body.get("tools") {
                prompt += counter.count(tools);
            }
            Estimate {
                prompt: prompt + REPLY_PRIMING,
                max_output: max_of(&["max_output_tokens"]).unwrap_or(default_max),
            }
        }
    }
}

/// An estimate from the size of the fields that carry the prompt, without parsing them: one token
/// per 3 bytes of their JSON (quotes, keys and escapes included, so an over-count of the text's
/// bytes/3). For budgets that are settled with the real usage after the answer (the key's, team's
/// and end user's `tpm`): parsing the messages to count their text was 3k of a governed request's
/// 18k extra instructions (callgrind).
pub fn estimate_by_size(endpoint: Endpoint, body: &JsonBody, default_max: u64) -> Estimate {
    let (fields, max_keys): (&[&str], &[&str]) = match endpoint {
        Endpoint::ChatCompletions => (
            &["messages", "tools", "functions"],
            &["max_completion_tokens", "max_tokens"],
        ),
        Endpoint::Completions => (&["prompt"], &["max_tokens"]),
        Endpoint::Embeddings => (&["input"], &[]),
        Endpoint::Messages => (&["system", "messages", "tools"], &["max_tokens"]),
        Endpoint::CountTokens => (&["system", "messages", "tools"], &[]),
        Endpoint::Responses => (&["instructions", "input", "tools"], &["max_output_tokens"]),
    };
    let size: usize = fields
        .iter()
        .filter_map(|k| body.get(k))
        .map(str::len)
        .sum();
    let max_output = if max_keys.is_empty() {
        0
    } else {
        max_keys
            .iter()
            .find_map(|k| body.get(k).and_then(|raw| raw.trim().parse::<u64>().ok()))
            .unwrap_or(default_max)
    };
    Estimate {
        prompt: REPLY_PRIMING + (size as u64).div_ceil(3),
        max_output,
    }
}

/// Estimate from raw request bytes (the mock upstream counts like a provider with this).
/// [`estimate`] of a raw body, counted exactly whatever its size: for the blocking pool (token
/// counting answered by the gateway, usage estimates), never a request worker.
pub fn estimate_raw(endpoint: Endpoint, body: &[u8], model: &str, default_max: u64) -> Estimate {
    match JsonBody::parse(body) {
        Ok(b) => estimate_with(endpoint, &b, Counter::for_model(model), default_max),
        Err(_) => Estimate::default(),
    }
}

/// Tokens of one chat message (or Responses input item): every string it carries except its
/// role's framing, images at a fixed price.
fn message_tokens(m: &Value, counter: Counter) -> u64 {
    let Value::Object(fields) = m else {
        return text_tokens(m, counter);
    };
    let mut n = 0;
    for (k, v) in fields {
        match k.as_str() {
            "content" => n += content_tokens(v, counter),
            "name" => n += 1 + text_tokens(v, counter),
            "role" | "type" | "id" | "status" => n += text_tokens(v, counter),
            "tool_calls" | "function_call" => n += counter.count(&v.to_string()),
            "tool_call_id" => {}
            _ => n += text_tokens(v, counter),
        }
    }
    n
}

fn content_tokens(v: &Value, counter: Counter) -> u64 {
    match v {
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("image_url" | "input_image" | "image") => IMAGE_TOKENS,
                _ => p
                    .get("text")
                    .map_or_else(|| text_tokens(p, counter), |t| text_tokens(t, counter)),
            })
            .sum(),
        other => text_tokens(other, counter),
    }
}

/// Tokens of every string inside a JSON value (token-id arrays count one per id).
fn text_tokens(v: &Value, counter: Counter) -> u64 {
    match v {
        Value::String(s) => counter.count(s),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Number(_) => 1,
                other => text_tokens(other, counter),
            })
            .sum(),
        Value::Object(map) => map.values().map(|x| text_tokens(x, counter)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(endpoint: Endpoint, body: &str, model: &str) -> Estimate {
        estimate_raw(endpoint, body.as_bytes(), model, 256)
    }

    #[test]
    fn by_size_counts_the_prompt_fields_and_never_under_counts() {
        let raw = r#"{"model":"m","messages":[{"role":"user","content":"Hello there, how are you today?"}],"max_tokens":7,"user":"u1"}"#;
        let body = JsonBody::parse(raw.as_bytes()).unwrap();
        let e = estimate_by_size(Endpoint::ChatCompletions, &body, 256);
        let messages = r#"[{"role":"user","content":"Hello there, how are you today?"}]"#;
        assert_eq!(
            e.prompt,
            REPLY_PRIMING + (messages.len() as u64).div_ceil(3)
        );
        assert_eq!(e.max_output, 7);
        // At least the text's bytes/3 with the framing the exact estimate charges.
        let exact = estimate_with(Endpoint::ChatCompletions, &body, Counter::Bytes, 256);
        assert!(e.prompt >= exact.prompt, "{e:?} {exact:?}");
        let body = JsonBody::parse(br#"{"model":"m","input":["a","b"]}"#).unwrap();
        let e = estimate_by_size(Endpoint::Embeddings, &body, 256);
        assert_eq!((e.prompt, e.max_output), (REPLY_PRIMING + 3, 0));
        let body = JsonBody::parse(br#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(
            estimate_by_size(Endpoint::Messages, &body, 99).max_output,
            99
        );
    }

    #[test]
    fn encodings_by_model() {
        assert_eq!(Counter::for_model("gpt-4o-2024-08-06"), Counter::O200k);
        assert_eq!(Counter::for_model("gpt-4"), Counter::Cl100k);
        assert_eq!(Counter::for_model("gpt-3.5-turbo"), Counter::Cl100k);
        assert_eq!(
            Counter::for_model("text-embedding-3-small"),
            Counter::Cl100k
        );
        assert_eq!(Counter::for_model("llama-3.1-8b"), Counter::Bytes);
    }

    #[test]
    fn chat_counts_like_the_openai_cookbook() {
        // The cookbook's example: "You are a helpful assistant." / "Hello!" with gpt-4 is 9+... tokens.
        let e = est(
            Endpoint::ChatCompletions,
            r#"{"model":"gpt-4","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":100}"#,
            "gpt-4",
        );
        // 3 priming + 2×3 framing + system(1) + 6 + user(1) + 2 = 19 (what the API reports).
        assert_eq!(e.prompt, 19);
        assert_eq!(e.max_output, 100);
    }

    #[test]
    fn default_max_and_other_endpoints() {
        let e = est(Endpoint::ChatCompletions, r#"{"messages":[]}"#, "gpt-4o");
        assert_eq!(
            e,
            Estimate {
                prompt: 3,
                max_output: 256
            }
        );
        let e = est(
            Endpoint::Embeddings,
            r#"{"input":["a b","c"]}"#,
            "text-embedding-3-small",
        );
        assert_eq!(e.max_output, 0);
        assert!(e.prompt >= 2);
        let e = est(
            Endpoint::Completions,
            r#"{"prompt":"abcdef","max_tokens":7}"#,
            "llama",
        );
        assert_eq!(
            e,
            Estimate {
                prompt: 2,
                max_output: 7
            }
        );
        let e = est(
            Endpoint::Responses,
            r#"{"input":"hi there","max_output_tokens":9}"#,
            "gpt-4o",
        );
        assert_eq!(e.max_output, 9);
        assert!(e.prompt >= 2);
    }

    #[test]
    fn images_have_a_fixed_price() {
        let e = est(
            Endpoint::ChatCompletions,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:..."}}]}],"max_tokens":1}"#,
            "gpt-4o",
        );
        assert!(e.prompt > IMAGE_TOKENS + 3 + 3);
        assert!(e.prompt < IMAGE_TOKENS + 20);
    }
}
