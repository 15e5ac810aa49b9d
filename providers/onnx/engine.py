"""The worker process of one model: ``python -m minigate.providers.onnx.engine MODEL_DIR OPTIONS_JSON``.

onnxruntime-genai holds the GIL during its calls, so it never runs in the gateway's process: each loaded model
gets a process of its own running this module, which reads requests from stdin and streams tokens back on
stdout (see :mod:`minigate.providers.onnx.protocol`), single-threaded.

Batching and scheduling are in :mod:`minigate.providers.onnx.scheduler`.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Any

from minigate.providers.onnx.config import parse_budget
from minigate.providers.onnx.device_choice import configure_engine
from minigate.providers.onnx.gguf import GENERATION_KEYS, GGUF_SAMPLING
from minigate.providers.onnx.prefix_cache import SETTLE_DELAY, PrefixCache, kv_bytes_per_token
from minigate.providers.onnx.prompt import PromptBuilder
from minigate.providers.onnx.protocol import FrameReader, encode_frame, write_all
from minigate.providers.onnx.scheduler import Scheduler, Sequence

__all__ = ["Worker", "main"]

_SEARCH_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "random_seed")
# A prompt fits when it leaves this much room for the answer (or what the request asked for, if less): a
# larger max_tokens is clamped to the room left rather than refused.
MIN_ROOM = 16


class Worker(Scheduler):
    """Loads one model and serves generation requests from a pipe until told to stop or the pipe closes."""

    def __init__(self, model_dir: str, options: dict[str, Any]) -> None:
        import onnxruntime_genai as og

        super().__init__(og, options)
        self.queue_size = max(0, int(options.get("queue_size", 64)))
        started = time.monotonic()
        config = og.Config(model_dir)
        _configure_provider(og, config, options)
        if options.get("cpu_threads"):
            threads = int(options["cpu_threads"])
            overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
            config.overlay(json.dumps(overlay))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self.prompts = PromptBuilder(self.tokenizer)
        self.eos = {int(t) for t in self.tokenizer.eos_token_ids}
        self.pad = int(self.tokenizer.pad_token_id)
        with open(os.path.join(model_dir, "genai_config.json"), encoding="utf-8") as fh:
            genai = json.load(fh)
        self.defaults = genai.get("search", {})
        # The model's own defaults for what a request leaves unset; its answer cap, else the provider's.
        sampling = generation_defaults(model_dir)
        self.max_new = int(sampling.pop("max_new_tokens", None) or options.get("default_max_tokens") or 1024)
        self.sampling = sampling
        model_ctx = int(genai["model"].get("context_length") or 2048)
        self.context = min(model_ctx, int(options.get("max_context") or model_ctx))
        budget = parse_budget(options.get("prefix_cache"))
        if budget > 0:
            present = str(genai["model"]["decoder"].get("outputs", {}).get("present_key_names", "present.%d.key"))
            itemsize = _kv_itemsize(og, self.model, present.replace("%d", "0"))
            self.cache = PrefixCache(budget, kv_bytes_per_token(model_dir, itemsize), self.context)
            self.cache.reuse_generated = options.get("prefix_reuse") == "generated"
        self.settle_delay = float(options.get("settle_delay", SETTLE_DELAY))  # (for benchmarks: 0 settles at once)
        self.load_seconds = time.monotonic() - started
        self.reader = FrameReader()
        self.out_fd = 1
        self.in_fd = 0
        self.running = True

    # ---------------------------------------------------------------- input
    def send(self, message: dict[str, Any]) -> None:
        """Write one message to the gateway."""
        write_all(self.out_fd, encode_frame(message))

    def poll(self, timeout: float | None) -> None:
        """Read and handle whatever input is there, waiting up to ``timeout`` (None: until some arrives)."""
        ready, _, _ = select.select([self.in_fd], [], [], timeout)
        while ready:
            data = os.read(self.in_fd, 1 << 16)
            if not data:
                self.running = False
                return
            for message in self.reader.feed(data):
                self.handle(message)
            ready, _, _ = select.select([self.in_fd], [], [], 0)

    def handle(self, message: dict[str, Any]) -> None:
        """Act on one message from the gateway."""
        op = message.get("op")
        if op == "gen":
            self.admit(message)
        elif op == "cancel":
            self.cancel(int(message["id"]))
        elif op == "stats":
            active = sum(1 for g in self.groups for s in g.seqs if not s.done)
            self.send(
                {
                    "ev": "stats",
                    "id": message.get("id"),
                    "active": active,
                    "queued": len(self.pending),
                    "groups": len(self.groups),
                    "context_length": self.context,
                    **self.stats,
                    **(self.cache.snapshot() if self.cache is not None else {}),
                }
            )
        elif op == "shutdown":
            self.running = False

    def admit(self, message: dict[str, Any]) -> None:
        """Tokenize a request, check its length and queue it (or answer with an error)."""
        rid = int(message["id"])
        try:
            if message.get("messages") is not None:
                text = self.prompts.render(message["messages"], message.get("tools"))
            else:
                text = str(message.get("prompt") or "")
            ids = [int(t) for t in self.tokenizer.encode(text)]
        except Exception as exc:
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "status": 400,
                    "code": "invalid_prompt",
                    "fallback": False,
                    "message": f"could not build the prompt: {exc}",
                }
            )
            return
        asked = message.get("max_tokens")
        room = self.context - len(ids)
        if room <= 0 or (asked is not None and int(asked) > room and room < MIN_ROOM):
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "status": 400,
                    "code": "context_length_exceeded",
                    "fallback": True,
                    "message": f"This model's maximum context length is {self.context} tokens, and the messages "
                    f"take {len(ids)} of them, leaving {max(room, 0)} for the answer; at least "
                    f"{min(MIN_ROOM, int(asked or 1))} must be left.",
                }
            )
            return
        if len(self.pending) >= self.queue_size + self.max_batch:
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "status": 429,
                    "code": "queue_full",
                    "fallback": True,
                    "message": "the model's queue is full",
                }
            )
            return
        asked_search = message.get("search") or {}
        search = {**self.sampling, **{k: asked_search[k] for k in _SEARCH_KEYS if asked_search.get(k) is not None}}
        given = message.get("guidance") or []
        guidance = (str(given[0]), str(given[1])) if given else None
        if guidance is not None and (problem := self.check_guidance(guidance, len(ids))):
            source = str(given[2]) if len(given) > 2 else "response_format"  # what the grammar was made from
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "status": 400,
                    "code": f"invalid_{source}",
                    "fallback": False,
                    "message": f"{source} cannot be used: {problem}",
                }
            )
            return
        # onnxruntime-genai 0.18 fails a whole batch once one guided sequence's grammar has ended ("compute_mask()
        # called after stop") while others still run: a guided sequence gets a batch of its own.
        key = json.dumps([sorted(search.items()), guidance, rid if guidance else None])
        # No max_tokens: the model's cap (a small model may ramble to the end of its context); a max_tokens past
        # the context is clamped to the room left.
        limit = min(self.max_new if asked is None else int(asked), room)
        seq = Sequence(rid, ids, limit, key, search, guidance)
        self.pending.append(seq)
        self.stats["requests"] += 1
        self.send({"ev": "accepted", "id": rid, "prompt_tokens": len(ids), "max_tokens": seq.max_new})

    def check_guidance(self, guidance: tuple[str, str], prompt_tokens: int) -> str | None:
        """Why the grammar cannot be compiled (it is compiled when a generator is made), or None."""
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=prompt_tokens + 1)
        try:
            params.set_guidance(*guidance)
            self.og.Generator(self.model, params)
        except Exception as exc:
            return str(exc)
        return None

    def flush(self) -> None:
        """Send the items collected in this round as one frame, with the prefix cache's counters when they changed
        (the gateway shows them without asking: ``WorkerClient.cache_stats``)."""
        cache = self.cache if self.cache is not None and self.cache.dirty else None
        if self.out or cache is not None:
            message: dict[str, Any] = {"ev": "tokens", "items": self.out}
            if cache is not None:
                message["cache"] = {**cache.snapshot(), "prefilled_tokens": self.stats["prefilled_tokens"]}
                cache.dirty = False
            self.send(message)
            self.out = []

    def run(self) -> None:
        """The loop: read input, start batches, step every group once, send tokens; until shutdown or EOF."""
        self.send(
            {"ev": "ready", "pid": os.getpid(), "context_length": self.context, "load_seconds": self.load_seconds}
        )
        while self.running:
            idle = not self.groups and not self.pending
            settle = self.cache.unsettled() if idle and self.cache is not None else None
            wait: float | None = None if idle else 0.0
            if settle is not None:  # idle: prefill a cached sequence's answer, a chunk at a time, for its next turn
                assert self.cache is not None
                wait = self.cache.settle_wait(settle, self.settle_delay)
                if wait == 0:  # not right after its answer: a next turn sent back to back would be here by now
                    self.cache.settle(settle)
            self.poll(wait)
            if not self.running:
                break
            if self.pending:
                self.start_group()
            for group in list(self.groups):
                try:
                    self.step(group)
                except Exception as exc:
                    self.groups.remove(group)
                    self.fail(group.seqs, exc)
            self.flush()


def generation_defaults(model_dir: str) -> dict[str, Any]:
    """The sampling defaults and ``max_new_tokens`` of a model folder's ``generation_config.json``.

    A folder without one that minigate made from a GGUF file (before conversions wrote it) gets the defaults
    conversions write now; any other gets none (its genai_config.json search section applies).
    """
    try:
        with open(os.path.join(model_dir, "generation_config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
    except FileNotFoundError:
        config = dict(GGUF_SAMPLING) if _from_gguf(model_dir) else {}
    except (OSError, ValueError):
        config = {}
    if not isinstance(config, dict):
        return {}
    out: dict[str, Any] = {}
    for key in GENERATION_KEYS:
        value = config.get(key)
        if key == "do_sample" and isinstance(value, bool):
            out[key] = value
        elif key in ("top_k", "max_new_tokens") and isinstance(value, int) and not isinstance(value, bool):
            if value > 0:
                out[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out[key] = float(value)
    return out


def _from_gguf(model_dir: str) -> bool:
    try:
        with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as fh:
            source = json.load(fh).get("source") or {}
    except (OSError, ValueError, AttributeError):
        return False
    kind = source.get("kind") if isinstance(source, dict) else None
    return kind in ("pypi-wheel", "gguf-file") or (kind == "hf-hub" and source.get("format") == "gguf")


def _kv_itemsize(og: Any, model: Any, name: str) -> int:
    """Bytes per value of the model's KV cache, from a one-token generator (4, float32, if it cannot say)."""
    try:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=2)
        return int(og.Generator(model, params).get_output(name).dtype.itemsize)
    except Exception:
        return 4


