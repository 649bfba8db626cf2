//! Providers through a real Envoy: OpenAI clients reaching Claude (translated
//! to Anthropic's Messages API and back), Anthropic clients on /v1/messages,
//! Azure OpenAI's paths and key header, and named OpenAI-compatible
//! providers. The upstream checks requests the way each real API does.

mod common;

use std::process::Command;
use std::time::Duration;

use common::upstream::Upstream;
use common::*;
use serde_json::{json, Value};

fn run_sdk(script: &str, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let out = Command::new(python_bin()).arg(script).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all checks passed"), "{text}");
    text
}



fn claude_config(up: &Upstream) -> String {
    let base = up.base_url();
    format!(
        r#"
model_list:
  - model_name: claude-3-5-haiku
    litellm_params: {{model: anthropic/claude-3-5-haiku-20241022, api_base: "{base}", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: claude-overloaded
    litellm_params: {{model: anthropic/claude-overloaded, api_base: "{base}", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000005}}
user_access:
  - user_id: team-alpha
    models: [claude-3-5-haiku, claude-overloaded]
    max_budget: 100
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#
    )
}

const CLAUDE_TOKENS: &str = r#"tollgate_tokens_total{team="team-alpha",model="claude-3-5-haiku",provider="anthropic",type="#;
const CLAUDE_SPEND: &str = r#"tollgate_spend_micro_usd_total{team="team-alpha",model="claude-3-5-haiku"}"#;

/// One call to the fake Anthropic API, at claude-3-5-haiku's prices (USD per
/// million tokens: 0.80 input, 0.08 cache reads, 1.00 5-minute and 1.60
/// 1-hour cache writes, 4.00 output): 10 × 0.80 + 2 × 0.08 + 1 × 1.00 +
/// 2 × 1.60 + 5 × 4.00 = 32.36 µUSD, rounded up once.
const CLAUDE_CALL_MICRO_USD: f64 = 33.0;

#[test]
fn the_openai_sdk_calls_claude_with_tools_plain_and_streamed() {
    let up = Upstream::openai();
    let gw = Gateway::start(&claude_config(&up), &standard_env());
    run_sdk("openai_claude.py", &[&gw.url("/v1"), ALPHA_KEY]);

    let reqs = up.requests();
    // plain, tool call, tool answer, 2 streams, streamed tool call, overloaded.
    assert_eq!(reqs.len(), 7, "{:?}", reqs.iter().map(|r| r.path.clone()).collect::<Vec<_>>());
    let first = &reqs[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(first.header("authorization"), None);
    let body = first.json();
    assert_eq!(body["model"], "claude-3-5-haiku-20241022");
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}]));
    // The tool answer went back as a tool_result in a user turn.
    let answer = reqs[2].json();
    let last = answer["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_01");

    // A translated answer carries its own length; an overloaded provider is a 503.
    let r = gw.chat(ALPHA_KEY, "claude-3-5-haiku");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Hello from the fake upstream.");
    let r = gw.chat(ALPHA_KEY, "claude-overloaded");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "overloaded_error");

    // Seven successful calls: 10 input, 3 cache writes, 2 cache reads and 5
    // output tokens each; the overloaded one costs nothing.
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"input\"}}"), 7.0 * 10.0);
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"cache_write\"}}"), 7.0 * 3.0);
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"cached_input\"}}"), 7.0 * 2.0);
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"output\"}}"), 7.0 * 5.0);
    gw.wait_metric(CLAUDE_SPEND, 7.0 * CLAUDE_CALL_MICRO_USD);
}

