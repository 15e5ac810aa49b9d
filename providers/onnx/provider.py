"""``onnxruntime-genai``: local models from a models folder, each in a worker process of its own.

A model loads on its first request (or :meth:`OnnxProvider.load`) and unloads after ``idle_ttl``, or least
recently used first within ``memory_budget``; :meth:`OnnxProvider.reload` swaps it with no call dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

import minigate.providers.onnx.store as store
from minigate.providers.base import ChunkStream, Provider, ProviderError, ProviderInfo, ProviderRequest
from minigate.providers.onnx.config import OnnxProviderConfig, check_config, parse_size
from minigate.providers.onnx.device_choice import DeviceError
from minigate.providers.onnx.engine_link import LinkedWorkerClient
from minigate.providers.onnx.openai_mapping import ChatJob, StopMatcher, parse_request, response_body
from minigate.providers.onnx.placement import Placement, base_worker_options
from minigate.providers.onnx.precision import PrecisionRouter
from minigate.providers.onnx.store_ops import StoreOperations
from minigate.providers.onnx.stream import OnnxStream, pieces
from minigate.providers.onnx.toolcalls import parse_tool_calls
from minigate.providers.onnx.worker import Generation, WorkerClient, WorkerOptions
from minigate.providers.registry import ProviderContext, ProviderRegistry, ProviderType, always_local

__all__ = ["OnnxProvider", "OnnxProviderConfig", "parse_size", "register"]


START_BACKOFF = 5.0  # seconds a failed worker start is remembered and its error repeated


@dataclass(slots=True)
class _Slot:
    client: WorkerClient | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failed: tuple[float, ProviderError] | None = None


class OnnxProvider(StoreOperations, Provider):
    """Serves the models of ``config.models_dir`` with onnxruntime-genai worker processes."""

    type_name = "onnxruntime-genai"
    endpoints = frozenset({"chat/completions", "completions"})

    def __init__(
        self,
        name: str,
        config: OnnxProviderConfig,
        *,
        base_dir: Path | None = None,
        worker_options: dict[str, Any] | None = None,
        engine_host: str | None = None,
    ) -> None:
        super().__init__(name)
        self.engine_host = engine_host  # the supervisor's shared engines (``serve --workers N``), else own workers
        problems = check_config(config)
        if problems:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in problems))
        self.config = config
        models_dir = Path(config.models_dir)
        self.models_dir = models_dir if models_dir.is_absolute() else (base_dir or Path.cwd()) / models_dir
        self.memory_budget = parse_size(config.memory_budget)
        self.worker_options = base_worker_options(config, worker_options)
        self.placement = Placement(name, config)
        self._slots: dict[str, _Slot] = {}
        self._retired: set[WorkerClient] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.precisions = PrecisionRouter(self.models_dir, config.precision, config.precision_busy_at)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the idle-TTL reaper (workers start on demand)."""
        if self.config.idle_ttl is not None and self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle())
        if self.placement.needs_probe():  # say at startup where the models will run, and why (or why not)
            with contextlib.suppress(DeviceError):
                await self.placement.resolve()

    async def close(self) -> None:
        """Stop every worker."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        clients = [s.client for s in self._slots.values() if s.client] + list(self._retired)
        self._slots.clear()
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    def models(self) -> list[str]:
        """The model folders in ``models_dir``."""
        return store.list_models(self.models_dir)

    def loaded(self) -> dict[str, WorkerClient]:
        """Models whose worker is running, with their clients."""
        return {m: s.client for m, s in self._slots.items() if s.client is not None and s.client.alive}

    def info(self) -> list[ProviderInfo]:
        """Every model with its state (loaded or available), worker pid, memory and manifest summary."""
        out = []
        loaded = self.loaded()
        for name in self.models():
            manifest = store.read_manifest(self.models_dir / name) or {}
            details: dict[str, Any] = {"precision": manifest.get("precision"), "created": manifest.get("created")}
            client = loaded.get(name)
            # The engine's window once loaded; until then the configured cap (the model's own may be smaller).
            details["context_length"] = self.worker_options.max_context
            if client is not None:
                details.update(
                    context_length=client.context_length,
                    pid=client.pid,
                    rss_bytes=client.rss_bytes(),
                    inflight=len(client.inflight),
                    load_seconds=client.ready.get("load_seconds"),
                    **self.runs_on(name),
                )
                if client.cache_stats:
                    details["prefix_cache"] = prefix_summary(client.cache_stats)
            out.append(ProviderInfo(name, "loaded" if client else "available", details))
        return out

    def runs_on(self, model: str) -> dict[str, str]:
        """The back end and device a loaded model runs on (empty when it is not loaded)."""
        client = self.loaded().get(model)
        choice = client.options.device_choice if client is not None else None
        return {"execution_provider": choice["backend"], "device": choice["device"]} if choice else {}

    # ------------------------------------------------------------ admin operations
    async def load(self, model: str) -> WorkerClient:
        """Start the model's worker unless it runs; return its client."""
        slot = self._slots.get(model)
        if slot is not None and slot.client is not None and slot.client.alive:
            return slot.client  # every request comes here: no file system work while the worker runs
        if "@" in model and model not in self._slots:  # name@precision: the folder holding that precision
            model = self.precisions.choose(model, self._inflight).folder
        path = self._model_dir(model)  # before a slot exists: a name that is no model must leave nothing behind
        slot = self._slots.setdefault(model, _Slot())
        async with slot.lock:
            if slot.client is not None and slot.client.alive:
                return slot.client
            if slot.client is not None:  # died: reap it in the background, start a new one
                self._retire(slot.client)
                slot.client = None
            if slot.failed is not None and time.monotonic() - slot.failed[0] < START_BACKOFF:
                raise slot.failed[1]  # do not spawn a process per request for a model that cannot load
            await self._make_room(model, path)
            client = self._client(model, path, await self.placement.options(self.worker_options))
            try:
                await client.start()
            except ProviderError as exc:
                slot.failed = (time.monotonic(), exc)
                raise
            slot.client, slot.failed = client, None
            return client

    async def unload(self, model: str) -> bool:
        """Stop the model's worker (requests in flight finish first); False if it was not loaded."""
        slot = self._slots.pop(model, None)
        if slot is None or slot.client is None:
            return False
        if isinstance(slot.client, LinkedWorkerClient):
            slot.client.everywhere = True  # unloaded for every gateway process, not only this one
        await self._drain(slot.client)
        return True

    async def reload(self, model: str) -> WorkerClient:
        """Hot-swap: start a new worker, route new requests to it, let the old one finish and exit."""
        path = self._model_dir(model)
        slot = self._slots.setdefault(model, _Slot())
        async with slot.lock:
            client = self._client(model, path, await self.placement.options(self.worker_options), fresh=True)
            await client.start()
            old, slot.client, slot.failed = slot.client, client, None
        if old is not None:
            self._retire(old)
        return client

    def _client(self, model: str, path: Path, options: WorkerOptions, fresh: bool = False) -> WorkerClient:
        if self.engine_host is None:
            return WorkerClient(model, path, options)
        return LinkedWorkerClient(model, path, options, self.engine_host, fresh=fresh, on_retired=self._let_go)

    def _let_go(self, client: WorkerClient) -> None:
        """Another gateway process swapped or unloaded the model: drain and leave its old engine now."""
        slot = self._slots.get(client.model)
        if slot is not None and slot.client is client:
            slot.client = None
        if not client.draining:
            self._retire(client)

    async def remove(self, model: str) -> None:
        """Unload the model and delete its folder."""
        self._model_dir(model)  # 404 for a name that is no model here (bad names and symlinks included)
        await self.unload(model)
        try:
            store.remove_model(self.models_dir, model)
            self.precisions.forget()
        except store.ModelStoreError as exc:
            raise ProviderError(str(exc), status=400, type="invalid_request_error", fallback=False) from exc

    # ------------------------------------------------------------ requests
    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        """A whole completion: the stream's pieces gathered into one body."""
        job = parse_request(request.endpoint, request.body)
        generation = await self._submit(request, job)
        text: list[str] = []
        completion, finish = 0, "stop"
        matcher = StopMatcher(job.stop)
        try:
            async for piece_text, ntok, fin in pieces(generation, matcher, request):
                text.append(piece_text)
                completion += ntok
                finish = fin or finish
        finally:
            await generation.aclose()
        answer, calls = parse_tool_calls("".join(text), job.tools) if job.tools else ("".join(text), None)
        return response_body(request.model, job.chat, answer, finish, generation.prompt_tokens, completion, calls)

    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        """Start a streamed completion; refusals and load failures raise before the first chunk."""
        job = parse_request(request.endpoint, request.body)
        generation = await self._submit(request, job)
        return OnnxStream(request, job, generation)

    async def _submit(self, request: ProviderRequest, job: ChatJob) -> Generation:
        if request.endpoint not in self.endpoints:
            raise ProviderError(
                f"{request.endpoint} is not served by local models",
                status=404,
                code="unsupported_endpoint",
                cooldown=False,
            )
        folder = request.model
        if "@" in folder or self.config.precision is not None:  # chosen once: a request never changes worker
            choice = self.precisions.choose(folder, self._inflight)
            folder = choice.folder
            if choice.precision:
                request.notes["precision"] = choice.precision
        client = await self.load(folder)
        timeout = max(request.remaining(), 0.001)
        try:
            generation = await asyncio.wait_for(client.submit(job.message), timeout)
        except TimeoutError as exc:
            raise ProviderError("timed out waiting for the local model", status=504, code="timeout") from exc
        asked = job.message.get("max_tokens")
        if asked is not None and generation.max_tokens < asked:  # past the context: clamped to the room left
            request.notes["max-tokens-clamped"] = str(generation.max_tokens)
        return generation

    def _inflight(self, folder: str) -> int:
        slot = self._slots.get(folder)
        return len(slot.client.inflight) if slot is not None and slot.client is not None else 0

    def _model_dir(self, model: str) -> Path:
        return store.needed_model_dir(self.models_dir, model, "genai_config.json")

    # ------------------------------------------------------------ memory and idleness
    async def _make_room(self, model: str, path: Path) -> None:
        if self.memory_budget is None:
            return
        need = _estimate_bytes(path)
        if need > self.memory_budget:
            raise ProviderError(
                f"model {model} needs about {need >> 20} MiB, more than the memory budget",
                status=503,
                code="memory_budget",
                cooldown=False,
            )
        loaded = sorted(((m, c) for m, c in self.loaded().items() if m != model), key=lambda mc: mc[1].stats.last_used)
        used = sum(c.rss_bytes() for _, c in loaded)
        for name, client in loaded:
            if used + need <= self.memory_budget:
                break
            if not client.inflight:
                used -= client.rss_bytes()
                self._slots.pop(name, None)
                await self._drain(client)
        if used + need > self.memory_budget:
            raise ProviderError(
                f"no memory for model {model}: the loaded models are busy",
                status=503,
                code="memory_budget",
                retry_after=5.0,
                cooldown=False,
            )

    async def _reap_idle(self) -> None:
        ttl = float(self.config.idle_ttl or 0)
        while True:
            await asyncio.sleep(min(30.0, max(0.05, ttl / 4)))
            now = time.monotonic()
            for model, client in list(self.loaded().items()):
                if not client.inflight and now - client.stats.last_used > ttl:
                    slot = self._slots.get(model)
                    if slot is not None and slot.client is client:
                        self._slots.pop(model, None)
                        await self._drain(client)

    def _retire(self, client: WorkerClient) -> None:
        self._retired.add(client)
        task = asyncio.create_task(self._drain(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, client: WorkerClient, limit: float = 600.0) -> None:
        client.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.idle.wait(), limit)
        await client.stop()
        self._retired.discard(client)


