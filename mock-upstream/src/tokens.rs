//! The tokens a request is charged against `--tpm`, counted the way OpenAI documents it.
//!
//! OpenAI counts a request against its tokens-per-minute limit as its prompt tokens plus the most
//! the answer may use: `max_completion_tokens` / `max_tokens` (chat), `max_tokens` (legacy
//! completions, Anthropic's Messages), `max_output_tokens` (Responses), nothing for embeddings;
//! `--default-max-tokens` when the request sets none.
//!
//! Prompt tokens follow the OpenAI cookbook, "How to count tokens with tiktoken": text is encoded
//! with the model's tiktoken encoding (o200k_base, OpenAI's current encoding, for a model tiktoken
//! does not know); every chat message costs 3 tokens of framing plus the tokens of each of its
//! values (its role's too), a `name` 1 more, and every reply is primed with 3. Beyond the
//! cookbook's plain-text messages:
//!
//! * content parts count their `text`; an image part counts 765 tokens, the price OpenAI's vision
//!   guide gives a 1024×1024 image at high detail (85 + 4 tiles × 170);
//! * tool calls and the `tools` / `functions` definitions count the tokens of their JSON text;
//! * the ids that only pair a tool result with its call (`tool_call_id`, `call_id`,
//!   `tool_use_id`) are not counted;
//! * token-id arrays (`prompt` / `input` as numbers) count one token per id;
//! * the Responses API counts `instructions` and its `input` (a string, or items counted as
//!   messages); Anthropic's Messages API counts `system` and its `messages` likewise;
//! * Bedrock's Converse API counts `system` and its `messages` likewise (content blocks as parts:
//!   `text`, an `image` / `document` / `video` at the image price, `toolUse` / `toolResult` as
//!   their JSON text), its `toolConfig` as JSON, and `inferenceConfig.maxTokens` as the allowance;
//!   Gemini's `generateContent` (also Vertex AI's) counts `systemInstruction` and its `contents`
//!   (parts likewise: `inlineData` / `fileData` at the image price, `functionCall` /
//!   `functionResponse` as JSON), its `tools` as JSON, and `generationConfig.maxOutputTokens`;
//!   a text-generation server's `/generate` counts `inputs` plus `parameters.max_new_tokens`;
//! * embedding requests of the other dialects (Bedrock's Titan / Cohere, Gemini's and Vertex's)
//!   count every string of the body, no allowance.
//!
//! A body that is not a JSON object costs nothing.

use serde_json::Value;
use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};
use tiktoken_rs::CoreBPE;

/// Framing tokens per chat message (`<|start|>{role}<|message|>…<|end|>`).
const TOKENS_PER_MESSAGE: u64 = 3;
/// A `name` on a message costs one more token.
const TOKENS_PER_NAME: u64 = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING: u64 = 3;
/// An image at high detail, 1024×1024: 85 base tokens + 4 tiles × 170.
const IMAGE_TOKENS: u64 = 765;
/// Fields that only pair a tool result with its call; not part of the prompt's text.
const PAIRING_IDS: [&str; 3] = ["tool_call_id", "call_id", "tool_use_id"];

/// Which API a request body is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completions,
    Embeddings,
    Responses,
    /// Anthropic's Messages API.
    Messages,
    /// Bedrock's Converse API.
    Converse,
    /// Gemini's (and Vertex AI's) `generateContent`.
    Gemini,
    /// A text-generation server's `/generate`.
    Tgi,
    /// An embedding request of another dialect: every string in the body.
    AllText,
}

