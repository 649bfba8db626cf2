//! The request path, as decisions: given what the filter read from Envoy,
//! what should happen. Two steps, matching the two moments the filter has:
//! the headers ([`on_head`]) and the complete body ([`on_body`]).
//!
//! Nothing here calls the host; `filter` applies the decisions.

use crate::access;
use crate::auth;
use crate::config::Gateway;
use crate::errors::ApiError;
use crate::json_scan::{self, Kind, ScanError, TopKey};
use crate::providers::CLIENT_CREDENTIAL_HEADERS;
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
    pub content_length: Option<&'a str>,
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
    /// Read the whole body, then call [`on_body`].
    ReadBody(Pending),
}

/// A request waiting for its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub team: usize,
    pub endpoint: Endpoint,
    /// The client's query string, kept for the upstream path.
    pub query: String,
}

pub fn on_head(gw: &Gateway, head: &Head<'_>) -> HeadDecision {
    let route = request::classify(head.path);
    let deny = |team, error| HeadDecision::Deny { team, error };
    match route {
        Route::NotOurs => HeadDecision::PassThrough,
        Route::ListModels | Route::RetrieveModel(_) => {
            if head.method != "GET" {
                return deny(None, ApiError::method_not_allowed(head.method, head.path, "GET"));
            }
            let team = match auth::authenticate(gw, head.authorization) {
                Ok(t) => t,
                Err(e) => return deny(None, e),
            };
            let body = match route {
                Route::RetrieveModel(model) => match access::model_body(gw, team, model) {
                    Ok(b) => b,
                    Err(e) => return deny(Some(team), e),
                },
                _ => gw.teams.get(team).map(|t| t.models_body.clone()).unwrap_or_default(),
            };
            HeadDecision::Answer { team, body }
        }
        Route::Inference(endpoint) => {
            if head.method != "POST" {
                return deny(None, ApiError::method_not_allowed(head.method, head.path, "POST"));
            }
            let team = match auth::authenticate(gw, head.authorization) {
                Ok(t) => t,
                Err(e) => return deny(None, e),
            };
            if let Some(len) = head.content_length {
                match len.trim().parse::<u64>() {
                    Ok(n) if n > gw.max_body_bytes as u64 => {
                        return deny(Some(team), ApiError::too_large(n, gw.max_body_bytes));
                    }
                    Ok(_) => {}
                    Err(_) => return deny(Some(team), ApiError::bad_request("The Content-Length header is not a number.")),
                }
            }
            HeadDecision::ReadBody(Pending { team, endpoint, query: request::query(head.path).to_string() })
        }
    }
}

/// How the filter must change a request before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub model: usize,
    pub deployment: usize,
    /// Header changes in order; `None` removes the header.
    pub headers: Vec<(&'static str, Option<String>)>,
    /// Replace the body's first `replace` bytes with `prefix`.
    pub body_edit: Option<BodyEdit>,
    /// The most this request can cost, in tokens, for the budget reservation.
    pub estimate: Estimate,
}

/// A request's worst case, before the provider answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Prompt tokens, estimated from the body: one token per 4 bytes, rounded up.
    pub input_tokens: u64,
    /// `max_completion_tokens` or `max_tokens` (times `n`), else
    /// [`DEFAULT_MAX_OUTPUT_TOKENS`]; 0 for embeddings.
    pub output_tokens: u64,
}

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
        Endpoint::ChatCompletions | Endpoint::Completions => {
            let per_choice = number(TopKey::MaxCompletionTokens)
                .or_else(|| number(TopKey::MaxTokens))
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
            let choices = number(TopKey::N).filter(|n| (1..=MAX_CHOICES).contains(n)).unwrap_or(1);
            per_choice.saturating_mul(choices)
        }
    };
    Estimate { input_tokens, output_tokens }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyEdit {
    pub replace: usize,
    pub prefix: Vec<u8>,
}

/// Decides where a complete request body goes. `n` counts the requests this
/// worker has routed, for taking deployments in turn.
pub fn on_body(gw: &Gateway, pending: &Pending, body: &[u8], n: u64) -> Result<Forward, ApiError> {
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

    let model = access::check(gw, pending.team, &name)?;
    let (deployment, dep) = gw
        .models
        .get(model)
        .and_then(|m| routing::pick(m, n))
        .and_then(|d| gw.deployments.get(d).map(|dep| (d, dep)))
        .ok_or_else(|| ApiError::model_not_found(format!("The model \"{name}\" has no deployment.")))?;
    let path = dep.path(pending.endpoint).ok_or_else(|| {
        ApiError::bad_param(
            "model",
            format!(
                "The model \"{name}\" is served by {}, which has no {} endpoint.",
                dep.provider.name(),
                pending.endpoint.suffix()
            ),
        )
    })?;

    let body_edit = (name != dep.upstream_model).then(|| {
        let mut prefix = Vec::with_capacity(span.start.saturating_add(dep.upstream_model_json.len()));
        prefix.extend_from_slice(body.get(..span.start).unwrap_or_default());
        prefix.extend_from_slice(dep.upstream_model_json.as_bytes());
        BodyEdit { replace: span.end, prefix }
    });
    let body_len = match &body_edit {
        Some(edit) => body.len().saturating_sub(edit.replace).saturating_add(edit.prefix.len()),
        None => body.len(),
    };

    let mut headers: Vec<(&'static str, Option<String>)> = vec![
        (":path", Some(format!("{path}{}", pending.query))),
        (":authority", Some(dep.authority.clone())),
        (CLUSTER_HEADER, Some(dep.cluster.clone())),
        ("content-length", Some(body_len.to_string())),
    ];
    for name in CLIENT_CREDENTIAL_HEADERS {
        match dep.auth_headers.iter().find(|(h, _)| h == name) {
            Some((_, value)) => headers.push((name, Some(value.clone()))),
            None => headers.push((name, None)),
        }
    }
    let estimate = estimate(body, &top, pending.endpoint);
    Ok(Forward { model, deployment, headers, body_edit, estimate })
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
