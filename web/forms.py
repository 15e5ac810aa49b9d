"""Reading the web UI's forms into checked values; every problem becomes a :class:`FormError` message."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

__all__ = ["FormError", "parse_model", "parse_settings", "text_field"]

_MAX_SYSTEM_PROMPT = 20_000
# (field, what the error calls it, lowest, highest, whole numbers only)
_NUMBERS = (
    ("temperature", "temperature", 0.0, 2.0, False),
    ("top_p", "top p", 0.0, 1.0, False),
    ("max_tokens", "max tokens", 1, 1_000_000, True),
    ("repetition_penalty", "repetition penalty", 0.01, 10.0, False),
)


class FormError(ValueError):
    """A form value was refused; the message is shown next to the form."""


def text_field(form: Any, name: str, limit: int) -> str:
    """A stripped text field, at most ``limit`` characters."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit:
        raise FormError(f"{name.replace('_', ' ')} is longer than {limit:,} characters")
    return text


def parse_model(form: Any, models: Container[str]) -> str:
    """The form's ``model``, which must be one the chat offers."""
    model = text_field(form, "model", 256)
    if model not in models:
        raise FormError(f"unknown model {model!r}")
    return model


def _number(form: Any, name: str, label: str, low: float, high: float, whole: bool) -> float | int | None:
    text = text_field(form, name, 20)
    if not text:
        return None
    what = f"{label} must be a {'whole number' if whole else 'number'} between {low:,g} and {high:,g}"
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise FormError(what) from None
    if not low <= value <= high:  # NaN fails this too
        raise FormError(what)
    return value


def parse_settings(form: Any, models: Container[str]) -> dict[str, Any]:
    """A chat's settings: ``system_prompt``, ``temperature`` (0-2), ``top_p`` (0-1), ``max_tokens`` (1-1,000,000),
    ``repetition_penalty`` (0.01-10; 1 is none), and ``model`` when the form has one. Empty means the model's default.
    """
    settings: dict[str, Any] = {}
    if form.get("model") is not None:
        settings["model"] = parse_model(form, models)
    settings["system_prompt"] = text_field(form, "system_prompt", _MAX_SYSTEM_PROMPT) or None
    for name, label, low, high, whole in _NUMBERS:
        settings[name] = _number(form, name, label, low, high, whole)
    return settings
