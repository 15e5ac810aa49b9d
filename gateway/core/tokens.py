"""Token counts as upstreams, local models and plugins report them, checked once before anything stores them.

A count is a non-negative ``int`` up to :data:`MAX_TOKENS`, else missing; ``total_tokens`` is made consistent.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["COUNT_FIELDS", "MAX_TOKENS", "MAX_TOTAL", "TokenCounts", "checked_usage", "token_counts", "valid_count"]

# A billion tokens in one request is far beyond any model's context (the largest are about ten million), and
# twice it (a total) still fits the 32-bit INTEGER columns of PostgreSQL, so a sum of two parts stores safely.
MAX_TOKENS = 10**9
MAX_TOTAL = 2 * MAX_TOKENS  # a total made of two valid parts (what a stored ``total_tokens`` may hold)
COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class TokenCounts(TypedDict):
    """The three counts of a usage row, each None when missing or not a valid count."""

    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


def valid_count(value: object, top: int = MAX_TOKENS) -> int | None:
    """``value`` when it is a valid token count (at most ``top``), else None."""
    if type(value) is int and 0 <= value <= top:  # type() rather than isinstance: bool is an int
        return value
    return None


def token_counts(usage: object) -> tuple[TokenCounts, dict[str, str]]:
    """The valid counts of a ``usage`` object, and each count that was present but not valid (by field, its value
    shown briefly, for a log line); an absent or null count is simply missing. A ``usage`` that is not an object
    is reported under the field ``usage``."""
    if not isinstance(usage, dict):
        wrong = {} if usage is None else {"usage": _shown(usage)}
        return TokenCounts(prompt_tokens=None, completion_tokens=None, total_tokens=None), wrong
    problems = {
        name: _shown(usage[name])
        for name in COUNT_FIELDS
        if usage.get(name) is not None and valid_count(usage[name]) is None
    }
    prompt, completion = valid_count(usage.get("prompt_tokens")), valid_count(usage.get("completion_tokens"))
    total = valid_count(usage.get("total_tokens"))
    if prompt is not None and completion is not None:
        total = prompt + completion
    elif total is not None and total < max(prompt or 0, completion or 0):
        total = None  # smaller than one of its parts: not a total
    return TokenCounts(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total), problems


def checked_usage(usage: object) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """``usage`` as it may be relayed to a client: its counts checked (invalid ones left out, the total made
    consistent), its other fields (``prompt_tokens_details`` and the like) kept in their order; None when it is
    not an object. Also the problems :func:`token_counts` found."""
    counts, problems = token_counts(usage)
    if not isinstance(usage, dict):
        return None, problems
    checked: dict[str, Any] = dict(counts)
    out = {k: checked.get(k) if k in checked else v for k, v in usage.items()}
    out.update((k, v) for k, v in checked.items() if k not in out)
    return {k: v for k, v in out.items() if k not in checked or v is not None}, problems


def _shown(value: Any) -> str:
    """A short rendering of a rejected value (a hostile one may be long, or too long an int for ``repr``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, int | float | str | bool) else f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."
