//! The native build: Tollgate as an Envoy dynamic module (`libtollgate.so`,
//! feature `native`), for plain Envoy 1.40 where a proxy-wasm VM's
//! crossings cost too much.
//!
//! It runs the very filter the wasm build runs (`crate::filter`): the
//! hooks below call its contexts' proxy-wasm methods
//! (`on_http_request_headers`, ...) from Envoy's dynamic-module hooks
//! directly, each stream holding its own context (the SDK's dispatcher,
//! which finds a context by its number on every callback, is not used), and
//! `hostcalls` answers the proxy-wasm calls the filter makes from Envoy's
//! dynamic-module callbacks. Each Envoy worker thread gets its own root
//! context, as each gets its own wasm VM; shared data is process memory.
//!
//! Differences from the wasm build, all forced by the ABI:
//! - metrics are defined when the config loads, so each is defined there
//!   with its label names (`SERIES`), and changes are sent at once;
//! - there is no timer, so `auth.jwt.jwks_uri` is refused (keys are given
//!   inline);
//! - a panic in the filter cannot unwind out of the module's `extern "C"`
//!   entry points, so it aborts Envoy instead of killing one VM (the filter
//!   is built not to panic).

mod abi;
mod batch;
mod hostcalls;

pub(crate) use hostcalls::{http_call, modify_shared_data, with_body, with_response_header};

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::Action;

use abi::{ConfigEnvoy, EnvoyBuffer, EnvoyHeader, FilterEnvoy, ModuleBuffer, ModuleHeader};

use crate::config::{self, secret::ProcessEnv};
use crate::filter::{Request, Root};
use crate::metrics::{Metric, SEPARATOR};

pub(crate) const COUNTER: u32 = 0;
pub(crate) const GAUGE: u32 = 1;
pub(crate) const HISTOGRAM: u32 = 2;

/// The response code details of the filter's own replies.
pub(crate) const REPLY_DETAILS: &[u8] = b"tollgate";

/// Every series the filter records, by metric and label names: Envoy takes
/// no new metric once the config has loaded. `key` and `user` follow the
/// labels they may be added to.
const SERIES: &[(Metric, &[&str])] = &[
    (Metric::Requests, &["team", "model", "provider", "code"]),
    (Metric::Tokens, &["team", "model", "provider", "type"]),
    (Metric::Spend, &["team", "model"]),
    (Metric::BudgetRemaining, &["team"]),
    (Metric::Denied, &["team", "reason"]),
    (Metric::Duration, &["team", "model", "provider"]),
    (Metric::TimeToFirstToken, &["team", "model", "provider"]),
    (Metric::Estimated, &["team", "model"]),
    (Metric::DeploymentCooldowns, &["model", "provider", "deployment"]),
    (Metric::Fallbacks, &["model", "fallback"]),
    (Metric::SoftBudgetCrossed, &["team"]),
];

/// Metrics whose series may also carry `key` and `user`.
const BY_CALLER: [Metric; 3] = [Metric::Requests, Metric::Tokens, Metric::Spend];

