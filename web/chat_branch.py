"""Branches of a conversation: editing a user message starts one; flipping versions picks the branch shown.

An edited message is a new sibling of the old one (same parent), answered as Send answers; the old branch stays.
Flipping makes the newest leaf under the chosen version the conversation's ``current_message_id``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import ASGIApp

from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage import ConversationStore
from minigate.gateway.storage.conversations import ConversationInfo, MessageInfo
from minigate.gateway.storage.images import ImageStore
from minigate.web.chat import chat_context
from minigate.web.chat_images import takes_images
from minigate.web.chat_send import MAX_MESSAGE, _answer, _plain
from minigate.web.render import SECURITY_HEADERS, error_page, is_htmx, page, redirect
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["branch_handlers"]


async def _owned(
    store: ConversationStore, user: Session, conversation_id: int, message_id: int
) -> tuple[ConversationInfo, MessageInfo] | None:
    """The user's conversation and one of its messages, or None."""
    conversation = await store.get(user.owner, conversation_id)
    message = await store.get_message(message_id) if conversation is not None else None
    if conversation is None or message is None or message.conversation_id != conversation_id:
        return None
    return conversation, message


@get("/chat/{conversation_id:int}/messages/{message_id:int}/edit")
async def chat_edit_form(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
    message_id: FromPath[int],
) -> Response[str]:
    """A user message in a form to edit it: in place of the message (htmx), or a page of its own."""
    found = await _owned(ConversationStore(gateway.database), chat_user, conversation_id, message_id)
    if found is None or found[1].role != "user":
        return error_page(web, 404, "There is no such message.")
    conversation, message = found
    template = "_message_edit.html" if is_htmx(request) else "chat_edit.html"
    return page(web, template, chat_user, conversation=conversation, message=message)


@post("/chat/edit")
async def chat_edit(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
) -> ASGIApp:
    """Send an edited user message as a new version of it (a new branch) and answer it.

    The form names the message (its Save button's value) and carries the text as ``content-<id>``, so editors
    open on several messages at once do not mix. The conversation is the message's (like ``/chat/send``, the
    form is the same on every chat page, a new chat's too).
    """
    store = ConversationStore(gateway.database)
    form = await request.form()
    ident = str(form.get("message") or "")
    if not ident.isdigit() or len(ident) > 12:
        return _plain(request, 400, "Which message is edited?")
    message_id = int(ident)
    message = await store.get_message(message_id)
    conversation_id = message.conversation_id if message is not None else 0
    found = await _owned(store, chat_user, conversation_id, message_id)
    if found is None or found[1].role != "user":
        return _plain(request, 404, "There is no such message.")
    conversation, edited = found
    content = str(form.get(f"content-{message_id}") or "").strip()
    if not content or len(content) > MAX_MESSAGE:
        return _plain(request, 400, f"Write a message of 1 to {MAX_MESSAGE:,} characters.")
    kept = (await ImageStore(gateway.database).for_conversation(conversation_id)).get(edited.id, [])
    if kept and not takes_images(gateway, conversation.model):  # the model was changed since: say so, send nothing
        return _plain(request, 400, f"{conversation.model} does not take images: choose a model that does.")
    sent = await store.add_message(conversation_id, "user", content, parent_id=edited.parent_id)
    await ImageStore(gateway.database).add(sent.id, [image.data for image in kept])  # an edit keeps its images
    history = list(await store.branch(conversation_id, sent.id))
    return await _answer(request, gateway, web, chat_user, conversation, history, False)


@post("/chat/{conversation_id:int}/messages/{message_id:int}/show")
async def chat_show_version(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
    message_id: FromPath[int],
) -> Response[Any]:
    """Show another version of a message: the branch through it, down to its newest answer."""
    store = ConversationStore(gateway.database)
    conversation = await store.get(chat_user.owner, conversation_id)
    if conversation is None or await store.show(conversation_id, message_id) is None:
        return error_page(web, 404, "There is no such message.")
    if not is_htmx(request):
        return redirect(request, f"/chat/{conversation_id}#msg-{message_id}")
    messages = await store.messages(conversation_id)
    image_ids = await ImageStore(gateway.database).ids(conversation_id)  # images (issue 15): the thumbnails
    html = web.render("_messages.html", messages=messages, conversation=conversation, session=chat_user,
                      csrf=chat_user.csrf, image_ids=image_ids)  # fmt: skip
    context = web.render("_context.html", **chat_context(gateway, conversation, messages))  # this branch's length
    html += f'<hx-partial hx-target="#context" hx-swap="outerHTML">{context}</hx-partial>'
    return Response(html, status_code=200, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


def branch_handlers() -> list[Any]:
    """The routes that edit messages and flip between versions."""
    return [chat_edit_form, chat_edit, chat_show_version]
