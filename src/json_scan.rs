//! Single-pass, allocation-free JSON validation for request bodies.
//!
//! The gateway needs to know that a body is well-formed JSON whose top level
//! is an object, and where the values of a handful of top-level keys
//! (`"model"`, `"stream"`, ...) live inside it. [`scan`] does both in one
//! pass over the bytes without building a DOM, without recursion (the
//! container stack is a 128-bit bit stack) and without allocating, except
//! for the rare top-level key written with backslash escapes, which is
//! decoded before it is compared.
//!
//! The code is written so that it cannot panic: no slice indexing, no
//! unchecked arithmetic that could overflow, no `unwrap`.

use std::borrow::Cow;
use std::fmt;

/// Maximum nesting depth of containers. The root object is depth 1.
pub const MAX_DEPTH: usize = 128;

// The container stack is a `u128` with one bit per open container.
const _: () = assert!(MAX_DEPTH <= 128);

/// Top-level keys the gateway cares about. Index with `TopKey as usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopKey {
    Model = 0,
    Stream = 1,
    StreamOptions = 2,
    MaxTokens = 3,
    MaxCompletionTokens = 4,
    N = 5,
    /// In responses: the provider's token counts.
    Usage = 6,
}

impl TopKey {
    pub const COUNT: usize = 7;
    pub const ALL: [TopKey; 7] = [
        TopKey::Model,
        TopKey::Stream,
        TopKey::StreamOptions,
        TopKey::MaxTokens,
        TopKey::MaxCompletionTokens,
        TopKey::N,
        TopKey::Usage,
    ];

    /// The JSON key as it appears in the request body.
    pub fn name(self) -> &'static str {
        match self {
            TopKey::Model => "model",
            TopKey::Stream => "stream",
            TopKey::StreamOptions => "stream_options",
            TopKey::MaxTokens => "max_tokens",
            TopKey::MaxCompletionTokens => "max_completion_tokens",
            TopKey::N => "n",
            TopKey::Usage => "usage",
        }
    }

    /// Length in bytes of the longest name; used to skip decoding keys that
    /// cannot possibly match.
    const MAX_NAME_LEN: usize = 21;

    fn from_name(name: &[u8]) -> Option<TopKey> {
        match name {
            b"model" => Some(TopKey::Model),
            b"stream" => Some(TopKey::Stream),
            b"stream_options" => Some(TopKey::StreamOptions),
            b"max_tokens" => Some(TopKey::MaxTokens),
            b"max_completion_tokens" => Some(TopKey::MaxCompletionTokens),
            b"n" => Some(TopKey::N),
            b"usage" => Some(TopKey::Usage),
            _ => None,
        }
    }
}

/// The JSON type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

impl Kind {
    fn with_article(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
            Kind::Object => "an object",
            Kind::Array => "an array",
        }
    }
}

/// Byte range [start, end) of a value inside the body, including quotes for
/// strings / brackets for containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// Spans of the [`TopKey`] values found directly in the root object.
#[derive(Debug, PartialEq, Eq)]
pub struct TopLevel {
    spans: [Option<Span>; TopKey::COUNT],
}

impl TopLevel {
    /// The span of `key`'s value, if the key is present at the top level.
    pub fn get(&self, key: TopKey) -> Option<Span> {
        self.spans.get(key as usize).copied().flatten()
    }
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Body empty or only whitespace.
    Empty,
    /// Byte offset of the first invalid byte.
    NotUtf8 { at: usize },
    /// The top-level value is valid JSON but not an object.
    NotAnObject { found: Kind },
    /// Grammar violation at byte `at`.
    Syntax { at: usize, expected: &'static str },
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep { limit: usize },
    /// A [`TopKey`] appears twice at the top level.
    DuplicateKey { key: &'static str },
    /// A top-level key equal to a TopKey name but for letter case
    /// (`"MODEL"`, `"Model"`, or with the Kelvin sign or long s that Go's
    /// case folding maps to k and s). Go's encoding/json matches keys
    /// case-insensitively, so a provider written in Go could read such a key
    /// as the real one.
    CaseVariantKey { key: &'static str },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Empty => f.write_str("request body is empty"),
            ScanError::NotUtf8 { at } => {
                write!(f, "request body is not valid UTF-8 (byte {at})")
            }
            ScanError::NotAnObject { found } => write!(
                f,
                "the JSON body must be an object, found {}",
                found.with_article()
            ),
            ScanError::Syntax { at, expected } => {
                write!(f, "invalid JSON at byte {at}: expected {expected}")
            }
            ScanError::TooDeep { limit } => write!(f, "nesting deeper than {limit} levels"),
            ScanError::DuplicateKey { key } => write!(f, "duplicate top-level key \"{key}\""),
            ScanError::CaseVariantKey { key } => {
                write!(f, "a top-level key differs from \"{key}\" only in letter case")
            }
        }
    }
}

impl std::error::Error for ScanError {}

#[inline]
fn syntax(at: usize, expected: &'static str) -> ScanError {
    ScanError::Syntax { at, expected }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Number of leading bytes of `s` that need no special treatment inside a
/// JSON string, i.e. the index of the first `"`, `\` or control character
/// (< 0x20), or `s.len()` if there is none; and whether those bytes hold any
/// non-ASCII byte (whose UTF-8 the caller then checks).
///
/// Long strings (message contents) are most of a large body, so this is the
/// scan's inner loop: 16 bytes at a time with SSE2 on x86-64 (every x86-64
/// CPU has it), 8 at a time (SWAR) elsewhere, and the tail byte by byte.
#[inline]
pub(crate) fn plain_len(s: &[u8]) -> (usize, bool) {
    let (off, high) = wide_plain_len(s);
    let tail = s.get(off..).unwrap_or_default();
    let n = tail
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(tail.len());
    (off + n, high || tail.get(..n).is_some_and(|t| !t.is_ascii()))
}

/// [`plain_len`] over whole blocks: the index of the first special byte, or
/// the length of the blocks that have none (the caller finishes the tail);
/// and whether a non-ASCII byte came before it.
#[cfg(target_arch = "x86_64")]
#[inline]
fn wide_plain_len(s: &[u8]) -> (usize, bool) {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8};
    // Long runs go 64 bytes at a time first, up to the block that holds
    // the special byte; the loop below then finds it.
    let (mut off, bulk_high) = bulk_plain_len(s);
    // The OR of the blocks before the current one: their high bits.
    let mut high = i32::from(bulk_high);
    for block in s.get(off..).unwrap_or_default().chunks_exact(16) {
        // SAFETY: SSE2 is part of the x86-64 baseline, and the load reads
        // the 16 bytes of `block`, unaligned.
        let (mask, top) = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast());
            (_mm_movemask_epi8(special_sse2(v)), _mm_movemask_epi8(v))
        };
        if mask != 0 {
            let at = mask.trailing_zeros();
            // Only the high bits of the bytes before the special one count.
            let before = top & ((1i32 << at) - 1);
            return (off + at as usize, high != 0 || before != 0);
        }
        high |= top;
        off += 16;
    }
    (off, high != 0)
}

