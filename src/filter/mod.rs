//! The proxy-wasm layer: reads what Envoy hands over, asks the plain modules
//! what to do, and does it. Nothing is decided here.
//!
//! A request goes through: headers (`admission::on_head`), body
//! (`admission::on_body`, then `budget` reserves), response (the body is
//! copied for its usage), end (`accounting` settles, stats are updated).

mod host;
mod stats;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::accounting;
use crate::admission::{self, Estimate, Forward, Head, HeadDecision, Pending, StreamPlan, Wire, CLUSTER_HEADER};
use crate::budget::{self, Ledger};
use crate::jwt;
use crate::limits::{self, Window};
use crate::routing::{self, ModelState, Strategy};
use crate::shared;
use crate::config::{self, secret::ProcessEnv, Gateway, Model};
use crate::errors::{ApiError, DenyReason};
use crate::header_list::HeaderList;
use crate::metrics::{self, Metric};
use crate::response::{self, Reader};
use crate::streaming::Arrival;
use host::SharedData;
use stats::{delta, Key, Stats};

/// Only when Envoy runs a VM whose configure step failed.
const NOT_CONFIGURED: &str = "the gateway is not configured; see Envoy's log";

/// The `team` label of callers that are not authenticated.
const UNKNOWN_TEAM: &str = "unknown";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
pub(crate) struct Root {
    gateway: Option<Rc<Gateway>>,
    stats: Rc<Stats>,
    /// Requests this worker has routed; takes deployments in turn.
    routed: Rc<Cell<u64>>,
    /// The state of this worker's random sequence, for weighted routing.
    random: Rc<Cell<u64>>,
    /// JWT keys fetched from `auth.jwt.jwks_uri` (the last good set).
    jwt_keys: Rc<RefCell<Rc<Vec<jwt::Key>>>>,
    /// When to fetch the key set next (ms since the epoch).
    jwks_due_ms: u64,
    /// A key set fetch in flight.
    jwks_call: Option<u32>,
}

/// How soon a failed key set fetch is tried again.
const JWKS_RETRY_MS: u64 = 10_000;

impl Context for Root {
    fn on_done(&mut self) -> bool {
        self.stats.flush();
        true
    }

    /// A key set arrived: it replaces the last one if it holds a usable key;
    /// otherwise the last good set stays.
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if self.jwks_call != Some(token) {
            return;
        }
        self.jwks_call = None;
        let Some(auth) = self.gateway.as_ref().and_then(|g| g.jwt.clone()) else { return };
        let Some(jwks) = auth.jwks.as_ref() else { return };
        let now = host::now_ms();
        let status = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
            .ok()
            .and_then(|h| host::find(&h, ":status").and_then(|s| s.parse::<u16>().ok()));
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let fetched = match status {
            Some(200) => jwt::keys_from_jwks(&body, &auth.algorithms),
            other => Err(format!("status {other:?}")),
        };
        match fetched {
            Ok(keys) => {
                info!("fetched {} JWT keys from the key set", keys.len());
                *self.jwt_keys.borrow_mut() = Rc::new(keys);
                self.jwks_due_ms = now.saturating_add(jwks.refresh_ms);
            }
            Err(e) => {
                warn!("fetching the JWT key set failed ({e}); keeping the last good set");
                self.jwks_due_ms = now.saturating_add(JWKS_RETRY_MS.min(jwks.refresh_ms));
            }
        }
    }
}

impl Root {
    /// Fetches the JWT key set when it is due.
    fn refresh_jwks(&mut self) {
        let Some(auth) = self.gateway.as_ref().and_then(|g| g.jwt.clone()) else { return };
        let Some(jwks) = auth.jwks.as_ref() else { return };
        let now = host::now_ms();
        if self.jwks_call.is_some() || now < self.jwks_due_ms {
            return;
        }
        let headers = vec![(":method", "GET"), (":path", jwks.path.as_str()), (":authority", jwks.authority.as_str()), ("accept", "application/json")];
        match hostcalls::dispatch_http_call(&jwks.cluster, headers, None, vec![], Duration::from_secs(5)) {
            Ok(token) => self.jwks_call = Some(token),
            Err(status) => {
                warn!("fetching the JWT key set failed: {status:?}");
                self.jwks_due_ms = now.saturating_add(JWKS_RETRY_MS);
            }
        }
    }

