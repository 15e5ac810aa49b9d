"""What the fake upstream (:mod:`tests.fakes.upstream`) sends: OpenAI's JSON bodies and SSE frames, as bytes.

Whole answers (chat and text completions, embeddings, errors) are built here; so is the framing of a streamed
answer, pre-encoded once per answer so that a benchmark's thousands of chunks each cost one small JSON encoding.
Which of them to send, and when, is the server's business.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from functools import lru_cache
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.behaviours import Reply, Status

__all__ = [
    "DONE",
    "JSON",
    "Stream",
    "completion",
    "count_words",
    "dumps",
    "embeddings",
    "error_body",
    "padded",
    "status",
    "toks",
    "words",
]

DONE = b"data: [DONE]\n\n"
JSON = "application/json"
_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def dumps(obj: Any) -> bytes:
    """Compact JSON, as bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def error_body(code: int, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's error object for HTTP status ``code``; ``error`` (bare or under "error") overrides its fields."""
    kind = _TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    err = {"message": f"fake error {code}", "type": kind, "param": None, "code": None}
    err.update(error.get("error", error) if error else {})
    return {"error": err}


@lru_cache(maxsize=256)
def words(content: str) -> tuple[bytes, ...]:
    """Split content on spaces into JSON-encoded word chunks: "Hello", " from", " fake"."""
    parts = content.split(" ") if content else []
    return tuple(dumps(w if i == 0 else " " + w) for i, w in enumerate(parts))


def toks(n: int) -> str:
    """``n`` numbered words: "tok0 tok1 ..."."""
    return " ".join(f"tok{i}" for i in range(n))


def padded(encoded: tuple[bytes, ...], n: int) -> tuple[bytes, ...]:
    """``encoded`` words made up to ``n`` with " tokN" words."""
    return encoded + tuple(dumps(f" tok{i}") for i in range(len(encoded), n))


def count_words(value: Any) -> int:
    """The words in a prompt, a message list or an embeddings input: the fake's token count."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(v) for v in value)
    if isinstance(value, dict):
        return count_words(value.get("content") if "content" in value else value.get("text"))
    return 0


def _vector(text: Any) -> list[float]:
    data = str(text).encode()
    return [round(zlib.crc32(data, i * 7919) / 2147483648.0 - 1.0, 6) for i in range(8)]


class Stream:
    """Pre-encoded SSE framing for one streamed answer: per chunk only the word is JSON-encoded."""

    def __init__(self, chat: bool, model: Any, extra: dict[str, Any] | None, created: int) -> None:
        kind = "chat.completion.chunk" if chat else "text_completion"
        top = {"id": _id(chat), "object": kind, "created": created, "model": model, "choices": None}
        top.update(extra or {}, choices="\0")  # a placeholder keeps the key order: split around it
        head, tail = dumps(top).split(b'"\\u0000"')
        self.head, self.tail, self.chat = b"data: " + head, tail + b"\n\n", chat
        if chat:
            self.pre, self.post = b'[{"index":0,"delta":{"content":', b'},"finish_reason":null}]'
        else:
            self.pre, self.post = b'[{"index":0,"text":', b',"logprobs":null,"finish_reason":null}]'

    def word(self, encoded: bytes) -> bytes:
        """The frame carrying one JSON-encoded word."""
        return self.head + self.pre + encoded + self.post + self.tail

    def role(self) -> bytes:
        """A chat stream's first frame: the assistant role, no content yet."""
        choice = b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]'
        return self.head + choice + self.tail

    def finish(self, reason: str) -> bytes:
        """The frame with the finish reason."""
        body = b'"delta":{}' if self.chat else b'"text":"","logprobs":null'
        return self.head + b'[{"index":0,' + body + b',"finish_reason":' + dumps(reason) + b"}]" + self.tail

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The usage frame (no choices), as with ``stream_options.include_usage``."""
        return self.head + b"[]" + self.tail[:-3] + b',"usage":' + dumps(usage) + b"}\n\n"


def status(b: Status) -> web.Response:
    """The error response a :class:`Status` behaviour asks for."""
    body = b.body if b.body is not None else dumps(error_body(b.code, b.error))
    headers = CIMultiDict({"Content-Type": JSON})
    headers.update(b.headers or {})  # case-insensitive: a given Content-Type wins
    return web.Response(status=b.code, body=body, headers=headers)


def completion(chat: bool, model: Any, content: str, reply: Reply, usage: dict[str, Any]) -> web.Response:
    """A whole (not streamed) chat or text completion."""
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
    else:
        choice = {"index": 0, "text": content}
    choice.update(logprobs=None, finish_reason=reply.finish_reason)
    kind = "chat.completion" if chat else "text_completion"
    out = {"id": _id(chat), "object": kind, "created": int(time.time()), "model": model, "choices": [choice]}
    if reply.usage is not False:
        out["usage"] = usage
    out.update(reply.extra or {})
    return web.Response(body=dumps(out), content_type=JSON)


def embeddings(body: dict[str, Any]) -> web.Response:
    """Embeddings for each input: eight numbers derived from its text, the same for the same text."""
    inputs = body.get("input")
    if not isinstance(inputs, list) or all(isinstance(x, int) for x in inputs):
        inputs = [inputs]  # a string or one token array
    data = [{"object": "embedding", "index": i, "embedding": _vector(x)} for i, x in enumerate(inputs)]
    tokens = count_words(inputs) or len(inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    out = {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    return web.Response(body=dumps(out), content_type=JSON)
