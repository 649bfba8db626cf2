//! The request path, as decisions: given what the filter read from Envoy,
//! what should happen. Two steps, matching the two moments the filter has:
//! the headers ([`on_head`]) and the complete body ([`on_body`]).
//!
//! Nothing here calls the host; `filter` applies the decisions.

use std::borrow::Cow;

use crate::access;
use crate::anthropic;
use crate::auth;
use crate::config::{Gateway, Model};
use crate::errors::ApiError;
use crate::header_list::HeaderList;
use crate::json_scan::{self, Kind, ScanError, TopKey};
use crate::providers::{Api, CLIENT_ACCOUNT_HEADERS, CLIENT_CREDENTIAL_HEADERS};
use crate::request::{self, Endpoint, Route};
use crate::routing;

/// The request header that selects the upstream cluster. The filter always
/// overwrites or removes it, whatever the client sent.
pub const CLUSTER_HEADER: &str = "x-tollgate-cluster";

/// What the filter read from the request headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// `x-api-key`: Anthropic's SDKs may send the key there.
    pub api_key: Option<&'a str>,
    pub content_length: Option<&'a str>,
    /// Whether the client sent `anthropic-version`.
    pub anthropic_version: bool,
    /// The host's clock, ms since the epoch (for JWT expiry).
    pub now_ms: u64,
    /// JWT keys fetched from `auth.jwt.jwks_uri`.
    pub jwt_keys: &'a [crate::jwt::Key],
}

#[derive(Debug, PartialEq)]
pub enum HeadDecision {
    /// Not a gateway path: leave the request to Envoy's own routes (after
    /// removing any client-sent cluster header).
    PassThrough,
    /// Answer now with this JSON body and status 200.
    Answer { team: usize, body: String },
    /// Refuse now.
    Deny { team: Option<usize>, error: ApiError },
    /// Answer `GET /v1/key/info` for this team (the filter reads its
    /// ledger and window first).
    KeyInfo { team: usize, key: Option<usize> },
    /// Read the whole body, then call [`on_body`].
    ReadBody(Pending),
}

/// A request waiting for its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub team: usize,
    pub endpoint: Endpoint,
    /// Whether the client sent `anthropic-version` (kept on `/v1/messages`).
    pub anthropic_version: bool,
    /// The key's own rules (`Gateway::key_rules`), if it has any.
    pub key: Option<usize>,
    /// The JWT's user (`auth.jwt.user_claim`).
    pub user: Option<String>,
}

pub fn on_head(gw: &Gateway, head: &Head<'_>) -> HeadDecision {
    let route = request::classify(head.path);
    let deny = |team, error| HeadDecision::Deny { team, error };
    match route {
        Route::NotOurs => HeadDecision::PassThrough,
        Route::KeyInfo => {
            if head.method != "GET" {
                return deny(None, ApiError::method_not_allowed(head.method, head.path, "GET"));
            }
            match auth::identify(gw, head.authorization, head.now_ms, head.jwt_keys) {
                Ok(caller) => HeadDecision::KeyInfo { team: caller.team, key: caller.key },
                Err(e) => deny(None, e),
            }
        }
        Route::ListModels | Route::RetrieveModel(_) => {
            if head.method != "GET" {
                return deny(None, ApiError::method_not_allowed(head.method, head.path, "GET"));
            }
            let team = match auth::identify(gw, head.authorization, head.now_ms, head.jwt_keys).map(|c| c.team) {
                Ok(t) => t,
                Err(e) => return deny(None, e),
            };
            let body = match route {
                Route::RetrieveModel(model) if model.len() > MAX_MODEL_NAME_BYTES => {
                    return deny(Some(team), ApiError::model_not_found("The model does not exist."));
                }
                Route::RetrieveModel(model) => match access::model_body(gw, team, model) {
                    Ok(b) => b,
                    Err(e) => return deny(Some(team), e),
                },
                _ => gw.teams.get(team).map(|t| t.models_body.clone()).unwrap_or_default(),
            };
            HeadDecision::Answer { team, body }
        }
        Route::Inference(endpoint) => {
            // Anthropic's SDKs get errors in Anthropic's shape.
            let deny = |team, error: ApiError| HeadDecision::Deny { team, error: error.for_endpoint(endpoint) };
            if head.method != "POST" {
                return deny(None, ApiError::method_not_allowed(head.method, head.path, "POST"));
            }
            let authenticated = match (endpoint, head.authorization, head.api_key) {
                (Endpoint::Messages, None, Some(key)) => auth::identify_key(gw, key, head.now_ms),
                _ => auth::identify(gw, head.authorization, head.now_ms, head.jwt_keys),
            };
            let caller = match authenticated {
                Ok(c) => c,
                Err(e) => return deny(None, e),
            };
            let team = caller.team;
            let (key, user) = (caller.key, caller.user);
            if let Some(len) = head.content_length {
                let len = len.trim();
                let digits = !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit());
                match len.parse::<u64>().ok().filter(|_| digits).ok_or(()) {
                    Ok(n) if n > gw.max_body_bytes as u64 => {
                        return deny(Some(team), ApiError::too_large(n, gw.max_body_bytes));
                    }
                    Ok(_) => {}
                    Err(_) => return deny(Some(team), ApiError::bad_request("The Content-Length header is not a number.")),
                }
            }
            HeadDecision::ReadBody(Pending { team, endpoint, anthropic_version: head.anthropic_version, key, user })
        }
    }
}

