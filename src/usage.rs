//! Token usage, as providers report it in a response body.
//!
//! OpenAI-style bodies carry `usage.prompt_tokens` (cached tokens included,
//! counted again in `prompt_tokens_details.cached_tokens`) and
//! `usage.completion_tokens`; Anthropic-style bodies carry `input_tokens`
//! (cache reads and writes excluded), `cache_read_input_tokens`,
//! `cache_creation_input_tokens` (split by lifetime in `cache_creation`)
//! and `output_tokens`. Both become a [`Usage`] whose counts do not overlap.

use serde::Deserialize;

use crate::json_skim::{self, Cursor};

/// Tokens of one request. No count includes another, so they add up to
/// what was billed and each has its own price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens neither read from nor written to a cache.
    pub input: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_input: u64,
    /// Prompt tokens written to Anthropic's cache for 5 minutes.
    pub cache_write: u64,
    /// Prompt tokens written to Anthropic's cache for 1 hour.
    pub cache_write_1h: u64,
    pub output: u64,
}

impl Usage {
    /// Anthropic's counts: `cache_creation` is the total written to the
    /// cache, `one_hour` the part of it written for an hour (the rest is
    /// written for 5 minutes).
    pub fn anthropic(input: u64, cache_read: u64, cache_creation: u64, one_hour: u64, output: u64) -> Self {
        let one_hour = one_hour.min(cache_creation);
        Self {
            input,
            cached_input: cache_read,
            cache_write: cache_creation.saturating_sub(one_hour),
            cache_write_1h: one_hour,
            output,
        }
    }

    /// Prompt tokens written to a cache, whatever their lifetime.
    pub fn cache_writes(&self) -> u64 {
        self.cache_write.saturating_add(self.cache_write_1h)
    }
}

/// The `usage` object as providers send it.
#[derive(Debug, Default, Deserialize)]
pub struct Wire {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_creation: Option<CacheCreation>,
}

/// Anthropic's `usage.cache_creation`: cache writes by lifetime.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct CacheCreation {
    pub ephemeral_5m_input_tokens: Option<u64>,
    pub ephemeral_1h_input_tokens: Option<u64>,
}

impl CacheCreation {
    /// The tokens written for an hour.
    pub fn one_hour(&self) -> u64 {
        self.ephemeral_1h_input_tokens.unwrap_or(0)
    }

