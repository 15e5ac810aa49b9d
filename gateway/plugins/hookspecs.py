"""The plugin hooks: what a minigate plugin may define, and the objects its hooks are given.

A plugin is a module, or a class (instantiated once), with any of the hooks below; ``minigate.gateway.plugins.loader``
loads it and checks each hook against its spec here. ``minigate_plugins/prompt_limit.py`` is a short example.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from minigate.gateway.config.workflow_steps import StepRegistry
from minigate.providers.registry import ProviderRegistry

__all__ = ["HOOKS", "Event", "Init", "PluginAPI", "Process", "Rejected", "Shutdown", "Stage", "UILink", "hook_problem"]


class Init(Protocol):
    """``init(api)``: once, when the config is checked. Read ``api.config``; register provider types, workflow step
    types, routes and UI links. Raising stops the gateway from starting (or leaves the plugin out: ``on_error``)."""

    def __call__(self, api: PluginAPI, /) -> None: ...


class Process(Protocol):
    """``process(event)``: each request before routing, each request leaving for a deployment, each JSON answer and
    stream chunk. Change ``event.body`` or raise :class:`Rejected`. A plain function: it runs on the event loop
    for every chunk (a class plugin may set it to None in ``init``: then it costs nothing)."""

    def __call__(self, event: Event, /) -> None: ...


class Shutdown(Protocol):
    """``shutdown()``: once, when the gateway stops; a coroutine function is awaited (5 s at most)."""

    def __call__(self) -> Awaitable[None] | None: ...


HOOKS: dict[str, type[Any]] = {"init": Init, "process": Process, "shutdown": Shutdown}
_MAY_BE_ASYNC = frozenset({"shutdown"})

Stage = Literal["request", "upstream", "response", "chunk"]


class Rejected(Exception):
    """Raised by a ``process`` hook to refuse a request or an answer; the client gets ``status`` and ``message``.

    Before routing the client gets the refusal; for one deployment the next in the chain is tried; for an answer
    or a chunk the client gets an error (a stream ends with an error event)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "rejected_by_plugin") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


@dataclass(slots=True)
class Event:
    """What a ``process`` hook sees. Change ``body`` in place or assign a new dict; never mutate nested values of
    a ``request`` or ``upstream`` body in place (they are shared with the other deployments): replace them."""

    stage: Stage  # "request" (before routing), "upstream" (leaving for one deployment), "response", "chunk"
    endpoint: str  # "chat/completions", "completions" or "embeddings"
    body: dict[str, Any]
    request_id: str | None
    key_id: int | None  # the API key's id (None for the bootstrap admin key)
    deployment: str | None = None  # "provider/model", except before routing
    provider_type: str | None = None  # that provider's type: "openai", "onnxruntime-genai", "fake", ...


@dataclass(frozen=True, slots=True)
class UILink:
    """A link a plugin adds to the web UI's navigation (shown to admins)."""

    label: str
    href: str


class PluginAPI:
    """What ``init`` gets: the plugin's options and the registries it may add to.

    Registrations take effect only when ``init`` returns, so a plugin that raises leaves nothing behind.
    """

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config  # plugins.settings.NAME.options
        self.log = logging.getLogger(f"minigate.plugins.{name}")
        self.providers = ProviderRegistry()  # .register(ProviderType(...)); see minigate.providers.registry
        self.steps = StepRegistry()  # .register(MyStep); see minigate.gateway.config.workflow_steps
        self.routes: list[Any] = []
        self.links: list[UILink] = []

    def add_route(self, *handlers: Any) -> None:
        """Mount Litestar route handlers (or routers) on the app."""
        self.routes.extend(handlers)

    def add_link(self, label: str, href: str) -> None:
        """Add a link to the web UI's navigation; ``href`` is a path on this gateway."""
        if not href.startswith("/") or href.startswith("//"):
            raise ValueError(f"a UI link must be a path on the gateway, not {href!r}")
        self.links.append(UILink(label, href))


def hook_problem(hook: str, fn: object) -> str | None:
    """Why ``fn`` does not fit the spec of ``hook`` (a key of :data:`HOOKS`), or None when it does."""
    if not callable(fn):
        return f"{hook} is not a function"
    if hook not in _MAY_BE_ASYNC and inspect.iscoroutinefunction(fn):
        return f"{hook} must be a plain function" + (" (it runs for every stream chunk)" if hook == "process" else "")
    spec = inspect.signature(HOOKS[hook].__call__)
    wanted = [p.name for p in spec.parameters.values()][1:]  # without self
    try:
        inspect.signature(fn).bind(*wanted)
    except TypeError:
        return f"{hook} must take ({', '.join(wanted)})"
    except ValueError:  # no signature to read (some built-in callables): it is called as it is
        pass
    return None
