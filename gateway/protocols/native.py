"""Pass-through for deployments that speak the client's own protocol (the Responses API, Anthropic Messages): the
request such a deployment is sent, and what the gateway fixes in its answer, because the gateway owns it: the
Response's id, ``model``, ``store`` and ``previous_response_id``, the events' ``sequence_number`` (Responses), and the
model name the client asked for (Messages). Everything else goes through as the upstream sent it."""

from __future__ import annotations

from typing import Any

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.serving.events import Native

__all__ = ["NativeResponseEvents", "message_model", "native_response", "responses_passthrough"]

_GATEWAY_OWNED = ("id", "model", "store", "previous_response_id")  # a Response's fields the gateway answers for


def _upstream_items(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored history items as an upstream that keeps nothing takes them: without the ids they were stored under;
    a reasoning item only with its ``encrypted_content`` (and then as it came: the upstream reads it by its id)."""
    items = []
    for item in history:
        if item.get("type") == "reasoning":
            if item.get("encrypted_content"):
                items.append(item)
        else:
            items.append({k: v for k, v in item.items() if k != "id"})
    return items


def responses_passthrough(raw: dict[str, Any], history: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The client's Responses request as a native deployment is sent it: ``store`` false (the gateway keeps the
    response itself) and, when it continued a stored response (``history``, that response's conversation), the
    whole input resent in place of ``previous_response_id``, an id the upstream never saw."""
    body = {k: v for k, v in raw.items() if k != "previous_response_id"}
    body["store"] = False
    if history is not None:
        given = raw.get("input")
        current = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or ())
        body["input"] = _upstream_items(history) + current
    return body


def native_response(response: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A native deployment's Response object as the client is sent it: the gateway's own fields from ``base``
    (as ``response_base`` made it for this request)."""
    return {**response, **{k: base[k] for k in _GATEWAY_OWNED}}


class NativeResponseEvents:
    """A native Responses stream as the client is sent it: each event numbered in order, every Response object
    in it given the gateway's own fields; ``response`` is the latest one seen (the final one once completed)."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.response: dict[str, Any] = dict(base)
        self.completed = False
        self._sequence = 0

    def event(self, native: Native) -> dict[str, Any]:
        """One upstream event, fixed."""
        data = dict(native.data)
        if isinstance(response := data.get("response"), dict):
            data["response"] = self.response = native_response(response, self.base)
            self.completed = native.event in ("response.completed", "response.incomplete")
        data["sequence_number"] = self._sequence
        self._sequence += 1
        return data

    def failed(self, failure: GatewayError) -> dict[str, Any]:
        """``response.failed`` for an answer that broke off after it was begun."""
        code = "rate_limit_exceeded" if failure.status == 429 else "server_error"
        response = {**self.response, "status": "failed", "error": {"code": code, "message": failure.message}}
        self.response = response
        event = {"type": "response.failed", "sequence_number": self._sequence, "response": response}
        self._sequence += 1
        return event


def message_model(native: Native, model: str) -> dict[str, Any]:
    """A native Messages event as the client is sent it: ``message_start`` names the model the client asked for."""
    data = native.data
    if native.event == "message_start" and isinstance(message := data.get("message"), dict):
        return {**data, "message": {**message, "model": model}}
    return data
