//! A fake model provider for integration tests: a small HTTP/1.1 server (std only)
//! that records every request it receives and answers with whatever the test's
//! handler returns. Supports keep-alive, chunked request bodies, `Expect:
//! 100-continue`, chunked (streaming) replies with delays between parts, and
//! hanging up without an answer.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest accepted request line or header line.
const MAX_LINE: u64 = 64 * 1024;
/// Largest accepted total size of a request's header section.
const MAX_HEAD: usize = 1024 * 1024;
/// Largest accepted request body (tests need 50 MB; leave plenty of room).
const MAX_BODY: u64 = 512 * 1024 * 1024;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The request-target as received, including any query string.
    pub path: String,
    /// Header names lower-cased, values with surrounding whitespace trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of headers with this name (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The body as (lossy) UTF-8 text.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with a description of the request if it is not JSON.
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "upstream request {} {} does not have a JSON body ({e}); content-type: {:?}, {} body bytes: {}",
                self.method,
                self.path,
                self.header("content-type"),
                self.body.len(),
                preview(&self.body),
            ),
        }
    }
}

/// What the upstream sends back for one request.
pub enum Reply {
    /// A complete response with Content-Length.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked response (Transfer-Encoding: chunked), each part flushed as its own
    /// chunk after sleeping `delay` before it.
    Chunked {
        status: u16,
        headers: Vec<(String, String)>,
        parts: Vec<(Duration, Vec<u8>)>,
    },
    /// Close the connection without answering (simulates a crashed provider).
    Hangup,
}

impl Reply {
    /// A complete JSON response (`content-type: application/json`).
    pub fn json(status: u16, value: Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: serde_json::to_vec(&value).expect("serialize JSON reply"),
        }
    }

    /// A complete plain-text response.
    pub fn text(status: u16, text: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".to_string(), "text/plain; charset=utf-8".to_string())],
            body: text.as_bytes().to_vec(),
        }
    }

    /// A streamed Server-Sent-Events response: one chunk per part (already-formatted
    /// event bytes, see [`sse_data`]), each sent after its delay.
    pub fn sse(status: u16, parts: Vec<(Duration, Vec<u8>)>) -> Reply {
        Reply::Chunked {
            status,
            headers: vec![
                ("content-type".to_string(), "text/event-stream".to_string()),
                ("cache-control".to_string(), "no-cache".to_string()),
            ],
            parts,
        }
    }

    /// An OpenAI-shaped error response.
    pub fn openai_error(status: u16, message: &str, kind: &str) -> Reply {
        Reply::json(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        )
    }
}

/// One SSE event carrying `value` as JSON: `data: {...}\n\n`.
pub fn sse_data(value: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(value).expect("serialize SSE event"));
    out.extend_from_slice(b"\n\n");
    out
}

/// The terminating SSE event of an OpenAI stream: `data: [DONE]\n\n`.
pub fn sse_done() -> Vec<u8> {
    b"data: [DONE]\n\n".to_vec()
}

pub type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync + 'static;

// ---------------------------------------------------------------------------
// Default OpenAI-compatible behaviour
// ---------------------------------------------------------------------------

const CREATED: u64 = 1_700_000_000;
const ANSWER: &str = "Hello from the fake upstream.";
const ANSWER_PIECES: [&str; 4] = ["Hello", " from the", " fake", " upstream."];

fn usage_completion() -> Value {
    json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
}

