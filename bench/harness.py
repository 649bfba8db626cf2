"""What the benchmark's scripts share: where the tools are, the processes
they start (Envoys pinned to a CPU, the upstreams, the load tool's runs),
and the request bodies.

`run.py` (make bench) measures and reports with these; `pgo_train.py`
(the native build's training run) and `instructions.py` (make
bench-instructions) drive traffic with them. Kept apart from `run.py` so
that a change to the benchmark's report does not change the training run,
and so the native module that `make` builds.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY = os.environ.get("TOLLGATE_ENVOY", str(ROOT / ".venv/bin/envoy"))
CLI = str(ROOT / "target/tools/tollgate")
WASM = str(ROOT / "target/wasm32-wasip1/release/tollgate.wasm")
FLOOR_WASM = str(ROOT / "target/floor/wasm32-wasip1/release/tollgate.wasm")
NATIVE_LIB = str(ROOT / "target/native/release/libtollgate.so")
LOAD = str(ROOT / "target/bench/release/tollgate-bench")

# The proxies under test run on one CPU; the load tool and upstreams on the other.
PROXY_CPU, LOAD_CPU = "0", "1"
TEAM_KEY = "bench-team-key-0123456789"

WORK = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
PROCS = []


GIVEN_PORTS = set()


def free_port():
    """A loopback port nothing listens on, never the same one twice in a
    run: the kernel can hand a just-closed port out again before the server
    it was picked for has bound it."""
    import socket
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in GIVEN_PORTS:
            GIVEN_PORTS.add(port)
            return port


def pinned(cpu, argv, **kw):
    p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdin=subprocess.DEVNULL, **kw)
    PROCS.append(p)
    return p


def wait_ready(admin_port, proc, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited during start-up; see {WORK}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1).read() == b"LIVE\n":
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} was not ready after {seconds} s; see {WORK}")


def start_envoy(name, config, cpu, env=None):
    path = WORK / f"{name}.json"
    path.write_text(json.dumps(config))
    log = open(WORK / f"{name}.log", "w")
    p = pinned(cpu, [ENVOY, "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
                     "--log-level", "warn"], stdout=log, stderr=log, env=env)
    wait_ready(config["admin"]["address"]["socket_address"]["port_value"], p, name)
    return p


def start_upstream(port, admin_port, answers=None):
    """Envoy answering every request at once, on the load generator's CPU:
    by path prefix, the first of `answers` that matches (JSON bodies)."""
    answers = answers or [("/", COMPLETION)]
    json_type = [{"header": {"key": "content-type", "value": "application/json"}}]
    routes = [{"match": {"prefix": prefix}, "direct_response": {"status": 200, "body": {"inline_string": body}},
               "response_headers_to_add": json_type} for prefix, body in answers]
    # The buffer filter reads the whole request before the direct response,
    # so the connection stays open for the next one.
    buffer = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    return start_envoy("upstream", {"admin": admin(admin_port),
                                    "static_resources": {"listeners": [listener("upstream", port, routes, filters=[buffer])]}},
                       LOAD_CPU)


def admin(port):
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def listener(name, port, routes, filters=()):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 17825792,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": list(filters) + [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
    }


def cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello! How can I help you today?"}}],
    "usage": {"prompt_tokens": 250, "completion_tokens": 9, "total_tokens": 259, "prompt_tokens_details": {"cached_tokens": 0}},
})


def body(size, model="gpt-4o-mini", stream=False):
    base = {"model": model, "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                         {"role": "user", "content": ""}], "max_tokens": 256}
    if stream:
        base["stream"] = True
    pad = size - len(json.dumps(base))
    base["messages"][1]["content"] = ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:max(pad, 0)]
    return json.dumps(base)


class Arm:
    """Where an arm listens, what path and key it takes, and which body file
    (by size label) to send: the peers name the model their own way."""

    def __init__(self, port, path="/v1/chat/completions", key=TEAM_KEY, bodies=None):
        self.port, self.path, self.key, self.bodies = port, path, key, bodies


def load(arm, label, connections=1, rate=0, duration=2.0, warmup=0.5, retried=False):
    argv = [LOAD, "load", "--url", f"http://127.0.0.1:{arm.port}{arm.path}", "--body-file", str(arm.bodies[label]),
            "--connections", str(connections), "--duration", str(duration), "--warmup", str(warmup),
            "--header", f"authorization: Bearer {arm.key}"]
    if rate:
        argv += ["--rate", str(rate)]
    out = subprocess.run(["taskset", "-c", LOAD_CPU] + argv, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"load on port {arm.port}{arm.path} failed: {out.stderr.strip()}")
    result = json.loads(out.stdout)
    if not result["errors"] and not result["requests"] and not retried:
        # Nothing answered in the window, and nothing failed: a proxy that
        # stalled (one did for more than 1.5 s at 16 connections, most likely
        # LiteLLM, the slowest arm). Measured once more over a window four
        # times as long instead of ending the run; the first try's answers
        # are added to the second's, as the CPU read around the call spans both.
        print(f"load on port {arm.port}: no answer in {duration} s, measuring again over {duration * 4} s", file=sys.stderr)
        again = load(arm, label, connections, rate, duration * 4, warmup, retried=True)
        again["answered"] += result["answered"]
        return again
    if result["errors"] or not result["requests"]:
        sys.exit(f"load on port {arm.port}: {result}")
    return result


def stream(port, path_body, requests=50):
    argv = [LOAD, "stream", "--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--body-file", str(path_body),
            "--requests", str(requests), "--header", f"authorization: Bearer {TEAM_KEY}"]
    out = subprocess.run(["taskset", "-c", LOAD_CPU] + argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cpu_ns(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


def cpu_us_each(pid, before, answered):
    """The CPU time process `pid` spent since `before` (cpu_ns's reading),
    in µs for each of the `answered` requests."""
    if answered <= 0:
        raise RuntimeError(f"process {pid} answered no requests in the slice: no CPU a request to read "
                           "(is the arm up? see its log)")
    return (cpu_ns(pid) - before) / 1000 / answered


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_then_stop(main):
    """Runs a script's main, then stops every process it started."""
    try:
        main()
    finally:
        for p in PROCS:
            p.kill()
            p.wait()
