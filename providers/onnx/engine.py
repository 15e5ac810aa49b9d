"""The worker process of one model: ``python -m providers.onnx.engine MODEL_DIR OPTIONS_JSON``.

onnxruntime-genai holds the GIL during its calls, so it never runs in the gateway's process: each loaded model
gets a process of its own running this module, which reads requests from stdin and streams tokens back on
stdout (see :mod:`providers.onnx.protocol`), single-threaded.

Scheduling: requests with the same search options (temperature, top_p, seed, guidance...) are batched
statically, up to ``max_batch_size`` sequences in all. A batch (a "group": one ``og.Generator``) cannot take
new sequences once started, so requests arriving while one runs form a second group, and up to ``max_groups``
groups advance in turn, one step each: a late request waits for a prefill, not for a whole batch to finish.
Each request's ``max_length`` is its prompt plus its ``max_tokens`` (the KV cache is sized by it), and a group
is sized by its longest member.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from providers.onnx.protocol import FrameReader, encode_frame, write_all

__all__ = ["Worker", "main"]

_SEARCH_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "random_seed")


@dataclass(slots=True)
class Sequence:
    """One request being generated."""

    id: int
    ids: list[int]
    max_new: int
    key: str
    search: dict[str, Any]
    guidance: tuple[str, str] | None
    stream: Any = None
    generated: int = 0
    done: bool = False
    tokens: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Group:
    """A static batch: one generator and the sequences it runs."""

    generator: Any
    seqs: list[Sequence]
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Loads one model and serves generation requests from a pipe until told to stop or the pipe closes."""

    def __init__(self, model_dir: str, options: dict[str, Any]) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.max_batch = max(1, int(options.get("max_batch_size", 8)))
        self.max_groups = max(1, int(options.get("max_groups", 2)))
        self.queue_size = max(0, int(options.get("queue_size", 64)))
        self.batch_window = float(options.get("batch_window", 0.0))
        self.merge_tokens = int(options.get("merge_tokens", 16))
        self.grow_tokens = max(1, int(options.get("grow_tokens", 256)))
        started = time.monotonic()
        config = og.Config(model_dir)
        _configure_provider(og, config, options)
        if options.get("cpu_threads"):
            threads = int(options["cpu_threads"])
            overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
            config.overlay(json.dumps(overlay))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self.eos = {int(t) for t in self.tokenizer.eos_token_ids}
        self.pad = int(self.tokenizer.pad_token_id)
        with open(os.path.join(model_dir, "genai_config.json"), encoding="utf-8") as fh:
            genai = json.load(fh)
        self.defaults = genai.get("search", {})
        model_ctx = int(genai["model"].get("context_length") or 2048)
        self.context = min(model_ctx, int(options.get("max_context") or model_ctx))
        self.load_seconds = time.monotonic() - started
        self.pending: list[Sequence] = []
        self.groups: list[Group] = []
        self.reader = FrameReader()
        self.out_fd = 1
        self.in_fd = 0
        self.running = True
        self.stats = {
            "requests": 0,
            "generated": 0,
            "cancelled": 0,
            "batches": 0,
            "max_batch_seen": 0,
            "merges": 0,
            "regrows": 0,
        }
        self.out: list[list[Any]] = []

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
                }
            )
        elif op == "shutdown":
            self.running = False

    def admit(self, message: dict[str, Any]) -> None:
        """Tokenize a request, check its length and queue it (or answer with an error)."""
        rid = int(message["id"])
        try:
            if message.get("messages") is not None:
                text = self.tokenizer.apply_chat_template(json.dumps(message["messages"]), add_generation_prompt=True)
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
        max_tokens = message.get("max_tokens")
        room = self.context - len(ids)
        if room <= 0 or (max_tokens is not None and int(max_tokens) > room):
            wanted = len(ids) + (int(max_tokens) if max_tokens is not None else 1)
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "status": 400,
                    "code": "context_length_exceeded",
                    "fallback": True,
                    "message": f"This model's maximum context length is {self.context} tokens. However, you "
                    f"requested {wanted} tokens ({len(ids)} in the messages, "
                    f"{wanted - len(ids)} in the completion).",
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
        search = {k: message["search"][k] for k in _SEARCH_KEYS if message.get("search", {}).get(k) is not None}
        guidance = (str(message["guidance"][0]), str(message["guidance"][1])) if message.get("guidance") else None
        if guidance is not None and (problem := self.check_guidance(guidance, len(ids))):
            self.send(
                {
                    "ev": "error",
                    "id": rid,
                    "status": 400,
                    "code": "invalid_response_format",
                    "fallback": False,
                    "message": f"response_format cannot be used: {problem}",
                }
            )
            return
        key = json.dumps([sorted(search.items()), guidance])
        limit = int(max_tokens) if max_tokens is not None else room
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

    def fail(self, seqs: list[Sequence], exc: BaseException) -> None:
        """Report an engine failure to the sequences it hit (the worker itself goes on)."""
        for seq in seqs:
            if not seq.done:
                seq.done = True
                self.out.append([seq.id, f"{type(exc).__name__}: {exc}", 0, "error"])

    def cancel(self, rid: int) -> None:
        """Stop a sequence, queued or running; its group ends once all of its sequences are done."""
        for seq in self.pending:
            if seq.id == rid:
                self.pending.remove(seq)
                self.stats["cancelled"] += 1
                return
        for group in self.groups:
            for seq in group.seqs:
                if seq.id == rid and not seq.done:
                    seq.done = True
                    self.stats["cancelled"] += 1
                    self.out.append([rid, "", 0, "cancelled"])

    # ---------------------------------------------------------------- generation
    def start_group(self) -> None:
        """Start a batch from the oldest pending request and the pending ones with the same options.

        A running batch of the same options that is still young (no sequence past ``merge_tokens``) is
        merged into the new one instead of running beside it: its sequences are prefilled again with what
        they generated so far appended to their prompts, and go on in the bigger batch. Requests sent
        together thus share one batch without a batching delay; guided batches are never merged (their
        grammar state would be lost). ``append_tokens`` runs the prefill; the first token comes from the
        group's first ``step``.
        """
        if not self.pending:
            return
        key = self.pending[0].key
        free = self.max_batch - sum(1 for g in self.groups for s in g.seqs if not s.done)
        if free <= 0:
            return
        young = None
        for group in self.groups:
            alive = [s for s in group.seqs if not s.done]
            if (
                group.seqs[0].key == key
                and group.seqs[0].guidance is None
                and max((s.generated for s in alive), default=0) <= self.merge_tokens
            ):
                young = group
                break
        if young is None and len(self.groups) >= self.max_groups:
            return
        merged = [s for s in young.seqs if not s.done] if young else []
        fresh = [s for s in self.pending if s.key == key][:free]
        seqs = merged + fresh
        generator, failure = None, None
        try:
            generator = self._generator(seqs)
        except Exception as exc:  # nothing changed yet: fail these sequences, the worker goes on
            failure = exc
        if young is not None:
            self.groups.remove(young)
            self.stats["merges"] += 1
        for seq in fresh:
            self.pending.remove(seq)
            if seq.stream is None:
                seq.stream = self.tokenizer.create_stream()
        if failure is not None:
            self.fail(seqs, failure)
            return
        self.groups.append(Group(generator, seqs))
        self.stats["batches"] += 1
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(seqs))

    def _generator(self, seqs: list[Sequence]) -> Any:
        """A generator prefilled with the sequences' prompts (and what they generated so far), right-padded."""
        import numpy as np

        og = self.og
        width = max(len(s.ids) + len(s.tokens) for s in seqs)
        params = og.GeneratorParams(self.model)
        search = dict(seqs[0].search)
        search.setdefault("do_sample", bool(self.defaults.get("do_sample", False)))
        # The KV cache is sized by max_length: grow it in steps (at least ``grow_tokens``, then doubling)
        # rather than for the whole budget at once, which costs memory and first-token time.
        longest = max(self._cap(s) for s in seqs)
        params.set_search_options(max_length=width + longest, batch_size=len(seqs), **search)
        if seqs[0].guidance:
            params.set_guidance(*seqs[0].guidance)
        generator = og.Generator(self.model, params)
        batch = np.full((len(seqs), width), self.pad, dtype=np.int32)
        for row, seq in enumerate(seqs):
            prefix = seq.ids + seq.tokens
            batch[row, : len(prefix)] = prefix
        generator.append_tokens(batch)
        return generator

    def _cap(self, seq: Sequence) -> int:
        remaining = seq.max_new - seq.generated
        if seq.guidance is not None:  # a grammar's state would not survive the move to a longer batch
            return remaining
        return min(remaining, max(self.grow_tokens, seq.generated))

    def step(self, group: Group) -> None:
        """Advance a group by one token and collect it."""
        group.generator.generate_next_token()
        self.collect(group)

    def collect(self, group: Group) -> None:
        """Turn the group's newest tokens into output items; retire the group when every sequence is done.

        A group that reached its ``max_length`` while some sequences still have tokens to go (the KV cache
        is sized in steps, see :meth:`start_group`) hands them back to the front of the queue, to go on in a
        new, longer batch.
        """
        tokens = group.generator.get_next_tokens()
        for seq, token in zip(group.seqs, tokens, strict=False):
            if seq.done:
                continue
            token = int(token)
            seq.tokens.append(token)
            seq.generated += 1
            self.stats["generated"] += 1
            finish = None
            if token in self.eos:
                text, finish = "", "stop"
            else:
                text = seq.stream.decode(token)
                if seq.generated >= seq.max_new:
                    finish = "length"
            if finish:
                seq.done = True
            self.out.append([seq.id, text, 1, finish])
        alive = [s for s in group.seqs if not s.done]
        if not alive:
            self.groups.remove(group)
        elif group.generator.is_done():
            self.groups.remove(group)
            self.pending[0:0] = alive
            self.stats["regrows"] += 1

    def flush(self) -> None:
        """Send the items collected in this round as one frame."""
        if self.out:
            self.send({"ev": "tokens", "items": self.out})
            self.out = []

    def run(self) -> None:
        """The loop: read input, start batches, step every group once, send tokens; until shutdown or EOF."""
        self.send(
            {"ev": "ready", "pid": os.getpid(), "context_length": self.context, "load_seconds": self.load_seconds}
        )
        while self.running:
            idle = not self.groups and not self.pending
            self.poll(None if idle else 0)
            if idle and self.pending and self.batch_window > 0:
                # Requests sent together arrive a few hundred microseconds apart: give them one batch.
                deadline = time.monotonic() + self.batch_window
                while self.running and len(self.pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self.poll(left)
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


def _configure_provider(og: Any, config: Any, options: dict[str, Any]) -> None:
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
