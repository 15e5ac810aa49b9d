"""``onnx-embeddings``: local embedding models (``embedding.json`` folders of a models folder) for ``/v1/embeddings``.

Each model runs in one thread of the gateway's process: onnxruntime and tokenizers release the GIL while they
work (measured: the event loop kept ticking within 7 ms through 1.8 s inference runs), so no worker process is
needed. Requests that arrive while a batch runs wait together and go as the next batch, up to ``max_batch_size``
inputs. A model loads on its first request and unloads after ``idle_ttl`` seconds unused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

import minigate.providers.onnx.store as store
from minigate.providers.base import ChunkStream, Provider, ProviderError, ProviderInfo, ProviderRequest
from minigate.providers.onnx.embed_mapping import check_dimensions, parse_embedding_request, response_body
from minigate.providers.registry import ProviderContext, ProviderRegistry, ProviderType, always_local

if TYPE_CHECKING:
    from minigate.providers.onnx.embed_model import EmbeddingModel

__all__ = ["EmbeddingProviderConfig", "OnnxEmbeddingsProvider", "check_config", "register"]

SPEC_FILE = store.EMBEDDING_SPEC  # what makes a folder of models_dir an embedding model


class EmbeddingProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An ``onnx-embeddings`` provider section.

    ``max_batch_size`` inputs go through the model at once; ``queue_size`` requests may wait for a batch (then
    429); ``idle_ttl`` is seconds (None: never unload); ``cpu_threads`` None lets onnxruntime choose.
    """

    type: str = "onnx-embeddings"
    models_dir: str = "./models"
    max_batch_size: int = 32
    queue_size: int = 64
    idle_ttl: float | None = 900
    cpu_threads: int | None = None


