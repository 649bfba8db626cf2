//! Checks a [`ConfigFile`] and compiles it into a [`Gateway`].
//!
//! Every problem is reported with the path of the field at fault, and all of
//! them are reported at once, so a user fixes a file in one pass.

use std::collections::HashMap;

use super::schema::{ApiKey, ConfigFile, KeyRules, ModelEntry, TeamEntry};
use super::secret::{self, Env, KeyRef};
use super::{
    key_bucket, ConfigError, Deployment, Gateway, KeyRule, Model, Team, TeamKey, DEFAULT_MAX_BODY_BYTES, DEFAULT_STATS_FLUSH_MS,
};
use crate::budget;
use crate::json_scan::encode_string;
use crate::pricing::{self, Price};
use crate::limits::{self, Limits};
use crate::providers::Provider;
use crate::request::Endpoint;
use crate::routing::{self, Candidate, Cooldown, Strategy};
use crate::upstream::{ClusterNaming, UpstreamUrl};

mod jwt;

/// LiteLLM's cooldown defaults: a fourth failure in a row (more than three
/// allowed) puts a deployment out for five seconds.
const DEFAULT_ALLOWED_FAILS: u64 = 3;
const DEFAULT_COOLDOWN_SECS: f64 = 5.0;

/// The largest request body the gateway will hold in memory.
const MAX_BODY_LIMIT_MB: f64 = 64.0;

/// The label used for callers that are not authenticated; no team may take it.
pub const UNKNOWN_TEAM: &str = "unknown";

#[derive(Debug)]
pub struct Compiled {
    pub gateway: Gateway,
    /// Things that work but deserve a second look (literal keys, ...).
    pub warnings: Vec<String>,
    /// Every environment variable the config reads, for Envoy's
    /// `vm_config.environment_variables.host_env_keys`.
    pub env_keys: Vec<String>,
}

struct Ctx<'e> {
    env: &'e dyn Env,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    env_keys: Vec<String>,
}

impl Ctx<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Resolves a key to its value; `None` after recording an error.
    fn resolve(&mut self, path: &str, raw: &str, allow_digest: bool) -> Option<KeyRef> {
        match secret::parse_key(raw, allow_digest) {
            Err(msg) => {
                self.error(path, msg);
                None
            }
            Ok(KeyRef::Env(name)) => {
                if !self.env_keys.contains(&name) {
                    self.env_keys.push(name.clone());
                }
                match self.env.var(&name) {
                    Some(v) if !v.trim().is_empty() => Some(KeyRef::Literal(v.trim().to_string())),
                    Some(_) => {
                        self.error(path, format!("environment variable {name} is empty"));
                        None
                    }
                    None => {
                        self.error(path, format!("environment variable {name} is not set"));
                        None
                    }
                }
            }
            Ok(KeyRef::Literal(v)) => {
                self.warnings.push(format!(
                    "{path}: a literal key is stored in the config (and so in Envoy's config dump); prefer os.environ/NAME{}",
                    if allow_digest { " or sha256:<hex>" } else { "" }
                ));
                Some(KeyRef::Literal(v))
            }
            Ok(digest) => Some(digest),
        }
    }
}