/// How the filter must change a request before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'g> {
    pub model: usize,
    pub deployment: usize,
    /// Header changes in order; `None` removes the header.
    /// Values borrow from the config where they can (no copy per request).
    pub headers: Vec<(&'static str, Option<Cow<'g, str>>)>,
    /// Replace the body's first `replace` bytes with `prefix`.
    pub body_edit: Option<BodyEdit>,
    /// The most this request can cost, in tokens, for the budget reservation.
    pub estimate: Estimate,
    /// Set for a streaming request (`"stream": true`).
    pub stream: Option<StreamPlan>,
    /// The API the response comes back in.
    pub wire: Wire,
}

/// What the provider answers in, and so how the response is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's API (OpenAI, Azure, and compatible servers): passed through.
    OpenAI,
    /// Anthropic Messages, translated back into OpenAI's API for the client.
    AnthropicTranslated,
    /// Anthropic Messages, passed through to an Anthropic client.
    Anthropic,
}

/// A streaming request. The gateway always asks the provider for usage
/// (`stream_options.include_usage`); whether the client asked decides whether
/// it sees the usage chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    pub client_asked_usage: bool,
}

/// Replace `body[start..end]` with `with` (`start == end` inserts).
#[derive(Debug)]
struct Edit<'g> {
    start: usize,
    end: usize,
    with: Cow<'g, [u8]>,
}

/// A request body's edits: the model's name, and `stream_options`. Held
/// in place rather than in a vector (one allocation less a request).
type Edits<'g> = [Option<Edit<'g>>; 2];

/// Turns edits into one prefix replacement, the only body change Envoy's
/// wasm host supports short of replacing everything: the body up to the last
/// edit is rebuilt, the rest is left where it is.
fn splice(body: &[u8], edits: Edits<'_>) -> Option<BodyEdit> {
    // In body order (the two never overlap: different members).
    let [first, second] = match edits {
        [Some(a), Some(b)] if b.start < a.start => [Some(b), Some(a)],
        [None, b] => [b, None],
        both => both,
    };
    let last = second.as_ref().or(first.as_ref())?.end;
    let mut prefix = Vec::with_capacity(last.saturating_add(64));
    let mut pos = 0;
    for edit in [first, second].into_iter().flatten() {
        prefix.extend_from_slice(body.get(pos..edit.start).unwrap_or_default());
        prefix.extend_from_slice(&edit.with);
        pos = edit.end;
    }
    Some(BodyEdit { replace: pos, prefix })
}

/// For `"stream": true`, makes sure the provider sends usage, and records
/// whether the client asked for it.
fn is_streaming(body: &[u8], top: &json_scan::TopLevel) -> bool {
    top.get(TopKey::Stream)
        .is_some_and(|s| s.kind == Kind::Bool && body.get(s.start..s.end) == Some(b"true".as_slice()))
}

