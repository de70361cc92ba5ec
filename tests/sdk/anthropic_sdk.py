"""The official Anthropic Python SDK, unchanged but for base_url, against llmproxy's `POST /v1/messages` (and count_tokens, models)
(passthrough to `provider: anthropic` deployments; the mock upstream speaks Anthropic's dialect there).

Usage: python anthropic_sdk.py BASE_URL MODEL
  BASE_URL is the gateway's root (the SDK posts to {BASE_URL}/v1/messages).
Environment (as openai_sdk.py):
  LLMPROXY_SDK_KEY   the API key for every call (the gateway's master key; the SDK sends it as x-api-key)
  LLMPROXY_SDK_SKIP  comma-separated cases not to run
  LLMPROXY_SDK_CONTENT  a whole answer's text when the provider's mock says something else than "Hello from mock"
Prints one JSON line {"sdk", "version", "order": [case, ...], "cases": {case: "pass" | "skip" | "fail: why"},
"values": {case: what it saw}}, and exits 1 when a case failed.
The expected answers are the mock upstream's (the mock-upstream crate, mock-upstream/src/).
"""
import json
import os
import sys
import traceback

import anthropic

CASES = [
    "messages",
    "x_api_key",
    "tools",
    "tool_result",
    "stream",
    "stream_events",
    "tools_stream",
    "count_tokens",
    "models",
    "error_401",
    "error_404",
    "error_429",
]
CONTENT = os.environ.get("LLMPROXY_SDK_CONTENT", "Hello from mock")
STREAM = "tok0 tok1 tok2 tok3 tok4 "
MAX_TOKENS = 64
TOOLS = [
    {
        "name": "get_weather",
        "description": "The current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
# The mock answers with a tool_use block when asked to (forwarded by the gateway like any header).
TOOL_HEADERS = {"x-mock-tool-call": "get_weather", "x-mock-tool-input": '{"city":"Paris"}'}
USER = [{"role": "user", "content": "Say hi"}]
WEATHER = [{"role": "user", "content": "Weather in Paris?"}]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


base_url, model = sys.argv[1], sys.argv[2]
api_key = os.environ.get("LLMPROXY_SDK_KEY", "sk-client-side-anything")
skip = {s for s in os.environ.get("LLMPROXY_SDK_SKIP", "").split(",") if s}
if skip - set(CASES):
    sys.exit(f"unknown cases in LLMPROXY_SDK_SKIP: {sorted(skip - set(CASES))}")


def make_client(key):
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=30)


client = make_client(api_key)


def check_usage(usage):
    check(usage.input_tokens > 0 and usage.output_tokens > 0, f"usage {usage}")


def check_tool_use(msg):
    check(msg.stop_reason == "tool_use", f"stop_reason {msg.stop_reason!r}")
    uses = [b for b in msg.content if b.type == "tool_use"]
    check(len(uses) == 1, f"content {msg.content!r}")
    use = uses[0]
    check(use.id and use.name == "get_weather", f"tool_use {use!r}")
    check(use.input == {"city": "Paris"}, f"input {use.input!r}")
    return {"name": use.name, "input": use.input}


def case_messages():
    m = client.messages.create(model=model, max_tokens=MAX_TOKENS, system="Be brief.", messages=USER)
    check(m.type == "message" and m.role == "assistant", f"message {m.type!r} {m.role!r}")
    check([b.type for b in m.content] == ["text"], f"content {m.content!r}")
    check(m.content[0].text == CONTENT, f"text {m.content[0].text!r}")
    check(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason!r}")
    check_usage(m.usage)
    return {"text": m.content[0].text, "usage": [m.usage.input_tokens, m.usage.output_tokens]}


def case_x_api_key():
    """The key as `x-api-key` (Anthropic's documented header; this SDK major sends a bearer token)."""
    keyed = anthropic.Anthropic(
        base_url=base_url,
        default_headers={"x-api-key": api_key, "Authorization": anthropic.omit},
        max_retries=0,
        timeout=30,
    )
    m = keyed.messages.create(model=model, max_tokens=MAX_TOKENS, messages=USER)
    check(m.content[0].text == CONTENT, f"content {m.content!r}")
    return {"text": m.content[0].text}


def case_count_tokens():
    n = client.messages.count_tokens(model=model, messages=USER)
    check(n.input_tokens > 0, f"input_tokens {n.input_tokens!r}")
    return {"input_tokens": n.input_tokens}


def case_models():
    ids = [m.id for m in client.models.list()]
    check(model in ids, f"{model} not in {ids}")
    one = client.models.retrieve(model)
    check(one.id == model and one.type == "model", f"retrieve {one!r}")
    return {"models": len(ids)}


def case_tools():
    m = client.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=WEATHER,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        extra_headers=TOOL_HEADERS,
    )
    return check_tool_use(m)


