//! Plain-Rust tests (no Envoy) of the request path: `on_head` and `on_body`,
//! and through them authentication, access and routing.

use std::collections::HashMap;

use serde_json::{json, Value};
use tollgate::admission::{on_body, on_head, BodyEdit, Forward, Head, HeadDecision, Pending, Wire};
use tollgate::config::{compile, parse_yaml, Gateway};
use tollgate::errors::{ApiError, DenyReason};
use tollgate::request::Endpoint;

const PROVIDER_SECRET: &str = "sk-provider-secret-0001";
const ANTHROPIC_SECRET: &str = "sk-ant-secret-0002";
const RR_B_SECRET: &str = "sk-rr-b-secret-0003";
const ALPHA_KEY: &str = "team-alpha-token";
/// Stored in the config only as its digest.
const BETA_KEY: &str = "team-beta-token";
const BETA_DIGEST: &str = "cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d";
const GAMMA_KEY: &str = "gamma-literal-key-0001";

const CHAT: &str = "/v1/chat/completions";

/// Models, by index: 0 gpt-4o-mini (renamed upstream, on a local base),
/// 1 gpt-4o (same name upstream), 2 claude (anthropic), 3 local (no key),
/// 4 rr (two deployments).
fn config() -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini-2024-07-18
      api_base: http://127.0.0.1:8000/v1
      api_key: os.environ/PROVIDER_KEY
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/PROVIDER_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-haiku-20241022
      api_key: os.environ/ANTHROPIC_KEY
  - model_name: local
    litellm_params:
      model: openai/meta-llama/Llama-3.1-8B
      api_base: http://10.1.2.3:9000
  - model_name: rr
    litellm_params:
      model: openai/rr-a
      api_base: http://10.0.0.1:8001/v1
      api_key: os.environ/PROVIDER_KEY
  - model_name: rr
    litellm_params:
      model: openai/rr-b
      api_base: https://rr-b.example.com/openai
      api_key: os.environ/RR_B_KEY
general_settings:
  max_request_size_mb: 1
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini, gpt-4o, claude, local, rr]
    api_keys: [os.environ/TEAM_ALPHA_KEY]
  - user_id: team-beta
    models: [gpt-4o-mini]
    api_keys: ["sha256:{BETA_DIGEST}"]
  - user_id: team-gamma
    models: []
    api_keys: [{GAMMA_KEY}]
"#
    )
}

