//! A fake Anthropic Messages API (`POST /v1/messages`) for the test upstream.
//! It checks requests the way the real API does (an `x-api-key`, an
//! `anthropic-version`, a required `max_tokens`, only user and assistant
//! roles in `messages`, tools with an `input_schema`) and answers in
//! Anthropic's shapes, streamed or not.
//!
//! Answers: a `tool_use` block when the request has tools and the last user
//! turn is not a tool result; otherwise the text "Hello from the fake
//! upstream.". Usage: 10 input, 2 cache-read, 3 cache-creation and 5
//! output tokens. The model `claude-overloaded` gets a 529.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use super::upstream::{Recorded, Reply};

pub const TEXT_PIECES: [&str; 4] = ["Hello", " from the", " fake", " upstream."];
pub const TOOL_NAME: &str = "get_weather";
pub const TOOL_INPUT_PIECES: [&str; 3] = ["{\"city\": ", "\"Par", "is\"}"];

pub fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(status, json!({"type": "error", "error": {"type": kind, "message": message}}))
}

fn invalid(message: &str) -> Reply {
    error(400, "invalid_request_error", message)
}

/// Checks a request as the Messages API does; the error it would answer.
fn validate(req: &Recorded) -> Result<Value, Reply> {
    if req.header("x-api-key").map_or(true, str::is_empty) {
        return Err(error(401, "authentication_error", "x-api-key header is required"));
    }
    if req.header("anthropic-version").is_none() {
        return Err(invalid("anthropic-version: header is required"));
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(invalid("The request body is not valid JSON.")),
    };
    if !body.get("model").is_some_and(Value::is_string) {
        return Err(invalid("model: Field required"));
    }
    if !body.get("max_tokens").is_some_and(Value::is_u64) {
        return Err(invalid("max_tokens: Field required"));
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages: Field required"));
    };
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some("system") => {
                return Err(invalid(&format!(
                    "messages.{i}.role: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                )))
            }
            other => return Err(invalid(&format!("messages.{i}.role: Input tag {other:?} found is not valid"))),
        }
        if let Some(blocks) = m.get("content").and_then(Value::as_array) {
            for b in blocks {
                let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
                if !["text", "image", "tool_use", "tool_result"].contains(&kind) {
                    return Err(invalid(&format!("messages.{i}.content: unknown block type {kind:?}")));
                }
            }
        } else if !m.get("content").is_some_and(Value::is_string) {
            return Err(invalid(&format!("messages.{i}.content: Field required")));
        }
        if i > 0 && messages.get(i - 1).and_then(|p| p.get("role")) == m.get("role") {
            return Err(invalid("messages: roles must alternate between \"user\" and \"assistant\""));
        }
    }
    for (i, t) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if !t.get("name").is_some_and(Value::is_string) || !t.get("input_schema").is_some_and(Value::is_object) {
            return Err(invalid(&format!("tools.{i}: name and input_schema are required")));
        }
    }
    Ok(body)
}

fn wants_tool(body: &Value) -> bool {
    let has_tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    let answered = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("type") == Some(&json!("tool_result"))));
    has_tools && !answered
}

fn usage(output: u64) -> Value {
    json!({"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 2, "output_tokens": output,
           "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2}})
}

pub fn reply(req: &Recorded) -> Reply {
    let body = match validate(req) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    if model == json!("claude-overloaded") {
        return error(529, "overloaded_error", "Overloaded");
    }
    let tool = wants_tool(&body);
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return stream(&model, tool);
    }
    let content = if tool {
        json!([{"type": "tool_use", "id": "toolu_01", "name": TOOL_NAME, "input": {"city": "Paris"}}])
    } else {
        json!([{"type": "text", "text": TEXT_PIECES.concat()}])
    };
    Reply::json(
        200,
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": if tool { "tool_use" } else { "end_turn" },
            "stop_sequence": null,
            "usage": usage(5),
        }),
    )
}

fn event(name: &str, data: Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

fn stream(model: &Value, tool: bool) -> Reply {
    let gap = Duration::from_millis(5);
    let mut parts = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(1)}}),
    )];
    if tool {
        parts.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "tool_use", "id": "toolu_01", "name": TOOL_NAME, "input": {}}}),
        ));
        for piece in TOOL_INPUT_PIECES {
            parts.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
    } else {
        parts.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        parts.push(event("ping", json!({"type": "ping"})));
        for piece in TEXT_PIECES {
            parts.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
    }
    parts.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    parts.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": if tool { "tool_use" } else { "end_turn" }, "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    ));
    parts.push(event("message_stop", json!({"type": "message_stop"})));
    Reply::sse(200, parts.into_iter().map(|p| (gap, p)).collect())
}
