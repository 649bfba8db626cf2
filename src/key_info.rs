//! `GET /v1/key/info`: where the caller stands. Built from the caller's own
//! team only: its models, budget, spend this period, when the period
//! resets, and its rate limits with this minute's use.

use serde_json::{json, Value};

use crate::budget::Ledger;
use crate::config::{Gateway, KeyRule};
use crate::limits::Window;
use crate::period;

fn usd(micro: u64) -> f64 {
    micro as f64 / 1e6
}

/// The answer for `team`, given its ledger and rate-limit window as read
/// from shared data (defaults when it keeps none), at `now_ms`.
pub fn body(gw: &Gateway, team: usize, key: Option<(&KeyRule, Ledger)>, ledger: Ledger, window: Window, now_ms: u64) -> String {
    let Some(t) = gw.teams.get(team) else { return "{}".to_string() };
    let key_allows = |i: usize| key.and_then(|(r, _)| r.allowed.as_ref()).map_or(true, |a| a.get(i).copied().unwrap_or(false));
    let models: Vec<&str> = gw
        .models
        .iter()
        .enumerate()
        .filter(|(i, _)| t.may_use(*i) && key_allows(*i))
        .map(|(_, m)| m.name.as_str())
        .collect();
    let key_info = key.map(|(rule, ledger)| {
        let ledger = ledger.at(rule.period.map_or(0, |p| p.start(now_ms)));
        json!({
            "alias": rule.alias,
            "max_budget": rule.budget_micro.map(usd),
            "spend": rule.budget_micro.map(|_| usd(ledger.spent)),
            "remaining": rule.budget_micro.map(|b| usd(ledger.remaining(b))),
            "budget_reset_at": rule.period.map(|p| period::rfc3339(p.next(now_ms))),
            "expires_at": rule.expires_ms.map(period::rfc3339),
        })
    });
    let ledger = ledger.at(t.period_start(now_ms));
    let minute_now = now_ms / 60_000;
    let (requests, tokens) = if window.minute == minute_now { (window.requests, window.tokens) } else { (0, 0) };
    let budget = json!({
        "max_budget": t.budget_micro.map(usd),
        "soft_budget": t.soft_budget_micro.map(usd),
        "spend": usd(ledger.spent),
        "reserved": usd(ledger.reserved),
        "remaining": t.budget_micro.map(|b| usd(ledger.remaining(b))),
        "budget_reset_at": t.period.map(|p| period::rfc3339(p.next(now_ms))),
    });
    let limit = |v: Option<u64>| v.map_or(Value::Null, Value::from);
    let info = json!({
        "team": t.id,
        "key": key_info,
        "models": models,
        "budget": budget,
        "limits": {
            "rpm_limit": limit(t.limits.rpm),
            "tpm_limit": limit(t.limits.tpm),
            "max_parallel_requests": limit(t.limits.parallel),
            "requests_this_minute": requests,
            "tokens_this_minute": tokens,
            "requests_in_flight": window.in_flight,
        },
    });
    info.to_string()
}