/// A loaded filter config: the gateway config (JSON, as the wasm filter
/// takes it) and the Envoy metrics defined for it.
pub struct Config {
    id: u64,
    bytes: Arc<[u8]>,
    /// (stat base name, label names joined by `,`) → (kind, Envoy's id).
    metrics: HashMap<(String, String), (u32, usize)>,
    /// Histogram series known from the config, defined without labels (the
    /// labels are in the name, for the bootstrap's tag rules, as the wasm
    /// build names its stats): full stat name → Envoy's id.
    plain_histograms: HashMap<Vec<u8>, usize>,
    /// Counter and gauge changes, summed and sent on an interval (none with
    /// `stats_flush_interval_ms: 0`: sent at once).
    flusher: Option<batch::Flusher>,
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

/// At most this many histogram series are defined ahead (each costs Envoy
/// a few KiB); a larger config records its histograms with labels.
const MAX_PLAIN_HISTOGRAMS: usize = 512;

/// The full stat names of every request-duration and time-to-first-token
/// series the config can produce: a team, a model it may call, and a
/// provider of that model's deployments. Recording into a series defined
/// with labels costs Envoy a lookup by the label values on every value;
/// one defined whole costs none. Empty if there are too many.
fn histogram_series(gw: &config::Gateway) -> Vec<String> {
    let mut out = Vec::new();
    for team in &gw.teams {
        for model in gw.models.iter().enumerate().filter(|(m, _)| team.may_use(*m)).map(|(_, model)| model) {
            let mut providers: Vec<&str> = model.deployments.iter().filter_map(|&d| gw.deployments.get(d)).map(|d| d.provider.name()).collect();
            providers.sort_unstable();
            providers.dedup();
            for provider in providers {
                for metric in [Metric::Duration, Metric::TimeToFirstToken] {
                    if out.len() == MAX_PLAIN_HISTOGRAMS {
                        return Vec::new();
                    }
                    out.push(crate::metrics::name(metric, &[("team", &team.id), ("model", &model.name), ("provider", provider)]));
                }
            }
        }
    }
    out
}

/// One metric the filter defined (by its stat name), as recorded here.
pub(crate) struct MetricSlot {
    pub kind: u32,
    /// Where changes are summed (counters, gauges) or queued (histograms),
    /// and the series there (its number, and its changes' sums).
    pub batch: Option<(Arc<batch::Batch>, batch::SeriesRef)>,
    /// None: no such series was defined (the change is dropped, and logged once).
    pub envoy_id: Option<usize>,
    pub values: Vec<Vec<u8>>,
    pub name: Vec<u8>,
}

/// A local reply the filter asked for, sent when its callback returns.
pub(crate) struct Reply {
    pub status: u32,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub details: Vec<u8>,
}

impl Reply {
    fn send(&self, filter: FilterEnvoy) {
        let mut headers: Vec<ModuleHeader> = self.headers.iter().map(|(k, v)| ModuleHeader::of(k, v)).collect();
        // Envoy would say "dynamic_module"; the rendered local-reply rules
        // leave replies marked `tollgate` alone.
        let details = if self.details.is_empty() { REPLY_DETAILS } else { &self.details };
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                filter,
                self.status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(&self.body),
                ModuleBuffer::of(details),
            );
        }
    }
}

/// An HTTP call's answer, while the filter reads it.
pub(crate) struct Call {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// What one worker thread holds for the hostcalls: the stream being served.
pub(crate) struct Worker {
    logger_started: bool,
    next_context: u32,
    pub filter: FilterEnvoy,
    pub context: u32,
    pub config_bytes: Option<Arc<[u8]>>,
    config: *const Config,
    pub request_headers_changed: bool,
    /// The current hook's view of a body (see `hostcalls::BodyView`).
    pub body_view: Option<hostcalls::BodyView>,
    pub reply: Option<Reply>,
    pub call: Option<Call>,
    /// (context, Envoy's callout id) → the token the filter was given.
    pub calls: HashMap<(u32, u64), u32>,
    pub next_token: u32,
    pub metrics: Vec<MetricSlot>,
    /// (config, stat name) → index in `metrics`.
    pub metric_ids: HashMap<(u64, Vec<u8>), u32>,
}

impl Worker {
    fn new() -> Self {
        Self {
            logger_started: false,
            next_context: 1,
            filter: std::ptr::null_mut(),
            context: 0,
            config_bytes: None,
            config: std::ptr::null(),
            request_headers_changed: false,
            body_view: None,
            reply: None,
            call: None,
            calls: HashMap::new(),
            next_token: 0,
            metrics: Vec::new(),
            metric_ids: HashMap::new(),
        }
    }

    fn config(&self) -> Option<&Config> {
        // SAFETY: Envoy keeps a filter config alive while its streams run,
        // and `config` is only set while serving one of them.
        unsafe { self.config.as_ref() }
    }

    pub fn config_id(&self) -> u64 {
        self.config().map_or(0, |c| c.id)
    }