/// The special bytes of a 16-byte block (`"`, `\\`, controls) as 0xff.
#[cfg(target_arch = "x86_64")]
#[inline]
fn special_sse2(v: std::arch::x86_64::__m128i) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_min_epu8, _mm_or_si128, _mm_set1_epi8};
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe {
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // v <= 0x1f (unsigned) exactly when min(v, 0x1f) == v.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_or_si128(_mm_or_si128(quote, backslash), control)
    }
}

/// The length of the whole 64-byte blocks at the start of `s` that hold no
/// special byte (stopping at the first that does), and whether any of
/// their bytes is non-ASCII. With AVX2 where the CPU has it, else SSE2.
#[cfg(target_arch = "x86_64")]
#[inline]
fn bulk_plain_len(s: &[u8]) -> (usize, bool) {
    if s.len() < 64 {
        return (0, false);
    }
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { bulk_plain_len_avx2(s) }
    } else {
        bulk_plain_len_sse2(s)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bulk_plain_len_avx2(s: &[u8]) -> (usize, bool) {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_setzero_si256, _mm256_testz_si256,
    };
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn special(v: __m256i) -> __m256i {
        let quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
        let backslash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
        let control = _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v);
        _mm256_or_si256(_mm256_or_si256(quote, backslash), control)
    }
    let mut off = 0usize;
    let mut high = _mm256_setzero_si256();
    for block in s.chunks_exact(64) {
        // SAFETY: both loads read within the 64 bytes of `block`, unaligned.
        let (a, b) = (_mm256_loadu_si256(block.as_ptr().cast()), _mm256_loadu_si256(block.as_ptr().add(32).cast()));
        let found = _mm256_or_si256(special(a), special(b));
        if _mm256_testz_si256(found, found) == 0 {
            break;
        }
        high = _mm256_or_si256(high, _mm256_or_si256(a, b));
        off += 64;
    }
    (off, _mm256_movemask_epi8(high) != 0)
}

#[cfg(target_arch = "x86_64")]
fn bulk_plain_len_sse2(s: &[u8]) -> (usize, bool) {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_setzero_si128};
    let mut off = 0usize;
    // SAFETY: SSE2 is part of the x86-64 baseline.
    let mut high = unsafe { _mm_setzero_si128() };
    for block in s.chunks_exact(64) {
        // SAFETY: SSE2 is baseline, and the four loads read within the 64
        // bytes of `block`, unaligned.
        let clean = unsafe {
            let p = block.as_ptr();
            let (a, b, c, d) =
                (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(16).cast()), _mm_loadu_si128(p.add(32).cast()), _mm_loadu_si128(p.add(48).cast()));
            let found = _mm_or_si128(_mm_or_si128(special_sse2(a), special_sse2(b)), _mm_or_si128(special_sse2(c), special_sse2(d)));
            let clean = _mm_movemask_epi8(found) == 0;
            if clean {
                high = _mm_or_si128(high, _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)));
            }
            clean
        };
        if !clean {
            break;
        }
        off += 64;
    }
    // SAFETY: SSE2 is part of the x86-64 baseline.
    (off, unsafe { _mm_movemask_epi8(high) } != 0)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn wide_plain_len(s: &[u8]) -> (usize, bool) {
    swar_plain_len(s)
}

/// [`wide_plain_len`] 8 bytes at a time in plain integer arithmetic (SWAR):
/// wasm32's build. Compiled everywhere so that the tests check it too.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn swar_plain_len(s: &[u8]) -> (usize, bool) {
    let mut off = 0usize;
    let mut high = false;
    for chunk in s.chunks_exact(8) {
        let Ok(arr) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let v = u64::from_le_bytes(arr);
        let q = v ^ (LO * u64::from(b'"'));
        let bs = v ^ (LO * u64::from(b'\\'));
        // Classic "has zero byte" / "has byte less than n" bit tricks. Borrows
        // only propagate upwards from a matching byte, so the lowest flagged
        // byte (little-endian) is exactly the first match.
        let hit = ((q.wrapping_sub(LO) & !q)
            | (bs.wrapping_sub(LO) & !bs)
            | (v.wrapping_sub(LO * 0x20) & !v))
            & HI;
        if hit != 0 {
            let at = hit.trailing_zeros() / 8;
            // Only the bytes before the special one count.
            let before = if at == 0 { 0 } else { v & (u64::MAX >> (64 - 8 * at)) };
            return (off + at as usize, high || before & HI != 0);
        }
        high |= v & HI != 0;
        off += 8;
    }
    (off, high)
}

