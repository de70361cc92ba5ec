"""The official OpenAI Python SDK, unchanged but for base_url, against llmproxy (and its mock upstream).

Usage: python openai_sdk.py BASE_URL MODEL EMBED_MODEL [CA_FILE]
  With CA_FILE (an https BASE_URL), the SDK's HTTP client trusts only that certificate.
Environment (the same contract as openai_sdk.mjs, the Node SDK's twin):
  LLMPROXY_SDK_KEY   the API key for every call (the gateway's master key); default sk-client-side-anything
  LLMPROXY_SDK_SKIP  comma-separated cases not to run (a provider without embeddings, ...)
  LLMPROXY_SDK_CONTENT  a whole chat answer's text when the provider's mock says something else than "Hello from mock"
  LLMPROXY_SDK_EMBED_DIM  the embedding vectors' length (default 8, the mock's default)
Prints one JSON line {"sdk", "version", "order": [case, ...], "cases": {case: "pass" | "skip" | "fail: why"},
"values": {case: what it saw}}, and exits 1 when a case failed.
The expected answers are the mock upstream's (the mock-upstream crate, mock-upstream/src/).
"""
import json
import os
import ssl
import sys
import traceback

import httpx
import openai
from openai import OpenAI

CASES = [
    "chat",
    "stream",
    "tools",
    "tools_stream",
    "tool_result",
    "embeddings",
    "embeddings_base64",
    "responses",
    "responses_stream",
    "models_list",
    "models_retrieve",
    "error_401",
    "error_404",
    "error_429",
]
# A whole answer's text: the mock's, unless the provider's dialect answers otherwise (a text-generation
# server generates its tokens).
CONTENT = os.environ.get("LLMPROXY_SDK_CONTENT", "Hello from mock")
STREAM = "tok0 tok1 tok2 tok3 tok4 "
# The mock's default --embedding-dim; its Bedrock dialect's Cohere vectors have 1024.
EMBED_DIM = int(os.environ.get("LLMPROXY_SDK_EMBED_DIM", "8"))
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
# The mock answers with a tool call when asked to (forwarded by the gateway like any header).
TOOL_HEADERS = {"x-mock-tool-call": "get_weather", "x-mock-tool-input": '{"city":"Paris"}'}
USER = [{"role": "user", "content": "Say hi"}]


def mock_embedding(i, dim):
    """The mock's deterministic vector for input i."""
    return [(((i * 31 + j * 7) % 200) - 100) / 100 for j in range(dim)]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


base_url, model, embed_model = sys.argv[1], sys.argv[2], sys.argv[3]
ca_file = sys.argv[4] if len(sys.argv) > 4 else None
api_key = os.environ.get("LLMPROXY_SDK_KEY", "sk-client-side-anything")
skip = {s for s in os.environ.get("LLMPROXY_SDK_SKIP", "").split(",") if s}
if skip - set(CASES):
    sys.exit(f"unknown cases in LLMPROXY_SDK_SKIP: {sorted(skip - set(CASES))}")


def make_client(key):
    http_client = None
    if ca_file:
        http_client = httpx.Client(verify=ssl.create_default_context(cafile=ca_file))
    return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30, http_client=http_client)


client = make_client(api_key)


def case_chat():
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, *USER],
    )
    c = r.choices[0]
    check(c.message.role == "assistant", f"role {c.message.role!r}")
    check(c.message.content == CONTENT, f"content {c.message.content!r}")
    check(c.finish_reason == "stop", f"finish_reason {c.finish_reason!r}")
    check(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"usage {r.usage}")
    return {"content": c.message.content, "total_tokens": r.usage.total_tokens}


def case_stream():
    stream = client.chat.completions.create(
        model=model, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    parts, usage, finish, role = [], None, None, None
    for chunk in stream:
        if chunk.choices:
            ch = chunk.choices[0]
            role = role or ch.delta.role
            if ch.delta.content:
                parts.append(ch.delta.content)
            finish = ch.finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.total_tokens
    content = "".join(parts)
    check(role == "assistant", f"role {role!r}")
    check(content == STREAM, f"content {content!r}")
    check(finish == "stop", f"finish_reason {finish!r}")
    check(usage and usage > 0, f"usage {usage!r}")
    return {"content": content, "total_tokens": usage}


def case_tools():
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        tool_choice="auto",
        extra_headers=TOOL_HEADERS,
    )
    c = r.choices[0]
    calls = c.message.tool_calls or []
    check(c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}")
    check(len(calls) == 1, f"tool_calls {calls!r}")
    call = calls[0]
    check(call.id and call.type == "function", f"tool call {call!r}")
    check(call.function.name == "get_weather", f"name {call.function.name!r}")
    args = json.loads(call.function.arguments)
    check(args == {"city": "Paris"}, f"arguments {call.function.arguments!r}")
    return {"name": call.function.name, "arguments": args}


def case_tools_stream():
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        stream=True,
        extra_headers=TOOL_HEADERS,
    )
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        for d in ch.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or d.id
            if d.function and d.function.name:
                call["name"] += d.function.name
            if d.function and d.function.arguments:
                call["arguments"] += d.function.arguments
        finish = ch.finish_reason or finish
    check(finish == "tool_calls", f"finish_reason {finish!r}")
    check(list(calls) == [0], f"tool call indexes {list(calls)}")
    call = calls[0]
    check(call["id"] and call["name"] == "get_weather", f"tool call {call!r}")
    args = json.loads(call["arguments"])
    check(args == {"city": "Paris"}, f"arguments {call['arguments']!r}")
    return {"name": call["name"], "arguments": args}