    /// The Envoy metric for a stat name `base;label=value;…`.
    pub fn config_metric(&self, kind: u32, name: &[u8]) -> MetricSlot {
        let config = self.config();
        if let Some((c, &id)) = config.and_then(|c| Some((c, c.plain_histograms.get(name)?))).filter(|_| kind == HISTOGRAM) {
            let batch = c.flusher.as_ref().and_then(|f| f.batch.register(kind, id, &[]).map(|n| (Arc::clone(&f.batch), n)));
            return MetricSlot { kind, batch, envoy_id: Some(id), values: Vec::new(), name: name.to_vec() };
        }
        let text = String::from_utf8_lossy(name);
        let mut parts = text.split(SEPARATOR);
        let base = parts.next().unwrap_or_default().to_string();
        let (names, values): (Vec<&str>, Vec<Vec<u8>>) =
            parts.filter_map(|p| p.split_once('=')).map(|(k, v)| (k, v.as_bytes().to_vec())).unzip();
        let found = config.and_then(|c| c.metrics.get(&(base, names.join(",")))).filter(|(k, _)| *k == kind);
        if found.is_none() {
            log_message(3, format!("no Envoy metric is defined for {text}; its changes are dropped").as_bytes());
        }
        let envoy_id = found.map(|(_, id)| *id);
        let batch = match (config.and_then(|c| c.flusher.as_ref()), envoy_id) {
            (Some(f), Some(id)) => f.batch.register(kind, id, &values).map(|n| (Arc::clone(&f.batch), n)),
            _ => None,
        };
        MetricSlot { kind, batch, envoy_id, values, name: name.to_vec() }
    }
}

thread_local! {
    static WORKER: RefCell<Worker> = RefCell::new(Worker::new());
    /// This thread's root context of each config, by config id: one per
    /// config, as one wasm VM per worker. Borrowed only to make a request's
    /// context, which calls no host.
    static ROOTS: RefCell<Vec<(u64, Root)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's worker state. Never held across a call into
/// the filter (which calls back in here).
pub(crate) fn with_worker<T>(f: impl FnOnce(&mut Worker) -> T) -> T {
    WORKER.with(|w| f(&mut w.borrow_mut()))
}

pub(crate) fn log_message(level: u32, message: &[u8]) {
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message)) }
}

/// Serves one hook: sets the stream as current (restoring what was current
/// before, for hooks Envoy runs inside another), runs `f` on the stream,
/// then does what the filter asked to happen after it returns (a new route
/// match, a local reply). `missing` is the answer for a stream pointer
/// Envoy should never pass (null).
fn serve<T>(filter: FilterEnvoy, stream: *const c_void, missing: T, f: impl FnOnce(StreamRef) -> T) -> T {
    let stream = StreamRef(stream as *mut Stream);
    let Some((context, config)) = stream.plain() else { return missing };
    let before = with_worker(|w| {
        let before = (w.filter, w.context, w.config, w.config_bytes.take());
        w.filter = filter;
        w.context = context;
        w.config = config;
        w.body_view = None;
        before
    });
    let value = f(stream);
    let (changed, reply) = with_worker(|w| {
        let changed = std::mem::take(&mut w.request_headers_changed);
        (w.filter, w.context, w.config, w.config_bytes) = before;
        w.body_view = None;
        (changed, w.reply.take())
    });
    if changed && !filter.is_null() {
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(filter) };
    }
    if let Some(reply) = reply.filter(|_| !filter.is_null()) {
        reply.send(filter);
    }
    value
}

/// One HTTP stream: the filter's context for it.
struct Stream {
    /// Its number, for the hostcalls (an HTTP call's answer is filed under it).
    context: u32,
    config: *const Config,
    request: Request,
}

/// A live stream, as `serve` hands it to a hook.
#[derive(Clone, Copy)]
struct StreamRef(*mut Stream);

impl StreamRef {
    /// The stream's number and config, or None for a null pointer. Read
    /// through the pointer field by field, without a reference to the
    /// whole stream: a hook Envoy runs inside another reads them while the
    /// outer hook holds the context.
    fn plain(self) -> Option<(u32, *const Config)> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: the pointer `on_http_filter_new` returned, alive until
        // `on_http_filter_destroy`.
        unsafe { Some(((*self.0).context, (*self.0).config)) }
    }

    /// The stream's context, for the length of one hook.
    ///
    /// SAFETY (why this is sound): the pointer is live (`serve` checked
    /// it), and no other reference to the context is: Envoy runs one hook
    /// of a stream at a time, a local reply is sent only after the hook
    /// that asked for it has returned, and the one hook Envoy may run
    /// inside another (an HTTP call's answer, when the call fails as it is
    /// made) finds no token filed yet and returns before taking the context.
    fn request<'a>(self) -> &'a mut Request {
        // SAFETY: as above.
        unsafe { &mut (*self.0).request }
    }
}

