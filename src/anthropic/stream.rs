//! Streams: Anthropic Messages events -> OpenAI `chat.completion.chunk`
//! events.

use serde::{Deserialize, Serialize};

use super::{
    finish_reason, openai_error_type, openai_status, Counts, ErrorBody, ErrorEnvelope, OpenAiUsage, WireError,
    WireUsage,
};
use crate::sse;
use crate::usage::Usage;

/// The most a [`StreamTranslator`] holds waiting for an event to end.
const MAX_HELD: usize = 1024 * 1024;

/// An Anthropic stream event's data, by its `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: Option<MessageDeltaBody>,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// ping, content_block_stop, and events added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    id: Option<String>,
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking, signatures, citations.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless the client asked for usage; then null on every chunk
    /// but the last, as OpenAI sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OpenAiUsage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    /// Always null.
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Anthropic Messages SSE stream -> OpenAI `chat.completion.chunk` SSE
/// stream, fed in chunks cut anywhere.
///
/// Only whole events go out: the unfinished tail of a chunk is held until
/// its event ends. The output always ends with exactly one `data: [DONE]`,
/// after which everything upstream sends is ignored.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: sse::Parser,
    /// The message id, from message_start.
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    counts: Option<Counts>,
    /// message_delta brought the final output count.
    output_final: bool,
    /// The first chunk (the assistant role) went out.
    started: bool,
    finish_sent: bool,
    /// The Anthropic block index of each tool call, in OpenAI's tool-call
    /// index order.
    tool_blocks: Vec<u64>,
    content_chars: u64,
    /// `[DONE]` went out.
    done: bool,
}

