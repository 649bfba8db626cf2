//! Streamed (SSE) chat and completion responses: usage and content counted
//! as events pass, and the usage-only chunk removed when the gateway, not the
//! client, asked for it.
//!
//! The gateway sets `stream_options.include_usage` on every streaming request
//! to an OpenAI-compatible provider, so the stream ends with a chunk whose
//! `choices` is empty and whose `usage` is set. A client that asked for it
//! gets that chunk untouched; for one that did not, the meter drops it, and
//! then only whole events are passed on (the unfinished tail of a chunk is
//! held until its event ends, which a client could not use earlier anyway).
//!
//! An event is read after it has gone on to the client, when the next chunk
//! comes (or the stream ends), unless it may be the usage chunk that is to
//! be dropped: so the first token leaves before the meter reads it, and
//! each later chunk carries the reading of the one before, as it carried
//! its own.

use crate::json_skim::{self, Cursor};
use crate::sse;
use crate::usage::{self, Usage};

/// What one chunk of the stream did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Replace the chunk with these bytes (`None`: pass it on as it is).
    pub replace_with: Option<Vec<u8>>,
    /// The stream's first content was found: in this chunk, or in the one
    /// before it, read only now.
    pub first_content: Option<Arrival>,
}

/// Which chunk an event read now came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    ThisChunk,
    PreviousChunk,
}

/// The most a meter holds back waiting for an event to end; past it the
/// stream passes untouched.
const MAX_HELD: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub struct Meter {
    parser: sse::Parser,
    drop_usage_chunk: bool,
    usage: Option<Usage>,
    /// Characters of generated text (content, tool calls) passed through.
    content_chars: u64,
    events: u64,
    /// The data of the previous chunk's events, passed on unread: the
    /// bytes, and where each event's data ends in them.
    unread: Vec<u8>,
    unread_ends: Vec<usize>,
}

impl Meter {
    /// `drop_usage_chunk`: the client did not ask for usage, the gateway did.
    pub fn new(drop_usage_chunk: bool) -> Self {
        Self { drop_usage_chunk, ..Self::default() }
    }

    pub fn on_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> ChunkOutcome {
        let earlier = self.read_unread().then_some(Arrival::PreviousChunk);
        let had_content = self.content_chars > 0;
        let drop_mode = self.drop_usage_chunk;
        // What can wait is read with the next chunk; all is read at the end.
        let defer = !end_of_stream;
        // In drop mode, what the client gets (see `pass`): nothing is copied
        // while it is the chunk itself, unless bytes of an earlier chunk
        // were held back and now lead it.
        let mut out: Option<Vec<u8>> = (!self.parser.pending().is_empty()).then(Vec::new);
        let mut passed = 0usize;
        // The parser is moved out so that events can update the meter.
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(chunk, |e| {
            let keep = if defer && !(drop_mode && may_carry_usage(&e.data)) {
                self.put_off(&e.data);
                true
            } else {
                self.inspect(&e.data)
            };
            if drop_mode {
                pass(&mut out, &mut passed, chunk, e.raw, keep);
            }
        });
        if end_of_stream {
            let tail = parser.finish();
            if !tail.is_empty() {
                // A last event without its closing blank line.
                let mut closed = tail.clone();
                closed.extend_from_slice(b"\n\n");
                let mut last = sse::Parser::default();
                let mut keep_tail = true;
                last.feed(&closed, |e| keep_tail = self.inspect(&e.data));
                if drop_mode {
                    pass(&mut out, &mut passed, chunk, &tail, keep_tail);
                }
            }
        }
        self.parser = parser;
        if drop_mode && self.parser.pending().len() > MAX_HELD {
            // Not a well-formed event stream: stop holding bytes back.
            let held = self.parser.finish();
            pass(&mut out, &mut passed, chunk, &held, true);
            self.drop_usage_chunk = false;
        }
        // A chunk of whole events, none dropped, passes as it is: Envoy is
        // asked to rewrite a body only when it changed.
        let replace_with = match out {
            _ if !drop_mode => None,
            Some(bytes) => Some(bytes),
            None if self.parser.pending().is_empty() => None,
            // The end of the chunk is an unfinished event, held back.
            None => Some(chunk.get(..passed).unwrap_or_default().to_vec()),
        };
        let now = (!had_content && self.content_chars > 0).then_some(Arrival::ThisChunk);
        ChunkOutcome { replace_with, first_content: earlier.or(now) }
    }

