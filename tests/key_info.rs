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
