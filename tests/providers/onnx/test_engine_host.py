"""One engine per model for several gateway processes: two OnnxProviders (as two processes would hold them) on one
:class:`EngineHost`, over its unix socket, with the tiny model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.base import UpstreamUnavailable
from minigate.providers.onnx.engine_host import EngineHost
from tests.providers.onnx.helpers import TINY, chat, collect


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def _wait_until(predicate: Any, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[EngineHost]:
    served = EngineHost(tmp_path / "engines.sock")
    await served.start()
    yield served
    await served.close()


@pytest.fixture
async def pair(host: EngineHost, make_provider: Any) -> tuple[Any, Any]:
    """Two providers sharing ``host``: what two gateway processes of ``serve --workers 2`` hold."""
    return (
        await make_provider(engine_host=str(host.path)),
        await make_provider(engine_host=str(host.path)),
    )


async def _tokens(provider: Any, n: int = 5) -> int:
    return int((await provider.complete(chat(max_tokens=n)))["usage"]["completion_tokens"])


async def test_two_processes_share_one_engine_and_both_get_answers(host: EngineHost, pair: tuple[Any, Any]) -> None:
    a, b = pair
    assert await asyncio.gather(_tokens(a), _tokens(b)) == [5, 5]
    [pid] = host.pids()
    assert a.loaded()[TINY].pid == b.loaded()[TINY].pid == pid != os.getpid()
    streams = [await p.open_stream(chat(max_tokens=40, stream=True)) for p in (a, b, a, b)]
    answers = await asyncio.gather(*(collect(s) for s in streams))
    assert all(chunks[-1]["choices"][0]["finish_reason"] == "length" for chunks in answers)
    stats = await a.loaded()[TINY].worker_stats()
    assert stats["generated"] >= 4 * 40 + 10  # one engine generated every sequence of both


async def test_an_engine_crash_fails_both_and_the_next_requests_share_a_new_one(
    host: EngineHost, pair: tuple[Any, Any]
) -> None:
    a, b = pair
    streams = [await p.open_stream(chat(max_tokens=1900, stream=True)) for p in (a, b)]
    [pid] = host.pids()
    os.kill(pid, signal.SIGKILL)
    for stream in streams:
        with pytest.raises(UpstreamUnavailable) as info:
            await collect(stream)
        assert info.value.code == "worker_died"
    assert await asyncio.gather(_tokens(a), _tokens(b)) == [5, 5]
    [new] = host.pids()
    assert new != pid and a.loaded()[TINY].pid == b.loaded()[TINY].pid == new


async def test_a_hot_swap_in_one_process_moves_the_other_to_the_new_engine(
    host: EngineHost, pair: tuple[Any, Any]
) -> None:
    a, b = pair
    await asyncio.gather(_tokens(a), _tokens(b))
    old = a.loaded()[TINY].pid
    running = await b.open_stream(chat(max_tokens=300, stream=True))  # keeps the old engine busy meanwhile
    new = (await a.reload(TINY)).pid
    assert new != old
    await _wait_until(lambda: TINY not in b.loaded())  # told "retired": no longer used for new requests
    assert await _tokens(b) == 5 and b.loaded()[TINY].pid == new
    chunks = await collect(running)  # the old engine finished what it had
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    await _wait_until(lambda: not _alive(old) and host.pids() == [new])  # the host reaps it a moment later


async def test_the_engine_stops_when_the_last_process_lets_go(host: EngineHost, make_provider: Any) -> None:
    a = await make_provider(engine_host=str(host.path), idle_ttl=0.4)
    b = await make_provider(engine_host=str(host.path), idle_ttl=60)
    await asyncio.gather(_tokens(a), _tokens(b))
    [pid] = host.pids()
    await _wait_until(lambda: not a.loaded())  # a's idle TTL: a lets go, b still holds the engine
    assert _alive(pid) and await _tokens(b) == 5
    assert await b.unload(TINY)  # an explicit unload stops it for every process
    await _wait_until(lambda: not _alive(pid) and host.pids() == [])
    assert await _tokens(a) == 5  # and it loads again on demand
    assert len(host.pids()) == 1 and host.pids() != [pid]


async def test_an_unload_in_one_process_stops_the_engine_while_the_other_is_idle(
    host: EngineHost, pair: tuple[Any, Any]
) -> None:
    a, b = pair
    await asyncio.gather(_tokens(a), _tokens(b))
    [pid] = host.pids()
    assert await a.unload(TINY)
    # b let go at once, without waiting for a request or its idle TTL
    await _wait_until(lambda: not _alive(pid) and host.pids() == [])
    assert not b.loaded()
    assert await _tokens(b) == 5 and len(host.pids()) == 1