    /// All tokens written, when `cache_creation_input_tokens` is missing.
    pub fn total(&self) -> u64 {
        self.ephemeral_5m_input_tokens.unwrap_or(0).saturating_add(self.one_hour())
    }
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

/// The usage in a complete (non-streaming) response body, if it has one.
/// The body is the provider's and is passed on as it is: only the top-level
/// `usage` member is looked for, and read where it lies (one pass).
pub fn from_response(body: &[u8]) -> Option<Usage> {
    json_skim::read_top_value(body, "usage", read)
}

/// A `usage` object's bytes to a [`Usage`]: the counts read as serde would
/// read them into [`Wire`] (a count that is not a whole number, or a field
/// given twice, makes the object unreadable), without building anything.
pub fn from_object(bytes: &[u8]) -> Option<Usage> {
    read(&mut Cursor::new(bytes))
}

/// [`from_object`] for the object at the cursor, moving past it.
fn read(c: &mut Cursor) -> Option<Usage> {
    let mut wire = Wire::default();
    let mut seen = Seen::default();
    json_skim::members(c, |key, c| {
        let (bit, count) = match key {
            b"prompt_tokens" => (0, &mut wire.prompt_tokens),
            b"completion_tokens" => (1, &mut wire.completion_tokens),
            b"input_tokens" => (2, &mut wire.input_tokens),
            b"output_tokens" => (3, &mut wire.output_tokens),
            b"cache_read_input_tokens" => (4, &mut wire.cache_read_input_tokens),
            b"cache_creation_input_tokens" => (5, &mut wire.cache_creation_input_tokens),
            b"prompt_tokens_details" => {
                seen.first(6)?;
                let (mut details, mut inner) = (PromptDetails::default(), Seen::default());
                let given = object(c, |key, c| match key {
                    b"cached_tokens" => inner.read(0, &mut details.cached_tokens, c),
                    _ => c.skip_value(),
                })?;
                wire.prompt_tokens_details = given.then_some(details);
                return Some(());
            }
            b"cache_creation" => {
                seen.first(7)?;
                let (mut split, mut inner) = (CacheCreation::default(), Seen::default());
                let given = object(c, |key, c| match key {
                    b"ephemeral_5m_input_tokens" => inner.read(0, &mut split.ephemeral_5m_input_tokens, c),
                    b"ephemeral_1h_input_tokens" => inner.read(1, &mut split.ephemeral_1h_input_tokens, c),
                    _ => c.skip_value(),
                })?;
                wire.cache_creation = given.then_some(split);
                return Some(());
            }
            _ => return c.skip_value(),
        };
        seen.read(bit, count, c)
    })?;
    from_wire(wire)
}

/// A nested object (true), or null (false).
fn object(c: &mut Cursor, member: impl FnMut(&[u8], &mut Cursor) -> Option<()>) -> Option<bool> {
    if c.null() {
        return Some(false);
    }
    json_skim::members(c, member).map(|()| true)
}

/// The known fields (by number) an object has given so far: serde refuses a
/// field given twice (null included), and so does this.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn first(&mut self, bit: u8) -> Option<()> {
        let mask = 1u8.checked_shl(u32::from(bit))?;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }

    /// Reads a count (or null) into a field given for the first time.
    fn read(&mut self, bit: u8, field: &mut Option<u64>, c: &mut Cursor) -> Option<()> {
        self.first(bit)?;
        *field = c.u64_or_null()?;
        Some(())
    }
}

