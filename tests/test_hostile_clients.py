"""Clients that stop reading, against a real ``minigate serve``: a raw socket with a small receive buffer sends a
request and then never reads, or leaves while the gateway's writes to it are paused.

Every write to a client is bounded in time: a stream ends by the request's deadline (504) even when the client
does not read, and a write that makes no progress for ``server.body_timeout`` ends the connection. A client
that leaves while a write waits is a 499, and its upstream call is cancelled. Whatever the ending, the usage row
is stored, the upstream connection is closed and ``minigate_in_flight_requests`` returns to 0.
"""

from __future__ import annotations

import array
import fcntl
import json
import re
import select
import socket
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import two_provider_config
from tests.fakes import hostile
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess

BOUND = 20.0  # seconds: far above any deadline here, far below a hang
FLOOD = 300_000  # chunks of about 90 bytes: outlasts every test, however large the socket buffers


@pytest.fixture
def serve(upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path) -> Iterator[Any]:
    """Start a gateway with ``router.timeout`` and ``server.body_timeout``; stopped at the end of the test."""
    servers: list[ServeProcess] = []

    def start(timeout: float, body_timeout: float = 30) -> ServeProcess:
        for fake in upstreams:
            fake.reset()
        config = two_provider_config(*upstreams)
        config["router"]["timeout"] = timeout
        config["server"] = {"body_timeout": body_timeout}
        server = ServeProcess(config, tmp_path / f"gw{len(servers)}").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _request(port: int, body: dict[str, Any]) -> socket.socket:
    """A connected socket with a small receive buffer that has sent ``body`` to /v1/chat/completions."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {ADMIN_KEY}\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def _chat(stream: bool) -> dict[str, Any]:
    return {"model": "fast", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def _unread(sock: socket.socket) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def _wait_until_full(sock: socket.socket) -> None:
    """Wait until the bytes waiting in the client's receive buffer stop growing: the gateway's writes pause."""
    seen, still, deadline = -1, 0, time.monotonic() + BOUND
    while still < 5:
        assert time.monotonic() < deadline, "the gateway never filled the client's buffer"
        time.sleep(0.1)
        now = _unread(sock)
        still = still + 1 if now == seen and now > 0 else 0
        seen = now


def _in_flight(server: ServeProcess) -> float:
    text = httpx.get(f"{server.base}/metrics", timeout=5).text
    found = re.search(r"^minigate_in_flight_requests (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


def _outcome(server: ServeProcess, fake: FakeUpstream, tally: hostile.Tally) -> dict[str, Any]:
    """The request's usage row once stored, after in-flight returned to 0 and the upstream saw its connection
    closed before its answer was read to the end; fails if any of that takes longer than BOUND."""
    deadline = time.monotonic() + BOUND
    while True:
        rows, in_flight = server.rows(), _in_flight(server)
        cut = [r.disconnected for r in fake.requests]
        if rows and in_flight == 0 and cut == [True]:
            assert not tally.done, "the upstream's answer was read to its end"
            return rows[0]
        assert time.monotonic() < deadline, f"rows {rows}, in flight {in_flight}, upstream closed {cut}"
        time.sleep(0.1)


def _closed_by_server(sock: socket.socket) -> None:
    """Wait (without reading) until the gateway has ended the connection: the socket reports a hang-up."""
    poller = select.poll()
    poller.register(sock, select.POLLHUP | select.POLLERR | select.POLLRDHUP)
    assert poller.poll(BOUND * 1000), "the gateway kept the connection of a client that does not read"


def test_a_stream_to_a_client_that_stops_reading_ends_at_the_deadline(
    serve: Any, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary = upstreams[0]
    server = serve(timeout=2)
    primary.set_default(hostile.flood(FLOOD, tally := hostile.Tally()))
    sock = _request(server.port, _chat(stream=True))
    try:
        row = _outcome(server, primary, tally)
        assert (row["status"], row["provider"]) == (504, "primary"), row["error"]
        assert "deadline" in row["error"]
        _closed_by_server(sock)
    finally:
        sock.close()
    records = server.log_records()
    assert not [r for r in records if r.get("level") in ("ERROR", "CRITICAL")], records
    assert [r["status"] for r in records if r.get("path") == "/v1/chat/completions"] == [504]


def test_a_client_that_leaves_while_writes_are_paused_is_a_499(
    serve: Any, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary = upstreams[0]
    server = serve(timeout=60)
    primary.set_default(hostile.flood(FLOOD, tally := hostile.Tally()))
    sock = _request(server.port, _chat(stream=True))
    _wait_until_full(sock)
    assert _in_flight(server) == 1 and not server.rows()  # the gateway waits to write
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # an abrupt leave, as a killed client's
    row = _outcome(server, primary, tally)
    assert row["status"] == 499 and row["error"] == "client disconnected", row


def test_a_json_answer_to_a_client_that_does_not_read_ends_the_connection(
    serve: Any, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary = upstreams[0]
    server = serve(timeout=60, body_timeout=2)
    primary.set_default(hostile.big_answer(16 << 20))  # more than the socket buffers hold
    sock = _request(server.port, _chat(stream=False))
    try:
        deadline = time.monotonic() + BOUND
        while not (rows := server.rows()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert rows[0]["status"] == 200 and _in_flight(server) == 0
        _closed_by_server(sock)  # a write with no progress for server.body_timeout ends it
    finally:
        sock.close()
