"""Chat pages: the conversation list and its search, one conversation, and renaming, settings and deleting.

``/chat`` is a new chat: type and send, and the first message creates the conversation. Sending a message and
regenerating an answer stream; they live in :mod:`minigate.web.chat_send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.ops.limits import usable
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage import ConversationStore
from minigate.gateway.storage.chat_search import search_conversations
from minigate.gateway.storage.conversations import ConversationInfo, MessageInfo
from minigate.gateway.storage.images import ImageStore
from minigate.gateway.storage.key_policy import KeyPolicy
from minigate.gateway.storage.users import owner_user
from minigate.web.adapter import context_windows
from minigate.web.auth import LoginRequired, sessions
from minigate.web.chains import ensure_overrides
from minigate.web.chat_images import vision_models
from minigate.web.forms import FormError, parse_model, parse_settings
from minigate.web.render import error_page, page, redirect
from minigate.web.sessions import COOKIE, Session
from minigate.web.state import WebState

__all__ = ["chat_context", "chat_handlers", "context_used", "model_choices"]

NEW_TITLE = "New chat"
# A stopped answer is stored by its own cancelled stream, a moment after the browser let go of it.
_STOP_WAIT, _STOP_POLL = 5.0, 0.05
_RELOAD_WAIT = 1.0  # a page (re)load waits this long at most for a last answer that is still being stored


def model_choices(gateway: Gateway, policy: KeyPolicy | None = None) -> list[tuple[str, list[str]]]:
    """The names a chat can use, grouped for a ``<select>``: agents, aliases, provider models (with ``policy``, a
    person's own limits: only those they may use)."""
    groups: dict[str, list[str]] = {"agent": [], "alias": [], "model": []}
    routes = gateway.routes
    for ident, kind, _ in routes.listing():
        if policy is None or usable(policy, routes.resolve(ident)):
            groups.setdefault(kind, []).append(ident)
    labels = {"agent": "Agents", "alias": "Aliases", "model": "Models"}
    return [(labels.get(kind, kind), names) for kind, names in groups.items() if names]


def context_used(messages: Sequence[MessageInfo]) -> int | None:
    """Tokens the last answer's exchange took (its prompt and completion): the next request is at least as long."""
    for message in reversed(messages):
        if message.role == "assistant" and message.prompt_tokens is not None:
            return int(message.prompt_tokens) + int(message.completion_tokens or 0)
    return None


def chat_context(
    gateway: Gateway, conversation: ConversationInfo | None, messages: Sequence[MessageInfo], person: int | None = None
) -> dict[str, Any]:
    """What every render of the chat's header, picker and context meter needs; the picker offers what the
    conversation's person (or ``person``, before there is a conversation) may use, as their limits were last read."""
    if conversation is not None:
        person = owner_user(conversation.owner)
    choices = model_choices(gateway, None if person is None else gateway.keys.person_policy(person))
    windows = context_windows(gateway, [name for _, names in choices for name in names])
    model = conversation.model if conversation else "default"
    return {
        "models": choices,
        "context_windows": windows,
        "default_model": "default" if any("default" in names for _, names in choices) else "",
        "context_window": windows.get(model),
        "context_used": context_used(messages),
        "vision_models": vision_models(gateway),  # issue 15: the picker's names that take images
    }


async def _chat_user(
    request: Request[Any, Any, Any], gateway: Gateway, web: WebState, session: Session | None
) -> tuple[Session, list[Cookie]]:
    """The session allowed to chat; a public chat gives a new visitor a guest session."""
    if session is not None and (session.member or web.settings.chat_public):
        return session, []
    if not web.settings.chat_public:
        raise LoginRequired()
    token, guest = await sessions(gateway, web).create(admin=False)
    cookie = Cookie(
        key=COOKIE,
        value=token,
        max_age=int(web.settings.session_ttl),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return guest, [cookie]


async def _page(
    web: WebState,
    gateway: Gateway,
    session: Session,
    conversation: ConversationInfo | None,
    cookies: list[Cookie],
    **extra: Any,
) -> Response[str]:
    store = ConversationStore(gateway.database)
    messages = await store.messages(conversation.id) if conversation else []
    if conversation and messages and messages[-1].status == "streaming":  # a reload just after Stop: its stream
        settled = await _settled(store, messages[-1], _RELOAD_WAIT)  # stores the stopped answer within moments
        if settled is not None and settled.status != "streaming":
            messages = await store.messages(conversation.id)
    if session.user_id is not None:
        await gateway.keys.load_person(session.user_id)  # the picker offers only what they may use
    return page(
        web,
        "chat.html",
        session,
        cookies=cookies,
        conversations=await store.list(session.owner),
        conversation=conversation,
        messages=messages,
        image_ids=await ImageStore(gateway.database).ids(conversation.id) if conversation else {},  # issue 15
        **chat_context(gateway, conversation, messages, session.user_id),
        **extra,
    )


async def _settled(store: ConversationStore, message: MessageInfo | None, wait: float) -> MessageInfo | None:
    """``message`` read again every 50 ms while it is still streaming, for at most ``wait`` seconds (after Stop or a
    reload, the answer's stream stores it as stopped within moments)."""
    for _ in range(int(wait / _STOP_POLL)):
        if message is None or message.status != "streaming":
            break
        await asyncio.sleep(_STOP_POLL)
        message = await store.get_message(message.id)
    return message


@get("/")
async def home(request: Request[Any, Any, Any]) -> Response[Any]:
    """The web UI starts with the chat."""
    return redirect(request, "/chat")


@get("/chat")
async def chat_index(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    session: NamedDependency[Session | None],
) -> Response[str]:
    """A new chat: the conversation list, and the composer with the default agent picked."""
    await ensure_overrides(gateway, web)
    user, cookies = await _chat_user(request, gateway, web, session)
    return await _page(web, gateway, user, None, cookies)


@get("/chat/{conversation_id:int}")
async def chat_page(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    session: NamedDependency[Session | None],
    conversation_id: FromPath[int],
) -> Response[str]:
    """One conversation: its messages, settings and the composer."""
    await ensure_overrides(gateway, web)
    user, cookies = await _chat_user(request, gateway, web, session)
    conversation = await ConversationStore(gateway.database).get(user.owner, conversation_id)
    if conversation is None:
        return error_page(web, 404, "There is no such conversation.")
    return await _page(web, gateway, user, conversation, cookies)


@get("/chat/{conversation_id:int}/messages/{message_id:int}")
async def chat_message(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
    message_id: FromPath[int],
) -> Response[Any]:
    """One message as the page shows it: the page asks for a stopped answer again, rendered and with its footer.

    An answer still streaming is waited for (a few seconds at most): after Stop, its stream stores it.
    """
    store = ConversationStore(gateway.database)
    message = None
    if await store.get(chat_user.owner, conversation_id) is not None:
        message = await store.get_message(message_id)
    if message is None or message.conversation_id != conversation_id:
        return error_page(web, 404, "There is no such message.")
    message = await _settled(store, message, _STOP_WAIT)
    if message is None:
        return error_page(web, 404, "There is no such message.")
    return page(web, "_message.html", chat_user, message=message, last=False)


@post("/chat/new", status_code=303)
async def chat_new(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
) -> Response[Any]:
    """Start a conversation with the chosen model and settings."""
    form = await request.form()
    names = {name for _, names in model_choices(gateway) for name in names}
    try:
        model = parse_model(form, names)
        settings = parse_settings(form, names)
    except FormError as err:
        return error_page(web, 422, str(err))
    settings.pop("model", None)
    store = ConversationStore(gateway.database)
    conversation_id = await store.create(chat_user.owner, title=NEW_TITLE, model=model)
    await store.update(chat_user.owner, conversation_id, **settings)
    return redirect(request, f"/chat/{conversation_id}")


@post("/chat/{conversation_id:int}/settings")
async def chat_settings(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> Response[Any]:
    """Change the model, system prompt, temperature or max tokens of a conversation."""
    store = ConversationStore(gateway.database)
    conversation = await store.get(chat_user.owner, conversation_id)
    if conversation is None:
        return error_page(web, 404, "There is no such conversation.")
    form = await request.form()
    try:
        settings = parse_settings(form, {name for _, names in model_choices(gateway) for name in names})
    except FormError as err:
        return page(
            web, "_settings.html", chat_user, status=422, conversation=conversation, error=str(err), saved=False
        )
    await store.update(chat_user.owner, conversation_id, **settings)
    conversation = await store.get(chat_user.owner, conversation_id)
    if request.headers.get("hx-request") != "true":
        return redirect(request, f"/chat/{conversation_id}")
    return page(web, "_settings.html", chat_user, conversation=conversation, error=None, saved=True)


@get("/chat/search")
async def chat_search(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
) -> Response[str]:
    """Conversations whose title or messages contain ``q``: the sidebar's list (htmx), or the chat page."""
    query = str(request.query_params.get("q") or "").strip()[:200]
    store = ConversationStore(gateway.database)
    if query:
        found, snippets = await search_conversations(gateway.database, chat_user.owner, query)
    else:
        found, snippets = list(await store.list(chat_user.owner)), {}
    if request.headers.get("hx-request") == "true":
        return page(web, "_conversation_list.html", chat_user, conversations=found, snippets=snippets,
                    query=query, conversation=None)  # fmt: skip
    return page(
        web, "chat.html", chat_user, conversations=found, snippets=snippets, query=query, conversation=None,
        messages=[], **chat_context(gateway, None, [], chat_user.user_id),
    )  # fmt: skip


@post("/chat/{conversation_id:int}/rename", status_code=303)
async def chat_rename(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> Response[Any]:
    """Give a conversation a new title."""
    title = str((await request.form()).get("title") or "").strip()[:200] or NEW_TITLE
    if not await ConversationStore(gateway.database).update(chat_user.owner, conversation_id, title=title):
        return error_page(web, 404, "There is no such conversation.")
    return redirect(request, f"/chat/{conversation_id}")


@post("/chat/{conversation_id:int}/delete", status_code=303)
async def chat_delete(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> Response[Any]:
    """Delete a conversation and its messages."""
    await ConversationStore(gateway.database).delete(chat_user.owner, conversation_id)
    return redirect(request, "/chat")


def chat_handlers() -> list[Any]:
    """The chat page routes."""
    return [home, chat_index, chat_search, chat_page, chat_message, chat_new, chat_settings, chat_rename, chat_delete]
