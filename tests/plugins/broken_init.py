"""A plugin whose ``init`` raises."""

from __future__ import annotations

from typing import Any


def init(api: Any) -> None:
    raise RuntimeError("cannot start: the licence server is down")


def process(event: Any) -> None:
    event.body["broken_init_ran"] = True  # never: a plugin that failed init is not loaded
