//! Metric names. Tollgate's metrics are Envoy stats defined by the filter;
//! labels travel inside the stat name as `;label=value` and are pulled out by
//! the `stats_tags` rules that `tollgate render` writes, so that Prometheus
//! (at `/metrics` or the admin's `/stats/prometheus`) sees
//! `tollgate_requests_total{team="team-alpha",model="gpt-4.1-mini",...}`.
//!
//! Label values are configured team and model names (which may not contain
//! `;`), provider names, status codes and fixed words, so cardinality is
//! bounded by the config.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Requests,
    Tokens,
    Spend,
    BudgetRemaining,
    Denied,
    Duration,
    TimeToFirstToken,
    Estimated,
    DeploymentCooldowns,
    Fallbacks,
    SoftBudgetCrossed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Metric {
    pub fn base(self) -> &'static str {
        match self {
            Self::Requests => "tollgate_requests_total",
            Self::Tokens => "tollgate_tokens_total",
            Self::Spend => "tollgate_spend_micro_usd_total",
            Self::BudgetRemaining => "tollgate_budget_remaining_micro_usd",
            Self::Denied => "tollgate_denied_total",
            Self::Duration => "tollgate_request_duration_milliseconds",
            Self::Estimated => "tollgate_estimated_requests_total",
            Self::TimeToFirstToken => "tollgate_time_to_first_token_milliseconds",
            Self::DeploymentCooldowns => "tollgate_deployment_cooldowns_total",
            Self::Fallbacks => "tollgate_fallbacks_total",
            Self::SoftBudgetCrossed => "tollgate_soft_budget_crossed_total",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Self::BudgetRemaining => Kind::Gauge,
            Self::Duration | Self::TimeToFirstToken => Kind::Histogram,
            _ => Kind::Counter,
        }
    }
}

/// Every label any metric carries, in the order names are built.
pub const LABELS: [&str; 10] =
    ["team", "model", "provider", "code", "type", "reason", "deployment", "fallback", "key", "user"];

/// The character that may not appear in label values.
pub const SEPARATOR: char = ';';

/// The stat name for a metric with its labels.
pub fn name(metric: Metric, labels: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(96);
    out.push_str(metric.base());
    for (label, value) in labels {
        let _ = write!(out, "{SEPARATOR}{label}={value}");
    }
    out
}

/// Envoy `stats_config.stats_tags` rules: (tag name, regex). The regex's
/// first group is cut from the stat name; its second is the label value.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    LABELS
        .iter()
        .map(|label| (*label, format!("({SEPARATOR}{label}=([^{SEPARATOR}]*))")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rules() {
        let n = name(Metric::Requests, &[("team", "team-alpha"), ("model", "gpt-4.1-mini"), ("code", "200")]);
        assert_eq!(n, "tollgate_requests_total;team=team-alpha;model=gpt-4.1-mini;code=200");
        let tags = stats_tags();
        assert_eq!(tags[0], ("team", "(;team=([^;]*))".to_string()));
        assert_eq!(tags.len(), LABELS.len());
        assert_eq!(Metric::Duration.kind(), Kind::Histogram);
    }
}
