"""What an upstream speaking OpenAI's Responses API natively sends, checked before it is passed through: the
Response object of a JSON answer, and the events of a stream (``response.created`` ... ``response.completed``).

Used by the ``openai`` provider with ``"api": "responses"``; the connection, caps and error handling stay its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigate.providers.base import UpstreamStatusError
from minigate.providers.upstream import EVENT_NAME, ErrorFilter, StreamReader, malformed

__all__ = ["LAST_EVENTS", "ResponsesReader", "checked_response"]

LAST_EVENTS = frozenset({"response.completed", "response.incomplete"})
_RATE_LIMITED = ("rate_limit_exceeded", "insufficient_quota")


def _failure(error: Any, scrub: ErrorFilter) -> UpstreamStatusError:
    """The failure for a Responses ``error`` (an ``error`` event, or a failed response's ``error``)."""
    fields = error if isinstance(error, dict) else {"message": "the upstream's response failed"}
    fields = {k: fields.get(k) for k in ("code", "message", "param", "type") if fields.get(k) is not None}
    fields.setdefault("message", "the upstream's response failed")
    status = 429 if fields.get("code") in _RATE_LIMITED else 502
    return UpstreamStatusError(status, scrub(fields))


def checked_response(provider: str, body: Any, scrub: ErrorFilter) -> dict[str, Any]:
    """A JSON answer as passed on: a Response object with an ``output`` list (a failed one is its failure)."""
    if not isinstance(body, dict) or not isinstance(body.get("output"), list):
        raise malformed(provider, "malformed answer: not a Response object with an output list")
    if not all(isinstance(item, dict) for item in body["output"]):
        raise malformed(provider, "malformed answer: output is not a list of objects")
    if body.get("status") == "failed":
        raise _failure(body.get("error"), scrub)
    return body


class ResponsesReader(StreamReader):
    """Turns the ``data:`` payloads of a Responses event stream into event dicts for the provider's stream.

    ``error`` events and ``response.failed`` become the provider's failure (before the first content the chain
    falls back); the stream is complete at ``response.completed`` or ``response.incomplete`` (``done``).
    """

    __slots__ = ("_scrub",)

    def __init__(self, provider: str, scrub: ErrorFilter) -> None:
        super().__init__(provider)
        self._scrub = scrub

    def read(self, data: bytes) -> Sequence[dict[str, Any]]:
        """The event of one payload, or none for one to skip (``[DONE]``, which some servers add, ends it)."""
        if data == b"[DONE]":
            self.done = True
            return ()
        event = self.decode(data)
        if event is None:
            return ()
        kind = event.get("type")
        if not isinstance(kind, str) or not EVENT_NAME.fullmatch(kind):
            raise self.malformed("malformed event in the upstream stream: no plain type")
        if kind == "error":
            raise _failure(event.get("error", event), self._scrub)
        if kind == "response.failed":
            response = event.get("response")
            raise _failure(response.get("error") if isinstance(response, dict) else None, self._scrub)
        if kind.startswith("response.") and "response" in event and not isinstance(event["response"], dict):
            raise self.malformed(f"malformed event in the upstream stream: {kind} without a response")
        if kind in LAST_EVENTS:
            if not isinstance(event.get("response"), dict):
                raise self.malformed(f"malformed event in the upstream stream: {kind} without a response")
            self.done = self.finished = True
        return (event,)
