"""The ``anthropic`` provider against the fake Messages API upstream on 127.0.0.1: what it sends, JSON and
streamed answers, tool calls, and every kind of failure mapped onto fallback and cooldown."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from minigate.providers.anthropic import AnthropicProvider, AnthropicProviderConfig
from minigate.providers.base import ProviderError, ProviderRequest
from minigate.providers.openai_compat import ApiAuth
from minigate.providers.registry import ProviderRegistry
from tests.fakes.anthropic_upstream import Answer, AnthropicUpstream, ErrorEvent, Failure, Truncated

pytestmark = pytest.mark.fast

KEY = "sk-ant-test-key"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicUpstream]:
    fake = AnthropicUpstream(api_key=KEY)
    await fake.astart()
    yield fake
    await fake.aclose()


@pytest.fixture
async def provider(upstream: AnthropicUpstream) -> AsyncIterator[AnthropicProvider]:
    config = AnthropicProviderConfig(endpoint=upstream.url, auth=ApiAuth(type="api_key", value=KEY), timeout=5)
    provider = AnthropicProvider("claude", config)
    await provider.start()
    yield provider
    await provider.close()


def request(stream: bool = False, **body: Any) -> ProviderRequest:
    body = {"model": "claude-test", "messages": MESSAGES, **body}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return ProviderRequest("chat/completions", "claude-test", body, stream, time.monotonic() + 10)


async def chunks(provider: AnthropicProvider, req: ProviderRequest) -> list[dict[str, Any]]:
    stream = await provider.open_stream(req)
    try:
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_a_json_answer_and_what_was_sent(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    answer = await provider.complete(request(max_tokens=64, temperature=0.2))
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello from claude"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["prompt_tokens"] == 4 and answer["usage"]["completion_tokens"] == 3
    [sent] = upstream.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert (sent.headers["x-api-key"], sent.headers["anthropic-version"]) == (KEY, "2023-06-01")
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "claude-test",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
        "temperature": 0.2,
    }


async def test_a_streamed_answer(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.script(Answer(text="Hello there, friend", thinking="let me think", usage={"cache_read_input_tokens": 6}))
    got = await chunks(provider, request(stream=True))
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(got) == "Hello there, friend"
    assert got[-2]["choices"][0]["finish_reason"] == "stop"
    assert got[-1]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 6},
    }
    assert upstream.requests[0].body["stream"] is True


async def test_streamed_tool_calls_assemble_to_their_input(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    weather = {"city": "Paris", "days": [1, 2], "note": "a " * 20}
    upstream.script(Answer(text="Checking.", calls=(("get_weather", weather), ("now", {})), pieces=5))
    got = await chunks(provider, request(stream=True))
    calls: dict[int, dict[str, Any]] = {}
    for chunk in got:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []) if chunk["choices"] else []:
            call = calls.setdefault(delta["index"], {"id": delta.get("id"), "name": "", "arguments": ""})
            call["name"] += delta["function"].get("name", "")
            call["arguments"] += delta["function"]["arguments"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("get_weather", weather), ("now", {})]
    assert all(c["id"].startswith("toolu_") for c in calls.values())
    assert text_of(got) == "Checking."
    assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]][-1] == "tool_calls"


async def test_a_json_tool_call(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.script(Answer(calls=(("get_weather", {"city": "Oslo"}),)))
    [choice] = (await provider.complete(request()))["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("failure", "status", "fallback", "cooldown", "code"),
    [
        (Failure(529, "overloaded_error", "Overloaded"), 529, True, True, None),
        (Failure(500, "api_error", "Internal server error"), 500, True, True, None),
        (Failure(403, "permission_error", "not allowed"), 403, True, True, None),
        (Failure(404, "not_found_error", "model: claude-test"), 404, True, True, None),
        (
            Failure(400, "invalid_request_error", "prompt is too long: 9 tokens > 8"),
            400,
            True,
            False,
            "context_length_exceeded",
        ),
        (Failure(400, "invalid_request_error", "max_tokens: too large"), 400, False, False, None),
    ],
)
async def test_error_answers(
    provider: AnthropicProvider,
    upstream: AnthropicUpstream,
    stream: bool,
    failure: Failure,
    status: int,
    fallback: bool,
    cooldown: bool,
    code: str | None,
) -> None:
    upstream.script(failure)
    with pytest.raises(ProviderError) as info:
        await (chunks(provider, request(stream=True)) if stream else provider.complete(request()))
    err = info.value
    assert (err.status, err.type, err.message) == (status, failure.type, failure.message)
    assert (err.fallback, err.cooldown, err.code) == (fallback, cooldown, code)


async def test_a_rate_limit_says_how_long_to_wait(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.script(
        Failure(429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "7"})
    )
    with pytest.raises(ProviderError) as info:
        await provider.complete(request())
    assert (info.value.status, info.value.retry_after, info.value.fallback, info.value.cooldown) == (
        429,
        7.0,
        True,
        True,
    )


async def test_a_wrong_key_is_the_deployments_fault(upstream: AnthropicUpstream) -> None:
    config = AnthropicProviderConfig(endpoint=upstream.url, auth=ApiAuth(type="api_key", value="sk-wrong-key"))
    provider = AnthropicProvider("claude", config)
    await provider.start()
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(request())
    finally:
        await provider.close()
    assert (info.value.status, info.value.type, info.value.fallback, info.value.cooldown) == (
        401,
        "authentication_error",
        True,
        True,
    )


async def test_the_key_is_never_echoed(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.script(Failure(400, "invalid_request_error", f"bad request from {KEY}"))
    with pytest.raises(ProviderError) as info:
        await provider.complete(request())
    assert info.value.message == "bad request from [redacted]"


async def test_an_error_event_mid_stream(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.script(ErrorEvent("overloaded_error", "Overloaded", words=2))
    stream = await provider.open_stream(request(stream=True))
    seen: list[dict[str, Any]] = []
    try:
        with pytest.raises(ProviderError) as info:
            async for chunk in stream:
                seen.append(chunk)
    finally:
        await stream.aclose()
    assert text_of(seen) == "w0 w1"
    assert (info.value.status, info.value.type, info.value.message, info.value.fallback) == (
        529,
        "overloaded_error",
        "Overloaded",
        True,
    )


async def test_a_stream_that_ends_early_is_truncated(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.script(Truncated(words=3))
    with pytest.raises(ProviderError) as info:
        await chunks(provider, request(stream=True))
    assert (info.value.code, info.value.fallback) == ("upstream_truncated", True)


async def test_a_refused_request_never_reaches_the_upstream(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(request(n=3))
    assert (info.value.code, info.value.capability) == ("unsupported_parameter", True)
    assert upstream.requests == []


def check(section: dict[str, Any]) -> list[tuple[str, str]]:
    registry = ProviderRegistry()
    from minigate.providers import anthropic

    anthropic.register(registry)
    kind = registry.get("anthropic")
    assert kind is not None
    return kind.check(msgspec.convert(section, kind.config_type))


def test_the_config_section() -> None:
    good = {"type": "anthropic", "auth": {"type": "api_key", "value": "sk-x"}, "models": ["claude-sonnet-4-5"]}
    assert check(good) == []
    config = msgspec.convert(good, AnthropicProviderConfig)
    assert (config.endpoint, config.anthropic_version, config.default_max_tokens) == (
        "https://api.anthropic.com/v1",
        "2023-06-01",
        4096,
    )
    assert check({**good, "endpoint": "https://api.anthropic.com"}) == [
        ("endpoint", "the base URL including /v1 (requests go to <endpoint>/messages)")
    ]
    assert [path for path, _ in check({**good, "endpoint": "http://169.254.169.254/v1"})] == ["endpoint"]
    assert [path for path, _ in check({**good, "auth": {"type": "api_key"}, "default_max_tokens": 0})] == [
        "auth.value",
        "default_max_tokens",
    ]
    with pytest.raises(msgspec.ValidationError, match="api_base"):
        msgspec.convert({**good, "api_base": "https://x/v1"}, AnthropicProviderConfig)
