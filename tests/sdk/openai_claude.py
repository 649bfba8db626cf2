"""The official OpenAI SDK calling a Claude model through the gateway, which
translates to Anthropic's Messages API and back: plain and streamed, with
and without tools. Exits non-zero on the first failed check."""

import json
import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1:3]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
MODEL = "claude-3-5-haiku"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello!"}]

# Plain.
chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=100)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.content == "Hello from the fake upstream.", chat
assert chat.choices[0].finish_reason == "stop", chat
# 10 input + 2 cache reads + 3 cache writes; 5 output.
assert (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens) == (15, 5, 20), chat.usage
assert chat.usage.prompt_tokens_details.cached_tokens == 2, chat.usage

# Tools: the model asks for a call, the client answers it.
call = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="auto")
choice = call.choices[0]
assert choice.finish_reason == "tool_calls", choice
tc = choice.message.tool_calls[0]
assert tc.function.name == "get_weather" and json.loads(tc.function.arguments) == {"city": "Paris"}, tc
answer = client.chat.completions.create(model=MODEL, tools=TOOLS, messages=messages + [
    {"role": "assistant", "content": None, "tool_calls": [tc.model_dump()]},
    {"role": "tool", "tool_call_id": tc.id, "content": "18 degrees, sunny"},
])
assert answer.choices[0].message.content == "Hello from the fake upstream.", answer

# Streamed, with usage asked for.
text, usage, finish = "", None, None
for chunk in client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                            stream_options={"include_usage": True}):
    assert chunk.object == "chat.completion.chunk", chunk
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
assert text == "Hello from the fake upstream.", text
assert finish == "stop", finish
assert (usage.prompt_tokens, usage.completion_tokens) == (15, 5), usage

# Streamed without usage asked for: no usage chunk.
chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
assert all(c.usage is None for c in chunks), chunks[-1]
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake upstream."

# Streamed tool call: the arguments arrive in pieces.
args, name = "", None
for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            name = d.function.name or name
            args += d.function.arguments or ""
assert name == "get_weather" and json.loads(args) == {"city": "Paris"}, (name, args)

# A provider error comes back in OpenAI's shape.
try:
    client.chat.completions.create(model="claude-overloaded", messages=messages)
    raise AssertionError("expected an error")
except openai.APIStatusError as e:
    assert e.status_code == 503, e
    assert e.body["code"] == "overloaded_error" and e.body["message"] == "Overloaded", e.body

print("all checks passed")
