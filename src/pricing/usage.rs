//! One normalised token count for every provider's usage shape.
//!
//! Providers disagree on what their counters include:
//!
//! | provider | prompt counter | includes cache reads? | includes cache writes? | output counter | includes reasoning? |
//! | --- | --- | --- | --- | --- | --- |
//! | OpenAI / Azure (chat) | `prompt_tokens` | yes (`prompt_tokens_details.cached_tokens`) | — | `completion_tokens` | yes (`completion_tokens_details.reasoning_tokens`) |
//! | OpenAI / Azure (Responses) | `input_tokens` | yes (`input_tokens_details.cached_tokens`) | — | `output_tokens` | yes (`output_tokens_details.reasoning_tokens`) |
//! | Anthropic Messages | `input_tokens` | no (`cache_read_input_tokens`) | no (`cache_creation_input_tokens`) | `output_tokens` | yes (thinking is not counted apart) |
//! | Bedrock Converse | `inputTokens` | no (`cacheReadInputTokens`) | no (`cacheWriteInputTokens`) | `outputTokens` | yes |
//! | Gemini / Vertex | `promptTokenCount` | yes (`cachedContentTokenCount`) | — | `candidatesTokenCount` | no (`thoughtsTokenCount`) |
//!
//! [`TokenUsage`] takes OpenAI's convention (totals that include their parts), and each
//! `from_*` constructor converts one shape, so a token is priced once and at the right rate whatever
//! the provider.

/// The tokens of one request, in one meaning for every provider:
/// - `prompt`: every input token, however it was billed — uncached, read from the prompt cache, or
///   written to it. `cached_prompt` and `cache_write` are parts of it.
/// - `cached_prompt`: input tokens read from the provider's prompt cache (billed at the cached rate).
/// - `cache_write`: input tokens written to the prompt cache (billed at the cache-write rate).
/// - `completion`: every output token, reasoning/thinking included (all billed at the output rate).
/// - `reasoning`: the part of `completion` that was reasoning; informational, it is not billed twice.
///
/// Inconsistent counts (parts larger than their total) never lower the price: [`super::cost`] bills
/// every reported part, see [`TokenUsage::uncached_prompt`] and [`TokenUsage::billed_completion`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub cached_prompt: u64,
    pub cache_write: u64,
    pub completion: u64,
    pub reasoning: u64,
}

/// OpenAI's usage (also Azure OpenAI's, and any OpenAI-compatible server that follows it): Chat
/// Completions names, with the Responses API's equivalents in brackets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAiCounts {
    /// `prompt_tokens` (`input_tokens`): includes `cached_tokens`.
    pub prompt_tokens: u64,
    /// `prompt_tokens_details.cached_tokens` (`input_tokens_details.cached_tokens`).
    pub cached_tokens: u64,
    /// `completion_tokens` (`output_tokens`): includes `reasoning_tokens`.
    pub completion_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens` (`output_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: u64,
}

/// Anthropic Messages API `usage` (also Claude on Bedrock's InvokeModel and on Vertex).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnthropicCounts {
    /// `input_tokens`: the uncached input only.
    pub input_tokens: u64,
    /// `cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
    /// `cache_creation_input_tokens` (5-minute and 1-hour writes together).
    pub cache_creation_input_tokens: u64,
    /// `output_tokens`: includes extended-thinking tokens.
    pub output_tokens: u64,
}

/// Bedrock Converse API `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BedrockCounts {
    /// `inputTokens`: the uncached input only.
    pub input_tokens: u64,
    /// `cacheReadInputTokens`.
    pub cache_read_input_tokens: u64,
    /// `cacheWriteInputTokens`.
    pub cache_write_input_tokens: u64,
    /// `outputTokens`: includes reasoning.
    pub output_tokens: u64,
}

/// Gemini API and Vertex AI `usageMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeminiCounts {
    /// `promptTokenCount`: includes `cachedContentTokenCount`.
    pub prompt_token_count: u64,
    /// `cachedContentTokenCount`.
    pub cached_content_token_count: u64,
    /// `toolUsePromptTokenCount`: input the model produced by calling tools; billed as input, not
    /// part of `promptTokenCount`.
    pub tool_use_prompt_token_count: u64,
    /// `candidatesTokenCount`: excludes `thoughtsTokenCount`.
    pub candidates_token_count: u64,
    /// `thoughtsTokenCount`: billed as output.
    pub thoughts_token_count: u64,
}

