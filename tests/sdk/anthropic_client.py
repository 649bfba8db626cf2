"""The official Anthropic SDK against the gateway's /v1/messages, with the
team key as x-api-key and as a bearer token: plain, streamed, and the
exception for a wrong key. Exits non-zero on the first failed check."""

import sys

import anthropic
from anthropic import Anthropic

base_url, key = sys.argv[1:3]
MODEL = "claude-3-5-haiku"
hello = [{"role": "user", "content": "Hello!"}]

for client in (Anthropic(base_url=base_url, api_key=key, max_retries=0),
               Anthropic(base_url=base_url, auth_token=key, max_retries=0)):
    msg = client.messages.create(model=MODEL, max_tokens=100, system="Be terse.", messages=hello)
    assert msg.content[0].text == "Hello from the fake upstream.", msg
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (10, 5), msg.usage

with Anthropic(base_url=base_url, api_key=key, max_retries=0).messages.stream(
        model=MODEL, max_tokens=100, messages=hello) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == "Hello from the fake upstream.", text
assert final.usage.output_tokens == 5, final.usage

try:
    Anthropic(base_url=base_url, api_key="not-a-team-key", max_retries=0).messages.create(
        model=MODEL, max_tokens=10, messages=hello)
    raise AssertionError("expected AuthenticationError")
except anthropic.AuthenticationError as e:
    assert e.status_code == 401, e
    assert e.body["error"]["type"] == "authentication_error", e.body

print("all checks passed")