/// The tokens `body` is charged: its prompt tokens plus its output allowance (`default_max` when
/// it sets none).
pub(crate) fn estimate(api: Api, body: &[u8], default_max: u64) -> u64 {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or("");
    let text = Text(encoding(model));
    let max = |fields: &[&str]| {
        fields
            .iter()
            .find_map(|f| req.get(*f).and_then(Value::as_u64))
            .unwrap_or(default_max)
    };
    let tools = |fields: &[&str]| {
        fields
            .iter()
            .filter_map(|f| req.get(*f))
            .map(|v| text.json(v))
            .sum::<u64>()
    };
    let messages = |field: &str| match req.get(field) {
        Some(Value::Array(items)) => items.iter().map(|m| text.message(m)).sum(),
        _ => 0,
    };
    match api {
        Api::Chat => {
            REPLY_PRIMING
                + messages("messages")
                + tools(&["tools", "functions"])
                + max(&["max_completion_tokens", "max_tokens"])
        }
        Api::Completions => text.strings(req.get("prompt")) + max(&["max_tokens"]),
        Api::Embeddings => text.strings(req.get("input")),
        Api::Responses => {
            let input = match req.get("input") {
                Some(Value::Array(_)) => messages("input"),
                other => text.strings(other),
            };
            REPLY_PRIMING
                + text.strings(req.get("instructions"))
                + input
                + tools(&["tools"])
                + max(&["max_output_tokens"])
        }
        Api::Messages => {
            REPLY_PRIMING
                + text.content(req.get("system"))
                + messages("messages")
                + tools(&["tools"])
                + max(&["max_tokens"])
        }
        Api::Converse => {
            let turns: u64 = match req.get("messages") {
                Some(Value::Array(m)) => m
                    .iter()
                    .map(|m| {
                        TOKENS_PER_MESSAGE
                            + text.strings(m.get("role"))
                            + text.blocks(m.get("content"))
                    })
                    .sum(),
                _ => 0,
            };
            REPLY_PRIMING
                + text.blocks(req.get("system"))
                + turns
                + req.get("toolConfig").map_or(0, |t| text.json(t))
                + nested_max(&req, "inferenceConfig", "maxTokens", default_max)
        }
        Api::Gemini => {
            let field = |camel: &str, snake: &str| req.get(camel).or_else(|| req.get(snake));
            let turns: u64 = match req.get("contents") {
                Some(Value::Array(c)) => c
                    .iter()
                    .map(|c| {
                        TOKENS_PER_MESSAGE
                            + text.strings(c.get("role"))
                            + text.blocks(c.get("parts"))
                    })
                    .sum(),
                _ => 0,
            };
            let system = field("systemInstruction", "system_instruction")
                .map_or(0, |s| text.blocks(s.get("parts")));
            let allowance = field("generationConfig", "generation_config")
                .and_then(|g| {
                    g.get("maxOutputTokens")
                        .or_else(|| g.get("max_output_tokens"))
                })
                .and_then(Value::as_u64)
                .unwrap_or(default_max);
            REPLY_PRIMING
                + system
                + turns
                + req.get("tools").map_or(0, |t| text.json(t))
                + allowance
        }
        Api::Tgi => {
            text.strings(req.get("inputs"))
                + nested_max(&req, "parameters", "max_new_tokens", default_max)
        }
        Api::AllText => req.values().map(|v| text.strings(Some(v))).sum(),
    }
}

/// `text` in o200k_base tokens: each token's id and text (lossy where a token is part of a
/// character).
pub(crate) fn tokenize(text: &str) -> Vec<(u32, String)> {
    let bpe = bpe(Tokenizer::O200kBase);
    bpe.encode_ordinary(text)
        .into_iter()
        .map(|id| {
            let piece = bpe
                .decode_bytes(&[id])
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (id, piece)
        })
        .collect()
}

/// `req[outer][field]` as a count, else `default`.
fn nested_max(req: &serde_json::Map<String, Value>, outer: &str, field: &str, default: u64) -> u64 {
    req.get(outer)
        .and_then(|o| o.get(field))
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

/// The tokens of `text` in OpenAI's current encoding (o200k_base), for answers that report a
/// token count of their input (Titan's `inputTextTokenCount`, a text-generation server's
/// `input_length`).
pub(crate) fn count(text: &str) -> u64 {
    Text(bpe(Tokenizer::O200kBase)).count(text)
}

/// Load the vocabularies most requests use (a few hundred milliseconds each), so the first
/// limited request does not wait for it.
pub(crate) fn warm_up() {
    for tokenizer in [Tokenizer::O200kBase, Tokenizer::Cl100kBase] {
        let _ = bpe(tokenizer).count_ordinary("warm up");
    }
}

/// The encoding of `model`: tiktoken's, or o200k_base for a model it does not know.
fn encoding(model: &str) -> &'static CoreBPE {
    bpe(get_tokenizer(model).unwrap_or(Tokenizer::O200kBase))
}

