#!/usr/bin/env python3
"""make bench: the same workload, on the same machine, against the same
upstream, through these arms:

  direct    client -> upstream
  envoy     client -> plain Envoy (the same route, no filter) -> upstream
  floor     client -> Envoy with a wasm filter that only holds the headers
            and buffers the body (what any body-reading wasm filter pays)
  hostcalls the floor filter making 10 hostcalls per request (header map
            reads), which prices one hostcall
  tollgate  client -> Envoy with the Tollgate filter (auth, access, budget,
            accounting all on) -> upstream
  native    the same, with the native build (libtollgate.so, an Envoy
            dynamic module) in place of tollgate.wasm

The proxies under test run with --concurrency 1, pinned to CPU 0; the load
generator and the upstreams are pinned to CPU 1. Rounds are interleaved
(every arm measured in each, in a shuffled order) and medians reported; an
arm's extra CPU is the median of its rounds' differences from plain Envoy.
Prints a Markdown table and writes bench/results.json.

Latency at one connection is measured in pairs: PAIRS times, every arm gets
one short slice (SLICE seconds) in a shuffled order, and an arm's added
latency is the median, over the pairs, of its p50 minus plain Envoy's p50 in
the same pair (with the quartiles of those differences). Drift in the host's
speed, which moves every arm within a pair alike, cancels out; measured a
minute apart it did not. Streaming is paired the same way.

The load generator is this benchmark's own tool (bench/src/main.rs): wrk
cannot time a streamed event or hold a fixed rate, and its slices are whole
seconds. So that its figures need not be taken on trust, the run ends with
the same one-connection and 16-connection loads driven by wrk (the apt
package), paired the same way, beside the tool's own.

With BENCH_PEERS=1 the same workload also goes through LiteLLM proxy and
TensorZero's gateway (installed by make into .venv-peers), each given the
same single core as the proxies.

Extra CPU at a fixed rate is measured in pairs too (1 KB only, the size the
target names): CPU_PAIRS times, plain Envoy, the floor and both Tollgate
builds each get one CPU_SLICE-second slice at RATE requests/s in a shuffled
order, and an arm's extra CPU is the median over the pairs of its CPU a
request less plain Envoy's in the same pair. The rounds' figure is printed
beside it. The targets read the paired one when the run has it: the rounds
put up to half a minute between an arm and plain Envoy, and six of them
pinned the median down to within about ±60 µs; adjacent slices, many of
them, pin it down several times as closely.

Environment: ROUNDS (3), DURATION (2 s per CPU and throughput measurement),
PAIRS (20) and SLICE (0.4 s) for latency, RATE (1000 rps for
the CPU figure), CPU_PAIRS (20; 0 skips) and CPU_SLICE (1 s) for it in
pairs, SOAK (seconds of a 500 rps run for the RSS figure, with plain Envoy
under the same load beside it and both heaps read from Envoy's stats; 0
skips),
SOAK_ARM (tollgate, or native), SIZES (1KB,10KB,100KB: which body sizes),
BENCH_PEERS (0), WRK_PAIRS (8: pairs of 1 s wrk slices in the cross-check;
0 skips it), AWAKE (1: keep both cores
out of the hypervisor's idle halt with a busy loop at SCHED_IDLE; 0 lets
them halt, and every request then pays the VM's wake-up).
"""

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import targets
from harness import (CLI, ENVOY, FLOOR_WASM, LOAD, LOAD_CPU, NATIVE_LIB, PROCS, PROXY_CPU, ROOT,
                     TEAM_KEY, WASM, WORK, Arm, admin, body, cluster, cpu_ns, cpu_us_each, free_port, listener,
                     load, pinned, rss_kib, run_then_stop, start_envoy, start_upstream, stream, wait_ready)
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = float(os.environ.get("DURATION", "2"))
RATE = int(os.environ.get("RATE", "1000"))
SOAK = int(os.environ.get("SOAK", "0"))
SOAK_ARM = os.environ.get("SOAK_ARM", "tollgate")
PEERS = os.environ.get("BENCH_PEERS", "0") == "1"
AWAKE = os.environ.get("AWAKE", "1") == "1"
STREAM_REQUESTS = int(os.environ.get("STREAM_REQUESTS", "50"))
PAIRS = int(os.environ.get("PAIRS", "20"))
WRK_PAIRS = int(os.environ.get("WRK_PAIRS", "8"))
WRK = shutil.which("wrk")
SLICE = float(os.environ.get("SLICE", "0.4"))
CPU_PAIRS = int(os.environ.get("CPU_PAIRS", "20"))
CPU_SLICE = float(os.environ.get("CPU_SLICE", "1"))
# Streamed requests per arm in one slice of a round (STREAM_REQUESTS a round).
STREAM_SLICE = 10
PEERS_PY = str(ROOT / ".venv-peers/bin/python")
PEERS_LITELLM = str(ROOT / ".venv-peers/bin/litellm")
LITELLM_KEY = "sk-bench-litellm-master"
SIZES = [(label, size) for label, size in [("1 KB", 1024), ("10 KB", 10 * 1024), ("100 KB", 100 * 1024)]
         if label.replace(" ", "") in os.environ.get("SIZES", "1KB,10KB,100KB").split(",")]

