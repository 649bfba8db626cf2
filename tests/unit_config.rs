//! Plain-Rust tests (no Envoy) of config parsing, checking and compiling, and
//! of the Envoy bootstrap that `tollgate render` writes.

use std::collections::HashMap;

use serde_json::{json, Value};
use tollgate::config::{compile, parse_json, parse_yaml, Compiled, ConfigError, ConfigFile, DEFAULT_MAX_BODY_BYTES};
use tollgate::render::{bootstrap, RenderOptions};
use tollgate::request::Endpoint;

const OPENAI_SECRET: &str = "sk-openai-secret-value-0001";
const ANTHROPIC_SECRET: &str = "sk-ant-secret-value-0002";
const TEAM_A_SECRET: &str = "team-a-secret-value-0003";
/// sha256("team-beta-token").
const BETA_DIGEST: &str = "cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d";

/// A config that compiles: gpt-4o has two deployments (OpenAI's default base
/// and a plain-http IP), claude is on Anthropic's default base, local is on a
/// plain-http host name without a key.
const BASE: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-haiku-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: http://10.0.0.5:8000/v1
      api_key: os.environ/OPENAI_API_KEY
  - model_name: local
    litellm_params:
      model: openai/llama-3.1-8b
      api_base: http://llm.internal:8080
    model_info:
      input_cost_per_token: 0.0000001
      output_cost_per_token: 0.0000002
router_settings:
  routing_strategy: simple-shuffle
user_access:
  - user_id: team-a
    models: [gpt-4o, claude, local]
    max_budget: 500.0
    api_keys: [os.environ/TEAM_A_KEY]
  - user_id: team-b
    models: [local]
    max_budget: 200
    api_keys: ["sha256:cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d"]
"#;

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn base_env() -> HashMap<String, String> {
    env_of(&[
        ("OPENAI_API_KEY", OPENAI_SECRET),
        ("ANTHROPIC_API_KEY", ANTHROPIC_SECRET),
        ("TEAM_A_KEY", TEAM_A_SECRET),
    ])
}

/// `text` with `from` replaced by `to`; fails if `from` is not there, so an
/// edit that silently does nothing cannot make a test pass.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the config");
    text.replacen(from, to, 1)
}

fn compiled(yaml: &str, env: &HashMap<String, String>) -> Compiled {
    let file = parse_yaml(yaml).unwrap();
    match compile(&file, env) {
        Ok(c) => c,
        Err(errors) => panic!("config refused: {errors:#?}"),
    }
}

/// The compile errors, as the CLI prints them.
fn compile_errors(yaml: &str, env: &HashMap<String, String>) -> Vec<String> {
    let file = parse_yaml(yaml).unwrap();
    compile(&file, env).unwrap_err().iter().map(ToString::to_string).collect()
}

/// The only compile error.
fn compile_error(yaml: &str, env: &HashMap<String, String>) -> String {
    let errors = compile_errors(yaml, env);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

fn parse_error(yaml: &str) -> ConfigError {
    parse_yaml(yaml).unwrap_err()
}

// ---------------------------------------------------------------------------
// Parse errors: field paths

#[test]
fn base_config_compiles() {
    let c = compiled(BASE, &base_env());
    assert_eq!(c.gateway.models.len(), 3);
}

#[test]
fn unknown_field_at_top_level() {
    let e = parse_error(&format!("{BASE}\nrouter_setings: {{}}\n"));
    assert_eq!(e.path, "router_setings");
    assert!(
        e.message.starts_with("unknown field `router_setings`, expected one of `model_list`, `router_settings`, `user_access`, `general_settings`"),
        "{e}"
    );
    assert!(e.to_string().starts_with("router_setings: unknown field `router_setings`"), "{e}");
}

#[test]
fn unknown_field_in_a_team() {
    let e = parse_error(&edit(BASE, "    max_budget: 500.0\n", "    max_budget: 500.0\n    max_bugdet: 1\n"));
    assert_eq!(e.path, "user_access[0].max_bugdet");
    assert!(e.to_string().starts_with("user_access[0]"), "{e}");
    assert!(e.message.contains("unknown field `max_bugdet`, expected one of `user_id`, `models`, `max_budget`, `api_keys`"), "{e}");
}

#[test]
fn unknown_field_in_litellm_params() {
    let e = parse_error(&edit(BASE, "      api_key: os.environ/ANTHROPIC_API_KEY\n", "      api_bse: http://x\n"));
    assert_eq!(e.path, "model_list[1].litellm_params.api_bse");
    assert!(e.to_string().starts_with("model_list[1].litellm_params"), "{e}");
    assert!(e.message.contains("unknown field `api_bse`, expected one of `model`, `api_base`, `api_key`, `api_version`"), "{e}");
}

#[test]
fn unknown_field_in_json_has_the_same_path() {
    let e = parse_json(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"openai/a"}},{"model_name":"b","litellm_params":{"model":"openai/b","api_bse":"x"}}]}"#)
        .unwrap_err();
    assert_eq!(e.path, "model_list[1].litellm_params.api_bse");
    assert!(e.message.starts_with("unknown field `api_bse`"), "{e}");
    let e = parse_json(r#"{"model_list":[],"extra":1}"#).unwrap_err();
    assert_eq!(e.path, "extra");
    assert!(e.message.starts_with("unknown field `extra`"), "{e}");
}

