//! The gateway config: read (`parse_*`), checked and compiled (`compile`)
//! into [`Gateway`], the form the request path uses. All lookups the request
//! path needs are built here, once, when the config is loaded.

mod compile;
pub mod schema;
pub mod secret;

use std::collections::HashMap;
use std::fmt;

pub use compile::{compile, Compiled};
pub use schema::ConfigFile;

use crate::pricing::Price;
use crate::limits::Limits;
use crate::providers::Provider;
use crate::routing::{Candidate, Cooldown, Strategy};
use crate::request::Endpoint;
use crate::upstream::UpstreamUrl;

/// A config error, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Reads the config from JSON (the form Envoy hands to the filter).
pub fn parse_json(text: &str) -> Result<ConfigFile, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| path_error(e.path(), e.inner()))
}

/// Reads the config from YAML (the form users write).
#[cfg(feature = "cli")]
pub fn parse_yaml(text: &str) -> Result<ConfigFile, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| path_error(e.path(), e.inner()))
}

fn path_error(path: &serde_path_to_error::Path, inner: &dyn fmt::Display) -> ConfigError {
    let path = path.to_string();
    let path = if path == "." { String::new() } else { path };
    // serde_yaml_ng starts its messages with its own (shorter) path: keep ours.
    let message = inner.to_string();
    let message = match message.split_once(": ") {
        Some((own, rest)) if !own.is_empty() && path.starts_with(own) => rest.to_string(),
        _ => message,
    };
    ConfigError::new(path, message)
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What the native build cannot do: Envoy gives a dynamic module's HTTP
/// filter no timer to fetch a key set on. `None` if `gw` is fine for it.
pub fn native_unsupported(gw: &Gateway) -> Option<&'static str> {
    gw.jwt.as_ref().is_some_and(|j| j.jwks.is_some()).then_some(
        "auth.jwt.jwks_uri: the native build cannot fetch a key set (Envoy gives its filters no timer); give the keys inline in auth.jwt.keys, or use the wasm build",
    )
}
pub const DEFAULT_STATS_FLUSH_MS: u64 = 1000;

/// The compiled gateway: models, deployments and teams, indexed.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub models: Vec<Model>,
    pub deployments: Vec<Deployment>,
    pub teams: Vec<Team>,
    pub max_body_bytes: usize,
    /// How often counter changes are flushed to Envoy; 0: at once.
    pub stats_flush_ms: u64,
    pub strategy: Strategy,
    /// None: cooldowns are off (`allowed_fails: 0`).
    pub cooldown: Option<Cooldown>,
    /// Router retries on the same deployment.
    pub num_retries: u32,
    /// `auth.jwt`, if callers may present JWTs.
    pub jwt: Option<std::sync::Arc<crate::jwt::JwtAuth>>,
    /// Teams by `user_id`.
    pub team_index: HashMap<String, usize>,
    /// Keys given as objects, with their own rules.
    pub key_rules: Vec<KeyRule>,
    model_index: HashMap<String, usize>,
    /// Team keys by the first 8 bytes of their SHA-256 digest; see `auth`.
    key_buckets: HashMap<u64, Vec<TeamKey>>,
}

#[derive(Debug, Clone)]
pub struct TeamKey {
    pub digest: [u8; 32],
    pub team: usize,
    /// Its own rules, in `Gateway::key_rules`, if it was given as an object.
    pub rules: Option<usize>,
}

/// A key's own rules, on top of its team's.
#[derive(Debug, Clone)]
pub struct KeyRule {
    pub team: usize,
    pub alias: String,
    /// By model index: may this key call it? (None: as its team.)
    pub allowed: Option<Vec<bool>>,
    pub budget_micro: Option<u64>,
    pub period: Option<crate::period::Period>,
    pub ledger_key: String,
    /// Refused from then on (ms since the epoch).
    pub expires_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// Indexes into `Gateway::deployments`; never empty.
    pub deployments: Vec<usize>,
    /// The shared-data key of the model's routing record (`routing`).
    pub route_key: String,
    /// Whether routing keeps a shared record for this model: it has several
    /// deployments, and its strategy or cooldowns need one.
    pub tracked: bool,
    /// What routing knows of each deployment, in `deployments` order.
    pub candidates: Vec<Candidate>,
    /// Models to try, in order, when this one fails (`router_settings.fallbacks`).
    pub fallbacks: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub model: usize,
    pub provider: Provider,
    pub upstream_model: String,
    /// `upstream_model` as a JSON string token, ready to splice into a body.
    pub upstream_model_json: String,
    pub url: UpstreamUrl,
    pub cluster: String,
    pub authority: String,
    /// Upstream path per [`Endpoint`]; None where the provider lacks it.
    pub paths: [Option<String>; Endpoint::COUNT],
    /// Headers that carry the provider key (empty when no key is configured).
    pub auth_headers: Vec<(&'static str, String)>,
    /// Per-token prices: `model_info`, else the built-in table; None if unknown.
    pub price: Option<Price>,
    /// What routing knows of it: weight, rpm, tpm, price.
    pub candidate: Candidate,
    /// `timeout` (or `router_settings.timeout`) in ms.
    pub timeout_ms: Option<u64>,
}

impl Deployment {
    pub fn path(&self, endpoint: Endpoint) -> Option<&str> {
        self.paths.get(endpoint as usize).and_then(|p| p.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct Team {
    pub id: String,
    /// By model index: may this team call it?
    pub allowed: Vec<bool>,
    /// `max_budget` in micro-USD.
    pub budget_micro: Option<u64>,
    /// The shared-data key of the team's ledger.
    pub ledger_key: String,
    /// The `GET /v1/models` answer for this team, rendered once.
    pub models_body: String,
    /// When the budget's spend starts again from zero.
    pub period: Option<crate::period::Period>,
    /// `soft_budget` in micro-USD.
    pub soft_budget_micro: Option<u64>,
    pub limits: Limits,
    /// The shared-data key of the team's rate-limit window.
    pub limits_key: String,
}

impl Team {
    /// Whether the team has a ledger: a budget, or a soft budget to watch.
    pub fn tracks_spend(&self) -> bool {
        self.budget_micro.is_some() || self.soft_budget_micro.is_some()
    }

    /// The start of the budget period at `now_ms` (0 without periods).
    pub fn period_start(&self, now_ms: u64) -> u64 {
        self.period.map_or(0, |p| p.start(now_ms))
    }

    pub fn may_use(&self, model: usize) -> bool {
        self.allowed.get(model).copied().unwrap_or(false)
    }
}

impl Gateway {
    pub fn model_by_name(&self, name: &str) -> Option<usize> {
        self.model_index.get(name).copied()
    }

    pub fn keys_in_bucket(&self, bucket: u64) -> &[TeamKey] {
        self.key_buckets.get(&bucket).map_or(&[], Vec::as_slice)
    }
}

/// The bucket a key digest falls in: its first 8 bytes.
pub fn key_bucket(digest: &[u8; 32]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *digest;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}