fn env() -> HashMap<String, String> {
    [
        ("PROVIDER_KEY", PROVIDER_SECRET),
        ("ANTHROPIC_KEY", ANTHROPIC_SECRET),
        ("RR_B_KEY", RR_B_SECRET),
        ("TEAM_ALPHA_KEY", ALPHA_KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn gateway_from(yaml: &str, env: &HashMap<String, String>) -> Gateway {
    let file = parse_yaml(yaml).unwrap();
    match compile(&file, env) {
        Ok(c) => c.gateway,
        Err(e) => panic!("config refused: {e:#?}"),
    }
}

fn gateway() -> Gateway {
    gateway_from(&config(), &env())
}

const ALPHA: usize = 0;
const BETA: usize = 1;
const GAMMA: usize = 2;

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn head<'a>(method: &'a str, path: &'a str, authorization: Option<&'a str>) -> Head<'a> {
    Head { method, path, authorization, content_length: None, ..Head::default() }
}

fn denied(d: HeadDecision) -> (Option<usize>, ApiError) {
    match d {
        HeadDecision::Deny { team, error } => (team, error),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn answered(d: HeadDecision) -> (usize, Value) {
    match d {
        HeadDecision::Answer { team, body } => (team, serde_json::from_str(&body).unwrap()),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn pending(team: usize, endpoint: Endpoint) -> Pending {
    Pending { team, endpoint, anthropic_version: false, key: None, user: None }
}

/// The body as it goes upstream.
fn apply(body: &[u8], edit: &Option<BodyEdit>) -> Vec<u8> {
    match edit {
        None => body.to_vec(),
        Some(e) => {
            let mut out = e.prefix.clone();
            out.extend_from_slice(&body[e.replace..]);
            out
        }
    }
}

fn header<'f>(fwd: &'f Forward, name: &str) -> Option<&'f str> {
    let found: Vec<_> = fwd.headers.iter().filter(|(h, _)| *h == name).collect();
    assert_eq!(found.len(), 1, "{name} should be set or removed exactly once: {:?}", fwd.headers);
    found[0].1.as_deref()
}

fn assert_unauthenticated(e: &ApiError) {
    assert_eq!(e.status, 401, "{e:?}");
    assert_eq!(e.code, Some("invalid_api_key"));
    assert_eq!(e.kind, "invalid_request_error");
    assert_eq!(e.reason, DenyReason::Unauthenticated);
}

fn assert_bad_request(e: &ApiError, param: Option<&str>, message: &str) {
    assert_eq!(e.status, 400, "{e:?}");
    assert_eq!(e.kind, "invalid_request_error");
    assert_eq!(e.reason, DenyReason::BadRequest);
    assert_eq!(e.code, None);
    assert_eq!(e.param, param, "{e:?}");
    assert_eq!(e.message, message);
}

// ---------------------------------------------------------------------------
// on_head

#[test]
fn paths_that_are_not_ours_pass_through() {
    let gw = gateway();
    for path in ["/", "/healthz", "/metrics", "/v1", "/v1/files", "/v1/chat/completions/x", "/v2/chat/completions"] {
        for method in ["GET", "POST", "DELETE"] {
            assert_eq!(on_head(&gw, &head(method, path, None)), HeadDecision::PassThrough, "{method} {path}");
        }
    }
    // Even with a bad key: Envoy's own routes decide.
    assert_eq!(on_head(&gw, &head("GET", "/metrics", Some("Bearer nope"))), HeadDecision::PassThrough);
}

#[test]
fn list_models_needs_a_key() {
    let gw = gateway();
    let (team, e) = denied(on_head(&gw, &head("GET", "/v1/models", None)));
    assert_eq!(team, None);
    assert_unauthenticated(&e);
    let (team, e) = denied(on_head(&gw, &head("GET", "/v1/models", Some("Bearer wrong-key-that-is-long"))));
    assert_eq!(team, None);
    assert_unauthenticated(&e);
}

#[test]
fn list_models_per_team() {
    let gw = gateway();
    let alpha = bearer(ALPHA_KEY);
    let (team, body) = answered(on_head(&gw, &head("GET", "/v1/models", Some(&alpha))));
    assert_eq!(team, ALPHA);
    let model = |id: &str, owner: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
    assert_eq!(
        body,
        json!({"object": "list", "data": [
            model("gpt-4o-mini", "openai"),
            model("gpt-4o", "openai"),
            model("claude", "anthropic"),
            model("local", "openai"),
            model("rr", "openai"),
        ]})
    );

    let beta = bearer(BETA_KEY);
    let (team, body) = answered(on_head(&gw, &head("GET", "/models?limit=5", Some(&beta))));
    assert_eq!(team, BETA);
    assert_eq!(body, json!({"object": "list", "data": [model("gpt-4o-mini", "openai")]}));

    let gamma = bearer(GAMMA_KEY);
    let (team, body) = answered(on_head(&gw, &head("GET", "/v1/models/", Some(&gamma))));
    assert_eq!(team, GAMMA);
    assert_eq!(body, json!({"object": "list", "data": []}));
}

#[test]
fn retrieve_one_model() {
    let gw = gateway();
    let alpha = bearer(ALPHA_KEY);
    let (team, body) = answered(on_head(&gw, &head("GET", "/v1/models/claude", Some(&alpha))));
    assert_eq!(team, ALPHA);
    assert_eq!(body, json!({"id": "claude", "object": "model", "created": 0, "owned_by": "anthropic"}));

    // A model the team may not use looks like one that does not exist.
    let beta = bearer(BETA_KEY);
    for path in ["/v1/models/claude", "/v1/models/gpt-5"] {
        let (team, e) = denied(on_head(&gw, &head("GET", path, Some(&beta))));
        assert_eq!(team, Some(BETA));
        assert_eq!(e.status, 404, "{path}");
        assert_eq!(e.code, Some("model_not_found"));
        assert_eq!(e.param, Some("model"));
    }
    let (team, e) = denied(on_head(&gw, &head("GET", "/v1/models/claude", None)));
    assert_eq!(team, None);
    assert_unauthenticated(&e);
}

#[test]
fn methods_are_checked_before_keys() {
    let gw = gateway();
    let alpha = bearer(ALPHA_KEY);
    for auth in [Some(alpha.as_str()), None] {
        let (team, e) = denied(on_head(&gw, &head("GET", CHAT, auth)));
        assert_eq!(team, None);
        assert_eq!(e.status, 405);
        assert_eq!(e.message, "GET is not supported on /v1/chat/completions; use POST.");
        assert_eq!(e.reason, DenyReason::BadRequest);

        let (team, e) = denied(on_head(&gw, &head("POST", "/v1/models", auth)));
        assert_eq!(team, None);
        assert_eq!(e.status, 405);
        assert_eq!(e.message, "POST is not supported on /v1/models; use GET.");

        let (_, e) = denied(on_head(&gw, &head("DELETE", "/v1/models/claude", auth)));
        assert_eq!(e.status, 405);
        let (_, e) = denied(on_head(&gw, &head("PUT", "/embeddings", auth)));
        assert_eq!(e.status, 405);
        assert_eq!(e.message, "PUT is not supported on /embeddings; use POST.");
    }
}

#[test]
fn inference_needs_a_valid_bearer_key() {
    let gw = gateway();
    let (team, e) = denied(on_head(&gw, &head("POST", CHAT, None)));
    assert_eq!(team, None);
    assert_unauthenticated(&e);
    assert_eq!(e.message, "No API key provided. Send your team key in the header 'Authorization: Bearer <key>'.");

    for malformed in ["Basic dGVhbTp4", ALPHA_KEY, "Bearer", "Bearer   ", "", "Token team-alpha-token"] {
        let (team, e) = denied(on_head(&gw, &head("POST", CHAT, Some(malformed))));
        assert_eq!(team, None, "{malformed:?}");
        assert_unauthenticated(&e);
        assert_eq!(e.message, "The Authorization header must be 'Bearer <key>', with your team key.", "{malformed:?}");
    }

    for wrong in ["Bearer team-alpha-tokeN", "Bearer team-alpha-token2", "Bearer Team-alpha-token", "Bearer x"] {
        let (team, e) = denied(on_head(&gw, &head("POST", CHAT, Some(wrong))));
        assert_eq!(team, None, "{wrong:?}");
        assert_unauthenticated(&e);
        assert!(e.message.starts_with("Incorrect API key provided: "), "{}", e.message);
    }
    // The error body carries the code.
    let body: Value = serde_json::from_str(&e_body(&gw)).unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

fn e_body(gw: &Gateway) -> String {
    denied(on_head(gw, &head("POST", CHAT, Some("Bearer nope")))).1.body()
}

#[test]
fn bearer_scheme_and_spacing() {
    let gw = gateway();
    for ok in [format!("Bearer {ALPHA_KEY}"), format!("bearer {ALPHA_KEY}"), format!("BEARER  {ALPHA_KEY} "), format!(" Bearer {ALPHA_KEY}")] {
        match on_head(&gw, &head("POST", CHAT, Some(&ok))) {
            HeadDecision::ReadBody(p) => assert_eq!(p.team, ALPHA, "{ok:?}"),
            other => panic!("{ok:?}: {other:?}"),
        }
    }
}

#[test]
fn content_length_is_checked_after_the_key() {
    let gw = gateway();
    assert_eq!(gw.max_body_bytes, 1_048_576);
    let alpha = bearer(ALPHA_KEY);
    let with_length = |len: &'static str, auth: &str| {
        let h = Head { method: "POST", path: CHAT, authorization: Some(auth), content_length: Some(len), ..Head::default() };
        on_head(&gw, &h)
    };

    let (team, e) = denied(with_length("1048577", &alpha));
    assert_eq!(team, Some(ALPHA));
    assert_eq!(e.status, 413);
    assert_eq!(e.reason, DenyReason::PayloadTooLarge);
    assert!(e.message.contains("1048577 bytes") && e.message.contains("at most 1048576 bytes"), "{}", e.message);
    let (_, e) = denied(with_length("18446744073709551615", &alpha));
    assert_eq!(e.status, 413);

    for ok in ["1048576", "0", " 10 ", "512"] {
        assert!(matches!(with_length(ok, &alpha), HeadDecision::ReadBody(_)), "{ok:?}");
    }
    for bad in ["abc", "-1", "", "1e3", "10 20", "18446744073709551616"] {
        let (team, e) = denied(with_length(bad, &alpha));
        assert_eq!(team, Some(ALPHA), "{bad:?}");
        assert_bad_request(&e, None, "The Content-Length header is not a number.");
    }

    // A wrong key is refused as such, whatever the length.
    let (team, e) = denied(with_length("99999999", "Bearer wrong-key-0000000"));
    assert_eq!(team, None);
    assert_unauthenticated(&e);
}

#[test]
fn default_size_cap_is_16_mib() {
    let yaml = config().replace("general_settings:\n  max_request_size_mb: 1\n", "");
    let gw = gateway_from(&yaml, &env());
    let alpha = bearer(ALPHA_KEY);
    let h = |len| Head { method: "POST", path: CHAT, authorization: Some(&alpha), content_length: Some(len), ..Head::default() };
    assert_eq!(denied(on_head(&gw, &h("16777217"))).1.status, 413);
    assert!(matches!(on_head(&gw, &h("16777216")), HeadDecision::ReadBody(_)));
}

#[test]
fn valid_requests_read_the_body_and_keep_the_query() {
    let gw = gateway();
    let alpha = bearer(ALPHA_KEY);
    let beta = bearer(BETA_KEY);
    let h = Head {
        method: "POST",
        path: "/v1/chat/completions?api-version=2024-10-21&x=1",
        authorization: Some(&alpha),
        content_length: Some("120"),
        ..Head::default()
    };
    assert_eq!(
        on_head(&gw, &h),
        HeadDecision::ReadBody(Pending { team: ALPHA, endpoint: Endpoint::ChatCompletions, anthropic_version: false, key: None, user: None })
    );
    assert_eq!(on_head(&gw, &head("POST", "/embeddings", Some(&beta))), HeadDecision::ReadBody(pending(BETA, Endpoint::Embeddings)));
    assert_eq!(
        on_head(&gw, &head("POST", "/v1/completions?", Some(&beta))),
        HeadDecision::ReadBody(Pending { team: BETA, endpoint: Endpoint::Completions, anthropic_version: false, key: None, user: None })
    );
}

// ---------------------------------------------------------------------------
// on_body

#[test]
fn model_rewrite_changes_only_the_model() {
    let gw = gateway();
    let body = br#"{ "messages": [{"role": "user", "content": "say \"model\": \"gpt-4o\""}], "model" : "gpt-4o-mini", "stream": false, "n": 1 }"#;
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), body, 0).unwrap();
    assert_eq!((fwd.model, fwd.deployment), (0, 0));
    let edit = fwd.body_edit.as_ref().expect("gpt-4o-mini is renamed upstream");
    let sent = apply(body, &fwd.body_edit);
    // Byte for byte: only the model token differs.
    let expected = String::from_utf8(body.to_vec()).unwrap().replace(r#""model" : "gpt-4o-mini""#, r#""model" : "gpt-4o-mini-2024-07-18""#);
    assert_eq!(String::from_utf8(sent.clone()).unwrap(), expected);
    // As JSON: the original with "model" changed.
    let mut want: Value = serde_json::from_slice(body).unwrap();
    want["model"] = json!("gpt-4o-mini-2024-07-18");
    assert_eq!(serde_json::from_slice::<Value>(&sent).unwrap(), want);
    // The edit touches a prefix only.
    assert!(edit.replace <= body.len());
    assert_eq!(&edit.prefix[..], &sent[..edit.prefix.len()]);
    assert_eq!(header(&fwd, "content-length"), Some(sent.len().to_string().as_str()));
}

#[test]
fn model_rewrite_with_escapes_and_slashes() {
    let gw = gateway();
    // The client escapes the name; it is still gpt-4o-mini.
    let body = br#"{"model":"gpt\u002d4o-mini","messages":[]}"#;
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), body, 0).unwrap();
    let sent = apply(body, &fwd.body_edit);
    assert_eq!(sent, br#"{"model":"gpt-4o-mini-2024-07-18","messages":[]}"#);
    assert_eq!(header(&fwd, "content-length"), Some(sent.len().to_string().as_str()));

    // An upstream model with a slash in it.
    let body = br#"{"messages":[],"model":"local"}"#;
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), body, 0).unwrap();
    let sent = apply(body, &fwd.body_edit);
    assert_eq!(sent, br#"{"messages":[],"model":"meta-llama/Llama-3.1-8B"}"#);
    assert_eq!(header(&fwd, "content-length"), Some(sent.len().to_string().as_str()));
}