fn stream_plan(
    body: &[u8],
    top: &json_scan::TopLevel,
    endpoint: Endpoint,
    edit: &mut Option<Edit<'_>>,
) -> Result<Option<StreamPlan>, ApiError> {
    if !is_streaming(body, top) || endpoint == Endpoint::Embeddings {
        return Ok(None);
    }
    const INCLUDE_USAGE: &[u8] = br#"{"include_usage":true}"#;
    let client_asked_usage = match top.get(TopKey::StreamOptions) {
        None => {
            // Insert right after the body's opening brace.
            const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
            let at = body.iter().position(|b| *b == b'{').map_or(1, |i| i.saturating_add(1));
            *edit = Some(Edit { start: at, end: at, with: Cow::Borrowed(MEMBER) });
            false
        }
        Some(span) if span.kind == Kind::Null => {
            *edit = Some(Edit { start: span.start, end: span.end, with: Cow::Borrowed(INCLUDE_USAGE) });
            false
        }
        Some(span) if span.kind == Kind::Object => {
            let raw = body.get(span.start..span.end).unwrap_or_default();
            let mut options: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw)
                .map_err(|e| ApiError::bad_param("stream_options", format!("stream_options is not valid: {e}.")))?;
            let asked = options.get("include_usage") == Some(&serde_json::Value::Bool(true));
            if !asked {
                options.insert("include_usage".to_string(), serde_json::Value::Bool(true));
                let with = serde_json::to_vec(&options).unwrap_or_else(|_| INCLUDE_USAGE.to_vec());
                *edit = Some(Edit { start: span.start, end: span.end, with: Cow::Owned(with) });
            }
            asked
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "stream_options must be an object, such as {\"include_usage\": true}.",
            ))
        }
    };
    Ok(Some(StreamPlan { client_asked_usage }))
}

/// A request's worst case, before the provider answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Prompt tokens, estimated from the body: one token per 4 bytes, rounded up.
    pub input_tokens: u64,
    /// `max_completion_tokens` or `max_tokens` (times `n`), else
    /// [`DEFAULT_MAX_OUTPUT_TOKENS`]; 0 for embeddings.
    pub output_tokens: u64,
    /// The prompt asks Anthropic to cache part of it (`cache_control`, on
    /// `/v1/messages`): it may be billed at the cache-write price.
    pub caching: bool,
}

/// What Envoy's router retries on, with `num_retries`: no connection, a
/// reset, a 5xx, or (through the retriable status codes) a 429.
const RETRY_ON: &str = "connect-failure,refused-stream,reset,5xx,retriable-status-codes";

