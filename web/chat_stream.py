"""One chat answer, streamed into the page while it is generated, through the same router as ``/v1``.

The serving layer's typed events become Server-Sent Events of HTML for htmx; if the browser goes away (Stop) the
upstream call is cancelled and the text so far kept as a stopped answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import anyio
import msgspec
from markupsafe import escape
from sqlalchemy import Table, select
from sse_starlette import ServerSentEvent

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.core.wire import ChatCompletionRequest
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, EventStream, Outcome, Usage
from minigate.gateway.serving.proxy import serve_json, start_call
from minigate.gateway.serving.streaming import serve_stream
from minigate.gateway.storage import ConversationStore
from minigate.gateway.storage.conversations import ConversationInfo, MessageInfo
from minigate.gateway.storage.tables import UsageRow

__all__ = ["Answer", "chat_body", "complete_answer", "stream_answer"]

_USAGE = cast(Table, UsageRow.__table__)


def chat_body(conversation: ConversationInfo, history: list[MessageInfo], stream: bool) -> dict[str, Any]:
    """The OpenAI request for the next answer: system prompt, the conversation so far, its settings."""
    messages: list[dict[str, Any]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for message in history:
        answered = message.role == "assistant" and message.status in ("ok", "stopped")
        if (message.role == "user" or answered) and message.content:
            messages.append({"role": message.role, "content": message.content})
    body: dict[str, Any] = {"model": conversation.model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if conversation.temperature is not None:
        body["temperature"] = conversation.temperature
    if conversation.max_tokens is not None:
        body["max_tokens"] = conversation.max_tokens
    return body


@dataclass(slots=True)
class Answer:
    """What the assistant message will store once the answer is over."""

    text: str = ""
    status: str = "ok"
    error: str | None = None
    request_id: str | None = None
    provider: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None

    def fields(self, row: dict[str, Any] | None, started: float, ttft: float | None) -> dict[str, Any]:
        """The message columns, preferring the usage row's figures (the router's own measurements)."""
        usage = self.usage or {}
        values: dict[str, Any] = {
            "content": self.text,
            "status": self.status,
            "error": self.error,
            "request_id": self.request_id,
            "provider": self.provider,
            "model": self.model,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "latency_ms": (time.monotonic() - started) * 1000,
            "ttft_ms": ttft,
        }
        if row is not None:
            values["fallbacks"] = row["fallbacks"]
            values["hops"] = msgspec.json.decode(row["hops"]) if row["hops"] else None
            values["provider"] = values["provider"] or row["provider"]
            values["model"] = values["model"] or row["model"]
            for key in ("prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms"):
                if row[key] is not None:
                    values[key] = row[key]
        return values


async def _usage_row(gateway: Gateway, request_id: str | None) -> dict[str, Any] | None:
    if request_id is None:
        return None
    stmt = select(_USAGE).where(_USAGE.c.request_id == request_id).order_by(_USAGE.c.id.desc()).limit(1)
    async with gateway.database.engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else dict(row)


async def stream_answer(
    gateway: Gateway,
    store: ConversationStore,
    conversation: ConversationInfo,
    history: list[MessageInfo],
    message_id: int,
    key_id: int | None,
    first_html: str,
    final_html: Callable[[MessageInfo], str],
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of one answer; see the module docstring."""
    yield ServerSentEvent(data=first_html)
    answer, started, ttft = Answer(), time.monotonic(), None
    parts: list[str] = []
    opening = f'<hx-partial hx-target="#msg-{message_id}-text" hx-swap="beforeend">'
    try:
        raw = chat_body(conversation, history, stream=True)
        served: EventStream | None = None
        try:
            call = start_call(gateway, "chat/completions", msgspec.convert(raw, ChatCompletionRequest), raw, key_id)
            answer.request_id = call.request_id
            served = await serve_stream(call)
        except GatewayError as err:
            answer.status, answer.error = "error", err.message
        if served is not None:
            answer.provider = served.outcome.deployment.provider
            answer.model = served.outcome.deployment.model
            try:
                async for event in served.events:
                    if isinstance(event, Chunk):
                        for piece in event.pieces():
                            ttft = ttft or (time.monotonic() - started) * 1000
                            parts.append(piece)
                            yield ServerSentEvent(data=f"{opening}{escape(piece)}</hx-partial>")
                    elif isinstance(event, Usage):
                        answer.usage = event.counts
                    elif isinstance(event, Outcome) and event.failure is not None:
                        answer.status, answer.error = "error", event.failure.message
            finally:
                with anyio.CancelScope(shield=True):
                    await served.events.aclose()
    except (asyncio.CancelledError, GeneratorExit):
        answer.status = "stopped"
        raise
    finally:
        answer.text = "".join(parts)
        with anyio.CancelScope(shield=True):
            row = await _usage_row(gateway, answer.request_id)
            await store.finish_message(message_id, **answer.fields(row, started, ttft))
    message = await store.get_message(message_id)
    if message is not None:
        html = final_html(message)
        yield ServerSentEvent(data=f'<hx-partial hx-target="#msg-{message_id}" hx-swap="outerHTML">{html}</hx-partial>')


async def complete_answer(
    gateway: Gateway,
    store: ConversationStore,
    conversation: ConversationInfo,
    history: list[MessageInfo],
    message_id: int,
    key_id: int | None,
) -> None:
    """The same answer without streaming, for a browser without JavaScript (the page then reloads)."""
    answer, started = Answer(), time.monotonic()
    raw = chat_body(conversation, history, stream=False)
    try:
        call = start_call(gateway, "chat/completions", msgspec.convert(raw, ChatCompletionRequest), raw, key_id)
        answer.request_id = call.request_id
        reply = await serve_json(call)
        body = reply.body
        answer.text = str(((body.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
        answer.usage = body.get("usage")
        answer.provider = reply.outcome.deployment.provider
        answer.model = reply.outcome.deployment.model
    except GatewayError as err:
        answer.status, answer.error = "error", err.message
    row = await _usage_row(gateway, answer.request_id)
    await store.finish_message(message_id, **answer.fields(row, started, None))