    /// A request's context. The native build keeps it in its own stream
    /// and calls it without the SDK's dispatcher.
    pub(crate) fn new_request(&self) -> Request {
        Request {
            gateway: self.gateway.clone(),
            stats: Rc::clone(&self.stats),
            routed: Rc::clone(&self.routed),
            random: Rc::clone(&self.random),
            jwt_keys: Rc::clone(&self.jwt_keys),
            state: State::Passing,
        }
    }
}

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
        let compiled = match config::compile(&file, &ProcessEnv) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors {
                    error!("invalid config: {e}");
                }
                return false;
            }
        };
        for w in &compiled.warnings {
            warn!("{w}");
        }
        let gw = compiled.gateway;
        // Natively a stat change is a direct call: nothing to save by batching.
        self.stats = Rc::new(Stats::new(gw.stats_flush_ms > 0 && !cfg!(feature = "native")));
        // The timer flushes stats and, with a JWKS URI, fetches the key set
        // (first on the first tick, within a second).
        let jwks = gw.jwt.as_ref().is_some_and(|j| j.jwks.is_some());
        let tick_ms = match (gw.stats_flush_ms, jwks) {
            (0, false) => 0,
            (0, true) => 1000,
            (ms, false) => ms,
            (ms, true) => ms.min(1000),
        };
        if tick_ms > 0 {
            if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(tick_ms)) {
                warn!("setting the timer failed: {status:?}; stats are sent at once");
                self.stats = Rc::new(Stats::new(false));
            }
        }
        // Ledgers exist before traffic, so every update is a compare-and-swap.
        let now = host::now_ms();
        for (i, team) in gw.teams.iter().enumerate() {
            if !team.tracks_spend() {
                continue;
            }
            match budget::ensure(&SharedData, &team.ledger_key) {
                Ok(ledger) => {
                    if let Some(budget) = team.budget_micro {
                        self.stats.record(
                            Key::new(Metric::BudgetRemaining, i, 0, 0, 0),
                            &[("team", &team.id)],
                            ledger.at(team.period_start(now)).remaining(budget),
                        );
                    }
                }
                Err(e) => {
                    error!("{e}");
                    return false;
                }
            }
        }
        for rule in gw.key_rules.iter().filter(|r| r.budget_micro.is_some()) {
            if let Err(e) = budget::ensure(&SharedData, &rule.ledger_key) {
                error!("{e}");
                return false;
            }
        }
        // Shared records exist before traffic, so every update is a compare-and-swap.
        let route_keys = gw.models.iter().filter(|m| m.tracked).map(|m| m.route_key.as_str());
        let limit_keys = gw.teams.iter().filter(|t| t.limits.any()).map(|t| t.limits_key.as_str());
        for key in route_keys.chain(limit_keys) {
            if let Err(e) = shared::ensure(&SharedData, key) {
                error!("{e}");
                return false;
            }
        }
        info!("configured {} models, {} deployments, {} teams", gw.models.len(), gw.deployments.len(), gw.teams.len());
        // Seeded from the VM's own randomness (WASI random_get), once.
        self.random.set({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.routed.get());
            h.finish()
        });
        self.gateway = Some(Rc::new(gw));
        true
    }

    fn on_tick(&mut self) {
        self.stats.flush();
        self.refresh_jwks();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.new_request()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub(crate) struct Request {
    gateway: Option<Rc<Gateway>>,
    stats: Rc<Stats>,
    routed: Rc<Cell<u64>>,
    random: Rc<Cell<u64>>,
    jwt_keys: Rc<RefCell<Rc<Vec<jwt::Key>>>>,
    state: State,
}

enum State {
    /// Not a gateway request: let everything through.
    Passing,
    /// Reading the body before deciding.
    Reading { pending: Pending, started_ms: u64, headers: HeaderList },
    /// Answered locally: hold back whatever still arrives.
    Answered,
    /// Sent to a provider; accounted when it ends.
    Forwarded(Box<InFlight>),
    /// Accounted.
    Done,
}

/// A forwarded request, until its response ends.
struct InFlight {
    team: usize,
    /// The key's own rules, if it has any.
    key: Option<usize>,
    /// The JWT's user, if `user_claim` is set.
    user: Option<String>,
    model: usize,
    deployment: usize,
    estimate: Estimate,
    /// Micro-USD reserved in the team's ledger (0 without a budget).
    reserved: u64,
    started_ms: u64,
    status: Option<u16>,
    /// Set for a streaming request.
    stream: Option<StreamPlan>,
    /// The API the provider answers in.
    wire: Wire,
    /// The deployment's position among its model's, if the model keeps a
    /// routing record; and whether it was counted in flight.
    route: Option<(usize, bool)>,
    /// Counted in the team's rate-limit window.
    limited: bool,
    /// How the response is read; set by its headers.
    reader: Option<Reader>,
    /// Set when the model has fallbacks.
    retry: Option<Box<Retry>>,
    /// A fallback's HTTP call in flight.
    calling: Option<u32>,
    /// When the chunk with the stream's first content came (ms since the
    /// epoch), once seen; the time to it is recorded when the request
    /// settles, off the first token's path.
    first_token_at_ms: Option<u64>,
    /// When the last chunk of the response came (ms since the epoch), kept
    /// until the first content is found.
    last_chunk_ms: Option<u64>,
}

/// A request admitted on its body, before it is forwarded.
struct Admitted<'g> {
    forward: admission::Forward<'g>,
    retry: Option<Box<Retry>>,
    /// Every deployment of the model was cooling down.
    cooled: bool,
    /// The request's number on this worker, for routing.
    n: u64,
}

/// What it takes to send a request again, to a fallback model.
struct Retry {
    pending: Pending,
    /// The request as the client sent it.
    body: Vec<u8>,
    headers: HeaderList,
    /// Fallback models not tried yet, in order.
    remaining: Vec<usize>,
}

/// How long a fallback call may take, for deployments without a timeout
/// (the route's own timeout).
/// Under Envoy's default stream idle timeout (5 minutes), which runs on the
/// client's side while the call is made.
const FALLBACK_TIMEOUT_MS: u64 = 240_000;