def case_tool_result():
    """The round trip's second half: the assistant's tool call and the tool's answer go back."""
    r = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_sdk_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_sdk_1", "content": "18C, sunny"},
        ],
        tools=TOOLS,
    )
    c = r.choices[0]
    check(c.message.content == CONTENT, f"content {c.message.content!r}")
    check(c.finish_reason == "stop", f"finish_reason {c.finish_reason!r}")
    return {"content": c.message.content}


def case_embeddings():
    emb = client.embeddings.create(model=embed_model, input=["one", "two"], encoding_format="float")
    check([d.index for d in emb.data] == [0, 1], f"indexes {[d.index for d in emb.data]}")
    dims = [len(d.embedding) for d in emb.data]
    check(dims == [EMBED_DIM, EMBED_DIM], f"dimensions {dims}")
    check(emb.data[1].embedding == mock_embedding(1, EMBED_DIM), f"vector {emb.data[1].embedding}")
    check(emb.usage.prompt_tokens > 0, f"usage {emb.usage}")
    return {"dims": dims}


def case_embeddings_base64():
    """The SDK's default: it asks for base64 and decodes the float32 vectors itself."""
    emb = client.embeddings.create(model=embed_model, input=["one", "two"])
    check([d.index for d in emb.data] == [0, 1], f"indexes {[d.index for d in emb.data]}")
    for d in emb.data:
        want = mock_embedding(d.index, EMBED_DIM)
        close = len(d.embedding) == EMBED_DIM and all(abs(a - b) < 1e-6 for a, b in zip(d.embedding, want))
        check(close, f"vector {d.index}: {d.embedding}")
    return {"dims": [len(d.embedding) for d in emb.data]}


def case_responses():
    r = client.responses.create(model=model, input="Say hi")
    check(r.output_text == CONTENT, f"output_text {r.output_text!r}")
    check(r.status == "completed", f"status {r.status!r}")
    check(r.usage.input_tokens > 0 and r.usage.output_tokens > 0, f"usage {r.usage}")
    return {"output_text": r.output_text, "total_tokens": r.usage.total_tokens}


def case_responses_stream():
    stream = client.responses.create(model=model, input="Say hi", stream=True)
    parts, done_text, usage, types = [], None, None, []
    for ev in stream:
        types.append(ev.type)
        if ev.type == "response.output_text.delta":
            parts.append(ev.delta)
        elif ev.type == "response.output_text.done":
            done_text = ev.text
        elif ev.type == "response.completed":
            usage = ev.response.usage.total_tokens
    text = "".join(parts)
    check(types[:1] == ["response.created"], f"first event {types[:1]}")
    check(types[-1:] == ["response.completed"], f"last event {types[-1:]}")
    check(text == STREAM and done_text == STREAM, f"text {text!r} / done {done_text!r}")
    check(usage and usage > 0, f"usage {usage!r}")
    return {"text": text, "total_tokens": usage}


def case_models_list():
    ids = sorted(m.id for m in client.models.list())
    check(model in ids, f"{model} not in {ids}")
    return {"ids": ids}


def case_models_retrieve():
    m = client.models.retrieve(model)
    check(m.id == model and m.object == "model", f"model {m!r}")
    return {"id": m.id}


def expect_error(cls, status, call):
    try:
        call()
    except openai.APIStatusError as e:
        check(isinstance(e, cls), f"{type(e).__name__} ({e.status_code}), not {cls.__name__}")
        check(e.status_code == status, f"status {e.status_code}")
        return {"error": type(e).__name__, "status": e.status_code, "code": e.code}
    raise AssertionError(f"no error, expected {cls.__name__}")


def case_error_401():
    bad = make_client("sk-wrong-key")
    return expect_error(
        openai.AuthenticationError, 401, lambda: bad.chat.completions.create(model=model, messages=USER)
    )


def case_error_404():
    v = expect_error(
        openai.NotFoundError,
        404,
        lambda: client.chat.completions.create(model="no-such-model", messages=USER),
    )
    check(v["code"] == "model_not_found", f"code {v['code']!r}")
    return v


def case_error_429():
    # The upstream answers 429 (the mock, in its provider's dialect); the gateway relays it.
    return expect_error(
        openai.RateLimitError,
        429,
        lambda: client.chat.completions.create(
            model=model, messages=USER, extra_headers={"x-mock-status": "429"}
        ),
    )


out = {"sdk": "openai-python", "version": openai.__version__, "order": CASES, "cases": {}, "values": {}}
for name in CASES:
    if name in skip:
        out["cases"][name] = "skip"
        continue
    try:
        out["values"][name] = globals()[f"case_{name}"]()
        out["cases"][name] = "pass"
    except Exception as e:  # one case's failure must not hide the others
        out["cases"][name] = f"fail: {type(e).__name__}: {e}"
        traceback.print_exc()
print(json.dumps(out))
sys.exit(1 if any(v.startswith("fail") for v in out["cases"].values()) else 0)