/// Checks the file and builds the gateway. `env` supplies `os.environ/…` keys.
pub fn compile(file: &ConfigFile, env: &dyn Env) -> Result<Compiled, Vec<ConfigError>> {
    let mut cx = Ctx { env, errors: Vec::new(), warnings: Vec::new(), env_keys: Vec::new() };

    let settings = file.general_settings.clone().unwrap_or_default();
    let naming = match settings.cluster_naming.as_deref() {
        None => ClusterNaming::default(),
        Some(s) => ClusterNaming::parse(s).unwrap_or_else(|| {
            cx.error(
                "general_settings.cluster_naming",
                format!("unknown value \"{s}\"; use tollgate or istio"),
            );
            ClusterNaming::default()
        }),
    };
    let max_body_bytes = match settings.max_request_size_mb {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(mb) if mb.is_finite() && mb * 1024.0 * 1024.0 >= 1024.0 && mb <= MAX_BODY_LIMIT_MB => {
            // Bounded above, so the conversion cannot overflow.
            (mb * 1024.0 * 1024.0) as usize
        }
        Some(mb) => {
            cx.error(
                "general_settings.max_request_size_mb",
                format!("{mb} is out of range; use at least 0.001 (1 KiB) and at most {MAX_BODY_LIMIT_MB}"),
            );
            DEFAULT_MAX_BODY_BYTES
        }
    };

    let allow_unpriced = settings.allow_unpriced_models.unwrap_or(false);
    let stats_flush_ms = match settings.stats_flush_interval_ms {
        None => DEFAULT_STATS_FLUSH_MS,
        Some(ms) if ms <= 60_000 => ms,
        Some(ms) => {
            cx.error("general_settings.stats_flush_interval_ms", format!("{ms} is too long; use at most 60000 (0 sends every change at once)"));
            DEFAULT_STATS_FLUSH_MS
        }
    };
    let router = file.router_settings.clone().unwrap_or_default();
    let strategy = match router.routing_strategy.as_deref() {
        None => Strategy::default(),
        Some(name) => Strategy::parse(name).unwrap_or_else(|| {
            cx.error(
                "router_settings.routing_strategy",
                format!("unknown strategy \"{name}\"; use one of {}", Strategy::NAMES),
            );
            Strategy::default()
        }),
    };
    let default_timeout_ms = seconds_to_ms(&mut cx, "router_settings.timeout", router.timeout);
    let cooldown_ms = seconds_to_ms(&mut cx, "router_settings.cooldown_time", router.cooldown_time)
        .unwrap_or((DEFAULT_COOLDOWN_SECS * 1000.0) as u64);
    let cooldown = (!router.disable_cooldowns.unwrap_or(false)).then(|| Cooldown {
        allowed_fails: router.allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS),
        cooldown_ms,
    });
    let num_retries = router.num_retries.unwrap_or(0);
    if num_retries > 10 {
        cx.error("router_settings.num_retries", format!("{num_retries} is too many; use at most 10"));
    }

    if file.model_list.is_empty() {
        cx.error("model_list", "list at least one model");
    }
    let mut models: Vec<Model> = Vec::new();
    let mut model_index: HashMap<String, usize> = HashMap::new();
    // Access groups (`model_info.access_groups`) and their models.
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    let mut deployments = Vec::new();
    for (i, entry) in file.model_list.iter().enumerate() {
        let base = format!("model_list[{i}]");
        let name = entry.model_name.as_str();
        if let Err(msg) = check_label(name) {
            cx.error(format!("{base}.model_name"), msg);
            continue;
        }
        let model = match model_index.get(name) {
            Some(&m) => m,
            None => {
                models.push(Model {
                    name: name.to_string(),
                    deployments: Vec::new(),
                    route_key: routing::key(name),
                    tracked: false,
                    candidates: Vec::new(),
                    fallbacks: Vec::new(),
                });
                let m = models.len().saturating_sub(1);
                model_index.insert(name.to_string(), m);
                m
            }
        };
        for group in entry.model_info.iter().flat_map(|i| i.access_groups.iter().flatten()) {
            let members = groups.entry(group.clone()).or_default();
            if !members.contains(&model) {
                members.push(model);
            }
        }
        if let Some(d) = deployment(&mut cx, &base, entry, model, naming) {
            deployments.push(d);
            if let Some(m) = models.get_mut(model) {
                m.deployments.push(deployments.len().saturating_sub(1));
            }
        }
    }
    for d in &mut deployments {
        if d.timeout_ms.is_none() {
            d.timeout_ms = default_timeout_ms;
        }
    }
    for (i, fallback) in router.fallbacks.iter().flatten().enumerate() {
        for (from, to) in fallback {
            let Some(&source) = model_index.get(from) else {
                cx.error(format!("router_settings.fallbacks[{i}]"), format!("unknown model \"{from}\""));
                continue;
            };
            for (j, name) in to.iter().enumerate() {
                match model_index.get(name) {
                    Some(&target) if target == source => {
                        cx.error(format!("router_settings.fallbacks[{i}].{from}[{j}]"), "a model cannot fall back to itself");
                    }
                    Some(&target) => {
                        if let Some(m) = models.get_mut(source) {
                            if !m.fallbacks.contains(&target) {
                                m.fallbacks.push(target);
                            }
                        }
                    }
                    None => cx.error(format!("router_settings.fallbacks[{i}].{from}[{j}]"), format!("unknown model \"{name}\"")),
                }
            }
        }
    }
    for m in &mut models {
        // Cooldowns matter where there is somewhere else to go.
        let elsewhere = m.deployments.len() > 1 || !m.fallbacks.is_empty();
        m.tracked = (m.deployments.len() > 1 && strategy.needs_state()) || (elsewhere && cooldown.is_some());
        m.candidates = m.deployments.iter().filter_map(|&d| deployments.get(d).map(|d| d.candidate)).collect();
    }

    let mut teams = Vec::new();
    let mut key_buckets: HashMap<u64, Vec<TeamKey>> = HashMap::new();
    let mut team_ids: HashMap<&str, usize> = HashMap::new();
    let mut key_rules: Vec<KeyRule> = Vec::new();
    for (i, entry) in file.user_access.iter().enumerate() {
        let base = format!("user_access[{i}]");
        let id = entry.user_id.as_str();
        if let Err(msg) = check_label(id) {
            cx.error(format!("{base}.user_id"), msg);
        } else if id == UNKNOWN_TEAM {
            cx.error(
                format!("{base}.user_id"),
                format!("\"{UNKNOWN_TEAM}\" is reserved: metrics use it for unauthenticated callers"),
            );
        } else if let Some(first) = team_ids.insert(id, i) {
            cx.error(format!("{base}.user_id"), format!("duplicate team \"{id}\" (also user_access[{first}])"));
        }
        let team_index = teams.len();
        let names = Names { models: &models, deployments: &deployments, index: &model_index, groups: &groups };
        let team = team(&mut cx, &base, entry, &names);
        if entry.max_budget.is_some() && !allow_unpriced {
            check_priced(&mut cx, &base, entry, &names);
        }
        for (k, api_key) in entry.api_keys.iter().enumerate() {
            let item = format!("{base}.api_keys[{k}]");
            let path = match api_key {
                ApiKey::Plain(_) => item.clone(),
                ApiKey::Rules(_) => format!("{item}.key"),
            };
            let digest = match cx.resolve(&path, api_key.key(), true) {
                Some(KeyRef::Digest(d)) => d,
                Some(KeyRef::Literal(v)) | Some(KeyRef::Env(v)) => secret::sha256(v.as_bytes()),
                None => continue,
            };
            let rules = match api_key {
                ApiKey::Plain(_) => None,
                ApiKey::Rules(r) => {
                    let rule = key_rule(&mut cx, &item, r, team_index, &team, &names, k);
                    key_rules.push(rule);
                    Some(key_rules.len() - 1)
                }
            };
            let bucket = key_buckets.entry(key_bucket(&digest)).or_default();
            if let Some(other) = bucket.iter().find(|k| k.digest == digest) {
                let owner = file.user_access.get(other.team).map_or("?", |t| t.user_id.as_str());
                cx.error(path, format!("the same key is already given to team \"{owner}\""));
                continue;
            }
            bucket.push(TeamKey { digest, team: team_index, rules });
        }
        if entry.api_keys.is_empty() {
            cx.warnings.push(format!("{base}: team \"{id}\" has no api_keys, so no caller can authenticate as it"));
        }
        teams.push(team);
    }

    let jwt = file.auth.as_ref().and_then(|a| a.jwt.as_ref()).and_then(|j| jwt::compile(&mut cx, j, naming)).map(std::sync::Arc::new);
    let team_index: HashMap<String, usize> = teams.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();

    if file.user_access.is_empty() {
        cx.warnings.push("user_access is empty: no caller can authenticate, so every request gets 401".to_string());
    }
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    Ok(Compiled {
        gateway: Gateway {
            models,
            deployments,
            teams,
            max_body_bytes,
            stats_flush_ms,
            strategy,
            cooldown,
            num_retries,
            jwt,
            team_index,
            key_rules,
            model_index,
            key_buckets,
        },
        warnings: cx.warnings,
        env_keys: cx.env_keys,
    })
}

