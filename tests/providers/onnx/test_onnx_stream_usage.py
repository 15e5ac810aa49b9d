"""A local stream cut before its usage chunk still says what the worker generated (issue 15, item 6)."""

from __future__ import annotations

from typing import Any

from tests.providers.onnx.helpers import chat


async def test_a_cut_stream_reports_the_tokens_generated_so_far(provider: Any) -> None:
    stream = await provider.open_stream(chat(max_tokens=200, stream=True, stream_options={"include_usage": True}))
    before = stream.usage_so_far()  # the prompt is read once the worker accepted the request
    assert before is not None and before["prompt_tokens"] > 0 and before["completion_tokens"] == 0
    content = 0
    try:
        async for chunk in stream:
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                content += 1
            if content >= 3:
                break
    finally:
        await stream.aclose()
    usage = stream.usage_so_far()
    assert usage is not None and usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] >= 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
