"""From a worker's pieces to OpenAI results: stop strings, deadlines and ``chat.completion.chunk`` streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from minigate.providers.base import ChunkStream, ProviderError, ProviderRequest
from minigate.providers.onnx.openai_mapping import ChatJob, StopMatcher, chunk, new_id, usage
from minigate.providers.onnx.toolcalls import ToolCall, ToolCallParser
from minigate.providers.onnx.worker import Generation

__all__ = ["OnnxStream", "pieces"]


async def pieces(
    generation: Generation, matcher: StopMatcher, request: ProviderRequest
) -> AsyncIterator[tuple[str, int, str | None]]:
    """``(text, tokens, finish_reason)`` until the sequence ends, stop strings applied (and cancelling it)."""
    while True:
        left = request.remaining()
        try:
            if left <= 0:  # pieces may already wait in the queue: a passed deadline still ends the answer
                raise TimeoutError
            piece = await generation.next(left)
        except TimeoutError as exc:
            raise ProviderError(
                "the local model did not finish before the deadline", status=504, code="timeout"
            ) from exc
        text, stopped = matcher.feed(piece.text)
        if stopped:
            yield text, piece.tokens, "stop"
            return
        if piece.finish is not None:
            yield text + matcher.flush(), piece.tokens, "stop" if piece.finish == "cancelled" else piece.finish
            return
        yield text, piece.tokens, None


class OnnxStream(ChunkStream):
    """A streamed completion: OpenAI chunks from a worker Generation; closing it cancels the sequence."""

    def __init__(self, request: ProviderRequest, job: ChatJob, generation: Generation) -> None:
        self.request = request
        self.job = job
        self.generation = generation
        self.completion = 0  # tokens generated so far

    def usage_so_far(self) -> dict[str, int] | None:
        """What the worker generated until now, for a stream cut before its usage chunk."""
        return usage(self.generation.prompt_tokens, self.completion) if self.generation.prompt_tokens else None

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        job, model, generation = self.job, self.request.model, self.generation
        ident, created = new_id(job.chat), int(time.time())
        with_usage = job.include_usage
        if job.chat:
            yield chunk(ident, model, created, True, delta={"role": "assistant", "content": ""}, with_usage=with_usage)
        completion, finish = 0, "stop"
        parser = ToolCallParser(job.tools) if job.tools else None
        try:
            async for text, ntok, fin in pieces(generation, StopMatcher(job.stop), self.request):
                completion += ntok
                self.completion = completion
                finish = fin or finish
                if parser is None:
                    if text:
                        yield chunk(
                            ident, model, created, job.chat, delta={"content": text}, text=text, with_usage=with_usage
                        )
                    continue
                calls = len(parser.calls)
                for item in parser.feed(text) + (parser.finish() if fin else []):
                    if isinstance(item, ToolCall):
                        for delta in item.deltas(calls):
                            yield chunk(
                                ident, model, created, True, delta={"tool_calls": [delta]}, with_usage=with_usage
                            )
                        calls += 1
                    else:
                        yield chunk(ident, model, created, True, delta={"content": item}, with_usage=with_usage)
        finally:
            await generation.aclose()
        if parser is not None and parser.calls:
            finish = "tool_calls"
        yield chunk(ident, model, created, job.chat, finish=finish, with_usage=with_usage)
        if with_usage:
            obj = "chat.completion.chunk" if job.chat else "text_completion"
            yield {
                "id": ident,
                "object": obj,
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage(generation.prompt_tokens, completion),
            }

    async def aclose(self) -> None:
        await self.generation.aclose()
