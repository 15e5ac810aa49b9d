"""The worker's prefix cache: the same greedy answers with and without it, reuse of past turns, eviction within
its budget, and a hot-swap starting with an empty cache."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.base import ProviderRequest
from minigate.providers.onnx.config import OnnxProviderConfig, check_config, parse_budget
from minigate.providers.onnx.prefix_cache import kv_bytes_per_token
from tests.providers.onnx.helpers import TINY

TURNS = ["hello there, how are you today?", "tell me more about that", "and why is that so?", "thanks, one more"]


def _request(messages: list[dict[str, str]], model: str, max_tokens: int) -> ProviderRequest:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return ProviderRequest("chat/completions", model, body, False, time.monotonic() + 60)


async def _conversation(
    provider: Any,
    turns: list[str],
    model: str = TINY,
    max_tokens: int = 24,
    pause: float = 0.0,
    system: str = "You are a helpful assistant. " * 8,
) -> list[str]:
    """The answers of a multi-turn chat in which each turn resends the history with the last answer."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    answers = []
    for turn in turns:
        messages.append({"role": "user", "content": turn})
        body = await provider.complete(_request(messages, model, max_tokens))
        answer = body["choices"][0]["message"]["content"]
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(pause)
    return answers


async def _stats(provider: Any, model: str = TINY) -> dict[str, Any]:
    stats: dict[str, Any] = await provider.loaded()[model].worker_stats()
    return stats


async def test_greedy_answers_are_the_same_with_and_without_the_cache(make_provider: Any) -> None:
    plain = await make_provider(prefix_cache="off")
    cached = await make_provider()
    expected = await _conversation(plain, TURNS)
    assert "prefix_hits" not in await _stats(plain)
    # Back to back: the past answers are prefilled with each next turn.
    assert await _conversation(cached, TURNS) == expected
    stats = await _stats(cached)
    assert stats["prefix_hits"] == len(TURNS) - 1 and stats["prefix_reused_tokens"] > 0
    # With a pause between turns the worker prefills each answer while idle, and the next turn reuses it too.
    reused = stats["prefix_reused_tokens"]
    settled = stats["prefix_settled_tokens"]
    assert await _conversation(cached, TURNS, pause=0.3) == expected
    stats = await _stats(cached)
    assert stats["prefix_settled_tokens"] > settled
    # The first turn shares only a small part of the last conversation's cache: it leaves it alone.
    assert stats["prefix_hits"] == 2 * len(TURNS) - 2
    assert stats["prefix_reused_tokens"] - reused > stats["prefix_settled_tokens"] - settled


async def test_a_request_with_a_seed_or_a_grammar_leaves_the_cache_alone(make_provider: Any) -> None:
    cached = await make_provider()
    messages = [{"role": "user", "content": "a seeded question " * 10}]
    body = {"model": TINY, "messages": messages, "max_tokens": 5, "temperature": 0.7, "seed": 7}
    first = await cached.complete(ProviderRequest("chat/completions", TINY, body, False, time.monotonic() + 60))
    second = await cached.complete(ProviderRequest("chat/completions", TINY, body, False, time.monotonic() + 60))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    stats = await _stats(cached)
    assert stats["prefix_hits"] == 0 and stats["prefix_entries"] == 0


