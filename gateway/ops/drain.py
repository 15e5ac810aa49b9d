"""Calls in flight, and how they end when the server stops (the drain) or a reload retires their providers.

:meth:`Drain.request_stop` refuses new /v1 calls and cuts those still open after ``server.shutdown_grace``
seconds; old providers close once no call uses them (docs/architecture.md, "Shutdown and reload").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Drain", "Tracked"]

log = logging.getLogger("minigate")


class Tracked(Protocol):
    """What the registry needs of a call: the task to cancel, the cut flag, the providers it uses."""

    task: asyncio.Task[Any] | None
    cut: bool
    providers: dict[str, Any]


class Drain:
    """The calls in flight and the shutdown state of one app."""

    def __init__(self) -> None:
        self.calls: set[Tracked] = set()
        self.stopping = False
        self.grace = 30.0
        self.on_cut: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finishing: asyncio.Task[None] | None = None
        self._empty: asyncio.Event | None = None  # set once no call is open, after shutdown began

    def bind(self, loop: asyncio.AbstractEventLoop, grace: float) -> None:
        """Remember the event loop the calls run on, and the grace period (seconds)."""
        self._loop, self.grace = loop, grace

    def add(self, call: Tracked) -> None:
        """Register ``call``, run by the current task."""
        call.task = asyncio.current_task()
        self.calls.add(call)

    def discard(self, call: Tracked) -> None:
        """The call no longer waits on an upstream."""
        self.calls.discard(call)
        if self._empty is not None and not self.calls:
            self._empty.set()

    def request_stop(self) -> None:
        """Begin the shutdown; safe to call from a signal handler or another thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin)

    def begin(self) -> None:
        """Refuse new calls from now on, and cut the open ones once the grace period has passed."""
        if self.stopping:
            return
        self.stopping = True
        self._empty = asyncio.Event()
        if not self.calls:
            self._empty.set()
        log.info(
            "shutting down: %d calls in flight get up to %s s to finish",
            len(self.calls),
            self.grace,
            extra={"event": "shutdown", "in_flight": len(self.calls), "grace_s": self.grace},
        )
        self._finishing = asyncio.ensure_future(self._finish())

    async def _finish(self) -> None:
        assert self._empty is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), self.grace)
        if self.calls:
            log.warning(
                "grace period over: ending %d calls with an error event",
                len(self.calls),
                extra={"event": "shutdown_cut", "in_flight": len(self.calls)},
            )
            self.cut_all()
        for hook in self.on_cut:
            hook()

    def cut_all(self) -> None:
        """End every open call now (each ends with an error and stores its row)."""
        for call in list(self.calls):
            if not call.cut:
                call.cut = True
                self.calls.discard(call)
                if call.task is not None and not call.task.done():
                    call.task.cancel()

    def using(self, providers: dict[str, Any]) -> int:
        """How many open calls use this provider set."""
        return sum(1 for call in self.calls if call.providers is providers)

    async def wait_unused(self, providers: dict[str, Any], limit: float) -> bool:
        """Wait until no open call uses ``providers`` (at most ``limit`` s); False if some still do."""
        deadline = time.monotonic() + limit
        while self.using(providers):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True