impl Context for Request {
    /// A fallback's answer: another fallback if it failed too, else the
    /// client's answer, sent in place of the failed one.
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let State::Forwarded(flight) = &mut self.state else { return };
        if flight.calling != Some(token) {
            return;
        }
        flight.calling = None;
        let headers = match hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders) {
            Ok(h) => h,
            Err(status) => {
                warn!("reading a fallback's headers failed: {status:?}");
                Vec::new()
            }
        };
        let status: Option<u16> = host::find(&headers, ":status").and_then(|s| s.parse().ok());
        flight.status = status;
        let more = flight.retry.as_ref().is_some_and(|r| !r.remaining.is_empty());
        if status.map_or(true, is_failure) && more && self.start_fallback() {
            return;
        }
        let State::Forwarded(flight) = &mut self.state else { return };
        if body_size > accounting::RESPONSE_COPY_LIMIT {
            warn!("a fallback's answer of {body_size} bytes is over the limit");
            host::send_error(&ApiError::bad_gateway("the fallback's answer is too large to pass on"));
            self.settle();
            return;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                warn!("reading a fallback's body failed: {status:?}");
                Vec::new()
            }
        };
        let content_type = host::find(&headers, "content-type").unwrap_or("application/json").to_string();
        let success = accounting::is_success(status);
        let event_stream = success && content_type.trim_start().to_ascii_lowercase().starts_with("text/event-stream");
        let model = self.gateway.as_ref().and_then(|gw| gw.models.get(flight.model)).map_or("", |m| m.name.as_str());
        let created = flight.started_ms / 1000;
        let mut reader = Reader::new(flight.wire, flight.stream, response::Head { success, event_stream }, model, created);
        let action = reader.on_chunk(&body, true);
        let (code, out) = if matches!(reader, Reader::Whole { .. }) {
            match reader.on_whole(&body, status, model, created) {
                Some(rewritten) => (rewritten.status.or(status), rewritten.body),
                None => (status, body),
            }
        } else {
            (status, action.replace_with.unwrap_or(body))
        };
        flight.reader = Some(reader);
        let content_type = if flight.wire == Wire::AnthropicTranslated && !event_stream { "application/json" } else { content_type.as_str() };
        // No status at all (the call failed): as Envoy answers an unreachable upstream.
        let code = code.unwrap_or(503);
        if let Err(s) = hostcalls::send_http_response(u32::from(code), vec![("content-type", content_type)], Some(&out)) {
            warn!("sending a fallback's answer failed: {s:?}");
        }
        self.settle();
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return self.deny(None, &ApiError::internal(NOT_CONFIGURED));
        };
        let mut headers = host::request_headers();
        // Whatever happens next, no client chooses the upstream cluster.
        if headers.get(CLUSTER_HEADER).is_some() {
            host::set_request_header(CLUSTER_HEADER, None);
            headers.remove(CLUSTER_HEADER);
        }
        let jwt_keys = Rc::clone(&self.jwt_keys.borrow());
        let head = Head {
            method: headers.get(":method").unwrap_or_default(),
            path: headers.get(":path").unwrap_or_default(),
            authorization: headers.get("authorization"),
            api_key: headers.get("x-api-key"),
            content_length: headers.get("content-length"),
            anthropic_version: headers.get("anthropic-version").is_some(),
            now_ms: host::now_ms(),
            jwt_keys: &jwt_keys,
        };
        match admission::on_head(&gw, &head) {
            HeadDecision::PassThrough => Action::Continue,
            HeadDecision::KeyInfo { team, key } => {
                self.state = State::Answered;
                let t = gw.teams.get(team);
                let ledger = match t.filter(|t| t.tracks_spend()) {
                    Some(t) => shared::read(&SharedData, &t.ledger_key).unwrap_or_default(),
                    None => Ledger::default(),
                };
                let window = match t.filter(|t| t.limits.any()) {
                    Some(t) => shared::read(&SharedData, &t.limits_key).unwrap_or_default(),
                    None => Window::default(),
                };
                let key = key.and_then(|k| gw.key_rules.get(k)).map(|rule| {
                    let ledger = if rule.budget_micro.is_some() {
                        shared::read(&SharedData, &rule.ledger_key).unwrap_or_default()
                    } else {
                        Ledger::default()
                    };
                    (rule, ledger)
                });
                host::send_json(200, &crate::key_info::body(&gw, team, key, ledger, window, head.now_ms));
                Action::Pause
            }
            HeadDecision::Answer { body, .. } => {
                self.state = State::Answered;
                host::send_json(200, &body);
                Action::Pause
            }
            HeadDecision::Deny { team, error } => self.deny(team, &error),
            HeadDecision::ReadBody(pending) => {
                let started_ms = head.now_ms;
                if end_of_stream {
                    // No body will follow: decide on an empty one.
                    self.finish(&gw, &pending, &[], started_ms, &headers)
                } else {
                    self.state = State::Reading { pending, started_ms, headers };
                    Action::Pause
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (pending, started_ms, headers) = match std::mem::replace(&mut self.state, State::Done) {
            State::Reading { pending, started_ms, headers } => (pending, started_ms, headers),
            State::Answered => {
                self.state = State::Answered;
                return Action::Pause;
            }
            other => {
                self.state = other;
                return Action::Continue;
            }
        };
        let Some(gw) = self.gateway.clone() else {
            return self.deny(None, &ApiError::internal(NOT_CONFIGURED));
        };
        if body_size > gw.max_body_bytes {
            return self.deny(Some(pending.team), &ApiError::too_large(body_size as u64, gw.max_body_bytes));
        }
        if !end_of_stream {
            self.state = State::Reading { pending, started_ms, headers };
            return Action::Pause;
        }
        // The body is read where Envoy holds it (native) for the decision;
        // it is rewritten only after that.
        match host::with_body(BufferType::HttpRequestBody, body_size, |body| self.admit(&gw, &pending, body, started_ms, &headers)) {
            Ok(admitted) => self.forward(&gw, &pending, admitted, started_ms, &headers),
            Err(status) => self.deny(Some(pending.team), &ApiError::internal(&format!("reading the request body failed: {status:?}"))),
        }
    }

    /// A body may end with trailers (HTTP/2): then no body callback has
    /// `end_of_stream`, and the request is decided here. Letting it through
    /// undecided would forward it unchecked, with the client's key.
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Reading { pending, started_ms, headers } => {
                let Some(gw) = self.gateway.clone() else {
                    return self.deny(None, &ApiError::internal(NOT_CONFIGURED));
                };
                let body = match host::body(BufferType::HttpRequestBody, usize::MAX) {
                    Ok(body) => body,
                    Err(status) => {
                        return self.deny(Some(pending.team), &ApiError::internal(&format!("reading the request body failed: {status:?}")))
                    }
                };
                if body.len() > gw.max_body_bytes {
                    return self.deny(Some(pending.team), &ApiError::too_large(body.len() as u64, gw.max_body_bytes));
                }
                self.finish(&gw, &pending, &body, started_ms, &headers)
            }
            State::Answered => {
                self.state = State::Answered;
                Action::Pause
            }
            other => {
                self.state = other;
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let State::Forwarded(flight) = &mut self.state else {
            return Action::Continue;
        };
        flight.status = host::response_status();
        let failed = flight.status.map_or(true, is_failure);
        if failed && flight.retry.as_ref().is_some_and(|r| !r.remaining.is_empty()) && self.start_fallback() {
            // Held: the fallback's answer replaces this one.
            return Action::Pause;
        }
        let State::Forwarded(flight) = &mut self.state else {
            return Action::Continue;
        };
        let success = accounting::is_success(flight.status);
        // Only a streaming request can get a stream; skip the lookup otherwise.
        let event_stream = flight.stream.is_some()
            && success
            && host::with_response_header("content-type", |t| t.is_some_and(response::is_event_stream));
        let model = self.gateway.as_ref().and_then(|gw| gw.models.get(flight.model)).map_or("", |m| m.name.as_str());
        let reader = Reader::new(flight.wire, flight.stream, response::Head { success, event_stream }, model, flight.started_ms / 1000);
        if reader.changes_length() {
            host::set_response_header("content-length", None);
        }
        // A response translated whole keeps its headers until its body is
        // in, so that its status and length can follow the translation.
        let hold = matches!(reader, Reader::Whole { .. }) && !end_of_stream;
        flight.reader = Some(reader);
        if hold {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let State::Forwarded(flight) = &mut self.state else {
            return Action::Continue;
        };
        if flight.calling.is_some() {
            // The failed answer is held, then replaced by the fallback's.
            return Action::Pause;
        }
        let Some(reader) = &mut flight.reader else {
            return Action::Continue;
        };
        // Error bodies are read only to be translated.
        let wanted = accounting::is_success(flight.status) || matches!(reader, Reader::Whole { .. });
        if wanted && (body_size > 0 || end_of_stream) {
            if matches!(reader, Reader::Whole { .. }) && !end_of_stream {
                // Held by Envoy until the body is complete.
                return Action::Pause;
            }
            let whole = matches!(reader, Reader::Whole { .. });
            let model = self.gateway.as_ref().and_then(|gw| gw.models.get(flight.model)).map_or("", |m| m.name.as_str());
            let (status, created) = (flight.status, flight.started_ms / 1000);
            // The chunk is read where Envoy holds it (native), and the body
            // is rewritten only after the reader is done with it.
            let mut read = |chunk: &[u8]| {
                let action = reader.on_chunk(chunk, end_of_stream);
                let rewritten = if whole { reader.on_whole(chunk, status, model, created) } else { None };
                (action, rewritten)
            };
            let (action, rewritten) = match host::with_body(BufferType::HttpResponseBody, body_size, &mut read) {
                Ok(read) => read,
                Err(status) => {
                    warn!("reading the response body failed: {status:?}");
                    read(&[])
                }
            };
            let replace_with = if whole {
                rewritten.map(|rewritten| {
                    // The headers are still held: they can follow the body.
                    host::set_response_header("content-length", Some(&rewritten.body.len().to_string()));
                    if let Some(status) = rewritten.status {
                        host::set_response_header(":status", Some(&status.to_string()));
                    }
                    rewritten.body
                })
            } else {
                action.replace_with
            };
            if let Some(bytes) = replace_with {
                if let Err(status) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &bytes) {
                    warn!("rewriting the response body failed: {status:?}");
                }
            }
            if flight.stream.is_some() && flight.first_token_at_ms.is_none() {
                // The meter may find the first content a chunk late: the
                // time a chunk came is kept until the first content is found.
                let now = host::now_ms();
                flight.first_token_at_ms = match action.first_content {
                    Some(Arrival::ThisChunk) => Some(now),
                    Some(Arrival::PreviousChunk) => flight.last_chunk_ms,
                    None => None,
                };
                flight.last_chunk_ms = Some(now);
            }
        }
        if end_of_stream {
            self.settle();
        }
        Action::Continue
    }

    /// A response held for a fallback or a whole translation stays held.
    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        match &self.state {
            State::Forwarded(f) if f.calling.is_some() || matches!(f.reader, Some(Reader::Whole { .. })) => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        // The stream is over: settle what the response callbacks did not
        // (a client that went away, an upstream reset, a body-less response).
        self.settle();
    }
}

impl Request {
    /// Routes a complete request: forwards it, or answers with an error.
    fn finish(
        &mut self,
        gw: &Gateway,
        pending: &Pending,
        body: &[u8],
        started_ms: u64,
        headers: &HeaderList,
    ) -> Action {
        let admitted = self.admit(gw, pending, body, started_ms, headers);
        self.forward(gw, pending, admitted, started_ms, headers)
    }

    /// The decision on a complete request, the part that reads its body:
    /// its model, access and deployment, and the edits to make.
    fn admit<'g>(&self, gw: &'g Gateway, pending: &Pending, body: &[u8], started_ms: u64, headers: &HeaderList) -> Result<Admitted<'g>, ApiError> {
        let n = self.routed.get();
        self.routed.set(n.wrapping_add(1));
        let cooled = Cell::new(false);
        let forward = admission::on_body_with(gw, pending, body, &mut |_, m| self.choose(gw, m, started_ms, n, &cooled))?;
        // With fallbacks, what it takes to send the request again elsewhere.
        let retry = gw.models.get(forward.model).filter(|m| !m.fallbacks.is_empty()).map(|m| {
            Box::new(Retry { pending: pending.clone(), body: body.to_vec(), headers: headers.clone(), remaining: m.fallbacks.clone() })
        });
        Ok(Admitted { forward, retry, cooled: cooled.get(), n })
    }

    /// Forwards an admitted request (limits, the budget's reservation, the
    /// edits), or answers with an error.
    fn forward(
        &mut self,
        gw: &Gateway,
        pending: &Pending,
        admitted: Result<Admitted<'_>, ApiError>,
        started_ms: u64,
        headers: &HeaderList,
    ) -> Action {
        let Admitted { forward, mut retry, cooled, n } = match admitted {
            Ok(admitted) => admitted,
            Err(error) => return self.deny(Some(pending.team), &error),
        };
        // Every deployment of the model is cooling down: straight to a fallback.
        let primary = forward.model;
        let forward = match retry.as_mut().filter(|_| cooled) {
            Some(r) => match self.next_fallback(gw, r, started_ms, n) {
                Some(fallback) => fallback,
                None => forward,
            },
            None => forward,
        };
        let team = gw.teams.get(pending.team);
        let limited = team.is_some_and(|t| t.limits.any());
        if let (true, Some(t)) = (limited, team) {
            match shared::update(&SharedData, &t.limits_key, |w: &Window| limits::admit(w, &t.limits, &t.id, started_ms)) {
                Ok(Ok(_)) => {}
                Ok(Err(refusal)) => {
                    return self.deny(Some(pending.team), &ApiError::rate_limited(refusal).for_endpoint(pending.endpoint))
                }
                Err(e) => return self.deny(Some(pending.team), &ApiError::internal(&e).for_endpoint(pending.endpoint)),
            }
        }
        let reserved = match self.reserve(gw, pending, &forward, started_ms) {
            Ok(reserved) => reserved,
            Err(error) => {
                release_limits(gw, pending.team, limited, 0, started_ms);
                return self.deny(Some(pending.team), &error.for_endpoint(pending.endpoint));
            }
        };
        if let Err(message) = apply(&forward, headers) {
            self.release(gw, pending, reserved, started_ms);
            release_limits(gw, pending.team, limited, 0, started_ms);
            return self.deny(Some(pending.team), &ApiError::internal(&message).for_endpoint(pending.endpoint));
        }
        let route = gw.models.get(forward.model).filter(|m| m.tracked).and_then(|m| {
            let position = m.deployments.iter().position(|&d| d == forward.deployment)?;
            let counted = matches!(gw.strategy, Strategy::LeastBusy | Strategy::UsageBased)
                && shared::update(&SharedData, &m.route_key, |s: &ModelState| Ok::<_, ()>(routing::on_start(s, position, started_ms)))
                    .map_err(|e| warn!("{e}"))
                    .is_ok();
            Some((position, counted))
        });
        if forward.model != primary {
            self.count_fallback(gw, primary, forward.model);
        }
        self.state = State::Forwarded(Box::new(InFlight {
            team: pending.team,
            key: pending.key,
            user: pending.user.clone(),
            model: forward.model,
            deployment: forward.deployment,
            estimate: forward.estimate,
            reserved,
            started_ms,
            status: None,
            stream: forward.stream,
            wire: forward.wire,
            route,
            limited,
            reader: None,
            retry,
            calling: None,
            first_token_at_ms: None,
            last_chunk_ms: None,
        }));
        Action::Continue
    }

    /// Picks a deployment of model `m` by the configured strategy; sets
    /// `cooled` when all of them are cooling down.
    fn choose(&self, gw: &Gateway, m: &Model, now_ms: u64, n: u64, cooled: &Cell<bool>) -> Option<usize> {
        let state = if m.tracked { read_route(&m.route_key) } else { ModelState::default() };
        cooled.set(m.tracked && routing::all_cooled(&state, m.deployments.len(), now_ms));
        let mut r = self.random.get();
        let drawn = routing::next_random(&mut r);
        self.random.set(r);
        routing::pick(gw.strategy, &m.candidates, &state, now_ms, drawn, n)
    }

    /// The next fallback that takes the request: one the team may use, not
    /// all in cooldown (unless it is the last).
    fn next_fallback<'g>(&self, gw: &'g Gateway, retry: &mut Retry, now_ms: u64, n: u64) -> Option<Forward<'g>> {
        while !retry.remaining.is_empty() {
            let target = retry.remaining.remove(0);
            let Some(name) = gw.models.get(target).map(|m| m.name.clone()) else { continue };
            let cooled = Cell::new(false);
            let forward = admission::on_body_for(gw, &retry.pending, &retry.body, &name, &mut |_, m| {
                self.choose(gw, m, now_ms, n, &cooled)
            });
            match forward {
                Ok(f) if !cooled.get() || retry.remaining.is_empty() => return Some(f),
                Ok(_) => {}
                Err(e) => info!("fallback {name} skipped: {}", e.message),
            }
        }
        None
    }

    /// Sends the request to the next fallback that takes it, off the
    /// response path (an HTTP call from the filter). False if none is left.
    fn start_fallback(&mut self) -> bool {
        let Some(gw) = self.gateway.clone() else { return false };
        let now = host::now_ms();
        let n = self.routed.get();
        let State::Forwarded(flight) = &mut self.state else { return false };
        let Some(mut retry) = flight.retry.take() else { return false };
        // The attempt that failed counts against its deployment, once, and
        // as a request that got its status.
        let outcome = flight.status.map_or(routing::Outcome::Failure, |s| outcome_of(Some(s)));
        record_route(&gw, flight, &self.stats, outcome, now.saturating_sub(flight.started_ms), 0, now);
        let who = who(&gw, flight);
        count_request(&gw, flight, &self.stats, &who, self.stats.caller_id(&who));
        flight.route = None;
        let from = flight.model;
        loop {
            let Some(forward) = self.next_fallback(&gw, &mut retry, now, n) else { return false };
            let Some(dep) = gw.deployments.get(forward.deployment) else { continue };
            let headers = outgoing_headers(&retry.headers, &forward.headers);
            let body = match &forward.body_edit {
                Some(edit) => {
                    let mut b = edit.prefix.clone();
                    b.extend_from_slice(retry.body.get(edit.replace..).unwrap_or_default());
                    b
                }
                None => retry.body.clone(),
            };
            let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let timeout = Duration::from_millis(dep.timeout_ms.unwrap_or(FALLBACK_TIMEOUT_MS));
            match host::dispatch_http_call(&dep.cluster, header_refs, &body, timeout) {
                Ok(token) => {
                    self.count_fallback(&gw, from, forward.model);
                    let State::Forwarded(flight) = &mut self.state else { return false };
                    let route = gw
                        .models
                        .get(forward.model)
                        .filter(|m| m.tracked)
                        .and_then(|m| m.deployments.iter().position(|&d| d == forward.deployment))
                        .map(|p| (p, false));
                    flight.model = forward.model;
                    flight.deployment = forward.deployment;
                    flight.wire = forward.wire;
                    flight.stream = forward.stream;
                    flight.route = route;
                    flight.status = None;
                    flight.calling = Some(token);
                    flight.retry = Some(retry);
                    return true;
                }
                Err(status) => warn!("calling fallback cluster {} failed: {status:?}", dep.cluster),
            }
        }
    }

    /// Counts a request sent on from model `from` to its fallback `to`.
    fn count_fallback(&self, gw: &Gateway, from: usize, to: usize) {
        let name = |m: usize| gw.models.get(m).map_or("", |m| m.name.as_str());
        let key = Key::new(Metric::Fallbacks, 0, from, 0, u32::try_from(to).unwrap_or_default());
        self.stats.add(key, &[("model", name(from)), ("fallback", name(to))], 1);
    }

    /// Reserves the request's worst case in the team's ledger. Returns the
    /// amount reserved (0 for a team without a budget).
    fn reserve(&self, gw: &Gateway, pending: &Pending, forward: &Forward<'_>, now_ms: u64) -> Result<u64, ApiError> {
        let team = gw.teams.get(pending.team).filter(|t| t.budget_micro.is_some());
        let extras = extra_ledgers(gw, pending.team, pending.key, pending.user.as_deref());
        if team.is_none() && extras.is_empty() {
            return Ok(0);
        }
        // A fallback may cost more: the reservation covers the dearest
        // deployment the request may end on.
        let fallbacks = gw.models.get(forward.model).map(|m| m.fallbacks.as_slice()).unwrap_or_default();
        let worst = std::iter::once(forward.deployment)
            .chain(fallbacks.iter().filter_map(|&f| gw.models.get(f)).flat_map(|m| m.deployments.iter().copied()))
            .filter_map(|d| gw.deployments.get(d))
            .map(|d| accounting::worst_case_micro(d.price, forward.estimate))
            .max()
            .unwrap_or(0);
        // The key's and the user's own budgets first, then the team's.
        let release = |done: &[ExtraLedger]| {
            for l in done {
                settle_ledger(&l.key, l.period, worst, 0, now_ms);
            }
        };
        for (i, l) in extras.iter().enumerate() {
            let period = l.period.map_or(0, |p| p.start(now_ms));
            let refused = match budget::update(&SharedData, &l.key, |led| budget::admit(led.at(period), l.budget, worst)) {
                Ok(Ok(_)) => None,
                Ok(Err(ledger)) => Some(ApiError::over_budget(&l.who, l.setting, ledger.spent, ledger.reserved, l.budget)),
                Err(e) => Some(ApiError::internal(&e)),
            };
            if let Some(error) = refused {
                release(extras.get(..i).unwrap_or_default());
                return Err(error);
            }
        }
        if let Some((t, budget)) = team.and_then(|t| Some((t, t.budget_micro?))) {
            let period = t.period_start(now_ms);
            let refused = match budget::update(&SharedData, &t.ledger_key, |l| budget::admit(l.at(period), budget, worst)) {
                Ok(Ok(_)) => None,
                Ok(Err(ledger)) => Some(ApiError::budget_exceeded(&t.id, ledger.spent, ledger.reserved, budget)),
                Err(e) => Some(ApiError::internal(&e)),
            };
            if let Some(error) = refused {
                release(&extras);
                return Err(error);
            }
        }
        Ok(worst)
    }

    fn release(&self, gw: &Gateway, pending: &Pending, reserved: u64, now_ms: u64) {
        if let Some(t) = gw.teams.get(pending.team).filter(|t| t.budget_micro.is_some()) {
            settle_ledger(&t.ledger_key, t.period, reserved, 0, now_ms);
        }
        for l in extra_ledgers(gw, pending.team, pending.key, pending.user.as_deref()) {
            settle_ledger(&l.key, l.period, reserved, 0, now_ms);
        }
    }

    /// Accounts a forwarded request once: cost, ledger, stats.
    fn settle(&mut self) {
        let State::Forwarded(mut flight) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        // A stream cut short: what its meter passed on unread is read now.
        if flight.reader.as_mut().is_some_and(Reader::read_the_rest) && flight.first_token_at_ms.is_none() {
            flight.first_token_at_ms = flight.last_chunk_ms;
        }
        let Some(gw) = self.gateway.clone() else { return };
        let (Some(team), Some(model), Some(dep)) =
            (gw.teams.get(flight.team), gw.models.get(flight.model), gw.deployments.get(flight.deployment))
        else {
            return;
        };
        let (usage, output_seen) = match &flight.reader {
            Some(reader) => (reader.usage(), reader.estimated_output_tokens()),
            None => (None, 0),
        };
        let outcome = accounting::outcome(dep.price, flight.status, usage, flight.estimate, output_seen);

        let now = host::now_ms();
        if team.tracks_spend() {
            let period = team.period_start(now);
            let settled = budget::update(&SharedData, &team.ledger_key, |l: Ledger| {
                Ok::<_, ()>(budget::settle(l.at(period), flight.reserved, outcome.cost_micro))
            });
            match settled {
                Ok(Ok((before, after))) => {
                    if let Some(budget) = team.budget_micro {
                        let change = i128::from(after.remaining(budget)) - i128::from(before.remaining(budget));
                        self.stats.add(
                            Key::new(Metric::BudgetRemaining, flight.team, 0, 0, 0),
                            &[("team", &team.id)],
                            i64::try_from(change).unwrap_or_default(),
                        );
                    }
                    // Crossing the soft budget: counted once a period (the
                    // atomic update makes this request the only one that saw it).
                    if let Some(soft) = team.soft_budget_micro {
                        if before.at(period).spent < soft && after.spent >= soft {
                            warn!("team {} crossed its soft budget of {soft} micro-USD this period", team.id);
                            self.stats.add(Key::new(Metric::SoftBudgetCrossed, flight.team, 0, 0, 0), &[("team", &team.id)], 1);
                        }
                    }
                }
                Ok(Err(())) => {}
                Err(e) => error!("{e}"),
            }
        }

        let (t, m, p) = (team.id.as_str(), model.name.as_str(), dep.provider.name());
        let provider = dep.provider as usize;
        let who = who(&gw, &flight);
        let s = &self.stats;
        let caller = s.caller_id(&who);
        let key = |metric, extra| Key::new(metric, flight.team, flight.model, provider, extra).by(caller);
        fn joined<'a>(base: &[(&'a str, &'a str)], who: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
            base.iter().chain(who.iter()).copied().collect()
        }
        count_request(&gw, &flight, s, &who, caller);
        let usage = outcome.usage;
        for (i, (kind, n)) in
            [("input", usage.input), ("output", usage.output), ("cached_input", usage.cached_input), ("cache_write", usage.cache_writes())]
            .into_iter()
            .enumerate()
        {
            let labels = || metrics::name(Metric::Tokens, &joined(&[("team", t), ("model", m), ("provider", p), ("type", kind)], &who));
            s.add_with(key(Metric::Tokens, u32::try_from(i).unwrap_or_default()), labels, delta(n));
        }
        let labels = || metrics::name(Metric::Spend, &joined(&[("team", t), ("model", m)], &who));
        s.add_with(key(Metric::Spend, 0), labels, delta(outcome.cost_micro));
        if outcome.estimated {
            s.add(key(Metric::Estimated, 0), &[("team", t), ("model", m)], 1);
        }
        for l in extra_ledgers(&gw, flight.team, flight.key, flight.user.as_deref()) {
            settle_ledger(&l.key, l.period, flight.reserved, outcome.cost_micro, now);
        }
        let elapsed = now.saturating_sub(flight.started_ms);
        let (duration, labels) = series(&gw, &flight, Metric::Duration);
        s.record(duration, &labels, elapsed);
        if let Some(at) = flight.first_token_at_ms {
            let (key, labels) = series(&gw, &flight, Metric::TimeToFirstToken);
            s.record(key, &labels, at.saturating_sub(flight.started_ms));
        }

        let tokens = usage.input.saturating_add(usage.cached_input).saturating_add(usage.cache_writes()).saturating_add(usage.output);
        release_limits(&gw, flight.team, flight.limited, tokens, now);
        record_route(&gw, &flight, s, outcome_of(flight.status), elapsed, tokens, now);
    }

    fn deny(&mut self, team: Option<usize>, error: &ApiError) -> Action {
        self.state = State::Answered;
        let label = team
            .and_then(|t| self.gateway.as_ref()?.teams.get(t).map(|t| t.id.clone()))
            .unwrap_or_else(|| UNKNOWN_TEAM.to_string());
        if error.reason != DenyReason::Internal {
            let key = Key::new(Metric::Denied, team.unwrap_or(usize::MAX), 0, 0, error.reason as u32);
            self.stats.add(key, &[("team", &label), ("reason", error.reason.label())], 1);
        }
        host::send_error(error);
        Action::Pause
    }
}

