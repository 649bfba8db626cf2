//! Test harness: a real Envoy running the built tollgate.wasm, on ephemeral
//! loopback ports, plus HTTP clients. `make test` builds everything first and
//! exports where it is (TOLLGATE_ENVOY, TOLLGATE_WASM, TOLLGATE_CLI,
//! TOLLGATE_PYTHON); run outside make, the defaults point at the same places.
#![allow(dead_code)]

pub mod anthropic_api;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use upstream::Upstream;

pub const PROVIDER_KEY: &str = "sk-upstream-secret-provider-key";
pub const ALPHA_KEY: &str = "team-alpha-token";
pub const BETA_KEY: &str = "team-beta-token";
/// sha256("team-beta-token"), as in the issue's example config.
pub const BETA_DIGEST: &str = "cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| root().join(default));
    assert!(
        path.exists(),
        "{} not found (set {var}, or run the tests with `make test`, which builds and installs it)",
        path.display()
    );
    path
}

pub fn envoy_bin() -> PathBuf {
    tool("TOLLGATE_ENVOY", ".venv/bin/envoy")
}
pub fn wasm_path() -> PathBuf {
    tool("TOLLGATE_WASM", "target/wasm32-wasip1/release/tollgate.wasm")
}
/// Whether the gateways under test run the native build.
pub fn native() -> bool {
    std::env::var("TOLLGATE_NATIVE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What `tollgate render` says when it refuses a config.
pub fn render_error(config_yaml: &str, env: &[(String, String)]) -> String {
    let dir = scratch_dir("render");
    let config = dir.join("config.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    let out = Command::new(cli_bin())
        .arg("render")
        .arg(&config)
        .args(filter_args())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!out.status.success(), "tollgate render accepted the config");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The filter the gateways under test load: tollgate.wasm, or with
/// `TOLLGATE_NATIVE=1` the native build (`make test` runs both).
pub fn filter_args() -> [String; 2] {
    if native() {
        let so = tool("TOLLGATE_NATIVE_LIB", "target/native/release/libtollgate.so");
        ["--native".to_string(), so.to_string_lossy().into_owned()]
    } else {
        ["--wasm".to_string(), wasm_path().to_string_lossy().into_owned()]
    }
}

pub fn cli_bin() -> PathBuf {
    tool("TOLLGATE_CLI", "target/tools/tollgate")
}
pub fn python_bin() -> PathBuf {
    tool("TOLLGATE_PYTHON", ".venv/bin/python")
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        tag
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A listener on a loopback port no other part of this test binary was
/// given. The kernel may hand a just-released port out again, so a port
/// from `free_port` that a test has not yet started its server on could
/// otherwise be bound by a second test, or returned to it by `free_port`.
pub fn loopback_listener() -> TcpListener {
    let mut given = given_ports();
    // Ports refused are held until the loop ends, so the kernel moves on.
    let mut refused = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("a bound listener's address").port();
        if given.contains(&port) {
            refused.push(listener);
            continue;
        }
        given.push(port);
        return listener;
    }
}

/// The ports given out so far in this test binary.
fn given_ports() -> std::sync::MutexGuard<'static, Vec<u16>> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// For a server that binds its own port (a child process): records `port`
/// as given and returns true, or returns false when it was given out
/// already, to a test that may not have bound it yet. The caller then
/// starts its server again.
#[allow(dead_code)]
pub fn claim_port(port: u16) -> bool {
    let mut given = given_ports();
    if given.contains(&port) {
        return false;
    }
    given.push(port);
    true
}

/// A loopback port nothing listens on, never given out twice (see above).
pub fn free_port() -> u16 {
    loopback_listener().local_addr().unwrap().port()
}

/// The standard test config: four models on one fake upstream.
/// - gpt-4o-mini is renamed upstream (openai/gpt-4o-mini-2024-07-18),
/// - gpt-4.1-mini sits under a deeper base path,
/// - claude-3-5-haiku is an anthropic deployment,
/// - text-embedding-3-small for embeddings.
///
/// team-alpha (key from the environment) may use all of them;
/// team-beta (key stored as a sha256 digest) only gpt-4o-mini.
pub fn standard_config(up: &Upstream) -> String {
    let base = up.base_url();
    format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini-2024-07-18
      api_base: {base}/v1
      api_key: os.environ/TEST_PROVIDER_KEY
  - model_name: gpt-4.1-mini
    litellm_params:
      model: openai/gpt-4.1-mini
      api_base: {base}/custom/prefix/v1/
      api_key: os.environ/TEST_PROVIDER_KEY
  - model_name: claude-3-5-haiku
    litellm_params:
      model: anthropic/claude-3-5-haiku-latest
      api_base: {base}
      api_key: os.environ/TEST_PROVIDER_KEY
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {base}/v1
      api_key: os.environ/TEST_PROVIDER_KEY
router_settings:
  routing_strategy: simple-shuffle
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini, gpt-4.1-mini, claude-3-5-haiku, text-embedding-3-small]
    max_budget: 500.0
    api_keys: [os.environ/TEAM_ALPHA_KEY]
  - user_id: team-beta
    models: [gpt-4o-mini]
    max_budget: 200.0
    api_keys: ["sha256:{BETA_DIGEST}"]
"#
    )
}

pub fn standard_env() -> Vec<(String, String)> {
    vec![
        ("TEST_PROVIDER_KEY".to_string(), PROVIDER_KEY.to_string()),
        ("TEAM_ALPHA_KEY".to_string(), ALPHA_KEY.to_string()),
    ]
}

/// A real Envoy running tollgate.wasm with a given config. Stopped on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
}

impl Gateway {
    pub fn start(config_yaml: &str, env: &[(String, String)]) -> Gateway {
        Self::start_with(config_yaml, env, 2)
    }

