"""Sending a message and regenerating an answer: Server-Sent Events for htmx, a redirect without JavaScript."""

from __future__ import annotations

from typing import Any, cast

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import ASGIApp
from markupsafe import escape
from sse_starlette import EventSourceResponse

from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage import ConversationStore
from minigate.gateway.storage.conversations import ConversationInfo, MessageInfo
from minigate.web.chat import NEW_TITLE
from minigate.web.chat_stream import complete_answer, stream_answer
from minigate.web.render import SECURITY_HEADERS, is_htmx
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["send_handlers", "short_title"]

MAX_MESSAGE = 100_000
MAX_TITLE = 60


def short_title(text: str, limit: int = MAX_TITLE) -> str:
    """A conversation's title from its first message: one line, cut at a word with an ellipsis when too long."""
    words = " ".join(text.split())
    if len(words) <= limit:
        return words
    cut = words[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 3:  # a word boundary not too far back; one very long word is cut where it must be
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def _plain(request: Request[Any, Any, Any], status: int, text: str, **headers: str) -> ASGIApp:
    # htmx 4 swaps error answers too; HX-Reswap none keeps the conversation on screen.
    response = Response(text, status_code=status, media_type="text/plain; charset=utf-8")
    return response.to_asgi_response(None, request, headers={**SECURITY_HEADERS, "hx-reswap": "none", **headers})


def _redirect(request: Request[Any, Any, Any], path: str) -> ASGIApp:
    response = Response(b"", status_code=303)
    return response.to_asgi_response(None, request, headers={**SECURITY_HEADERS, "location": path})


async def _answer(
    request: Request[Any, Any, Any],
    gateway: Gateway,
    web: WebState,
    user: Session,
    conversation: ConversationInfo,
    history: list[MessageInfo],
    title_changed: bool,
) -> ASGIApp:
    """Stream (htmx) or complete (plain form) the answer to ``history``."""
    store = ConversationStore(gateway.database)
    assistant = await store.add_message(conversation.id, "assistant", "", status="streaming")
    if not is_htmx(request):
        await complete_answer(gateway, store, conversation, history, assistant.id, user.key_id)
        return _redirect(request, f"/chat/{conversation.id}")
    first = web.render("_messages.html", messages=[*history, assistant], session=user, csrf=user.csrf,
                       conversation=conversation)  # fmt: skip
    if title_changed:
        listing = web.render("_conversation_list.html", conversations=await store.list(user.owner),
                             conversation=conversation)  # fmt: skip
        first += f'<hx-partial hx-target="#conversation-list" hx-swap="innerHTML">{listing}</hx-partial>'
        first += f'<hx-partial hx-target="#conv-title" hx-swap="innerHTML">{escape(conversation.title)}</hx-partial>'

    def final(message: MessageInfo) -> str:
        return web.render("_message.html", message=message, last=True)

    events = stream_answer(
        gateway, store, conversation, history, assistant.id, user.key_id, first, final, render=web.markdown.render
    )
    # sse-starlette adds the SSE headers itself (x-accel-buffering among them); the page's own come first.
    return cast(ASGIApp, EventSourceResponse(events, ping=15, headers=SECURITY_HEADERS))


@post("/chat/{conversation_id:int}/send")
async def chat_send(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> ASGIApp:
    """Add the user's message and answer it."""
    store = ConversationStore(gateway.database)
    conversation = await store.get(chat_user.owner, conversation_id)
    if conversation is None:
        return _plain(request, 404, "There is no such conversation.")
    content = str((await request.form()).get("content") or "").strip()
    if not content or len(content) > MAX_MESSAGE:
        return _plain(request, 400, f"Write a message of 1 to {MAX_MESSAGE:,} characters.")
    title_changed = conversation.title == NEW_TITLE
    if title_changed:
        title = short_title(content)
        await store.update(chat_user.owner, conversation_id, title=title)
        conversation.title = title
    await store.add_message(conversation_id, "user", content)
    history = list(await store.messages(conversation_id))
    return await _answer(request, gateway, web, chat_user, conversation, history, title_changed)


@post("/chat/{conversation_id:int}/regenerate")
async def chat_regenerate(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> ASGIApp:
    """Answer the last user message again, replacing the answers after it."""
    store = ConversationStore(gateway.database)
    conversation = await store.get(chat_user.owner, conversation_id)
    if conversation is None:
        return _plain(request, 404, "There is no such conversation.")
    messages = list(await store.messages(conversation_id))
    last_user = next((m for m in reversed(messages) if m.role == "user"), None)
    if last_user is None:
        return _plain(request, 400, "There is no message to answer yet.")
    await store.truncate_after(conversation_id, last_user.id)
    history = [m for m in messages if m.id <= last_user.id]
    return await _answer(request, gateway, web, chat_user, conversation, history, False)


def send_handlers() -> list[Any]:
    """The streaming chat routes."""
    return [chat_send, chat_regenerate]
