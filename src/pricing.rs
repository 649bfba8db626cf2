//! Prices and cost. Prices are held as integer pico-USD (1e-12 USD) per token,
//! so that sums never drift; a request's cost is rounded up to whole micro-USD
//! once, and budgets and stats count micro-USD.
//!
//! The built-in table is `data/prices.tsv`, compiled in; a deployment's
//! `model_info` overrides it.

use crate::usage::Usage;

/// pico-USD per micro-USD.
const PICO_PER_MICRO: u64 = 1_000_000;

const TABLE: &str = include_str!("../data/prices.tsv");

/// Per-token prices in pico-USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    /// Prompt tokens written to the cache for 5 minutes.
    pub cache_write: u64,
    /// Prompt tokens written to the cache for 1 hour.
    pub cache_write_1h: u64,
}

impl Price {
    /// Input, output and cache-read prices, with Anthropic's cache-write
    /// prices derived from the input price: 1.25 times it for 5 minutes, 2
    /// times for an hour. (Only Anthropic reports cache writes.)
    pub const fn new(input: u64, output: u64, cached_input: u64) -> Self {
        Self {
            input,
            output,
            cached_input,
            cache_write: input.saturating_mul(5).div_ceil(4),
            cache_write_1h: input.saturating_mul(2),
        }
    }

    /// The cost of a usage in pico-USD.
    pub fn cost_pico(&self, usage: &Usage) -> u64 {
        usage
            .input
            .saturating_mul(self.input)
            .saturating_add(usage.cached_input.saturating_mul(self.cached_input))
            .saturating_add(usage.cache_write.saturating_mul(self.cache_write))
            .saturating_add(usage.cache_write_1h.saturating_mul(self.cache_write_1h))
            .saturating_add(usage.output.saturating_mul(self.output))
    }

    /// The dearest price a prompt token can have: a prompt that asks for
    /// caching may be written to the cache whole.
    pub fn dearest_input(&self, caching: bool) -> u64 {
        if caching {
            self.input.max(self.cache_write).max(self.cache_write_1h)
        } else {
            self.input
        }
    }

    /// The cost of a usage in micro-USD, rounded up.
    pub fn cost_micro(&self, usage: &Usage) -> u64 {
        self.cost_pico(usage).div_ceil(PICO_PER_MICRO)
    }
}

/// USD per token (as in `model_info`) to pico-USD per token.
pub fn from_usd_per_token(usd: f64) -> Option<u64> {
    let pico = (usd * 1e12).round();
    (usd.is_finite() && usd >= 0.0 && pico < 1e18).then_some(pico as u64)
}

/// The built-in price of an upstream model name. Dated and `-latest` names
/// (`gpt-4o-mini-2024-07-18`, `claude-3-5-haiku-20241022`) fall back to
/// their base name.
pub fn builtin(model: &str) -> Option<Price> {
    let model = model.rsplit('/').next().unwrap_or(model);
    lookup(model).or_else(|| lookup(undated(model)?))
}

fn undated(model: &str) -> Option<&str> {
    if let Some(base) = model.strip_suffix("-latest") {
        return Some(base);
    }
    let (base, tail) = model.rsplit_once('-')?;
    // -20241022
    if tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_digit()) {
        return Some(base);
    }
    // -2024-07-18
    let mut parts = model.rsplitn(4, '-');
    let (day, month, year, base) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(year, 4) && digits(month, 2) && digits(day, 2)).then_some(base)
}

fn lookup(model: &str) -> Option<Price> {
    table().find(|(name, _)| *name == model).map(|(_, price)| price)
}

/// Every row of the built-in table. Rows that do not parse are skipped (a
/// unit test checks that there are none).
pub fn table() -> impl Iterator<Item = (&'static str, Price)> {
    TABLE.lines().filter_map(parse_row)
}