HOSTCALLS = 10


def wrk(arm, label, connections, duration=1):
    """One run of wrk (the apt package) on the load generator's CPU, with one
    thread: its p50 in µs (from --latency) and its requests/s."""
    script = WORK / f"wrk-{arm.port}-{label.replace(' ', '')}.lua"
    if not script.exists():
        script.write_text(f"""wrk.method = "POST"
local f = assert(io.open("{arm.bodies[label]}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {arm.key}"
""")
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"http://127.0.0.1:{arm.port}{arm.path}"]
    # A slice whose requests time out is taken again (twice at most): on
    # 2026-12-02 a run lost an hour's figures to one 1 s slice that took
    # 9.8 s, 16 of its requests timing out, in its last phase. Non-2xx
    # answers still fail the run at once.
    for attempt in range(3):
        out = subprocess.run(["taskset", "-c", LOAD_CPU] + argv, capture_output=True, text=True)
        text = out.stdout
        stalled = out.returncode == 0 and "Non-2xx" not in text and "Socket errors" in text
        if not stalled or attempt == 2:
            break
        print(f"wrk on port {arm.port}{arm.path}: {' '.join(re.findall(r'Socket errors:.*', text))}; taken again", flush=True)
        time.sleep(1)
    if out.returncode != 0 or "Non-2xx" in text or "Socket errors" in text:
        sys.exit(f"wrk on port {arm.port}{arm.path} failed: {text.strip()} {out.stderr.strip()}")
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not p50 or not rps:
        sys.exit(f"wrk's output not understood: {text}")
    scale = {"us": 1, "ms": 1000, "s": 1_000_000}[p50.group(2)]
    return float(p50.group(1)) * scale, float(rps.group(1))