def check_config(config: EmbeddingProviderConfig) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs for values the types cannot rule out."""
    problems = []
    for name in ("max_batch_size", "queue_size", "cpu_threads"):
        value = getattr(config, name)
        if value is not None and value < 1:
            problems.append((name, "must be at least 1"))
    if config.idle_ttl is not None and config.idle_ttl <= 0:
        problems.append(("idle_ttl", "must be positive (or null: never unload)"))
    return problems


@dataclass(slots=True)
class _Job:
    sequences: list[list[int]]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Runner:
    """One loaded model: the thread that runs it and the requests waiting for its next batch."""

    model: EmbeddingModel
    executor: ThreadPoolExecutor
    max_batch: int
    queue_size: int
    pending: deque[_Job] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    last_used: float = field(default_factory=time.monotonic)
    batches: int = 0

    async def embed(self, sequences: list[list[int]]) -> Any:
        """Vectors of ``sequences``, computed in a batch with whatever else is waiting."""
        if len(self.pending) >= self.queue_size:
            raise ProviderError(
                "the local embedding model's queue is full", status=429, code="queue_full", retry_after=1.0
            )
        job = _Job(sequences, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        try:
            return await job.future
        finally:
            self.last_used = time.monotonic()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            jobs = [self.pending.popleft()]
            size = len(jobs[0].sequences)
            while self.pending and size + len(self.pending[0].sequences) <= self.max_batch:
                size += len(self.pending[0].sequences)
                jobs.append(self.pending.popleft())
            jobs = [j for j in jobs if not j.future.done()]  # a caller that gave up is not computed
            if not jobs:
                continue
            sequences = [s for j in jobs for s in j.sequences]
            try:
                vectors = await loop.run_in_executor(self.executor, self.model.embed, sequences, self.max_batch)
            except Exception as exc:  # onnxruntime's own errors: every request of the batch fails with it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(ProviderError(f"the embedding model failed: {exc}", status=500))
                continue
            self.batches += 1
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(vectors[start : start + len(job.sequences)])
                start += len(job.sequences)

    def close(self) -> None:
        """Stop the thread once its batch is done; fail whatever still waits."""
        for job in self.pending:
            if not job.future.done():
                job.future.set_exception(ProviderError("the embedding model was unloaded", status=503))
        self.pending.clear()
        self.executor.shutdown(wait=False)


class OnnxEmbeddingsProvider(Provider):
    """Serves the embedding models of ``config.models_dir`` (folders holding an ``embedding.json``)."""

    type_name = "onnx-embeddings"
    endpoints = frozenset({"embeddings"})

    def __init__(self, name: str, config: EmbeddingProviderConfig, *, base_dir: Path | None = None) -> None:
        super().__init__(name)
        problems = check_config(config)
        if problems:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in problems))
        self.config = config
        models_dir = Path(config.models_dir)
        self.models_dir = models_dir if models_dir.is_absolute() else (base_dir or Path.cwd()) / models_dir
        self._runners: dict[str, _Runner] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the idle-TTL reaper (models load on demand)."""
        if self.config.idle_ttl is not None and self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle())

    async def close(self) -> None:
        """Unload every model."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for model in list(self._runners):
            _drop(self._runners.pop(model))

    def models(self) -> list[str]:
        """The embedding model folders in ``models_dir``."""
        return store.list_models(self.models_dir, ("embeddings",))

    def info(self) -> list[ProviderInfo]:
        """Every model with its state (loaded or available) and size."""
        out = []
        for name in self.models():
            runner = self._runners.get(name)
            details: dict[str, Any] = {"kind": "embedding"}
            if runner is not None:
                spec = runner.model.spec
                details.update(dimensions=spec.dimensions, max_input_tokens=spec.max_input_tokens)
                details.update(matryoshka=bool(spec.matryoshka_dimensions), batches=runner.batches)
            out.append(ProviderInfo(name, "loaded" if runner else "available", details))
        return out

    async def load(self, model: str) -> _Runner:
        """Load the model (in a thread) unless it is loaded; return its runner."""
        runner = self._runners.get(model)
        if runner is not None:
            return runner
        path = self._model_dir(model)
        async with self._locks.setdefault(model, asyncio.Lock()):
            runner = self._runners.get(model)
            if runner is None:
                from minigate.providers.onnx.embed_model import EmbeddingModel

                executor = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{model}")
                loop = asyncio.get_running_loop()
                try:
                    loaded = await loop.run_in_executor(executor, _load, EmbeddingModel, path, self.config.cpu_threads)
                except (OSError, ValueError, RuntimeError) as exc:
                    executor.shutdown(wait=False)
                    raise ProviderError(f"embedding model {model} does not load: {exc}", status=500) from exc
                runner = _Runner(loaded, executor, self.config.max_batch_size, self.config.queue_size)
                self._runners[model] = runner
            return runner

    async def unload(self, model: str, limit: float = 600.0) -> bool:
        """Drop the model once the requests it has (running or waiting) are done, at most ``limit`` seconds;
        False if it was not loaded."""
        runner = self._runners.pop(model, None)
        if runner is None:
            return False
        while (runner.pending or (runner.task is not None and not runner.task.done())) and limit > 0:
            await asyncio.sleep(0.02)
            limit -= 0.02
        _drop(runner)
        return True

    async def reload(self, model: str) -> _Runner:
        """Load the model again from its folder (after the requests it has are done)."""
        self._model_dir(model)
        await self.unload(model)
        return await self.load(model)

    async def remove(self, model: str) -> None:
        """Unload the model (its requests finish first) and delete its folder."""
        self._model_dir(model)  # 404 for a name that is no embedding model here (bad names and symlinks included)
        await self.unload(model)
        try:
            store.remove_model(self.models_dir, model)
        except store.ModelStoreError as exc:
            raise ProviderError(str(exc), status=400, type="invalid_request_error", fallback=False) from exc

    async def pull(self, model: str | None = None, *, force: bool = False, on_progress: Any = None, **_: Any) -> Path:
        """Make a catalog embedding model (default all-MiniLM-L6-v2) in a child process, as ``models pull`` does."""
        from minigate.providers.onnx.embed_pull import DEFAULT_EMBEDDING_MODEL, EMBEDDING_CATALOG
        from minigate.providers.onnx.store_child import run_store_cli

        source = model or DEFAULT_EMBEDDING_MODEL
        if source not in EMBEDDING_CATALOG:
            raise ProviderError(
                f"{self.name} serves embedding models; pull knows: {', '.join(EMBEDDING_CATALOG)}",
                status=400,
                code="unknown_model",
                fallback=False,
            )
        return await run_store_cli(self.models_dir, ["pull", *(["--force"] if force else []), source], on_progress)

    async def import_model(self, source: str, model: str, **_: Any) -> Path:
        """Embedding models come from the catalog (``pull``), not from a folder on disk."""
        raise ProviderError(
            f"{self.name} cannot import models: pull an embedding model from the catalog instead",
            status=400,
            code="not_importable",
            fallback=False,
        )

    # ------------------------------------------------------------ requests
    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        """Embed the request's inputs; refusals are OpenAI-shaped 400s."""
        if request.endpoint != "embeddings":
            raise ProviderError(
                f"{request.endpoint} is not served by embedding models",
                status=404,
                code="unsupported_endpoint",
                cooldown=False,
            )
        job = parse_embedding_request(request.body)
        runner = await self.load(request.model)
        model = runner.model
        cut = check_dimensions(job, request.model, model.spec.dimensions, model.spec.matryoshka_dimensions)
        if job.texts is not None:
            sequences = await asyncio.to_thread(model.tokenize, job.texts)
        else:
            sequences = [
                model.wrap(_check_tokens(tokens, i, model.vocab_size)) for i, tokens in enumerate(job.tokens or [])
            ]
        limit = model.spec.max_input_tokens
        for i, seq in enumerate(sequences):
            if len(seq) > limit:
                raise ProviderError(
                    f"input[{i}] has {len(seq)} tokens; {request.model} takes at most {limit} "
                    "(context_length_exceeded): shorten it or split it",
                    status=400,
                    type="invalid_request_error",
                    code="context_length_exceeded",
                    param="input",
                    cooldown=False,
                )
        try:
            vectors = await asyncio.wait_for(runner.embed(sequences), max(request.remaining(), 0.001))
        except TimeoutError as exc:
            raise ProviderError("timed out waiting for the local embedding model", status=504, code="timeout") from exc
        if cut is not None:
            from minigate.providers.onnx.embed_model import shorten

            vectors = shorten(vectors, cut)
        return response_body(request.model, vectors, job.encoding_format, sum(len(s) for s in sequences))

    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        """Embeddings are never streamed."""
        raise ProviderError(
            "embeddings are not streamed", status=400, type="invalid_request_error", param="stream", fallback=False
        )

    def _model_dir(self, model: str) -> Path:
        return store.needed_model_dir(self.models_dir, model, SPEC_FILE, "embedding model")

    async def _reap_idle(self) -> None:
        ttl = float(self.config.idle_ttl or 0)
        while True:
            await asyncio.sleep(min(30.0, max(0.05, ttl / 4)))
            now = time.monotonic()
            for model, runner in list(self._runners.items()):
                busy = runner.pending or (runner.task is not None and not runner.task.done())
                if not busy and now - runner.last_used > ttl:
                    _drop(self._runners.pop(model))