impl StreamTranslator {
    /// `model` is reported until message_start names the upstream's model;
    /// `created` is the Unix time to report.
    pub fn new(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            parser: sse::Parser::default(),
            id: String::new(),
            model: model.to_owned(),
            created,
            include_usage,
            counts: None,
            output_final: false,
            started: false,
            finish_sent: false,
            tool_blocks: Vec::new(),
            content_chars: 0,
            done: false,
        }
    }

    /// Feeds upstream bytes; returns the OpenAI SSE bytes to send for them
    /// (possibly empty). With `end_of_stream`, also flushes and ends the
    /// stream with `data: [DONE]\n\n` (once, even if upstream never sent
    /// message_stop).
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.done {
            // The parser is moved out so that events can update `self`.
            let mut parser = std::mem::take(&mut self.parser);
            parser.feed(chunk, |event| self.on_event(&event.data, &mut out));
            if end_of_stream {
                self.on_unterminated(&parser.finish(), &mut out);
            }
            self.parser = parser;
            if !self.done && self.parser.pending().len() > MAX_HELD {
                self.parser = sse::Parser::default();
                self.write_error(&mut out, "the provider's stream could not be read", None, 500);
                self.close(&mut out, false);
            }
        }
        if end_of_stream {
            let with_usage = self.output_final;
            self.close(&mut out, with_usage);
        }
        if self.done {
            self.parser = sse::Parser::default();
        }
        out
    }

    /// Usage seen so far (from message_start and message_delta), None until
    /// message_start. The output count is final only once message_delta has
    /// come; before that it is what message_start said (typically 1).
    pub fn usage(&self) -> Option<Usage> {
        self.counts.as_ref().map(Counts::billing)
    }

    /// Whether the output count in [`usage`](Self::usage) is final, that is
    /// message_delta (which carries the cumulative count) has come. A stream
    /// cut off before it has only message_start's output count (typically
    /// 1), well below what passed: bill the larger of that and an estimate
    /// from [`content_chars`](Self::content_chars).
    pub fn usage_is_final(&self) -> bool {
        self.output_final
    }

    /// Characters of generated text and tool calls (names and arguments)
    /// passed so far, for an estimate when a stream ends without usage.
    pub fn content_chars(&self) -> u64 {
        self.content_chars
    }

    /// A last event that came without its closing blank line.
    fn on_unterminated(&mut self, tail: &[u8], out: &mut Vec<u8>) {
        if tail.is_empty() || self.done {
            return;
        }
        let mut closed = tail.to_vec();
        closed.extend_from_slice(b"\n\n");
        sse::Parser::default().feed(&closed, |event| self.on_event(&event.data, out));
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        // An event that does not parse is skipped, like one of an unknown type.
        let Ok(event) = serde_json::from_slice::<StreamEvent>(data) else {
            return;
        };
        match event {
            StreamEvent::MessageStart { message } => self.on_message_start(message, out),
            StreamEvent::ContentBlockStart { index, content_block } => self.on_block_start(index, content_block, out),
            StreamEvent::ContentBlockDelta { index, delta } => self.on_block_delta(index, delta, out),
            StreamEvent::MessageDelta { delta, usage } => self.on_message_delta(delta, usage, out),
            StreamEvent::MessageStop => self.on_message_stop(out),
            StreamEvent::Error { error } => {
                let status = openai_status(anthropic_status(error.kind.as_deref()));
                let message = error.message.as_deref().unwrap_or("the provider's stream failed");
                self.write_error(out, message, error.kind.as_deref(), status);
                self.close(out, false);
            }
            StreamEvent::Other => {}
        }
    }

    fn on_message_start(&mut self, message: StartMessage, out: &mut Vec<u8>) {
        if let Some(id) = message.id {
            self.id = id;
        }
        if let Some(model) = message.model {
            self.model = model;
        }
        if let Some(usage) = &message.usage {
            self.counts.get_or_insert_with(Counts::default).update(usage);
        }
        self.ensure_started(out);
    }

    /// Sends the first chunk, with the role, unless it went out already.
    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let delta = Delta { role: Some("assistant"), content: Some(""), ..Delta::default() };
            self.write_delta(out, delta, None);
        }
    }

    fn on_block_start(&mut self, index: u64, block: StartBlock, out: &mut Vec<u8>) {
        match block {
            StartBlock::Text { text } => self.write_text(out, &text),
            StartBlock::ToolUse { id, name } => {
                self.ensure_started(out);
                let k = self.tool_blocks.len();
                self.tool_blocks.push(index);
                self.count_chars(&name);
                let call = ToolCallDelta {
                    index: k,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionDelta { name: Some(&name), arguments: "" },
                };
                self.write_delta(out, Delta { tool_calls: Some([call]), ..Delta::default() }, None);
            }
            StartBlock::Other => {}
        }
    }

    fn on_block_delta(&mut self, index: u64, delta: BlockDelta, out: &mut Vec<u8>) {
        match delta {
            BlockDelta::TextDelta { text } => self.write_text(out, &text),
            BlockDelta::InputJsonDelta { partial_json } => {
                let Some(k) = self.tool_blocks.iter().position(|b| *b == index) else {
                    return;
                };
                if partial_json.is_empty() {
                    return;
                }
                self.ensure_started(out);
                self.count_chars(&partial_json);
                let call = ToolCallDelta {
                    index: k,
                    id: None,
                    kind: None,
                    function: FunctionDelta { name: None, arguments: &partial_json },
                };
                self.write_delta(out, Delta { tool_calls: Some([call]), ..Delta::default() }, None);
            }
            BlockDelta::Other => {}
        }
    }

    /// Text as a content chunk; nothing for empty text.
    fn write_text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.ensure_started(out);
        self.count_chars(text);
        self.write_delta(out, Delta { content: Some(text), ..Delta::default() }, None);
    }

    /// The stop reason as the finish chunk; usage as it now stands.
    fn on_message_delta(&mut self, delta: Option<MessageDeltaBody>, usage: Option<WireUsage>, out: &mut Vec<u8>) {
        if let Some(usage) = &usage {
            self.counts.get_or_insert_with(Counts::default).update(usage);
            // output_tokens here is cumulative: the message's final count.
            self.output_final |= usage.output_tokens.is_some();
        }
        let stop_reason = delta.as_ref().and_then(|d| d.stop_reason.as_deref());
        self.write_finish(out, finish_reason(stop_reason));
    }

    fn on_message_stop(&mut self, out: &mut Vec<u8>) {
        self.write_finish(out, "stop");
        self.close(out, true);
    }

    /// The chunk with the finish reason, once per stream.
    fn write_finish(&mut self, out: &mut Vec<u8>, reason: &'static str) {
        if !self.finish_sent {
            self.ensure_started(out);
            self.finish_sent = true;
            self.write_delta(out, Delta::default(), Some(reason));
        }
    }

    /// Ends the output: the usage chunk (if asked for, known, and
    /// `with_usage`), then `[DONE]`. Once.
    fn close(&mut self, out: &mut Vec<u8>, with_usage: bool) {
        if self.done {
            return;
        }
        self.done = true;
        if with_usage && self.include_usage {
            if let Some(counts) = self.counts {
                self.write_chunk(out, &[], Some(counts.openai()));
            }
        }
        out.extend_from_slice(DONE);
    }

    fn count_chars(&mut self, text: &str) {
        self.content_chars = self.content_chars.saturating_add(text.chars().count() as u64);
    }

    fn write_delta(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&'static str>) {
        let choice = ChunkChoice { index: 0, delta, logprobs: None, finish_reason };
        self.write_chunk(out, std::slice::from_ref(&choice), None);
    }

    /// One `chat.completion.chunk` event; `usage` is for the usage chunk.
    fn write_chunk(&self, out: &mut Vec<u8>, choices: &[ChunkChoice<'_>], usage: Option<OpenAiUsage>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        write_event(out, &chunk);
    }

    /// An error event, in OpenAI's shape.
    fn write_error(&self, out: &mut Vec<u8>, message: &str, code: Option<&str>, status: u16) {
        let envelope =
            ErrorEnvelope { error: ErrorBody { message, kind: openai_error_type(status), param: None, code } };
        write_event(out, &envelope);
    }
}

