//! The proxy-wasm layer: reads what Envoy hands over, asks `admission` what
//! to do, and does it. Nothing is decided here.
//!
//! Every hostcall goes through `hostcalls::*`, which return a `Result`, and
//! never through the SDK's trait helpers, which unwrap. Header values are
//! read as bytes: the SDK's string getter panics on a non-UTF-8 value, and a
//! client can send one.

use std::cell::Cell;
use std::rc::Rc;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::admission::{self, Forward, Head, HeadDecision, Pending, CLUSTER_HEADER};
use crate::config::{self, secret::ProcessEnv, Gateway};
use crate::errors::ApiError;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    gateway: Option<Rc<Gateway>>,
    /// Requests this worker has routed; takes deployments in turn.
    routed: Rc<Cell<u64>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                error!("no plugin configuration; pass the gateway config as the filter's configuration");
                return false;
            }
            Err(status) => {
                error!("reading the plugin configuration failed: {status:?}");
                return false;
            }
        };
        let Ok(text) = std::str::from_utf8(&raw) else {
            error!("the plugin configuration is not UTF-8");
            return false;
        };
        let file = match config::parse_json(text) {
            Ok(f) => f,
            Err(e) => {
                error!("invalid config: {e}");
                return false;
            }
        };
        match config::compile(&file, &ProcessEnv) {
            Ok(compiled) => {
                for w in &compiled.warnings {
                    warn!("{w}");
                }
                info!(
                    "configured {} models, {} deployments, {} teams",
                    compiled.gateway.models.len(),
                    compiled.gateway.deployments.len(),
                    compiled.gateway.teams.len()
                );
                self.gateway = Some(Rc::new(compiled.gateway));
                true
            }
            Err(errors) => {
                for e in &errors {
                    error!("invalid config: {e}");
                }
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            gateway: self.gateway.clone(),
            routed: Rc::clone(&self.routed),
            state: State::Passing,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    gateway: Option<Rc<Gateway>>,
    routed: Rc<Cell<u64>>,
    state: State,
}

enum State {
    /// Not ours, or already forwarded: let everything through.
    Passing,
    /// Reading the body before deciding.
    Reading(Pending),
    /// Answered locally: hold back whatever still arrives.
    Answered,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return self.answer_error(&internal("the gateway is not configured; see Envoy's log"));
        };
        let method = request_header(":method");
        let path = request_header(":path");
        let authorization = request_header("authorization");
        let content_length = request_header("content-length");
        let head = Head {
            method: method.as_deref().unwrap_or_default(),
            path: path.as_deref().unwrap_or_default(),
            authorization: authorization.as_deref(),
            content_length: content_length.as_deref(),
        };
        match admission::on_head(&gw, &head) {
            HeadDecision::PassThrough => {
                set_request_header(CLUSTER_HEADER, None);
                Action::Continue
            }
            HeadDecision::Answer { body, .. } => {
                self.state = State::Answered;
                send_json(200, &body);
                Action::Pause
            }
            HeadDecision::Deny { error, .. } => self.answer_error(&error),
            HeadDecision::ReadBody(pending) => {
                if end_of_stream {
                    // No body will follow: decide on an empty one.
                    self.finish(&gw, &pending, &[])
                } else {
                    self.state = State::Reading(pending);
                    Action::Pause
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let pending = match std::mem::replace(&mut self.state, State::Passing) {
            State::Reading(pending) => pending,
            State::Answered => {
                self.state = State::Answered;
                return Action::Pause;
            }
            State::Passing => return Action::Continue,
        };
        let Some(gw) = self.gateway.clone() else {
            return self.answer_error(&internal("the gateway is not configured; see Envoy's log"));
        };
        if body_size > gw.max_body_bytes {
            return self.answer_error(&ApiError::too_large(body_size as u64, gw.max_body_bytes));
        }
        if !end_of_stream {
            self.state = State::Reading(pending);
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                return self.answer_error(&internal(&format!("reading the request body failed: {status:?}")));
            }
        };
        self.finish(&gw, &pending, &body)
    }
}

impl Request {
    /// Routes a complete request: forwards it, or answers with an error.
    fn finish(&mut self, gw: &Gateway, pending: &Pending, body: &[u8]) -> Action {
        let n = self.routed.get();
        self.routed.set(n.wrapping_add(1));
        let forward = match admission::on_body(gw, pending, body, n) {
            Ok(forward) => forward,
            Err(error) => return self.answer_error(&error),
        };
        match apply(&forward) {
            Ok(()) => {
                self.state = State::Passing;
                Action::Continue
            }
            Err(message) => self.answer_error(&internal(&message)),
        }
    }

    fn answer_error(&mut self, error: &ApiError) -> Action {
        self.state = State::Answered;
        send_error(error);
        Action::Pause
    }
}

/// Applies a forward decision to the request Envoy holds.
fn apply(forward: &Forward) -> Result<(), String> {
    if let Some(edit) = &forward.body_edit {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, edit.replace, &edit.prefix)
            .map_err(|status| format!("rewriting the request body failed: {status:?}"))?;
    }
    for (name, value) in &forward.headers {
        if !set_request_header(name, value.as_deref()) {
            return Err(format!("setting the {name} header failed"));
        }
    }
    Ok(())
}

fn request_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            // Not text: treat as absent, and let the checks refuse it.
            Err(_) => Some(String::new()),
        },
        Ok(None) => None,
        Err(status) => {
            warn!("reading request header {name} failed: {status:?}");
            None
        }
    }
}

fn set_request_header(name: &str, value: Option<&str>) -> bool {
    match hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
        Ok(()) => true,
        Err(status) => {
            warn!("setting request header {name} failed: {status:?}");
            false
        }
    }
}

fn send_json(status: u16, body: &str) {
    let headers = vec![("content-type", "application/json")];
    if let Err(s) = hostcalls::send_http_response(u32::from(status), headers, Some(body.as_bytes())) {
        warn!("sending a local response failed: {s:?}");
    }
}

fn send_error(error: &ApiError) {
    send_json(error.status, &error.body());
}

fn internal(message: &str) -> ApiError {
    ApiError { status: 500, kind: "api_error", ..ApiError::bad_request(format!("Gateway error: {message}.")) }
}
