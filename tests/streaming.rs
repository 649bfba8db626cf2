//! Streaming through a real Envoy: chunks pass as the provider sends them,
//! byte for byte; usage is counted from the stream; streams that end early
//! are still billed. The gateway here flushes stats on its default 1 s timer,
//! so the tests wait for the values they expect.

mod common;

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::upstream::{sse_data, sse_done, Recorded, Reply, Upstream};
use common::*;
use serde_json::{json, Value};

const PACE: Duration = Duration::from_millis(300);
const PIECES: [&str; 5] = ["Hel", "lo, ", "wor", "ld", "!"];

fn chunk(content: Option<&str>, finish: Option<&str>) -> Value {
    let delta = match content {
        Some(c) => json!({"content": c}),
        None => json!({}),
    };
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
}

/// The events the paced provider sends: content pieces PACE apart, a finish
/// chunk, then (if asked) the usage chunk, then [DONE].
fn events(include_usage: bool) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = PIECES.iter().map(|p| sse_data(&chunk(Some(p), None))).collect();
    out.push(sse_data(&chunk(None, Some("stop"))));
    if include_usage {
        out.push(sse_data(&json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})));
    }
    out.push(sse_done());
    out
}

/// A provider that streams at PACE, and records what it sent.
fn paced_provider(sent: Arc<Mutex<Vec<u8>>>) -> Upstream {
    Upstream::start(move |req: &Recorded| {
        let body = req.json();
        let include = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
        let evs = events(include);
        *sent.lock().unwrap() = evs.concat();
        let parts = evs.into_iter().enumerate().map(|(i, e)| (if i == 0 { Duration::ZERO } else { PACE }, e)).collect();
        Reply::sse(200, parts)
    })
}

fn config(up: &Upstream) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini]
    max_budget: 100.0
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#,
        up.base_url()
    )
}

fn stream_body(options: Option<Value>) -> String {
    let mut body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 50,
                          "messages": [{"role": "user", "content": "Say hello"}]});
    if let Some(o) = options {
        body["stream_options"] = o;
    }
    body.to_string()
}

