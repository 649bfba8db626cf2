//! Requests: OpenAI chat completions -> Anthropic Messages.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{TranslateError, Translated, DEFAULT_MAX_TOKENS};

/// Anthropic's temperature goes up to 1; OpenAI's up to 2.
const MAX_TEMPERATURE: f64 = 1.0;

type Object = Map<String, Value>;

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
    let temperature = optional_number(&req, "temperature")?.map(|t| t.min(MAX_TEMPERATURE));
    // Newer Claude models refuse both at once; temperature is the one
    // OpenAI clients set most.
    let top_p = optional_number(&req, "top_p")?.filter(|_| temperature.is_none());
    let out = MessagesRequest {
        model: upstream_model,
        max_tokens: max_tokens(&req)?,
        system,
        messages,
        temperature,
        top_p,
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
/// Anthropic refuses stop sequences that are empty or only white space
/// (OpenAI clients often send "\n"); those are dropped.
fn stop_sequences(stop: Option<Value>) -> Result<Vec<String>, TranslateError> {
    let refuse = || TranslateError::param("stop", "stop must be a string or an array of strings.");
    let all: Vec<String> = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(refuse()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(refuse()),
    };
    Ok(all.into_iter().filter(|s| !s.trim().is_empty()).collect())
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
                   "temperature": 1.0, "stop_sequences": ["END"], "stream": true,
                   "metadata": {"user_id": "user-123"}})
        );
        assert_eq!(translate(json!({"messages": [user("x")], "temperature": 0.3}))["temperature"], json!(0.3));
        // top_p goes only without temperature.
        assert_eq!(translate(json!({"messages": [user("x")], "top_p": 0.5}))["top_p"], json!(0.5));
        assert_eq!(
            translate(json!({"messages": [user("x")], "stop": ["a", "b"]}))["stop_sequences"],
            json!(["a", "b"])
        );
        assert_eq!(refusal(json!({"messages": [user("x")], "stop": [1]})).param, Some("stop"));
        assert_eq!(translate(json!({"messages": [user("x")], "stop": ["\n", "", "END"]}))["stop_sequences"], json!(["END"]));
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
}
