//! The official OpenAI Python SDK as a client of a real gateway.

mod common;

use std::process::Command;

use common::upstream::Upstream;
use common::*;

#[test]
fn the_openai_sdk_gets_completions_and_the_right_exceptions() {
    let up = Upstream::openai();
    let gw = Gateway::standard(&up);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_client.py");
    let out = Command::new(python_bin())
        .arg(script)
        .args([&gw.url("/v1"), ALPHA_KEY, BETA_KEY])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
    assert_eq!(up.requests().len(), 3, "chat, completion and embedding reached the provider");
}