/// The header count a proxy-wasm header hook is given. The filter never
/// reads it (it reads the headers it needs), so Envoy is not asked: 0.
const HEADER_COUNT: usize = 0;

/// The size of the body the filter sees (the bytes `hostcalls::with_body` lends).
fn body_size(filter: FilterEnvoy, request: bool) -> usize {
    unsafe { hostcalls::body_size(filter, request) }
}

/// A new request's context, from this thread's root context for `config`,
/// which is created (and configured) on the thread's first stream of that
/// config.
fn new_request(config: &Config, filter: FilterEnvoy) -> Request {
    let known = ROOTS.with(|r| r.borrow().iter().find(|(id, _)| *id == config.id).map(|(_, root)| root.new_request()));
    if let Some(request) = known {
        return request;
    }
    if !with_worker(|w| std::mem::replace(&mut w.logger_started, true)) {
        crate::filter::_initialize();
    }
    // A new config on this thread: first let go of the roots of configs
    // Envoy has since removed (a reload). They are dropped outside the
    // borrow.
    let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    let dead: Vec<(u64, Root)> = ROOTS.with(|r| {
        let mut roots = r.borrow_mut();
        let (kept, dead) = std::mem::take(&mut *roots).into_iter().partition(|(id, _)| live.contains(id));
        *roots = kept;
        dead
    });
    drop(dead);
    let before = with_worker(|w| {
        let before = (w.filter, w.context, w.config, w.config_bytes.take());
        w.filter = filter;
        w.context = 0;
        w.config = config;
        w.config_bytes = Some(Arc::clone(&config.bytes));
        before
    });
    let mut root = Root::default();
    if !(root.on_vm_start(0) && root.on_configure(config.bytes.len())) {
        log_message(4, b"configuring the gateway on a worker failed; its requests get a 500");
    }
    with_worker(|w| (w.filter, w.context, w.config, w.config_bytes) = before);
    let request = root.new_request();
    ROOTS.with(|r| r.borrow_mut().push((config.id, root)));
    request
}

/// The configs Envoy holds, by id (a worker drops the roots of the others).
static LIVE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    abi::ABI_VERSION.as_ptr()
}

