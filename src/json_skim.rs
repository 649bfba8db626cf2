//! Reading a few values out of JSON a provider sent, without building
//! anything and without checking all of it.
//!
//! A response's usage sits in a body of a few hundred bytes to megabytes
//! that the gateway only passes on. [`top_value`] finds one top-level
//! member's value by walking the structure (strings, brackets) and nothing
//! else; [`members`] and [`elements`] walk one object's members or one
//! array's elements for a caller that reads a handful of numbers, or counts
//! a string's characters ([`Cursor::chars_or_null`], for a stream chunk's
//! text). Malformed input gives `None`, never a panic: no slice indexing,
//! no recursion (nesting is a counter).

use crate::json_scan;

/// A position in a JSON text.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A string token at the cursor (after white space), quotes included.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let start = self.at;
        if self.peek() != Some(b'"') {
            return None;
        }
        let mut at = start + 1;
        loop {
            at += quote_or_backslash(self.bytes.get(at..)?)?;
            match self.bytes.get(at)? {
                b'"' => break,
                _ => at += 2,
            }
        }
        self.at = at + 1;
        self.bytes.get(start..self.at)
    }

    /// Moves past one value of any kind (containers by their brackets).
    pub fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    self.at += structural(self.bytes.get(self.at..)?)?;
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        _ => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                    }
                    self.at += 1;
                }
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let start = self.at;
                let rest = self.bytes.get(start..)?;
                let len = rest.iter().position(|&b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')).unwrap_or(rest.len());
                self.at += len;
                (len > 0).then_some(())
            }
        }
    }

    /// `null` (`Some(None)`), or a whole number that fits in a u64; None
    /// for anything else (a sign, a fraction, an exponent, a string).
    pub fn u64_or_null(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        let mut n: u64 = 0;
        let start = self.at;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d - b'0')))?;
            self.at += 1;
        }
        if self.at == start || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(Some(n))
    }

    /// The bytes of the value at the cursor (moving past it).
    pub fn raw_value(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let start = self.at;
        self.skip_value()?;
        self.bytes.get(start..self.at)
    }

    /// `null` (`Some(None)`), or a string's length in characters once its
    /// escapes are decoded; None for any other value.
    pub fn chars_or_null(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        let token = self.string()?;
        Some(Some(chars(token.get(1..token.len().checked_sub(1)?)?)))
    }

    /// True if the value at the cursor is `null` (and moves past it).
    pub fn null(&mut self) -> bool {
        self.ws();
        if self.bytes.get(self.at..self.at + 4) == Some(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }
}

/// The characters a JSON string's contents (between its quotes) decode
/// to: UTF-8 characters, an escape counting one (a surrogate pair, two
/// `\\u` escapes, counts one). Bytes that are not UTF-8 count as their
/// lead bytes do: this is a count, not a check.
pub fn chars(inner: &[u8]) -> u64 {
    let count = |s: &[u8]| s.iter().filter(|&&b| b & 0xc0 != 0x80).count() as u64;
    let mut n = 0u64;
    let mut rest = inner;
    while let Some(i) = memchr::memchr(b'\\', rest) {
        n = n.saturating_add(count(rest.get(..i).unwrap_or_default()));
        let escape = rest.get(i..).unwrap_or_default();
        let len = match escape.get(1) {
            Some(b'u') => {
                // A high surrogate is counted with the low one after it.
                let high = escape.get(2..4).is_some_and(|h| matches!(h, [b'd' | b'D', b'8' | b'9' | b'a' | b'b' | b'A' | b'B']));
                n = n.saturating_add(u64::from(!high));
                6
            }
            _ => {
                n = n.saturating_add(1);
                2
            }
        };
        rest = escape.get(len..).unwrap_or_default();
    }
    n.saturating_add(count(rest))
}

/// Calls `element` for each element of the array at the cursor, with the
/// cursor at it; `element` must move past it. None if the array is
/// malformed or `element` says so.
pub fn elements(c: &mut Cursor, mut element: impl FnMut(&mut Cursor) -> Option<()>) -> Option<()> {
    if !c.eat(b'[') {
        return None;
    }
    if c.eat(b']') {
        return Some(());
    }
    loop {
        element(c)?;
        if c.eat(b']') {
            return Some(());
        }
        if !c.eat(b',') {
            return None;
        }
    }
}