/// The default OpenAI-compatible behaviour (what [`Upstream::openai`] serves):
///
/// * `POST …/chat/completions` → a `chat.completion` echoing the request's `model`, usage
///   10/5/15. With `"stream": true` it streams `chat.completion.chunk` SSE events instead
///   (plus a usage chunk if `stream_options.include_usage` is true) ending in `[DONE]`.
/// * `POST …/completions` → a `text_completion` likewise (streamed if `"stream": true`).
/// * `POST …/embeddings` → a `list` with one embedding `[0.1, 0.2, 0.3]`, usage 8/8.
/// * A body that is not a JSON object, or has no `model`, on those paths → 400 OpenAI error.
/// * `POST …/v1/messages` → the fake Anthropic API in `anthropic_api`.
/// * Anything else → 404 OpenAI-shaped error.
pub fn openai_reply(req: &Recorded) -> Reply {
    let path = req.path_only();
    if req.method == "POST" && path.ends_with("/v1/messages") {
        return super::anthropic_api::reply(req);
    }
    let kind = if req.method != "POST" {
        None
    } else if path.ends_with("/chat/completions") {
        Some("chat")
    } else if path.ends_with("/completions") {
        Some("completions")
    } else if path.ends_with("/embeddings") {
        Some("embeddings")
    } else {
        None
    };
    let Some(kind) = kind else {
        return Reply::openai_error(
            404,
            &format!("Unknown request URL: {} {}. Please check the URL for typos.", req.method, req.path),
            "invalid_request_error",
        );
    };

    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Reply::openai_error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
            )
        }
    };
    let model = match body.get("model") {
        Some(m) if !m.is_null() => m.clone(),
        _ => {
            return Reply::openai_error(
                400,
                "you must provide a model parameter",
                "invalid_request_error",
            )
        }
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    match (kind, stream) {
        ("chat", false) => Reply::json(
            200,
            json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": usage_completion()
            }),
        ),
        ("chat", true) => {
            let chunk = |delta: Value, finish: Value| {
                json!({
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
                })
            };
            let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
            for piece in ANSWER_PIECES {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
            if include_usage {
                events.push(json!({
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "choices": [],
                    "usage": usage_completion()
                }));
            }
            sse_reply(events)
        }
        ("completions", false) => Reply::json(
            200,
            json!({
                "id": "cmpl-test",
                "object": "text_completion",
                "created": CREATED,
                "model": model,
                "choices": [{"text": ANSWER, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": usage_completion()
            }),
        ),
        ("completions", true) => {
            let chunk = |text: &str, finish: Value| {
                json!({
                    "id": "cmpl-test",
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]
                })
            };
            let mut events: Vec<Value> =
                ANSWER_PIECES.iter().map(|p| chunk(p, Value::Null)).collect();
            events.push(chunk("", json!("stop")));
            if include_usage {
                events.push(json!({
                    "id": "cmpl-test",
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [],
                    "usage": usage_completion()
                }));
            }
            sse_reply(events)
        }
        _ => Reply::json(
            200,
            json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": model,
                "usage": {"prompt_tokens": 8, "total_tokens": 8}
            }),
        ),
    }
}

fn sse_reply(events: Vec<Value>) -> Reply {
    let mut parts: Vec<(Duration, Vec<u8>)> =
        events.iter().map(|e| (Duration::ZERO, sse_data(e))).collect();
    parts.push((Duration::ZERO, sse_done()));
    Reply::sse(200, parts)
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<Recorded>>,
    arrived: Condvar,
    stop: AtomicBool,
    /// Open connections (clones), so Drop can shut them down.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// Lock, ignoring poisoning (a panicking test thread must not cascade).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake upstream HTTP server on 127.0.0.1 with an ephemeral port. Stops on drop.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Listen on a loopback port of its own (`loopback_listener`) and serve in
    /// background threads (one per connection, keep-alive).
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = super::loopback_listener();
        let addr = listener.local_addr().expect("fake upstream: local_addr");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("upstream-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .expect("fake upstream: spawn accept thread");
        Upstream { addr, shared, acceptor: Some(acceptor) }
    }

    /// An upstream serving [`openai_reply`].
    pub fn openai() -> Upstream {
        Upstream::start(openai_reply)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// All requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Wait up to `timeout` until at least `n` requests were recorded; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut reqs = lock(&self.shared.requests);
        loop {
            if reqs.len() >= n {
                return reqs.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> =
                    reqs.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
                panic!(
                    "fake upstream on port {}: expected at least {n} request(s) within {timeout:?}, got {}: {seen:?}",
                    self.addr.port(),
                    reqs.len(),
                );
            }
            reqs = self
                .shared
                .arrived
                .wait_timeout(reqs, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock accept() by connecting to ourselves; only join if that worked.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(h) = self.acceptor.take() {
            if woke {
                let _ = h.join();
            }
        }
        // End idle keep-alive connections so their threads exit.
        for (_, c) in lock(&self.shared.conns).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // E.g. out of file descriptors: back off briefly and retry.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.conns).insert(id, clone);
        }
        let s = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("upstream-conn-{id}"))
            .spawn(move || {
                // Errors (client went away, bad request) just end the connection quietly.
                let _ = serve_connection(stream, &s);
                lock(&s.conns).remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.conns).remove(&id);
        }
    }
}

