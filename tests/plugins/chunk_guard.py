"""A plugin that refuses an answer (JSON or stream chunk) containing the word 'tok3'."""

from __future__ import annotations

from typing import Any

from minigate.gateway.plugins.loader import Rejected


def process(event: Any) -> None:
    if event.stage in ("response", "chunk") and "tok3" in str(event.body.get("choices")):
        raise Rejected("the answer mentioned tok3", status=451, code="unwanted_answer")
