"""The official OpenAI SDK streaming through the gateway and straight from the
provider: the same content, the same chunk timing, with and without
stream_options.include_usage. Exits non-zero on the first failed check."""

import sys
import time

from openai import OpenAI

gateway_url, direct_url, key, pace_ms = sys.argv[1:5]
pace = int(pace_ms) / 1000.0


def run(base_url, **kwargs):
    client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
    start = time.monotonic()
    times, text, usage = [], "", None
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=50,
        stream=True,
        **kwargs,
    )
    for chunk in stream:
        times.append(time.monotonic() - start)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    return times, text, usage


# Warm up: the first request in a process pays for imports and model classes.
run(direct_url)

for kwargs in ({}, {"stream_options": {"include_usage": True}}):
    via, via_text, via_usage = run(gateway_url, **kwargs)
    direct, direct_text, direct_usage = run(direct_url, **kwargs)
    assert via_text == direct_text == "Hello, world!", (via_text, direct_text)
    asked = bool(kwargs)
    if asked:
        assert via_usage is not None and via_usage.completion_tokens == 5, via_usage
    else:
        assert via_usage is None, "the gateway's usage chunk leaked to a client that did not ask"
    assert len(via) == len(direct), (via, direct)
    # Chunk by chunk, the gateway adds no more than a small fraction of the pace.
    for i, (a, b) in enumerate(zip(via, direct)):
        assert abs(a - b) < pace / 3, f"chunk {i}: {a:.3f}s via the gateway, {b:.3f}s direct"
    assert via[0] < pace / 2, f"first chunk after {via[0]:.3f}s"

print("openai sdk streaming: all checks passed")