#[test]
fn anthropic_sdk_uses_messages_with_its_team_key() {
    let up = Upstream::openai();
    let gw = Gateway::start(&claude_config(&up), &standard_env());
    run_sdk("anthropic_client.py", &[&gw.url(""), ALPHA_KEY]);

    let reqs = up.requests();
    assert_eq!(reqs.len(), 3, "two plain calls and one stream; the wrong key never left the gateway");
    for r in &reqs {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(PROVIDER_KEY));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.json()["model"], "claude-3-5-haiku-20241022");
        // The SDK's own anthropic-version is kept.
        assert!(r.header("anthropic-version").is_some());
        assert!(!r.body_str().contains(ALPHA_KEY));
    }
    // Passed through untouched: the system prompt stays top-level.
    assert_eq!(reqs[0].json()["system"], "Be terse.");
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"input\"}}"), 3.0 * 10.0);
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"cache_write\"}}"), 3.0 * 3.0);
    gw.wait_metric(&format!("{CLAUDE_TOKENS}\"output\"}}"), 3.0 * 5.0);
    gw.wait_metric(CLAUDE_SPEND, 3.0 * CLAUDE_CALL_MICRO_USD);
}

#[test]
fn messages_refuses_what_the_gateway_refuses_in_anthropics_shape() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let msg = |model: &str| json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let send = |key: Option<&str>, body: &str| {
        let headers: Vec<(&str, &str)> = key.map(|k| vec![("x-api-key", k)]).unwrap_or_default();
        post_bytes(&gw.url("/v1/messages"), None, body.as_bytes(), &headers).unwrap()
    };
    let check = |r: &Resp, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let v: Value = r.json();
        assert_eq!(v["type"], "error", "{}", r.body);
        assert_eq!(v["error"]["type"], kind, "{}", r.body);
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    check(&send(Some("not-a-key"), &msg("claude-3-5-haiku")), 401, "authentication_error");
    check(&send(None, &msg("claude-3-5-haiku")), 401, "authentication_error");
    check(&send(Some(BETA_KEY), &msg("claude-3-5-haiku")), 403, "permission_error");
    // An OpenAI deployment has no Messages API.
    check(&send(Some(ALPHA_KEY), &msg("gpt-4o-mini")), 400, "invalid_request_error");
    assert!(up.requests().is_empty());
}

#[test]
fn azure_and_named_openai_compatible_providers_get_their_paths_and_headers() {
    let up = Upstream::openai();
    let base = up.base_url();
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-azure
    litellm_params: {{model: azure/my-gpt4o, api_base: "{base}", api_version: "2024-06-01", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: emb-azure
    litellm_params: {{model: azure/my-embeddings, api_base: "{base}", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: llama
    litellm_params: {{model: groq/llama-3.1-8b-instant, api_base: "{base}/openai/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: gemini-flash
    litellm_params: {{model: gemini/gemini-2.0-flash, api_base: "{base}/v1beta/openai", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-azure, emb-azure, llama, gemini-flash]
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#
    );
    let gw = Gateway::start(&config, &standard_env());
    let cases = [
        ("/v1/chat/completions", "gpt-4o-azure", "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01", "azure"),
        ("/v1/embeddings", "emb-azure", "/openai/deployments/my-embeddings/embeddings?api-version=2024-10-21", "azure"),
        ("/v1/chat/completions", "llama", "/openai/v1/chat/completions", "bearer"),
        ("/v1/chat/completions", "gemini-flash", "/v1beta/openai/chat/completions", "bearer"),
    ];
    for (i, (path, model, upstream_path, auth)) in cases.iter().enumerate() {
        let body = json!({"model": model, "input": "hi", "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.post(path, Some(ALPHA_KEY), &body.to_string());
        assert_eq!(r.status, 200, "{model}: {}", r.body);
        let req = &up.wait_for(i + 1, Duration::from_secs(5))[i];
        assert_eq!(req.path, *upstream_path, "{model}");
        if *auth == "azure" {
            assert_eq!(req.header("api-key"), Some(PROVIDER_KEY), "{model}");
            assert_eq!(req.header("authorization"), None, "{model}");
        } else {
            assert_eq!(req.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()), "{model}");
            assert_eq!(req.header("api-key"), None, "{model}");
        }
        assert!(req.headers.iter().all(|(_, v)| !v.contains(ALPHA_KEY)), "{model}: team key leaked");
    }
}
