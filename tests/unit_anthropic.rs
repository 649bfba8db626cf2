//! Plain-Rust tests (no Envoy) of the Anthropic translation through its
//! public API: requests as OpenAI's SDKs send them, and Anthropic's event
//! streams cut at every byte.

use serde_json::{json, Value};
use tollgate::anthropic::{request_to_messages, response_to_openai, StreamTranslator, DEFAULT_MAX_TOKENS};
use tollgate::sse;
use tollgate::usage::Usage;

/// A text stream, as in Anthropic's streaming docs, with cache reads and
/// text that is not ASCII (so some cuts fall inside a character).
const TEXT_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-sonnet-4-5-20250929\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"cache_creation_input_tokens\": 0, \"cache_read_input_tokens\": 1200, \"output_tokens\": 1}}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n",
    "\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \", wörld 👋\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\": \"content_block_stop\", \"index\": 0}\n",
    "\n",
    "event: message_delta\n",
    "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n",
    "\n",
    "event: message_stop\n",
    "data: {\"type\": \"message_stop\"}\n",
    "\n",
);

/// A tool-use stream, as in Anthropic's docs: text, then two tool calls
/// (blocks 1 and 2, OpenAI tool calls 0 and 1), with a cache write.
const TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":0,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
    "\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let me check.\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"tz\\\": \\\"PST\\\"}\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n",
    "\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n",
    "\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n",
    "\n",
);

const CREATED: u64 = 1_700_000_000;

/// What one run of a translator gave.
#[derive(Debug, PartialEq)]
struct Run {
    /// The output's events, parsed (`[DONE]` as a string).
    events: Vec<Value>,
    usage: Option<Usage>,
    usage_is_final: bool,
    content_chars: u64,
}

/// Feeds `pieces` to a new translator, the last with end_of_stream.
fn run(pieces: &[&[u8]], include_usage: bool) -> Run {
    let mut t = StreamTranslator::new("claude", include_usage, CREATED);
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        out.extend(t.push(piece, i + 1 == pieces.len()));
    }
    Run {
        events: parse_output(&out),
        usage: t.usage(),
        usage_is_final: t.usage_is_final(),
        content_chars: t.content_chars(),
    }
}

/// The output as a client reads it. Every event must be whole, `data:`
/// only, and `[DONE]` must come exactly once, last.
fn parse_output(out: &[u8]) -> Vec<Value> {
    let mut parser = sse::Parser::default();
    let mut events = Vec::new();
    parser.feed(out, |e| {
        assert!(e.name.is_none(), "OpenAI streams have no event names");
        let data = std::str::from_utf8(&e.data).unwrap();
        events.push(if data == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(data).unwrap() });
    });
    assert!(parser.finish().is_empty(), "the output ends with a whole event");
    let done = events.iter().filter(|e| *e == "[DONE]").count();
    assert_eq!(done, 1, "[DONE] exactly once: {events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    events
}

/// The stream fed whole, cut in two at every byte, and one byte at a time:
/// the same events, usage and character count every time.
fn check_every_cut(stream: &str, include_usage: bool) -> Run {
    let bytes = stream.as_bytes();
    let whole = run(&[bytes], include_usage);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(run(&[a, b], include_usage), whole, "cut at {cut}");
    }
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run(&one_by_one, include_usage), whole, "one byte at a time");
    // And with an empty last push carrying end_of_stream.
    let mut pieces = one_by_one.clone();
    pieces.push(b"");
    assert_eq!(run(&pieces, include_usage), whole, "then an empty end");
    whole
}

fn chunk(id: &str, model: &str, delta: Value, finish: Value, include_usage: bool) -> Value {
    let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    if include_usage {
        c["usage"] = Value::Null;
    }
    c
}

fn usage_chunk(id: &str, model: &str, usage: Value) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model, "choices": [], "usage": usage})
}

