"""A conversation as a file: Markdown to read or share, JSON to keep or process (the branch the page shows)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage import ConversationStore
from minigate.gateway.storage.conversations import ConversationInfo, MessageInfo
from minigate.web.render import SECURITY_HEADERS, error_page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["export_handlers", "to_json", "to_markdown"]

_SETTINGS = ("system_prompt", "temperature", "top_p", "max_tokens", "repetition_penalty")


def _filename(conversation: ConversationInfo, suffix: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", conversation.title).strip("-.")[:60] or "conversation"
    return f"{stem}-{conversation.id}.{suffix}"


def to_markdown(conversation: ConversationInfo, messages: list[MessageInfo]) -> str:
    """The conversation as Markdown: a title, its model and settings, then each message under its speaker."""
    lines = [f"# {conversation.title}", "", f"Model: `{conversation.model}`"]
    for name in _SETTINGS:
        value = getattr(conversation, name)
        if value is not None and name != "system_prompt":
            lines.append(f"{name.replace('_', ' ').capitalize()}: {value}")
    if conversation.system_prompt:
        lines += ["", "## System prompt", "", conversation.system_prompt]
    for message in messages:
        who = "You" if message.role == "user" else "Assistant"
        if message.role == "assistant" and message.provider:
            who += f" ({message.provider}/{message.model})"
        lines += ["", f"## {who}", "", message.content]
        if message.status in ("stopped", "error"):
            lines += ["", f"_{message.status}{': ' + message.error if message.error else ''}_"]
    return "\n".join(lines) + "\n"


def to_json(conversation: ConversationInfo, messages: list[MessageInfo]) -> bytes:
    """The conversation and its messages as JSON (timestamps in ISO 8601, UTC)."""
    keep = ("role", "content", "status", "created_at", "provider", "model", "prompt_tokens", "completion_tokens",
            "latency_ms", "error")  # fmt: skip
    document: dict[str, Any] = {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "settings": {name: getattr(conversation, name) for name in _SETTINGS},
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "messages": [{name: getattr(m, name) for name in keep} for m in messages],
    }
    return msgspec.json.format(msgspec.json.encode(document), indent=2)


@get(["/chat/{conversation_id:int}/export.md", "/chat/{conversation_id:int}/export.json"])
async def chat_export(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
) -> Response[Any]:
    """Download a conversation as ``export.md`` or ``export.json``."""
    kind = request.url.path.rsplit(".", 1)[1]
    store = ConversationStore(gateway.database)
    conversation = await store.get(chat_user.owner, conversation_id)
    if conversation is None or kind not in ("md", "json"):
        return error_page(
            web, 404, "There is no such conversation." if conversation is None else "There is no such page."
        )
    messages = list(await store.messages(conversation_id))
    if kind == "md":
        body: bytes = to_markdown(conversation, messages).encode()
        media = "text/markdown; charset=utf-8"
    else:
        body, media = to_json(conversation, messages), "application/json"
    disposition = f'attachment; filename="{_filename(conversation, kind)}"'
    return Response(body, media_type=media, headers={**SECURITY_HEADERS, "content-disposition": disposition})


def export_handlers() -> list[Any]:
    """The export route."""
    return [chat_export]
