//! Responses: a non-streamed Anthropic Messages response -> OpenAI
//! `chat.completion`; Anthropic errors -> OpenAI's error shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    finish_reason, openai_error_type, openai_status, Counts, ErrorBody, ErrorEnvelope, OpenAiUsage, WireError,
    WireUsage,
};
use crate::usage::Usage;

/// How much of an unreadable error body is quoted to the client.
const MAX_ERROR_SNIPPET: usize = 512;

#[derive(Deserialize)]
struct MessageResponse {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, server tools and whatever comes next: not carried.
    #[serde(other)]
    Other,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OpenAiUsage>,
}

#[derive(Serialize)]
struct CompletionChoice {
    index: u32,
    message: AssistantMessage,
    /// Always null.
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    /// Always null: Anthropic's refusals are a stop reason, not a message.
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall,
}

#[derive(Serialize)]
struct FunctionCall {
    name: String,
    arguments: String,
}

/// A non-streamed Anthropic Messages response -> an OpenAI `chat.completion`
/// body, and the usage to bill.
///
/// The model reported is the response's own, else `model`; `created` is the
/// Unix time to report (Anthropic's responses carry none).
pub fn response_to_openai(body: &[u8], model: &str, created: u64) -> Result<(Vec<u8>, Option<Usage>), String> {
    let response: MessageResponse =
        serde_json::from_slice(body).map_err(|e| format!("the provider's response could not be read: {e}"))?;
    if response.kind.as_deref() == Some("error") {
        return Err("the provider's response is an error".to_owned());
    }
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in response.content {
        match block {
            // Anthropic cuts text into blocks around citations: one text.
            ContentBlock::Text { text: t } => text.get_or_insert_with(String::new).push_str(&t),
            ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function",
                function: FunctionCall { name, arguments: input_arguments(&input) },
            }),
            ContentBlock::Other => {}
        }
    }
    let counts = response.usage.as_ref().map(Counts::from_wire);
    let completion = Completion {
        id: response.id.as_deref().unwrap_or_default(),
        object: "chat.completion",
        created,
        model: response.model.as_deref().unwrap_or(model),
        choices: [CompletionChoice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: text, tool_calls, refusal: None },
            logprobs: None,
            finish_reason: finish_reason(response.stop_reason.as_deref()),
        }],
        usage: counts.as_ref().map(Counts::openai),
    };
    let out = serde_json::to_vec(&completion).map_err(|e| format!("the response could not be translated: {e}"))?;
    Ok((out, counts.as_ref().map(Counts::billing)))
}

/// A `tool_use` input as OpenAI's `arguments` string.
fn input_arguments(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        _ => serde_json::to_string(input).unwrap_or_else(|_| "{}".to_owned()),
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// `{"type": "error", "error": {...}}`
#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<WireError>,
}

/// An Anthropic error response (status, body) -> an OpenAI-shaped error
/// (status, body).
///
/// The status stays (OpenAI's SDKs pick their exception by it), except
/// Anthropic's own 529 "overloaded", which becomes 503. `code` is
/// Anthropic's error type; `type` is OpenAI's for the status. A body that is
/// not Anthropic's error JSON is quoted, shortened, in the message.
pub fn error_to_openai(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let status_out = openai_status(status);
    let wire = serde_json::from_slice::<ErrorResponse>(body).ok().and_then(|r| r.error);
    let body = match wire {
        Some(WireError { kind, message: Some(message) }) => {
            openai_error_body(&message, openai_error_type(status_out), kind.as_deref())
        }
        _ => {
            let mut message = format!("the provider returned status {status}");
            let snippet = error_snippet(body);
            if !snippet.is_empty() {
                message.push_str(": ");
                message.push_str(&snippet);
            }
            openai_error_body(&message, openai_error_type(status_out), None)
        }
    };
    (status_out, body)
}

fn openai_error_body(message: &str, kind: &'static str, code: Option<&str>) -> Vec<u8> {
    let envelope = ErrorEnvelope { error: ErrorBody { message, kind, param: None, code } };
    serde_json::to_vec(&envelope).unwrap_or_else(|_| {
        br#"{"error":{"message":"the provider returned an error","type":"server_error","param":null,"code":null}}"#
            .to_vec()
    })
}

