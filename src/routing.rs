//! Which deployment serves a request, among a model's deployments: the
//! routing strategies of `router_settings.routing_strategy`, and cooldowns
//! that keep a failing deployment out for a while.
//!
//! What the strategies need to know about each deployment (requests in
//! flight, recent latency, this minute's requests and tokens, failures)
//! lives in shared data, one record per model, so every worker routes on
//! the same picture. A model with one deployment has nothing to choose and
//! keeps no record.

use crate::shared::{self, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// A weighted random draw, by `litellm_params.weight`.
    #[default]
    SimpleShuffle,
    /// The fewest requests in flight.
    LeastBusy,
    /// The lowest recent latency (a moving average).
    LatencyBased,
    /// The most headroom under the deployment's `rpm`/`tpm`.
    UsageBased,
    /// The cheapest price.
    CostBased,
}

impl Strategy {
    /// LiteLLM's names, with their `-routing` long forms.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "simple-shuffle" => Self::SimpleShuffle,
            "least-busy" => Self::LeastBusy,
            "latency-based" | "latency-based-routing" => Self::LatencyBased,
            "usage-based" | "usage-based-routing" | "usage-based-routing-v2" => Self::UsageBased,
            "cost-based" | "cost-based-routing" => Self::CostBased,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "simple-shuffle, least-busy, latency-based, usage-based, cost-based";

    /// Whether picking needs the shared record.
    pub fn needs_state(self) -> bool {
        matches!(self, Self::LeastBusy | Self::LatencyBased | Self::UsageBased)
    }
}

/// What the config says about one deployment, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// `litellm_params.weight` (default 1).
    pub weight: u64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Pico-USD for one input plus one output token (unknown: `u64::MAX`).
    pub price: u64,
}

/// When a deployment is taken out: `allowed_fails` failures in a row put it
/// in cooldown for `cooldown_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    pub allowed_fails: u64,
    pub cooldown_ms: u64,
}

/// One deployment's shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentState {
    pub in_flight: u64,
    /// Moving average of response times in ms (0: none measured yet).
    pub latency_ms: u64,
    /// Minutes since the epoch, for `requests` and `tokens`.
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
    /// Failures in a row.
    pub fails: u64,
    /// Out of rotation until then (ms since the epoch).
    pub cooldown_until_ms: u64,
}

const FIELDS: usize = 7;

/// A model's deployments' states, in the model's deployment order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelState(pub Vec<DeploymentState>);

impl Record for ModelState {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.0.len().saturating_mul(FIELDS * 8));
        for d in &self.0 {
            for field in [d.in_flight, d.latency_ms, d.minute, d.requests, d.tokens, d.fails, d.cooldown_until_ms] {
                out.extend_from_slice(&field.to_le_bytes());
            }
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() % (FIELDS * 8) != 0 {
            return None;
        }
        let states = bytes
            .chunks_exact(FIELDS * 8)
            .map(|c| {
                let [in_flight, latency_ms, minute, requests, tokens, fails, cooldown_until_ms] =
                    shared::decode_u64s::<FIELDS>(c)?;
                Some(DeploymentState { in_flight, latency_ms, minute, requests, tokens, fails, cooldown_until_ms })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self(states))
    }
}

impl ModelState {
    /// The state of the `i`-th deployment (a fresh one if the record is
    /// shorter, as after a config change).
    pub fn get(&self, i: usize) -> DeploymentState {
        self.0.get(i).copied().unwrap_or_default()
    }

    fn slot(&mut self, i: usize) -> Option<&mut DeploymentState> {
        if self.0.len() <= i {
            self.0.resize(i.checked_add(1)?, DeploymentState::default());
        }
        self.0.get_mut(i)
    }
}

pub fn key(model: &str) -> String {
    format!("tollgate/route/{model}")
}

impl DeploymentState {
    fn cooled_down(&self, now_ms: u64) -> bool {
        self.cooldown_until_ms > now_ms
    }

