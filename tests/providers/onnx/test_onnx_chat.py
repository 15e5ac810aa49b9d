"""OpenAI semantics of the onnxruntime-genai provider, against the tiny model in real worker processes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.base import ProviderError
from minigate.providers.onnx.openai_mapping import StopMatcher
from tests.providers.onnx.helpers import TINY, chat, collect


def _og_counts(models_dir: Path, content: str, max_tokens: int) -> tuple[int, str]:
    """Prompt tokens and greedy text of the bare onnxruntime-genai loop, for comparison."""
    import onnxruntime_genai as og

    config = og.Config(str(models_dir / TINY))
    config.clear_providers()
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(
        json.dumps([{"role": "user", "content": content}]), add_generation_prompt=True
    )
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return len(ids), tokenizer.decode(out)


async def test_chat_json_body_and_exact_usage(provider: Any, models_dir: Path) -> None:
    body = await provider.complete(chat("What is the capital of France?", max_tokens=12, temperature=0))
    assert body["object"] == "chat.completion"
    assert body["model"] == TINY and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    prompt_tokens, text = _og_counts(models_dir, "What is the capital of France?", 12)
    assert choice["message"]["content"] == text
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 12,
        "total_tokens": prompt_tokens + 12,
    }


async def test_stream_chunks_are_shaped_like_openai(provider: Any) -> None:
    whole = await provider.complete(chat(max_tokens=9))
    chunks = await collect(await provider.open_stream(chat(max_tokens=9, stream=True)))
    first, *middle, last = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == first["id"] for c in chunks)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert "usage" not in last
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == whole["choices"][0]["message"]["content"]


async def test_stream_usage_chunk_when_asked(provider: Any) -> None:
    request = chat(max_tokens=7, stream=True, stream_options={"include_usage": True})
    chunks = await collect(await provider.open_stream(request))
    *rest, usage_chunk = chunks
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 7
    assert all(c["usage"] is None for c in rest)
    assert rest[-1]["choices"][0]["finish_reason"] == "length"


async def test_stop_strings_cut_the_text_and_finish_with_stop(provider: Any) -> None:
    full = (await provider.complete(chat(max_tokens=40)))["choices"][0]["message"]["content"]
    stop = full[15:19]
    expected = full[: full.index(stop)]
    body = await provider.complete(chat(max_tokens=40, stop=[stop, "never-there"]))
    assert body["choices"][0]["message"]["content"] == expected
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 40
    chunks = await collect(await provider.open_stream(chat(max_tokens=40, stop=stop, stream=True)))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_matcher_holds_back_possible_prefixes() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("abcE") == ("abc", False)
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("Dxyz") == ("", True)
    matcher = StopMatcher(["END"])
    assert matcher.feed("xE") == ("x", False)
    assert matcher.feed("x") == ("Ex", False)
    assert matcher.flush() == ""


async def test_max_tokens_gives_finish_reason_length(provider: Any) -> None:
    body = await provider.complete(chat(max_completion_tokens=3))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


async def test_n_above_one_is_refused_without_fallback(provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(n=2))
    assert info.value.status == 400 and info.value.fallback is False and info.value.param == "n"


async def test_max_tokens_past_the_context_is_clamped_and_only_a_prompt_that_does_not_fit_is_refused(
    make_provider: Any,
) -> None:
    from minigate.providers.onnx.engine import MIN_ROOM

    provider = await make_provider(max_context=64)
    prompt_tokens = (await provider.complete(chat(max_tokens=1)))["usage"]["prompt_tokens"]
    room = 64 - prompt_tokens
    assert room >= MIN_ROOM
    for request in (chat(max_tokens=64000), chat(max_completion_tokens=64000, stream=True)):
        if request.stream:
            chunks = await collect(await provider.open_stream(request))
            finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
        else:
            body = await provider.complete(request)
            assert body["usage"]["completion_tokens"] <= room
            finish = body["choices"][0]["finish_reason"]
        assert request.notes == {"max-tokens-clamped": str(room)}
        assert finish in ("stop", "length")
    request = chat(max_tokens=room)  # what fits is not clamped, and not noted
    assert (await provider.complete(request))["usage"]["completion_tokens"] <= room
    assert request.notes == {}
    request = chat(max_tokens=20)
    await provider.complete(request)
    assert request.notes == {}
    with pytest.raises(ProviderError) as info:  # the prompt itself does not fit
        await provider.complete(chat("word " * 100, max_tokens=1))
    error = info.value
    assert (error.status, error.code, error.fallback, error.cooldown) == (400, "context_length_exceeded", True, False)
    assert error.param == "messages" and "maximum context length is 64 tokens" in error.message
    # A prompt leaving less than MIN_ROOM tokens fits only a max_tokens within the room it leaves.
    filler = "word"
    for _ in range(64):
        filler += " word"
        probe = await provider.complete(chat(filler, max_tokens=1))
        if 64 - probe["usage"]["prompt_tokens"] < MIN_ROOM:
            break
    small_room = 64 - probe["usage"]["prompt_tokens"]
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(filler, max_tokens=small_room + 1))
    assert info.value.code == "context_length_exceeded"
    body = await provider.complete(chat(filler, max_tokens=small_room))
    assert body["usage"]["completion_tokens"] <= small_room


async def test_json_response_format_uses_guidance(provider: Any) -> None:
    # Random weights under a grammar: the output is always valid JSON so far; with these prompts (greedy,
    # deterministic) it also closes the object before max_tokens.
    body = await provider.complete(chat("json please", max_tokens=60, response_format={"type": "json_object"}))
    assert body["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    for content in ("hello there", "x"):
        body = await provider.complete(chat(content, max_tokens=100, response_format=fmt))
        text = body["choices"][0]["message"]["content"]
        compact = re.sub(r"\s", "", text)
        assert '{"ok":true}'.startswith(compact) or '{"ok":false}'.startswith(compact), text
        if content == "hello there":
            assert body["choices"][0]["finish_reason"] == "stop"
            assert json.loads(text) in ({"ok": True}, {"ok": False})
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(response_format={"type": "yaml"}))
    assert info.value.status == 400 and info.value.param == "response_format"
    bad = {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "objectx"}}}
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(response_format=bad))
    assert (info.value.status, info.value.code, info.value.fallback) == (400, "invalid_response_format", False)
    assert (await provider.complete(chat(max_tokens=2)))["usage"]["completion_tokens"] == 2  # worker unharmed


async def test_seed_makes_sampling_repeatable(provider: Any) -> None:
    def request() -> Any:
        return chat(max_tokens=15, temperature=1.0, seed=42)

    first = (await provider.complete(request()))["choices"][0]["message"]["content"]
    again = (await provider.complete(request()))["choices"][0]["message"]["content"]
    assert first == again


async def test_refusals_and_unknown_model(provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(model="no-such-model"))
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(model="../etc"))
    assert info.value.status == 404
    for i in range(20):  # names that are no model leave nothing behind (no per-name state to grow without end)
        with pytest.raises(ProviderError):
            await provider.complete(chat(model=f"random-{i}"))
    assert "random-0" not in provider._slots and "no-such-model" not in provider._slots
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(image))  # type: ignore[arg-type]
    assert info.value.status == 400 and info.value.fallback is True
    for refused in ({"tools": [{"type": "web_search"}]}, {"functions": [{"name": "f"}]}):
        with pytest.raises(ProviderError) as info:
            await provider.complete(chat(**refused))
        error = info.value
        assert (error.status, error.code, error.fallback, error.capability) == (
            400,
            "unsupported_parameter",
            True,
            True,
        )


async def test_concurrent_requests_batch_and_match_solo_outputs(provider: Any) -> None:
    import asyncio

    prompts = ["a", "a somewhat longer prompt here", "mid length", "x y z w"]
    solo = [(await provider.complete(chat(p, max_tokens=16)))["choices"][0]["message"]["content"] for p in prompts]
    together = await asyncio.gather(*(provider.complete(chat(p, max_tokens=16)) for p in prompts))
    assert [b["choices"][0]["message"]["content"] for b in together] == solo
    stats = await provider.loaded()[TINY].worker_stats()
    assert stats["max_batch_seen"] == len(prompts)  # sent in one event-loop turn: one write, one batch


async def test_kv_cache_grows_in_steps_without_changing_the_output(make_provider: Any) -> None:
    plain = await make_provider()
    expected = (await plain.complete(chat(max_tokens=40)))["choices"][0]["message"]["content"]
    stepped = await make_provider(worker_options={"grow_tokens": 8}, prefix_cache="off")  # cached ones get room
    body = await stepped.complete(chat(max_tokens=40))
    assert body["choices"][0]["message"]["content"] == expected
    assert body["usage"]["completion_tokens"] == 40
    assert (await stepped.loaded()[TINY].worker_stats())["regrows"] >= 2


async def test_staggered_requests_join_a_young_batch(provider: Any) -> None:
    import asyncio

    prompts = ["first one", "second", "third prompt, longer than the others"]
    solo = [(await provider.complete(chat(p, max_tokens=300)))["choices"][0]["message"]["content"] for p in prompts]

    async def later(i: int, prompt: str) -> Any:
        await asyncio.sleep(0.004 * i)
        return await provider.complete(chat(prompt, max_tokens=300))

    bodies = await asyncio.gather(*(later(i, p) for i, p in enumerate(prompts)))
    assert [b["choices"][0]["message"]["content"] for b in bodies] == solo
    stats = await provider.loaded()[TINY].worker_stats()
    assert stats["max_batch_seen"] >= 2


async def test_legacy_completions_endpoint(provider: Any) -> None:
    from minigate.providers.base import ProviderRequest

    body = {"model": TINY, "prompt": "def main():", "max_tokens": 5}
    request = ProviderRequest("completions", TINY, body, False, time.monotonic() + 30)
    result = await provider.complete(request)
    assert result["object"] == "text_completion"
    assert result["choices"][0]["finish_reason"] == "length" and result["usage"]["completion_tokens"] == 5


async def test_deadline_gives_a_timeout_error(provider: Any) -> None:
    # 1,900 greedy tokens take about 0.25 s here (more under load); pieces that already wait in the queue
    # when the deadline passes do not extend it.
    request = chat(max_tokens=1900, temperature=0)
    await provider.load(TINY)
    request.deadline = time.monotonic() + 0.05
    with pytest.raises(ProviderError) as info:
        await provider.complete(request)
    assert (info.value.status, info.value.code) == (504, "timeout")


async def test_a_deadline_already_passed_times_out_at_once(provider: Any) -> None:
    request = chat(max_tokens=5, temperature=0)
    await provider.load(TINY)
    request.deadline = time.monotonic() - 1
    with pytest.raises(ProviderError) as info:
        await provider.complete(request)
    assert (info.value.status, info.value.code) == (504, "timeout")
    body = await provider.complete(chat(max_tokens=5, temperature=0))  # the worker is still fine
    assert body["usage"]["completion_tokens"] == 5


async def test_newcomers_get_a_batch_of_their_own_then_join_one_when_every_slot_is_taken(make_provider: Any) -> None:
    import asyncio

    # ttft_target 0: no merge ever pays, so each newcomer gets a batch of its own while a slot is free.
    provider = await make_provider(worker_options={"max_groups": 2, "ttft_target": 0.0})
    long_streams = []
    for prompt in ("first long one", "second long one"):
        stream = await provider.open_stream(chat(prompt, max_tokens=1800, stream=True))
        iterator = stream.__aiter__()
        for _ in range(3):  # a few chunks in: that batch is running
            await asyncio.wait_for(iterator.__anext__(), 30)
        long_streams.append((stream, iterator))
    stats = await provider.loaded()[TINY].worker_stats()
    assert (stats["groups"], stats["merges"]) == (2, 0)
    # Both slots are taken: a third request joins the cheaper batch instead of waiting for one to finish.
    body = await asyncio.wait_for(provider.complete(chat("third", max_tokens=8)), 30)
    assert body["choices"][0]["finish_reason"] == "length"
    stats = await provider.loaded()[TINY].worker_stats()
    assert stats["merges"] == 1 and stats["active"] == 2
    for stream, _ in long_streams:
        await stream.aclose()


def test_costs_take_the_fixed_part_of_a_step_as_the_saving_of_one_batch_less() -> None:
    from minigate.providers.onnx.scheduler import Costs

    costs = Costs(prefill_per_token=0.002)
    assert costs.overhead() == pytest.approx(0.010)  # nothing measured yet: five tokens of prefill
    for size in (1, 2, 4, 8):
        costs.stepped(size, 0.011 + 0.0025 * size)
    assert costs.overhead() == pytest.approx(0.011)
    costs.prefilled(100, 0.3)  # 3 ms a token, weighed in at 20%
    assert costs.prefill_per_token == pytest.approx(0.0022)