/// Checks the gateway config (as `tollgate check` does) and defines its
/// metrics. A config that does not compile is refused: Envoy rejects it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(envoy: ConfigEnvoy, _name: EnvoyBuffer, config: EnvoyBuffer) -> *const c_void {
    let bytes: Arc<[u8]> = Arc::from(unsafe { config.bytes() });
    let checked = std::str::from_utf8(&bytes).map_err(|_| vec!["the filter config is not UTF-8".to_string()]).and_then(|text| {
        let file = config::parse_json(text).map_err(|e| vec![e.to_string()])?;
        let compiled = config::compile(&file, &ProcessEnv).map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        match config::native_unsupported(&compiled.gateway) {
            Some(why) => Err(vec![why.to_string()]),
            None => Ok((compiled.gateway.stats_flush_ms, histogram_series(&compiled.gateway))),
        }
    });
    let (flush_ms, series) = match checked {
        Ok(found) => found,
        Err(errors) => {
            for e in errors {
                log_message(4, format!("invalid config: {e}").as_bytes());
            }
            return std::ptr::null();
        }
    };
    let mut metrics = HashMap::new();
    for (metric, labels) in SERIES {
        let callers: &[&[&str]] = if BY_CALLER.contains(metric) { &[&[], &["key"], &["user"], &["key", "user"]] } else { &[&[]] };
        for who in callers {
            let names: Vec<&str> = labels.iter().chain(who.iter()).copied().collect();
            let mut buffers: Vec<ModuleBuffer> = names.iter().map(|n| ModuleBuffer::of(n.as_bytes())).collect();
            let (kind, define): (u32, unsafe extern "C" fn(ConfigEnvoy, ModuleBuffer, *mut ModuleBuffer, usize, *mut usize) -> u32) =
                match metric.kind() {
                    crate::metrics::Kind::Counter => (COUNTER, abi::envoy_dynamic_module_callback_http_filter_config_define_counter),
                    crate::metrics::Kind::Gauge => (GAUGE, abi::envoy_dynamic_module_callback_http_filter_config_define_gauge),
                    crate::metrics::Kind::Histogram => (HISTOGRAM, abi::envoy_dynamic_module_callback_http_filter_config_define_histogram),
                };
            let mut id = 0usize;
            let result = unsafe { define(envoy, ModuleBuffer::of(metric.base().as_bytes()), buffers.as_mut_ptr(), buffers.len(), &mut id) };
            if result == abi::METRICS_SUCCESS {
                metrics.insert((metric.base().to_string(), names.join(",")), (kind, id));
            } else {
                log_message(3, format!("defining metric {} {names:?} failed ({result})", metric.base()).as_bytes());
            }
        }
    }
    let mut plain_histograms = HashMap::new();
    for name in series {
        let (mut id, mut no_labels) = (0usize, Vec::<ModuleBuffer>::new());
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(envoy, ModuleBuffer::of(name.as_bytes()), no_labels.as_mut_ptr(), 0, &mut id)
        };
        if result == abi::METRICS_SUCCESS {
            plain_histograms.insert(name.into_bytes(), id);
        }
    }
    let flusher = (flush_ms > 0).then(|| batch::Flusher::start(envoy, std::time::Duration::from_millis(flush_ms))).flatten();
    let config = Config { id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed), bytes, metrics, plain_histograms, flusher };
    if let Ok(mut live) = LIVE.lock() {
        live.insert(config.id);
    }
    Box::into_raw(Box::new(config)) as *const c_void
}

