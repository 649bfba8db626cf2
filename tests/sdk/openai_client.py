"""The official OpenAI SDK against the gateway: completions, embeddings,
model listing, and the exceptions for a wrong key, a forbidden model and an
unknown model. Exits non-zero on the first failed check."""

import sys

import openai
from openai import OpenAI

base_url, alpha_key, beta_key = sys.argv[1:4]

alpha = OpenAI(base_url=base_url, api_key=alpha_key, max_retries=0)
beta = OpenAI(base_url=base_url, api_key=beta_key, max_retries=0)

chat = alpha.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}]
)
assert chat.choices[0].message.content, chat
assert chat.usage.total_tokens == 15, chat.usage

completion = alpha.completions.create(model="gpt-4o-mini", prompt="Hello")
assert completion.choices[0].text, completion

emb = alpha.embeddings.create(model="text-embedding-3-small", input="Hello")
assert len(emb.data[0].embedding) == 3, emb

ids = [m.id for m in beta.models.list()]
assert ids == ["gpt-4o-mini"], ids
assert beta.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


def expect(exc_type, status, code, fn):
    try:
        fn()
    except exc_type as e:
        assert e.status_code == status, (e.status_code, e)
        assert e.code == code, (e.code, e)
        assert e.message, e
        return
    raise AssertionError(f"expected {exc_type.__name__}")


wrong = OpenAI(base_url=base_url, api_key="not-a-team-key", max_retries=0)
hello = [{"role": "user", "content": "Hello!"}]
expect(openai.AuthenticationError, 401, "invalid_api_key",
       lambda: wrong.chat.completions.create(model="gpt-4o-mini", messages=hello))
expect(openai.PermissionDeniedError, 403, "model_not_allowed",
       lambda: beta.chat.completions.create(model="claude-3-5-haiku", messages=hello))
expect(openai.NotFoundError, 404, "model_not_found",
       lambda: alpha.chat.completions.create(model="gpt-5", messages=hello))
expect(openai.BadRequestError, 400, None,
       lambda: alpha.chat.completions.create(model=7, messages=hello))

print("openai sdk: all checks passed")