/// The longest model name looked up (and echoed in errors).
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Output tokens reserved for a request that sets no `max_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
/// The largest `n` (choices per request) taken at its word.
const MAX_CHOICES: u64 = 128;

fn estimate(body: &[u8], top: &json_scan::TopLevel, endpoint: Endpoint) -> Estimate {
    let number = |key: TopKey| -> Option<u64> {
        let span = top.get(key).filter(|s| s.kind == Kind::Number)?;
        std::str::from_utf8(body.get(span.start..span.end)?).ok()?.parse::<u64>().ok()
    };
    let input_tokens = (body.len() as u64).div_ceil(4);
    let output_tokens = match endpoint {
        Endpoint::Embeddings => 0,
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages => {
            let per_choice = number(TopKey::MaxCompletionTokens)
                .or_else(|| number(TopKey::MaxTokens))
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
            let choices = number(TopKey::N).filter(|n| (1..=MAX_CHOICES).contains(n)).unwrap_or(1);
            per_choice.saturating_mul(choices)
        }
    };
    let caching = endpoint == Endpoint::Messages && contains(body, b"cache_control");
    Estimate { input_tokens, output_tokens, caching }
}

/// Whether `needle` occurs in `haystack` (found by its rarest byte, `_`).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(anchor) = needle.iter().position(|&b| b == b'_') else {
        return haystack.windows(needle.len()).any(|w| w == needle);
    };
    haystack
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'_')
        .any(|(i, _)| i.checked_sub(anchor).and_then(|start| haystack.get(start..start.saturating_add(needle.len()))) == Some(needle))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyEdit {
    pub replace: usize,
    pub prefix: Vec<u8>,
}

/// Picks one of a model's deployments (by position among them), given the
/// model's index; the filter's reads the model's shared routing record.
pub type Chooser<'c> = dyn FnMut(usize, &Model) -> Option<usize> + 'c;

/// Decides where a complete request body goes, with the deployment picked
/// by `choose`.
pub fn on_body_with<'g>(gw: &'g Gateway, pending: &Pending, body: &[u8], choose: &mut Chooser<'_>) -> Result<Forward<'g>, ApiError> {
    decide(gw, pending, body, None, choose).map_err(|e| e.for_endpoint(pending.endpoint))
}

/// The same request sent to another model (a fallback): the body's model
/// is replaced by a deployment of `model`, which the team must be allowed.
pub fn on_body_for<'g>(
    gw: &'g Gateway,
    pending: &Pending,
    body: &[u8],
    model: &str,
    choose: &mut Chooser<'_>,
) -> Result<Forward<'g>, ApiError> {
    decide(gw, pending, body, Some(model), choose).map_err(|e| e.for_endpoint(pending.endpoint))
}

/// [`on_body_with`] without shared routing state: the `n`-th request's
/// draw is `n` thousandths into the weights, so with equal weights (1 each)
/// requests take the deployments in turn.
pub fn on_body<'g>(gw: &'g Gateway, pending: &Pending, body: &[u8], n: u64) -> Result<Forward<'g>, ApiError> {
    let state = routing::ModelState::default();
    on_body_with(gw, pending, body, &mut |_, m: &Model| {
        routing::pick(gw.strategy, &m.candidates, &state, 0, n.wrapping_mul(1000), n)
    })
}

fn decide<'g>(
    gw: &'g Gateway,
    pending: &Pending,
    body: &[u8],
    instead: Option<&str>,
    choose: &mut Chooser<'_>,
) -> Result<Forward<'g>, ApiError> {
    let top = json_scan::scan(body).map_err(scan_error)?;
    let span = top
        .get(TopKey::Model)
        .ok_or_else(|| ApiError::bad_param("model", "You must provide a model parameter: add \"model\": \"<name>\" to the JSON body."))?;
    if span.kind != Kind::String {
        return Err(ApiError::bad_param(
            "model",
            format!("The model parameter must be a string, got {}.", kind_name(span.kind)),
        ));
    }
    let token = body.get(span.start..span.end).unwrap_or_default();
    let name = json_scan::decode_string(token)
        .ok_or_else(|| ApiError::bad_param("model", "The model parameter is not a valid JSON string."))?;
    if name.len() > MAX_MODEL_NAME_BYTES {
        return Err(ApiError::bad_param(
            "model",
            format!("The model name is {} bytes long; model names are at most {MAX_MODEL_NAME_BYTES}.", name.len()),
        ));
    }

    // The model as the body names it, and the model to serve.
    let in_body = name;
    let name: &str = instead.unwrap_or(&in_body);
    let model = access::check(gw, pending.team, name)?;
    if let Some(rule) = pending.key.and_then(|k| gw.key_rules.get(k)) {
        let allowed = rule.allowed.as_ref().map_or(true, |a| a.get(model).copied().unwrap_or(false));
        if !allowed {
            return Err(ApiError::model_not_allowed(format!(
                "The key \"{}\" may not use the model \"{name}\"; ask for a key that may, or use one of its models.",
                rule.alias
            )));
        }
    }
    let (deployment, dep) = gw
        .models
        .get(model)
        .and_then(|m| choose(model, m).and_then(|i| m.deployments.get(i).copied()))
        .and_then(|d| gw.deployments.get(d).map(|dep| (d, dep)))
        .ok_or_else(|| ApiError::model_not_found(format!("The model \"{name}\" has no deployment.")))?;
    let path = dep.path(pending.endpoint).ok_or_else(|| {
        ApiError::bad_param(
            "model",
            format!(
                "The model \"{name}\" is served by {}, which has no /v1{} endpoint.",
                dep.provider.name(),
                pending.endpoint.suffix()
            ),
        )
    })?;

    let wire = match (dep.provider.api(), pending.endpoint) {
        (Api::Anthropic, Endpoint::Messages) => Wire::Anthropic,
        (Api::Anthropic, _) => Wire::AnthropicTranslated,
        _ => Wire::OpenAI,
    };
    let (body_edit, stream) = match wire {
        Wire::AnthropicTranslated => {
            let translated = anthropic::request_to_messages(body, &dep.upstream_model).map_err(|e| match e.param {
                Some(param) => ApiError::bad_param(param, e.message),
                None => ApiError::bad_request(e.message),
            })?;
            let stream = translated.stream.then_some(StreamPlan { client_asked_usage: translated.include_usage });
            (Some(BodyEdit { replace: body.len(), prefix: translated.body }), stream)
        }
        Wire::OpenAI | Wire::Anthropic => {
            let mut edits: Edits<'g> = [None, None];
            let [model_edit, stream_edit] = &mut edits;
            if in_body != dep.upstream_model {
                *model_edit = Some(Edit { start: span.start, end: span.end, with: Cow::Borrowed(dep.upstream_model_json.as_bytes()) });
            }
            let stream = if wire == Wire::Anthropic {
                // Anthropic streams always carry usage.
                is_streaming(body, &top).then_some(StreamPlan { client_asked_usage: true })
            } else {
                stream_plan(body, &top, pending.endpoint, stream_edit)?
            };
            (splice(body, edits), stream)
        }
    };
    let body_len = match &body_edit {
        Some(edit) => body.len().saturating_sub(edit.replace).saturating_add(edit.prefix.len()),
        None => body.len(),
    };

    // Room for every header below (one allocation).
    let mut headers: Vec<(&'static str, Option<Cow<'g, str>>)> =
        Vec::with_capacity(10 + CLIENT_CREDENTIAL_HEADERS.len() + CLIENT_ACCOUNT_HEADERS.len());
    headers.extend([
        // The gateway owns the upstream URL: the client's query string is dropped.
        (":path", Some(Cow::Borrowed(path))),
        (":authority", Some(Cow::Borrowed(dep.authority.as_str()))),
        (CLUSTER_HEADER, Some(Cow::Borrowed(dep.cluster.as_str()))),
        ("content-length", Some(Cow::Owned(body_len.to_string()))),
    ]);
    for name in CLIENT_CREDENTIAL_HEADERS {
        match dep.auth_headers.iter().find(|(h, _)| *h == name) {
            Some((_, value)) => headers.push((name, Some(Cow::Borrowed(value.as_str())))),
            None => headers.push((name, None)),
        }
    }
    for name in CLIENT_ACCOUNT_HEADERS {
        headers.push((name, None));
    }
    // Usage is read from the answer, so it must come uncompressed.
    headers.push(("accept-encoding", Some(Cow::Borrowed("identity"))));
    // Envoy's router reads these: the deployment's timeout, and retries on
    // the same deployment. The gateway sets them or removes the client's.
    // Envoy's timeout covers the whole response, so a stream still flowing
    // would be cut: it applies to answers that come whole.
    headers.push(("x-envoy-upstream-rq-timeout-ms", dep.timeout_ms.filter(|_| stream.is_none()).map(|ms| Cow::Owned(ms.to_string()))));
    let retries = (gw.num_retries > 0).then(|| Cow::Owned(gw.num_retries.to_string()));
    let retrying = retries.is_some();
    headers.push(("x-envoy-max-retries", retries));
    headers.push(("x-envoy-retry-on", retrying.then_some(Cow::Borrowed(RETRY_ON))));
    headers.push(("x-envoy-retriable-status-codes", retrying.then_some(Cow::Borrowed("429"))));
    match wire {
        Wire::AnthropicTranslated => headers.push(("anthropic-version", Some(Cow::Borrowed(anthropic::API_VERSION)))),
        // An Anthropic client's own version is kept: it chose the API it reads.
        Wire::Anthropic if !pending.anthropic_version => {
            headers.push(("anthropic-version", Some(Cow::Borrowed(anthropic::API_VERSION))));
        }
        Wire::Anthropic | Wire::OpenAI => {}
    }
    let estimate = estimate(body, &top, pending.endpoint);
    Ok(Forward { model, deployment, headers, body_edit, estimate, stream, wire })
}

/// The header edits that turn the client's request headers into the
/// forward's: a value is set only where it differs from the client's, a
/// header removed only where the client sent it, and every other client
/// `x-envoy-*` header removed (those steer Envoy's router: only the gateway
/// sets them). Each edit is one call into Envoy, so the fewer the better.
pub fn header_edits<'a>(client: &'a HeaderList, changes: &'a [(&'static str, Option<Cow<'_, str>>)]) -> Vec<(&'a str, HeaderEdit<'a>)> {
    let mut edits = Vec::with_capacity(changes.len());
    each_header_edit(client, changes, |name, edit| {
        edits.push((name, edit));
        true
    });
    edits
}

/// [`header_edits`], each handed to `apply` in the same order as it is
/// found (no list is built); stops at the first edit `apply` refuses, and
/// says whether all were taken.
pub fn each_header_edit<'a>(
    client: &'a HeaderList,
    changes: &'a [(&'static str, Option<Cow<'_, str>>)],
    mut apply: impl FnMut(&'a str, HeaderEdit<'a>) -> bool,
) -> bool {
    // One pass over the client's headers. For each change: whether the
    // client sent its header, whether more than once, and whether the
    // first value already equals the change's. Names are compared by
    // length and first byte before their bytes (most pairs differ there).
    let mut small = [Seen::default(); 24];
    let mut large = Vec::new();
    let seen: &mut [Seen] = match small.get_mut(..changes.len()) {
        Some(s) => s,
        None => {
            large.resize(changes.len(), Seen::default());
            &mut large
        }
    };
    let mut stray: Vec<&'a str> = Vec::new();
    for (name, value) in client.iter() {
        let first = name.first().copied();
        let hit = changes
            .iter()
            .position(|(c, _)| c.len() == name.len() && c.as_bytes().first().copied() == first && c.as_bytes() == name);
        match hit.and_then(|i| seen.get_mut(i).zip(changes.get(i))) {
            Some((s, (_, wanted))) => {
                if s.count == 0 {
                    s.first_equal = wanted.as_deref().map(str::as_bytes) == Some(value);
                }
                s.count = s.count.saturating_add(1);
            }
            None if name.starts_with(b"x-envoy-") => {
                if let Ok(name) = std::str::from_utf8(name) {
                    if !stray.contains(&name) {
                        stray.push(name);
                    }
                }
            }
            None => {}
        }
    }
    for ((name, value), s) in changes.iter().zip(seen.iter()) {
        let edit = match value {
            Some(_) if s.count == 1 && s.first_equal => continue,
            // Envoy adds a header the client did not send without first
            // looking for it to remove (and an empty value only by setting).
            Some(v) if s.count == 0 && !v.is_empty() => HeaderEdit::Add(v),
            Some(v) => HeaderEdit::Set(v),
            None if s.count > 0 => HeaderEdit::Remove,
            None => continue,
        };
        if !apply(name, edit) {
            return false;
        }
    }
    stray.into_iter().all(|name| apply(name, HeaderEdit::Remove))
}

/// One of [`header_edits`]: how a header changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEdit<'a> {
    /// The client did not send it.
    Add(&'a str),
    /// The client sent it with another value, or more than once.
    Set(&'a str),
    Remove,
}

/// What [`header_edits`] saw of one change's header among the client's.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    count: u32,
    first_equal: bool,
}

fn scan_error(e: ScanError) -> ApiError {
    match e {
        ScanError::Empty => ApiError::bad_request(
            "The request body is empty. Send a JSON object such as {\"model\": \"...\", \"messages\": [...]}.",
        ),
        ScanError::NotAnObject { found } => ApiError::bad_request(format!(
            "The request body must be a JSON object, not {}.",
            kind_name(found)
        )),
        ScanError::CaseVariantKey { key } => ApiError::bad_param(
            key,
            format!(
                "The JSON body has a key that differs from \"{key}\" only in letter case. Some providers read keys without regard to case, so the gateway refuses it: write \"{key}\" exactly, once."
            ),
        ),
        ScanError::DuplicateKey { key } => ApiError::bad_param(
            key,
            format!("The JSON body has the key \"{key}\" more than once; send it once."),
        ),
        other => ApiError::bad_request(format!("We could not parse the JSON body of your request: {other}.")),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "a string",
        Kind::Number => "a number",
        Kind::Bool => "a boolean",
        Kind::Null => "null",
        Kind::Object => "an object",
        Kind::Array => "an array",
    }
}
