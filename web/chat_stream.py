"""One chat answer, streamed into the page while it is generated, through the same router as ``/v1``.

The serving layer's typed events become Server-Sent Events of HTML for htmx: while the answer streams, each event
carries only the blocks of its rendered Markdown that changed (see :func:`block_update`); if the browser goes away
(Stop) the upstream call is cancelled and the text so far kept as a stopped answer. A history the model refuses as
longer than its context is sent again without its oldest turns (see :func:`leave_out_more`); the stored
conversation keeps them.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anyio
import msgspec
from sqlalchemy import Table, select
from sse_starlette import ServerSentEvent

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.core.wire import ChatCompletionRequest
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, EventStream, Outcome, Usage
from minigate.gateway.serving.proxy import Call, serve_json, start_call
from minigate.gateway.serving.streaming import serve_stream
from minigate.gateway.storage import ConversationStore
from minigate.gateway.storage.conversations import ConversationInfo, MessageInfo
from minigate.gateway.storage.images import ImageStore, StoredImage
from minigate.gateway.storage.tables import UsageRow
from minigate.gateway.storage.users import owner_user
from minigate.web.markdown import Blocks

__all__ = [
    "RENDER_EVERY",
    "Answer",
    "block_update",
    "chat_body",
    "complete_answer",
    "leave_out_more",
    "left_out_note",
    "render_due",
    "sendable",
    "stream_answer",
    "too_long",
]

_USAGE = cast(Table, UsageRow.__table__)
# How a provider says the prompt is longer than the model's context (OpenAI's code, llama.cpp's and vLLM's words).
_TOO_LONG = ("context_length", "context length", "maximum context", "context window", "too many tokens")
_T = TypeVar("_T")
RENDER_EVERY = 0.08  # seconds between renders of a streaming answer: about 12 a second look continuous


def sendable(history: list[MessageInfo]) -> list[MessageInfo]:
    """The messages a model is sent: the user's, and the answers that ended well or were stopped."""
    return [
        m
        for m in history
        if m.content and (m.role == "user" or (m.role == "assistant" and m.status in ("ok", "stopped")))
    ]


def leave_out_more(history: list[MessageInfo], left_out: int) -> int | None:
    """How many of the oldest sendable messages to leave out next, after ``left_out`` did not fit; None: no more.

    Half of the earlier messages still sent go (at least one), then any answer left at the front, so the request
    starts with a user turn; the last user message always stays. Halving reaches a fit in few calls.
    """
    messages = sendable(history)
    earlier = len(messages) - 1 - left_out
    if earlier <= 0:
        return None
    more = left_out + (earlier + 1) // 2
    while more < len(messages) - 1 and messages[more].role != "user":
        more += 1
    return more


def too_long(err: GatewayError) -> bool:
    """True if the chain refused the request as longer than the model's context."""
    text = f"{err.code or ''} {err.message}".lower()
    return any(marker in text for marker in _TOO_LONG)


def left_out_note(count: int) -> str:
    """What the answer says when ``count`` messages were not sent."""
    what = "1 earlier message was" if count == 1 else f"{count} earlier messages were"
    return f"{what} not sent: the conversation no longer fits the model's context. They are kept here."


