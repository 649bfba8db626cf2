//! The request path through a real Envoy: what the client gets and what the
//! provider receives.

mod common;

use common::upstream::{Reply, Upstream};
use common::*;
use serde_json::json;

/// Checks what the provider received for one forwarded request.
fn assert_forwarded(req: &common::upstream::Recorded, path: &str, upstream_model: &str) {
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, path);
    if path.ends_with("/v1/messages") {
        // Anthropic's API: the key in x-api-key, no bearer token.
        assert_eq!(req.header("x-api-key"), Some(PROVIDER_KEY));
        assert_eq!(req.header("authorization"), None);
    } else {
        assert_eq!(req.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    }
    assert_eq!(req.json()["model"], upstream_model);
    // The team's key never reaches the provider, in any header or the body.
    for (name, value) in &req.headers {
        assert!(
            !value.contains(ALPHA_KEY) && !value.contains(BETA_KEY),
            "team key leaked upstream in header {name}: {value}"
        );
    }
    assert!(!req.body_str().contains(ALPHA_KEY));
    // Nor does the routing header.
    assert_eq!(req.header("x-tollgate-cluster"), None);
    // Answers come uncompressed, so that their usage can be read.
    assert_eq!(req.header("accept-encoding"), Some("identity"));
}

#[test]
fn chat_completion_goes_to_the_deployment_with_the_provider_key_and_model() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);

    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        "temperature": 0.2,
        "metadata": {"model": "not-this-one"},
        "user": "alice"
    });
    let r = post_bytes(
        &gw.url("/v1/chat/completions"),
        Some(ALPHA_KEY),
        body.to_string().as_bytes(),
        &[("openai-organization", "org-client"), ("openai-project", "proj-client"), ("x-api-key", ALPHA_KEY)],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gpt-4o-mini-2024-07-18", "the fake upstream echoes the model it was sent");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_forwarded(req, "/v1/chat/completions", "gpt-4o-mini-2024-07-18");
    assert_eq!(req.header("host"), Some(format!("127.0.0.1:{}", up.port()).as_str()));
    // Everything but the model is passed on unchanged, nested "model" keys included.
    let mut sent = req.json();
    sent["model"] = json!("gpt-4o-mini");
    assert_eq!(sent, body);
    assert_eq!(req.header("content-length"), Some(req.body.len().to_string().as_str()));
    // Requests go out on the gateway's account, not one the client names.
    assert_eq!(req.header("openai-organization"), None);
    assert_eq!(req.header("openai-project"), None);
    assert_eq!(req.header("x-api-key"), None);
}

#[test]
fn every_endpoint_with_and_without_v1() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let cases = [
        ("/v1/chat/completions", "gpt-4o-mini", "/v1/chat/completions", "gpt-4o-mini-2024-07-18"),
        ("/chat/completions", "gpt-4o-mini", "/v1/chat/completions", "gpt-4o-mini-2024-07-18"),
        ("/v1/completions", "gpt-4o-mini", "/v1/completions", "gpt-4o-mini-2024-07-18"),
        ("/completions", "gpt-4o-mini", "/v1/completions", "gpt-4o-mini-2024-07-18"),
        ("/v1/embeddings", "text-embedding-3-small", "/v1/embeddings", "text-embedding-3-small"),
        ("/embeddings", "text-embedding-3-small", "/v1/embeddings", "text-embedding-3-small"),
        ("/v1/chat/completions", "gpt-4.1-mini", "/custom/prefix/v1/chat/completions", "gpt-4.1-mini"),
        // The client's query string is not passed on: the gateway owns the upstream URL.
        ("/v1/chat/completions?model=gpt-4o&trace=1", "gpt-4.1-mini", "/custom/prefix/v1/chat/completions", "gpt-4.1-mini"),
        // Anthropic: translated to its Messages API.
        ("/v1/chat/completions", "claude-3-5-haiku", "/v1/messages", "claude-3-5-haiku-latest"),
    ];
    for (i, (path, model, upstream_path, upstream_model)) in cases.iter().enumerate() {
        let body = json!({"model": model, "prompt": "hi", "input": "hi", "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.post(path, Some(ALPHA_KEY), &body.to_string());
        assert_eq!(r.status, 200, "{path} {model}: {}", r.body);
        let reqs = up.wait_for(i + 1, std::time::Duration::from_secs(5));
        assert_forwarded(&reqs[i], upstream_path, upstream_model);
    }
}

#[test]
fn models_endpoints_answer_for_the_caller_only() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);

    let ids = |r: &Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["object"], "list");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["object"], "model");
                assert!(m["created"].is_u64() && m["owned_by"].is_string());
                m["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let alpha = get(&gw.url("/v1/models"), Some(ALPHA_KEY)).unwrap();
    assert_eq!(ids(&alpha), ["gpt-4o-mini", "gpt-4.1-mini", "claude-3-5-haiku", "text-embedding-3-small"]);
    assert_eq!(alpha.header("content-type"), Some("application/json"));
    let beta = get(&gw.url("/models"), Some(BETA_KEY)).unwrap();
    assert_eq!(ids(&beta), ["gpt-4o-mini"]);

    let one = get(&gw.url("/v1/models/gpt-4o-mini"), Some(BETA_KEY)).unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], "gpt-4o-mini");
    assert_eq!(one.json()["owned_by"], "openai");
    get(&gw.url("/v1/models/claude-3-5-haiku"), Some(BETA_KEY)).unwrap().assert_error(404, Some("model_not_found"));
    get(&gw.url("/v1/models"), None).unwrap().assert_error(401, Some("invalid_api_key"));
    get(&gw.url("/v1/models"), Some("wrong")).unwrap().assert_error(401, Some("invalid_api_key"));

    assert!(up.requests().is_empty(), "the models endpoints never reach a provider");
}