    /// This minute's requests and tokens (zero if the record is older).
    fn this_minute(&self, now_ms: u64) -> (u64, u64) {
        if self.minute == now_ms / 60_000 {
            (self.requests, self.tokens)
        } else {
            (0, 0)
        }
    }
}

/// Picks among a model's deployments (by position in the model). `random`
/// is a fresh random number; `n` counts this worker's requests, to break
/// ties in turn.
pub fn pick(strategy: Strategy, candidates: &[Candidate], state: &ModelState, now_ms: u64, random: u64, n: u64) -> Option<usize> {
    // One deployment is the answer whatever its state (a cooled-down one
    // is skipped only while another is open).
    if candidates.len() == 1 {
        return Some(0);
    }
    // Cooled-down deployments are skipped, unless all are.
    let mut open: Vec<usize> = (0..candidates.len()).filter(|&i| !state.get(i).cooled_down(now_ms)).collect();
    if open.is_empty() {
        open = (0..candidates.len()).collect();
    }
    let cand = |i: usize| candidates.get(i).copied();
    match strategy {
        Strategy::SimpleShuffle => {
            let total: u64 = open.iter().filter_map(|&i| cand(i)).map(|c| c.weight).sum();
            if total == 0 {
                return turn(&open, n);
            }
            let mut r = random % total;
            for &i in &open {
                let w = cand(i).map_or(0, |c| c.weight);
                if r < w {
                    return Some(i);
                }
                r -= w;
            }
            turn(&open, n)
        }
        Strategy::LeastBusy => lowest(&open, n, |i| state.get(i).in_flight),
        Strategy::LatencyBased => lowest(&open, n, |i| state.get(i).latency_ms),
        Strategy::CostBased => lowest(&open, n, |i| cand(i).map_or(u64::MAX, |c| c.price)),
        Strategy::UsageBased => {
            // Used share of the tighter limit, in millionths; no limit is 0.
            let used = |i: usize| -> u64 {
                let (requests, tokens) = state.get(i).this_minute(now_ms);
                let share = |used: u64, limit: Option<u64>| match limit {
                    Some(0) => u64::MAX,
                    Some(l) => used.saturating_mul(1_000_000) / l,
                    None => 0,
                };
                cand(i).map_or(u64::MAX, |c| share(requests, c.rpm).max(share(tokens, c.tpm)))
            };
            lowest(&open, n, used)
        }
    }
}

/// The next number of a small, fast pseudo-random sequence (SplitMix64),
/// for the weighted draw; not for anything secret.
pub fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn turn(among: &[usize], n: u64) -> Option<usize> {
    let len = among.len() as u64;
    if len == 0 {
        return None;
    }
    among.get(usize::try_from(n % len).ok()?).copied()
}

/// The deployment with the lowest `score`; ties are taken in turn.
fn lowest(among: &[usize], n: u64, score: impl Fn(usize) -> u64) -> Option<usize> {
    let best = among.iter().map(|&i| score(i)).min()?;
    let tied: Vec<usize> = among.iter().copied().filter(|&i| score(i) == best).collect();
    turn(&tied, n)
}

/// Whether every one of `len` deployments is in cooldown.
pub fn all_cooled(state: &ModelState, len: usize, now_ms: u64) -> bool {
    len > 0 && (0..len).all(|i| state.get(i).cooled_down(now_ms))
}

/// A request starts on deployment `i`: it is in flight, and counts in the
/// minute's requests (so a burst sees its own load).
pub fn on_start(state: &ModelState, i: usize, now_ms: u64) -> ModelState {
    let mut next = state.clone();
    if let Some(d) = next.slot(i) {
        d.roll(now_ms);
        d.in_flight = d.in_flight.saturating_add(1);
        d.requests = d.requests.saturating_add(1);
    }
    next
}

/// How a request on a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: its time is a latency sample.
    Success,
    /// No answer, a timeout, a 429, a 5xx, or an answer that says the
    /// deployment is unusable (401, 403, 404, 408).
    Failure,
    /// Neither: the client went away first, or the request was at fault
    /// (another 4xx). Nothing is learned about the deployment.
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Counted at its start ([`on_start`]).
    pub started: bool,
    pub outcome: Outcome,
    pub latency_ms: u64,
    pub tokens: u64,
}

