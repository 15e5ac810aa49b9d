"""``GET /v1/ws``: interleaved requests on one socket, cancel, disconnect mid-stream, errors, auth, fallback."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import two_provider_config
from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.gateway_server import ADMIN_KEY, GatewayServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def chat(ident: str, text: str = "hello", model: str = "default") -> dict[str, Any]:
    return {"type": "chat", "id": ident, "request": {"model": model, "messages": [{"role": "user", "content": text}]}}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        yield http


def url(server: GatewayServer) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/ws"


async def frames_until(ws: aiohttp.ClientWebSocketResponse, done: Any, limit: int = 500) -> list[dict[str, Any]]:
    """Frames received until ``done(frames)`` holds (at most ``limit`` frames, 5 s each)."""
    frames: list[dict[str, Any]] = []
    for _ in range(limit):
        frames.append(await ws.receive_json(timeout=5))
        if done(frames):
            return frames
    raise AssertionError(f"gave up after {limit} frames")


def of(frames: list[dict[str, Any]], ident: str, kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("id") == ident and f["type"] == kind]


async def test_two_interleaved_requests_one_cancelled(
    gateway: GatewayServer, primary: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    primary.set_default(Reply(chunks=20, interval=0.03))
    async with session.ws_connect(url(gateway), headers=AUTH) as ws:
        await ws.send_json(chat("a", "first question"))
        await ws.send_json(chat("b", "second"))
        frames = await frames_until(ws, lambda fs: len(of(fs, "a", "delta")) >= 3 and len(of(fs, "b", "delta")) >= 3)
        await ws.send_json({"type": "cancel", "id": "b"})
        frames += await frames_until(ws, lambda fs: bool(of(fs, "a", "done")))
    ids = [f["id"] for f in frames if f["type"] == "delta"]
    assert "b" in ids[ids.index("a") : ids.index("a") + 4]  # the two answers arrive interleaved
    [cancelled] = [i for i, f in enumerate(frames) if f == {"type": "cancelled", "id": "b"}]
    assert not [f for f in frames[cancelled:] if f.get("id") == "b"][1:]  # nothing about b after "cancelled"
    [done] = of(frames, "a", "done")
    text = " ".join(f"tok{i}" for i in range(20))
    assert "".join(f["delta"]["content"] for f in of(frames, "a", "delta")) == text
    assert done["message"] == {"role": "assistant", "content": text}
    assert done["finish_reason"] == "stop" and done["model"] == "primary/gpt-4o-mini" and done["fallbacks"] == 0
    assert done["usage"] == {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22}
    rows = {r["request_id"]: r for r in gateway.wait_rows(2)}
    assert rows[done["request_id"]]["status"] == 200 and rows[done["request_id"]]["streamed"]
    assert rows[done["request_id"]]["total_tokens"] == 22
    assert sorted(r["status"] for r in rows.values()) == [200, 499]


async def test_disconnecting_mid_stream_cancels_the_upstream_calls(
    gateway: GatewayServer, primary: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    primary.set_default(Reply(chunks=100, interval=0.05))
    async with session.ws_connect(url(gateway), headers=AUTH) as ws:
        await ws.send_json(chat("a"))
        await ws.send_json(chat("b"))
        await frames_until(ws, lambda fs: bool(of(fs, "a", "delta")) and bool(of(fs, "b", "delta")))
    started = time.monotonic()
    assert await asyncio.to_thread(primary.wait_for_disconnect, 5)
    rows = await asyncio.to_thread(gateway.wait_rows, 2)
    assert [r["status"] for r in rows] == [499, 499] and time.monotonic() - started < 3
    assert all(r["error"] == "client disconnected" for r in rows)


async def test_errors_come_in_openais_shape_and_the_socket_stays_open(
    gateway: GatewayServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(url(gateway), headers=AUTH) as ws:
        await ws.send_json(chat("x", model="no-such-model"))
        [missing] = await frames_until(ws, lambda fs: True)
        assert missing["type"] == "error" and missing["id"] == "x" and missing["status"] == 404
        assert set(missing["error"]) == {"message", "type", "param", "code"}
        assert missing["error"]["code"] == "model_not_found"
        await ws.send_json({"type": "chat", "id": "y", "request": {"model": "default"}})
        [invalid] = await frames_until(ws, lambda fs: True)
        assert (invalid["status"], invalid["error"]["param"]) == (400, "messages")
        await ws.send_str("{not json")
        [garbled] = await frames_until(ws, lambda fs: True)
        assert garbled["id"] is None and garbled["error"]["type"] == "invalid_request_error"
        await ws.send_json({"type": "launch", "id": "z"})
        assert (await ws.receive_json(timeout=5))["error"]["param"] == "type"
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=5) == {"type": "pong"}
        await ws.send_json(chat("ok"))
        assert (await frames_until(ws, lambda fs: fs[-1]["type"] == "done"))[-1]["id"] == "ok"


async def test_a_duplicate_id_in_flight_is_refused(
    gateway: GatewayServer, primary: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    primary.set_default(Reply(chunks=10, interval=0.05))
    async with session.ws_connect(url(gateway), headers=AUTH) as ws:
        await ws.send_json(chat("same"))
        await ws.send_json(chat("same"))
        frames = await frames_until(ws, lambda fs: bool(of(fs, "same", "done")))
    [error] = of(frames, "same", "error")
    assert error["error"]["param"] == "id" and "in flight" in error["error"]["message"]


async def test_auth_by_header_or_first_frame(gateway: GatewayServer, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(url(gateway), headers={"authorization": "Bearer wrong"}) as ws:
        refused = await ws.receive_json(timeout=5)
        assert refused["type"] == "error" and refused["error"]["code"] == "invalid_api_key"
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
    async with session.ws_connect(url(gateway)) as ws:  # a browser cannot set headers: it sends an auth frame
        await ws.send_json({"type": "auth", "api_key": ADMIN_KEY})
        await ws.send_json(chat("a"))
        assert (await frames_until(ws, lambda fs: fs[-1]["type"] == "done"))[-1]["id"] == "a"
    async with session.ws_connect(url(gateway)) as ws:
        await ws.send_json(chat("a"))  # no auth frame first
        assert (await ws.receive_json(timeout=5))["error"]["type"] == "invalid_request_error"
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE


async def test_the_same_router_falls_back(
    gateway: GatewayServer, primary: FakeUpstream, backup: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    primary.script(Status(503))
    async with session.ws_connect(url(gateway), headers=AUTH) as ws:
        await ws.send_json(chat("a"))
        done = (await frames_until(ws, lambda fs: fs[-1]["type"] in ("done", "error")))[-1]
    assert done["type"] == "done" and done["model"] == "backup/llama3-8b" and done["fallbacks"] == 1
    assert done["message"]["content"] == "Hello from backup"
    [row] = await asyncio.to_thread(gateway.wait_rows, 1)
    assert (row["status"], row["provider"], row["fallbacks"]) == (200, "backup", 1)
    async with session.ws_connect(url(gateway), headers=AUTH) as ws:  # and one refused before routing
        await ws.send_json(chat("b", model="no-such-model"))
        await frames_until(ws, lambda fs: True)
    async with session.get(f"http://127.0.0.1:{gateway.port}/metrics") as answer:
        metrics = await answer.text()
    # WebSocket requests are counted like HTTP ones, under endpoint "ws"; the fallback cause too.
    assert 'minigate_requests_total{endpoint="ws",status="200",provider="backup"} 1' in metrics
    assert 'minigate_requests_total{endpoint="ws",status="404",provider="none"} 1' in metrics
    assert 'minigate_fallbacks_total{provider="primary"' in metrics


def keys_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``minigate keys ...`` as an operator runs it: another process, so the gateway learns only through its DB."""
    command = [sys.executable, "-m", "minigate.gateway.cli", "keys", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


async def test_a_key_revoked_while_the_socket_is_open_is_refused_and_the_socket_closed(
    gateway_factory: Callable[..., GatewayServer],
    primary: FakeUpstream,
    backup: FakeUpstream,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    config = two_provider_config(primary, backup)
    server = gateway_factory(config)
    file = tmp_path / "minigate.json"
    file.write_text(json.dumps({**config, "server": {"data_dir": str(server.data_dir)}}))
    created = await asyncio.to_thread(keys_cli, file, "create", "laptop")
    key, key_id = created.stdout.strip(), re.findall(r"created key (\d+)", created.stderr)[0]
    async with session.ws_connect(url(server), headers={"authorization": f"Bearer {key}"}) as ws:
        await ws.send_json(chat("before"))
        assert (await frames_until(ws, lambda fs: fs[-1]["type"] in ("done", "error")))[-1]["type"] == "done"
        await asyncio.to_thread(keys_cli, file, "revoke", key_id)
        deadline = time.monotonic() + 10  # the gateway's key cache lives 2 s, as for HTTP
        refused: dict[str, Any] = {}
        for n in range(100):
            await ws.send_json(chat(f"after{n}"))
            last = (await frames_until(ws, lambda fs: fs[-1]["type"] in ("done", "error")))[-1]
            if last["type"] == "error":
                refused = last
                break
            assert time.monotonic() < deadline, "chats on the open socket were still answered 10 s after the revoke"
            await asyncio.sleep(0.2)
        assert refused["id"] == f"after{n}" and refused["status"] == 401
        assert refused["error"]["code"] == "invalid_api_key"
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
    rows = await asyncio.to_thread(server.wait_rows, n + 1)
    assert all(row["key_id"] == int(key_id) and row["status"] == 200 for row in rows)  # the refused one made none
