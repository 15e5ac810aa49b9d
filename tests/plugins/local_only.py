"""A plugin that refuses to send anything to a remote provider (type ``openai``): the chain moves on."""

from __future__ import annotations

from typing import Any

from minigate.gateway.plugins.loader import Rejected


def process(event: Any) -> None:
    if event.stage == "upstream" and event.provider_type == "openai":
        raise Rejected("this gateway keeps prompts on local models", status=403, code="remote_refused")