    /// Keeps an event's data to read with the next chunk.
    fn put_off(&mut self, data: &[u8]) {
        self.unread.extend_from_slice(data);
        self.unread_ends.push(self.unread.len());
    }

    /// Reads the events passed on unread; true if the stream's first
    /// content was among them. The filter calls it (through
    /// `Reader::read_the_rest`) before it settles a stream that did not end.
    pub fn read_unread(&mut self) -> bool {
        if self.unread_ends.is_empty() {
            return false;
        }
        let had_content = self.content_chars > 0;
        let (bytes, ends) = (std::mem::take(&mut self.unread), std::mem::take(&mut self.unread_ends));
        let mut start = 0;
        for &end in &ends {
            self.inspect(bytes.get(start..end).unwrap_or_default());
            start = end;
        }
        // The buffers are kept for the next chunk's events.
        (self.unread, self.unread_ends) = (bytes, ends);
        self.unread.clear();
        self.unread_ends.clear();
        !had_content && self.content_chars > 0
    }

    /// Reads one event's data; false if it is the usage-only chunk to drop.
    fn inspect(&mut self, data: &[u8]) -> bool {
        if data.is_empty() || data == b"[DONE]" {
            return true;
        }
        self.events = self.events.saturating_add(1);
        let Some(chunk) = read_chunk(data) else {
            return true;
        };
        self.content_chars = self.content_chars.saturating_add(chunk.chars);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
            if chunk.no_choices && self.drop_usage_chunk {
                return false;
            }
        }
        true
    }

    /// The usage the stream reported, if it got that far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Output tokens estimated from the text that passed: 4 characters a token.
    pub fn estimated_output_tokens(&self) -> u64 {
        self.content_chars.div_ceil(4)
    }

    /// Bytes held back from the client, waiting for the rest of an event.
    pub fn held(&self) -> usize {
        self.parser.pending().len()
    }
}

/// Whether an event's data may be the usage chunk: it has a `"usage"` key
/// whose value is not `null`. Every chunk of an OpenAI stream asked for
/// usage carries `"usage":null`; only the last has an object there. (A key
/// written with escapes is not seen: such a usage chunk is passed on, not
/// dropped, and still counted.)
fn may_carry_usage(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    // Found by its `u` (memchr, as the events' ends are): few bytes of an
    // event are one.
    let mut from = 0usize;
    while let Some(i) = data.get(from..).and_then(|rest| memchr::memchr(b'u', rest)) {
        let at = from.saturating_add(i);
        from = at.saturating_add(1);
        let Some(start) = at.checked_sub(1) else { continue };
        let end = start.saturating_add(KEY.len());
        if data.get(start..end) != Some(KEY) {
            continue;
        }
        let after = data.get(end..).unwrap_or_default().trim_ascii_start();
        if let Some(value) = after.strip_prefix(b":") {
            if !value.trim_ascii_start().starts_with(b"null") {
                return true;
            }
        }
    }
    false
}

/// What the gateway reads of one chunk of a stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct ChunkRead {
    /// Characters of generated text: content, refusal, reasoning, tool
    /// call names and arguments (chat), text (completions).
    chars: u64,
    /// `choices` is empty or missing: with usage, the usage-only chunk.
    no_choices: bool,
    usage: Option<Usage>,
}

/// Reads a chunk's `choices` and `usage` without building it. None if the
/// chunk is not an object, or a field read has the wrong type (the chunk
/// is then passed on and not counted).
fn read_chunk(data: &[u8]) -> Option<ChunkRead> {
    let mut read = ChunkRead { no_choices: true, ..ChunkRead::default() };
    let mut c = Cursor::new(data);
    json_skim::members(&mut c, |key, c| match key {
        b"choices" if c.null() => Some(()),
        b"choices" => json_skim::elements(c, |c| {
            read.no_choices = false;
            choice(c, &mut read.chars)
        }),
        b"usage" if c.null() => Some(()),
        b"usage" => {
            read.usage = usage::from_object(c.raw_value()?);
            Some(())
        }
        _ => c.skip_value(),
    })?;
    Some(read)
}

