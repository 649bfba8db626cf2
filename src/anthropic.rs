//! OpenAI chat completions to and from Anthropic Messages.
//!
//! Clients speak OpenAI's chat-completions API; Anthropic's own API is
//! Messages (`POST /v1/messages`, with `anthropic-version: API_VERSION`).
//! This module translates between the two, as plain functions over bytes:
//!
//! - a chat-completions request into a Messages request
//!   ([`request_to_messages`]);
//! - a Messages response into a `chat.completion` ([`response_to_openai`]);
//! - an Anthropic error into OpenAI's error shape ([`error_to_openai`]);
//! - a Messages event stream into `chat.completion.chunk` events
//!   ([`StreamTranslator`]), fed in chunks cut anywhere.
//!
//! A request the translation cannot carry faithfully is refused with a
//! [`TranslateError`] that names the parameter; OpenAI-only knobs with no
//! Anthropic counterpart (`frequency_penalty`, `seed`, `response_format`, ...)
//! are dropped. Provider bytes that do not parse become errors or are skipped:
//! nothing here panics.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sse;
use crate::usage::Usage;

/// Sent as `anthropic-version` upstream.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` used when an OpenAI request sets neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic's temperature goes up to 1; OpenAI's up to 2.
const MAX_TEMPERATURE: f64 = 1.0;

/// The most a [`StreamTranslator`] holds waiting for an event to end.
const MAX_HELD: usize = 1024 * 1024;

/// How much of an unreadable error body is quoted to the client.
const MAX_ERROR_SNIPPET: usize = 512;

type Object = Map<String, Value>;

// ---------------------------------------------------------------------------
// Requests: OpenAI chat completions -> Anthropic Messages
// ---------------------------------------------------------------------------

/// Why a request cannot be translated; the filter answers it with a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    pub message: String,
    /// The offending OpenAI parameter, as OpenAI's errors name it.
    pub param: Option<&'static str>,
}

impl TranslateError {
    fn body(message: impl Into<String>) -> Self {
        Self { message: message.into(), param: None }
    }

    fn param(param: &'static str, message: impl Into<String>) -> Self {
        Self { message: message.into(), param: Some(param) }
    }