#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.pos.checked_add(ahead)?).copied()
    }

    #[inline]
    fn rest(&self) -> &[u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    fn skip_ws(&mut self) {
        // Fast path: most tokens are not preceded by whitespace.
        match self.peek() {
            Some(c) if is_ws(c) => {}
            _ => return,
        }
        let n = self.rest().iter().take_while(|&&c| is_ws(c)).count();
        self.pos += n;
    }

    #[inline]
    fn skip_digits(&mut self) {
        let n = self
            .rest()
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        self.pos += n;
    }

    /// `pos` is at the opening quote. Leaves `pos` after the closing quote
    /// and returns whether the string contained any escape.
    fn string(&mut self) -> Result<bool, ScanError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut non_ascii = false;
        loop {
            let (n, high) = plain_len(self.rest());
            self.pos += n;
            non_ascii |= high;
            match self.peek() {
                Some(b'"') => {
                    // The body's UTF-8 is checked here, string by string:
                    // outside strings only ASCII parses.
                    if non_ascii {
                        if let Err(e) = std::str::from_utf8(self.b.get(start..self.pos).unwrap_or_default()) {
                            return Err(ScanError::NotUtf8 { at: start + e.valid_up_to() });
                        }
                    }
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(syntax(self.pos, "escaped control character")),
                None => return Err(syntax(self.pos, "closing quote")),
            }
        }
    }

    /// `pos` is at a backslash inside a string.
    #[inline]
    fn escape(&mut self) -> Result<(), ScanError> {
        match self.peek_at(1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                for i in 2..6usize {
                    match self.peek_at(i) {
                        Some(c) if c.is_ascii_hexdigit() => {}
                        _ => return Err(syntax(self.pos + i, "4 hex digits")),
                    }
                }
                self.pos += 6;
                Ok(())
            }
            _ => Err(syntax(self.pos + 1, "a valid escape")),
        }
    }

    /// `pos` is at `-` or a digit.
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.pos += 1;
                self.skip_digits();
            }
            _ => return Err(syntax(self.pos, "a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(syntax(self.pos, "a digit"));
            }
            self.skip_digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(syntax(self.pos, "a digit"));
            }
            self.skip_digits();
        }
        Ok(())
    }

    /// `pos` is at the first byte of `lit`, which is known to match.
    fn literal(&mut self, lit: &'static [u8], expected: &'static str) -> Result<(), ScanError> {
        let matched = self
            .rest()
            .iter()
            .zip(lit)
            .take_while(|(a, b)| a == b)
            .count();
        self.pos += matched;
        if matched == lit.len() {
            Ok(())
        } else {
            Err(syntax(self.pos, expected))
        }
    }

    /// Parses `"key" :` (whitespace already skipped before the key). When
    /// `top` is set, returns the matching [`TopKey`], if any.
    fn member_key(&mut self, top: bool) -> Result<Option<TopKey>, ScanError> {
        if self.peek() != Some(b'"') {
            return Err(syntax(self.pos, "a string key"));
        }
        let start = self.pos;
        let escaped = self.string()?;
        let key = if top {
            let token = self.b.get(start..self.pos).unwrap_or_default();
            match_key(token, escaped)?
        } else {
            None
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(syntax(self.pos, "':'"));
        }
        self.pos += 1;
        Ok(key)
    }
}

/// Matches a validated key token (quotes included) against the TopKey names.
/// A key that matches one only when case is folded is an error.
fn match_key(token: &[u8], escaped: bool) -> Result<Option<TopKey>, ScanError> {
    let Some(inner) = token.get(1..token.len().saturating_sub(1)) else {
        return Ok(None);
    };
    // An ASCII character takes at most 6 bytes when escaped (`\u0065`) and a
    // folding one at most 3 unescaped (K), so a longer key cannot be one of
    // ours; don't bother decoding it.
    if inner.len() > TopKey::MAX_NAME_LEN * 6 {
        return Ok(None);
    }
    let decoded;
    let key: &[u8] = if escaped {
        match decode_string(token) {
            Some(d) => {
                decoded = d;
                decoded.as_bytes()
            }
            None => return Ok(None),
        }
    } else {
        inner
    };
    if let Some(k) = TopKey::from_name(key) {
        return Ok(Some(k));
    }
    match TopKey::ALL.iter().find(|k| folds_to(key, k.name())) {
        Some(k) => Err(ScanError::CaseVariantKey { key: k.name() }),
        None => Ok(None),
    }
}

/// Whether `key` equals the lower-case ASCII `name` under simple case folding
/// (as Go's encoding/json compares keys).
fn folds_to(key: &[u8], name: &str) -> bool {
    // ASCII keys (nearly all) fold as ASCII: no decoding.
    if key.is_ascii() {
        return key.eq_ignore_ascii_case(name.as_bytes());
    }
    let Ok(key) = std::str::from_utf8(key) else { return false };
    let mut folded = key.chars().map(|c| match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    });
    let mut expected = name.chars();
    loop {
        match (folded.next(), expected.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Validate the whole body per RFC 8259 and record spans of TopKey values at
/// depth 1.
pub fn scan(body: &[u8]) -> Result<TopLevel, ScanError> {
    // A body that is not UTF-8 is reported as such, wherever the parse
    // stopped. A body that parses is UTF-8: strings are checked as they are
    // scanned, and nothing else parses unless it is ASCII.
    scan_structure(body).map_err(|e| match std::str::from_utf8(body) {
        Err(u) => ScanError::NotUtf8 { at: u.valid_up_to() },
        Ok(_) => e,
    })
}

fn scan_structure(body: &[u8]) -> Result<TopLevel, ScanError> {
    let mut p = Parser { b: body, pos: 0 };
    p.skip_ws();
    if p.pos >= body.len() {
        return Err(ScanError::Empty);
    }

    let mut spans: [Option<Span>; TopKey::COUNT] = [None; TopKey::COUNT];
    // Number of open containers, and one bit per open container (1 = object),
    // innermost in bit 0.
    let mut depth: usize = 0;
    let mut stack: u128 = 0;
    let mut root_kind = Kind::Null;
    // A TopKey whose value comes next (only at depth 1).
    let mut pending_key: Option<TopKey> = None;
    // A TopKey value being parsed: (key, start, kind).
    let mut current: Option<(TopKey, usize, Kind)> = None;

    'value: loop {
        // Expect a value at `pos` (possibly after whitespace).
        p.skip_ws();
        let start = p.pos;
        let Some(c) = p.peek() else {
            return Err(syntax(p.pos, "a value"));
        };
        let kind = match c {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            b'-' | b'0'..=b'9' => Kind::Number,
            _ => return Err(syntax(p.pos, "a value")),
        };
        if depth == 0 {
            root_kind = kind;
        } else if depth == 1 {
            if let Some(key) = pending_key.take() {
                current = Some((key, start, kind));
            }
        }

        match c {
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(ScanError::TooDeep { limit: MAX_DEPTH });
                }
                let is_object = c == b'{';
                depth += 1;
                stack = (stack << 1) | u128::from(is_object);
                p.pos += 1;
                p.skip_ws();
                let close = if is_object { b'}' } else { b']' };
                if p.peek() == Some(close) {
                    p.pos += 1;
                    depth -= 1;
                    stack >>= 1;
                } else if is_object {
                    pending_key = p.member_key(depth == 1)?;
                    if let Some(key) = pending_key {
                        if spans.get(key as usize).copied().flatten().is_some() {
                            return Err(ScanError::DuplicateKey { key: key.name() });
                        }
                    }
                    continue 'value;
                } else {
                    continue 'value;
                }
            }
            b'"' => {
                p.string()?;
            }
            b't' => p.literal(b"true", "'true'")?,
            b'f' => p.literal(b"false", "'false'")?,
            b'n' => p.literal(b"null", "'null'")?,
            _ => p.number()?,
        }

        // A value just ended at `pos`; close containers as far as possible.
        loop {
            if depth == 1 {
                if let Some((key, start, kind)) = current.take() {
                    if let Some(slot) = spans.get_mut(key as usize) {
                        *slot = Some(Span {
                            start,
                            end: p.pos,
                            kind,
                        });
                    }
                }
            }
            p.skip_ws();
            if depth == 0 {
                if p.pos != body.len() {
                    return Err(syntax(p.pos, "end of input"));
                }
                break 'value;
            }
            let in_object = stack & 1 == 1;
            match (in_object, p.peek()) {
                (true, Some(b',')) => {
                    p.pos += 1;
                    p.skip_ws();
                    pending_key = p.member_key(depth == 1)?;
                    if let Some(key) = pending_key {
                        if spans.get(key as usize).copied().flatten().is_some() {
                            return Err(ScanError::DuplicateKey { key: key.name() });
                        }
                    }
                    continue 'value;
                }
                (false, Some(b',')) => {
                    p.pos += 1;
                    continue 'value;
                }
                (true, Some(b'}')) | (false, Some(b']')) => {
                    p.pos += 1;
                    depth -= 1;
                    stack >>= 1;
                }
                (true, _) => return Err(syntax(p.pos, "',' or '}'")),
                (false, _) => return Err(syntax(p.pos, "',' or ']'")),
            }
        }
    }

    if root_kind != Kind::Object {
        return Err(ScanError::NotAnObject { found: root_kind });
    }
    Ok(TopLevel { spans })
}