def _configure_provider(og: Any, config: Any, options: dict[str, Any]) -> None:
    if configure_engine(og, config, options):  # a plugin back end: registered, and its device chosen
        return
    provider = options.get("execution_provider", "cpu")
    config.clear_providers()
    if provider == "cpu":
        return
    available = {"cuda": og.is_cuda_available, "dml": og.is_dml_available}
    if provider not in available:
        raise RuntimeError(f"unknown execution provider {provider!r} (cpu, cuda or dml)")
    if not available[provider]():
        raise RuntimeError(
            f"execution provider {provider!r} is not available in this onnxruntime-genai build "
            f"or on this machine (install the onnxruntime-genai-{provider} package and drivers)"
        )
    config.append_provider(provider)
    if provider == "cuda" and options.get("gpu_memory_bytes"):
        config.set_provider_option("cuda", "gpu_mem_limit", str(int(options["gpu_memory_bytes"])))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    args = sys.argv[1:] if argv is None else argv
    # Keep the protocol's stdout to ourselves: native code printing to fd 1 would corrupt the frames.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        worker = Worker(args[0], json.loads(args[1]) if len(args) > 1 else {})
    except Exception as exc:
        write_all(out_fd, encode_frame({"ev": "fatal", "message": f"{type(exc).__name__}: {exc}"}))
        return 3
    worker.out_fd = out_fd
    try:
        worker.run()
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