    fn messages(message: impl Into<String>) -> Self {
        Self::param("messages", message)
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the filter needs to know about a translated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The Messages request body.
    pub body: Vec<u8>,
    /// The client asked for a stream (`stream: true`).
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`);
    /// only ever true for a stream.
    pub include_usage: bool,
}

/// A Messages request, fields in the order Anthropic documents them.
#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice>,
}

#[derive(Serialize)]
struct Metadata {
    user_id: String,
}

/// One message of the conversation Anthropic sees.
#[derive(Serialize)]
struct Turn {
    role: Role,
    content: Vec<Block>,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

/// A content block of an Anthropic message.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Serialize)]
struct Tool {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Serialize, Debug, PartialEq)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

impl ToolChoice {
    fn of(kind: &'static str) -> Self {
        Self { kind, name: None, disable_parallel_tool_use: false }
    }
}

/// OpenAI chat-completions request body -> Anthropic Messages request body,
/// with `model` set to `upstream_model`.
///
/// System and developer messages, wherever they are, become the top-level
/// `system` (joined with blank lines); tool results become `tool_result`
/// blocks of a user message; consecutive messages of one role are merged,
/// since Anthropic requires the roles to alternate.
pub fn request_to_messages(body: &[u8], upstream_model: &str) -> Result<Translated, TranslateError> {
    let mut req = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(req)) => req,
        Ok(_) => return Err(TranslateError::body("The request body must be a JSON object.")),
        Err(e) => return Err(TranslateError::body(format!("The request body is not valid JSON: {e}."))),
    };
    check_n(&req)?;
    let stream = optional_bool(&req, "stream")?.unwrap_or(false);
    let include_usage = stream && wants_usage(&req)?;
    let (system, messages) = translate_messages(req.remove("messages"))?;
    let tools = translate_tools(req.remove("tools"))?;
    let tool_choice = translate_tool_choice(&req, !tools.is_empty())?;
    let out = MessagesRequest {
        model: upstream_model,
        max_tokens: max_tokens(&req)?,
        system,
        messages,
        temperature: optional_number(&req, "temperature")?.map(|t| t.min(MAX_TEMPERATURE)),
        top_p: optional_number(&req, "top_p")?,
        stop_sequences: stop_sequences(req.remove("stop"))?,
        stream,
        metadata: match req.remove("user") {
            Some(Value::String(user_id)) if !user_id.is_empty() => Some(Metadata { user_id }),
            _ => None,
        },
        tools,
        tool_choice,
    };
    let body = serde_json::to_vec(&out)
        .map_err(|e| TranslateError::body(format!("The request could not be translated: {e}.")))?;
    Ok(Translated { body, stream, include_usage })
}

/// A field that is present and not null.
fn present<'a>(req: &'a Object, key: &str) -> Option<&'a Value> {
    req.get(key).filter(|v| !v.is_null())
}

fn optional_bool(req: &Object, key: &'static str) -> Result<Option<bool>, TranslateError> {
    match present(req, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| TranslateError::param(key, format!("{key} must be a boolean."))),
    }
}

fn optional_number(req: &Object, key: &'static str) -> Result<Option<f64>, TranslateError> {
    match present(req, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| TranslateError::param(key, format!("{key} must be a number."))),
    }
}

/// Anthropic returns one choice; `n` other than 1 cannot be honoured.
fn check_n(req: &Object) -> Result<(), TranslateError> {
    match present(req, "n") {
        None => Ok(()),
        Some(n) if n.as_u64() == Some(1) => Ok(()),
        Some(n) => {
            Err(TranslateError::param("n", format!("n={n} is not supported for this model: it returns one choice.")))
        }
    }
}

/// `stream_options.include_usage`.
fn wants_usage(req: &Object) -> Result<bool, TranslateError> {
    match present(req, "stream_options") {
        None => Ok(false),
        Some(Value::Object(options)) => match present(options, "include_usage") {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(TranslateError::param("stream_options", "stream_options.include_usage must be a boolean.")),
        },
        Some(_) => Err(TranslateError::param("stream_options", "stream_options must be an object.")),
    }
}

/// `max_completion_tokens`, else the older `max_tokens`, else the default.
fn max_tokens(req: &Object) -> Result<u64, TranslateError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = present(req, key) {
            return v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| TranslateError::param(key, format!("{key} must be a positive integer.")));
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

/// `stop`, a string or an array of strings, as `stop_sequences`.
fn stop_sequences(stop: Option<Value>) -> Result<Vec<String>, TranslateError> {
    let refuse = || TranslateError::param("stop", "stop must be a string or an array of strings.");
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(refuse()),
            })
            .collect(),
        Some(_) => Err(refuse()),
    }
}

/// Anthropic's `system` (None when there is none) and `messages`.
fn translate_messages(messages: Option<Value>) -> Result<(Option<String>, Vec<Turn>), TranslateError> {
    let list = match messages {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(TranslateError::messages("messages must be a non-empty array.")),
    };
    let mut conversation = Conversation::default();
    for (i, message) in list.into_iter().enumerate() {
        conversation.add(i, message)?;
    }
    let Conversation { system, mut turns } = conversation;
    if turns.is_empty() {
        return Err(TranslateError::messages("messages must include a user or assistant message with content."));
    }
    for turn in turns.iter_mut().filter(|t| t.role == Role::User) {
        // Anthropic wants the tool results first in their user message; a
        // stable sort keeps everything else in order.
        turn.content.sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, turns))
}

/// The conversation as it is being built.
#[derive(Default)]
struct Conversation {
    system: Vec<String>,
    turns: Vec<Turn>,
}

impl Conversation {
    /// Adds OpenAI message `i`.
    fn add(&mut self, i: usize, message: Value) -> Result<(), TranslateError> {
        let Value::Object(mut message) = message else {
            return Err(TranslateError::messages(format!("messages[{i}] must be an object.")));
        };
        let role = message.remove("role");
        match role.as_ref().and_then(Value::as_str) {
            Some("system" | "developer") => {
                let texts = system_texts(i, message.remove("content"))?;
                self.system.extend(texts);
            }
            Some("user") => {
                let blocks = user_blocks(i, message.remove("content"))?;
                self.push(Role::User, blocks);
            }
            Some("assistant") => {
                let blocks = assistant_blocks(i, &mut message)?;
                self.push(Role::Assistant, blocks);
            }
            Some("tool") => {
                let block = tool_result_block(i, &mut message)?;
                self.push(Role::User, vec![block]);
            }
            Some(other) => {
                return Err(TranslateError::messages(format!(
                    "messages[{i}].role '{other}' is not supported; use system, developer, user, assistant or tool."
                )))
            }
            None => return Err(TranslateError::messages(format!("messages[{i}].role must be a string."))),
        }
        Ok(())
    }

    /// Appends blocks, merged into the last turn when it has the same role;
    /// nothing when there are none (an empty message says nothing).
    fn push(&mut self, role: Role, blocks: Vec<Block>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.turns.push(Turn { role, content: blocks }),
        }
    }
}

/// An OpenAI content part, as far as this translation carries them.
enum Part {
    Text(String),
    /// An image's URL: `data:` or http(s).
    Image(String),
}

/// Message `i`'s `content`: a string, an array of parts, or nothing.
fn content_parts(i: usize, content: Option<Value>) -> Result<Vec<Part>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![Part::Text(text)]),
        Some(Value::Array(parts)) => parts.into_iter().enumerate().map(|(j, part)| content_part(i, j, part)).collect(),
        Some(_) => Err(TranslateError::messages(format!(
            "messages[{i}].content must be a string or an array of content parts."
        ))),
    }
}

fn content_part(i: usize, j: usize, part: Value) -> Result<Part, TranslateError> {
    let refuse = |why: &str| TranslateError::messages(format!("messages[{i}].content[{j}] {why}"));
    let Value::Object(mut part) = part else {
        return Err(refuse("must be an object."));
    };
    let kind = part.remove("type");
    match kind.as_ref().and_then(Value::as_str) {
        Some("text") => take_string(&mut part, "text").map(Part::Text).ok_or_else(|| refuse("has no text.")),
        Some("refusal") => take_string(&mut part, "refusal").map(Part::Text).ok_or_else(|| refuse("has no refusal.")),
        Some("image_url") => {
            let url = match part.remove("image_url") {
                Some(Value::Object(mut image)) => take_string(&mut image, "url"),
                Some(Value::String(url)) => Some(url),
                _ => None,
            };
            url.map(Part::Image).ok_or_else(|| refuse("has no image_url.url."))
        }
        Some(other) => Err(refuse(&format!("is of type '{other}', which this model's provider does not accept."))),
        None => Err(refuse("has no type.")),
    }
}

/// Removes `key` from `map` if it holds a string.
fn take_string(map: &mut Object, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// A text block, or none for empty text (Anthropic refuses empty blocks).
fn text_block(text: String) -> Option<Block> {
    (!text.is_empty()).then_some(Block::Text { text })
}

fn text_only(i: usize, role: &str) -> TranslateError {
    TranslateError::messages(format!("messages[{i}]: {role} messages can only hold text for this model."))
}

/// A system or developer message's text, non-empty pieces only.
fn system_texts(i: usize, content: Option<Value>) -> Result<Vec<String>, TranslateError> {
    let mut texts = Vec::new();
    for part in content_parts(i, content)? {
        match part {
            Part::Text(text) if text.is_empty() => {}
            Part::Text(text) => texts.push(text),
            Part::Image(_) => return Err(text_only(i, "system")),
        }
    }
    Ok(texts)
}

fn user_blocks(i: usize, content: Option<Value>) -> Result<Vec<Block>, TranslateError> {
    let mut blocks = Vec::new();
    for part in content_parts(i, content)? {
        match part {
            Part::Text(text) => blocks.extend(text_block(text)),
            Part::Image(url) => blocks.push(image_block(i, url)?),
        }
    }
    Ok(blocks)
}

/// An image block from a `data:<media type>;base64,<data>` or http(s) URL.
fn image_block(i: usize, mut url: String) -> Result<Block, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let refuse = || {
            TranslateError::messages(format!(
                "messages[{i}]: an image data URL must look like data:image/png;base64,..."
            ))
        };
        let (header, _) = rest.split_once(',').ok_or_else(refuse)?;
        let media_type = header
            .strip_suffix(";base64")
            .and_then(|h| h.split(';').next())
            .filter(|m| !m.is_empty())
            .ok_or_else(refuse)?
            .to_owned();
        // "data:" + header + ",": all ASCII up to here, so a char boundary.
        let start = "data:".len() + header.len() + 1;
        url.drain(..start.min(url.len()));
        return Ok(Block::Image { source: ImageSource::Base64 { media_type, data: url } });
    }
    let scheme_ok =
        ["http://", "https://"].iter().any(|s| url.get(..s.len()).is_some_and(|head| head.eq_ignore_ascii_case(s)));
    if scheme_ok {
        Ok(Block::Image { source: ImageSource::Url { url } })
    } else {
        Err(TranslateError::messages(format!("messages[{i}]: an image URL must be http(s) or a base64 data URL.")))
    }
}

/// An assistant message's text, then its tool calls as `tool_use` blocks.
fn assistant_blocks(i: usize, message: &mut Object) -> Result<Vec<Block>, TranslateError> {
    let mut blocks = Vec::new();
    for part in content_parts(i, message.remove("content"))? {
        match part {
            Part::Text(text) => blocks.extend(text_block(text)),
            Part::Image(_) => return Err(text_only(i, "assistant")),
        }
    }
    match message.remove("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.into_iter().enumerate() {
                blocks.push(tool_use_block(i, j, call)?);
            }
        }
        Some(_) => return Err(TranslateError::messages(format!("messages[{i}].tool_calls must be an array."))),
    }
    Ok(blocks)
}

fn tool_use_block(i: usize, j: usize, call: Value) -> Result<Block, TranslateError> {
    let refuse = |why: &str| TranslateError::messages(format!("messages[{i}].tool_calls[{j}] {why}"));
    let Value::Object(mut call) = call else {
        return Err(refuse("must be an object."));
    };
    if let Some(kind) = present(&call, "type") {
        if kind.as_str() != Some("function") {
            return Err(refuse("must be of type 'function'."));
        }
    }
    let id = take_string(&mut call, "id").ok_or_else(|| refuse("has no id."))?;
    let Some(Value::Object(mut function)) = call.remove("function") else {
        return Err(refuse("has no function."));
    };
    let name = take_string(&mut function, "name").ok_or_else(|| refuse("has no function.name."))?;
    let input = tool_input(function.remove("arguments"))
        .map_err(|why| refuse(&format!("has function.arguments that {why}.")))?;
    Ok(Block::ToolUse { id, name, input })
}

/// A tool call's `arguments` (a JSON string) as the object Anthropic takes
/// as `input`. Empty arguments are an empty object.
fn tool_input(arguments: Option<Value>) -> Result<Value, String> {
    let text = match arguments {
        None | Some(Value::Null) => return Ok(Value::Object(Map::new())),
        Some(Value::String(text)) => text,
        // Not what OpenAI sends, but unambiguous.
        Some(object @ Value::Object(_)) => return Ok(object),
        Some(_) => return Err("are not a JSON string".to_owned()),
    };
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(_) => Err("are not a JSON object".to_owned()),
        Err(e) => Err(format!("are not valid JSON ({e})")),
    }
}

/// A `tool` message as a `tool_result` block.
fn tool_result_block(i: usize, message: &mut Object) -> Result<Block, TranslateError> {
    let tool_use_id = take_string(message, "tool_call_id")
        .ok_or_else(|| TranslateError::messages(format!("messages[{i}].tool_call_id must be a string.")))?;
    let content = match message.remove("content") {
        Some(Value::String(text)) => (!text.is_empty()).then_some(ToolResultContent::Text(text)),
        other => {
            let mut blocks = Vec::new();
            for part in content_parts(i, other)? {
                match part {
                    Part::Text(text) => blocks.extend(text_block(text)),
                    Part::Image(_) => return Err(text_only(i, "tool")),
                }
            }
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult { tool_use_id, content })
}

/// `tools` (functions only) as Anthropic tool definitions.
fn translate_tools(tools: Option<Value>) -> Result<Vec<Tool>, TranslateError> {
    match tools {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list.into_iter().enumerate().map(|(j, tool)| tool_definition(j, tool)).collect(),
        Some(_) => Err(TranslateError::param("tools", "tools must be an array.")),
    }
}

fn tool_definition(j: usize, tool: Value) -> Result<Tool, TranslateError> {
    let refuse = |why: &str| TranslateError::param("tools", format!("tools[{j}] {why}"));
    let Value::Object(mut tool) = tool else {
        return Err(refuse("must be an object."));
    };
    if let Some(kind) = present(&tool, "type") {
        if kind.as_str() != Some("function") {
            return Err(refuse("must be of type 'function'."));
        }
    }
    let Some(Value::Object(mut function)) = tool.remove("function") else {
        return Err(refuse("has no function."));
    };
    let name = take_string(&mut function, "name").ok_or_else(|| refuse("has no function.name."))?;
    let description = take_string(&mut function, "description");
    let input_schema = match function.remove("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(schema) => schema,
    };
    Ok(Tool { name, description, input_schema })
}

/// `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`.
///
/// Without tools there is nothing to choose, and Anthropic refuses a
/// `tool_choice` then, so none is sent (the values are still checked).
fn translate_tool_choice(req: &Object, has_tools: bool) -> Result<Option<ToolChoice>, TranslateError> {
    let refuse = || {
        TranslateError::param(
            "tool_choice",
            "tool_choice must be \"auto\", \"required\", \"none\" or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        )
    };
    let mut choice = match present(req, "tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::of("auto"),
            "required" => ToolChoice::of("any"),
            "none" => ToolChoice::of("none"),
            _ => return Err(refuse()),
        }),
        Some(Value::Object(o)) => {
            let name = match (o.get("type").and_then(Value::as_str), o.get("function")) {
                (Some("function"), Some(f)) => f.get("name").and_then(Value::as_str),
                _ => None,
            };
            let name = name.ok_or_else(refuse)?;
            Some(ToolChoice { name: Some(name.to_owned()), ..ToolChoice::of("tool") })
        }
        Some(_) => return Err(refuse()),
    };
    let parallel = optional_bool(req, "parallel_tool_calls")?;
    if !has_tools {
        return Ok(None);
    }
    if parallel == Some(false) {
        let c = choice.get_or_insert_with(|| ToolChoice::of("auto"));
        // "none" takes no such flag: no tools are called at all.
        c.disable_parallel_tool_use = c.kind != "none";
    }
    Ok(choice)
}

// ---------------------------------------------------------------------------
// Token counts
// ---------------------------------------------------------------------------

/// Anthropic's `usage` object, as sent in responses and stream events.
#[derive(Deserialize, Debug, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// Anthropic's four token counts; none overlaps another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Counts {
    /// Takes the counts `wire` carries, keeping the others.
    fn update(&mut self, wire: &WireUsage) {
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut self.input, wire.input_tokens);
        set(&mut self.output, wire.output_tokens);
        set(&mut self.cache_read, wire.cache_read_input_tokens);
        set(&mut self.cache_write, wire.cache_creation_input_tokens);
    }

    fn from_wire(wire: &WireUsage) -> Self {
        let mut counts = Self::default();
        counts.update(wire);
        counts
    }

    /// For billing. Cache writes are billed as input here: [`Usage`] has no
    /// count of its own for them (Anthropic prices them 25% above input).
    fn billing(&self) -> Usage {
        Usage { input: self.input.saturating_add(self.cache_write), cached_input: self.cache_read, output: self.output }
    }

    /// As OpenAI reports usage: the prompt includes cached tokens, counted
    /// again in `prompt_tokens_details.cached_tokens`.
    fn openai(&self) -> OpenAiUsage {
        let prompt = self.input.saturating_add(self.cache_read).saturating_add(self.cache_write);
        OpenAiUsage {
            prompt_tokens: prompt,
            completion_tokens: self.output,
            total_tokens: prompt.saturating_add(self.output),
            prompt_tokens_details: PromptDetails { cached_tokens: self.cache_read },
        }
    }
}

#[derive(Serialize, Debug, Clone, Copy)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
}

#[derive(Serialize, Debug, Clone, Copy)]
struct PromptDetails {
    cached_tokens: u64,
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------
// Responses: Anthropic Messages -> OpenAI chat.completion
// ---------------------------------------------------------------------------

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

#[derive(Deserialize, Debug)]
struct WireError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'a str>,
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

/// 529 (Anthropic's "overloaded") is not a status clients know: 503.
fn openai_status(status: u16) -> u16 {
    if status == 529 {
        503
    } else {
        status
    }
}

/// OpenAI's error `type` for a status.
fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_exceeded",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// The status Anthropic gives an error type (for errors inside a stream,
/// which come without one).
fn anthropic_status(error_type: Option<&str>) -> u16 {
    match error_type {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("billing_error") => 402,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("timeout_error") => 504,
        Some("overloaded_error") => 529,
        _ => 500,
    }
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

// ---------------------------------------------------------------------------
// Streams: Anthropic Messages events -> OpenAI chat.completion.chunk events
// ---------------------------------------------------------------------------

/// An Anthropic stream event's data, by its `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: Option<MessageDeltaBody>,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// ping, content_block_stop, and events added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    id: Option<String>,
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking, signatures, citations.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless the client asked for usage; then null on every chunk
    /// but the last, as OpenAI sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OpenAiUsage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    /// Always null.
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Anthropic Messages SSE stream -> OpenAI `chat.completion.chunk` SSE
/// stream, fed in chunks cut anywhere.
///
/// Only whole events go out: the unfinished tail of a chunk is held until
/// its event ends. The output always ends with exactly one `data: [DONE]`,
/// after which everything upstream sends is ignored.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: sse::Parser,
    /// The message id, from message_start.
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    counts: Option<Counts>,
    /// message_delta brought the final output count.
    output_final: bool,
    /// The first chunk (the assistant role) went out.
    started: bool,
    finish_sent: bool,
    /// The Anthropic block index of each tool call, in OpenAI's tool-call
    /// index order.
    tool_blocks: Vec<u64>,
    content_chars: u64,
    /// `[DONE]` went out.
    done: bool,
}

impl StreamTranslator {
    /// `model` is reported until message_start names the upstream's model;
    /// `created` is the Unix time to report.
    pub fn new(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            parser: sse::Parser::default(),
            id: String::new(),
            model: model.to_owned(),
            created,
            include_usage,
            counts: None,
            output_final: false,
            started: false,
            finish_sent: false,
            tool_blocks: Vec::new(),
            content_chars: 0,
            done: false,
        }
    }

