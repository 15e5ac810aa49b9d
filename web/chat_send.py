"""Sending a message and regenerating an answer: Server-Sent Events for htmx, a redirect without JavaScript.

The composer posts to ``/chat/send`` and ``/chat/regenerate`` with the conversation in a hidden field: empty on a
new chat, whose first message creates the conversation (and the answer's first event fills in the page around it).
The header's model picker belongs to the composer, so a message may go to another model than the last one.
"""

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
from minigate.gateway.storage.images import ImageStore
from minigate.web.chat import NEW_TITLE, chat_context, model_choices
from minigate.web.chat_images import SEND_BODY_LIMIT, ImageRefused, read_images
from minigate.web.chat_stream import complete_answer, stream_answer
from minigate.web.forms import FormError, parse_model, parse_settings
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
    fresh: bool = False,
) -> ASGIApp:
    """Stream (htmx) or complete (plain form) the answer to ``history``; ``fresh``: the conversation is new."""
    store = ConversationStore(gateway.database)
    # The answer follows the history's last message, named: another send meanwhile cannot move it.
    assistant = await store.add_message(conversation.id, "assistant", "", status="streaming", parent_id=history[-1].id)
    if not is_htmx(request):
        await complete_answer(gateway, store, conversation, history, assistant.id, user.key_id)
        return _redirect(request, f"/chat/{conversation.id}")
    image_ids = await ImageStore(gateway.database).ids(conversation.id)  # issue 15: the messages' thumbnails
    first = web.render("_messages.html", messages=[*history, assistant], session=user, csrf=user.csrf,
                       conversation=conversation, image_ids=image_ids)  # fmt: skip
    if title_changed:
        listing = web.render("_conversation_list.html", conversations=await store.list(user.owner),
                             conversation=conversation)  # fmt: skip
        first += f'<hx-partial hx-target="#conversation-list" hx-swap="innerHTML">{listing}</hx-partial>'
        first += f'<hx-partial hx-target="#conv-title" hx-swap="innerHTML">{escape(conversation.title)}</hx-partial>'
    if fresh:  # the page was /chat: it now shows this conversation (app.js moves the address to it)
        context = chat_context(gateway, conversation, history)
        for name in ("_conv_head.html", "_settings_panel.html"):
            html = web.render(name, conversation=conversation, csrf=user.csrf, session=user, **context)
            target = "#conv-head" if name == "_conv_head.html" else "#settings-panel"
            first += f'<hx-partial hx-target="{target}" hx-swap="outerHTML">{html}</hx-partial>'
        first += (
            '<hx-partial hx-target="#conversation-id" hx-swap="outerHTML"><input type="hidden" name="conversation"'
            f' id="conversation-id" value="{conversation.id}"></hx-partial>'
        )

    def final(message: MessageInfo) -> str:
        return web.render("_message.html", message=message, last=True)

    events = stream_answer(
        gateway, store, conversation, history, assistant.id, user.key_id, first, final, render=web.markdown.blocks
    )
    # sse-starlette adds the SSE headers itself (x-accel-buffering among them); the page's own come first.
    return cast(ASGIApp, EventSourceResponse(events, ping=15, headers=SECURITY_HEADERS))


def _choices(gateway: Gateway) -> set[str]:
    return {name for _, names in model_choices(gateway) for name in names}


def _content(form: Any) -> str | None:
    content = str(form.get("content") or "").strip()
    return content if content and len(content) <= MAX_MESSAGE else None


async def _send(
    request: Request[Any, Any, Any],
    gateway: Gateway,
    web: WebState,
    user: Session,
    conversation: ConversationInfo,
    form: Any,
    fresh: bool = False,
) -> ASGIApp:
    """Add the user's message to ``conversation`` (after the model picked with it, if another) and answer it."""
    store = ConversationStore(gateway.database)
    content = _content(form)
    if content is None:
        return _plain(request, 400, f"Write a message of 1 to {MAX_MESSAGE:,} characters.")
    if not fresh and (refused := await _pick_model(gateway, user, conversation, form)) is not None:
        return _plain(request, 400, refused)
    parent = await _parent(store, conversation, form)
    images: list[bytes] = []
    refusal = "The message this one follows is not in this conversation: reload the page." if parent is None else ""
    try:  # images (issue 15): read and checked before anything is stored or sent
        images = await read_images(form, gateway, conversation.model)
    except ImageRefused as err:
        refusal = refusal or str(err)
    if refusal or parent is None:
        if fresh:  # the conversation was made for this message
            await store.delete(user.owner, conversation.id)
        return _plain(request, 400, refusal)
    title_changed = conversation.title == NEW_TITLE
    if title_changed:
        conversation.title = short_title(content)
        await store.update(user.owner, conversation.id, title=conversation.title)
    sent = await store.add_message(conversation.id, "user", content, **parent)
    await ImageStore(gateway.database).add(sent.id, images)  # issue 15
    history = list(await store.branch(conversation.id, sent.id))
    return await _answer(request, gateway, web, user, conversation, history, title_changed, fresh)