def _content(message: MessageInfo, images: dict[int, list[StoredImage]]) -> str | list[dict[str, Any]]:
    """A message's content: its text, or (images, issue 15) its text and images as OpenAI content parts."""
    attached = images.get(message.id) if message.role == "user" else None
    if not attached:
        return message.content
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    for image in attached:
        url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def chat_body(
    conversation: ConversationInfo,
    history: list[MessageInfo],
    stream: bool,
    left_out: int = 0,
    images: dict[int, list[StoredImage]] | None = None,
) -> dict[str, Any]:
    """The OpenAI request for the next answer: system prompt, the conversation so far, its settings.

    ``left_out`` oldest messages are not sent (see :func:`leave_out_more`); ``images``: the conversation's images
    by message id (``ImageStore.for_conversation``), sent as ``image_url`` parts with their messages.
    """
    messages: list[dict[str, Any]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    messages += [{"role": m.role, "content": _content(m, images or {})} for m in sendable(history)[left_out:]]
    body: dict[str, Any] = {"model": conversation.model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if conversation.temperature is not None:
        body["temperature"] = conversation.temperature
    if conversation.max_tokens is not None:
        body["max_tokens"] = conversation.max_tokens
    if conversation.top_p is not None:
        body["top_p"] = conversation.top_p
    if conversation.repetition_penalty is not None:  # not OpenAI's: local engines, vLLM and llama.cpp take it
        body["repetition_penalty"] = conversation.repetition_penalty
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
    left_out: int = 0

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
        if self.left_out and self.status != "error":
            values["error"] = left_out_note(self.left_out)  # an answer's error column holds its warning
        if row is not None:
            hops = msgspec.json.decode(row["hops"]) if row["hops"] else None
            # The row counts every failed hop; with no one answering, the first was the primary, not a fallback.
            answered = row["provider"] is not None
            values["fallbacks"] = row["fallbacks"] if answered else max(len(hops or []) - 1, 0)
            values["hops"] = hops
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


async def _call(
    gateway: Gateway,
    conversation: ConversationInfo,
    history: list[MessageInfo],
    key_id: int | None,
    answer: Answer,
    stream: bool,
    serve: Callable[[Call], Awaitable[_T]],
) -> _T | None:
    """Start the answer's call; a context-length refusal is tried again with fewer old turns. None: it failed."""
    images = await ImageStore(gateway.database).for_conversation(conversation.id)  # issue 15: one query
    person = owner_user(conversation.owner)  # a person's chat is theirs, key or not, under their own limits
    if person is not None:
        await gateway.keys.load_person(person)
    while True:
        raw = chat_body(conversation, history, stream, answer.left_out, images)
        try:
            parsed = msgspec.convert(raw, ChatCompletionRequest)
            call = start_call(gateway, "chat/completions", parsed, raw, key_id, user_id=person)
            answer.request_id = call.request_id
            return await serve(call)
        except GatewayError as err:
            more = leave_out_more(history, answer.left_out) if too_long(err) else None
            if more is None:
                answer.status, answer.error = "error", err.message
                return None
            answer.left_out = more


def render_due(now: float, shown_at: float | None, cost: float) -> bool:
    """Whether to render the streaming answer again at ``now``: the first piece at once, then after
    :data:`RENDER_EVERY` seconds, or ten times as long as the last render took (so a huge answer's renders take at
    most a tenth of the event loop's time)."""
    return shown_at is None or now - shown_at >= max(RENDER_EVERY, 10 * cost)


def block_update(message_id: int, shown: Sequence[str], rendered: Sequence[str]) -> str | None:
    """The event that turns the answer's blocks on the page (``shown``) into ``rendered``; None: no change.

    ``<hx-partial hx-swap="blocks keep:K">`` keeps the body's first K blocks (its first K elements) and replaces
    the rest with the blocks from K on; app.js's "blocks" swap applies it. K is the first block that differs (at
    most the last one: what is replaced is never empty unless the answer is), so a long answer sends its growing
    tail, not all of it, every time.
    """
    # Kept blocks are the same objects (MarkdownRenderer.blocks): comparing them costs an identity check.
    keep = next((i for i, (old, new) in enumerate(zip(shown, rendered, strict=False)) if old != new), None)
    if keep is None:
        if len(shown) == len(rendered):
            return None
        keep = min(len(shown), len(rendered))
    keep = max(min(keep, len(rendered) - 1), 0)
    html = "".join(rendered[keep:])
    return f'<hx-partial hx-target="#msg-{message_id}-text" hx-swap="blocks keep:{keep}">{html}</hx-partial>'


async def stream_answer(
    gateway: Gateway,
    store: ConversationStore,
    conversation: ConversationInfo,
    history: list[MessageInfo],
    message_id: int,
    key_id: int | None,
    first_html: str,
    final_html: Callable[[MessageInfo], str],
    render: Callable[[str, Blocks], Blocks],
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of one answer; see the module docstring.

    While it streams, the whole answer so far is rendered again (``render``: the chat's sanitising Markdown, block
    by block, reusing the blocks of the last render) and the blocks that changed replace the body's tail: the first
    piece at once, then at most every :data:`RENDER_EVERY` seconds, and less often when rendering a long answer
    gets slow (see :func:`render_due`); the final event replaces the whole message, rendered as a reload shows it.
    """
    yield ServerSentEvent(data=first_html)
    answer, started, ttft = Answer(), time.monotonic(), None
    parts: list[str] = []
    shown = Blocks()  # the answer's blocks on the page (the first event's body is empty)
    shown_at: float | None = None  # when the answer so far was last rendered, and what that render cost
    cost = 0.0
    try:
        served: EventStream | None = await _call(gateway, conversation, history, key_id, answer, True, serve_stream)
        if served is not None:
            answer.provider = served.outcome.deployment.provider
            answer.model = served.outcome.deployment.model
            try:
                async for event in served.events:
                    if isinstance(event, Chunk):
                        pieces = event.pieces()
                        if not pieces:
                            continue
                        now = time.monotonic()
                        ttft = ttft or (now - started) * 1000
                        parts += pieces
                        if render_due(now, shown_at, cost):
                            rendered = render("".join(parts), shown)
                            shown_at = time.monotonic()
                            cost = shown_at - now
                            update = block_update(message_id, shown.html, rendered.html)
                            shown = rendered
                            if update is not None:
                                yield ServerSentEvent(data=update)
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
    reply = await _call(gateway, conversation, history, key_id, answer, False, serve_json)
    if reply is not None:
        body = reply.body
        answer.text = str(((body.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
        answer.usage = body.get("usage")
        answer.provider = reply.outcome.deployment.provider
        answer.model = reply.outcome.deployment.model
    row = await _usage_row(gateway, answer.request_id)
    await store.finish_message(message_id, **answer.fields(row, started, None))
