//! `GET /v1/key/info` and budget periods through a real Envoy: a caller sees
//! its own team's standing, and nobody else's.

mod common;

use common::upstream::Upstream;
use common::*;
use serde_json::Value;

#[test]
fn a_caller_sees_where_it_stands() {
    let up = Upstream::openai();
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini]
    max_budget: 10
    budget_duration: monthly
    soft_budget: 0.000001
    rpm_limit: 100
    api_keys: [os.environ/TEAM_ALPHA_KEY]
  - user_id: team-beta
    models: ["*"]
    api_keys: ["sha256:{BETA_DIGEST}"]
general_settings: {{stats_flush_interval_ms: 0}}
"#,
        up.base_url(),
        up.base_url()
    );
    let gw = Gateway::start(&config, &standard_env());
    for _ in 0..2 {
        assert_eq!(gw.chat(ALPHA_KEY, "gpt-4o-mini").status, 200);
    }
    let r = get(&gw.url("/v1/key/info"), Some(ALPHA_KEY)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = r.json();
    assert_eq!(v["team"], "team-alpha");
    assert_eq!(v["models"], serde_json::json!(["gpt-4o-mini"]));
    // 2 × (10 input at $0.15/M + 5 output at $0.60/M), rounded up to micro-USD each.
    let spend = v["budget"]["spend"].as_f64().unwrap();
    let metric = gw.metric(r#"tollgate_spend_micro_usd_total{team="team-alpha",model="gpt-4o-mini"}"#).unwrap();
    assert!((spend * 1e6 - metric).abs() < 0.5, "{spend} vs {metric}");
    assert!(spend > 0.0);
    assert_eq!(v["budget"]["max_budget"], 10.0);
    assert!((v["budget"]["remaining"].as_f64().unwrap() - (10.0 - spend)).abs() < 1e-9);
    // Monthly periods reset on the 1st, at midnight UTC.
    let reset = v["budget"]["budget_reset_at"].as_str().unwrap();
    assert!(reset.ends_with("-01T00:00:00Z"), "{reset}");
    assert_eq!(v["limits"]["rpm_limit"], 100);
    assert_eq!(v["limits"]["requests_this_minute"], 2);
    // The soft budget was crossed once, and counted once.
    assert_eq!(gw.metric(r#"tollgate_soft_budget_crossed_total{team="team-alpha"}"#), Some(1.0));

    // Another team sees only itself; a wrong key sees nothing.
    let b: Value = get(&gw.url("/v1/key/info"), Some(BETA_KEY)).unwrap().json();
    assert_eq!(b["team"], "team-beta");
    assert_eq!(b["models"], serde_json::json!(["gpt-4o-mini", "gpt-4o"]));
    assert_eq!(b["budget"]["spend"], 0.0);
    assert!(b["budget"]["max_budget"].is_null());
    get(&gw.url("/v1/key/info"), Some("wrong-key-000000000")).unwrap().assert_error(401, Some("invalid_api_key"));
}

#[test]
fn keys_with_their_own_models_budget_and_expiry() {
    let up = Upstream::openai();
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini, gpt-4o]
    max_budget: 10
    api_keys:
      - {{key: os.environ/TEAM_ALPHA_KEY, alias: ci-bot, models: [gpt-4o-mini], max_budget: 0.00002, expires_at: "2099-01-01"}}
      - {{key: "sha256:{BETA_DIGEST}", alias: old-laptop, expires_at: "2020-01-01"}}
"#,
        up.base_url(),
        up.base_url()
    );
    let gw = Gateway::start(&config, &standard_env());
    // The key may use only its own models.
    let v = gw.chat(ALPHA_KEY, "gpt-4o").assert_error(403, Some("model_not_allowed"));
    assert!(v["error"]["message"].as_str().unwrap().contains("The key \"ci-bot\" may not use the model \"gpt-4o\""), "{v}");
    // Its budget: 5 micro-USD a request, 20 in all; admitted while under it.
    for _ in 0..4 {
        assert_eq!(gw.chat(ALPHA_KEY, "gpt-4o-mini").status, 200);
    }
    let v = gw.chat(ALPHA_KEY, "gpt-4o-mini").assert_error(429, Some("insufficient_quota"));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("The key \"ci-bot\" has used its budget"), "{v}");
    // An expired key is refused, and says when it expired.
    let v = gw.chat(BETA_KEY, "gpt-4o-mini").assert_error(401, Some("invalid_api_key"));
    assert_eq!(v["error"]["message"], "The key \"old-laptop\" expired at 2020-01-01T00:00:00Z. Ask your platform team for a new one.");
    assert_eq!(up.requests().len(), 4);

    let info: Value = get(&gw.url("/v1/key/info"), Some(ALPHA_KEY)).unwrap().json();
    assert_eq!(info["key"]["alias"], "ci-bot");
    assert_eq!(info["key"]["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(info["key"]["spend"], 0.00002);
    assert_eq!(info["models"], serde_json::json!(["gpt-4o-mini"]));
    // The team's own spend includes the key's.
    assert_eq!(info["budget"]["spend"], 0.00002);
    // The key itself appears nowhere in the answer.
    assert!(!info.to_string().contains(ALPHA_KEY));
    // Its alias labels its stats.
    gw.wait_metric(r#"tollgate_spend_micro_usd_total{team="team-alpha",model="gpt-4o-mini",key="ci-bot"}"#, 20.0);
}
