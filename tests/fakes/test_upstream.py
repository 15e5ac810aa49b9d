"""Self-tests of the fake OpenAI-compatible upstream, with httpx and the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from .upstream import (
    Delay,
    FakeUpstream,
    MalformedSSE,
    NoDone,
    Reply,
    ResetAfter,
    StallAfter,
    Status,
    StreamError,
    ToolCalls,
)

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "say hi to me"}]}


@pytest.fixture
def fake():
    with FakeUpstream("fake") as f:
        yield f


def sse(text: str) -> list[str]:
    assert text.endswith("\n\n")
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block]


def test_chat_json_usage_and_recording(fake):
    body = {**CHAT, "x_vendor": {"nested": [1, 2]}, "top_k": 3}
    r = httpx.post(f"{fake.url}/chat/completions", json=body, headers={"X-Trace": "abc"})
    assert r.status_code == 200
    data = r.json()
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert data["model"] == "m1" and isinstance(data["created"], int)
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello from fake"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    (rec,) = fake.requests
    assert (rec.path, rec.method, rec.body, rec.disconnected) == ("/v1/chat/completions", "POST", body, False)
    assert rec.headers["x-trace"] == "abc"


def test_openai_sdk_json_and_streams(fake):
    client = openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0)
    msgs = CHAT["messages"]
    assert client.chat.completions.create(model="m1", messages=msgs).choices[0].message.content == ("Hello from fake")
    chunks = list(client.chat.completions.create(model="m1", messages=msgs, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from fake"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None
    opts = {"include_usage": True}
    chunks = list(client.chat.completions.create(model="m1", messages=msgs, stream=True, stream_options=opts))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].usage.prompt_tokens == 4 and chunks[-2].choices[0].finish_reason == "stop"
    assert client.completions.create(model="m1", prompt="a b").choices[0].text == "Hello from fake"
    emb = client.embeddings.create(model="e", input=["one", "two words"])
    assert [len(d.embedding) for d in emb.data] == [8, 8] and emb.usage.prompt_tokens == 3
    assert emb.data[0].embedding == client.embeddings.create(model="e", input="one").data[0].embedding
    assert [m.id for m in client.models.list()] == ["fake"]


def test_tool_calls_json_and_streamed(fake):
    """The SDK reads the same calls from the JSON answer and from the stream's deltas put together."""
    calls = (("get_weather", '{"city": "Paris"}'), ("add", '{"a": 1, "b": 2}'))
    fake.set_default(ToolCalls(calls, content="Let me check."))
    client = openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0)
    answer = client.chat.completions.create(**CHAT)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    got = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert got == list(calls) and all(c.id.startswith("call_") for c in choice.message.tool_calls or [])
    parts: dict[int, dict[str, str]] = {}
    finish, text = None, ""
    stream = client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
            for d in c.delta.tool_calls or []:
                part = parts.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                part["id"] += d.id or ""
                part["name"] += (d.function.name or "") if d.function else ""
                part["arguments"] += (d.function.arguments or "") if d.function else ""
    assert finish == "tool_calls" and text == "Let me check." and usage is not None
    assert [(p["name"], p["arguments"]) for _, p in sorted(parts.items())] == list(calls)
    assert len({p["id"] for p in parts.values()}) == 2


def test_raw_stream_shape_and_extra_fields(fake):
    fake.script(Reply(content="a b", extra={"system_fingerprint": "fp1"}))
    r = httpx.post(f"{fake.url}/chat/completions", json={**CHAT, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
        {"content": " b"},
        {},
    ]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert all(c["system_fingerprint"] == "fp1" and c["model"] == "m1" for c in chunks)
    fake.script(Reply(chunks=2, extra={"system_fingerprint": "fp2"}))
    data = httpx.post(f"{fake.url}/completions", json={"model": "m1", "prompt": "x"}).json()
    assert data["choices"][0]["text"] == "tok0 tok1" and data["object"] == "text_completion"
    assert data["system_fingerprint"] == "fp2" and data["usage"]["completion_tokens"] == 2


def test_api_key():
    with FakeUpstream("secure", api_key="sk-1") as fake:
        r = httpx.post(f"{fake.url}/chat/completions", json=CHAT)
        assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        ok = httpx.post(f"{fake.url}/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-1"})
        assert ok.json()["choices"][0]["message"]["content"] == "Hello from secure"


