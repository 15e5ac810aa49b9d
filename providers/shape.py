"""The shape an OpenAI-compatible answer must have before anything in the gateway reads it.

``choices``, ``delta``, ``message`` and ``content`` of another shape are refused once, here, as malformed, rather
than tripped over by every consumer; fields nobody here reads are left alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["answer_problem", "chunk_problem"]

_OPTIONAL_TEXT = (str, type(None))


def _message_problem(message: Any, where: str, *, parts: bool) -> str | None:
    """What is wrong with a ``message`` (``parts``: content may be a list of parts) or a ``delta``."""
    if message is None:
        return None
    if not isinstance(message, dict):
        return f"{where} is not an object"
    content = message.get("content")
    if not isinstance(content, _OPTIONAL_TEXT) and not (parts and isinstance(content, list)):
        return f"{where}.content is neither text nor null"
    for field in ("role", "refusal"):
        if not isinstance(message.get(field), _OPTIONAL_TEXT):
            return f"{where}.{field} is neither text nor null"
    calls = message.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        return f"{where}.tool_calls is not a list of objects"
    if not isinstance(message.get("function_call"), (dict, type(None))):
        return f"{where}.function_call is not an object"
    return None


def _choices_problem(choices: Any, part: str) -> str | None:
    if choices is None:
        return None
    if not isinstance(choices, list):
        return "choices is not a list"
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return f"choices[{i}] is not an object"
        index = choice.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            return f"choices[{i}].index is not an integer"
        for field in ("finish_reason", "text"):
            if not isinstance(choice.get(field), _OPTIONAL_TEXT):
                return f"choices[{i}].{field} is neither text nor null"
        problem = _message_problem(choice.get(part), f"choices[{i}].{part}", parts=part == "message")
        if problem:
            return problem
    return None


def chunk_problem(chunk: dict[str, Any]) -> str | None:
    """What is wrong with one streamed event (``chat.completion.chunk`` or a text completion's), or None."""
    return _choices_problem(chunk.get("choices"), "delta")


def answer_problem(endpoint: str, body: dict[str, Any]) -> str | None:
    """What is wrong with a whole answer to ``endpoint``, or None."""
    if endpoint == "embeddings":
        data = body.get("data")
        ok = data is None or (isinstance(data, list) and all(isinstance(d, dict) for d in data))
        return None if ok else "data is not a list of objects"
    return _choices_problem(body.get("choices"), "message")
