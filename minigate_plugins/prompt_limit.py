"""An example plugin using every hook of ``minigate.gateway.plugins.hookspecs``: refuse prompts over ``max_chars``
before routing.

Enable it with ``{"plugins": {"modules": ["minigate_plugins.prompt_limit:PromptLimit"],
"settings": {"prompt_limit": {"options": {"max_chars": 8000}}}}}``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from minigate.gateway.plugins.hookspecs import Event, Init, PluginAPI, Process, Rejected, Shutdown

__all__ = ["PromptLimit"]


class Options(msgspec.Struct, forbid_unknown_fields=True):
    max_chars: int = 8000


def _chars(value: Any) -> int:
    """Characters of text in a prompt, a list of messages, a message or a content part."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    if isinstance(value, dict):
        return _chars(value.get("content", value.get("text")))
    return 0


class PromptLimit:
    """The plugin: ``minigate_plugins.prompt_limit:PromptLimit`` in ``plugins.modules``."""

    def init(self, api: PluginAPI) -> None:
        self.options = msgspec.convert(api.config, Options)  # unknown options fail init, naming the plugin
        self.log, self.refused = api.log, 0

    def process(self, event: Event) -> None:
        if event.stage == "request":
            size = _chars(event.body.get("messages", event.body.get("prompt", event.body.get("input"))))
            if size > self.options.max_chars:
                self.refused += 1
                message = f"The prompt has {size} characters; this gateway takes {self.options.max_chars} at most."
                raise Rejected(message, status=413, code="prompt_too_long")

    def shutdown(self) -> None:
        self.log.info("refused %d prompt(s) over %d characters", self.refused, self.options.max_chars)


def _typed(plugin: PromptLimit) -> tuple[Init, Process, Shutdown]:
    return plugin.init, plugin.process, plugin.shutdown  # mypy checks each hook against its spec
