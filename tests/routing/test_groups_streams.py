"""A group's outstanding counts over real sockets: a stream keeps its member busy until it ends, whether it
finishes, the client leaves, or the upstream breaks off; and least_busy sends a second stream to the other member."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from minigate.gateway.routing.groups import LoadBook
from tests.fakes.upstream import FakeUpstream, Reply, ResetAfter
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.routing.test_groups import group_config

STREAM = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture
def boxes() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream("box-a") as a, FakeUpstream("box-b") as b:
        a.set_default(Reply(chunks=40, interval=0.05))
        b.set_default(Reply(chunks=40, interval=0.05))
        yield a, b


def settles(load: LoadBook, expected: dict[str, int], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while load.busy != expected:
        assert time.monotonic() < end, f"outstanding {load.busy}, expected {expected}"
        time.sleep(0.01)


def test_streams_hold_their_member_until_they_end_however_they_end(
    gateway_factory: Callable[..., GatewayServer], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    server = gateway_factory(group_config(a, b, {"group": ["boxA/qwen", "boxB/qwen"]}))
    load: LoadBook = server._server.config.app.state.gateway.health.load  # type: ignore[union-attr]
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10, headers=headers) as http:
        with http.stream("POST", "/v1/chat/completions", json=STREAM) as first:
            lines = first.iter_lines()  # kept: a dropped line iterator closes the response (a disconnect)
            next(lines)
            one = f"{first.headers['x-minigate-provider']}/qwen"
            assert load.busy == {one: 1}
            with http.stream("POST", "/v1/chat/completions", json=STREAM) as second:
                more = second.iter_lines()
                next(more)
                two = f"{second.headers['x-minigate-provider']}/qwen"
                assert two != one and load.busy == {one: 1, two: 1}  # least_busy: the idle member
            settles(load, {one: 1})  # the client left the second stream half-way
            assert sum(1 for line in lines if line.startswith("data: ")) > 30
        settles(load, {})  # the first one finished
        a.set_default(ResetAfter(3))
        b.set_default(ResetAfter(3))
        for _ in range(2):  # the upstream breaks off after content was sent: the stream ends with an error event
            with http.stream("POST", "/v1/chat/completions", json=STREAM) as broken:
                assert "error" in broken.read().decode()
        settles(load, {})