/// A forwarded request's team/model/provider series of a metric: its key
/// and its labels. The provider is the deployment's, so a model served by
/// several providers gets one series each.
fn series<'g>(gw: &'g Gateway, flight: &InFlight, metric: Metric) -> (Key, [(&'static str, &'g str); 3]) {
    let provider = gw.deployments.get(flight.deployment).map(|d| d.provider);
    let key = Key::new(metric, flight.team, flight.model, provider.map_or(0, |p| p as usize), 0);
    let labels = [
        ("team", gw.teams.get(flight.team).map_or("", |t| t.id.as_str())),
        ("model", gw.models.get(flight.model).map_or("", |m| m.name.as_str())),
        ("provider", provider.map_or("", |p| p.name())),
    ];
    (key, labels)
}

/// Who within the team sent a request: the key's alias, the JWT's user
/// (labels `key` and `user`, present only when there is one).
fn who<'a>(gw: &'a Gateway, flight: &'a InFlight) -> Vec<(&'static str, &'a str)> {
    let mut who = Vec::new();
    if let Some(rule) = flight.key.and_then(|k| gw.key_rules.get(k)) {
        who.push(("key", rule.alias.as_str()));
    }
    if let Some(u) = flight.user.as_deref() {
        who.push(("user", u));
    }
    who
}