/// One choice: its `text` (completions) or its `delta` (chat).
fn choice(c: &mut Cursor<'_>, chars: &mut u64) -> Option<()> {
    json_skim::members(c, |key, c| match key {
        b"text" => add_chars(chars, c),
        b"delta" if c.null() => Some(()),
        b"delta" => json_skim::members(c, |key, c| match key {
            b"content" | b"refusal" | b"reasoning_content" => add_chars(chars, c),
            b"tool_calls" if c.null() => Some(()),
            b"tool_calls" => json_skim::elements(c, |c| tool_call(c, chars)),
            _ => c.skip_value(),
        }),
        _ => c.skip_value(),
    })
}

/// One tool call of a delta: its function's name and arguments.
fn tool_call(c: &mut Cursor<'_>, chars: &mut u64) -> Option<()> {
    json_skim::members(c, |key, c| match key {
        b"function" if c.null() => Some(()),
        b"function" => json_skim::members(c, |key, c| match key {
            b"name" | b"arguments" => add_chars(chars, c),
            _ => c.skip_value(),
        }),
        _ => c.skip_value(),
    })
}

/// Adds one event (`raw`, kept or dropped) to what the client gets of a
/// chunk. `out` stays `None` while that is the chunk itself so far: its
/// first `passed` bytes, every event kept. The first event dropped turns
/// it into a copy of what passed before it.
fn pass(out: &mut Option<Vec<u8>>, passed: &mut usize, chunk: &[u8], raw: &[u8], keep: bool) {
    match out {
        Some(bytes) if keep => bytes.extend_from_slice(raw),
        Some(_) => {}
        None if keep => {}
        None => *out = Some(chunk.get(..*passed).unwrap_or_default().to_vec()),
    }
    *passed = passed.saturating_add(raw.len());
}

