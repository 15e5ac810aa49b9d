"""Hostile upstreams through the gateway in process (issue 12, item 4): gzip bombs, giant and slow errors, huge
SSE lines and floods of tiny chunks. Each is stopped at a cap of ``models.providers.<name>.limits``: the client
gets a 502 in OpenAI's shape naming the cap (or the next deployment's answer, when nothing had been relayed yet),
what is read stays bounded (the hostile upstream counts what it managed to send), and error text is cut before it
reaches the client or the usage row. The provider-level checks (memory peaks, yielding to the event loop) are in
tests/providers/test_openai_compat_caps.py; /health answering while a flood is relayed, which needs a stream read
as it arrives, in tests/test_hostile_upstream_socket.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import two_provider_config
from tests.fakes import hostile
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]
MiB = 1024 * 1024
CUT_NOTE = "more characters cut]"


def post(gateway: InProcessGateway, model: str = "fast", **body: Any) -> httpx.Response:
    """A chat request; ``fast`` is primary alone, ``default`` primary then backup."""
    payload = {"model": model, "messages": MESSAGES, **body}
    return gateway.http.post("/v1/chat/completions", headers=AUTH, json=payload, timeout=60)


def stream(gateway: InProcessGateway, model: str = "fast") -> tuple[httpx.Response, list[Any]]:
    """A streamed chat request: the response and its events (decoded JSON, or "[DONE]")."""
    payload = {"model": model, "stream": True, "messages": MESSAGES}
    with gateway.http.stream("POST", "/v1/chat/completions", headers=AUTH, json=payload, timeout=60) as r:
        if r.status_code != 200:
            r.read()
            return r, []
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    return r, [line if line == "[DONE]" else json.loads(line) for line in lines]


def too_large(response: httpx.Response, cap: str) -> str:
    """Assert a 502 ``upstream_too_large`` naming ``cap`` (``field (value)``); the error message."""
    assert response.status_code == 502, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "upstream_too_large" and error["type"] == "upstream_error", error
    assert f"models.providers.primary.limits.{cap}" in error["message"], error["message"]
    return str(error["message"])


@pytest.fixture
def gateway(inprocess_gateway: InProcessGateway) -> InProcessGateway:
    """The two fake upstreams behind the gateway in process (``fast`` is primary alone)."""
    return inprocess_gateway


def with_limits(primary: FakeUpstream, backup: FakeUpstream, **limits: Any) -> dict[str, Any]:
    config = two_provider_config(primary, backup)
    config["models"]["providers"]["primary"]["limits"] = limits
    return config


def test_gzip_bomb_answer_is_a_502_naming_the_cap(gateway: InProcessGateway, primary: FakeUpstream) -> None:
    # 64 KiB on the wire, 64 MiB once decompressed: the default cap on an answer is 32 MiB.
    primary.script(hostile.gzip_bomb("json", 64 * MiB))
    r = post(gateway)
    too_large(r, "max_body_bytes (33554432)")
    row = gateway.row_of(r)
    assert row["status"] == 502
    [hop] = row["hops"]
    assert (hop["class"], hop["code"]) == ("UpstreamTooLarge", "upstream_too_large")
    assert "max_body_bytes (33554432)" in hop["error"]


def test_gzip_bomb_error_is_a_502_naming_the_cap(gateway: InProcessGateway, primary: FakeUpstream) -> None:
    primary.script(hostile.gzip_bomb("error", 64 * MiB))
    too_large(post(gateway), "max_error_body_bytes (1048576)")


def test_gzip_bomb_stream_falls_back_before_any_content(
    gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    # Its one line decompresses to 32 MiB; the line cap is 4 MiB and nothing had reached the client yet.
    primary.script(hostile.gzip_bomb("sse", 32 * MiB))
    r, events = stream(gateway, "default")
    assert r.status_code == 200 and events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]).startswith(
        "Hello from backup"
    )
    [hop] = gateway.row_of(r)["hops"]
    assert hop["code"] == "upstream_too_large" and "max_sse_line_bytes (4194304)" in hop["error"], hop


def test_huge_sse_line_is_cut_off_at_the_line_cap(gateway: InProcessGateway, primary: FakeUpstream) -> None:
    tally = hostile.Tally()
    primary.script(hostile.huge_line(48 * MiB, tally))
    r, _ = stream(gateway)
    too_large(r, "max_sse_line_bytes (4194304)")
    # The gateway stopped reading and dropped the connection: most of the line was never sent.
    assert not tally.done and tally.sent < 24 * MiB, tally


@pytest.mark.parametrize("interval", [0.0, 0.01], ids=["giant", "slow"])
def test_giant_error_body_stops_at_its_cap(gateway: InProcessGateway, primary: FakeUpstream, interval: float) -> None:
    tally = hostile.Tally()
    size = 32 * MiB if not interval else 4 * MiB  # a slow one trickles 64 KiB every 10 ms
    primary.script(hostile.giant_error(size, tally, interval=interval))
    too_large(post(gateway), "max_error_body_bytes (1048576)")
    assert not tally.done and tally.sent < size // 2, tally


def test_long_error_messages_are_cut_for_the_client_and_the_usage_row(
    gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    # Under the body cap, so the error is passed on: its message cut to 2000 characters.
    primary.script(hostile.giant_error(512 * 1024))
    r = post(gateway)
    assert r.status_code == 502 and len(r.text) < 3000, r.text[:500]
    message = r.json()["error"]["message"]
    assert CUT_NOTE in message and "aaaa" in message
    row = gateway.row_of(r)
    assert len(row["error"]) < 3000 and CUT_NOTE in row["error"]
    [hop] = row["hops"]
    assert len(hop["error"]) < 2100 and hop["error"].endswith(CUT_NOTE)
    # Falling back: the hop stored with the backup's answer is cut too.
    primary.script(hostile.giant_error(512 * 1024))
    r = post(gateway, "default")
    assert r.status_code == 200
    [hop] = gateway.row_of(r)["hops"]
    assert len(hop["error"]) < 2100 and hop["error"].endswith(CUT_NOTE)


def test_stream_cap_ends_a_flood_with_an_error_event(
    inprocess_factory: Any, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = inprocess_factory(with_limits(primary, backup, max_stream_bytes=MiB))
    primary.script(hostile.flood(100_000))  # about 9 MB
    r, events = stream(gateway)
    assert r.status_code == 200 and "[DONE]" not in events
    error = events[-1]["error"]
    assert error["code"] == "upstream_too_large", error
    assert "models.providers.primary.limits.max_stream_bytes (1048576)" in error["message"]
    assert 1000 < len(events) < 20_000  # the chunks of the first MiB were relayed
    row = gateway.row_of(r)
    assert row["status"] == 502 and "max_stream_bytes (1048576)" in row["error"]


def test_limits_are_checked_in_the_config(primary: FakeUpstream, backup: FakeUpstream) -> None:
    from minigate.gateway.config.schema import ConfigError
    from minigate.gateway.plugins.loader import builtin_extensions, configure

    for limits, where in (
        ({"max_body_bytes": 0}, "models.providers.primary.limits.max_body_bytes"),
        ({"max_sse_line": 5}, "models.providers.primary.limits.max_sse_line"),
    ):
        with pytest.raises(ConfigError) as info:
            configure(with_limits(primary, backup, **limits), builtin_extensions(), env={})
        assert info.value.issues[0][0] == where, info.value.issues
    configure(with_limits(primary, backup, max_stream_bytes=None), builtin_extensions(), env={})
