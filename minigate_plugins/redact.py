"""Redact e-mail addresses and Luhn-checked card numbers from prompts before they leave for a remote provider.

Enable it with ``"plugins": {"modules": ["minigate_plugins.redact:Redact"]}``; the README's Plugins section has
its options. It fails closed: with ``on_error: "reject"`` a bug in it refuses the request.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from minigate.gateway.plugins.hookspecs import Event, PluginAPI

__all__ = ["Redact", "RedactOptions", "luhn_valid", "redact_text"]

_EMAIL = re.compile(r"[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_DIGIT_RUN = re.compile(r"\d+(?:[ -]\d+)*")  # digit groups joined by single spaces or hyphens
_SEPARATOR = re.compile(r"([ -])")


class RedactOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``plugins.settings.redact.options``."""

    emails: bool = True
    card_numbers: bool = True
    local_types: list[str] = msgspec.field(default_factory=lambda: ["onnxruntime-genai", "fake"])
    everywhere: bool = False
    email_replacement: str = "[EMAIL]"
    card_replacement: str = "[CARD NUMBER]"


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` passes the Luhn checksum that every payment card number carries."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cards_in_run(run: str, replacement: str, counts: list[int]) -> str:
    """Replace the groups of ``run`` that make up a card number. Every stretch of whole groups with 13-19 digits
    that passes the Luhn check is covered, so a card next to a year or a reference number is still found (the
    neighbour may go with it: more is replaced rather than less)."""
    parts = _SEPARATOR.split(run)  # [group, separator, group, ...]
    groups, separators = parts[0::2], parts[1::2]
    covered = [False] * len(groups)
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):  # at most 19 digits: a few groups
            digits += groups[j]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                covered[i : j + 1] = [True] * (j + 1 - i)
    if not any(covered):
        return run
    out: list[str] = []
    for k, group in enumerate(groups):
        if covered[k] and k and covered[k - 1]:
            continue  # inside a card already replaced
        if k:
            out.append(separators[k - 1])
        if covered[k]:
            out.append(replacement)
            counts[1] += 1
        else:
            out.append(group)
    return "".join(out)


def redact_text(text: str, options: RedactOptions, counts: list[int] | None = None) -> str:
    """``text`` with e-mail addresses and card numbers replaced; ``counts`` ([emails, cards]) is added to."""
    counts = counts if counts is not None else [0, 0]
    if options.emails and "@" in text:
        text, found = _EMAIL.subn(options.email_replacement, text)
        counts[0] += found
    if options.card_numbers:
        text = _DIGIT_RUN.sub(lambda m: _cards_in_run(m.group(0), options.card_replacement, counts), text)
    return text


def _redact_content(content: Any, options: RedactOptions, counts: list[int]) -> Any:
    if isinstance(content, str):
        return redact_text(content, options, counts)
    if isinstance(content, list):  # parts of a message, or a list of prompts/inputs
        return [_redact_content(part, options, counts) for part in content]
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return {**content, "text": redact_text(content["text"], options, counts)}
    return content


def redact_body(body: dict[str, Any], options: RedactOptions) -> tuple[dict[str, Any], list[int]]:
    """A copy of a request body with its prompts redacted (nested values are replaced, never changed in place),
    and how many e-mail addresses and card numbers were found."""
    counts = [0, 0]
    out = dict(body)
    if isinstance(body.get("messages"), list):
        out["messages"] = [
            {**m, "content": _redact_content(m.get("content"), options, counts)} if isinstance(m, dict) else m
            for m in body["messages"]
        ]
    for key in ("prompt", "input"):
        if key in body:
            out[key] = _redact_content(body[key], options, counts)
    return out, counts


class Redact:
    """The plugin: ``minigate_plugins.redact:Redact`` in ``plugins.modules``."""

    def init(self, api: PluginAPI) -> None:
        """Read the options (unknown ones are refused, naming the key)."""
        try:
            self.options = msgspec.convert(api.config, RedactOptions)
        except msgspec.ValidationError as err:
            raise ValueError(f"plugins.settings.{api.name}.options: {err}") from None
        self.log = api.log
        if not (self.options.emails or self.options.card_numbers):
            self.process = None  # type: ignore[assignment]  # nothing to redact: keep the request path free of it

    def process(self, event: Event) -> None:
        """Redact what leaves for a remote deployment."""
        if event.stage != "upstream":
            return
        if not self.options.everywhere and event.provider_type in self.options.local_types:
            return
        body, (emails, cards) = redact_body(event.body, self.options)
        if emails or cards:
            event.body = body
            self.log.info(
                "redacted %d e-mail address(es) and %d card number(s) sent to %s (request %s)",
                emails,
                cards,
                event.deployment,
                event.request_id,
            )
