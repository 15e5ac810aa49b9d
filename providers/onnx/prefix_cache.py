"""The prefix cache of a worker process: idle single-sequence generators kept with their KV cache, within a budget.

A new request takes the entry whose tokens share the longest prefix with its prompt, rewinds it there and
prefills only the rest. Reuse never changes an answer: onnxruntime-genai computes a token's keys and values
bitwise alike in a prefill of any two or more tokens, whatever came before in other prefills, but not in a
one-token decode step. So an entry reuses only what a prefill computed (``exact``), and the tokens it
generated are prefilled again ("settled") while the worker is idle, or as part of the next request's prefill.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "PrefixCache", "kv_bytes_per_token"]

# Reusing fewer tokens than this is not worth leaving a batch for.
MIN_REUSE = 16
# Tokens prefilled per settle step while idle: a request that arrives meanwhile waits at most this much.
SETTLE_CHUNK = 64
# Seconds an entry waits after its answer before it is settled: a next turn sent back to back (an agent) arrives
# within this and prefills the answer with its own new tokens, in one call rather than two (each call of the
# engine costs about as much as eight tokens, measured here).
SETTLE_DELAY = 0.05
# A cached sequence's KV cache is sized with at least this much room past its request, for next turns.
HEADROOM = 512
_ROUND = 256


def kv_bytes_per_token(model_dir: str, itemsize: int = 4) -> int:
    """Bytes of keys and values one token takes: layers x KV heads x head size x 2 x ``itemsize``."""
    with open(os.path.join(model_dir, "genai_config.json"), encoding="utf-8") as fh:
        decoder = json.load(fh)["model"]["decoder"]
    heads = int(decoder.get("num_key_value_heads") or decoder["num_attention_heads"])
    head_size = int(decoder.get("head_size") or int(decoder["hidden_size"]) // int(decoder["num_attention_heads"]))
    return int(decoder["num_hidden_layers"]) * heads * head_size * 2 * itemsize


@dataclass(slots=True)
class Entry:
    """An idle generator of one sequence: ``tokens`` as it holds them, of which the first ``exact`` were
    computed by a prefill; its KV cache has room for ``max_length`` tokens."""

    generator: Any
    key: str
    tokens: list[int]
    exact: int
    max_length: int
    nbytes: int = 0
    used: float = field(default_factory=time.monotonic)


class PrefixCache:
    """Idle generators by least recent use, within ``budget`` bytes of (estimated) KV cache."""

    def __init__(self, budget: int, bytes_per_token: int, context: int) -> None:
        self.budget = budget
        self.bytes_per_token = bytes_per_token
        self.context = context
        self.entries: list[Entry] = []
        self.stats = {
            "prefix_hits": 0,
            "prefix_misses": 0,
            "prefix_reused_tokens": 0,
            "prefix_settled_tokens": 0,
            "prefix_evictions": 0,
        }
        self.dirty = False  # the counters or entries changed since the worker last sent them
        # Opt-in (``prefix_reuse: "generated"``): an entry offers its decode steps' keys and values too, which are
        # not bitwise those of a prefill: faster back to back, but answers may change.
        self.reuse_generated = False

    def missed(self) -> None:
        """Count a request that found nothing to reuse (once per request, when it starts)."""
        self.stats["prefix_misses"] += 1
        self.dirty = True

    def snapshot(self) -> dict[str, int]:
        """The counters, with the entries held and their bytes, for the worker's stats."""
        return {
            **self.stats,
            "prefix_lookups": self.stats["prefix_hits"] + self.stats["prefix_misses"],
            "prefix_entries": len(self.entries),
            "prefix_bytes": self.nbytes(),
            "prefix_budget_bytes": self.budget,
        }

    def nbytes(self) -> int:
        """Bytes the entries' KV caches take (estimated from the model's shape)."""
        return sum(e.nbytes for e in self.entries)

    def max_length(self, needed: int) -> int:
        """The KV cache size of a sequence that may be cached: room for next turns, since a generator cannot grow
        and one too small for a next turn means prefilling it all again. The whole context when four such fit
        in the budget; else twice what it needs (at least ``HEADROOM`` more), doubling as a conversation grows."""
        if 4 * self.context * self.bytes_per_token <= self.budget:
            return self.context
        wanted = max(2 * needed, needed + HEADROOM)
        return min(self.context, max(needed, -(-wanted // _ROUND) * _ROUND))

    def fits(self, max_length: int) -> bool:
        """Whether a sequence of this size could be kept at all."""
        return max_length * self.bytes_per_token <= self.budget

    def take(self, key: str, ids: list[int], needed: int) -> tuple[Entry, int] | None:
        """The entry to continue ``ids`` from and how many of its tokens to keep (taken out of the cache), or
        None. It must run with the same options (``key``), have room for ``needed`` tokens and share at least
        half of its tokens; at least two tokens are left to prefill (a one-token prefill computes differently, see
        the module docstring). A miss is not counted here (a queued request looks again each round): the
        scheduler calls :meth:`missed` when the request starts without a hit."""
        best, best_len = None, 0
        for entry in self.entries:
            if entry.key != key or entry.max_length < needed:
                continue
            usable = min(_common(entry.tokens, ids), entry.exact, len(ids) - 2)
            # Taking an entry for less than half of what it holds (a shared system prompt, say) would throw
            # away the rest, most likely another conversation's history: leave it for that one. (Its answer
            # counts, settled or not yet: the choice does not depend on when the worker was idle.)
            if usable > best_len and 2 * usable >= len(entry.tokens):
                best, best_len = entry, usable
        if best is None or best_len < MIN_REUSE:
            return None
        self.entries.remove(best)
        self.dirty = True
        self.stats["prefix_hits"] += 1
        self.stats["prefix_reused_tokens"] += best_len
        return best, best_len

    def put(self, entry: Entry) -> None:
        """Keep an idle generator, dropping the least recently used ones past the budget."""
        entry.nbytes = entry.max_length * self.bytes_per_token
        entry.used = time.monotonic()
        self.dirty = True
        if entry.nbytes > self.budget:
            self.stats["prefix_evictions"] += 1
            return
        self.entries.append(entry)
        while self.nbytes() > self.budget:
            self.entries.remove(min(self.entries, key=lambda e: e.used))
            self.stats["prefix_evictions"] += 1

    def clear(self) -> None:
        """Drop every entry (their memory goes with the generators)."""
        self.entries.clear()
        self.dirty = True

    def unsettled(self) -> Entry | None:
        """The most recently used entry with generated tokens not yet prefilled, or None."""
        waiting = [e for e in self.entries if len(e.tokens) - e.exact >= 2]
        return max(waiting, key=lambda e: e.used) if waiting else None

    def settle_wait(self, entry: Entry, delay: float = SETTLE_DELAY) -> float:
        """Seconds to wait before settling ``entry`` (0: now), so that a next turn sent back to back finds its
        answer unsettled and prefills it with its own tokens (see ``SETTLE_DELAY``)."""
        return max(0.0, entry.used + delay - time.monotonic())

    def settle(self, entry: Entry, chunk: int = SETTLE_CHUNK) -> None:
        """Prefill up to ``chunk`` more of an entry's generated tokens, so a next request can reuse them."""
        import numpy as np

        end = min(len(entry.tokens), entry.exact + chunk)
        if len(entry.tokens) - end == 1:  # never leave a single token for later (see the module docstring)
            end += 1
        try:
            entry.generator.rewind_to(entry.exact)
            entry.generator.append_tokens(np.array(entry.tokens[entry.exact : end], dtype=np.int32))
        except Exception:  # a generator that cannot go on is of no use: drop it
            self.entries.remove(entry)
            self.dirty = True
            return
        self.dirty = True
        self.stats["prefix_settled_tokens"] += end - entry.exact
        entry.exact = end  # the generator holds tokens[:end] now; the rest are settled next time


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