impl TokenUsage {
    /// OpenAI: totals already include their parts.
    pub fn from_openai(c: OpenAiCounts) -> TokenUsage {
        TokenUsage {
            prompt: c.prompt_tokens,
            cached_prompt: c.cached_tokens,
            cache_write: 0,
            completion: c.completion_tokens,
            reasoning: c.reasoning_tokens,
        }
    }

    /// Anthropic: `input_tokens` excludes cache reads and writes, which are added to the total.
    pub fn from_anthropic(c: AnthropicCounts) -> TokenUsage {
        TokenUsage {
            prompt: c
                .input_tokens
                .saturating_add(c.cache_read_input_tokens)
                .saturating_add(c.cache_creation_input_tokens),
            cached_prompt: c.cache_read_input_tokens,
            cache_write: c.cache_creation_input_tokens,
            completion: c.output_tokens,
            reasoning: 0,
        }
    }

    /// Bedrock Converse: like Anthropic, `inputTokens` excludes cache reads and writes.
    pub fn from_bedrock(c: BedrockCounts) -> TokenUsage {
        TokenUsage {
            prompt: c
                .input_tokens
                .saturating_add(c.cache_read_input_tokens)
                .saturating_add(c.cache_write_input_tokens),
            cached_prompt: c.cache_read_input_tokens,
            cache_write: c.cache_write_input_tokens,
            completion: c.output_tokens,
            reasoning: 0,
        }
    }

    /// Gemini: the prompt includes cached content; thinking is counted apart from the candidates and
    /// added to the output.
    pub fn from_gemini(c: GeminiCounts) -> TokenUsage {
        TokenUsage {
            prompt: c
                .prompt_token_count
                .saturating_add(c.tool_use_prompt_token_count),
            cached_prompt: c.cached_content_token_count,
            cache_write: 0,
            completion: c
                .candidates_token_count
                .saturating_add(c.thoughts_token_count),
            reasoning: c.thoughts_token_count,
        }
    }

    /// Input tokens billed at the plain input rate: the prompt less its cached and cache-write parts
    /// (never below zero).
    pub fn uncached_prompt(&self) -> u64 {
        self.prompt
            .saturating_sub(self.cached_prompt)
            .saturating_sub(self.cache_write)
    }

    /// Output tokens billed: `completion`, or `reasoning` if a provider reported more reasoning than
    /// output in all.
    pub fn billed_completion(&self) -> u64 {
        self.completion.max(self.reasoning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_normalises_to_totals_with_parts() {
        let openai = TokenUsage::from_openai(OpenAiCounts {
            prompt_tokens: 1000,
            cached_tokens: 400,
            completion_tokens: 200,
            reasoning_tokens: 50,
        });
        assert_eq!(
            openai,
            TokenUsage {
                prompt: 1000,
                cached_prompt: 400,
                cache_write: 0,
                completion: 200,
                reasoning: 50
            }
        );
        assert_eq!(openai.uncached_prompt(), 600);

        let anthropic = TokenUsage::from_anthropic(AnthropicCounts {
            input_tokens: 100,
            cache_read_input_tokens: 2000,
            cache_creation_input_tokens: 500,
            output_tokens: 300,
        });
        assert_eq!(anthropic.prompt, 2600);
        assert_eq!(anthropic.uncached_prompt(), 100);
        assert_eq!(
            (anthropic.cached_prompt, anthropic.cache_write),
            (2000, 500)
        );

        let bedrock = TokenUsage::from_bedrock(BedrockCounts {
            input_tokens: 10,
            cache_read_input_tokens: 20,
            cache_write_input_tokens: 30,
            output_tokens: 40,
        });
        assert_eq!(
            (
                bedrock.prompt,
                bedrock.uncached_prompt(),
                bedrock.completion
            ),
            (60, 10, 40)
        );

        let gemini = TokenUsage::from_gemini(GeminiCounts {
            prompt_token_count: 1000,
            cached_content_token_count: 600,
            tool_use_prompt_token_count: 5,
            candidates_token_count: 100,
            thoughts_token_count: 250,
        });
        assert_eq!(
            gemini,
            TokenUsage {
                prompt: 1005,
                cached_prompt: 600,
                cache_write: 0,
                completion: 350,
                reasoning: 250
            }
        );
        assert_eq!(gemini.uncached_prompt(), 405);
    }

    #[test]
    fn inconsistent_counts_are_not_lost() {
        let u = TokenUsage {
            prompt: 10,
            cached_prompt: 30,
            cache_write: 0,
            completion: 5,
            reasoning: 8,
        };
        assert_eq!(u.uncached_prompt(), 0);
        assert_eq!(u.billed_completion(), 8);
    }
}
