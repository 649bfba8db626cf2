//! How a forwarded request's response is read on its way back: copied for
//! its usage, metered as a stream, or translated from Anthropic's Messages
//! API into OpenAI's. The filter hands over chunks and applies what comes
//! back; nothing here calls the host.

use crate::accounting::ResponseCopy;
use crate::admission::{StreamPlan, Wire};
use crate::anthropic::{self, StreamTranslator};
use crate::streaming::{Arrival, Meter};
use crate::usage::Usage;

/// What the response headers said.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub success: bool,
    /// `content-type: text/event-stream`.
    pub event_stream: bool,
}

#[derive(Debug)]
pub enum Reader {
    /// A non-streamed response in the client's own API: copied for its usage.
    Copy(ResponseCopy),
    /// An OpenAI event stream: usage and content counted as events pass.
    Meter(Meter),
    /// An Anthropic event stream: translated into OpenAI chunks (`rewrite`),
    /// or only read, for a `/v1/messages` client.
    Anthropic { stream: StreamTranslator, rewrite: bool },
    /// A non-streamed Anthropic answer (or any error) to an OpenAI client:
    /// held until it ends, then translated whole.
    Whole { usage: Option<Usage> },
}

/// What to do with one chunk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkAction {
    /// Replace the chunk with these bytes (`None`: pass it on as it is).
    pub replace_with: Option<Vec<u8>>,
    /// Hold the body until it ends (then call [`Reader::on_whole`]).
    pub hold: bool,
    /// The stream's first content was found, and in which chunk.
    pub first_content: Option<Arrival>,
}

/// A whole response rewritten: its new body, and a new status if it changes.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// Whether a `content-type` value is an event stream (`text/event-stream`,
/// in any case, with or without parameters).
pub fn is_event_stream(content_type: &[u8]) -> bool {
    const EVENT_STREAM: &[u8] = b"text/event-stream";
    let value = content_type.trim_ascii_start();
    value.get(..EVENT_STREAM.len()).is_some_and(|p| p.eq_ignore_ascii_case(EVENT_STREAM))
}

impl Reader {
    /// Chooses how to read a response. `model` is the name the client asked
    /// for; `created` is the Unix time for translated chunks.
    pub fn new(wire: Wire, plan: Option<StreamPlan>, head: Head, model: &str, created: u64) -> Self {
        let streamed = plan.filter(|_| head.success && head.event_stream);
        match (wire, streamed) {
            (Wire::OpenAI, Some(plan)) => Self::Meter(Meter::new(!plan.client_asked_usage)),
            (Wire::OpenAI | Wire::Anthropic, None) => Self::Copy(ResponseCopy::default()),
            (Wire::Anthropic, Some(_)) => Self::Anthropic { stream: StreamTranslator::new(model, true, created), rewrite: false },
            (Wire::AnthropicTranslated, Some(plan)) => Self::Anthropic {
                stream: StreamTranslator::new(model, plan.client_asked_usage, created),
                rewrite: true,
            },
            (Wire::AnthropicTranslated, None) => Self::Whole { usage: None },
        }
    }

    /// Whether the body the client gets differs in length from the
    /// provider's (so `content-length` must go).
    pub fn changes_length(&self) -> bool {
        match self {
            Self::Copy(_) => false,
            Self::Meter(_) => true,
            Self::Anthropic { rewrite, .. } => *rewrite,
            Self::Whole { .. } => true,
        }
    }

    pub fn on_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> ChunkAction {
        match self {
            Self::Copy(copy) => {
                if end_of_stream {
                    copy.push_last(chunk);
                } else {
                    copy.push(chunk);
                }
                ChunkAction::default()
            }
            Self::Meter(meter) => {
                let outcome = meter.on_chunk(chunk, end_of_stream);
                ChunkAction { replace_with: outcome.replace_with, hold: false, first_content: outcome.first_content }
            }
            Self::Anthropic { stream, rewrite } => {
                let before = stream.content_chars();
                let out = stream.push(chunk, end_of_stream);
                ChunkAction {
                    replace_with: rewrite.then_some(out),
                    hold: false,
                    first_content: (before == 0 && stream.content_chars() > 0).then_some(Arrival::ThisChunk),
                }
            }
            Self::Whole { .. } => ChunkAction { hold: !end_of_stream, ..ChunkAction::default() },
        }
    }

    /// For [`Reader::Whole`]: the whole body the provider sent, and its
    /// status; returns what the client gets instead (None: the body as it is).
    pub fn on_whole(&mut self, body: &[u8], status: Option<u16>, model: &str, created: u64) -> Option<Rewritten> {
        let Self::Whole { usage } = self else { return None };
        if crate::accounting::is_success(status) {
            match anthropic::response_to_openai(body, model, created) {
                Ok((translated, u)) => {
                    *usage = u;
                    Some(Rewritten { status: None, body: translated })
                }
                Err(message) => {
                    let error = crate::errors::ApiError::bad_gateway(&format!("the provider's answer could not be read: {message}"));
                    Some(Rewritten { status: Some(error.status), body: error.body().into_bytes() })
                }
            }
        } else if is_openai_error(body) {
            // Envoy's own answer (the provider unreachable, a timeout),
            // already in OpenAI's shape.
            None
        } else {
            let from = status.unwrap_or(502);
            let (to, body) = anthropic::error_to_openai(from, body);
            Some(Rewritten { status: (to != from).then_some(to), body })
        }
    }