def prefix_summary(stats: dict[str, Any]) -> dict[str, int]:
    """A worker's prefix cache counters (``WorkerClient.cache_stats``) as the models page and admin API show them."""
    return {
        "lookups": int(stats.get("prefix_lookups", 0)),
        "hits": int(stats.get("prefix_hits", 0)),
        "reused_tokens": int(stats.get("prefix_reused_tokens", 0)),
        "prefilled_tokens": int(stats.get("prefilled_tokens", 0)),
        "settled_tokens": int(stats.get("prefix_settled_tokens", 0)),
        "entries": int(stats.get("prefix_entries", 0)),
        "bytes": int(stats.get("prefix_bytes", 0)),
        "budget_bytes": int(stats.get("prefix_budget_bytes", 0)),
        "evictions": int(stats.get("prefix_evictions", 0)),
    }


def _estimate_bytes(path: Path) -> int:
    """Memory a model is expected to take: its files, plus a fixed allowance for the runtime and KV cache."""
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) + (150 << 20)


def register(registry: ProviderRegistry) -> None:
    """Register the ``onnxruntime-genai`` provider type (alias ``onnx``) with a ProviderRegistry."""

    def factory(name: str, config: OnnxProviderConfig, context: ProviderContext) -> Provider:
        if config.cpu_threads is None and context.cpu_threads:
            config = msgspec.structs.replace(config, cpu_threads=context.cpu_threads)
        if config.gpu_memory is None and context.gpu_memory is not None:
            config = msgspec.structs.replace(config, gpu_memory=str(context.gpu_memory))
        return OnnxProvider(name, config, base_dir=context.base_dir, engine_host=context.engine_host)

    registry.register(
        # vision=False: the engine is sent text only (openai_mapping refuses other content parts), whatever
        # a model's genai_config.json holds.
        ProviderType("onnxruntime-genai", OnnxProviderConfig, factory, check_config, local=always_local, vision=False),
        "onnx",
    )