/// Team and model names become metric labels; see `metrics`.
fn check_label(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err("must be a non-empty name without control characters".to_string());
    }
    if name.contains(crate::metrics::SEPARATOR) {
        return Err(format!(
            "\"{name}\" may not contain '{}': it separates labels in metric names",
            crate::metrics::SEPARATOR
        ));
    }
    Ok(())
}

fn deployment(cx: &mut Ctx<'_>, base: &str, entry: &ModelEntry, model: usize, naming: ClusterNaming) -> Option<Deployment> {
    let params = &entry.litellm_params;
    let path = format!("{base}.litellm_params.model");
    let Some((prefix, upstream_model)) = params.model.split_once('/') else {
        cx.error(path, format!("\"{}\" must be provider/model, e.g. openai/gpt-4o", params.model));
        return None;
    };
    let Some(provider) = Provider::from_prefix(prefix) else {
        let known: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
        cx.error(path, format!("unknown provider \"{prefix}\"; supported: {}", known.join(", ")));
        return None;
    };
    if upstream_model.trim().is_empty() {
        cx.error(path, format!("\"{}\" names no upstream model after the provider", params.model));
        return None;
    }

    let Some(api_base) = params.api_base.as_deref().or(provider.default_api_base()) else {
        let example = match provider {
            Provider::Azure => "https://<resource>.openai.azure.com",
            _ => "http://vllm.internal:8000/v1",
        };
        cx.error(
            format!("{base}.litellm_params.api_base"),
            format!("{} deployments have no default api_base; set one, e.g. {example}", provider.name()),
        );
        return None;
    };
    let url = match UpstreamUrl::parse(api_base) {
        Ok(u) => u,
        Err(msg) => {
            cx.error(format!("{base}.litellm_params.api_base"), msg);
            return None;
        }
    };
    let auth_headers = match params.api_key.as_deref() {
        None => {
            if params.api_base.is_none() {
                cx.warnings.push(format!(
                    "{base}.litellm_params: no api_key, so requests reach {api_base} without credentials"
                ));
            }
            Vec::new()
        }
        Some(raw) => {
            let path = format!("{base}.litellm_params.api_key");
            match cx.resolve(&path, raw, false)? {
                KeyRef::Literal(key) if key.bytes().all(|b| b.is_ascii_graphic()) => provider.auth_headers(&key),
                KeyRef::Literal(_) => {
                    let source = secret::env_name(raw).map_or("the key".to_string(), |n| format!("the value of {n}"));
                    cx.error(path, format!("{source} has characters that cannot go in an HTTP header (spaces, control characters or non-ASCII)"));
                    return None;
                }
                KeyRef::Env(_) | KeyRef::Digest(_) => return None,
            }
        }
    };
    let price = price(cx, base, entry, upstream_model);
    if params.api_version.is_some() && provider != Provider::Azure {
        cx.warnings.push(format!(
            "{base}.litellm_params.api_version: {} deployments do not use it; it is ignored",
            provider.name()
        ));
    }
    if let Some(version) = params.api_version.as_deref() {
        if version.trim().is_empty() || version.contains(char::is_whitespace) {
            cx.error(format!("{base}.litellm_params.api_version"), format!("\"{version}\" is not an API version, e.g. 2024-10-21"));
            return None;
        }
    }
    let paths = Endpoint::ALL.map(|e| provider.upstream_path(&url.base_path, e, upstream_model, params.api_version.as_deref()));
    let weight = match params.weight {
        None => 1000,
        Some(w) if w.is_finite() && (0.0..=1e6).contains(&w) => (w * 1000.0).round() as u64,
        Some(w) => {
            cx.error(format!("{base}.litellm_params.weight"), format!("{w} is not a weight; use a number from 0 to 1000000"));
            return None;
        }
    };
    let timeout_ms = seconds_to_ms(cx, &format!("{base}.litellm_params.timeout"), params.timeout);
    Some(Deployment {
        model,
        provider,
        upstream_model: upstream_model.to_string(),
        upstream_model_json: encode_string(upstream_model),
        cluster: url.cluster_name(naming),
        authority: url.authority(),
        url,
        paths,
        auth_headers,
        price,
        candidate: Candidate {
            weight,
            rpm: params.rpm,
            tpm: params.tpm,
            price: price.map_or(u64::MAX, |p| p.input.saturating_add(p.output)),
        },
        timeout_ms,
    })
}