/// Counts an attempt in `tollgate_requests_total`, by the status it got
/// (0: none): a request that falls back counts once for each model tried.
fn count_request(gw: &Gateway, flight: &InFlight, stats: &Stats, who: &[(&str, &str)], caller: u32) {
    let (Some(team), Some(model), Some(dep)) =
        (gw.teams.get(flight.team), gw.models.get(flight.model), gw.deployments.get(flight.deployment))
    else {
        return;
    };
    let status = flight.status.unwrap_or(0);
    let key = Key::new(Metric::Requests, flight.team, flight.model, dep.provider as usize, u32::from(status)).by(caller);
    stats.add_with(
        key,
        || {
            let code = status.to_string();
            let mut labels = vec![("team", team.id.as_str()), ("model", model.name.as_str()), ("provider", dep.provider.name()), ("code", code.as_str())];
            labels.extend(who.iter().copied());
            metrics::name(Metric::Requests, &labels)
        },
        1,
    );
}

/// What a fallback is tried on: no connection, a timeout (Envoy's 503 and
/// 504), a 429 or a 5xx.
fn is_failure(status: u16) -> bool {
    status == 429 || status >= 500
}

/// What an answer says about the deployment that gave it.
fn outcome_of(status: Option<u16>) -> routing::Outcome {
    match status {
        // The client went away before any answer.
        None => routing::Outcome::Neutral,
        Some(200..=299) => routing::Outcome::Success,
        Some(s) if is_failure(s) || matches!(s, 401 | 403 | 404 | 408) => routing::Outcome::Failure,
        Some(_) => routing::Outcome::Neutral,
    }
}