#[test]
fn text_stream_cut_everywhere() {
    for include_usage in [false, true] {
        let got = check_every_cut(TEXT_STREAM, include_usage);
        let (id, model) = ("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "claude-sonnet-4-5-20250929");
        let c = |delta: Value, finish: Value| chunk(id, model, delta, finish, include_usage);
        let mut expected = vec![
            c(json!({"role": "assistant", "content": ""}), Value::Null),
            c(json!({"content": "Hello"}), Value::Null),
            c(json!({"content": ", wörld 👋"}), Value::Null),
            c(json!({}), json!("stop")),
        ];
        if include_usage {
            expected.push(usage_chunk(
                id,
                model,
                json!({"prompt_tokens": 1225, "completion_tokens": 15, "total_tokens": 1240,
                                                        "prompt_tokens_details": {"cached_tokens": 1200}}),
            ));
        }
        expected.push(json!("[DONE]"));
        assert_eq!(got.events, expected, "include_usage={include_usage}");
        assert_eq!(got.usage, Some(Usage { input: 25, cached_input: 1200, output: 15, ..Usage::default() }));
        assert!(got.usage_is_final);
        assert_eq!(got.content_chars, "Hello, wörld 👋".chars().count() as u64);
    }
}

#[test]
fn tool_stream_cut_everywhere() {
    for include_usage in [false, true] {
        let got = check_every_cut(TOOL_STREAM, include_usage);
        let (id, model) = ("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5");
        let c = |delta: Value, finish: Value| chunk(id, model, delta, finish, include_usage);
        let mut expected = vec![
            c(json!({"role": "assistant", "content": ""}), Value::Null),
            c(json!({"content": "Okay, let me check."}), Value::Null),
            c(
                json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}), Value::Null),
            c(json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}), Value::Null),
            c(
                json!({"tool_calls": [{"index": 1, "id": "toolu_02", "type": "function",
                                     "function": {"name": "get_time", "arguments": ""}}]}),
                Value::Null,
            ),
            c(json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"tz\": \"PST\"}"}}]}), Value::Null),
            c(json!({}), json!("tool_calls")),
        ];
        if include_usage {
            expected.push(usage_chunk(
                id,
                model,
                json!({"prompt_tokens": 772, "completion_tokens": 89, "total_tokens": 861,
                                                        "prompt_tokens_details": {"cached_tokens": 0}}),
            ));
        }
        expected.push(json!("[DONE]"));
        assert_eq!(got.events, expected, "include_usage={include_usage}");
        assert_eq!(got.usage, Some(Usage { input: 472, cache_write: 300, output: 89, ..Usage::default() }), "cache writes at their own price");
        let chars = "Okay, let me check.get_weather{\"location\": \"San Francisco, CA\"}get_time{\"tz\": \"PST\"}";
        assert_eq!(got.content_chars, chars.chars().count() as u64);
    }
}

#[test]
fn crlf_streams_translate_the_same() {
    let crlf = TEXT_STREAM.replace('\n', "\r\n");
    assert_eq!(check_every_cut(&crlf, true), run(&[TEXT_STREAM.as_bytes()], true));
}