async def _pick_model(gateway: Gateway, user: Session, conversation: ConversationInfo, form: Any) -> str | None:
    """Switch ``conversation`` to the model picked in the header with this message; the refusal, if any."""
    model = form.get("model")
    if model is None or model == conversation.model:
        return None
    try:
        conversation.model = parse_model(form, _choices(gateway))
    except FormError as err:
        return str(err)
    await ConversationStore(gateway.database).update(user.owner, conversation.id, model=conversation.model)
    return None


async def _parent(store: ConversationStore, conversation: ConversationInfo, form: Any) -> dict[str, Any] | None:
    """Where the new message goes: after the last message of the branch the page shows (the composer's ``parent``,
    so two tabs on two branches each continue their own), else after the conversation's current leaf. None: the
    named message is not this conversation's."""
    named = str(form.get("parent") or "").strip()
    if not named:
        return {}
    message = await store.get_message(int(named)) if named.isdigit() and len(named) < 12 else None
    if message is None or message.conversation_id != conversation.id:
        return None
    return {"parent_id": message.id}


async def _conversation(
    request: Request[Any, Any, Any], gateway: Gateway, user: Session, form: Any, create: bool
) -> ConversationInfo | ASGIApp:
    """The conversation the composer names; with ``create`` and none named, a new one with the form's settings."""
    store = ConversationStore(gateway.database)
    ident = str(form.get("conversation") or "").strip()
    if ident:
        found = await store.get(user.owner, int(ident)) if ident.isdigit() and len(ident) < 12 else None
        return found if found is not None else _plain(request, 404, "There is no such conversation.")
    if not create:
        return _plain(request, 400, "There is no message to answer yet.")
    if _content(form) is None:
        return _plain(request, 400, f"Write a message of 1 to {MAX_MESSAGE:,} characters.")
    try:
        model = parse_model(form, _choices(gateway))
        settings = parse_settings(form, _choices(gateway))
    except FormError as err:
        return _plain(request, 400, str(err))
    settings.pop("model", None)
    conversation_id = await store.create(user.owner, title=NEW_TITLE, model=model)
    await store.update(user.owner, conversation_id, **settings)
    created = await store.get(user.owner, conversation_id)
    assert created is not None
    return created


@post("/chat/send", request_max_body_size=SEND_BODY_LIMIT)  # up to 4 images (web/chat_images.py)
async def chat_send_from_composer(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
) -> ASGIApp:
    """Send the composer's message to its conversation, or to a new one on ``/chat``."""
    form = await request.form()
    found = await _conversation(request, gateway, chat_user, form, create=True)
    if not isinstance(found, ConversationInfo):
        return found
    return await _send(request, gateway, web, chat_user, found, form, fresh=not form.get("conversation"))


@post("/chat/{conversation_id:int}/send", request_max_body_size=SEND_BODY_LIMIT)
async def chat_send(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> ASGIApp:
    """Add the user's message to a conversation and answer it."""
    conversation = await ConversationStore(gateway.database).get(chat_user.owner, conversation_id)
    if conversation is None:
        return _plain(request, 404, "There is no such conversation.")
    return await _send(request, gateway, web, chat_user, conversation, await request.form())


async def _regenerate(
    request: Request[Any, Any, Any],
    gateway: Gateway,
    web: WebState,
    user: Session,
    conversation: ConversationInfo,
) -> ASGIApp:
    """Answer the last user message again: a new version of the answer, the old ones kept to flip back to."""
    store = ConversationStore(gateway.database)
    messages = list(await store.messages(conversation.id))
    last_user = next((m for m in reversed(messages) if m.role == "user"), None)
    if last_user is None:
        return _plain(request, 400, "There is no message to answer yet.")
    history = messages[: messages.index(last_user) + 1]
    return await _answer(request, gateway, web, user, conversation, history, False)


@post("/chat/regenerate", request_max_body_size=SEND_BODY_LIMIT)  # the composer's images come along, unused
async def chat_regenerate_from_composer(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
) -> ASGIApp:
    """Regenerate the last answer of the composer's conversation, with the model now picked in the header."""
    form = await request.form()
    found = await _conversation(request, gateway, chat_user, form, create=False)
    if not isinstance(found, ConversationInfo):
        return found
    if (refused := await _pick_model(gateway, chat_user, found, form)) is not None:
        return _plain(request, 400, refused)
    return await _regenerate(request, gateway, web, chat_user, found)


@post("/chat/{conversation_id:int}/regenerate", request_max_body_size=SEND_BODY_LIMIT)
async def chat_regenerate(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> ASGIApp:
    """Answer the last user message of a conversation again."""
    conversation = await ConversationStore(gateway.database).get(chat_user.owner, conversation_id)
    if conversation is None:
        return _plain(request, 404, "There is no such conversation.")
    return await _regenerate(request, gateway, web, chat_user, conversation)


def send_handlers() -> list[Any]:
    """The streaming chat routes."""
    return [chat_send_from_composer, chat_send, chat_regenerate_from_composer, chat_regenerate]