    /// Feeds upstream bytes; returns the OpenAI SSE bytes to send for them
    /// (possibly empty). With `end_of_stream`, also flushes and ends the
    /// stream with `data: [DONE]\n\n` (once, even if upstream never sent
    /// message_stop).
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.done {
            // The parser is moved out so that events can update `self`.
            let mut parser = std::mem::take(&mut self.parser);
            parser.feed(chunk, |event| self.on_event(&event.data, &mut out));
            if end_of_stream {
                self.on_unterminated(&parser.finish(), &mut out);
            }
            self.parser = parser;
            if !self.done && self.parser.pending().len() > MAX_HELD {
                self.parser = sse::Parser::default();
                self.write_error(&mut out, "the provider's stream could not be read", None, 500);
                self.close(&mut out, false);
            }
        }
        if end_of_stream {
            let with_usage = self.output_final;
            self.close(&mut out, with_usage);
        }
        if self.done {
            self.parser = sse::Parser::default();
        }
        out
    }

    /// Usage seen so far (from message_start and message_delta), None until
    /// message_start. The output count is final only once message_delta has
    /// come; before that it is what message_start said (typically 1).
    pub fn usage(&self) -> Option<Usage> {
        self.counts.as_ref().map(Counts::billing)
    }

    /// Whether the output count in [`usage`](Self::usage) is final, that is
    /// message_delta (which carries the cumulative count) has come. A stream
    /// cut off before it has only message_start's output count (typically
    /// 1), well below what passed: bill the larger of that and an estimate
    /// from [`content_chars`](Self::content_chars).
    pub fn usage_is_final(&self) -> bool {
        self.output_final
    }

    /// Characters of generated text and tool calls (names and arguments)
    /// passed so far, for an estimate when a stream ends without usage.
    pub fn content_chars(&self) -> u64 {
        self.content_chars
    }

    /// A last event that came without its closing blank line.
    fn on_unterminated(&mut self, tail: &[u8], out: &mut Vec<u8>) {
        if tail.is_empty() || self.done {
            return;
        }
        let mut closed = tail.to_vec();
        closed.extend_from_slice(b"\n\n");
        sse::Parser::default().feed(&closed, |event| self.on_event(&event.data, out));
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        // An event that does not parse is skipped, like one of an unknown type.
        let Ok(event) = serde_json::from_slice::<StreamEvent>(data) else {
            return;
        };
        match event {
            StreamEvent::MessageStart { message } => self.on_message_start(message, out),
            StreamEvent::ContentBlockStart { index, content_block } => self.on_block_start(index, content_block, out),
            StreamEvent::ContentBlockDelta { index, delta } => self.on_block_delta(index, delta, out),
            StreamEvent::MessageDelta { delta, usage } => self.on_message_delta(delta, usage, out),
            StreamEvent::MessageStop => self.on_message_stop(out),
            StreamEvent::Error { error } => {
                let status = openai_status(anthropic_status(error.kind.as_deref()));
                let message = error.message.as_deref().unwrap_or("the provider's stream failed");
                self.write_error(out, message, error.kind.as_deref(), status);
                self.close(out, false);
            }
            StreamEvent::Other => {}
        }
    }

    fn on_message_start(&mut self, message: StartMessage, out: &mut Vec<u8>) {
        if let Some(id) = message.id {
            self.id = id;
        }
        if let Some(model) = message.model {
            self.model = model;
        }
        if let Some(usage) = &message.usage {
            self.counts.get_or_insert_with(Counts::default).update(usage);
        }
        self.ensure_started(out);
    }

    /// Sends the first chunk, with the role, unless it went out already.
    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let delta = Delta { role: Some("assistant"), content: Some(""), ..Delta::default() };
            self.write_delta(out, delta, None);
        }
    }

    fn on_block_start(&mut self, index: u64, block: StartBlock, out: &mut Vec<u8>) {
        match block {
            StartBlock::Text { text } => self.write_text(out, &text),
            StartBlock::ToolUse { id, name } => {
                self.ensure_started(out);
                let k = self.tool_blocks.len();
                self.tool_blocks.push(index);
                self.count_chars(&name);
                let call = ToolCallDelta {
                    index: k,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionDelta { name: Some(&name), arguments: "" },
                };
                self.write_delta(out, Delta { tool_calls: Some([call]), ..Delta::default() }, None);
            }
            StartBlock::Other => {}
        }
    }

    fn on_block_delta(&mut self, index: u64, delta: BlockDelta, out: &mut Vec<u8>) {
        match delta {
            BlockDelta::TextDelta { text } => self.write_text(out, &text),
            BlockDelta::InputJsonDelta { partial_json } => {
                let Some(k) = self.tool_blocks.iter().position(|b| *b == index) else {
                    return;
                };
                if partial_json.is_empty() {
                    return;
                }
                self.ensure_started(out);
                self.count_chars(&partial_json);
                let call = ToolCallDelta {
                    index: k,
                    id: None,
                    kind: None,
                    function: FunctionDelta { name: None, arguments: &partial_json },
                };
                self.write_delta(out, Delta { tool_calls: Some([call]), ..Delta::default() }, None);
            }
            BlockDelta::Other => {}
        }
    }

    /// Text as a content chunk; nothing for empty text.
    fn write_text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.ensure_started(out);
        self.count_chars(text);
        self.write_delta(out, Delta { content: Some(text), ..Delta::default() }, None);
    }

    /// The stop reason as the finish chunk; usage as it now stands.
    fn on_message_delta(&mut self, delta: Option<MessageDeltaBody>, usage: Option<WireUsage>, out: &mut Vec<u8>) {
        if let Some(usage) = &usage {
            self.counts.get_or_insert_with(Counts::default).update(usage);
            // output_tokens here is cumulative: the message's final count.
            self.output_final |= usage.output_tokens.is_some();
        }
        let stop_reason = delta.as_ref().and_then(|d| d.stop_reason.as_deref());
        self.write_finish(out, finish_reason(stop_reason));
    }

    fn on_message_stop(&mut self, out: &mut Vec<u8>) {
        self.write_finish(out, "stop");
        self.close(out, true);
    }

    /// The chunk with the finish reason, once per stream.
    fn write_finish(&mut self, out: &mut Vec<u8>, reason: &'static str) {
        if !self.finish_sent {
            self.ensure_started(out);
            self.finish_sent = true;
            self.write_delta(out, Delta::default(), Some(reason));
        }
    }

    /// Ends the output: the usage chunk (if asked for, known, and
    /// `with_usage`), then `[DONE]`. Once.
    fn close(&mut self, out: &mut Vec<u8>, with_usage: bool) {
        if self.done {
            return;
        }
        self.done = true;
        if with_usage && self.include_usage {
            if let Some(counts) = self.counts {
                self.write_chunk(out, &[], Some(counts.openai()));
            }
        }
        out.extend_from_slice(DONE);
    }

    fn count_chars(&mut self, text: &str) {
        self.content_chars = self.content_chars.saturating_add(text.chars().count() as u64);
    }

    fn write_delta(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&'static str>) {
        let choice = ChunkChoice { index: 0, delta, logprobs: None, finish_reason };
        self.write_chunk(out, std::slice::from_ref(&choice), None);
    }

    /// One `chat.completion.chunk` event; `usage` is for the usage chunk.
    fn write_chunk(&self, out: &mut Vec<u8>, choices: &[ChunkChoice<'_>], usage: Option<OpenAiUsage>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        write_event(out, &chunk);
    }

    /// An error event, in OpenAI's shape.
    fn write_error(&self, out: &mut Vec<u8>, message: &str, code: Option<&str>, status: u16) {
        let envelope =
            ErrorEnvelope { error: ErrorBody { message, kind: openai_error_type(status), param: None, code } };
        write_event(out, &envelope);
    }
}