/// The stats flush, on the main thread (see `batch`).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(envoy: ConfigEnvoy, config: *const c_void, _event: u64) {
    // SAFETY: the pointer `config_new` returned, alive until `config_destroy`.
    if let Some(config) = unsafe { (config as *const Config).as_ref() } {
        if let Some(f) = &config.flusher {
            f.batch.flush_when_idle(envoy);
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if !config.is_null() {
        // SAFETY: the pointer `config_new` returned, given back once.
        let config = unsafe { Box::from_raw(config as *mut Config) };
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&config.id);
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: *const c_void, filter: FilterEnvoy) -> *const c_void {
    // SAFETY: the pointer `config_new` returned; Envoy keeps it alive.
    let Some(config) = (unsafe { (config as *const Config).as_ref() }) else { return std::ptr::null() };
    let request = new_request(config, filter);
    let context = with_worker(|w| {
        let id = w.next_context;
        w.next_context = w.next_context.wrapping_add(1).max(1);
        id
    });
    Box::into_raw(Box::new(Stream { context, config, request })) as *const c_void
}

fn header_status(action: Action) -> u32 {
    if action == Action::Continue {
        abi::HEADERS_CONTINUE
    } else {
        abi::HEADERS_STOP_ITERATION
    }
}

fn body_status(action: Action) -> u32 {
    if action == Action::Continue {
        abi::BODY_CONTINUE
    } else {
        abi::BODY_STOP_ITERATION_AND_BUFFER
    }
}

fn trailers_status(action: Action) -> u32 {
    if action == Action::Continue {
        abi::TRAILERS_CONTINUE
    } else {
        abi::TRAILERS_STOP_ITERATION
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(filter: FilterEnvoy, stream: *const c_void, end_of_stream: bool) -> u32 {
    serve(filter, stream, abi::HEADERS_STOP_ITERATION, |s| {
        header_status(s.request().on_http_request_headers(HEADER_COUNT, end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(filter: FilterEnvoy, stream: *const c_void, end_of_stream: bool) -> u32 {
    serve(filter, stream, abi::BODY_STOP_ITERATION_AND_BUFFER, |s| {
        body_status(s.request().on_http_request_body(body_size(filter, true), end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(filter: FilterEnvoy, stream: *const c_void) -> u32 {
    serve(filter, stream, abi::TRAILERS_STOP_ITERATION, |s| {
        trailers_status(s.request().on_http_request_trailers(HEADER_COUNT))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(filter: FilterEnvoy, stream: *const c_void, end_of_stream: bool) -> u32 {
    serve(filter, stream, abi::HEADERS_STOP_ITERATION, |s| {
        header_status(s.request().on_http_response_headers(HEADER_COUNT, end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(filter: FilterEnvoy, stream: *const c_void, end_of_stream: bool) -> u32 {
    serve(filter, stream, abi::BODY_STOP_ITERATION_AND_BUFFER, |s| {
        body_status(s.request().on_http_response_body(body_size(filter, false), end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(filter: FilterEnvoy, stream: *const c_void) -> u32 {
    serve(filter, stream, abi::TRAILERS_STOP_ITERATION, |s| {
        trailers_status(s.request().on_http_response_trailers(HEADER_COUNT))
    })
}

/// The stream is over: the filter settles (as in a wasm VM: done, then
/// log; the context is dropped with the stream).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(filter: FilterEnvoy, stream: *const c_void) {
    serve(filter, stream, (), |s| {
        let request = s.request();
        request.on_done();
        request.on_log();
    });
    if let Some((_, config)) = StreamRef(stream as *mut Stream).plain() {
        // SAFETY: Envoy keeps the config alive while its streams run.
        if let Some(f) = unsafe { config.as_ref() }.and_then(|c| c.flusher.as_ref()) {
            f.batch.flush_at_request_end(filter);
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    if stream.is_null() {
        return;
    }
    // SAFETY: the pointer `filter_new` returned, given back once. A stream
    // that never completed is only forgotten (its context dropped), as a
    // wasm VM deletes a context it never logged.
    let stream = unsafe { Box::from_raw(stream as *mut Stream) };
    with_worker(|w| {
        if !w.calls.is_empty() {
            w.calls.retain(|(ctx, _), _| *ctx != stream.context);
        }
    });
    drop(stream);
}

/// An HTTP call's answer (a failed call has no headers): handed to the
/// filter as proxy-wasm hands it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter: FilterEnvoy,
    stream: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHeader,
    headers_size: usize,
    chunks: *mut EnvoyBuffer,
    chunks_size: usize,
) {
    serve(filter, stream, (), |s| {
        // The token is looked up before the context is taken.
        let Some((ctx, _)) = s.plain() else { return };
        let Some(token) = with_worker(|w| w.calls.remove(&(ctx, callout_id))) else { return };
        let call = unsafe {
            let headers: &[EnvoyHeader] =
                if headers.is_null() || result != abi::CALLOUT_SUCCESS { &[] } else { std::slice::from_raw_parts(headers, headers_size) };
            let chunks: &[EnvoyBuffer] = if chunks.is_null() { &[] } else { std::slice::from_raw_parts(chunks, chunks_size) };
            Call {
                headers: headers.iter().map(|h| h.pair()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
                body: chunks.iter().flat_map(|c| c.bytes().iter().copied()).collect(),
            }
        };
        let (n, size) = (call.headers.len(), call.body.len());
        with_worker(|w| w.call = Some(call));
        s.request().on_http_call_response(token, n, size, 0);
        with_worker(|w| w.call = None);
    });
}

// Hooks Envoy requires that Tollgate has no use for.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_filter: FilterEnvoy, _stream: *const c_void, _event: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: FilterEnvoy,
    _stream: *const c_void,
    _id: u64,
    _headers: *mut EnvoyHeader,
    _size: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter: FilterEnvoy,
    _stream: *const c_void,
    _id: u64,
    _data: *const EnvoyBuffer,
    _count: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter: FilterEnvoy,
    _stream: *const c_void,
    _id: u64,
    _trailers: *mut EnvoyHeader,
    _size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_filter: FilterEnvoy, _stream: *const c_void, _id: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_filter: FilterEnvoy, _stream: *const c_void, _id: u64, _reason: u32) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_filter: FilterEnvoy, _stream: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_filter: FilterEnvoy, _stream: *const c_void) {}
