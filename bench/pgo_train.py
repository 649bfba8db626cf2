#!/usr/bin/env python3
"""The training run of the native build's profile-guided optimisation.

`make native` builds the module twice. The first build is instrumented: it
counts how often each branch and function runs. This script runs that build
in a real Envoy, in front of a local upstream, with the traffic a gateway
mostly sees, and Envoy writes the counts when it exits. The second build
uses the counts: the hot path gets the inlining and the code layout, and
code that never ran is laid out of its way.

The traffic, a few seconds of each:
- OpenAI chat requests of 1, 10 and 100 KB, the bulk of it;
- chat requests to an Anthropic deployment, translated both ways;
- streamed chat requests;
- requests refused: a wrong key, a model the team may not use.

Usage: pgo_train.py <instrumented libtollgate.so>. The counts go where the
build's -Cprofile-generate points.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402

# A build machine's cores, all of them: the training counts, it does not time.
H.PROXY_CPU = H.LOAD_CPU = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))

ANTHROPIC_MESSAGE = json.dumps({
    "id": "msg_train", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 250, "output_tokens": 9, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
})


def upstream():
    """Envoy answering every chat request at once: OpenAI's shape, or
    Anthropic's on /v1/messages."""
    port, admin = H.free_port(), H.free_port()
    H.start_upstream(port, admin, (("/v1/messages", ANTHROPIC_MESSAGE), ("/", H.COMPLETION)))
    return port


def gateway(module, up, sse):
    config = H.WORK / "gateway.yaml"
    config.write_text(f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini-2024-07-18, api_base: "http://127.0.0.1:{up}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
  - model_name: claude-haiku
    litellm_params: {{model: anthropic/claude-haiku-4-5, api_base: "http://127.0.0.1:{up}", api_key: os.environ/BENCH_PROVIDER_KEY}}
  - model_name: gpt-stream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:{sse}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "http://127.0.0.1:{up}/v1", api_key: os.environ/BENCH_PROVIDER_KEY}}
user_access:
  - user_id: bench-team
    models: [gpt-4o-mini, claude-haiku, gpt-stream]
    max_budget: 1000000000
    api_keys: ["{H.TEAM_KEY}"]
""")
    port, admin = H.free_port(), H.free_port()
    out = H.WORK / "gateway-envoy.yaml"
    env = dict(os.environ, BENCH_PROVIDER_KEY="sk-train-provider")
    subprocess.run([H.CLI, "render", str(config), "--native", module, "--port", str(port), "--admin-port", str(admin),
                    "--out", str(out)], env=env, check=True, capture_output=True)
    log = open(H.WORK / "gateway.log", "w")
    proc = H.pinned(H.PROXY_CPU, [H.ENVOY, "-c", str(out), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"],
                    stdout=log, stderr=log, env=env)
    H.wait_ready(admin, proc, "the gateway")
    return port, proc


def body(name, size, model, stream=False):
    path = H.WORK / name
    path.write_text(H.body(size, model=model, stream=stream))
    return path


def refused(port, path, key):
    """Load whose answers are errors (the load tool counts them, H.load refuses them)."""
    subprocess.run(["taskset", "-c", H.LOAD_CPU, H.LOAD, "load", "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
                    "--body-file", str(path), "--connections", "1", "--duration", "0.5", "--warmup", "0",
                    "--header", f"authorization: Bearer {key}"], check=True, capture_output=True)


def main():
    module = sys.argv[1]
    up = upstream()
    sse = H.free_port()
    feed = H.pinned(H.LOAD_CPU, [H.LOAD, "sse-upstream", "--port", str(sse), "--events", "10", "--interval-ms", "1"],
                    stdout=subprocess.PIPE, text=True)
    feed.stdout.readline()
    port, proc = gateway(module, up, sse)
    chat = {size: body(f"chat-{size}.json", size, "gpt-4o-mini") for size in (1024, 10 * 1024, 100 * 1024)}
    arm = H.Arm(port, bodies={"1": chat[1024], "10": chat[10 * 1024], "100": chat[100 * 1024],
                              "claude": body("claude.json", 1024, "claude-haiku"), "4o": body("4o.json", 1024, "gpt-4o")})
    for label, seconds in (("1", 4), ("10", 1.5), ("100", 1.5), ("claude", 1.5)):
        H.load(arm, label, duration=seconds, warmup=0)
    H.stream(port, body("stream.json", 1024, "gpt-stream", stream=True), requests=300)
    refused(port, chat[1024], "team-not-a-key")
    refused(port, arm.bodies["4o"], H.TEAM_KEY)
    # The counts are written when Envoy exits.
    proc.terminate()
    proc.wait(timeout=30)
    if proc.returncode != 0:
        sys.exit(f"the gateway exited with {proc.returncode}; see {H.WORK}")


if __name__ == "__main__":
    H.run_then_stop(main)
