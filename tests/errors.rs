//! Refusals: each gets its status and an OpenAI-shaped error, never reaches
//! the provider, and never takes the filter down.

mod common;

use common::upstream::Upstream;
use common::*;

#[test]
fn authentication_and_access_errors() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let body = chat_body("gpt-4o-mini");

    let r = gw.post("/v1/chat/completions", None, &body);
    let v = r.assert_error(401, Some("invalid_api_key"));
    assert!(v["error"]["message"].as_str().unwrap().contains("Authorization: Bearer"));

    gw.post("/v1/chat/completions", Some("team-alpha-tokeN"), &body).assert_error(401, Some("invalid_api_key"));
    let r = post_bytes(&gw.url("/v1/chat/completions"), None, body.as_bytes(), &[("authorization", "Basic dGVhbTp4")]).unwrap();
    r.assert_error(401, Some("invalid_api_key"));
    // The wrong key is not echoed back whole.
    let r = gw.post("/v1/chat/completions", Some("sk-a-long-but-wrong-key-123456"), &body);
    assert!(!r.body.contains("sk-a-long-but-wrong-key-123456"), "{}", r.body);

    let v = gw.chat(BETA_KEY, "claude-3-5-haiku").assert_error(403, Some("model_not_allowed"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("team-beta") && msg.contains("gpt-4o-mini"), "{msg}");
    assert_eq!(v["error"]["param"], "model");

    let v = gw.chat(ALPHA_KEY, "gpt-5").assert_error(404, Some("model_not_found"));
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-5"));

    // Access is checked per model, not per prefix or case.
    gw.chat(BETA_KEY, "GPT-4o-mini").assert_error(404, Some("model_not_found"));

    // The sha256-stored key and the environment key both work.
    assert_eq!(gw.chat(BETA_KEY, "gpt-4o-mini").status, 200);
    assert_eq!(gw.chat(ALPHA_KEY, "gpt-4o-mini").status, 200);
    assert_eq!(up.requests().len(), 2, "only the two allowed requests reached the provider");
}

#[test]
fn wrong_methods_and_paths() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let r = get(&gw.url("/v1/chat/completions"), Some(ALPHA_KEY)).unwrap();
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("POST"));
    let r = post_bytes(&gw.url("/v1/models"), Some(ALPHA_KEY), b"{}", &[]).unwrap();
    assert_eq!(r.status, 405, "{}", r.body);
    get(&gw.url("/v1/files"), Some(ALPHA_KEY)).unwrap().assert_error(404, Some("not_found"));
    // Anthropic deployments have no embeddings endpoint.
    let r = gw.post("/v1/embeddings", Some(ALPHA_KEY), r#"{"model":"claude-3-5-haiku","input":"x"}"#);
    let v = r.assert_error(400, None);
    assert!(v["error"]["message"].as_str().unwrap().contains("/embeddings"));
    assert!(up.requests().is_empty());
}

