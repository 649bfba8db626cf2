//! OpenAI chat completions to and from Anthropic Messages.
//!
//! Clients speak OpenAI's chat-completions API; Anthropic's own API is
//! Messages (`POST /v1/messages`, with `anthropic-version: API_VERSION`).
//! This module translates between the two, as plain functions over bytes:
//!
//! - a chat-completions request into a Messages request
//!   ([`request_to_messages`], in `request`);
//! - a Messages response into a `chat.completion` ([`response_to_openai`],
//!   in `response`);
//! - an Anthropic error into OpenAI's error shape ([`error_to_openai`], in
//!   `response`);
//! - a Messages event stream into `chat.completion.chunk` events
//!   ([`StreamTranslator`], in `stream`), fed in chunks cut anywhere.
//!
//! What more than one of them needs is here: token counts, finish reasons
//! and the error shapes.
//!
//! A request the translation cannot carry faithfully is refused with a
//! [`TranslateError`] that names the parameter; OpenAI-only knobs with no
//! Anthropic counterpart (`frequency_penalty`, `seed`, `response_format`, ...)
//! are dropped. Provider bytes that do not parse become errors or are skipped:
//! nothing here panics.

mod request;
mod response;
mod stream;

use serde::{Deserialize, Serialize};

use crate::usage::{self, Usage};

pub use request::request_to_messages;
pub use response::{error_to_openai, response_to_openai};
pub use stream::StreamTranslator;

/// Sent as `anthropic-version` upstream.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` used when an OpenAI request sets neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Why a request cannot be translated; the filter answers it with a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    pub message: String,
    /// The offending OpenAI parameter, as OpenAI's errors name it.
    pub param: Option<&'static str>,
}

impl TranslateError {
    fn body(message: impl Into<String>) -> Self {
        Self { message: message.into(), param: None }
    }

    fn param(param: &'static str, message: impl Into<String>) -> Self {
        Self { message: message.into(), param: Some(param) }
    }

    fn messages(message: impl Into<String>) -> Self {
        Self::param("messages", message)
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the filter needs to know about a translated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The Messages request body.
    pub body: Vec<u8>,
    /// The client asked for a stream (`stream: true`).
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`);
    /// only ever true for a stream.
    pub include_usage: bool,
}

// ---------------------------------------------------------------------------
// Token counts
// ---------------------------------------------------------------------------

/// Anthropic's `usage` object, as sent in responses and stream events.
#[derive(Deserialize, Debug, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<usage::CacheCreation>,
}

/// Anthropic's token counts; none overlaps another (`cache_write_1h` is
/// the part of `cache_write` written for an hour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
}

impl Counts {
    /// Takes the counts `wire` carries, keeping the others.
    fn update(&mut self, wire: &WireUsage) {
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut self.input, wire.input_tokens);
        set(&mut self.output, wire.output_tokens);
        set(&mut self.cache_read, wire.cache_read_input_tokens);
        set(&mut self.cache_write, wire.cache_creation_input_tokens.or(wire.cache_creation.map(|c| c.total())));
        set(&mut self.cache_write_1h, wire.cache_creation.map(|c| c.one_hour()));
    }

    fn from_wire(wire: &WireUsage) -> Self {
        let mut counts = Self::default();
        counts.update(wire);
        counts
    }

    /// For billing: cache writes have prices of their own.
    fn billing(&self) -> Usage {
        Usage::anthropic(self.input, self.cache_read, self.cache_write, self.cache_write_1h, self.output)
    }

    /// As OpenAI reports usage: the prompt includes cached tokens, counted
    /// again in `prompt_tokens_details.cached_tokens`.
    fn openai(&self) -> OpenAiUsage {
        let prompt = self.input.saturating_add(self.cache_read).saturating_add(self.cache_write);
        OpenAiUsage {
            prompt_tokens: prompt,
            completion_tokens: self.output,
            total_tokens: prompt.saturating_add(self.output),
            prompt_tokens_details: PromptDetails { cached_tokens: self.cache_read },
        }
    }
}

#[derive(Serialize, Debug, Clone, Copy)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
}

#[derive(Serialize, Debug, Clone, Copy)]
struct PromptDetails {
    cached_tokens: u64,
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Deserialize, Debug)]
struct WireError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// 529 (Anthropic's "overloaded") is not a status clients know: 503.
fn openai_status(status: u16) -> u16 {
    if status == 529 {
        503
    } else {
        status
    }
}

/// OpenAI's error `type` for a status.
fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        // OpenAI's type for rate limits; `code` carries Anthropic's.
        429 => "requests",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}