/// A streaming request also gets `stream_options.include_usage`; the one
/// prefix edit carries both changes, and nothing else changes.
#[test]
fn streaming_edits_combine_with_the_model_rewrite() {
    let gw = gateway();
    let p = pending(ALPHA, Endpoint::ChatCompletions);
    let cases: [(&[u8], Value, bool); 4] = [
        (
            br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini","stream":true}"#,
            json!({"include_usage": true}),
            false,
        ),
        (
            br#"{"stream_options":{"include_usage":true},"stream":true,"model":"gpt-4o-mini"}"#,
            json!({"include_usage": true}),
            true,
        ),
        (br#"{"model":"gpt-4o-mini","stream":true,"stream_options":null}"#, json!({"include_usage": true}), false),
        (
            br#"{"model":"gpt-4o-mini","stream_options":{"x":[1,2],"include_usage":false},"stream":true}"#,
            json!({"x": [1, 2], "include_usage": true}),
            false,
        ),
    ];
    for (body, options, asked) in cases {
        let fwd = on_body(&gw, &p, body, 0).unwrap();
        let sent = apply(body, &fwd.body_edit);
        let mut want: Value = serde_json::from_slice(body).unwrap();
        want["model"] = json!("gpt-4o-mini-2024-07-18");
        want["stream_options"] = options;
        assert_eq!(serde_json::from_slice::<Value>(&sent).unwrap(), want, "{}", String::from_utf8_lossy(&sent));
        assert_eq!(header(&fwd, "content-length"), Some(sent.len().to_string().as_str()));
        assert_eq!(fwd.stream.map(|s| s.client_asked_usage), Some(asked));
    }
    // Not streaming: no plan, no stream_options.
    for body in [&br#"{"model":"gpt-4o","stream":false}"#[..], br#"{"model":"gpt-4o"}"#] {
        let fwd = on_body(&gw, &p, body, 0).unwrap();
        assert_eq!(fwd.stream, None);
        assert_eq!(fwd.body_edit, None);
    }
    let e = on_body(&gw, &p, br#"{"model":"gpt-4o","stream":true,"stream_options":5}"#, 0).unwrap_err();
    assert_eq!((e.status, e.param), (400, Some("stream_options")));
}

#[test]
fn no_edit_when_the_upstream_name_is_the_public_name() {
    let gw = gateway();
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), body, 0).unwrap();
    assert_eq!((fwd.model, fwd.deployment), (1, 1));
    assert_eq!(fwd.body_edit, None);
    assert_eq!(header(&fwd, "content-length"), Some(body.len().to_string().as_str()));
}