/// Bad bodies: each gets its 4xx with an error body, and the next valid
/// request still succeeds (a panic would kill the VM and fail it).
#[test]
fn bad_inputs_never_take_the_filter_down() {
    let up = Upstream::openai();
    // One worker, so every request meets the same VM.
    let gw = Gateway::start_with(&standard_config(&up), &standard_env(), 1);

    let deep = format!("{{\"model\":\"gpt-4o-mini\",\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty body", b"".to_vec(), 400),
        ("whitespace", b"  \n ".to_vec(), 400),
        ("invalid JSON", br#"{"model": "gpt-4o-mini", "messages": [}"#.to_vec(), 400),
        ("truncated JSON", br#"{"model": "gpt-4o-mini", "messages": ["#.to_vec(), 400),
        ("invalid UTF-8", b"{\"model\": \"gpt-4o-mini\", \"x\": \"\xff\xfe\"}".to_vec(), 400),
        ("deep nesting", deep.into_bytes(), 400),
        ("a JSON array", br#"[{"model": "gpt-4o-mini"}]"#.to_vec(), 400),
        ("a JSON string", br#""gpt-4o-mini""#.to_vec(), 400),
        ("model is a number", br#"{"model": 4}"#.to_vec(), 400),
        ("model is null", br#"{"model": null}"#.to_vec(), 400),
        ("no model", br#"{"messages": []}"#.to_vec(), 400),
        ("model given twice", br#"{"model": "gpt-4o-mini", "model": "claude-3-5-haiku"}"#.to_vec(), 400),
        ("trailing garbage", br#"{"model": "gpt-4o-mini"} x"#.to_vec(), 400),
        ("40 MiB body", {
            let mut b = br#"{"model": "gpt-4o-mini", "pad": ""#.to_vec();
            b.resize(40 << 20, b'a');
            b.extend_from_slice(b"\"}");
            b
        }, 413),
    ];
    for (what, body, status) in &cases {
        let (got, text) = raw_post(gw.port, "/v1/chat/completions", ALPHA_KEY, body);
        assert_eq!(got, *status, "{what}: {}", &text[..text.len().min(300)]);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {text}");
        let ok = gw.chat(ALPHA_KEY, "gpt-4o-mini");
        assert_eq!(ok.status, 200, "after {what}, a valid request failed: {}\n{}", ok.body, gw.log());
    }
    assert!(
        up.requests().iter().all(|r| r.json()["model"] == "gpt-4o-mini-2024-07-18"),
        "no bad request reached the provider"
    );
    assert_eq!(up.requests().len(), cases.len());
}

#[test]
fn oversized_bodies_without_content_length_and_binary_headers() {
    let up = Upstream::openai();
    let gw = Gateway::start_with(&standard_config(&up), &standard_env(), 1);

    // A chunked 40 MiB body: no Content-Length to check up front.
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALPHA_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..40 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_request(gw.port, &request);
    assert_eq!(status, 413, "{}", &text[..text.len().min(500)]);
    assert!(text.contains("max_request_size_mb"), "{}", &text[..text.len().min(500)]);

    // A key that is not UTF-8 (HTTP allows such bytes in header values).
    let mut request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer team-\xff\xfe\r\nContent-Type: application/json\r\nConnection: close\r\n".to_vec();
    let body = chat_body("gpt-4o-mini");
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    let (status, text) = raw_request(gw.port, &request);
    assert_eq!(status, 401, "{text}");

    assert_eq!(gw.chat(ALPHA_KEY, "gpt-4o-mini").status, 200, "{}", gw.log());
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn the_body_cap_is_configurable() {
    let up = Upstream::openai();
    let config = format!("{}general_settings:\n  max_request_size_mb: 0.001\n", standard_config(&up));
    let gw = Gateway::start(&config, &standard_env());
    let small = chat_body("gpt-4o-mini");
    assert!(small.len() < 1048);
    assert_eq!(gw.post("/v1/chat/completions", Some(ALPHA_KEY), &small).status, 200);
    let big = serde_json::json!({"model": "gpt-4o-mini", "pad": "x".repeat(2000)}).to_string();
    let v = gw.post("/v1/chat/completions", Some(ALPHA_KEY), &big).assert_error(413, None);
    assert!(v["error"]["message"].as_str().unwrap().contains("1048 bytes"), "{v}");
}

#[test]
fn the_largest_allowed_body_with_the_model_last_gets_through() {
    // The worst case for the filter's memory: the body is copied into the VM,
    // and the rewrite rebuilds everything up to the model, here all of it.
    let up = Upstream::openai();
    let config = format!("{}general_settings:\n  max_request_size_mb: 64\n", standard_config(&up));
    let gw = Gateway::start_with(&config, &standard_env(), 1);
    let pad = "x".repeat(63 << 20);
    let body = serde_json::json!({"messages": [{"role": "user", "content": pad}], "model": "gpt-4o-mini"}).to_string();
    assert!(body.len() < 64 << 20);
    let (status, text) = raw_post(gw.port, "/v1/chat/completions", ALPHA_KEY, body.as_bytes());
    assert_eq!(status, 200, "{}", &text[..text.len().min(300)]);
    let req = &up.requests()[0];
    assert_eq!(req.body.len(), body.len() - "gpt-4o-mini".len() + "gpt-4o-mini-2024-07-18".len());
    assert!(req.body.ends_with(br#""model":"gpt-4o-mini-2024-07-18"}"#));
    // A model name of a megabyte is refused without being looked up or echoed.
    let long = serde_json::json!({"model": "m".repeat(1 << 20)}).to_string();
    let (status, text) = raw_post(gw.port, "/v1/chat/completions", ALPHA_KEY, long.as_bytes());
    assert_eq!(status, 400, "{}", &text[..text.len().min(300)]);
    assert!(text.len() < 2000, "the name was echoed: {} bytes", text.len());
    // The VM is still there.
    assert_eq!(gw.chat(ALPHA_KEY, "gpt-4o-mini").status, 200);
}