def _load(cls: type[EmbeddingModel], path: Path, threads: int | None) -> EmbeddingModel:
    return cls(path, threads=threads)


def _check_tokens(tokens: list[int], index: int, vocab_size: int) -> list[int]:
    bad = next((t for t in tokens if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ProviderError(
            f"input[{index}] holds token {bad}, outside this model's vocabulary (0..{vocab_size - 1})",
            status=400,
            type="invalid_request_error",
            code="invalid_value",
            param="input",
            fallback=False,
        )
    return tokens


def _drop(runner: _Runner) -> None:
    """Stop a runner; its memory goes back to the system."""
    runner.close()
    _trim_memory()


def _trim_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def register(registry: ProviderRegistry) -> None:
    """Register the ``onnx-embeddings`` provider type with a ProviderRegistry."""

    def factory(name: str, config: EmbeddingProviderConfig, context: ProviderContext) -> Provider:
        if config.cpu_threads is None and context.cpu_threads:
            config = msgspec.structs.replace(config, cpu_threads=context.cpu_threads)
        return OnnxEmbeddingsProvider(name, config, base_dir=context.base_dir)

    registry.register(
        ProviderType(
            "onnx-embeddings", EmbeddingProviderConfig, factory, check_config, local=always_local, vision=False
        )
    )