def case_tool_result():
    """The round trip's second half: the assistant's tool_use and the tool_result go back."""
    m = client.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[
            *WEATHER,
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_sdk_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_sdk_1", "content": "18C, sunny"}],
            },
        ],
        tools=TOOLS,
    )
    check(m.content and m.content[0].type == "text", f"content {m.content!r}")
    check(m.content[0].text == CONTENT, f"text {m.content[0].text!r}")
    check(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason!r}")
    return {"text": m.content[0].text}


def case_stream():
    """The SDK's stream helper: text deltas assembled, the final message with its usage."""
    with client.messages.stream(model=model, max_tokens=MAX_TOKENS, system="Be brief.", messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == STREAM, f"text {text!r}")
    check(final.content[0].text == STREAM, f"final content {final.content!r}")
    check(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason!r}")
    check_usage(final.usage)
    return {"text": text, "usage": [final.usage.input_tokens, final.usage.output_tokens]}


def case_stream_events():
    """`stream=True`: the raw server-sent events, in Anthropic's order."""
    stream = client.messages.create(model=model, max_tokens=MAX_TOKENS, messages=USER, stream=True)
    types, parts, input_tokens, output_tokens, stop_reason = [], [], None, None, None
    for ev in stream:
        types.append(ev.type)
        if ev.type == "message_start":
            input_tokens = ev.message.usage.input_tokens
        elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            parts.append(ev.delta.text)
        elif ev.type == "message_delta":
            output_tokens = ev.usage.output_tokens
            stop_reason = ev.delta.stop_reason
    text = "".join(parts)
    check(types[:2] == ["message_start", "content_block_start"], f"first events {types[:2]}")
    check(types[-3:] == ["content_block_stop", "message_delta", "message_stop"], f"last events {types[-3:]}")
    check(text == STREAM, f"text {text!r}")
    check(stop_reason == "end_turn", f"stop_reason {stop_reason!r}")
    check(input_tokens and output_tokens, f"usage {input_tokens!r} {output_tokens!r}")
    return {"events": len(types), "text": text}


def case_tools_stream():
    with client.messages.stream(
        model=model, max_tokens=MAX_TOKENS, messages=WEATHER, tools=TOOLS, extra_headers=TOOL_HEADERS
    ) as s:
        final = s.get_final_message()
    return check_tool_use(final)


def expect_error(cls, status, call):
    try:
        call()
    except anthropic.APIStatusError as e:
        check(isinstance(e, cls), f"{type(e).__name__} ({e.status_code}), not {cls.__name__}")
        check(e.status_code == status, f"status {e.status_code}")
        return {"error": type(e).__name__, "status": e.status_code}
    raise AssertionError(f"no error, expected {cls.__name__}")


def case_error_401():
    bad = make_client("sk-wrong-key")
    return expect_error(
        anthropic.AuthenticationError,
        401,
        lambda: bad.messages.create(model=model, max_tokens=MAX_TOKENS, messages=USER),
    )


def case_error_404():
    return expect_error(
        anthropic.NotFoundError,
        404,
        lambda: client.messages.create(model="no-such-model", max_tokens=MAX_TOKENS, messages=USER),
    )


def case_error_429():
    # The upstream answers 429 rate_limit_error; the gateway relays it.
    return expect_error(
        anthropic.RateLimitError,
        429,
        lambda: client.messages.create(
            model=model, max_tokens=MAX_TOKENS, messages=USER, extra_headers={"x-mock-status": "429"}
        ),
    )


out = {"sdk": "anthropic-python", "version": anthropic.__version__, "order": CASES, "cases": {}, "values": {}}
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