#[test]
fn provider_errors_pass_through_with_their_status() {
    let up = Upstream::start(|req| {
        let model = req.json()["model"].as_str().unwrap_or_default().to_string();
        match model.as_str() {
            "gpt-4o-mini-2024-07-18" => Reply::json(
                429,
                json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
            ),
            _ => Reply::json(
                500,
                json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}),
            ),
        }
    });
    let gw = Gateway::standard(&up);
    let r = gw.chat(ALPHA_KEY, "gpt-4o-mini");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "Rate limit reached");
    let r = gw.chat(ALPHA_KEY, "gpt-4.1-mini");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
}

#[test]
fn client_cannot_pick_the_cluster() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);

    // On a gateway path the filter overwrites the header.
    let r = post_bytes(
        &gw.url("/v1/chat/completions"),
        Some(ALPHA_KEY),
        chat_body("gpt-4o-mini").as_bytes(),
        &[("x-tollgate-cluster", "tollgate_admin")],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.requests().len(), 1);

    // Elsewhere it removes it, so the admin interface stays out of reach.
    for path in ["/stats", "/config_dump", "/quitquitquit"] {
        let r = post_bytes(&gw.url(path), None, b"{}", &[("x-tollgate-cluster", "tollgate_admin")]).unwrap();
        r.assert_error(404, Some("not_found"));
    }
    let r = get(&gw.url("/ready"), None).unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn a_chunked_request_body_is_rewritten_and_framed() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let body = chat_body("gpt-4o-mini");
    let (a, b) = body.split_at(7);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALPHA_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let (status, text) = raw_request(gw.port, request.as_bytes());
    assert_eq!(status, 200, "{text}");
    let req = &up.requests()[0];
    assert_forwarded(req, "/v1/chat/completions", "gpt-4o-mini-2024-07-18");
}

#[test]
fn a_large_body_under_the_cap_arrives_whole() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let text = "lorem ipsum ".repeat(900_000); // ~10.8 MB
    let body = json!({"messages": [{"role": "user", "content": text}], "model": "gpt-4o-mini"}).to_string();
    let r = gw.post("/v1/chat/completions", Some(ALPHA_KEY), &body);
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    let req = &up.requests()[0];
    assert_eq!(req.json()["messages"][0]["content"].as_str().unwrap().len(), text.len());
    assert_forwarded(req, "/v1/chat/completions", "gpt-4o-mini-2024-07-18");
}

#[test]
fn deployments_of_one_model_share_the_traffic() {
    let first = Upstream::openai();
    let second = Upstream::openai();
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini]
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#,
        first.base_url(),
        second.base_url()
    );
    let gw = Gateway::start_with(&config, &standard_env(), 1);
    for _ in 0..40 {
        assert_eq!(gw.chat(ALPHA_KEY, "gpt-4o-mini").status, 200);
    }
    // simple-shuffle with equal weights: both get a share (the chance that
    // one gets none of 40 is 2 in 10^12).
    let (a, b) = (first.requests().len(), second.requests().len());
    assert_eq!(a + b, 40);
    assert!(a > 0 && b > 0, "{a} and {b}");
}

