"""The echo model (providers/fake.py) keeps the message's own whitespace: newlines, indentation, blank lines."""

from __future__ import annotations

import time
from typing import Any

import pytest

from minigate.providers.base import ProviderRequest
from minigate.providers.fake import FakeProvider, FakeProviderConfig

TEXT = "Line one\n\n  indented line\ttab\nlast line"


def _request(endpoint: str, stream: bool, **body: Any) -> ProviderRequest:
    return ProviderRequest(endpoint, "echo", {"model": "echo", **body}, stream, time.monotonic() + 10)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_echo_keeps_newlines_and_indentation(stream: bool) -> None:
    provider = FakeProvider("echo", FakeProviderConfig())
    request = _request("chat/completions", stream, messages=[{"role": "user", "content": TEXT}])
    if stream:
        chunks = [c async for c in await provider.open_stream(request)]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 3  # word by word
    else:
        answer = await provider.complete(request)
        text = answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] == 2 + len(TEXT.split())
    assert text == f"You said: {TEXT}"


async def test_completions_keep_whitespace_too() -> None:
    provider = FakeProvider("echo", FakeProviderConfig())
    answer = await provider.complete(_request("completions", False, prompt="def f():\n    return 1"))
    assert answer["choices"][0]["text"] == " def f():\n    return 1"


async def test_a_limit_still_cuts_whole_words() -> None:
    provider = FakeProvider("echo", FakeProviderConfig())
    request = _request("chat/completions", False, messages=[{"role": "user", "content": "a\nb c"}], max_tokens=3)
    assert (await provider.complete(request))["choices"][0]["message"]["content"] == "You said: a"