    pub fn standard(up: &Upstream) -> Gateway {
        Self::start(&standard_config(up), &standard_env())
    }

    pub fn start_with(config_yaml: &str, env: &[(String, String)], concurrency: u32) -> Gateway {
        Self::start_rendered(config_yaml, env, concurrency, &[])
    }

    /// Starts with extra `tollgate render` arguments (`--ca-file ...`).
    pub fn start_rendered(config_yaml: &str, env: &[(String, String)], concurrency: u32, render_args: &[&str]) -> Gateway {
        // free_port() releases the port before Envoy binds it, so another
        // process can take it in between: then start again on new ports.
        for _ in 0..5 {
            match Self::try_start(config_yaml, env, concurrency, render_args) {
                Ok(gw) => return gw,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("Envoy did not start:\n{log}"),
            }
        }
        panic!("Envoy found no free ports in 5 tries");
    }

    fn try_start(config_yaml: &str, env: &[(String, String)], concurrency: u32, render_args: &[&str]) -> Result<Gateway, String> {
        let dir = scratch_dir("gw");
        let config = dir.join("config.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        let port = free_port();
        let admin_port = free_port();
        let rendered = dir.join("envoy.yaml");
        let out = Command::new(cli_bin())
            .arg("render")
            .arg(&config)
            .args(filter_args())
            .args(["--port", &port.to_string(), "--admin-port", &admin_port.to_string()])
            .args(["--out", rendered.to_str().unwrap()])
            .args(render_args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(out.status.success(), "tollgate render failed: {}", String::from_utf8_lossy(&out.stderr));

        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&rendered)
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .args(["--concurrency", &concurrency.to_string()])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Gateway { child, port, admin_port, dir };
        gw.wait_ready().map(|()| gw)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("Envoy exited during start-up ({status}):\n{}", self.log()));
            }
            if let Ok(r) = get(&format!("http://127.0.0.1:{}/ready", self.admin_port), None) {
                // Ready, and ours: not some other process on a reused port.
                if r.status == 200 && self.child.try_wait().unwrap().is_none() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("Envoy was not ready after 30 s:\n{}", self.log()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The Envoy config `tollgate render` wrote.
    pub fn rendered(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.yaml")).unwrap_or_default()
    }

    /// The sum over all clusters of the Envoy counters whose names end with `suffix`.
    pub fn cluster_counter(&self, suffix: &str) -> u64 {
        let stats = get(&format!("http://127.0.0.1:{}/stats", self.admin_port), None).unwrap();
        stats
            .body
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(name, _)| name.starts_with("cluster.") && name.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// The value of one series on `/metrics`, written in full
    /// (`name{label="value",...}`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = get(&self.url("/metrics"), None).unwrap().body;
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// Waits (up to 12 s) for a series to reach a value: counters reach
    /// Envoy on the filter's flush timer.
    pub fn wait_metric(&self, series: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            let got = self.metric(series);
            if got == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {got:?}, expected {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Posts JSON text with a team key.
    pub fn post(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        post_bytes(&self.url(path), key, body.as_bytes(), &[]).unwrap()
    }

    /// Posts a chat completion for a model.
    pub fn chat(&self, key: &str, model: &str) -> Resp {
        self.post("/v1/chat/completions", Some(key), &chat_body(model))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("Envoy log kept in {}", self.dir.display());
        }
    }
}

pub fn chat_body(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello!"}],
        "temperature": 0.2
    })
    .to_string()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): status {} body {:?}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts an OpenAI-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: Option<&str>) -> serde_json::Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        let v = self.json();
        let err = &v["error"];
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "no error message: {}", self.body);
        assert!(err["type"].is_string(), "no error type: {}", self.body);
        assert!(err.get("param").is_some() && err.get("code").is_some(), "param/code missing: {}", self.body);
        match code {
            Some(c) => assert_eq!(err["code"], c, "{}", self.body),
            None => assert!(err["code"].is_null(), "{}", self.body),
        }
        v
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn collect(r: ureq::http::Response<ureq::Body>) -> Result<Resp, ureq::Error> {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = r.into_body().with_config().limit(64 << 20).read_to_string()?;
    Ok(Resp { status, headers, body })
}

pub fn get(url: &str, key: Option<&str>) -> Result<Resp, ureq::Error> {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("authorization", &format!("Bearer {k}"));
    }
    collect(req.call()?)
}

pub fn post_bytes(url: &str, key: Option<&str>, body: &[u8], headers: &[(&str, &str)]) -> Result<Resp, ureq::Error> {
    let mut req = agent().post(url).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", &format!("Bearer {k}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    collect(req.send(body)?)
}

/// Sends raw bytes over TCP and returns the status code and raw response.
/// For what ordinary clients refuse to send (non-UTF-8 header values, chunked bodies).
/// One read from a socket, retried when a signal interrupts it. A socket
/// with a read timeout reports EINTR even without a signal handler when the
/// process is stopped and continued (signal(7)), as a CI machine may do.
pub fn read_some(conn: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match conn.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn raw_request(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Write from another thread: a server may answer (413) and close before
    // the whole request is written, as HTTP allows.
    let mut writer = s.try_clone().unwrap();
    let request = request.to_vec();
    let write = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match read_some(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if response_complete(&out) {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = write.join();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn response_complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some(end) = text.find("\r\n\r\n") else { return false };
    let len = text[..end]
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()));
    match len {
        Some(len) => out.len() >= end + 4 + len.parse::<usize>().unwrap(),
        None => false,
    }
}

/// A POST with a JSON body over a raw connection, for bodies too large to
/// send before the gateway answers.
pub fn raw_post(port: u16, path: &str, key: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw_request(port, &request)
}

/// Base64url without padding (JWT and JWK encoding).
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
