"""The local models' store command (``python -m minigate.providers.onnx.cli``) run in a child process for the
provider's pull and import: torch and the model builder never load into the gateway, and cancelling stops them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from minigate.providers.base import ProviderError

__all__ = ["run_store_cli"]


async def run_store_cli(models_dir: Path, args: list[str], on_progress: Callable[[str], None] | None) -> Path:
    """Run the store command with ``args`` on ``models_dir``, its stderr lines to ``on_progress``; the folder it
    made. Its exit status becomes a :class:`ProviderError` (1 refused input, 2 tools missing, 4 download)."""
    cmd = [sys.executable, "-m", "minigate.providers.onnx.cli", "--models-dir", str(models_dir), *args]
    # A session of its own: cancelling (a job at shutdown, an admin who left) stops the model builder too.
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert proc.stderr is not None and proc.stdout is not None
    last = ""
    try:
        while raw := await proc.stderr.readline():
            for line in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                if line.strip():
                    last = line.strip()
                    if on_progress:
                        on_progress(last)
        out = (await proc.stdout.read()).decode().strip()
        await proc.wait()
    except BaseException:
        await asyncio.shield(_stop_session(proc))
        raise
    if proc.returncode != 0:
        code = proc.returncode
        message = last.removeprefix("error: ") or "conversion failed"
        if code == 1:  # the CLI's exit status for refused input (names, folders, files)
            raise ProviderError(message, status=400, code="invalid_model", fallback=False)
        if code == 2:  # the conversion tools are missing
            raise ProviderError(message, status=501, code="convert_tools_missing", fallback=False)
        if code == 4:
            raise ProviderError(message, status=502, code="download_failed", fallback=False)
        raise ProviderError(message, status=500, code="convert_failed", fallback=False)
    return Path(out.splitlines()[-1])


async def _stop_session(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGINT to a conversion's whole session (it cleans its staging folder), SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
            return