/// Records how a request on its deployment ended, in the model's routing
/// record (if it keeps one); counts a cooldown it starts.
fn record_route(gw: &Gateway, flight: &InFlight, stats: &Stats, outcome: routing::Outcome, latency_ms: u64, tokens: u64, now: u64) {
    let Some((position, started)) = flight.route else { return };
    let (Some(model), Some(dep)) = (gw.models.get(flight.model), gw.deployments.get(flight.deployment)) else { return };
    let ended = routing::Ended { started, outcome, latency_ms, tokens };
    let cooldown = gw.cooldown;
    match shared::update(&SharedData, &model.route_key, |st: &ModelState| {
        Ok::<_, ()>(routing::on_end(st, position, ended, cooldown, now).0)
    }) {
        Ok(Ok((before, after))) => {
            if after.get(position).cooldown_until_ms != before.get(position).cooldown_until_ms {
                let labels = [("model", model.name.as_str()), ("provider", dep.provider.name()), ("deployment", dep.authority.as_str())];
                let key = Key::new(Metric::DeploymentCooldowns, 0, flight.model, dep.provider as usize, u32::try_from(position).unwrap_or_default());
                stats.add(key, &labels, 1);
            }
        }
        Ok(Err(())) => {}
        Err(e) => warn!("{e}"),
    }
}

