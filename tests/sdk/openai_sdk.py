"""The official OpenAI Python SDK, unchanged but for base_url, against llmproxy (and its mock upstream).

Usage: python openai_sdk.py BASE_URL MODEL EMBED_MODEL [CA_FILE] ; prints one JSON line with what it saw.
With CA_FILE (an https BASE_URL), the SDK's HTTP client trusts only that certificate.
"""
import json
import ssl
import sys

import httpx
from openai import OpenAI

base_url, model, embed_model = sys.argv[1], sys.argv[2], sys.argv[3]
http_client = None
if len(sys.argv) > 4:
    http_client = httpx.Client(verify=ssl.create_default_context(cafile=sys.argv[4]))
client = OpenAI(
    base_url=base_url,
    api_key="sk-client-side-anything",
    max_retries=0,
    timeout=30,
    http_client=http_client,
)

out = {}
chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi"}])
out["chat_content"] = chat.choices[0].message.content
out["chat_usage"] = chat.usage.total_tokens

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hi"}],
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage.total_tokens
out["stream_content"] = "".join(parts)
out["stream_usage"] = usage

emb = client.embeddings.create(model=embed_model, input=["one", "two"])
out["embeddings"] = [len(d.embedding) for d in emb.data]

models = client.models.list()
out["models"] = sorted(m.id for m in models.data)

try:
    client.chat.completions.create(model="no-such-model", messages=[])
    out["not_found"] = None
except Exception as e:  # openai.NotFoundError
    out["not_found"] = type(e).__name__

print(json.dumps(out))