#[test]
fn headers_for_a_keyed_deployment() {
    let gw = gateway();
    let p = Pending { team: ALPHA, endpoint: Endpoint::ChatCompletions, anthropic_version: false, key: None, user: None };
    let body = br#"{"model":"gpt-4o-mini"}"#;
    let fwd = on_body(&gw, &p, body, 0).unwrap();
    let len = apply(body, &fwd.body_edit).len();
    assert_eq!(len, br#"{"model":"gpt-4o-mini-2024-07-18"}"#.len());
    let expected: Vec<(&str, Option<std::borrow::Cow<str>>)> = vec![
        (":path", Some("/v1/chat/completions".into())),
        (":authority", Some("127.0.0.1:8000".into())),
        ("x-tollgate-cluster", Some("tollgate|http|127.0.0.1|8000".into())),
        ("content-length", Some(len.to_string().into())),
        ("authorization", Some(format!("Bearer {PROVIDER_SECRET}").into())),
        ("x-api-key", None),
        ("api-key", None),
        ("openai-organization", None),
        ("openai-project", None),
        ("accept-encoding", Some("identity".into())),
        // No timeout or retries configured: the client's own are removed.
        ("x-envoy-upstream-rq-timeout-ms", None),
        ("x-envoy-max-retries", None),
        ("x-envoy-retry-on", None),
        ("x-envoy-retriable-status-codes", None),
    ];
    assert_eq!(fwd.headers, expected);

    // OpenAI's default base.
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::Embeddings), br#"{"model":"gpt-4o","input":"x"}"#, 0).unwrap();
    assert_eq!(header(&fwd, ":path"), Some("/v1/embeddings"));
    assert_eq!(header(&fwd, ":authority"), Some("api.openai.com"));
    assert_eq!(header(&fwd, "x-tollgate-cluster"), Some("tollgate|https|api.openai.com|443"));

    // Anthropic: chat is translated to its Messages API, with its key header.
    let chat = br#"{"model":"claude","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}"#;
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), chat, 0).unwrap();
    assert_eq!(fwd.wire, Wire::AnthropicTranslated);
    assert_eq!(header(&fwd, ":path"), Some("/v1/messages"));
    assert_eq!(header(&fwd, ":authority"), Some("api.anthropic.com"));
    assert_eq!(header(&fwd, "x-tollgate-cluster"), Some("tollgate|https|api.anthropic.com|443"));
    assert_eq!(header(&fwd, "x-api-key"), Some(ANTHROPIC_SECRET));
    assert_eq!(header(&fwd, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(&fwd, "authorization"), None);
    let sent: Value = serde_json::from_slice(&apply(chat, &fwd.body_edit)).unwrap();
    assert_eq!(sent["model"], "claude-3-5-haiku-20241022");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]));
    let len = apply(chat, &fwd.body_edit).len().to_string();
    assert_eq!(header(&fwd, "content-length"), Some(len.as_str()));

    // Anthropic's own API passes through; the client's anthropic-version is kept.
    let msg = br#"{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}"#;
    let p = Pending { team: ALPHA, endpoint: Endpoint::Messages, anthropic_version: true, key: None, user: None };
    let fwd = on_body(&gw, &p, msg, 0).unwrap();
    assert_eq!(fwd.wire, Wire::Anthropic);
    assert_eq!(header(&fwd, ":path"), Some("/v1/messages"));
    assert!(fwd.headers.iter().all(|(h, _)| *h != "anthropic-version"), "not touched: {:?}", fwd.headers);
    assert_eq!(
        apply(msg, &fwd.body_edit),
        br#"{"model":"claude-3-5-haiku-20241022","max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}"#
    );
    assert_eq!(fwd.estimate.output_tokens, 10);
    assert!(!fwd.estimate.caching);
    // A prompt that asks for caching is reserved at the cache-write price.
    let cached = br#"{"model":"claude","max_tokens":10,"system":[{"type":"text","text":"Long.","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"Hi"}]}"#;
    assert!(on_body(&gw, &p, cached, 0).unwrap().estimate.caching);
    let said = br#"{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"what is cache_contro_l?"}]}"#;
    assert!(!on_body(&gw, &p, said, 0).unwrap().estimate.caching);
    let p = Pending { anthropic_version: false, ..p };
    assert_eq!(header(&on_body(&gw, &p, msg, 0).unwrap(), "anthropic-version"), Some("2023-06-01"));

    // An OpenAI deployment has no Messages API; the error is Anthropic-shaped.
    let e = on_body(&gw, &p, br#"{"model":"gpt-4o","max_tokens":1,"messages":[]}"#, 0).unwrap_err();
    assert_eq!(e.status, 400);
    let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["message"], "The model \"gpt-4o\" is served by openai, which has no /v1/messages endpoint.");
}

