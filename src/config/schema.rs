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
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_strategy: Option<String>,
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
    pub api_keys: Vec<String>,
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
