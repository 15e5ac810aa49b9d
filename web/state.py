"""The web UI's own state for one app: settings read from the environment, templates, static files.

Built by :func:`minigate.web.web_routes` (so once per app, never at import) and handed to handlers as the ``web``
dependency.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from minigate.web.assets import StaticAssets
from minigate.web.markdown import MarkdownRenderer

__all__ = ["ADMIN_PASSWORD_ENV", "CHAT_PUBLIC_ENV", "WebSettings", "WebState"]

ADMIN_PASSWORD_ENV = "MINIGATE_ADMIN_PASSWORD"
CHAT_PUBLIC_ENV = "MINIGATE_CHAT_PUBLIC"

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class WebSettings:
    """What the environment says about the web UI."""

    admin_password: str | None = None
    chat_public: bool = False
    session_ttl: float = 7 * 24 * 3600.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebSettings:
        """Read ``MINIGATE_ADMIN_PASSWORD`` and ``MINIGATE_CHAT_PUBLIC`` (``1``/``true``/``yes``)."""
        env = dict(os.environ) if env is None else env
        public = env.get(CHAT_PUBLIC_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
        return cls(admin_password=env.get(ADMIN_PASSWORD_ENV) or None, chat_public=public)


@dataclass(slots=True)
class WebState:
    """Settings, the template environment and per-process bookkeeping of the web UI."""

    settings: WebSettings
    templates: Environment
    markdown: MarkdownRenderer
    assets: StaticAssets
    # id() of the Gateway objects whose chain overrides were applied, and their configs as loaded
    # (see minigate.web.chains).
    applied: set[int] = field(default_factory=set)
    base_configs: dict[int, Any] = field(default_factory=dict)
    # Under ``serve --workers N``: tells the other gateway processes to reload (they apply stored chain edits then).
    announce: Callable[[], None] | None = None

    @classmethod
    def create(cls, settings: WebSettings | None = None) -> WebState:
        """Read the settings from the environment, load the templates and the static files (hashed, gzipped)."""
        env = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        markdown = MarkdownRenderer(code_tools=True)  # code blocks get a header and a Copy button
        assets = StaticAssets.load(_HERE / "static")
        env.globals["static"] = assets.url  # /static/app.3f2a9c1b.css: the content's hash, so cached for a year
        env.globals["markdown"] = markdown.render
        env.filters["when"] = _when
        env.filters["number"] = _number
        env.filters["ms"] = _ms
        env.filters["dom_id"] = lambda name: "p" + str(name).encode().hex()  # as minigate.web.adapter.dom_id
        return cls(settings or WebSettings.from_env(), env, markdown, assets)

    def render(self, template: str, **context: Any) -> str:
        """Render a template to a string."""
        return self.templates.get_template(template).render(**context)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "\u2013"  # an en dash
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "\u2013"
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"