/// An amount in USD from the config: none, or 0 and more.
fn check_usd(cx: &mut Ctx<'_>, path: &str, usd: Option<f64>) {
    if let Some(b) = usd.filter(|b| !b.is_finite() || *b < 0.0) {
        cx.error(path.to_string(), format!("{b} must be an amount of 0 or more, in USD"));
    }
}

/// A budget period from the config (`budget_duration`), if any.
fn parse_period(cx: &mut Ctx<'_>, path: &str, text: Option<&str>) -> Option<crate::period::Period> {
    let text = text?;
    let parsed = crate::period::Period::parse(text);
    if parsed.is_none() {
        cx.error(path.to_string(), format!("\"{text}\" is not a period; use 30d, 7d, 1d, 12h, daily, weekly or monthly"));
    }
    parsed
}

/// A time in seconds from the config, in ms; refused unless positive and at
/// most a day.
fn seconds_to_ms(cx: &mut Ctx<'_>, path: &str, seconds: Option<f64>) -> Option<u64> {
    let s = seconds?;
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Some(((s * 1000.0).round() as u64).max(1))
    } else {
        cx.error(path.to_string(), format!("{s} is not a time in seconds; use more than 0 and at most 86400"));
        None
    }
}

/// A deployment's prices: `model_info` where given, else the built-in table.
fn price(cx: &mut Ctx<'_>, base: &str, entry: &ModelEntry, upstream_model: &str) -> Option<Price> {
    let builtin = pricing::builtin(upstream_model);
    let info = entry.model_info.clone().unwrap_or_default();
    let mut convert = |field: &str, value: Option<f64>| -> Option<u64> {
        let v = value?;
        let converted = pricing::from_usd_per_token(v);
        if converted.is_none() {
            cx.error(format!("{base}.model_info.{field}"), format!("{v} must be a price of 0 or more, in USD per token"));
        }
        converted
    };
    let input = convert("input_cost_per_token", info.input_cost_per_token);
    let output = convert("output_cost_per_token", info.output_cost_per_token);
    let cached = convert("cache_read_input_token_cost", info.cache_read_input_token_cost);
    let resolved_input = input.or(builtin.map(|p| p.input))?;
    let resolved_output = output.or(builtin.map(|p| p.output))?;
    // A cache price goes with the input price it came with.
    let resolved_cached = cached
        .or(if input.is_none() { builtin.map(|p| p.cached_input) } else { None })
        .unwrap_or(resolved_input);
    // So do the cache-write prices (derived from it unless given).
    let mut price = Price::new(resolved_input, resolved_output, resolved_cached);
    if let Some(p) = convert("cache_creation_input_token_cost", info.cache_creation_input_token_cost) {
        price.cache_write = p;
    }
    if let Some(p) = convert("cache_creation_input_token_cost_above_1hr", info.cache_creation_input_token_cost_above_1hr) {
        price.cache_write_1h = p;
    }
    Some(price)
}