/// Posts a streaming request over a raw connection and reads the response as
/// it comes: returns (seconds to the first body byte, seconds to the end, the
/// de-chunked body).
fn stream(port: u16, body: &str) -> (f64, f64, Vec<u8>) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALPHA_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let start = Instant::now();
    std::io::Write::write_all(&mut conn, request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut first_body = None;
    let mut buf = [0u8; 8192];
    loop {
        let n = read_some(&mut conn, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_body.is_none() {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                if raw.len() > i + 4 {
                    first_body = Some(start.elapsed().as_secs_f64());
                }
            }
        }
    }
    let end = start.elapsed().as_secs_f64();
    let i = find(&raw, b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    (first_body.unwrap(), end, dechunk(&raw[i + 4..]))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = find(body, b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap().trim(), 16).unwrap();
        body = &body[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}



const TOKENS: &str = r#"tollgate_tokens_total{team="team-alpha",model="gpt-4o-mini",provider="openai",type="#;

#[test]
fn a_stream_passes_chunk_by_chunk_and_is_counted_exactly() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let up = paced_provider(Arc::clone(&sent));
    let gw = Gateway::start(&config(&up), &standard_env());

    // The client did not ask for usage: the gateway asks for it, and removes it.
    let (first, end, body) = stream(gw.port, &stream_body(None));
    let upstream_body = up.requests()[0].json();
    assert_eq!(upstream_body["stream_options"], json!({"include_usage": true}));
    let expected: Vec<u8> = events(false).concat();
    assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&expected), "the client's stream is the provider's, less the usage chunk");
    assert_ne!(*sent.lock().unwrap(), expected, "the provider did send a usage chunk");
    // Not buffered: the first chunk comes long before the provider finishes
    // (6 pauses of 300 ms).
    assert!(first < 0.25, "first chunk after {first:.3} s");
    assert!(end > 1.5, "stream ended after {end:.3} s");

    // The client asked: it gets the usage chunk, byte for byte.
    let (_, _, body) = stream(gw.port, &stream_body(Some(json!({"include_usage": true}))));
    assert_eq!(body, *sent.lock().unwrap());
    assert_eq!(up.requests()[1].json()["stream_options"], json!({"include_usage": true}));

    // include_usage false is the client not asking.
    let (_, _, body) = stream(gw.port, &stream_body(Some(json!({"include_usage": false, "other": 1}))));
    assert_eq!(body, expected);
    assert_eq!(up.requests()[2].json()["stream_options"], json!({"include_usage": true, "other": 1}));

    // Three streams, each reporting 11 prompt and 5 completion tokens.
    gw.wait_metric(&format!("{TOKENS}\"input\"}}"), 33.0);
    gw.wait_metric(&format!("{TOKENS}\"output\"}}"), 15.0);
    gw.wait_metric(r#"tollgate_spend_micro_usd_total{team="team-alpha",model="gpt-4o-mini"}"#, 3.0 * 21.0);
    assert_eq!(gw.metric(r#"tollgate_estimated_requests_total{team="team-alpha",model="gpt-4o-mini"}"#), None);
    gw.wait_metric(r#"tollgate_time_to_first_token_milliseconds_count{team="team-alpha",model="gpt-4o-mini",provider="openai"}"#, 3.0);
    gw.wait_metric(r#"tollgate_request_duration_milliseconds_count{team="team-alpha",model="gpt-4o-mini",provider="openai"}"#, 3.0);
    // Time to first token is well under a pause; the whole request is over 6.
    let ttft_sum = gw.metric(r#"tollgate_time_to_first_token_milliseconds_sum{team="team-alpha",model="gpt-4o-mini",provider="openai"}"#).unwrap();
    assert!(ttft_sum / 3.0 < 250.0, "mean TTFT {ttft_sum}");
    let dur_sum = gw.metric(r#"tollgate_request_duration_milliseconds_sum{team="team-alpha",model="gpt-4o-mini",provider="openai"}"#).unwrap();
    assert!(dur_sum / 3.0 > 1500.0, "mean duration {dur_sum}");
}

#[test]
fn a_stream_the_client_abandons_is_still_billed() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let up = paced_provider(sent);
    let gw = Gateway::start(&config(&up), &standard_env());
    let body = stream_body(None);

    // Read until two content pieces have arrived, then hang up.
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALPHA_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut conn, request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("lo, ") {
        let n = read_some(&mut conn, &mut buf).unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&buf[..n]);
    }
    drop(conn);

    // Billed on estimates: the prompt (body bytes / 4) and the 7 characters
    // that passed ("Hel" + "lo, "), 4 characters a token.
    let input = (body.len() as f64 / 4.0).ceil();
    gw.wait_metric(r#"tollgate_estimated_requests_total{team="team-alpha",model="gpt-4o-mini"}"#, 1.0);
    gw.wait_metric(&format!("{TOKENS}\"input\"}}"), input);
    gw.wait_metric(&format!("{TOKENS}\"output\"}}"), 2.0);
    let spend = input + 2.0 * 2.0;
    gw.wait_metric(r#"tollgate_spend_micro_usd_total{team="team-alpha",model="gpt-4o-mini"}"#, spend);
    // The reservation was released: only the spend left the budget.
    gw.wait_metric(r#"tollgate_budget_remaining_micro_usd{team="team-alpha"}"#, 100_000_000.0 - spend);
}

#[test]
fn a_stream_the_provider_cuts_off_is_still_billed() {
    let up = Upstream::start(|_req| {
        Reply::sse(200, vec![(Duration::ZERO, sse_data(&chunk(Some("abcdefgh"), None))), (Duration::from_millis(100), b"data: {\"choi".to_vec())])
    });
    // The provider's stream stops in the middle of an event, and no usage
    // ever arrives.
    let gw = Gateway::start(&config(&up), &standard_env());
    let (_, _, body) = stream(gw.port, &stream_body(None));
    assert!(String::from_utf8_lossy(&body).contains("abcdefgh"));
    gw.wait_metric(r#"tollgate_estimated_requests_total{team="team-alpha",model="gpt-4o-mini"}"#, 1.0);
    gw.wait_metric(&format!("{TOKENS}\"output\"}}"), 2.0);
}

#[test]
fn the_openai_sdk_streams_with_the_providers_timing() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let up = paced_provider(sent);
    let gw = Gateway::start(&config(&up), &standard_env());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_stream.py");
    let out = std::process::Command::new(python_bin())
        .arg(script)
        .args([&gw.url("/v1"), &format!("{}/v1", up.base_url()), ALPHA_KEY, &PACE.as_millis().to_string()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
}