/// A budget besides the team's that a request is charged to: its key's
/// (`api_keys[].max_budget`) or its user's (`auth.jwt.user_max_budget`).
struct ExtraLedger {
    key: String,
    budget: u64,
    period: Option<crate::period::Period>,
    /// How a refusal names it, and the setting to raise.
    who: String,
    setting: &'static str,
}

fn extra_ledgers(gw: &Gateway, team: usize, key: Option<usize>, user: Option<&str>) -> Vec<ExtraLedger> {
    let mut out = Vec::new();
    if let Some(rule) = key.and_then(|k| gw.key_rules.get(k)) {
        if let Some(budget) = rule.budget_micro {
            out.push(ExtraLedger { key: rule.ledger_key.clone(), budget, period: rule.period, who: format!("The key \"{}\"", rule.alias), setting: "the key's max_budget" });
        }
    }
    if let (Some(user), Some(auth), Some(t)) = (user, gw.jwt.as_deref(), gw.teams.get(team)) {
        if let Some(budget) = auth.user_budget_micro {
            out.push(ExtraLedger { key: jwt::user_ledger_key(&t.id, user), budget, period: auth.user_period, who: format!("The user \"{user}\""), setting: "auth.jwt.user_max_budget" });
        }
    }
    out
}

/// Settles a reservation in a ledger (in its current period).
fn settle_ledger(key: &str, period: Option<crate::period::Period>, reserved: u64, cost: u64, now_ms: u64) {
    let start = period.map_or(0, |p| p.start(now_ms));
    if let Err(e) = budget::update(&SharedData, key, |l| Ok::<_, ()>(budget::settle(l.at(start), reserved, cost))) {
        error!("{e}");
    }
}

