"""Where one provider's local models run: its back end and device, chosen once and logged with the reason.

The device probe (a child process, about 0.5 s) runs only when the choice needs it: a plugin back end, ``auto``,
or cuda with ``gpu_memory`` as a percentage. A choice that cannot be had fails every load with its message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from minigate.providers.base import ProviderError
from minigate.providers.onnx.config import OnnxProviderConfig, gpu_memory_spec
from minigate.providers.onnx.device_choice import BUILTIN, Choice, DeviceError, choose
from minigate.providers.onnx.devices import Probe, normalize, run_probe_async
from minigate.providers.onnx.worker import WorkerOptions

__all__ = ["Placement", "base_worker_options"]

log = logging.getLogger("minigate")


class Placement:
    """The back end and device of one ``onnxruntime-genai`` provider's workers."""

    def __init__(self, provider: str, config: OnnxProviderConfig) -> None:
        self.provider = provider
        self.config = config
        self.choice: Choice | None = None
        self.error: str | None = None
        self.probe: Probe | None = None
        self._lock = asyncio.Lock()

    def needs_probe(self) -> bool:
        """Whether choosing needs the device probe (else it is made from the config alone)."""
        name = normalize(self.config.execution_provider)
        spec = gpu_memory_spec(self.config.gpu_memory) if name == "cuda" else None
        return name not in BUILTIN or (spec is not None and spec[0] == "percent")

    async def resolve(self) -> Choice:
        """The choice, made on first call (raises :class:`DeviceError` with what to install or change)."""
        async with self._lock:
            if self.choice is not None:
                return self.choice
            if self.error is not None:
                raise DeviceError(self.error)
            probe = await self._probe() if self.needs_probe() else Probe()
            try:
                choice = choose(self.config.execution_provider, self.config.device, probe, self.config.gpu_memory)
            except DeviceError as exc:
                self.error = str(exc)
                log.error("%s: local models cannot run: %s", self.provider, exc)
                raise
            self.choice = choice
            log.info("%s: local models run on %s (%s)", self.provider, choice.label, choice.reason)
            for note in choice.notes:
                log.warning("%s: %s", self.provider, note)
            return choice

    async def _probe(self) -> Probe:
        if self.probe is None:
            self.probe = await run_probe_async()
        return self.probe

    async def survey(self) -> Probe:
        """What the device probe finds (run once, then kept): for the models page."""
        async with self._lock:
            return await self._probe()

    async def options(self, base: WorkerOptions) -> WorkerOptions:
        """``base`` set up for the chosen back end and device; a choice that cannot be had is a load error."""
        try:
            choice = await self.resolve()
        except DeviceError as exc:
            raise ProviderError(
                f"the local models of {self.provider} cannot be loaded: {exc}",
                status=500,
                code="model_load_failed",
            ) from exc
        memory = choice.gpu_memory_bytes if choice.backend == "cuda" else None
        return dataclasses.replace(
            base, execution_provider=choice.backend, gpu_memory_bytes=memory, device_choice=choice.options()
        )

    def describe(self) -> dict[str, Any]:
        """What the models page says of it: back end, device, why, notes, or the error (every key, None if unknown)."""
        choice = self.choice
        return {
            "execution_provider": choice.backend if choice else self.config.execution_provider,
            "device": choice.device if choice else self.config.device,
            "reason": choice.reason if choice else None,
            "package": choice.package if choice else None,
            "notes": list(choice.notes) if choice else [],
            "error": self.error,
        }


def base_worker_options(config: OnnxProviderConfig, overrides: dict[str, Any] | None = None) -> WorkerOptions:
    """How a provider section's workers run, before the device is chosen (:meth:`Placement.options` adds it)."""
    gpu_memory = gpu_memory_spec(config.gpu_memory)  # "80%" becomes bytes once the device is known
    options: dict[str, Any] = {
        "execution_provider": config.execution_provider,
        "max_batch_size": config.max_batch_size,
        "queue_size": config.queue_size,
        "max_context": config.max_context,
        "default_max_tokens": config.default_max_tokens,
        "cpu_threads": config.cpu_threads,
        "prefix_cache": config.prefix_cache,
        "prefix_reuse": config.prefix_reuse,
        "gpu_memory_bytes": int(gpu_memory[1]) if gpu_memory and gpu_memory[0] == "bytes" else None,
    }
    if config.preallocate_memory:  # each batch's KV cache sized for its whole answer when it starts
        options["grow_tokens"] = config.max_context
    return WorkerOptions(**{**options, **(overrides or {})})