def test_status_with_retry_after_and_queues(fake):
    fake.script(Status(429, headers={"Retry-After": "2"}))
    fake.script(Status(500, {"message": "model a down"}), model="a")
    r = httpx.post(f"{fake.url}/chat/completions", json=CHAT)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json() == {"error": {"message": "fake error 429", "type": "rate_limit_error", "param": None, "code": None}}
    client = openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError, match="model a down"):
        client.chat.completions.create(model="a", messages=CHAT["messages"])
    assert httpx.post(f"{fake.url}/chat/completions", json={**CHAT, "model": "a"}).status_code == 200
    fake.set_default(Status(503, body=b"raw"))
    r = httpx.post(f"{fake.url}/chat/completions", json=CHAT)
    assert (r.status_code, r.content) == (503, b"raw")


def test_reset_after(fake):
    fake.script(ResetAfter(2), ResetAfter(0))
    lines = []
    with (
        pytest.raises(httpx.TransportError),
        httpx.stream("POST", f"{fake.url}/chat/completions", json={**CHAT, "stream": True}) as r,
    ):
        lines.extend(line for line in r.iter_lines() if line)
    assert len(lines) == 3 and not any("[DONE]" in line for line in lines)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{fake.url}/chat/completions", json=CHAT)
    client = openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0)
    fake.script(ResetAfter(1))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m1", messages=CHAT["messages"])
    assert not any(rec.disconnected for rec in fake.requests)


def test_stream_faults(fake):
    stream = {**CHAT, "stream": True}
    fake.script(MalformedSSE(1), NoDone(2), StreamError(1, {"message": "boom", "code": "overloaded"}))
    events = sse(httpx.post(f"{fake.url}/chat/completions", json=stream).text)
    assert events[-2:] == ["{not json", "[DONE]"] and len(events) == 4
    events = sse(httpx.post(f"{fake.url}/chat/completions", json=stream).text)
    assert events[-1] != "[DONE]" and json.loads(events[-1])["choices"][0]["finish_reason"] == "stop"
    events = sse(httpx.post(f"{fake.url}/chat/completions", json=stream).text)
    assert json.loads(events[-1])["error"]["code"] == "overloaded" and len(events) == 3
    fake.script(StallAfter(1, 1.0))
    seen = b""
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream("POST", f"{fake.url}/chat/completions", json=stream, timeout=0.2) as r,
    ):
        for raw in r.iter_raw():  # the first chunk arrives, then the stall trips the read timeout
            seen += raw
    assert b'"content":"Hello"' in seen and b" from" not in seen
    fake.script(StallAfter(1, 0.1))
    start = time.monotonic()
    events = sse(httpx.post(f"{fake.url}/chat/completions", json=stream).text)
    assert time.monotonic() - start >= 0.1 and events[-1] == "[DONE]" and len(events) == 6


def test_disconnect_detection(fake):
    fake.script(Reply(chunks=50, interval=0.02))
    with httpx.stream("POST", f"{fake.url}/chat/completions", json={**CHAT, "stream": True}) as r:
        next(r.iter_raw())
    assert fake.wait_for_disconnect(2)
    assert fake.requests[-1].disconnected
    fake.reset()
    fake.script(Delay(2))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fake.url}/chat/completions", json=CHAT, timeout=0.1)
    assert fake.wait_for_disconnect(2) and fake.requests[-1].disconnected


async def test_async_clients_and_in_loop_server():
    with FakeUpstream("threaded") as threaded:
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{threaded.url}/chat/completions", json=CHAT)
            assert r.json()["choices"][0]["message"]["content"] == "Hello from threaded"
    local = FakeUpstream("local")
    await local.astart()
    async with openai.AsyncOpenAI(base_url=local.url, api_key="k", max_retries=0) as client:
        res = await client.chat.completions.create(model="m", messages=CHAT["messages"])
        assert res.choices[0].message.content == "Hello from local"
    await local.aclose()
    task = asyncio.create_task(local.serve())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ValueError):
        await FakeUpstream().astart(host="0.0.0.0")
