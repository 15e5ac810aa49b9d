"""Worker processes: death and restart, the bounded queue, cancellation, hot-swap, idle TTL and LRU unload."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from minigate.gateway.config.sections import CooldownConfig
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.providers.base import ProviderError, UpstreamUnavailable
from tests.providers.onnx.helpers import TINY, chat, collect


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().split()[2] != "Z"


async def _wait_until(predicate: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_worker_runs_in_its_own_process(provider: Any) -> None:
    await provider.complete(chat(max_tokens=2))
    client = provider.loaded()[TINY]
    assert client.pid != os.getpid() and _alive(client.pid)
    assert [i.state for i in provider.info()] == ["loaded"]


async def test_killed_worker_fails_inflight_and_restarts_on_next_request(provider: Any) -> None:
    stream = await provider.open_stream(chat(max_tokens=1900, stream=True))
    pid = provider.loaded()[TINY].pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(UpstreamUnavailable) as info:
        await collect(stream)
    assert info.value.fallback is True
    body = await provider.complete(chat(max_tokens=5))
    assert body["usage"]["completion_tokens"] == 5
    assert provider.loaded()[TINY].pid != pid


async def _crash_errors(provider: Any, streams: list[Any], pid: int) -> list[UpstreamUnavailable]:
    """Kill worker ``pid`` under ``streams``; the error each of them ends with."""
    os.kill(pid, signal.SIGKILL)
    errors: list[UpstreamUnavailable] = []
    for stream in streams:
        with pytest.raises(UpstreamUnavailable) as info:
            await collect(stream)
        errors.append(info.value)
    return errors


async def test_a_crash_under_eight_streams_is_one_failure_and_the_new_worker_answers_next(provider: Any) -> None:
    streams = await asyncio.gather(*(provider.open_stream(chat(max_tokens=1900, stream=True)) for _ in range(8)))
    pid = provider.loaded()[TINY].pid
    errors = await _crash_errors(provider, streams, pid)
    assert {e.code for e in errors} == {"worker_died"} and all(e.cooldown for e in errors)
    [cause] = {e.cause for e in errors}  # one crash: one cause, named on every stream it broke
    assert cause is not None and str(pid) in cause
    book, ref = HealthBook(CooldownConfig()), f"local/{TINY}"
    for error in errors:
        book.failure(ref, error)
    assert book.snapshot()[ref]["failures"] == 1 and book.cooling(ref) == 0
    assert (await provider.complete(chat(max_tokens=5)))["usage"]["completion_tokens"] == 5
    assert provider.loaded()[TINY].pid != pid


async def test_the_crash_of_a_worker_already_replaced_cools_nothing(provider: Any) -> None:
    error: UpstreamUnavailable | None = None
    for _ in range(5):  # the tiny model may finish its answer before the kill lands (then its pieces are all sent)
        stream = await provider.open_stream(chat(max_tokens=1900, stream=True))
        old_pid = provider.loaded()[TINY].pid
        new_pid = (await provider.reload(TINY)).pid  # the old worker finishes its stream, then exits
        with contextlib.suppress(ProcessLookupError):
            os.kill(old_pid, signal.SIGKILL)
        try:
            chunks = await collect(stream)
        except UpstreamUnavailable as err:
            error = err
            break
        # The answer ended before the crash: whole, with its finish reason (not cut short without a word).
        assert any(choice.get("finish_reason") for c in chunks for choice in c.get("choices", ())), chunks[-3:]
    else:
        pytest.fail("the replaced worker's answer ended before the crash could land, five times")
    assert error.code == "worker_died" and error.cooldown is False
    book, ref = HealthBook(CooldownConfig(failures=1)), f"local/{TINY}"
    book.failure(ref, error)
    assert book.cooling(ref) == 0
    assert (await provider.complete(chat(max_tokens=5)))["usage"]["completion_tokens"] == 5
    assert provider.loaded()[TINY].pid == new_pid


async def test_full_queue_answers_429(make_provider: Any) -> None:
    provider = await make_provider(max_batch_size=1, queue_size=1)
    held = [await provider.open_stream(chat(max_tokens=1500, stream=True)) for _ in range(2)]
    with pytest.raises(ProviderError) as info:
        await provider.open_stream(chat(max_tokens=5, stream=True))
    error = info.value
    assert (error.status, error.code, error.fallback) == (429, "queue_full", True)
    assert error.retry_after is not None and error.retry_after > 0
    for stream in held:
        await stream.aclose()
    body = await provider.complete(chat(max_tokens=3))  # room again
    assert body["usage"]["completion_tokens"] == 3


async def test_closing_the_stream_stops_generation(provider: Any) -> None:
    stream = await provider.open_stream(chat(max_tokens=1900, stream=True))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    client = provider.loaded()[TINY]
    stats = await client.worker_stats()
    for _ in range(100):
        if stats["active"] == 0:
            break
        await asyncio.sleep(0.01)
        stats = await client.worker_stats()
    assert stats["active"] == 0 and stats["cancelled"] == 1
    assert stats["generated"] < 1900
    assert not client.inflight


async def test_hot_swap_under_concurrent_requests_has_no_failures(provider: Any) -> None:
    await provider.load(TINY)
    first_pid = provider.loaded()[TINY].pid
    failures: list[BaseException] = []
    done = 0

    async def client_loop(i: int) -> None:
        nonlocal done
        for _ in range(6):
            try:
                if i % 2:
                    await collect(await provider.open_stream(chat(max_tokens=200, stream=True)))
                else:
                    await provider.complete(chat(max_tokens=200))
                done += 1
            except BaseException as exc:
                failures.append(exc)

    loops = asyncio.gather(*(client_loop(i) for i in range(4)))
    await asyncio.sleep(0.1)
    await provider.reload(TINY)
    second_pid = provider.loaded()[TINY].pid
    await asyncio.sleep(0.1)
    await provider.reload(TINY)
    await loops
    assert failures == [] and done == 24
    assert len({first_pid, second_pid, provider.loaded()[TINY].pid}) == 3
    await _wait_until(lambda: not _alive(first_pid) and not _alive(second_pid))


async def test_idle_ttl_unloads(make_provider: Any) -> None:
    provider = await make_provider(idle_ttl=0.3)
    await provider.complete(chat(max_tokens=2))
    pid = provider.loaded()[TINY].pid
    await _wait_until(lambda: not provider.loaded(), limit=5)
    await _wait_until(lambda: not _alive(pid))
    await provider.complete(chat(max_tokens=2))  # loads again on demand
    assert provider.loaded()[TINY].pid != pid


async def test_memory_budget_unloads_least_recently_used(make_provider: Any, models_dir: Path) -> None:
    if not (models_dir / "tiny-b").exists():
        shutil.copytree(models_dir / TINY, models_dir / "tiny-b")
    from minigate.providers.onnx.provider import _estimate_bytes

    budget = _estimate_bytes(models_dir / TINY) + (4 << 20)  # room for one worker, not two
    provider = await make_provider(memory_budget=str(budget))
    await provider.complete(chat(max_tokens=2))
    first = provider.loaded()[TINY].pid
    await provider.complete(chat(max_tokens=2, model="tiny-b"))
    assert list(provider.loaded()) == ["tiny-b"]
    await _wait_until(lambda: not _alive(first))
    assert sorted(provider.models()) == [TINY, "tiny-b"]
    small = await make_provider(memory_budget="1MB")
    with pytest.raises(ProviderError) as info:
        await small.complete(chat(max_tokens=2))
    assert info.value.code == "memory_budget"


async def test_unavailable_execution_provider_is_a_clear_error(make_provider: Any) -> None:
    import onnxruntime_genai as og

    if og.is_cuda_available():
        pytest.skip("CUDA is available here")
    provider = await make_provider(execution_provider="cuda")
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(max_tokens=2))
    assert "cuda" in info.value.message and "not available" in info.value.message


async def test_engine_failure_fails_only_that_request(provider: Any) -> None:
    client = await provider.load(TINY)
    messages = [{"role": "user", "content": "hi"}]
    # top_p out of range gets past the worker's admission but makes onnxruntime-genai refuse the batch.
    generation = await client.submit(
        {"messages": messages, "max_tokens": 5, "search": {"do_sample": True, "top_p": 5.0}, "guidance": None}
    )
    with pytest.raises(ProviderError) as info:
        await generation.next(5)
    assert (info.value.status, info.value.code) == (500, "engine_error")
    await generation.aclose()
    assert client.alive
    assert (await provider.complete(chat(max_tokens=3)))["usage"]["completion_tokens"] == 3
