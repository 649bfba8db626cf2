//! HTTP/2 clients (the listener speaks both): request trailers, which end a
//! body without a final data frame, must not let a request skip the checks.

mod common;

use std::process::Command;

use common::upstream::Upstream;
use common::*;

fn h2(port: u16, body: &str, headers: &[String], trailer: bool) -> (u16, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/h2_request.py");
    let mut cmd = Command::new(python_bin());
    cmd.arg(script).args([&port.to_string(), "/v1/chat/completions", body]).args(headers);
    if trailer {
        cmd.args(["--trailer", "x-checksum=abc"]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["status"].as_u64().unwrap() as u16, v["body"].as_str().unwrap().to_string())
}

#[test]
fn request_trailers_do_not_skip_the_checks() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let cluster = format!("x-tollgate-cluster=tollgate|http|127.0.0.1|{}", up.port());
    let beta = format!("authorization=Bearer {BETA_KEY}");

    // A forbidden model, a spoofed cluster header, and trailers: refused.
    let (status, body) = h2(gw.port, &chat_body("claude-3-5-haiku"), &[beta.clone(), cluster.clone()], true);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("model_not_allowed"), "{body}");
    // Trailers and no body at all: refused too.
    let (status, body) = h2(gw.port, "", &[beta.clone(), cluster.clone()], true);
    assert_eq!(status, 400, "{body}");
    assert!(up.requests().is_empty(), "nothing reached the provider");

    // An allowed model with trailers is forwarded the normal way.
    let (status, body) = h2(gw.port, &chat_body("gpt-4o-mini"), &[beta.clone(), cluster], true);
    assert_eq!(status, 200, "{body}");
    let req = &up.requests()[0];
    assert_eq!(req.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert_eq!(req.json()["model"], "gpt-4o-mini-2024-07-18");

    // And plain HTTP/2 without trailers.
    let (status, _) = h2(gw.port, &chat_body("gpt-4o-mini"), &[beta], false);
    assert_eq!(status, 200);
    assert_eq!(up.requests().len(), 2);
}