#[test]
fn wrong_types_name_the_field() {
    let e = parse_error(&edit(BASE, "max_budget: 200", "max_budget: lots"));
    assert_eq!(e.path, "user_access[1].max_budget");
    assert!(e.message.contains("invalid type: string \"lots\", expected f64"), "{e}");

    let e = parse_error("model_list: {}\n");
    assert_eq!(e.path, "model_list");
    assert!(e.message.contains("invalid type: map, expected a sequence"), "{e}");

    let e = parse_error(&edit(BASE, "models: [local]", "models: local"));
    assert_eq!(e.path, "user_access[1].models");
    assert!(e.message.contains("invalid type"), "{e}");

    let e = parse_json(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":7}}]}"#).unwrap_err();
    assert_eq!(e.path, "model_list[0].litellm_params.model");
    assert!(e.message.starts_with("invalid type: integer `7`, expected a string"), "{e}");
}

#[test]
fn missing_required_field() {
    let e = parse_error("user_access: []\n");
    assert_eq!(e.path, "");
    assert!(e.message.starts_with("missing field `model_list`"), "{e}");
    let e = parse_error("model_list:\n  - model_name: a\n");
    assert_eq!(e.path, "model_list[0]");
    assert!(e.to_string().contains("missing field `litellm_params`"), "{e}");
}

/// The CLI prints `ConfigError`'s Display. serde_yaml_ng's own messages
/// start with a path too; the Display must not show it twice.
#[test]
fn yaml_errors_show_the_path_once() {
    let e = parse_error(&edit(BASE, "    max_budget: 500.0\n", "    max_budget: 500.0\n    max_bugdet: 1\n"));
    assert_eq!(e.to_string().matches("user_access[0]").count(), 1, "{e}");
    let e = parse_error(&edit(BASE, "max_budget: 200", "max_budget: lots"));
    assert_eq!(e.to_string().matches("user_access[1].max_budget").count(), 1, "{e}");
}

// ---------------------------------------------------------------------------
// Compile errors

#[test]
fn unknown_model_in_a_team() {
    let err = compile_error(&edit(BASE, "models: [local]", "models: [gpt-5, local]"), &base_env());
    assert!(err.starts_with(r#"user_access[1].models[0]: unknown model "gpt-5""#), "{err}");
    assert_eq!(err, r#"user_access[1].models[0]: unknown model "gpt-5"; model_list has: gpt-4o, claude, local"#);
}

#[test]
fn models_are_matched_exactly() {
    let err = compile_error(&edit(BASE, "models: [local]", "models: [Local]"), &base_env());
    assert!(err.starts_with(r#"user_access[1].models[0]: unknown model "Local""#), "{err}");
}

#[test]
fn malformed_sha256_team_key() {
    let err = compile_error(&edit(BASE, BETA_DIGEST, "cd7f30"), &base_env());
    assert_eq!(
        err,
        r#"user_access[1].api_keys[0]: "sha256:cd7f30" is malformed: write sha256: followed by exactly 64 hex digits"#
    );
    let bad_hex = format!("{}zz", &BETA_DIGEST[..62]);
    let err = compile_error(&edit(BASE, BETA_DIGEST, &bad_hex), &base_env());
    assert!(err.starts_with("user_access[1].api_keys[0]: ") && err.contains("is malformed"), "{err}");
}

#[test]
fn provider_key_as_sha256_is_refused() {
    let yaml = edit(BASE, "api_key: os.environ/ANTHROPIC_API_KEY", &format!("api_key: sha256:{BETA_DIGEST}"));
    let err = compile_error(&yaml, &base_env());
    assert_eq!(
        err,
        "model_list[1].litellm_params.api_key: a provider key cannot be a sha256 digest: the gateway must send the key itself upstream"
    );
}

#[test]
fn missing_and_empty_env_vars() {
    let mut env = base_env();
    env.remove("ANTHROPIC_API_KEY");
    assert_eq!(
        compile_error(BASE, &env),
        "model_list[1].litellm_params.api_key: environment variable ANTHROPIC_API_KEY is not set"
    );

    let mut env = base_env();
    env.insert("TEAM_A_KEY".into(), " \t\n".into());
    assert_eq!(compile_error(BASE, &env), "user_access[0].api_keys[0]: environment variable TEAM_A_KEY is empty");

    let mut env = base_env();
    env.insert("OPENAI_API_KEY".into(), String::new());
    // Both deployments that read it are at fault.
    assert_eq!(
        compile_errors(BASE, &env),
        vec![
            "model_list[0].litellm_params.api_key: environment variable OPENAI_API_KEY is empty".to_string(),
            "model_list[2].litellm_params.api_key: environment variable OPENAI_API_KEY is empty".to_string(),
        ]
    );
}

#[test]
fn malformed_env_reference() {
    let err = compile_error(&edit(BASE, "os.environ/TEAM_A_KEY", "os.environ/TEAM-A"), &base_env());
    assert!(err.starts_with(r#"user_access[0].api_keys[0]: "os.environ/TEAM-A" is not a valid environment variable reference"#), "{err}");
}

#[test]
fn unknown_provider_and_missing_prefix() {
    let err = compile_error(&edit(BASE, "model: openai/gpt-4o\n", "model: bedrock/gpt-4o\n"), &base_env());
    assert_eq!(
        err,
        r#"model_list[0].litellm_params.model: unknown provider "bedrock"; supported: openai, anthropic, azure, groq, mistral, deepseek, together_ai, fireworks_ai, xai, openrouter, perplexity, gemini, cohere, ollama, hosted_vllm"#
    );

    let err = compile_error(&edit(BASE, "model: openai/gpt-4o\n", "model: gpt-4o\n"), &base_env());
    assert_eq!(err, r#"model_list[0].litellm_params.model: "gpt-4o" must be provider/model, e.g. openai/gpt-4o"#);

    let err = compile_error(&edit(BASE, "model: openai/gpt-4o\n", "model: \"openai/ \"\n"), &base_env());
    assert_eq!(err, r#"model_list[0].litellm_params.model: "openai/ " names no upstream model after the provider"#);
}

#[test]
fn bad_api_base() {
    let err = compile_error(&edit(BASE, "http://llm.internal:8080", "llm.internal:8080"), &base_env());
    assert_eq!(err, r#"model_list[3].litellm_params.api_base: "llm.internal:8080" must start with http:// or https://"#);
    for bad in ["ftp://llm.internal", "http://llm.internal:0", "http://llm.internal:70000", "http://u:p@llm.internal", "http://llm.internal/v1?x=1", "https://"] {
        let err = compile_error(&edit(BASE, "http://llm.internal:8080", bad), &base_env());
        assert!(err.starts_with(&format!("model_list[3].litellm_params.api_base: \"{bad}\"")), "{bad}: {err}");
    }
}

#[test]
fn bad_routing_strategy() {
    let err = compile_error(&edit(BASE, "simple-shuffle", "fastest"), &base_env());
    assert!(err.starts_with(r#"router_settings.routing_strategy: unknown strategy "fastest"; use one of simple-shuffle, "#), "{err}");
    for ok in ["least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing"] {
        compiled(&edit(BASE, "simple-shuffle", ok), &base_env());
    }
}

#[test]
fn team_ids() {
    let err = compile_error(&edit(BASE, "user_id: team-b", "user_id: team-a"), &base_env());
    assert_eq!(err, r#"user_access[1].user_id: duplicate team "team-a" (also user_access[0])"#);

    let err = compile_error(&edit(BASE, "user_id: team-b", "user_id: unknown"), &base_env());
    assert_eq!(err, r#"user_access[1].user_id: "unknown" is reserved: metrics use it for unauthenticated callers"#);

    let err = compile_error(&edit(BASE, "user_id: team-b", "user_id: \"  \""), &base_env());
    assert_eq!(err, "user_access[1].user_id: must be a non-empty name without control characters");
}

#[test]
fn one_key_for_two_teams_is_refused() {
    // The same key, written once through the environment and once as its digest.
    let mut env = base_env();
    env.insert("TEAM_A_KEY".into(), "team-beta-token".into());
    assert_eq!(compile_error(BASE, &env), r#"user_access[1].api_keys[0]: the same key is already given to team "team-a""#);

    // The same literal twice.
    let yaml = edit(&edit(BASE, "os.environ/TEAM_A_KEY", "shared-literal-key"), &format!("\"sha256:{BETA_DIGEST}\""), "shared-literal-key");
    assert_eq!(compile_error(&yaml, &base_env()), r#"user_access[1].api_keys[0]: the same key is already given to team "team-a""#);
}

#[test]
fn negative_prices_and_budgets() {
    // (An unusable price may also leave a budgeted team with an unpriced
    // model; only the price error matters here.)
    let errs = compile_errors(&edit(BASE, "input_cost_per_token: 0.0000001", "input_cost_per_token: -1"), &base_env());
    assert_eq!(errs[0], "model_list[3].model_info.input_cost_per_token: -1 must be a price of 0 or more, in USD per token");
    let errs = compile_errors(&edit(BASE, "output_cost_per_token: 0.0000002", "output_cost_per_token: .nan"), &base_env());
    assert!(errs[0].starts_with("model_list[3].model_info.output_cost_per_token: NaN must be a price"), "{errs:?}");

    let err = compile_error(&edit(BASE, "max_budget: 200", "max_budget: -5"), &base_env());
    assert_eq!(err, "user_access[1].max_budget: -5 must be an amount of 0 or more, in USD");
    // Zero is a valid price and budget.
    compiled(&edit(&edit(BASE, "max_budget: 200", "max_budget: 0"), "0.0000001", "0"), &base_env());
}

#[test]
fn max_request_size_out_of_range() {
    // 0.0000001 MB would be a cap of 0 bytes.
    for (value, shown) in [("0", "0"), ("-1", "-1"), ("1000", "1000"), ("0.0000001", "0.0000001"), (".inf", "inf"), (".nan", "NaN")] {
        let yaml = format!("{BASE}general_settings:\n  max_request_size_mb: {value}\n");
        let err = compile_error(&yaml, &base_env());
        let prefix = format!("general_settings.max_request_size_mb: {shown} is out of range; use ");
        assert!(err.starts_with(&prefix) && err.contains("at most"), "{value}: {err}");
    }
}

#[test]
fn unknown_cluster_naming() {
    let yaml = format!("{BASE}general_settings:\n  cluster_naming: kubernetes\n");
    assert_eq!(
        compile_error(&yaml, &base_env()),
        r#"general_settings.cluster_naming: unknown value "kubernetes"; use tollgate or istio"#
    );
}

#[test]
fn empty_model_list() {
    assert_eq!(compile_error("model_list: []\n", &HashMap::new()), "model_list: list at least one model");
}

#[test]
fn all_errors_are_reported_at_once() {
    let yaml = edit(BASE, "simple-shuffle", "fastest");
    let yaml = edit(&yaml, "models: [local]", "models: [gpt-5, local]");
    let yaml = edit(&yaml, "max_budget: 500.0", "max_budget: -1");
    let yaml = edit(&yaml, "model: openai/llama-3.1-8b", "model: llama-3.1-8b");
    let yaml = format!("{yaml}general_settings:\n  max_request_size_mb: 0\n  cluster_naming: k8s\n");
    let mut env = base_env();
    env.remove("ANTHROPIC_API_KEY");
    let errors = compile_errors(&yaml, &env);
    let prefixes = [
        "general_settings.cluster_naming: unknown value \"k8s\"",
        "general_settings.max_request_size_mb: 0 is out of range",
        "router_settings.routing_strategy: unknown strategy \"fastest\"",
        "model_list[1].litellm_params.api_key: environment variable ANTHROPIC_API_KEY is not set",
        "model_list[3].litellm_params.model: \"llama-3.1-8b\" must be provider/model",
        "user_access[0].max_budget: -1 must be an amount",
        "user_access[1].models[0]: unknown model \"gpt-5\"",
    ];
    assert_eq!(errors.len(), prefixes.len(), "{errors:#?}");
    for (e, p) in errors.iter().zip(prefixes) {
        assert!(e.starts_with(p), "expected {p:?}, got {e:?}");
    }
}

// ---------------------------------------------------------------------------
// Successful compile

#[test]
fn counts_and_grouping() {
    let c = compiled(BASE, &base_env());
    let gw = &c.gateway;
    assert_eq!((gw.models.len(), gw.deployments.len(), gw.teams.len()), (3, 4, 2));
    let names: Vec<&str> = gw.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["gpt-4o", "claude", "local"]);
    assert_eq!(gw.model_by_name("gpt-4o"), Some(0));
    assert_eq!(gw.model_by_name("claude"), Some(1));
    assert_eq!(gw.model_by_name("local"), Some(2));
    assert_eq!(gw.model_by_name("gpt-5"), None);
    // Both gpt-4o entries are deployments of one model, in file order.
    assert_eq!(gw.models[0].deployments, vec![0, 2]);
    assert_eq!(gw.models[1].deployments, vec![1]);
    assert_eq!(gw.models[2].deployments, vec![3]);
    let owners: Vec<usize> = gw.deployments.iter().map(|d| d.model).collect();
    assert_eq!(owners, [0, 1, 0, 2]);
    assert_eq!(gw.deployments[0].upstream_model, "gpt-4o");
    assert_eq!(gw.deployments[2].upstream_model, "gpt-4o-2024-08-06");
    assert_eq!(gw.deployments[2].upstream_model_json, "\"gpt-4o-2024-08-06\"");
}

#[test]
fn openai_default_base() {
    let c = compiled(BASE, &base_env());
    let d = &c.gateway.deployments[0];
    assert_eq!(d.provider.name(), "openai");
    assert_eq!((d.url.tls, d.url.host.as_str(), d.url.port, d.url.base_path.as_str()), (true, "api.openai.com", 443, "/v1"));
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/v1/chat/completions"));
    assert_eq!(d.path(Endpoint::Completions), Some("/v1/completions"));
    assert_eq!(d.path(Endpoint::Embeddings), Some("/v1/embeddings"));
    assert_eq!(d.authority, "api.openai.com");
    assert_eq!(d.cluster, "tollgate|https|api.openai.com|443");
    assert_eq!(d.auth_headers, vec![("authorization", format!("Bearer {OPENAI_SECRET}"))]);
}

#[test]
fn anthropic_default_base() {
    let c = compiled(BASE, &base_env());
    let d = &c.gateway.deployments[1];
    assert_eq!(d.provider.name(), "anthropic");
    assert_eq!((d.url.tls, d.url.host.as_str(), d.url.port, d.url.base_path.as_str()), (true, "api.anthropic.com", 443, ""));
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/v1/messages"));
    assert_eq!(d.path(Endpoint::Messages), Some("/v1/messages"));
    assert_eq!(d.path(Endpoint::Completions), None);
    assert_eq!(d.path(Endpoint::Embeddings), None);
    assert_eq!(d.authority, "api.anthropic.com");
    assert_eq!(d.cluster, "tollgate|https|api.anthropic.com|443");
    assert_eq!(d.auth_headers, vec![("x-api-key", ANTHROPIC_SECRET.to_string())]);
}

#[test]
fn configured_bases() {
    let c = compiled(BASE, &base_env());
    let d = &c.gateway.deployments[2];
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/v1/chat/completions"));
    assert_eq!(d.authority, "10.0.0.5:8000");
    assert_eq!(d.cluster, "tollgate|http|10.0.0.5|8000");
    let d = &c.gateway.deployments[3];
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/chat/completions"));
    assert_eq!(d.path(Endpoint::Embeddings), Some("/embeddings"));
    assert_eq!(d.authority, "llm.internal:8080");
    assert_eq!(d.cluster, "tollgate|http|llm.internal|8080");
    assert!(d.auth_headers.is_empty());

    // Trailing slashes, upper-case hosts, default ports and IPv6.
    let c = compiled(&edit(BASE, "http://llm.internal:8080", "https://LLM.Internal:443/api/v1/"), &base_env());
    let d = &c.gateway.deployments[3];
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/api/v1/chat/completions"));
    assert_eq!(d.authority, "llm.internal");
    assert_eq!(d.cluster, "tollgate|https|llm.internal|443");
    let c = compiled(&edit(BASE, "http://llm.internal:8080", "http://[::1]:9000/v1"), &base_env());
    let d = &c.gateway.deployments[3];
    assert_eq!(d.authority, "[::1]:9000");
    assert_eq!(d.cluster, "tollgate|http|::1|9000");
}

#[test]
fn istio_cluster_naming() {
    let yaml = format!("{BASE}general_settings:\n  cluster_naming: istio\n");
    let c = compiled(&yaml, &base_env());
    let clusters: Vec<&str> = c.gateway.deployments.iter().map(|d| d.cluster.as_str()).collect();
    assert_eq!(
        clusters,
        ["outbound|443||api.openai.com", "outbound|443||api.anthropic.com", "outbound|8000||10.0.0.5", "outbound|8080||llm.internal"]
    );
    let yaml = format!("{BASE}general_settings:\n  cluster_naming: tollgate\n");
    assert_eq!(compiled(&yaml, &base_env()).gateway.deployments[0].cluster, "tollgate|https|api.openai.com|443");
}

#[test]
fn env_keys_are_listed_once_in_order() {
    // OPENAI_API_KEY is read by two deployments and listed once.
    let c = compiled(BASE, &base_env());
    assert_eq!(c.env_keys, ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TEAM_A_KEY"]);

    let yaml = edit(BASE, "api_keys: [os.environ/TEAM_A_KEY]", "api_keys: [os.environ/TEAM_A_KEY, os.environ/TEAM_A_KEY2]");
    let mut env = base_env();
    env.insert("TEAM_A_KEY2".into(), "team-a-second-key".into());
    let c = compiled(&yaml, &env);
    assert_eq!(c.env_keys, ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TEAM_A_KEY", "TEAM_A_KEY2"]);

    // One variable twice in one team: one key given twice, one env key.
    let yaml = edit(BASE, "api_keys: [os.environ/TEAM_A_KEY]", "api_keys: [os.environ/TEAM_A_KEY, os.environ/TEAM_A_KEY]");
    assert_eq!(
        compile_errors(&yaml, &env),
        vec![r#"user_access[0].api_keys[1]: the same key is already given to team "team-a""#.to_string()]
    );

    // No environment references, no env keys.
    let c = compiled("model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: 'http://127.0.0.1:1'}\n", &HashMap::new());
    assert!(c.env_keys.is_empty());
}

#[test]
fn warnings() {
    let c = compiled(BASE, &base_env());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let yaml = edit(BASE, "api_key: os.environ/ANTHROPIC_API_KEY", "api_key: sk-literal-provider-key");
    let yaml = edit(&yaml, "api_keys: [os.environ/TEAM_A_KEY]", "api_keys: [team-a-literal-key]");
    let yaml = format!("{yaml}  - user_id: team-c\n    models: [claude]\n");
    let c = compiled(&yaml, &base_env());
    assert_eq!(
        c.warnings,
        [
            "model_list[1].litellm_params.api_key: a literal key is stored in the config (and so in Envoy's config dump); prefer os.environ/NAME",
            "user_access[0].api_keys[0]: a literal key is stored in the config (and so in Envoy's config dump); prefer os.environ/NAME or sha256:<hex>",
            r#"user_access[2]: team "team-c" has no api_keys, so no caller can authenticate as it"#,
        ]
    );
    assert_eq!(c.gateway.deployments[1].auth_headers, vec![("x-api-key", "sk-literal-provider-key".to_string())]);

    // A default base without a key.
    let yaml = edit(BASE, "      api_key: os.environ/ANTHROPIC_API_KEY\n", "");
    let c = compiled(&yaml, &base_env());
    assert_eq!(
        c.warnings[0],
        "model_list[1].litellm_params: no api_key, so requests reach https://api.anthropic.com without credentials"
    );
    assert!(c.gateway.deployments[1].auth_headers.is_empty());
}

#[test]
fn max_body_bytes() {
    assert_eq!(DEFAULT_MAX_BODY_BYTES, 16 * 1024 * 1024);
    assert_eq!(compiled(BASE, &base_env()).gateway.max_body_bytes, 16_777_216);
    for (mb, bytes) in [("0.5", 524_288usize), ("1", 1_048_576), ("2.5", 2_621_440), ("32", 33_554_432), ("64", 67_108_864)] {
        let yaml = format!("{BASE}general_settings:\n  max_request_size_mb: {mb}\n");
        assert_eq!(compiled(&yaml, &base_env()).gateway.max_body_bytes, bytes, "{mb} MB");
    }
}

#[test]
fn teams() {
    let c = compiled(BASE, &base_env());
    let gw = &c.gateway;
    let a = &gw.teams[0];
    assert_eq!(a.id, "team-a");
    assert_eq!(a.allowed, vec![true, true, true]);
    assert_eq!(a.budget_micro, Some(500_000_000));
    let b = &gw.teams[1];
    assert_eq!(b.id, "team-b");
    assert_eq!(b.allowed, vec![false, false, true]);
    assert!(b.may_use(2) && !b.may_use(0) && !b.may_use(3));
    assert_eq!(b.budget_micro, Some(200_000_000));
    let body: Value = serde_json::from_str(&b.models_body).unwrap();
    assert_eq!(body, json!({"object": "list", "data": [{"id": "local", "object": "model", "created": 0, "owned_by": "openai"}]}));
    let body: Value = serde_json::from_str(&a.models_body).unwrap();
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o", "claude", "local"]);
    assert_eq!(body["data"][1]["owned_by"], "anthropic");
}

// ---------------------------------------------------------------------------
// YAML and JSON read the same config the same way

fn json_round_trip(yaml: &str) -> (ConfigFile, ConfigFile) {
    let from_yaml = parse_yaml(yaml).unwrap();
    let json = serde_json::to_string(&from_yaml).unwrap();
    let from_json = parse_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    (from_yaml, from_json)
}

const RICH: &str = r#"
model_list:
  - model_name: "gpt-4o \"quoted\" ünïcode"
    litellm_params:
      model: openai/gpt-4o
      api_base: https://example.com/v1/
      api_key: os.environ/OPENAI_API_KEY
      api_version: "2024-10-21"
    model_info:
      input_cost_per_token: 2.5e-6
      output_cost_per_token: 0.00001
      cache_read_input_token_cost: 0
  - model_name: 1.5
    litellm_params:
      model: anthropic/claude
      api_key: 'literal: with colon'
  - model_name: yes
    litellm_params: {model: openai/yes}
    model_info: {}
router_settings: {}
user_access:
  - user_id: null
    models: []
    max_budget: 1e3
    api_keys: []
  - user_id: team-b
    models: [yes, "1.5"]
    api_keys: ["sha256:CD7F306FF0F2DD7EF29315F3696FBF7848A00BDEAF9925258C2E91D0B206947D", os.environ/TEAM_B]
general_settings:
  max_request_size_mb: 32
  cluster_naming: istio
"#;

#[test]
fn yaml_and_json_read_the_same_config() {
    for yaml in [BASE, RICH, "model_list: []\n", include_str!("../examples/seed-config.yaml"), include_str!("../envoy/demo-config.yaml")] {
        let (from_yaml, from_json) = json_round_trip(yaml);
        assert_eq!(from_json, from_yaml);
    }
    // YAML's plain scalars are read as strings where the schema wants strings.
    let rich = parse_yaml(RICH).unwrap();
    assert_eq!(rich.model_list[1].model_name, "1.5");
    assert_eq!(rich.model_list[2].model_name, "yes");
    assert_eq!(rich.user_access[0].user_id, "null");
    assert_eq!(rich.user_access[0].max_budget, Some(1000.0));
    assert_eq!(rich.general_settings.as_ref().unwrap().max_request_size_mb, Some(32.0));
}

#[test]
fn a_hand_written_json_config_equals_its_yaml() {
    let json = r#"{
      "model_list": [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"}},
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-haiku-20241022", "api_key": "os.environ/ANTHROPIC_API_KEY"}},
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o-2024-08-06", "api_base": "http://10.0.0.5:8000/v1", "api_key": "os.environ/OPENAI_API_KEY"}},
        {"model_name": "local", "litellm_params": {"model": "openai/llama-3.1-8b", "api_base": "http://llm.internal:8080"},
         "model_info": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}}
      ],
      "router_settings": {"routing_strategy": "simple-shuffle"},
      "user_access": [
        {"user_id": "team-a", "models": ["gpt-4o", "claude", "local"], "max_budget": 500, "api_keys": ["os.environ/TEAM_A_KEY"]},
        {"user_id": "team-b", "models": ["local"], "max_budget": 200.0, "api_keys": ["sha256:cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d"]}
      ]
    }"#;
    let from_json = parse_json(json).unwrap();
    assert_eq!(from_json, parse_yaml(BASE).unwrap());
    // And they compile to the same gateway.
    let a = compile(&from_json, &base_env()).unwrap();
    let b = compiled(BASE, &base_env());
    assert_eq!(a.env_keys, b.env_keys);
    assert_eq!(a.warnings, b.warnings);
    assert_eq!(format!("{:?}", a.gateway.deployments), format!("{:?}", b.gateway.deployments));
}

#[test]
fn short_decimal_prices_survive_the_json_round_trip() {
    for e in 5..=9 {
        for k in 1..=999u32 {
            let yaml = edit(BASE, "input_cost_per_token: 0.0000001", &format!("input_cost_per_token: {k}e-{e}"));
            let (from_yaml, from_json) = json_round_trip(&yaml);
            assert_eq!(from_json, from_yaml, "{k}e-{e}");
        }
    }
}

/// A price with 17 significant digits, as a script writes `0.12 / 1000`.
/// serde_json without its `float_roundtrip` feature reads some such numbers
/// back one unit in the last place off, so the filter would see a different
/// price from the one `tollgate check` read.
#[test]
fn long_prices_survive_the_json_round_trip() {
    for price in ["0.00011999999999999999", "3.4000000000000003e-7", "5.0000000000000004e-8", "0.000026560559735942126"] {
        let yaml = edit(BASE, "input_cost_per_token: 0.0000001", &format!("input_cost_per_token: {price}"));
        let (from_yaml, from_json) = json_round_trip(&yaml);
        assert_eq!(from_json, from_yaml, "{price}");
    }
}

// ---------------------------------------------------------------------------
// The Envoy bootstrap

fn options() -> RenderOptions {
    RenderOptions {
        listen_address: "0.0.0.0".into(),
        port: 4000,
        admin_address: "127.0.0.1".into(),
        admin_port: 9901,
        wasm_path: "/opt/tollgate/tollgate.wasm".into(),
        native: false,
        ca_file: "/etc/test/ca.pem".into(),
        route_timeout_secs: 600,
        demo_provider_port: None,
    }
}

/// BASE plus a second deployment on api.openai.com (another model).
fn render_config() -> String {
    edit(
        BASE,
        "  - model_name: local\n",
        "  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_key: os.environ/OPENAI_API_KEY\n  - model_name: local\n",
    )
}

fn render(yaml: &str, opts: &RenderOptions) -> (ConfigFile, Compiled, Value) {
    let file = parse_yaml(yaml).unwrap();
    let c = compile(&file, &base_env()).unwrap();
    let v = bootstrap(&file, &c, opts);
    (file, c, v)
}

fn hcm(v: &Value) -> &Value {
    &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

fn cluster<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

#[test]
fn listener_and_admin() {
    let (_, c, v) = render(&render_config(), &options());
    let listeners = v["static_resources"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1);
    let l = &listeners[0];
    assert_eq!(l["address"], json!({"socket_address": {"address": "0.0.0.0", "port_value": 4000}}));
    assert_eq!(v["admin"]["address"], json!({"socket_address": {"address": "127.0.0.1", "port_value": 9901}}));
    let limit = l["per_connection_buffer_limit_bytes"].as_u64().unwrap();
    assert!(limit >= c.gateway.max_body_bytes as u64, "{limit}");
    let filters = l["filter_chains"][0]["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0]["name"], "envoy.filters.network.http_connection_manager");

    let admin = cluster(&v, "tollgate_admin");
    assert_eq!(admin["type"], "STATIC");
    assert_eq!(
        admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "127.0.0.1", "port_value": 9901}})
    );
}

#[test]
fn buffer_limit_follows_max_request_size() {
    let yaml = format!("{}general_settings:\n  max_request_size_mb: 64\n", render_config());
    let (_, c, v) = render(&yaml, &options());
    assert_eq!(c.gateway.max_body_bytes, 64 * 1024 * 1024);
    let limit = v["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"].as_u64().unwrap();
    assert!(limit >= 64 * 1024 * 1024, "{limit}");
    // Envoy's field is a uint32.
    assert!(limit <= u64::from(u32::MAX), "{limit}");
}

#[test]
fn wasm_filter() {
    let (file, c, v) = render(&render_config(), &options());
    let filters = hcm(&v)["http_filters"].as_array().unwrap();
    assert_eq!(filters.len(), 2);
    assert_eq!(filters[0]["name"], "tollgate");
    assert_eq!(filters[1]["name"], "envoy.filters.http.router", "the router comes last");
    let config = &filters[0]["typed_config"]["config"];
    assert_eq!(filters[0]["typed_config"]["@type"], "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
    assert_eq!(config["allow_on_headers_stop_iteration"], json!(true));
    assert_eq!(config["vm_config"]["code"]["local"]["filename"], "/opt/tollgate/tollgate.wasm");
    assert_eq!(config["vm_config"]["environment_variables"]["host_env_keys"], json!(c.env_keys));
    assert_eq!(
        config["vm_config"]["environment_variables"]["host_env_keys"],
        json!(["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TEAM_A_KEY"])
    );

    let configuration = &config["configuration"];
    assert_eq!(configuration["@type"], "type.googleapis.com/google.protobuf.StringValue");
    let text = configuration["value"].as_str().unwrap();
    let parsed = parse_json(text).unwrap();
    assert_eq!(parsed, file);
    // The filter compiles it the same way, reading the same variables.
    let again = compile(&parsed, &base_env()).unwrap();
    assert_eq!(again.env_keys, c.env_keys);
    // Secrets stay references.
    for secret in [OPENAI_SECRET, ANTHROPIC_SECRET, TEAM_A_SECRET] {
        assert!(!text.contains(secret), "{secret} leaked into the plugin config");
        assert!(!v.to_string().contains(secret), "{secret} leaked into the bootstrap");
    }
    for reference in ["os.environ/OPENAI_API_KEY", "os.environ/ANTHROPIC_API_KEY", "os.environ/TEAM_A_KEY"] {
        assert!(text.contains(reference), "{reference} missing");
    }
}

#[test]
fn one_cluster_per_upstream() {
    let (_, c, v) = render(&render_config(), &options());
    // Two deployments (gpt-4o and gpt-4o-mini) reach api.openai.com.
    let on_openai = c.gateway.deployments.iter().filter(|d| d.cluster == "tollgate|https|api.openai.com|443").count();
    assert_eq!(on_openai, 2);
    let names: Vec<&str> = v["static_resources"]["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "tollgate|https|api.anthropic.com|443",
            "tollgate|https|api.openai.com|443",
            "tollgate|http|10.0.0.5|8000",
            "tollgate|http|llm.internal|8080",
            "tollgate_admin",
        ]
    );
    // Every deployment's cluster exists.
    for d in &c.gateway.deployments {
        assert!(names.contains(&d.cluster.as_str()), "{}", d.cluster);
    }
}

#[test]
fn tls_cluster() {
    let (_, _, v) = render(&render_config(), &options());
    let cl = cluster(&v, "tollgate|https|api.openai.com|443");
    assert_eq!(cl["type"], "LOGICAL_DNS");
    assert_eq!(
        cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "api.openai.com", "port_value": 443}})
    );
    let tls = &cl["transport_socket"];
    assert_eq!(tls["name"], "envoy.transport_sockets.tls");
    assert_eq!(tls["typed_config"]["sni"], "api.openai.com");
    let validation = &tls["typed_config"]["common_tls_context"]["validation_context"];
    assert_eq!(validation["trusted_ca"]["filename"], "/etc/test/ca.pem");
    assert_eq!(
        validation["match_typed_subject_alt_names"],
        json!([{"san_type": "DNS", "matcher": {"exact": "api.openai.com"}}])
    );
    let anthropic = cluster(&v, "tollgate|https|api.anthropic.com|443");
    assert_eq!(anthropic["transport_socket"]["typed_config"]["sni"], "api.anthropic.com");
}

#[test]
fn plain_http_clusters() {
    let (_, _, v) = render(&render_config(), &options());
    let ip = cluster(&v, "tollgate|http|10.0.0.5|8000");
    assert_eq!(ip["type"], "STATIC");
    assert!(ip.get("transport_socket").is_none());
    assert_eq!(
        ip["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "10.0.0.5", "port_value": 8000}})
    );
    let host = cluster(&v, "tollgate|http|llm.internal|8080");
    assert_eq!(host["type"], "LOGICAL_DNS");
    assert!(host.get("transport_socket").is_none());
    assert_eq!(host["load_assignment"]["cluster_name"], "tollgate|http|llm.internal|8080");
    assert_eq!(
        host["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        json!({"socket_address": {"address": "llm.internal", "port_value": 8080}})
    );
}

#[test]
fn routes() {
    let (_, _, v) = render(&render_config(), &options());
    let vhosts = hcm(&v)["route_config"]["virtual_hosts"].as_array().unwrap();
    assert_eq!(vhosts.len(), 1);
    assert_eq!(vhosts[0]["domains"], json!(["*"]));
    let routes = vhosts[0]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 3);

    assert_eq!(routes[0]["match"], json!({"prefix": "/", "headers": [{"name": "x-tollgate-cluster", "present_match": true}]}));
    assert_eq!(routes[0]["route"]["cluster_header"], "x-tollgate-cluster");
    assert_eq!(routes[0]["route"]["timeout"], "600s");
    assert_eq!(routes[0]["request_headers_to_remove"], json!(["x-tollgate-cluster"]));

    assert_eq!(routes[1]["match"], json!({"path": "/metrics"}));
    assert_eq!(routes[1]["route"]["cluster"], "tollgate_admin");
    assert_eq!(routes[1]["route"]["prefix_rewrite"], "/stats/prometheus");

    assert_eq!(routes[2]["match"], json!({"prefix": "/"}));
    assert_eq!(routes[2]["direct_response"]["status"], 404);
    let body: Value = serde_json::from_str(routes[2]["direct_response"]["body"]["inline_string"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["param"], Value::Null);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("Unknown path."), "{body}");
    assert_eq!(
        routes[2]["response_headers_to_add"],
        json!([{"header": {"key": "content-type", "value": "application/json"}}])
    );

    let mut opts = options();
    opts.route_timeout_secs = 30;
    let (_, _, v) = render(&render_config(), &opts);
    assert_eq!(hcm(&v)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"], "30s");
}

#[test]
fn local_replies_are_openai_shaped() {
    let yaml = format!("{}general_settings:\n  max_request_size_mb: 2\n", render_config());
    let (_, _, v) = render(&yaml, &options());
    let mappers = hcm(&v)["local_reply_config"]["mappers"].as_array().unwrap();
    assert_eq!(mappers.len(), 2);
    let too_large = &mappers[0]["body_format_override"]["json_format"]["error"];
    assert!(too_large["message"].as_str().unwrap().contains("2097152 bytes"), "{too_large}");
    assert_eq!(too_large["type"], "invalid_request_error");
}

#[test]
fn istio_naming_renders_istio_cluster_names() {
    let yaml = format!("{}general_settings:\n  cluster_naming: istio\n", render_config());
    let (_, _, v) = render(&yaml, &options());
    let cl = cluster(&v, "outbound|443||api.openai.com");
    assert_eq!(cl["transport_socket"]["typed_config"]["sni"], "api.openai.com");
}

#[test]
fn demo_provider_adds_a_listener() {
    let mut opts = options();
    opts.demo_provider_port = Some(4010);
    let (_, _, v) = render(&render_config(), &opts);
    let listeners = v["static_resources"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners[0]["name"], "tollgate");
    assert_eq!(listeners[1]["name"], "demo_provider");
    assert_eq!(listeners[1]["address"], json!({"socket_address": {"address": "0.0.0.0", "port_value": 4010}}));
    let routes = listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes.len(), 3);
    for r in routes {
        assert_eq!(r["direct_response"]["status"], 200);
        let body: Value = serde_json::from_str(r["direct_response"]["body"]["inline_string"].as_str().unwrap()).unwrap();
        assert!(body.is_object());
    }
}

#[test]
fn https_to_an_ip_address_checks_an_ip_san_and_sends_no_sni() {
    let yaml = edit(BASE, "api_base: http://10.0.0.5:8000/v1", "api_base: https://10.0.0.5:8443/v1");
    let (_, _, v) = render(&yaml, &options());
    let tls = &cluster(&v, "tollgate|https|10.0.0.5|8443")["transport_socket"]["typed_config"];
    assert!(tls.get("sni").is_none(), "{tls}");
    let san = &tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["san_type"], "IP_ADDRESS");
    assert_eq!(san["matcher"]["exact"], "10.0.0.5");
}

#[test]
fn provider_keys_must_fit_in_a_header() {
    let mut env = base_env();
    env.insert("OPENAI_API_KEY".into(), "sk-abc\r\nx-injected: 1".into());
    let errors = compile_errors(BASE, &env);
    assert!(
        errors.iter().any(|e| e.starts_with("model_list[0].litellm_params.api_key: the value of OPENAI_API_KEY has characters that cannot go in an HTTP header")),
        "{errors:#?}"
    );
    let literal = edit(BASE, "api_key: os.environ/ANTHROPIC_API_KEY", "api_key: \"sk ant\"");
    let errors = compile_errors(&literal, &base_env());
    assert!(errors.iter().any(|e| e.starts_with("model_list[1].litellm_params.api_key: the key has characters")), "{errors:#?}");
}

#[test]
fn warnings_for_settings_that_do_nothing() {
    let yaml = edit(BASE, "      api_base: http://llm.internal:8080\n", "      api_base: http://llm.internal:8080\n      api_version: \"2024-06-01\"\n");
    let c = compiled(&yaml, &base_env());
    assert!(
        c.warnings.iter().any(|w| w == "model_list[3].litellm_params.api_version: openai deployments do not use it; it is ignored"),
        "{:#?}",
        c.warnings
    );
    let no_teams = BASE.split("user_access:").next().unwrap().to_string();
    let c = compiled(&no_teams, &base_env());
    assert!(c.warnings.iter().any(|w| w.starts_with("user_access is empty")), "{:#?}", c.warnings);
}

#[test]
fn azure_needs_a_base_and_takes_an_api_version() {
    let yaml = |params: &str| {
        format!("model_list:\n  - model_name: m\n    litellm_params: {{{params}}}\nuser_access:\n  - user_id: t\n    models: [m]\n    api_keys: [\"sha256:{}\"]\n", "a".repeat(64))
    };
    let env = base_env();
    let ok = compiled(&yaml("model: azure/my-dep, api_base: \"https://res.openai.azure.com\", api_version: \"2024-06-01\", api_key: os.environ/OPENAI_API_KEY"), &env);
    let d = &ok.gateway.deployments[0];
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/openai/deployments/my-dep/chat/completions?api-version=2024-06-01"));
    assert_eq!(d.path(Endpoint::Messages), None);
    assert_eq!(d.auth_headers, vec![("api-key", OPENAI_SECRET.to_string())]);
    assert!(ok.warnings.iter().all(|w| !w.contains("api_version")), "{:?}", ok.warnings);

    let errors = compile_errors(&yaml("model: azure/my-dep, api_key: os.environ/OPENAI_API_KEY"), &env);
    assert!(
        errors.iter().any(|e| e.starts_with("model_list[0].litellm_params.api_base: azure deployments have no default api_base")),
        "{errors:?}"
    );
    let errors = compile_errors(&yaml("model: hosted_vllm/llama"), &env);
    assert!(errors.iter().any(|e| e.contains("hosted_vllm deployments have no default api_base")), "{errors:?}");

    // Named OpenAI-compatible providers come with their bases.
    let groq = compiled(&yaml("model: groq/llama-3.1-8b-instant, api_key: os.environ/OPENAI_API_KEY"), &env);
    let d = &groq.gateway.deployments[0];
    assert_eq!(d.url.host, "api.groq.com");
    assert_eq!(d.path(Endpoint::ChatCompletions), Some("/openai/v1/chat/completions"));
    assert_eq!(d.path(Endpoint::Embeddings), None);
}

#[test]
fn router_settings_and_team_limits() {
    let yaml = edit(
        BASE,
        "router_settings:\n  routing_strategy: simple-shuffle\n",
        "router_settings: {routing_strategy: latency-based-routing, num_retries: 2, disable_cooldowns: true, timeout: 1.5, fallbacks: [{gpt-4o: [claude]}]}\n",
    );
    let c = compiled(&yaml, &base_env());
    assert_eq!(c.gateway.strategy, tollgate::routing::Strategy::LatencyBased);
    assert_eq!(c.gateway.num_retries, 2);
    assert_eq!(c.gateway.cooldown, None);
    assert!(c.gateway.deployments.iter().all(|d| d.timeout_ms == Some(1500)));
    let gpt4o = c.gateway.model_by_name("gpt-4o").unwrap();
    let claude = c.gateway.model_by_name("claude").unwrap();
    assert_eq!(c.gateway.models[gpt4o].fallbacks, vec![claude]);
    // Cooldowns are off; latency-based needs a record for
    // the model with two deployments only.
    assert!(c.gateway.models[gpt4o].tracked);
    assert!(!c.gateway.models[claude].tracked);

    let bad = edit(
        BASE,
        "router_settings:\n  routing_strategy: simple-shuffle\n",
        "router_settings: {routing_strategy: fastest, cooldown_time: -1, fallbacks: [{gpt-4o: [gpt-5]}]}\n",
    );
    let errors = compile_errors(&bad, &base_env());
    assert!(errors.iter().any(|e| e.starts_with("router_settings.routing_strategy: unknown strategy \"fastest\"")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("router_settings.cooldown_time: -1 is not a time")), "{errors:?}");
    assert!(errors.iter().any(|e| e == "router_settings.fallbacks[0].gpt-4o[0]: unknown model \"gpt-5\""), "{errors:?}");

    let limits = edit(BASE, "api_keys: [os.environ/TEAM_A_KEY]", "api_keys: [os.environ/TEAM_A_KEY]\n    rpm_limit: 0");
    let errors = compile_errors(&limits, &base_env());
    assert!(errors.iter().any(|e| e.starts_with("user_access[0].rpm_limit: 0 would refuse every request")), "{errors:?}");
}

#[test]
fn wildcards_and_access_groups_in_team_models() {
    let yaml = |models: &str| {
        format!(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}}
    model_info: {{access_groups: [beta]}}
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}}
  - model_name: claude
    litellm_params: {{model: anthropic/claude-3-5-haiku-20241022, api_key: os.environ/ANTHROPIC_API_KEY}}
    model_info: {{access_groups: [beta]}}
user_access:
  - user_id: t
    models: {models}
"#
        )
    };
    let allowed = |models: &str| -> Vec<bool> { compiled(&yaml(models), &base_env()).gateway.teams[0].allowed.clone() };
    assert_eq!(allowed("[\"*\"]"), vec![true, true, true]);
    assert_eq!(allowed("[\"openai/*\"]"), vec![true, true, false]);
    assert_eq!(allowed("[\"gpt-4o*\"]"), vec![true, true, false]);
    assert_eq!(allowed("[beta]"), vec![true, false, true]);
    assert_eq!(allowed("[gpt-4o-mini, beta]"), vec![true, true, true]);
    let errors = compile_errors(&yaml("[\"mistral/*\", gpt-5]"), &base_env());
    assert!(errors.iter().any(|e| e.starts_with("user_access[0].models[0]: no model matches \"mistral/*\"")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("user_access[0].models[1]: unknown model \"gpt-5\"")), "{errors:?}");
}

#[test]
fn key_objects_are_checked_with_their_paths() {
    let yaml = edit(
        BASE,
        "api_keys: [os.environ/TEAM_A_KEY]",
        "api_keys:\n      - {key: os.environ/TEAM_A_KEY, alias: bot, models: [claude, gpt-5], expires_at: 2026-02-30, budget_duration: fortnightly}",
    );
    let errors = compile_errors(&yaml, &base_env());
    assert!(errors.iter().any(|e| e.starts_with("user_access[0].api_keys[0].models[1]: unknown model \"gpt-5\"")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("user_access[0].api_keys[0].expires_at: \"2026-02-30\" is not a UTC date")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("user_access[0].api_keys[0].budget_duration: \"fortnightly\" is not a period")), "{errors:?}");
    let ok = edit(BASE, "api_keys: [os.environ/TEAM_A_KEY]", "api_keys:\n      - {key: os.environ/TEAM_A_KEY, alias: bot, max_budget: 1}");
    let c = compiled(&ok, &base_env());
    assert_eq!(c.gateway.key_rules.len(), 1);
    assert_eq!(c.gateway.key_rules[0].alias, "bot");
    assert_eq!(c.gateway.key_rules[0].budget_micro, Some(1_000_000));
}

#[test]
fn cache_write_prices() {
    // Derived from the input price unless given.
    let gw = compiled(BASE, &base_env()).gateway;
    let p = gw.deployments[3].price.unwrap();
    assert_eq!((p.input, p.cache_write, p.cache_write_1h), (100_000, 125_000, 200_000));
    let yaml = edit(
        BASE,
        "input_cost_per_token: 0.0000001",
        "input_cost_per_token: 0.0000001\n      cache_creation_input_token_cost: 0.0000003\n      cache_creation_input_token_cost_above_1hr: 0.0000004",
    );
    let p = compiled(&yaml, &base_env()).gateway.deployments[3].price.unwrap();
    assert_eq!((p.cache_write, p.cache_write_1h), (300_000, 400_000));
    let yaml = edit(BASE, "input_cost_per_token: 0.0000001", "input_cost_per_token: 0.0000001\n      cache_creation_input_token_cost_above_1hr: -2");
    assert_eq!(
        compile_errors(&yaml, &base_env())[0],
        "model_list[3].model_info.cache_creation_input_token_cost_above_1hr: -2 must be a price of 0 or more, in USD per token"
    );
}

#[test]
fn the_native_build_renders_a_dynamic_module() {
    let opts = RenderOptions { wasm_path: "/opt/tollgate/libtollgate.so".into(), native: true, ..options() };
    let (_, _, v) = render(&render_config(), &opts);
    let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filter = &hcm["http_filters"][0]["typed_config"];
    assert_eq!(filter["@type"], "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter");
    assert_eq!(filter["dynamic_module_config"]["module"]["local"]["filename"], "/opt/tollgate/libtollgate.so");
    // The same gateway config the wasm filter gets, as JSON.
    let config: Value = serde_json::from_str(filter["filter_config"]["value"].as_str().unwrap()).unwrap();
    assert!(config["model_list"].is_array());
    // Stats keep their names.
    assert_eq!(
        v["layered_runtime"]["layers"][0]["static_layer"]["envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix"],
        true
    );
    // The wasm build's bootstrap has neither.
    let (_, _, w) = render(&render_config(), &options());
    assert!(w.get("layered_runtime").is_none());
    let wasm = &w["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0];
    assert_eq!(wasm["typed_config"]["@type"], "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
}