fn bpe(tokenizer: Tokenizer) -> &'static CoreBPE {
    match tokenizer {
        Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Tokenizer::O200kHarmony => tiktoken_rs::o200k_harmony_singleton(),
        Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        Tokenizer::P50kBase => tiktoken_rs::p50k_base_singleton(),
        Tokenizer::P50kEdit => tiktoken_rs::p50k_edit_singleton(),
        // GPT-2's encoding is r50k_base's vocabulary.
        Tokenizer::R50kBase | Tokenizer::Gpt2 => tiktoken_rs::r50k_base_singleton(),
    }
}

/// Counting with one encoding.
#[derive(Clone, Copy)]
struct Text(&'static CoreBPE);

impl Text {
    fn count(self, s: &str) -> u64 {
        self.0.count_ordinary(s) as u64
    }

    /// The tokens of a value's JSON text (tool definitions, tool calls).
    fn json(self, v: &Value) -> u64 {
        self.count(&v.to_string())
    }

    /// Every string inside a value; a number inside an array is a token id (one token).
    fn strings(self, v: Option<&Value>) -> u64 {
        match v {
            Some(Value::String(s)) => self.count(s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Number(_) => 1,
                    other => self.strings(Some(other)),
                })
                .sum(),
            Some(Value::Object(map)) => map.values().map(|x| self.strings(Some(x))).sum(),
            _ => 0,
        }
    }

    /// A message's `content` (or Anthropic's `system`): a string, or parts.
    fn content(self, v: Option<&Value>) -> u64 {
        match v {
            Some(Value::Array(parts)) => parts.iter().map(|p| self.part(p)).sum(),
            other => self.strings(other),
        }
    }

    /// One content part: its `text`, a fixed price for an image, else the strings it carries
    /// besides its `type` tag and pairing ids.
    fn part(self, p: &Value) -> u64 {
        let Value::Object(fields) = p else {
            return self.strings(Some(p));
        };
        match fields.get("type").and_then(Value::as_str) {
            Some("image_url" | "input_image" | "image") => IMAGE_TOKENS,
            _ if fields.contains_key("text") => self.strings(fields.get("text")),
            _ => fields
                .iter()
                .filter(|(k, _)| *k != "type" && !PAIRING_IDS.contains(&k.as_str()))
                .map(|(_, v)| self.strings(Some(v)))
                .sum(),
        }
    }

    /// Content blocks of Bedrock's Converse API or parts of Gemini's: their text, a fixed price for
    /// media, the JSON text of tool calls and results.
    fn blocks(self, v: Option<&Value>) -> u64 {
        let Some(Value::Array(blocks)) = v else {
            return self.strings(v);
        };
        blocks
            .iter()
            .map(|b| {
                let Value::Object(f) = b else {
                    return self.strings(Some(b));
                };
                if let Some(t) = f.get("text") {
                    return self.strings(Some(t));
                }
                let media = [
                    "image",
                    "document",
                    "video",
                    "inlineData",
                    "inline_data",
                    "fileData",
                    "file_data",
                ];
                if media.iter().any(|k| f.contains_key(*k)) {
                    return IMAGE_TOKENS;
                }
                f.iter()
                    .filter(|(k, _)| !PAIRING_IDS.contains(&k.as_str()))
                    .map(|(_, v)| self.json(v))
                    .sum()
            })
            .sum()
    }

    /// One chat message (or Responses input item): framing plus every value it carries.
    fn message(self, m: &Value) -> u64 {
        let Value::Object(fields) = m else {
            return TOKENS_PER_MESSAGE + self.strings(Some(m));
        };
        let mut n = TOKENS_PER_MESSAGE;
        for (k, v) in fields {
            n += match k.as_str() {
                "content" => self.content(Some(v)),
                "name" => TOKENS_PER_NAME + self.strings(Some(v)),
                "tool_calls" | "function_call" => self.json(v),
                k if PAIRING_IDS.contains(&k) => 0,
                _ => self.strings(Some(v)),
            };
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn est(api: Api, body: Value) -> u64 {
        estimate(api, body.to_string().as_bytes(), 1000)
    }

    /// The cookbook's example conversation, for which it reports what the API counted.
    fn cookbook_messages() -> Value {
        json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
        ])
    }

    #[test]
    fn chat_counts_as_the_cookbook_reports() {
        // The cookbook: 129 prompt tokens for gpt-4-0613 (cl100k_base), 124 for gpt-4o
        // (o200k_base), both as the API counted them.
        let body = json!({"model": "gpt-4-0613", "messages": cookbook_messages(), "max_tokens": 0});
        assert_eq!(est(Api::Chat, body), 129);
        let body = json!({"model": "gpt-4o", "messages": cookbook_messages(), "max_tokens": 0});
        assert_eq!(est(Api::Chat, body), 124);
    }

    #[test]
    fn output_allowance() {
        let chat = |extra: Value| {
            let mut b = json!({"model": "gpt-4o", "messages": []});
            if let (Some(b), Value::Object(extra)) = (b.as_object_mut(), extra) {
                b.extend(extra);
            }
            est(Api::Chat, b)
        };
        assert_eq!(chat(json!({})), REPLY_PRIMING + 1000);
        assert_eq!(chat(json!({"max_tokens": 7})), REPLY_PRIMING + 7);
        assert_eq!(
            chat(json!({"max_tokens": 7, "max_completion_tokens": 9})),
            REPLY_PRIMING + 9
        );
        assert_eq!(est(Api::Embeddings, json!({"input": []})), 0);
        assert_eq!(
            est(Api::Responses, json!({"max_output_tokens": 5})),
            REPLY_PRIMING + 5
        );
        assert_eq!(est(Api::Completions, json!({"max_tokens": 5})), 5);
        assert_eq!(
            est(Api::Messages, json!({"max_tokens": 5})),
            REPLY_PRIMING + 5
        );
    }

    #[test]
    fn message_framing() {
        // "hi" and "user" are one token each in every encoding.
        let one = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40});
        assert_eq!(est(Api::Chat, one), 3 + (3 + 1 + 1) + 40);
        let named = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "name": "bob", "content": "hi"}], "max_tokens": 0});
        assert_eq!(est(Api::Chat, named), 3 + (3 + 1 + 1 + 1 + 1));
        let tool_result = json!({"model": "gpt-4o-mini", "messages": [{"role": "tool", "tool_call_id": "call_abcdefghijklmnop", "content": "hi"}], "max_tokens": 0});
        assert_eq!(est(Api::Chat, tool_result), 3 + (3 + 1 + 1));
    }

    #[test]
    fn parts_images_and_token_ids() {
        let body = json!({"model": "gpt-4o", "max_tokens": 0, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]}]});
        assert_eq!(est(Api::Chat, body), 3 + (3 + 1 + 1 + IMAGE_TOKENS));
        let ids = json!({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]]});
        assert_eq!(est(Api::Embeddings, ids), 4);
        let prompt =
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["hi", "hi"], "max_tokens": 0});
        assert_eq!(est(Api::Completions, prompt), 2);
    }

    #[test]
    fn responses_and_messages() {
        let r =
            json!({"model": "gpt-4o", "instructions": "hi", "input": "hi", "max_output_tokens": 0});
        assert_eq!(est(Api::Responses, r), 3 + 1 + 1);
        let items = json!({"model": "gpt-4o", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 0});
        assert_eq!(est(Api::Responses, items), 3 + (3 + 1 + 1));
        let m = json!({"model": "claude-sonnet-4", "system": [{"type": "text", "text": "hi"}],
                       "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0});
        assert_eq!(est(Api::Messages, m), 3 + 1 + (3 + 1 + 1));
    }

    #[test]
    fn tools_count_their_json() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let with = json!({"model": "gpt-4o", "messages": [], "tools": tools, "max_tokens": 0});
        let n = est(Api::Chat, with);
        assert_eq!(n, REPLY_PRIMING + Text(encoding("gpt-4o")).json(&tools));
        assert!(n > REPLY_PRIMING + 5);
    }

    #[test]
    fn not_an_object_costs_nothing() {
        assert_eq!(estimate(Api::Chat, b"not json", 1000), 0);
        assert_eq!(estimate(Api::Chat, b"[1,2]", 1000), 0);
    }

    #[test]
    fn encodings_by_model() {
        let same = |a: &str, b: &str| std::ptr::eq(encoding(a), encoding(b));
        assert!(same("gpt-4o-mini", "o3-mini"));
        assert!(same("gpt-4", "text-embedding-3-small"));
        assert!(!same("gpt-4", "gpt-4o"));
        // Unknown models count with OpenAI's current encoding.
        assert!(same("llama-3.1-8b", "gpt-4o"));
    }
}