/// Parses 4 hex digits at the start of `s`.
#[inline]
fn hex4(s: &[u8]) -> Option<u32> {
    let digits = s.get(..4)?;
    digits.iter().try_fold(0u32, |acc, &c| {
        let d = char::from(c).to_digit(16)?;
        Some((acc << 4) | d)
    })
}

/// Decode a JSON string token (the slice covered by a Span of kind String,
/// quotes included).
///
/// Returns `Cow::Borrowed(inner)` when there are no escapes; otherwise
/// decodes `\" \\ \/ \b \f \n \r \t \uXXXX` (with UTF-16 surrogate pairs; a
/// lone surrogate gives `None`). Returns `None` on malformed input (missing
/// quotes, invalid UTF-8, raw `"` or control characters, bad escapes).
pub fn decode_string(token: &[u8]) -> Option<Cow<'_, str>> {
    let inner = token.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let inner = std::str::from_utf8(inner).ok()?;
    let (first, _) = plain_len(inner.as_bytes());
    if first == inner.len() {
        return Some(Cow::Borrowed(inner));
    }

    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    loop {
        let (n, _) = plain_len(rest.as_bytes());
        // `n` is at an ASCII byte or the end, hence a char boundary.
        let (plain, tail) = rest.split_at_checked(n)?;
        out.push_str(plain);
        let tail = tail.as_bytes();
        let Some((&c, after)) = tail.split_first() else {
            break;
        };
        if c != b'\\' {
            // Unescaped quote or raw control character.
            return None;
        }
        let (&e, after) = after.split_first()?;
        let consumed = match e {
            b'"' => {
                out.push('"');
                2
            }
            b'\\' => {
                out.push('\\');
                2
            }
            b'/' => {
                out.push('/');
                2
            }
            b'b' => {
                out.push('\u{8}');
                2
            }
            b'f' => {
                out.push('\u{c}');
                2
            }
            b'n' => {
                out.push('\n');
                2
            }
            b'r' => {
                out.push('\r');
                2
            }
            b't' => {
                out.push('\t');
                2
            }
            b'u' => {
                let hi = hex4(after)?;
                match hi {
                    0xD800..=0xDBFF => {
                        let low = after.get(4..)?;
                        let low = low.strip_prefix(b"\\u")?;
                        let lo = hex4(low)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        out.push(char::from_u32(cp)?);
                        12
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => {
                        out.push(char::from_u32(hi)?);
                        6
                    }
                }
            }
            _ => return None,
        };
        // Everything consumed is ASCII, so this is a char boundary.
        rest = rest.get(n + consumed..)?;
    }
    Some(Cow::Owned(out))
}

/// Appends `c` to `out`, escaped as needed inside a JSON string.
#[inline]
fn push_escaped_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c if u32::from(c) < 0x20 => {
            let v = u32::from(c);
            out.push_str("\\u00");
            out.push(char::from_digit((v >> 4) & 0xF, 16).unwrap_or('0'));
            out.push(char::from_digit(v & 0xF, 16).unwrap_or('0'));
        }
        c => out.push(c),
    }
}

/// Encode `s` as a JSON string token with quotes, escaping '"', '\\' and
/// control chars (< 0x20) as short escapes or `\u00XX`.
pub fn encode_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    out.push('"');
    let mut rest = s;
    loop {
        let (n, _) = plain_len(rest.as_bytes());
        let Some((plain, tail)) = rest.split_at_checked(n) else {
            // Not reachable (`n` is at an ASCII byte), but stay correct.
            rest.chars().for_each(|c| push_escaped_char(&mut out, c));
            break;
        };
        out.push_str(plain);
        let mut chars = tail.chars();
        match chars.next() {
            Some(c) => push_escaped_char(&mut out, c),
            None => break,
        }
        rest = chars.as_str();
    }
    out.push('"');
    out
}

#[cfg(test)]
mod case_tests {
    use super::*;

