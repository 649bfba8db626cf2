//! The gateway config file, field for field, in LiteLLM's shape.
//!
//! These types only describe what a user may write. Nothing here decides
//! anything; `compile` checks the values and turns them into a
//! [`crate::config::Gateway`]. Every struct refuses unknown fields so a typo
//! is an error with a field path instead of a silently ignored setting.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub model_list: Vec<ModelEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_settings: Option<RouterSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_access: Vec<TeamEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general_settings: Option<GeneralSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSettings>,
}

/// How callers authenticate besides team keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
}

/// JWT bearer tokens from an identity provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Algorithms accepted (default: those the keys can verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Seconds of clock skew tolerated on exp, nbf and iat (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<u64>,
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// A JSON Web Key Set to fetch, and refresh every `jwks_refresh_seconds`
    /// (default 300); the last good set is kept when a fetch fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_seconds: Option<u64>,
    /// The claim that names the team (default `team`); for a list (as
    /// `groups`), its first entry that is a team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_claim: Option<String>,
    /// The claim that names the user (e.g. `sub` or `email`): a stats
    /// label, and the holder of `user_max_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// USD per user, on top of the team's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_max_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_budget_duration: Option<String>,
}

/// One verifying key: a PEM public key, a JWK, or an HMAC secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<serde_json::Map<String, serde_json::Value>>,
    /// `os.environ/NAME` (or a literal, warned), for HS256/384/512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One deployment. Entries that share a `model_name` are deployments of one model.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub model_name: String,
    pub litellm_params: LitellmParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_info: Option<ModelInfo>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LitellmParams {
    /// `provider/upstream-model`, e.g. `openai/gpt-4o-mini`.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The deployment's share for `simple-shuffle` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The deployment's requests per minute, for `usage-based` routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// The deployment's tokens per minute, for `usage-based` routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Seconds before a request to this deployment times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// Prices, in USD per token, as LiteLLM names them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_cost_per_token: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cost_per_token: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_cost: Option<f64>,
    /// Anthropic's 5-minute cache writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost: Option<f64>,
    /// Anthropic's 1-hour cache writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost_above_1hr: Option<f64>,
    /// Groups a team's `models` may name to reach this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_groups: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_strategy: Option<String>,
    /// Retries on the same deployment (Envoy's router retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// Failures in a row a deployment may have; one more puts it in cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_fails: Option<u64>,
    /// Turns cooldowns off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_cooldowns: Option<bool>,
    /// Seconds a deployment stays in cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_time: Option<f64>,
    /// Seconds before a request times out, for deployments without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// `[{"gpt-4": ["claude-2"]}]`: models to try when a model fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<std::collections::BTreeMap<String, Vec<String>>>>,
}

/// One team: who it is, which keys authenticate it, what it may call.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    pub user_id: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// When spend starts again from zero: `30d`, `daily`, `monthly`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// USD; crossing it is counted and logged, once a period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u64>,
}

/// Gateway-wide settings. `max_request_size_mb` keeps LiteLLM's name.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeneralSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_size_mb: Option<f64>,
    /// How upstream cluster names are formed: `tollgate` (the clusters that
    /// `tollgate render` writes) or `istio` (`outbound|PORT||HOST`, the
    /// clusters Istio makes for a ServiceEntry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_naming: Option<String>,
    /// Let teams with a budget call models whose price is unknown (they are
    /// then counted at zero cost). Off by default: budgets must not leak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unpriced_models: Option<bool>,
    /// How often counter and gauge changes reach Envoy's stats, in ms
    /// (default 1000); 0 sends every change at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_flush_interval_ms: Option<u64>,
}

/// A team key: the key alone, or an object with its own rules.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ApiKey {
    Plain(String),
    Rules(KeyRules),
}

impl ApiKey {
    /// The key as written (`os.environ/NAME`, `sha256:<hex>` or a literal).
    pub fn key(&self) -> &str {
        match self {
            Self::Plain(k) => k,
            Self::Rules(r) => &r.key,
        }
    }
}

/// A key with its own rules, on top of its team's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyRules {
    pub key: String,
    /// The key's name in stats and `/v1/key/info`; never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// A subset of the team's models (the same forms as the team's list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// USD, on top of the team's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// `2026-12-31` or `2026-12-31T18:00:00Z` (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}
