//! Token usage, as providers report it in a response body.
//!
//! OpenAI-style bodies carry `usage.prompt_tokens` (cached tokens included,
//! counted again in `prompt_tokens_details.cached_tokens`) and
//! `usage.completion_tokens`; Anthropic-style bodies carry `input_tokens`
//! (cache reads excluded), `cache_read_input_tokens` and `output_tokens`.
//! Both become a [`Usage`] whose three counts do not overlap.

use serde::Deserialize;

use crate::json_scan::{self, TopKey};

/// Tokens of one request. `input` excludes `cached_input`, so the three
/// counts add up to what was billed and each has its own price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

/// The `usage` object as providers send it.
#[derive(Debug, Deserialize)]
pub struct Wire {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

/// The usage in a complete (non-streaming) response body, if it has one.
pub fn from_response(body: &[u8]) -> Option<Usage> {
    let span = json_scan::scan(body).ok()?.get(TopKey::Usage)?;
    from_object(body.get(span.start..span.end)?)
}

/// A `usage` object's bytes to a [`Usage`].
pub fn from_object(bytes: &[u8]) -> Option<Usage> {
    from_wire(serde_json::from_slice(bytes).ok()?)
}

/// A parsed `usage` object to a [`Usage`]; None if it carries no counts.
pub fn from_wire(wire: Wire) -> Option<Usage> {
    if let Some(input) = wire.input_tokens {
        // Anthropic: input_tokens already excludes cache reads.
        // Anthropic's cache writes are billed as input (see the README's limits).
        return Some(Usage {
            input: input.saturating_add(wire.cache_creation_input_tokens.unwrap_or(0)),
            cached_input: wire.cache_read_input_tokens.unwrap_or(0),
            output: wire.output_tokens.unwrap_or(0),
        });
    }
    let prompt = wire.prompt_tokens?;
    let cached = wire
        .prompt_tokens_details
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0)
        .min(prompt);
    Some(Usage {
        input: prompt.saturating_sub(cached),
        cached_input: cached,
        output: wire.completion_tokens.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"message":{"content":"{\"usage\": 1}"}}],
            "usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,
                     "prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},
                     "completion_tokens_details":{"reasoning_tokens":10}}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 20, cached_input: 100, output: 30 }));
    }

    #[test]
    fn embeddings_and_usage_first() {
        let body = br#"{"usage":{"prompt_tokens":8,"total_tokens":8},"object":"list","data":[{"embedding":[0.1]}]}"#;
        assert_eq!(from_response(body), Some(Usage { input: 8, cached_input: 0, output: 0 }));
    }

    #[test]
    fn anthropic_shape() {
        let body = br#"{"type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":40,"cache_creation_input_tokens":0,"output_tokens":7}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 12, cached_input: 40, output: 7 }));
        let body = br#"{"type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":40,"cache_creation_input_tokens":5,"output_tokens":7}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 17, cached_input: 40, output: 7 }));
    }

    #[test]
    fn missing_or_broken_usage() {
        assert_eq!(from_response(br#"{"choices":[]}"#), None);
        assert_eq!(from_response(br#"{"usage":null}"#), None);
        assert_eq!(from_response(br#"{"usage":{"total_tokens":3}}"#), None);
        assert_eq!(from_response(br#"{"usage":{"prompt_tokens":-1}}"#), None);
        assert_eq!(from_response(br#"{"usage":{"prompt_tokens":1"#), None);
        assert_eq!(from_response(b"not json"), None);
        // Only the top-level usage counts.
        assert_eq!(from_response(br#"{"data":{"usage":{"prompt_tokens":5}}}"#), None);
    }

    #[test]
    fn cached_never_exceeds_prompt() {
        let u = from_object(br#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":9}}"#).unwrap();
        assert_eq!(u, Usage { input: 0, cached_input: 5, output: 0 });
    }
}
