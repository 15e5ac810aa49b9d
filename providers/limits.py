"""Caps on what an upstream may send: an answer, an error, an SSE line, a whole stream, and an error message.

Sizes are counted after decompression, as the bytes arrive, so a small gzip bomb stops at the same cap as a
plain body. Each provider section has its own caps (``models.providers.<name>.limits``), with these defaults.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from minigate.providers.base import UpstreamTooLarge

__all__ = ["UpstreamLimits", "cut", "read_capped"]

MiB = 1024 * 1024


class UpstreamLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``models.providers.<name>.limits``: the most a provider's upstream may send (bytes after decompression).

    ``max_body_bytes``: a whole JSON answer; ``max_error_body_bytes``: an error answer's body;
    ``max_sse_line_bytes``: one line of a stream; ``max_stream_bytes``: a whole stream (None: only the request's
    deadline bounds it); ``max_error_message_chars``: an upstream error message as passed to the client, the
    logs and the usage row (longer ones are cut, not refused).
    """

    max_body_bytes: int = 32 * MiB
    max_error_body_bytes: int = 1 * MiB
    max_sse_line_bytes: int = 4 * MiB
    max_stream_bytes: int | None = 1024 * MiB
    max_error_message_chars: int = 2000

    def check(self) -> list[tuple[str, str]]:
        """``(sub-path, message)`` for each cap that is not a positive number."""
        caps: dict[str, Any] = msgspec.structs.asdict(self)
        return [(name, "must be positive") for name, value in caps.items() if value is not None and value <= 0]

    def exceeded(self, provider: str, cap: str, what: str) -> UpstreamTooLarge:
        """The error for ``what`` going over ``cap`` (a field name): it names the setting and its value."""
        value = getattr(self, cap)
        return UpstreamTooLarge(f"{provider}: {what} exceeded models.providers.{provider}.limits.{cap} ({value})")


async def read_capped(content: aiohttp.StreamReader, cap: int) -> bytes | None:
    """The whole body, or None as soon as more than ``cap`` bytes of it (decompressed) have arrived.

    On None the rest is left unread: close the response, so the connection is dropped, not drained.
    """
    parts: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > cap:
            return None
        parts.append(chunk)
    return b"".join(parts)


def cut(text: str, limit: int) -> str:
    """``text`` if at most ``limit`` characters long, else its first ``limit`` and a note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters cut]"
