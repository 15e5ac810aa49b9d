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

__all__ = ["ensure_default_models", "local_providers", "run_models_command"]

LOCAL_TYPES = ("onnxruntime-genai", "onnx")


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
    """Convert, on first use, the catalog models that agents' chains name but the models folder lacks."""
    from minigate.providers.onnx.wheel import CATALOG

    local = local_providers(config)
    wanted: list[tuple[str, str]] = []
    for agent in config.agents.values():
        for ref in agent.model.chain():
            provider, _, model = ref.partition("/")
            if provider in local and model in CATALOG and (provider, model) not in wanted:
                wanted.append((provider, model))
    for provider, model in wanted:
        models_dir = local[provider]
        if (models_dir / model / "genai_config.json").is_file():
            continue
        print(f"minigate: {provider}/{model} is not converted yet; converting it now (once)", file=sys.stderr)
        from minigate.providers.onnx.cli import main as store_main

        status = store_main(["--models-dir", str(models_dir), "pull", model])
        if status == 2:
            print(
                "minigate: the conversion tools are not installed; run `pip install -e '.[convert]'` "
                f"(or `minigate models pull` later). Serving without {provider}/{model} for now.",
                file=sys.stderr,
            )
        elif status != 0:
            print(f"minigate: converting {provider}/{model} failed; serving without it", file=sys.stderr)