/// A team with a budget may only reach priced deployments: a request to an
/// unpriced one would cost nothing, and the budget would leak through it.
fn check_priced(cx: &mut Ctx<'_>, base: &str, entry: &TeamEntry, names: &Names<'_>) {
    for (j, pattern) in entry.models.iter().enumerate() {
        for model in names.resolve(pattern).iter().filter_map(|m| names.models.get(*m)) {
            let unpriced = model.deployments.iter().filter_map(|d| names.deployments.get(*d)).find(|d| d.price.is_none());
            if let Some(d) = unpriced {
                cx.error(
                    format!("{base}.models[{j}]"),
                    format!(
                        "team \"{}\" has a max_budget, but model \"{}\" ({}/{}) has no known price; set model_info.input_cost_per_token and output_cost_per_token on its deployment, or general_settings.allow_unpriced_models: true to count it at zero cost",
                        entry.user_id,
                        model.name,
                        d.provider.name(),
                        d.upstream_model
                    ),
                );
            }
        }
    }
}

/// A key given as an object: its alias, models (within its team's), budget
/// and expiry.
fn key_rule(cx: &mut Ctx<'_>, base: &str, r: &KeyRules, team_index: usize, team: &Team, names: &Names<'_>, k: usize) -> KeyRule {
    let allowed = r.models.as_ref().map(|list| {
        let mut allowed = vec![false; names.models.len()];
        for (j, entry) in list.iter().enumerate() {
            let matched = names.resolve(entry);
            if matched.is_empty() {
                cx.error(format!("{base}.models[{j}]"), format!("unknown model \"{entry}\""));
            }
            for m in matched {
                if !team.may_use(m) {
                    let name = names.models.get(m).map_or("", |m| m.name.as_str());
                    cx.error(format!("{base}.models[{j}]"), format!("team \"{}\" may not use \"{name}\", so neither may its key", team.id));
                } else if let Some(slot) = allowed.get_mut(m) {
                    *slot = true;
                }
            }
        }
        allowed
    });
    let alias = r.alias.clone().unwrap_or_else(|| format!("key-{k}"));
    if let Err(msg) = check_label(&alias) {
        cx.error(format!("{base}.alias"), msg);
    }
    check_usd(cx, &format!("{base}.max_budget"), r.max_budget);
    let period = parse_period(cx, &format!("{base}.budget_duration"), r.budget_duration.as_deref());
    let expires_ms = r.expires_at.as_deref().and_then(|t| {
        let parsed = crate::period::parse_utc(t);
        if parsed.is_none() {
            cx.error(format!("{base}.expires_at"), format!("\"{t}\" is not a UTC date such as 2026-12-31 or 2026-12-31T18:00:00Z"));
        }
        parsed
    });
    KeyRule {
        team: team_index,
        ledger_key: format!("{}/key/{alias}", team.ledger_key),
        alias,
        allowed,
        budget_micro: r.max_budget.map(budget::usd_to_micro),
        period,
        expires_ms,
    }
}