/// The index of the first `"` or `\\` in `s` (a string's end is most
/// often in the first block).
#[inline]
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    // SAFETY (the closure): SSE2 is part of the x86-64 baseline.
    let off = match blocks::first(s, |v| unsafe {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_or_si128, _mm_set1_epi8};
        _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)), _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)))
    }) {
        Ok(at) => return Some(at),
        Err(off) => off,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let off = 0usize;
    let tail = s.get(off..)?;
    tail.iter().position(|&b| b == b'"' || b == b'\\').map(|n| off + n)
}

/// The index of the first `"`, `{`, `}`, `[` or `]` in `s`. (`[` and `{`,
/// `]` and `}` differ only in the 0x20 bit, so two compares find all four
/// brackets.)
#[inline]
fn structural(s: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    // SAFETY (the closure): SSE2 is part of the x86-64 baseline.
    let off = match blocks::first(s, |v| unsafe {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_or_si128, _mm_set1_epi8};
        let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let open = _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8));
        let close = _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8));
        _mm_or_si128(quote, _mm_or_si128(open, close))
    }) {
        Ok(at) => return Some(at),
        Err(off) => off,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let off = 0usize;
    let tail = s.get(off..)?;
    tail.iter().position(|&b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']')).map(|n| off + n)
}

/// Searching 16 bytes at a time with SSE2 (x86-64 only; the other targets
/// search byte by byte).
#[cfg(target_arch = "x86_64")]
mod blocks {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8};

    /// The index of the first byte `picks` marks (0xff in its result) in
    /// the whole 16-byte blocks of `s`; else `Err` with the length of those
    /// blocks, for the caller to search the tail.
    #[inline]
    pub fn first(s: &[u8], picks: impl Fn(__m128i) -> __m128i) -> Result<usize, usize> {
        let mut off = 0usize;
        for block in s.chunks_exact(16) {
            // SAFETY: SSE2 is part of the x86-64 baseline, and the load reads
            // the 16 bytes of `block`, unaligned.
            let mask = unsafe { _mm_movemask_epi8(picks(_mm_loadu_si128(block.as_ptr().cast()))) };
            if mask != 0 {
                return Ok(off + mask.trailing_zeros() as usize);
            }
            off += 16;
        }
        Err(off)
    }
}

/// Calls `member` for each member of the object at the cursor, with the
/// key (escapes decoded) and the cursor at its value; `member` must move
/// past the value. None if the object is malformed or `member` says so.
pub fn members(c: &mut Cursor, mut member: impl FnMut(&[u8], &mut Cursor) -> Option<()>) -> Option<()> {
    if !c.eat(b'{') {
        return None;
    }
    if c.eat(b'}') {
        return Some(());
    }
    loop {
        let token = c.string()?;
        if !c.eat(b':') {
            return None;
        }
        let raw = token.get(1..token.len().checked_sub(1)?)?;
        if raw.contains(&b'\\') {
            let decoded = json_scan::decode_string(token)?;
            member(decoded.as_bytes(), c)?;
        } else {
            member(raw, c)?;
        }
        if c.eat(b'}') {
            return Some(());
        }
        if !c.eat(b',') {
            return None;
        }
    }
}

/// Reads the value of `key` in the top-level object of `body` where it
/// lies: `read` gets the cursor at the value and must move past it. None if
/// the key is missing, present twice, the body is malformed before the end
/// of the object, or `read` fails. Every other member is only skipped.
pub fn read_top_value<T>(body: &[u8], key: &str, mut read: impl FnMut(&mut Cursor) -> Option<T>) -> Option<T> {
    let mut c = Cursor::new(body);
    let mut found: Option<T> = None;
    members(&mut c, |k, c| {
        if k != key.as_bytes() {
            return c.skip_value();
        }
        if found.is_some() {
            return None;
        }
        found = Some(read(c)?);
        Some(())
    })?;
    found
}

