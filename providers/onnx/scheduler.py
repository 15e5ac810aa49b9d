"""Batching in a worker process: sequences, static batches ("groups") and the order they advance in.

onnxruntime-genai on CPU cannot add a sequence to a running batch: newcomers get a batch of their own, or join a
running one when :class:`Costs` (measured here) says it pays (docs/architecture.md, "Local models"). A batch of
one keeps its generator in the :class:`~minigate.providers.onnx.prefix_cache.PrefixCache` when it ends, and a
request that continues a cached sequence runs on that generator, alone, prefilling only its new tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from minigate.providers.onnx.prefix_cache import Entry, PrefixCache

__all__ = ["Costs", "Group", "Scheduler", "Sequence"]

# How far ahead a merge's savings are counted: sequences often stop (EOS) long before max_tokens.
_HORIZON = 256


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
    arrived: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Group:
    """A static batch: one generator and the sequences it runs."""

    generator: Any
    seqs: list[Sequence]
    started: float = field(default_factory=time.monotonic)
    # A batch of one that may go to the prefix cache: its KV cache size and how many tokens a prefill computed.
    max_length: int = 0
    exact: int = 0
    reused: int = 0  # tokens it took from the prefix cache: a merge would prefill them all again


@dataclass(slots=True)
class Costs:
    """Running estimates, in seconds, of what the engine's operations take on this machine.

    Prefill is compute-bound on CPU (about as dear per token as a decode step of one sequence), so merging
    batches is only worth it when they still have many steps to go; on a GPU prefill is far cheaper.
    """

    prefill_per_token: float = 0.002
    steps: dict[int, float] = field(default_factory=dict)  # batch size -> step seconds
    weight: float = 0.2

    def prefilled(self, tokens: int, seconds: float) -> None:
        """Record a prefill of ``tokens`` (padding included: it is computed too)."""
        if tokens > 0:
            self.prefill_per_token += self.weight * (seconds / tokens - self.prefill_per_token)

    def stepped(self, size: int, seconds: float) -> None:
        """Record one decode step of a batch of ``size`` sequences."""
        old = self.steps.get(size)
        self.steps[size] = seconds if old is None else old + self.weight * (seconds - old)

    def overhead(self) -> float:
        """What one round costs a batch whatever its size: the saving per round of running one batch, not two.

        The intercept of a straight line through the step times by batch size; until two sizes have run,
        the cost of prefilling five tokens (about what it measures on a 2-core CPU).
        """
        if len(self.steps) < 2:
            return 5 * self.prefill_per_token
        n = len(self.steps)
        mx = sum(self.steps) / n
        my = sum(self.steps.values()) / n
        var = sum((x - mx) ** 2 for x in self.steps)
        slope = sum((x - mx) * (y - my) for x, y in self.steps.items()) / var
        return max(0.0, my - slope * mx)


class Scheduler:
    """The batching state and steps of a worker; the worker adds the model, tokenizer and pipe."""

    model: Any
    tokenizer: Any
    pad: int
    eos: set[int]
    defaults: dict[str, Any]

    def __init__(self, og: Any, options: dict[str, Any]) -> None:
        self.og = og
        self.max_batch = max(1, int(options.get("max_batch_size", 8)))
        self.max_groups = max(1, int(options.get("max_groups", 4)))
        self.merge_tokens = int(options.get("merge_tokens", 64))
        self.ttft_target = float(options.get("ttft_target", 0.5))
        self.costs = Costs()
        self.grow_tokens = max(1, int(options.get("grow_tokens", 256)))
        self.pending: list[Sequence] = []
        self.cache: PrefixCache | None = None  # the worker sets it up once the model is loaded
        self.groups: list[Group] = []
        self.out: list[list[Any]] = []
        self.stats = {
            "requests": 0,
            "generated": 0,
            "cancelled": 0,
            "batches": 0,
            "max_batch_seen": 0,
            "merges": 0,
            "regrows": 0,
            "prefilled_tokens": 0,  # prompt (and merged or regrown history) tokens prefilled, padding not counted
        }

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

        The newcomers get a batch of their own, or take a running one along when :meth:`_merge_target`
        says a merge pays (see the module docstring). ``append_tokens`` runs the prefill; the first token
        comes from the group's first ``step``.
        """
        if not self.pending:
            return
        key = self.pending[0].key
        free = self.max_batch - sum(1 for g in self.groups for s in g.seqs if not s.done)
        if free <= 0:
            return
        if self.cache is not None and self._start_cached():
            return
        fresh = [s for s in self.pending if s.key == key][:free]
        target = self._merge_target(key, fresh)
        if target is None and self._batches() >= self.max_groups:
            return
        merged = [s for s in target.seqs if not s.done] if target else []
        seqs = merged + fresh
        generator, failure, length = None, None, 0
        try:
            generator, length = self._generator(seqs)
        except Exception as exc:  # nothing changed yet: fail these sequences, the worker goes on
            failure = exc
        if target is not None:
            self.groups.remove(target)
            self.stats["merges"] += 1
        for seq in fresh:
            self.pending.remove(seq)
            if seq.stream is None:
                seq.stream = self.tokenizer.create_stream()
            if self.cache is not None and _cacheable(seq) and not seq.tokens:  # it looked and found nothing
                self.cache.missed()
        if failure is not None:
            self.fail(seqs, failure)
            return
        single = length if len(seqs) == 1 and _cacheable(seqs[0]) else 0
        self.groups.append(Group(generator, seqs, max_length=single, exact=len(seqs[0].ids) + len(seqs[0].tokens)))
        self.stats["batches"] += 1
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(seqs))

    def _merge_target(self, key: str, fresh: list[Sequence]) -> Group | None:
        """The running batch the newcomers should take along into their prefill, or None for a batch of their own.

        A candidate runs with the same options, unguided, and no sequence of it is past ``merge_tokens``.
        With a free batch slot, the cheapest candidate is taken if the merge saves at least twice its cost
        (a step per round, for as many rounds as both would run) and the newcomers, counting what they have
        waited already, still see their first token within ``ttft_target``; with every slot taken, the
        cheapest candidate is taken anyway, since the alternative is waiting for a batch to finish (but not one
        continuing a cached sequence: it takes no slot).
        """
        best, best_cost = None, 0
        forced = self._batches() >= self.max_groups
        for group in self.groups:
            alive = [s for s in group.seqs if not s.done]
            if group.seqs[0].key != key or group.seqs[0].guidance is not None or not alive:
                continue
            if forced and group.reused:  # never forced into prefilling a cached conversation again
                continue
            if max(s.generated for s in alive) > self.merge_tokens:
                continue
            cost = sum(len(s.ids) + len(s.tokens) for s in alive)
            if best is None or cost < best_cost:
                best, best_cost = group, cost
        if best is None or forced:
            return best
        per_token = self.costs.prefill_per_token
        delay = best_cost * per_token
        waited = time.monotonic() - min(s.arrived for s in fresh)
        first_token = waited + delay + sum(len(s.ids) for s in fresh) * per_token
        alive = [s for s in best.seqs if not s.done]
        rounds = min(_HORIZON, max(s.max_new - s.generated for s in alive), max(s.max_new - s.generated for s in fresh))
        if first_token <= self.ttft_target and rounds * self.costs.overhead() >= 2 * delay:
            return best
        return None

    def _batches(self) -> int:
        """Running groups that count against ``max_groups``: all but those continuing a cached sequence."""
        return sum(1 for g in self.groups if not g.reused)

    def _start_cached(self) -> bool:
        """Start the oldest pending request that continues a cached sequence on its generator; False if none does.

        It runs alone (a generator's batch size is fixed): only its new tokens are prefilled, which saves more
        than a batch would. It counts against ``max_batch_size`` but not ``max_groups``.
        """
        assert self.cache is not None
        for seq in self.pending:
            if not _cacheable(seq) or seq.tokens:
                continue
            hit = self.cache.take(seq.key, seq.ids, len(seq.ids) + self._cap(seq))
            if hit is None:
                continue
            entry, keep = hit
            self.pending.remove(seq)
            seq.stream = self.tokenizer.create_stream()
            try:
                import numpy as np

                started = time.perf_counter()
                entry.generator.rewind_to(keep)
                entry.generator.append_tokens(np.array(seq.ids[keep:], dtype=np.int32))
                self.costs.prefilled(len(seq.ids) - keep, time.perf_counter() - started)
                self.stats["prefilled_tokens"] += len(seq.ids) - keep
            except Exception as exc:
                self.fail([seq], exc)
                return True
            group = Group(entry.generator, [seq], max_length=entry.max_length, exact=len(seq.ids), reused=keep)
            self.groups.append(group)
            self.stats["batches"] += 1
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], 1)
            return True
        return False

    def _generator(self, seqs: list[Sequence]) -> tuple[Any, int]:
        """A generator prefilled with the sequences' prompts (and what they generated so far), right-padded;
        and its ``max_length``."""
        import numpy as np

        og = self.og
        width = max(len(s.ids) + len(s.tokens) for s in seqs)
        params = og.GeneratorParams(self.model)
        search = dict(seqs[0].search)
        search.setdefault("do_sample", bool(self.defaults.get("do_sample", False)))
        # The KV cache is sized by max_length: grow it in steps (at least ``grow_tokens``, then doubling)
        # rather than for the whole budget at once, which costs memory and first-token time.
        longest = max(self._cap(s) for s in seqs)
        length = width + longest
        if self.cache is not None and len(seqs) == 1 and _cacheable(seqs[0]):
            # A batch of one may be cached when it ends: room for a next turn, if the budget could hold it.
            roomy = self.cache.max_length(length)
            length = roomy if self.cache.fits(roomy) else length
        params.set_search_options(max_length=length, batch_size=len(seqs), **search)
        if seqs[0].guidance:
            params.set_guidance(*seqs[0].guidance)
        generator = og.Generator(self.model, params)
        batch = np.full((len(seqs), width), self.pad, dtype=np.int32)
        for row, seq in enumerate(seqs):
            prefix = seq.ids + seq.tokens
            batch[row, : len(prefix)] = prefix
        started = time.perf_counter()
        generator.append_tokens(batch)
        self.costs.prefilled(batch.size, time.perf_counter() - started)
        self.stats["prefilled_tokens"] += sum(len(s.ids) + len(s.tokens) for s in seqs)
        return generator, length

    def _cap(self, seq: Sequence) -> int:
        remaining = seq.max_new - seq.generated
        if seq.guidance is not None:  # a grammar's state would not survive the move to a longer batch
            return remaining
        return min(remaining, max(self.grow_tokens, seq.generated))

    def step(self, group: Group) -> None:
        """Advance a group by one token and collect it."""
        started = time.perf_counter()
        group.generator.generate_next_token()
        self.costs.stepped(len(group.seqs), time.perf_counter() - started)
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
            if self.cache is not None and group.max_length:
                seq = group.seqs[0]
                tokens = seq.ids + seq.tokens
                # The generator holds keys and values for all but the last token; by default only those a prefill
                # computed are offered (see prefix_cache's module docstring).
                exact = len(tokens) - 1 if self.cache.reuse_generated else group.exact
                self.cache.put(Entry(group.generator, seq.key, tokens, exact, group.max_length))
        elif group.generator.is_done():
            self.groups.remove(group)
            self.pending[0:0] = alive
            self.stats["regrows"] += 1


def _cacheable(seq: Sequence) -> bool:
    """Whether a sequence may use or leave a cached generator: not guided (a grammar's state is not kept) and
    without a seed (a cached generator's random state has moved on, a seeded answer would change)."""
    return seq.guidance is None and seq.search.get("random_seed") is None
