//! What a request cost, once its response is known.
//!
//! - A 2xx response with usage: exactly what the provider reports.
//! - A 2xx response without usage (cut off, a client that went away, or a
//!   provider that sends none): the prompt estimate as input, plus the output
//!   that passed through (streams), flagged as estimated.
//! - Anything else (a provider error, no response): nothing; providers do
//!   not bill failed requests.

use crate::admission::Estimate;
use crate::pricing::Price;
use crate::usage::{self, Usage};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub usage: Usage,
    pub cost_micro: u64,
    pub estimated: bool,
}

pub fn is_success(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

/// `output_seen`: output tokens estimated from what passed (streams), used
/// only when the response carried no usage.
pub fn outcome(
    price: Option<Price>,
    status: Option<u16>,
    usage: Option<Usage>,
    estimate: Estimate,
    output_seen: u64,
) -> Outcome {
    let price = price.unwrap_or_default();
    let (usage, estimated) = match (is_success(status), usage) {
        (true, Some(u)) => (u, false),
        (true, None) => (Usage { input: estimate.input_tokens, cached_input: 0, output: output_seen, ..Usage::default() }, true),
        (false, _) => (Usage::default(), false),
    };
    Outcome { usage, cost_micro: price.cost_micro(&usage), estimated }
}

/// The reservation for a request: its estimated prompt and its whole output
/// allowance at full price (a prompt that asks for caching, at the dearest
/// cache-write price).
pub fn worst_case_micro(price: Option<Price>, estimate: Estimate) -> u64 {
    let price = price.unwrap_or_default();
    let priced = Price { input: price.dearest_input(estimate.caching), ..price };
    let usage = Usage { input: estimate.input_tokens, output: estimate.output_tokens, ..Usage::default() };
    priced.cost_micro(&usage)
}

/// A copy of a response body as it passes through, kept to read its usage
/// at the end. Past `limit` bytes it stops copying and the usage is
/// estimated. A body that comes in one piece is read as it passes, and
/// not copied.
#[derive(Debug, Default)]
pub struct ResponseCopy {
    bytes: Vec<u8>,
    overflowed: bool,
    /// The usage of a body that came in one piece.
    read: Option<Option<Usage>>,
}

/// The largest response body copied for its usage.
pub const RESPONSE_COPY_LIMIT: usize = 32 * 1024 * 1024;

impl ResponseCopy {
    pub fn push(&mut self, chunk: &[u8]) {
        if self.overflowed || self.bytes.len().saturating_add(chunk.len()) > RESPONSE_COPY_LIMIT {
            self.overflowed = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(chunk);
    }

    /// The body's last chunk: read where it is when it is the whole body.
    pub fn push_last(&mut self, chunk: &[u8]) {
        if self.bytes.is_empty() && !self.overflowed && self.read.is_none() && chunk.len() <= RESPONSE_COPY_LIMIT {
            self.read = Some(usage::from_response(chunk));
        } else {
            self.push(chunk);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        if self.overflowed {
            return None;
        }
        match self.read {
            Some(read) => read,
            None => usage::from_response(&self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price::new(150_000, 600_000, 75_000);
    const EST: Estimate = Estimate { input_tokens: 100, output_tokens: 4096, caching: false };

    #[test]
    fn exact_estimated_and_free() {
        let u = Usage { input: 10, cached_input: 0, output: 5, ..Usage::default() };
        assert_eq!(outcome(Some(PRICE), Some(200), Some(u), EST, 9), Outcome { usage: u, cost_micro: 5, estimated: false });
        let o = outcome(Some(PRICE), Some(200), None, EST, 0);
        assert_eq!((o.usage.input, o.usage.output, o.cost_micro, o.estimated), (100, 0, 15, true));
        let o = outcome(Some(PRICE), Some(200), None, EST, 10);
        assert_eq!((o.usage.output, o.cost_micro), (10, 21));
        assert_eq!(outcome(Some(PRICE), Some(429), Some(u), EST, 0), Outcome::default());
        assert_eq!(outcome(Some(PRICE), None, None, EST, 3), Outcome::default());
        assert_eq!(outcome(None, Some(200), Some(u), EST, 0).cost_micro, 0);
    }

    #[test]
    fn worst_case() {
        // 100 × 0.15 + 4096 × 0.6 = 15 + 2457.6 -> 2473 µUSD
        assert_eq!(worst_case_micro(Some(PRICE), EST), 2473);
        assert_eq!(worst_case_micro(None, EST), 0);
        // A prompt that asks for caching may be written for an hour, at twice the input price.
        assert_eq!(worst_case_micro(Some(PRICE), Estimate { caching: true, ..EST }), 30 + 2458);
    }

    #[test]
    fn response_copy_is_bounded() {
        let mut c = ResponseCopy::default();
        c.push(br#"{"usage":{"prompt_tokens":3,"#);
        c.push(br#""completion_tokens":4}}"#);
        assert_eq!(c.usage(), Some(Usage { input: 3, cached_input: 0, output: 4, ..Usage::default() }));
        let mut c = ResponseCopy::default();
        c.push(&vec![b' '; RESPONSE_COPY_LIMIT]);
        c.push(b"{}");
        assert_eq!(c.usage(), None);
    }

    #[test]
    fn a_body_in_one_piece_is_read_without_a_copy() {
        let u = Some(Usage { input: 3, cached_input: 0, output: 4, ..Usage::default() });
        let mut c = ResponseCopy::default();
        c.push_last(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        assert!(c.bytes.is_empty());
        assert_eq!(c.usage(), u);
        // In pieces, the last one joins the copy.
        let mut c = ResponseCopy::default();
        c.push(br#"{"usage":{"prompt_tokens":3,"#);
        c.push_last(br#""completion_tokens":4}}"#);
        assert_eq!(c.usage(), u);
        // An empty last chunk after the body.
        let mut c = ResponseCopy::default();
        c.push(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        c.push_last(b"");
        assert_eq!(c.usage(), u);
    }
}