fn parse_row(line: &'static str) -> Option<(&'static str, Price)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut cols = line.split('\t');
    let name = cols.next()?;
    let input = per_mtok_to_pico(cols.next()?)?;
    let output = per_mtok_to_pico(cols.next()?)?;
    let cached_input = match cols.next()? {
        "-" => input,
        s => per_mtok_to_pico(s)?,
    };
    cols.next().is_none().then_some((name, Price::new(input, output, cached_input)))
}

/// "0.075" USD per million tokens to pico-USD per token (75 000), exactly.
fn per_mtok_to_pico(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 6 || !(whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut frac_value: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    for _ in frac.len()..6 {
        frac_value = frac_value.checked_mul(10)?;
    }
    whole.checked_mul(1_000_000)?.checked_add(frac_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_table_parses() {
        let rows = TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
        assert_eq!(table().count(), rows);
        assert!(rows > 30);
    }

    #[test]
    fn known_prices() {
        let p = builtin("gpt-4o-mini").unwrap();
        assert_eq!(p, Price::new(150_000, 600_000, 75_000));
        assert_eq!(builtin("gpt-4o-mini-2024-07-18"), Some(p));
        assert_eq!(builtin("openai/gpt-4o-mini"), Some(p));
        let h = builtin("claude-3-5-haiku-20241022").unwrap();
        assert_eq!(h.input, 800_000);
        assert_eq!(builtin("claude-3-5-haiku-latest"), Some(h));
        assert_eq!(builtin("gpt-4").unwrap().cached_input, 30_000_000, "no cache price: cached bills as input");
        assert_eq!(builtin("text-embedding-3-small").unwrap().output, 0);
        assert_eq!(builtin("llama-3.1-8b-instruct"), None);
        assert_eq!(builtin("gpt-4o-mini-2024"), None);
    }

    #[test]
    fn exact_decimal_conversion() {
        assert_eq!(per_mtok_to_pico("0.005"), Some(5_000));
        assert_eq!(per_mtok_to_pico("75"), Some(75_000_000));
        assert_eq!(per_mtok_to_pico("1.2345678"), None);
        assert_eq!(per_mtok_to_pico("x"), None);
        assert_eq!(per_mtok_to_pico(".5"), None);
        assert_eq!(from_usd_per_token(0.0000001), Some(100_000));
        assert_eq!(from_usd_per_token(-1.0), None);
        assert_eq!(from_usd_per_token(f64::NAN), None);
    }

    #[test]
    fn cost_rounds_up_to_micro_usd_once() {
        let p = builtin("gpt-4o-mini").unwrap();
        // 10 input + 5 output: 1.5 + 3.0 = 4.5 µUSD -> 5
        let u = Usage { input: 10, cached_input: 0, output: 5, ..Usage::default() };
        assert_eq!(p.cost_pico(&u), 4_500_000);
        assert_eq!(p.cost_micro(&u), 5);
        let u = Usage { input: 1_000_000, cached_input: 1_000_000, output: 1_000_000, ..Usage::default() };
        assert_eq!(p.cost_micro(&u), 150_000 + 75_000 + 600_000);
        assert_eq!(Price::default().cost_micro(&u), 0);
    }

    #[test]
    fn anthropic_cache_writes_have_their_own_prices() {
        // claude-sonnet-4-5: $3 input, $3.75 5-minute writes, $6 1-hour writes, $0.30 reads, $15 output.
        let p = builtin("claude-sonnet-4-5").unwrap();
        assert_eq!((p.cache_write, p.cache_write_1h), (3_750_000, 6_000_000));
        let u = Usage { input: 1_000_000, cached_input: 1_000_000, cache_write: 1_000_000, cache_write_1h: 1_000_000, output: 1_000_000 };
        assert_eq!(p.cost_micro(&u), 3_000_000 + 300_000 + 3_750_000 + 6_000_000 + 15_000_000);
        assert_eq!(p.dearest_input(false), 3_000_000);
        assert_eq!(p.dearest_input(true), 6_000_000);
    }
}