async def test_eviction_keeps_the_cache_within_its_budget(make_provider: Any, models_dir: Path) -> None:
    per_token = kv_bytes_per_token(str(models_dir / TINY))
    # Room for two sequences of up to 1024 tokens (the KV cache of a cached sequence is sized with headroom).
    budget = 2 * 1024 * per_token + per_token
    cached = await make_provider(prefix_cache=budget)
    topics = ["apples and pears", "the sea at night", "old railway maps"]
    for topic in topics:  # three conversations that share nothing (their system prompts differ)
        await _conversation(cached, [f"tell me about {topic}"], max_tokens=8, system=f"{topic}. " * 8)
    stats = await _stats(cached)
    assert stats["prefix_budget_bytes"] == budget
    assert stats["prefix_entries"] == 2 and stats["prefix_evictions"] == 1
    assert 0 < stats["prefix_bytes"] <= budget
    assert stats["prefix_hits"] == 0 and stats["prefix_misses"] == 3
    # The least recently used conversation was dropped: it starts again from nothing (and drops the next one);
    # the most recent one continues from its cache.
    await _conversation(cached, [f"tell me about {topics[0]}"], max_tokens=8, system=f"{topics[0]}. " * 8)
    stats = await _stats(cached)
    assert stats["prefix_hits"] == 0 and stats["prefix_misses"] == 4 and stats["prefix_evictions"] == 2
    await _conversation(cached, [f"tell me about {topics[2]}", "go on"], max_tokens=8, system=f"{topics[2]}. " * 8)
    stats = await _stats(cached)
    assert stats["prefix_hits"] == 2 and stats["prefix_misses"] == 4
    assert stats["prefix_entries"] == 2 and stats["prefix_bytes"] <= budget


async def test_a_budget_too_small_for_one_sequence_caches_nothing(make_provider: Any) -> None:
    cached = await make_provider(prefix_cache="1KiB")
    await _conversation(cached, TURNS[:2], max_tokens=4)
    stats = await _stats(cached)
    assert stats["prefix_entries"] == 0 and stats["prefix_hits"] == 0 and stats["prefix_bytes"] == 0


async def test_a_hot_swap_starts_with_an_empty_cache(make_provider: Any) -> None:
    cached = await make_provider()
    await _conversation(cached, TURNS[:2], max_tokens=6)
    old = await _stats(cached)
    assert old["prefix_entries"] == 1 and old["prefix_hits"] == 1
    old_pid = cached.loaded()[TINY].pid
    await cached.reload(TINY)
    assert cached.loaded()[TINY].pid != old_pid
    fresh = await _stats(cached)
    assert fresh["prefix_entries"] == 0 and fresh["prefix_hits"] == 0 and fresh["prefix_reused_tokens"] == 0
    await _conversation(cached, TURNS[:1], max_tokens=6)  # the old model's cache went with its worker
    stats = await _stats(cached)
    assert stats["prefix_hits"] == 0 and stats["prefix_misses"] == 1 and stats["prefix_entries"] == 1
    await cached.unload(TINY)
    await _conversation(cached, TURNS[:1], max_tokens=6)
    assert (await _stats(cached))["prefix_hits"] == 0


@pytest.mark.fast
def test_budgets_parse_as_sizes_shares_of_memory_or_off() -> None:
    assert parse_budget("1GiB") == 1 << 30
    assert parse_budget(4096) == 4096
    assert parse_budget("10%", total_memory=1000) == 100
    assert parse_budget("off") == parse_budget(None) == parse_budget(0) == 0
    with pytest.raises(ValueError):
        parse_budget("150%")
    with pytest.raises(ValueError):
        parse_budget("lots")
    problems = check_config(OnnxProviderConfig(prefix_cache="lots"))
    assert [field for field, _ in problems] == ["prefix_cache"]
    assert check_config(OnnxProviderConfig(prefix_cache="25%")) == []


async def test_smollm2_answers_the_same_with_and_without_the_cache(default_models_dir: Path) -> None:
    from minigate.providers.onnx.provider import OnnxProvider

    model = "smollm2-135m-instruct"
    providers = [
        OnnxProvider("local", OnnxProviderConfig(models_dir=str(default_models_dir), idle_ttl=None, prefix_cache=c))
        for c in ("off", "1GiB")
    ]
    turns = ["What is the capital of France?", "And of Italy?", "Which of the two is bigger?"]
    try:
        plain, cached = [await _conversation(p, turns, model=model, max_tokens=40) for p in providers]
        assert cached == plain
        assert "Paris" in plain[0]
        stats = await _stats(providers[1], model)
        assert stats["prefix_hits"] == len(turns) - 1
    finally:
        for provider in providers:
            await provider.close()
