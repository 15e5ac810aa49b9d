"""A small progress display on stderr for long model operations: stage lines with elapsed time and percent."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Prints ``[  12.3s] [2/5] stage: detail  45%`` lines to a stream (stderr by default).

    On a terminal, percentages of one stage overwrite each other on one line; elsewhere (logs, pipes) a line
    is printed every 10 percent so the output stays short. ``quiet`` silences everything.
    """

    def __init__(self, total_stages: int, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.total = total_stages
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.start = time.monotonic()
        self.stage_no = 0
        self.stage_name = ""
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_pct = -100.0
        self._open_line = False

    def elapsed(self) -> float:
        """Seconds since the display was created."""
        return time.monotonic() - self.start

    def _write(self, text: str, *, transient: bool = False) -> None:
        if self.quiet:
            return
        if self._open_line:
            self.stream.write("\r\x1b[K" if self._tty else "\n")
        self.stream.write(f"[{self.elapsed():7.1f}s] {text}")
        if transient and self._tty:
            self._open_line = True
        else:
            self.stream.write("\n")
            self._open_line = False
        self.stream.flush()

    def stage(self, name: str) -> None:
        """Begin the next stage."""
        self.stage_no += 1
        self.stage_name = name
        self._last_pct = -100.0
        self._write(f"[{self.stage_no}/{self.total}] {name}")

    def percent(self, done: float, total: float, detail: str = "") -> None:
        """Report progress of the current stage (rate-limited on non-terminals)."""
        pct = 100.0 * done / total if total else 100.0
        step = 1.0 if self._tty else 10.0
        if 0.0 <= pct - self._last_pct < step and pct < 100.0:
            return
        self._last_pct = pct
        suffix = f" {detail}" if detail else ""
        self._write(f"[{self.stage_no}/{self.total}] {self.stage_name}: {pct:5.1f}%{suffix}", transient=True)

    def info(self, text: str) -> None:
        """A line of detail within the current stage."""
        self._write(f"      {text}")

    def done(self, text: str) -> None:
        """The final line."""
        self._write(f"done: {text}")