    /// Reads what a stream's meter passed on unread (see `streaming`), for
    /// a stream that did not end; true if its first content was there.
    pub fn read_the_rest(&mut self) -> bool {
        match self {
            Self::Meter(meter) => meter.read_unread(),
            _ => false,
        }
    }

    /// The usage the response reported, if it got that far (after
    /// [`Reader::read_the_rest`]).
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Self::Copy(copy) => copy.usage(),
            Self::Meter(meter) => meter.usage(),
            // Cut off before message_delta, the output count is message_start's
            // (about 1): bill at least what passed.
            Self::Anthropic { stream, .. } if !stream.usage_is_final() => stream
                .usage()
                .map(|u| Usage { output: u.output.max(stream.content_chars().div_ceil(4)), ..u }),
            Self::Anthropic { stream, .. } => stream.usage(),
            Self::Whole { usage } => *usage,
        }
    }

    /// Output tokens estimated from the text that passed (streams only).
    pub fn estimated_output_tokens(&self) -> u64 {
        match self {
            Self::Meter(meter) => meter.estimated_output_tokens(),
            Self::Anthropic { stream, .. } => stream.content_chars().div_ceil(4),
            Self::Copy(_) | Self::Whole { .. } => 0,
        }
    }
}

/// `{"error": {...}}` with no top-level `type`: OpenAI's error shape.
fn is_openai_error(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map.get("error").is_some_and(serde_json::Value::is_object) && !map.contains_key("type"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn event_streams_by_content_type() {
        for yes in ["text/event-stream", "Text/Event-Stream; charset=utf-8", "  text/event-stream"] {
            assert!(is_event_stream(yes.as_bytes()), "{yes}");
        }
        for no in ["application/json", "text/event", "", "text/plain; x=text/event-stream"] {
            assert!(!is_event_stream(no.as_bytes()), "{no}");
        }
    }

    const OK: Head = Head { success: true, event_stream: false };
    const SSE: Head = Head { success: true, event_stream: true };
    const STREAM: Option<StreamPlan> = Some(StreamPlan { client_asked_usage: false });

    #[test]
    fn chooses_by_wire_and_response() {
        assert!(matches!(Reader::new(Wire::OpenAI, None, OK, "m", 0), Reader::Copy(_)));
        assert!(matches!(Reader::new(Wire::OpenAI, STREAM, SSE, "m", 0), Reader::Meter(_)));
        // A streaming request answered with JSON (an error, say) is copied.
        assert!(matches!(Reader::new(Wire::OpenAI, STREAM, OK, "m", 0), Reader::Copy(_)));
        assert!(matches!(Reader::new(Wire::Anthropic, STREAM, SSE, "m", 0), Reader::Anthropic { rewrite: false, .. }));
        assert!(matches!(Reader::new(Wire::AnthropicTranslated, STREAM, SSE, "m", 0), Reader::Anthropic { rewrite: true, .. }));
        let error = Head { success: false, event_stream: false };
        assert!(matches!(Reader::new(Wire::AnthropicTranslated, STREAM, error, "m", 0), Reader::Whole { .. }));
        assert!(!Reader::new(Wire::Anthropic, None, OK, "m", 0).changes_length());
        assert!(Reader::new(Wire::AnthropicTranslated, None, OK, "m", 0).changes_length());
    }

    #[test]
    fn a_whole_answer_is_held_then_translated() {
        let mut r = Reader::new(Wire::AnthropicTranslated, None, OK, "claude", 7);
        assert!(r.on_chunk(b"{", false).hold);
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"output_tokens":2}}"#;
        assert!(!r.on_chunk(body, true).hold);
        let out = r.on_whole(body, Some(200), "claude", 7).unwrap();
        assert_eq!(out.status, None);
        let out: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["choices"][0]["message"]["content"], "Hi");
        assert_eq!(r.usage(), Some(Usage { input: 4, cached_input: 0, output: 2, ..Usage::default() }));
    }

    #[test]
    fn errors_are_reshaped_unless_already_openai() {
        let mut r = Reader::new(Wire::AnthropicTranslated, None, Head { success: false, event_stream: false }, "c", 0);
        let anthropic = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let out = r.on_whole(anthropic, Some(429), "c", 0).unwrap();
        assert_eq!(out.status, None);
        let out: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(out["error"]["message"], "slow down");
        assert_eq!(out["error"]["code"], "rate_limit_error");
        let envoy = json!({"error": {"message": "upstream connect error", "type": "gateway_error", "param": null, "code": null}});
        assert_eq!(r.on_whole(envoy.to_string().as_bytes(), Some(503), "c", 0), None);
        // Anthropic's 529 "overloaded" is a 503 to OpenAI clients.
        let overloaded = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(r.on_whole(overloaded, Some(529), "c", 0).unwrap().status, Some(503));
        assert_eq!(r.usage(), None);
    }

    #[test]
    fn a_cut_anthropic_stream_bills_at_least_what_passed() {
        let mut r = Reader::new(Wire::AnthropicTranslated, STREAM, SSE, "c", 0);
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
        let text = "x".repeat(400);
        let delta = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
        );
        let first = r.on_chunk(start.as_bytes(), false);
        assert_eq!(first.first_content, None);
        assert_eq!(r.on_chunk(delta.as_bytes(), false).first_content, Some(Arrival::ThisChunk));
        // Cut here: no message_delta.
        assert_eq!(r.usage(), Some(Usage { input: 9, cached_input: 0, output: 100, ..Usage::default() }));
    }
}
