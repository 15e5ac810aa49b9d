"""How a next turn reuses the last answer: sent back to back it prefills the answer with its own new tokens in one
go (the idle worker waits ``settle_delay`` before prefilling it alone), answers stay the same; the opt-in
``prefix_reuse: "generated"`` reuses the answer's decode steps and prefills less."""

from __future__ import annotations

from typing import Any

import pytest

from minigate.providers.onnx.config import OnnxProviderConfig, check_config
from tests.providers.onnx.test_prefix_cache import TURNS, _conversation, _stats


async def test_a_turn_sent_back_to_back_prefills_the_answer_with_its_own_tokens(make_provider: Any) -> None:
    expected = await _conversation(await make_provider(prefix_cache="off"), TURNS)
    # A long delay: the worker never settles an answer before the next turn comes.
    waiting = await make_provider(worker_options={"settle_delay": 30.0})
    assert await _conversation(waiting, TURNS) == expected
    merged = await _stats(waiting)
    assert merged["prefix_hits"] == len(TURNS) - 1 and merged["prefix_settled_tokens"] == 0
    # No delay: each answer is prefilled alone while the worker is idle (the pause), then the next turn's tokens.
    eager = await make_provider(worker_options={"settle_delay": 0.0})
    assert await _conversation(eager, TURNS, pause=0.3) == expected
    apart = await _stats(eager)
    assert apart["prefix_settled_tokens"] > 0
    # The same prompts, split differently: merged, each turn prefills the last answer with its own new tokens;
    # apart, the answers were prefilled while idle (settled) and reused. (Settled tokens the next prompt does not
    # start with, where the tiny model's answer does not tokenize back the same, are not reused.)
    total = merged["prefilled_tokens"] + merged["prefix_reused_tokens"]
    assert total == apart["prefilled_tokens"] + apart["prefix_reused_tokens"]
    assert (
        apart["prefilled_tokens"]
        < merged["prefilled_tokens"]
        < apart["prefilled_tokens"] + apart["prefix_settled_tokens"]
    )


async def test_reusing_generated_tokens_is_opt_in_and_prefills_less(make_provider: Any) -> None:
    exact = await make_provider(worker_options={"settle_delay": 30.0})
    await _conversation(exact, TURNS)
    generated = await make_provider(prefix_reuse="generated", worker_options={"settle_delay": 0.0})
    answers = await _conversation(generated, TURNS, pause=0.3)
    assert len(answers) == len(TURNS) and all(isinstance(a, str) for a in answers)
    before, after = await _stats(exact), await _stats(generated)
    assert after["prefix_hits"] == len(TURNS) - 1
    assert after["prefix_settled_tokens"] == 0  # nothing to prefill again, even with idle time
    # Each answer (but its last token) is reused rather than prefilled: fewer tokens computed for the same turns.
    # (The answers may differ from the exact ones, so compare per turn.)
    assert after["prefilled_tokens"] / len(TURNS) < before["prefilled_tokens"] / len(TURNS)


@pytest.mark.fast
def test_prefix_reuse_takes_exact_or_generated() -> None:
    assert check_config(OnnxProviderConfig(prefix_reuse="generated")) == []
    assert OnnxProviderConfig().prefix_reuse == "exact"
    problems = check_config(OnnxProviderConfig(prefix_reuse="fast"))
    assert problems == [("prefix_reuse", "must be exact or generated, not 'fast'")]
