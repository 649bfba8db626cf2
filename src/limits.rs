//! Team rate limits: `rpm_limit`, `tpm_limit` and `max_parallel_requests`.
//!
//! Each team with a limit has one window record in shared data, for every
//! worker: the current minute, the requests and tokens counted in it, and
//! the requests in flight. Windows are fixed minutes (as LiteLLM's are): a
//! request is admitted while the minute's requests are under `rpm_limit`,
//! its tokens under `tpm_limit`, and the requests in flight under
//! `max_parallel_requests`. Tokens are counted when a response ends, from
//! its usage, in the minute it ends.

use crate::shared::{self, Record};

/// A team's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Minutes since the epoch.
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
    pub in_flight: u64,
}

impl Record for Window {
    fn encode_into(&self, out: &mut Vec<u8>) {
        shared::encode_u64s_into(&[self.minute, self.requests, self.tokens, self.in_flight], out)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            // Created empty when the config was loaded.
            return Some(Self::default());
        }
        let [minute, requests, tokens, in_flight] = shared::decode_u64s::<4>(bytes)?;
        Some(Self { minute, requests, tokens, in_flight })
    }
}

impl Window {
    /// The window as of `now_ms`: a new minute starts from zero (requests in
    /// flight carry over).
    fn at(&self, now_ms: u64) -> Window {
        let minute = now_ms / 60_000;
        if minute == self.minute {
            *self
        } else {
            Window { minute, requests: 0, tokens: 0, in_flight: self.in_flight }
        }
    }
}

/// Which limit refused a request, and what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// Seconds until the request may succeed.
    pub retry_after_s: u64,
    /// `x-ratelimit-*` headers.
    pub headers: Vec<(&'static str, String)>,
}

pub fn key(team: &str) -> String {
    format!("tollgate/limits/{team}")
}

/// The admission rule: counts the request in, or says which limit refused it.
pub fn admit(window: &Window, limits: &Limits, team: &str, now_ms: u64) -> Result<Window, Refusal> {
    let w = window.at(now_ms);
    let until_next_minute = 60 - (now_ms / 1000) % 60;
    let refuse = |what: &str, limit: u64, retry_after_s: u64| Refusal {
        message: format!(
            "Team \"{team}\" has reached its {what} of {limit}. Retry after {retry_after_s} s, or ask your platform team to raise the team's {what}."
        ),
        retry_after_s,
        headers: headers(&w, limits, until_next_minute),
    };
    if let Some(limit) = limits.parallel {
        if w.in_flight >= limit {
            return Err(refuse("max_parallel_requests", limit, 1));
        }
    }
    if let Some(limit) = limits.rpm {
        if w.requests >= limit {
            return Err(refuse("rpm_limit", limit, until_next_minute));
        }
    }
    if let Some(limit) = limits.tpm {
        if w.tokens >= limit {
            return Err(refuse("tpm_limit", limit, until_next_minute));
        }
    }
    Ok(Window { requests: w.requests.saturating_add(1), in_flight: w.in_flight.saturating_add(1), ..w })
}

/// A request ends: it leaves the in-flight count and its tokens are counted.
pub fn release(window: &Window, tokens: u64, now_ms: u64) -> Window {
    let w = window.at(now_ms);
    Window { tokens: w.tokens.saturating_add(tokens), in_flight: w.in_flight.saturating_sub(1), ..w }
}

/// OpenAI's rate-limit headers for a window.
fn headers(w: &Window, limits: &Limits, reset_s: u64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(limit) = limits.rpm {
        out.push(("x-ratelimit-limit-requests", limit.to_string()));
        out.push(("x-ratelimit-remaining-requests", limit.saturating_sub(w.requests).to_string()));
        out.push(("x-ratelimit-reset-requests", format!("{reset_s}s")));
    }
    if let Some(limit) = limits.tpm {
        out.push(("x-ratelimit-limit-tokens", limit.to_string()));
        out.push(("x-ratelimit-remaining-tokens", limit.saturating_sub(w.tokens).to_string()));
        out.push(("x-ratelimit-reset-tokens", format!("{reset_s}s")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_080_000; // 40 s into a minute

    #[test]
    fn rpm_counts_requests_per_minute() {
        let limits = Limits { rpm: Some(2), ..Limits::default() };
        let w = admit(&Window::default(), &limits, "a", T0).unwrap();
        let w = admit(&w, &limits, "a", T0).unwrap();
        let refused = admit(&w, &limits, "a", T0 + 1000).unwrap_err();
        assert_eq!(refused.retry_after_s, 19);
        assert!(refused.message.contains("rpm_limit of 2"), "{}", refused.message);
        assert!(refused.headers.contains(&("x-ratelimit-remaining-requests", "0".to_string())));
        assert!(refused.headers.contains(&("x-ratelimit-limit-requests", "2".to_string())));
        // The next minute starts afresh.
        assert!(admit(&w, &limits, "a", T0 + 20_000).is_ok());
    }

    #[test]
    fn tpm_counts_tokens_as_responses_end() {
        let limits = Limits { tpm: Some(100), ..Limits::default() };
        let w = admit(&Window::default(), &limits, "a", T0).unwrap();
        let w = release(&w, 100, T0);
        assert_eq!(w.in_flight, 0);
        let refused = admit(&w, &limits, "a", T0).unwrap_err();
        assert!(refused.headers.contains(&("x-ratelimit-remaining-tokens", "0".to_string())));
        assert!(admit(&w, &limits, "a", T0 + 60_000).is_ok());
    }

    #[test]
    fn parallel_counts_requests_in_flight() {
        let limits = Limits { parallel: Some(1), ..Limits::default() };
        let w = admit(&Window::default(), &limits, "a", T0).unwrap();
        let refused = admit(&w, &limits, "a", T0).unwrap_err();
        assert_eq!(refused.retry_after_s, 1);
        // In-flight requests carry over into a new minute.
        assert!(admit(&w, &limits, "a", T0 + 60_000).is_err());
        let w = release(&w, 0, T0 + 60_000);
        assert!(admit(&w, &limits, "a", T0 + 60_000).is_ok());
    }

    #[test]
    fn round_trips_through_shared_data() {
        let w = Window { minute: 5, requests: 6, tokens: 7, in_flight: 8 };
        assert_eq!(Window::decode(&w.encode()), Some(w));
    }
}
