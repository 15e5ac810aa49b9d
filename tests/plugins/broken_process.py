"""A plugin whose ``process`` raises at the stage named by its ``stage`` option (every stage by default)."""

from __future__ import annotations

from typing import Any


class Broken:
    def init(self, api: Any) -> None:
        self.stage = api.config.get("stage")

    def process(self, event: Any) -> None:
        if self.stage in (None, event.stage):
            raise ZeroDivisionError("a bug in the plugin")