/// `data: <json>\n\n`; nothing at all if `value` does not serialize.
fn write_event(out: &mut Vec<u8>, value: &impl Serialize) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.extend_from_slice(b"\n\n");
    } else {
        out.truncate(start);
    }
}

/// The status Anthropic gives an error type (for errors inside a stream,
/// which come without one).
fn anthropic_status(error_type: Option<&str>) -> u16 {
    match error_type {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("billing_error") => 402,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("timeout_error") => 504,
        Some("overloaded_error") => 529,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    // --- streams (the cut-anywhere cases are in tests/unit_anthropic.rs)

    fn events(out: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(out).unwrap();
        text.split_terminator("\n\n").map(|e| e.strip_prefix("data: ").unwrap().to_owned()).collect()
    }

    #[test]
    fn stream_error_event_ends_the_stream() {
        let mut t = StreamTranslator::new("claude", false, 1);
        let out = t.push(
            concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            )
            .as_bytes(),
            false,
        );
        let ev = events(&out);
        assert_eq!(ev.len(), 3, "{ev:?}");
        let err: Value = serde_json::from_str(&ev[1]).unwrap();
        assert_eq!(
            err,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
        );
        assert_eq!(ev[2], "[DONE]");
        assert!(t.push(b"data: {\"type\":\"message_stop\"}\n\n", true).is_empty(), "nothing after [DONE]");
    }

    #[test]
    fn pings_unknown_events_and_thinking_pass_silently() {
        let mut t = StreamTranslator::new("claude", false, 1);
        let out = t.push(
            concat!(
                "event: ping\ndata: {\"type\": \"ping\"}\n\n",
                ": a comment\n\n",
                "event: whatever\ndata: {\"type\":\"whatever_new\",\"x\":1}\n\n",
                "data: not json\n\n",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n",
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            )
            .as_bytes(),
            false,
        );
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(t.content_chars(), 0);
        assert_eq!(t.usage(), None);
    }

    #[test]
    fn a_stream_of_nothing_still_ends_with_done() {
        let mut t = StreamTranslator::new("claude", true, 1);
        assert_eq!(t.push(b"", true), DONE);
        assert_eq!(t.push(b"", true), b"", "once");
    }

    #[test]
    fn an_unreadable_stream_is_not_held_forever() {
        let mut t = StreamTranslator::new("claude", false, 1);
        let out = t.push(&vec![b'x'; MAX_HELD + 1], false);
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert!(ev[0].contains("could not be read"));
        assert_eq!(ev[1], "[DONE]");
        assert!(t.push(b"more", true).is_empty());
    }
}