def start_peers(upstream_port, bodies, arms, procs):
    """LiteLLM proxy and TensorZero's gateway, each on the proxies' core,
    in front of the same upstream."""
    for tool in (PEERS_PY, PEERS_LITELLM):
        if not Path(tool).exists():
            sys.exit(f"missing {tool}: BENCH_PEERS=1 make bench installs the peers")
    env = dict(os.environ, BENCH_PROVIDER_KEY="sk-bench-provider", LITELLM_LOCAL_MODEL_COST_MAP="True",
               LITELLM_LOG="ERROR", TENSORZERO_DISABLE_PSEUDONYMOUS_USAGE_ANALYTICS="1")

    port = free_port()
    (WORK / "litellm.yaml").write_text(f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini-2024-07-18, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
general_settings:
  master_key: {LITELLM_KEY}
""")
    log = open(WORK / "litellm.log", "w")
    litellm = pinned(PROXY_CPU, [PEERS_LITELLM, "--config", str(WORK / "litellm.yaml"), "--port", str(port),
                                 "--num_workers", "1"], stdout=log, stderr=log, env=env, cwd=WORK)
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1)
            break
        except OSError:
            if litellm.poll() is not None or time.time() > deadline:
                sys.exit(f"LiteLLM did not start; see {WORK / 'litellm.log'}")
            time.sleep(0.5)
    arms["litellm"] = Arm(port, key=LITELLM_KEY, bodies=bodies)
    procs["litellm"] = litellm

    (WORK / "tensorzero.toml").write_text(f"""
[gateway]
observability.enabled = false

[models."gpt-4o-mini"]
routing = ["bench"]

[models."gpt-4o-mini".providers.bench]
type = "openai"
model_name = "gpt-4o-mini-2024-07-18"
api_base = "http://127.0.0.1:{upstream_port}/v1/"
api_key_location = "env::BENCH_PROVIDER_KEY"
""")
    tz = pinned(PROXY_CPU, [PEERS_PY, str(ROOT / "bench/tensorzero_gateway.py"), str(WORK / "tensorzero.toml")],
                stdout=subprocess.PIPE, stderr=open(WORK / "tensorzero.log", "w"), env=env, text=True)
    # Its own log lines come first on stdout; the base URL is the first URL.
    base = ""
    for line in tz.stdout:
        if line.startswith("http://127.0.0.1:"):
            base = line.strip()
            break
    if not base:
        sys.exit(f"TensorZero did not start; see {WORK / 'tensorzero.log'}")
    # Keep draining its stdout so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in tz.stdout], daemon=True).start()
    tz_port = int(base.split(":")[2].split("/")[0])
    tz_bodies = {}
    for label, size in SIZES:
        tz_bodies[label] = WORK / f"body-tz-{size}.json"
        tz_bodies[label].write_text(body(size, model="tensorzero::model_name::gpt-4o-mini"))
    arms["tensorzero"] = Arm(tz_port, path="/openai/v1/chat/completions", key="unused", bodies=tz_bodies)
    procs["tensorzero"] = tz


def heap_kib(admin_port):
    """The heap an Envoy has in use, in KiB, by its allocator's count
    (server.memory_allocated); None if the admin port does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats?filter=^server\\.memory_allocated$", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "server.memory_allocated":
            return round(int(value) / 1024)
    return None


def main():
    for tool in (ENVOY, CLI, WASM, FLOOR_WASM, NATIVE_LIB, LOAD):
        if not Path(tool).exists():
            sys.exit(f"missing {tool}: run make bench, which builds everything")
    ports = {k: free_port() for k in ["up", "up_admin", "sse", "plain", "plain_sse", "plain_admin", "floor",
                                      "floor_admin", "hc", "hc_admin", "tg", "tg_admin", "tn", "tn_admin"]}

    if AWAKE:
        # A halted vCPU takes 100 µs and more to wake on this kind of VM: at
        # one connection that wake-up, not the proxy, is most of the latency,
        # and it varies from run to run. A busy loop in the idle scheduling
        # class keeps each core running; any other thread preempts it at once,
        # and the proxies' CPU is read per process, so it is not counted.
        for cpu in (PROXY_CPU, LOAD_CPU):
            PROCS.append(subprocess.Popen(["chrt", "-i", "0", "taskset", "-c", cpu, LOAD, "spin"],
                                          stdin=subprocess.DEVNULL))

    # The upstream: Envoy's own direct_response, on the load generator's CPU.
    start_upstream(ports["up"], ports["up_admin"])
    # The paced streaming upstream: 10 events, 20 ms apart.
    sse = pinned(LOAD_CPU, [LOAD, "sse-upstream", "--port", str(ports["sse"]), "--events", "10", "--interval-ms", "20"],
                 stdout=subprocess.PIPE, text=True)
    sse.stdout.readline()

    # Plain Envoy: the same routes, no filter.
    plain = start_envoy("plain", {
        "admin": admin(ports["plain_admin"]),
        "static_resources": {
            "listeners": [
                listener("plain", ports["plain"], [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "600s"}}]),
                listener("plain_sse", ports["plain_sse"], [{"match": {"prefix": "/"}, "route": {"cluster": "sse", "timeout": "600s"}}]),
            ],
            "clusters": [cluster("upstream", ports["up"]), cluster("sse", ports["sse"])]}},
        PROXY_CPU)

    # The floor: the same routes behind a wasm filter that does nothing but buffer.
    def floor_envoy(name, hostcalls):
        wasm_filter = {"name": "floor", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"root_id": "floor", "vm_config": {"vm_id": "floor", "runtime": "envoy.wasm.runtime.v8",
                                                        "code": {"local": {"filename": FLOOR_WASM}}},
                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                         "value": str(hostcalls)},
                       "allow_on_headers_stop_iteration": True}}}
        return start_envoy(name, {
            "admin": admin(ports[f"{name}_admin"]),
            "static_resources": {
                "listeners": [listener(name, ports[name], [{"match": {"prefix": "/"},
                                                           "route": {"cluster": "upstream", "timeout": "600s"}}],
                                       filters=[wasm_filter])],
                "clusters": [cluster("upstream", ports["up"])]}},
            PROXY_CPU)

    floor = floor_envoy("floor", 0)
    # The floor plus 10 hostcalls per request: prices one hostcall.
    hostcalls = floor_envoy("hc", HOSTCALLS)

    # Tollgate: the rendered gateway, with a budget so reservations run.
    config = WORK / "gateway.yaml"
    config.write_text(f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini-2024-07-18, api_base: "http://127.0.0.1:{ports['up']}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "http://127.0.0.1:{ports['sse']}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
user_access:
  - user_id: bench-team
    models: [gpt-4o-mini, gpt-4o]
    max_budget: 1000000000
    api_keys: ["{TEAM_KEY}"]
""")
    env = dict(os.environ, BENCH_PROVIDER_KEY="sk-bench-provider")

    def tollgate(name, port, flag, path):
        rendered = WORK / f"{name}.yaml"
        subprocess.run([CLI, "render", str(config), flag, path, "--port", str(ports[port]),
                        "--admin-port", str(ports[f"{port}_admin"]), "--out", str(rendered)],
                       env=env, check=True, capture_output=True)
        log = open(WORK / f"{name}.log", "w")
        proc = pinned(PROXY_CPU, [ENVOY, "-c", str(rendered), "--concurrency", "1", "--disable-hot-restart",
                                  "--log-level", "warn"], stdout=log, stderr=log, env=env)
        wait_ready(ports[f"{port}_admin"], proc, name)
        return proc

    tg = tollgate("tollgate", "tg", "--wasm", WASM)
    # The same filter built natively, as an Envoy dynamic module.
    tn = tollgate("native", "tn", "--native", NATIVE_LIB)

    bodies = {}
    for label, size in SIZES:
        bodies[label] = WORK / f"body-{size}.json"
        bodies[label].write_text(body(size))
    arms = {"direct": Arm(ports["up"], bodies=bodies), "envoy": Arm(ports["plain"], bodies=bodies),
            "floor": Arm(ports["floor"], bodies=bodies), "hostcalls": Arm(ports["hc"], bodies=bodies),
            "tollgate": Arm(ports["tg"], bodies=bodies), "native": Arm(ports["tn"], bodies=bodies)}
    procs = {"envoy": plain, "floor": floor, "hostcalls": hostcalls, "tollgate": tg, "native": tn}
    if PEERS:
        start_peers(ports["up"], bodies, arms, procs)
    stream_body = WORK / "stream.json"
    stream_body.write_text(body(1024, model="gpt-4o", stream=True))

    results = {label: {arm: {"p50": [], "p99": [], "max_rps": [], "cpu_us": [], "sat_us": []} for arm in arms} for label, _ in SIZES}
    stream_arms = {"direct": ports["sse"], "envoy": ports["plain_sse"], "tollgate": ports["tg"], "native": ports["tn"]}
    streaming = {arm: {"ttft": [], "gap": [], "delay": []} for arm in stream_arms}
    shuffle = random.Random(1).shuffle
    for r in range(ROUNDS):
        print(f"round {r + 1}/{ROUNDS}", file=sys.stderr)
        for label, _ in SIZES:
            order = list(arms)
            shuffle(order)
            for arm in order:
                where = arms[arm]
                res = results[label][arm]
                before = cpu_ns(procs[arm].pid) if arm in procs else 0
                saturated = load(where, label, connections=16, duration=DURATION)
                res["max_rps"].append(saturated["rps"])
                if arm in procs:
                    res["sat_us"].append(cpu_us_each(procs[arm].pid, before, saturated["answered"]))
                if arm in procs:
                    before = cpu_ns(procs[arm].pid)
                    fixed = load(where, label, connections=4, rate=RATE, duration=DURATION)
                    res["cpu_us"].append(cpu_us_each(procs[arm].pid, before, fixed["answered"]))
        for _ in range(max(STREAM_REQUESTS // STREAM_SLICE, 1)):
            order = list(stream_arms)
            shuffle(order)
            for arm in order:
                s = stream(stream_arms[arm], stream_body, requests=STREAM_SLICE)
                streaming[arm]["ttft"].append(s["ttft_p50_us"])
                streaming[arm]["gap"].append(s["gap_p50_us"])
                streaming[arm]["delay"].append(s["delay_p50_us"])
    def in_pairs(count, names, measure, labels=None):
        """`count` times, for every body size (or those of `labels`),
        `measure(label, arm)` for each arm of `names` once, in a shuffled
        order: the slices that pair."""
        for _ in range(count):
            for label in labels or [label for label, _ in SIZES]:
                order = list(names)
                shuffle(order)
                for arm in order:
                    measure(label, arm)

    def one_connection(label, arm):
        one = load(arms[arm], label, duration=SLICE, warmup=0.1)
        results[label][arm]["p50"].append(one["p50_us"])
        results[label][arm]["p99"].append(one["p99_us"])

    print(f"latency: {PAIRS} pairs of {SLICE} s slices at one connection", file=sys.stderr)
    in_pairs(PAIRS, arms, one_connection)

    # Extra CPU at the fixed rate, in pairs of adjacent slices (1 KB).
    cpu_arms = [a for a in ("envoy", "floor", "tollgate", "native") if a in procs]
    at_rate = {arm: [] for arm in cpu_arms}

    def cpu_slice(label, arm):
        before = cpu_ns(procs[arm].pid)
        fixed = load(arms[arm], label, connections=4, rate=RATE, duration=CPU_SLICE, warmup=0.2)
        at_rate[arm].append(cpu_us_each(procs[arm].pid, before, fixed["answered"]))

    if CPU_PAIRS and "1 KB" in bodies:
        print(f"CPU: {CPU_PAIRS} pairs of {CPU_SLICE} s slices at {RATE} rps (1 KB)", file=sys.stderr)
        in_pairs(CPU_PAIRS, cpu_arms, cpu_slice, labels=["1 KB"])

    # The cross-check: the same loads driven by wrk, paired the same way.
    wrk_arms = [a for a in ("direct", "envoy", "tollgate", "native") if a in arms]
    checked = {label: {arm: {"p50": [], "rps": []} for arm in wrk_arms} for label, _ in SIZES}

    def by_wrk(label, arm):
        checked[label][arm]["p50"].append(wrk(arms[arm], label, 1)[0])
        checked[label][arm]["rps"].append(wrk(arms[arm], label, 16)[1])

    if WRK and WRK_PAIRS:
        print(f"wrk: {WRK_PAIRS} pairs of 1 s slices", file=sys.stderr)
        in_pairs(WRK_PAIRS, wrk_arms, by_wrk)

    med = statistics.median

    def paired(mine, base):
        """The median and quartiles of the pairwise differences."""
        d = sorted(a - b for a, b in zip(mine, base))
        q = statistics.quantiles(d, n=4) if len(d) > 1 else [d[0], d[0], d[0]]
        return med(d), q[0], q[2]

    def interval(mine, base):
        """The 95% interval of the median of the pairwise differences."""
        return targets.median_interval([a - b for a, b in zip(mine, base)])

    # How far this run pins down each paired median the targets read.
    intervals = {}

    def median_shown(m):
        # A median over an even number of pairs may end in .5: shown as it
        # is, since rounding it (half to even) could hide a target's miss.
        return f"{m:+.0f}" if m == int(m) else f"{m:+.1f}"

    def shown(m, lo, hi):
        return f"{median_shown(m)} ({lo:+.0f} to {hi:+.0f})"

    rss = {arm: rss_kib(p.pid) for arm, p in procs.items()}
    soak = []
    # Beside the soak arm's RSS (what the target reads): plain Envoy's under
    # the same load at the same time, and both processes' heap in use as
    # Envoy's allocator counts it (server.memory_allocated). RSS also moves
    # with pages the allocator and the kernel touch; the heap in use moves
    # only with what is allocated and not freed.
    beside = {"envoy_rss_kib": [], "heap_kib": [], "envoy_heap_kib": []}
    soak_admin = ports["tn_admin" if SOAK_ARM == "native" else "tg_admin"]
    if SOAK:
        print(f"soak: {SOAK} s at 500 rps through tollgate ({SOAK_ARM}), and plain Envoy beside it", file=sys.stderr)
        step = max(SOAK // 10, 1)
        plain_failed = []

        def plain_soak():
            try:
                load(arms["envoy"], "1 KB", connections=4, rate=500, duration=step)
            except SystemExit as e:  # load()'s way to end the run, here on another thread
                plain_failed.append(e)

        for _ in range(SOAK // step):
            plain_load = threading.Thread(target=plain_soak)
            plain_load.start()
            load(arms[SOAK_ARM], "1 KB", connections=4, rate=500, duration=step)
            plain_load.join()
            if plain_failed:
                raise plain_failed[0]
            soak.append(rss_kib(procs[SOAK_ARM].pid))
            beside["envoy_rss_kib"].append(rss_kib(plain.pid))
            beside["heap_kib"].append(heap_kib(soak_admin))
            beside["envoy_heap_kib"].append(heap_kib(ports["plain_admin"]))

    lines = [f"| body | arm | p50 µs | p99 µs | added p50 vs Envoy (quartiles) | added p50 vs direct | CPU µs/req at {RATE} rps | max rps (1 core) |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for label, _ in SIZES:
        for arm in arms:
            res = results[label][arm]
            p50, p99 = med(res["p50"]), med(res["p99"])
            vs_envoy, vs_envoy_lo, vs_envoy_hi = paired(res["p50"], results[label]["envoy"]["p50"])
            vs_direct = paired(res["p50"], results[label]["direct"]["p50"])[0]
            cpu = med(res["cpu_us"]) if res["cpu_us"] else None
            summary[f"{label} {arm}"] = {"p50_us": p50, "p99_us": p99, "added_vs_envoy_us": vs_envoy,
                                         "added_vs_envoy_quartiles_us": [vs_envoy_lo, vs_envoy_hi],
                                         "added_vs_direct_us": vs_direct, "cpu_us_per_req": cpu,
                                         "max_rps": med(res["max_rps"])}
            if arm not in ("direct", "envoy"):
                intervals[f"{label} {arm} added_vs_envoy_us"] = interval(res["p50"], results[label]["envoy"]["p50"])
            col_envoy = shown(vs_envoy, vs_envoy_lo, vs_envoy_hi) if arm not in ("direct", "envoy") else ""
            col_direct = f"{vs_direct:+.0f}" if arm != "direct" else ""
            col_cpu = f"{cpu:.1f}" if cpu is not None else ""
            lines.append(f"| {label} | {arm} | {p50:.0f} | {p99:.0f} | {col_envoy} | {col_direct} | {col_cpu} | "
                         f"{med(res['max_rps']):.0f} |")
    sat = {label: {arm: med(results[label][arm]["sat_us"]) for arm in procs} for label, _ in SIZES}

    def over(label, kind, arm, base):
        """An arm's extra CPU over another: the median of the rounds' differences."""
        return paired(results[label][arm][kind], results[label][base][kind])[0]

    cpu_added = {label: over(label, "cpu_us", "tollgate", "envoy") for label, _ in SIZES}
    sat_added = {label: over(label, "sat_us", "tollgate", "envoy") for label, _ in SIZES}
    native_added = {label: {"fixed": over(label, "cpu_us", "native", "envoy"), "saturated": over(label, "sat_us", "native", "envoy")}
                    for label, _ in SIZES}
    for label, _ in SIZES:
        for arm in procs:
            summary[f"{label} {arm}"]["cpu_us_per_req_saturated"] = sat[label][arm]
        for arm in ("tollgate", "native"):
            for load_name, kind in (("fixed", "cpu_us"), ("saturated", "sat_us")):
                intervals[f"{label} {arm} extra_cpu_{load_name}"] = interval(results[label][arm][kind], results[label]["envoy"][kind])
    # Where Tollgate's extra CPU goes: the runtime (floor over Envoy), and
    # the price of one hostcall (the hostcalls arm over the floor, per call).
    lines += ["", "Extra proxy CPU per request, µs, at a fixed rate and on a saturated core (medians of the rounds' differences):", "",
              "| body | load | floor over Envoy | one hostcall | Tollgate over floor | Tollgate over Envoy | native over Envoy |",
              "|---|---|---|---|---|---|---|"]
    for label, _ in SIZES:
        for what, kind in ((f"{RATE} rps", "cpu_us"), ("saturated", "sat_us")):
            d = lambda arm, base: over(label, kind, arm, base)  # noqa: E731
            lines.append(f"| {label} | {what} | {d('floor', 'envoy'):+.1f} | {d('hostcalls', 'floor') / HOSTCALLS:.1f} | "
                         f"{d('tollgate', 'floor'):+.1f} | {d('tollgate', 'envoy'):+.1f} | {d('native', 'envoy'):+.1f} |")
    paired_cpu = {}
    if at_rate.get("envoy"):
        lines += ["", f"Extra proxy CPU per request at {RATE} rps, 1 KB, in {CPU_PAIRS} pairs of adjacent {CPU_SLICE:g} s slices "
                      "(the median of the pairs' differences from plain Envoy; the targets read this one):", "",
                  "| arm | CPU µs/req (median) | over Envoy (quartiles) |", "|---|---|---|"]
        for arm in cpu_arms:
            if arm == "envoy":
                lines.append(f"| envoy | {med(at_rate[arm]):.1f} | |")
                continue
            added = paired(at_rate[arm], at_rate["envoy"])
            paired_cpu[arm] = added[0]
            intervals[f"1 KB {arm} extra_cpu_fixed_paired"] = interval(at_rate[arm], at_rate["envoy"])
            lines.append(f"| {arm} | {med(at_rate[arm]):.1f} | {added[0]:+.1f} ({added[1]:+.1f} to {added[2]:+.1f}) |")
    lines += ["", "| streaming (10 events, 20 ms apart) | TTFT p50 µs | added TTFT vs Envoy (quartiles) | gap p50 µs "
              "| later event's delay p50 µs | added per chunk vs Envoy (quartiles) |",
              "|---|---|---|---|---|---|"]
    for arm in stream_arms:
        ttft, gap, delay = med(streaming[arm]["ttft"]), med(streaming[arm]["gap"]), med(streaming[arm]["delay"])
        ttft_added = paired(streaming[arm]["ttft"], streaming["envoy"]["ttft"])
        delay_added = paired(streaming[arm]["delay"], streaming["envoy"]["delay"])
        summary[f"stream {arm}"] = {"ttft_p50_us": ttft, "gap_p50_us": gap, "delay_p50_us": delay,
                                    "added_ttft_vs_envoy_us": ttft_added[0], "added_delay_vs_envoy_us": delay_added[0]}
        ours = arm in ("tollgate", "native")
        if ours:
            intervals[f"stream {arm} added_ttft_vs_envoy_us"] = interval(streaming[arm]["ttft"], streaming["envoy"]["ttft"])
        added_ttft = shown(*ttft_added) if ours else ""
        added_delay = shown(*delay_added) if ours else ""
        lines.append(f"| {arm} | {ttft:.0f} | {added_ttft} | {gap:.0f} | {delay:.0f} | {added_delay} |")
    if WRK and WRK_PAIRS:
        lines += ["", f"Cross-check: the same arms driven by wrk ({WRK_PAIRS} pairs of 1 s slices, one thread; p50 at one "
                      "connection, requests/s at 16), beside this tool's figures from the table above:", "",
                  "| body | arm | wrk p50 µs | tool p50 µs | wrk added p50 vs Envoy (quartiles) | tool added | wrk rps (16 conns) | tool max rps |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, _ in SIZES:
            for arm in wrk_arms:
                got = checked[label][arm]
                ours = summary[f"{label} {arm}"]
                added = shown(*paired(got["p50"], checked[label]["envoy"]["p50"])) if arm not in ("direct", "envoy") else ""
                tool_added = median_shown(ours["added_vs_envoy_us"]) if arm not in ("direct", "envoy") else ""
                summary[f"{label} {arm}"]["wrk"] = {"p50_us": med(got["p50"]), "rps": med(got["rps"])}
                lines.append(f"| {label} | {arm} | {med(got['p50']):.0f} | {ours['p50_us']:.0f} | {added} | {tool_added} | "
                             f"{med(got['rps']):.0f} | {ours['max_rps']:.0f} |")
    elif WRK_PAIRS:
        lines += ["", "(No wrk on PATH: the cross-check was skipped. `make bench` installs it with apt.)"]
    lines += ["", "| RSS after the run | KiB |", "|---|---|"] + [f"| {arm} | {kib} |" for arm, kib in rss.items()]
    if soak:
        every = SOAK // len(soak)
        lines += ["", f"Soak, {SOAK} s at 500 rps through the {SOAK_ARM} arm, RSS KiB every {every} s: " + ", ".join(map(str, soak)),
                  "", "Beside it, plain Envoy under the same load, RSS KiB: " + ", ".join(map(str, beside["envoy_rss_kib"])),
                  "", f"Heap in use (server.memory_allocated, KiB), {SOAK_ARM}: " + ", ".join(map(str, beside["heap_kib"]))
                  + "; plain Envoy: " + ", ".join(map(str, beside["envoy_heap_kib"]))]
    print("\n".join(lines))
    summary.update({"rss_kib": rss, "soak_rss_kib": soak, "extra_cpu_us": cpu_added, "extra_cpu_us_saturated": sat_added,
                    "native_extra_cpu_us": native_added, "paired_cpu_us": paired_cpu,
                    "cpu_pairs": CPU_PAIRS if paired_cpu else 0, "cpu_slice_s": CPU_SLICE,
                    "rounds": ROUNDS, "duration_s": DURATION, "rate": RATE, "pairs": PAIRS, "slice_s": SLICE,
                    "soak_s": SOAK if soak else 0, "soak_arm": SOAK_ARM if soak else "", "soak_beside": beside if soak else {},
                    "stream_requests": STREAM_REQUESTS, "intervals": intervals,
                    # Every measurement, in the order taken: index i of an
                    # arm's list pairs with index i of plain Envoy's.
                    "samples": {"by_size": results, "streaming": streaming, "wrk": checked if WRK and WRK_PAIRS else {},
                                "cpu_at_rate": at_rate}})
    (ROOT / "bench/results.json").write_text(json.dumps(summary, indent=1))
    # Issue 5's targets, read from this run's figures (bench/targets.py).
    print("\nAgainst the targets (1 KB chat requests, everything on, unless the row says otherwise):\n")
    print(targets.table(summary))


if __name__ == "__main__":
    run_then_stop(main)