/// What a team's `models` entries can name.
struct Names<'a> {
    models: &'a [Model],
    deployments: &'a [Deployment],
    index: &'a HashMap<String, usize>,
    groups: &'a HashMap<String, Vec<usize>>,
}

impl Names<'_> {
    /// The models an entry names: a model, an access group, `*` (every
    /// model), or a prefix ending in `*` matched against model names and
    /// against deployments' `provider/model` (`openai/*`, `gpt-4o*`).
    fn resolve(&self, entry: &str) -> Vec<usize> {
        if let Some(&m) = self.index.get(entry) {
            return vec![m];
        }
        if let Some(members) = self.groups.get(entry) {
            return members.clone();
        }
        let Some(prefix) = entry.strip_suffix('*') else { return Vec::new() };
        self.models
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.name.starts_with(prefix)
                    || m.deployments.iter().filter_map(|d| self.deployments.get(*d)).any(|d| {
                        format!("{}/{}", d.provider.name(), d.upstream_model).starts_with(prefix)
                    })
            })
            .map(|(i, _)| i)
            .collect()
    }
}

fn team(cx: &mut Ctx<'_>, base: &str, entry: &TeamEntry, names: &Names<'_>) -> Team {
    let (models, deployments) = (names.models, names.deployments);
    let mut allowed = vec![false; models.len()];
    for (j, name) in entry.models.iter().enumerate() {
        let matched = names.resolve(name);
        if matched.is_empty() {
            let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            let message = if name.ends_with('*') {
                format!("no model matches \"{name}\"; model_list has: {}", known.join(", "))
            } else {
                format!("unknown model \"{name}\"; model_list has: {}", known.join(", "))
            };
            cx.error(format!("{base}.models[{j}]"), message);
        }
        for m in matched {
            if let Some(slot) = allowed.get_mut(m) {
                *slot = true;
            }
        }
    }
    check_usd(cx, &format!("{base}.max_budget"), entry.max_budget);
    let limits = Limits { rpm: entry.rpm_limit, tpm: entry.tpm_limit, parallel: entry.max_parallel_requests };
    for (field, value) in [("rpm_limit", entry.rpm_limit), ("tpm_limit", entry.tpm_limit), ("max_parallel_requests", entry.max_parallel_requests)] {
        if value == Some(0) {
            cx.error(format!("{base}.{field}"), "0 would refuse every request; remove the limit or set at least 1");
        }
    }
    let period = parse_period(cx, &format!("{base}.budget_duration"), entry.budget_duration.as_deref());
    if period.is_some() && entry.max_budget.is_none() && entry.soft_budget.is_none() {
        cx.warnings.push(format!("{base}.budget_duration: the team has no max_budget or soft_budget to reset"));
    }
    check_usd(cx, &format!("{base}.soft_budget"), entry.soft_budget);
    Team {
        period,
        soft_budget_micro: entry.soft_budget.map(budget::usd_to_micro),
        limits,
        limits_key: limits::key(&entry.user_id),
        id: entry.user_id.clone(),
        models_body: crate::access::models_list_body(models, deployments, &allowed),
        allowed,
        budget_micro: entry.max_budget.map(budget::usd_to_micro),
        ledger_key: budget::ledger_key(&entry.user_id),
    }
}