/// Why a request could not be read.
enum ReadError {
    /// The peer closed the connection cleanly before a new request started.
    Closed,
    /// Malformed request: answer 400 and close.
    Bad(String),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError::Bad(msg.into()))
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);

    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (req, keep_alive) = match read_request(&mut reader, &mut writer) {
            Ok(r) => r,
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return Ok(()),
            Err(ReadError::Bad(msg)) => {
                let reply = Reply::text(400, &format!("bad request: {msg}\n"));
                let _ = write_reply(&mut writer, reply, false, false);
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
        };

        // Record before answering so tests see it even on Hangup.
        {
            let mut reqs = lock(&shared.requests);
            reqs.push(req.clone());
            shared.arrived.notify_all();
        }

        let head_only = req.method == "HEAD";
        let (reply, keep_alive) = match catch_unwind(AssertUnwindSafe(|| (shared.handler)(&req))) {
            Ok(reply) => (reply, keep_alive),
            Err(_) => (Reply::text(500, "fake upstream handler panicked\n"), false),
        };
        if matches!(reply, Reply::Hangup) {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
        let keep_alive = write_reply(&mut writer, reply, keep_alive, head_only)?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Read one line (up to and including LF) with a length limit; strips CRLF / LF.
/// Returns None on EOF before any byte.
fn read_line<R: BufRead>(reader: &mut R) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if n as u64 >= MAX_LINE {
            return bad("line too long");
        }
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-line",
        )));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn read_request<R: BufRead, W: Write>(
    reader: &mut R,
    writer: &mut W,
) -> Result<(Recorded, bool), ReadError> {
    // Request line (skipping stray empty lines between requests, as RFC 9112 allows).
    let request_line = loop {
        match read_line(reader)? {
            None => return Err(ReadError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let request_line = String::from_utf8_lossy(&request_line).into_owned();
    let mut parts = request_line.split_whitespace();
    let (method, path, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v), None) => (m.to_string(), p.to_string(), v.to_string()),
        _ => return bad(format!("malformed request line {request_line:?}")),
    };
    if !version.starts_with("HTTP/1.") {
        return bad(format!("unsupported version {version:?}"));
    }

    // Header section.
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut head_size = request_line.len();
    loop {
        let line = match read_line(reader)? {
            None => {
                return Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in headers",
                )))
            }
            Some(l) => l,
        };
        if line.is_empty() {
            break;
        }
        head_size += line.len();
        if head_size > MAX_HEAD {
            return bad("header section too large");
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.starts_with(' ') || line.starts_with('\t') {
            // Obsolete line folding: continue the previous value.
            match headers.last_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                None => return bad("continuation line before any header"),
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            return bad(format!("malformed header line {line:?}"));
        };
        let name = name.trim();
        if name.is_empty() {
            return bad("empty header name");
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }

    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let has_token = |n: &str, token: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };

    let keep_alive = if version == "HTTP/1.0" {
        has_token("connection", "keep-alive")
    } else {
        !has_token("connection", "close")
    };

    // How the body is framed.
    let te: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let chunked = match te.last() {
        None => false,
        Some(t) if t == "chunked" => true,
        Some(t) => return bad(format!("unsupported transfer-encoding {t:?}")),
    };
    let content_length = if chunked {
        None
    } else {
        match get("content-length") {
            None => None,
            Some(v) => {
                // Tolerate a repeated identical list ("5, 5").
                let first = v.split(',').next().unwrap_or("").trim();
                match first.parse::<u64>() {
                    Ok(n) if n <= MAX_BODY => Some(n),
                    Ok(_) => return bad("content-length too large"),
                    Err(_) => return bad(format!("invalid content-length {v:?}")),
                }
            }
        }
    };

    let expects_body = chunked || content_length.is_some_and(|n| n > 0);
    if expects_body && get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }

    let body = if chunked {
        read_chunked(reader)?
    } else if let Some(n) = content_length {
        let mut body = Vec::with_capacity(n.min(64 * 1024 * 1024) as usize);
        reader.by_ref().take(n).read_to_end(&mut body)?;
        if (body.len() as u64) < n {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-body",
            )));
        }
        body
    } else {
        Vec::new()
    };

    Ok((Recorded { method, path, headers, body }, keep_alive))
}

fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ReadError> {
    let eof = || {
        ReadError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-chunk"))
    };
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(eof)?;
        let line = String::from_utf8_lossy(&line).into_owned();
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = match u64::from_str_radix(size_str, 16) {
            Ok(s) => s,
            Err(_) => return bad(format!("invalid chunk size line {line:?}")),
        };
        if size == 0 {
            // Trailer section up to an empty line; trailers are not recorded.
            loop {
                let t = read_line(reader)?.ok_or_else(eof)?;
                if t.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() as u64 + size > MAX_BODY {
            return bad("chunked body too large");
        }
        let before = body.len();
        reader.by_ref().take(size).read_to_end(&mut body)?;
        if ((body.len() - before) as u64) < size {
            return Err(eof());
        }
        // The CRLF (or bare LF) after the chunk data.
        match read_line(reader)? {
            Some(l) if l.is_empty() => {}
            Some(_) => return bad("missing CRLF after chunk data"),
            None => return Err(eof()),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// Status line plus headers (minus any framing headers the handler supplied, which we
/// set ourselves). Returns the head (without the final blank line) and whether the
/// connection stays open.
fn response_head(status: u16, headers: &[(String, String)], keep_alive: bool) -> (Vec<u8>, bool) {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let mut keep_alive = keep_alive;
    let mut handler_connection = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        if k.eq_ignore_ascii_case("connection") {
            handler_connection = true;
            if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                keep_alive = false;
            }
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !handler_connection {
        head.push_str(if keep_alive { "connection: keep-alive\r\n" } else { "connection: close\r\n" });
    }
    (head.into_bytes(), keep_alive)
}

/// Write a reply (not Hangup). Returns whether the connection may be reused.
fn write_reply<W: Write>(w: &mut W, reply: Reply, keep_alive: bool, head_only: bool) -> io::Result<bool> {
    match reply {
        Reply::Hangup => Ok(false),
        Reply::Full { status, headers, body } => {
            let (mut out, keep_alive) = response_head(status, &headers, keep_alive);
            let no_body = status < 200 || status == 204 || status == 304;
            if !no_body {
                out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            if !no_body && !head_only {
                out.extend_from_slice(&body);
            }
            w.write_all(&out)?;
            w.flush()?;
            Ok(keep_alive)
        }
        Reply::Chunked { status, headers, parts } => {
            let (mut out, keep_alive) = response_head(status, &headers, keep_alive);
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            w.write_all(&out)?;
            w.flush()?;
            if head_only {
                return Ok(keep_alive);
            }
            for (delay, data) in parts {
                if !delay.is_zero() {
                    thread::sleep(delay);
                }
                // An empty chunk would end the body early; skip it (the delay still applies).
                if data.is_empty() {
                    continue;
                }
                let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                w.write_all(&chunk)?;
                w.flush()?;
            }
            w.write_all(b"0\r\n\r\n")?;
            w.flush()?;
            Ok(keep_alive)
        }
    }
}

fn preview(body: &[u8]) -> String {
    const MAX: usize = 500;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).into_owned();
    if body.len() > MAX {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}