/// The start of a body, as text: at most MAX_ERROR_SNIPPET bytes, not
/// ending in half a character, invalid UTF-8 replaced.
fn error_snippet(body: &[u8]) -> String {
    let mut cut = body.get(..MAX_ERROR_SNIPPET).unwrap_or(body);
    if let Err(e) = std::str::from_utf8(cut) {
        if e.error_len().is_none() {
            // Incomplete at the end: the cut went through a character.
            cut = cut.get(..e.valid_up_to()).unwrap_or(cut);
        }
    }
    String::from_utf8_lossy(cut).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- responses

    #[test]
    fn text_response() {
        let body = br#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",
            "content":[{"type":"text","text":"Hello!"}],"model":"claude-sonnet-4-5-20250929",
            "stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":6}}"#;
        let (out, usage) = response_to_openai(body, "claude", 1_700_000_000).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion", "created": 1_700_000_000u64,
                   "model": "claude-sonnet-4-5-20250929",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": null},
                                "logprobs": null, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18,
                             "prompt_tokens_details": {"cached_tokens": 0}}})
        );
        assert_eq!(usage, Some(Usage { input: 12, cached_input: 0, output: 6, ..Usage::default() }));
    }

    #[test]
    fn tool_use_response_with_cache_tokens() {
        let body = br#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"thinking","thinking":"hm","signature":"x"},
                       {"type":"text","text":"I'll check "},{"type":"text","text":"the weather."},
                       {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"San Francisco, CA","unit":"celsius"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":30,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":45}}"#;
        let (out, usage) = response_to_openai(body, "claude", 5).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "I'll check the weather.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}])
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 2130, "completion_tokens": 45, "total_tokens": 2175,
                   "prompt_tokens_details": {"cached_tokens": 2000}})
        );
        assert_eq!(usage, Some(Usage { input: 30, cached_input: 2000, cache_write: 100, output: 45, ..Usage::default() }));
    }

    #[test]
    fn response_finish_reasons_and_fallbacks() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ] {
            let body = json!({"id": "m", "type": "message", "content": [], "stop_reason": stop}).to_string();
            let (out, usage) = response_to_openai(body.as_bytes(), "claude", 0).unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
            assert_eq!(out["choices"][0]["message"]["content"], Value::Null, "no text: null content");
            assert_eq!(out["model"], "claude", "the argument when the response names no model");
            assert!(out["choices"][0]["message"].get("tool_calls").is_none());
            assert_eq!(usage, None);
        }
        assert!(response_to_openai(b"<html>", "m", 0).is_err());
        assert!(response_to_openai(br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#, "m", 0).is_err());
    }

    // --- errors

    fn error(status: u16, body: &[u8]) -> (u16, Value) {
        let (s, b) = error_to_openai(status, body);
        (s, serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn anthropic_errors_in_openai_shape() {
        let cases = [
            (400, "invalid_request_error", 400, "invalid_request_error"),
            (401, "authentication_error", 401, "authentication_error"),
            (403, "permission_error", 403, "permission_error"),
            (404, "not_found_error", 404, "invalid_request_error"),
            (413, "request_too_large", 413, "invalid_request_error"),
            (429, "rate_limit_error", 429, "requests"),
            (500, "api_error", 500, "server_error"),
            (529, "overloaded_error", 503, "server_error"),
        ];
        for (status, kind, want_status, want_type) in cases {
            let body = json!({"type": "error", "error": {"type": kind, "message": "Something went wrong"},
                              "request_id": "req_011"});
            let (s, v) = error(status, body.to_string().as_bytes());
            assert_eq!(s, want_status, "{kind}");
            assert_eq!(
                v,
                json!({"error": {"message": "Something went wrong", "type": want_type, "param": null, "code": kind}}),
                "{kind}"
            );
        }
    }

    #[test]
    fn unreadable_error_bodies_are_quoted() {
        let (s, v) = error(502, b"<html>Bad Gateway</html>\n");
        assert_eq!(s, 502);
        assert_eq!(v["error"]["message"], "the provider returned status 502: <html>Bad Gateway</html>");
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], Value::Null);
        let (s, v) = error(529, b"");
        assert_eq!((s, v["error"]["message"].as_str()), (503, Some("the provider returned status 529")));
        let (_, v) = error(400, br#"{"error":"nope"}"#);
        assert!(v["error"]["message"].as_str().unwrap().ends_with(r#"{"error":"nope"}"#));
        // Long and not UTF-8: cut at 512 bytes, never through a character.
        let mut long = format!("a{}", "é".repeat(400)).into_bytes();
        long.extend_from_slice(&[0xff, 0xfe]);
        let (_, v) = error(500, &long);
        let message = v["error"]["message"].as_str().unwrap();
        let quoted = message.strip_prefix("the provider returned status 500: ").unwrap();
        assert_eq!(quoted, format!("a{}", "é".repeat(255)), "byte 512 is half an é");
        let (_, v) = error(500, &[b'a', 0xff, b'b']);
        assert_eq!(v["error"]["message"], "the provider returned status 500: a\u{fffd}b");
    }
}
