//! HTTPS deployments through a real Envoy: an `api_base` of
//! `https://localhost:PORT/v1` is reached over TLS with SNI and certificate
//! verification (trusted CA from `--ca-file`, SAN matched on the host), and a
//! provider whose certificate does not verify is refused.
//!
//! The certificates are made at test time with the `openssl` CLI; the TLS
//! provider is a small Python (standard library only) HTTPS server that
//! records the SNI it was offered, every TLS handshake and every request.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Certificates

const OPENSSL: &str = "openssl";

/// Runs `openssl` in `dir` with the whitespace-separated words of `words`, then `more`.
fn openssl(dir: &Path, words: &str, more: &[&str]) {
    let mut args: Vec<&str> = words.split_whitespace().collect();
    args.extend_from_slice(more);
    let out = Command::new(OPENSSL)
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {OPENSSL}: {e}"));
    assert!(out.status.success(), "openssl {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// An openssl config with a CA section and a server section for `dns_name`.
fn write_openssl_config(dir: &Path, tag: &str, dns_name: &str) -> PathBuf {
    let path = dir.join(format!("{tag}.cnf"));
    std::fs::write(
        &path,
        format!(
            "[req]\n\
             distinguished_name = dn\n\
             [dn]\n\
             [v3_ca]\n\
             basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [v3_server]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:{dns_name}\n"
        ),
    )
    .unwrap();
    path
}

/// A certificate and its private key, as PEM files.
struct CertPair {
    cert: PathBuf,
    key: PathBuf,
}

/// A throwaway certificate authority in a scratch directory.
struct Pki {
    dir: PathBuf,
    ca: CertPair,
}

impl Pki {
    fn new() -> Pki {
        let dir = scratch_dir("pki");
        let cnf = write_openssl_config(&dir, "ca", "unused.invalid");
        let cnf = cnf.to_str().unwrap();
        openssl(
            &dir,
            "req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2",
            &["-subj", "/CN=Tollgate Test CA", "-config", cnf, "-extensions", "v3_ca"],
        );
        let ca = CertPair { cert: dir.join("ca.pem"), key: dir.join("ca.key") };
        Pki { dir, ca }
    }

    /// A server certificate for `dns_name`, signed by this CA.
    fn issue(&self, tag: &str, dns_name: &str) -> CertPair {
        let cnf = write_openssl_config(&self.dir, tag, dns_name);
        let (key, csr, cert) = (format!("{tag}.key"), format!("{tag}.csr"), format!("{tag}.pem"));
        let (cnf, subject) = (cnf.to_str().unwrap(), format!("/CN={dns_name}"));
        openssl(
            &self.dir,
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
            &["-keyout", &key, "-out", &csr, "-subj", &subject, "-config", cnf],
        );
        let (ca_cert, ca_key) = (self.ca.cert.to_str().unwrap(), self.ca.key.to_str().unwrap());
        openssl(
            &self.dir,
            "x509 -req -CAcreateserial -days 2 -extensions v3_server",
            &["-in", &csr, "-CA", ca_cert, "-CAkey", ca_key, "-out", &cert, "-extfile", cnf],
        );
        CertPair { cert: self.dir.join(cert), key: self.dir.join(key) }
    }

    /// A self-signed server certificate for `dns_name`: not from this CA.
    fn self_signed(&self, tag: &str, dns_name: &str) -> CertPair {
        let cnf = write_openssl_config(&self.dir, tag, dns_name);
        let (key, cert) = (format!("{tag}.key"), format!("{tag}.pem"));
        let (cnf, subject) = (cnf.to_str().unwrap(), format!("/CN={dns_name}"));
        openssl(
            &self.dir,
            "req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -extensions v3_server",
            &["-keyout", &key, "-out", &cert, "-subj", &subject, "-config", cnf],
        );
        CertPair { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// The HTTPS provider

/// argv: CERT KEY LOG. Prints its port once listening. Appends one JSON line
/// to LOG per event: {"event": "sni"|"handshake"|"tls_error"|"request", ...}.
const TLS_PROVIDER_PY: &str = r#"
import json, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key, log_path = sys.argv[1:4]
lock = threading.Lock()

def record(event):
    with lock:
        with open(log_path, "a") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

def on_sni(sslobj, name, context):
    record({"event": "sni", "name": name})
    return None

ctx.sni_callback = on_sni

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.request.settimeout(30)
        try:
            self.request = ctx.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            record({"event": "tls_error", "error": str(e)})
            raise
        record({"event": "handshake", "version": self.request.version()})
        super().setup()

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or "0"))

    def answer(self):
        body = self.read_body()
        record({
            "event": "request",
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
        })
        if self.command == "POST" and self.path.split("?")[0].endswith("/chat/completions"):
            try:
                model = json.loads(body).get("model")
            except ValueError:
                model = None
            status, out = 200, {
                "id": "chatcmpl-tls", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hello over TLS."}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        else:
            status, out = 404, {"error": {"message": "no such path", "type": "invalid_request_error",
                                          "param": None, "code": None}}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Fake-Provider", "tls")
        self.end_headers()
        self.wfile.write(data)

    do_POST = answer
    do_GET = answer

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass

httpd = Server(("127.0.0.1", 0), Handler)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;

/// The Python HTTPS provider on 127.0.0.1. Killed on drop.
struct TlsUpstream {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsUpstream {
    /// Starts the script until the port it binds is one no other test in
    /// this binary was given (see `common::claim_port`).
    fn start(pair: &CertPair) -> TlsUpstream {
        for _ in 0..20 {
            let up = TlsUpstream::start_once(pair);
            if claim_port(up.port) {
                return up;
            }
            // Dropped: the script is stopped, and its port released.
        }
        panic!("the TLS provider bound a port given to another test twenty times in a row");
    }

    fn start_once(pair: &CertPair) -> TlsUpstream {
        let dir = scratch_dir("tls-upstream");
        let script = dir.join("provider.py");
        std::fs::write(&script, TLS_PROVIDER_PY).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut child = Command::new(python_bin())
            .arg(&script)
            .arg(&pair.cert)
            .arg(&pair.key)
            .arg(dir.join("events.jsonl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // The script prints its port after bind() and listen(): from then on
        // connections are accepted. (No probe connection: it would show up
        // as a failed handshake in the events.)
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let port = match read.ok().and_then(|_| line.trim().parse::<u16>().ok()) {
            Some(port) => port,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the TLS provider did not start (stdout {line:?}):\n{}",
                    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                );
            }
        };
        TlsUpstream { child, port, dir }
    }

    fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
            .collect()
    }

    fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["event"] == kind).collect()
    }

    /// Waits until at least one event of this kind was recorded.
    fn wait_for(&self, kind: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.events_of(kind);
            if !found.is_empty() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("TLS provider events kept in {}", self.dir.display());
        }
    }
}

/// A header of a recorded request (case-insensitive).
fn header<'a>(req: &'a Value, name: &str) -> Option<&'a str> {
    req["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

// ---------------------------------------------------------------------------
// The gateway, rendered with --ca-file

/// Like `Gateway::start`, but rendered with `--ca-file`. Stopped on drop.
/// A gateway that trusts the test CA.
fn tls_gateway(config_yaml: &str, ca_file: &Path) -> Gateway {
    Gateway::start_rendered(config_yaml, &standard_env(), 2, &["--ca-file", ca_file.to_str().unwrap()])
}

fn tls_config(up: &TlsUpstream) -> String {
    let base = up.base_url();
    format!(
        r#"
model_list:
  - model_name: gpt-tls
    litellm_params:
      model: openai/gpt-4o-mini-2024-07-18
      api_base: {base}/v1
      api_key: os.environ/TEST_PROVIDER_KEY
user_access:
  - user_id: team-alpha
    models: [gpt-tls]
    max_budget: 500.0
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#
    )
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn https_deployment_is_reached_over_verified_tls_with_sni() {
    let pki = Pki::new();
    let server = pki.issue("localhost", "localhost");
    let up = TlsUpstream::start(&server);
    let gw = tls_gateway(&tls_config(&up), &pki.ca.cert);

    let r = gw.chat(ALPHA_KEY, "gpt-tls");
    assert_eq!(r.status, 200, "body: {}\nEnvoy log:\n{}", r.body, gw.log());
    assert_eq!(r.header("x-fake-provider"), Some("tls"));
    let answer = r.json();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gpt-4o-mini-2024-07-18", "the provider echoes the model it was sent");
    assert_eq!(answer["usage"]["total_tokens"], 15);

    // The TLS handshake offered SNI "localhost".
    let sni: Vec<Value> = up.events_of("sni").iter().map(|e| e["name"].clone()).collect();
    assert!(!sni.is_empty(), "the provider saw no SNI callback: {:?}", up.events());
    assert!(sni.iter().all(|n| n == "localhost"), "SNI offered: {sni:?}");
    assert!(up.events_of("tls_error").is_empty(), "failed handshakes: {:?}", up.events());
    assert!(gw.cluster_counter(".ssl.handshake") >= 1, "Envoy counted no upstream TLS handshake");

    // The provider got one request, with its own key and model.
    let reqs = up.events_of("request");
    assert_eq!(reqs.len(), 1, "requests: {reqs:?}");
    let req = &reqs[0];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/v1/chat/completions");
    assert_eq!(header(req, "host"), Some(format!("localhost:{}", up.port).as_str()));
    assert_eq!(header(req, "authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(body["messages"][0]["content"], "Hello!");
    // The team's key reaches the provider nowhere.
    assert!(!req.to_string().contains(ALPHA_KEY), "team key leaked upstream: {req}");
    assert_eq!(header(req, "x-tollgate-cluster"), None);
}

/// Sends one chat request to a provider whose certificate must not verify,
/// and checks that the client gets Envoy's 503 and the provider no request.
fn assert_refused(pki: &Pki, server: &CertPair, verify_counter: &str) {
    let up = TlsUpstream::start(server);
    let gw = tls_gateway(&tls_config(&up), &pki.ca.cert);

    let r = gw.chat(ALPHA_KEY, "gpt-tls");
    assert_eq!(r.status, 503, "body: {}\nEnvoy log:\n{}", r.body, gw.log());
    assert_eq!(r.header("x-fake-provider"), None, "the answer came from the untrusted provider");
    let v = r.assert_error(503, None);
    assert_eq!(v["error"]["type"], "gateway_error", "{}", r.body);
    assert!(!r.body.contains("chat.completion"), "{}", r.body);
    assert!(r.body.contains("CERTIFICATE_VERIFY_FAILED"), "not refused for its certificate: {}", r.body);

    // Envoy did reach the provider (so the refusal is the certificate's), and
    // the handshake failed there before any HTTP was sent.
    let failed = up.wait_for("tls_error", Duration::from_secs(5));
    assert!(!failed.is_empty(), "the provider saw no failed handshake: {:?}", up.events());
    assert!(up.events_of("handshake").is_empty(), "a handshake succeeded: {:?}", up.events());
    assert!(up.events_of("request").is_empty(), "the untrusted provider got a request: {:?}", up.events());
    assert!(
        gw.cluster_counter(verify_counter) >= 1,
        "Envoy's {verify_counter} counter did not move\nrendered:\n{}",
        gw.rendered()
    );
}

#[test]
fn provider_with_a_certificate_not_from_the_trusted_ca_is_refused() {
    let pki = Pki::new();
    let rogue = pki.self_signed("rogue", "localhost");
    assert_refused(&pki, &rogue, ".ssl.fail_verify_error");
}

#[test]
fn provider_whose_certificate_names_another_host_is_refused() {
    let pki = Pki::new();
    // Signed by the trusted CA, but for another name: the SAN match refuses it.
    let other = pki.issue("other", "other.example");
    assert_refused(&pki, &other, ".ssl.fail_verify_san");
}