/// A parsed `usage` object to a [`Usage`]; None if it carries no counts.
pub fn from_wire(wire: Wire) -> Option<Usage> {
    if let Some(input) = wire.input_tokens {
        // Anthropic: input_tokens already excludes cache reads and writes.
        let split = wire.cache_creation.unwrap_or_default();
        let written = wire.cache_creation_input_tokens.unwrap_or_else(|| split.total());
        return Some(Usage::anthropic(
            input,
            wire.cache_read_input_tokens.unwrap_or(0),
            written,
            split.one_hour(),
            wire.output_tokens.unwrap_or(0),
        ));
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
        ..Usage::default()
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
        assert_eq!(from_response(body), Some(Usage { input: 20, cached_input: 100, output: 30, ..Usage::default() }));
    }

    #[test]
    fn embeddings_and_usage_first() {
        let body = br#"{"usage":{"prompt_tokens":8,"total_tokens":8},"object":"list","data":[{"embedding":[0.1]}]}"#;
        assert_eq!(from_response(body), Some(Usage { input: 8, cached_input: 0, output: 0, ..Usage::default() }));
    }

    #[test]
    fn anthropic_shape() {
        let body = br#"{"type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":40,"cache_creation_input_tokens":0,"output_tokens":7}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 12, cached_input: 40, output: 7, ..Usage::default() }));
        let body = br#"{"type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":40,"cache_creation_input_tokens":5,"output_tokens":7}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 12, cached_input: 40, cache_write: 5, output: 7, ..Usage::default() }));
        // Split by lifetime, as Anthropic reports it since the 1-hour cache.
        let body = br#"{"type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":0,"cache_creation_input_tokens":50,
            "cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":30},"output_tokens":7}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 12, cache_write: 20, cache_write_1h: 30, output: 7, ..Usage::default() }));
        // The split alone still counts.
        let body = br#"{"usage":{"input_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":2,"ephemeral_1h_input_tokens":3}}}"#;
        assert_eq!(from_response(body), Some(Usage { input: 1, cache_write: 2, cache_write_1h: 3, ..Usage::default() }));
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

    /// Read in one pass, a response's usage is what finding the top-level
    /// member and then reading it gives.
    #[test]
    fn one_pass_agrees_with_find_then_read() {
        let bodies: [&[u8]; 11] = [
            br#"{"id":"x","choices":[{"message":{"content":"\"usage\":{}"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            br#"{"usage":{"prompt_tokens":3},"usage":{"prompt_tokens":3}}"#,
            br#"{"usage":null}"#,
            br#"{"usage":{"prompt_tokens":1.5}}"#,
            br#"{"usage":{"prompt_tokens":3,"prompt_tokens":3}}"#,
            br#"{"usage":{"prompt_tokens":3}, "z":[}"#,
            br#"{"a":{"usage":{"prompt_tokens":9}},"usage":{"input_tokens":2,"output_tokens":5}}"#,
            br#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1}},"n":1}"#,
            br#"{"us\u0061ge":{"prompt_tokens":7}}"#,
            br#"{"usage":7}"#,
            b"",
        ];
        for body in bodies {
            let two_pass = json_skim::top_value(body, "usage").and_then(from_object);
            assert_eq!(from_response(body), two_pass, "{}", String::from_utf8_lossy(body));
        }
        assert!(from_response(bodies[0]).is_some() && from_response(bodies[6]).is_some() && from_response(bodies[8]).is_some());
    }

    /// The hand reader agrees with serde's reading of [`Wire`].
    #[test]
    fn reads_as_serde_does() {
        let objects: &[&[u8]] = &[
            br#"{"prompt_tokens":1,"completion_tokens":2}"#,
            br#"{ "prompt_tokens" : 10 , "prompt_tokens_details" : { "cached_tokens" : 4 , "audio_tokens" : 0 } }"#,
            br#"{"prompt_tokens":10,"prompt_tokens_details":null,"completion_tokens":null}"#,
            br#"{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":null}}"#,
            br#"{"prompt_tokens":10,"completion_tokens_details":{"reasoning_tokens":3,"x":[1,{"y":"}"}]},"total_tokens":13}"#,
            br#"{"input_tokens":3,"output_tokens":4,"cache_creation":{"ephemeral_5m_input_tokens":1,"ephemeral_1h_input_tokens":2},"service_tier":"standard"}"#,
            br#"{"input_tokens":3,"cache_creation":null,"server_tool_use":{"web_search_requests":1}}"#,
            br#"{"prompt_tokens":7}"#,
            br#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            br#"{"prompt_tokens":null,"prompt_tokens":2}"#,
            br#"{"prompt_tokens":1,"prompt_tokens_details":null,"prompt_tokens_details":{"cached_tokens":1}}"#,
            br#"{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":null,"cached_tokens":1}}"#,
            br#"{"prompt_tokens":1.0}"#,
            br#"{"prompt_tokens":-3}"#,
            br#"{"prompt_tokens":"3"}"#,
            br#"{"prompt_tokens":1e2}"#,
            br#"{"prompt_tokens":99999999999999999999}"#,
            br#"{"prompt_tokens_details":{"cached_tokens":true},"prompt_tokens":1}"#,
            br#"{"cache_creation":[],"input_tokens":1}"#,
            br#"{"prompt_tokens":1,}"#,
            br#"{}"#,
            br#"[]"#,
            br#"null"#,
        ];
        for o in objects {
            let serde = serde_json::from_slice::<Wire>(o).ok().and_then(from_wire);
            assert_eq!(from_object(o), serde, "{}", String::from_utf8_lossy(o));
        }
    }

    #[test]
    fn cached_never_exceeds_prompt() {
        let u = from_object(br#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":9}}"#).unwrap();
        assert_eq!(u, Usage { input: 0, cached_input: 5, output: 0, ..Usage::default() });
    }
}