#[test]
fn messages_takes_the_key_as_x_api_key_or_bearer() {
    let gw = gateway();
    let alpha = bearer(ALPHA_KEY);
    let h = |authorization, api_key| Head {
        method: "POST",
        path: "/v1/messages",
        authorization,
        api_key,
        anthropic_version: true,
        ..Head::default()
    };
    let read = |d| match d {
        HeadDecision::ReadBody(p) => p,
        other => panic!("expected to read the body, got {other:?}"),
    };
    let p = read(on_head(&gw, &h(None, Some(ALPHA_KEY))));
    assert_eq!((p.team, p.endpoint, p.anthropic_version), (ALPHA, Endpoint::Messages, true));
    assert_eq!(read(on_head(&gw, &h(Some(&alpha), None))).team, ALPHA);
    let (team, e) = denied(on_head(&gw, &h(None, Some("wrong-key-0000000000"))));
    assert_eq!((team, e.status), (None, 401));
    assert!(e.body().starts_with(r#"{"type":"error","error":{"type":"authentication_error""#), "{}", e.body());
    // x-api-key is only read on /v1/messages.
    let chat = Head { path: CHAT, ..h(None, Some(ALPHA_KEY)) };
    assert_eq!(denied(on_head(&gw, &chat)).1.status, 401);
}

#[test]
fn deployment_without_a_key_removes_all_credentials() {
    let gw = gateway();
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::Completions), br#"{"model":"local","prompt":"x"}"#, 0).unwrap();
    assert_eq!((fwd.model, fwd.deployment), (3, 3));
    assert_eq!(header(&fwd, ":path"), Some("/completions"));
    assert_eq!(header(&fwd, ":authority"), Some("10.1.2.3:9000"));
    assert_eq!(header(&fwd, "x-tollgate-cluster"), Some("tollgate|http|10.1.2.3|9000"));
    for h in ["authorization", "x-api-key", "api-key"] {
        assert_eq!(header(&fwd, h), None, "{h} must be removed");
    }
    // The client's key never reaches the provider in any header.
    for (_, v) in &fwd.headers {
        assert!(!v.as_deref().unwrap_or("").contains(ALPHA_KEY));
    }
}

#[test]
fn body_errors() {
    let gw = gateway();
    let p = pending(ALPHA, Endpoint::ChatCompletions);
    let err = |body: &[u8]| on_body(&gw, &p, body, 0).unwrap_err();

    let empty = "The request body is empty. Send a JSON object such as {\"model\": \"...\", \"messages\": [...]}.";
    assert_bad_request(&err(b""), None, empty);
    assert_bad_request(&err(b" \r\n\t"), None, empty);
    assert_bad_request(&err(br#"[{"model":"gpt-4o"}]"#), None, "The request body must be a JSON object, not an array.");
    assert_bad_request(&err(br#""gpt-4o""#), None, "The request body must be a JSON object, not a string.");
    assert_bad_request(&err(br#"{"model":4}"#), Some("model"), "The model parameter must be a string, got a number.");
    assert_bad_request(&err(br#"{"model":null}"#), Some("model"), "The model parameter must be a string, got null.");
    assert_bad_request(&err(br#"{"model":["gpt-4o"]}"#), Some("model"), "The model parameter must be a string, got an array.");
    let missing = "You must provide a model parameter: add \"model\": \"<name>\" to the JSON body.";
    assert_bad_request(&err(br#"{"messages":[]}"#), Some("model"), missing);
    assert_bad_request(&err(br#"{"messages":[{"model":"gpt-4o"}]}"#), Some("model"), missing);
    assert_bad_request(&err(b"{}"), Some("model"), missing);
    assert_bad_request(
        &err(br#"{"model":"gpt-4o","model":"claude"}"#),
        Some("model"),
        "The JSON body has the key \"model\" more than once; send it once.",
    );

    for broken in [&br#"{"model":"gpt-4o",}"#[..], br#"{"model":"gpt-4o""#, b"{\"model\":\"gpt-4o\"} x", b"{\"model\":\"\xff\"}"] {
        let e = err(broken);
        assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(broken));
        assert!(e.message.starts_with("We could not parse the JSON body of your request: "), "{}", e.message);
    }
}

/// A key written with an escape is the same key to an upstream JSON parser,
/// which takes the last one: a second "model" must not slip past access checks.
#[test]
fn an_escaped_duplicate_model_key_is_refused() {
    let gw = gateway();
    let e = on_body(&gw, &pending(BETA, Endpoint::ChatCompletions), br#"{"model":"gpt-4o-mini","mod\u0065l":"gpt-4o"}"#, 0).unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.message, "The JSON body has the key \"model\" more than once; send it once.");
}

/// `param` names the parameter at fault; for a duplicated "stream" it is
/// "stream", not "model".
#[test]
fn a_duplicate_key_names_itself_in_param() {
    let gw = gateway();
    let e = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), br#"{"model":"gpt-4o","stream":true,"stream":false}"#, 0).unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.message, "The JSON body has the key \"stream\" more than once; send it once.");
    assert_eq!(e.param, Some("stream"));
}

#[test]
fn unknown_and_forbidden_models() {
    let gw = gateway();
    let e = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), br#"{"model":"gpt-5"}"#, 0).unwrap_err();
    assert_eq!(e.status, 404);
    assert_eq!(e.code, Some("model_not_found"));
    assert_eq!(e.param, Some("model"));
    assert_eq!(e.kind, "invalid_request_error");
    assert_eq!(e.reason, DenyReason::ModelNotFound);
    assert!(e.message.starts_with("The model \"gpt-5\" does not exist on this gateway."), "{}", e.message);
    // Names match exactly: no case folding, no upstream names.
    for other in ["GPT-4o", "gpt-4o-mini-2024-07-18", "openai/gpt-4o", " gpt-4o"] {
        let body = format!(r#"{{"model":"{other}"}}"#);
        let e = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), body.as_bytes(), 0).unwrap_err();
        assert_eq!(e.status, 404, "{other}");
    }

    let e = on_body(&gw, &pending(BETA, Endpoint::ChatCompletions), br#"{"model":"gpt-4o"}"#, 0).unwrap_err();
    assert_eq!(e.status, 403);
    assert_eq!(e.code, Some("model_not_allowed"));
    assert_eq!(e.kind, "permission_error");
    assert_eq!(e.param, Some("model"));
    assert_eq!(e.reason, DenyReason::ModelNotAllowed);
    assert!(
        e.message.starts_with("Team \"team-beta\" may not use the model \"gpt-4o\". It may use: gpt-4o-mini."),
        "{}",
        e.message
    );
    let e = on_body(&gw, &pending(GAMMA, Endpoint::ChatCompletions), br#"{"model":"gpt-4o-mini"}"#, 0).unwrap_err();
    assert_eq!(e.status, 403);
    assert!(e.message.starts_with("Team \"team-gamma\" may not use the model \"gpt-4o-mini\"."), "{}", e.message);

    // Beta may use its model.
    assert!(on_body(&gw, &pending(BETA, Endpoint::ChatCompletions), br#"{"model":"gpt-4o-mini"}"#, 0).is_ok());
}

#[test]
fn anthropic_has_no_embeddings_or_completions() {
    let gw = gateway();
    for (endpoint, suffix) in [(Endpoint::Embeddings, "/embeddings"), (Endpoint::Completions, "/completions")] {
        let e = on_body(&gw, &pending(ALPHA, endpoint), br#"{"model":"claude","input":"x"}"#, 0).unwrap_err();
        assert_bad_request(
            &e,
            Some("model"),
            &format!("The model \"claude\" is served by anthropic, which has no /v1{suffix} endpoint."),
        );
    }
}

#[test]
fn round_robin_over_two_deployments() {
    let gw = gateway();
    assert_eq!(gw.models[4].deployments, vec![4, 5]);
    let body = br#"{"model":"rr","messages":[]}"#;
    let p = Pending { team: ALPHA, endpoint: Endpoint::ChatCompletions, anthropic_version: false, key: None, user: None };
    let a = |fwd: &Forward| {
        assert_eq!(fwd.deployment, 4);
        assert_eq!(header(fwd, ":path"), Some("/v1/chat/completions"));
        assert_eq!(header(fwd, ":authority"), Some("10.0.0.1:8001"));
        assert_eq!(header(fwd, "x-tollgate-cluster"), Some("tollgate|http|10.0.0.1|8001"));
        assert_eq!(header(fwd, "authorization"), Some(format!("Bearer {PROVIDER_SECRET}").as_str()));
        assert_eq!(apply(body, &fwd.body_edit), br#"{"model":"rr-a","messages":[]}"#);
    };
    let b = |fwd: &Forward| {
        assert_eq!(fwd.deployment, 5);
        assert_eq!(header(fwd, ":path"), Some("/openai/chat/completions"));
        assert_eq!(header(fwd, ":authority"), Some("rr-b.example.com"));
        assert_eq!(header(fwd, "x-tollgate-cluster"), Some("tollgate|https|rr-b.example.com|443"));
        assert_eq!(header(fwd, "authorization"), Some(format!("Bearer {RR_B_SECRET}").as_str()));
        assert_eq!(apply(body, &fwd.body_edit), br#"{"model":"rr-b","messages":[]}"#);
    };
    for n in 0..4u64 {
        let fwd = on_body(&gw, &p, body, n).unwrap();
        assert_eq!(fwd.model, 4);
        if n % 2 == 0 { a(&fwd) } else { b(&fwd) }
    }
    b(&on_body(&gw, &p, body, 5).unwrap());
    // A single deployment is always chosen, whatever n is.
    for n in [0, 1, 7, u64::MAX] {
        assert_eq!(on_body(&gw, &p, br#"{"model":"gpt-4o"}"#, n).unwrap().deployment, 1);
    }
}

// ---------------------------------------------------------------------------
// Keys

fn team_of(gw: &Gateway, key: &str) -> Result<usize, ApiError> {
    let auth = bearer(key);
    match on_head(gw, &head("POST", CHAT, Some(&auth))) {
        HeadDecision::ReadBody(p) => Ok(p.team),
        HeadDecision::Deny { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_in_each_form_authenticate_their_team() {
    let gw = gateway();
    assert_eq!(team_of(&gw, ALPHA_KEY).unwrap(), ALPHA);
    assert_eq!(team_of(&gw, BETA_KEY).unwrap(), BETA);
    assert_eq!(team_of(&gw, GAMMA_KEY).unwrap(), GAMMA);
    // The written forms are not keys.
    for written in ["os.environ/TEAM_ALPHA_KEY", &format!("sha256:{BETA_DIGEST}"), BETA_DIGEST, PROVIDER_SECRET] {
        assert_unauthenticated(&team_of(&gw, written).unwrap_err());
    }
}

#[test]
fn an_upper_case_digest_is_the_same_key() {
    let yaml = config().replace(BETA_DIGEST, &BETA_DIGEST.to_uppercase());
    let gw = gateway_from(&yaml, &env());
    assert_eq!(team_of(&gw, BETA_KEY).unwrap(), BETA);
}

#[test]
fn environment_keys_are_trimmed() {
    let mut env = env();
    env.insert("TEAM_ALPHA_KEY".into(), format!("  {ALPHA_KEY}\n"));
    env.insert("PROVIDER_KEY".into(), format!("{PROVIDER_SECRET}\r\n"));
    let gw = gateway_from(&config(), &env);
    assert_eq!(team_of(&gw, ALPHA_KEY).unwrap(), ALPHA);
    let fwd = on_body(&gw, &pending(ALPHA, Endpoint::ChatCompletions), br#"{"model":"gpt-4o"}"#, 0).unwrap();
    assert_eq!(header(&fwd, "authorization"), Some(format!("Bearer {PROVIDER_SECRET}").as_str()));
}

#[test]
fn a_wrong_key_is_shown_masked() {
    let gw = gateway();
    let wrong = "sk-a-long-but-wrong-key-123456";
    let e = team_of(&gw, wrong).unwrap_err();
    assert_unauthenticated(&e);
    assert_eq!(
        e.message,
        "Incorrect API key provided: sk-a****3456. Use the key your platform team issued to your team."
    );
    assert!(!e.message.contains(wrong));
    assert!(!e.body().contains(wrong));

    // Short keys are not shown at all; neither are near misses of real keys.
    for key in ["short", "12345678901", "team-alpha-tokeN", "ünïcödé-kéy-wrong"] {
        let e = team_of(&gw, key).unwrap_err();
        assert!(!e.message.contains(key), "{key} in {}", e.message);
        assert!(!e.message.contains(ALPHA_KEY));
    }
    let e = team_of(&gw, "short").unwrap_err();
    assert!(e.message.starts_with("Incorrect API key provided: ****."), "{}", e.message);
    let e = team_of(&gw, "ünïcödé-kéy-wrong").unwrap_err();
    assert!(e.message.starts_with("Incorrect API key provided: ünïc****rong."), "{}", e.message);
}

#[test]
fn header_edits_change_only_what_differs() {
    use tollgate::admission::{header_edits, HeaderEdit::*};
    let pairs: Vec<(&str, &[u8])> = [
        (":path", "/v1/chat/completions"),
        (":authority", "gateway.local"),
        ("authorization", "Bearer team-key"),
        ("accept-encoding", "identity"),
        ("x-envoy-max-retries", "9"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
    ]
    .iter()
    .map(|(k, v)| (*k, v.as_bytes()))
    .collect();
    let client = tollgate::header_list::HeaderList::from_pairs(&pairs);
    let changes: Vec<(&'static str, Option<std::borrow::Cow<str>>)> = vec![
        (":path", Some("/v1/chat/completions".into())),
        (":authority", Some("api.openai.com".into())),
        ("authorization", Some("Bearer sk-provider".into())),
        ("accept-encoding", Some("identity".into())),
        ("x-api-key", None),
        ("x-envoy-max-retries", None),
        ("cookie", Some("a=1".into())),
        ("x-tollgate-cluster", Some("tollgate|https|api.openai.com|443".into())),
        ("x-empty", Some("".into())),
    ];
    assert_eq!(
        header_edits(&client, &changes),
        vec![
            (":authority", Set("api.openai.com")),
            ("authorization", Set("Bearer sk-provider")),
            ("x-envoy-max-retries", Remove),
            // Sent twice: set, so that one value is left.
            ("cookie", Set("a=1")),
            // Not sent: added (Envoy need not look for it first)...
            ("x-tollgate-cluster", Add("tollgate|https|api.openai.com|443")),
            // ...unless empty, which Envoy sets but does not add.
            ("x-empty", Set("")),
            // Not among the changes, but no client steers Envoy's router.
            ("x-envoy-upstream-rq-timeout-ms", Remove),
        ]
    );
}

#[test]
fn header_edits_handle_repeats_and_many_changes() {
    use tollgate::admission::{header_edits, HeaderEdit::*};
    let pairs: Vec<(&str, &[u8])> = [("x-envoy-retry-on", "5xx"), ("x-b", "1"), ("x-envoy-retry-on", "reset"), ("x-a", "same")]
        .iter()
        .map(|(k, v)| (*k, v.as_bytes()))
        .collect();
    let client = tollgate::header_list::HeaderList::from_pairs(&pairs);
    // More changes than header_edits keeps on its stack, the two sent ones last.
    let names: Vec<&'static str> = (0..30).map(|i| &*Box::leak(format!("x-h{i}").into_boxed_str())).collect();
    let mut changes: Vec<(&'static str, Option<std::borrow::Cow<str>>)> = names.iter().map(|n| (*n, None)).collect();
    changes.push(("x-a", Some("same".into())));
    changes.push(("x-b", Some("2".into())));
    changes.push(("x-h0", Some("new".into())));
    assert_eq!(
        header_edits(&client, &changes),
        vec![("x-b", Set("2")), ("x-h0", Add("new")), ("x-envoy-retry-on", Remove)],
        "a header sent twice is removed once; absent headers are not removed but added; equal values are left"
    );
}