/// The latency sample a failure counts as, so that a deployment that only
/// fails never looks fastest.
pub const FAILURE_LATENCY_MS: u64 = 10_000;

impl DeploymentState {
    /// Starts a new minute's counts if the minute has changed.
    fn roll(&mut self, now_ms: u64) {
        let minute = now_ms / 60_000;
        if self.minute != minute {
            *self = DeploymentState { minute, requests: 0, tokens: 0, ..*self };
        }
    }
}

/// A request on deployment `i` ended. Returns the new state, and whether
/// this failure put the deployment in cooldown: when its failures in a row
/// exceed `allowed_fails`, as LiteLLM counts them.
pub fn on_end(state: &ModelState, i: usize, ended: Ended, cooldown: Option<Cooldown>, now_ms: u64) -> (ModelState, bool) {
    let mut next = state.clone();
    let Some(d) = next.slot(i) else { return (next, false) };
    d.roll(now_ms);
    if ended.started {
        d.in_flight = d.in_flight.saturating_sub(1);
    } else {
        d.requests = d.requests.saturating_add(1);
    }
    d.tokens = d.tokens.saturating_add(ended.tokens);
    let sample = match ended.outcome {
        Outcome::Neutral => return (next, false),
        Outcome::Success => {
            d.fails = 0;
            ended.latency_ms
        }
        Outcome::Failure => {
            d.fails = d.fails.saturating_add(1);
            ended.latency_ms.max(FAILURE_LATENCY_MS)
        }
    };
    // A moving average: three tenths of the newest sample.
    d.latency_ms = if d.latency_ms == 0 {
        sample.max(1)
    } else {
        (d.latency_ms.saturating_mul(7).saturating_add(sample.saturating_mul(3)) / 10).max(1)
    };
    let mut cooled = false;
    if let Some(c) = cooldown {
        if d.fails > c.allowed_fails && !d.cooled_down(now_ms) {
            d.cooldown_until_ms = now_ms.saturating_add(c.cooldown_ms);
            d.fails = 0;
            cooled = true;
        }
    }
    (next, cooled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn cands(weights: &[u64]) -> Vec<Candidate> {
        weights.iter().map(|&weight| Candidate { weight, rpm: None, tpm: None, price: 10 }).collect()
    }

    fn state(states: &[DeploymentState]) -> ModelState {
        ModelState(states.to_vec())
    }

    #[test]
    fn names() {
        assert_eq!(Strategy::parse("usage-based-routing"), Some(Strategy::UsageBased));
        assert_eq!(Strategy::parse("latency-based"), Some(Strategy::LatencyBased));
        assert_eq!(Strategy::parse("fastest"), None);
    }

    #[test]
    fn simple_shuffle_follows_the_weights() {
        let c = cands(&[3, 1]);
        let picks: Vec<usize> =
            (0..4).map(|r| pick(Strategy::SimpleShuffle, &c, &ModelState::default(), NOW, r, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 0, 1]);
        // Zero weights fall back to taking turns.
        assert_eq!(pick(Strategy::SimpleShuffle, &cands(&[0, 0]), &ModelState::default(), NOW, 5, 1), Some(1));
    }

    #[test]
    fn least_busy_and_latency_and_cost() {
        let c = cands(&[1, 1, 1]);
        let busy = state(&[
            DeploymentState { in_flight: 3, latency_ms: 50, ..Default::default() },
            DeploymentState { in_flight: 1, latency_ms: 900, ..Default::default() },
            DeploymentState { in_flight: 2, latency_ms: 40, ..Default::default() },
        ]);
        assert_eq!(pick(Strategy::LeastBusy, &c, &busy, NOW, 0, 0), Some(1));
        assert_eq!(pick(Strategy::LatencyBased, &c, &busy, NOW, 0, 0), Some(2));
        let priced = vec![
            Candidate { price: 30, ..c[0] },
            Candidate { price: 10, ..c[1] },
            Candidate { price: 10, ..c[2] },
        ];
        // Ties are taken in turn.
        assert_eq!(pick(Strategy::CostBased, &priced, &ModelState::default(), NOW, 0, 0), Some(1));
        assert_eq!(pick(Strategy::CostBased, &priced, &ModelState::default(), NOW, 0, 1), Some(2));
    }

    #[test]
    fn usage_based_prefers_headroom() {
        let c = vec![
            Candidate { weight: 1, rpm: Some(10), tpm: None, price: 0 },
            Candidate { weight: 1, rpm: Some(100), tpm: Some(1000), price: 0 },
        ];
        let minute = NOW / 60_000;
        let s = state(&[
            DeploymentState { minute, requests: 5, ..Default::default() },
            DeploymentState { minute, requests: 5, tokens: 900, ..Default::default() },
        ]);
        // 50% of rpm against 90% of tpm.
        assert_eq!(pick(Strategy::UsageBased, &c, &s, NOW, 0, 0), Some(0));
        // A minute later both are fresh: ties in turn.
        assert_eq!(pick(Strategy::UsageBased, &c, &s, NOW + 60_000, 0, 1), Some(1));
    }

    #[test]
    fn cooldown_keeps_a_failing_deployment_out_then_lets_it_back() {
        let c = cands(&[1, 1]);
        let policy = Some(Cooldown { allowed_fails: 1, cooldown_ms: 5_000 });
        let failed = Ended { started: false, outcome: Outcome::Failure, latency_ms: 1, tokens: 0 };
        let (s, cooled) = on_end(&ModelState::default(), 0, failed, policy, NOW);
        assert!(!cooled);
        // The second failure exceeds allowed_fails: 1.
        let (s, cooled) = on_end(&s, 0, failed, policy, NOW);
        assert!(cooled);
        for r in 0..10 {
            assert_eq!(pick(Strategy::SimpleShuffle, &c, &s, NOW + 4_999, r, r), Some(1));
        }
        assert_eq!(pick(Strategy::SimpleShuffle, &c, &s, NOW + 5_000, 0, 0), Some(0));
        // When every deployment is cooling down, they are all tried.
        let (s, _) = on_end(&s, 1, failed, policy, NOW);
        let (s, _) = on_end(&s, 1, failed, policy, NOW);
        assert!(pick(Strategy::SimpleShuffle, &c, &s, NOW + 1, 0, 0).is_some());
        // A success resets the count; a client that went away changes nothing.
        let (n, _) = on_end(&ModelState::default(), 0, Ended { outcome: Outcome::Neutral, ..failed }, policy, NOW);
        assert_eq!(n.get(0).fails, 0);
        assert_eq!(n.get(0).latency_ms, 0);
        let ok = Ended { outcome: Outcome::Success, ..failed };
        let (s, _) = on_end(&ModelState::default(), 0, failed, policy, NOW);
        let (s, _) = on_end(&s, 0, ok, policy, NOW);
        assert_eq!(s.get(0).fails, 0);
    }

    #[test]
    fn in_flight_latency_and_usage_are_kept() {
        let s = on_start(&ModelState::default(), 1, NOW);
        assert_eq!(s.get(1).in_flight, 1);
        assert_eq!(s.0.len(), 2);
        let ended = Ended { started: true, outcome: Outcome::Success, latency_ms: 100, tokens: 42 };
        let (s, _) = on_end(&s, 1, ended, None, NOW);
        let d = s.get(1);
        assert_eq!((d.in_flight, d.latency_ms, d.requests, d.tokens), (0, 100, 1, 42));
        let (s, _) = on_end(&s, 1, Ended { latency_ms: 200, ..ended }, None, NOW);
        assert_eq!(s.get(1).latency_ms, 130);
        // A deployment that only fails never looks fastest.
        let (f, _) = on_end(&ModelState::default(), 0, Ended { outcome: Outcome::Failure, latency_ms: 5, ..ended }, None, NOW);
        assert_eq!(f.get(0).latency_ms, FAILURE_LATENCY_MS);
        assert_eq!(ModelState::decode(&s.encode()), Some(s));
    }
}