    #[test]
    fn case_variants_of_tracked_keys_are_refused() {
        for body in [
            &br#"{"model":"a","MODEL":"b"}"#[..],
            br#"{"Model":"b"}"#,
            br#"{"model":"a","Stream":true}"#,
            br#"{"model":"a","max_toKens":1}"#,
            "{\"model\":\"a\",\"max_to\u{212A}ens\":1}".as_bytes(),
            "{\"\u{17F}tream\":true}".as_bytes(),
            br#"{"MOD\u0045L":"b"}"#,
        ] {
            assert!(
                matches!(scan(body), Err(ScanError::CaseVariantKey { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Other keys, and nested ones, may use any case.
        assert!(scan(br#"{"model":"a","Messages":[],"x":{"MODEL":1}}"#).is_ok());
        assert!(scan(br#"{"model":"a","models":1,"modeL2":1}"#).is_ok());
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]

    use super::*;

    fn text(body: &[u8], span: Span) -> &str {
        std::str::from_utf8(&body[span.start..span.end]).unwrap()
    }

    fn syntax_err(doc: &[u8]) -> (usize, &'static str) {
        match scan(doc) {
            Err(ScanError::Syntax { at, expected }) => (at, expected),
            other => panic!(
                "expected syntax error for {:?}, got {:?}",
                String::from_utf8_lossy(doc),
                other
            ),
        }
    }

    const CHAT: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are \"helpful\"."},{"role":"user","content":"Hi\n"}],"stream":true,"max_tokens":100}"#;

    #[test]
    fn model_first() {
        let t = scan(CHAT).unwrap();
        let m = t.get(TopKey::Model).unwrap();
        assert_eq!(m.kind, Kind::String);
        assert_eq!(text(CHAT, m), "\"gpt-4o\"");
        assert_eq!(
            decode_string(&CHAT[m.start..m.end]).unwrap(),
            Cow::Borrowed("gpt-4o")
        );
        assert_eq!(text(CHAT, t.get(TopKey::Stream).unwrap()), "true");
        assert_eq!(text(CHAT, t.get(TopKey::MaxTokens).unwrap()), "100");
        assert_eq!(t.get(TopKey::N), None);
        assert_eq!(t.get(TopKey::StreamOptions), None);
    }

    #[test]
    fn model_last_and_middle_with_whitespace() {
        let last = b"{ \"messages\" : [ {\"role\":\"user\",\"content\":\"x\"} ] ,\n\t\"model\" :\r\n \"llama-3\" \n}\n";
        let t = scan(last).unwrap();
        assert_eq!(text(last, t.get(TopKey::Model).unwrap()), "\"llama-3\"");

        let middle = br#"{"temperature":0.5,"model":"m","messages":[]}"#;
        let t = scan(middle).unwrap();
        let m = t.get(TopKey::Model).unwrap();
        assert_eq!(
            m,
            Span {
                start: 27,
                end: 30,
                kind: Kind::String
            }
        );
        assert_eq!(text(middle, m), "\"m\"");
    }

    #[test]
    fn model_with_escapes_in_value_and_key() {
        let body = br#"{"mod\u0065l":"gpt\u002d4\/o","stream":false}"#;
        let t = scan(body).unwrap();
        let m = t.get(TopKey::Model).unwrap();
        assert_eq!(text(body, m), r#""gpt\u002d4\/o""#);
        assert_eq!(decode_string(&body[m.start..m.end]).unwrap(), "gpt-4/o");
        assert_eq!(t.get(TopKey::Stream).unwrap().kind, Kind::Bool);

        // A long escaped key that can't match is simply ignored.
        let long_key = format!("{{\"{}\":1,\"model\":\"x\"}}", "\\u0061".repeat(100));
        let t = scan(long_key.as_bytes()).unwrap();
        assert!(t.get(TopKey::Model).is_some());
    }

    #[test]
    fn escaped_key_duplicate_is_detected() {
        let body = br#"{"model":"cheap","m\u006fdel":"expensive"}"#;
        assert_eq!(scan(body), Err(ScanError::DuplicateKey { key: "model" }));
    }

    #[test]
    fn nested_model_ignored() {
        let body = br#"{"messages":[{"model":"inner"}],"metadata":{"model":"x","stream":true},"model":"outer"}"#;
        let t = scan(body).unwrap();
        assert_eq!(text(body, t.get(TopKey::Model).unwrap()), "\"outer\"");
        assert_eq!(t.get(TopKey::Stream), None);

        let only_nested = br#"{"metadata":{"model":"x"}}"#;
        assert_eq!(scan(only_nested).unwrap().get(TopKey::Model), None);
    }

    #[test]
    fn duplicate_model() {
        let body = br#"{"model":"a","messages":[],"model":"b"}"#;
        assert_eq!(scan(body), Err(ScanError::DuplicateKey { key: "model" }));
        assert_eq!(
            scan(br#"{"n":1,"n":2}"#),
            Err(ScanError::DuplicateKey { key: "n" })
        );
        // Duplicates of keys we don't track are fine.
        assert!(scan(br#"{"x":1,"x":2}"#).is_ok());
        // Nested duplicates are fine.
        assert!(scan(br#"{"a":{"model":1,"model":2},"model":3}"#).is_ok());
    }

    #[test]
    fn every_top_key_span_and_kind() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true, "x":[1,{}]},"max_tokens":100,"max_completion_tokens":-2.5e+3,"n":null}"#;
        let t = scan(body).unwrap();
        let expect = [
            (TopKey::Model, "\"m\"", Kind::String),
            (TopKey::Stream, "true", Kind::Bool),
            (
                TopKey::StreamOptions,
                r#"{"include_usage":true, "x":[1,{}]}"#,
                Kind::Object,
            ),
            (TopKey::MaxTokens, "100", Kind::Number),
            (TopKey::MaxCompletionTokens, "-2.5e+3", Kind::Number),
            (TopKey::N, "null", Kind::Null),
        ];
        for (key, txt, kind) in expect {
            let s = t.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
            assert_eq!(s.kind, kind, "{key:?}");
            assert_eq!(text(body, s), txt, "{key:?}");
        }

        let body2 = br#"{"stream_options":[1, 2] ,"stream":false,"n":{}}"#;
        let t = scan(body2).unwrap();
        let so = t.get(TopKey::StreamOptions).unwrap();
        assert_eq!(so.kind, Kind::Array);
        assert_eq!(text(body2, so), "[1, 2]");
        assert_eq!(text(body2, t.get(TopKey::Stream).unwrap()), "false");
        assert_eq!(t.get(TopKey::N).unwrap().kind, Kind::Object);
        assert_eq!(text(body2, t.get(TopKey::N).unwrap()), "{}");
    }

    #[test]
    fn top_key_names() {
        assert_eq!(TopKey::ALL.len(), TopKey::COUNT);
        for (i, k) in TopKey::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(TopKey::from_name(k.name().as_bytes()), Some(*k));
        }
        assert_eq!(
            TopKey::MAX_NAME_LEN,
            TopKey::ALL.iter().map(|k| k.name().len()).max().unwrap()
        );
    }

    #[test]
    fn empty_and_whitespace() {
        assert_eq!(scan(b""), Err(ScanError::Empty));
        assert_eq!(scan(b" \t\r\n "), Err(ScanError::Empty));
        assert_eq!(ScanError::Empty.to_string(), "request body is empty");
        // Other whitespace-like bytes are not JSON whitespace.
        assert!(matches!(
            scan(b"\x0c{}"),
            Err(ScanError::Syntax { at: 0, .. })
        ));
        assert!(matches!(
            scan("\u{a0}{}".as_bytes()),
            Err(ScanError::Syntax { at: 0, .. })
        ));
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(scan(b"{\"a\":\"\xff\"}"), Err(ScanError::NotUtf8 { at: 6 }));
        assert_eq!(scan(b"{\"mo\xc3"), Err(ScanError::NotUtf8 { at: 4 }));
        assert_eq!(
            ScanError::NotUtf8 { at: 5 }.to_string(),
            "request body is not valid UTF-8 (byte 5)"
        );
    }

    #[test]
    fn bom_rejected() {
        assert!(matches!(
            scan(b"\xef\xbb\xbf{}"),
            Err(ScanError::Syntax {
                at: 0,
                expected: "a value"
            })
        ));
    }

    #[test]
    fn not_an_object() {
        assert_eq!(
            scan(b"[1,2]"),
            Err(ScanError::NotAnObject { found: Kind::Array })
        );
        assert_eq!(
            scan(b" 12 "),
            Err(ScanError::NotAnObject {
                found: Kind::Number
            })
        );
        assert_eq!(
            scan(b"\"s\""),
            Err(ScanError::NotAnObject {
                found: Kind::String
            })
        );
        assert_eq!(
            scan(b"true"),
            Err(ScanError::NotAnObject { found: Kind::Bool })
        );
        assert_eq!(
            scan(b"null"),
            Err(ScanError::NotAnObject { found: Kind::Null })
        );
        assert_eq!(
            ScanError::NotAnObject { found: Kind::Array }.to_string(),
            "the JSON body must be an object, found an array"
        );
        // Invalid arrays are syntax errors, not NotAnObject.
        assert!(matches!(scan(b"[1,"), Err(ScanError::Syntax { .. })));
    }

    #[test]
    fn truncated_prefixes_are_errors() {
        let bodies: [&[u8]; 4] = [
            CHAT,
            br#"{"a":[1,-2.5e-3,true,false,null,{"b":"\u00e9\ud83d\ude00"}],"model":"x"}"#,
            "{\"content\":\"héllo 😀 wörld\",\"n\":0}".as_bytes(),
            b"{}",
        ];
        for body in bodies {
            assert!(scan(body).is_ok());
            for i in 0..body.len() {
                assert!(
                    scan(&body[..i]).is_err(),
                    "prefix {i} of {:?} accepted",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn trailing_garbage() {
        assert_eq!(syntax_err(b"{} x"), (3, "end of input"));
        assert_eq!(syntax_err(b"{}{}"), (2, "end of input"));
        assert_eq!(syntax_err(b"{\"a\":1}]"), (7, "end of input"));
        assert_eq!(syntax_err(b"{}\x00"), (2, "end of input"));
        assert!(scan(b"{} \n\t\r").is_ok());
    }

    #[test]
    fn trailing_commas() {
        assert_eq!(syntax_err(br#"{"a":1,}"#), (7, "a string key"));
        assert_eq!(syntax_err(br#"{"a":[1,2,]}"#), (10, "a value"));
        assert_eq!(syntax_err(br#"{,}"#), (1, "a string key"));
        assert_eq!(syntax_err(br#"{"a":[,1]}"#), (6, "a value"));
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(syntax_err(br#"{"a":01}"#), (6, "',' or '}'"));
        assert_eq!(syntax_err(br#"{"a":-}"#), (6, "a digit"));
        assert_eq!(syntax_err(br#"{"a":1.}"#), (7, "a digit"));
        assert_eq!(syntax_err(br#"{"a":1e}"#), (7, "a digit"));
        assert_eq!(syntax_err(br#"{"a":1e+}"#), (8, "a digit"));
        assert_eq!(syntax_err(br#"{"a":.5}"#), (5, "a value"));
        assert_eq!(syntax_err(br#"{"a":+1}"#), (5, "a value"));
        assert_eq!(syntax_err(br#"{"a":[-01]}"#), (8, "',' or ']'"));
        assert_eq!(syntax_err(b"-"), (1, "a digit"));
        assert_eq!(syntax_err(b"1."), (2, "a digit"));
        assert_eq!(syntax_err(b"1e"), (2, "a digit"));
        assert_eq!(syntax_err(b"01"), (1, "end of input"));
        assert!(scan(br#"{"a":[0,-0,0.0,1E5,1e-5,-12.34E+56,9007199254740993]}"#).is_ok());
    }

    #[test]
    fn bad_literals() {
        assert_eq!(syntax_err(br#"{"a":tru}"#), (8, "'true'"));
        assert_eq!(syntax_err(br#"{"a":nul"#), (8, "'null'"));
        assert_eq!(syntax_err(br#"{"a":False}"#), (5, "a value"));
        assert_eq!(syntax_err(br#"{"a":fals}"#), (9, "'false'"));
    }

    #[test]
    fn bad_escapes() {
        assert_eq!(syntax_err(br#"{"a":"\x"}"#), (7, "a valid escape"));
        assert_eq!(syntax_err(br#"{"a":"\'"}"#), (7, "a valid escape"));
        assert_eq!(syntax_err(br#"{"a":"\u12G4"}"#), (10, "4 hex digits"));
        assert_eq!(syntax_err(br#"{"a":"\u12"}"#), (10, "4 hex digits"));
        assert_eq!(syntax_err(br#"{"\q":1}"#), (3, "a valid escape"));
        assert_eq!(syntax_err(b"{\"a\":\"\\"), (7, "a valid escape"));
        assert_eq!(syntax_err(b"{\"a\":\"abc"), (9, "closing quote"));
        assert!(scan(br#"{"a":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"}"#).is_ok());
    }

    #[test]
    fn raw_control_chars_in_strings() {
        for c in 0u8..0x20 {
            let body = [b'{', b'"', b'a', b'"', b':', b'"', b'x', c, b'"', b'}'];
            assert_eq!(
                syntax_err(&body),
                (7, "escaped control character"),
                "byte {c}"
            );
            let key = [b'{', b'"', c, b'"', b':', b'1', b'}'];
            assert!(scan(&key).is_err());
        }
        // DEL is allowed raw.
        assert!(scan(b"{\"a\":\"\x7f\"}").is_ok());
    }

    #[test]
    fn structural_errors() {
        assert_eq!(syntax_err(br#"{"a" 1}"#), (5, "':'"));
        assert_eq!(syntax_err(br#"{"a":1 "b":2}"#), (7, "',' or '}'"));
        assert_eq!(syntax_err(br#"{"a":[1 2]}"#), (8, "',' or ']'"));
        assert_eq!(syntax_err(br#"{a:1}"#), (1, "a string key"));
        assert_eq!(syntax_err(br#"{"a":1]"#), (6, "',' or '}'"));
        assert_eq!(syntax_err(br#"{"a":[}"#), (6, "a value"));
        assert_eq!(syntax_err(br#"{"a":}"#), (5, "a value"));
        assert_eq!(syntax_err(b"}"), (0, "a value"));
        assert_eq!(
            ScanError::Syntax {
                at: 17,
                expected: "',' or '}'"
            }
            .to_string(),
            "invalid JSON at byte 17: expected ',' or '}'"
        );
    }

    #[test]
    fn very_deep_nesting_is_too_deep_without_stack_overflow() {
        let body = vec![b'['; 100_000];
        assert_eq!(scan(&body), Err(ScanError::TooDeep { limit: MAX_DEPTH }));
        let body = vec![b'['; 10 * 1024 * 1024];
        assert_eq!(scan(&body), Err(ScanError::TooDeep { limit: MAX_DEPTH }));
        let mut obj = b"{\"a\":".repeat(100_000);
        obj.push(b'1');
        assert_eq!(scan(&obj), Err(ScanError::TooDeep { limit: MAX_DEPTH }));
        assert_eq!(
            ScanError::TooDeep { limit: 128 }.to_string(),
            "nesting deeper than 128 levels"
        );
    }

    fn nested(depth: usize) -> Vec<u8> {
        // Root object plus (depth - 1) arrays/objects alternating.
        let mut open = String::from("{\"model\":\"m\",\"x\":");
        let mut close = String::from("}");
        for i in 1..depth {
            if i % 2 == 0 {
                open.push_str("{\"k\":");
                close.insert(0, '}');
            } else {
                open.push('[');
                close.insert(0, ']');
            }
        }
        open.push_str("null");
        open.push_str(&close);
        open.into_bytes()
    }

    #[test]
    fn depth_limit_exact() {
        let ok = nested(MAX_DEPTH);
        let t = scan(&ok).unwrap();
        assert!(t.get(TopKey::Model).is_some());
        assert_eq!(
            scan(&nested(MAX_DEPTH + 1)),
            Err(ScanError::TooDeep { limit: MAX_DEPTH })
        );

        let arr_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(
            scan(arr_ok.as_bytes()),
            Err(ScanError::NotAnObject { found: Kind::Array })
        );
        let arr_bad = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            scan(arr_bad.as_bytes()),
            Err(ScanError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn five_megabyte_body() {
        let mut content = String::with_capacity(5 * 1024 * 1024);
        let mut i = 0u32;
        while content.len() < 5 * 1024 * 1024 {
            content.push_str("The quick brown fox jumps over the lazy dog. ");
            if i % 97 == 0 {
                content.push_str("\\n\\\"quoted\\\" \\u00e9 é 😀 ");
            }
            i += 1;
        }
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{content}"}}],"model":"gpt-4o","max_completion_tokens":4096}}"#
        );
        let bytes = body.as_bytes();
        assert!(bytes.len() > 5 * 1024 * 1024);
        let t = scan(bytes).unwrap();
        assert_eq!(text(bytes, t.get(TopKey::Model).unwrap()), "\"gpt-4o\"");
        assert_eq!(
            text(bytes, t.get(TopKey::MaxCompletionTokens).unwrap()),
            "4096"
        );
        // A raw newline at the very end of the long string is caught.
        let bad = body.replacen("lazy dog. \"}", "lazy dog.\n\"}", 1);
        assert_ne!(bad, body);
        assert!(matches!(
            scan(bad.as_bytes()),
            Err(ScanError::Syntax { .. })
        ));
    }

    #[test]
    fn agrees_with_serde_json() {
        let docs: &[&[u8]] = &[
            b"{}",
            b" { } ",
            br#"{"a":1}"#,
            br#"{"a":[1,2,{"b":null}],"c":"d"}"#,
            br#"{"model":"x","stream":true,"n":2,"max_tokens":1e3}"#,
            br#"{"a":"\u00e9\ud83d\ude00\n\t\"\\\/"}"#,
            br#"{"a":-0.0e-0}"#,
            br#"{"a":1E+2,"b":-1e-2,"c":0.5}"#,
            "{\"ü\":\"日本語\"}".as_bytes(),
            b"{\"a\":\"\x7f\"}",
            br#"{"a":[[],[[]],{}]}"#,
            b"[]",
            b"[1,2,3]",
            b"1",
            b"\"str\"",
            b"null",
            b"true",
            b"",
            b"   ",
            b"{",
            b"}",
            br#"{"a":1,}"#,
            br#"{"a":[1,]}"#,
            br#"{"a":01}"#,
            br#"{"a":-}"#,
            br#"{"a":1.}"#,
            br#"{"a":1e}"#,
            br#"{"a":.1}"#,
            br#"{"a":"\x"}"#,
            br#"{"a":"\u12x4"}"#,
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\tb\"}",
            br#"{"a":1} x"#,
            br#"{"a":1}{}"#,
            br#"{'a':1}"#,
            br#"{"a":True}"#,
            br#"{"a":nul}"#,
            br#"{"a" 1}"#,
            br#"{"a":1 "b":2}"#,
            b"\xef\xbb\xbf{}",
            b"{\"a\":\"\xff\"}",
            b"\x0c{}",
            br#"{"a":NaN}"#,
            br#"{"a":Infinity}"#,
            br#"{"a":+1}"#,
            br#"{"a":0x10}"#,
        ];
        for doc in docs {
            let ours = scan(doc).is_ok();
            let theirs = serde_json::from_slice::<serde_json::Value>(doc)
                .map(|v| v.is_object())
                .unwrap_or(false);
            assert_eq!(
                ours,
                theirs,
                "disagreement on {:?}: scan={:?}",
                String::from_utf8_lossy(doc),
                scan(doc)
            );
        }
    }

    #[test]
    fn decode_string_cases() {
        assert_eq!(decode_string(br#""plain""#), Some(Cow::Borrowed("plain")));
        assert!(matches!(decode_string(br#""""#), Some(Cow::Borrowed(""))));
        assert!(matches!(decode_string(br#""a\nb""#), Some(Cow::Owned(_))));
        assert_eq!(decode_string(br#""a\nb""#).unwrap(), "a\nb");
        assert_eq!(
            decode_string(br#""\"\\\/\b\f\n\r\t""#).unwrap(),
            "\"\\/\u{8}\u{c}\n\r\t"
        );
        assert_eq!(decode_string(br#""\u00e9\u4e2d""#).unwrap(), "é中");
        assert_eq!(decode_string(br#""x\uD83D\uDE00y""#).unwrap(), "x😀y");
        assert_eq!(decode_string(br#""\u0000""#).unwrap(), "\0");
        // Lone surrogates.
        assert_eq!(decode_string(br#""\ud800""#), None);
        assert_eq!(decode_string(br#""\ud800x""#), None);
        assert_eq!(decode_string(br#""\ud800\u0041""#), None);
        assert_eq!(decode_string(br#""\udc00""#), None);
        assert_eq!(decode_string(br#""\ude00\ud83d""#), None);
        // Malformed tokens.
        assert_eq!(decode_string(b""), None);
        assert_eq!(decode_string(b"\""), None);
        assert_eq!(decode_string(b"abc"), None);
        assert_eq!(decode_string(br#""abc"#), None);
        assert_eq!(decode_string(br#""a"b""#), None);
        assert_eq!(decode_string(br#""\x""#), None);
        assert_eq!(decode_string(br#""\u12g4""#), None);
        assert_eq!(decode_string(br#""\u12""#), None);
        assert_eq!(decode_string(br#""\""#), None);
        assert_eq!(decode_string(b"\"a\nb\""), None);
        assert_eq!(decode_string(b"\"\xff\""), None);
    }

    #[test]
    fn encode_string_cases() {
        assert_eq!(encode_string(""), "\"\"");
        assert_eq!(encode_string("abc"), "\"abc\"");
        assert_eq!(encode_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            encode_string("\n\r\t\u{8}\u{c}\u{1}\u{1f}"),
            r#""\n\r\t\b\f\u0001\u001f""#
        );
        assert_eq!(encode_string("é😀/\u{7f}"), "\"é😀/\u{7f}\"");
    }

    #[test]
    fn encode_decode_round_trip() {
        let long = "x\"y\\z\n".repeat(1000);
        let cases = [
            "",
            "plain ascii that is longer than eight bytes",
            "\"",
            "\\",
            "\\\"",
            "quote \" inside",
            "back\\slash",
            "new\nline\r\n",
            "\u{1}\u{2}\u{1f}\0",
            "tab\there",
            "emoji 😀🎉 and ZWJ 👩‍👩‍👧",
            "non-ASCII: héllo wörld 日本語 Ελληνικά",
            "\u{2028}\u{2029}\u{feff}",
            "</script>",
            long.as_str(),
        ];
        for s in cases {
            let enc = encode_string(s);
            assert_eq!(decode_string(enc.as_bytes()).unwrap(), s);
            // serde_json agrees on the encoding.
            assert_eq!(serde_json::from_str::<String>(&enc).unwrap(), s);
            // And the encoded token is valid inside a body.
            let body = format!("{{\"model\":{enc}}}");
            let t = scan(body.as_bytes()).unwrap();
            let m = t.get(TopKey::Model).unwrap();
            assert_eq!(&body[m.start..m.end], enc);
        }
    }

    #[test]
    fn plain_len_matches_naive_on_long_runs() {
        // Long enough for the 64-byte blocks: the special byte in each
        // position of each block, after ASCII or non-ASCII filler.
        let special = [b'"', b'\\', 0u8, 0x1f];
        for len in [63usize, 64, 65, 127, 128, 129, 200, 257] {
            for pos in 0..=len {
                for &sp in &special {
                    for (f, high_at) in [(b'a', None), (b'a', Some(3usize)), (b'a', Some(len.saturating_sub(2)))] {
                        let mut v = vec![f; len];
                        if let Some(h) = high_at.filter(|&h| h < len) {
                            v[h] = 0xc3;
                        }
                        if pos < len {
                            v[pos] = sp;
                        }
                        let naive = v.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(v.len());
                        let high = v[..naive].iter().any(|&c| c >= 0x80);
                        assert_eq!(plain_len(&v), (naive, high), "len {len} pos {pos} special {sp} high {high_at:?}");
                        #[cfg(target_arch = "x86_64")]
                        {
                            // Both bulk variants stop at a block boundary at or before the byte.
                            let (n, h) = bulk_plain_len_sse2(&v);
                            assert!(n % 64 == 0 && n <= naive && naive - n < 64, "sse2 {n} vs {naive}");
                            assert_eq!(h, v[..n].iter().any(|&c| c >= 0x80));
                            if std::arch::is_x86_feature_detected!("avx2") {
                                assert_eq!(unsafe { bulk_plain_len_avx2(&v) }, (n, h), "avx2 and sse2 agree");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn plain_len_matches_naive() {
        let special = [b'"', b'\\', 0u8, 0x1f, b'\n'];
        let filler = [b'a', 0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']', b'{'];
        for len in 0..50usize {
            for pos in 0..=len {
                for &sp in &special {
                    for (i, &f) in filler.iter().enumerate() {
                        let mut v = vec![f; len];
                        if pos < len {
                            v[pos] = sp;
                        }
                        // A second special byte later on must not win.
                        if i % 2 == 1 && pos + 1 < len {
                            v[len - 1] = b'"';
                        }
                        let naive = v
                            .iter()
                            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                            .unwrap_or(v.len());
                        let high = v.get(..naive).unwrap().iter().any(|&c| c >= 0x80);
                        assert_eq!(plain_len(&v), (naive, high), "{v:?}");
                        // The 8-byte variant wasm32 uses stops at the same
                        // byte, or before it at a block boundary.
                        let (swar, swar_high) = swar_plain_len(&v);
                        assert!(swar == naive || (swar % 8 == 0 && swar <= naive && naive - swar < 8), "{v:?}");
                        let high_before = v.get(..swar).unwrap().iter().any(|&c| c >= 0x80);
                        assert_eq!(swar_high, high_before, "{v:?}");
                    }
                }
            }
        }
    }
}