/// Cut off anywhere (the upstream connection closing early), the output is
/// still whole events ending in one `[DONE]`; usage is reported to the
/// client only once it is final.
#[test]
fn a_stream_cut_off_anywhere_still_ends_with_done() {
    let bytes = TOOL_STREAM.as_bytes();
    let final_usage_at = TOOL_STREAM.find("event: message_delta").unwrap() + 1;
    for cut in 0..=bytes.len() {
        for include_usage in [false, true] {
            let got = run(&[&bytes[..cut]], include_usage);
            let usage_chunks = got.events.iter().filter(|e| e.get("usage").is_some_and(|u| !u.is_null())).count();
            // At the end of the stream a last event counts even without its
            // line end, so the data's closing brace is enough.
            let message_delta_whole = TOOL_STREAM[..cut].contains("\"output_tokens\":89}}");
            assert_eq!(usage_chunks, usize::from(include_usage && message_delta_whole), "cut at {cut}");
            assert_eq!(got.usage_is_final, message_delta_whole, "cut at {cut}");
            if cut < final_usage_at {
                assert_ne!(got.usage.map(|u| u.output), Some(89));
            }
        }
    }
    // Cut before message_stop: the finish chunk and the usage are there.
    let cut = TOOL_STREAM.find("event: message_stop").unwrap();
    let got = run(&[&bytes[..cut]], true);
    let n = got.events.len();
    assert_eq!(got.events[n - 3]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(got.events[n - 2]["usage"]["completion_tokens"], 89);
    // The last event without its blank line still counts.
    let got = run(&[TOOL_STREAM.trim_end().as_bytes()], true);
    assert_eq!(got.events, run(&[bytes], true).events);
    // Cut mid-content: what came, then [DONE]; usage so far for the gateway.
    let cut = TOOL_STREAM.find("event: content_block_stop").unwrap();
    let got = run(&[&bytes[..cut]], true);
    assert_eq!(got.events.len(), 3, "{:?}", got.events);
    assert_eq!(got.usage, Some(Usage { input: 472, cache_write: 300, output: 2, ..Usage::default() }));
    assert!(!got.usage_is_final, "only message_start's output count");
    assert_eq!(got.content_chars, 19);
}

/// The chunks folded into one message, as OpenAI's SDKs do (tool calls
/// merged by index, arguments concatenated).
fn accumulate(events: &[Value]) -> (Value, Value) {
    let mut content = String::new();
    let mut role = Value::Null;
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    for e in events.iter().filter(|e| e.is_object()) {
        for choice in e["choices"].as_array().unwrap() {
            let d = &choice["delta"];
            if let Some(r) = d.get("role") {
                role = r.clone();
            }
            content.push_str(d.get("content").and_then(Value::as_str).unwrap_or(""));
            for tc in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    calls.push(json!({"id": tc["id"], "type": tc["type"],
                                      "function": {"name": tc["function"]["name"], "arguments": ""}}));
                }
                let args = calls[i]["function"]["arguments"].as_str().unwrap().to_owned()
                    + tc["function"]["arguments"].as_str().unwrap();
                calls[i]["function"]["arguments"] = json!(args);
            }
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
        }
    }
    let mut message = json!({"role": role, "content": if content.is_empty() { Value::Null } else { json!(content) },
                             "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    (message, finish)
}

/// The streamed tool-use answer and the same answer unstreamed come out as
/// the same OpenAI message.
#[test]
fn streamed_and_unstreamed_answers_agree() {
    let got = run(&[TOOL_STREAM.as_bytes()], true);
    let (message, finish) = accumulate(&got.events);
    let whole = json!({
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Okay, let me check."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {"tz": "PST"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 0, "output_tokens": 89},
    });
    let (body, usage) = response_to_openai(whole.to_string().as_bytes(), "claude", CREATED).unwrap();
    let completion: Value = serde_json::from_slice(&body).unwrap();
    let unstreamed = &completion["choices"][0]["message"];
    assert_eq!(message["content"], unstreamed["content"]);
    assert_eq!(message["role"], unstreamed["role"]);
    assert_eq!(finish, completion["choices"][0]["finish_reason"]);
    assert_eq!(usage, got.usage);
    assert_eq!(completion["usage"], got.events[got.events.len() - 2]["usage"]);
    // Arguments are JSON strings; compare what they say.
    let args = |m: &Value| -> Vec<(Value, Value, Value)> {
        m["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let a: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                (c["id"].clone(), c["function"]["name"].clone(), a)
            })
            .collect()
    };
    assert_eq!(args(&message), args(unstreamed));
}

/// A request as openai-python sends it for a streamed tool conversation
/// (`client.chat.completions.create(..., stream=True,
/// stream_options={"include_usage": True})`), after one tool round.
#[test]
fn sdk_shaped_tool_conversation() {
    let req = json!({
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather like in Boston today?"},
            {"role": "assistant", "content": "", "refusal": null, "tool_calls": [
                {"id": "call_abc123", "type": "function",
                 "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\"}"}}]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
        ],
        "model": "claude",
        "max_completion_tokens": 512,
        "parallel_tool_calls": false,
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0,
        "tool_choice": "auto",
        "tools": [{"type": "function", "function": {
            "name": "get_current_weather", "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["location"]},
            "strict": false}}],
    });
    let t = request_to_messages(req.to_string().as_bytes(), "claude-sonnet-4-5-20250929").unwrap();
    assert!(t.stream && t.include_usage);
    let body: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 512,
            "system": "You are a helpful assistant.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What's the weather like in Boston today?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather", "input": {"location": "Boston, MA"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_abc123", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"}]},
            ],
            "temperature": 0.0,
            "stream": true,
            "tools": [{"name": "get_current_weather", "description": "Get the current weather in a given location",
                       "input_schema": {"type": "object", "properties": {
                           "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                           "required": ["location"]}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        })
    );
}

/// The simplest request an SDK sends: no max_tokens, no stream.
#[test]
fn sdk_shaped_minimal_request() {
    let req = br#"{"messages":[{"role":"user","content":"Say this is a test"}],"model":"claude"}"#;
    let t = request_to_messages(req, "claude-haiku-4-5").unwrap();
    assert!(!t.stream && !t.include_usage);
    let body: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        body,
        json!({"model": "claude-haiku-4-5", "max_tokens": DEFAULT_MAX_TOKENS,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Say this is a test"}]}]})
    );
}
