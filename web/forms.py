"""Reading the web UI's forms into checked values; every problem becomes a :class:`FormError` message."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

__all__ = ["FormError", "parse_settings", "text_field"]

_MAX_SYSTEM_PROMPT = 20_000


class FormError(ValueError):
    """A form value was refused; the message is shown next to the form."""


def text_field(form: Any, name: str, limit: int) -> str:
    """A stripped text field, at most ``limit`` characters."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit:
        raise FormError(f"{name.replace('_', ' ')} is longer than {limit:,} characters")
    return text


def parse_settings(form: Any, models: Container[str]) -> dict[str, Any]:
    """``model``, ``system_prompt``, ``temperature`` (0-2) and ``max_tokens`` (1-1,000,000) of a chat."""
    model = text_field(form, "model", 256)
    if model not in models:
        raise FormError(f"unknown model {model!r}")
    settings: dict[str, Any] = {"model": model}
    settings["system_prompt"] = text_field(form, "system_prompt", _MAX_SYSTEM_PROMPT) or None
    temperature = text_field(form, "temperature", 20)
    if temperature:
        try:
            value = float(temperature)
        except ValueError:
            raise FormError("temperature must be a number between 0 and 2") from None
        if not 0 <= value <= 2:
            raise FormError("temperature must be a number between 0 and 2")
        settings["temperature"] = value
    else:
        settings["temperature"] = None
    max_tokens = text_field(form, "max_tokens", 20)
    if max_tokens:
        if not max_tokens.isdigit() or not 1 <= int(max_tokens) <= 1_000_000:
            raise FormError("max tokens must be a whole number between 1 and 1,000,000")
        settings["max_tokens"] = int(max_tokens)
    else:
        settings["max_tokens"] = None
    return settings
