"""``minigate models``: manage the local models of the configured onnxruntime-genai provider.

``list``, ``pull``, ``import``, ``verify`` and ``rm`` work on the provider's models folder (the gateway need not
run); ``load``, ``unload`` and ``reload`` ask the running gateway through its admin API.
Exit codes: 0 ok, 1 refused input or failed request, 2 conversion tools missing or bad usage, 3 conversion failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from minigate.gateway.config.schema import Config
from minigate.gateway.runtime.gateway import ADMIN_KEY_ENV

__all__ = ["convert_in_child", "ensure_default_models", "local_providers", "run_models_command"]

LOCAL_TYPES = ("onnxruntime-genai", "onnx", "onnx-embeddings")  # providers with a models folder


def local_providers(config: Config) -> dict[str, Path]:
    """Each local provider's name and models folder."""
    return {
        name: config.path(section.models_dir)
        for name, (type_name, section) in config.providers.items()
        if type_name in LOCAL_TYPES
    }


def _pick(config: Config, wanted: str | None) -> tuple[str, Path]:
    local = local_providers(config)
    if wanted is not None:
        if wanted not in local:
            raise SystemExit(f"minigate: no local provider named {wanted!r} (local providers: {', '.join(local)})")
        return wanted, local[wanted]
    if not local:
        raise SystemExit("minigate: the config has no onnxruntime-genai provider")
    return next(iter(local.items()))


def _admin_call(config: Config, url: str | None, key: str | None, path: str) -> int:
    base = (
        url or f"http://{config.server.host if config.server.host != '0.0.0.0' else '127.0.0.1'}:{config.server.port}"
    )
    token = key or os.environ.get(ADMIN_KEY_ENV)
    if not token:
        print(f"minigate: give an admin key with --key or {ADMIN_KEY_ENV}", file=sys.stderr)
        return 2
    request = urllib.request.Request(
        base.rstrip("/") + path, method="POST", data=b"{}", headers={"authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]["message"]
        print(f"minigate: {detail}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"minigate: cannot reach the gateway at {base}: {err}", file=sys.stderr)
        return 1
    for model in body.get("models", []):
        print(f"{model['id']:<32} {model['state']}")
    return 0


def run_models_command(config: Config, provider: str | None, url: str | None, key: str | None, rest: list[str]) -> int:
    """Run ``minigate models REST...`` for the chosen local provider."""
    name, models_dir = _pick(config, provider)
    if rest and rest[0] in ("load", "unload", "reload"):
        if len(rest) != 2:
            print(f"usage: minigate models {rest[0]} MODEL", file=sys.stderr)
            return 2
        return _admin_call(config, url, key, f"/admin/api/models/{name}/{rest[1]}/{rest[0]}")
    from minigate.providers.onnx.cli import main as store_main

    return store_main(["--models-dir", str(models_dir), *rest])


def ensure_default_models(config: Config) -> None:
    """Convert, on first use, the catalog models that agents' chains name but the models folder lacks.

    Each conversion runs in a child process (``python -m minigate.providers.onnx.cli pull``), so torch and
    transformers never enter the gateway's process; its progress lines go to stderr as they come. SIGINT or
    SIGTERM during a conversion stops the child (and the model builder it runs) and ends ``serve``.
    """
    from minigate.providers.onnx.store import split_ref
    from minigate.providers.onnx.wheel import CATALOG

    local = local_providers(config)
    wanted: list[tuple[str, str, str | None]] = []
    for agent in config.agents.values():
        for ref in agent.model.chain():
            provider, _, model = ref.partition("/")
            try:
                base, precision = split_ref(model)
            except ValueError:
                continue  # a bad reference is the provider's 400 at request time, not a reason to stop serving
            precision = None if precision == "auto" else precision
            if provider in local and base in CATALOG and (provider, base, precision) not in wanted:
                wanted.append((provider, base, precision))
    for provider, base, precision in wanted:
        models_dir = local[provider]
        if _has_variant(models_dir, base, precision):
            continue
        label = f"{provider}/{base}" + (f"@{precision}" if precision else "")
        print(f"minigate: {label} is not converted yet; converting it now (once)", file=sys.stderr)
        status = convert_in_child(models_dir, ["pull", base, *(["-p", precision] if precision else [])])
        if status == 2:
            print(
                "minigate: the conversion tools are not installed; run `pip install -e '.[convert]'` "
                f"(or `minigate models pull` later). Serving without {label} for now.",
                file=sys.stderr,
            )
        elif status != 0:
            print(f"minigate: converting {label} failed (exit {status}); serving without it", file=sys.stderr)


def _has_variant(models_dir: Path, base: str, precision: str | None) -> bool:
    from minigate.providers.onnx.store import variants

    found = variants(models_dir, base)
    return bool(found) if precision is None else precision in found


STOP_GRACE = 10.0  # seconds a conversion gets to clean up after SIGINT before it is killed


def convert_in_child(models_dir: Path, args: list[str]) -> int:
    """Run ``python -m minigate.providers.onnx.cli --models-dir DIR ARGS`` in a child process; its exit status.

    The child inherits stderr (its progress display) and runs in a session of its own, so that on SIGINT or
    SIGTERM to the gateway the whole conversion (the child and the model builder it starts) gets SIGINT, cleans
    its staging folder and exits (SIGKILL after ``STOP_GRACE``); then the gateway exits too (SystemExit 130/143).
    """
    import signal
    import subprocess

    cmd = [sys.executable, "-m", "minigate.providers.onnx.cli", "--models-dir", str(models_dir), *args]
    stopped: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped.append(signum)
        raise KeyboardInterrupt

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print("minigate: conversion stopped", file=sys.stderr)
        raise SystemExit(128 + (stopped[0] if stopped else signal.SIGINT)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