/// A model's routing record (a fresh one if it cannot be read).
fn read_route(key: &str) -> ModelState {
    shared::read(&SharedData, key).unwrap_or_else(|e| {
        warn!("{e}");
        ModelState::default()
    })
}

/// Takes a request out of its team's rate-limit window, counting its tokens.
fn release_limits(gw: &Gateway, team: usize, limited: bool, tokens: u64, now_ms: u64) {
    let Some(t) = gw.teams.get(team).filter(|_| limited) else { return };
    if let Err(e) = shared::update(&SharedData, &t.limits_key, |w: &Window| Ok::<_, ()>(limits::release(w, tokens, now_ms))) {
        error!("{e}");
    }
}

/// The full header list for a fallback's HTTP call: the client's headers
/// with the forward's changes, without the client's own framing.
fn outgoing_headers(client: &HeaderList, changes: &[(&str, Option<Cow<'_, str>>)]) -> Vec<(String, String)> {
    const DROPPED: [&str; 4] = ["transfer-encoding", "connection", "keep-alive", "x-tollgate-cluster"];
    let mut out: Vec<(String, String)> = client
        .iter()
        .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
        .filter(|(k, _)| !changes.iter().any(|(name, _)| name == k) && !DROPPED.contains(k) && !k.starts_with("x-envoy-"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.extend(changes.iter().filter(|(name, _)| *name != CLUSTER_HEADER && !name.starts_with("x-envoy-")).filter_map(|(name, value)| {
        value.as_ref().map(|v| ((*name).to_string(), v.to_string()))
    }));
    out
}

/// Applies a forward decision to the request Envoy holds: the body edit, and
/// all header changes in one hostcall.
fn apply(forward: &Forward<'_>, headers: &HeaderList) -> Result<(), String> {
    if let Some(edit) = &forward.body_edit {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, edit.replace, &edit.prefix)
            .map_err(|status| format!("rewriting the request body failed: {status:?}"))?;
    }
    if host::rewrite_request_headers(headers, &forward.headers) {
        Ok(())
    } else {
        Err("rewriting the request headers failed".to_string())
    }
}