/// Adds a string's characters (a null adds none).
fn add_chars(total: &mut u64, c: &mut Cursor) -> Option<()> {
    *total = total.saturating_add(c.chars_or_null()?.unwrap_or(0));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream as OpenAI sends it with include_usage.
    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" wörld\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );
    const USAGE_CHUNK_START: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],";

    fn run(meter: &mut Meter, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut first_seen = 0;
        for (i, c) in chunks.iter().enumerate() {
            let r = meter.on_chunk(c, i + 1 == chunks.len());
            first_seen += usize::from(r.first_content.is_some());
            out.extend_from_slice(r.replace_with.as_deref().unwrap_or(c));
        }
        (out, first_seen == 1)
    }

    #[test]
    fn counts_usage_and_keeps_the_stream_when_the_client_asked() {
        let mut m = Meter::new(false);
        let (out, first) = run(&mut m, &[STREAM.as_bytes()]);
        assert_eq!(out, STREAM.as_bytes());
        assert!(first);
        assert_eq!(m.usage(), Some(Usage { input: 9, cached_input: 0, output: 2, ..Usage::default() }));
        assert_eq!(m.estimated_output_tokens(), 3, "'Hello wörld' is 11 characters");
    }

    #[test]
    fn drops_only_the_usage_chunk_when_the_gateway_asked() {
        let expected: String = STREAM.split("\n\n").filter(|e| !e.starts_with(USAGE_CHUNK_START)).map(|e| format!("{e}\n\n")).collect::<String>();
        let expected = expected.trim_end_matches('\n').to_string() + "\n\n";
        let mut m = Meter::new(true);
        let (out, _) = run(&mut m, &[STREAM.as_bytes()]);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(m.usage().unwrap().output, 2);
    }

    /// Cut anywhere, in two or three pieces, the output and the counts are
    /// the same.
    #[test]
    fn split_at_every_point() {
        let bytes = STREAM.as_bytes();
        for drop in [false, true] {
            let mut whole = Meter::new(drop);
            let (expected, _) = run(&mut whole, &[bytes]);
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                let mut m = Meter::new(drop);
                let (out, first) = run(&mut m, &[a, b]);
                assert_eq!(out, expected, "drop={drop} cut={cut}");
                assert!(first, "drop={drop} cut={cut}");
                assert_eq!(m.usage(), whole.usage(), "cut={cut}");
                assert_eq!(m.estimated_output_tokens(), whole.estimated_output_tokens());
            }
            for cut in (0..bytes.len()).step_by(7) {
                let (a, rest) = bytes.split_at(cut);
                let (b, c) = rest.split_at(rest.len() / 2);
                let mut m = Meter::new(drop);
                assert_eq!(run(&mut m, &[a, b, c]).0, expected, "three pieces at {cut}");
            }
        }
    }

    /// Chunks of whole events are not rewritten (a rewrite costs Envoy a
    /// drain and a copy); a chunk that ends mid-event, or carries the
    /// dropped usage chunk, is.
    #[test]
    fn only_changed_chunks_are_rewritten() {
        let events: Vec<String> = STREAM.split_inclusive("\n\n").map(str::to_string).collect();
        let mut m = Meter::new(true);
        for e in &events {
            let r = m.on_chunk(e.as_bytes(), false);
            assert_eq!(r.replace_with.is_some(), e.starts_with(USAGE_CHUNK_START), "{e}");
        }
        let mut m = Meter::new(true);
        let first = events[0].as_bytes();
        let r = m.on_chunk(&first[..10], false);
        assert_eq!(r.replace_with.as_deref(), Some(&b""[..]), "a partial event is held");
        let r = m.on_chunk(&first[10..], false);
        assert_eq!(r.replace_with.as_deref(), Some(first), "then sent whole");
    }

    #[test]
    fn events_are_read_a_chunk_late() {
        let events: Vec<&str> = STREAM.split_inclusive("\n\n").collect();
        let mut m = Meter::new(false);
        // The role chunk: passed on, not read yet.
        assert_eq!(m.on_chunk(events[0].as_bytes(), false), ChunkOutcome::default());
        // "Hello" comes; the role chunk is read (no content in it).
        assert_eq!(m.on_chunk(events[1].as_bytes(), false).first_content, None);
        assert_eq!(m.estimated_output_tokens(), 0);
        // " wörld" comes; "Hello" is read: the first content, a chunk late.
        assert_eq!(m.on_chunk(events[2].as_bytes(), false).first_content, Some(Arrival::PreviousChunk));
        assert_eq!(m.estimated_output_tokens(), 2);
        // The client asked for usage: its chunk is read late like the rest.
        assert_eq!(m.on_chunk(events[3].as_bytes(), false).replace_with, None);
        assert_eq!(m.on_chunk(events[4].as_bytes(), false).replace_with, None);
        assert_eq!(m.usage(), None);
        // The stream's last chunk: everything is read.
        assert_eq!(m.on_chunk(events[5].as_bytes(), true).first_content, None);
        assert_eq!(m.usage().map(|u| u.output), Some(2));
        assert_eq!(m.estimated_output_tokens(), 3);
    }

    #[test]
    fn the_usage_chunk_to_drop_is_read_at_once() {
        let events: Vec<&str> = STREAM.split_inclusive("\n\n").collect();
        let mut m = Meter::new(true);
        for e in &events[..4] {
            assert_eq!(m.on_chunk(e.as_bytes(), false).replace_with, None);
        }
        assert_eq!(m.usage(), None);
        let usage_chunk = m.on_chunk(events[4].as_bytes(), false);
        assert_eq!(usage_chunk.replace_with.as_deref(), Some(&b""[..]), "dropped");
        assert_eq!(m.usage().map(|u| u.input), Some(9));
    }

    #[test]
    fn a_stream_cut_short_is_read_to_its_last_event() {
        let events: Vec<&str> = STREAM.split_inclusive("\n\n").collect();
        let mut m = Meter::new(true);
        m.on_chunk(events[0].as_bytes(), false);
        m.on_chunk(events[1].as_bytes(), false);
        assert_eq!(m.estimated_output_tokens(), 0);
        assert!(m.read_unread(), "the first content was in what was left unread");
        assert_eq!(m.estimated_output_tokens(), 2);
        assert!(!m.read_unread(), "nothing is read twice");
        assert_eq!(m.estimated_output_tokens(), 2);
    }

    #[test]
    fn which_events_may_carry_usage() {
        for yes in [r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, r#"{"usage" : {}}"#, r#"{"usage":null,"x":{"usage":{}}}"#, r#"{"usage":5}"#] {
            assert!(may_carry_usage(yes.as_bytes()), "{yes}");
        }
        for no in [
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#,
            r#"{"usage" :  null}"#,
            r#"{"choices":[{"delta":{"content":"\"usage\":{}"}}]}"#,
            r#"{"choices":[{"delta":{"content":"usage"}}]}"#,
            "[DONE]",
            "",
        ] {
            assert!(!may_carry_usage(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn chunk_fields_read_without_parsing() {
        let r = |s: &str| read_chunk(s.as_bytes());
        let usage = Usage { input: 9, output: 2, ..Usage::default() };
        assert_eq!(
            r(r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Hé\n"}},{"delta":{"refusal":"no","reasoning_content":null}}],"usage":null}"#),
            Some(ChunkRead { chars: 5, no_choices: false, usage: None })
        );
        assert_eq!(
            r(r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#),
            Some(ChunkRead { chars: 0, no_choices: true, usage: Some(usage) })
        );
        assert!(r(r#"{"choices":null,"usage":{"prompt_tokens":9,"completion_tokens":2}}"#).unwrap().no_choices);
        assert_eq!(
            r(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{}"}},{"function":null}]}}]}"#).unwrap().chars,
            3
        );
        assert_eq!(r(r#"{"choices":[{"delta":null,"text":"abc","logprobs":{"x":[1]}}]}"#).unwrap().chars, 3);
        for unreadable in [r#"{"choices":[{"delta":{"content":5}}]}"#, r#"{"choices":{}}"#, "[]", r#"{"choices":[{"delta":{"content":"x"}}"#] {
            assert_eq!(r(unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn crlf_streams() {
        let crlf = STREAM.replace("\n\n", "\r\n\r\n");
        let mut m = Meter::new(true);
        let (out, _) = run(&mut m, &[crlf.as_bytes()]);
        assert!(!String::from_utf8(out).unwrap().contains("\"choices\":[]"));
        assert_eq!(m.usage().unwrap().input, 9);
    }

    #[test]
    fn a_stream_cut_off_has_no_usage_but_an_estimate() {
        let cut = STREAM.find("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},").unwrap();
        let mut m = Meter::new(true);
        run(&mut m, &[&STREAM.as_bytes()[..cut]]);
        assert_eq!(m.usage(), None);
        assert_eq!(m.estimated_output_tokens(), 3);
    }

    #[test]
    fn tool_calls_and_completions_text_count() {
        let s = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\ndata: {\"choices\":[{\"text\":\"abcd\"}]}\n\n";
        let mut m = Meter::new(false);
        run(&mut m, &[s.as_bytes()]);
        // "get" + {"a":1} (7) + "abcd" = 14 characters -> 4 tokens
        assert_eq!(m.estimated_output_tokens(), 4);
    }

    #[test]
    fn gives_up_holding_a_stream_without_event_ends() {
        let mut m = Meter::new(true);
        let big = vec![b'x'; MAX_HELD + 1];
        let r = m.on_chunk(&big, false);
        assert_eq!(r.replace_with.as_deref().unwrap_or(&big), &big[..]);
        assert_eq!(m.held(), 0);
        let r = m.on_chunk(b"more", false);
        assert_eq!(r.replace_with, None, "passes untouched from then on");
    }

    #[test]
    fn last_event_without_blank_line() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]";
        let mut m = Meter::new(true);
        let (out, _) = run(&mut m, &[s.as_bytes()]);
        assert_eq!(out, s.as_bytes());
    }
}