/// The bytes of the value of `key` in the top-level object of `body`
/// (None as for [`read_top_value`]). Only the tests use it now: it is the
/// find-then-read reference that the one-pass readers are held to.
#[cfg(test)]
pub(crate) fn top_value<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let (start, end) = read_top_value(body, key, |c| {
        c.ws();
        let start = c.at;
        c.skip_value()?;
        Some((start, c.at))
    })?;
    body.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_values_only() {
        let body = br#"{"a":{"usage":1},"s":"\"usage\":2","usage" : {"x":[1,{"y":"}"}]} , "z":null}"#;
        assert_eq!(top_value(body, "usage"), Some(&br#"{"x":[1,{"y":"}"}]}"#[..]));
        assert_eq!(top_value(body, "z"), Some(&b"null"[..]));
        assert_eq!(top_value(body, "s"), Some(&br#""\"usage\":2""#[..]));
        assert_eq!(top_value(body, "missing"), None);
        assert_eq!(top_value(br#"{"us\u0061ge":7}"#, "usage"), Some(&b"7"[..]));
    }

    #[test]
    fn malformed_or_duplicate_is_none() {
        for body in [&b""[..], b"[]", b"{", br#"{"usage":1"#, br#"{"usage":{"a":1}"#, br#"{"usage" 1}"#, br#"{"usage":"#, b"{\"usa"] {
            assert_eq!(top_value(body, "usage"), None, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(top_value(br#"{"usage":1,"usage":2}"#, "usage"), None);
        assert_eq!(top_value(b"{}", "usage"), None);
    }

    #[test]
    fn structural_matches_naive() {
        let special = [b'"', b'{', b'}', b'[', b']', b'\\'];
        // Bytes one bit away from the brackets must not match.
        let filler = [
            b'a', b';', b'=', b'\\', 0x5f, 0x7f, 0x80, 0xfb, 0xdb, b' ', 0,
        ];
        for len in 0..40usize {
            for pos in 0..=len {
                for &sp in &special {
                    for &f in &filler {
                        let mut v = vec![f; len];
                        if let Some(b) = v.get_mut(pos) {
                            *b = sp;
                        }
                        let naive = v
                            .iter()
                            .position(|&b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'));
                        assert_eq!(structural(&v), naive, "{v:?}");
                        let naive = v.iter().position(|&b| b == b'"' || b == b'\\');
                        assert_eq!(quote_or_backslash(&v), naive, "{v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn long_strings_and_raw_control_bytes() {
        let long = "x".repeat(100);
        let body = format!(r#"{{"a":"{long}\"{long}","b":["{long}{{","\\"],"usage":{{"n":1}}}}"#);
        assert_eq!(
            top_value(body.as_bytes(), "usage"),
            Some(&br#"{"n":1}"#[..])
        );
        assert_eq!(
            top_value(b"{\"a\":\"x\ty\",\"usage\":2}", "usage"),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn decoded_characters() {
        let n = |s: &str| Cursor::new(s.as_bytes()).chars_or_null();
        assert_eq!(n(r#""Hello""#), Some(Some(5)));
        assert_eq!(n("\" wörld\""), Some(Some(6)));
        assert_eq!(n(r#""a\nb\"c\\""#), Some(Some(6)));
        assert_eq!(n(r#""\u00e9\ud83d\ude00x""#), Some(Some(3)), "é, one emoji as a surrogate pair, x");
        assert_eq!(n("\"😀\""), Some(Some(1)));
        assert_eq!(n(r#""""#), Some(Some(0)));
        assert_eq!(n("null"), Some(None));
        for bad in ["1", "[]", r#""open"#] {
            assert_eq!(n(bad), None, "{bad}");
        }
        // Agrees with a decoder on what it decodes.
        for s in [r#""x\t\u0041\/y""#, r#""ünï\u2603cødé""#] {
            let decoded: String = serde_json::from_str(s).unwrap();
            assert_eq!(n(s), Some(Some(decoded.chars().count() as u64)), "{s}");
        }
    }

    #[test]
    fn arrays() {
        let mut seen = Vec::new();
        let mut c = Cursor::new(br#" [1, {"a":[2]}, "x" ] "#);
        assert_eq!(elements(&mut c, |c| c.raw_value().map(|v| seen.push(v.to_vec()))), Some(()));
        assert_eq!(seen, [b"1".to_vec(), br#"{"a":[2]}"#.to_vec(), br#""x""#.to_vec()]);
        assert_eq!(elements(&mut Cursor::new(b"[]"), |_| None), Some(()));
        for bad in [&b"[1"[..], b"[1,]", b"{}", b"[1 2]"] {
            assert_eq!(elements(&mut Cursor::new(bad), |c| c.skip_value()), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn numbers() {
        let n = |s: &[u8]| Cursor::new(s).u64_or_null();
        assert_eq!(n(b" 42,"), Some(Some(42)));
        assert_eq!(n(b"null"), Some(None));
        assert_eq!(n(b"18446744073709551615"), Some(Some(u64::MAX)));
        assert_eq!(n(b"18446744073709551616"), None);
        for bad in [&b"-1"[..], b"1.5", b"1e3", b"\"3\"", b"true", b""] {
            assert_eq!(n(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
