"""A hostile upstream through a real gateway (issue 12, item 4): /health answers while a flood of tiny chunks is
relayed. It needs a socket: the flood's stream is read as it arrives (the test client would hand it over only
once it ended). The other hostile upstreams are in tests/test_hostile_upstream.py, in process.
"""

from __future__ import annotations

import threading

import httpx

from tests.fakes import hostile
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY, GatewayServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]


def test_health_answers_while_a_flood_is_relayed(gateway: GatewayServer, primary: FakeUpstream) -> None:
    chunks = 100_000
    primary.script(hostile.flood(chunks))
    started, ended = threading.Event(), threading.Event()
    received: list[int] = []

    def chat() -> None:
        payload = {"model": "fast", "stream": True, "messages": MESSAGES}
        with httpx.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=60) as r:
            for line in r.iter_lines():
                received.append(line.count('"x"'))
                if received[-1]:
                    started.set()
        ended.set()

    thread = threading.Thread(target=chat, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        health = httpx.get(f"{gateway.url.removesuffix('/v1')}/health", timeout=30)
        assert health.status_code == 200
        answered_during_the_flood = not ended.is_set()
    finally:
        thread.join(60)
    assert sum(received) == chunks  # the flood itself was relayed whole
    assert answered_during_the_flood