#[test]
fn envoy_errors_come_in_openai_shape() {
    let up = Upstream::openai();
    let closed = free_port();
    let config = standard_config(&up).replace(
        "  - model_name: text-embedding-3-small",
        &format!(
            "  - model_name: gpt-down\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"http://127.0.0.1:{closed}/v1\"}}\n  - model_name: text-embedding-3-small"
        ),
    ).replace("[gpt-4o-mini, gpt-4.1-mini,", "[gpt-4o-mini, gpt-down, gpt-4.1-mini,");
    let gw = Gateway::start(&config, &standard_env());
    let r = gw.chat(ALPHA_KEY, "gpt-down");
    let v = r.assert_error(503, None);
    assert_eq!(v["error"]["type"], "gateway_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("upstream"), "{v}");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

/// The model's name rewritten to a shorter and to a longer one, alone and
/// with `stream_options` added: the provider gets exactly the client's bytes
/// with those edits, and a `content-length` that matches (the native build
/// makes such edits in the slice Envoy holds the body in).
#[test]
fn rewritten_bodies_arrive_byte_for_byte() {
    let up = Upstream::openai();
    let config = format!(
        r#"
model_list:
  - model_name: a-rather-long-friendly-model-name
    litellm_params: {{model: openai/short, api_base: "{base}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: m
    litellm_params: {{model: openai/a-much-longer-upstream-model-name-2024-07-18, api_base: "{base}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [a-rather-long-friendly-model-name, m]
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#,
        base = up.base_url()
    );
    let gw = Gateway::start_with(&config, &standard_env(), 1);
    let padding = "x".repeat(3000);
    let cases: [(&str, &str, String, String); 6] = [
        (
            "a-rather-long-friendly-model-name",
            "short",
            format!(r#"{{"model": "a-rather-long-friendly-model-name", "messages": [{{"role": "user", "content": "{padding}"}}]}}"#),
            format!(r#"{{"model": "short", "messages": [{{"role": "user", "content": "{padding}"}}]}}"#),
        ),
        (
            "m",
            "a-much-longer-upstream-model-name-2024-07-18",
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{padding}"}}]}}"#),
            format!(r#"{{"model":"a-much-longer-upstream-model-name-2024-07-18","messages":[{{"role":"user","content":"{padding}"}}]}}"#),
        ),
        (
            // The model last: the edit reaches the body's end.
            "m",
            "a-much-longer-upstream-model-name-2024-07-18",
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"m"}"#.to_string(),
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"a-much-longer-upstream-model-name-2024-07-18"}"#.to_string(),
        ),
        (
            "m",
            "a-much-longer-upstream-model-name-2024-07-18",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#.to_string(),
            r#"{"stream_options":{"include_usage":true},"model":"a-much-longer-upstream-model-name-2024-07-18","messages":[{"role":"user","content":"hi"}],"stream":true}"#.to_string(),
        ),
        (
            "a-rather-long-friendly-model-name",
            "short",
            r#"{"model":"a-rather-long-friendly-model-name","stream":true,"messages":[{"role":"user","content":"hi"}]}"#.to_string(),
            r#"{"stream_options":{"include_usage":true},"model":"short","stream":true,"messages":[{"role":"user","content":"hi"}]}"#.to_string(),
        ),
        (
            // A body of one byte more than the longest name's growth.
            "m",
            "a-much-longer-upstream-model-name-2024-07-18",
            r#"{"model":"m"}"#.to_string(),
            r#"{"model":"a-much-longer-upstream-model-name-2024-07-18"}"#.to_string(),
        ),
    ];
    for (i, (model, upstream_model, sent, want)) in cases.iter().enumerate() {
        let r = gw.post("/v1/chat/completions", Some(ALPHA_KEY), sent);
        assert_eq!(r.status, 200, "{model}: {}", r.body);
        let reqs = up.wait_for(i + 1, std::time::Duration::from_secs(5));
        let req = &reqs[i];
        assert_forwarded(req, "/v1/chat/completions", upstream_model);
        assert_eq!(req.body_str(), want.as_str(), "case {i}");
        assert_eq!(req.header("content-length"), Some(want.len().to_string().as_str()), "case {i}");
    }
}