/// `data: <json>\n\n`; nothing at all if `value` does not serialize.
fn write_event(out: &mut Vec<u8>, value: &impl Serialize) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.extend_from_slice(b"\n\n");
    } else {
        out.truncate(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Translates an OpenAI request given as JSON; the Anthropic body as JSON.
    fn translate(req: Value) -> Value {
        let t = request_to_messages(req.to_string().as_bytes(), "claude-sonnet-4-5").unwrap();
        serde_json::from_slice(&t.body).unwrap()
    }

    fn refusal(req: Value) -> TranslateError {
        request_to_messages(req.to_string().as_bytes(), "claude-sonnet-4-5").unwrap_err()
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn plain_text_exchange() {
        let out = translate(json!({"model": "claude", "messages": [user("Hello, Claude")], "max_tokens": 1024}));
        assert_eq!(
            out,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}]})
        );
    }

    #[test]
    fn system_anywhere_and_multi_turn() {
        let out = translate(json!({"model": "claude", "messages": [
            {"role": "system", "content": "You are terse."},
            user("Hi"),
            {"role": "assistant", "content": "Hello."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            user("How are you?"),
        ]}));
        assert_eq!(out["system"], "You are terse.\n\nAnswer in French.");
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
            ])
        );
    }

    #[test]
    fn consecutive_messages_of_one_role_are_merged() {
        let out = translate(json!({"messages": [user("one"), user("two"),
            {"role": "assistant", "content": ""}, user("three")]}));
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"},
                                                 {"type": "text", "text": "three"}]}]),
            "the empty assistant message is dropped, then the user messages meet"
        );
    }

    #[test]
    fn images_from_data_and_http_urls() {
        let out = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these images?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
        ]}]}));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is in these images?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
            ])
        );
    }

    #[test]
    fn bad_images_are_refused() {
        for url in ["data:image/png,abc", "data:;base64,abc", "data:image/png;base64", "ftp://x/a.png", "file:///a.png"]
        {
            let e = refusal(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]}));
            assert_eq!(e.param, Some("messages"), "{url}");
        }
        let e = refusal(json!({"messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}, user("hi")]}));
        assert_eq!(e.param, Some("messages"));
    }

    /// OpenAI's function-calling example, with two parallel calls answered.
    #[test]
    fn tool_round_trip() {
        let out = translate(json!({
            "model": "claude",
            "messages": [
                user("What's the weather in Paris and Tokyo?"),
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Tokyo\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C, sunny"}]},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                       "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
                      {"type": "function", "function": {"name": "now"}}],
        }));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris and Tokyo?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Tokyo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "25C, sunny"}]},
                ]},
            ])
        );
        assert_eq!(
            out["tools"],
            json!([
                {"name": "get_weather", "description": "Weather for a city",
                 "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert!(out.get("tool_choice").is_none());
    }

    #[test]
    fn assistant_text_comes_before_its_tool_calls_and_results_before_user_text() {
        let out = translate(json!({"messages": [
            user("weather?"),
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "w", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "t1", "content": ""},
            user("and be brief"),
        ], "tools": [{"type": "function", "function": {"name": "w"}}]}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "t1", "name": "w", "input": {}}])
        );
        assert_eq!(
            out["messages"][2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "t1"}, {"type": "text", "text": "and be brief"}])
        );
    }

    #[test]
    fn unparseable_tool_arguments_are_refused() {
        for args in ["{\"a\":", "[1,2]", "7"] {
            let e = refusal(json!({"messages": [user("x"), {"role": "assistant", "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": args}}]}]}));
            assert_eq!(e.param, Some("messages"), "{args}");
            assert!(e.message.contains("messages[1].tool_calls[0]"), "{}", e.message);
        }
    }

    #[test]
    fn tool_choice_variants() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather"}}]);
        let choice = |tool_choice: Value, parallel: Value| {
            translate(json!({"messages": [user("x")], "tools": tools, "tool_choice": tool_choice,
                             "parallel_tool_calls": parallel}))["tool_choice"]
                .clone()
        };
        assert_eq!(choice(json!("auto"), Value::Null), json!({"type": "auto"}));
        assert_eq!(choice(json!("required"), Value::Null), json!({"type": "any"}));
        assert_eq!(choice(json!("none"), Value::Null), json!({"type": "none"}));
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "get_weather"}}), Value::Null),
            json!({"type": "tool", "name": "get_weather"})
        );
        assert_eq!(choice(Value::Null, json!(false)), json!({"type": "auto", "disable_parallel_tool_use": true}));
        assert_eq!(choice(json!("required"), json!(false)), json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(choice(json!("none"), json!(false)), json!({"type": "none"}));
        assert_eq!(choice(Value::Null, json!(true)), Value::Null);
        // Without tools there is no tool_choice to send.
        let out = translate(json!({"messages": [user("x")], "tool_choice": "auto", "parallel_tool_calls": false}));
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
        for bad in [json!("sometimes"), json!({"type": "function"}), json!(3)] {
            let e = refusal(json!({"messages": [user("x")], "tools": tools, "tool_choice": bad}));
            assert_eq!(e.param, Some("tool_choice"));
        }
        let e = refusal(json!({"messages": [user("x")], "tools": [{"type": "custom", "custom": {"name": "x"}}]}));
        assert_eq!(e.param, Some("tools"));
    }

    #[test]
    fn max_tokens_default_and_preference() {
        let max = |extra: Value| {
            let mut req = json!({"messages": [user("x")]});
            req.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            translate(req)["max_tokens"].clone()
        };
        assert_eq!(max(json!({})), json!(DEFAULT_MAX_TOKENS));
        assert_eq!(max(json!({"max_tokens": null})), json!(DEFAULT_MAX_TOKENS));
        assert_eq!(max(json!({"max_tokens": 300})), json!(300));
        assert_eq!(max(json!({"max_completion_tokens": 200})), json!(200));
        assert_eq!(max(json!({"max_tokens": 300, "max_completion_tokens": 200})), json!(200));
        let e = refusal(json!({"messages": [user("x")], "max_tokens": 0}));
        assert_eq!(e.param, Some("max_tokens"));
        let e = refusal(json!({"messages": [user("x")], "max_completion_tokens": "lots"}));
        assert_eq!(e.param, Some("max_completion_tokens"));
    }

    #[test]
    fn sampling_stop_stream_and_user() {
        let out = translate(json!({"messages": [user("x")], "temperature": 1.7, "top_p": 0.9, "stop": "END",
            "stream": true, "stream_options": {"include_usage": true}, "user": "user-123",
            "frequency_penalty": 0.5, "presence_penalty": 0.1, "seed": 7, "logprobs": false,
            "response_format": {"type": "text"}, "n": 1}));
        assert_eq!(
            out,
            json!({"model": "claude-sonnet-4-5", "max_tokens": DEFAULT_MAX_TOKENS,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                   "temperature": 1.0, "top_p": 0.9, "stop_sequences": ["END"], "stream": true,
                   "metadata": {"user_id": "user-123"}})
        );
        assert_eq!(translate(json!({"messages": [user("x")], "temperature": 0.3}))["temperature"], json!(0.3));
        assert_eq!(
            translate(json!({"messages": [user("x")], "stop": ["a", "b"]}))["stop_sequences"],
            json!(["a", "b"])
        );
        assert_eq!(refusal(json!({"messages": [user("x")], "stop": [1]})).param, Some("stop"));
        assert_eq!(refusal(json!({"messages": [user("x")], "temperature": "hot"})).param, Some("temperature"));
    }

    #[test]
    fn stream_flags() {
        let flags = |req: Value| {
            let t = request_to_messages(req.to_string().as_bytes(), "m").unwrap();
            (t.stream, t.include_usage)
        };
        let m = json!([user("x")]);
        assert_eq!(flags(json!({"messages": m})), (false, false));
        assert_eq!(flags(json!({"messages": m, "stream": true})), (true, false));
        assert_eq!(
            flags(json!({"messages": m, "stream": true, "stream_options": {"include_usage": true}})),
            (true, true)
        );
        assert_eq!(
            flags(json!({"messages": m, "stream": false, "stream_options": {"include_usage": true}})),
            (false, false)
        );
        let out = translate(json!({"messages": m, "stream": false}));
        assert!(out.get("stream").is_none() && out.get("stream_options").is_none());
    }

    #[test]
    fn bad_requests_are_refused_with_the_param() {
        let bad = |body: &[u8]| request_to_messages(body, "m").unwrap_err();
        assert_eq!(bad(b"[1]").param, None);
        assert_eq!(bad(b"{\"messages\":").param, None);
        assert_eq!(bad(b"{}").param, Some("messages"));
        assert_eq!(refusal(json!({"messages": []})).param, Some("messages"));
        assert_eq!(refusal(json!({"messages": "hi"})).param, Some("messages"));
        assert_eq!(refusal(json!({"messages": [user("x")], "n": 2})).param, Some("n"));
        let e = refusal(json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert_eq!(e.param, Some("messages"));
        assert!(e.message.contains("function"), "{}", e.message);
        let e = refusal(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]}]}));
        assert_eq!(e.param, Some("messages"));
        assert!(e.message.contains("input_audio"), "{}", e.message);
        // Only a system message: nothing for Anthropic to answer.
        assert_eq!(refusal(json!({"messages": [{"role": "system", "content": "x"}]})).param, Some("messages"));
        assert_eq!(refusal(json!({"messages": [{"content": "x"}]})).param, Some("messages"));
        assert_eq!(
            refusal(json!({"messages": [{"role": "tool", "content": "x"}]})).param,
            Some("messages"),
            "a tool result needs its tool_call_id"
        );
    }

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
        assert_eq!(usage, Some(Usage { input: 12, cached_input: 0, output: 6 }));
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
        assert_eq!(usage, Some(Usage { input: 130, cached_input: 2000, output: 45 }));
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
            (429, "rate_limit_error", 429, "rate_limit_exceeded"),
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

    // --- streams (the cut-anywhere cases are in tests/unit_anthropic.rs)

    fn events(out: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(out).unwrap();
        text.split_terminator("\n\n").map(|e| e.strip_prefix("data: ").unwrap().to_owned()).collect()
    }

    #[test]
    fn stream_error_event_ends_the_stream() {
        let mut t = StreamTranslator::new("claude", false, 1);
        let out = t.push(
            concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            )
            .as_bytes(),
            false,
        );
        let ev = events(&out);
        assert_eq!(ev.len(), 3, "{ev:?}");
        let err: Value = serde_json::from_str(&ev[1]).unwrap();
        assert_eq!(
            err,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
        );
        assert_eq!(ev[2], "[DONE]");
        assert!(t.push(b"data: {\"type\":\"message_stop\"}\n\n", true).is_empty(), "nothing after [DONE]");
    }

    #[test]
    fn pings_unknown_events_and_thinking_pass_silently() {
        let mut t = StreamTranslator::new("claude", false, 1);
        let out = t.push(
            concat!(
                "event: ping\ndata: {\"type\": \"ping\"}\n\n",
                ": a comment\n\n",
                "event: whatever\ndata: {\"type\":\"whatever_new\",\"x\":1}\n\n",
                "data: not json\n\n",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n",
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            )
            .as_bytes(),
            false,
        );
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(t.content_chars(), 0);
        assert_eq!(t.usage(), None);
    }

    #[test]
    fn a_stream_of_nothing_still_ends_with_done() {
        let mut t = StreamTranslator::new("claude", true, 1);
        assert_eq!(t.push(b"", true), DONE);
        assert_eq!(t.push(b"", true), b"", "once");
    }

    #[test]
    fn an_unreadable_stream_is_not_held_forever() {
        let mut t = StreamTranslator::new("claude", false, 1);
        let out = t.push(&vec![b'x'; MAX_HELD + 1], false);
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert!(ev[0].contains("could not be read"));
        assert_eq!(ev[1], "[DONE]");
        assert!(t.push(b"more", true).is_empty());
    }
}
