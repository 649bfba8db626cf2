//! Server-sent events, parsed incrementally: bytes arrive in chunks cut
//! anywhere, events come out whole. Only the unfinished tail of the stream is
//! kept between chunks.
//!
//! Follows the HTML event-stream format: lines end with `\n`, `\r\n` or `\r`;
//! an empty line ends an event; `data:` lines are joined with `\n`; lines
//! starting with `:` are comments.
//!
//! Line ends are found with `memchr` (many bytes at a time), and an event's
//! data borrows the stream's bytes unless it spans several `data:` lines.

use std::borrow::Cow;

/// One complete event. Comments and stray blank lines come out as events
/// with no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's bytes as they arrived, its closing blank line included.
    pub raw: &'a [u8],
    /// The `event:` field, if any.
    pub name: Option<&'a [u8]>,
    /// The `data:` lines, joined with `\n` (borrowed when there is one).
    pub data: Cow<'a, [u8]>,
}

#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of an event that has not ended yet.
    tail: Vec<u8>,
}

impl Parser {
    /// Feeds a chunk; calls `on_event` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        if self.tail.is_empty() {
            let used = split_events(chunk, &mut on_event);
            self.tail.extend_from_slice(chunk.get(used..).unwrap_or_default());
        } else {
            let mut joined = std::mem::take(&mut self.tail);
            joined.extend_from_slice(chunk);
            let used = split_events(&joined, &mut on_event);
            joined.drain(..used.min(joined.len()));
            self.tail = joined;
        }
    }

    /// The bytes of the unfinished event held so far.
    pub fn pending(&self) -> &[u8] {
        &self.tail
    }

    /// Ends the stream: returns the unfinished tail (a stream may end without
    /// a final blank line).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tail)
    }
}

/// Calls `on_event` for each complete event in `buf`; returns how many bytes
/// they took.
fn split_events(buf: &[u8], on_event: &mut impl FnMut(Event<'_>)) -> usize {
    let mut event_start = 0;
    let mut pos = 0;
    loop {
        let Some((line_end, next)) = next_line(buf, pos) else {
            return event_start;
        };
        if line_end == pos {
            // A blank line: the event from event_start to here is complete.
            // Every byte belongs to some event (a stray blank line is an empty
            // one), so the raw events put back together are the stream.
            if let Some(raw) = buf.get(event_start..next) {
                on_event(parse_event(raw));
            }
            event_start = next;
        }
        pos = next;
    }
}

/// The end of the line starting at `pos` (exclusive of its terminator) and
/// the start of the next line. None if the line is not terminated yet; a `\r`
/// at the very end of `buf` counts as unterminated, since `\n` may follow.
fn next_line(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let rest = buf.get(pos..)?;
    let i = memchr::memchr2(b'\n', b'\r', rest)?;
    let end = pos.checked_add(i)?;
    match buf.get(end) {
        Some(b'\n') => Some((end, end.checked_add(1)?)),
        _ => match buf.get(end.checked_add(1)?) {
            Some(b'\n') => Some((end, end.checked_add(2)?)),
            Some(_) => Some((end, end.checked_add(1)?)),
            None => None,
        },
    }
}

fn parse_event(raw: &[u8]) -> Event<'_> {
    let mut name = None;
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut seen_data = false;
    let mut pos = 0;
    while let Some((end, next)) = next_line(raw, pos) {
        let line = raw.get(pos..end).unwrap_or_default();
        pos = next;
        if line.is_empty() || line.first() == Some(&b':') {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let (f, v) = line.split_at(i);
                let v = v.get(1..).unwrap_or_default();
                (f, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" if !seen_data => {
                data = Cow::Borrowed(value);
                seen_data = true;
            }
            b"data" => {
                let joined = data.to_mut();
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
            b"event" => name = Some(value),
            _ => {}
        }
    }
    Event { raw, name, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event name, data, raw bytes)
    type Collected = (Option<Vec<u8>>, Vec<u8>, Vec<u8>);

    fn collect(chunks: &[&[u8]]) -> (Vec<Collected>, Vec<u8>) {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| out.push((e.name.map(<[u8]>::to_vec), e.data.into_owned(), e.raw.to_vec())));
        }
        (out, parser.finish())
    }

    const STREAM: &[u8] = b"data: {\"a\":1}\n\nevent: ping\ndata: x\ndata: y\n\n: comment\n\ndata:[DONE]\n\n";

    #[test]
    fn whole_stream_in_one_chunk() {
        let (events, tail) = collect(&[STREAM]);
        let with_data: Vec<_> = events.iter().filter(|e| !e.1.is_empty()).collect();
        assert_eq!(with_data.len(), 3, "{events:?}");
        assert_eq!(with_data[0].1, b"{\"a\":1}");
        assert_eq!(with_data[1].0.as_deref(), Some(&b"ping"[..]));
        assert_eq!(with_data[1].1, b"x\ny");
        assert_eq!(with_data[2].1, b"[DONE]");
        assert!(tail.is_empty());
        // The raw events, put back together, are the stream, byte for byte.
        let raws: Vec<u8> = events.iter().flat_map(|e| e.2.clone()).collect();
        assert_eq!(raws, STREAM);
    }

    /// Every way of cutting the stream in two, and byte by byte, gives the
    /// same events.
    #[test]
    fn split_at_every_point() {
        let (expected, _) = collect(&[STREAM]);
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(collect(&[a, b]).0, expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(collect(&bytes).0, expected);
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let crlf = b"data: one\r\n\r\ndata: two\r\ndata: more\r\n\r\n";
        for cut in 0..=crlf.len() {
            let (a, b) = crlf.split_at(cut);
            let (events, tail) = collect(&[a, b]);
            assert_eq!(events.len(), 2, "cut at {cut}: {events:?}");
            assert_eq!(events[1].1, b"two\nmore");
            assert!(tail.is_empty());
        }
        let (events, _) = collect(&[b"data: a\r\rdata: b\r\r", b"\n\n"]);
        assert_eq!(events.len(), 3, "a stray blank line is an empty event");
        assert_eq!(events[2].1, b"");
    }

    #[test]
    fn several_events_in_one_chunk_and_one_event_in_many() {
        let (events, _) = collect(&[b"data: 1\n\ndata: 2\n\nda", b"ta: 3", b"\n", b"\n"]);
        let data: Vec<_> = events.iter().map(|e| e.1.clone()).collect();
        assert_eq!(data, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn keeps_only_the_unfinished_tail() {
        let mut p = Parser::default();
        p.feed(b"data: 1\n\ndata: 2", |_| {});
        assert_eq!(p.pending(), b"data: 2");
        p.feed(b"\n\n", |_| {});
        assert!(p.pending().is_empty());
        p.feed(b"data: end", |_| {});
        assert_eq!(p.finish(), b"data: end");
    }
}
