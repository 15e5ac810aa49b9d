"""The fake upstream's tool-calling answers (:class:`tests.fakes.behaviours.ToolCalls`), JSON and streamed."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from tests.fakes import wire
from tests.fakes.behaviours import ToolCalls

__all__ = ["respond"]


def _calls(b: ToolCalls) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:12]
    return [
        {"id": f"call_{i}_{tag}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(b.calls)
    ]


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def respond(request: web.Request, body: dict[str, Any], b: ToolCalls) -> web.StreamResponse:
    """The answer to one chat request: a whole completion, or its SSE stream when the body asks for one."""
    calls = _calls(b)
    model = body.get("model")
    prompt = wire.count_words(body.get("messages"))
    completion = sum(len(arguments) // 4 + 1 for _, arguments in b.calls) + wire.count_words(b.content or "")
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    top = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": b.content, "tool_calls": calls}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        out = {**top, "object": "chat.completion", "choices": [choice], "usage": usage}
        return web.Response(body=wire.dumps(out), content_type=wire.JSON)

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + wire.dumps({**top, "object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""})]
    frames += [frame({"content": word}) for word in map(_word, wire.words(b.content or ""))]
    for index, call in enumerate(calls):
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        head["function"]["arguments"] = ""
        frames.append(frame({"tool_calls": [head]}))
        for piece in _split(call["function"]["arguments"], b.pieces):
            frames.append(frame({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    frames.append(frame({}, "tool_calls"))
    if (body.get("stream_options") or {}).get("include_usage"):
        frames.append(b"data: " + wire.dumps({**top, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
        frames[-1] += b"\n\n"
    frames.append(wire.DONE)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for chunk in frames:  # one write each: a client sees the deltas arrive one by one
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _word(encoded: bytes) -> str:
    text: str = json.loads(encoded)
    return text
